"""The thread indexes: where each checkpoint and pending write of a thread lives.

:class:`ThreadIndex` is one thread's index; :class:`ThreadIndexes` keeps the
indexes of a repository in step with its refs, and their cache files.
:class:`gitckpt.GitSaver` holds one; the CLI's history commands (``gitckpt
log``, ``gitckpt threads``) use one on its own, so they start without importing
LangGraph, and hand it to the saver they make for a command that reads values.


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
import os
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import chain, islice, repeat
from typing import Any, NamedTuple

import msgpack

from ..errors import CorruptObjectError
from ..git import names
from ..git.cache import LRU, gc_paused, only_types
from ..git.files import write_atomic
from ..git.repo import CommitInfo, GitRepo, Oid, iter_commits
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
    def of(
        cls,
        commit: Oid,
        tree: Oid,
        parent: str | None,
        step: int | None,
        source: str | None,
        run_id: str | None,
        line: str,
    ) -> Entry:
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
    # raw ids of the commits walked (``seen``): a cache file's are kept as its one string of
    # ids and made a set only when a walk or a writer needs them (format.md 25)
    _seen: set[bytes] = field(default_factory=set)
    _seen_file: bytes = b""
    # in-process knowledge, for commit subjects: (ns, cid) -> {node: channels}
    wrote: dict[tuple[str, str], dict[str, set[str]]] = field(default_factory=dict)
    last_line: dict[str, str] = field(default_factory=dict)  # ns -> line last appended here
    unsaved: int = 0  # commits indexed since the cache file was last written
    weight: int = 1  # what ThreadIndexes' LRU counted it as (_weight), when it was put there

    @property
    def seen(self) -> set[bytes]:
        """The raw ids of the commits this index has applied (a walk stops at them)."""
        if self._seen_file:
            self._seen.update(_split_ids(self._seen_file))
            self._seen_file = b""
        return self._seen

    def seen_count(self) -> int:
        """``len(self.seen)``, without making the set of a cache file's ids."""
        return len(self._seen_file) // 20 if self._seen_file else len(self._seen)

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
                "seen": self._seen_file or b"".join(self._seen),
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
        with gc_paused():
            return cls._from_bytes(data)

    @classmethod
    def _from_bytes(cls, data: bytes) -> ThreadIndex | None:
        try:
            d = msgpack.unpackb(data, raw=False)
            if d.get("v") != CACHE_VERSION:
                return None
            idx = cls()
            # The file is untrusted bytes (anyone who can write the folder wrote it): msgpack
            # without an ext_hook constructs nothing but builtins, and every column is checked
            # for the types the index holds, so a crafted file is refused (None), never half-used.
            if not (
                only_types(d["tips"], str)
                and only_types(d["tips"].values(), bytes)
                and only_types(d["heads"], str)
                and all(
                    type(v) is list and len(v) == 2 and type(v[0]) is str and only_types(v[1:], str, type(None))
                    for v in d["heads"].values()
                )
            ):
                return None
            idx.tips = {ref: Oid(raw=raw) for ref, raw in d["tips"].items()}
            idx.heads = {ref: (v[0], v[1]) for ref, v in d["heads"].items()}
            c, lines = d["ckpt"], d["lines"]
            n = len(c["cid"])
            commits, trees = c["commit"], c["tree"]
            if not (
                type(commits) is bytes
                and type(trees) is bytes
                and len(commits) == len(trees) == 20 * n
                and all(
                    type(c[k]) is list and len(c[k]) == n for k in ("ns", "parent", "step", "source", "run_id", "line")
                )
                and only_types(c["ns"], str)
                and only_types(c["cid"], str)
                and only_types(lines, str)
                and only_types(c["parent"], str, type(None))
                and only_types(c["source"], str, type(None))
                and only_types(c["run_id"], str, type(None))
                and only_types(c["step"], int, type(None))
                and only_types(c["line"], int)
                and (not n or (min(c["line"]) >= 0 and max(c["line"]) < len(lines)))
            ):
                return None
            # C-level loops (map, zip, dict, struct): this is most of a cold start on a long thread
            entries = map(
                tuple.__new__,
                repeat(Entry),
                zip(
                    _split_ids(commits),
                    _split_ids(trees),
                    c["parent"],
                    c["step"],
                    c["source"],
                    c["run_id"],
                    [lines[i] for i in c["line"]],
                ),
            )
            ns_col = c["ns"]
            idx.ckpt = dict(zip(zip(ns_col, c["cid"]), entries))
            if len(idx.ckpt) != n:  # a checkpoint twice: not a file this code wrote
                return None
            if n and ns_col.count(ns_col[0]) == n:  # one namespace (most threads): one C-level sort
                idx.order = {ns_col[0]: sorted(c["cid"])}
            else:
                for ns, cid in idx.ckpt:
                    idx.order.setdefault(ns, []).append(cid)
                for ids in idx.order.values():
                    ids.sort()
            w = d["writes"]
            raw_ids, counts = w["ids"], w["count"]
            if not (
                type(raw_ids) is bytes
                and only_types(counts, int)
                and (not counts or min(counts) >= 0)
                and only_types(w["ns"], str)
                and only_types(w["cid"], str)
                and type(d["seen"]) is bytes
                and len(d["seen"]) % 20 == 0
                and all(type(k) is list and len(k) == 2 and only_types(k, str) for k in d["deleted"])
            ):
                return None
            if len(raw_ids) != 20 * sum(counts) or not len(w["ns"]) == len(w["cid"]) == len(counts):
                return None
            split = _split_ids(raw_ids)
            if counts.count(1) == len(counts):  # one put_writes per checkpoint: 3x faster than the general case
                lists = list(map(list, zip(split)))
            else:
                parts = iter(split)
                lists = [list(islice(parts, k)) for k in counts]
            idx.writes = dict(zip(zip(w["ns"], w["cid"]), lists))
            idx.deleted = {(k[0], k[1]) for k in d["deleted"]}
            idx._seen_file = d["seen"]
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
            where = (
                f"thread {meta.thread_id!r}: commit {commit.id}"
                if meta.thread_id is not None
                else f"commit {commit.id}"
            )
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


_IDS = struct.Struct("20s" * 256)


def _split_ids(raw: bytes) -> list[bytes]:
    """A string of 20-byte ids as a list of ids (its length is a multiple of 20): struct
    cuts 256 at a time in C, 3x faster than a comprehension of slices."""
    full = len(raw) // _IDS.size * _IDS.size
    out = list(chain.from_iterable(map(_IDS.unpack_from, repeat(raw, full // _IDS.size), range(0, full, _IDS.size))))
    if full < len(raw):
        out.extend(struct.unpack(f"{(len(raw) - full) // 20 * '20s'}", raw[full:]))
    return out


#: Sizes of the saver's caches that scale with the threads in use (format.md 15).
CACHE_THREADS = 256
#: Thread indexes kept in memory, least recently used dropped first, bounded by
#: the commits they index (a thread counts as one more than its commits): one
#: process serving 1,000 threads of 30 checkpoints holds every index, instead of
#: walking each thread again whenever it comes round (format.md 23), and a few
#: very long threads cannot hold more than about this many entries.
CACHE_COMMITS = 400_000
#: Threads with at least this many checkpoints keep an index cache file; it is
#: rewritten on close() (and when evicted) and after ``_SAVE_EVERY`` newly indexed commits or a
#: quarter of the thread, whichever is more (_due): rewriting it costs time in
#: proportion to the thread, so saving it geometrically keeps the cost per put
#: flat (it was 143 ms every 1,000 puts at 10,000 commits, measured). Ten, so
#: that a new process listing 1,000 threads of 30 checkpoints reads 1,000 small
#: files instead of walking 60,000 commits (format.md 23; was 200).
_SAVE_MIN = 10
_SAVE_EVERY = 1000


def _weight(idx: ThreadIndex) -> int:
    """What an index counts for in ThreadIndexes' LRU: the commits it knows, plus one."""
    return min(CACHE_COMMITS, 1 + idx.seen_count())


def _due(idx: ThreadIndex) -> bool:
    """Is the thread's index cache file due to be rewritten?"""
    return idx.unsaved >= _SAVE_EVERY and idx.unsaved >= idx.seen_count() // 4


def _worth_saving(idx: ThreadIndex) -> bool:
    """Does an index leaving memory (on close, or evicted) have news for its cache file?"""
    return bool(idx.unsaved) and sum(len(v) for v in idx.order.values()) >= _SAVE_MIN


def line_tips(repo: GitRepo, encoded: str) -> dict[str, Oid]:
    """``{line ref: tip}`` of every line of the thread whose ref component is
    ``encoded`` (names.encode_ref_component; a shortened name need not decode)."""
    main, forks, subs = fmt.encoded_thread_ref_globs(encoded)
    return repo.refs(forks[:-1], subs[:-1], names=(main,))


class ThreadIndexes:
    """The index of every thread of one repository that has been asked about.

    Args:
        repo: the repository (its lock guards the indexes too). Whoever opened
            the repository closes it; :meth:`save` writes the changed index
            cache files and leaves the repository open.
    """

    def __init__(self, repo: GitRepo) -> None:
        self.repo = repo
        self.lock = repo.lock
        self._indexes: LRU[str, ThreadIndex] = LRU(
            CACHE_COMMITS, getsizeof=lambda idx: idx.weight, on_evict=self._evicted
        )

    def _keep(self, thread_id: str, idx: ThreadIndex) -> None:
        """Put ``idx`` in the LRU (again), weighed as it is now."""
        self._indexes.pop(thread_id, None)  # takes off the weight it was put there with
        idx.weight = _weight(idx)
        self._indexes[thread_id] = idx

    def save(self) -> None:
        """Write the index cache files of the threads that changed."""
        with self.lock:
            for thread_id, idx in list(self._indexes.items()):
                if _worth_saving(idx):
                    self._save_index(thread_id, idx)

    def thread_refs(self, thread_id: str) -> dict[str, Oid]:
        """The tips of every line (branch) of a thread."""
        return line_tips(self.repo, names.encode_ref_component(thread_id))

    def get(self, thread_id: str, refresh: bool = True) -> ThreadIndex:
        """The thread's index, brought up to date with its refs. Hold ``self.lock``.

        Writers pass ``refresh=False``: a stale index cannot make them lose
        anything, because their ref update is a compare-and-swap that fails on a
        moved ref, and they refresh then (and whenever a lookup misses).
        """
        idx = self._indexes.get(thread_id)
        if idx is not None and not refresh:
            if idx.seen_count() > idx.weight + (idx.weight >> 2) + 16:  # grown by a quarter: weigh it again
                self._keep(thread_id, idx)
            return idx
        refs = self.thread_refs(thread_id)
        if idx is None and refs:
            idx = self._load_index(thread_id)
            if idx is not None:
                self._keep(thread_id, idx)
        if idx is not None:
            if refs == idx.tips:
                return idx
            stale = any(
                ref not in refs or (refs[ref] != old and not self.repo.descendant_of(refs[ref], old))
                for ref, old in idx.tips.items()
            )
            if not stale:
                for ref, tip in refs.items():
                    if idx.tips.get(ref) != tip:
                        self._walk(idx, ref, tip)
                self._keep(thread_id, idx)
                if _due(idx):
                    self._save_index(thread_id, idx)
                return idx
        idx = self._build_index(refs)
        self._keep(thread_id, idx)
        if _due(idx):
            self._save_index(thread_id, idx)
        return idx

    def get_many(self, thread_ids: Iterable[str]) -> dict[str, ThreadIndex]:
        """:meth:`get` of each thread, the garbage collector paused meanwhile: loading
        1,000 indexes in a new process otherwise spent a third of its time collecting
        between them (format.md 25). Hold ``self.lock``."""
        with gc_paused():
            return {thread_id: self.get(thread_id) for thread_id in thread_ids}

    def _evicted(self, thread_id: str, idx: ThreadIndex) -> None:
        if _worth_saving(idx):
            self._save_index(thread_id, idx)

    def _build_index(self, refs: dict[str, Oid]) -> ThreadIndex:
        """A thread's index walked from its line tips (main lines first)."""
        idx = ThreadIndex()
        for ref, tip in sorted(refs.items(), key=lambda kv: not is_main_line(kv[0])):
            self._walk(idx, ref, tip)
        return idx

    def thread_index(self, thread_id: str, *, fresh: bool = False) -> ThreadIndex:
        """The thread's index (docs/format.md, 6), up to date with its refs: every
        checkpoint's commit, tree, parent, step, source and run, and where its
        pending writes are. ``fresh`` walks the history again instead of using
        the index kept in memory or in the cache file (``gitckpt verify`` does).
        Hold ``self.lock`` while reading it: writers of this process update it."""
        with self.lock:
            return self._build_index(self.thread_refs(thread_id)) if fresh else self.get(thread_id)

    # The index of a long thread is also kept in a cache file, so that a new
    # process (a CLI command, a restarted server) reads it instead of walking
    # the thread's history. It is derived data: validated against the refs on
    # load (tips must be ancestors of the current refs, else it is rebuilt),
    # written atomically, and safe to delete.

    def _index_path(self, thread_id: str) -> str:
        return os.path.join(self.repo.gitdir, "gitckpt-cache", "threads", names.encode_ref_component(thread_id))

    def _load_index(self, thread_id: str) -> ThreadIndex | None:
        try:
            with open(self._index_path(thread_id), "rb") as fh:
                data = fh.read()
        except OSError:
            return None
        idx = ThreadIndex.from_bytes(data)
        if idx is not None and any(not self.repo.has(oid) for oid in idx.tips.values()):
            return None  # written for objects this repository no longer has
        return idx

    def _save_index(self, thread_id: str, idx: ThreadIndex) -> None:
        if write_atomic(self._index_path(thread_id), idx.to_bytes()):
            idx.unsaved = 0  # (a read-only repository still works, just without the cache)

    def _walk(self, idx: ThreadIndex, ref: str, tip: Oid) -> None:
        found = list(iter_commits(self.repo, [tip], idx.seen))
        for commit in reversed(found):
            idx.apply(commit, ref)
        idx.tips[ref] = tip
        idx.heads[ref] = self._line_head(tip)

    def _line_head(self, tip: Oid) -> tuple[str, str | None]:
        """(namespace, newest checkpoint id) of the line whose tip is ``tip``."""
        oid: Oid | None = tip
        ns = None
        while oid is not None:
            commit = self.repo.commit_info(oid)
            meta = fmt.parse_commit(commit.message)
            if ns is None and (meta.ns or meta.kind in (fmt.Kind.CHECKPOINT, fmt.Kind.WRITES)):
                ns = meta.ns
            if meta.kind is fmt.Kind.CHECKPOINT and meta.checkpoint_id:
                return meta.ns, meta.checkpoint_id
            oid = commit.parent_ids[0] if commit.parent_ids else None
        return ns or "", None

    def write_blobs(
        self, subtrees: Sequence[bytes], cid: str, *, calls: bool | None = False, keep: bool = True
    ) -> dict[str, Oid]:
        """``{tree entry name: blob}`` of a checkpoint's ``writes/<id>`` subtrees
        (the index's ``writes``: raw tree ids).

        Names are ``<encoded task id>.<idx>``; a later subtree's entry replaces an
        earlier one of the same name (special writes such as errors are replaced).
        Recorded calls (``<task>.callNN``, format.md 18) are left out unless
        ``calls`` is True (both) or None (only the calls).
        """
        out: dict[str, Oid] = {}
        for subtree in subtrees:
            tree = Oid(raw=subtree)
            for name, (oid, _) in self.repo.tree_entries(tree, f"writes of checkpoint {cid}", keep=keep).items():
                if calls is not True and fmt.is_call_entry(name) != (calls is None):
                    continue
                out[name] = oid
        return out

    def threads(self) -> list[str]:
        """Every thread id in the repository, sorted."""
        found: set[str] = set()
        with self.lock:
            for ref, tip in self.repo.refs(*fmt.LINE_PREFIXES).items():
                parsed = fmt.parse_line_ref(ref)
                if parsed is None:
                    continue
                tid = names.decode(parsed[0])
                if tid is None:  # a shortened name: the commit knows the real id
                    tid = self._thread_of_commit(tip)
                if tid is not None:
                    found.add(tid)
        return sorted(found)

    def _thread_of_commit(self, oid: Oid) -> str | None:
        return fmt.parse_commit(self.repo.commit_info(oid).message).thread_id

    def thread_info(self, thread_id: str) -> dict[str, Any] | None:
        """Summary of a thread: checkpoint count, lines (branches), latest checkpoint."""
        with self.lock:
            idx = self.get(thread_id)
            if not idx.tips:
                return None
            latest = idx.latest("")
            entry = idx.ckpt.get(("", latest)) if latest else None
            when = self.repo.commit_info(entry.commit).commit_time if entry else None
            return {
                "thread_id": thread_id,
                "checkpoints": sum(len(v) for v in idx.order.values()),
                "namespaces": sorted(idx.namespaces()),
                "lines": sorted(idx.tips),
                "forks": sum(1 for ref in idx.tips if not is_main_line(ref)),
                "latest_checkpoint_id": latest,
                "last_step": entry.step if entry else None,
                "last_update": when,
            }

    def drop(self, thread_id: str) -> None:
        """Forget the in-memory index of a thread (it is walked again when next asked for)."""
        self._indexes.pop(thread_id, None)

    def save_if_due(self, thread_id: str, idx: ThreadIndex) -> None:
        """Rewrite the thread's index cache file if enough is new since the last time (_due)."""
        if _due(idx):
            self._save_index(thread_id, idx)

    def forget(self, thread_id: str) -> None:
        """Drop what is known of a thread (deleted or pruned): its index and cache file."""
        self._indexes.pop(thread_id, None)
        try:
            os.unlink(self._index_path(thread_id))
        except OSError:
            pass
