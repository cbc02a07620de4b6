"""The per-thread indexes of a gitckpt repository, kept in step with its refs.

:class:`ThreadIndexes` finds a thread's checkpoints and pending writes
(docs/format.md, 6): it walks a thread's lines once, or loads the index's cache
file, and then follows only new commits. :class:`gitckpt.GitSaver` holds one;
the CLI's history commands (``gitckpt log``, ``gitckpt threads``) use one on
its own, so they start without importing LangGraph, and hand it to the saver
they make for a command that reads values (one index per thread per command).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from typing import Any

from cachetools import LRUCache

from ..git import names
from ..git.repo import GitRepo, Oid, iter_commits
from . import format as fmt
from .index import ThreadIndex, is_main_line

#: Thread indexes kept in memory (least recently used dropped first).
CACHE_THREADS = 256
#: Threads with at least this many checkpoints keep an index cache file; it is
#: rewritten on close() and after ``_SAVE_EVERY`` newly indexed commits or a
#: quarter of the thread, whichever is more (_due): rewriting it costs time in
#: proportion to the thread, so saving it geometrically keeps the cost per put
#: flat (it was 143 ms every 1,000 puts at 10,000 commits, measured).
_SAVE_MIN = 200
_SAVE_EVERY = 1000


def _due(idx: ThreadIndex) -> bool:
    """Is the thread's index cache file due to be rewritten?"""
    return idx.unsaved >= _SAVE_EVERY and idx.unsaved >= len(idx.seen) // 4


def _worth_saving(idx: ThreadIndex) -> bool:
    """Does an index leaving memory (on close, or evicted) have news for its cache file?"""
    return bool(idx.unsaved) and sum(len(v) for v in idx.order.values()) >= _SAVE_MIN


def line_tips(repo: GitRepo, encoded: str) -> dict[str, Oid]:
    """``{line ref: tip}`` of every line of the thread whose ref component is
    ``encoded`` (names.encode_ref_component; a shortened name need not decode)."""
    main, forks, subs = fmt.encoded_thread_ref_globs(encoded)
    return repo.refs(forks[:-1], subs[:-1], names=(main,))


class _IndexCache(LRUCache):
    """The thread indexes kept in memory; one leaving it saves its cache file if worth it."""

    def __init__(self, maxsize: int, evicted) -> None:
        super().__init__(maxsize)
        self._evicted = evicted

    def popitem(self):  # cachetools' documented hook for eviction
        key, value = super().popitem()
        self._evicted(key, value)
        return key, value


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
        self._indexes = _IndexCache(CACHE_THREADS, self._evicted)

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
            return idx
        refs = self.thread_refs(thread_id)
        if idx is None and refs:
            idx = self._load_index(thread_id)
            if idx is not None:
                self._indexes[thread_id] = idx
        if idx is not None:
            if refs == idx.tips:
                return idx
            stale = any(
                ref not in refs
                or (refs[ref] != old and not self.repo.descendant_of(refs[ref], old))
                for ref, old in idx.tips.items()
            )
            if not stale:
                for ref, tip in refs.items():
                    if idx.tips.get(ref) != tip:
                        self._walk(idx, ref, tip)
                if _due(idx):
                    self._save_index(thread_id, idx)
                return idx
        idx = self._build_index(refs)
        self._indexes[thread_id] = idx
        if _due(idx):
            self._save_index(thread_id, idx)
        return idx

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
        path = self._index_path(thread_id)
        tmp = f"{path}.{os.getpid()}.{threading.get_ident()}.tmp"
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(tmp, "wb") as fh:
                fh.write(idx.to_bytes())
            os.replace(tmp, path)
            idx.unsaved = 0
        except OSError:  # a read-only repository still works, just without the cache
            try:
                os.unlink(tmp)
            except OSError:
                pass

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

    def write_blobs(self, subtrees: Sequence[bytes], cid: str, *, calls: bool | None = False) -> dict[str, Oid]:
        """``{tree entry name: blob}`` of a checkpoint's ``writes/<id>`` subtrees
        (the index's ``writes``: raw tree ids).

        Names are ``<encoded task id>.<idx>``; a later subtree's entry replaces an
        earlier one of the same name (special writes such as errors are replaced).
        Recorded calls (``<task>.callNN``, format.md 21) are left out unless
        ``calls`` is True (both) or None (only the calls).
        """
        out: dict[str, Oid] = {}
        for subtree in subtrees:
            tree = Oid(raw=subtree)
            for name, (oid, _) in self.repo.tree_entries(tree, f"writes of checkpoint {cid}").items():
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
