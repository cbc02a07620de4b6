"""The in-memory index of one thread: where each checkpoint and write lives.

Git is the source of truth; this index is derived from it and can always be
rebuilt. It is built once per thread per process by walking the thread's
lines (commit reading is libgit2's, the walk visits each commit once), then
kept current incrementally: before each use the thread's ref tips are read
(one directory listing), and only commits that are new since the last look are
walked. A ref that moved anywhere but forward (a prune or a delete by another
process) makes the index rebuild from scratch.

With it, the latest checkpoint is the last element of a sorted list, a
checkpoint id maps straight to its commit, and ``list(before=..., limit=...)``
is a bisect and a slice: no lookup walks the history.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

import msgpack
import pygit2

from . import codec
from .errors import CorruptObjectError

#: Version of the cache file format (bump when ThreadIndex's fields change).
CACHE_VERSION = 2


def is_main_line(ref: str) -> bool:
    """True for ``threads/<T>`` and ``subgraphs/<T>/<NS>``; False for forks."""
    if ref.startswith("refs/heads/threads/"):
        return True
    return ref.startswith("refs/heads/subgraphs/") and "@" not in ref.rsplit("/", 1)[-1]


@dataclass(slots=True)
class Entry:
    """What the index knows of one checkpoint without reading its blobs."""

    commit: pygit2.Oid
    tree: pygit2.Oid  # the commit's tree, so a read skips the commit object
    parent: str | None
    step: int | None
    source: str | None
    run_id: str | None
    line: str


@dataclass
class ThreadIndex:
    tips: dict[str, pygit2.Oid] = field(default_factory=dict)  # line ref -> tip seen
    heads: dict[str, tuple[str, str | None]] = field(default_factory=dict)  # ref -> (ns, head cid)
    ckpt: dict[tuple[str, str], Entry] = field(default_factory=dict)
    # (ns, cid) -> the writes/<cid> subtrees holding its pending writes
    writes: dict[tuple[str, str], list[pygit2.Oid]] = field(default_factory=dict)
    deleted: set[tuple[str, str]] = field(default_factory=set)
    order: dict[str, list[str]] = field(default_factory=dict)  # ns -> sorted checkpoint ids
    seen: set[pygit2.Oid] = field(default_factory=set)
    # in-process knowledge, for commit subjects: (ns, cid) -> {node: channels}
    wrote: dict[tuple[str, str], dict[str, set[str]]] = field(default_factory=dict)
    last_line: dict[str, str] = field(default_factory=dict)  # ns -> line last appended here
    unsaved: int = 0  # commits indexed since the cache file was last written

    # -- the cache file (a derived copy: deleting it only costs a walk) ------------

    def to_bytes(self) -> bytes:
        return msgpack.packb(
            {
                "v": CACHE_VERSION,
                "tips": {ref: oid.raw for ref, oid in self.tips.items()},
                "heads": {ref: list(v) for ref, v in self.heads.items()},
                "ckpt": [
                    [ns, cid, e.commit.raw, e.tree.raw, e.parent, e.step, e.source, e.run_id, e.line]
                    for (ns, cid), e in self.ckpt.items()
                ],
                "writes": [[ns, cid, [o.raw for o in oids]] for (ns, cid), oids in self.writes.items()],
                "deleted": [list(k) for k in self.deleted],
                "seen": b"".join(o.raw for o in self.seen),
            },
            use_bin_type=True,
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> ThreadIndex | None:
        """The index stored in a cache file, or None if it is unreadable or outdated."""
        try:
            d = msgpack.unpackb(data, raw=False)
            if d.get("v") != CACHE_VERSION:
                return None
            idx = cls()
            idx.tips = {ref: pygit2.Oid(raw=raw) for ref, raw in d["tips"].items()}
            idx.heads = {ref: (v[0], v[1]) for ref, v in d["heads"].items()}
            for ns, cid, raw, tree, parent, step, source, run_id, line in d["ckpt"]:
                idx.ckpt[(ns, cid)] = Entry(
                    pygit2.Oid(raw=raw), pygit2.Oid(raw=tree), parent, step, source, run_id, line
                )
                idx.order.setdefault(ns, []).append(cid)
            for ids in idx.order.values():
                ids.sort()
            idx.writes = {(ns, cid): [pygit2.Oid(raw=r) for r in oids] for ns, cid, oids in d["writes"]}
            idx.deleted = {(k[0], k[1]) for k in d["deleted"]}
            seen = d["seen"]
            idx.seen = {pygit2.Oid(raw=seen[i : i + 20]) for i in range(0, len(seen), 20)}
            return idx
        except Exception:  # a damaged cache is rebuilt from git, never trusted
            return None

    # -- queries --------------------------------------------------------------

    def latest(self, ns: str) -> str | None:
        ids = self.order.get(ns)
        return ids[-1] if ids else None

    def namespaces(self) -> list[str]:
        return [ns for ns, ids in self.order.items() if ids]

    def ids_before(self, ns: str, before: str | None, n: int) -> list[str]:
        """Up to ``n`` checkpoint ids of ``ns`` below ``before``, newest first."""
        ids = self.order.get(ns, [])
        end = bisect.bisect_left(ids, before) if before is not None else len(ids)
        return ids[max(0, end - n) : end][::-1]

    def line_with_head(self, ns: str, cid: str | None) -> str | None:
        """A line of ``ns`` whose newest checkpoint is ``cid`` (the main one first)."""
        found = None
        for ref, (line_ns, head) in self.heads.items():
            if line_ns == ns and head == cid:
                if is_main_line(ref):
                    return ref
                found = found or ref
        return found

    def lines_of(self, ns: str) -> list[str]:
        return [ref for ref, (line_ns, _) in self.heads.items() if line_ns == ns]

    # -- updates --------------------------------------------------------------

    def add_checkpoint(self, ns: str, cid: str, entry: Entry) -> None:
        key = (ns, cid)
        if key not in self.ckpt:
            bisect.insort(self.order.setdefault(ns, []), cid)
        self.ckpt[key] = entry
        self.deleted.discard(key)

    def record_tip(self, line: str, commit: pygit2.Oid) -> None:
        """This process moved ``line`` to ``commit``."""
        self.tips[line] = commit
        self.seen.add(commit)

    def add_writes(self, ns: str, cid: str, subtree: pygit2.Oid) -> None:
        lst = self.writes.setdefault((ns, cid), [])
        if subtree not in lst:
            lst.append(subtree)

    def delete(self, ns: str, cid: str) -> None:
        key = (ns, cid)
        self.deleted.add(key)
        if self.ckpt.pop(key, None) is not None:
            ids = self.order.get(ns, [])
            i = bisect.bisect_left(ids, cid)
            if i < len(ids) and ids[i] == cid:
                del ids[i]
        self.writes.pop(key, None)

    def apply(self, commit: pygit2.Commit, line: str) -> None:
        """Record one commit found by a walk (called oldest first).

        Raises :class:`CorruptObjectError` for a gitckpt commit whose trailers
        are missing or malformed (written by hand, or damaged)."""
        self.unsaved += 1
        t = codec.parse_trailers(commit.message)
        kind = t.get(codec.KIND)
        ns = t.get(codec.NS, "")
        where = f"thread {t[codec.THREAD]!r}: commit {commit.id}" if codec.THREAD in t else f"commit {commit.id}"
        if kind == "checkpoint":
            cid = t.get(codec.CHECKPOINT)
            if not cid:
                raise CorruptObjectError(f"{where} has no Checkpoint-Id trailer")
            step = t.get(codec.STEP)
            try:
                step_n = int(step) if step not in (None, "") else None
            except ValueError:
                raise CorruptObjectError(f"{where} (checkpoint {cid}) has a bad Step trailer {step!r}") from None
            self.add_checkpoint(
                ns,
                cid,
                Entry(
                    commit=commit.id,
                    tree=commit.tree_id,
                    parent=t.get(codec.PARENT),
                    step=step_n,
                    source=t.get(codec.SOURCE),
                    run_id=t.get(codec.RUN),
                    line=line,
                ),
            )
        elif kind == "writes":
            try:
                self.add_writes(ns, t[codec.WRITES_FOR], pygit2.Oid(hex=t[codec.WRITES_TREE]))
            except (KeyError, ValueError) as exc:
                raise CorruptObjectError(f"{where} is a writes commit with a missing or bad {exc} trailer") from None
        elif kind == "delete":
            for item in t.get(codec.DELETED, "").split("\n"):
                if item:
                    d_ns, _, d_cid = item.rpartition(" ")
                    self.delete(d_ns, d_cid)
