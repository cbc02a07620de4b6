"""Cost of recording model and tool calls (issue 13), each case in its own process.

    python scripts/bench_recording.py [--turns 300]

Runs the same chat (a model node answering a 300-turn conversation, a
deterministic offline model) on ``GitSaver(record=False)`` and
``GitSaver(record=True)``, each in a fresh process, and reports: the mean time
of a turn (``invoke``; wall and CPU time, the latter less disturbed by other
processes on a shared machine), the repository's size after ``git repack -a -d``
(loose objects and small packs folded into one pack, as the background repack
eventually does), and the time of ``reproduce`` of the recorded thread against
the time of running it. Kept apart from scripts/bench.py so the two can change
independently.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _chat_graph(saver):
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


def _text(i: int) -> str:
    return f"message {i}: " + "lorem ipsum dolor sit amet " * 8


def run_chat(repo: str, turns: int, record: bool) -> dict:
    from gitckpt import GitSaver

    saver = GitSaver(repo, record=record)
    graph = _chat_graph(saver)
    cfg = {"configurable": {"thread_id": "chat"}}
    times, cpu = [], []
    for i in range(turns):
        t0, c0 = time.perf_counter(), time.process_time()
        graph.invoke({"messages": [("user", _text(i))]}, cfg)
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    saver.close()
    subprocess.run(["git", "--git-dir", repo, "repack", "-a", "-d", "-q"], check=True)
    size = sum(p.stat().st_size for p in Path(repo, "objects").rglob("*") if p.is_file())
    return {"turn_ms": 1000 * sum(times) / len(times), "turn_cpu_ms": 1000 * sum(cpu) / len(cpu),
            "total_s": sum(times), "repo_bytes": size}


def run_reproduce(repo: str) -> dict:
    from gitckpt import GitSaver
    from gitckpt.reproduce import reproduce

    saver = GitSaver(repo)
    t0 = time.perf_counter()
    result = reproduce(saver, _chat_graph(saver), "chat")
    elapsed = time.perf_counter() - t0
    saver.close()
    return {"reproduce_s": elapsed, "ok": result.ok, "summary": result.summary()}


def child(args: argparse.Namespace) -> None:
    if args.case == "reproduce":
        out = run_reproduce(args.repo)
    else:
        out = run_chat(args.repo, args.turns, args.case == "record")
    print(json.dumps(out))


def _spawn(case: str, repo: str, turns: int) -> dict:
    r = subprocess.run([sys.executable, __file__, "--child", case, "--repo", repo, "--turns", str(turns)],
                       capture_output=True, text=True, check=True, cwd=ROOT,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--turns", type=int, default=300)
    ap.add_argument("--child", dest="case", default=None)
    ap.add_argument("--repo", default=None)
    args = ap.parse_args()
    if args.case:
        child(args)
        return
    with tempfile.TemporaryDirectory() as tmp:
        plain = _spawn("plain", f"{tmp}/plain.git", args.turns)
        rec = _spawn("record", f"{tmp}/record.git", args.turns)
        rep = _spawn("reproduce", f"{tmp}/record.git", args.turns)
    print(f"chat of {args.turns} turns, each case in its own process")
    print(f"  turn, no recording       {plain['turn_ms']:8.2f} ms")
    print(f"  turn, record=True        {rec['turn_ms']:8.2f} ms   {rec['turn_ms'] / plain['turn_ms']:.2f}x (goal <= 1.1x)")
    print(f"  turn CPU, no recording   {plain['turn_cpu_ms']:8.2f} ms")
    print(f"  turn CPU, record=True    {rec['turn_cpu_ms']:8.2f} ms   "
          f"{rec['turn_cpu_ms'] / plain['turn_cpu_ms']:.2f}x (CPU time: less affected by other processes)")
    print(f"  repository, no recording {plain['repo_bytes']:8d} B")
    print(f"  repository, record=True  {rec['repo_bytes']:8d} B   {rec['repo_bytes'] / plain['repo_bytes']:.2f}x (goal <= 1.3x)")
    print(f"  running the chat         {rec['total_s']:8.2f} s")
    print(f"  reproduce of the thread  {rep['reproduce_s']:8.2f} s   {rep['reproduce_s'] / rec['total_s']:.2f}x ({rep['summary']})")


if __name__ == "__main__":
    main()
