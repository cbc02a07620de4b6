"""GitSaver's storage contract: names, git integrity, errors, several processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pygit2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from langgraph.checkpoint.base import empty_checkpoint
from langgraph.checkpoint.base.id import uuid6

from gitckpt import CorruptObjectError, GitSaver, RepositoryError
from gitckpt.checkpoint import format as fmt
from gitckpt.git import names
from gitckpt.errors import ConfigError
from gitckpt.errors import InvalidInputError
from gitckpt.git.repo import publish_all


def git(repo, *args, check=True) -> subprocess.CompletedProcess:
    publish_all()  # plain git sees what is published (format.md 21)
    return subprocess.run(["git", "--git-dir", str(repo), *args], check=check, capture_output=True, text=True)


def put(saver, thread_id, parent=None, ns="", values=None, metadata=None):
    cp = empty_checkpoint()
    cp["id"] = str(uuid6(clock_seq=1))
    values = values or {}
    cp["channel_values"] = values
    cp["channel_versions"] = {k: saver.get_next_version(None, None) for k in values}
    config = {"configurable": {"thread_id": thread_id, "checkpoint_ns": ns}}
    if parent:
        config["configurable"]["checkpoint_id"] = parent
    saver.put(config, cp, metadata or {"source": "loop", "step": 0}, dict(cp["channel_versions"]))
    return cp["id"]


AWKWARD_IDS = [
    "1",
    "user-42",
    "3f8e1a2c-9d4b-4c1e-8f00-123456789abc",
    "with space",
    "a/b/c",
    "..",
    "../../etc/passwd",
    "~tilde~",
    "colon:separated:id",
    "ünïcødé 🧠 线程",
    "name.lock",
    ".hidden",
    "trailing.",
    "@",
    "x@{y}",
    "back\\slash",
    "new\nline",
    "",
    "%41",
    "x" * 200,
    "ü" * 200,
]


@pytest.mark.parametrize("thread_id", AWKWARD_IDS, ids=range(len(AWKWARD_IDS)))
def test_any_thread_id_round_trips(saver, repo_path, thread_id):
    a = put(saver, thread_id, values={"v": thread_id})
    b = put(saver, thread_id, parent=a, ns="child:1|x/y ü", values={"v": 2})
    assert thread_id in saver.threads()
    tup = saver.get_tuple({"configurable": {"thread_id": thread_id}})
    assert tup.checkpoint["id"] == a and tup.checkpoint["channel_values"] == {"v": thread_id}
    assert tup.config["configurable"]["thread_id"] == thread_id
    sub = saver.get_tuple({"configurable": {"thread_id": thread_id, "checkpoint_ns": "child:1|x/y ü"}})
    assert sub.checkpoint["id"] == b
    # a fresh process-like saver (no caches) finds it by the ref name alone
    fresh = GitSaver(repo_path)
    assert thread_id in fresh.threads()
    assert fresh.get_tuple({"configurable": {"thread_id": thread_id}}).checkpoint["id"] == a
    assert git(repo_path, "fsck", "--strict").returncode == 0


def test_fsck_strict_and_gc_prune_now_lose_nothing(saver, repo_path):
    from test_graphs import CFG, seed_graph

    graph = seed_graph(saver)
    graph.invoke({"foo": ""}, CFG)
    graph.invoke(None, list(graph.get_state_history(CFG))[2].config)  # a fork
    before = [(t.checkpoint["id"], t.pending_writes) for t in saver.list(None)]
    saver.close()
    assert git(repo_path, "fsck", "--strict").returncode == 0
    git(repo_path, "gc", "--prune=now", "--quiet")
    assert git(repo_path, "count-objects", "-v").stdout.splitlines()[0] == "count: 0"
    after = [(t.checkpoint["id"], t.pending_writes) for t in GitSaver(repo_path).list(None)]
    assert after == before and len(after) == 7
    assert git(repo_path, "fsck", "--strict").returncode == 0


def test_late_and_early_writes_are_kept(saver):
    a = put(saver, "t", values={"x": 1})
    b = put(saver, "t", parent=a, values={"x": 2})
    cfg_a = {"configurable": {"thread_id": "t", "checkpoint_ns": "", "checkpoint_id": a}}
    saver.put_writes(cfg_a, [("x", 5)], "task-late")  # a already has a child
    early = str(uuid6(clock_seq=9))
    cfg_e = {"configurable": {"thread_id": "t", "checkpoint_ns": "", "checkpoint_id": early}}
    saver.put_writes(cfg_e, [("x", 7)], "task-early", "~__pregel_pull, node")  # before its put
    cp = empty_checkpoint()
    cp["id"] = early
    saver.put({"configurable": {"thread_id": "t", "checkpoint_ns": "", "checkpoint_id": b}}, cp, {"step": 3}, {})
    fresh = GitSaver(saver.repo.path)
    for s in (saver, fresh):
        assert s.get_tuple(cfg_a).pending_writes == [("task-late", "x", 5)]
        assert s.get_tuple(cfg_e).pending_writes == [("task-early", "x", 7)]
        assert s.get_tuple({"configurable": {"thread_id": "t", "checkpoint_id": b}}).pending_writes == []


def test_missing_thread_id_raises_like_langgraph_savers(saver):
    with pytest.raises(KeyError):
        saver.get_tuple({"configurable": {}})
    with pytest.raises(ConfigError, match="thread_id"):
        saver.put({"configurable": {}}, empty_checkpoint(), {}, {})


def test_bad_paths_name_the_path(tmp_path):
    f = tmp_path / "file.git"
    f.write_text("x")
    with pytest.raises(RepositoryError, match=f"{f} is a file"):
        GitSaver(f)
    work = tmp_path / "work"
    subprocess.run(["git", "init", "-q", str(work)], check=True)
    with pytest.raises(RepositoryError, match=f"{work} is a non-bare git repository"):
        GitSaver(work)
    full = tmp_path / "full"
    full.mkdir()
    (full / "notes.txt").write_text("x")
    with pytest.raises(RepositoryError, match="non-empty directory that is not a git repository"):
        GitSaver(full)
    if os.geteuid() != 0:  # root reads anything
        locked = tmp_path / "locked.git"
        locked.mkdir(mode=0)
        with pytest.raises(RepositoryError, match="not readable"):
            GitSaver(locked)


def test_missing_object_names_thread_and_checkpoint(repo_path, tmp_path):
    saver = GitSaver(repo_path, auto_pack=False)
    a = put(saver, "t1", values={"big": "v" * 1000})
    saver.publish()  # its pack is written behind the log (format.md 21)
    # turn the packs into loose objects, then lose the channel's blob
    for pack in (repo_path / "objects" / "pack").glob("*.pack"):
        moved = tmp_path / pack.name
        pack.rename(moved)
        pack.with_suffix(".idx").unlink()
        subprocess.run(["git", "--git-dir", str(repo_path), "unpack-objects", "-q"], stdin=moved.open("rb"), check=True)
    blob = git(repo_path, "rev-parse", "threads/t1:channels/big").stdout.strip()
    (repo_path / "objects" / blob[:2] / blob[2:]).unlink()
    with pytest.raises(CorruptObjectError, match=rf"thread 't1' checkpoint {a}"):
        GitSaver(repo_path).get_tuple({"configurable": {"thread_id": "t1"}})


def test_unserializable_value_fails_clearly_and_writes_nothing(saver, repo_path):
    a = put(saver, "t", values={"x": 1})
    refs_before = git(repo_path, "for-each-ref").stdout

    class Opaque:
        __slots__ = ()

    with pytest.raises(InvalidInputError, match="cannot be serialized"):
        put(saver, "t", parent=a, values={"x": Opaque()})
    with pytest.raises(InvalidInputError, match="the write to 'x'"):
        saver.put_writes({"configurable": {"thread_id": "t", "checkpoint_id": a}}, [("x", Opaque())], "task")
    assert git(repo_path, "for-each-ref").stdout == refs_before


def test_durable_mode_round_trips(repo_path):
    saver = GitSaver(repo_path, durability="fsync")
    a = put(saver, "t", values={"x": 1})
    assert saver.get_tuple({"configurable": {"thread_id": "t"}}).checkpoint["id"] == a
    with pytest.raises(ValueError, match="durability"):
        GitSaver(repo_path, durability="maybe")


def test_copy_and_fork_are_refs_not_copies(saver, repo_path):
    a = put(saver, "src", values={"x": 1})
    b = put(saver, "src", parent=a, values={"x": 2})
    saver.put_writes({"configurable": {"thread_id": "src", "checkpoint_id": b}}, [("x", 3)], "task")
    def count_objects():
        fields = dict(line.split(": ") for line in git(repo_path, "count-objects", "-v").stdout.splitlines())
        return int(fields["count"]) + int(fields["in-pack"])

    objects_before = count_objects()
    saver.copy_thread("src", "dst")
    saver.fork("src", a, "forked")
    assert count_objects() - objects_before == 2  # one commit each, no data copied
    assert [t.checkpoint["id"] for t in saver.list({"configurable": {"thread_id": "dst"}})] == [b, a]
    assert saver.get_tuple({"configurable": {"thread_id": "dst"}}).pending_writes == [("task", "x", 3)]
    forked = list(saver.list({"configurable": {"thread_id": "forked"}}))
    assert [t.checkpoint["id"] for t in forked] == [a]
    assert [t.checkpoint["id"] for t in saver.list({"configurable": {"thread_id": "src"}})] == [b, a]


WRITER = textwrap.dedent(
    """
    import sys
    from langgraph.checkpoint.base import empty_checkpoint
    from langgraph.checkpoint.base.id import uuid6
    from gitckpt import GitSaver

    repo, thread, worker, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    saver = GitSaver(repo)
    parent = None
    for i in range(n):
        cp = empty_checkpoint()
        cp["id"] = str(uuid6(clock_seq=i))
        cp["channel_values"] = {"who": f"{worker}-{i}"}
        cp["channel_versions"] = {"who": i + 1}
        cfg = {"configurable": {"thread_id": thread, "checkpoint_ns": ""}}
        if parent:
            cfg["configurable"]["checkpoint_id"] = parent
        saver.put(cfg, cp, {"source": "loop", "step": i, "worker": worker}, {"who": i + 1})
        saver.put_writes({"configurable": {"thread_id": thread, "checkpoint_ns": "", "checkpoint_id": cp["id"]}},
                         [("who", f"w-{worker}-{i}")], f"task-{worker}-{i}")
        parent = cp["id"]
    saver.close()
    """
)


def test_concurrent_processes_lose_nothing(repo_path, tmp_path):
    GitSaver(repo_path).close()
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    n = 40
    jobs = [("shared", f"s{i}") for i in range(3)] + [(f"own-{i}", f"o{i}") for i in range(2)]
    procs = [
        subprocess.Popen([sys.executable, str(script), str(repo_path), t, w, str(n)], stderr=subprocess.PIPE)
        for t, w in jobs
    ]
    for p in procs:
        assert p.wait(timeout=180) == 0, p.stderr.read().decode()
    saver = GitSaver(repo_path)
    shared = list(saver.list({"configurable": {"thread_id": "shared"}}))
    assert len(shared) == 3 * n  # three writers on one thread: every checkpoint kept
    for t in shared:
        worker = t.metadata["worker"]
        i = t.metadata["step"]
        assert t.checkpoint["channel_values"] == {"who": f"{worker}-{i}"}
        assert t.pending_writes == [(f"task-{worker}-{i}", "who", f"w-{worker}-{i}")]
        if i:
            assert t.parent_config["configurable"]["checkpoint_id"] == next(
                s.checkpoint["id"] for s in shared if s.metadata == {**t.metadata, "step": i - 1}
            )
    # divergent writers on one thread become lines (branches) of that thread
    assert len(saver.thread_info("shared")["lines"]) == 3
    for i in range(2):
        assert len(list(saver.list({"configurable": {"thread_id": f"own-{i}"}}))) == n
    assert git(repo_path, "fsck", "--strict").returncode == 0


READER = textwrap.dedent(
    """
    import sys, json
    from gitckpt import GitSaver
    import time
    saver = GitSaver(sys.argv[1])
    seen, reads, deadline = 0, 0, time.monotonic() + 120
    while seen < 60 and time.monotonic() < deadline:
        tups = list(saver.list({"configurable": {"thread_id": "shared"}}))
        for t in tups:  # every checkpoint read while the writer writes is whole
            assert t.checkpoint["channel_values"]["who"] == f"w-{t.metadata['step']}"
            assert t.pending_writes in ([], [(f"task-w-{t.metadata['step']}", "who", f"w-w-{t.metadata['step']}")])
        steps = sorted(t.metadata["step"] for t in tups)
        assert steps == list(range(len(steps)))  # a prefix of the history, never a gap
        seen, reads = len(tups), reads + 1
    print(json.dumps([seen, reads]))
    """
)


def test_reader_while_writer_writes(repo_path, tmp_path):
    GitSaver(repo_path).close()
    (tmp_path / "writer.py").write_text(WRITER)
    (tmp_path / "reader.py").write_text(READER)
    w = subprocess.Popen([sys.executable, str(tmp_path / "writer.py"), str(repo_path), "shared", "w", "60"])
    r = subprocess.run([sys.executable, str(tmp_path / "reader.py"), str(repo_path)], capture_output=True, text=True)
    assert w.wait(timeout=120) == 0
    assert r.returncode == 0, r.stderr
    seen, reads = json.loads(r.stdout)
    assert seen == 60 and reads >= 1


def test_index_cache_file_is_used_and_never_trusted_blindly(repo_path, monkeypatch):
    import gitckpt.checkpoint.index as saver_mod

    monkeypatch.setattr(saver_mod, "_SAVE_MIN", 5)
    s = GitSaver(repo_path)
    parent = None
    ids = []
    for i in range(12):
        parent = put(s, "long", parent=parent, values={"i": i}, metadata={"step": i})
        ids.append(parent)
    s.close()
    cache = repo_path / "gitckpt-cache" / "threads" / "long"
    assert cache.is_file()

    # stale: another saver appends after the cache was written
    other = GitSaver(repo_path)
    ids.append(put(other, "long", parent=ids[-1], values={"i": 12}, metadata={"step": 12}))
    fresh = GitSaver(repo_path)
    assert [t.checkpoint["id"] for t in fresh.list({"configurable": {"thread_id": "long"}})] == ids[::-1]

    # moved backwards: a prune by another saver, and a cache file from before it
    fresh.indexes._save_index("long", fresh.indexes.get("long"))
    stale = cache.read_bytes()
    other.prune(["long"], strategy="keep_latest")
    cache.write_bytes(stale)
    fresh2 = GitSaver(repo_path)
    assert [t.checkpoint["id"] for t in fresh2.list({"configurable": {"thread_id": "long"}})] == [ids[-1]]

    # corrupt: ignored, rebuilt from git
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_bytes(b"\x00garbage")
    assert GitSaver(repo_path).get_tuple({"configurable": {"thread_id": "long"}}).checkpoint["id"] == ids[-1]


def test_small_packs_are_merged_in_the_background(repo_path):
    saver = GitSaver(repo_path)
    parent = None
    for i in range(150):
        parent = put(saver, "t", parent=parent, values={"i": i}, metadata={"step": i})
    saver.close()  # waits for the running repack, then runs a last one
    packs = list((repo_path / "objects" / "pack").glob("*.pack"))
    assert len(packs) < 10
    assert not (repo_path / "gitckpt-maintenance.lock").exists()
    assert len(list(GitSaver(repo_path).list({"configurable": {"thread_id": "t"}}))) == 150


def test_a_repack_that_could_not_start_is_tried_again_soon(repo_path):
    from gitckpt.git.maintenance import PACK_EVERY, PACK_RETRY, take_maintenance_lock

    saver = GitSaver(repo_path)
    lock = take_maintenance_lock(repo_path)  # as another process's repack holds it
    assert lock is not None
    parent = None
    for i in range(PACK_EVERY + 2):
        parent = put(saver, "t", parent=parent, values={"i": i}, metadata={"step": i})
        saver.publish()  # a pack per update (format.md 21)
    saver.repo._maint.settle()  # repacks start on a background thread
    assert saver.repo._maint._proc is None  # it could not start: the lock is held
    lock.release()  # that run ended
    for i in range(PACK_RETRY):  # a few more updates, not another PACK_EVERY
        parent = put(saver, "t", parent=parent, values={"i": i}, metadata={"step": i})
        saver.publish()
    saver.repo._maint.settle()
    assert saver.repo._maint._proc is not None
    saver.repo._maint.wait()
    assert len(list((repo_path / "objects" / "pack").glob("*.pack"))) < 10
    saver.close()


def test_small_packs_are_merged_without_a_git_executable(repo_path):
    saver = GitSaver(repo_path)
    saver.repo._maint.git = None  # as on a machine without git: libgit2's pack builder
    parent = None
    for i in range(70):
        parent = put(saver, "t", parent=parent, values={"i": i}, metadata={"step": i})
    saver.close()
    assert len(list((repo_path / "objects" / "pack").glob("*.pack"))) < 10
    assert [t.metadata["step"] for t in GitSaver(repo_path).list({"configurable": {"thread_id": "t"}})] == list(
        range(69, -1, -1)
    )
    assert git(repo_path, "fsck", "--strict").returncode == 0


def test_relative_repository_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    saver = GitSaver("rel.git")
    parent = None
    for i in range(70):
        parent = put(saver, "t", parent=parent, values={"i": i})
    saver.close()
    assert not (tmp_path / "rel.git" / "gitckpt-maintenance.lock").exists()


def test_packed_refs_read_write_and_delete(saver, repo_path):
    a = put(saver, "p", values={"x": 1})
    put(saver, "q", values={"x": 1})
    saver.fork("p", a, "p2")
    git(repo_path, "pack-refs", "--all", "--prune")
    assert not (repo_path / "refs" / "heads" / "threads" / "p").exists()  # only in packed-refs now
    fresh = GitSaver(repo_path)
    assert set(fresh.threads()) >= {"p", "q", "p2"}
    b = put(fresh, "p", parent=a, values={"x": 2})  # a loose ref now overrides the packed one
    assert GitSaver(repo_path).get_tuple({"configurable": {"thread_id": "p"}}).checkpoint["id"] == b
    fresh.delete_thread("q")  # removes the packed entry too
    assert "q" not in GitSaver(repo_path).threads()
    assert git(repo_path, "fsck", "--strict").returncode == 0


def test_packed_refs_are_looked_up_by_prefix_without_mixing_threads(saver, repo_path):
    # thread ids that are prefixes of each other, each with a fork line and a subgraph line
    ids = {}
    for t in ("1", "10", "1-b", "2"):
        a = put(saver, t, values={"x": t})
        b = put(saver, t, parent=a, values={"x": t + "!"})
        put(saver, t, parent=a, values={"x": t + "?"})  # a second child of a: a fork line
        put(saver, t, ns="sub", values={"y": t})
        ids[t] = {a, b}
    git(repo_path, "pack-refs", "--all", "--prune")
    assert not [p for p in (repo_path / "refs" / "heads").rglob("*") if p.is_file()]  # every ref is packed
    packed_lines = {t: GitSaver(repo_path).indexes.thread_refs(t) for t in ids}
    loose = put(saver, "1", values={"x": "loose"})  # a loose ref of thread 1 beside packed ones
    fresh = GitSaver(repo_path)
    for t, refs in packed_lines.items():
        assert len(refs) == 3, (t, sorted(refs))  # main line, fork line, subgraph line; no other thread's
        assert all(names.decode(fmt.parse_line_ref(r)[0]) == t for r in refs)
        got = {tup.checkpoint["id"] for tup in fresh.list({"configurable": {"thread_id": t, "checkpoint_ns": ""}})}
        assert ids[t] <= got and len(got) == 3 + (t == "1")
    assert fresh.get_tuple({"configurable": {"thread_id": "1"}}).checkpoint["id"] == loose
    assert fresh.threads() == ["1", "1-b", "10", "2"]


def test_writes_before_a_threads_first_checkpoint_stay_on_its_main_line(saver, repo_path):
    first = str(uuid6(clock_seq=-1))
    cfg = {"configurable": {"thread_id": "new", "checkpoint_ns": "", "checkpoint_id": first}}
    saver.put_writes(cfg, [("x", 1)], "early-task")  # LangGraph's async durability can do this
    cp = empty_checkpoint()
    cp["id"] = first
    saver.put({"configurable": {"thread_id": "new", "checkpoint_ns": ""}}, cp, {"step": -1, "source": "input"}, {})
    assert saver.thread_info("new")["lines"] == ["refs/heads/threads/new"]  # no fork
    assert saver.get_tuple(cfg).pending_writes == [("early-task", "x", 1)]
    log = git(repo_path, "log", "--format=%s", "threads/new").stdout.splitlines()
    assert log[0] == "step -1 · input" and log[1].startswith("writes for ")


def test_writes_with_awkward_task_ids_are_idempotent_and_survive_forks(saver):
    a = put(saver, "w", values={"x": 1})
    cfg = {"configurable": {"thread_id": "w", "checkpoint_ns": "", "checkpoint_id": a}}
    task = "a/b %41 ü " + "t" * 200  # escaped, and long enough to be shortened
    for _ in range(2):
        saver.put_writes(cfg, [("x", 1), ("y", 2)], task)
    expected = [(task, "x", 1), (task, "y", 2)]
    assert saver.get_tuple(cfg).pending_writes == expected
    saver.fork("w", a, "w2")
    forked = {"configurable": {"thread_id": "w2", "checkpoint_ns": "", "checkpoint_id": a}}
    saver.put_writes(forked, [("x", 1)], task)  # still idempotent on the fork
    assert GitSaver(saver.repo.path).get_tuple(forked).pending_writes == expected


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc to count open files")
def test_ref_updates_leave_no_file_open(repo_path):
    # Each ref update keeps the replaced ref file open until a background thread
    # closes it (format.md, 9): all of them must be closed soon after.
    def open_files():  # not counting the empty files kept ready for packs (format.md, 9)
        n = 0
        for fd in os.listdir("/proc/self/fd"):
            try:
                n += "tmp_gitckpt_" not in os.readlink(f"/proc/self/fd/{fd}")
            except OSError:
                pass
        return n

    with GitSaver(repo_path, auto_pack=False) as saver:
        put(saver, "warm-up")
        before = open_files()
        parent = None
        for i in range(60):
            parent = put(saver, "t", parent, values={"n": i})
        deadline = time.monotonic() + 10
        while open_files() > before and time.monotonic() < deadline:
            time.sleep(0.05)
        assert open_files() <= before
        assert saver.get_tuple({"configurable": {"thread_id": "t"}}).checkpoint["channel_values"] == {"n": 59}


def test_index_cache_file_is_rewritten_geometrically(repo_path, monkeypatch):
    """Rewriting the cache file costs time in proportion to the thread, so a
    growing thread rewrites it after a quarter more commits (not after a fixed
    number), and the file on disk is never more than that quarter behind."""
    import gitckpt.checkpoint.index as saver_mod
    from gitckpt.checkpoint.index import ThreadIndex

    monkeypatch.setattr(saver_mod, "_SAVE_MIN", 5)
    monkeypatch.setattr(saver_mod, "_SAVE_EVERY", 10)
    s = GitSaver(repo_path)
    saves = []
    original = s.indexes._save_index

    def counting(thread_id, idx):
        saves.append(len(idx.seen))
        original(thread_id, idx)

    s.indexes._save_index = counting
    parent = None
    for i in range(400):
        parent = put(s, "long", parent=parent, values={"i": i}, metadata={"step": i})
    cache = repo_path / "gitckpt-cache" / "threads" / "long"
    on_disk = ThreadIndex.from_bytes(cache.read_bytes())
    assert 10 <= len(saves) <= 16  # a fixed interval of 10 would have been 40 rewrites
    assert all(b - a >= max(10, a // 4) for a, b in zip(saves, saves[1:]))
    assert len(on_disk.seen) >= 400 * 3 // 4
    s.close()


def test_index_cache_file_holds_exactly_what_a_walk_finds(repo_path):
    """The cache file (columns, raw ids) loads back to the index a walk of the
    history builds: several namespaces, several pending-write commits for one
    checkpoint, deleted checkpoints, a fork line. A damaged file loads as None."""
    from gitckpt.checkpoint.index import ThreadIndex

    s = GitSaver(repo_path)
    a = put(s, "t", values={"x": 1}, metadata={"step": 0, "run_id": "keep"})
    b = put(s, "t", parent=a, values={"x": 2}, metadata={"step": 1, "run_id": "gone"})
    c = put(s, "t", parent=b, values={"x": 3}, metadata={"step": 2, "run_id": "keep"})
    put(s, "t", parent=a, values={"x": 4}, metadata={"step": 1, "run_id": "keep"})  # a fork of a
    sub = put(s, "t", ns="child:1", values={"y": 1}, metadata={"step": 0})
    for task in ("task-1", "task-2"):
        s.put_writes({"configurable": {"thread_id": "t", "checkpoint_ns": "", "checkpoint_id": c}}, [("x", task)], task)
    s.put_writes({"configurable": {"thread_id": "t", "checkpoint_ns": "child:1", "checkpoint_id": sub}}, [("y", 2)], "t3")
    s.delete_for_runs(["gone"])
    walked = s.indexes.thread_index("t", fresh=True)
    assert len(walked.order) == 2 and len(walked.writes[("", c)]) == 2 and walked.deleted == {("", b)}
    assert len(walked.tips) == 3  # main, fork, subgraph
    loaded = ThreadIndex.from_bytes(walked.to_bytes())
    for name in ("tips", "heads", "ckpt", "writes", "deleted", "order", "seen"):
        assert getattr(loaded, name) == getattr(walked, name), name
    assert loaded.ckpt[("", c)].commit == walked.ckpt[("", c)].commit  # ids as pygit2 Oids again
    # the usual shape (one namespace, one writes commit per checkpoint) loads by a path of its own;
    # ids put in descending order, as LangGraph's own tests do, so the order must be sorted on load
    config = {"configurable": {"thread_id": "u", "checkpoint_ns": ""}}
    for i, cid in enumerate(sorted((str(uuid6(clock_seq=k)) for k in range(4)), reverse=True)):
        cp = empty_checkpoint()
        cp["id"] = cid
        config = s.put(config, cp, {"source": "loop", "step": i}, {})
        s.put_writes(config, [("x", i)], "t")
    usual = s.indexes.thread_index("u", fresh=True)
    assert len(usual.writes) == 4 and all(len(v) == 1 for v in usual.writes.values())
    loaded = ThreadIndex.from_bytes(usual.to_bytes())
    for name in ("tips", "heads", "ckpt", "writes", "deleted", "order", "seen"):
        assert getattr(loaded, name) == getattr(usual, name), name
    data = walked.to_bytes()
    for damaged in (data[: len(data) // 2], data.replace(b"\xa4tree", b"\xa4xree"), b"\x00", b""):
        assert ThreadIndex.from_bytes(damaged) is None
    s.close()


def test_loading_an_index_leaves_the_garbage_collector_as_it_was():
    # the collector is paused while a cache file loads (format.md, 6); it must come back on,
    # after a damaged file too, and stay off for a program that turned it off itself
    import gc

    from gitckpt.checkpoint.index import ThreadIndex

    good = ThreadIndex().to_bytes()
    assert gc.isenabled()
    for data in (good, b"\x00garbage", good[:5]):
        ThreadIndex.from_bytes(data)
        assert gc.isenabled()
    gc.disable()
    try:
        assert ThreadIndex.from_bytes(good) is not None
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_pack_files_are_written_into_files_made_ahead_and_none_is_left(repo_path):
    """Updates write their .pack and .idx into empty files the saver created
    beforehand, off the update's path; close() deletes the unused ones, and so
    does a process that exits without closing."""
    s = GitSaver(repo_path)
    parent = None
    for i in range(20):
        parent = put(s, "t", parent=parent, values={"i": i}, metadata={"step": i})
        s.publish()  # a pack per update (format.md 21)
    pack_dir = repo_path / "objects" / "pack"
    for _ in range(500):  # the background thread makes spare files after the puts took some
        if s.repo._pool._state["files"]:
            break
        time.sleep(0.01)
    spare = list(pack_dir.glob("tmp_gitckpt_*"))
    assert spare  # made ahead, waiting
    assert all(p.stat().st_size == 0 for p in spare)
    s.repo._maint.wait()
    assert len(list(pack_dir.glob("pack-*.idx"))) >= 1
    s.close()
    assert list(pack_dir.glob("tmp_gitckpt_*")) == []
    assert [t.checkpoint["id"] for t in GitSaver(repo_path).list({"configurable": {"thread_id": "t"}})][0] == parent

    code = (
        "import sys; from gitckpt import GitSaver; from langgraph.checkpoint.base import empty_checkpoint\n"
        "s = GitSaver(sys.argv[1]); cfg = {'configurable': {'thread_id': 'u', 'checkpoint_ns': ''}}\n"
        "for i in range(10):\n"
        "    cp = empty_checkpoint(); cp['channel_values'] = {'x': i}; cp['channel_versions'] = {'x': i + 1}\n"
        "    cfg = s.put(cfg, cp, {'step': i}, {'x': i + 1})\n"
        "import time\n"
        "for _ in range(500):\n"  # let the background thread make spare files
        "    if s.repo._pool._state['files']: break\n"
        "    time.sleep(0.01)\n"
        "print(len(s.repo._pool._state['files']))\n"  # exits without close()
    )
    out = subprocess.run([sys.executable, "-c", code, str(repo_path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout) > 0  # it had spare files when it exited...
    assert list(pack_dir.glob("tmp_gitckpt_*")) == []  # ...and removed them
    fsck = subprocess.run(["git", "--git-dir", str(repo_path), "fsck", "--strict"], capture_output=True, text=True)
    assert fsck.returncode == 0, fsck.stderr


_LIST_EDITS = st.lists(
    st.one_of(
        st.tuples(st.just("append"), st.integers(1, 40)),
        st.tuples(st.just("replace"), st.integers(0, 10_000)),
        st.tuples(st.just("remove"), st.integers(0, 10_000)),
        st.tuples(st.just("truncate"), st.integers(1, 70)),
    ),
    min_size=1,
    max_size=12,
)


@given(start=st.integers(60, 140), edits=_LIST_EDITS)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_a_long_list_reads_back_as_put_whatever_changed(tmp_path_factory, start, edits):
    # a list long enough to be stored in chunks that re-use the unchanged ones: every version put, as
    # LangGraph's reducers make them (a new list, old items kept), must read back exactly, from the
    # saver that wrote it and from a fresh one
    path = tmp_path_factory.mktemp("lists") / "r.git"
    saver = GitSaver(path)
    counter = iter(range(10**6))
    value = [f"m{next(counter)}" for _ in range(start)]
    versions, parent, expected = {}, None, {}
    for op, arg in [("append", 0), *edits]:
        value = list(value)  # a new list each step, its items kept
        if op == "append":
            value += [f"m{next(counter)}" for _ in range(arg)]
        elif op == "replace" and value:
            value[arg % len(value)] = f"r{next(counter)}"
        elif op == "remove" and value:
            del value[arg % len(value)]
        elif op == "truncate":
            del value[-arg:]
        cp = empty_checkpoint()
        cp["id"] = str(uuid6(clock_seq=len(expected)))
        versions["items"] = saver.get_next_version(versions.get("items"), None)
        cp["channel_values"] = {"items": value}
        cp["channel_versions"] = dict(versions)
        config = {"configurable": {"thread_id": "t", "checkpoint_ns": "", **({"checkpoint_id": parent} if parent else {})}}
        saver.put(config, cp, {"source": "loop", "step": len(expected)}, {"items": versions["items"]})
        parent = cp["id"]
        expected[cp["id"]] = list(value)
    fresh = GitSaver(path)
    for reader in (saver, fresh):
        for cid, want in expected.items():
            tup = reader.get_tuple({"configurable": {"thread_id": "t", "checkpoint_ns": "", "checkpoint_id": cid}})
            assert tup.checkpoint["channel_values"].get("items", []) == want
    saver.close()
    fresh.close()


def _objects_under(repo_path, tree: str) -> set[str]:
    """``tree`` and every tree and blob below it, as plain git lists them."""
    out = git(repo_path, "ls-tree", "-r", "-t", tree).stdout.splitlines()
    return {tree} | {line.split()[2] for line in out}


def test_a_lookup_reads_the_objects_of_what_it_returns_and_nothing_else(repo_path):
    """Issue 5: lookups never scan a history. Once a saver has its index, a
    get_tuple by id reads that checkpoint's tree and its pending writes (each
    object once), and list(before, limit) only objects of the checkpoints it
    returns, wherever they sit in a long thread. Checked against plain git."""
    s = GitSaver(repo_path)
    config = {"configurable": {"thread_id": "long", "checkpoint_ns": ""}}
    versions: dict = {}
    ids = []
    for i in range(120):
        cp = empty_checkpoint()
        cp["id"] = str(uuid6(clock_seq=i))
        cp["channel_values"] = {"messages": [f"m{j}" for j in range(max(0, i - 3), i + 1)], "counter": i // 2}
        changed = ["messages"] + (["counter"] if i % 2 == 0 else [])
        new = {ch: s.get_next_version(versions.get(ch), None) for ch in changed}
        versions.update(new)
        cp["channel_versions"] = dict(versions)
        config = s.put(config, cp, {"source": "loop", "step": i}, new)
        s.put_writes(config, [("messages", f"w{i}")], f"task-{i}")
        ids.append(cp["id"])
    s.close()

    # what each checkpoint is made of, from plain git: its commit's tree, and its writes tree
    objects: dict[str, set[str]] = {}
    log = git(repo_path, "log", "--format=%T%x00%B%x01", "threads/long").stdout.split("\x01")
    for entry in filter(str.strip, log):
        tree, _, body = entry.strip().partition("\x00")
        trailers = dict(line.split(": ", 1) for line in body.splitlines() if ": " in line)
        if trailers.get("Gitckpt") == "checkpoint":
            objects.setdefault(trailers["Checkpoint-Id"], set()).update(_objects_under(repo_path, tree))
        elif trailers.get("Gitckpt") == "writes":
            objects.setdefault(trailers["Writes-For"], set()).update(_objects_under(repo_path, trailers["Writes-Tree"]))
    assert set(objects) == set(ids)

    def reads(call):
        """The objects a fresh saver reads for ``call``, once its index is built."""
        fresh = GitSaver(repo_path)
        fresh.get_tuple({"configurable": {"thread_id": "long"}})
        got: list[str] = []
        raw, lookup = fresh.repo._read_raw, fresh.repo._lookup
        fresh.repo._read_raw = lambda oid, *a: (got.append(str(oid)), raw(oid, *a))[1]
        fresh.repo._lookup = lambda oid, *a: (got.append(str(oid)), lookup(oid, *a))[1]
        result = call(fresh)
        fresh.close()
        return result, got

    cid = ids[30]
    tup, got = reads(lambda f: f.get_tuple({"configurable": {"thread_id": "long", "checkpoint_id": cid}}))
    assert tup.checkpoint["id"] == cid and tup.pending_writes == [("task-30", "messages", "w30")]
    assert sorted(got) == sorted(objects[cid])  # all of its objects, each once, and no other

    before = {"configurable": {"thread_id": "long", "checkpoint_id": ids[70]}}
    listed, got = reads(lambda f: list(f.list({"configurable": {"thread_id": "long"}}, before=before, limit=5)))
    assert [t.checkpoint["id"] for t in listed] == ids[65:70][::-1]
    assert len(got) == len(set(got)) and set(got) <= set().union(*(objects[c] for c in ids[65:70]))
