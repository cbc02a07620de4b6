"""The cost of recording model and tool calls (issue 13), as rows of scripts/bench.py.

Group ``recording``, three subjects, each in its own forked process like every
other subject of bench.py:

* ``plain``: a chat on ``GitSaver(record=False)``: a node that sends a system
  prompt and the whole history to a deterministic offline chat model, one turn
  per ``invoke`` (``durability="async"``, LangGraph's default);
* ``record``: the same chat on ``GitSaver(record=True)``;
* ``reproduce``: the same chat recorded (its time is the "running it" figure),
  then ``gitckpt.reproduce.reproduce`` of that thread with a fresh saver.

Rows (``gitckpt`` is the recorded side, ``baseline`` the same thing without
recording, ``ratio_vs_baseline`` the ratio; the sqlite and memory columns do not
apply):

* ``record_turn``: ms per turn, goal ratio <= 1.1 (also the CPU time per turn,
  less disturbed by other processes on a shared machine);
* ``record_disk``: bytes of the repository after ``git repack -a -d`` (loose
  objects and small packs folded into one pack, as maintenance eventually
  does), goal ratio <= 1.3; the bytes before the repack are kept too;
* ``reproduce_thread``: seconds to reproduce the chat's thread against seconds
  to run it (no goal: the figure the issue asks for).

Registered by bench.py (``register``), which keeps its own code apart from this
workload's.
"""

from __future__ import annotations

import gc
import subprocess
import time
from pathlib import Path
from typing import Any

SUBJECTS = ("plain", "record", "reproduce")
ROW_NAMES = ("record_turn", "record_disk", "reproduce_thread")
QUICK_TURNS = 20
FULL_TURNS = 300
BLOCK = 10
WARMUP = 2  # untimed turns on another thread, first


def chat_graph(saver: Any) -> Any:
    """A chat node that sends a system prompt and the whole history to an offline model."""
    from langchain_core.language_models.chat_models import BaseChatModel
    from langchain_core.messages import AIMessage, SystemMessage
    from langchain_core.outputs import ChatGeneration, ChatResult
    from langgraph.graph import START, MessagesState, StateGraph

    class Echo(BaseChatModel):
        @property
        def _llm_type(self) -> str:
            return "bench-echo"

        def _generate(self, messages, stop=None, run_manager=None, **kwargs):
            text = f"turn {len(messages)}: you said {messages[-1].content!s:.200}"
            return ChatResult(generations=[ChatGeneration(message=AIMessage(content=text))])

    model = Echo()

    def chat(state: MessagesState) -> dict:
        return {"messages": [model.invoke([SystemMessage("You are a benchmark."), *state["messages"]])]}

    b = StateGraph(MessagesState)
    b.add_node("chat", chat)
    b.add_edge(START, "chat")
    return b.compile(checkpointer=saver)


def turn_text(i: int) -> str:
    return f"message {i}: " + "lorem ipsum dolor sit amet " * 8


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def run_chat(repo: Path, turns: int, record: bool, log: Any = None) -> dict:
    """``turns`` turns of the chat on a new repository (after ``WARMUP`` untimed turns
    on another thread); per-turn wall and CPU time."""
    from gitckpt import GitSaver

    saver = GitSaver(repo, record=record)
    graph = chat_graph(saver)
    cfg = {"configurable": {"thread_id": "chat"}}
    for i in range(WARMUP):  # first calls import and build what later ones reuse: not timed
        graph.invoke({"messages": [("user", turn_text(i))]}, {"configurable": {"thread_id": "warm-up"}})
    wall = cpu = 0.0
    for start in range(0, turns, BLOCK):
        gc.collect()
        t, c = time.perf_counter(), time.process_time()
        for i in range(start, min(start + BLOCK, turns)):
            graph.invoke({"messages": [("user", turn_text(i))]}, cfg)
        wall += time.perf_counter() - t
        cpu += time.process_time() - c
    n = len(graph.get_state(cfg).values["messages"])
    if n != 2 * turns:
        raise RuntimeError(f"chat (record={record}): {n} messages after {turns} turns, expected {2 * turns}")
    saver.close()
    return {"turn_ms": wall / turns * 1e3, "turn_cpu_ms": cpu / turns * 1e3, "run_s": wall}


def measure(ctx: Any, key: str) -> dict:
    """One subject of group ``recording`` (bench.py's ``MEASURE``), in its own process.
    A profile (``--profile record_turn``) passes ``git-<mode>``: the recorded chat."""
    turns = ctx.sizes["record_turns"]
    if key.startswith("git-"):
        key = "record"
    repo = ctx.workdir / f"{key}.git"
    ctx.workdir.mkdir(parents=True, exist_ok=True)
    ctx.log(f"recording[{key}]: {turns} turns")
    if key in ("plain", "record"):
        with _profiling(ctx):
            out = run_chat(repo, turns, key == "record")
        out["disk"] = _dir_bytes(repo)
        subprocess.run(["git", "--git-dir", str(repo), "repack", "-a", "-d", "-q"], check=True)
        out["disk_packed"] = _dir_bytes(repo)
        return out
    from gitckpt import GitSaver
    from gitckpt.reproduce import reproduce

    out = run_chat(repo, turns, True)
    gc.collect()
    saver = GitSaver(repo)
    t = time.perf_counter()
    with _profiling(ctx):
        result = reproduce(saver, chat_graph(saver), "chat")
    out["reproduce_s"] = time.perf_counter() - t
    saver.close()
    if not result.ok or result.answered["model"] != turns:
        raise RuntimeError(f"reproduce of the chat: {result.summary()}")
    out["summary"] = result.summary()
    return out


class _profiling:
    """bench.py's profiler around the measured part, when profiling (``--profile``)."""

    def __init__(self, ctx: Any) -> None:
        self.prof = getattr(ctx, "profiler", None)

    def __enter__(self) -> None:
        if self.prof is not None:
            self.prof.start()

    def __exit__(self, *exc: Any) -> None:
        if self.prof is not None:
            self.prof.stop()


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else a / b


def rows(bench: Any, rows: dict, res: dict, sizes: dict, selected: set[str], info: dict) -> None:
    """bench.py's ``ROWS`` entry: the recorded side against the plain one."""
    plain, rec, rep = res["plain"], res["record"], res["reproduce"]
    turns = sizes["record_turns"]
    common = {"sqlite": None, "memory": None, "ratio_vs_sqlite": None, "ratio_vs_memory": None, "turns": turns,
              "durability": {"gitckpt": "os (GitSaver's default), LangGraph durability='async'",
                             "sqlite": None, "memory": None,
                             "compares": "the same chat on GitSaver(record=True) and GitSaver(record=False)"}}

    def add(name: str, value: float, baseline: float, **extra: Any) -> None:
        spec = bench.SPECS[name]
        row = {"gitckpt": value, "baseline": baseline, "ratio_vs_baseline": _ratio(value, baseline),
               "unit": spec.unit, "target": spec.target, **common, **extra}
        row["met"] = bool(spec.check(row))
        row["what"] = spec.what
        rows[name] = row

    if "record_turn" in selected:
        add("record_turn", rec["turn_ms"], plain["turn_ms"], cpu_ms={"record": rec["turn_cpu_ms"],
            "baseline": plain["turn_cpu_ms"], "ratio": _ratio(rec["turn_cpu_ms"], plain["turn_cpu_ms"])})
    if "record_disk" in selected:
        add("record_disk", rec["disk_packed"], plain["disk_packed"],
            before_repack={"record": rec["disk"], "baseline": plain["disk"],
                           "ratio": _ratio(rec["disk"], plain["disk"])})
    if "reproduce_thread" in selected:
        add("reproduce_thread", rep["reproduce_s"], rep["run_s"], summary=rep.get("summary"))


def print_rows(result: dict) -> None:
    """The recording rows with their baseline (bench.py's table has no column for it)."""
    found = [(k, r) for k, r in result.get("scenarios", {}).items() if k in ROW_NAMES]
    if not found:
        return
    print("recording (issue 13): the same chat with and without GitSaver(record=True), each in its own process")
    for name, r in found:
        unit = r["unit"]
        v, b, x = r["gitckpt"], r["baseline"], r["ratio_vs_baseline"]
        what = {"record_turn": "record / plain", "record_disk": "record / plain (after git repack -a -d)",
                "reproduce_thread": "reproduce / run"}[name]
        extra = ""
        if name == "record_turn":
            cpu = r["cpu_ms"]
            extra = f"; CPU {cpu['record']:.2f} / {cpu['baseline']:.2f} ms = {cpu['ratio']:.2f}x"
        print(f"  {name:18s} {v:12.4g} / {b:12.4g} {unit:8s} {x:5.2f}x  {what}; target {r['target']}: "
              f"{'met' if r['met'] else 'NOT met'}{extra}")


def register(bench: Any) -> None:
    """Add the group ``recording`` to bench.py's tables (its module object)."""
    spec = bench.Spec
    for s in (
        spec("record_turn", "recording", "ms/turn", "record/plain <= 1.1",
             lambda r: (r.get("ratio_vs_baseline") or float("inf")) <= 1.1,
             "a chat turn on GitSaver(record=True) against GitSaver(record=False): one model node that sends a "
             "system prompt and the whole history, an offline model (scripts/_bench_recording_rows.py)"),
        spec("record_disk", "recording", "bytes", "record/plain <= 1.3",
             lambda r: (r.get("ratio_vs_baseline") or float("inf")) <= 1.3,
             "the repository after that chat, after git repack -a -d, with and without recording"),
        spec("reproduce_thread", "recording", "s", "none (measured)", lambda r: True,
             "gitckpt.reproduce of the recorded chat's thread (a fresh saver) against the time of running it"),
    ):
        bench.SPECS[s.name] = s
    bench.GROUP_SUBJECTS["recording"] = SUBJECTS
    bench.GROUP_ORDER = (*bench.GROUP_ORDER, "recording")
    bench.SIZES["full"]["rounds"]["recording"] = 2
    bench.SIZES["full"]["record_turns"] = FULL_TURNS
    bench.SIZES["quick"]["rounds"]["recording"] = 1
    bench.SIZES["quick"]["record_turns"] = QUICK_TURNS
    bench.MEASURE["recording"] = measure
    bench.ROWS["recording"] = lambda *a: rows(bench, *a)

    import _bench_report as report

    table = report.print_table
    if getattr(table, "_with_recording", False):
        return

    def print_table(result: dict) -> None:
        table(result)
        print_rows(result)

    print_table._with_recording = True  # type: ignore[attr-defined]
    report.print_table = print_table
