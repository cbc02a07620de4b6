"""Faults that must end in a clear state (issue 11, part 4; docs/format.md 15-18).

Each test reproduces the fault as it was found (a crafted repository, a real
process killed with SIGKILL, a small full file system) and then shows the
repository usable with nothing acknowledged lost.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from langgraph.checkpoint.base import empty_checkpoint
from langgraph.checkpoint.base.id import uuid6

import logging

from gitckpt import CorruptObjectError, GitSaver


def git(repo, *args, check=True) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "--git-dir", str(repo), *args], check=check, capture_output=True, text=True)


def put(saver, thread_id, parent=None, values=None):
    cp = empty_checkpoint()
    cp["id"] = str(uuid6(clock_seq=1))
    values = values or {}
    cp["channel_values"] = values
    cp["channel_versions"] = {k: saver.get_next_version(None, None) for k in values}
    config = {"configurable": {"thread_id": thread_id, "checkpoint_ns": ""}}
    if parent:
        config["configurable"]["checkpoint_id"] = parent
    saver.put(config, cp, {"source": "loop", "step": 0}, dict(cp["channel_versions"]))
    return cp["id"]


def unpack_all(repo: Path, tmp: Path) -> None:
    """Turn every pack into loose objects, so that one object can be damaged alone."""
    for pack in (repo / "objects" / "pack").glob("*.pack"):
        moved = tmp / pack.name
        pack.rename(moved)
        pack.with_suffix(".idx").unlink()
        with moved.open("rb") as fh:
            subprocess.run(["git", "--git-dir", str(repo), "unpack-objects", "-q"], stdin=fh, check=True)


def cli(repo: Path, *args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gitckpt", "--repo", str(repo), *args],
                          capture_output=True, text=True, **kw)


# -- 5. one corrupt object does not hide the rest of a thread ------------------------------------


def _damaged_thread(repo_path: Path, tmp_path: Path) -> tuple[list[str], str, str]:
    """Thread t with five checkpoints; the middle one's channel blob is corrupt on disk."""
    saver = GitSaver(repo_path, auto_pack=False)
    ids, parent = [], None
    for i in range(5):
        parent = put(saver, "t", parent, values={"big": f"value {i} " * 100})
        ids.append(parent)
    saver.close()
    unpack_all(repo_path, tmp_path)
    # the middle checkpoint's commit: its blob is damaged (bytes that are no zlib stream)
    log = git(repo_path, "log", "--format=%H %(trailers:key=Checkpoint-Id,valueonly,separator=)", "threads/t").stdout
    commit = next(line.split()[0] for line in log.splitlines() if line.endswith(ids[2]))
    blob = git(repo_path, "rev-parse", f"{commit}:channels/big").stdout.strip()
    path = repo_path / "objects" / blob[:2] / blob[2:]
    path.chmod(0o644)
    path.write_bytes(b"this is not a zlib stream")
    return ids, ids[2], blob


def test_list_yields_every_readable_checkpoint_and_warns_of_the_damaged_one(repo_path, tmp_path, caplog):
    ids, bad, blob = _damaged_thread(repo_path, tmp_path)
    saver = GitSaver(repo_path)
    caplog.set_level(logging.WARNING, logger="gitckpt")
    got = [t.checkpoint["id"] for t in saver.list({"configurable": {"thread_id": "t"}})]
    # newest first, the damaged one left out, the older ones still listed past it
    assert got == [ids[4], ids[3], ids[1], ids[0]]
    warned = [r.getMessage() for r in caplog.records if r.name == "gitckpt.checkpoint.saver"]
    assert len(warned) == 1
    assert f"thread 't' checkpoint {bad}" in warned[0] and blob in warned[0] and "gitckpt verify" in warned[0]
    # get_tuple of that checkpoint raises, naming the same thread, checkpoint and object
    with pytest.raises(CorruptObjectError, match=f"thread 't' checkpoint {bad}.*{blob}"):
        saver.get_tuple({"configurable": {"thread_id": "t", "checkpoint_id": bad}})
    # limit counts what is yielded: two checkpoints past the damaged one
    got = [t.checkpoint["id"] for t in saver.list({"configurable": {"thread_id": "t"}},
                                                  before={"configurable": {"checkpoint_id": ids[3]}}, limit=2)]
    assert got == [ids[1], ids[0]]
    # every thread (config None) is listed the same way
    assert [t.checkpoint["id"] for t in saver.list(None)] == [ids[4], ids[3], ids[1], ids[0]]
    # the thread stays writable, and the new checkpoint is listed too
    new = put(saver, "t", ids[4], values={"big": "after"})
    assert [t.checkpoint["id"] for t in saver.list({"configurable": {"thread_id": "t"}})] == [new, ids[4], ids[3], ids[1], ids[0]]
    saver.close()


def test_cli_log_lists_and_verify_names_the_damaged_checkpoint(repo_path, tmp_path):
    ids, bad, blob = _damaged_thread(repo_path, tmp_path)
    log = cli(repo_path, "log", "t", "--json")
    assert log.returncode == 0, log.stderr
    assert [r["checkpoint_id"] for r in json.loads(log.stdout)] == ids[::-1]  # log reads commits, not values
    verify = cli(repo_path, "verify", "--json")
    assert verify.returncode == 1
    problems = json.loads(verify.stdout)["problems"]
    mine = [p for p in problems if bad in p]
    assert mine and blob in mine[0] and "thread 't'" in mine[0]
    # every checkpoint but the damaged one is reported fine: only it (and git fsck) is named
    assert not [p for p in problems if any(i in p for i in ids if i != bad)]


def test_graph_state_history_shows_every_readable_step(repo_path, tmp_path, caplog):
    """A real graph: get_state_history yields what it can read, then names the damage."""
    from typing import TypedDict

    from langgraph.graph import END, START, StateGraph

    class State(TypedDict):
        text: str

    builder = StateGraph(State)
    builder.add_node("grow", lambda s: {"text": s["text"] + " more" * 50})
    builder.add_edge(START, "grow")
    builder.add_edge("grow", END)
    config = {"configurable": {"thread_id": "g"}}
    with GitSaver(repo_path, auto_pack=False) as saver:
        graph = builder.compile(checkpointer=saver)
        for i in range(3):
            graph.invoke({"text": f"turn {i}"}, config)
        all_ids = [s.config["configurable"]["checkpoint_id"] for s in graph.get_state_history(config)]
    assert len(all_ids) == 9
    unpack_all(repo_path, tmp_path)
    victim = all_ids[4]
    log = git(repo_path, "log", "--all", "--format=%H %(trailers:key=Checkpoint-Id,valueonly,separator=)").stdout
    commit = next(line.split()[0] for line in log.splitlines() if line.endswith(victim))
    blob = git(repo_path, "rev-parse", f"{commit}:checkpoint").stdout.strip()
    path = repo_path / "objects" / blob[:2] / blob[2:]
    path.chmod(0o644)
    path.write_bytes(b"\x78\x9c garbage")
    with GitSaver(repo_path) as saver:
        graph = builder.compile(checkpointer=saver)
        seen = [snap.config["configurable"]["checkpoint_id"] for snap in graph.get_state_history(config)]
        assert seen == [c for c in all_ids if c != victim]  # LangGraph reads list() whole: nothing else is hidden
        assert any(victim in r.getMessage() for r in caplog.records if r.name == "gitckpt.checkpoint.saver")
        graph.invoke({"text": "again"}, config)  # the thread goes on
        assert graph.get_state(config).values["text"].startswith("again")
