"""Git's lock-file protocol for refs, and the rule for locks left behind
(format.md 17.2): a lock a live gitckpt writer holds (flocks) is never taken; one
nobody holds and that has not changed for ``REF_LOCK_STALE`` seconds was left by
a process that died and is removed. Also the errors a failed write becomes
(``storage_error``) and the compare-and-swap retry loop (``retry_cas``)."""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import threading
import time

from ..errors import (
    ConflictError,
    RefLockError,
    StorageError,
)
from .files import FilePool, claim

_log = logging.getLogger(__name__)


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


def take_ref_lock(lock: str, name: str, pool: FilePool | None = None) -> int:
    """Create and flock ``lock`` (git's ``<ref>.lock``); its descriptor, or -1 when
    it exists (a stale one is removed first, and the caller retries).

    With a ``pool``, the file is one the pool created beforehand: flocked, then
    claimed as ``lock`` by an exclusive rename (:func:`claim`), so no file is
    created on the update's path (format.md, 19). Without a pooled file, or
    where the exclusive rename is not available, it is created here."""
    f = pool.take() if pool is not None else None
    if f is not None:
        fd, tmp = f
        got: bool | None = None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)  # before the claim: the lock is never seen unflocked
            except OSError:
                # No flock here: the age rule alone judges it, and the file was made a
                # while ago. (A flocked lock is never judged by its age, and once our
                # flock is gone the lock is renamed, removed, or left by a dead writer.)
                os.utime(fd)
            for attempt in range(2):
                try:
                    got = claim(tmp, lock)
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
        return (
            f"the ref lock {lock} is held by a running gitckpt process (for {age:.0f} s); "
            "try again when it has finished"
        )
    return (
        f"the ref lock {lock} was not released (unchanged for {age:.0f} s, and no gitckpt process holds it); "
        f"it is removed once unchanged for {REF_LOCK_STALE:.0f} s. If a git command is still running on "
        "this repository, let it finish; if none is, delete the file and try again"
    )


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
