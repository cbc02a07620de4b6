"""The write-ahead journal of ``durability="fsync"`` (docs/format.md, 13).

In ``fsync`` mode an update must be on disk before it returns. Making git's own
files durable takes two flushes of the file system per update (the objects
before a ref names them, then the ref), each of which commits the file
system's journal. Instead, each writing process appends what an update writes
(its small packs, byte for byte, and its ref moves) to a journal file of its
own, preallocated so that ``fdatasync`` flushes data only, and writes git's
files as in ``os`` mode: one flush an update, before the ref moves, so that
nothing becomes visible in git before it is durable.

When the journal is full it is checkpointed: one ``syncfs`` makes every git
file written so far durable, and the journal starts over. ``close()`` does the
same and deletes the file. A journal left behind by a process that died
(its ``flock`` is free) is replayed by the next process that opens the
repository: packs whose files are missing or differ are written again, and each
ref move is redone where the ref still holds the value it was moved from.
"""

from __future__ import annotations

import fcntl
import os
import struct
import time
import zlib
from collections.abc import Callable, Iterator

import msgpack

from . import packs

#: ``fdatasync`` where the platform has it (Linux), else ``fsync`` (macOS).
_fdatasync = getattr(os, "fdatasync", os.fsync)

DIRNAME = "gitckpt-journal"
SUFFIX = ".wal"
#: The journals of log-first writers (format.md 21): records hold objects, not
#: packs. Another suffix, so that a gitckpt older than the log-first update,
#: which would stop at such a record and delete the file, never takes one.
LOG_SUFFIX = ".log"

#: Bytes preallocated per journal. An update's record is its new objects
#: (a chat turn's are a few KiB); one larger than half of this bypasses the
#: journal and is made durable with two ``syncfs`` as before.
CAPACITY = 2 << 20

_HEADER = b"GITCKPT-JOURNAL\x01"
_HEADER_FMT = ">16sQI"  # magic, generation, crc32 of the first two
_HEADER_SIZE = struct.calcsize(_HEADER_FMT)
_DATA_START = 4096
_REC = b"GCKR"
_REC_FMT = ">4sQQII"  # magic, generation, sequence number, payload length, crc32
_REC_SIZE = struct.calcsize(_REC_FMT)

#: A pack as journalled: (file name without extension, .pack bytes, .idx bytes).
PackFiles = tuple[str, bytes, bytes]
#: A ref move: (ref name, old id or None for a new ref, new id), ids as hex.
RefMove = tuple[str, "str | None", str]
#: An object as a log-first record holds it: (kind, content).
LoggedObject = tuple[int, bytes]


class Journal:
    """One process's journal file, created on first use and held under ``flock``."""

    def __init__(
        self,
        gitdir: str,
        syncfs: Callable[[], None],
        capacity: int | None = None,
        *,
        suffix: str = SUFFIX,
        sync: bool = True,
        before_reset: Callable[[], None] | None = None,
    ) -> None:
        self.dir = os.path.join(gitdir, DIRNAME)
        self.syncfs = syncfs
        self.capacity = capacity or CAPACITY
        self.suffix = suffix
        #: flush each record to disk (``fsync`` mode); without, a record is a
        #: ``write`` into the page cache: it survives a crash of the process
        self.sync = sync
        #: log-first (format.md 21): publish what only the journal holds before it starts over
        self.before_reset = before_reset
        self.path: str | None = None
        self.fd = -1
        self.pid = -1
        self.generation = 0
        self.seq = 0
        self.offset = _DATA_START
        self.checkpoints = 0  # how many times it filled up (tests read it)

    def append(self, packs_written: list[PackFiles], refs: list[RefMove]) -> bool:
        """Make one update durable; False if it is too large (the caller uses barriers)."""
        payload = msgpack.packb([[list(p) for p in packs_written], [list(r) for r in refs]], use_bin_type=True)
        if _REC_SIZE + len(payload) > (self.capacity - _DATA_START) // 2:
            return False
        self._ensure_open()
        if self.offset + _REC_SIZE + len(payload) > self.capacity:
            self.checkpoint()
        self.seq += 1
        head = struct.pack(_REC_FMT, _REC, self.generation, self.seq, len(payload), 0)
        crc = zlib.crc32(payload, zlib.crc32(head)) & 0xFFFFFFFF
        head = struct.pack(_REC_FMT, _REC, self.generation, self.seq, len(payload), crc)
        packs.write_all(self.fd, head + payload, self.offset)
        _fdatasync(self.fd)
        self.offset += len(head) + len(payload)
        return True

    @staticmethod
    def encode(objects: list[LoggedObject], refs: list[RefMove]) -> bytes:
        """A log-first record's payload (format.md 21): an update's new objects and its ref moves."""
        return msgpack.packb([[], [list(r) for r in refs], [list(o) for o in objects]], use_bin_type=True)

    def room(self, payload: bytes) -> bool | None:
        """Does ``payload`` fit after the last record? None: never (more than half the journal)."""
        if _REC_SIZE + len(payload) > (self.capacity - _DATA_START) // 2:
            return None
        self._ensure_open()
        return self.offset + _REC_SIZE + len(payload) <= self.capacity

    def log(self, payload: bytes) -> None:
        """Append one log-first record (:meth:`encode`); check :meth:`room` first."""
        self.seq += 1
        head = struct.pack(_REC_FMT, _REC, self.generation, self.seq, len(payload), 0)
        crc = zlib.crc32(payload, zlib.crc32(head)) & 0xFFFFFFFF
        head = struct.pack(_REC_FMT, _REC, self.generation, self.seq, len(payload), crc)
        try:
            packs.write_all(self.fd, head + payload, self.offset)
            if self.sync:
                _fdatasync(self.fd)
        except BaseException:
            self.seq -= 1  # the next record goes over it; a torn one is never read past
            raise
        self.offset += len(head) + len(payload)

    def checkpoint(self) -> None:
        """Make every git file written so far durable, then start the journal over."""
        if self.before_reset is not None:
            self.before_reset()
        if self.fd < 0 or self.pid != os.getpid():
            return
        if self.sync:
            self.syncfs()
        self.restart()
        self.checkpoints += 1

    def restart(self) -> None:
        """Start over: a new generation, so that no record written so far is read
        again. Only once what the records hold is in git (and durable, in ``fsync`` mode)."""
        if self.fd < 0 or self.pid != os.getpid():
            return
        self.generation += 1
        self.seq = 0
        self.offset = _DATA_START
        self._write_header()

    def close(self) -> None:
        """Make everything durable in git itself and delete the journal."""
        if self.fd < 0:
            return
        if self.pid == os.getpid():
            if self.sync:
                self.syncfs()
            try:
                os.unlink(self.path)  # type: ignore[arg-type]
            except OSError:
                pass
        self._drop()

    def _drop(self) -> None:
        try:
            os.close(self.fd)
        except OSError:
            pass
        self.fd, self.path, self.pid = -1, None, -1

    def _ensure_open(self) -> None:
        if self.fd >= 0 and self.pid == os.getpid():
            return
        if self.fd >= 0:  # inherited across fork(): the parent's, not ours
            self._drop()
        os.makedirs(self.dir, exist_ok=True)
        # Created under a temporary name and renamed once locked, so that
        # recovery (which only looks at *.wal it can lock) never takes a live one.
        stem = f"{os.getpid()}-{os.urandom(4).hex()}"
        tmp = os.path.join(self.dir, stem + ".tmp")
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if self.sync:
                # Real zeros, not fallocate: writing over allocated, written blocks
                # needs no metadata change, so fdatasync is a data flush only.
                packs.write_all(fd, bytes(self.capacity), 0)
            self.fd, self.pid = fd, os.getpid()
            self.generation, self.seq, self.offset = 1, 0, _DATA_START
            self._write_header(sync=False)
            if self.sync:
                os.fsync(fd)
            path = os.path.join(self.dir, stem + self.suffix)
            os.rename(tmp, path)
            if self.sync:
                _fsync_dir(self.dir)
            self.path = path
        except BaseException:
            os.close(fd)
            self.fd, self.pid = -1, -1
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise

    def _write_header(self, sync: bool = True) -> None:
        head = struct.pack(">16sQ", _HEADER, self.generation)
        packs.write_all(self.fd, struct.pack(_HEADER_FMT, _HEADER, self.generation, zlib.crc32(head) & 0xFFFFFFFF), 0)
        if sync and self.sync:
            _fdatasync(self.fd)


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_records(data: bytes) -> Iterator[tuple[list[PackFiles], list[RefMove]]]:
    """The valid records of a journal's bytes, in order, as ``(packs, ref moves)``;
    stops at the first torn or stale one."""
    for written, refs, _ in read_entries(data):
        yield written, refs


def read_entries(data: bytes) -> Iterator[tuple[list[PackFiles], list[RefMove], list[LoggedObject]]]:
    """As :func:`read_records`, with the objects of log-first records (format.md 21)."""
    if len(data) < _HEADER_SIZE:
        return
    magic, generation, crc = struct.unpack_from(_HEADER_FMT, data, 0)
    if magic != _HEADER or crc != zlib.crc32(struct.pack(">16sQ", magic, generation)) & 0xFFFFFFFF:
        return
    offset, seq = _DATA_START, 1
    while offset + _REC_SIZE <= len(data):
        magic, gen, n, length, crc = struct.unpack_from(_REC_FMT, data, offset)
        if magic != _REC or gen != generation or n != seq or offset + _REC_SIZE + length > len(data):
            return
        payload = data[offset + _REC_SIZE : offset + _REC_SIZE + length]
        head = struct.pack(_REC_FMT, _REC, gen, n, length, 0)
        if zlib.crc32(payload, zlib.crc32(head)) & 0xFFFFFFFF != crc:
            return
        try:
            pk, refs, *more = msgpack.unpackb(payload, raw=False)
            objects = [(int(k), bytes(d)) for k, d in more[0]] if more else []
            yield (
                [(str(a), bytes(b), bytes(c)) for a, b, c in pk],
                [(str(r), o, str(n_)) for r, o, n_ in refs],
                objects,
            )
        except (ValueError, TypeError, msgpack.UnpackException):
            return
        offset += _REC_SIZE + length
        seq += 1


class Orphans:
    """The journals of processes that died, locked by us while they are replayed."""

    def __init__(self, gitdir: str) -> None:
        self.dir = os.path.join(gitdir, DIRNAME)
        self.claimed: list[tuple[str, int]] = []

    def claim(self) -> list[tuple[list[PackFiles], list[RefMove], list[LoggedObject]]]:
        try:
            names = sorted(os.listdir(self.dir))
        except (FileNotFoundError, NotADirectoryError):
            return []
        records: list[tuple[list[PackFiles], list[RefMove], list[LoggedObject]]] = []
        for name in names:
            path = os.path.join(self.dir, name)
            if not name.endswith((SUFFIX, LOG_SUFFIX, ".tmp")):
                continue
            try:
                fd = os.open(path, os.O_RDWR)
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:  # its process is alive and holds it
                os.close(fd)
                continue
            if os.fstat(fd).st_nlink == 0:  # replayed and deleted by someone else meanwhile
                os.close(fd)
                continue
            if name.endswith(".tmp"):  # its writer died while creating it: it holds nothing yet
                # (a young one may be a live writer's, between its creation and its lock)
                if time.time() - os.fstat(fd).st_mtime > 60:
                    _unlink(path)
                os.close(fd)
                continue
            size = os.fstat(fd).st_size
            records.extend(read_entries(os.pread(fd, size, 0)))
            self.claimed.append((path, fd))
        return records

    def release(self, delete: bool) -> None:
        for path, fd in self.claimed:
            if delete:
                _unlink(path)
            os.close(fd)
        self.claimed = []


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def restore_pack(pack_dir: str, name: str, pack: bytes, idx: bytes) -> bool:
    """Make ``name``'s files hold exactly these bytes; True if anything was rewritten."""
    wrote = False
    base = os.path.join(pack_dir, name)
    for ext, data in ((".pack", pack), (".idx", idx)):
        try:
            with open(base + ext, "rb") as fh:
                if fh.read() == data:
                    continue
        except OSError:
            pass
        os.makedirs(pack_dir, exist_ok=True)
        packs.put_file(base + ext, data, fsync=True)
        wrote = True
    return wrote
