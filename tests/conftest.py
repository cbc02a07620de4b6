"""Shared fixtures: a real bare repository on disk per test; a real ``git daemon``."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# subprocesses started by tests import the same checkout
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)


@pytest.fixture
def repo_path(tmp_path: Path) -> Path:
    return tmp_path / "agent.git"


@pytest.fixture
def saver(repo_path: Path):
    from gitckpt import GitSaver

    s = GitSaver(repo_path)
    yield s
    s.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(tmp_path: Path):
    """``git daemon`` on 127.0.0.1 serving ``<base>/team.git``; yields its URL, path and port.

    In a process group of its own: ``git daemon`` runs ``git-daemon`` as a child, and the
    whole group is stopped afterwards (killing the wrapper alone left daemons running)."""
    base = tmp_path / "served"
    base.mkdir()
    subprocess.run(["git", "init", "-q", "--bare", str(base / "team.git")], check=True)
    port = free_port()
    proc = subprocess.Popen(
        ["git", "daemon", "--reuseaddr", "--export-all", "--enable=receive-pack", f"--base-path={base}",
         "--listen=127.0.0.1", f"--port={port}", str(base)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 5
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    pytest.fail("git daemon did not start")
                time.sleep(0.05)
        yield {"url": f"git://127.0.0.1:{port}/team.git", "path": base / "team.git", "port": port}
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
