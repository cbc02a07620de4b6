"""GitStore's in-memory index: items, their order, and their vectors. No I/O.

Git is the source of truth; this index is derived from the tree at the tip of
``refs/heads/store`` and kept current by applying tree differences. It answers
every read: a get is a dict lookup, a search walks the namespaces under a
prefix in order (stopping as soon as a page is full when it can), and a
semantic search scores all candidate vectors at once with numpy.

Order is part of the contract (InMemoryStore's answers, see docs/store.md):
namespaces in name order; inside a namespace, items in creation order (an
update keeps an item's place, a delete and re-put moves it to the end), which
is what ``created_at`` records, so every process derives the same order.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import numpy as np

from ..errors import InvalidInputError
from .format import load_value, us_to_datetime

_OPS = ("$eq", "$ne", "$gt", "$gte", "$lt", "$lte")


class Rec:
    """One stored item as the index keeps it."""

    __slots__ = (
        "ns",
        "key",
        "_value",
        "vbytes",
        "created",
        "updated",
        "_created_dt",
        "_updated_dt",
        "ttl",
        "expires",
        "stored_expires",
        "index",
        "vecs",
        "oid",
        "id",
    )

    def __init__(self, ns, key, value, vbytes, created, updated, ttl, expires, index, oid) -> None:
        self.ns: tuple[str, ...] = ns
        self.key: str = key
        self._value: dict | None = value  # never handed out: results get a fresh copy from vbytes
        self.vbytes: bytes = vbytes
        self.created: int = created  # microseconds since the epoch (UTC)
        self.updated: int = updated
        self._created_dt: datetime | None = None
        self._updated_dt: datetime | None = None
        self.ttl: float | None = ttl  # minutes
        self.expires: int | None = expires  # effective expiry in this process (µs)
        self.stored_expires: int | None = expires  # the expiry written in git
        self.index = index
        self.vecs: list[list] = []  # [field, digest, row or None]
        self.oid = oid
        self.id = -1

    @property
    def value(self) -> dict:
        """The value (decoded from ``vbytes`` on first use: a store loaded from its
        cache file decodes only what a filter looks at)."""
        v = self._value
        if v is None:
            v = self._value = load_value(self.vbytes)
        return v

    @property
    def created_dt(self):
        if self._created_dt is None:
            self._created_dt = us_to_datetime(self.created)
        return self._created_dt

    @property
    def updated_dt(self):
        if self._updated_dt is None:
            self._updated_dt = us_to_datetime(self.updated)
        return self._updated_dt


# -- filters ------------------------------------------------------------------


def _num(x: Any) -> float | None:
    try:
        return float(x)
    except (TypeError, ValueError, OverflowError):
        return None


def _op_test(op: str, operand: Any) -> Callable[[Any], bool]:
    if op == "$eq":
        return lambda v: v == operand
    if op == "$ne":
        return lambda v: v != operand
    bound = _num(operand)
    if bound is None:
        raise InvalidInputError(f"filter operator {op} compares numbers; {operand!r} is not a number")
    if op == "$gt":
        return lambda v: (x := _num(v)) is not None and x > bound
    if op == "$gte":
        return lambda v: (x := _num(v)) is not None and x >= bound
    if op == "$lt":
        return lambda v: (x := _num(v)) is not None and x < bound
    return lambda v: (x := _num(v)) is not None and x <= bound


def _value_test(expected: Any) -> Callable[[Any], bool]:
    """A test of one value against a filter value, as InMemoryStore compares them
    (nested dicts field by field, lists element-wise, ``$`` operators), except
    that a value an operator cannot compare (missing, not a number) does not
    match instead of raising."""
    if isinstance(expected, dict):
        if any(k.startswith("$") for k in expected):
            for op in expected:
                if op not in _OPS:
                    raise InvalidInputError(f"unsupported filter operator {op!r}; use one of {', '.join(_OPS)}")
            tests = [_op_test(op, operand) for op, operand in expected.items()]
            if len(tests) == 1:
                return tests[0]
            return lambda v: all(t(v) for t in tests)
        fields = [(k, _value_test(v)) for k, v in expected.items()]
        return lambda v: isinstance(v, dict) and all(t(v.get(k)) for k, t in fields)
    if isinstance(expected, (list, tuple)):
        elems = [_value_test(e) for e in expected]
        n = len(elems)
        return lambda v: isinstance(v, (list, tuple)) and len(v) == n and all(t(x) for t, x in zip(elems, v))
    return lambda v: v == expected


def compile_filter(flt: dict[str, Any] | None) -> Callable[[dict], bool] | None:
    """A predicate on item values for a search ``filter`` (None: no filter)."""
    if not flt:
        return None
    if not isinstance(flt, dict):
        raise InvalidInputError(f"a search filter must be a dict, not {type(flt).__name__}")
    clauses: list[tuple] = []
    for key, expected in flt.items():
        if isinstance(expected, (dict, list, tuple)):
            clauses.append((key, _value_test(expected)))
        else:  # the common case, kept to one closure call
            clauses.append((key, None, expected))
    if len(clauses) == 1:
        c = clauses[0]
        if len(c) == 3:
            k, _, e = c
            return lambda v: v.get(k) == e
        k, t = c
        return lambda v: t(v.get(k))

    def pred(v: dict) -> bool:
        for c in clauses:
            if len(c) == 3:
                if v.get(c[0]) != c[2]:
                    return False
            elif not c[1](v.get(c[0])):
                return False
        return True

    return pred


# -- namespace matching (InMemoryStore's rules) --------------------------------


def does_match(match_type: str, path: tuple, ns: tuple[str, ...]) -> bool:
    if len(ns) < len(path):
        return False
    if match_type == "prefix":
        pairs = zip(ns, path)
    elif match_type == "suffix":
        pairs = zip(reversed(ns), reversed(path))
    else:
        raise ValueError(f"Unsupported match type: {match_type}")
    return all(p == "*" or k == p for k, p in pairs)


# -- the index ----------------------------------------------------------------


class StoreIndex:
    def __init__(self, dims: int | None = None) -> None:
        self.dims_config = dims  # the store's index config (None: the first vector's length)
        self.data: dict[tuple[str, ...], dict[str, Rec]] = {}
        self.names: list[tuple[str, ...]] = []  # sorted; namespaces holding at least one item
        self.n_ttl = 0  # items with an expiry: reads check expiry only when > 0
        self.dims = dims
        self._ids: list[Rec | None] = []
        self._free_ids: list[int] = []
        self._mat = np.zeros((0, dims or 0), dtype=np.float32)
        self._norm = np.zeros(0, dtype=np.float64)
        self._owner = np.zeros(0, dtype=np.int64)  # row -> item id, -1 when free
        self._rows = 0  # rows ever allocated (a prefix of the arrays)
        self._free_rows: list[int] = []

    def __len__(self) -> int:
        return sum(len(d) for d in self.data.values())

    # -- items ------------------------------------------------------------------

    def get(self, ns: tuple[str, ...], key: str) -> Rec | None:
        d = self.data.get(ns)
        return None if d is None else d.get(key)

    @staticmethod
    def live(rec: Rec, now: int) -> bool:
        return rec.expires is None or rec.expires > now

    def put(self, rec: Rec, vectors: list[tuple[str, bytes, np.ndarray | None]], *, keep_place: bool = True) -> None:
        """Insert or replace ``rec``. A replaced item keeps its place in its
        namespace unless ``keep_place`` is False (it was re-created)."""
        d = self.data.get(rec.ns)
        if d is None:
            d = self.data[rec.ns] = {}
            bisect.insort(self.names, rec.ns)
        old = d.get(rec.key)
        if old is not None:
            self._release(old)
            if not keep_place:
                del d[rec.key]
        self._adopt(rec, vectors)
        d[rec.key] = rec

    def append_sorted(self, recs: list[Rec], vectors: dict[int, list]) -> None:
        """Insert items read from git (``vectors`` keyed by ``id(rec)``), keeping
        each namespace in creation order."""
        by_ns: dict[tuple, list[Rec]] = {}
        for rec in recs:
            by_ns.setdefault(rec.ns, []).append(rec)
        for ns, group in by_ns.items():
            group.sort(key=lambda r: (r.created, r.key))
            d = self.data.get(ns)
            last = None
            if d:
                tail = next(reversed(d.values()))
                last = (tail.created, tail.key)
            resort = False
            for rec in group:
                old = self.get(ns, rec.key)
                keep = old is not None and old.created == rec.created
                if not keep and last is not None and (rec.created, rec.key) < last:
                    resort = True  # created before items already here (another process, or clock skew)
                self.put(rec, vectors.get(id(rec), []), keep_place=keep)
            if resort:
                d = self.data[ns]
                self.data[ns] = dict(sorted(d.items(), key=lambda kv: (kv[1].created, kv[1].key)))

    def remove(self, ns: tuple[str, ...], key: str) -> Rec | None:
        d = self.data.get(ns)
        if d is None:
            return None
        rec = d.pop(key, None)
        if rec is not None:
            self._release(rec)
            if not d:
                del self.data[ns]
                i = bisect.bisect_left(self.names, ns)
                del self.names[i]
        return rec

    def _adopt(self, rec: Rec, vectors) -> None:
        if self._free_ids:
            rec.id = self._free_ids.pop()
            self._ids[rec.id] = rec
        else:
            rec.id = len(self._ids)
            self._ids.append(rec)
        if rec.expires is not None:
            self.n_ttl += 1
        rec.vecs = []
        for field, digest, vec in vectors:
            row = self._add_row(vec, rec.id) if vec is not None else None
            rec.vecs.append([field, digest, row])

    def _release(self, rec: Rec) -> None:
        if rec.expires is not None:
            self.n_ttl -= 1
        for v in rec.vecs:
            if v[2] is not None:
                self._owner[v[2]] = -1
                self._free_rows.append(v[2])
        self._ids[rec.id] = None
        self._free_ids.append(rec.id)

    def set_expiry(self, rec: Rec, expires: int | None) -> None:
        if (rec.expires is None) != (expires is None):
            self.n_ttl += 1 if expires is not None else -1
        rec.expires = expires

    # -- vectors ----------------------------------------------------------------

    def accepts(self, vec: np.ndarray) -> bool:
        return self.dims is None or vec.shape[0] == self.dims

    def _add_row(self, vec: np.ndarray, owner: int) -> int | None:
        if self.dims is None:
            self.dims = int(vec.shape[0])
            self._mat = np.zeros((0, self.dims), dtype=np.float32)
        if vec.shape[0] != self.dims:
            return None
        if self._free_rows:
            row = self._free_rows.pop()
        else:
            if self._rows == self._mat.shape[0]:
                cap = max(64, 2 * self._rows)
                mat = np.zeros((cap, self.dims), dtype=np.float32)
                mat[: self._rows] = self._mat[: self._rows]
                norm = np.zeros(cap, dtype=np.float64)
                norm[: self._rows] = self._norm[: self._rows]
                own = np.full(cap, -1, dtype=np.int64)
                own[: self._rows] = self._owner[: self._rows]
                self._mat, self._norm, self._owner = mat, norm, own
            row = self._rows
            self._rows += 1
        self._mat[row] = vec
        v64 = vec.astype(np.float64)
        self._norm[row] = np.sqrt(v64 @ v64)
        self._owner[row] = owner
        return row

    def vector(self, row: int) -> np.ndarray:
        return self._mat[row].copy()

    # -- reads ------------------------------------------------------------------

    def namespaces_under(self, prefix: tuple[str, ...]) -> Iterator[tuple[str, ...]]:
        names = self.names
        i = bisect.bisect_left(names, prefix)
        n = len(prefix)
        while i < len(names) and names[i][:n] == prefix:
            yield names[i]
            i += 1

    def candidates(self, prefix, pred, now: int, stop: int | None = None) -> list[Rec]:
        """Live items under ``prefix`` matching ``pred``, in order; at most ``stop``."""
        out: list[Rec] = []
        check = self.n_ttl > 0
        for ns in self.namespaces_under(prefix):
            recs = self.data[ns].values()
            if not check and pred is None:
                if stop is None:
                    out.extend(recs)
                    continue
                for rec in recs:
                    out.append(rec)
                    if len(out) >= stop:
                        return out
                continue
            for rec in recs:
                if check and rec.expires is not None and rec.expires <= now:
                    continue
                if pred is not None and not pred(rec.value):
                    continue
                out.append(rec)
                if stop is not None and len(out) >= stop:
                    return out
        return out

    def search(
        self, prefix, pred, limit: int, offset: int, query: np.ndarray | None, now: int
    ) -> list[tuple[Rec, float | None]]:
        """InMemoryStore's search: filtered items in order, or, with a query
        vector, ranked by their best-matching vector (cosine), ties in order,
        topped up with unembedded items when a page is short."""
        if query is None:
            stop = offset + limit if min(offset, limit) >= 0 else None
            if stop == 0:
                return []
            found = self.candidates(prefix, pred, now, stop)
            return [(r, None) for r in found[offset : offset + limit]]
        cands = self.candidates(prefix, pred, now)
        if not cands:
            return []
        ranked = self._rank(cands, query, offset + limit if min(offset, limit) >= 0 else None)
        kept: list[tuple[Rec, float | None]] = []
        for ix, (rec, score) in enumerate(ranked):
            if ix >= offset + limit:
                break
            if ix < offset:
                continue
            kept.append((rec, score))
        if len(kept) < limit:
            scoreless = []
            want = limit - len(kept)
            for rec in cands:
                if not any(v[2] is not None for v in rec.vecs):
                    scoreless.append(rec)
                    if want > 0 and len(scoreless) >= want:
                        break
            kept.extend((r, None) for r in scoreless[:want])
        return kept

    def _rank(self, cands: list[Rec], query: np.ndarray, need: int | None) -> list[tuple[Rec, float]]:
        n_rows = self._rows
        if n_rows == 0 or self.dims is None or query.shape[0] != self.dims:
            return []
        ids = np.fromiter((r.id for r in cands), dtype=np.int64, count=len(cands))
        pos_of = np.full(len(self._ids), -1, dtype=np.int64)
        pos_of[ids] = np.arange(len(cands), dtype=np.int64)
        owner = self._owner[:n_rows]
        rowpos = np.where(owner >= 0, pos_of[np.maximum(owner, 0)], -1)
        sel = np.flatnonzero(rowpos >= 0)
        if sel.size == 0:
            return []
        # Each dot product is the float64 sum of exact float32 x float64 products,
        # one row at a time: the same float wherever the row sits in the matrix.
        # (A BLAS matrix-vector product rounds a row differently by its position,
        # so one item scored differently in a store with another history, or one
        # loaded from the cache file; docs/format.md 24.)
        q64 = query.astype(np.float64)
        if sel.size * 4 > n_rows:
            dots = np.multiply(self._mat[:n_rows], q64).sum(axis=1)[sel]
        else:
            dots = np.multiply(self._mat[sel], q64).sum(axis=1)
        qnorm = float(np.sqrt(query.astype(np.float64) @ query.astype(np.float64)))
        norms = self._norm[sel]
        scores = np.zeros(sel.size, dtype=np.float64)
        nz = norms != 0
        with np.errstate(divide="ignore", invalid="ignore"):
            scores[nz] = dots[nz] / (norms[nz] * qnorm)
        pos = rowpos[sel]
        order = np.lexsort((pos, -scores))
        # max pooling: an item ranks by its first (best) row in that order
        _, first = np.unique(pos[order], return_index=True)
        first.sort()
        order = order[first]
        if need is not None:
            order = order[:need]
        return [(cands[int(pos[i])], float(scores[i])) for i in order]

    def list_namespaces(self, match_conditions, max_depth, limit: int, offset: int, now: int) -> list[tuple[str, ...]]:
        names = self.names
        if self.n_ttl:
            names = [ns for ns in names if any(self.live(r, now) for r in self.data[ns].values())]
        if match_conditions:
            names = [ns for ns in names if all(does_match(c.match_type, tuple(c.path), ns) for c in match_conditions)]
        if max_depth is not None:
            names = sorted({ns[:max_depth] for ns in names})
        else:
            names = list(names)
        return names[offset : offset + limit]

    def expired(self, now: int) -> list[Rec]:
        if not self.n_ttl:
            return []
        return [r for d in self.data.values() for r in d.values() if r.expires is not None and r.expires <= now]
