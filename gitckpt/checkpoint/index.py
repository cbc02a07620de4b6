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
import gc
from dataclasses import dataclass, field
from itertools import islice
from typing import NamedTuple

import msgpack

from ..errors import CorruptObjectError
from ..git.repo import CommitInfo, Oid
from . import format as fmt

#: Version of the cache file format (bump when ThreadIndex's fields change).
#: 3: columns, not a list per checkpoint, and object ids as raw bytes (format.md, 6).
CACHE_VERSION = 3


def is_main_line(ref: str) -> bool:
    """True for ``threads/<T>`` and ``subgraphs/<T>/<NS>``; False for forks."""
    if ref.startswith("refs/heads/threads/"):
        return True
    return ref.startswith("refs/heads/subgraphs/") and "@" not in ref.rsplit("/", 1)[-1]


class Entry(NamedTuple):
    """What the index knows of one checkpoint without reading its blobs.

    Object ids are kept as their 20 raw bytes and made :class:`Oid`
    when asked for, and an entry is a tuple: a 10,000-checkpoint index loads
    from its cache file with C-level loops, without building 20,000 Oids or
    running 10,000 ``__init__`` calls (format.md, 6).
    """

    commit_raw: bytes
    tree_raw: bytes  # the commit's tree, so a read skips the commit object
    parent: str | None
    step: int | None
    source: str | None
    run_id: str | None
    line: str

    @classmethod
    def of(cls, commit: Oid, tree: Oid, parent: str | None, step: int | None,
           source: str | None, run_id: str | None, line: str) -> Entry:
        return cls(commit.raw, tree.raw, parent, step, source, run_id, line)

    @property
    def commit(self) -> Oid:
        return Oid(raw=self.commit_raw)

    @property
    def tree(self) -> Oid:
        return Oid(raw=self.tree_raw)


@dataclass
class ThreadIndex:
    tips: dict[str, Oid] = field(default_factory=dict)  # line ref -> tip seen
    heads: dict[str, tuple[str, str | None]] = field(default_factory=dict)  # ref -> (ns, head cid)
    ckpt: dict[tuple[str, str], Entry] = field(default_factory=dict)
    # (ns, cid) -> the raw ids of the writes/<cid> subtrees holding its pending writes
    writes: dict[tuple[str, str], list[bytes]] = field(default_factory=dict)
    deleted: set[tuple[str, str]] = field(default_factory=set)
    order: dict[str, list[str]] = field(default_factory=dict)  # ns -> sorted checkpoint ids
    seen: set[bytes] = field(default_factory=set)  # raw ids of the commits walked
    # in-process knowledge, for commit subjects: (ns, cid) -> {node: channels}
    wrote: dict[tuple[str, str], dict[str, set[str]]] = field(default_factory=dict)
    last_line: dict[str, str] = field(default_factory=dict)  # ns -> line last appended here
    unsaved: int = 0  # commits indexed since the cache file was last written

    # -- the cache file (a derived copy: deleting it only costs a walk) ------------

    def to_bytes(self) -> bytes:
        # Columns, not a list per checkpoint, and ids as one string of raw bytes
        # per column: a 10,000-checkpoint index loads with a few thousand
        # Python objects fewer per column.
        lines = sorted({e.line for e in self.ckpt.values()})
        line_no = {line: i for i, line in enumerate(lines)}
        keys = list(self.ckpt)
        entries = [self.ckpt[k] for k in keys]
        wkeys = list(self.writes)
        return msgpack.packb(
            {
                "v": CACHE_VERSION,
                "tips": {ref: oid.raw for ref, oid in self.tips.items()},
                "heads": {ref: list(v) for ref, v in self.heads.items()},
                "lines": lines,
                "ckpt": {
                    "ns": [k[0] for k in keys],
                    "cid": [k[1] for k in keys],
                    "commit": b"".join(e.commit_raw for e in entries),
                    "tree": b"".join(e.tree_raw for e in entries),
                    "parent": [e.parent for e in entries],
                    "step": [e.step for e in entries],
                    "source": [e.source for e in entries],
                    "run_id": [e.run_id for e in entries],
                    "line": [line_no[e.line] for e in entries],
                },
                "writes": {
                    "ns": [k[0] for k in wkeys],
                    "cid": [k[1] for k in wkeys],
                    "count": [len(self.writes[k]) for k in wkeys],
                    "ids": b"".join(raw for k in wkeys for raw in self.writes[k]),
                },
                "deleted": [list(k) for k in self.deleted],
                "seen": b"".join(self.seen),
            },
            use_bin_type=True,
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> ThreadIndex | None:
        """The index stored in a cache file, or None if it is unreadable or outdated.

        The garbage collector is paused while it builds: every object made
        here lives on, so collecting would only walk the process's whole heap
        again and again (measured: two thirds of loading a 10,000-checkpoint
        index in a process that had imported LangGraph)."""
        paused = gc.isenabled()
        if paused:
            gc.disable()
        try:
            return cls._from_bytes(data)
        finally:
            if paused:
                gc.enable()

    @classmethod
    def _from_bytes(cls, data: bytes) -> ThreadIndex | None:
        try:
            d = msgpack.unpackb(data, raw=False)
            if d.get("v") != CACHE_VERSION:
                return None
            idx = cls()
            idx.tips = {ref: Oid(raw=raw) for ref, raw in d["tips"].items()}
            idx.heads = {ref: (v[0], v[1]) for ref, v in d["heads"].items()}
            c, lines = d["ckpt"], d["lines"]
            n = len(c["cid"])
            commits, trees = c["commit"], c["tree"]
            if not (len(commits) == len(trees) == 20 * n
                    and all(len(c[k]) == n for k in ("ns", "parent", "step", "source", "run_id", "line"))):
                return None
            # C-level loops (map, zip, dict): this is most of a cold start on a long thread
            at = range(0, 20 * n, 20)
            entries = map(Entry._make, zip(
                [commits[i : i + 20] for i in at], [trees[i : i + 20] for i in at], c["parent"], c["step"],
                c["source"], c["run_id"], [lines[i] for i in c["line"]],
            ))
            idx.ckpt = dict(zip(zip(c["ns"], c["cid"]), entries))
            if len(idx.ckpt) != n:  # a checkpoint twice: not a file this code wrote
                return None
            for ns, cid in idx.ckpt:
                idx.order.setdefault(ns, []).append(cid)
            for ids in idx.order.values():
                ids.sort()
            w = d["writes"]
            raw_ids, counts = w["ids"], w["count"]
            if len(raw_ids) != 20 * sum(counts) or not len(w["ns"]) == len(w["cid"]) == len(counts):
                return None
            at = range(0, len(raw_ids), 20)
            if all(k == 1 for k in counts):  # one put_writes per checkpoint: 3x faster than the general case
                lists = [[raw_ids[j : j + 20]] for j in at]
            else:
                starts = iter(at)
                lists = [[raw_ids[j : j + 20] for j in islice(starts, k)] for k in counts]
            idx.writes = dict(zip(zip(w["ns"], w["cid"]), lists))
            idx.deleted = {(k[0], k[1]) for k in d["deleted"]}
            seen = d["seen"]
            idx.seen = {seen[i : i + 20] for i in range(0, len(seen), 20)}
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

    def record_tip(self, line: str, commit: Oid) -> None:
        """This process moved ``line`` to ``commit``."""
        self.tips[line] = commit
        self.seen.add(commit.raw)

    def add_writes(self, ns: str, cid: str, subtree: Oid) -> None:
        lst = self.writes.setdefault((ns, cid), [])
        if subtree.raw not in lst:
            lst.append(subtree.raw)

    def delete(self, ns: str, cid: str) -> None:
        key = (ns, cid)
        self.deleted.add(key)
        if self.ckpt.pop(key, None) is not None:
            ids = self.order.get(ns, [])
            i = bisect.bisect_left(ids, cid)
            if i < len(ids) and ids[i] == cid:
                del ids[i]
        self.writes.pop(key, None)

    def apply(self, commit: CommitInfo, line: str) -> None:
        """Record one commit found by a walk (called oldest first).

        Raises :class:`CorruptObjectError` for a gitckpt commit whose trailers
        are missing or malformed (written by hand, or damaged)."""
        self.unsaved += 1
        meta = fmt.parse_commit(commit.message)
        if meta.kind is None:
            return
        if meta.problem is not None:
            where = f"thread {meta.thread_id!r}: commit {commit.id}" if meta.thread_id is not None else f"commit {commit.id}"
            if meta.checkpoint_id:
                where += f" (checkpoint {meta.checkpoint_id})"
            raise CorruptObjectError(f"{where} {meta.problem}")
        if meta.kind is fmt.Kind.CHECKPOINT:
            self.add_checkpoint(
                meta.ns,
                meta.checkpoint_id,  # type: ignore[arg-type]  # checked by parse_commit
                Entry.of(
                    commit=commit.id,
                    tree=commit.tree_id,
                    parent=meta.parent_id,
                    step=meta.step,
                    source=meta.source,
                    run_id=meta.run_id,
                    line=line,
                ),
            )
        elif meta.kind is fmt.Kind.WRITES:
            self.add_writes(meta.ns, meta.writes_for, Oid(hex=meta.writes_tree))  # type: ignore[arg-type]
        elif meta.kind is fmt.Kind.DELETE:
            for d_ns, d_cid in meta.deleted:
                self.delete(d_ns, d_cid)
