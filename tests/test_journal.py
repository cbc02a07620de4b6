"""``durability="fsync"``: the write-ahead journal and its replay (docs/format.md, 13).

A power loss is simulated the only way a test can: a writer runs in a real
subprocess and is killed with SIGKILL; then its journal is put into a copy of
the repository taken *before* it wrote, as if every git file it wrote had been
lost and only what it flushed (the journal) had survived. Opening that copy
must bring back every update the writer made.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gitckpt import GitSaver
from gitckpt.git import journal

CHILD = r"""
import json, operator, os, signal, sys
from typing import Annotated, TypedDict
from langgraph.graph import StateGraph, START, END
from gitckpt import GitSaver

path, thread, turns, start, hold = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5] == "hold"

class S(TypedDict):
    items: Annotated[list, operator.add]
    n: int

def a(s): return {"items": [f"a{len(s['items'])}" * 20], "n": s["n"] + 1}
def b(s): return {"items": [f"b{len(s['items'])}" * 20]}

g = StateGraph(S)
g.add_node("a", a); g.add_node("b", b)
g.add_edge(START, "a"); g.add_edge("a", "b"); g.add_edge("b", END)
saver = GitSaver(path, durability="fsync")
app = g.compile(checkpointer=saver)
cfg = {"configurable": {"thread_id": thread}}
for t in range(start, start + turns):
    app.invoke({"items": [f"user{t}"], "n": t}, cfg)
print(json.dumps({"journal": saver.repo._log.path, "pid": os.getpid()}), flush=True)
if hold:
    sys.stdin.readline()  # keep the journal (and its lock) until told
    saver.close()
    print("closed", flush=True)
else:
    os.kill(os.getpid(), signal.SIGKILL)  # no close(): the journal stays behind
"""


def run_writer(path: Path, thread: str, turns: int, start: int = 0) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, str(path), thread, str(turns), str(start), "crash"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == -9, out.stderr
    lock = path / "gitckpt-maintenance.lock"  # a background repack it started outlives it
    for _ in range(600):
        if not lock.exists():
            break
        time.sleep(0.1)
    return json.loads(out.stdout.splitlines()[-1])


def history(path: Path, thread: str) -> list:
    s = GitSaver(path)
    try:
        return [(t.checkpoint["id"], t.checkpoint["channel_values"], t.metadata, t.pending_writes, t.parent_config)
                for t in s.list({"configurable": {"thread_id": thread}})]
    finally:
        s.close()


def journal_files(path: Path) -> list[Path]:
    d = path / journal.DIRNAME
    return sorted(p for suffix in (journal.SUFFIX, journal.LOG_SUFFIX) for p in d.glob("*" + suffix)) if d.is_dir() else []


def snapshot(src: Path, dst: Path) -> None:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(journal.DIRNAME))


def lose_everything_but_the_journals(before: Path, after: Path, lost: Path) -> list[Path]:
    """``lost`` = the repository as it was ``before``, plus the journals ``after`` left."""
    shutil.copytree(before, lost)
    files = journal_files(after)
    (lost / journal.DIRNAME).mkdir(exist_ok=True)
    for f in files:
        shutil.copy(f, lost / journal.DIRNAME / f.name)
    return files


def crashed_copy(tmp_path: Path, turns: int) -> tuple[Path, Path]:
    """A writer that dies after ``turns`` turns on a new repository, and the copy of
    that repository where only its journal survived: ``(repository, copy)``."""
    path = tmp_path / "agent.git"
    GitSaver(path).close()
    snapshot(path, tmp_path / "before.git")
    run_writer(path, "t", turns)
    lost = tmp_path / "lost.git"
    lose_everything_but_the_journals(tmp_path / "before.git", path, lost)
    return path, lost


def fsck(path: Path) -> None:
    if shutil.which("git"):
        r = subprocess.run(["git", "--git-dir", str(path), "fsck", "--strict", "--no-dangling"],
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stdout + r.stderr


def test_fsync_updates_are_journalled_and_close_removes_the_journal(repo_path: Path) -> None:
    s = GitSaver(repo_path, durability="fsync")
    from langgraph.checkpoint.base import empty_checkpoint

    cfg = {"configurable": {"thread_id": "1", "checkpoint_ns": ""}}
    for i in range(5):
        cp = empty_checkpoint()
        cp["channel_values"] = {"x": i}
        cp["channel_versions"] = {"x": i + 1}
        cfg = s.put(cfg, cp, {"step": i}, {"x": i + 1})
        s.put_writes(cfg, [("x", i * 10)], task_id=f"task{i}")
    files = journal_files(repo_path)
    assert len(files) == 1
    assert files[0].name.endswith(journal.LOG_SUFFIX)  # a log-first writer's log (format.md 21)
    records = list(journal.read_entries(files[0].read_bytes()))
    assert len(records) == 10  # one per update: 5 puts, 5 put_writes
    assert all(len(refs) == 1 and refs[0][0] == "refs/heads/threads/1" for _, refs, _ in records)
    assert all(objects and not written for written, _, objects in records)  # its new objects, not a pack
    s.close()
    assert journal_files(repo_path) == []
    assert GitSaver(repo_path).get_tuple(cfg).pending_writes == [("task4", "x", 40)]


def test_every_update_survives_the_loss_of_all_git_files_written_after_the_last_flush(tmp_path: Path) -> None:
    path = tmp_path / "agent.git"
    run_writer(path, "t", 3)  # some history made durable...
    GitSaver(path).close()  # ...by replaying it and syncing
    snapshot(path, tmp_path / "before.git")
    info = run_writer(path, "t", 4, start=3)
    lost = tmp_path / "lost.git"
    files = lose_everything_but_the_journals(tmp_path / "before.git", path, lost)
    assert [f.name for f in files] == [Path(info["journal"]).name]
    ref = "refs/heads/threads/t"
    # (the writer's own git files may not have it either: log-first, it died before publishing, format.md 21)
    assert (lost / ref).read_text() == (tmp_path / "before.git" / ref).read_text()
    recovered = GitSaver(lost)
    assert recovered.repo.recovered >= 1
    recovered.close()
    assert journal_files(lost) == []  # replayed, durable, deleted
    expected = history(path, "t")
    assert len(expected) == 7 * 4  # 7 turns, 4 checkpoints each (input, a, b, and the first step)
    assert history(lost, "t") == expected  # ...and got every one back, with their pending writes
    fsck(lost)


def test_replay_with_git_files_partly_written(tmp_path: Path) -> None:
    """Packs present but refs old, and packs emptied while their index survived."""
    path, lost = crashed_copy(tmp_path, 3)
    pack_dir = path / "objects" / "pack"
    names = sorted(p.name for p in pack_dir.glob("pack-*.pack"))
    for i, name in enumerate(names):  # every other pack written in full, the rest truncated to nothing
        shutil.copy(pack_dir / name, lost / "objects" / "pack" / name)
        shutil.copy(pack_dir / name.replace(".pack", ".idx"), lost / "objects" / "pack" / name.replace(".pack", ".idx"))
        if i % 2:
            (lost / "objects" / "pack" / name).write_bytes(b"")
    GitSaver(lost).close()
    assert history(lost, "t") == history(path, "t")
    fsck(lost)


def test_a_torn_last_record_is_ignored(tmp_path: Path) -> None:
    path, lost = crashed_copy(tmp_path, 2)
    (f,) = journal_files(lost)
    data = bytearray((lost / journal.DIRNAME / f.name).read_bytes())
    records = list(journal.read_records(bytes(data)))
    # find the end of the records and damage the last one's final byte (a write that never completed)
    end = journal._DATA_START
    for _ in records:
        length = int.from_bytes(data[end + 20: end + 24], "big")
        end += journal._REC_SIZE + length
    data[end - 1] ^= 0xFF
    (lost / journal.DIRNAME / f.name).write_bytes(bytes(data))
    assert len(list(journal.read_records(bytes(data)))) == len(records) - 1
    (ref, old, new), = records[-1][1]
    GitSaver(lost).close()
    assert (lost / ref).read_text().strip() == old  # the damaged update is not replayed
    # expected: the writer's repository as it was just before that update
    expected = tmp_path / "expected.git"
    GitSaver(path).close()  # its objects may be only in its log (format.md 21): replayed into its git files
    snapshot(path, expected)
    (expected / ref).write_text(old + "\n")
    assert history(lost, "t") == history(expected, "t")
    assert len(history(lost, "t")) >= 4 * 2 - 1
    fsck(lost)


def test_journals_of_several_dead_writers_replay_whatever_their_order(tmp_path: Path) -> None:
    path = tmp_path / "agent.git"
    GitSaver(path).close()
    snapshot(path, tmp_path / "before.git")
    holder = subprocess.Popen([sys.executable, "-c", CHILD, str(path), "t", "2", "0", "hold"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        first = json.loads(holder.stdout.readline())  # alive: the second writer leaves its journal alone
        second = run_writer(path, "t", 2, start=2)  # continues the first one's thread
    finally:
        holder.kill()
        holder.wait(timeout=60)
        holder.stdin.close()
        holder.stdout.close()
    assert {f.name for f in journal_files(path)} == {Path(first["journal"]).name, Path(second["journal"]).name}
    lost = tmp_path / "lost.git"
    lose_everything_but_the_journals(tmp_path / "before.git", path, lost)
    d = lost / journal.DIRNAME
    # the second writer's journal is read first: its moves only apply after the first's
    os.rename(d / Path(second["journal"]).name, d / ("0" + journal.SUFFIX))
    os.rename(d / Path(first["journal"]).name, d / ("1" + journal.SUFFIX))
    GitSaver(lost).close()
    assert history(lost, "t") == history(path, "t")
    assert len(history(lost, "t")) == 4 * 4


def test_a_live_writers_journal_is_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "agent.git"
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(path), "t", "1", "0", "hold"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        info = json.loads(child.stdout.readline())
        other = GitSaver(path)
        assert other.repo.recovered == 0
        assert [f.name for f in journal_files(path)] == [Path(info["journal"]).name]
        assert len(history(path, "t")) == 4
        other.close()
        child.stdin.write("\n")
        child.stdin.flush()
        assert child.stdout.readline().strip() == "closed"
    finally:
        child.stdin.close()
        child.wait(timeout=60)
    assert journal_files(path) == []


def test_a_full_journal_starts_over_after_a_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A small journal fills up many times; the records after its last checkpoint
    (and no stale ones of earlier rounds) replay onto the repository as synced then."""
    monkeypatch.setattr(journal, "CAPACITY", 64 << 10)
    from langgraph.checkpoint.base import empty_checkpoint

    path = tmp_path / "agent.git"
    s = GitSaver(path, durability="fsync")
    cfg = {"configurable": {"thread_id": "w", "checkpoint_ns": ""}}

    def put(i: int, fill: str) -> None:
        nonlocal cfg
        cp = empty_checkpoint()
        cp["channel_values"] = {"x": fill * 2000 + str(i)}
        cp["channel_versions"] = {"x": i + 1}
        cfg = s.put(cfg, cp, {"step": i}, {"x": i + 1})

    for i in range(300):
        put(i, "v")
    j = s.repo._log
    assert j.checkpoints >= 4
    assert len(list(journal.read_records(Path(j.path).read_bytes()))) == j.seq
    s.repo._maint.wait()  # no background repack while the copy is taken
    j.checkpoint()  # as if it had just filled up: git's files are synced...
    synced = tmp_path / "synced.git"
    snapshot(path, synced)  # ...so this copy is what a power loss would leave of them
    for i in range(300, 310):
        put(i, "w")
    assert j.seq == 10 and j.checkpoints >= 5
    # the file still holds records of earlier rounds after the new ones: they must not be replayed
    assert len(list(journal.read_records(Path(j.path).read_bytes()))) == 10
    lost = tmp_path / "lost.git"
    shutil.copytree(synced, lost)
    (lost / journal.DIRNAME).mkdir()
    shutil.copy(j.path, lost / journal.DIRNAME / Path(j.path).name)
    expected = history(path, "w")
    s.close()
    assert len(expected) == 310
    assert history(lost, "w") == expected
    fsck(lost)


def test_an_update_too_large_for_the_journal_is_synced_directly(repo_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(journal, "CAPACITY", 64 << 10)
    from langgraph.checkpoint.base import empty_checkpoint

    s = GitSaver(repo_path, durability="fsync")
    cfg = {"configurable": {"thread_id": "big", "checkpoint_ns": ""}}
    cp = empty_checkpoint()
    big = os.urandom(200_000)
    cp["channel_values"] = {"x": big}
    cp["channel_versions"] = {"x": 1}
    cfg = s.put(cfg, cp, {"step": 0}, {"x": 1})
    assert s.repo._log.seq == 0  # not journalled
    s.put_writes(cfg, [("x", b"small")], task_id="t")
    assert s.repo._log.seq == 1  # the next, small update is
    s.close()
    got = GitSaver(repo_path).get_tuple(cfg)
    assert got.checkpoint["channel_values"]["x"] == big
    assert got.pending_writes == [("t", "x", b"small")]


STORE_CHILD = r"""
import os, signal, sys
from gitckpt import GitStore
store = GitStore(sys.argv[1], durability="fsync")
for i in range(int(sys.argv[2])):
    store.put(("users", f"u{i % 3}"), f"k{i}", {"n": i, "text": "x" * (i % 50)})
store.delete(("users", "u0"), "k0")
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_durable_store_survives_the_loss_of_its_git_files(tmp_path: Path) -> None:
    from gitckpt import GitStore

    path = tmp_path / "agent.git"
    GitStore(path).close()
    snapshot(path, tmp_path / "before.git")
    out = subprocess.run([sys.executable, "-c", STORE_CHILD, str(path), "40"], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == -9, out.stderr
    lost = tmp_path / "lost.git"
    assert len(lose_everything_but_the_journals(tmp_path / "before.git", path, lost)) == 1
    assert not (lost / "refs" / "heads" / "store").exists()  # nothing of the store reached the copy

    def items(p: Path) -> list:
        s = GitStore(p)
        try:
            return sorted((it.namespace, it.key, it.value["n"]) for it in s.search(("users",), limit=100))
        finally:
            s.close()

    got = items(lost)
    assert len(got) == 39 and (("users", "u0"), "k0") not in [g[:2] for g in got]  # the deletion too
    assert got == items(path)
    fsck(lost)
