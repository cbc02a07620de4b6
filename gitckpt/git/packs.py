"""Write git objects as one small pack file: the pack format, by hand.

A loose object is a new file, and creating a file is the slowest thing a put
does (measured: ~130 µs on the CI machine's ext4, whatever library does it).
A checkpoint writes about eight objects, so gitckpt writes each put's objects
as one pack instead: two files (``pack-<sha>.pack`` and its ``.idx``) in
``objects/pack``. Git, libgit2 and every other git tool read packs natively;
the background ``git repack --geometric`` (repo.py) merges the small packs.

Formats: https://git-scm.com/docs/pack-format (pack version 2, index version 2).
Objects are stored whole (no deltas: git's repack adds those later).
"""

from __future__ import annotations

import errno
import hashlib
import itertools
import os
import struct
import threading
import zlib
from collections.abc import Callable
from typing import Any

OBJ_COMMIT, OBJ_TREE, OBJ_BLOB = 1, 2, 3
_NAMES = {OBJ_COMMIT: b"commit", OBJ_TREE: b"tree", OBJ_BLOB: b"blob"}


def object_id(kind: int, data: bytes) -> bytes:
    """The raw 20-byte SHA-1 git gives an object of this kind and content."""
    h = hashlib.sha1(_NAMES[kind] + b" %d\x00" % len(data))
    h.update(data)
    return h.digest()


def tree_bytes(entries: dict[str, tuple[bytes, int]]) -> bytes:
    """A git tree object's content; entries are ``name -> (raw oid, mode)``.

    Entries are ordered as git orders them: by name, a tree's name compared as
    if it ended in ``/``; modes are written without leading zeros. (Each name is
    encoded once and its entry formatted before the sort: a third faster than
    sorting with a key function, and trees are built at every put.)
    """
    rows = []
    for name, (raw, mode) in entries.items():
        b = name.encode("utf-8")
        rows.append((b + b"/" if mode == 0o040000 else b, b"%o %s\x00%s" % (mode, b, raw)))
    rows.sort()
    return b"".join([row[1] for row in rows])


def parse_tree(data: bytes, oid: Callable[..., Any] | None = None) -> dict[str, tuple[Any, int]]:
    """The entries of a git tree object's content: ``name -> (raw oid, mode)``, or
    ``name -> (oid(raw=raw oid), mode)`` (one pass, no second dict: a scan reads a tree per object)."""
    out: dict[str, tuple[Any, int]] = {}
    pos, n = 0, len(data)
    find = data.find
    while pos < n:
        sp = find(b" ", pos)
        nul = find(b"\x00", sp)
        if sp < 0 or nul < 0 or nul + 21 > n:
            raise ValueError("truncated tree entry")
        raw = data[nul + 1 : nul + 21]
        out[data[sp + 1 : nul].decode("utf-8", "surrogateescape")] = (
            raw if oid is None else oid(raw=raw),
            int(data[pos:sp], 8),
        )
        pos = nul + 21
    return out


def _obj_header(kind: int, size: int) -> bytes:
    byte = (kind << 4) | (size & 0x0F)
    size >>= 4
    out = bytearray()
    while size:
        out.append(byte | 0x80)
        byte = size & 0x7F
        size >>= 7
    out.append(byte)
    return bytes(out)


_ZLIB_HEADER = b"\x78\x01"  # deflate, 32 KiB window, no dictionary, "fastest"
_STORED_MAX = 0xFFFF


def _deflate(data: bytes) -> bytes:
    """A zlib stream of "stored" (uncompressed) deflate blocks holding ``data``.

    Stored, not compressed: valid for git, costing a copy and an Adler-32
    instead of 25-110 µs an object (measured: compression was 80 % of writing a
    put's pack); these small packs live only until the background ``git
    repack -F`` rolls them up with deltas (maintenance.py; without ``-F`` git
    reused most of them whole, format.md 28), so the space they take in
    the meantime is bounded by PACK_EVERY packs. Written by hand (RFC 1950/1951):
    0.5 µs for 300 bytes and 3.4 µs for 10 KB, against 1.0 and 4.2 µs with
    ``zlib.compressobj(0)`` (measured).
    """
    n = len(data)
    if n <= _STORED_MAX:
        blocks = [b"\x01", struct.pack("<HH", n, n ^ 0xFFFF), data]
    else:
        blocks = []
        for i in range(0, n, _STORED_MAX):
            part = data[i : i + _STORED_MAX]
            last = i + _STORED_MAX >= n
            blocks += [b"\x01" if last else b"\x00", struct.pack("<HH", len(part), len(part) ^ 0xFFFF), part]
    return b"".join([_ZLIB_HEADER, *blocks, struct.pack(">I", zlib.adler32(data))])


def build_pack(objects: list[tuple[int, bytes, bytes]]) -> tuple[bytes, bytes, bytes]:
    """``(pack, idx, checksum)`` for ``objects`` = ``[(kind, data, raw_oid), ...]`` (unique oids)."""
    body = bytearray(b"PACK" + struct.pack(">II", 2, len(objects)))
    rows = []
    for kind, data, raw in objects:
        entry = _obj_header(kind, len(data)) + _deflate(data)
        rows.append((raw, zlib.crc32(entry) & 0xFFFFFFFF, len(body)))
        body += entry
    checksum = hashlib.sha1(body).digest()
    body += checksum
    rows.sort()
    counts = [0] * 256
    for raw, _, _ in rows:
        counts[raw[0]] += 1
    fanout = list(itertools.accumulate(counts))
    n = len(rows)
    idx = bytearray(b"\xfftOc" + struct.pack(">I", 2))
    idx += struct.pack(">256I", *fanout)
    idx += b"".join(raw for raw, _, _ in rows)
    idx += struct.pack(f">{n}I", *(crc for _, crc, _ in rows))
    idx += struct.pack(f">{n}I", *(off for _, _, off in rows))  # packs stay far below 2 GiB
    idx += checksum
    idx += hashlib.sha1(idx).digest()
    return bytes(body), bytes(idx), checksum


def write_pack(
    pack_dir: str,
    objects: list[tuple[int, bytes, bytes]],
    fsync: bool = False,
    files: Callable[[], tuple[int, str] | None] | None = None,
) -> tuple[str, bytes, bytes]:
    """Write ``objects`` as ``pack-<sha>.pack`` + ``.idx`` in ``pack_dir``.

    Returns ``(name, pack bytes, idx bytes)``, ``name`` being ``pack-<sha>``
    (``fsync`` mode journals the bytes: journal.py). ``files`` hands out open,
    empty files created beforehand (repo.py's file pool); without one, a
    temporary file is created here.

    Each file is written under a temporary name and renamed into place, the
    ``.idx`` last: git reads a pack only once its ``.idx`` exists, so a reader
    sees either no pack or a complete one. A pack of the very same objects that
    is already there is replaced by identical bytes, which is harmless, so there
    is no check for it (in the benchmark's profiles that ``stat`` in the pack
    directory took 80-140 µs a call on average). A crash
    mid-write leaves a ``tmp_`` file or an index-less ``.pack``, which git
    ignores and ``git gc`` removes.
    """
    pack, idx, checksum = build_pack(objects)
    stem = "pack-" + checksum.hex()
    name = os.path.join(pack_dir, stem)
    for ext, data in ((".pack", pack), (".idx", idx)):
        put_file(name + ext, data, fsync, files() if files is not None else None)
    return stem, pack, idx


def write_all(fd: int, data: bytes | bytearray | memoryview, offset: int | None = None) -> None:
    """Write all of ``data`` (at ``offset``, or at the file position).

    ``os.write`` may write less than asked when the disk fills up, and say so
    only by its return value; a file renamed into place after a short write
    would be a truncated pack. A write that makes no progress raises ENOSPC.
    """
    view = memoryview(data)
    while view:
        n = os.write(fd, view) if offset is None else os.pwrite(fd, view, offset)
        if n <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        view = view[n:]
        if offset is not None:
            offset += n


def put_file(path: str, data: bytes, fsync: bool = False, file: tuple[int, str] | None = None) -> None:
    """Write ``data`` into ``file`` (an open, empty ``(fd, path)``; by default a
    new ``tmp_`` file next to ``path``) and rename it to ``path``."""
    if file is None:
        folder, base = os.path.split(path)
        # never ending in .pack or .idx: git (a concurrent repack) takes such a name for a pack
        tmp = os.path.join(folder, f"tmp_gitckpt_{os.getpid()}_{threading.get_ident()}_{base}.tmp")
        file = (os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o444), tmp)
    fd, tmp = file
    try:
        try:
            write_all(fd, data)
            os.fchmod(fd, 0o444)  # read-only, as git's packs are (the file pool's files are 0644)
            if fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


# -- merging packs without mapping them (format.md 22) ---------------------------------

OBJ_TAG = 4
_WHOLE = (OBJ_COMMIT, OBJ_TREE, OBJ_BLOB, OBJ_TAG)  # 6 and 7 are deltas


class NotMergeable(ValueError):
    """A pack :class:`PackMerger` cannot copy: it has deltas, 64-bit offsets, or is damaged."""


def read_idx(data: bytes) -> tuple[list[bytes], list[int], list[int], bytes]:
    """``(oids, crcs, offsets, pack checksum)`` of a version 2 pack index.

    Raises :class:`NotMergeable` for anything else, or an index that needs
    64-bit offsets (only packs over 2 GiB do)."""
    import array

    if data[:8] != b"\xfftOc\x00\x00\x00\x02" or len(data) < 8 + 1024 + 40:
        raise NotMergeable("not a version 2 pack index")
    n = int.from_bytes(data[8 + 255 * 4 : 8 + 256 * 4], "big")
    base = 8 + 1024
    if len(data) != base + 28 * n + 40:  # a 64-bit offset table makes it longer
        raise NotMergeable("index with 64-bit offsets, or truncated")
    if hashlib.sha1(data[:-20]).digest() != data[-20:]:
        raise NotMergeable("index checksum mismatch")
    oids = [data[base + 20 * i : base + 20 * i + 20] for i in range(n)]
    words = array.array("I", data[base + 20 * n : base + 28 * n])
    if words.itemsize != 4:  # pragma: no cover - every platform gitckpt runs on
        raise NotMergeable("no 32-bit array type")
    if struct.pack("=I", 1) != struct.pack(">I", 1):
        words.byteswap()
    return oids, list(words[:n]), list(words[n:]), data[-40:-20]


class PackMerger:
    """One new pack made of whole entries copied from other packs, without mapping them.

    gitckpt's own packs (one per update) store every object whole, so an
    entry's bytes (its header and zlib stream) are valid in any pack: copying
    them needs neither inflating nor deltas, and each source pack is read with
    plain ``read`` calls, one at a time, so merging thousands of packs holds one
    file open and maps nothing (git maps every pack it opens, and fails past
    ``vm.max_map_count``). Duplicate objects are copied once.

    ``add`` copies a source (its index and pack bytes) or raises
    :class:`NotMergeable` without changing anything; ``finish`` writes the
    header, trailer and index, syncs both files and renames the pack and then
    its index into place (a reader sees the pack complete or not at all), and
    syncs the directory, so that the sources can be deleted afterwards.
    """

    def __init__(self, pack_dir: str) -> None:
        self.dir = pack_dir
        self.tmp = os.path.join(pack_dir, f"tmp_gitckpt_merge_{os.getpid()}_{os.urandom(6).hex()}")
        self.fd = os.open(self.tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o444)
        self.size = 12
        self.rows: dict[bytes, tuple[int, int]] = {}  # oid -> (crc, offset)
        write_all(self.fd, b"PACK" + struct.pack(">II", 2, 0), 0)

    def add(self, idx: bytes, pack: bytes) -> int:
        """Copy the objects of one pack not copied yet; returns how many."""
        oids, crcs, offsets, checksum = read_idx(idx)
        n = len(oids)
        if pack[:8] != b"PACK\x00\x00\x00\x02" or int.from_bytes(pack[8:12], "big") != n:
            raise NotMergeable("not a version 2 pack, or not the one its index describes")
        if pack[-20:] != checksum or hashlib.sha1(memoryview(pack)[:-20]).digest() != checksum:
            raise NotMergeable("pack checksum mismatch")
        order = sorted(range(n), key=offsets.__getitem__)
        ends = [offsets[j] for j in order[1:]] + [len(pack) - 20]
        view = memoryview(pack)
        entries = []
        for i, end in zip(order, ends):
            start = offsets[i]
            if not 12 <= start < end or (pack[start] >> 4) & 7 not in _WHOLE:
                raise NotMergeable("a delta, or a bad offset")
            entry = view[start:end]
            if zlib.crc32(entry) & 0xFFFFFFFF != crcs[i]:
                raise NotMergeable("entry checksum mismatch")
            entries.append((oids[i], crcs[i], entry))
        out = bytearray()
        new: dict[bytes, tuple[int, int]] = {}
        for oid, crc, entry in entries:
            if oid in self.rows or oid in new:
                continue
            new[oid] = (crc, self.size + len(out))
            out += entry
        if self.size + len(out) >= 1 << 31:  # offsets fit in 31 bits: the caller keeps batches far smaller
            raise NotMergeable("the merged pack would need 64-bit offsets")
        write_all(self.fd, out, self.size)
        self.size += len(out)
        self.rows.update(new)
        return len(new)

    def finish(self, mtime: float | None = None) -> str:
        """Install the merged pack (pack, then index); returns its ``pack-<sha>`` name."""
        n = len(self.rows)
        write_all(self.fd, b"PACK" + struct.pack(">II", 2, n), 0)
        h = hashlib.sha1()
        pos = 0
        while pos < self.size:
            chunk = os.pread(self.fd, min(1 << 22, self.size - pos), pos)
            if not chunk:
                raise OSError(errno.EIO, "merged pack shorter than written")
            h.update(chunk)
            pos += len(chunk)
        checksum = h.digest()
        write_all(self.fd, checksum, self.size)
        os.fsync(self.fd)
        os.close(self.fd)
        self.fd = -1
        rows = sorted(self.rows.items())
        counts = [0] * 256
        for oid, _ in rows:
            counts[oid[0]] += 1
        idx = bytearray(b"\xfftOc" + struct.pack(">I", 2))
        idx += struct.pack(">256I", *itertools.accumulate(counts))
        idx += b"".join(oid for oid, _ in rows)
        idx += struct.pack(f">{n}I", *(crc for _, (crc, _) in rows))
        idx += struct.pack(f">{n}I", *(off for _, (_, off) in rows))
        idx += checksum
        idx += hashlib.sha1(idx).digest()
        stem = "pack-" + checksum.hex()
        name = os.path.join(self.dir, stem)
        if mtime is not None:
            os.utime(self.tmp, (mtime, mtime))
        os.rename(self.tmp, name + ".pack")
        tmp_idx = self.tmp + "_idx"
        fd = os.open(tmp_idx, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444)
        try:
            write_all(fd, idx)
            os.fsync(fd)
        finally:
            os.close(fd)
        if mtime is not None:
            os.utime(tmp_idx, (mtime, mtime))
        os.rename(tmp_idx, name + ".idx")
        dfd = os.open(self.dir, os.O_RDONLY)
        try:
            os.fsync(dfd)  # the new names are on disk before any source is deleted
        finally:
            os.close(dfd)
        return stem

    def abort(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        for path in (self.tmp, self.tmp + "_idx"):
            try:
                os.unlink(path)
            except OSError:
                pass
