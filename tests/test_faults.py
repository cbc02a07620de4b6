"""Faults that must end in a clear state (issue 11, part 4; docs/format.md 17).

Each test reproduces the fault as it was found (a crafted repository, a real
process killed with SIGKILL, a small full file system) and then shows the
repository usable with nothing acknowledged lost.
"""

from __future__ import annotations

import json
import logging
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

from gitckpt import CorruptObjectError, GitSaver
from gitckpt.git.repo import publish_all


def git(repo, *args, check=True) -> subprocess.CompletedProcess:
    publish_all()  # plain git sees what is published (format.md 21)
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
    listed = [t.checkpoint["id"] for t in saver.list({"configurable": {"thread_id": "t"}})]
    assert listed == [new, ids[4], ids[3], ids[1], ids[0]]
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
    assert len(mine) == 1 and blob in mine[0]
    # the same words as the warning list() logs for it, and as get_tuple's error
    with pytest.raises(CorruptObjectError) as info:
        GitSaver(repo_path).get_tuple({"configurable": {"thread_id": "t", "checkpoint_id": bad}})
    assert mine[0] == str(info.value)
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


# -- 1. the maintenance lock does not outlive its holder ----------------------------------------

HOLD_LOCK = textwrap.dedent("""
    import sys, time
    from gitckpt.git.maintenance import take_maintenance_lock
    held = take_maintenance_lock(sys.argv[1])
    print("held" if held else "busy", flush=True)
    time.sleep(600)
""")


def _filled(repo_path: Path, threads: int = 3, steps: int = 40) -> dict[str, str]:
    """A repository with some history; the latest checkpoint id of each thread."""
    latest = {}
    with GitSaver(repo_path, auto_pack=False) as saver:
        for t in range(threads):
            parent = None
            for i in range(steps):
                parent = put(saver, f"t{t}", parent, values={"msg": f"step {i} " * 200, "i": i})
            latest[f"t{t}"] = parent
    return latest


def _all_there(repo_path: Path, latest: dict[str, str], steps: int) -> None:
    with GitSaver(repo_path) as saver:
        for t, cid in latest.items():
            assert saver.get_tuple({"configurable": {"thread_id": t}}).checkpoint["id"] == cid
            assert len(list(saver.list({"configurable": {"thread_id": t}}))) == steps
    assert git(repo_path, "fsck", "--connectivity-only").returncode == 0


def test_a_live_holder_keeps_the_lock_and_a_killed_one_loses_it_at_once(repo_path):
    from gitckpt.errors import RepositoryError
    from gitckpt.git.maintenance import MAINTENANCE_LOCK, maintenance_lock, take_maintenance_lock

    GitSaver(repo_path).close()
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(repo_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        lock = repo_path / MAINTENANCE_LOCK
        record = json.loads(lock.read_text())
        assert record["pid"] == holder.pid and record["host"] and record["start"]
        # alive: never taken, however old the file looks
        os.utime(lock, (time.time() - 7200, time.time() - 7200))
        assert take_maintenance_lock(repo_path) is None
        with pytest.raises(RepositoryError, match=rf"holds .*{MAINTENANCE_LOCK} \(pid {holder.pid} on "):
            with maintenance_lock(repo_path, wait=0.3):
                pass
    finally:
        holder.kill()  # SIGKILL
        holder.wait()
    assert lock.exists()  # left behind, as a kill -9 leaves it
    t0 = time.monotonic()
    with maintenance_lock(repo_path, wait=60):
        assert time.monotonic() - t0 < 1.0  # taken over at once, not after 600 s
        assert json.loads(lock.read_text())["pid"] == os.getpid()
        assert take_maintenance_lock(repo_path) is None  # and now held by us
    assert not lock.exists()


def test_gc_killed_with_sigkill_leaves_no_stuck_lock(repo_path):
    from gitckpt.git.maintenance import MAINTENANCE_LOCK

    latest = _filled(repo_path)
    lock = repo_path / MAINTENANCE_LOCK
    kills = 0
    for _ in range(3):
        gc = subprocess.Popen([sys.executable, "-m", "gitckpt", "--repo", str(repo_path), "gc", "--json"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while not lock.exists() and gc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.002)
        if gc.poll() is None:
            os.kill(gc.pid, signal.SIGKILL)
            kills += 1
        gc.wait()
        t0 = time.monotonic()
        again = cli(repo_path, "gc", "--json", timeout=120)
        assert again.returncode == 0, again.stderr
        # at most as long as the killed gc's orphaned git step still runs; never the old 60 s wait
        assert time.monotonic() - t0 < 30
        assert not lock.exists()
    assert kills >= 1
    _all_there(repo_path, latest, 40)


def test_an_empty_unreadable_or_dead_pid_lock_is_stale(repo_path):
    from gitckpt.git.maintenance import MAINTENANCE_LOCK, maintenance_lock, take_maintenance_lock

    GitSaver(repo_path).close()
    lock = repo_path / MAINTENANCE_LOCK
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    old = time.time() - 10
    for content in (b"", b"\x00\x17garbage", dead.encode()):  # the last: an older gitckpt's bare pid
        lock.write_bytes(content)
        os.utime(lock, (old, old))
        t0 = time.monotonic()
        with maintenance_lock(repo_path, wait=60):
            assert time.monotonic() - t0 < 1.0
        assert not lock.exists()
    # a record from another host is trusted for MAINTENANCE_STALE (no flock across hosts)
    lock.write_text(json.dumps({"host": "elsewhere.invalid", "pid": 1, "start": None, "time": int(time.time())}))
    assert take_maintenance_lock(repo_path) is None
    older = time.time() - 601
    os.utime(lock, (older, older))
    held = take_maintenance_lock(repo_path)
    assert held is not None
    held.release()


# -- 2. a ref lock left by a killed process ----------------------------------------------------

STALL_IN_LOCK = textwrap.dedent("""
    import os, sys, time
    from langgraph.checkpoint.base import empty_checkpoint
    from langgraph.checkpoint.base.id import uuid6
    from gitckpt import GitSaver

    saver = GitSaver(sys.argv[1], auto_pack=False)
    real_rename = os.rename

    def stall(src, dst):  # the process is stopped with the ref lock taken, as a kill finds it
        if str(src).endswith(".lock"):
            print("locked", flush=True)
            time.sleep(600)
        return real_rename(src, dst)

    os.rename = stall
    cp = empty_checkpoint()
    cp["id"] = str(uuid6(clock_seq=1))
    saver.put({"configurable": {"thread_id": "t", "checkpoint_ns": "", "checkpoint_id": sys.argv[2]}},
              cp, {"source": "loop", "step": 9}, {})
""")


def _stall_writer(repo_path: Path, parent: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", STALL_IN_LOCK, str(repo_path), parent],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_a_ref_lock_left_by_a_killed_writer_is_removed_and_puts_go_on(repo_path):
    saver = GitSaver(repo_path, auto_pack=False)
    ids = [put(saver, "t", None, values={"x": 0})]
    ids.append(put(saver, "t", ids[-1], values={"x": 1}))
    writer = _stall_writer(repo_path, ids[-1])
    lock = repo_path / "refs" / "heads" / "threads" / "t.lock"
    assert lock.exists()
    writer.kill()  # SIGKILL, holding the lock
    writer.wait()
    assert lock.exists()
    t0 = time.monotonic()
    ids.append(put(saver, "t", ids[-1], values={"x": 2}))  # was: "gave up after 200 concurrent updates"
    waited = time.monotonic() - t0
    assert waited < 9  # the lock is stale once unchanged for REF_LOCK_STALE (5 s), inside the retries
    assert not lock.exists()
    listed = list(saver.list({"configurable": {"thread_id": "t"}}))
    # the killed writer's put had returned (it stalled in publishing it, format.md 21): it is kept
    assert [t.checkpoint["id"] for t in listed if t.metadata["step"] != 9] == ids[::-1]
    assert len(listed) == 4
    saver.close()
    # an old stale lock (found after the crash, later): no wait at all, for the CLI's delete too
    lock.write_text(ids[0] + "\n")
    os.utime(lock, (time.time() - 60, time.time() - 60))
    t0 = time.monotonic()
    out = cli(repo_path, "delete", "t")
    assert out.returncode == 0, out.stderr
    assert time.monotonic() - t0 < 5
    assert "t" not in GitSaver(repo_path).threads()
    assert not lock.exists()


def test_a_live_writers_ref_lock_is_never_taken_and_the_error_names_it(repo_path):
    from gitckpt import RefLockError

    saver = GitSaver(repo_path, auto_pack=False)
    a = put(saver, "t", None, values={"x": 0})
    writer = _stall_writer(repo_path, a)
    lock = repo_path / "refs" / "heads" / "threads" / "t.lock"
    try:
        os.utime(lock, (time.time() - 3600, time.time() - 3600))  # old, but its writer lives
        with pytest.raises(RefLockError, match=rf"{lock}.*held by a running gitckpt process"):
            put(saver, "t", a, values={"x": 1})
        assert lock.exists()
        # deleting the thread meets the same rule and the same error, not libgit2's "failed to lock file"
        out = cli(repo_path, "delete", "t")
        assert out.returncode == 1
        assert str(lock) in out.stderr and "held by a running gitckpt process" in out.stderr
        assert saver.get_tuple({"configurable": {"thread_id": "t"}}).checkpoint["id"] == a
    finally:
        writer.kill()
        writer.wait()
    b = put(saver, "t", a, values={"x": 1})  # the holder is gone: the lock is stale (old) at once
    assert [t.checkpoint["id"] for t in saver.list({"configurable": {"thread_id": "t"}})] == [b, a]
    saver.close()


def test_an_unheld_young_lock_is_waited_for_then_removed_and_packed_refs_lock_too(repo_path):
    """A lock nobody flocks may be git's at work: it is left alone while it is young."""
    saver = GitSaver(repo_path, auto_pack=False)
    a = put(saver, "p", None, values={"x": 0})
    put(saver, "q", None, values={"x": 0})
    saver.publish()  # plain git sees what is published (format.md 21)
    git(repo_path, "pack-refs", "--all", "--prune")
    # a killed `git pack-refs` (or git gc) leaves packed-refs.lock; a killed git update-ref a ref lock
    (repo_path / "packed-refs.lock").write_text("")
    lock = repo_path / "refs" / "heads" / "threads" / "p.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)  # pack-refs --prune removed the empty folder
    lock.write_text("")
    t0 = time.monotonic()
    b = put(saver, "p", a, values={"x": 1})
    assert 4.5 < time.monotonic() - t0 < 9  # young: not taken before REF_LOCK_STALE
    saver.delete_thread("q")  # a packed ref: needs packed-refs.lock, stale by now
    assert set(GitSaver(repo_path).threads()) == {"p"}
    assert GitSaver(repo_path).get_tuple({"configurable": {"thread_id": "p"}}).checkpoint["id"] == b
    assert not (repo_path / "packed-refs.lock").exists()
    assert git(repo_path, "fsck", "--strict").returncode == 0
    assert git(repo_path, "for-each-ref", "--format=%(refname)").stdout.split() == ["refs/heads/threads/p"]
    saver.close()


def test_pull_meets_the_same_rule_on_tracking_ref_locks(tmp_path):
    """libgit2 writes refs/remotes/origin/* under git's lock files: a stale one left by a
    killed pull no longer fails every later pull with 'failed to lock file'."""
    from gitckpt import RefLockError, sync

    alice, bob, hub = tmp_path / "alice.git", tmp_path / "bob.git", tmp_path / "hub.git"
    git(tmp_path, "init", "--bare", "-q", str(hub))
    with GitSaver(alice) as saver:
        a = put(saver, "t", None, values={"x": 1})
    GitSaver(bob).close()
    for repo in (alice, bob):
        git(repo, "remote", "add", "origin", str(hub))
    assert sync.push(alice).ok
    lock = bob / "refs" / "remotes" / "origin" / "threads" / "t.lock"
    lock.parent.mkdir(parents=True)
    lock.write_text("")
    os.utime(lock, (time.time() - 60, time.time() - 60))  # left by a pull killed a minute ago
    assert sync.pull(bob).ok
    assert GitSaver(bob).get_tuple({"configurable": {"thread_id": "t"}}).checkpoint["id"] == a
    assert not lock.exists()
    # a young one (a git fetch may be at work) is not taken: the error names it
    with GitSaver(alice) as saver:
        put(saver, "t", a, values={"x": 2})
    assert sync.push(alice).ok
    lock.write_text("")
    with pytest.raises(RefLockError, match=rf"{lock}.*not released"):
        sync.pull(bob)
    assert lock.exists()


# -- 3. a full or read-only file system ----------------------------------------------------------
#
# A real small file system: a tmpfs mounted for the test (root only). Where mount is
# not allowed the tests are skipped, never faked.


@pytest.fixture
def small_fs(tmp_path):
    mounted = []

    def mount(size: str = "8m") -> Path:
        where = tmp_path / f"fs{len(mounted)}"
        where.mkdir()
        out = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                             capture_output=True, text=True)
        if out.returncode != 0:
            pytest.skip(f"cannot mount a small tmpfs here ({out.stderr.strip()})")
        mounted.append(where)
        return where

    yield mount
    for where in reversed(mounted):
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


def fill(fs: Path) -> Path:
    """Fill the file system to the last byte; the filler file (delete it to free the space)."""
    filler = fs / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        for n in (1 << 20, 65536, 4096, 512, 1):
            try:
                while os.write(fd, b"\0" * n) == n:
                    pass
            except OSError:
                pass
    finally:
        os.close(fd)
    return filler


def test_disk_full_is_a_storage_error_and_nothing_acknowledged_is_lost(small_fs):
    from gitckpt import GitStore, StorageError

    fs = small_fs("8m")
    repo = fs / "agent.git"
    saver = GitSaver(repo, auto_pack=False)
    acked, parent = [], None
    for i in range(5):
        parent = put(saver, "t", parent, values={"x": f"{i} " * 500})
        acked.append(parent)
    filler = fill(fs)
    with pytest.raises(StorageError) as info:
        for i in range(50):  # until the disk refuses
            parent = put(saver, "t", parent, values={"x": f"more {i} " * 2000})
            acked.append(parent)
    msg = str(info.value)
    assert str(repo) in msg and "No space left on device" in msg and "free some space" in msg
    assert isinstance(info.value.__cause__, OSError)
    store = GitStore(repo)
    with pytest.raises(StorageError, match="No space left"):
        store.put(("ns",), "k", {"v": "x" * 20000})
    # reading still works, and every acknowledged checkpoint is there (in the writer's log, and
    # seen by it: what it could not publish for lack of space, others see once it can; format.md 21)
    assert [t.checkpoint["id"] for t in saver.list({"configurable": {"thread_id": "t"}})] == acked[::-1]
    # gc on a full disk: a clear error and no maintenance lock left behind
    out = cli(repo, "gc")
    assert out.returncode == 1 and "Traceback" not in out.stderr and str(repo) in out.stderr
    assert not (repo / "gitckpt-maintenance.lock").exists()
    assert not list(repo.glob("gitckpt-maintenance.lock*"))
    filler.unlink()
    # space again: the same saver and store go on
    parent = put(saver, "t", parent, values={"x": "after"})
    acked.append(parent)
    store.put(("ns",), "k", {"v": 1})
    assert store.get(("ns",), "k").value == {"v": 1}
    saver.close()
    assert [t.checkpoint["id"] for t in GitSaver(repo).list({"configurable": {"thread_id": "t"}})] == acked[::-1]
    assert cli(repo, "gc").returncode == 0
    assert git(repo, "fsck", "--strict").returncode == 0


def test_a_read_only_file_system_reads_and_refuses_writes_clearly(small_fs):
    from gitckpt import StorageError

    fs = small_fs("8m")
    repo = fs / "agent.git"
    with GitSaver(repo) as saver:
        a = put(saver, "t", None, values={"x": 1})
    subprocess.run(["mount", "-o", "remount,ro", str(fs)], check=True)
    saver = GitSaver(repo)
    assert saver.get_tuple({"configurable": {"thread_id": "t"}}).checkpoint["id"] == a
    with pytest.raises(StorageError, match=rf"{repo}.*read-only"):
        put(saver, "t", a, values={"x": 2})
    saver.close()
    assert cli(repo, "log", "t").returncode == 0
    out = cli(repo, "delete", "t")
    assert out.returncode == 1 and "read-only" in out.stderr and "Traceback" not in out.stderr


def test_a_journal_that_cannot_be_replayed_on_a_full_disk_does_not_stop_readers(tmp_path, small_fs, caplog):
    """durability="fsync": a writer died and its git files were lost (power loss); its
    journal must be replayed, but the disk is full. Readers open the repository as it
    is; writers wait for the replay (a write first would make it skip an update)."""
    from test_journal import crashed_copy, history

    from gitckpt import StorageError
    from gitckpt.git import journal

    path, lost = crashed_copy(tmp_path, turns=2)
    expected = history(path, "t")
    fs = small_fs("16m")
    repo = fs / "lost.git"
    import shutil

    shutil.copytree(lost, repo)
    filler = fill(fs)
    caplog.set_level(logging.WARNING, logger="gitckpt")
    reader = GitSaver(repo, auto_pack=False)  # opens: the replay fails, reading goes on
    assert reader.repo.recovery_error is not None
    assert any("replaying the journal" in r.getMessage() and "No space left" in r.getMessage() for r in caplog.records)
    assert list((repo / journal.DIRNAME).glob("*" + journal.LOG_SUFFIX))  # kept for later
    assert [t.checkpoint["id"] for t in reader.list({"configurable": {"thread_id": "t"}})] == []  # as it is on disk
    out = cli(repo, "threads")
    assert out.returncode == 0, out.stderr
    with pytest.raises(StorageError, match=r"replaying the journal.*No space left"):
        put(reader, "t", None, values={"x": 1})
    filler.unlink()
    # space again: the next write finishes the replay first, then writes
    new = put(reader, "t", expected[0][0], values={"x": 1})
    reader.close()
    assert not list((repo / journal.DIRNAME).glob("*" + journal.LOG_SUFFIX))
    got = history(repo, "t")
    assert got[0][0] == new and got[1:] == expected


# -- 4. gc reports what du reports, and gives the space back --------------------------------------


def du(path: Path) -> int:
    """Bytes allocated, as `du -s` counts them."""
    return int(subprocess.run(["du", "-s", "--block-size=1", str(path)], capture_output=True, text=True,
                              check=True).stdout.split()[0])


def test_gc_after_prune_reports_du_and_frees_the_space_when_told(repo_path):
    latest = _filled(repo_path, threads=4, steps=300)
    assert cli(repo_path, "gc").returncode == 0
    prune = cli(repo_path, "prune", "t0", "t1", "t2", "t3")
    assert prune.returncode == 0, prune.stderr
    before = du(repo_path)
    out = cli(repo_path, "gc", "--json")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["before"] == before
    assert result["after"] == du(repo_path)  # what du says, not a sum of file sizes
    # was: du 9.1 MB -> 161 MB (every unreachable object a loose file); now one cruft pack
    assert result["after"] <= before * 1.05
    assert int(git(repo_path, "count-objects", "-v").stdout.split("count: ")[1].split()[0]) == 0
    assert result["kept"] > 0.5 * result["after"]
    assert abs(result["kept_until"] - (time.time() + 14 * 86400)) < 3600
    text = cli(repo_path, "gc")
    assert text.returncode == 0
    assert text.stdout.startswith("Disk use (du -s): ")
    assert "gitckpt gc --prune-now" in text.stdout and "gc.pruneExpire=2.weeks.ago" in text.stdout
    # forced: the space comes back at once, and every kept checkpoint is still there
    now = json.loads(cli(repo_path, "gc", "--prune-now", "--json").stdout)
    assert now["kept"] == 0 and now["after"] == du(repo_path) < 0.3 * result["after"]
    with GitSaver(repo_path) as saver:
        for t, cid in latest.items():
            assert [x.checkpoint["id"] for x in saver.list({"configurable": {"thread_id": t}})] == [cid]
    assert git(repo_path, "fsck", "--strict").returncode == 0


def test_gc_expiry_never_loses_an_object_a_running_writer_reuses(repo_path, monkeypatch):
    """A long-running writer remembers the objects it wrote; when one of them becomes
    unreachable and expires, writing the same value again must write it again."""
    from gitckpt.git import repo as repo_mod

    monkeypatch.setattr(repo_mod, "FRESH_FOR", 1.0)
    git(repo_path.parent, "init", "--bare", "-q", str(repo_path))
    git(repo_path, "config", "gc.pruneExpire", "3.seconds.ago")
    value = {"prompt": "You are a helpful assistant. " * 40}
    saver = GitSaver(repo_path, auto_pack=False)
    put(saver, "a", None, values=value)
    saver.get_tuple({"configurable": {"thread_id": "a"}})  # read back: in every cache too
    saver.delete_thread("a")
    time.sleep(4)
    out = json.loads(cli(repo_path, "gc", "--json").stdout)  # expires thread a's objects
    assert out["expire"] == "3.seconds.ago"
    b = put(saver, "b", None, values=value)  # the same blob, and the same small values
    saver.close()
    with GitSaver(repo_path) as fresh:
        assert fresh.get_tuple({"configurable": {"thread_id": "b"}}).checkpoint["id"] == b
        assert fresh.get_tuple({"configurable": {"thread_id": "b"}}).checkpoint["channel_values"] == value
    assert git(repo_path, "fsck", "--strict").returncode == 0


def test_gc_while_writers_write_loses_nothing(repo_path):
    """The default gc (with pruned history to pack away) runs again and again while two
    processes write. (--prune-now is not for this: format.md 17.4.)"""
    latest = _filled(repo_path, threads=2, steps=100)
    assert cli(repo_path, "prune", "t0", "t1").returncode == 0
    writer = textwrap.dedent("""
        import sys, json
        sys.path.insert(0, sys.argv[3])
        from test_faults import put
        from gitckpt import GitSaver
        s = GitSaver(sys.argv[1])
        p, done = None, []
        for i in range(150):
            p = put(s, sys.argv[2], p, values={"msg": f"step {i} " * 100})
            done.append(p)
        s.close()
        print(json.dumps(done))
    """)
    tests_dir = str(Path(__file__).parent)
    procs = [subprocess.Popen([sys.executable, "-c", writer, str(repo_path), f"w{i}", tests_dir],
                              stdout=subprocess.PIPE, text=True) for i in range(2)]
    gcs = 0
    while any(p.poll() is None for p in procs):
        out = cli(repo_path, "gc", "--json")
        assert out.returncode == 0, out.stderr
        gcs += 1
    acked = {f"w{i}": json.loads(p.stdout.read()) for i, p in enumerate(procs)}
    assert gcs >= 1
    with GitSaver(repo_path) as saver:
        for t, ids in acked.items():
            assert [x.checkpoint["id"] for x in saver.list({"configurable": {"thread_id": t}})] == ids[::-1]
        for t, cid in latest.items():
            assert [x.checkpoint["id"] for x in saver.list({"configurable": {"thread_id": t}})] == [cid]
    assert git(repo_path, "fsck", "--strict").returncode == 0
