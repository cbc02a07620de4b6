"""`gitckpt watch` in a real process, fed by a real writer process."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

WRITER = textwrap.dedent('''
    import operator
    import sys
    from typing import Annotated, TypedDict

    from langgraph.graph import END, START, StateGraph

    from gitckpt import GitSaver


    class S(TypedDict):
        items: Annotated[list, operator.add]


    b = StateGraph(S)
    b.add_node("a", lambda s: {"items": ["a"]})
    b.add_node("b", lambda s: {"items": ["b"]})
    b.add_edge(START, "a")
    b.add_edge("a", "b")
    b.add_edge("b", END)
    with GitSaver.from_conn_string(sys.argv[1]) as saver:
        graph = b.compile(checkpointer=saver)
        for thread in sys.argv[2:]:
            graph.invoke({"items": []}, {"configurable": {"thread_id": thread}})
''')


def _lines(stream, q: queue.Queue) -> None:
    for line in iter(stream.readline, ""):
        q.put(line.rstrip("\n"))
    q.put(None)


class Proc:
    def __init__(self, args: list[str], cwd: Path) -> None:
        self.p = subprocess.Popen(args, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.out: queue.Queue = queue.Queue()
        self.err: queue.Queue = queue.Queue()
        for stream, q in ((self.p.stdout, self.out), (self.p.stderr, self.err)):
            threading.Thread(target=_lines, args=(stream, q), daemon=True).start()

    def take(self, q: queue.Queue, n: int, timeout: float) -> list[str]:
        got: list[str] = []
        deadline = time.monotonic() + timeout
        while len(got) < n:
            try:
                line = q.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                break
            if line is None:
                break
            got.append(line)
        return got


def run_writer(repo: Path, *threads: str) -> None:
    subprocess.run([sys.executable, "-c", WRITER, str(repo), *threads], check=True, timeout=60)


def test_watch_prints_checkpoints_another_process_writes(tmp_path):
    repo = tmp_path / "agent.git"
    run_writer(repo, "old")  # already there: not reported
    gitckpt = [sys.executable, "-m", "gitckpt"]
    everything = Proc(gitckpt + ["watch", "--repo", str(repo), "--json"], tmp_path)
    only_w2 = Proc(gitckpt + ["watch", "w2", "--repo", str(repo)], tmp_path)
    try:
        for w, label in ((everything, ""), (only_w2, " thread w2")):
            ready = w.take(w.err, 1, 30)
            assert ready == [f"Watching {repo}{label} for new checkpoints (Ctrl-C to stop)"], ready
        run_writer(repo, "w1", "w2")
        seen = [json.loads(line) for line in everything.take(everything.out, 8, 30)]
        assert [(c["thread_id"], c["step"], c["source"]) for c in seen] == [
            ("w1", -1, "input"), ("w1", 0, "loop"), ("w1", 1, "loop"), ("w1", 2, "loop"),
            ("w2", -1, "input"), ("w2", 0, "loop"), ("w2", 1, "loop"), ("w2", 2, "loop"),
        ]
        for c in seen:
            assert {"checkpoint_id", "parent_checkpoint_id", "step", "source", "summary"} <= set(c)
        assert seen[1]["parent_checkpoint_id"] == seen[0]["checkpoint_id"]
        text = only_w2.take(only_w2.out, 4, 30)
        assert len(text) == 4
        assert [line.split()[1:6] for line in text] == [
            ["thread", "w2", "step", "-1", "input"], ["thread", "w2", "step", "0", "loop"],
            ["thread", "w2", "step", "1", "loop"], ["thread", "w2", "step", "2", "loop"],
        ]
        assert text[2].endswith("a wrote items") and text[3].endswith("b wrote items")
        assert text[0].split()[6] == seen[4]["checkpoint_id"][:13]
        # nothing more arrives on its own: no polling output
        assert everything.take(everything.out, 1, 0.5) == []
    finally:
        for w in (everything, only_w2):
            w.p.send_signal(signal.SIGINT)
    for w in (everything, only_w2):
        assert w.p.wait(timeout=20) == 0
        assert "Traceback" not in "\n".join(w.take(w.err, 100, 1))
