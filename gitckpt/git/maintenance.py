"""Keeping a repository packed without anyone running ``git gc`` (format.md 9),
one maintenance run at a time: the maintenance lock, held by a live process
(format.md 17.1)."""

from __future__ import annotations

import fcntl
import logging
import os
import shlex
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pygit2

from ..errors import (
    RepositoryError,
)
from . import packs
from .files import closer
from .locks import storage_error

_log = logging.getLogger(__name__)


#: Small packs this process writes (one per ref update) before it starts a
#: background ``git repack --geometric`` that merges them.
PACK_EVERY = 64


#: Packs written between two tries to start a repack while one is running.
PACK_RETRY = 4


#: Packs a repository has at most after a writer's ``close()`` (format.md 22).
PACK_GOAL = 64


#: Packs in the repository at which a writer stops and merges them itself
#: (format.md 22): the background repack has fallen that far behind.
PACK_LIMIT = 1024


#: How long a writer waits for another process's maintenance run before it
#: goes on without merging (it tries again :data:`PACK_EVERY` packs later).
LOCK_WAIT = 120.0
#: The repack both the background and ``close()`` run (format.md 9, 28): one thread,
#: short delta chains, objects deltified afresh (-F: git would otherwise reuse an
#: update's whole objects as they are), no zlib and a window of 4 (reads and the
#: repack itself cost no more than without -F), packs combined geometrically.
REPACK_ARGS = (
    "-c", "pack.threads=1", "-c", "pack.depth=10", "-c", "pack.compression=0", "-c", "pack.window=4",
    "repack", "-d", "-F", "--geometric=2",
)  # fmt: skip


class Maintenance:
    """Keeps the repository packed without anyone running ``git gc``.

    Every update writes one small pack (packs.py). After every
    :data:`PACK_EVERY` packs a process writes, it starts
    ``git repack -d -F --geometric=2`` in the background: small packs (and any
    loose objects, e.g. from plain git) are rolled into larger ones with git's
    delta compression (a growing message list then costs little; ``-F``: git
    would otherwise reuse most objects of an update's pack as they are, whole,
    format.md 28; no zlib, and a window of 4, so that neither reading nor the
    repack itself costs more), combined
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

    def __init__(self, path: Path, every: int = PACK_EVERY, limit: int = PACK_LIMIT, goal: int = PACK_GOAL) -> None:
        self.path = Path(path).resolve()  # the lock is removed by a child with another cwd
        self.every = every
        self.limit = limit
        self.goal = goal
        self.count = 0
        # the repository's packs when last counted, plus this process's since:
        # an estimate that never looks more than PACK_EVERY of ours behind
        self.known = pack_count(self.path)
        self.since = 0
        self.stalls = 0  # times a writer waited for maintenance (format.md 22)
        self.merges = 0  # ... and then merged packs itself
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self.git = shutil.which("git")
        self._settled = threading.Event()  # no start is waiting on the background thread
        self._settled.set()
        self._pid = os.getpid()

    def wrote(self, n: int) -> None:
        """Count ``n`` new packs; at :data:`PACK_EVERY`, start a repack on the
        background thread: spawning ``git`` took 1-12 ms, which an update
        waited for (format.md, 19)."""
        self._forked()
        self.count += n
        self.since += n
        if self.known + self.since >= self.limit:
            self._merge_now()
        if self.count >= self.every and self._settled.is_set():
            self._settled.clear()
            closer.call_soon(self._start_behind)  # not on the pool's refill thread: a refill never waits for it

    def _recount(self) -> int:
        self.known, self.since = pack_count(self.path), 0
        return self.known

    def _merge_now(self) -> None:
        """Back-pressure (format.md 22): the repository has :data:`PACK_LIMIT`
        packs, so the background repack has fallen behind. The writer waits for
        any running maintenance, then merges the small packs itself by copying
        (no git, no deltas: tens of milliseconds), so that however fast updates
        come, the count stays near the limit."""
        self.settle()
        if self._recount() < self.limit:
            return
        self.stalls += 1
        self.wait()  # our own repack first: it holds the lock
        if self._recount() < self.limit:
            return
        self.merges += 1
        try:
            with maintenance_lock(self.path, wait=LOCK_WAIT):
                merge_small_packs(self.path)
        except (RepositoryError, OSError, pygit2.GitError) as exc:  # writes go on; tried again later
            _log.warning("merging small packs in %s failed: %s", self.path, exc)
        self._recount()
        if self.known >= self.limit:  # not merged (locked elsewhere, or packs git must merge): not on every update
            self.since = -self.every

    def _start_behind(self) -> None:
        try:
            self._recount()
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
                    [
                        "sh",
                        "-c",
                        f'nice -n 10 "{self.git}" {shlex.join(REPACK_ARGS)} -q; rm -f "{lock}"',
                    ],
                    cwd=self.path,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    env={**os.environ, "GIT_DIR": str(self.path)},
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
        """Wait for a running repack, then merge what this process wrote since;
        then, if the repository still has more than :data:`PACK_GOAL` packs
        (this process's or others'), consolidate them: at most PACK_GOAL after
        ``close()``, however fast they were written (format.md 22)."""
        self.wait()
        if self.count:
            self.count = 0
            if self.start():
                self.wait()
        if pack_count(self.path) > self.goal:
            self.consolidate()

    def consolidate(self) -> None:
        """Under the maintenance lock: merge the small packs by copying, then
        ``git repack -d --geometric=2`` in the foreground (packs then number
        at most log2 of the objects)."""
        try:
            with maintenance_lock(self.path, wait=LOCK_WAIT) as held:
                merge_small_packs(self.path)
                if self.git is not None and pack_count(self.path) > self.goal:
                    subprocess.run(
                        [self.git, *REPACK_ARGS, "-q"],
                        cwd=self.path,
                        stdin=subprocess.DEVNULL,
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.PIPE,
                        env={**os.environ, "GIT_DIR": str(self.path)},
                        pass_fds=(held.fd,),
                        check=True,
                    )
        except (RepositoryError, OSError, pygit2.GitError, subprocess.CalledProcessError) as exc:
            _log.warning("consolidating the packs of %s failed: %s", self.path, exc)
        self._recount()


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
    fields = stat[stat.rfind(b")") + 2 :].split()
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


def pack_count(path: str | os.PathLike) -> int:
    """How many packs the repository at ``path`` has (``pack-*.idx`` files: a
    pack counts once its index exists, as for git)."""
    try:
        with os.scandir(os.path.join(path, "objects", "pack")) as it:
            return sum(1 for e in it if e.name.startswith("pack-") and e.name.endswith(".idx"))
    except FileNotFoundError:
        return 0


#: A pack at least this big is left to git: gitckpt's own packs hold one
#: update each, and a pack merged by :func:`merge_small_packs` is usually smaller.
SMALL_PACK = 64 << 20

#: Bytes of source packs merged into one pack: far below the 2 GiB that 32-bit offsets allow.
MERGE_BYTES = 512 << 20

#: Source packs merged into one pack at most.
MERGE_PACKS = 8192


def merge_small_packs(
    path: str | os.PathLike,
    progress: Callable[[int, int], None] | None = None,
    *,
    small: int = SMALL_PACK,
    batch_packs: int = MERGE_PACKS,
    batch_bytes: int = MERGE_BYTES,
) -> tuple[int, int]:
    """Merge the repository's packs without deltas into a few, without mapping any (format.md 22).

    The caller holds the maintenance lock. Candidates are packs under
    ``small`` bytes with no ``.keep``, ``.promisor`` or ``.mtimes`` (cruft)
    file, oldest first; each batch (at most ``batch_packs`` packs and
    ``batch_bytes`` bytes) is streamed into one new pack by
    :class:`packs.PackMerger`, which is synced and installed (pack, then index)
    **before** its sources are deleted (index first), so a concurrent reader
    finds every object in one or the other. The new pack gets the newest
    mtime of its sources, so an unreachable object does not look older than
    it is to ``gc``'s expiry (format.md 17.4). A pack with deltas (git's own),
    or damaged, is skipped and left to git. Returns ``(packs merged, packs made)``.
    ``progress(done, total)`` is called after each batch.
    """
    pack_dir = os.path.join(os.fspath(path), "objects", "pack")
    try:
        names = set(os.listdir(pack_dir))
    except FileNotFoundError:
        return 0, 0
    found = []
    for name in names:
        if not (name.startswith("pack-") and name.endswith(".idx")):
            continue
        stem = name[:-4]
        if any(stem + ext in names for ext in (".keep", ".promisor", ".mtimes")):
            continue
        try:
            st = os.stat(os.path.join(pack_dir, stem + ".pack"))
        except OSError:
            continue
        if st.st_size < small:
            found.append((st.st_mtime, st.st_size, stem))
    found.sort()
    if len(found) < 2:
        return 0, 0
    batches: list[list[tuple[float, int, str]]] = [[]]
    size = 0
    for item in found:
        if batches[-1] and (len(batches[-1]) >= batch_packs or size + item[1] > batch_bytes):
            batches.append([])
            size = 0
        batches[-1].append(item)
        size += item[1]
    merged = made = done = 0
    for chunk in batches:
        if len(chunk) >= 2:
            n = _merge_batch(pack_dir, chunk)
            if n:
                merged, made = merged + n, made + 1
        done += len(chunk)
        if progress:
            progress(done, len(found))
    return merged, made


def _merge_batch(pack_dir: str, chunk: list[tuple[float, int, str]]) -> int:
    merger = packs.PackMerger(pack_dir)
    used: list[str] = []
    newest = 0.0
    try:
        for mtime, _, stem in chunk:
            base = os.path.join(pack_dir, stem)
            try:
                with open(base + ".idx", "rb") as fh:
                    idx = fh.read()
                with open(base + ".pack", "rb") as fh:
                    data = fh.read()
            except FileNotFoundError:  # removed meanwhile (a plain `git gc`): its objects are elsewhere
                continue
            try:
                merger.add(idx, data)
            except packs.NotMergeable as exc:
                _log.info("pack %s left to git: %s", stem, exc)
                continue
            used.append(stem)
            newest = max(newest, mtime)
        if len(used) < 2:
            merger.abort()
            return 0
        new = merger.finish(mtime=newest)
    except BaseException:
        merger.abort()
        raise
    for stem in used:
        if stem == new:  # the very same objects in the very same order
            continue
        base = os.path.join(pack_dir, stem)
        for ext in (".idx", ".pack", ".rev", ".bitmap"):  # the index first: readers stop using the pack
            try:
                os.unlink(base + ext)
            except FileNotFoundError:
                pass
    return len(used)


def merge_packs_in_process(path: Path, small: int = SMALL_PACK) -> None:
    """Without a ``git`` executable: merge the small packs (gitckpt's, which have
    no deltas) into one by copying their entries (:func:`merge_small_packs`)."""
    repo = pygit2.Repository(str(path))
    merge_small_packs(repo.path, small=small)
