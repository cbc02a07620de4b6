"""GitRepo: the repository object the checkpointer and the store write and read through.

Everything above the git engine speaks in object ids, trees as ``{name: (oid,
mode)}`` and refs updated by compare-and-swap. Here: opening and validating the
repository and its config, objects (staged, written one small pack per update,
read through bounded caches), refs (``update_ref``/``delete_ref`` by git's lock
protocol, ``locks.py``), durability and the fsync journal's recovery. The files
an update writes come from ``files.py``; background packing is
``maintenance.py``.
"""

from __future__ import annotations

import atexit
import bisect
import fcntl
import logging
import os
import re
import sys
import threading
import time
import weakref
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import NamedTuple

import pygit2
from pygit2.enums import FileMode, SortMode

from ..errors import (
    CorruptObjectError,
    GitckptError,
    RemoteError,
    RepositoryError,
    StorageError,
)
from . import journal as _journal
from . import packs
from .cache import LRU
from .files import SYNCFS, FilePool, closer
from .locks import storage_error, take_ref_lock
from .maintenance import Maintenance

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


#: Log-first updates (format.md 21, 29): what only the log holds is published
#: (packs, then refs) PUBLISH_AFTER seconds after the oldest unpublished update:
#: by the writer's next update if it goes on writing, else by the publisher
#: thread once no update came for PUBLISH_IDLE seconds.
PUBLISH_IDLE = 0.005
PUBLISH_AFTER = 0.1
#: A process holds at most this many leased refs; the update that would lease
#: one more publishes first (a writer of many threads publishes in batches).
MAX_LEASES = 256
#: How long a reader waits for another process's lease to be published
#: before it reads what git has (the writer publishes within PUBLISH_AFTER).
LEASE_WAIT = 5.0

_SIG_NAME = "gitckpt"
_SIG_EMAIL = "gitckpt@localhost"

ATTRIBUTES = "* diff=gitckpt\n"


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


class _Lease:
    """A ref this process holds the lock of while updates to it are only in the log
    (format.md 21): the lock file always holds the newest value, so that
    publishing is its rename over the ref."""

    __slots__ = ("name", "lock", "fd", "base", "tip", "held")

    def __init__(self, name: str, lock: str, fd: int, base: pygit2.Oid | None, held: int) -> None:
        self.name = name
        self.lock = lock
        self.fd = fd
        self.base = base  # the ref's value in git when the lease was taken
        self.tip = base  # its value once published
        self.held = held  # the old ref file, closed after the rename (format.md 9)


#: A scan keeps the last blobs it read up to this size, up to this many (format.md 25):
#: checkpoints next to each other share the blobs of the channels that did not change.
_SCAN_RECENT_BYTES = 4096
_SCAN_RECENT = 256


def _keep(cache: LRU, key, value) -> None:
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

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        create: bool = True,
        durability: str = "os",
        auto_pack: bool = True,
        log_first: bool = False,
    ) -> None:
        if durability not in DURABILITY_MODES:
            raise ValueError(f"durability must be one of {DURABILITY_MODES}, not {durability!r}")
        self.path = Path(path).expanduser()
        self.repo = open_repository(self.path, create=create)
        self._odb = self.repo.odb
        self.durability = durability
        self.lock = threading.RLock()
        self.sig = pygit2.Signature(_SIG_NAME, _SIG_EMAIL)
        self._maint = Maintenance(self.path) if auto_pack else None
        self._pool = FilePool(os.path.join(self.repo.path, "objects", "pack"))
        self._packed_cache: tuple | None = None
        self.gitdir = self.repo.path
        # bounded caches, least recently used dropped first (cache.py; format.md 15)
        self._small: LRU[bytes, pygit2.Oid] = LRU(4096)
        self._written: set[bytes] = set()  # raw ids this process wrote since _written_at
        self._written_at = time.monotonic()
        self._staged: dict[bytes, tuple[int, bytes]] = {}
        self._blob_cache: LRU[pygit2.Oid, bytes] = LRU(64 << 20, getsizeof=len)
        self._tree_cache: LRU[pygit2.Oid, dict] = LRU(65536)
        # small blobs a scan read lately (read_blob(keep=False)): a plain dict, emptied when full
        self._scan_recent: dict[pygit2.Oid, bytes] = {}
        self._commit_cache: LRU[pygit2.Oid, CommitInfo] = LRU(65536)
        # fsync mode: updates are made durable by a journal (journal.py); packs
        # written since the last journal record or barrier wait here to go in it.
        self._journal = _journal.Journal(self.gitdir, self._syncfs) if durability == "fsync" else None
        self._unjournaled: list[_journal.PackFiles] = []
        # Log-first updates (format.md 21; :meth:`log_update`): the log, the refs
        # this process has leased, the objects only the log holds, and the publisher.
        self._log = (
            _journal.Journal(
                self.gitdir,
                self._syncfs,
                suffix=_journal.LOG_SUFFIX,
                sync=durability == "fsync",
                before_reset=self._publish_locked,
            )
            if log_first
            else None
        )
        self._leases: dict[str, _Lease] = {}
        self._pending: dict[bytes, tuple[int, bytes]] = {}
        self._oldest: float | None = None  # when the oldest unpublished update was logged
        self._newest = 0.0
        self._pub_cond = threading.Condition()
        self._pub_thread: threading.Thread | None = None
        self._pub_pid = -1
        self._pub_stop = False
        self.published = 0  # publishes done (tests read it)
        self._stuck: dict[str, int] = {}  # ref locks waited for in vain: lock path -> inode
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
        if oid.raw in self._pending:  # only in the log: libgit2 reads it once published
            self.publish()
        try:
            return self.repo[oid]
        except (KeyError, ValueError, pygit2.GitError) as exc:
            raise CorruptObjectError(f"{what}: git object {oid} is missing or unreadable ({exc})") from exc

    def get(self, oid: pygit2.Oid, what: str = "object"):
        """The pygit2 object (flushing staged objects first if needed)."""
        return self._lookup(oid, what)

    def has(self, oid: pygit2.Oid) -> bool:
        return oid.raw in self._staged or oid.raw in self._pending or oid in self.repo

    def descendant_of(self, tip: pygit2.Oid, oid: pygit2.Oid) -> bool:
        """``oid`` is a strict ancestor of ``tip``."""
        if tip.raw in self._staged or oid.raw in self._staged:
            self.flush()
        if self._pending:
            self.publish()
        return self.repo.descendant_of(tip, oid)

    def merge_base(self, a: pygit2.Oid, b: pygit2.Oid) -> pygit2.Oid | None:
        if self._pending:
            self.publish()
        return self.repo.merge_base(a, b)

    def walk_new(self, tip: pygit2.Oid, known: pygit2.Oid) -> Iterator[pygit2.Commit]:
        """The commits reachable from ``tip`` and not from ``known``, oldest first."""
        if self._pending:
            self.publish()
        walker = self.repo.walk(tip, SortMode.TOPOLOGICAL | SortMode.REVERSE)
        walker.hide(known)
        return iter(walker)

    def walk_new_many(self, tips: Iterable[pygit2.Oid], known: Iterable[pygit2.Oid]) -> Iterator[pygit2.Commit]:
        """The commits reachable from one of ``tips`` and from none of ``known``
        (those this repository has), oldest first."""
        if self._pending:
            self.publish()
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
        if self._staged and oid.raw in self._staged:
            self.flush()
        logged = self._pending.get(oid.raw) if self._pending else None
        if logged is not None:  # only in the log so far (format.md 21)
            got, data = logged
            if got != kind:
                raise CorruptObjectError(f"{what}: git object {oid} is not a {_KIND_NAMES.get(kind, kind)}")
            return data
        try:
            got, data = self._odb.read(oid)
        except (KeyError, ValueError, pygit2.GitError) as exc:
            raise CorruptObjectError(f"{what}: git object {oid} is missing or unreadable ({exc})") from exc
        if got != kind:
            raise CorruptObjectError(f"{what}: git object {oid} is not a {_KIND_NAMES.get(kind, kind)}")
        return data

    def read_blob(self, oid: pygit2.Oid, what: str = "blob", *, keep: bool = True) -> bytes:
        """A blob's bytes. ``keep=False`` (a scan: format.md 25) neither adds it to
        the cache nor marks a cached one as recently used."""
        if not keep:
            data = self._blob_cache.peek(oid)
            if data is None:
                recent = self._scan_recent
                data = recent.get(oid)
                if data is None:
                    data = self._read_raw(oid, packs.OBJ_BLOB, what)
                    if len(data) <= _SCAN_RECENT_BYTES:
                        if len(recent) >= _SCAN_RECENT:
                            recent.clear()
                        recent[oid] = data
            return data
        data = self._blob_cache.get(oid)
        if data is None:
            data = self._read_raw(oid, packs.OBJ_BLOB, what)
            _keep(self._blob_cache, oid, data)
        return data

    def tree_entries(
        self, oid: pygit2.Oid, what: str = "tree", *, keep: bool = True
    ) -> dict[str, tuple[pygit2.Oid, int]]:
        """A tree as ``{name: (oid, filemode)}`` (a fresh dict: callers may change it).
        ``keep=False``: as :meth:`read_blob`'s."""
        entries = self._tree_cache.get(oid) if keep else self._tree_cache.peek(oid)
        if entries is None:
            data = self._read_raw(oid, packs.OBJ_TREE, what)
            try:
                entries = packs.parse_tree(data, pygit2.Oid)
            except ValueError as exc:
                raise CorruptObjectError(f"{what}: git object {oid} is not a valid tree ({exc})") from exc
            if not keep:
                return entries  # new: the caller may change it
            _keep(self._tree_cache, oid, entries)
        return dict(entries)

    # -- refs -----------------------------------------------------------------

    def ref(self, name: str) -> pygit2.Oid | None:
        """The object a ref points at (loose ref first, then packed-refs), or None.

        A ref this process has leased reads as its newest value; one another
        process has leased is waited for until published (format.md 21)."""
        if self._leases:
            lease = self._leases.get(name)
            if lease is not None:
                return lease.tip
        self._await_lease(name)
        return self._disk_ref(name)

    def _disk_ref(self, name: str) -> pygit2.Oid | None:
        """The ref as git has it now (no lease looked at)."""
        path = os.path.join(self.gitdir, name)
        try:
            fd = os.open(path, os.O_RDONLY)
        except (FileNotFoundError, NotADirectoryError):
            return self._packed_refs()[0].get(name)
        try:
            text = os.read(fd, 128)
        except IsADirectoryError:
            return None
        finally:
            os.close(fd)
        return self._ref_value(name, text)

    def _ref_value(self, name: str, text: bytes) -> pygit2.Oid | None:
        """What a loose ref file's content ``text`` points ``name`` at."""
        text = text.strip()
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

    def refs(self, *prefixes: str, names: Iterable[str] = (), _again: bool = False) -> dict[str, pygit2.Oid]:
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
        locked: list[str] = []
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
                    elif name_prefix + entry.name[:-5] not in self._leases:
                        locked.append(name_prefix + entry.name[:-5])
        if locked:  # another process's leases (format.md 21): wait for them, then read again
            waited = False
            for name in locked:
                waited = self._await_lease(name) or waited
            if waited and not _again:
                return self.refs(*prefixes, names=names, _again=True)
        for name, lease in list(self._leases.items()):  # a lease's value is newer
            if lease.tip is not None and name.startswith(prefixes):
                out[name] = lease.tip
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
        if self._leases or self._pending:  # updates only in the log go first (format.md 21)
            self.publish()
        path = os.path.join(self.gitdir, name)
        lock = path + ".lock"
        self.flush()
        jr = self._journal if journal else None
        journaled = False
        try:
            fd = take_ref_lock(lock, name, self._pool)
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
            if self._disk_ref(name) != old:
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
            if not done:  # remove our lock while we still hold its flock: no one can judge it stale
                try:
                    os.unlink(lock)
                except OSError:
                    pass
            os.close(fd)  # drops the flock, after the rename or the removal (format.md 17.2)
            if held >= 0:
                closer.close_later(held)
        if not journaled:
            try:
                self.barrier()  # the ref's new value and its rename are durable
            except OSError as exc:
                raise storage_error(self.path, f"making ref {name} durable", exc) from exc
        return True

    # -- log-first updates (format.md 21) ------------------------------------------
    #
    # An update is one record appended to this process's log (journal.py) and
    # a lease on its ref: the ref's git lock, taken by the first update of a
    # batch and held until a background thread (the publisher) has written
    # the objects of every logged update as one pack and renamed the lock over
    # the ref. Refs still move by compare-and-swap: the first update of a
    # batch checks git's value under the lock, later ones the lease's.

    def log_update(self, name: str, old: pygit2.Oid | None, new: pygit2.Oid) -> bool:
        """Compare-and-swap, log first: as :meth:`update_ref`, but the update is
        durable (in the log) when this returns, and in git once published
        (:meth:`publish`; within :data:`PUBLISH_AFTER`, by a later update or
        the publisher thread, format.md 29).
        Without a log (``log_first=False``) it is :meth:`update_ref`."""
        log = self._log
        if log is None:
            return self.update_ref(name, old, new)
        with self.lock:
            self._check_recovered()
            objects = list(self._staged.items())
            payload = log.encode([kd for _, kd in objects], [(name, None if old is None else str(old), str(new))])
            try:
                room = log.room(payload)
                if room is None:  # too large for the log: written the old way
                    self.publish()
                    return self.update_ref(name, old, new)
                if not room:
                    log.checkpoint()  # publishes what the log holds, and starts it over
            except OSError as exc:
                raise storage_error(self.path, f"updating ref {name}", exc) from exc
            lease = self._leases.get(name)
            taken = lease is None
            if lease is None:
                if len(self._leases) >= MAX_LEASES:  # two descriptors each
                    self._publish_locked()
                lease = self._take_lease(name, old)
                if lease is None:
                    return False
            elif lease.tip != old:
                return False
            content = str(new).encode() + b"\n"
            try:
                log.log(payload)
                packs.write_all(lease.fd, content, 0)  # the lock holds the value to publish (40 hex + newline)
            except OSError as exc:
                if taken:
                    self._drop_lease(lease)
                raise storage_error(self.path, f"updating ref {name}", exc) from exc
            if taken:
                self._leases[name] = lease
            lease.tip = new
            self._pending.update(self._staged)
            self._written.update(self._staged)
            self._staged.clear()
            now = time.monotonic()
            self._newest = now
            if self._oldest is None:
                self._oldest = now
                self._wake_publisher()
            elif now - self._oldest >= PUBLISH_AFTER:
                # A busy writer publishes for itself (format.md 29): a publisher
                # thread woken while the writer runs costs it the GIL's handovers.
                try:
                    self._publish_locked()
                except OSError as exc:  # the update is in the log; published later
                    self._oldest = now  # tried again after PUBLISH_AFTER, not at every update
                    _log.warning("publishing logged updates in %s failed (tried again): %s", self.path, exc)
        return True

    def _take_lease(self, name: str, old: pygit2.Oid | None) -> _Lease | None:
        path = os.path.join(self.gitdir, name)
        lock = path + ".lock"
        try:
            fd = take_ref_lock(lock, name, self._pool)
        except OSError as exc:
            raise storage_error(self.path, f"updating ref {name}", exc) from exc
        if fd < 0:
            return None
        held = -1
        if old is not None:
            try:  # closed after the rename that publishes: the inode is freed off the update's path
                held = os.open(path, os.O_RDONLY)
            except OSError:
                pass
        lease = _Lease(name, lock, fd, old, held)
        # The compare: read through the descriptor just opened (the ref file as it is
        # under our lock) rather than opening it a second time.
        if (self._ref_in(held, name) if held >= 0 else self._disk_ref(name)) != old:
            self._drop_lease(lease)
            return None
        return lease

    def _ref_in(self, fd: int, name: str) -> pygit2.Oid | None:
        """What the loose ref ``name``, open as ``fd``, points at (as :meth:`_disk_ref`)."""
        try:
            return self._ref_value(name, os.pread(fd, 128, 0))
        except OSError:
            return None

    @staticmethod
    def _drop_lease(lease: _Lease) -> None:
        try:  # removed while its flock is held (format.md 17.2)
            os.unlink(lease.lock)
        except OSError:
            pass
        os.close(lease.fd)
        if lease.held >= 0:
            os.close(lease.held)

    def publish(self) -> None:
        """Make every update that only the log holds visible in git: its objects as
        one pack, then each leased ref renamed into place (format.md 21)."""
        if self._log is None or not (self._leases or self._pending):
            return
        with self.lock:
            try:
                self._publish_locked()
            except OSError as exc:
                raise storage_error(self.path, "publishing logged updates", exc) from exc

    def _write_pending(self, objects: list[tuple[int, bytes, bytes]]) -> None:
        pack_dir = os.path.join(self.gitdir, "objects", "pack")
        try:
            packs.write_pack(pack_dir, objects, files=self._pool.take)
        except FileNotFoundError:
            os.makedirs(pack_dir, exist_ok=True)
            self._pool.prune()
            packs.write_pack(pack_dir, objects, files=self._pool.take)
        if self._maint:
            self._maint.wrote(1)

    def _flush_pending(self) -> None:
        """Write the objects only the log holds as one pack (hold ``self.lock``)."""
        if self._pending:
            self._write_pending([(kind, data, raw) for raw, (kind, data) in self._pending.items()])
            self._pending.clear()

    def _publish_locked(self) -> None:
        """:meth:`publish`, holding ``self.lock``."""
        self._flush_pending()
        leases, self._leases = self._leases, {}
        for i, lease in enumerate(leases.values()):
            try:
                self._rename_lease(lease)
            except OSError:
                for rest in list(leases.values())[i:]:  # still held: published next time
                    self._leases[rest.name] = rest
                raise
        self._oldest = None
        self.published += 1
        if self._log is not None and not self._log.sync:
            # os mode: what the log held is in git's files (a crash of the process
            # keeps them), so it starts over; fsync mode waits for a checkpoint's syncfs
            self._log.restart()

    def _rename_lease(self, lease: _Lease) -> None:
        """Publish one lease: its lock renamed over its ref (removed if nothing moved)."""
        if lease.tip == lease.base:  # nothing moved
            os.unlink(lease.lock)
        else:
            os.rename(lease.lock, os.path.join(self.gitdir, lease.name))
        os.close(lease.fd)  # drops the flock, after the rename (format.md 17.2)
        if lease.held >= 0:
            closer.close_later(lease.held)

    def _wake_publisher(self) -> None:
        if self._pub_thread is None or self._pub_pid != os.getpid() or not self._pub_thread.is_alive():
            self._pub_pid = os.getpid()
            self._pub_stop = False
            self._pub_thread = threading.Thread(target=self._publisher, name="gitckpt-publisher", daemon=True)
            self._pub_thread.start()
            _publishers.add(self)
        with self._pub_cond:
            self._pub_cond.notify()

    def _publisher(self) -> None:
        """The background publisher, for a writer that went quiet (a busy one
        publishes itself, format.md 29): packs what the log holds outside
        ``self.lock``, then publishes under it."""
        while True:
            with self._pub_cond:
                while True:
                    if self._pub_stop:
                        return
                    oldest = self._oldest
                    if oldest is None:
                        self._pub_cond.wait(5.0)
                        continue
                    now = time.monotonic()
                    due = oldest + PUBLISH_AFTER
                    if now >= due:
                        if now - self._newest >= PUBLISH_IDLE:
                            break  # the writer went quiet: publish for it
                        due = now + PUBLISH_IDLE  # it writes on: its next update publishes
                    self._pub_cond.wait(due - now)
            try:
                with self.lock:
                    objects = [(kind, data, raw) for raw, (kind, data) in self._pending.items()]
                if len(objects) > 1:
                    self._write_pending(objects)  # outside the lock
                    with self.lock:
                        for _, _, raw in objects:
                            self._pending.pop(raw, None)
                with self.lock:
                    self._publish_locked()
            except Exception as exc:  # the log still holds it all: tried again
                _log.warning("publishing logged updates in %s failed (tried again): %s", self.path, exc)
                time.sleep(0.5)

    def _stop_publisher(self) -> None:
        thread = self._pub_thread
        if thread is None or self._pub_pid != os.getpid():
            return
        with self._pub_cond:
            self._pub_stop = True
            self._pub_cond.notify()
        if thread is not threading.current_thread():
            thread.join()
        self._pub_thread = None
        _publishers.discard(self)

    def _await_lease(self, name: str) -> bool:
        """Wait while another process holds ``name``'s lock (a lease it publishes
        within PUBLISH_AFTER, format.md 21); True if there was a lock to look at.

        Our own leases are published first, so that two processes waiting for
        each other's never wait long. A lock nobody holds may be a dead
        writer's lease: its log is replayed (:meth:`_recover`)."""
        lock = os.path.join(self.gitdir, name) + ".lock"
        try:
            fd = os.open(lock, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return False
        try:
            ino = os.fstat(fd).st_ino
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                live = False
            except BlockingIOError:
                live = True
            except OSError:
                live = False
        finally:
            os.close(fd)
        if not live:
            if os.path.isdir(os.path.join(self.gitdir, _journal.DIRNAME)):
                with self.lock:
                    self._recover()
            return True
        if self._stuck.get(lock) == ino:  # waited for once already, in vain: read what git has
            return False
        if self._leases:
            self.publish()
        deadline = time.monotonic() + LEASE_WAIT
        delay = 0.0005
        while True:
            try:
                if os.stat(lock).st_ino != ino:
                    break
            except OSError:
                break
            if time.monotonic() >= deadline:  # a writer that hangs (stopped, or stuck in I/O)
                _log.warning("the ref lock %s was held for %.0f s; reading what git has", lock, LEASE_WAIT)
                self._stuck[lock] = ino
                return False
            time.sleep(delay)
            delay = min(delay * 2, 0.01)
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
        if self._log is not None:
            # Published, and the log started over: a replay must not redo a
            # logged move of a ref deleted since (format.md 21).
            with self.lock:
                try:
                    self._log.checkpoint()
                except OSError as exc:
                    raise storage_error(self.path, f"publishing before deleting ref {name}", exc) from exc
        path = os.path.join(self.gitdir, name)
        lock = path + ".lock"
        try:
            fd = take_ref_lock(lock, name)
        except OSError as exc:
            raise storage_error(self.path, f"deleting ref {name}", exc) from exc
        if fd < 0:
            return False
        try:
            cur = self._disk_ref(name)
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
            try:  # removed while its flock is held, then released (format.md 17.2)
                os.unlink(lock)
            except OSError:
                pass
            os.close(fd)
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
        fd = take_ref_lock(lock, "packed-refs")
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
            if not done:  # removed while its flock is held (format.md 17.2)
                try:
                    os.unlink(lock)
                except OSError:
                    pass
            os.close(fd)

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
        if SYNCFS is not None:
            fd = os.open(str(self.path), os.O_RDONLY)
            try:
                if SYNCFS(fd) == 0:
                    return
            finally:
                os.close(fd)
        os.sync()

    # -- maintenance ----------------------------------------------------------

    def close(self) -> None:
        if self._log is not None:
            self._stop_publisher()
            with self.lock:
                try:
                    self._publish_locked()
                except OSError as exc:
                    raise storage_error(self.path, "publishing logged updates", exc) from exc
                self._log.close()
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
            logged: dict[bytes, tuple[int, bytes, bytes]] = {}
            for written, _, objects in records:
                for stem, pack, idx in written:
                    _journal.restore_pack(pack_dir, stem, pack, idx)
                for kind, data in objects:  # log-first records (format.md 21)
                    raw = packs.object_id(kind, data)
                    logged[raw] = (kind, data, raw)
            if logged:
                os.makedirs(pack_dir, exist_ok=True)
                _drop_damaged_packs(pack_dir, set(logged))
                packs.write_pack(pack_dir, list(logged.values()))
            moves = [m for _, refs, _ in records for m in refs]
            _clear_dead_leases(self.gitdir, moves)
            # Each ref follows its moves from the value it holds: a line of many
            # logged updates is redone with one compare-and-swap.
            follow: dict[tuple[str, str | None], str] = {}
            for name, old, new in moves:
                follow[(name, old)] = new
            changed = True
            while changed:
                changed = False
                for name in dict.fromkeys(m[0] for m in moves):
                    cur = self._disk_ref(name)
                    target = None if cur is None else str(cur)
                    seen: set[str | None] = set()
                    while (name, target) in follow and target not in seen:
                        seen.add(target)
                        target = follow[(name, target)]
                    if target is None or cur is not None and str(cur) == target:
                        continue
                    for _ in range(50):
                        if self.update_ref(name, cur, pygit2.Oid(hex=target), journal=False):
                            redone += 1
                            changed = True
                            break
                        if self._disk_ref(name) != cur:
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
        err = storage_error(
            self.path,
            'replaying the journal of a writer that died (durability="fsync")',
            cause if isinstance(cause, OSError) else OSError(str(cause)),
        )
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


def _drop_damaged_packs(pack_dir: str, logged: set[bytes]) -> None:
    """Remove packs a power loss damaged (format.md 21) whose every object a
    replayed log holds: a publisher's pack is not flushed until the log is
    checkpointed, so its index may survive with its pack empty or torn, and
    git would look objects up in it. A pack whose ``.pack`` does not end with
    the checksum its ``.idx`` names is damaged; one holding any object the logs
    do not is left alone (for ``gitckpt verify`` to report)."""
    try:
        names = [n[:-4] for n in os.listdir(pack_dir) if n.startswith("pack-") and n.endswith(".idx")]
    except OSError:
        return
    for stem in names:
        base = os.path.join(pack_dir, stem)
        try:
            with open(base + ".idx", "rb") as fh:
                idx = fh.read()
            with open(base + ".pack", "rb") as fh:
                head = fh.read(12)
                fh.seek(0, os.SEEK_END)
                size = fh.tell()
                fh.seek(max(0, size - 20))
                tail = fh.read(20)
        except FileNotFoundError:
            head, tail, size = b"", b"", 0
        except OSError:
            continue
        if len(idx) >= 1072 and head[:4] == b"PACK" and size >= 32 and tail == idx[-40:-20]:
            continue  # whole
        if len(idx) < 1072 or idx[:4] != b"\xfftOc":
            continue  # not an index gitckpt can read: git's business
        n = int.from_bytes(idx[8 + 255 * 4 : 8 + 256 * 4], "big")
        ids = idx[1032 : 1032 + 20 * n]
        if len(ids) != 20 * n or any(ids[i : i + 20] not in logged for i in range(0, len(ids), 20)):
            continue
        for ext in (".idx", ".pack"):
            try:
                os.unlink(base + ext)
            except OSError:
                pass


def _clear_dead_leases(gitdir: str, moves: list) -> None:
    """Remove the ref locks a dead writer left (format.md 21): a lock no process
    holds (flocks) whose content is a value the claimed journals moved its ref
    to is that writer's lease, or its update's lock, never published."""
    values: dict[str, set[str]] = {}
    for name, _, new in moves:
        values.setdefault(name, set()).add(new)
    for name, news in values.items():
        lock = os.path.join(gitdir, name) + ".lock"
        try:
            fd = os.open(lock, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                continue  # held: a live writer's
            if os.read(fd, 128).strip().decode("ascii", "replace") in news:
                if os.stat(lock).st_ino == os.fstat(fd).st_ino:
                    os.unlink(lock)
        except OSError:
            pass
        finally:
            os.close(fd)


class _Publishers:
    """The repositories with a publisher, published at exit (format.md 21)."""

    def __init__(self) -> None:
        self._repos: weakref.WeakSet[GitRepo] = weakref.WeakSet()
        self._registered = False

    def add(self, repo: GitRepo) -> None:
        self._repos.add(repo)
        if not self._registered:
            self._registered = True
            atexit.register(self.publish_all)

    def discard(self, repo: GitRepo) -> None:
        self._repos.discard(repo)

    def publish_all(self) -> None:
        for repo in list(self._repos):
            if repo._pub_pid != os.getpid():
                continue
            try:
                repo._stop_publisher()
                repo.publish()
            except Exception as exc:  # the log keeps it: the next process replays it
                _log.warning("publishing logged updates in %s at exit failed: %s", repo.path, exc)


_publishers = _Publishers()


def publish_all() -> None:
    """Publish what every repository open in this process has only in its log
    (format.md 21): before running plain ``git`` on a repository this process writes."""
    for repo in list(_publishers._repos):
        if repo._pub_pid == os.getpid():
            repo.publish()


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
