"""GitStore: LangGraph's ``BaseStore`` (cross-thread memory) on a bare git repository.

The store is the branch ``refs/heads/store``: every batch of writes (the puts
and deletes of one ``batch()`` call) is one commit whose subject says what
changed (``put memories/1: a1b2; delete memories/1: old``) and whose tree
holds one blob per item (layout and blob format: ``_store_format``). Reads are
answered from an in-memory index (``_store_index``) built once from the tree
and kept current by diffing the tree this process knows against the tip, so
another process's write costs this one the size of that write, not a reload.

Writes build the new tree from the current tip and move the branch by
compare-and-swap; a writer that loses the race re-reads the tip and re-applies
its batch on top, so concurrent writers in any number of processes never lose
each other's items. See docs/store.md for the decisions and their reasons.

    from gitckpt import GitSaver, GitStore

    store = GitStore("agent.git", index={"embed": embeddings, "dims": 384, "fields": ["$"]},
                     ttl={"default_ttl": 60 * 24, "refresh_on_read": True})
    graph = builder.compile(checkpointer=GitSaver("agent.git"), store=store)
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
from langgraph.store.base import (
    BaseStore,
    GetOp,
    IndexConfig,
    InvalidNamespaceError,
    Item,
    ListNamespacesOp,
    Op,
    PutOp,
    Result,
    SearchItem,
    SearchOp,
    TTLConfig,
    ensure_embeddings,
    get_text_at_path,
    tokenize_path,
    validate_op_namespace,
)

from ..errors import CorruptObjectError, GitckptError, InvalidInputError
from ..git.files import write_atomic
from ..git.locks import retry_cas
from ..git.repo import BLOB, GitRepo, Oid
from . import cache as _cache
from .format import (
    DELETE,
    EXPIRE,
    PUT,
    REFRESH,
    STORE_REF,
    commit_message,
    decode_item_blob,
    dump_value,
    is_item_path,
    item_path,
    load_value,
    pack_item,
    parse_iso,
    parse_item_path,
    text_digest,
    unpack_item,
    with_expiry,
)
from .index import Rec, StoreIndex, compile_filter

__all__ = ["GitStore", "decode_item_blob", "STORE_REF"]

logger = logging.getLogger(__name__)

#: A TTL refresh on read is written to git only when it moves the stored
#: expiry by more than this share of the TTL, so a burst of reads costs one
#: commit, not one each. Until then the refreshed expiry holds in this process.
REFRESH_SLACK = 0.01

_US_PER_MIN = 60_000_000

#: The index cache file (docs/format.md 24) is rewritten in the background once
#: this many items (or a sixteenth of the store, if more) changed since it was
#: written, and on close() once at least CACHE_ON_CLOSE did: a new process then
#: reads at most that many item blobs on top of the file.
CACHE_EVERY = 1000
CACHE_ON_CLOSE = 100


class _PutPlan:
    """A put, checked and embedded, ready to become a blob on any tip."""

    __slots__ = ("op", "value", "vbytes", "fields", "vectors")

    def __init__(self, op: PutOp, value: dict, vbytes: bytes) -> None:
        self.op = op
        self.value = value
        self.vbytes = vbytes
        self.fields: list[tuple[str, str]] = []  # (field, text) to embed
        self.vectors: list[tuple[str, bytes, np.ndarray]] = []


class GitStore(BaseStore):
    """A LangGraph store whose storage is the ``store`` branch of a bare git repository.

    Args:
        path: the repository (created if absent), or a :class:`GitRepo` shared
            with a :class:`GitSaver`.
        index: LangGraph's ``IndexConfig`` for semantic search: ``embed`` (an
            ``Embeddings``, a sync or async function, or ``"provider:model"``),
            ``dims`` and ``fields`` (JSON paths, default ``["$"]``).
        ttl: LangGraph's ``TTLConfig``: ``default_ttl`` (minutes),
            ``refresh_on_read`` and ``sweep_interval_minutes`` (starts a
            background sweeper that deletes expired items, stopped by
            :meth:`close`).
        durability: ``"os"`` or ``"fsync"`` (see docs/store.md).
        ref: the branch holding the store (default ``refs/heads/store``);
            ``gitckpt reproduce`` runs a graph on a scratch branch
            (docs/format.md, 18.1).
    """

    supports_ttl = True

    def __init__(
        self,
        path: str | os.PathLike | GitRepo,
        *,
        index: IndexConfig | None = None,
        ttl: TTLConfig | None = None,
        durability: str = "os",
        ref: str = STORE_REF,
    ) -> None:
        super().__init__()
        self.ref = ref
        self._owns_repo = not isinstance(path, GitRepo)
        # log first, as GitSaver's (format.md 30); a given repository keeps its own mode
        self.repo = path if isinstance(path, GitRepo) else GitRepo(path, durability=durability, log_first=True)
        self.index_config: dict[str, Any] | None = None
        self.embeddings: Any = None  # langchain Embeddings, when index= is given
        if index:
            self.index_config = dict(index)
            self.embeddings = ensure_embeddings(self.index_config.get("embed"))
            self.index_config["__tokenized_fields"] = [
                (p, tokenize_path(p)) if p != "$" else (p, p) for p in (self.index_config.get("fields") or ["$"])
            ]
        self.ttl_config = ttl
        self._lock = threading.RLock()
        self._idx = StoreIndex(self.index_config.get("dims") if self.index_config else None)
        self._tip: Oid | None = None  # the commit the index reflects
        self._tree: Oid | None = None
        self._loaded = False
        self._last_us = 0
        # the index cache file (docs/format.md 24): only for the store branch itself
        self._cache_file = _cache.cache_path(self.repo.gitdir) if ref == STORE_REF else None
        self._changed = 0  # items changed since the commit the cache file reflects
        self._cache_thread: threading.Thread | None = None
        self._closed = False
        self._sweeper: threading.Thread | None = None
        self._stop = threading.Event()
        if ttl and ttl.get("sweep_interval_minutes"):
            self.start_ttl_sweeper()

    # -- lifecycle --------------------------------------------------------------

    @classmethod
    @contextmanager
    def from_conn_string(
        cls,
        path: str | os.PathLike,
        *,
        index: IndexConfig | None = None,
        ttl: TTLConfig | None = None,
        durability: str = "os",
    ) -> Iterator[GitStore]:
        """Open (or create) the repository at ``path`` for the duration of a block."""
        store = cls(path, index=index, ttl=ttl, durability=durability)
        try:
            yield store
        finally:
            store.close()

    def setup(self) -> None:
        """Load the index now rather than on first use. Safe to call twice."""
        with self._lock:
            self._sync()

    def publish(self) -> None:
        """Make every write that has returned visible to plain ``git`` now (as
        :meth:`GitSaver.publish`: a write is one log record, published about
        0.1 s later or by :meth:`close`; docs/format.md, 30). Call this before
        running ``git`` on a repository this store is writing."""
        self.repo.publish()

    def close(self) -> None:
        """Stop the TTL sweeper, save the index cache file if it is behind, and
        finish background packing. Safe to call twice."""
        self.stop_ttl_sweeper()
        if not self._closed:
            thread = self._cache_thread
            if thread is not None:
                thread.join()
            if self._changed >= CACHE_ON_CLOSE:
                self._write_cache()
            self._closed = True
            if self._owns_repo:
                self.repo.close()

    def __enter__(self) -> GitStore:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    async def __aenter__(self) -> GitStore:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await asyncio.to_thread(self.close)

    def __del__(self) -> None:
        try:
            self.stop_ttl_sweeper(timeout=0.1)
        except Exception:  # interpreter shutdown
            pass

    # -- BaseStore --------------------------------------------------------------

    def batch(self, ops: Iterable[Op]) -> list[Result]:
        """Run ``ops`` (gets, searches and listings see the store before this
        batch's puts); all puts and deletes become one commit."""
        return self._run(list(ops), self._embed_documents, self._embed_query)

    async def abatch(self, ops: Iterable[Op]) -> list[Result]:
        """:meth:`batch` with the git work in a worker thread and embeddings
        through ``aembed_documents``/``aembed_query`` on this event loop."""
        ops = list(ops)
        loop = asyncio.get_running_loop()
        emb = self.embeddings

        def docs(texts: list[str]) -> list[list[float]]:
            return asyncio.run_coroutine_threadsafe(emb.aembed_documents(texts), loop).result()

        def query(text: str) -> list[float]:
            return asyncio.run_coroutine_threadsafe(emb.aembed_query(text), loop).result()

        return await asyncio.to_thread(self._run, ops, docs, query)

    # -- TTL ----------------------------------------------------------------------

    def sweep_ttl(self) -> int:
        """Delete every expired item in one commit; returns how many."""
        with self._lock:
            self._sync()
            now = self._now()
            expired = {(r.ns, r.key): ("expire", None) for r in self._idx.expired(now)}
            if not expired:
                return 0
            return self._commit(expired)

    def start_ttl_sweeper(self, sweep_interval_minutes: float | None = None) -> concurrent.futures.Future[None]:
        """Sweep expired items every ``sweep_interval_minutes`` (default: the TTL
        config's, else 5) in a daemon thread until :meth:`stop_ttl_sweeper` or
        :meth:`close`. The future completes when the sweeper stops; cancelling
        it stops the sweeper."""
        future: concurrent.futures.Future[None] = concurrent.futures.Future()
        if not self.ttl_config:
            future.set_result(None)
            return future
        if self._sweeper is not None and self._sweeper.is_alive():
            future.add_done_callback(lambda f: self._stop.set() if f.cancelled() else None)
            return future
        interval = float(sweep_interval_minutes or self.ttl_config.get("sweep_interval_minutes") or 5) * 60
        self._stop.clear()
        stop = self._stop

        def loop() -> None:
            while not stop.wait(interval):
                try:
                    n = self.sweep_ttl()
                    if n:
                        logger.info("store sweeper deleted %d expired items", n)
                except Exception:  # keep sweeping; the next sweep retries
                    logger.exception("store TTL sweep failed")
            if not future.done():
                future.set_result(None)

        self._sweeper = threading.Thread(target=loop, daemon=True, name="gitckpt-store-ttl-sweeper")
        self._sweeper.start()
        future.add_done_callback(lambda f: stop.set() if f.cancelled() else None)
        return future

    def stop_ttl_sweeper(self, timeout: float | None = None) -> bool:
        """Stop the sweeper; True once it has stopped (or was not running)."""
        thread = self._sweeper
        if thread is None or not thread.is_alive():
            self._sweeper = None
            return True
        self._stop.set()
        if thread is not threading.current_thread():
            thread.join(timeout)
        if thread.is_alive():
            return False
        self._sweeper = None
        return True

    # -- the batch ----------------------------------------------------------------

    def _run(self, ops: list[Op], embed_docs: Callable, embed_query: Callable) -> list[Result]:
        if self._closed:
            raise GitckptError("this GitStore is closed; open a new one")
        puts = self._check(ops)  # may raise: nothing has been written
        plans = [p for p in puts.values() if p is not None]
        if self.embeddings is not None and plans:
            self._embed_plans(plans, embed_docs)
        queries: dict[str, np.ndarray] = {}
        if self.embeddings is not None:
            for op in ops:
                if isinstance(op, SearchOp) and op.query and op.query not in queries:
                    queries[op.query] = np.asarray(embed_query(op.query), dtype=np.float64)
        results: list[Result] = [None] * len(ops)
        with self._lock:
            self._sync()
            now = self._now()
            refresh: dict[tuple, tuple] = {}
            for i, op in enumerate(ops):
                if isinstance(op, GetOp):
                    results[i] = self._get(op, now, refresh)
                elif isinstance(op, SearchOp):
                    results[i] = self._search(op, queries.get(op.query) if op.query else None, now, refresh)
                elif isinstance(op, ListNamespacesOp):
                    results[i] = self._idx.list_namespaces(op.match_conditions, op.max_depth, op.limit, op.offset, now)
            changes: dict[tuple, tuple] = {k: ("refresh", v) for k, v in refresh.items() if k not in puts}
            for k, plan in puts.items():
                changes[k] = ("delete", None) if plan is None else ("put", plan)
            if changes:
                self._commit(changes)
        return results

    def _check(self, ops: Sequence[Op]) -> dict[tuple, _PutPlan | None]:
        """Validate every op and serialize every value before anything is written.
        Returns the puts (None: a delete), last write wins per item, in the order
        each item first appears."""
        puts: dict[tuple, _PutPlan | None] = {}
        for op in ops:
            if not isinstance(op, (GetOp, SearchOp, ListNamespacesOp, PutOp)):
                raise InvalidInputError(f"unknown store operation {type(op).__name__}")
            validate_op_namespace(op)
            if isinstance(op, SearchOp):
                compile_filter(op.filter)  # raises on a bad operator
            if isinstance(op, (GetOp, PutOp)) and not isinstance(op.key, str):
                raise InvalidInputError(f"a store key must be a str, not {type(op.key).__name__} ({op.key!r})")
            if not isinstance(op, PutOp):
                continue
            ns = tuple(op.namespace)
            if op.value is None:
                puts[(ns, op.key)] = None
                continue
            if not ns:
                raise InvalidNamespaceError("Namespace cannot be empty.")
            # The root label "langgraph" is refused by BaseStore.put/aput only: like
            # LangGraph's own stores, a raw PutOp through batch/abatch may use it
            # (LangGraph keeps internal namespaces there).
            if op.ttl is not None and (isinstance(op.ttl, bool) or not isinstance(op.ttl, (int, float))):
                raise InvalidInputError(f"ttl must be a number of minutes or None, not {op.ttl!r}")
            if op.index not in (None, False) and (
                not isinstance(op.index, (list, tuple)) or not all(isinstance(f, str) for f in op.index)
            ):
                raise InvalidInputError(f"index must be None, False or a list of field paths, not {op.index!r}")
            try:
                value = dict(op.value)
            except (TypeError, ValueError) as exc:
                raise InvalidInputError(f"a store value must be a dict, not {type(op.value).__name__}") from exc
            try:
                vbytes = dump_value(value)
            except InvalidInputError as exc:
                raise InvalidInputError(f"cannot store {'/'.join(ns)}: {op.key!r}: {exc}") from None
            puts[(ns, op.key)] = _PutPlan(op, value, vbytes)
        return puts

    # -- embeddings ---------------------------------------------------------------

    def _embed_plans(self, plans: list[_PutPlan], embed_docs: Callable) -> None:
        """Fill each plan's vectors: reuse the stored vector of any field whose
        text did not change, embed the other texts (each distinct text once)."""
        assert self.index_config is not None  # only called for a store with an index
        tokenized = self.index_config["__tokenized_fields"]
        for plan in plans:
            index = plan.op.index
            if index is False:
                continue
            paths = tokenized if index is None else [(p, p if p == "$" else tokenize_path(p)) for p in index]
            for path, tokens in paths:
                texts = get_text_at_path(plan.value, tokens)
                if len(texts) > 1:
                    plan.fields.extend((f"{path}.{i}", t) for i, t in enumerate(texts))
                elif texts:
                    plan.fields.append((path, texts[0]))
        todo: dict[bytes, str] = {}
        have: dict[bytes, np.ndarray] = {}
        with self._lock:
            self._sync()
            for plan in plans:
                old = self._idx.get(tuple(plan.op.namespace), plan.op.key)
                stored = {d: row for _, d, row in old.vecs if row is not None} if old is not None else {}
                for _, text in plan.fields:
                    d = text_digest(text)
                    if d in have or d in todo:
                        continue
                    if d in stored:
                        have[d] = self._idx.vector(stored[d])
                    else:
                        todo[d] = text
        if todo:
            texts = list(todo.values())
            vecs = embed_docs(texts)
            if len(vecs) != len(texts):
                raise InvalidInputError(f"the embedding function returned {len(vecs)} vectors for {len(texts)} texts")
            dims = self.index_config.get("dims")
            for d, v in zip(todo, vecs):
                arr = np.asarray(v, dtype=np.float32)
                if arr.ndim != 1 or (dims and arr.shape[0] != dims):
                    raise InvalidInputError(
                        f"the embedding function returned a vector of shape {arr.shape}; index dims is {dims}"
                    )
                have[d] = arr
        for plan in plans:
            plan.vectors = [(field, d, have[d]) for field, text in plan.fields for d in (text_digest(text),)]

    def _embed_documents(self, texts: list[str]) -> list[list[float]]:
        if self._async_only():
            return _run_coroutine(self.embeddings.aembed_documents(texts))
        return self.embeddings.embed_documents(texts)

    def _embed_query(self, text: str) -> list[float]:
        if self._async_only():
            return _run_coroutine(self.embeddings.aembed_query(text))
        return self.embeddings.embed_query(text)

    def _async_only(self) -> bool:
        # LangGraph wraps an async function in an EmbeddingsLambda without a sync
        # one; the sync API then runs it on a private event loop instead of failing.
        return hasattr(self.embeddings, "afunc") and getattr(self.embeddings, "func", None) is None

    # -- reads --------------------------------------------------------------------

    def _get(self, op: GetOp, now: int, refresh: dict) -> Item | None:
        rec = self._idx.get(tuple(op.namespace), op.key)
        if rec is None or (rec.expires is not None and rec.expires <= now):
            return None
        if op.refresh_ttl and rec.ttl is not None:
            self._refresh(rec, now, refresh)
        return Item(
            value=load_value(rec.vbytes),
            key=rec.key,
            namespace=rec.ns,
            created_at=rec.created_dt,
            updated_at=rec.updated_dt,
        )

    def _search(self, op: SearchOp, query: np.ndarray | None, now: int, refresh: dict) -> list[SearchItem]:
        pred = compile_filter(op.filter)
        found = self._idx.search(tuple(op.namespace_prefix), pred, op.limit, op.offset, query, now)
        out = []
        for rec, score in found:
            if op.refresh_ttl and rec.ttl is not None:
                self._refresh(rec, now, refresh)
            out.append(
                SearchItem(
                    namespace=rec.ns,
                    key=rec.key,
                    value=load_value(rec.vbytes),
                    created_at=rec.created_dt,
                    updated_at=rec.updated_dt,
                    score=score,
                )
            )
        return out

    def _refresh(self, rec: Rec, now: int, refresh: dict) -> None:
        assert rec.ttl is not None  # only items with a TTL are refreshed
        ttl_us = int(rec.ttl * _US_PER_MIN)
        expires = now + ttl_us
        self._idx.set_expiry(rec, max(expires, rec.expires or expires))
        slack = int(abs(ttl_us) * REFRESH_SLACK)
        if rec.stored_expires is None or expires - rec.stored_expires > slack:
            refresh[(rec.ns, rec.key)] = (rec.oid, expires)

    # -- git ----------------------------------------------------------------------

    def _now(self) -> int:
        return time.time_ns() // 1000

    def _tick(self) -> int:
        """A timestamp (µs) later than any this store handed out before, so the
        items of one batch keep their order after a reload."""
        now = max(self._now(), self._last_us + 1)
        self._last_us = now
        return now

    def _sync(self) -> None:
        """Bring the index to the tip of the store branch by applying the tree
        difference between the commit it reflects and the tip."""
        repo = self.repo
        with repo.lock:
            tip = repo.ref(self.ref)
            if tip == self._tip and self._loaded:
                return
            if not self._loaded and tip is not None and self._cache_file is not None:
                self._load_cache(tip)
                if tip == self._tip:
                    self._loaded = True
                    return
            tree = repo.commit_info(tip, "store commit").tree_id if tip is not None else None
            diff = repo.diff_trees(self._tree, tree)
            removed: list[tuple[tuple, str]] = []
            added: list[Rec] = []
            vectors: dict[int, list] = {}
            for path, old, new in diff:
                if not is_item_path(path):
                    continue
                if new is None:
                    assert old is not None  # a removed path was there before
                    where = parse_item_path(path)
                    if where is None:
                        try:
                            body = unpack_item(repo.read_blob(old), f"store item {path}")
                            where = (body["namespace"], body["key"])
                        except CorruptObjectError:
                            continue
                    removed.append(where)
                    continue
                try:
                    rec, vecs = self._read_item(new, path)
                except CorruptObjectError as exc:
                    logger.warning("skipping %s", exc)
                    continue
                added.append(rec)
                vectors[id(rec)] = vecs
        for ns, key in removed:
            self._idx.remove(ns, key)
        self._idx.append_sorted(added, vectors)
        self._tip, self._tree, self._loaded = tip, tree, True
        self._changed += len(removed) + len(added)
        self._cache_if_due()

    # -- the index cache file (docs/format.md 24) ------------------------------------

    def _load_cache(self, tip: Oid) -> None:
        """Fill the empty index from the cache file, if there is a valid one whose
        commit is still in the repository; the caller then diffs from its tree
        to ``tip``'s like after another process's write."""
        assert self._cache_file is not None and not self._idx.data
        loaded = _cache.read(self._cache_file)
        if loaded is None:
            return
        try:
            if loaded.tip != tip and not self.repo.has(loaded.tip):
                return  # written before a reset, and that commit is gone
            if self.repo.commit_info(loaded.tip, "store commit").tree_id != loaded.tree:
                return
        except GitckptError:
            return
        if _cache.fill(self._idx, loaded):
            self._tip, self._tree = loaded.tip, loaded.tree

    def _cache_if_due(self) -> None:
        """Rewrite the cache file in a background thread if enough changed."""
        if self._cache_file is None or self._changed < CACHE_EVERY or self._closed:
            return
        if self._changed * 16 < len(self._idx) or (self._cache_thread is not None and self._cache_thread.is_alive()):
            return
        # not a daemon: an exiting interpreter waits for the write rather than leave half a temporary file
        self._cache_thread = threading.Thread(target=self._write_cache, name="gitckpt-store-cache")
        self._cache_thread.start()

    def _write_cache(self) -> None:
        """Save the index to the cache file: the columns are copied under the lock,
        encoded and written (atomically) without it."""
        path = self._cache_file
        if path is None:
            return
        with self._lock:
            if not self._loaded or self._tip is None or self._tree is None or len(self._idx) < _cache.MIN_ITEMS:
                return
            meta, vectors = _cache.snapshot(self._idx, self._tip, self._tree, self._idx.dims_config)
            changed = self._changed
        if write_atomic(path, _cache.encode(meta, vectors)):
            with self._lock:
                self._changed = max(0, self._changed - changed)
        else:  # a read-only repository: work without the file, do not try again
            self._cache_file = None

    def _read_item(self, oid, path: str) -> tuple[Rec, list]:
        body = unpack_item(self.repo.read_blob(oid, f"store item {path}"), f"store item {path}")
        try:
            value = load_value(body["value"])
            rec = Rec(
                body["namespace"],
                body["key"],
                value,
                body["value"],
                parse_iso(body["created_at"]),
                parse_iso(body["updated_at"]),
                body.get("ttl"),
                parse_iso(body.get("expires_at")),
                body.get("index"),
                oid,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise CorruptObjectError(f"store item {path}: {exc}") from exc
        vecs = []
        for field, digest, raw in body.get("vectors") or []:
            vec = np.frombuffer(raw, dtype="<f4").astype(np.float32)
            vecs.append((field, digest, vec if self._idx.accepts(vec) else None))
        return rec, vecs

    def _commit(self, changes: dict[tuple, tuple]) -> int:
        """Write ``changes`` ({(ns, key): (kind, arg)}) as one commit on the tip,
        retrying on a lost compare-and-swap. Returns how many items changed."""
        repo = self.repo
        idx = self._idx

        def attempt():
            with repo.lock:
                self._sync()
                now = self._now()
                tree_changes: dict = {}
                log: list[tuple[str, tuple, str]] = []
                apply: list[tuple] = []
                for (ns, key), (kind, arg) in changes.items():
                    old = idx.get(ns, key)
                    if kind == "put":
                        plan: _PutPlan = arg
                        t = self._tick()
                        alive = old is not None and idx.live(old, now)
                        created = old.created if old is not None and alive else t
                        ttl = plan.op.ttl
                        expires = t + int(ttl * _US_PER_MIN) if ttl is not None else None
                        raw_vecs = [(f, d, v.astype("<f4").tobytes()) for f, d, v in plan.vectors]
                        index = plan.op.index if self.embeddings is not None else None
                        blob = pack_item(ns, key, plan.vbytes, created, t, ttl, expires, index, raw_vecs)
                        oid = repo.blob(blob)
                        rec = Rec(ns, key, load_value(plan.vbytes), plan.vbytes, created, t, ttl, expires, index, oid)
                        apply.append(("put", rec, [(f, d, v) for f, d, v in plan.vectors], alive))
                        log.append((PUT, ns, key))
                    elif kind in ("delete", "expire"):
                        if old is None or (kind == "expire" and idx.live(old, now)):
                            continue
                        oid = None
                        apply.append(("delete", ns, key))
                        log.append((DELETE if kind == "delete" else EXPIRE, ns, key))
                    else:  # refresh: only if the item is still the one that was read
                        expect, expires = arg
                        if old is None or old.oid != expect:
                            continue
                        oid = repo.blob(with_expiry(repo.read_blob(old.oid), expires))
                        apply.append(("refresh", old, oid, expires))
                        log.append((REFRESH, ns, key))
                    node = tree_changes
                    *dirs, name = item_path(ns, key)
                    for d in dirs:
                        node = node.setdefault(d, {})
                    node[name] = None if oid is None else (oid, BLOB)
                if not log:
                    return 0
                new_tree = repo.update_tree(self._tree, tree_changes)
                if new_tree is None:
                    new_tree = repo.tree({})
                parents = [self._tip] if self._tip is not None else []
                commit = repo.commit(new_tree, parents, commit_message(log, when_us=self._tick()))
                if not repo.log_update(self.ref, self._tip, commit):  # one log record (format.md 30)
                    return None
                for entry in apply:
                    if entry[0] == "put":
                        _, rec, vecs, keep = entry
                        idx.put(rec, vecs, keep_place=keep)
                    elif entry[0] == "delete":
                        idx.remove(entry[1], entry[2])
                    else:
                        _, rec, oid, expires = entry
                        rec.oid = oid
                        rec.stored_expires = expires
                        idx.set_expiry(rec, max(expires, rec.expires or expires))
                self._tip, self._tree = commit, new_tree
                self._changed += len(log)
                self._cache_if_due()
                return len(log)

        with self._lock:
            return retry_cas(attempt, "store write")


def _run_coroutine(coro) -> Any:
    """Run ``coro`` to completion from sync code, even inside a running loop."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()
