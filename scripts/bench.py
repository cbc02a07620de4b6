#!/usr/bin/env python
"""Benchmark gitckpt against its peers: GitSaver vs SqliteSaver vs InMemorySaver,
GitStore vs SqliteStore vs InMemoryStore (issues 5 and 14).

**Each saver runs in its own process.** In one shared process the heap of one
saver slows the others (the same chat measured 0.88-0.97x SQLite with all
three savers in one process and 0.59x apart, issue 14). So the parent process
imports everything once and, for every scenario group, forks one child per
subject (one saver or store, one durability mode); the child builds what it
needs, measures, closes and reports its numbers. Groups run in ``rounds``:
each round runs every subject once, the order rotating from round to round,
and a value is the median over rounds. Ratios are between children of the
same run, one after another, so read them, not the absolute numbers.

    python scripts/bench.py                     # full run, prints the table
    python scripts/bench.py --quick             # smaller sizes (< 1 min)
    python scripts/bench.py --only chat_turn,list_10k --json out.json
    python scripts/bench.py --only shapes,update_latency   # groups by name too
    python scripts/bench.py --profile chat_turn # GitSaver only, under pyinstrument
    python scripts/bench.py --profile shape_doc:invoke:sync@os
    python scripts/bench.py --write-docs        # also regenerate docs/performance.md

Durability: a headline row compares like with like. ``NAME`` pairs
``GitSaver(durability="fsync")`` with SQLite's default (``synchronous=FULL``):
both survive a power loss. ``NAME@os`` pairs ``durability="os"`` (gitckpt's
default) with ``synchronous=NORMAL``: both survive a crash of the process.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import hashlib
import json
import multiprocessing
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import _bench_shapes as SH  # noqa: E402
import _bench_workloads as W  # noqa: E402
from _bench_profile import SAVER_METHODS, STORE_METHODS, CallProfiler  # noqa: E402

# -- scenarios -------------------------------------------------------------------

GRAPH_TARGET = "gitckpt/sqlite <= 0.7 and gitckpt/memory <= 1.3"


def _graph_check(r: dict) -> bool:
    return _r(r, "ratio_vs_sqlite") <= 0.7 and _r(r, "ratio_vs_memory") <= 1.3


@dataclass
class Spec:
    name: str
    group: str
    unit: str
    target: str
    check: Callable[[dict], bool]
    what: str
    variants: bool = False  # also a NAME@os row (durability matters)
    combos: bool = False  # rows NAME:API:DURABILITY (graph shapes)


def _r(row: dict, key: str) -> float:
    v = row.get(key)
    return float("inf") if v is None else v


SPECS: dict[str, Spec] = {
    s.name: s
    for s in [
        Spec("chat_turn", "chat", "ms/turn", GRAPH_TARGET, _graph_check,
             "a chat graph, 2 nodes a turn (4 checkpoints), growing message list, invoke (durability='async')",
             True),
        Spec("chat_turn_async", "chat_async", "ms/turn", "gitckpt/sqlite <= 0.7",
             lambda r: _r(r, "ratio_vs_sqlite") <= 0.7,
             "the same chat with ainvoke; the SQLite peer is AsyncSqliteSaver", True),
        Spec("disk_after_chat", "chat", "bytes", "gitckpt/sqlite <= 1/30",
             lambda r: _r(r, "ratio_vs_sqlite") <= 1 / 30,
             "bytes on disk after chat_turn, after close(), no manual git gc "
             "(gitckpt: the repository directory; sqlite: db + -wal + -shm; memory: serialized bytes held)", True),
        *[Spec(f"shape_{shape}", "shapes", "ms/invoke", GRAPH_TARGET, _graph_check,
               SH.WHAT[shape] + "; one row per API (invoke, ainvoke: the SQLite peer is AsyncSqliteSaver) and "
               "durability ('sync', 'async', 'exit')", True, True) for shape in SH.SHAPES],
        Spec("put_p50", "latency", "µs", "gitckpt/sqlite <= 1",
             lambda r: _r(r, "ratio_vs_sqlite") <= 1,
             "direct call: p50 of one put (a chat-like state, 9 messages and a counter), each followed by one "
             "put_writes", True),
        Spec("put_p99", "latency", "µs", "gitckpt/sqlite <= 2", lambda r: _r(r, "ratio_vs_sqlite") <= 2,
             "direct call: p99 of the same puts", True),
        Spec("put_writes_p50", "latency", "µs", "gitckpt/sqlite <= 1",
             lambda r: _r(r, "ratio_vs_sqlite") <= 1, "direct call: p50 of one put_writes (one message) after a put",
             True),
        Spec("put_writes_p99", "latency", "µs", "gitckpt/sqlite <= 2",
             lambda r: _r(r, "ratio_vs_sqlite") <= 2, "direct call: p99 of the same put_writes", True),
        Spec("put_growth", "growth", "x", "gitckpt <= 2 (flat)",
             lambda r: _r(r, "gitckpt") <= 2,
             "put time at step N / put time at step 100, one thread whose message list grows by one per put"),
        Spec("get_latest_10k", "reads", "µs/op", "gitckpt/sqlite <= 1",
             lambda r: _r(r, "ratio_vs_sqlite") <= 1, "get_tuple of the latest checkpoint"),
        Spec("get_old_10k", "reads", "µs/op", "gitckpt/sqlite <= 1",
             lambda r: _r(r, "ratio_vs_sqlite") <= 1, "get_tuple by an old checkpoint id"),
        Spec("list_10k", "reads", "µs/op", "gitckpt/sqlite <= 1",
             lambda r: _r(r, "ratio_vs_sqlite") <= 1, "list(limit=10), all 10 consumed"),
        Spec("list_before_10k", "reads", "µs/op", "gitckpt/sqlite <= 1",
             lambda r: _r(r, "ratio_vs_sqlite") <= 1, "list(before=<an id>, limit=10)"),
        Spec("store_put", "store", "µs/op", "gitckpt/sqlite <= 1",
             lambda r: _r(r, "ratio_vs_sqlite") <= 1, "store.put of a new item (embedded) into a store of N items",
             True),
        Spec("store_get", "store", "µs/op", "gitckpt/sqlite <= 1",
             lambda r: _r(r, "ratio_vs_sqlite") <= 1, "store.get of an existing item"),
        Spec("store_filter_10k", "store", "µs/op", "gitckpt/sqlite <= 1",
             lambda r: _r(r, "ratio_vs_sqlite") <= 1, "store.search(('memories',), filter={'kind': ...}, limit=10)"),
        Spec("store_semantic_10k", "store", "µs/op", "gitckpt/sqlite <= 1",
             lambda r: _r(r, "ratio_vs_sqlite") <= 1,
             "store.search(('memories',), query=..., limit=10), fake 64-dim embedding"),
    ]
}

#: The subjects: one saver or store in one durability mode, each in its own process.
ALL = ("git-fsync", "git-os", "sqlite-FULL", "sqlite-NORMAL", "memory")
GROUP_SUBJECTS = {
    "chat": ALL,
    "chat_async": ALL,
    "shapes": ALL,
    "latency": ALL,
    "growth": ("git-os", "sqlite-NORMAL", "memory"),  # gitckpt's own ratio; os mode (see the row)
    "reads": ("git-os", "sqlite-FULL", "memory"),  # durability does not apply to reads
    "store": ALL,  # reads measured on git-fsync, sqlite-FULL and memory; puts on all
}
GROUP_ORDER = ("chat", "chat_async", "shapes", "latency", "growth", "reads", "store")

SIZES = {
    "full": {"rounds": {"chat": 2, "chat_async": 2, "shapes": 3, "latency": 3, "growth": 1, "reads": 1,
                        "store": 1},
             "chat_turns": 300, "async_turns": 300, "turn_block": 10, "shape_invokes": 30, "shape_block": 5,
             "latency_n": 400, "growth_n": 10_000, "growth_window": 128,
             "thread_n": 10_000, "read_rounds": 30, "store_n": 10_000, "store_rounds": 30, "store_put_rounds": 40},
    "quick": {"rounds": {g: 1 for g in GROUP_ORDER},
              "chat_turns": 20, "async_turns": 16, "turn_block": 4, "shape_invokes": 4, "shape_block": 2,
              "latency_n": 100, "growth_n": 800, "growth_window": 64,
              "thread_n": 600, "read_rounds": 8, "store_n": 1_500, "store_rounds": 8, "store_put_rounds": 10},
}

# -- the run context ---------------------------------------------------------------


@dataclass
class Ctx:
    """What a child (or a profile) needs to measure one subject."""

    workdir: Path
    sizes: dict
    selected: set[str]
    log: Callable[[str], None]
    profiler: CallProfiler | None = None
    combo: tuple[str, str] | None = None  # profiling one shape row: (api, durability)
    info: dict[str, Any] = field(default_factory=dict)

    def wants(self, name: str) -> bool:
        return name in self.selected

    def profile(self, subject: W.Subject, methods: tuple[str, ...]) -> None:
        if self.profiler is not None and subject.kind == "gitckpt":
            self.profiler.install(subject.obj, methods)

    @contextlib.contextmanager
    def profiling(self, subject: W.Subject, methods: tuple[str, ...]) -> Iterator[None]:
        if self.profiler is None:
            yield
            return
        self.profile(subject, methods)
        self.profiler.start()
        try:
            yield
        finally:
            self.profiler.stop()


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return a / b


def kind_of(key: str) -> str:
    return key.split("-")[0].replace("git", "gitckpt")


def mode_of(key: str) -> str:
    return key.split("-", 1)[1] if "-" in key else ""


def saver(ctx: Ctx, key: str, name: str) -> W.Subject:
    """The saver of subject ``key`` (a new file / repository ``name`` in the workdir)."""
    if key.startswith("git-"):
        return W.git_saver(ctx.workdir, name, mode_of(key))
    if key.startswith("sqlite-"):
        return W.sqlite_saver(ctx.workdir, name, mode_of(key))
    return W.memory_saver()


async def async_saver(ctx: Ctx, key: str, name: str) -> W.Subject:
    if key.startswith("sqlite-"):
        return await W.async_sqlite_saver(ctx.workdir, name, mode_of(key))
    return saver(ctx, key, name)  # GitSaver and InMemorySaver serve both APIs


def durability_of(key: str, group: str, checked: str | None = None) -> str:
    if key.startswith("git-"):
        return W.GIT_DURABILITY[mode_of(key)]
    if key.startswith("sqlite-"):
        table = W.STORE_SQLITE_DURABILITY if group == "store" else W.SQLITE_DURABILITY
        return table[mode_of(key)]
    return W.MEMORY_DURABILITY


# -- measuring one subject (in its own process) ----------------------------------------


def _ms(total: float, n: int) -> float:
    return total / n * 1e3


def m_chat(ctx: Ctx, key: str) -> dict:
    turns, block = ctx.sizes["chat_turns"], ctx.sizes["turn_block"]
    s = saver(ctx, key, f"chat-{key}")
    g = W.chat_graph(s.obj)
    cfg = {"configurable": {"thread_id": "chat-1"}}
    blocks: list[float] = []
    ctx.log(f"chat[{key}]: {turns} turns")
    with ctx.profiling(s, SAVER_METHODS):
        for start in range(0, turns, block):
            gc.collect()
            t = W.perf()
            for turn in range(start, min(start + block, turns)):
                g.invoke(W.turn_input(turn), cfg)
            blocks.append(W.perf() - t)
    n = len(g.get_state(cfg).values["messages"])
    if n != 3 * turns:
        raise RuntimeError(f"{s.label}: {n} messages after {turns} turns, expected {3 * turns}")
    s.close()  # GitSaver.close() finishes background packing (part of normal use)
    out = {"ms": _ms(sum(blocks), turns), "checked": getattr(s, "checked", None),
           "disk": W.memory_saver_bytes(s.obj) if s.kind == "memory" else W.disk_bytes(s.paths)}
    if key in ("git-os", "sqlite-FULL", "memory") and ctx.profiler is None:
        out["get_old_us"], out["checkpoints"] = chat_thread_get_old(ctx, key, s)
    return out


def chat_thread_get_old(ctx: Ctx, key: str, s: W.Subject) -> tuple[float, int]:
    """Context for the read rows, not a scenario: ``get_tuple`` by an old id on
    the chat's own thread (a message list that grows to 3 x turns), the saver
    reopened after the chat. The read rows' thread holds a window of nine
    messages per checkpoint instead."""
    fresh = s if key == "memory" else saver(ctx, key, f"chat-{key}") if key.startswith("git") else \
        W.sqlite_saver(ctx.workdir, f"chat-{key}", "FULL")
    cfg = {"configurable": {"thread_id": "chat-1", "checkpoint_ns": ""}}
    ids = sorted(t.config["configurable"]["checkpoint_id"] for t in fresh.obj.list(cfg))
    picks = [ids[(i * 7919) % max(1, 9 * len(ids) // 10)] for i in range(40)]

    def get_old(k: int) -> None:
        cid = picks[k % 40]
        tup = fresh.obj.get_tuple({"configurable": {"thread_id": "chat-1", "checkpoint_ns": "", "checkpoint_id": cid}})
        assert tup is not None and tup.checkpoint["id"] == cid, (key, cid)

    us = measure_rounds(get_old, 8, 5)
    fresh.close()
    return us, len(ids)


def m_chat_async(ctx: Ctx, key: str) -> dict:
    async def go() -> dict:
        turns, block = ctx.sizes["async_turns"], ctx.sizes["turn_block"]
        s = await async_saver(ctx, key, f"achat-{key}")
        g = W.chat_graph(s.obj)
        cfg = {"configurable": {"thread_id": "chat-1"}}
        blocks: list[float] = []
        ctx.log(f"chat_async[{key}]: {turns} turns")
        with ctx.profiling(s, SAVER_METHODS):
            for start in range(0, turns, block):
                gc.collect()
                t = W.perf()
                for turn in range(start, min(start + block, turns)):
                    await g.ainvoke(W.turn_input(turn), cfg)
                blocks.append(W.perf() - t)
        n = len((await g.aget_state(cfg)).values["messages"])
        if n != 3 * turns:
            raise RuntimeError(f"{s.label}: {n} messages after {turns} turns, expected {3 * turns}")
        await s.aclose()
        return {"ms": _ms(sum(blocks), turns), "checked": getattr(s, "checked", None)}

    return asyncio.run(go())


def shape_combos(ctx: Ctx) -> list[tuple[str, str, str]]:
    return [(shape, api, dur) for shape in SH.SHAPES for api in SH.APIS for dur in SH.DURABILITIES
            if ctx.wants(f"shape_{shape}") and (ctx.combo is None or (api, dur) == ctx.combo)]


def m_shapes(ctx: Ctx, key: str) -> dict:
    """Every selected shape x API x durability on one subject: a thread each,
    one untimed first invoke, then ``shape_invokes`` timed ones in blocks, the
    combinations' order rotating from block to block."""
    n, blk = ctx.sizes["shape_invokes"], ctx.sizes["shape_block"]
    combos = shape_combos(ctx)
    total: dict[str, float] = {}
    checked: dict[str, Any] = {}
    ctx.log(f"shapes[{key}]: {len(combos)} combinations x {n} invokes")

    def label(c: tuple[str, str, str]) -> str:
        return ":".join(c)

    def run_sync(s: W.Subject, mine: list[tuple[str, str, str]]) -> None:
        graphs = {c: SH.BUILD[c[0]](s.obj, False) for c in mine}
        cfgs = {c: {"configurable": {"thread_id": label(c)}} for c in mine}
        for c in mine:
            SH.check(c[0], graphs[c].invoke(SH.INPUT[c[0]](0), cfgs[c], durability=c[2]), 0)
        with ctx.profiling(s, SAVER_METHODS):
            for b, start in enumerate(range(1, n + 1, blk)):
                gc.collect()
                for c in W.rotate(mine, b):
                    t = W.perf()
                    for k in range(start, min(start + blk, n + 1)):
                        SH.check(c[0], graphs[c].invoke(SH.INPUT[c[0]](k), cfgs[c], durability=c[2]), k)
                    total[label(c)] = total.get(label(c), 0.0) + W.perf() - t

    async def run_async(s: W.Subject, mine: list[tuple[str, str, str]]) -> None:
        graphs = {c: SH.BUILD[c[0]](s.obj, True) for c in mine}
        cfgs = {c: {"configurable": {"thread_id": label(c)}} for c in mine}
        for c in mine:
            SH.check(c[0], await graphs[c].ainvoke(SH.INPUT[c[0]](0), cfgs[c], durability=c[2]), 0)
        with ctx.profiling(s, SAVER_METHODS):
            for b, start in enumerate(range(1, n + 1, blk)):
                gc.collect()
                for c in W.rotate(mine, b):
                    t = W.perf()
                    for k in range(start, min(start + blk, n + 1)):
                        SH.check(c[0], await graphs[c].ainvoke(SH.INPUT[c[0]](k), cfgs[c], durability=c[2]), k)
                    total[label(c)] = total.get(label(c), 0.0) + W.perf() - t

    sync_c = [c for c in combos if c[1] == "invoke"]
    async_c = [c for c in combos if c[1] == "ainvoke"]
    if sync_c:
        s = saver(ctx, key, f"shapes-{key}")
        run_sync(s, sync_c)
        checked["invoke"] = getattr(s, "checked", None)
        s.close()

    async def go() -> None:
        s = await async_saver(ctx, key, f"ashapes-{key}")
        await run_async(s, async_c)
        checked["ainvoke"] = getattr(s, "checked", None)
        await s.aclose()

    if async_c:
        asyncio.run(go())
    return {"ms": {k: v / n * 1e3 for k, v in total.items()}, "checked": checked.get("invoke"),
            "checked_by_api": checked}


def m_latency(ctx: Ctx, key: str) -> dict:
    """Direct calls, one thread: ``put`` then ``put_writes``, each timed on its own."""
    n, warm, window = ctx.sizes["latency_n"], 20, 8
    s = saver(ctx, key, f"lat-{key}")
    w = W.ThreadWriter(s.obj, "lat")
    puts: list[float] = []
    writes: list[float] = []
    ctx.log(f"latency[{key}]: {n} x (put, put_writes)")
    with ctx.profiling(s, SAVER_METHODS):
        for i in range(n + warm):
            msgs = [W.human(31_000_000 + j) if j % 2 == 0 else W.ai(31_000_000 + j)
                    for j in range(max(0, i - window), i + 1)]
            reply = [("messages", [W.ai(41_000_000 + i)])]
            t0 = W.perf()
            w.put({"messages": msgs, "counter": i}, ["messages", "counter"])
            t1 = W.perf()
            w.put_writes(reply, i)
            t2 = W.perf()
            if i >= warm:
                puts.append(t1 - t0)
                writes.append(t2 - t1)
    s.close()

    def pct(xs: list[float], q: int) -> float:
        return statistics.quantiles(xs, n=100, method="inclusive")[q - 1] * 1e6

    return {"put_p50": pct(puts, 50), "put_p99": pct(puts, 99), "put_writes_p50": pct(writes, 50),
            "put_writes_p99": pct(writes, 99), "put_mean": statistics.fmean(puts) * 1e6,
            "put_writes_mean": statistics.fmean(writes) * 1e6, "checked": getattr(s, "checked", None)}


def m_growth(ctx: Ctx, key: str) -> dict:
    """GitSaver grows one thread to N checkpoints, its message list one message
    longer at each put. The peers re-serialize the whole list at every put, so
    growing them to N would take hours; they are sampled: a thread that holds
    lists of the same sizes as GitSaver's at the two measured windows.

    The two windows of the one thread are minutes apart, so the machine's drift
    is not cancelled between them; as a check, a second GitSaver thread in the
    same repository is put through the early window *during* the late one
    (``ratio_same_time``)."""
    n, win = ctx.sizes["growth_n"], ctx.sizes["growth_window"]
    s = saver(ctx, key, f"growth-{key}")
    sub = 32 if s.kind == "gitckpt" else 8  # gitckpt: one chunk cycle of its list layout; a peer: fewer samples
    lo0 = max(0, 100 - win // 2)
    lo = [range(a, a + sub) for a in range(lo0, lo0 + win, 32)]
    hi = [range(a, a + sub) for a in range(n - win, n, 32)]
    msgs = [W.human(20_000_000 + i) if i % 2 == 0 else W.ai(20_000_000 + i) for i in range(n + 1)]
    msgs_ref = [W.human(21_000_000 + i) if i % 2 == 0 else W.ai(21_000_000 + i) for i in range(lo0 + win + 1)]
    ctx.log(f"put_growth[{key}]: windows {lo0}..{lo0 + win} and {n - win}..{n}")

    def put(w: W.ThreadWriter, step: int, source: list) -> tuple[float, float]:
        values = {"messages": source[: step + 1], "turn": step // 3}
        changed = ["messages", "turn"] if step % 3 == 0 else ["messages"]
        c, t = time.thread_time(), W.perf()
        w.put(values, changed)
        return W.perf() - t, time.thread_time() - c

    wall: dict[str, list[float]] = {}
    cpu: dict[str, list[float]] = {}

    def blocks(parts: dict[str, tuple[W.ThreadWriter, list[range], list]]) -> None:
        labels = list(parts)
        for k in range(len(next(iter(parts.values()))[1])):
            for lab in W.rotate(labels, k):
                w, ranges, source = parts[lab]
                gc.collect()
                ts = [put(w, st, source) for st in ranges[k]]
                wall.setdefault(lab, []).append(sum(t for t, _ in ts) / len(ts))
                cpu.setdefault(lab, []).append(sum(c for _, c in ts) / len(ts))

    out: dict[str, Any] = {}
    if s.kind != "gitckpt":
        blocks({"lo": (W.ThreadWriter(s.obj, "growth-lo"), lo, msgs)})
        blocks({"hi": (W.ThreadWriter(s.obj, "growth-hi"), hi, msgs)})
    else:
        gw = W.ThreadWriter(s.obj, "growth")
        curve: list[tuple[int, int]] = []
        t_curve = W.perf()

        def grow_to(step: int) -> None:
            nonlocal t_curve
            while gw.step + 1 < step:
                put(gw, gw.step + 1, msgs)
                if (gw.step + 1) % 1000 == 0:
                    curve.append((gw.step + 1, round((W.perf() - t_curve) * 1e3)))
                    t_curve = W.perf()

        grow_to(lo0)
        blocks({"lo": (gw, lo, msgs)})
        grow_to(n - win)
        late: dict[str, tuple[W.ThreadWriter, list[range], list]] = {"hi": (gw, hi, msgs)}
        if ctx.profiler is None:  # a profile shows the late window of the one thread only
            ref = W.ThreadWriter(s.obj, "growth-ref")
            for st in range(lo0):
                put(ref, st, msgs_ref)
            late["ref"] = (ref, lo, msgs_ref)
        with ctx.profiling(s, SAVER_METHODS):
            blocks(late)
        assert gw.step + 1 == n
        out["curve"] = curve
    s.close()
    med = {lab: statistics.median(v) * 1e6 for lab, v in wall.items()}
    out.update({"lo_us": med["lo"], "hi_us": med["hi"], "ratio": med["hi"] / med["lo"],
                "ratio_cpu": statistics.median(cpu["hi"]) / statistics.median(cpu["lo"]),
                "checked": getattr(s, "checked", None)})
    if "ref" in med:
        out["ref_us"] = med["ref"]
        out["ratio_same_time"] = med["hi"] / med["ref"]
    return out


def measure_rounds(op: Callable[[int], Any], rounds: int, per_round: int) -> float:
    """Median over rounds of the round's mean µs per op (one warm-up call first)."""
    op(0)
    per: list[float] = []
    k = 0
    for _ in range(rounds):
        t = W.perf()
        for j in range(per_round):
            op(k + j)
        per.append((W.perf() - t) / per_round * 1e6)
        k += per_round
    return statistics.median(per)


READS = ("get_latest_10k", "get_old_10k", "list_10k", "list_before_10k")


def m_reads(ctx: Ctx, key: str) -> dict:
    n = ctx.sizes["thread_n"]
    window = 8
    ctx.log(f"reads[{key}]: building a {n}-checkpoint thread (put + put_writes each)")

    def fill(obj: Any) -> tuple[list[str], float]:
        w = W.ThreadWriter(obj, "t10k")
        t = W.perf()
        for i in range(n):
            msgs = [W.human(30_000_000 + j) if j % 2 == 0 else W.ai(30_000_000 + j)
                    for j in range(max(0, i - window), i + 1)]
            w.put({"messages": msgs, "counter": i}, ["messages", "counter"])
            w.put_writes([("messages", [W.ai(40_000_000 + i)])], i)
        return w.ids, W.perf() - t

    cfg = {"configurable": {"thread_id": "t10k", "checkpoint_ns": ""}}
    # built with gitckpt 'os' / SQLite synchronous=OFF (durability is irrelevant to reads), then reopened,
    # as a process that starts on an existing thread would
    if key == "memory":
        s = W.memory_saver()
        ids, build = fill(s.obj)
        cold = None
    else:
        b = W.git_saver(ctx.workdir, "reads", "os") if key.startswith("git") else \
            W.sqlite_saver(ctx.workdir, "reads", "OFF")
        ids, build = fill(b.obj)
        b.close()
        t = W.perf()
        s = W.git_saver(ctx.workdir, "reads", "os") if key.startswith("git") else \
            W.sqlite_saver(ctx.workdir, "reads", "FULL")
        s.obj.get_tuple(cfg)
        cold = (W.perf() - t) * 1e3
    rounds = ctx.sizes["read_rounds"]
    old = [ids[(i * 7919) % max(1, n // 5)] for i in range(997)]  # from the oldest fifth
    mid = [ids[n // 10 + (i * 7919) % max(1, 8 * n // 10)] for i in range(997)]
    tid = "t10k"

    def get_latest(k: int) -> None:
        assert s.obj.get_tuple(cfg).checkpoint["id"] == ids[-1]

    def get_old(k: int) -> None:
        cid = old[k % len(old)]
        tup = s.obj.get_tuple({"configurable": {"thread_id": tid, "checkpoint_ns": "", "checkpoint_id": cid}})
        assert tup.checkpoint["id"] == cid

    def list10(k: int) -> None:
        got = list(s.obj.list(cfg, limit=10))
        assert len(got) == 10 and got[0].checkpoint["id"] == ids[-1]

    def list_before(k: int) -> None:
        cid = mid[k % len(mid)]
        before = {"configurable": {"thread_id": tid, "checkpoint_ns": "", "checkpoint_id": cid}}
        got = list(s.obj.list(cfg, before=before, limit=10))
        assert len(got) == 10 and got[0].checkpoint["id"] < cid

    out: dict[str, Any] = {"build_s": build, "cold_ms": cold,
                           "ids": hashlib.sha256("".join(ids).encode()).hexdigest()[:16]}
    for name, fn, per in [("get_latest_10k", get_latest, 50), ("get_old_10k", get_old, 50),
                          ("list_10k", list10, 10), ("list_before_10k", list_before, 10)]:
        if ctx.wants(name):
            with ctx.profiling(s, SAVER_METHODS):
                out[name] = measure_rounds(fn, rounds, per)
    s.close()
    if key.startswith("git") and ctx.profiler is None and ctx.wants("get_old_10k"):
        out["cold_read_objects"] = cold_read_objects(ctx, ids[n // 5: n // 10 * 3], tid)
    return out


def cold_read_objects(ctx: Ctx, ids: list[str], tid: str) -> dict:
    """What a cold ``get_tuple`` by id spends reading git objects: a saver
    opened afresh (empty caches) reads up to 200 checkpoints once each,
    counting and timing its object reads (``GitRepo._read_raw``)."""
    s = W.git_saver(ctx.workdir, "reads", "os")
    repo = s.obj.repo
    inner = repo._read_raw
    spent = [0, 0.0]

    def counted(*a: Any) -> Any:
        t = W.perf()
        try:
            return inner(*a)
        finally:
            spent[0] += 1
            spent[1] += W.perf() - t

    s.obj.get_tuple({"configurable": {"thread_id": tid, "checkpoint_ns": ""}})  # the index, outside the count
    repo._read_raw = counted
    picks = ids[:: max(1, len(ids) // 200)][:200]  # distinct: each read is a first read
    t = W.perf()
    for cid in picks:
        s.obj.get_tuple({"configurable": {"thread_id": tid, "checkpoint_ns": "", "checkpoint_id": cid}})
    total = W.perf() - t
    s.close()
    return {"objects_per_get": round(spent[0] / len(picks), 2),
            "us_per_object": round(spent[1] / max(1, spent[0]) * 1e6, 2),
            "share_of_get": round(spent[1] / total, 3),
            "us_per_get": round(total / len(picks) * 1e6, 1)}


STORE_READS = ("store_get", "store_filter_10k", "store_semantic_10k")


def m_store(ctx: Ctx, key: str) -> dict:
    """Build a store of N items (gitckpt built in 'os' mode and reopened in the
    subject's mode; SQLite built at FULL and reopened in its mode); reads on
    the subjects the read rows compare (durability does not apply to reads),
    then new puts."""
    from langgraph.store.base import PutOp

    n = ctx.sizes["store_n"]
    ctx.log(f"store[{key}]: building {n} items (fake {W.DIMS}-dim embedding)")
    batch = 500

    def fill(store: Any) -> float:
        t = W.perf()
        for a in range(0, n, batch):
            store.batch([PutOp(W.store_ns(i), f"item-{i}", W.store_item(i)) for i in range(a, min(a + batch, n))])
        return W.perf() - t

    if key.startswith("git"):
        b = W.git_store(ctx.workdir, "store", "os")
        build = fill(b.obj)
        b.close()
        s = W.git_store(ctx.workdir, "store", mode_of(key))
        s.obj.setup()
    elif key.startswith("sqlite"):
        b = W.sqlite_store(ctx.workdir, "store", "FULL")
        build = fill(b.obj)
        b.close()
        s = W.sqlite_store(ctx.workdir, "store", mode_of(key))
    else:
        s = W.memory_store()
        build = fill(s.obj)
    out: dict[str, Any] = {"build_s": build, "checked": getattr(s, "checked", None),
                           "library": getattr(s, "library", None)}
    rounds = ctx.sizes["store_rounds"]

    def get(k: int) -> None:
        i = (k * 7919) % n
        assert s.obj.get(W.store_ns(i), f"item-{i}") is not None

    def filt(k: int) -> None:
        got = s.obj.search(("memories",), filter={"kind": f"k{k % 10}"}, limit=10)
        assert len(got) == 10

    def sem(k: int) -> None:
        got = s.obj.search(("memories",), query=W.text(60_000_000 + k, 80), limit=10)
        assert len(got) == 10

    if key in ("git-fsync", "sqlite-FULL", "memory") or ctx.profiler is not None:
        for name, fn, per in [("store_get", get, 50), ("store_filter_10k", filt, 10), ("store_semantic_10k", sem, 5)]:
            if not ctx.wants(name):
                continue
            if name == "store_semantic_10k" and getattr(s, "semantic", True) is False:
                out["sqlite_missing"] = "SqliteStore has no vector index here: " + s.library  # type: ignore[attr-defined]
                continue
            with ctx.profiling(s, STORE_METHODS):
                out[name] = measure_rounds(fn, rounds, per)
    if ctx.wants("store_put"):
        count = [0]

        def put(k: int) -> None:
            i = n + count[0]
            count[0] += 1
            s.obj.put(W.store_ns(i), f"item-{i}", W.store_item(i))

        with ctx.profiling(s, STORE_METHODS):
            out["store_put"] = measure_rounds(put, ctx.sizes["store_put_rounds"], 10)
    s.close()
    return out


MEASURE: dict[str, Callable[[Ctx, str], dict]] = {
    "chat": m_chat, "chat_async": m_chat_async, "shapes": m_shapes, "latency": m_latency,
    "growth": m_growth, "reads": m_reads, "store": m_store,
}


# -- one process per subject -------------------------------------------------------------


def _child(group: str, key: str, ctx: Ctx, out: str) -> None:
    import atexit

    try:
        c0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t = time.perf_counter()
        res = MEASURE[group](ctx, key)
        c1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        res["_seconds"] = time.perf_counter() - t
        res["_children_cpu"] = (c1.ru_utime + c1.ru_stime) - (c0.ru_utime + c0.ru_stime)
        res["_pid"] = os.getpid()
        Path(out).write_text(json.dumps(res, default=str))
    except BaseException:
        Path(out).write_text(json.dumps({"_error": traceback.format_exc()}))
    finally:
        atexit._run_exitfuncs()  # multiprocessing's children skip them (gitckpt's clean-ups live there)


def in_own_process(group: str, key: str, ctx: Ctx) -> dict:
    """Measure ``key`` in a forked child: it starts with the parent's imports
    and nothing else (the parent never opens a saver before the last child)."""
    out = ctx.workdir / f"result-{group}-{key}.json"
    ctx.workdir.mkdir(parents=True, exist_ok=True)
    proc = multiprocessing.get_context("fork").Process(target=_child, args=(group, key, ctx, str(out)))
    proc.start()
    proc.join()
    if not out.exists():
        raise RuntimeError(f"{group}[{key}]: the child exited with {proc.exitcode} and no result")
    res = json.loads(out.read_text())
    if "_error" in res:
        raise RuntimeError(f"{group}[{key}] failed in its process:\n{res['_error']}")
    return res


def merge(runs: list[Any]) -> Any:
    """Median over rounds of every number (recursively); other values from the last round."""
    last = runs[-1]
    if all(isinstance(r, dict) for r in runs):
        return {k: merge([r[k] for r in runs if k in r]) for k in last}
    if all(isinstance(r, (int, float)) and not isinstance(r, bool) for r in runs):
        return statistics.median(runs)
    return last


def measure_group(group: str, sizes: dict, selected: set[str], workdir: Path, log: Callable[[str], None],
                  info: dict) -> dict[str, dict]:
    subjects = list(GROUP_SUBJECTS[group])
    rounds = sizes["rounds"][group]
    runs: dict[str, list[dict]] = {k: [] for k in subjects}
    for r in range(rounds):
        for key in W.rotate(subjects, r):
            settle()
            d = workdir / f"{group}-{r}-{key}"
            ctx = Ctx(workdir=d, sizes=sizes, selected=selected, log=log)
            runs[key].append(in_own_process(group, key, ctx))
            W.rmtree(d)
    info.setdefault("background_git_cpu_seconds", 0.0)
    info["background_git_cpu_seconds"] += sum(x["_children_cpu"] for v in runs.values() for x in v)
    info.setdefault("process_seconds", {})[group] = {
        k: round(statistics.median(x["_seconds"] for x in v), 1) for k, v in runs.items()}
    info.setdefault("pids", {})[group] = {k: [x["_pid"] for x in v] for k, v in runs.items()}
    if len({x["_pid"] for v in runs.values() for x in v} | {os.getpid()}) != 1 + sum(len(v) for v in runs.values()):
        raise RuntimeError("two subjects ran in one process")
    return {k: merge(v) for k, v in runs.items()}


# -- rows --------------------------------------------------------------------------------


def add_row(rows: dict, name: str, mode: str | None, group: str, res: dict[str, dict],
            values: dict[str, float | None], git: str | None, sq: str | None, mem: str | None = "memory",
            combo: str | None = None, like: str | None = None, checked: str | None = None, **extra: Any) -> None:
    spec = SPECS[name]
    base = f"{name}:{combo}" if combo else name
    key = base if mode in (None, "fsync") or not spec.variants else f"{base}@{mode}"
    if spec.variants and like is None:
        like = "both survive a power loss" if mode == "fsync" else "both survive a process crash"
    row = {
        "gitckpt": values.get("gitckpt"),
        "sqlite": values.get("sqlite"),
        "memory": values.get("memory"),
        "unit": spec.unit,
        "ratio_vs_sqlite": ratio(values.get("gitckpt"), values.get("sqlite")),
        "ratio_vs_memory": ratio(values.get("gitckpt"), values.get("memory")),
        "target": spec.target,
    }
    row["met"] = bool(spec.check(row)) if row["gitckpt"] is not None else False
    row["durability"] = {
        "gitckpt": durability_of(git, group) if git else None,
        "sqlite": durability_of(sq, group) if sq else None,
        "memory": durability_of(mem, group) if mem else None,
        "compares": like or "durability does not change what is measured",
    }
    if checked is None and sq:
        checked = (res.get(sq) or {}).get("checked")
    if checked:
        row["durability"]["sqlite_pragmas"] = checked  # read back from the connection
    row["what"] = spec.what
    row.update(extra)
    rows[key] = row


def pairs(group: str) -> list[tuple[str, str, str]]:
    """(gitckpt mode, its subject, the SQLite subject with the same promise)."""
    return [(m, f"git-{m}", f"sqlite-{W.PAIRS[m]}") for m in ("fsync", "os")]


def rows_chat(rows: dict, res: dict, sizes: dict, selected: set[str], info: dict) -> None:
    for mode, g, sq in pairs("chat"):
        if "chat_turn" in selected:
            add_row(rows, "chat_turn", mode, "chat", res,
                    {"gitckpt": res[g]["ms"], "sqlite": res[sq]["ms"], "memory": res["memory"]["ms"]}, g, sq,
                    turns=sizes["chat_turns"], checkpoints_per_turn=4, messages_per_turn=3,
                    floor_memory_vs_sqlite=ratio(res["memory"]["ms"], res[sq]["ms"]))
        if "disk_after_chat" in selected:
            add_row(rows, "disk_after_chat", mode, "chat", res,
                    {"gitckpt": res[g]["disk"], "sqlite": res[sq]["disk"], "memory": res["memory"]["disk"]}, g, sq,
                    turns=sizes["chat_turns"])
    if "get_old_us" in res.get("git-os", {}):
        git, sq = res["git-os"]["get_old_us"], res["sqlite-FULL"]["get_old_us"]
        info["chat_thread_get_old_us"] = {
            "gitckpt": round(git), "sqlite": round(sq), "memory": round(res["memory"]["get_old_us"]),
            "ratio_vs_sqlite": round(git / sq, 3), "checkpoints": res["git-os"]["checkpoints"],
            "messages_at_most": 3 * sizes["chat_turns"]}


def rows_chat_async(rows: dict, res: dict, sizes: dict, selected: set[str], info: dict) -> None:
    for mode, g, sq in pairs("chat_async"):
        add_row(rows, "chat_turn_async", mode, "chat_async", res,
                {"gitckpt": res[g]["ms"], "sqlite": res[sq]["ms"], "memory": res["memory"]["ms"]}, g, sq,
                turns=sizes["async_turns"], floor_memory_vs_sqlite=ratio(res["memory"]["ms"], res[sq]["ms"]))


def rows_shapes(rows: dict, res: dict, sizes: dict, selected: set[str], info: dict) -> None:
    combos = [c for c in res["memory"]["ms"]]
    for combo in combos:
        shape, api, dur = combo.split(":")
        for mode, g, sq in pairs("shapes"):
            add_row(rows, f"shape_{shape}", mode, "shapes", res,
                    {"gitckpt": res[g]["ms"][combo], "sqlite": res[sq]["ms"][combo],
                     "memory": res["memory"]["ms"][combo]}, g, sq, combo=f"{api}:{dur}",
                    like=("both survive a power loss" if mode == "fsync" else "both survive a process crash")
                    + f"; LangGraph durability={dur!r}" + ("; SQLite peer: AsyncSqliteSaver" if api == "ainvoke"
                                                          else ""),
                    checked=(res[sq].get("checked_by_api") or {}).get(api), invokes=sizes["shape_invokes"])


def rows_latency(rows: dict, res: dict, sizes: dict, selected: set[str], info: dict) -> None:
    for name in ("put_p50", "put_p99", "put_writes_p50", "put_writes_p99"):
        if name not in selected:
            continue
        for mode, g, sq in pairs("latency"):
            add_row(rows, name, mode, "latency", res,
                    {"gitckpt": res[g][name], "sqlite": res[sq][name], "memory": res["memory"][name]}, g, sq,
                    calls=sizes["latency_n"], stat="percentile over the calls of a round; median over rounds")
    info["latency_mean_us"] = {k: {"put": round(v["put_mean"], 1), "put_writes": round(v["put_writes_mean"], 1)}
                               for k, v in res.items()}


def rows_growth(rows: dict, res: dict, sizes: dict, selected: set[str], info: dict) -> None:
    n = sizes["growth_n"]
    g, sq, mem = res["git-os"], res["sqlite-NORMAL"], res["memory"]
    detail = {k: {"put_us_at_100": round(v["lo_us"], 1), f"put_us_at_{n}": round(v["hi_us"], 1)}
              for k, v in (("gitckpt", g), ("sqlite", sq), ("memory", mem))}
    if "ref_us" in g:
        detail["gitckpt"]["put_us_at_100_second_thread_during_late_window"] = round(g["ref_us"], 1)
    add_row(rows, "put_growth", None, "growth", res,
            {"gitckpt": g["ratio"], "sqlite": sq["ratio"], "memory": mem["ratio"]}, "git-os", "sqlite-NORMAL",
            like="gitckpt in 'os' mode: an fsync adds a constant to every put, which would make the ratio look "
                 "flatter; the SQLite peer at synchronous=NORMAL, the same promise",
            steps=n, window=sizes["growth_window"], put_us=detail,
            ratio_same_time=round(g["ratio_same_time"], 3) if "ratio_same_time" in g else None,
            ratio_cpu=round(g["ratio_cpu"], 3), gitckpt_ms_per_1000_puts=g.get("curve"),
            sampled="gitckpt grown for real; the peers sampled at the same list sizes")


def rows_reads(rows: dict, res: dict, sizes: dict, selected: set[str], info: dict) -> None:
    g, sq, mem = res["git-os"], res["sqlite-FULL"], res["memory"]
    if not g["ids"] == sq["ids"] == mem["ids"]:
        raise RuntimeError("the read thread differs between savers")
    for name in READS:
        if name in selected:
            add_row(rows, name, None, "reads", res, {"gitckpt": g[name], "sqlite": sq[name], "memory": mem[name]},
                    "git-os", "sqlite-FULL",
                    like="reads: durability does not apply (thread built with gitckpt 'os', SQLite "
                         "synchronous=OFF, then reopened: gitckpt 'os', SQLite default FULL)",
                    checkpoints=sizes["thread_n"], stat="median over rounds of the mean µs/op")
    info["thread_build_seconds"] = {k: round(res[s]["build_s"], 2)
                                    for k, s in (("gitckpt", "git-os"), ("sqlite", "sqlite-FULL"), ("memory", "memory"))}
    info["thread_cold_open_first_get_ms"] = {"gitckpt": round(g["cold_ms"], 2), "sqlite": round(sq["cold_ms"], 2)}
    if "cold_read_objects" in g:
        info["cold_read_objects"] = g["cold_read_objects"]


def rows_store(rows: dict, res: dict, sizes: dict, selected: set[str], info: dict) -> None:
    n = sizes["store_n"]
    lib = {"sqlite_library": res["sqlite-FULL"].get("library")}
    for name in STORE_READS:
        if name not in selected:
            continue
        sq = res["sqlite-FULL"].get(name)
        note = {} if sq is not None else {"sqlite_missing": res["sqlite-FULL"].get("sqlite_missing")}
        add_row(rows, name, None, "store", res,
                {"gitckpt": res["git-fsync"][name], "sqlite": sq, "memory": res["memory"][name]},
                "git-fsync", "sqlite-FULL", like="reads: durability does not apply", items=n,
                stat="median over rounds of the mean µs/op", **lib, **note)
    if "store_put" in selected:
        for mode, g, sq in pairs("store"):
            add_row(rows, "store_put", mode, "store", res,
                    {"gitckpt": res[g]["store_put"], "sqlite": res[sq]["store_put"],
                     "memory": res["memory"]["store_put"]}, g, sq,
                    items=n, stat="median over rounds of the mean µs/op (a round: 10 puts)", **lib)
    info["store_build_seconds"] = {k: round(res[s]["build_s"], 2)
                                   for k, s in (("gitckpt", "git-os"), ("sqlite", "sqlite-FULL"), ("memory", "memory"))}


ROWS: dict[str, Callable[..., None]] = {
    "chat": rows_chat, "chat_async": rows_chat_async, "shapes": rows_shapes, "latency": rows_latency,
    "growth": rows_growth, "reads": rows_reads, "store": rows_store,
}

# the cost of recording model and tool calls (issue 13): its own module, registered here
import _bench_recording_rows  # noqa: E402

_bench_recording_rows.register(sys.modules[__name__])

# a store's first operation in a new process (issue 14): its own module, registered here
import _bench_store_cold  # noqa: E402

_bench_store_cold.register(sys.modules[__name__])

# scale (issue 14): 1,000 threads, then reads in new processes: its own module, registered here
import _bench_scale  # noqa: E402

_bench_scale.register(sys.modules[__name__])

# -- machine ---------------------------------------------------------------------------------


def _version(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def filesystem_of(path: Path) -> str:
    try:
        out = subprocess.run(["df", "-T", str(path)], capture_output=True, text=True, check=True).stdout
        parts = out.splitlines()[-1].split()
        return f"{parts[1]} ({parts[0]} mounted on {parts[-1]})"
    except Exception:
        return "unknown"


def machine_info(workdir: Path) -> dict:
    import sqlite3

    import pygit2

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        git = subprocess.run(["git", "--version"], capture_output=True, text=True).stdout.strip()
    except OSError:
        git = None
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "pygit2": pygit2.__version__,
        "libgit2": pygit2.LIBGIT2_VERSION,
        "git": git,
        "sqlite": sqlite3.sqlite_version,
        "langgraph": _version("langgraph"),
        "langgraph-checkpoint": _version("langgraph-checkpoint"),
        "langgraph-checkpoint-sqlite": _version("langgraph-checkpoint-sqlite"),
        "gitckpt": _gitckpt_version(),
        "filesystem": filesystem_of(workdir),
        "loadavg_at_start": list(os.getloadavg()),
    }


def _gitckpt_version() -> str:
    """The version, the commit measured, and whether gitckpt/ had uncommitted changes."""
    import gitckpt

    def git(*a: str) -> str:
        try:
            return subprocess.run(["git", "-C", str(ROOT), *a], capture_output=True, text=True).stdout.strip()
        except OSError:
            return ""

    rev = git("rev-parse", "--short", "HEAD")
    dirty = bool(git("status", "--porcelain", "--", "gitckpt"))
    where = ", ".join(x for x in (rev, "with uncommitted changes in gitckpt/" if dirty else "") if x)
    return f"{gitckpt.__version__}" + (f" ({where})" if where else "")


DURABILITY = {
    "gitckpt": {
        "os": W.GIT_DURABILITY["os"],
        "fsync": W.GIT_DURABILITY["fsync"],
    },
    "sqlite": {
        "FULL": W.SQLITE_DURABILITY["FULL"],
        "NORMAL": W.SQLITE_DURABILITY["NORMAL"],
        "store": W.STORE_SQLITE_DURABILITY,
    },
    "memory": W.MEMORY_DURABILITY,
    "pairs": {
        "NAME": "gitckpt fsync vs SQLite synchronous=FULL (SQLite's default): both survive a power loss",
        "NAME@os": "gitckpt os (its default) vs SQLite synchronous=NORMAL: both survive a process crash",
    },
    "headline": "the row without a suffix keeps the SQLite peer at its defaults and runs gitckpt in the mode "
                "with the same promise (fsync)",
}

# -- running -----------------------------------------------------------------------------------


def parse_only(spec: str | None) -> list[str]:
    """Scenario names (a row key such as ``shape_doc:invoke:sync@os`` names its
    scenario; a group name such as ``shapes`` names all of its scenarios)."""
    if not spec:
        return list(SPECS)
    names: list[str] = []
    bad = []
    for s in (s.strip() for s in spec.split(",") if s.strip()):
        n = s.split("@")[0].split(":")[0]
        if n in SPECS:
            names.append(n)
        elif n in GROUP_SUBJECTS:
            names += [k for k, v in SPECS.items() if v.group == n]
        else:
            bad.append(n)
    if bad:
        raise SystemExit(f"unknown scenario(s) {', '.join(bad)}; choose from: {', '.join(SPECS)} "
                         f"(or a group: {', '.join(GROUP_ORDER)})")
    return list(dict.fromkeys(names))


def settle() -> None:
    """Start a measurement on a quiet disk: flush what earlier ones left dirty
    (SQLite's full-list writes, packs) so its write-back does not land on the
    next one's first blocks."""
    gc.collect()
    os.sync()
    time.sleep(0.1)


def run(names: list[str], sizes: dict, workdir: Path, log: Callable[[str], None]) -> tuple[dict, dict]:
    selected = set(names)
    rows: dict[str, dict] = {}
    info: dict[str, Any] = {}
    for g in GROUP_ORDER:
        if not any(SPECS[n].group == g for n in names):
            continue
        t = time.perf_counter()
        res = measure_group(g, sizes, selected, workdir / g, log, info)
        ROWS[g](rows, res, sizes, selected, info)
        info.setdefault("group_seconds", {})[g] = round(time.perf_counter() - t, 1)
    info["background_git_cpu_seconds"] = round(info.get("background_git_cpu_seconds", 0.0), 2)
    order = {n: i for i, n in enumerate(SPECS)}
    rows = dict(sorted(rows.items(), key=lambda kv: (order[kv[0].split("@")[0].split(":")[0]], kv[0])))
    return rows, info


def docs_profile_keys(rows: dict) -> list[str]:
    """The unmet rows --write-docs profiles: one per scenario and mode (a shape's
    invoke:sync row; put_p50 for the latency rows, whose profile shows both calls)."""
    keys = []
    for key, row in rows.items():
        name = key.split("@")[0].split(":")[0]
        if row["met"] or name in ("put_p99", "put_writes_p50", "put_writes_p99"):
            continue
        if SPECS[name].combos and ":invoke:sync" not in key:
            continue
        keys.append(key)
    return keys


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smaller sizes: finishes in under a minute")
    ap.add_argument("--only", metavar="NAME[,NAME]", help="run only these scenarios (or groups)")
    ap.add_argument("--json", metavar="PATH", help="write the results as JSON")
    ap.add_argument("--profile", metavar="NAME", help="run one scenario for GitSaver/GitStore only, under pyinstrument"
                    " (NAME@os for the os-mode row; shape rows as NAME:API:DURABILITY[@os])")
    ap.add_argument("--profile-out", metavar="PATH", help="where --profile writes its text (default: a temp file)")
    ap.add_argument("--write-docs", action="store_true",
                    help="regenerate docs/performance.md (profiling each unmet target)")
    ap.add_argument("--no-profile-docs", action="store_true", help="with --write-docs: skip the profiles")
    ap.add_argument("--workdir", metavar="DIR", help="where the repositories and databases go (default: a temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the workdir")
    args = ap.parse_args(argv)

    mode = "quick" if args.quick else "full"
    sizes = SIZES[mode]
    base = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="gitckpt-bench-"))
    base.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - t0:6.1f}s] {msg}", file=sys.stderr, flush=True)

    import _bench_report as R

    try:
        if args.profile:
            parse_only(args.profile)
            out = Path(args.profile_out) if args.profile_out else Path(tempfile.gettempdir()) / \
                f"gitckpt-profile-{args.profile.replace(':', '-')}.txt"
            full, top = profile(args.profile, sizes, base / "profile", log)
            out.write_text(full)
            print(top)
            print(f"\nfull profile: {out}", file=sys.stderr)
            return 0

        names = parse_only(args.only)
        machine = machine_info(base)
        rows, info = run(names, sizes, base / "run", log)
        machine["loadavg_at_end"] = list(os.getloadavg())
        elapsed = time.perf_counter() - t0
        result = {
            "scenarios": rows,
            "machine": machine,
            "durability": DURABILITY,
            "run": {"mode": mode, "seconds": round(elapsed, 1), "only": args.only, "sizes": sizes,
                    "started": time.strftime("%Y-%m-%d %H:%M:%S %z"),
                    "method": "each subject (saver or store, durability mode) in its own forked process; "
                              "rounds with the order rotating; medians over rounds; ratios from the same run"},
            "info": info,
        }
        R.print_table(result)
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=2, ensure_ascii=False, default=str) + "\n")
            log(f"wrote {args.json}")
        if args.write_docs:
            profiles = {}
            # profiles run after every measurement, in this process, on half the chat
            psizes = dict(sizes, chat_turns=sizes["chat_turns"] // 2, async_turns=sizes["async_turns"] // 2)
            if not args.no_profile_docs:
                for key in docs_profile_keys(rows):
                    log(f"profiling unmet {key} (gitckpt only)")
                    _, top = profile(key, psizes, base / f"profile-{len(profiles)}", log)
                    profiles[key] = top
            path = ROOT / "docs" / "performance.md"
            R.write_docs(path, result, SPECS, profiles)
            log(f"wrote {path}")
        log(f"done in {time.perf_counter() - t0:.1f}s")
        return 0
    finally:
        if not args.keep and not args.workdir:
            W.rmtree(base)


def profile(row: str, sizes: dict, workdir: Path, log: Callable[[str], None]) -> tuple[str, str]:
    """Run the scenario of row key ``row`` for gitckpt only, its calls under
    pyinstrument, in this process."""
    base, _, gmode = row.partition("@")
    name, _, combo = base.partition(":")
    spec = SPECS[name]
    if not gmode:
        gmode = "fsync" if spec.variants else "os"
    if spec.group in ("reads", "growth"):
        gmode = "os"
    if spec.group == "store" and name != "store_put":
        gmode = "fsync"
    api_dur = tuple(combo.split(":")) if combo else ("invoke", "sync") if spec.combos else None
    prof = CallProfiler(per_call=spec.group in ("chat", "chat_async", "shapes"))  # LangGraph calls from its threads
    workdir.mkdir(parents=True, exist_ok=True)
    ctx = Ctx(workdir=workdir, sizes=sizes, selected={name}, log=log, profiler=prof,
              combo=api_dur)  # type: ignore[arg-type]
    MEASURE[spec.group](ctx, f"git-{gmode}")
    full, top = prof.render()
    what = {"chat": f"{sizes['chat_turns']} turns", "chat_async": f"{sizes['async_turns']} turns",
            "shapes": f"{sizes['shape_invokes']} invokes of {':'.join(api_dur or ())}",
            "latency": f"{sizes['latency_n']} puts and put_writes",
            "growth": f"the last {sizes['growth_window']} puts of {sizes['growth_n']:,}",
            "reads": f"a {sizes['thread_n']:,}-checkpoint thread", "store": f"{sizes['store_n']:,} items",
            "recording": f"{sizes.get('record_turns')} turns",
            "scale": f"{sizes.get('scale_threads')} threads x {sizes.get('scale_checkpoints')} checkpoints"}[spec.group]
    head = f"profile of {row} (gitckpt {gmode}; {what})\n"
    return head + full, head + top


if __name__ == "__main__":
    sys.exit(main())
