"""Files in the pack directory made ahead of time, and closed behind: what keeps
file creation and closing off an update's path (format.md 9 and 19).

``FilePool`` holds empty files created on a background thread; an update's
``.pack``, ``.idx`` and ref lock are renamed from them (``claim``: an exclusive
rename, ``renameat2(RENAME_NOREPLACE)``). ``closer`` closes replaced files and
runs chores off the caller's thread."""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import logging
import os
import threading
import weakref
from typing import Any

_log = logging.getLogger(__name__)


def _libc_syncfs():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        fn = libc.syncfs
        fn.argtypes = [ctypes.c_int]
        return fn
    except (OSError, AttributeError):
        return None


SYNCFS = _libc_syncfs()


def _libc_renameat2():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        fn = libc.renameat2
        fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
        return fn
    except (OSError, AttributeError):
        return None


RENAMEAT2 = _libc_renameat2()


_AT_FDCWD = -100


_RENAME_NOREPLACE = 1


def claim(src: str, dst: str) -> bool | None:
    """Rename ``src`` to ``dst`` only if ``dst`` does not exist (one atomic step,
    ``renameat2(RENAME_NOREPLACE)``): an exclusive create of ``dst`` whose file
    was made beforehand. True if claimed, False if ``dst`` exists, None if this
    system or file system cannot do it (the caller creates ``dst`` itself).
    Raises FileNotFoundError when ``dst``'s folder is missing."""
    if RENAMEAT2 is None:
        return None
    if RENAMEAT2(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), _RENAME_NOREPLACE) == 0:
        return True
    err = ctypes.get_errno()
    if err == errno.EEXIST:
        return False
    if err == errno.ENOENT and os.path.exists(src):
        raise FileNotFoundError(err, os.strerror(err), dst)
    return None  # EINVAL/ENOSYS (not supported here), EXDEV (objects/ elsewhere), ...


def write_atomic(path: str, data: bytes) -> bool:
    """Write ``data`` to ``path`` atomically: a temporary file beside it, then a rename
    (its folder is made if need be). False if it could not: the repository's derived
    files (index caches) are optional, and a read-only repository works without them."""
    tmp = f"{path}.{os.getpid()}.{threading.get_ident()}.tmp"
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(tmp, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
        return True
    except OSError:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        return False


class _Closer:
    """Closes file descriptors, and runs small file-system chores, on a background thread.

    Renaming a new ref file over the old one frees the old file's inode, and on
    ext4 that is the slowest step of an update (115-190 µs measured, against
    ~5 µs for the rename itself; with the ``discard`` mount option more). An
    update keeps the old ref file open across its rename, so the inode is only
    freed when that descriptor is closed: here, after the update has returned.
    The same thread creates the empty files of :class:`FilePool`.
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


closer = _Closer()


#: The file pool's own thread: closing replaced ref files (freeing their inodes)
#: took 1.7 ms an update on average on a loaded machine with ``discard``, and a
#: refill queued behind those closes left the pool empty (format.md, 19).
filler = _Closer("gitckpt-filler")


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=closer.after_fork_in_child)
    os.register_at_fork(after_in_child=filler.after_fork_in_child)


class FilePool:
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
    (claimed with ``renameat2(RENAME_NOREPLACE)``, :func:`claim`), so that no
    file is created on the update's path (format.md, 19). The pool is refilled
    when a third of it is used, so a burst of updates finds files ready.
    """

    def __init__(self, directory: str, size: int = 24) -> None:
        self.dir = directory
        self.size = size
        # everything the finalizer needs, and nothing that refers back to self
        self._state: dict[str, Any] = {
            "files": [],
            "pid": os.getpid(),
            "closed": False,
            "refilling": False,
            "cond": threading.Condition(),
        }
        self._finalizer = weakref.finalize(self, FilePool._discard, self._state)

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
            filler.call_soon(self._refill)
        return got

    def _refill(self) -> None:
        st = self._state
        made: list[tuple[int, str]] = []
        try:
            for _ in range(max(0, self.size - len(st["files"]))):
                path = os.path.join(self.dir, f"tmp_gitckpt_{os.getpid()}_{os.urandom(6).hex()}")
                # 0644: a ref lock is claimed from here as it is (no fchmod on the update's
                # path, 2 µs alone, 22 µs measured inside a busy writer); a pack or an
                # index written into one is made read-only as git's are (packs.put_file)
                made.append((os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644), path))
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
