"""How often `langgraph dev`'s file watcher wakes up while runs write a gitckpt repository.

Starts `langgraph dev` (needs the server extra) on a small graph with an
interrupt, twice: with the repository inside the project folder (./.gitckpt,
the gitckpt command's own default) and at the server entry point's default
(outside the folder). Each time it makes N threads, each run to its interrupt
and resumed (2 runs a thread), and counts the watcher's "N change(s) detected"
lines and the server's reloads in the log.

    python scripts/server_watch.py [--threads 10]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests.test_langgraph_server import GRAPH  # noqa: E402  (the test's graph)


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _drive(url: str, threads: int) -> None:
    from langgraph_sdk import get_client

    client = get_client(url=url)
    for _ in range(threads):
        t = (await client.threads.create())["thread_id"]
        await client.runs.wait(t, "agent", input={"items": ["hi"]})
        await client.runs.wait(t, "agent", command={"resume": "yes"})


def measure(repo: str | None, threads: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        project = Path(tmp) / "project"
        project.mkdir()
        (project / "graph.py").write_text(GRAPH)
        (project / "langgraph.json").write_text(
            '{"dependencies": ["."], "graphs": {"agent": "./graph.py:graph"},'
            ' "checkpointer": {"path": "gitckpt.langgraph_server.checkpointer"},'
            ' "store": {"path": "gitckpt.langgraph_server.store"}}'
        )
        env = dict(
            os.environ,
            XDG_DATA_HOME=str(Path(tmp) / "xdg"),
            LANGGRAPH_NO_VERSION_CHECK="true",
            LANGGRAPH_CLI_NO_ANALYTICS="1",
            PYTHONPATH=str(ROOT),
        )
        env.pop("GITCKPT_REPO", None)
        if repo is not None:
            env["GITCKPT_REPO"] = repo
        port = _port()
        log = Path(tmp) / "server.log"
        exe = Path(sys.executable).parent / "langgraph"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [str(exe), "dev", "--no-browser", "--host", "127.0.0.1", "--port", str(port)],
                cwd=project,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            for _ in range(200):
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/ok", timeout=1)
                    break
                except OSError:
                    time.sleep(0.2)
            time.sleep(2)  # let the start-up's own changes pass
            before = log.read_text(errors="replace")
            asyncio.run(_drive(f"http://127.0.0.1:{port}", threads))
            time.sleep(2)
            during = log.read_text(errors="replace")[len(before) :]
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(15)
        return {
            "wakeups": len(re.findall(r"changes? detected", during)),
            "changes": sum(int(n) for n in re.findall(r"(\d+) changes? detected", during)),
            "reloads": during.count("Reloading"),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=10)
    args = parser.parse_args()
    for label, repo in (("inside the project (./.gitckpt)", ".gitckpt"), ("the default (outside)", None)):
        r = measure(repo, args.threads)
        print(
            f"{label:34} {args.threads} threads, {2 * args.threads} runs: watcher woke {r['wakeups']} times "
            f"({r['changes']} changed paths), {r['reloads']} reloads"
        )


if __name__ == "__main__":
    main()
