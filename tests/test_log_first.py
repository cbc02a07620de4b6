"""Log-first updates (docs/format.md, 21): an update is one record in the writer's
log; packs and refs are published behind it. Real subprocesses, real repositories."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from gitckpt import GitSaver
from gitckpt.git import journal

WRITER = r"""
import json, os, signal, sys
import gitckpt.git.repo as repo_mod
from langgraph.checkpoint.base import empty_checkpoint
from gitckpt import GitSaver
repo_mod.PUBLISH_IDLE = repo_mod.PUBLISH_AFTER = 3600.0  # never published in the background
path, durability, n, end = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
s = GitSaver(path, durability=durability, auto_pack=False)
cfg = {"configurable": {"thread_id": "t", "checkpoint_ns": ""}}
ids = []
for i in range(n):
    cp = empty_checkpoint()
    cp["channel_values"] = {"x": i}
    cp["channel_versions"] = {"x": i + 1}
    cfg = s.put(cfg, cp, {"step": i}, {"x": i + 1})
    s.put_writes(cfg, [("x", i * 10)], task_id=f"task{i}")
    ids.append(cfg["configurable"]["checkpoint_id"])
print(json.dumps(ids), flush=True)
if end == "kill":
    os.kill(os.getpid(), signal.SIGKILL)
sys.stdin.readline()
s.close()
"""


def git(path: Path, *args: str) -> str:
    return subprocess.run(["git", "--git-dir", str(path), *args], capture_output=True, text=True).stdout.strip()


@contextmanager
def holding_writer(code: str, path: Path, n: int) -> Iterator[list[str]]:
    """A writer process that made ``n`` updates (their ids are yielded) and holds its
    saver open until the block ends; then it closes the saver and must exit cleanly."""
    child = subprocess.Popen([sys.executable, "-c", code, str(path), "os", str(n), "hold"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        yield json.loads(child.stdout.readline())
        child.stdin.write("\n")
        child.stdin.flush()
        assert child.wait(timeout=60) == 0
    finally:
        if child.poll() is None:
            child.kill()
        child.stdin.close()
        child.stdout.close()


def listed(path: Path) -> list:
    with GitSaver(path) as s:
        return [(t.checkpoint["id"], t.pending_writes) for t in s.list({"configurable": {"thread_id": "t"}})]


def test_a_killed_writers_updates_are_replayed_on_the_next_open(tmp_path: Path) -> None:
    for durability in ("os", "fsync"):
        path = tmp_path / f"{durability}.git"
        out = subprocess.run([sys.executable, "-c", WRITER, str(path), durability, "30", "kill"],
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == -9, out.stderr
        ids = json.loads(out.stdout)
        assert git(path, "rev-parse", "--verify", "-q", "refs/heads/threads/t") == ""  # only in its log
        assert list((path / journal.DIRNAME).glob("*" + journal.LOG_SUFFIX))
        got = listed(path)  # opening replays the log
        assert [cid for cid, _ in got] == ids[::-1]
        assert got[0][1] == [("task29", "x", 290)]
        assert not list((path / journal.DIRNAME).glob("*" + journal.LOG_SUFFIX))
        assert git(path, "rev-list", "--count", "refs/heads/threads/t") == "60"  # plain git sees all
        assert subprocess.run(["git", "--git-dir", str(path), "fsck", "--strict"]).returncode == 0


def test_another_process_sees_every_update_that_returned_and_git_sees_it_once_published(tmp_path: Path) -> None:
    path = tmp_path / "a.git"
    with holding_writer(WRITER, path, 10) as ids:
        assert git(path, "rev-parse", "--verify", "-q", "refs/heads/threads/t") == ""  # leased, not published
        lock = path / "refs" / "heads" / "threads" / "t.lock"
        assert lock.exists()
        # a writer that never publishes (a hung one; here the background publisher is turned off):
        # a reader waits LEASE_WAIT for its lease, then reads what git has (a documented limit)
        reader = GitSaver(path)
        try:
            assert reader.repo.ref("refs/heads/threads/t") is None
        finally:
            reader.close()
    assert not lock.exists()
    assert git(path, "rev-list", "--count", "refs/heads/threads/t") == "20"  # close() published all
    assert [cid for cid, _ in listed(path)] == ids[::-1]


def test_a_reader_in_another_process_waits_for_the_background_publisher(tmp_path: Path) -> None:
    """The default publisher: a reader started right after the writer's updates returned sees them all."""
    path = tmp_path / "b.git"
    code = WRITER.replace("repo_mod.PUBLISH_IDLE = repo_mod.PUBLISH_AFTER = 3600.0", "repo_mod.PUBLISH_IDLE = 1.0")
    with holding_writer(code, path, 10) as ids:
        reader = subprocess.run(
            [sys.executable, "-c",
             "import sys, json; from gitckpt import GitSaver; s = GitSaver(sys.argv[1]); "
             "print(json.dumps([t.checkpoint['id'] for t in s.list({'configurable': {'thread_id': 't'}})]))",
             str(path)],
            capture_output=True, text=True, timeout=120)
        assert reader.returncode == 0, reader.stderr
        assert json.loads(reader.stdout) == ids[::-1]
        # plain git too, once the publisher ran (within PUBLISH_AFTER of the first update)
        for _ in range(200):
            if git(path, "rev-list", "--count", "refs/heads/threads/t") == "20":
                break
            time.sleep(0.05)
        assert git(path, "rev-list", "--count", "refs/heads/threads/t") == "20"


def test_two_processes_writing_one_thread_lose_nothing(tmp_path: Path) -> None:
    path = tmp_path / "c.git"
    GitSaver(path).close()
    code = r"""
import sys
from langgraph.checkpoint.base import empty_checkpoint
from gitckpt import GitSaver
s = GitSaver(sys.argv[1])
for i in range(40):
    cfg = {"configurable": {"thread_id": "t", "checkpoint_ns": ""}}
    cp = empty_checkpoint()
    cp["channel_values"] = {"x": sys.argv[2] + str(i)}
    cp["channel_versions"] = {"x": 1}
    s.put(cfg, cp, {"step": i, "who": sys.argv[2]}, {"x": 1})
s.close()
"""
    procs = [subprocess.Popen([sys.executable, "-c", code, str(path), who]) for who in ("a", "b")]
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    with GitSaver(path) as s:
        got = [t.metadata["who"] + str(t.metadata["step"]) for t in s.list({"configurable": {"thread_id": "t"}})]
    assert sorted(got) == sorted(f"{w}{i}" for w in "ab" for i in range(40))
    assert subprocess.run(["git", "--git-dir", str(path), "fsck", "--strict"]).returncode == 0


ROUND_ROBIN = r"""
import sys
from langgraph.checkpoint.base import empty_checkpoint
from gitckpt import GitSaver
path, durability = sys.argv[1], sys.argv[2]
s = GitSaver(path, durability=durability, auto_pack=False)  # publishing as it is by default
cfgs = [{"configurable": {"thread_id": f"t{t}", "checkpoint_ns": ""}} for t in range(200)]
for r in range(10_000):
    for t, cfg in enumerate(cfgs):
        cp = empty_checkpoint()
        cp["channel_values"] = {"x": f"{r}-{t}-" + "v" * 2000}  # the log fills and starts over, too
        cp["channel_versions"] = {"x": r + 1}
        cfgs[t] = s.put(cfg, cp, {"step": r}, {"x": r + 1})
        s.put_writes(cfgs[t], [("x", r)], task_id=f"task{r}")
        print(f"t{t} {cfgs[t]['configurable']['checkpoint_id']}", flush=True)
"""


def test_a_writer_killed_while_its_publisher_publishes_loses_no_returned_update(tmp_path: Path) -> None:
    """A busy writer publishes for itself every PUBLISH_AFTER (format.md 29) and, in
    `os` mode, starts its log over each time; with 2 KB values the log also fills.
    A writer of 200 threads round-robin is killed (SIGKILL) after 1,500 updates
    returned, among those publishes: the next open replays its log and every
    update that returned is there, in both durability modes."""
    for durability in ("os", "fsync"):
        path = tmp_path / f"{durability}.git"
        child = subprocess.Popen([sys.executable, "-c", ROUND_ROBIN, str(path), durability],
                                 stdout=subprocess.PIPE, text=True)
        returned: list[tuple[str, str]] = []
        try:
            for line in child.stdout:
                returned.append(tuple(line.split()))
                if len(returned) == 1_500:
                    child.kill()
                    break
        finally:
            child.kill()
            child.wait(timeout=60)
            child.stdout.close()
        assert len(returned) == 1_500
        with GitSaver(path) as s:  # opening replays the dead writer's log
            for thread_id, cid in returned:
                got = s.get_tuple({"configurable": {"thread_id": thread_id, "checkpoint_ns": "", "checkpoint_id": cid}})
                assert got is not None, (durability, thread_id, cid)
                assert got.pending_writes and got.pending_writes[0][1:] == ("x", got.metadata["step"])
        assert subprocess.run(["git", "--git-dir", str(path), "fsck", "--strict"], capture_output=True).returncode == 0


BUSY_WRITER = r"""
import sys, time
import gitckpt.git.repo as repo_mod
from langgraph.checkpoint.base import empty_checkpoint
from gitckpt import GitSaver
repo_mod.GitRepo._wake_publisher = lambda self: None  # no publisher thread: only the writer publishes
s = GitSaver(sys.argv[1], auto_pack=False)
cfg = {"configurable": {"thread_id": "t", "checkpoint_ns": ""}}
i, oldest, end = 0, 0.0, time.monotonic() + 2.0
while time.monotonic() < end:
    cp = empty_checkpoint()
    cp["channel_values"] = {"x": i}
    cp["channel_versions"] = {"x": i + 1}
    cfg = s.put(cfg, cp, {"step": i}, {"x": i + 1})
    i += 1
    if s.repo._oldest is not None:  # how long the oldest unpublished update has waited
        oldest = max(oldest, time.monotonic() - s.repo._oldest)
    time.sleep(0.001)  # a busy writer: gaps far below PUBLISH_IDLE
print(i, s.repo.published, round(oldest, 3), flush=True)
s.close()
"""


def test_a_busy_writer_publishes_for_itself(tmp_path: Path) -> None:
    """format.md 29: while a writer goes on writing, its own updates publish what is older
    than PUBLISH_AFTER, so plain git follows it without any publisher thread."""
    path = tmp_path / "busy.git"
    child = subprocess.Popen([sys.executable, "-c", BUSY_WRITER, str(path)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen: list[int] = []
    try:
        while child.poll() is None:
            count = git(path, "rev-list", "--count", "refs/heads/threads/t")
            if count:
                seen.append(int(count))
            time.sleep(0.05)
    finally:
        out, err = child.communicate(timeout=60)
    assert child.returncode == 0, err
    written, published, oldest = out.split()
    assert len(set(seen)) >= 4, seen  # plain git saw it move, again and again, while it wrote
    assert seen == sorted(seen) and seen[-1] <= int(written)
    assert int(published) >= 4
    # nothing waited much longer than PUBLISH_AFTER (0.1 s) to be published (measured: 0.10 s).
    # Before the writer published for itself, without the thread nothing was published in 2 s.
    assert float(oldest) < 0.5, oldest
    assert git(path, "rev-list", "--count", "refs/heads/threads/t") == written  # close() published the rest


STORE_WRITER = r"""
import json, os, signal, sys
import gitckpt.git.repo as repo_mod
from gitckpt import GitStore
repo_mod.PUBLISH_IDLE = repo_mod.PUBLISH_AFTER = 3600.0  # nothing published: the log holds it all
path, durability, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
s = GitStore(path, durability=durability)
for i in range(n):
    s.put(("memories", "u1"), f"k{i}", {"text": f"fact {i}", "n": i})
s.delete(("memories", "u1"), "k0")
print(json.dumps(sorted(item.key for item in s.search(("memories",), limit=1000))), flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_killed_store_writers_items_are_replayed_on_the_next_open(tmp_path: Path) -> None:
    """format.md 30: a GitStore write is one log record too; a crash loses none that returned."""
    from gitckpt import GitStore

    for durability in ("os", "fsync"):
        path = tmp_path / f"store-{durability}.git"
        out = subprocess.run([sys.executable, "-c", STORE_WRITER, str(path), durability, "40"],
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == -9, out.stderr
        keys = json.loads(out.stdout)
        assert keys == sorted(f"k{i}" for i in range(1, 40))
        assert git(path, "rev-parse", "--verify", "-q", "refs/heads/store") == ""  # only in its log
        with GitStore(path) as s:  # opening replays the log
            assert sorted(item.key for item in s.search(("memories",), limit=1000)) == keys
            assert s.get(("memories", "u1"), "k39").value == {"text": "fact 39", "n": 39}
        assert git(path, "rev-list", "--count", "refs/heads/store") == "41"  # 40 puts and a delete
        assert subprocess.run(["git", "--git-dir", str(path), "fsck", "--strict"]).returncode == 0


THREADED_WRITER = r"""
import sys, threading
import gitckpt.git.repo as repo_mod
repo_mod.PUBLISH_AFTER = 0.01  # a publish every 10 ms, by whichever writer's update comes then
from langgraph.checkpoint.base import empty_checkpoint
from gitckpt import GitSaver
s = GitSaver(sys.argv[1], durability=sys.argv[2])
def work(t):
    cfg = {"configurable": {"thread_id": f"t{t}", "checkpoint_ns": ""}}
    for i in range(150):
        cp = empty_checkpoint()
        cp["channel_values"] = {"x": i}
        cp["channel_versions"] = {"x": i + 1}
        cfg = s.put(cfg, cp, {"step": i}, {"x": i + 1})
        s.put_writes(cfg, [("x", i * 10)], task_id=f"task{i}")
threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(s.repo.published, flush=True)
s.close()
"""


def test_python_threads_publishing_for_each_other_lose_nothing(tmp_path: Path) -> None:
    """format.md 29: eight Python threads of one process write eight threads at once, and
    the publish falls on whichever update comes when it is due; another process then
    reads every checkpoint and write, and git's own check passes."""
    for durability in ("os", "fsync"):
        path = tmp_path / f"{durability}.git"
        out = subprocess.run([sys.executable, "-c", THREADED_WRITER, str(path), durability],
                             capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr
        assert int(out.stdout) >= 5  # it did publish while they wrote (measured: 34 in os mode)
        reader = subprocess.run(
            [sys.executable, "-c",
             "import sys, json; from gitckpt import GitSaver; s = GitSaver(sys.argv[1]); print(json.dumps("
             "[[[t.metadata['step'], t.pending_writes] for t in s.list({'configurable': {'thread_id': f't{n}'}})]"
             " for n in range(8)]))", str(path)],
            capture_output=True, text=True, timeout=120)
        assert reader.returncode == 0, reader.stderr
        for rows in json.loads(reader.stdout):
            assert rows == [[i, [[f"task{i}", "x", i * 10]]] for i in range(149, -1, -1)]
        assert subprocess.run(["git", "--git-dir", str(path), "fsck", "--strict"]).returncode == 0


def test_a_store_write_reaches_plain_git_on_publish(tmp_path: Path) -> None:
    """format.md 30: until it is published a store write is in the log only (other
    gitckpt processes wait for it); ``GitStore.publish()`` shows it to plain git."""
    import gitckpt.git.repo as repo_mod
    from gitckpt import GitStore

    path = tmp_path / "s.git"
    old = repo_mod.PUBLISH_IDLE, repo_mod.PUBLISH_AFTER
    repo_mod.PUBLISH_IDLE = repo_mod.PUBLISH_AFTER = 3600.0  # nothing published behind the writes
    try:
        with GitStore(path) as s:
            s.put(("memories", "u1"), "k", {"text": "a fact"})
            assert git(path, "rev-parse", "--verify", "-q", "refs/heads/store") == ""
            s.publish()
            tip = git(path, "rev-parse", "--verify", "-q", "refs/heads/store")
            assert tip and git(path, "log", "--format=%s", "-1", tip) == "put memories/u1: k"
            assert git(path, "ls-tree", "-r", "--name-only", tip).endswith("/k")
    finally:
        repo_mod.PUBLISH_IDLE, repo_mod.PUBLISH_AFTER = old
