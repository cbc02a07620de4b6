"""GitStore's index cache file: the index of the store branch saved for the next process.

A new process otherwise reads every item blob of the store's tree before it
can answer anything (50,000 items: ~1.8 s). With this file it reads one file
and catches up with the branch by the tree difference, as it does after
another process's write (docs/format.md 24, docs/store.md S4).

The file is derived data in the repository's private area
(``gitckpt-cache/store/index``, not a ref, never pushed) and is never
trusted: it names the commit and tree it was made from, which must still be
in the repository; its size and a CRC-32 are checked; it is read with plain
msgpack (no extension types are turned into objects) and every column is
checked for its type and length before an index is built from it. Anything
wrong, and the store reads the branch from git as if there were no file.

Layout::

    b"gitckpt-store-index\\n"
    <u32 version> <u64 meta bytes> <u64 vector bytes> <u32 crc32 of what follows>
    <meta: one msgpack map of columns, one entry per item, in index order>
    <vectors: R x dims float32 little-endian, then R float64 norms>

Items are written namespace by namespace (sorted) and, inside a namespace,
in creation order (``created``, then key): the order a fresh load from git
gives, so a store loaded from the file holds exactly what one loaded from the
same tree would. The expiry written is the one stored in git, not a TTL
refresh this process holds but has not written.
"""

from __future__ import annotations

import itertools
import os
import struct
import zlib
from typing import Any

import msgpack
import numpy as np

from ..git.cache import gc_paused, only_types
from ..git.repo import Oid
from .index import Rec, StoreIndex

MAGIC = b"gitckpt-store-index\n"
VERSION = 1
_HEAD = struct.Struct("<IQQI")
_OFFSET = len(MAGIC) + _HEAD.size

#: Below this many items a store loads from git in ~35 ms or less: no file.
MIN_ITEMS = 1000

# datetime's range in µs since the epoch: a timestamp outside it cannot be shown
_US_MIN = -62135596800 * 1_000_000
_US_MAX = 253402300799 * 1_000_000 + 999_999


def cache_path(gitdir: str) -> str:
    """The file of the store branch (``refs/heads/store``; other branches, such as
    ``gitckpt reproduce``'s scratch stores, have none)."""
    return os.path.join(gitdir, "gitckpt-cache", "store", "index")


# -- writing ----------------------------------------------------------------------


def _order(rec: Rec) -> tuple[int, str]:
    return rec.created, rec.key


def snapshot(idx: StoreIndex, tip: Oid, tree: Oid, dims_config: int | None) -> tuple[dict, bytes]:
    """The columns of ``idx`` (which reflects commit ``tip``, tree ``tree``) and its
    vectors. Call it under the store's lock; it copies what it needs, so
    :func:`encode` and the write can run without the lock."""
    names: list[list[str]] = []
    counts: list[int] = []
    keys: list[str] = []
    vbytes: list[bytes] = []
    created: list[int] = []
    updated: list[int] = []
    ttl: list[Any] = []
    expires: list[int | None] = []
    index: list[Any] = []
    oids: list[bytes] = []
    vcount: list[int] = []
    vfield: list[str] = []
    vdigest: list[bytes] = []
    vrow: list[int] = []
    rows: list[int] = []
    for ns in idx.names:
        recs = sorted(idx.data[ns].values(), key=_order)
        names.append(list(ns))
        counts.append(len(recs))
        for r in recs:
            keys.append(r.key)
            vbytes.append(r.vbytes)
            created.append(r.created)
            updated.append(r.updated)
            ttl.append(r.ttl)
            expires.append(r.stored_expires)
            index.append(r.index if r.index is None or r.index is False else list(r.index))
            oids.append(r.oid.raw)
            vcount.append(len(r.vecs))
            for field, digest, row in r.vecs:
                vfield.append(field)
                vdigest.append(digest)
                if row is None:
                    vrow.append(-1)
                else:
                    vrow.append(len(rows))
                    rows.append(row)
    sel = np.asarray(rows, dtype=np.int64)
    dims = idx.dims if idx.dims is not None else 0
    mat = np.ascontiguousarray(idx._mat[sel], dtype="<f4") if rows else np.zeros((0, dims), dtype="<f4")
    norms = np.ascontiguousarray(idx._norm[sel], dtype="<f8") if rows else np.zeros(0, dtype="<f8")
    meta = {
        "tip": tip.raw,
        "tree": tree.raw,
        "dims_config": dims_config,
        "dims": idx.dims,
        "rows": len(rows),
        "ns": names,
        "count": counts,
        "key": keys,
        "value": vbytes,
        "created": created,
        "updated": updated,
        "ttl": ttl,
        "expires": expires,
        "index": index,
        "oid": b"".join(oids),
        "vcount": vcount,
        "vfield": vfield,
        "vdigest": vdigest,
        "vrow": vrow,
    }
    return meta, mat.tobytes() + norms.tobytes()


def encode(meta: dict, vectors: bytes) -> bytes:
    body = msgpack.packb(meta, use_bin_type=True)
    crc = zlib.crc32(vectors, zlib.crc32(body))
    return MAGIC + _HEAD.pack(VERSION, len(body), len(vectors), crc) + body + vectors


# -- reading ----------------------------------------------------------------------


class Loaded:
    """What a valid file holds: the commit and tree it reflects, and the columns."""

    __slots__ = ("tip", "tree", "meta", "vectors")

    def __init__(self, tip: Oid, tree: Oid, meta: dict, vectors: memoryview) -> None:
        self.tip = tip
        self.tree = tree
        self.meta = meta
        self.vectors = vectors


def read(path: str) -> Loaded | None:
    """The file at ``path`` if it is whole and of this version, else None."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError:
        return None
    return parse(data)


def parse(data: bytes) -> Loaded | None:
    if len(data) < _OFFSET or not data.startswith(MAGIC):
        return None
    version, meta_len, vec_len, crc = _HEAD.unpack_from(data, len(MAGIC))
    if version != VERSION or _OFFSET + meta_len + vec_len != len(data):
        return None
    view = memoryview(data)
    body, vectors = view[_OFFSET : _OFFSET + meta_len], view[_OFFSET + meta_len :]
    if zlib.crc32(vectors, zlib.crc32(body)) != crc:
        return None
    try:
        meta = msgpack.unpackb(body, raw=False, strict_map_key=True)
    except Exception:  # any malformed msgpack (ValueError, ExtraData, StackError, ...)
        return None
    if type(meta) is not dict:
        return None
    tip, tree = meta.get("tip"), meta.get("tree")
    if type(tip) is not bytes or type(tree) is not bytes or len(tip) != 20 or len(tree) != 20:
        return None
    return Loaded(Oid(raw=tip), Oid(raw=tree), meta, vectors)


def _only(column: Any, n: int, *types: type) -> bool:
    return type(column) is list and len(column) == n and only_types(column, *types)


def _ints_in(column: list, low: int, high: int) -> np.ndarray | None:
    try:
        arr = np.asarray(column, dtype=np.int64) if column else np.zeros(0, dtype=np.int64)
    except (OverflowError, ValueError, TypeError):
        return None
    if arr.size and (arr.min() < low or arr.max() > high):
        return None
    return arr


def fill(idx: StoreIndex, loaded: Loaded) -> bool:
    """Build the empty index ``idx`` from ``loaded``; False (``idx`` left empty)
    if any column has the wrong type or length."""
    try:
        with gc_paused():  # everything built here lives on: collecting would only walk it again
            ok = _fill(idx, loaded.meta, loaded.vectors)
    except (KeyError, TypeError, ValueError, OverflowError):
        ok = False
    if not ok:
        idx.__init__(idx.dims_config)  # type: ignore[misc]
    return ok


def _fill(idx: StoreIndex, m: dict, vectors: memoryview) -> bool:
    assert not idx.data, "fill() builds an empty index"
    names, counts = m["ns"], m["count"]
    if not _only(names, len(names), list) or not _only(counts, len(names), int):
        return False
    nss = []
    for labels in names:
        if not labels or not _only(labels, len(labels), str):
            return False
        nss.append(tuple(labels))
    if any(a >= b for a, b in zip(nss, nss[1:])) or any(c <= 0 for c in counts):
        return False  # namespaces sorted, each once, none empty
    n = sum(counts)
    keys, vbytes, ttl, expires, index = m["key"], m["value"], m["ttl"], m["expires"], m["index"]
    if not (
        _only(keys, n, str)
        and _only(vbytes, n, bytes)
        and _only(m["created"], n, int)
        and _only(m["updated"], n, int)
        and _only(ttl, n, type(None), int, float)
        and _only(expires, n, type(None), int)
        and _only(index, n, type(None), bool, list)
        and type(m["oid"]) is bytes
        and len(m["oid"]) == 20 * n
    ):
        return False
    for x in index:
        if x is True or (type(x) is list and not _only(x, len(x), str)):
            return False
    created = _ints_in(m["created"], _US_MIN, _US_MAX)
    updated = _ints_in(m["updated"], _US_MIN, _US_MAX)
    if created is None or updated is None or _ints_in([e for e in expires if e is not None], _US_MIN, _US_MAX) is None:
        return False
    # vectors: vcount per item, then one (field, digest, row) per vector; rows 0..R-1 in order
    vcount, vfield, vdigest = m["vcount"], m["vfield"], m["vdigest"]
    if not _only(vcount, n, int):
        return False
    v = sum(vcount)
    if min(vcount, default=0) < 0 or not _only(vfield, v, str) or not _only(vdigest, v, bytes):
        return False
    vrow = _ints_in(m["vrow"], -1, v) if _only(m["vrow"], v, int) else None
    r, dims = m["rows"], m["dims"]
    if vrow is None or type(r) is not int or not np.array_equal(vrow[vrow >= 0], np.arange(r)):
        return False
    if dims is not None and (type(dims) is not int or dims <= 0):
        return False
    if r and dims is None:
        return False
    # Vectors of another length than the writer's index took are not in the file
    # (row -1); a reader whose index would take other lengths cannot use it.
    config = idx.dims_config
    if m["dims_config"] != config and (
        (vrow < 0).any() or (config is not None and dims is not None and dims != config)
    ):
        return False
    width = dims or 0
    if len(vectors) != r * (width * 4 + 8):
        return False
    # the index
    oid_raw = m["oid"]
    oids = [Oid(raw=oid_raw[i : i + 20]) for i in range(0, 20 * n, 20)]
    ns_col = itertools.chain.from_iterable(itertools.repeat(ns, c) for ns, c in zip(nss, counts))
    recs = list(
        map(Rec, ns_col, keys, itertools.repeat(None), vbytes, m["created"], m["updated"], ttl, expires, index, oids)
    )
    rows = [None if x < 0 else x for x in m["vrow"]]
    if v == n and min(vcount, default=1) == 1:  # one vector per item, the common case
        for i, (rec, f, d, row) in enumerate(zip(recs, vfield, vdigest, rows)):
            rec.id = i
            rec.vecs = [[f, d, row]]
    else:
        j = 0
        for i, (rec, k) in enumerate(zip(recs, vcount)):
            rec.id = i
            rec.vecs = [[vfield[x], vdigest[x], rows[x]] for x in range(j, j + k)]
            j += k
    data: dict[tuple[str, ...], dict[str, Rec]] = {}
    at = 0
    for ns, c in zip(nss, counts):
        d = data[ns] = dict(zip(keys[at : at + c], recs[at : at + c]))
        if len(d) != c:
            return False  # a key twice in a namespace
        at += c
    idx.data = data
    idx.names = nss
    idx._ids = list(recs)
    idx.n_ttl = n - expires.count(None)
    if dims is not None:
        idx.dims = dims
    mat = np.frombuffer(vectors, dtype="<f4", count=r * width).reshape(r, width)
    idx._mat = mat.astype(np.float32)  # a copy: the index writes into its matrix
    idx._norm = np.frombuffer(vectors, dtype="<f8", offset=r * width * 4, count=r).astype(np.float64)
    owner = np.repeat(np.arange(n, dtype=np.int64), np.asarray(vcount, dtype=np.int64))
    idx._owner = owner[vrow >= 0].copy()
    idx._rows = r
    return True
