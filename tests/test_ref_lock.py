"""A ref update creates no file on its path (format.md, 19).

Its ``.pack``, ``.idx`` and the ref's ``<ref>.lock`` are files the pool made
beforehand; the lock is claimed with an exclusive rename
(``renameat2(RENAME_NOREPLACE)``), so git's lock protocol holds as before: a
lock someone else holds is respected, and a stale pool file is never left.
"""

from __future__ import annotations

import os
import stat
import subprocess
import time
from pathlib import Path

import pygit2
import pytest

from gitckpt import GitSaver
from gitckpt.git import files as files_mod
from gitckpt.git import locks as locks_mod
from gitckpt.git import repo as repo_mod
from gitckpt.git.repo import GitRepo
from gitckpt.git.repo import publish_all

needs_renameat2 = pytest.mark.skipif(files_mod.RENAMEAT2 is None, reason="no renameat2 here")


def commit(r: GitRepo, text: str, parents: list[pygit2.Oid]) -> pygit2.Oid:
    tree = r.tree({"f": (r.blob(text.encode()), repo_mod.BLOB)})
    return r.commit(tree, parents, text)


def pool_inodes(r: GitRepo, at_least: int) -> dict[int, str]:
    """Wait until the pool holds ``at_least`` files and no refill is under way; their inode numbers.

    (Not "until it is full": a background take after the refill, e.g. fsync mode's, leaves it one
    short without starting another refill.)"""
    st = r._pool._state
    for _ in range(2000):
        with st["cond"]:
            files = list(st["files"])
            if len(files) >= at_least and not st["refilling"]:
                return {os.fstat(fd).st_ino: path for fd, path in files}
        time.sleep(0.01)
    raise AssertionError(f"the pool was never refilled ({len(files)} files)")


def git(path: Path, *args: str) -> str:
    publish_all()  # plain git sees what is published (format.md 21)
    return subprocess.run(["git", "--git-dir", str(path), *args], check=True, capture_output=True,
                          text=True).stdout


@needs_renameat2
@pytest.mark.parametrize("durability", ["os", "fsync"])
def test_the_ref_pack_and_index_of_an_update_are_files_made_beforehand(tmp_path, durability):
    r = GitRepo(tmp_path / "r.git", durability=durability, auto_pack=False)
    name = "refs/heads/t"
    c1 = commit(r, "one", [])
    assert r.update_ref(name, None, c1)  # takes files, which starts a refill
    made = pool_inodes(r, 20)  # an update takes 3: 17 are left, more than the refill mark (16)
    c2 = commit(r, "two", [c1])
    assert r.update_ref(name, c1, c2)
    ref = Path(r.gitdir) / name
    # the ref file is one of the pool's files, claimed as refs/heads/t.lock and renamed over the ref
    assert ref.stat().st_ino in made
    assert stat.S_IMODE(ref.stat().st_mode) == 0o644
    assert ref.read_text() == f"{c2}\n"
    assert not Path(str(ref) + ".lock").exists()
    newest = max((Path(r.gitdir) / "objects" / "pack").glob("pack-*.idx"), key=lambda p: p.stat().st_mtime_ns)
    assert newest.stat().st_ino in made and newest.with_suffix(".pack").stat().st_ino in made
    assert git(tmp_path / "r.git", "rev-parse", name).strip() == str(c2)
    r.close()
    assert list((Path(r.gitdir) / "objects" / "pack").glob("tmp_gitckpt_*")) == []
    assert subprocess.run(["git", "--git-dir", str(tmp_path / "r.git"), "fsck", "--strict"],
                          capture_output=True).returncode == 0


@pytest.mark.parametrize("exclusive_rename", [True, False])
def test_a_lock_held_by_another_writer_is_respected(tmp_path, monkeypatch, exclusive_rename):
    if not exclusive_rename:  # a system or file system without renameat2: the lock is created in place
        monkeypatch.setattr(files_mod, "RENAMEAT2", None)
    elif files_mod.RENAMEAT2 is None:
        pytest.skip("no renameat2 here")
    r = GitRepo(tmp_path / "r.git", auto_pack=False)
    name = "refs/heads/t"
    c1 = commit(r, "one", [])
    assert r.update_ref(name, None, c1)
    pool_inodes(r, 3)
    lock = Path(r.gitdir) / (name + ".lock")
    lock.write_text("held by git\n")  # another writer (git itself) holds the ref
    c2 = commit(r, "two", [c1])
    assert r.update_ref(name, c1, c2) is False
    assert lock.read_text() == "held by git\n"  # neither replaced nor removed
    assert r.ref(name) == c1
    lock.unlink()
    assert r.update_ref(name, c1, c2)
    assert r.ref(name) == c2
    # a compare-and-swap on a value that moved fails and leaves no lock
    assert r.update_ref(name, c1, commit(r, "three", [c1])) is False
    assert not lock.exists() and r.ref(name) == c2
    r.close()
    assert list((Path(r.gitdir) / "objects" / "pack").glob("tmp_gitckpt_*")) == []


def test_a_first_ref_in_a_new_folder(tmp_path):
    """The lock's folder does not exist yet: it is made, then the lock claimed."""
    r = GitRepo(tmp_path / "r.git", auto_pack=False)
    c = commit(r, "one", [])
    assert r.update_ref("refs/heads/gitckpt/a/b/c", None, c)
    assert r.ref("refs/heads/gitckpt/a/b/c") == c
    r.close()


@needs_renameat2
def test_claim_is_exclusive(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.write_text("mine")
    dst.write_text("theirs")
    assert files_mod.claim(str(src), str(dst)) is False
    assert dst.read_text() == "theirs" and src.read_text() == "mine"
    dst.unlink()
    assert files_mod.claim(str(src), str(dst)) is True
    assert dst.read_text() == "mine" and not src.exists()
    with pytest.raises(FileNotFoundError):
        files_mod.claim(str(dst), str(tmp_path / "no" / "such" / "folder"))
    assert files_mod.claim(str(tmp_path / "gone"), str(tmp_path / "x")) is None  # no source: create instead


def test_a_saver_under_many_updates_leaves_nothing_behind(tmp_path):
    """Updates faster than the pool refills: every update lands, the pool's
    files are all used or deleted, git is happy."""
    s = GitSaver(str(tmp_path / "r.git"))
    from langgraph.checkpoint.base import empty_checkpoint

    cfg = {"configurable": {"thread_id": "t", "checkpoint_ns": ""}}
    for i in range(200):
        cp = empty_checkpoint()
        cp["channel_values"] = {"x": i}
        cp["channel_versions"] = {"x": i + 1}
        cfg = s.put(cfg, cp, {"step": i}, {"x": i + 1})
        s.put_writes(cfg, [("x", i)], f"task-{i}")
    s.close()
    s = GitSaver(str(tmp_path / "r.git"))
    got = list(s.list({"configurable": {"thread_id": "t"}}))
    assert [t.metadata["step"] for t in got] == list(range(199, -1, -1))
    assert all(t.pending_writes == [(f"task-{t.metadata['step']}", "x", t.metadata["step"])] for t in got)
    s.close()
    assert list((tmp_path / "r.git" / "objects" / "pack").glob("tmp_gitckpt_*")) == []
    assert not list((tmp_path / "r.git" / "refs").rglob("*.lock"))
    assert subprocess.run(["git", "--git-dir", str(tmp_path / "r.git"), "fsck", "--strict"],
                          capture_output=True).returncode == 0


@needs_renameat2
def test_a_claimed_lock_is_flocked_and_judged_by_its_flock_not_its_age(tmp_path):
    """Another process tells a live lock from a dead one by its flock first
    (format.md 17.2): a pooled file, made a while ago, is flocked before it
    becomes the lock, so its age never makes it look stale while it is held;
    once nobody holds it (a writer killed between claim and rename), the old
    file is a dead lock and is taken over at once."""
    import fcntl

    r = GitRepo(tmp_path / "r.git", auto_pack=False)
    c1 = commit(r, "one", [])
    assert r.update_ref("refs/heads/t", None, c1)
    made = pool_inodes(r, 3)
    time.sleep(1.1)  # the pool's files are now older than a second
    lock = os.path.join(r.gitdir, "refs/heads/t.lock")
    fd = locks_mod.take_ref_lock(lock, "refs/heads/t", r._pool)
    closed = False
    try:
        assert fd >= 0 and os.stat(lock).st_ino in made
        assert os.stat(lock).st_mode & 0o777 == 0o644  # a ref file's mode, as git's
        other = os.open(lock, os.O_RDONLY)
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(other)
        old = time.time() - 3600  # however old it looks, it is held
        os.utime(lock, (old, old))
        assert locks_mod._clear_stale_lock(lock) is False  # live: left alone
        assert locks_mod.take_ref_lock(lock, "refs/heads/t", r._pool) == -1  # exclusive
        os.close(fd)  # its holder is gone (as after kill -9): an old, unheld lock is dead
        closed = True
        assert locks_mod._clear_stale_lock(lock) is True
        assert not os.path.exists(lock)
    finally:
        if not closed:
            os.close(fd)
        if os.path.exists(lock):
            os.unlink(lock)
    assert r.update_ref("refs/heads/t", c1, commit(r, "two", [c1]))
    packs_dir = Path(r.gitdir) / "objects" / "pack"
    assert all(p.stat().st_mode & 0o777 == 0o444 for p in packs_dir.glob("pack-*"))  # read-only, as git's
    r.close()
    assert list(packs_dir.glob("tmp_gitckpt_*")) == []


def test_pool_files_deleted_by_git_prune_are_replaced(tmp_path):
    """`git prune` deletes tmp_ files older than its expiry, the pool's among them:
    the next updates write their packs and locks all the same."""
    s = GitSaver(str(tmp_path / "r.git"), auto_pack=False)
    from langgraph.checkpoint.base import empty_checkpoint

    cfg = {"configurable": {"thread_id": "t", "checkpoint_ns": ""}}

    def step(i: int) -> None:
        nonlocal cfg
        cp = empty_checkpoint()
        cp["channel_values"] = {"x": i}
        cp["channel_versions"] = {"x": i + 1}
        cfg = s.put(cfg, cp, {"step": i}, {"x": i + 1})

    step(0)
    pool_inodes(s.repo, 20)
    pack_dir = tmp_path / "r.git" / "objects" / "pack"
    assert list(pack_dir.glob("tmp_gitckpt_*"))
    git(tmp_path / "r.git", "prune", "--expire=now")
    assert list(pack_dir.glob("tmp_gitckpt_*")) == []  # git removed the pool's files
    for i in range(1, 6):
        step(i)
    assert s.get_tuple({"configurable": {"thread_id": "t"}}).checkpoint["channel_values"] == {"x": 5}
    s.close()
    assert list(pack_dir.glob("tmp_gitckpt_*")) == []
    assert subprocess.run(["git", "--git-dir", str(tmp_path / "r.git"), "fsck", "--strict"],
                          capture_output=True).returncode == 0
