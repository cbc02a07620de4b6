#!/usr/bin/env python
"""Benchmark gitckpt against its peers: GitSaver vs SqliteSaver vs InMemorySaver,
GitStore vs SqliteStore vs InMemoryStore (issue 5).

All subjects run in the same process, interleaved: the work is cut into blocks
(turns, puts, rounds of reads) and each block runs every subject in turn, the
order rotating from block to block, so the machine's drift and noise hit them
all alike. Results are ratios measured in the same run.

    python scripts/bench.py                     # full run (< 10 min), prints the table
    python scripts/bench.py --quick             # smaller sizes (< 1 min)
    python scripts/bench.py --only chat_turn,list_10k --json out.json
    python scripts/bench.py --profile chat_turn # GitSaver only, under pyinstrument
    python scripts/bench.py --write-docs        # also regenerate docs/performance.md

Durability: a headline row compares like with like. ``NAME`` pairs
``GitSaver(durability="fsync")`` with SQLite's default (``synchronous=FULL``):
both survive a power loss. ``NAME@os`` pairs ``durability="os"`` (gitckpt's
default) with ``synchronous=NORMAL``: both survive a crash of the process.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import _bench_workloads as W  # noqa: E402
from _bench_profile import SAVER_METHODS, STORE_METHODS, CallProfiler  # noqa: E402

# -- scenarios -------------------------------------------------------------------


@dataclass
class Spec:
    name: str
    group: str
    unit: str
    target: str
    check: Callable[[dict], bool]
    what: str
    variants: bool = False  # also a NAME@os row (durability matters)


def _r(row: dict, key: str) -> float:
    v = row.get(key)
    return float("inf") if v is None else v


SPECS: dict[str, Spec] = {
    s.name: s
    for s in [
        Spec("chat_turn", "chat", "ms/turn", "gitckpt/sqlite <= 0.7 and gitckpt/memory <= 1.3",
             lambda r: _r(r, "ratio_vs_sqlite") <= 0.7 and _r(r, "ratio_vs_memory") <= 1.3,
             "a chat graph, 2 nodes a turn (4 checkpoints), growing message list, invoke (durability='async')",
             True),
        Spec("chat_turn_async", "chat_async", "ms/turn", "gitckpt/sqlite <= 0.7",
             lambda r: _r(r, "ratio_vs_sqlite") <= 0.7,
             "the same chat with ainvoke; the SQLite peer is AsyncSqliteSaver", True),
        Spec("disk_after_chat", "chat", "bytes", "gitckpt/sqlite <= 1/30",
             lambda r: _r(r, "ratio_vs_sqlite") <= 1 / 30,
             "bytes on disk after chat_turn, after close(), no manual git gc "
             "(gitckpt: the repository directory; sqlite: db + -wal + -shm; memory: serialized bytes held)", True),
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
        Spec("store_put", "store_put", "µs/op", "gitckpt/sqlite <= 1",
             lambda r: _r(r, "ratio_vs_sqlite") <= 1, "store.put of a new item (embedded) into a store of N items",
             True),
        Spec("store_get", "store_reads", "µs/op", "gitckpt/sqlite <= 1",
             lambda r: _r(r, "ratio_vs_sqlite") <= 1, "store.get of an existing item"),
        Spec("store_filter_10k", "store_reads", "µs/op", "gitckpt/sqlite <= 1",
             lambda r: _r(r, "ratio_vs_sqlite") <= 1, "store.search(('memories',), filter={'kind': ...}, limit=10)"),
        Spec("store_semantic_10k", "store_reads", "µs/op", "gitckpt/sqlite <= 1",
             lambda r: _r(r, "ratio_vs_sqlite") <= 1,
             "store.search(('memories',), query=..., limit=10), fake 64-dim embedding"),
    ]
}

SIZES = {
    "full": {"chat_turns": 300, "async_turns": 300, "turn_block": 10, "growth_n": 10_000, "growth_window": 128,
             "thread_n": 10_000, "read_rounds": 30, "store_n": 10_000, "store_rounds": 30, "store_put_rounds": 40},
    "quick": {"chat_turns": 30, "async_turns": 20, "turn_block": 5, "growth_n": 1_500, "growth_window": 64,
              "thread_n": 1_000, "read_rounds": 8, "store_n": 2_000, "store_rounds": 8, "store_put_rounds": 10},
}

# -- the run context ---------------------------------------------------------------


@dataclass
class Ctx:
    workdir: Path
    sizes: dict
    selected: set[str]
    log: Callable[[str], None]
    only_git: str | None = None  # profiling: run only this GitSaver mode
    profiler: CallProfiler | None = None
    rows: dict[str, dict] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    _cache: dict[str, Any] = field(default_factory=dict)

    def wants(self, name: str) -> bool:
        return name in self.selected

    def git_modes(self) -> list[str]:
        return [self.only_git] if self.only_git else ["fsync", "os"]

    def profile(self, subject: W.Subject, methods: tuple[str, ...]) -> None:
        if self.profiler is not None and subject.kind == "gitckpt":
            self.profiler.install(subject.obj, methods)


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return a / b


def add_row(ctx: Ctx, name: str, mode: str | None, git: W.Subject | None, sq: W.Subject | None,
            mem: W.Subject | None, values: dict[str, float | None], **extra: Any) -> None:
    spec = SPECS[name]
    key = name if mode in (None, "fsync") or not spec.variants else f"{name}@{mode}"
    if spec.variants:
        like = ("both survive a power loss" if mode == "fsync" else "both survive a process crash")
    else:
        like = extra.pop("like", "durability does not change what is measured")
    row = {
        "gitckpt": values.get("gitckpt"),
        "sqlite": values.get("sqlite"),
        "memory": values.get("memory"),
        "unit": spec.unit,
        "ratio_vs_sqlite": ratio(values.get("gitckpt"), values.get("sqlite")),
        "ratio_vs_memory": ratio(values.get("gitckpt"), values.get("memory")),
        "target": spec.target,
    }
    if name == "put_growth":  # the values are already ratios; the target is on gitckpt's own
        pass
    row["met"] = bool(spec.check(row)) if row["gitckpt"] is not None else False
    row["durability"] = {
        "gitckpt": git.durability if git else None,
        "sqlite": sq.durability if sq else None,
        "memory": mem.durability if mem else None,
        "compares": like,
    }
    if sq is not None and getattr(sq, "checked", None):
        row["durability"]["sqlite_pragmas"] = sq.checked  # read back from the connection
    row["what"] = spec.what
    row.update(extra)
    ctx.rows[key] = row


def block_stats(blocks: dict[str, list[float]], a: str, b: str) -> list[float] | None:
    """Quartiles of the per-block ratio a/b (how much the noise moves a ratio)."""
    xa, xb = blocks.get(a), blocks.get(b)
    if not xa or not xb or len(xa) != len(xb) or len(xa) < 4:
        return None
    rs = sorted(x / y for x, y in zip(xa, xb) if y > 0)
    q = statistics.quantiles(rs, n=4)
    return [round(q[0], 3), round(q[2], 3)]


# -- chat ------------------------------------------------------------------------------


def run_chat(ctx: Ctx) -> None:
    if "chat" in ctx._cache:
        return
    turns, block = ctx.sizes["chat_turns"], ctx.sizes["turn_block"]
    subjects: list[W.Subject] = []
    for mode in ctx.git_modes():
        subjects.append(W.git_saver(ctx.workdir, f"chat-git-{mode}", mode))
    if not ctx.only_git:
        subjects += [W.sqlite_saver(ctx.workdir, "chat-sqlite-full", "FULL"),
                     W.sqlite_saver(ctx.workdir, "chat-sqlite-normal", "NORMAL"), W.memory_saver()]
    for s in subjects:
        ctx.profile(s, SAVER_METHODS)
    graphs = [W.chat_graph(s.obj) for s in subjects]
    cfg = {"configurable": {"thread_id": "chat-1"}}
    total = {s.label: 0.0 for s in subjects}
    blocks: dict[str, list[float]] = {s.label: [] for s in subjects}
    order = list(range(len(subjects)))
    ctx.log(f"chat: {turns} turns x {len(subjects)} savers, blocks of {block} turns")
    if ctx.profiler:
        ctx.profiler.start()
    for b, start in enumerate(range(0, turns, block)):
        for i in W.rotate(order, b):
            g = graphs[i]
            gc.collect()
            t = W.perf()
            for turn in range(start, min(start + block, turns)):
                g.invoke(W.turn_input(turn), cfg)
            dt = W.perf() - t
            total[subjects[i].label] += dt
            blocks[subjects[i].label].append(dt)
    if ctx.profiler:
        ctx.profiler.stop()
    # sanity: every saver holds the same conversation
    for s, g in zip(subjects, graphs):
        n = len(g.get_state(cfg).values["messages"])
        if n != 3 * turns:
            raise RuntimeError(f"{s.label}: {n} messages after {turns} turns, expected {3 * turns}")
    # close: GitSaver.close() finishes background packing (part of normal use)
    sizes = {}
    for s in subjects:
        s.close()
        sizes[s.label] = (W.memory_saver_bytes(s.obj) if s.kind == "memory" else W.disk_bytes(s.paths))
    ctx._cache["chat"] = (subjects, {k: v / turns * 1e3 for k, v in total.items()}, blocks, sizes)


def group_chat(ctx: Ctx) -> None:
    run_chat(ctx)
    subjects, ms, blocks, sizes = ctx._cache["chat"]
    by = {s.label: s for s in subjects}
    mem = by.get("memory")
    turns = ctx.sizes["chat_turns"]
    for mode in ctx.git_modes():
        git = by[f"gitckpt[{mode}]"]
        sq = by.get(f"sqlite[{W.PAIRS[mode]}]")
        if ctx.wants("chat_turn"):
            add_row(ctx, "chat_turn", mode, git, sq, mem,
                    {"gitckpt": ms[git.label], "sqlite": ms.get(sq.label) if sq else None,
                     "memory": ms.get("memory")},
                    turns=turns, checkpoints_per_turn=4, messages_per_turn=3,
                    floor_memory_vs_sqlite=ratio(ms.get("memory"), ms.get(sq.label)) if sq else None,
                    ratio_vs_sqlite_block_iqr=block_stats(blocks, git.label, sq.label) if sq else None,
                    ratio_vs_memory_block_iqr=block_stats(blocks, git.label, "memory") if mem else None)
        if ctx.wants("disk_after_chat"):
            add_row(ctx, "disk_after_chat", mode, git, sq, mem,
                    {"gitckpt": sizes[git.label], "sqlite": sizes.get(sq.label) if sq else None,
                     "memory": sizes.get("memory")}, turns=turns)
    if not ctx.only_git:
        chat_thread_reads(ctx)


def chat_thread_reads(ctx: Ctx) -> None:
    """Context for the read rows, not a scenario: ``get_tuple`` by an old id on
    the chat's own thread (a message list that grows to 3 x turns), the savers
    reopened after the chat. The read rows' thread holds a window of nine
    messages per checkpoint instead."""
    subjects, _, _, _ = ctx._cache["chat"]
    mem = next((s for s in subjects if s.kind == "memory"), None)
    if mem is None:
        return
    cfg = {"configurable": {"thread_id": "chat-1", "checkpoint_ns": ""}}
    fresh = [W.git_saver(ctx.workdir, "chat-git-os", "os"), W.sqlite_saver(ctx.workdir, "chat-sqlite-full", "FULL"),
             mem]
    picks: dict[str, list[str]] = {}  # each saver's own ids (LangGraph made them), at the same positions
    for s in fresh:
        ids = sorted(t.config["configurable"]["checkpoint_id"] for t in s.obj.list(cfg))
        picks[s.label] = [ids[(i * 7919) % max(1, 9 * len(ids) // 10)] for i in range(40)]
    n = len(ids)

    def get_old(s: W.Subject, k: int) -> None:
        cid = picks[s.label][k % 40]
        tup = s.obj.get_tuple({"configurable": {"thread_id": "chat-1", "checkpoint_ns": "", "checkpoint_id": cid}})
        assert tup is not None and tup.checkpoint["id"] == cid, (s.label, cid)

    us = measure_rounds(ctx, fresh, get_old, 8, 5)
    for s in fresh[:2]:
        s.close()
    git, sq = us[fresh[0].label], us[fresh[1].label]
    ctx.info["chat_thread_get_old_us"] = {
        "gitckpt": round(git), "sqlite": round(sq), "memory": round(us[mem.label]),
        "ratio_vs_sqlite": round(git / sq, 3), "checkpoints": n, "messages_at_most": 3 * ctx.sizes["chat_turns"]}


async def _chat_async(ctx: Ctx) -> None:
    turns, block = ctx.sizes["async_turns"], ctx.sizes["turn_block"]
    subjects: list[W.Subject] = []
    for mode in ctx.git_modes():
        subjects.append(W.git_saver(ctx.workdir, f"achat-git-{mode}", mode))
    if not ctx.only_git:
        subjects += [await W.async_sqlite_saver(ctx.workdir, "achat-sqlite-full", "FULL"),
                     await W.async_sqlite_saver(ctx.workdir, "achat-sqlite-normal", "NORMAL"), W.memory_saver()]
    for s in subjects:
        ctx.profile(s, SAVER_METHODS)
    graphs = [W.chat_graph(s.obj) for s in subjects]
    cfg = {"configurable": {"thread_id": "chat-1"}}
    total = {s.label: 0.0 for s in subjects}
    blocks: dict[str, list[float]] = {s.label: [] for s in subjects}
    ctx.log(f"chat_async: {turns} turns x {len(subjects)} savers, blocks of {block} turns")
    if ctx.profiler:
        ctx.profiler.start()
    for b, start in enumerate(range(0, turns, block)):
        for i in W.rotate(list(range(len(subjects))), b):
            gc.collect()
            t = W.perf()
            for turn in range(start, min(start + block, turns)):
                await graphs[i].ainvoke(W.turn_input(turn), cfg)
            dt = W.perf() - t
            total[subjects[i].label] += dt
            blocks[subjects[i].label].append(dt)
    if ctx.profiler:
        ctx.profiler.stop()
    for s, g in zip(subjects, graphs):
        n = len((await g.aget_state(cfg)).values["messages"])
        if n != 3 * turns:
            raise RuntimeError(f"{s.label}: {n} messages after {turns} turns, expected {3 * turns}")
        await s.aclose()
    ms = {k: v / turns * 1e3 for k, v in total.items()}
    by = {s.label: s for s in subjects}
    mem = by.get("memory")
    for mode in ctx.git_modes():
        git = by[f"gitckpt[{mode}]"]
        sq = by.get(f"asqlite[{W.PAIRS[mode]}]")
        add_row(ctx, "chat_turn_async", mode, git, sq, mem,
                {"gitckpt": ms[git.label], "sqlite": ms.get(sq.label) if sq else None, "memory": ms.get("memory")},
                turns=turns, floor_memory_vs_sqlite=ratio(ms.get("memory"), ms.get(sq.label)) if sq else None,
                ratio_vs_sqlite_block_iqr=block_stats(blocks, git.label, sq.label) if sq else None)


def group_chat_async(ctx: Ctx) -> None:
    asyncio.run(_chat_async(ctx))


# -- put_growth ---------------------------------------------------------------------------


def group_growth(ctx: Ctx) -> None:
    """One GitSaver thread grows to N checkpoints, its message list one message
    longer at each put. The peers re-serialize the whole list at every put, so
    growing them to N would take hours; they are sampled: a thread that holds
    lists of the same sizes as GitSaver's at the two measured windows.

    The two windows of the one thread are minutes apart, so the machine's drift
    is not cancelled between them; as a check, a second GitSaver thread in the
    same repository is put through the early window *during* the late one
    (``ratio_same_time``)."""
    n, win = ctx.sizes["growth_n"], ctx.sizes["growth_window"]
    mode = ctx.only_git or "os"
    git = W.git_saver(ctx.workdir, "growth-git", mode)
    peers = [] if ctx.only_git else [W.sqlite_saver(ctx.workdir, "growth-sqlite", "NORMAL"), W.memory_saver()]
    sub = 32  # steps per block: one chunk cycle of GitSaver's list layout
    peer_sub = 8  # a peer's put costs the same at every step of a block: fewer samples
    lo0 = max(0, 100 - win // 2)
    lo = [range(a, a + sub) for a in range(lo0, lo0 + win, sub)]
    hi = [range(a, a + sub) for a in range(n - win, n, sub)]
    msgs = [W.human(20_000_000 + i) if i % 2 == 0 else W.ai(20_000_000 + i) for i in range(n + 1)]
    msgs_ref = [W.human(21_000_000 + i) if i % 2 == 0 else W.ai(21_000_000 + i) for i in range(lo0 + win + 1)]
    ctx.log(f"put_growth: GitSaver[{mode}] to step {n}; windows {lo0}..{lo0 + win} and {n - win}..{n}; "
            "peers sampled")

    def put(w: W.ThreadWriter, step: int, source: list) -> tuple[float, float]:
        values = {"messages": source[: step + 1], "turn": step // 3}
        changed = ["messages", "turn"] if step % 3 == 0 else ["messages"]
        c, t = time.thread_time(), W.perf()
        w.put(values, changed)
        return W.perf() - t, time.thread_time() - c

    wall: dict[str, list[float]] = {}
    cpu: dict[str, list[float]] = {}

    def blocks(parts: dict[str, tuple[W.ThreadWriter, list[range], list, int]]) -> None:
        """Run the parts' blocks interleaved; a part: (writer, block ranges, messages, steps per block)."""
        labels = list(parts)
        for k in range(len(next(iter(parts.values()))[1])):
            for label in W.rotate(labels, k):
                w, ranges, source, per = parts[label]
                gc.collect()
                ts = [put(w, s, source) for s in list(ranges[k])[:per]]
                wall.setdefault(label, []).append(sum(t for t, _ in ts) / len(ts))
                cpu.setdefault(label, []).append(sum(c for _, c in ts) / len(ts))

    gw = W.ThreadWriter(git.obj, "growth")
    curve: list[tuple[int, float]] = []
    t_curve = W.perf()

    def grow_to(step: int) -> None:
        nonlocal t_curve
        while gw.step + 1 < step:
            put(gw, gw.step + 1, msgs)
            if (gw.step + 1) % 1000 == 0:
                curve.append((gw.step + 1, round((W.perf() - t_curve) * 1e3)))
                t_curve = W.perf()

    grow_to(lo0)
    early = {"gitckpt@lo": (gw, lo, msgs, sub)}
    for p in peers:
        early[f"{p.kind}@lo"] = (W.ThreadWriter(p.obj, "growth-lo"), lo, msgs, peer_sub)
    blocks(early)
    grow_to(n - win)
    late = {"gitckpt@hi": (gw, hi, msgs, sub)}
    if not ctx.profiler:  # a profile shows the late window of the one thread only
        ref = W.ThreadWriter(git.obj, "growth-ref")
        for s in range(lo0):
            put(ref, s, msgs_ref)
        late["gitckpt@lo-ref"] = (ref, lo, msgs_ref, sub)
    for p in peers:
        late[f"{p.kind}@hi"] = (W.ThreadWriter(p.obj, "growth-hi"), hi, msgs, peer_sub)
    if ctx.profiler:
        ctx.profile(git, SAVER_METHODS)
        ctx.profiler.start()
    blocks(late)
    if ctx.profiler:
        ctx.profiler.stop()
    assert gw.step + 1 == n
    git.close()
    for p in peers:
        p.close()

    def med(d: dict, label: str) -> float:
        return statistics.median(d[label]) * 1e6

    vals: dict[str, float | None] = {}
    detail: dict[str, Any] = {}
    for key in ["gitckpt"] + [p.kind for p in peers]:
        vals[key] = med(wall, f"{key}@hi") / med(wall, f"{key}@lo")
        detail[key] = {"put_us_at_100": round(med(wall, f"{key}@lo"), 1),
                       f"put_us_at_{n}": round(med(wall, f"{key}@hi"), 1)}
    same_time = None
    if "gitckpt@lo-ref" in wall:
        same_time = round(med(wall, "gitckpt@hi") / med(wall, "gitckpt@lo-ref"), 3)
        detail["gitckpt"]["put_us_at_100_second_thread_during_late_window"] = round(med(wall, "gitckpt@lo-ref"), 1)
    add_row(ctx, "put_growth", None, git, peers[0] if peers else None, peers[1] if peers else None, vals,
            like="gitckpt in 'os' mode: an fsync adds a constant to every put, which would make the ratio look "
                 "flatter; the SQLite peer at synchronous=NORMAL, the same promise",
            steps=n, window=win, put_us=detail,
            ratio_same_time=same_time,
            ratio_cpu=round(med(cpu, "gitckpt@hi") / med(cpu, "gitckpt@lo"), 3),
            gitckpt_ms_per_1000_puts=curve,
            sampled="gitckpt grown for real; the peers sampled at the same list sizes")


# -- reads on a 10k-checkpoint thread ------------------------------------------------------


def build_thread(ctx: Ctx) -> dict:
    if "thread" in ctx._cache:
        return ctx._cache["thread"]
    n = ctx.sizes["thread_n"]
    ctx.log(f"reads: building a {n}-checkpoint thread (put + put_writes each) in each saver")
    window = 8

    def fill(saver: Any, label: str) -> tuple[list[str], float]:
        w = W.ThreadWriter(saver, "t10k")
        t = W.perf()
        for i in range(n):
            msgs = [W.human(30_000_000 + j) if j % 2 == 0 else W.ai(30_000_000 + j)
                    for j in range(max(0, i - window), i + 1)]
            w.put({"messages": msgs, "counter": i}, ["messages", "counter"])
            w.put_writes([("messages", [W.ai(40_000_000 + i)])], i)
        return w.ids, W.perf() - t

    build: dict[str, float] = {}
    git_path = ctx.workdir / "reads-git.git"
    from gitckpt import GitSaver

    g = GitSaver(str(git_path), durability="os")
    ids, build["gitckpt"] = fill(g, "git")
    g.close()
    subjects: list[W.Subject] = []
    if not ctx.only_git:
        s = W.sqlite_saver(ctx.workdir, "reads-sqlite", "OFF")  # durability is irrelevant to reads
        ids2, build["sqlite"] = fill(s.obj, "sqlite")
        s.close()
        m = W.memory_saver()
        ids3, build["memory"] = fill(m.obj, "memory")
        assert ids == ids2 == ids3
    # reopen, as a process that starts on an existing thread would
    t = W.perf()
    gs = W.git_saver(ctx.workdir, "reads-git", ctx.only_git or "os")
    cfg = {"configurable": {"thread_id": "t10k", "checkpoint_ns": ""}}
    gs.obj.get_tuple(cfg)
    cold = {"gitckpt": (W.perf() - t) * 1e3}
    subjects.append(gs)
    if not ctx.only_git:
        t = W.perf()
        ss = W.sqlite_saver(ctx.workdir, "reads-sqlite", "FULL")
        ss.obj.get_tuple(cfg)
        cold["sqlite"] = (W.perf() - t) * 1e3
        subjects += [ss, m]
    ctx.info["thread_build_seconds"] = {k: round(v, 2) for k, v in build.items()}
    ctx.info["thread_cold_open_first_get_ms"] = {k: round(v, 2) for k, v in cold.items()}
    ctx._cache["thread"] = {"subjects": subjects, "ids": ids, "cfg": cfg}
    return ctx._cache["thread"]


def measure_rounds(ctx: Ctx, subjects: list[W.Subject], op: Callable[[W.Subject, int], Any], rounds: int,
                   per_round: int) -> dict[str, float]:
    """Median over rounds of the round's mean µs per op; subjects alternate
    within each round, the order rotating from round to round."""
    for s in subjects:  # warm up
        op(s, 0)
    per: dict[str, list[float]] = {s.label: [] for s in subjects}
    k = 0
    for r in range(rounds):
        for s in W.rotate(subjects, r):
            t = W.perf()
            for j in range(per_round):
                op(s, k + j)
            per[s.label].append((W.perf() - t) / per_round * 1e6)
        k += per_round
    return {label: statistics.median(v) for label, v in per.items()}


def measured_row(ctx: Ctx, name: str, subjects: list[W.Subject], op: Callable[[W.Subject, int], Any],
                 rounds: int, per: int, git: W.Subject, sq: W.Subject | None, mem: W.Subject | None,
                 methods: Any, **row: Any) -> None:
    """Measure ``op`` on the subjects (profiling gitckpt's ``methods`` if asked) and add its row."""
    ctx.log(f"{name}: {rounds} rounds x {per} ops")
    if ctx.profiler:
        ctx.profile(git, methods)
        ctx.profiler.start()
    us = measure_rounds(ctx, subjects, op, rounds, per)
    if ctx.profiler:
        ctx.profiler.stop()
    add_row(ctx, name, None, git, sq, mem,
            {"gitckpt": us[git.label], "sqlite": us.get(sq.label) if sq else None,
             "memory": us.get(mem.label) if mem else None},
            stat="median over rounds of the mean µs/op", **row)


def group_reads(ctx: Ctx) -> None:
    th = build_thread(ctx)
    subjects, ids, cfg = th["subjects"], th["ids"], th["cfg"]
    if ctx.only_git:  # a profile: gitckpt alone (the thread may come from the measured run)
        subjects = [s for s in subjects if s.kind == "gitckpt"]
    n = len(ids)
    rounds = ctx.sizes["read_rounds"]
    git = subjects[0]
    sq = next((s for s in subjects if s.kind == "sqlite"), None)
    mem = next((s for s in subjects if s.kind == "memory"), None)
    old = [ids[(i * 7919) % max(1, n // 5)] for i in range(997)]  # from the oldest fifth
    mid = [ids[n // 10 + (i * 7919) % max(1, 8 * n // 10)] for i in range(997)]
    tid = "t10k"

    def get_latest(s: W.Subject, k: int) -> None:
        assert s.obj.get_tuple(cfg).checkpoint["id"] == ids[-1]

    def get_old(s: W.Subject, k: int) -> None:
        cid = old[k % len(old)]
        tup = s.obj.get_tuple({"configurable": {"thread_id": tid, "checkpoint_ns": "", "checkpoint_id": cid}})
        assert tup.checkpoint["id"] == cid

    def list10(s: W.Subject, k: int) -> None:
        got = list(s.obj.list(cfg, limit=10))
        assert len(got) == 10 and got[0].checkpoint["id"] == ids[-1]

    def list_before(s: W.Subject, k: int) -> None:
        cid = mid[k % len(mid)]
        before = {"configurable": {"thread_id": tid, "checkpoint_ns": "", "checkpoint_id": cid}}
        got = list(s.obj.list(cfg, before=before, limit=10))
        assert len(got) == 10 and got[0].checkpoint["id"] < cid

    ops = [("get_latest_10k", get_latest, 50), ("get_old_10k", get_old, 50), ("list_10k", list10, 10),
           ("list_before_10k", list_before, 10)]
    for name, fn, per in ops:
        if not ctx.wants(name):
            continue
        measured_row(ctx, name, subjects, fn, rounds, per, git, sq, mem, SAVER_METHODS,
                     like="reads: durability does not apply (thread built with gitckpt 'os', SQLite "
                          "synchronous=OFF, then reopened: gitckpt 'os', SQLite default FULL)",
                     checkpoints=n)
    if not ctx.profiler and ctx.wants("get_old_10k"):
        ctx.info["cold_read_objects"] = cold_read_objects(ctx, ids[n // 5: n // 10 * 3], tid)


def cold_read_objects(ctx: Ctx, ids: list[str], tid: str) -> dict:
    """What a cold ``get_tuple`` by id spends reading git objects: a saver
    opened afresh (empty caches) reads up to 200 checkpoints once each,
    counting and timing its object reads (``GitRepo._read_raw``)."""
    s = W.git_saver(ctx.workdir, "reads-git", "os")
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


# -- store ---------------------------------------------------------------------------------


def build_stores(ctx: Ctx) -> dict:
    if "stores" in ctx._cache:
        return ctx._cache["stores"]
    from langgraph.store.base import PutOp

    n = ctx.sizes["store_n"]
    ctx.log(f"store: building {n} items in each store (fake {W.DIMS}-dim embedding)")
    batch = 500
    build: dict[str, float] = {}

    def fill(store: Any, key: str) -> None:
        t = W.perf()
        for a in range(0, n, batch):
            store.batch([PutOp(W.store_ns(i), f"item-{i}", W.store_item(i)) for i in range(a, min(a + batch, n))])
        build[key] = W.perf() - t

    gb = W.git_store(ctx.workdir, "store-git", "os")
    fill(gb.obj, "gitckpt")
    gb.close()
    subjects: dict[str, W.Subject] = {}
    import shutil

    # the same repository, copied, opened in each durability mode (durability is a property of writes)
    for mode in ctx.git_modes():
        if mode != "os":
            shutil.copytree(ctx.workdir / "store-git.git", ctx.workdir / f"store-git-{mode}.git")
            subjects[f"git-{mode}"] = W.git_store(ctx.workdir, f"store-git-{mode}", mode)
        else:
            subjects["git-os"] = W.git_store(ctx.workdir, "store-git", "os")
    if not ctx.only_git:
        sb = W.sqlite_store(ctx.workdir, "store-sqlite", "FULL")
        fill(sb.obj, "sqlite")
        sb.close()
        shutil.copy(ctx.workdir / "store-sqlite.sqlite", ctx.workdir / "store-sqlite-normal.sqlite")
        subjects["sqlite-FULL"] = W.sqlite_store(ctx.workdir, "store-sqlite", "FULL")
        subjects["sqlite-NORMAL"] = W.sqlite_store(ctx.workdir, "store-sqlite-normal", "NORMAL")
        m = W.memory_store()
        fill(m.obj, "memory")
        subjects["memory"] = m
    for s in subjects.values():
        if s.kind == "gitckpt":
            s.obj.setup()
    ctx.info["store_build_seconds"] = {k: round(v, 2) for k, v in build.items()}
    ctx._cache["stores"] = subjects
    return subjects


def group_store_reads(ctx: Ctx) -> None:
    subs = build_stores(ctx)
    n = ctx.sizes["store_n"]
    rounds = ctx.sizes["store_rounds"]
    mode = ctx.only_git or "fsync"
    git = subs[f"git-{mode}"]
    sq = subs.get("sqlite-FULL") if not ctx.only_git else None
    mem = subs.get("memory") if not ctx.only_git else None
    subjects = [s for s in (git, sq, mem) if s is not None]

    def get(s: W.Subject, k: int) -> None:
        i = (k * 7919) % n
        assert s.obj.get(W.store_ns(i), f"item-{i}") is not None

    def filt(s: W.Subject, k: int) -> None:
        got = s.obj.search(("memories",), filter={"kind": f"k{k % 10}"}, limit=10)
        assert len(got) == 10

    def sem(s: W.Subject, k: int) -> None:
        got = s.obj.search(("memories",), query=W.text(60_000_000 + k, 80), limit=10)
        assert len(got) == 10

    for name, fn, per in [("store_get", get, 50), ("store_filter_10k", filt, 10), ("store_semantic_10k", sem, 5)]:
        if not ctx.wants(name):
            continue
        subs_here = subjects
        note = {}
        if sq is not None:
            note["sqlite_library"] = sq.library
            if name == "store_semantic_10k" and not sq.semantic:
                subs_here = [s for s in subjects if s is not sq]
                note["sqlite_missing"] = "SqliteStore has no vector index here: " + sq.library
        measured_row(ctx, name, subs_here, fn, rounds, per, git, sq, mem, STORE_METHODS,
                     like="reads: durability does not apply", items=n, **note)


def group_store_put(ctx: Ctx) -> None:
    subs = build_stores(ctx)
    n = ctx.sizes["store_n"]
    rounds = ctx.sizes["store_put_rounds"]
    per = 10
    subjects = [s for s in subs.values()]
    if ctx.only_git:  # a profile: gitckpt alone (the stores may come from the measured run)
        subjects = [subs[f"git-{ctx.only_git}"]]
    for s in subjects:
        ctx.profile(s, STORE_METHODS)
    counters = {s.label: 0 for s in subjects}

    def put(s: W.Subject, k: int) -> None:
        i = n + counters[s.label]
        counters[s.label] += 1
        s.obj.put(W.store_ns(i), f"item-{i}", W.store_item(i))

    ctx.log(f"store_put: {rounds} rounds x {per} puts x {len(subjects)} stores")
    if ctx.profiler:
        ctx.profiler.start()
    us = measure_rounds(ctx, subjects, put, rounds, per)
    if ctx.profiler:
        ctx.profiler.stop()
    mem = subs.get("memory") if not ctx.only_git else None
    for mode in ctx.git_modes():
        git = subs[f"git-{mode}"]
        sq = subs.get(f"sqlite-{W.PAIRS[mode]}") if not ctx.only_git else None
        add_row(ctx, "store_put", mode, git, sq, mem,
                {"gitckpt": us[git.label], "sqlite": us.get(sq.label) if sq else None,
                 "memory": us.get(mem.label) if mem else None},
                items=n, stat="median over rounds of the mean µs/op (a round: 10 puts)",
                **({"sqlite_library": sq.library} if sq else {}))


GROUPS: dict[str, Callable[[Ctx], None]] = {
    "chat": group_chat,
    "chat_async": group_chat_async,
    "growth": group_growth,
    "reads": group_reads,
    "store_reads": group_store_reads,
    "store_put": group_store_put,
}

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
    if not spec:
        return list(SPECS)
    names = [s.strip().split("@")[0] for s in spec.split(",") if s.strip()]
    bad = [n for n in names if n not in SPECS]
    if bad:
        raise SystemExit(f"unknown scenario(s) {', '.join(bad)}; choose from: {', '.join(SPECS)}")
    return names


def settle() -> None:
    """Start a scenario on a quiet disk: flush what earlier ones left dirty
    (SQLite's full-list writes, packs) so its write-back does not land on the
    next scenario's first blocks."""
    gc.collect()
    os.sync()
    time.sleep(0.5)


def release_peers(ctx: Ctx) -> None:
    """Once the reads group is done, close the read thread's peers and drop
    them, so the next group does not run beside them. Measured: with the read thread's SqliteSaver and
    InMemorySaver (10,000 checkpoints each) still open, GitStore's puts in the
    next group took 1.7 times as long and SqliteStore's 1.3 times (store_put
    1.10 and 1.31@os; with them closed 0.86 and 0.71@os). The gitckpt subject
    stays: the profiles of unmet targets reuse its thread."""
    th = ctx._cache.get("thread")
    if th is None:
        return
    for sub in [s for s in th["subjects"] if s.kind != "gitckpt"]:
        sub.close()
        th["subjects"].remove(sub)
    gc.collect()


def run(names: list[str], sizes: dict, workdir: Path, log: Callable[[str], None], only_git: str | None = None,
        profiler: CallProfiler | None = None, cache: dict | None = None) -> Ctx:
    ctx = Ctx(workdir=workdir, sizes=sizes, selected=set(names), log=log, only_git=only_git, profiler=profiler)
    if cache is not None:  # profiles of several read scenarios share one built thread / store
        ctx._cache = cache
    groups = []
    for n in SPECS:  # a fixed order: the chat first, on a quiet process
        if n in names and SPECS[n].group not in groups:
            groups.append(SPECS[n].group)
    for g in groups:
        settle()
        t = time.perf_counter()
        GROUPS[g](ctx)
        ctx.info.setdefault("group_seconds", {})[g] = round(time.perf_counter() - t, 1)
        release_peers(ctx)
    order = {n: i for i, n in enumerate(SPECS)}
    ctx.rows = dict(sorted(ctx.rows.items(), key=lambda kv: (order[kv[0].split("@")[0]], kv[0])))
    return ctx


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smaller sizes: finishes in under a minute")
    ap.add_argument("--only", metavar="NAME[,NAME]", help="run only these scenarios")
    ap.add_argument("--json", metavar="PATH", help="write the results as JSON")
    ap.add_argument("--profile", metavar="NAME", help="run one scenario for GitSaver/GitStore only, under pyinstrument"
                    " (NAME@os for the os-mode row)")
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
            name, _, gmode = args.profile.partition("@")
            parse_only(name)
            out = Path(args.profile_out) if args.profile_out else Path(tempfile.gettempdir()) / \
                f"gitckpt-profile-{args.profile}.txt"
            full, top = profile(name, gmode or None, sizes, base / "profile", log)
            out.write_text(full)
            print(top)
            print(f"\nfull profile: {out}", file=sys.stderr)
            return 0

        names = parse_only(args.only)
        machine = machine_info(base)
        children0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        ctx = run(names, sizes, base / "run", log)
        children1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        machine["loadavg_at_end"] = list(os.getloadavg())
        elapsed = time.perf_counter() - t0
        ctx.info["background_git_cpu_seconds"] = round(
            (children1.ru_utime + children1.ru_stime) - (children0.ru_utime + children0.ru_stime), 2)
        result = {
            "scenarios": ctx.rows,
            "machine": machine,
            "durability": DURABILITY,
            "run": {"mode": mode, "seconds": round(elapsed, 1), "only": args.only, "sizes": sizes,
                    "started": time.strftime("%Y-%m-%d %H:%M:%S %z"),
                    "method": "same process, interleaved blocks, rotating order; ratios from the same run"},
            "info": ctx.info,
        }
        R.print_table(result)
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=2, ensure_ascii=False, default=str) + "\n")
            log(f"wrote {args.json}")
        if args.write_docs:
            profiles = {}
            # the profiles reuse the measured run's 10k thread and stores (not its chat), and
            # profile a chat half as long, to keep --write-docs within the time budget
            shared = {k: v for k, v in ctx._cache.items() if k in ("thread", "stores")}
            psizes = dict(sizes, chat_turns=sizes["chat_turns"] // 2, async_turns=sizes["async_turns"] // 2)
            if not args.no_profile_docs:
                for key, row in ctx.rows.items():
                    if row["met"]:
                        continue
                    name, _, gmode = key.partition("@")
                    gm = gmode or ("fsync" if SPECS[name].variants else None)
                    log(f"profiling unmet {key} (gitckpt only)")
                    _, top = profile(name, gm, psizes, base / f"profile-{gm}", log, cache=shared)
                    profiles[key] = top
            path = ROOT / "docs" / "performance.md"
            R.write_docs(path, result, SPECS, profiles)
            log(f"wrote {path}")
        log(f"done in {time.perf_counter() - t0:.1f}s")
        return 0
    finally:
        if not args.keep and not args.workdir:
            W.rmtree(base)


def profile(name: str, gmode: str | None, sizes: dict, workdir: Path, log: Callable[[str], None],
            cache: dict | None = None) -> tuple[str, str]:
    """Run scenario ``name`` for gitckpt only, its calls under pyinstrument."""
    spec = SPECS[name]
    if gmode is None:
        gmode = "fsync" if spec.variants else ("os" if spec.group in ("growth", "reads") else "fsync")
    if spec.group == "reads":
        gmode = "os"
    prof = CallProfiler(per_call=spec.group in ("chat", "chat_async"))  # LangGraph calls from its threads
    workdir.mkdir(parents=True, exist_ok=True)
    run([name], sizes, workdir, log, only_git=gmode, profiler=prof, cache=cache)
    if cache is not None:
        cache.pop("chat", None)  # only the built thread and stores are shared
    full, top = prof.render()
    what = {"chat": f"{sizes['chat_turns']} turns", "chat_async": f"{sizes['async_turns']} turns",
            "growth": f"the last {sizes['growth_window']} puts of {sizes['growth_n']:,}",
            "reads": f"a {sizes['thread_n']:,}-checkpoint thread", "store_reads": f"{sizes['store_n']:,} items",
            "store_put": f"{sizes['store_n']:,} items"}[spec.group]
    head = f"profile of {name} (gitckpt {gmode}; {what})\n"
    return head + full, head + top


if __name__ == "__main__":
    sys.exit(main())
