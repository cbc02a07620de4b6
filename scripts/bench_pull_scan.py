"""What the pull check (trust.scan_new, docs/format.md 16) costs next to the pull.

Writes THREADS chat threads of TURNS turns each (a LangGraph MessagesState
graph, two messages a turn) into a repository, serves it as a plain path
remote, then, in fresh repositories, times (median of REPEAT runs):

* ``sync.pull`` as the CLI runs it (fetch, scan, move refs);
* ``trust.scan_new`` alone, over the same fetched commits.

Usage: python scripts/bench_pull_scan.py [THREADS] [TURNS] [REPEAT]
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

from langchain_core.messages import AIMessage
from langgraph.graph import END, START, MessagesState, StateGraph

from gitckpt import GitSaver, sync, trust
from gitckpt.git.repo import GitRepo


def main() -> None:
    threads = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    turns = int(sys.argv[2]) if len(sys.argv) > 2 else 50
    repeat = int(sys.argv[3]) if len(sys.argv) > 3 else 5
    base = Path(tempfile.mkdtemp(prefix="bench-scan-"))
    src = base / "src.git"
    with GitSaver(src) as saver:
        b = StateGraph(MessagesState)
        b.add_node("chat", lambda s: {"messages": [AIMessage(f"answer {len(s['messages'])} " + "x" * 200)]})
        b.add_edge(START, "chat")
        b.add_edge("chat", END)
        g = b.compile(checkpointer=saver)
        for t in range(threads):
            for i in range(turns):
                g.invoke({"messages": [("user", f"question {i} " + "y" * 200)]}, {"configurable": {"thread_id": str(t)}})
    pulls, scans = [], []
    report = None
    for n in range(repeat):
        dst = base / f"dst{n}.git"
        GitRepo(dst).close()
        t0 = time.perf_counter()
        result = sync.pull(dst, str(src))
        pulls.append(time.perf_counter() - t0)
        r = GitRepo(dst)
        tips = list(r.refs(*sync.fmt.LINE_PREFIXES, names=(sync.STORE_REF,)).values())
        r.close()
        r = GitRepo(dst)  # a fresh object: no cached blobs
        t0 = time.perf_counter()
        report = trust.scan_new(r, tips, [])
        scans.append(time.perf_counter() - t0)
        r.close()
        assert result.scan.ok and report.ok
    pull, scan = statistics.median(pulls), statistics.median(scans)
    print(f"{threads} threads x {turns} turns: {report.commits} commits, {report.blobs} blobs scanned")
    print(f"pull (fetch + scan + refs): {pull * 1000:.0f} ms median of {repeat}")
    print(f"scan alone:                 {scan * 1000:.0f} ms ({scan / pull:.0%} of the pull)")


if __name__ == "__main__":
    main()
