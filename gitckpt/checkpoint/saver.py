"""GitSaver: a LangGraph checkpointer whose storage is a bare git repository.

Where a checkpoint becomes a commit: :meth:`GitSaver.put`. Where a pending
write becomes a commit: :meth:`GitSaver.put_writes`. The format is described
in ``docs/format.md``; in short:

* each thread is a branch (``threads/<T>``), each checkpoint a commit whose
  tree holds ``checkpoint``, ``metadata`` and ``channels/<name>``; the parent
  checkpoint's commit is its parent; a fork is another branch
  (``forks/<T>/<id>``); a subgraph namespace is its own line
  (``subgraphs/<T>/<NS>``);
* a branch is an append-only log: pending writes arrive as commits on it
  (``writes/<checkpoint-id>/...`` added to the tree), whenever they arrive —
  before their checkpoint is stored, or after it has children;
* only the channels in ``new_versions`` are written; the others keep their
  blob ids. A long list (a chat's messages) is stored as a tree of chunks, so a
  put writes only the chunk that grew.
"""

from __future__ import annotations

import asyncio
import builtins
import heapq
import logging
import random
import threading
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import ormsgpack
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    WRITES_IDX_MAP,
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    DeltaChannelHistory,
    PendingWrite,
    SerializerProtocol,
    get_checkpoint_id,
    get_checkpoint_metadata,
    writes_sort_key,
)
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

from ..errors import ConfigError, CorruptObjectError, InvalidInputError, NotFoundError
from ..git import names
from ..git.cache import LRU
from ..git.locks import retry_cas
from ..git.repo import BLOB, TREE, GitRepo, Oid
from . import format as fmt
from .index import CACHE_THREADS, Entry, ThreadIndex, ThreadIndexes
from .recording import Replay, SaverRecording, activate, ensure_hook
from .values import DecodedCache

#: Items per chunk blob of a long list, and chunks per group tree.
CHUNK = 32
GROUP = 64
#: Lists shorter than this are one blob.
CHUNK_MIN = 2 * CHUNK
#: A listing reads its first checkpoints like ``get_tuple``; past this many it is
#: a scan and leaves the caches as they were (format.md 25).
SCAN_AFTER = 64


class _Update:
    """One queued write of a thread (see GitSaver._submit)."""

    __slots__ = ("prepare", "record", "is_put", "needs", "done", "error")

    def __init__(self, prepare, record, is_put: bool, needs: tuple[str, str] | None) -> None:
        self.prepare = prepare
        self.record = record
        self.is_put = is_put
        self.needs = needs  # (ns, checkpoint id) it builds on, if any
        self.done = False
        self.error: BaseException | None = None


logger = logging.getLogger(__name__)


def _serde_hint(data: Any) -> str:
    """What to do about a value that would not decode because it is encrypted."""
    if data is None:
        return ""
    kind = data[0] if isinstance(data, tuple) else bytes(data[:32]).partition(b"\n")[0].decode("ascii", "replace")
    if "+" not in kind:
        return ""
    return (
        f"; it is encrypted ({kind}): read it with the serializer that wrote it "
        "(GitSaver(serde=...), or `gitckpt --serde aes` with $LANGGRAPH_AES_KEY set)"
    )


class GitSaver(BaseCheckpointSaver[str]):
    """A drop-in ``BaseCheckpointSaver`` on a bare git repository, sync and async.

    It finds checkpoints through its thread indexes (``self.indexes``, a
    :class:`~gitckpt.checkpoint.index.ThreadIndexes`; docs/format.md, 6).

    Args:
        path: the bare repository; created if it does not exist.
        serde: the serializer (default LangGraph's ``JsonPlusSerializer``);
            ``EncryptedSerializer`` and the msgpack allowlist work as usual.
            LangGraph's default constructs any type a stored value names (with a
            warning) unless ``LANGGRAPH_STRICT_MSGPACK=true``: for a repository
            pulled from elsewhere, pass ``allowed_msgpack_modules`` (docs/format.md, 16).
        allowed_msgpack_modules: read strictly: construct only LangGraph's safe
            types and these (``(module, name)`` pairs or classes; ``()`` for the
            safe types alone); any other type is returned as its stored data, as
            LangGraph's strict mode does. Shorthand for
            ``serde=JsonPlusSerializer(allowed_msgpack_modules=...)``.
        durability: ``"os"`` (default) — every put is written with write+rename
            and survives a crash of the process; ``"fsync"`` — every put is also
            flushed to disk before it returns, so it survives a power loss.
        auto_pack: merge the small packs it writes in the background (``docs/format.md``, 9).
        decoded_cache_bytes: how many bytes of stored values to keep decoded in
            memory (0 turns the cache off). Reads always get their own copies.
        record: store every chat-model and tool call that graphs running on
            this saver make (input, answer, node, step), so that a thread can
            be replayed offline (:meth:`replaying`) and checked with
            ``gitckpt reproduce`` (docs/format.md, 18).
        indexes: thread indexes to share (they must be on the repository ``path``
            is); by default the saver makes its own.

    ``path`` may be an open :class:`~gitckpt.git.repo.GitRepo`: then its
    opener closes it, and :meth:`close` only saves the index caches. A saver
    that opened its repository closes it.

    Example:
        >>> saver = GitSaver("agent.git")
        >>> graph = builder.compile(checkpointer=saver)
        >>> graph.invoke(inputs, {"configurable": {"thread_id": "1"}})
    """

    def __init__(
        self,
        path: str | Any,
        *,
        serde: SerializerProtocol | None = None,
        allowed_msgpack_modules: Iterable[tuple[str, ...] | type] | None = None,
        durability: str = "os",
        auto_pack: bool = True,
        decoded_cache_bytes: int = 16 << 20,
        indexes: ThreadIndexes | None = None,
        record: bool = False,
    ) -> None:
        if allowed_msgpack_modules is not None:
            if serde is not None:
                raise InvalidInputError(
                    "GitSaver: give allowed_msgpack_modules to your serializer "
                    "(JsonPlusSerializer(allowed_msgpack_modules=...)), not beside serde="
                )
            serde = JsonPlusSerializer(allowed_msgpack_modules=tuple(allowed_msgpack_modules))
        self._decoded_cache_bytes = decoded_cache_bytes
        super().__init__(serde=serde)  # sets self.serde: the caches and the msgpack hook (below)
        self._owns_repo = not isinstance(path, GitRepo)
        self.repo = (
            path
            if isinstance(path, GitRepo)
            else GitRepo(path, durability=durability, auto_pack=auto_pack, log_first=True)
        )
        if indexes is not None and indexes.repo is not self.repo:
            raise InvalidInputError("GitSaver(indexes=...): the indexes are of another repository object")
        self.indexes = indexes if indexes is not None else ThreadIndexes(self.repo)
        self.lock = self.repo.lock
        self._queue: dict[str, list[_Update]] = {}
        self._queue_lock = threading.Lock()
        #: record every model and tool call of graph runs on this saver (docs/format.md, 18)
        self.record = bool(record)
        self._recording = SaverRecording(self)
        if self.record:
            ensure_hook()

    @property
    def serde(self) -> SerializerProtocol:
        """The serializer. Setting it (``BaseCheckpointSaver.with_allowlist`` sets it
        on a shallow copy) gives this saver caches of decoded values of its own and
        the msgpack hook of the new serializer: a copy that allows other types never
        returns a value the other decoded (format.md, 16)."""
        try:
            return self._serde
        except AttributeError:  # BaseCheckpointSaver.__init__ reads it before setting it
            return BaseCheckpointSaver.serde

    @serde.setter
    def serde(self, value: SerializerProtocol) -> None:
        self._serde = value
        # (thread, ns, cid) -> (channel entries, channel versions, versions_seen)
        # (a checkpoint's entry replaces its parent's, below: one entry per line
        # being written, so a writer of 1,000 threads round-robin still finds each
        # parent; with 1,024 entries and no replacing, 99 % were read back from git)
        self._bases: LRU[tuple, tuple] = LRU(16 * CACHE_THREADS)
        # (thread, ns, channel) -> (items of the full chunks, chunk oids, group oids)
        self._chunks: LRU[tuple, tuple] = LRU(4 * CACHE_THREADS)
        # blob id -> decoded value (reads get fresh copies; see values.py)
        self._decoded = DecodedCache(self._decoded_cache_bytes)
        # LangGraph's own serializer: its msgpack values are decoded with an ext_hook
        # that decodes each message once (values.DecodedCache.ext_hook; format.md 11).
        # The hook is the serializer's own (its allowlist, strict or not), wrapped.
        inner = getattr(value, "_unpack_ext_hook", None)
        # A serializer that declares its msgpack branch is LangGraph's with a hook of its
        # own (gitckpt.trust's strict one: the CLI's and verify's) is wrapped the same way.
        plain = type(value) is JsonPlusSerializer and not getattr(value, "_custom_unpack_ext_hook", True)
        wrap = (plain or getattr(type(value), "gitckpt_wraps_ext_hook", False)) and self._decoded_cache_bytes > 0
        hooks = (self._decoded.ext_hook(inner), self._decoded.ext_hook(inner, keep=False)) if wrap and inner else None
        self._msgpack_hook: Callable[[int, bytes], Any] | None = hooks[0] if hooks else None
        self._msgpack_scan_hook: Callable[[int, bytes], Any] | None = hooks[1] if hooks else None

    # -- construction ---------------------------------------------------------

    @classmethod
    @contextmanager
    def from_conn_string(cls, path: str, **kwargs: Any) -> Iterator[GitSaver]:
        """Open (or create) the repository at ``path`` for the duration of a block."""
        saver = cls(path, **kwargs)
        try:
            yield saver
        finally:
            saver.close()

    def setup(self) -> None:
        """Nothing to set up: the repository is created on open. Safe to call twice."""

    def close(self) -> None:
        """Publish what only the log holds, save the thread indexes' cache files,
        and close the repository if this saver opened it."""
        self.repo.publish()
        self.indexes.save()
        if self._owns_repo:
            self.repo.close()

    def publish(self) -> None:
        """Make every update that has returned visible to plain ``git`` now.

        An update is durable when it returns (in the repository's log), and
        other gitckpt processes see it at once; plain ``git`` sees it once it
        is published about 0.1 s later (by a later update, or by a background
        thread once the writer is quiet) and by :meth:`close` for what is left
        (docs/format.md, 21, 29). Call this
        before running ``git`` on a repository this saver is writing."""
        self.repo.publish()

    def threads(self) -> list[str]:
        """Every thread id in the repository, sorted."""
        return self.indexes.threads()

    def thread_info(self, thread_id: str) -> dict[str, Any] | None:
        """Summary of a thread (checkpoints, lines, latest checkpoint), or None."""
        return self.indexes.thread_info(thread_id)

    def _forget(self, thread_id: str) -> None:
        self.indexes.forget(thread_id)
        for cache in (self._bases, self._chunks):
            for key in [k for k in cache if k[0] == thread_id]:
                del cache[key]

    def __enter__(self) -> GitSaver:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    async def __aenter__(self) -> GitSaver:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await asyncio.to_thread(self.close)

    # -- reading --------------------------------------------------------------

    def _load_blob(self, oid: Oid, what: str, keep: bool = True) -> Any:
        """The decoded value of a blob: a fresh copy of the cached one, or decoded now.
        ``keep=False`` (a scan, format.md 25) leaves the caches as they were."""
        if not keep:
            if self._decoded.data:
                hit, value = self._decoded.get(oid, False)
                if hit:
                    return value
            return self._load(self.repo.read_blob(oid, what, keep=False), what, keep=False)
        hit, value = self._decoded.get(oid)
        if hit:
            return value
        data = self.repo.read_blob(oid, what)
        value = self._load(data, what)
        self._decoded.put(oid, value, len(data))
        return value

    def _load(self, data: bytes, what: str, keep: bool = True) -> Any:
        try:
            return self._loads(fmt.unpack_value(data), keep)
        except Exception as exc:
            raise CorruptObjectError(f"{what}: cannot decode the stored value ({exc}){_serde_hint(data)}") from exc

    def _loads(self, typed: tuple[str, bytes], keep: bool = True) -> Any:
        """``serde.loads_typed``; for LangGraph's own serializer, its msgpack branch
        with the hook that decodes each message once (``keep=False``: a scan's
        hook, which uses the cache and adds nothing to it)."""
        if keep:
            hook = self._msgpack_hook
        else:  # nothing kept at all: the serializer's own loads_typed, as with no cache
            hook = self._msgpack_scan_hook if self._decoded.data else None
        if hook is not None and typed[0] == "msgpack":
            return ormsgpack.unpackb(typed[1], ext_hook=hook, option=ormsgpack.OPT_NON_STR_KEYS)
        return self.serde.loads_typed(typed)

    def _tree_of(self, entry: Entry, what: str, keep: bool = True) -> dict[str, tuple[Oid, int]]:
        return self.repo.tree_entries(entry.tree, what, keep=keep)

    def _read_list(self, key: tuple, oid: Oid, what: str, keep: bool = True) -> list:
        items: list = []
        chunk_oids: list[Oid] = []
        group_oids: list[Oid] = []
        for gname, (goid, _) in sorted(self.repo.tree_entries(oid, keep=keep).items()):
            group_oids.append(goid)
            for cname, (coid, _) in sorted(self.repo.tree_entries(goid, keep=keep).items()):
                part = self._load_blob(coid, what, keep)
                if not isinstance(part, list):
                    raise CorruptObjectError(f"{what}: chunk {gname}/{cname} is not a list")
                items.extend(part)
                chunk_oids.append(coid)
        if keep:
            full = len(items) // CHUNK
            self._remember_chunks(key, items[: full * CHUNK], chunk_oids[:full], group_oids)
        return items

    def _read_channel(self, thread_id: str, ns: str, ch: str, oid: Oid, mode: int, what: str, keep: bool = True) -> Any:
        """A stored channel value: a chunked list (a tree) or one blob."""
        what = f"{what} channel {ch!r}"
        if mode == TREE:
            return self._read_list((thread_id, ns, ch), oid, what, keep)
        return self._load_blob(oid, what, keep)

    def _read_checkpoint(
        self, thread_id: str, ns: str, cid: str, entry: Entry, keep: bool = True
    ) -> tuple[Checkpoint, CheckpointMetadata]:
        what = f"thread {thread_id!r} checkpoint {cid}"
        tree = self._tree_of(entry, what, keep)
        try:
            cp_oid, md_oid = tree["checkpoint"][0], tree["metadata"][0]
        except KeyError as exc:
            raise CorruptObjectError(f"{what}: commit {entry.commit} has no {exc} file") from exc
        checkpoint = self._load_blob(cp_oid, what, keep)
        metadata = self._load_blob(md_oid, what, keep)
        for name, value in (("checkpoint", checkpoint), ("metadata", metadata)):
            if not isinstance(value, dict):  # a crafted or foreign blob: say so, no AttributeError
                raise CorruptObjectError(f"{what}: its {name} blob holds a {type(value).__name__}, not a map")
        values: dict[str, Any] = {}
        if "channels" in tree:
            entries = self.repo.tree_entries(tree["channels"][0], keep=keep)
            by_name = {names.encode_tree_name(ch): ch for ch in checkpoint.get("channel_versions", {})}
            for name, (oid, mode) in entries.items():
                ch = by_name.get(name) or names.decode(name)
                if ch is None:
                    continue
                values[ch] = self._read_channel(thread_id, ns, ch, oid, mode, what, keep)
            if keep:
                self._remember_base(
                    (thread_id, ns, cid),
                    entries,
                    checkpoint.get("channel_versions", {}),
                    checkpoint.get("versions_seen", {}),
                )
        checkpoint["channel_values"] = values
        return checkpoint, metadata

    def _write_blobs(self, idx: ThreadIndex, ns: str, cid: str, keep: bool = True) -> dict[str, Oid]:
        """``{tree entry name: blob}`` of every pending write recorded for a checkpoint."""
        return self.indexes.write_blobs(idx.writes.get((ns, cid), ()), cid, keep=keep)

    def _pending_writes(
        self, thread_id: str, idx: ThreadIndex, ns: str, cid: str, keep: bool = True
    ) -> list[PendingWrite]:
        what = f"thread {thread_id!r} checkpoint {cid} pending write"
        rows = []
        for oid in self._write_blobs(idx, ns, cid, keep).values():
            typed = None
            try:
                task_id, widx, channel, task_path, typed = fmt.unpack_write(self.repo.read_blob(oid, what, keep=keep))
                value = self._loads(typed, keep)
            except CorruptObjectError:
                raise
            except Exception as exc:
                raise CorruptObjectError(f"{what}: cannot decode blob {oid} ({exc}){_serde_hint(typed)}") from exc
            rows.append((task_path, task_id, widx, (task_id, channel, value)))
        if len(rows) > 1:
            rows.sort(key=lambda r: writes_sort_key(r[0], r[1], r[2]))
        return [r[3] for r in rows]

    def _tuple(
        self, thread_id: str, idx: ThreadIndex, ns: str, cid: str, entry: Entry, keep: bool = True
    ) -> CheckpointTuple:
        checkpoint, metadata = self._read_checkpoint(thread_id, ns, cid, entry, keep)
        return CheckpointTuple(
            config={"configurable": {"thread_id": thread_id, "checkpoint_ns": ns, "checkpoint_id": cid}},
            checkpoint=checkpoint,
            metadata=metadata,
            parent_config=(
                {"configurable": {"thread_id": thread_id, "checkpoint_ns": ns, "checkpoint_id": entry.parent}}
                if entry.parent
                else None
            ),
            pending_writes=self._pending_writes(thread_id, idx, ns, cid, keep),
        )

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        """The checkpoint named by ``config``, or the thread's latest one."""
        thread_id, ns = _thread_and_ns(config)
        cid = get_checkpoint_id(config)
        with self.lock:
            idx = self.indexes.get(thread_id)
            if cid is None:
                cid = idx.latest(ns)
                if cid is None:
                    return None
            entry = idx.ckpt.get((ns, cid))
            if entry is None:
                return None
            return self._tuple(thread_id, idx, ns, cid, entry)

    def list(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> Iterator[CheckpointTuple]:
        """Checkpoints newest first (greatest checkpoint id first).

        Lazy: each (thread, namespace) is walked backwards from its ``before``
        position in the index, and the walks are merged, so ``limit=10`` reads
        ten checkpoints whatever the length of the history.

        A checkpoint that cannot be read (a missing or corrupt object) does not
        hide the others: it is left out (it does not count towards ``limit``)
        with a warning on the ``gitckpt.checkpoint.saver`` logger that names
        its thread, checkpoint and object, as ``get_tuple`` does when asked
        for it; every readable one is yielded (format.md 17.5). LangGraph's
        ``get_state_history`` reads ``list()`` whole before it yields
        anything, so an error at the end would hide the whole history.
        """
        if config is None:
            threads, ns_filter, only = self.indexes.threads(), None, None
        else:
            threads = [_thread_and_ns(config)[0]]
            ns_filter = config["configurable"].get("checkpoint_ns")
            only = get_checkpoint_id(config)
        before_id = get_checkpoint_id(before) if before else None
        # The indexes read here are held for the whole listing, not asked of the
        # LRU again for each checkpoint: over many threads whose ids interleave,
        # the LRU would drop and rebuild them over and over (format.md 23). They are
        # the very objects this process's writers update, so a listing still sees
        # what is written meanwhile, as it did.
        held: dict[str, ThreadIndex] = {}
        if only is not None:
            if before_id is not None and only >= before_id:
                return
            sources = [iter([(only, threads[0], ns_filter or "")])]
        else:
            sources = []
            with self.lock:
                held = self.indexes.get_many(threads)
                for thread_id, idx in held.items():
                    for ns in [ns_filter] if ns_filter is not None else idx.namespaces():
                        sources.append(self._ids_desc(thread_id, idx, ns, before_id))
        remaining = limit
        # the first checkpoints are read like get_tuple's; the rest, and every one of a
        # listing of all threads, as a scan that leaves the caches as they were (format.md 25)
        read, scan_after = 0, SCAN_AFTER if config is not None else 0
        cheap = {"step", "source", "run_id"}
        for cid, thread_id, ns in heapq.merge(*sources, reverse=True):
            if remaining is not None and remaining <= 0:
                break
            with self.lock:
                idx = held.get(thread_id) or self.indexes.get(thread_id, refresh=False)
                entry = idx.ckpt.get((ns, cid))
                if entry is None:
                    continue
                try:
                    if filter:
                        if set(filter) <= cheap:
                            fields = {"step": entry.step, "source": entry.source, "run_id": entry.run_id}
                        else:
                            fields = self._metadata(thread_id, cid, entry)
                        if not all(fields.get(k) == v for k, v in filter.items()):
                            continue
                    tup = self._tuple(thread_id, idx, ns, cid, entry, read < scan_after)
                except CorruptObjectError as exc:  # format.md 17.5: the rest of the history is still listed
                    logger.warning("list() left out a damaged checkpoint (run `gitckpt verify`): %s", exc)
                    continue
            read += 1
            if remaining is not None:
                remaining -= 1
            yield tup

    def _ids_desc(
        self, thread_id: str, idx: ThreadIndex, ns: str, before: str | None
    ) -> Iterator[tuple[str, str, str]]:
        """``(cid, thread_id, ns)`` of ``idx`` newest first below ``before``, fetched a few at a time."""
        cursor = before
        n = 8
        while True:
            with self.lock:
                batch = idx.ids_before(ns, cursor, n)
            if not batch:
                return
            for cid in batch:
                yield cid, thread_id, ns
            cursor = batch[-1]
            n = min(n * 4, 1024)

    def _metadata(self, thread_id: str, cid: str, entry: Entry) -> dict[str, Any]:
        what = f"thread {thread_id!r} checkpoint {cid}"
        tree = self._tree_of(entry, what)
        return self._load_blob(tree["metadata"][0], what)

    # -- writing: checkpoints -------------------------------------------------

    def _remember_base(self, key: tuple, entries: dict, versions: Mapping, seen: Mapping) -> None:
        self._bases[key] = (entries, dict(versions), seen)

    def _remember_chunks(
        self, key: tuple, items: builtins.list, chunk_oids: builtins.list, group_oids: builtins.list
    ) -> None:
        self._chunks[key] = (items, chunk_oids, group_oids)

    def _base(self, thread_id: str, ns: str, cid: str, entry: Entry) -> tuple:
        key = (thread_id, ns, cid)
        base = self._bases.get(key)
        if base is None:
            what = f"thread {thread_id!r} checkpoint {cid}"
            tree = self._tree_of(entry, what)
            cp = self._load_blob(tree["checkpoint"][0], what)
            entries = self.repo.tree_entries(tree["channels"][0]) if "channels" in tree else {}
            self._remember_base(key, entries, cp.get("channel_versions", {}), cp.get("versions_seen", {}))
            base = self._bases[key]
        return base

    def _dumps(self, value: Any) -> tuple[str, bytes]:
        try:
            return self.serde.dumps_typed(value)
        except Exception as exc:
            raise InvalidInputError(f"a value of type {type(value).__name__} cannot be serialized ({exc})") from exc

    def _encode_value(self, value: Any) -> Oid:
        return self.repo.blob(fmt.pack_value(self._dumps(value)))

    def _encode_list(self, key: tuple, value: builtins.list) -> Oid:
        """Store a long list as groups of chunks, re-using every unchanged full chunk.

        A full chunk is unchanged when its items are the very objects (or equal
        ones) of the chunk stored last time for this channel: LangGraph's
        reducers (``add_messages``, ``operator.add``) copy the list but keep its
        items, so a chat that grows by one message writes one chunk.
        """
        prev_items, prev_chunks, prev_groups = self._chunks.get(key, ([], [], []))
        n = len(value)
        nfull = n // CHUNK
        # how many leading full chunks are the same as last time (C-speed compare)
        same = min(len(prev_chunks), nfull)
        whole = same == len(prev_chunks)  # the remembered items are all a prefix of the new list
        prev_part = prev_items if whole else prev_items[: same * CHUNK]
        if same and value[: same * CHUNK] != prev_part:
            whole = False
            same = 0
            for i in range(min(len(prev_chunks), nfull)):
                if value[i * CHUNK : (i + 1) * CHUNK] != prev_items[i * CHUNK : (i + 1) * CHUNK]:
                    break
                same = i + 1
        chunk_oids = list(prev_chunks[:same])
        for i in range(same, (n + CHUNK - 1) // CHUNK):
            chunk_oids.append(self._encode_value(value[i * CHUNK : (i + 1) * CHUNK]))
        groups: dict[str, tuple[Oid, int]] = {}
        group_oids: list[Oid] = []
        for g in range(0, len(chunk_oids), GROUP):
            gi = g // GROUP
            members = chunk_oids[g : g + GROUP]
            if (g + GROUP) <= same and gi < len(prev_groups) and len(members) == GROUP:
                goid = prev_groups[gi]
            else:
                goid = self.repo.tree({f"{j:02d}": (o, BLOB) for j, o in enumerate(members)})
            groups[f"{gi:04d}"] = (goid, TREE)
            group_oids.append(goid)
        if whole:  # extend the private copy by the new full chunks: a put at item 10,000 copies no prefix
            prev_items.extend(value[len(prev_items) : nfull * CHUNK])
            items = prev_items
        else:
            items = value[: nfull * CHUNK]
        self._remember_chunks(key, items, chunk_oids[:nfull], group_oids[: nfull // GROUP])
        return self.repo.tree(groups)

    def _encode_channel(self, key: tuple, value: Any) -> tuple[Oid, int]:
        if type(value) is list and len(value) >= CHUNK_MIN:
            return self._encode_list(key, value), TREE
        return self._encode_value(value), BLOB

    def _subject(
        self,
        idx: ThreadIndex,
        ns: str,
        parent: str | None,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
        parent_seen: Mapping,
    ) -> str:
        """One line for people: step, source, which nodes wrote which channels."""
        step = metadata.get("step")
        source = metadata.get("source", "?")
        head = f"step {step} · {source}"
        changed = list(checkpoint.get("updated_channels") or new_versions)
        shown = [c for c in changed if not fmt.is_internal_channel(c)] or changed
        if source == "input":
            return head
        if source == "fork":
            return f"{head} of {parent}" if parent else head
        # consumed here: only the parent's next checkpoint is described by it
        wrote = idx.wrote.pop((ns, parent), None) if parent and source == "loop" else None
        if wrote:
            parts = []
            for node, chans in sorted(wrote.items()):
                chans_shown = sorted(c for c in chans if not fmt.is_internal_channel(c))
                if chans_shown:
                    parts.append(f"{node} wrote {', '.join(chans_shown)}")
            if not parts:  # only internal channels (branches, resume values)
                parts = [f"{node} wrote {', '.join(sorted(chans))}" for node, chans in sorted(wrote.items())]
            return f"{head} · {'; '.join(parts)}"
        ran = [n for n, seen in checkpoint.get("versions_seen", {}).items() if seen != parent_seen.get(n)]
        ran = [n for n in ran if not n.startswith("__")] or ran
        if source == "update" and ran:
            return f"{head} · as {', '.join(ran)}: {', '.join(shown)}"
        if ran and shown:
            return f"{head} · {', '.join(ran)} wrote {', '.join(shown)}"
        if shown:
            return f"{head} · updated {', '.join(shown)}"
        return head

    # -- writing: group commit ---------------------------------------------------
    #
    # Every write (a put, a put_writes) is an _Update: ``prepare(idx)`` builds its
    # objects and its commit on top of the index's idea of the line's tip, without
    # touching a ref; ``record(idx, line, commit)`` enters it in the index. Updates
    # of one thread that queue up while another is being written are applied
    # together: their commits chain on the line, their objects go into one pack and
    # each line's ref moves once. Every caller returns only after its own update
    # is durable. If a ref moved under the batch (another process), the index is
    # rebuilt and the updates of that line are redone one by one.

    def _submit(self, thread_id: str, update: _Update) -> None:
        with self._queue_lock:
            self._queue.setdefault(thread_id, []).append(update)
        with self.lock:
            if not update.done:
                with self._queue_lock:
                    batch = self._queue.pop(thread_id, [])
                self._run_batch(thread_id, batch)
        if update.error is not None:
            raise update.error

    def _run_batch(self, thread_id: str, batch: builtins.list[_Update]) -> None:
        # Checkpoints first: writes that LangGraph sent before their checkpoint's
        # put then find it (order among puts, and among writes, is kept).
        batch.sort(key=lambda u: not u.is_put)
        idx = self.indexes.get(thread_id, refresh=False)
        if any(u.needs is not None and u.needs not in idx.ckpt for u in batch):
            idx = self.indexes.get(thread_id)  # built on a checkpoint another process stored?
        origin: dict[str, Oid | None] = {}
        applied: list[tuple[_Update, str]] = []
        for update in batch:
            try:
                built = update.prepare(idx)
            except BaseException as exc:  # reported to its caller, the batch goes on
                update.error, update.done = exc, True
                continue
            if built is None:  # nothing to write (e.g. writes already stored)
                update.done = True
                continue
            line, old, commit = built
            origin.setdefault(line, old)
            idx.record_tip(line, commit)
            update.record(idx, line, commit)
            applied.append((update, line))
        failed = set()
        for line, old in origin.items():
            try:
                if not self.repo.log_update(line, old, idx.tips[line]):
                    failed.add(line)
            except BaseException as exc:
                failed.add(line)
                for update, ln in applied:
                    if ln == line:
                        update.error = exc
        if failed:
            self.indexes.drop(thread_id)  # its optimistic entries are void
        for update, line in applied:
            if line in failed and update.error is None:
                try:
                    self._run_alone(thread_id, update)
                except BaseException as exc:
                    update.error = exc
            update.done = True
        if not failed:
            self.indexes.save_if_due(thread_id, idx)

    def _run_alone(self, thread_id: str, update: _Update) -> None:
        def attempt() -> bool | None:
            idx = self.indexes.get(thread_id)
            built = update.prepare(idx)
            if built is None:
                return True
            line, old, commit = built
            if not self.repo.log_update(line, old, commit):
                return None
            idx.record_tip(line, commit)
            update.record(idx, line, commit)
            return True

        retry_cas(attempt, f"write on thread {thread_id!r}")

    # -- writing: checkpoints ---------------------------------------------------

    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        """Store a checkpoint as a commit on its thread's branch."""
        thread_id, ns = _thread_and_ns(config)
        parent = config["configurable"].get("checkpoint_id")
        cid = checkpoint["id"]
        values = checkpoint.get("channel_values", {})
        versions = checkpoint.get("channel_versions", {})
        md = get_checkpoint_metadata(config, metadata)
        if self.record:
            self._recording.remember(thread_id, ns, cid, values)
        cp: dict[str, Any] = {k: v for k, v in checkpoint.items() if k != "channel_values"}
        try:
            cp_data = fmt.pack_value(self._dumps(cp))
            md_data = fmt.pack_value(self._dumps(md))
        except InvalidInputError as exc:
            raise InvalidInputError(f"thread {thread_id!r} checkpoint {cid}: {exc}") from exc
        entries: dict[str, tuple[Oid, int]] = {}
        root_tree: Oid | None = None

        def prepare(idx: ThreadIndex):
            nonlocal root_tree
            parent_entry = idx.ckpt.get((ns, parent)) if parent else None
            if parent_entry is not None and parent:
                base_entries, base_versions, base_seen = self._base(thread_id, ns, parent, parent_entry)
            else:
                base_entries, base_versions, base_seen = {}, {}, {}
            entries.clear()
            try:
                for ch, ver in versions.items():
                    if ch not in values:
                        continue
                    name = names.encode_tree_name(ch)
                    if ch not in new_versions and base_versions.get(ch) == ver and name in base_entries:
                        entries[name] = base_entries[name]
                    else:
                        entries[name] = self._encode_channel((thread_id, ns, ch), values[ch])
            except InvalidInputError as exc:
                raise InvalidInputError(f"thread {thread_id!r} checkpoint {cid}: {exc}") from exc
            root = {"checkpoint": (self.repo.blob(cp_data), BLOB), "metadata": (self.repo.blob(md_data), BLOB)}
            if entries:
                root["channels"] = (self.repo.tree(entries), TREE)
            subject = self._subject(idx, ns, parent, checkpoint, md, new_versions, base_seen)
            message = fmt.checkpoint_message(
                subject,
                thread_id=thread_id,
                ns=ns,
                checkpoint_id=cid,
                parent_id=parent,
                step=md.get("step"),
                source=md.get("source"),
                run_id=md.get("run_id"),
            )
            # continue the line whose newest checkpoint is the parent; a first
            # checkpoint continues a line that holds only early writes, if any
            line = idx.line_with_head(ns, parent)
            if line is not None:
                old = idx.tips[line]
                parents = [old]
            else:  # a new line: the thread's first, or a fork
                line = fmt.line_ref(thread_id, ns, cid if idx.lines_of(ns) else None)
                old = None
                parents = [parent_entry.commit] if parent_entry is not None else []
            root_tree = self.repo.tree(root)
            return line, old, self.repo.commit(root_tree, parents, message)

        def record(idx: ThreadIndex, line: str, commit: Oid) -> None:
            assert root_tree is not None  # prepare() ran
            idx.heads[line] = (ns, cid)
            idx.last_line[ns] = line
            step = md.get("step")
            entry = Entry.of(
                commit,
                root_tree,
                parent,
                step if isinstance(step, int) else None,
                md.get("source"),
                md.get("run_id"),
                line,
            )
            idx.add_checkpoint(ns, cid, entry)
            if parent:  # its child is what the next put builds on (a fork from it reads it again)
                self._bases.pop((thread_id, ns, parent))
            self._remember_base((thread_id, ns, cid), dict(entries), versions, cp.get("versions_seen", {}))
            idx.unsaved += 1

        self._submit(thread_id, _Update(prepare, record, is_put=True, needs=(ns, parent) if parent else None))
        return {"configurable": {"thread_id": thread_id, "checkpoint_ns": ns, "checkpoint_id": cid}}

    # -- writing: pending writes ----------------------------------------------

    def put_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        """Store a task's writes for a checkpoint, as one commit."""
        thread_id, ns = _thread_and_ns(config)
        cid = config["configurable"].get("checkpoint_id")
        if not cid:
            raise InvalidInputError("put_writes needs a config with a checkpoint_id")
        if not writes:
            return
        calls = self._recording.blobs(thread_id, ns, cid, task_id)
        serialized = []
        for i, (channel, value) in enumerate(writes):
            try:
                typed = self._dumps(value)
            except InvalidInputError as exc:
                raise InvalidInputError(
                    f"thread {thread_id!r} checkpoint {cid}: the write to {channel!r}: {exc}"
                ) from exc
            serialized.append((WRITES_IDX_MAP.get(channel, i), channel, typed))
        cname = names.encode_tree_name(cid)
        channels: set[str] = set()
        node = ""
        subtree: Oid | None = None

        def prepare(idx: ThreadIndex):
            nonlocal node
            # the checkpoint's writes trees, read once: the writes, and the calls when there are some to add
            entries = self.indexes.write_blobs(idx.writes.get((ns, cid), ()), cid, calls=True if calls else False)
            existing = {n: o for n, o in entries.items() if not fmt.is_call_entry(n)} if calls else entries
            new: dict[str, tuple[Oid, int]] = {}
            channels.clear()
            for widx, channel, typed in serialized:
                name = f"{names.encode_tree_name(task_id)}.{widx}"
                if widx >= 0 and name in existing:
                    continue  # idempotent: a retried task writes once
                data = fmt.pack_write(task_id, widx, channel, task_path, typed)
                new[name] = (self.repo.blob(data), BLOB)
                channels.add(channel)
            if calls:  # the task's recorded calls, numbered after those of an earlier attempt
                tname = names.encode_tree_name(task_id)
                done = sum(1 for n in entries if n.startswith(tname + fmt.CALL_MARK) and fmt.is_call_entry(n))
                for k, data in enumerate(calls):
                    new[fmt.call_entry(tname, done + k)] = (self.repo.blob(data), BLOB)
            if not new:
                return None
            node = fmt.writer_of(task_id, task_path, channels or {c for _, c, _ in serialized})
            shown = sorted(c for c in channels if not fmt.is_internal_channel(c)) or sorted(channels)
            entry = idx.ckpt.get((ns, cid))
            if entry is not None:
                what = f"step {entry.step} · writes" if entry.step is not None else "writes"
            else:  # LangGraph may send a step's writes before its checkpoint's put
                what = f"writes for {cid}"
            line = None
            if entry is not None and entry.line in idx.tips:
                line = entry.line
            if line is None and entry is not None:
                line = idx.line_with_head(ns, cid)
            if line is None:
                line = idx.last_line.get(ns)
                if line not in idx.tips:
                    line = next(iter(idx.lines_of(ns)), None)
            if line is None:  # writes before any checkpoint of this namespace
                line = fmt.line_ref(thread_id, ns, None)
            old = idx.tips.get(line)
            root = self.repo.tree_entries(self.repo.commit_info(old).tree_id) if old is not None else {}
            wtree = self.repo.tree_entries(root["writes"][0]) if "writes" in root else {}
            sub = self.repo.tree_entries(wtree[cname][0]) if cname in wtree else {}
            sub.update(new)
            nonlocal subtree
            subtree = self.repo.tree(sub)
            wtree[cname] = (subtree, TREE)
            root["writes"] = (self.repo.tree(wtree), TREE)
            message = fmt.writes_message(
                f"{what} · {node} → {', '.join(shown)}",
                thread_id=thread_id,
                ns=ns,
                writes_for=cid,
                writes_tree=subtree,
                task_id=task_id,
            )
            return line, old, self.repo.commit(self.repo.tree(root), [old] if old else [], message)

        def record(idx: ThreadIndex, line: str, commit: Oid) -> None:
            assert subtree is not None  # prepare() ran
            idx.add_writes(ns, cid, subtree)
            idx.unsaved += 1
            if line not in idx.heads:
                idx.heads[line] = (ns, None)
            idx.wrote.setdefault((ns, cid), {}).setdefault(node, set()).update(channels)
            if len(idx.wrote) > 64:  # late writes are never consumed: keep the newest only
                del idx.wrote[next(iter(idx.wrote))]

        self._submit(thread_id, _Update(prepare, record, is_put=False, needs=(ns, cid)))

    # -- deleting, copying, pruning --------------------------------------------

    def delete_thread(self, thread_id: str) -> None:
        """Delete every line of a thread (its refs); ``git gc`` reclaims the objects."""

        def attempt() -> bool | None:
            refs = self.indexes.thread_refs(thread_id)
            for ref, tip in refs.items():
                self.repo.delete_ref(ref, tip)
            return True if not refs or not self.indexes.thread_refs(thread_id) else None

        with self.lock:
            try:
                retry_cas(attempt, f"delete of thread {thread_id!r}")
            finally:
                self._forget(thread_id)

    def delete_for_runs(self, run_ids: Sequence[str]) -> None:
        """Delete the checkpoints (and their writes) that the given runs created.

        A thread whose every checkpoint belongs to those runs is deleted whole.
        Otherwise a ``delete`` commit on each line that holds one of them records
        which checkpoints are gone: nothing is rewritten, the data stays in the
        history until the thread itself is deleted or pruned.
        """
        runs = set(run_ids)
        if not runs:
            return
        for thread_id in self.indexes.threads():
            with self.lock:
                idx = self.indexes.get(thread_id)
                doomed = [(ns, cid) for (ns, cid), e in idx.ckpt.items() if e.run_id in runs]
                if not doomed:
                    continue
                if len(doomed) == len(idx.ckpt):
                    self.delete_thread(thread_id)
                    continue
                message = fmt.delete_message(
                    f"delete {len(doomed)} checkpoint(s) of run(s) {', '.join(sorted(runs))}",
                    thread_id=thread_id,
                    deleted=doomed,
                )
                for ref in list(idx.tips):
                    tip = idx.tips[ref]
                    holds = any(
                        idx.ckpt[key].commit == tip or self.repo.descendant_of(tip, idx.ckpt[key].commit)
                        for key in doomed
                    )
                    if not holds:
                        continue

                    def attempt(ref: str = ref, message: str = message) -> Oid | None:
                        old = self.repo.ref(ref)
                        if old is None:
                            return Oid(hex="0" * 40)
                        commit = self.repo.commit(self.repo.commit_info(old).tree_id, [old], message)
                        return commit if self.repo.update_ref(ref, old, commit) else None

                    retry_cas(attempt, f"delete_for_runs on thread {thread_id!r}")
                for ns, cid in doomed:
                    idx.delete(ns, cid)
                self._forget(thread_id)

    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        """Make ``target`` a copy of ``source``: new refs, no data copied."""
        if source_thread_id == target_thread_id:
            return
        with self.lock:
            refs = self.indexes.thread_refs(source_thread_id)
            if not refs:
                return
            if self.indexes.thread_refs(target_thread_id):
                raise InvalidInputError(
                    f"cannot copy thread {source_thread_id!r} to {target_thread_id!r}: "
                    "the target exists; delete it first"
                )
            message = fmt.marker_message(
                fmt.Kind.COPY, f"copy of thread {source_thread_id} as {target_thread_id}", thread_id=target_thread_id
            )
            src_main, src_forks, src_subs = fmt.thread_ref_globs(source_thread_id)
            dst_main, dst_forks, dst_subs = fmt.thread_ref_globs(target_thread_id)
            for ref, tip in refs.items():
                if ref == src_main:
                    new_ref = dst_main
                elif ref.startswith(src_forks[:-1]):
                    new_ref = dst_forks[:-1] + ref[len(src_forks) - 1 :]
                else:
                    new_ref = dst_subs[:-1] + ref[len(src_subs) - 1 :]
                commit = self.repo.commit(self.repo.commit_info(tip).tree_id, [tip], message)
                if not self.repo.update_ref(new_ref, None, commit):
                    raise InvalidInputError(f"cannot copy to {target_thread_id!r}: it was created concurrently")
            self._forget(target_thread_id)

    def prune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        """``keep_latest``: keep only each namespace's latest checkpoint (and its
        writes) as a new root commit, so older history becomes unreachable and
        ``git gc`` reclaims it. ``delete``: delete the threads."""
        if strategy not in ("keep_latest", "delete"):
            raise InvalidInputError(f"unknown prune strategy {strategy!r}: use 'keep_latest' or 'delete'")
        for thread_id in thread_ids:
            if strategy == "delete":
                self.delete_thread(thread_id)
                continue
            with self.lock:
                retry_cas(lambda t=thread_id: self._prune_one(t), f"prune of thread {thread_id!r}")
                self._forget(thread_id)

    def _prune_one(self, thread_id: str) -> bool | None:
        idx = self.indexes.get(thread_id)
        if not idx.tips:
            return True
        new_tips: dict[str, Oid] = {}
        for ns in idx.namespaces():
            cid = idx.latest(ns)
            if cid is None:
                continue
            entry = idx.ckpt[(ns, cid)]
            commit = self.repo.commit_info(entry.commit)
            kept = self.repo.commit(commit.tree_id, [], commit.message)
            blobs = self.indexes.write_blobs(idx.writes.get((ns, cid), ()), cid, calls=True)
            if blobs:
                wtree = self.repo.tree({name: (o, BLOB) for name, o in blobs.items()})
                root = self.repo.tree_entries(commit.tree_id)
                root["writes"] = (self.repo.tree({names.encode_tree_name(cid): (wtree, TREE)}), TREE)
                kept = self.repo.commit(
                    self.repo.tree(root),
                    [kept],
                    fmt.writes_message(
                        f"writes kept by prune of step {entry.step}",
                        thread_id=thread_id,
                        ns=ns,
                        writes_for=cid,
                        writes_tree=wtree,
                    ),
                )
            new_tips[fmt.line_ref(thread_id, ns, None)] = kept
        for ref, old in idx.tips.items():
            if ref in new_tips:
                if not self.repo.update_ref(ref, old, new_tips.pop(ref)):
                    return None
            elif not self.repo.delete_ref(ref, old):
                return None
        for ref, new in new_tips.items():
            if not self.repo.update_ref(ref, None, new):
                return None
        return True

    # -- operations for people (the CLI) ----------------------------------------

    def fork(self, thread_id: str, checkpoint_id: str, new_thread_id: str, checkpoint_ns: str = "") -> RunnableConfig:
        """Start thread ``new_thread_id`` at a checkpoint of ``thread_id``.

        One commit on a new branch, whose parent is the checkpoint's commit: no
        data is copied and the source thread is not touched. The new thread's
        history is the checkpoint and its ancestors; the checkpoint's pending
        writes come along, so an interrupted step can be resumed on the fork.
        """
        with self.lock:
            if self.indexes.thread_refs(new_thread_id):
                raise InvalidInputError(f"thread {new_thread_id!r} already exists; pick another name or delete it")
            idx = self.indexes.get(thread_id)
            entry = idx.ckpt.get((checkpoint_ns, checkpoint_id))
            if entry is None:
                raise NotFoundError(f"thread {thread_id!r} has no checkpoint {checkpoint_id!r}")
            root = self.repo.tree_entries(self.repo.commit_info(entry.commit).tree_id)
            blobs = self.indexes.write_blobs(
                idx.writes.get((checkpoint_ns, checkpoint_id), ()), checkpoint_id, calls=True
            )
            sub = self.repo.tree({name: (o, BLOB) for name, o in blobs.items()}) if blobs else None
            if sub is not None:
                root["writes"] = (self.repo.tree({names.encode_tree_name(checkpoint_id): (sub, TREE)}), TREE)
            subject = f"fork of thread {thread_id} at step {entry.step} ({checkpoint_id})"
            message = (
                fmt.writes_message(
                    subject, thread_id=new_thread_id, ns=checkpoint_ns, writes_for=checkpoint_id, writes_tree=sub
                )
                if sub is not None
                else fmt.marker_message(fmt.Kind.FORK, subject, thread_id=new_thread_id, ns=checkpoint_ns)
            )
            tree = self.repo.tree(root) if blobs else self.repo.commit_info(entry.commit).tree_id
            commit = self.repo.commit(tree, [entry.commit], message)
            line = fmt.line_ref(new_thread_id, checkpoint_ns, None)
            if not self.repo.update_ref(line, None, commit):
                raise InvalidInputError(f"thread {new_thread_id!r} was created concurrently")
            self._forget(new_thread_id)
            self._carry_calls(idx, thread_id, new_thread_id, checkpoint_ns, entry, line, commit)
        return {
            "configurable": {"thread_id": new_thread_id, "checkpoint_ns": checkpoint_ns, "checkpoint_id": checkpoint_id}
        }

    def _carry_calls(
        self, idx: ThreadIndex, thread_id: str, new_thread_id: str, ns: str, entry: Any, line: str, tip: Oid
    ) -> None:
        """Give a new fork the recorded calls of the steps it holds (docs/format.md, 18.2).

        The calls that made a checkpoint are stored with its parent's writes, in
        whichever commit LangGraph's ``put_writes`` made: often on another line of
        the thread (a replay from an older checkpoint writes on the line of that
        checkpoint) or after the checkpoint, out of the fork's history. Each
        ancestor checkpoint whose calls the fork lacks gets them back in one
        writes commit on the fork's line (the blobs are shared, nothing is copied)."""
        fidx = self.indexes.get(new_thread_id)
        carried: list[tuple[str, Any, dict[str, Oid]]] = []
        cid = entry.parent
        while cid is not None:
            anc = idx.ckpt.get((ns, cid))
            if anc is None:
                break
            trees = idx.writes.get((ns, cid), ())
            if trees and not set(trees) <= set(fidx.writes.get((ns, cid), ())):
                calls = self.indexes.write_blobs(trees, cid, calls=None)
                if calls:
                    have = self.indexes.write_blobs(fidx.writes.get((ns, cid), ()), cid, calls=None)
                    missing = {n: o for n, o in calls.items() if n not in have}
                    if missing:
                        carried.append((cid, anc, missing))
            cid = anc.parent
        if not carried:
            return
        new_tip = tip
        root = self.repo.tree_entries(self.repo.commit_info(tip).tree_id)
        wtree = self.repo.tree_entries(root["writes"][0]) if "writes" in root else {}
        for cid, anc, missing in reversed(carried):  # oldest first
            sub = self.repo.tree({name: (o, BLOB) for name, o in missing.items()})
            wtree[names.encode_tree_name(cid)] = (sub, TREE)
            root["writes"] = (self.repo.tree(wtree), TREE)
            message = fmt.writes_message(
                f"step {anc.step} · {len(missing)} recorded call(s) carried by the fork of thread {thread_id}",
                thread_id=new_thread_id,
                ns=ns,
                writes_for=cid,
                writes_tree=sub,
            )
            new_tip = self.repo.commit(self.repo.tree(root), [new_tip], message)
        if not self.repo.update_ref(line, tip, new_tip):
            raise InvalidInputError(f"thread {new_thread_id!r} changed while it was being forked")
        self._forget(new_thread_id)

    # -- recorded calls (docs/format.md, 18) -------------------------------------

    def recorded_calls(self, thread_id: str, *, checkpoint_ns: str | None = None) -> Sequence[dict[str, Any]]:
        """The model and tool calls recorded for a thread: one dict per call
        (``kind``, ``name``, ``node``, ``step``, ``checkpoint_id``, ``summary``, ...),
        in checkpoint order. Answers stay serialized; :meth:`replaying` decodes them."""
        return self._recording.calls(str(thread_id), ns=checkpoint_ns)

    @contextmanager
    def replaying(
        self, thread_id: str, *, on_miss: str = "error", checkpoint_ns: str | None = None
    ) -> Iterator[Replay]:
        """Answer every chat-model and tool call made inside the block from the
        recording of ``thread_id``: no model is contacted and no tool body runs.

        A call with no recorded answer raises :class:`~gitckpt.ReplayMissError`
        naming the node, the call and the nearest recorded call; with
        ``on_miss="live"`` it is made for real (and recorded when the graph runs
        on a saver). The yielded object counts what was answered (``answered``)
        and made live (``live``).

        Example:
            >>> with saver.replaying("1"):
            ...     graph.invoke(inputs, {"configurable": {"thread_id": "1-again"}})
        """
        replay = self._recording.replay(str(thread_id), ns=checkpoint_ns, on_miss=on_miss)
        with activate(replay):
            yield replay

    # -- versions and delta channels --------------------------------------------

    def get_next_version(self, current: str | None, channel: None) -> str:
        if current is None:
            current_v = 0
        elif isinstance(current, int):
            current_v = current
        else:
            current_v = int(current.split(".")[0])
        return f"{current_v + 1:032}.{random.random():016}"

    def get_delta_channel_history(
        self, *, config: RunnableConfig, channels: Sequence[str]
    ) -> Mapping[str, DeltaChannelHistory]:
        """Walk the parent chain in the index, reading only the blobs needed."""
        if not channels:
            return {}
        thread_id, ns = _thread_and_ns(config)
        collected: dict[str, list[PendingWrite]] = {c: [] for c in channels}
        seeds: dict[str, Any] = {}
        remaining = set(channels)
        with self.lock:
            idx = self.indexes.get(thread_id)
            cid = get_checkpoint_id(config) or idx.latest(ns)
            target = idx.ckpt.get((ns, cid)) if cid else None
            cursor = target.parent if target is not None else None
            while cursor is not None and remaining:
                entry = idx.ckpt.get((ns, cursor))
                if entry is None:
                    break
                what = f"thread {thread_id!r} checkpoint {cursor}"
                tree = self._tree_of(entry, what)
                stored = self.repo.tree_entries(tree["channels"][0]) if "channels" in tree else {}
                found: dict[str, Any] = {}
                for ch in remaining:
                    name = names.encode_tree_name(ch)
                    if name in stored:
                        oid, mode = stored[name]
                        found[ch] = self._read_channel(thread_id, ns, ch, oid, mode, what)
                for write in reversed(self._pending_writes(thread_id, idx, ns, cursor)):
                    if write[1] in remaining:
                        collected[write[1]].append(write)
                for ch, value in found.items():
                    seeds[ch] = value
                    remaining.discard(ch)
                cursor = entry.parent
        result: dict[str, DeltaChannelHistory] = {}
        for ch in channels:
            item: DeltaChannelHistory = {"writes": list(reversed(collected[ch]))}
            if ch in seeds:
                item["seed"] = seeds[ch]
            result[ch] = item
        return result

    # -- async: the same work, off the event loop -------------------------------

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return await asyncio.to_thread(self.get_tuple, config)

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        it = self.list(config, filter=filter, before=before, limit=limit)
        while True:
            item = await asyncio.to_thread(next, it, None)  # list() never yields None
            if item is None:
                return
            yield item

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        return await asyncio.to_thread(self.put, config, checkpoint, metadata, new_versions)

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        await asyncio.to_thread(self.put_writes, config, writes, task_id, task_path)

    async def adelete_thread(self, thread_id: str) -> None:
        await asyncio.to_thread(self.delete_thread, thread_id)

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        await asyncio.to_thread(self.delete_for_runs, run_ids)

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        await asyncio.to_thread(self.copy_thread, source_thread_id, target_thread_id)

    async def aprune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        await asyncio.to_thread(self.prune, thread_ids, strategy=strategy)

    async def aget_delta_channel_history(
        self, *, config: RunnableConfig, channels: Sequence[str]
    ) -> Mapping[str, DeltaChannelHistory]:
        return await asyncio.to_thread(lambda: self.get_delta_channel_history(config=config, channels=channels))


def _thread_and_ns(config: RunnableConfig) -> tuple[str, str]:
    try:
        configurable = config["configurable"]
        thread_id = configurable["thread_id"]
    except (KeyError, TypeError):
        raise ConfigError("config has no configurable.thread_id: pass {'configurable': {'thread_id': ...}}") from None
    return str(thread_id), configurable.get("checkpoint_ns") or ""


__all__ = ["GitSaver"]
