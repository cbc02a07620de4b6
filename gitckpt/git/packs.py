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


def parse_tree(data: bytes) -> dict[str, tuple[bytes, int]]:
    """The entries of a git tree object's content: ``name -> (raw oid, mode)``."""
    out: dict[str, tuple[bytes, int]] = {}
    pos, n = 0, len(data)
    find = data.find
    while pos < n:
        sp = find(b" ", pos)
        nul = find(b"\x00", sp)
        if sp < 0 or nul < 0 or nul + 21 > n:
            raise ValueError("truncated tree entry")
        out[data[sp + 1 : nul].decode("utf-8", "surrogateescape")] = (data[nul + 1 : nul + 21], int(data[pos:sp], 8))
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
    repack`` recompresses them with deltas (repo.py), so the space they take in
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


def write_all(fd: int, data: bytes, offset: int | None = None) -> None:
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
