"""The one module that talks to pygit2.

Everything above this layer speaks in object ids, trees as ``{name: (oid,
mode)}`` and refs updated by compare-and-swap; everything git-specific
(opening and validating the repository, its config, durability, background
packing) lives here.
"""

from __future__ import annotations

import bisect
import ctypes
import ctypes.util
import errno
import fcntl
import logging
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

import pygit2
from cachetools import LRUCache
from pygit2.enums import FileMode, SortMode

from ..errors import (
    ConflictError,
    CorruptObjectError,
    GitckptError,
    RefLockError,
    RemoteError,
    RepositoryError,
    StorageError,
)
from . import journal as _journal
from . import packs

_log = logging.getLogger(__name__)

#: An object id. Other layers name it from here, so that only the git engine imports pygit2.
Oid = pygit2.Oid
#: A commit as libgit2 reads it, and the error libgit2 raises.
Commit = pygit2.Commit
GitError = pygit2.GitError

BLOB = int(FileMode.BLOB)
TREE = int(FileMode.TREE)

DURABILITY_MODES = ("os", "fsync")

#: An object this process wrote is not written again for this long (seconds)
#: when a new checkpoint contains it again; after that it is, so that its pack
#: is younger than gc's expiry (gc.pruneExpire, at least an hour; format.md 17.4).
FRESH_FOR = 3600.0

#: Small packs this process writes (one per ref update) before it starts a
#: background ``git repack --geometric`` that merges them.
PACK_EVERY = 64
#: Packs written between two tries to start a repack while one is running.
PACK_RETRY = 4

_SIG_NAME = "gitckpt"
_SIG_EMAIL = "gitckpt@localhost"

ATTRIBUTES = "* diff=gitckpt\n"


def _libc_syncfs():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        fn = libc.syncfs
        fn.argtypes = [ctypes.c_int]
        return fn
    except (OSError, AttributeError):
        return None


_SYNCFS = _libc_syncfs()


def _libc_renameat2():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        fn = libc.renameat2
        fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
        return fn
    except (OSError, AttributeError):
        return None


_RENAMEAT2 = _libc_renameat2()
_AT_FDCWD = -100
_RENAME_NOREPLACE = 1


def _claim(src: str, dst: str) -> bool | None:
    """Rename ``src`` to ``dst`` only if ``dst`` does not exist (one atomic step,
    ``renameat2(RENAME_NOREPLACE)``): an exclusive create of ``dst`` whose file
    was made beforehand. True if claimed, False if ``dst`` exists, None if this
    system or file system cannot do it (the caller creates ``dst`` itself).
    Raises FileNotFoundError when ``dst``'s folder is missing."""
    if _RENAMEAT2 is None:
        return None
    if _RENAMEAT2(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), _RENAME_NOREPLACE) == 0:
        return True
    err = ctypes.get_errno()
    if err == errno.EEXIST:
        return False
    if err == errno.ENOENT and os.path.exists(src):
        raise FileNotFoundError(err, os.strerror(err), dst)
    return None  # EINVAL/ENOSYS (not supported here), EXDEV (objects/ elsewhere), ...


class _Closer:
    """Closes file descriptors, and runs small file-system chores, on a background thread.

    Renaming a new ref file over the old one frees the old file's inode, and on
    ext4 that is the slowest step of an update (115-190 µs measured, against
    ~5 µs for the rename itself; with the ``discard`` mount option more). An
    update keeps the old ref file open across its rename, so the inode is only
    freed when that descriptor is closed: here, after the update has returned.
    The same thread creates the empty files of :class:`_FilePool`.
    """

    def __init__(self, name: str = "gitckpt-closer") -> None:
        self.name = name
        self._items: list = []
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._waiting = False

    def close_later(self, fd: int) -> None:
        self._submit(fd)

    def call_soon(self, fn) -> None:
        self._submit(fn)

    def _submit(self, item) -> None:
        with self._cond:
            self._items.append(item)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                self._thread.start()
            elif self._waiting:  # a busy thread takes the item when it looks again: no wake-up
                self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._items:
                    self._waiting = True
                    try:
                        woken = self._cond.wait(timeout=5.0)
                    finally:
                        self._waiting = False
                    if not woken and not self._items:
                        self._thread = None
                        return
                items, self._items = self._items, []
            for item in items:
                if isinstance(item, int):
                    _close_all([item])
                else:
                    try:
                        item()
                    except Exception:  # a chore that fails is only not done
                        pass

    def after_fork_in_child(self) -> None:
        items = self._items  # the parent's thread does not exist here: close them now
        _Closer.__init__(self, self.name)
        _close_all([i for i in items if isinstance(i, int)])


def _close_all(fds: list[int]) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


_closer = _Closer()
#: The file pool's own thread: closing replaced ref files (freeing their inodes)
#: took 1.7 ms an update on average on a loaded machine with ``discard``, and a
#: refill queued behind those closes left the pool empty (format.md, 22).
_filler = _Closer("gitckpt-filler")
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_closer.after_fork_in_child)
    os.register_at_fork(after_in_child=_filler.after_fork_in_child)


class _FilePool:
    """Empty files in the pack directory, created ahead of time off the update's path.

    Creating a file was measured at 40-45 µs on the benchmark machine while
    other files were being written, and up to several hundred when the file
    system was committing its journal; writing to a file created beforehand and
    renaming it took 14 µs. So every update's ``.pack`` and ``.idx`` are written
    into files this pool created on the background thread, open and empty, and
    renamed to their names. They are named ``tmp_gitckpt_*`` (a crash leaves
    empty files that ``git gc`` removes, as it does its own ``tmp_`` files) and
    deleted on ``close()`` or at exit.

    An update takes three: its ``.pack``, its ``.idx`` and its ref's lock file
    (claimed with ``renameat2(RENAME_NOREPLACE)``, :func:`_claim`), so that no
    file is created on the update's path (format.md, 22). The pool is refilled
    when a third of it is used, so a burst of updates finds files ready.
    """

    def __init__(self, directory: str, size: int = 24) -> None:
        self.dir = directory
        self.size = size
        # everything the finalizer needs, and nothing that refers back to self
        self._state: dict[str, Any] = {"files": [], "pid": os.getpid(), "closed": False, "refilling": False,
                                       "cond": threading.Condition()}
        self._finalizer = weakref.finalize(self, _FilePool._discard, self._state)

    def take(self) -> tuple[int, str] | None:
        """An open, empty file ``(fd, path)`` of this process, or None (the caller creates one)."""
        st = self._state
        with st["cond"]:
            if st["pid"] != os.getpid():  # inherited across fork(): the parent's files
                st["files"], st["pid"], st["refilling"] = [], os.getpid(), False
            got = st["files"].pop() if st["files"] else None
            refill = not st["refilling"] and not st["closed"] and len(st["files"]) <= self.size * 2 // 3
            if refill:
                st["refilling"] = True
        if refill:
            _filler.call_soon(self._refill)
        return got

    def _refill(self) -> None:
        st = self._state
        made: list[tuple[int, str]] = []
        try:
            for _ in range(max(0, self.size - len(st["files"]))):
                path = os.path.join(self.dir, f"tmp_gitckpt_{os.getpid()}_{os.urandom(6).hex()}")
                made.append((os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444), path))
        except OSError:
            pass
        finally:
            with st["cond"]:
                if not st["closed"] and st["pid"] == os.getpid():
                    st["files"].extend(made)
                else:  # deleted before close() (or exit) is told the refill is over
                    _unlink_files(made)
                st["refilling"] = False
                st["cond"].notify_all()

    def close(self) -> None:
        self._finalizer()

    def prune(self) -> None:
        """Forget the files someone deleted (``git gc`` removes ``tmp_`` files
        older than its expiry, and the pool may hold files that long)."""
        st = self._state
        with st["cond"]:
            gone = [f for f in st["files"] if not os.path.exists(f[1])]
            st["files"] = [f for f in st["files"] if f not in gone]
        _close_all([fd for fd, _ in gone])

    @staticmethod
    def _discard(state: dict) -> None:
        """Delete the unused files (on close(), or at exit), after any refill under way."""
        if state["pid"] != os.getpid():
            return
        with state["cond"]:
            state["closed"] = True
            state["cond"].wait_for(lambda: not state["refilling"], timeout=10)
            files, state["files"] = state["files"], []
        _unlink_files(files)


def _unlink_files(files: list[tuple[int, str]]) -> None:
    for fd, path in files:
        _close_all([fd])
        try:
            os.unlink(path)
        except OSError:
            pass


def open_repository(path: str | os.PathLike, *, create: bool = True) -> pygit2.Repository:
    """Open the bare repository at ``path``, creating it if allowed and absent.

    Raises :class:`RepositoryError` naming the path and what is wrong with it.
    """
    p = Path(path).expanduser()
    if p.exists() and not p.is_dir():
        raise RepositoryError(f"{p} is a file, not a git repository; pass a directory path")
    if p.is_dir() and not os.access(p, os.R_OK | os.X_OK):
        raise RepositoryError(f"{p} is not readable (permission denied)")
    if p.is_dir() and (p / ".git").exists():
        raise RepositoryError(
            f"{p} is a non-bare git repository (it has a .git folder); "
            "gitckpt needs a bare repository: give a new path, e.g. agent.git"
        )
    is_repo = p.is_dir() and (p / "HEAD").is_file() and (p / "objects").is_dir()
    if not is_repo:
        if p.is_dir() and any(p.iterdir()):
            raise RepositoryError(f"{p} is a non-empty directory that is not a git repository")
        if not create:
            raise RepositoryError(f"{p} is not a gitckpt repository (run `gitckpt init` to create one)")
        try:
            repo = pygit2.init_repository(str(p), bare=True)
        except (pygit2.GitError, OSError) as exc:
            raise RepositoryError(f"cannot create a repository at {p}: {exc}") from exc
    else:
        try:
            repo = pygit2.Repository(str(p))
        except (pygit2.GitError, OSError) as exc:
            raise RepositoryError(f"{p} is not a usable git repository: {exc}") from exc
    if not repo.is_bare:
        raise RepositoryError(f"{p} is a non-bare git repository; gitckpt needs a bare repository")
    _configure(repo)
    return repo


def _configure(repo: pygit2.Repository) -> None:
    """Register the textconv diff driver so ``git log -p`` shows decoded values."""
    package_parent = str(Path(__file__).resolve().parent.parent)
    command = (
        f'"{sys.executable}" -c "import sys; sys.path.insert(0, {package_parent!r}); '
        f'from gitckpt.textconv import main; sys.exit(main())"'
    )
    try:
        cfg = repo.config
        if cfg["diff.gitckpt.textconv"] != command:
            cfg["diff.gitckpt.textconv"] = command
    except KeyError:
        try:
            cfg["diff.gitckpt.textconv"] = command
        except pygit2.GitError:  # read-only repository: reading still works
            return
    except pygit2.GitError:
        return
    attributes = Path(repo.path) / "info" / "attributes"
    try:
        if not attributes.exists() or "diff=gitckpt" not in attributes.read_text():
            attributes.parent.mkdir(parents=True, exist_ok=True)
            with attributes.open("a") as fh:
                fh.write(ATTRIBUTES)
    except OSError:
        pass


def prune_expire(repo: pygit2.Repository, default: str) -> str:
    """The repository's ``gc.pruneExpire`` (git's setting), else ``default``."""
    try:
        value = repo.config["gc.pruneExpire"]
    except (KeyError, pygit2.GitError):
        return default
    return str(value) or default


_KIND_NAMES = {packs.OBJ_BLOB: "blob", packs.OBJ_TREE: "tree", packs.OBJ_COMMIT: "commit"}


class CommitInfo(NamedTuple):
    id: pygit2.Oid
    tree_id: pygit2.Oid
    parent_ids: list[pygit2.Oid]
    message: str
    commit_time: int


def _keep(cache: LRUCache, key, value) -> None:
    """Put ``value`` in a bounded cache unless it is there or weighs over a quarter of it."""
    if key not in cache and cache.getsizeof(value) <= cache.maxsize // 4:
        cache[key] = value


class GitRepo:
    """A bare repository with the operations gitckpt needs, safe across threads.

    Writes are append-only: objects are content-addressed and refs move only by
    compare-and-swap. One re-entrant lock serialises use of the underlying
    ``pygit2.Repository`` inside a process; other processes are handled by the
    ref compare-and-swap.
    """

    def __init__(self, path: str | os.PathLike, *, create: bool = True, durability: str = "os",
                 auto_pack: bool = True) -> None:
        if durability not in DURABILITY_MODES:
            raise ValueError(f"durability must be one of {DURABILITY_MODES}, not {durability!r}")
        self.path = Path(path).expanduser()
        self.repo = open_repository(self.path, create=create)
        self._odb = self.repo.odb
        self.durability = durability
        self.lock = threading.RLock()
        self.sig = pygit2.Signature(_SIG_NAME, _SIG_EMAIL)
        self._maint = Maintenance(self.path) if auto_pack else None
        self._pool = _FilePool(os.path.join(self.repo.path, "objects", "pack"))
        self._packed_cache: tuple | None = None
        self.gitdir = self.repo.path
        # bounded caches, least recently used dropped first (cachetools; format.md 15)
        self._small: LRUCache[bytes, pygit2.Oid] = LRUCache(4096)
        self._written: set[bytes] = set()  # raw ids this process wrote since _written_at
        self._written_at = time.monotonic()
        self._staged: dict[bytes, tuple[int, bytes]] = {}
        self._blob_cache: LRUCache[pygit2.Oid, bytes] = LRUCache(64 << 20, getsizeof=len)
        self._tree_cache: LRUCache[pygit2.Oid, dict] = LRUCache(65536)
        self._commit_cache: LRUCache[pygit2.Oid, CommitInfo] = LRUCache(65536)
        # fsync mode: updates are made durable by a journal (journal.py); packs
        # written since the last journal record or barrier wait here to go in it.
        self._journal = _journal.Journal(self.gitdir, self._syncfs) if durability == "fsync" else None
        self._unjournaled: list[_journal.PackFiles] = []
        #: A replay that could not finish (disk full, read-only): reading works, writing waits for it.
        self.recovery_error: StorageError | None = None
        self.recovered = self._recover()

    # -- objects --------------------------------------------------------------
    #
    # Objects are staged in memory and written, all those of one update, as a
    # single small pack just before the ref update that names them (packs.py says
    # why). Everything read is cached by object id: objects never change, so the
    # caches never need invalidating.

    def _stage(self, kind: int, data: bytes) -> pygit2.Oid:
        raw = packs.object_id(kind, data)
        oid = pygit2.Oid(raw=raw)
        self._refresh_written()
        # Written by this process within FRESH_FOR: its pack is younger than any
        # gc expiry, so it cannot have been pruned. Anything else is written
        # again, even if it is in the repository or was read: it may be
        # unreachable and about to expire (git "freshens" such objects; format.md 17.4).
        if raw not in self._written and raw not in self._staged:
            self._staged[raw] = (kind, data)
        return oid

    def _refresh_written(self) -> None:
        now = time.monotonic()
        if now - self._written_at > FRESH_FOR or len(self._written) > 1 << 18:
            self._written.clear()
            self._small.clear()
            self._written_at = now

    def flush(self) -> None:
        """Write every staged object (as one pack); a no-op when none is staged."""
        if not self._staged:
            return
        objects = [(kind, data, raw) for raw, (kind, data) in self._staged.items()]
        pack_dir = os.path.join(self.gitdir, "objects", "pack")
        for attempt in range(20):
            try:
                written = packs.write_pack(pack_dir, objects, files=self._pool.take)  # durable before a ref names them
                if self._journal is not None:
                    self._unjournaled.append(written)
                break
            except FileNotFoundError:
                if attempt == 19:
                    raise
                os.makedirs(pack_dir, exist_ok=True)
                self._pool.prune()  # `git gc` deletes old tmp_ files: the pool's too
            except OSError as exc:  # the objects stay staged: a later flush writes them
                raise storage_error(self.path, f"writing {len(objects)} new object(s)", exc) from exc
        self._written.update(self._staged)
        self._staged.clear()
        if self._maint:
            self._maint.wrote(1)

    def blob(self, data: bytes) -> pygit2.Oid:
        small = len(data) <= 256
        if small:  # small values (a None, a branch marker) repeat at every step
            self._refresh_written()
            oid = self._small.get(data)
            if oid is not None:
                return oid
        oid = self._stage(packs.OBJ_BLOB, data)
        _keep(self._blob_cache, oid, data)
        if small:
            self._small[data] = oid
        return oid

    def tree(self, entries: dict[str, tuple[pygit2.Oid, int]]) -> pygit2.Oid:
        data = packs.tree_bytes({name: (oid.raw, mode) for name, (oid, mode) in entries.items()})
        oid = self._stage(packs.OBJ_TREE, data)
        _keep(self._tree_cache, oid, dict(entries))
        return oid

    def commit(self, tree: pygit2.Oid, parents: list[pygit2.Oid], message: str) -> pygit2.Oid:
        when = int(time.time())
        ident = f"{_SIG_NAME} <{_SIG_EMAIL}> {when} +0000"
        lines = [f"tree {tree}"] + [f"parent {p}" for p in parents] + [f"author {ident}", f"committer {ident}", "", ""]
        data = "\n".join(lines).encode() + message.encode("utf-8")
        oid = self._stage(packs.OBJ_COMMIT, data)
        _keep(self._commit_cache, oid, CommitInfo(oid, tree, list(parents), message, when))
        return oid

    def _lookup(self, oid: pygit2.Oid, what: str):
        if oid.raw in self._staged:
            self.flush()
        try:
            return self.repo[oid]
        except (KeyError, ValueError, pygit2.GitError) as exc:
            raise CorruptObjectError(f"{what}: git object {oid} is missing or unreadable ({exc})") from exc

    def get(self, oid: pygit2.Oid, what: str = "object"):
        """The pygit2 object (flushing staged objects first if needed)."""
        return self._lookup(oid, what)

    def has(self, oid: pygit2.Oid) -> bool:
        return oid.raw in self._staged or oid in self.repo

    def descendant_of(self, tip: pygit2.Oid, oid: pygit2.Oid) -> bool:
        """``oid`` is a strict ancestor of ``tip``."""
        if tip.raw in self._staged or oid.raw in self._staged:
            self.flush()
        return self.repo.descendant_of(tip, oid)

    def merge_base(self, a: pygit2.Oid, b: pygit2.Oid) -> pygit2.Oid | None:
        return self.repo.merge_base(a, b)

    def walk_new(self, tip: pygit2.Oid, known: pygit2.Oid) -> Iterator[pygit2.Commit]:
        """The commits reachable from ``tip`` and not from ``known``, oldest first."""
        walker = self.repo.walk(tip, SortMode.TOPOLOGICAL | SortMode.REVERSE)
        walker.hide(known)
        return iter(walker)

    def walk_new_many(self, tips: Iterable[pygit2.Oid], known: Iterable[pygit2.Oid]) -> Iterator[pygit2.Commit]:
        """The commits reachable from one of ``tips`` and from none of ``known``
        (those this repository has), oldest first."""
        walker = self.repo.walk(None, SortMode.TOPOLOGICAL | SortMode.REVERSE)
        pushed = False
        for t in tips:
            walker.push(t)
            pushed = True
        if not pushed:
            return iter(())
        for k in known:
            if self.has(k):
                walker.hide(k)
        return iter(walker)

    def config_values(self, key: str) -> list[str]:
        """Every value of a (multi-valued) config key; [] when unset."""
        try:
            return [v for v in self.repo.config.get_multivar(key) if v is not None]
        except (KeyError, pygit2.GitError):
            return []

    def config_add(self, key: str, value: str) -> None:
        """Add one value to a multi-valued config key (``git config --add``)."""
        self.repo.config.set_multivar(key, "^$", value)  # "^$" replaces no existing value: adds one

    def config_remove(self, key: str, value: str) -> None:
        """Remove every value of ``key`` equal to ``value``."""
        self.repo.config.delete_multivar(key, "^" + re.escape(value) + "$")

    def add_remote(self, name: str, url: str) -> None:
        """``git remote add name url``; a :class:`RemoteError` if it cannot be added."""
        try:
            self.repo.remotes.create(name, url)
        except (ValueError, pygit2.GitError) as exc:
            raise RemoteError(f"cannot add remote {name!r} = {url!r} to {self.path}: {exc}") from exc

    def delete_refs_under(self, prefix: str) -> None:
        """Delete every ref whose name starts with ``prefix`` (a folder, ending in
        ``/``; best effort, by :meth:`delete_ref` and its stale-lock rule)."""
        for name, oid in self.refs(prefix).items():
            try:
                self.delete_ref(name, oid)
            except (GitckptError, OSError):
                pass

    def commit_info(self, oid: pygit2.Oid, what: str = "commit") -> CommitInfo:
        info = self._commit_cache.get(oid)
        if info is None:
            c = self._lookup(oid, what)
            if not isinstance(c, pygit2.Commit):
                raise CorruptObjectError(f"{what}: git object {oid} is not a commit")
            info = CommitInfo(oid, c.tree_id, list(c.parent_ids), c.message, c.commit_time)
            _keep(self._commit_cache, oid, info)
        return info

    def _read_raw(self, oid: pygit2.Oid, kind: int, what: str) -> bytes:
        """An object's content, read from the object database without building a pygit2 object."""
        if oid.raw in self._staged:
            self.flush()
        try:
            got, data = self._odb.read(oid)
        except (KeyError, ValueError, pygit2.GitError) as exc:
            raise CorruptObjectError(f"{what}: git object {oid} is missing or unreadable ({exc})") from exc
        if got != kind:
            raise CorruptObjectError(f"{what}: git object {oid} is not a {_KIND_NAMES.get(kind, kind)}")
        return data

    def read_blob(self, oid: pygit2.Oid, what: str = "blob") -> bytes:
        data = self._blob_cache.get(oid)
        if data is None:
            data = self._read_raw(oid, packs.OBJ_BLOB, what)
            _keep(self._blob_cache, oid, data)
        return data

    def tree_entries(self, oid: pygit2.Oid, what: str = "tree") -> dict[str, tuple[pygit2.Oid, int]]:
        """A tree as ``{name: (oid, filemode)}`` (a fresh dict: callers may change it)."""
        entries = self._tree_cache.get(oid)
        if entries is None:
            data = self._read_raw(oid, packs.OBJ_TREE, what)
            try:
                entries = {name: (pygit2.Oid(raw=raw), mode) for name, (raw, mode) in packs.parse_tree(data).items()}
            except ValueError as exc:
                raise CorruptObjectError(f"{what}: git object {oid} is not a valid tree ({exc})") from exc
            _keep(self._tree_cache, oid, entries)
        return dict(entries)

    # -- refs -----------------------------------------------------------------

    def ref(self, name: str) -> pygit2.Oid | None:
        """The object a ref points at (loose ref first, then packed-refs), or None."""
        path = os.path.join(self.gitdir, name)
        try:
            fd = os.open(path, os.O_RDONLY)
        except (FileNotFoundError, NotADirectoryError):
            return self._packed_refs()[0].get(name)
        try:
            text = os.read(fd, 128).strip()
        except IsADirectoryError:
            return None
        finally:
            os.close(fd)
        if text.startswith(b"ref: "):  # symbolic: let libgit2 resolve it
            try:
                target = self.repo.references[name].resolve().target
            except (KeyError, pygit2.GitError):
                return None
            return target if isinstance(target, pygit2.Oid) else None
        try:
            return pygit2.Oid(hex=text.decode())
        except (ValueError, UnicodeDecodeError):
            return None

    def refs(self, *prefixes: str, names: Iterable[str] = ()) -> dict[str, pygit2.Oid]:
        """Every ref whose name starts with one of ``prefixes`` (directories, ending
        in ``/``), and the refs ``names`` that exist.

        Reads the loose refs of those directories (``names`` as :meth:`ref` does),
        then packed-refs (one ``stat``, parsed again only when it changed; a
        prefix is a bisection of its sorted names), so the cost is the number of
        refs asked for, not the number in the repository. Loose refs are read first: ``git pack-refs`` writes
        packed-refs before it deletes the loose files, so a ref is never missed
        while it moves from one to the other.
        """
        out: dict[str, pygit2.Oid] = {}
        for prefix in prefixes:
            stack = [(os.path.join(self.gitdir, prefix), prefix)]
            while stack:
                folder, name_prefix = stack.pop()
                try:
                    entries = list(os.scandir(folder))
                except (FileNotFoundError, NotADirectoryError):
                    continue
                for entry in entries:
                    if entry.is_dir(follow_symlinks=False):
                        stack.append((entry.path, name_prefix + entry.name + "/"))
                    elif not entry.name.endswith(".lock"):
                        oid = self._read_ref_file(entry.path)
                        if oid is not None:
                            out[name_prefix + entry.name] = oid
        for name in names:
            oid = self.ref(name)
            if oid is not None:
                out[name] = oid
        packed, sorted_names = self._packed_refs()
        for prefix in prefixes:
            i = bisect.bisect_left(sorted_names, prefix)
            while i < len(sorted_names) and sorted_names[i].startswith(prefix):
                out.setdefault(sorted_names[i], packed[sorted_names[i]])
                i += 1
        return out

    @staticmethod
    def _read_ref_file(path: str) -> pygit2.Oid | None:
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            return None  # being renamed or deleted right now
        try:
            text = os.read(fd, 128).strip()
        except OSError:
            return None  # gone or unreadable while being replaced
        finally:
            os.close(fd)
        try:
            return pygit2.Oid(hex=text.decode())
        except (ValueError, UnicodeDecodeError):
            return None

    def _packed_refs(self) -> tuple[dict[str, pygit2.Oid], list[str]]:
        """packed-refs as ``({name: oid}, sorted names)``, re-read only when the file changed."""
        path = os.path.join(self.gitdir, "packed-refs")
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return {}, []
        key = (st.st_mtime_ns, st.st_size, st.st_ino)
        if self._packed_cache is not None and self._packed_cache[0] == key:
            return self._packed_cache[1]
        refs: dict[str, pygit2.Oid] = {}
        with open(path, encoding="utf-8") as fh:
            lines = fh.read().splitlines()
        for line in lines:
            if not line or line[0] in "#^":
                continue
            sha, _, name = line.partition(" ")
            refs[name] = pygit2.Oid(hex=sha)
        self._packed_cache = (key, (refs, sorted(refs)))
        return self._packed_cache[1]

    def update_ref(self, name: str, old: pygit2.Oid | None, new: pygit2.Oid, *, journal: bool = True) -> bool:
        """Compare-and-swap: point ``name`` at ``new`` if it still points at ``old``.

        ``old=None`` means the ref must not exist yet. Returns False when another
        writer got there first; the caller re-reads and retries. This is git's
        own protocol (``<ref>.lock`` created exclusively, checked, renamed over
        the ref), so git, libgit2 and other gitckpt processes all respect it.

        In ``fsync`` mode the update (its new packs and this ref move) is
        appended to the journal and flushed, with the lock held, before the
        rename publishes it; an update the journal refuses as too large (or
        ``journal=False``) takes a ``syncfs`` before the rename and one after.
        """
        if journal:
            self._check_recovered()
        path = os.path.join(self.gitdir, name)
        lock = path + ".lock"
        self.flush()
        jr = self._journal if journal else None
        journaled = False
        try:
            fd = _take_ref_lock(lock, name, self._pool)
        except OSError as exc:
            raise storage_error(self.path, f"updating ref {name}", exc) from exc
        if fd < 0:
            return False
        done = False
        held = -1
        try:
            if old is not None:
                try:  # see _Closer: the old file's inode is freed after we return
                    held = os.open(path, os.O_RDONLY)
                except OSError:  # packed, or not there: nothing to free
                    pass
            if self.ref(name) != old:
                return False
            content = str(new).encode() + b"\n"
            try:
                # Blocks allocated now are not "delayed": ext4 then has nothing to
                # force out when the rename replaces the ref (auto_da_alloc), which
                # measured as the slowest step of an update.
                os.posix_fallocate(fd, 0, len(content))
            except (OSError, AttributeError):  # not supported here, or no posix_fallocate (macOS)
                pass
            packs.write_all(fd, content)
            with self.lock:  # a checkpoint of the journal must not overtake this rename
                if jr is not None:  # False: too large for the journal
                    journaled = jr.append(self._unjournaled, [(name, None if old is None else str(old), str(new))])
                if not journaled:
                    self.barrier()  # objects are durable before a ref names them
                self._unjournaled.clear()
                os.rename(lock, path)
            done = True
        except OSError as exc:
            raise storage_error(self.path, f"updating ref {name}", exc) from exc
        finally:
            os.close(fd)  # drops the flock, after the rename (format.md 17.2)
            if not done:
                try:
                    os.unlink(lock)
                except OSError:
                    pass
            if held >= 0:
                _closer.close_later(held)
        if not journaled:
            try:
                self.barrier()  # the ref's new value and its rename are durable
            except OSError as exc:
                raise storage_error(self.path, f"making ref {name} durable", exc) from exc
        return True

    def delete_ref(self, name: str, old: pygit2.Oid | None = None) -> bool:
        """Compare-and-swap deletion: remove ``name`` if it still points at ``old``
        (any value when ``old`` is None). False when it does not exist, moved,
        or its lock is held (the caller re-reads and retries).

        git's protocol, as :meth:`update_ref`: ``<ref>.lock`` is taken (and
        flocked), the ref is removed from packed-refs (under
        ``packed-refs.lock``) and then its loose file, so that a reader never
        sees an older packed value once the loose one is gone.
        """
        self._check_recovered()
        path = os.path.join(self.gitdir, name)
        lock = path + ".lock"
        try:
            fd = _take_ref_lock(lock, name)
        except OSError as exc:
            raise storage_error(self.path, f"deleting ref {name}", exc) from exc
        if fd < 0:
            return False
        try:
            cur = self.ref(name)
            if cur is None or (old is not None and cur != old):
                return False
            if name in self._packed_refs()[0] and not self._unpack_ref(name):
                return False
            try:
                os.unlink(path)
            except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
                pass
        except OSError as exc:
            raise storage_error(self.path, f"deleting ref {name}", exc) from exc
        finally:
            os.close(fd)
            try:
                os.unlink(lock)
            except OSError:
                pass
        try:
            self.barrier()
        except OSError as exc:
            raise storage_error(self.path, f"making the deletion of ref {name} durable", exc) from exc
        self._packed_cache = None
        return True

    def _unpack_ref(self, name: str) -> bool:
        """Rewrite packed-refs without ``name`` (hold ``name``'s lock); False if
        ``packed-refs.lock`` is held by a live writer."""
        packed = os.path.join(self.gitdir, "packed-refs")
        lock = packed + ".lock"
        fd = _take_ref_lock(lock, "packed-refs")
        if fd < 0:
            return False
        done = False
        try:
            with open(packed, "rb") as fh:
                lines = fh.read().splitlines(keepends=True)
            out, skip = [], False
            target = (" " + name).encode()
            for line in lines:
                if skip and line.startswith(b"^"):  # the peeled value of the removed tag
                    continue
                skip = line.rstrip(b"\n").endswith(target) and not line.startswith((b"#", b"^"))
                if not skip:
                    out.append(line)
            packs.write_all(fd, b"".join(out))
            if self.durability == "fsync":
                os.fsync(fd)
            os.rename(lock, packed)
            done = True
            return True
        finally:
            os.close(fd)
            if not done:
                try:
                    os.unlink(lock)
                except OSError:
                    pass

    def barrier(self) -> None:
        """In ``fsync`` mode, wait until everything written so far is on disk.

        One ``syncfs`` (Linux) flushes the pack, its index and their directory
        entries at once, where per-file fsyncs would need four. Updates use the
        journal instead (update_ref); a deletion takes one barrier.
        Elsewhere it falls back to ``os.sync()``.
        """
        if self.durability != "fsync":
            return
        self._syncfs()

    def _syncfs(self) -> None:
        if _SYNCFS is not None:
            fd = os.open(str(self.path), os.O_RDONLY)
            try:
                if _SYNCFS(fd) == 0:
                    return
            finally:
                os.close(fd)
        os.sync()

    # -- maintenance ----------------------------------------------------------

    def close(self) -> None:
        self._pool.close()
        if self._maint:
            self._maint.close()
        if self._journal is not None:
            with self.lock:
                self._journal.close()

    def _recover(self) -> int:
        """Replay the journals of ``fsync``-mode writers that died (journal.py).

        Packs are written again where their files are missing or differ; then
        each ref move is redone where the ref still holds the value it was moved
        from, repeating until nothing changes (journals of several processes may
        depend on each other). Everything is made durable before the journals
        are deleted. Returns the number of ref moves redone.
        """
        if not os.path.isdir(os.path.join(self.gitdir, _journal.DIRNAME)) or not os.access(self.gitdir, os.W_OK):
            return 0
        orphans = _journal.Orphans(self.gitdir)
        try:
            records = orphans.claim()
        except OSError as exc:
            orphans.release(delete=False)
            return self._recovery_failed(exc)
        if not orphans.claimed:
            self.recovery_error = None
            return 0
        complete = True
        redone = 0
        try:
            pack_dir = os.path.join(self.gitdir, "objects", "pack")
            for written, _ in records:
                for stem, pack, idx in written:
                    _journal.restore_pack(pack_dir, stem, pack, idx)
            moves = [m for _, refs in records for m in refs]
            changed = True
            while changed:
                changed = False
                for name, old, new in moves:
                    cur = self.ref(name)
                    want_old = None if old is None else pygit2.Oid(hex=old)
                    if cur is not None and str(cur) == new or cur != want_old:
                        continue
                    for _ in range(50):
                        if self.update_ref(name, want_old, pygit2.Oid(hex=new), journal=False):
                            redone += 1
                            changed = True
                            break
                        if self.ref(name) != want_old:
                            break
                        time.sleep(0.02)
                    else:  # locked all along: leave the journal for the next process
                        complete = False
            self._syncfs()
        except (OSError, StorageError) as exc:
            # format.md 17.3: the journals stay for a later process; reading goes on, writing waits
            complete = False
            orphans.release(delete=False)
            return self._recovery_failed(exc)
        finally:
            orphans.release(delete=complete)
        self.recovery_error = None
        return redone

    def _recovery_failed(self, exc: BaseException) -> int:
        cause = exc.__cause__ if isinstance(exc, StorageError) and isinstance(exc.__cause__, OSError) else exc
        err = storage_error(self.path, "replaying the journal of a writer that died (durability=\"fsync\")",
                            cause if isinstance(cause, OSError) else OSError(str(cause)))
        err.__cause__ = exc
        self.recovery_error = err
        _log.warning("%s; the repository is read as it is, and writes wait until the replay succeeds", err)
        return 0

    def _check_recovered(self) -> None:
        """Before a write: finish a replay that failed when the repository was opened.

        A journalled update whose git files were lost is redone only where its
        ref still holds the value it moved from; a write on top of that value
        first would make the replay skip it, losing an acknowledged update.
        """
        if self.recovery_error is None:
            return
        self._recover()
        if self.recovery_error is not None:
            raise self.recovery_error

    # -- trees by difference (used by GitStore) --------------------------------

    def update_tree(self, base: pygit2.Oid | None, changes: dict) -> pygit2.Oid | None:
        """Write a copy of tree ``base`` (None: the empty tree) with ``changes`` applied.

        ``changes`` maps an entry name to ``(oid, mode)`` (insert or replace),
        ``None`` (remove) or a nested dict of changes (edit that subtree,
        creating it if absent). Untouched entries keep their ids, so the cost
        is the size of the trees on the edited paths, not of the whole tree.
        Returns the new tree id, or None when the result is empty: an emptied
        subtree is removed from its parent, as git keeps no empty directories.
        """
        entries = self.tree_entries(base) if base is not None else {}
        for name, change in changes.items():
            if isinstance(change, dict):
                entry = entries.get(name)
                sub = entry[0] if entry is not None and entry[1] == TREE else None
                new = self.update_tree(sub, change)
                change = None if new is None else (new, TREE)
            if change is None:
                entries.pop(name, None)
            else:
                entries[name] = (change[0], change[1])
        if not entries:
            return None
        return self.tree(entries)

    def diff_trees(
        self, old: pygit2.Oid | None, new: pygit2.Oid | None
    ) -> list[tuple[str, pygit2.Oid | None, pygit2.Oid | None]]:
        """``(path, old blob id, new blob id)`` of every file that differs.

        ``None`` stands for the empty tree and, in the result, for "absent on
        that side". Subtrees with equal ids are skipped unread, so comparing
        two versions of a large tree costs the size of what changed.
        """
        out: list[tuple[str, pygit2.Oid | None, pygit2.Oid | None]] = []

        def entries(oid):
            return {} if oid is None else self.tree_entries(oid)

        def walk(prefix: str, a, b) -> None:
            ea, eb = entries(a), entries(b)
            for name in ea.keys() | eb.keys():
                x, y = ea.get(name), eb.get(name)
                if x == y:
                    continue
                xt = x[0] if x is not None and x[1] == TREE else None
                yt = y[0] if y is not None and y[1] == TREE else None
                if xt != yt:
                    walk(f"{prefix}{name}/", xt, yt)
                xb = x[0] if x is not None and x[1] != TREE else None
                yb = y[0] if y is not None and y[1] != TREE else None
                if xb != yb:
                    out.append((prefix + name, xb, yb))

        if old != new:
            walk("", old, new)
        return out


def _make_ref_folder(lock: str, name: str) -> None:
    try:
        os.makedirs(os.path.dirname(lock), exist_ok=True)
    except (FileExistsError, NotADirectoryError) as exc:
        raise ConflictError(f"ref {name} collides with an existing ref ({exc})") from exc


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


#: A ref lock that no gitckpt process holds (flocks) and that has not changed
#: for this many seconds was left by a process that died; it is removed
#: (format.md 17.2). gitckpt holds a ref lock for microseconds (milliseconds in
#: ``fsync`` mode); git holds one for a transaction, and gives up itself after
#: 100 ms when it meets one. Shorter than a writer's retries (~10 s), so a
#: write after a crash waits, then goes through.
REF_LOCK_STALE = 5.0

_busy = threading.local()


def _take_ref_lock(lock: str, name: str, pool: _FilePool | None = None) -> int:
    """Create and flock ``lock`` (git's ``<ref>.lock``); its descriptor, or -1 when
    it exists (a stale one is removed first, and the caller retries).

    With a ``pool``, the file is one the pool created beforehand: flocked, then
    claimed as ``lock`` by an exclusive rename (:func:`_claim`), so no file is
    created on the update's path (format.md, 22). Without a pooled file, or
    where the exclusive rename is not available, it is created here."""
    f = pool.take() if pool is not None else None
    if f is not None:
        fd, tmp = f
        got: bool | None = None
        try:
            try:
                os.fchmod(fd, 0o644)  # the pool's files are read-only; a ref file is not
            except OSError:
                pass
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)  # before the claim: the lock is never seen unflocked
            except OSError:
                pass
            os.utime(fd)  # made a while ago: its age must not make it look stale (_clear_stale_lock)
            for attempt in range(2):
                try:
                    got = _claim(tmp, lock)
                    break
                except FileNotFoundError:  # the ref's folder does not exist yet
                    if attempt:
                        break
                    _make_ref_folder(lock, name)
        finally:
            if not got:
                os.close(fd)
                _unlink_quietly(tmp)
        if got:
            return fd
        if got is False:
            _clear_stale_lock(lock)
            return -1
    try:
        try:
            fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        except FileNotFoundError:
            try:
                os.makedirs(os.path.dirname(lock), exist_ok=True)
            except (FileExistsError, NotADirectoryError) as exc:
                raise ConflictError(f"ref {name} collides with an existing ref ({exc})") from exc
            fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    except FileExistsError:
        _clear_stale_lock(lock)
        return -1
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # proof of life for other processes while we hold it
    except OSError:  # no flock here (some network file systems): the age rule alone
        pass
    return fd


def _clear_stale_lock(lock: str) -> bool:
    """Remove ``lock`` if it is stale (format.md 17.2); True if it is gone.

    Stale: no gitckpt process holds its flock, and it has not changed for
    :data:`REF_LOCK_STALE` seconds. The check holds the lock's flock itself,
    so two processes never both judge and remove the same file, and the file
    is removed only if it is still the one judged (same inode). When it stays,
    why is remembered for :func:`retry_cas`'s error.
    """
    try:
        fd = os.open(lock, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return True
    try:
        st = os.fstat(fd)
        age = time.time() - st.st_mtime
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            _busy.lock = (lock, "live", age)
            return False
        except OSError:
            pass
        if age <= REF_LOCK_STALE:
            _busy.lock = (lock, "young", age)
            return False
        try:
            if os.stat(lock).st_ino != st.st_ino:
                return True  # replaced meanwhile: look again
            os.unlink(lock)
        except FileNotFoundError:
            return True
        _log.warning("removed the stale ref lock %s (unchanged for %.0f s, no process holding it)", lock, age)
        return True
    finally:
        os.close(fd)


def lock_in_error(exc: Exception) -> tuple[bool, str] | None:
    """For a libgit2 error about a lock file (``failed to lock file '...lock'``):
    the stale-lock rule applied to it, as ``(removed, advice)``; None for other errors."""
    import re

    m = re.search(r"'([^']+\.lock)'", str(exc))
    if m is None or "lock" not in str(exc):
        return None
    lock = m.group(1)
    _busy.lock = None
    if _clear_stale_lock(lock):
        return True, ""
    return False, _lock_advice(*(_busy.lock or (lock, "young", 0.0)))


def _lock_advice(lock: str, state: str, age: float) -> str:
    if state == "live":
        return (f"the ref lock {lock} is held by a running gitckpt process (for {age:.0f} s); "
                "try again when it has finished")
    return (f"the ref lock {lock} was not released (unchanged for {age:.0f} s, and no gitckpt process holds it); "
            f"it is removed once unchanged for {REF_LOCK_STALE:.0f} s. If a git command is still running on "
            "this repository, let it finish; if none is, delete the file and try again")


_STORAGE_HINTS = {
    errno.ENOSPC: "the disk is full: free some space and try again",
    errno.EDQUOT: "the disk quota is used up: free some space and try again",
    errno.EROFS: "the file system is read-only: reading works, writing needs a writable copy",
    errno.EACCES: "permission denied: check who owns the repository's files",
    errno.EPERM: "permission denied: check who owns the repository's files",
    errno.EIO: "the disk reported an I/O error: check it (dmesg), then run `gitckpt verify`",
}


def storage_error(repo: str | os.PathLike, operation: str, exc: OSError) -> StorageError:
    """A :class:`StorageError` for an ``OSError`` met while ``operation`` ran on ``repo``
    (raise it ``from exc``): the repository, the operation and the cause, and what to do."""
    cause = exc.strerror or str(exc)
    hint = _STORAGE_HINTS.get(exc.errno or 0)
    where = f" ({exc.filename})" if exc.filename else ""
    return StorageError(
        f"{operation} failed in {repo}: {cause}{where}"
        + (f"; {hint}" if hint else "")
        + ". Nothing written before this was lost."
    )


def retry_cas(attempt, what: str, tries: int = 200):
    """Run ``attempt()`` until it returns a non-None result (a won CAS).

    Gives up after ``tries`` (about 10 s): with :class:`RefLockError` naming the
    lock file when a ref lock was what stood in the way, else ConflictError.
    """
    delay = 0.0005
    for _ in range(tries):
        _busy.lock = None
        result = attempt()
        if result is not None:
            return result
        time.sleep(delay)
        delay = min(delay * 2, 0.05)
    blocked = getattr(_busy, "lock", None)
    if blocked is not None:
        raise RefLockError(f"{what}: {_lock_advice(*blocked)}")
    raise ConflictError(f"{what}: gave up after {tries} concurrent updates; try again")


class Maintenance:
    """Keeps the repository packed without anyone running ``git gc``.

    Every update writes one small pack (packs.py). After every
    :data:`PACK_EVERY` packs a process writes, it starts
    ``git repack -d --geometric=2`` in the background: small packs (and any
    loose objects, e.g. from plain git) are rolled into larger ones with git's
    delta compression (a growing message list then costs little), combined
    geometrically, so the work stays proportional to what is new. Geometric
    repacking keeps every object it rolls up, reachable or not, so it never
    races with a writer that has written objects but not yet moved its ref.
    One maintenance run at a time per repository (a lock file). A run that
    cannot start because one is still going (here or in another process) is
    tried again every :data:`PACK_RETRY` packs, so the next repack starts soon
    after the last one ends rather than up to :data:`PACK_EVERY` packs later;
    how many small packs gather meanwhile depends on how long a repack takes
    (format.md, 9). Without a
    ``git`` executable the small packs are merged with libgit2's pack builder.
    """

    def __init__(self, path: Path, every: int = PACK_EVERY) -> None:
        self.path = Path(path).resolve()  # the lock is removed by a child with another cwd
        self.every = every
        self.count = 0
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self.git = shutil.which("git")
        self._settled = threading.Event()  # no start is waiting on the background thread
        self._settled.set()
        self._pid = os.getpid()

    def wrote(self, n: int) -> None:
        """Count ``n`` new packs; at :data:`PACK_EVERY`, start a repack on the
        background thread: spawning ``git`` took 1-12 ms, which an update
        waited for (format.md, 22)."""
        self._forked()
        self.count += n
        if self.count >= self.every and self._settled.is_set():
            self._settled.clear()
            _filler.call_soon(self._start_behind)

    def _start_behind(self) -> None:
        try:
            if self.start():
                self.count = 0
            else:  # one is running: try again soon
                self.count = self.every - PACK_RETRY
        finally:
            self._settled.set()

    def _forked(self) -> None:
        if self._pid != os.getpid():  # the parent's background thread is not here
            self._pid, self._proc = os.getpid(), None
            self._settled.set()

    def settle(self) -> None:
        """Wait until a start handed to the background thread has run."""
        self._forked()
        self._settled.wait(timeout=120)

    def start(self) -> bool:
        with self._lock:
            if self._proc is not None and self._proc.poll() is None:
                return False
            self._proc = None
            try:
                held = take_maintenance_lock(self.path)
            except OSError:  # disk full or read-only: no repack now, the writes go on
                return False
            if held is None:
                return False
            lock = self.path / MAINTENANCE_LOCK
            if self.git is None:
                try:
                    merge_packs_in_process(self.path)
                except (OSError, pygit2.GitError, ValueError) as exc:  # disk full: the small packs stay
                    _log.warning("merging small packs in %s failed: %s", self.path, exc)
                finally:
                    held.release()
                return True
            try:
                # the child inherits the flocked descriptor: the lock is held while
                # git runs, and dropped by the kernel if it is killed (format.md 17.1)
                self._proc = subprocess.Popen(
                    ["sh", "-c", f'nice -n 10 "{self.git}" -c pack.threads=1 -c pack.depth=10 repack -d -q --geometric=2; rm -f "{lock}"'],
                    cwd=self.path, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL, env={**os.environ, "GIT_DIR": str(self.path)},
                    pass_fds=(held.fd,),
                )
            except OSError:
                held.release()
                return False
            try:  # the record names the process that holds it now
                os.ftruncate(held.fd, 0)
                packs.write_all(held.fd, _lock_record(self._proc.pid), 0)
            except OSError:
                pass
            held.close_fd()
            return True

    def wait(self) -> None:
        self.settle()
        proc = self._proc
        if proc is not None:
            proc.wait()

    def close(self) -> None:
        """Wait for a running repack, then merge what this process wrote since."""
        self.wait()
        if self.count:
            self.count = 0
            if self.start():
                self.wait()


MAINTENANCE_LOCK = "gitckpt-maintenance.lock"
#: A lock recorded by a holder on another host (flock does not reach across
#: NFS reliably), or by a gitckpt that did not flock it, counts as held for
#: this long after it was taken; on the same host a dead holder is seen at once.
MAINTENANCE_STALE = 600.0
#: An empty or unreadable lock younger than this may be an older gitckpt's,
#: between creating the file and writing its pid; older, it is stale.
MAINTENANCE_EMPTY_GRACE = 2.0


def _host() -> str:
    import socket

    return socket.gethostname()


def process_start(pid: int) -> str | None:
    """When process ``pid`` started (clock ticks since boot, from /proc), or None
    where that cannot be read; with the pid it names one process, even after the
    pid is reused."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
    except OSError:
        return None
    fields = stat[stat.rfind(b")") + 2:].split()
    return fields[19].decode() if len(fields) > 19 else None


def _pid_alive(pid: int, start: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's: it exists
        pass
    if start is not None:
        now = process_start(pid)
        if now is not None and now != start:
            return False  # the pid was reused by another process
    return True


class MaintenanceLock:
    """A held ``gitckpt-maintenance.lock`` (format.md 17.1).

    The holder keeps an exclusive ``flock`` on the lock file for as long as it
    runs (a background repack inherits the descriptor, so the lock lives as
    long as git does); the kernel drops it when the holder dies, however it
    dies. The file records who took it (``{"host", "pid", "start", "time"}``)
    for the error messages and for the cases ``flock`` cannot decide.
    """

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self.fd = fd

    def release(self) -> None:
        """Remove the lock (if it is still ours), then drop the flock."""
        if self.fd < 0:
            return
        try:
            if os.stat(self.path).st_ino == os.fstat(self.fd).st_ino:
                os.unlink(self.path)
        except OSError:
            pass
        self.close_fd()

    def close_fd(self) -> None:
        """Drop this process's descriptor (a child that inherited it keeps the lock)."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _lock_record(pid: int | None = None) -> bytes:
    import json

    pid = pid or os.getpid()
    return json.dumps({"host": _host(), "pid": pid, "start": process_start(pid), "time": int(time.time())}).encode()


def describe_maintenance_lock(path: Path) -> str:
    """Who holds the lock, as recorded in it, for an error message."""
    import json

    try:
        rec = json.loads((Path(path) / MAINTENANCE_LOCK).read_bytes())
        return f"pid {rec['pid']} on {rec['host']}, since {time.strftime('%H:%M:%S', time.localtime(rec['time']))}"
    except (OSError, ValueError, KeyError, TypeError):
        return "a process that recorded nothing readable"


def _holder_gone(fd: int, flocked: bool) -> bool:
    """Whether the lock open on ``fd`` belongs to nobody; ``flocked``: we hold its
    flock now (False where the file system has no flock)."""
    import json

    st = os.fstat(fd)
    age = time.time() - st.st_mtime
    data = os.pread(fd, 4096, 0)
    if not data.strip():
        return age > MAINTENANCE_EMPTY_GRACE
    try:
        rec = json.loads(data)
        host, pid, start = rec["host"], int(rec["pid"]), rec.get("start")
        # this version flocks its locks: the flock we hold proves the holder gone
    except (ValueError, KeyError, TypeError):
        try:  # an older gitckpt wrote its bare pid and did not flock
            host, pid, start, flocked = _host(), int(data.strip()), None, False
        except ValueError:
            return age > MAINTENANCE_EMPTY_GRACE  # unreadable: stale
    if host != _host():
        return age > MAINTENANCE_STALE
    if flocked:
        return True
    return not _pid_alive(pid, start) or age > MAINTENANCE_STALE


def take_maintenance_lock(path: Path) -> MaintenanceLock | None:
    """Take the repository's maintenance lock if it is free, or its holder is gone.

    Returns the held lock, or None when a live process holds it. Raises
    ``OSError`` when the lock cannot be written (disk full, read-only).
    """
    path = Path(path)
    lock = path / MAINTENANCE_LOCK
    for _ in range(5):
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            # a new lock appears complete and flocked (a link of a written temp file), never empty
            tmp = path / f"{MAINTENANCE_LOCK}.{os.getpid()}.{os.urandom(4).hex()}.tmp"
            fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                packs.write_all(fd, _lock_record())
                os.link(tmp, lock)
            except FileExistsError:
                os.close(fd)
                continue
            except BaseException:
                os.close(fd)
                raise
            finally:
                tmp.unlink(missing_ok=True)
            return MaintenanceLock(lock, fd)
        flocked = True
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None  # its holder is alive
        except OSError:  # no flock on this file system: judge by the record alone
            flocked = False
        try:
            if os.stat(lock).st_ino != os.fstat(fd).st_ino:
                os.close(fd)  # released and replaced meanwhile: look again
                continue
        except FileNotFoundError:
            os.close(fd)
            continue
        if not _holder_gone(fd, flocked):
            os.close(fd)
            return None
        # taken over: the inode at the path is flocked by us from now on
        try:
            os.ftruncate(fd, 0)
            packs.write_all(fd, _lock_record(), 0)
        except BaseException:
            os.close(fd)
            raise
        return MaintenanceLock(lock, fd)
    return None


@contextmanager
def maintenance_lock(path: str | os.PathLike, wait: float = 60.0) -> Iterator[MaintenanceLock]:
    """Hold the maintenance lock (waiting up to ``wait`` seconds for a live
    holder): one repack or gc at a time per repository, across processes."""
    path = Path(path).resolve()
    deadline = time.monotonic() + wait
    while True:
        try:
            held = take_maintenance_lock(path)
        except OSError as exc:
            raise storage_error(path, "taking the maintenance lock", exc) from exc
        if held is not None:
            break
        if time.monotonic() > deadline:
            raise RepositoryError(
                f"another maintenance run holds {path / MAINTENANCE_LOCK} ({describe_maintenance_lock(path)}) "
                f"and is still running; try again when it has finished"
            )
        time.sleep(0.1)
    try:
        yield held
    finally:
        held.release()


def _idx_object_ids(idx: Path) -> list[pygit2.Oid]:
    data = idx.read_bytes()
    if data[:4] != b"\xfftOc":
        raise ValueError(f"{idx} is not a version 2 pack index")
    n = int.from_bytes(data[8 + 255 * 4 : 8 + 256 * 4], "big")
    base = 8 + 256 * 4
    return [pygit2.Oid(raw=data[base + 20 * i : base + 20 * (i + 1)]) for i in range(n)]


def merge_packs_in_process(path: Path, small: int = 1 << 20) -> None:
    """Without a ``git`` executable: merge the small packs (under ``small``
    bytes) into one with libgit2's pack builder, then remove them."""
    repo = pygit2.Repository(str(path))
    pack_dir = Path(repo.path) / "objects" / "pack"
    idxs = [p for p in pack_dir.glob("pack-*.idx") if p.with_suffix(".pack").stat().st_size < small]
    if len(idxs) < 2:
        return
    pb = pygit2.PackBuilder(repo)
    for idx in idxs:
        for oid in _idx_object_ids(idx):
            pb.add(oid)
    pb.write(str(pack_dir))
    for idx in idxs:
        idx.unlink(missing_ok=True)  # the index first: readers stop using the pack
        idx.with_suffix(".pack").unlink(missing_ok=True)


def iter_commits(repo: GitRepo, tips: Iterable[pygit2.Oid], stop: set[bytes]) -> Iterator[CommitInfo]:
    """Commits reachable from ``tips`` (all parents), skipping those whose raw
    ids are in ``stop``; the raw id of each commit yielded is added to it."""
    stack = list(tips)
    seen = stop
    while stack:
        oid = stack.pop()
        raw = oid.raw
        if raw in seen:
            continue
        seen.add(raw)
        commit = repo.commit_info(oid)
        yield commit
        stack.extend(commit.parent_ids)
