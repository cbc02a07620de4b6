"""Reproduce a recorded thread: run its runs again, offline, and compare (issue 13).

``reproduce(saver, graph, thread_id)`` walks the thread's history from its first
checkpoint to its latest one (the main line of the root namespace), and makes
each thing that happened to it happen again on a scratch thread, with every
model and tool call answered from the thread's recording
(:meth:`GitSaver.replaying`):

* an ``input`` checkpoint: ``graph.invoke(<its __start__ value>)``;
* a ``loop`` checkpoint that follows the end of a run: ``Command(resume=v)`` when
  the checkpoint before it holds a resume value (LangGraph's null task writes
  ``__resume__``), ``Command(resume={interrupt id: v})`` when only interrupted
  tasks hold one (a resume map; the new run's interrupt ids are paired with the
  recorded ones by value), otherwise ``graph.invoke(None)`` (a continue after a
  static interrupt);
* an ``update`` checkpoint: ``graph.update_state(values, as_node)`` with the
  update's writes, which LangGraph stores as the parent's pending writes of a
  task without a path;
* a ``fork`` checkpoint (a replay from an older checkpoint): ``invoke(None)``
  from the scratch copy of that checkpoint.

Each new checkpoint is compared with the recorded one: step and source, the
next nodes, every channel value, and (once all runs are done, since a later
resume or update adds to them) the pending writes. Message ids, checkpoint ids,
task ids and timestamps that LangGraph or LangChain generate are ignored. The
first difference is returned as a :class:`Divergence`; the scratch thread is
deleted unless ``keep``. Then each recorded subgraph namespace is compared with
the scratch thread's namespace of the same node path, parent step and task path
(task ids differ between runs; :func:`_ns_keys`); ``ns`` restricts the
comparison to one namespace (docs/format.md, 18).
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from datetime import timezone
from typing import Any

from langchain_core.messages import BaseMessage

from .checkpoint import format as fmt
from .checkpoint.recording import _diff, message_digest, normalize_message, to_plain
from .errors import GitckptError, NotFoundError, ReplayMissError
from .ops import read_writes

_START = "__start__"
_RESUME = "__resume__"
_ERROR = "__error__"


@dataclasses.dataclass
class Divergence:
    step: Any
    node: str | None
    what: str  # "call", "channel", "next", "writes", "source", "end", "error"
    name: str | None  # the channel, or the call's kind
    message: str
    diff: str = ""
    recorded_checkpoint: str | None = None
    new_checkpoint: str | None = None
    ns: str = ""  # the subgraph namespace, as recorded ("" for the root graph)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class ReproduceResult:
    thread_id: str
    scratch_thread: str
    checkpoints: int  # recorded checkpoints of the main line
    compared: int  # matched so far
    runs: int
    answered: dict[str, int]
    live: dict[str, int]
    divergence: Divergence | None
    kept: bool
    subgraph_checkpoints: int = 0  # recorded subgraph checkpoints compared
    namespaces: int = 0  # recorded subgraph namespaces compared
    only_ns: str | None = None  # --ns: the namespace the comparison was restricted to
    scratch_store: str | None = None  # the store the runs used: a scratch branch, "memory", or None (no store)

    @property
    def ok(self) -> bool:
        return self.divergence is None

    def summary(self) -> str:
        if self.ok:
            if self.only_ns:
                what = (
                    f"{self.subgraph_checkpoints} checkpoints of namespace {self.only_ns}"
                    + (f" and {self.namespaces - 1} nested in it" if self.namespaces > 1 else "")
                    + f" of thread {self.thread_id}"
                )
            else:
                what = f"{self.compared}/{self.checkpoints} checkpoints of thread {self.thread_id}"
                if self.namespaces:
                    what += (
                        f" and {self.subgraph_checkpoints} subgraph checkpoint"
                        f"{'s' if self.subgraph_checkpoints != 1 else ''} in {self.namespaces} namespace"
                        f"{'s' if self.namespaces != 1 else ''}"
                    )
            return (
                f"reproduced {what} "
                f"({self.runs} run{'s' if self.runs != 1 else ''}; {self.answered['model']} model call"
                f"{'s' if self.answered['model'] != 1 else ''} and {self.answered['tool']} tool call"
                f"{'s' if self.answered['tool'] != 1 else ''} answered from the recording)"
            )
        d = self.divergence
        assert d is not None
        where = f"step {d.step}" + (f", node {d.node}" if d.node else "") + (f" in namespace {d.ns}" if d.ns else "")
        return f"first divergence at {where}: {d.message}"

    def as_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["ok"] = self.ok
        out["summary"] = self.summary()
        return out


def canon(value: Any, fast: bool = False) -> Any:
    """A value as reproduce compares it: messages without ids, errors as type and text.

    ``fast``: a message is its digest (recording's ``message_digest``, computed once
    per message by id and content, the cache replay uses too): a thread's
    checkpoints hold the same messages again and again, decoded anew each time.
    The normalised form is for showing a difference."""
    if isinstance(value, BaseMessage):
        return message_digest(value) if fast else normalize_message(value)
    if isinstance(value, BaseException):
        return {"error": type(value).__name__, "message": str(value)}
    cls = type(value).__name__
    if cls == "Interrupt" and hasattr(value, "value"):
        return {"interrupt": canon(value.value, fast)}
    if cls == "Send" and hasattr(value, "node"):
        return {"send": value.node, "arg": canon(value.arg, fast)}
    if cls == "Command" and hasattr(value, "resume"):
        return {"command": {k: canon(getattr(value, k, None)) for k in ("update", "resume", "goto", "graph")}}
    if isinstance(value, dict):
        return {str(k): canon(v, fast) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [canon(v, fast) for v in value]
    return to_plain(value)


def _key(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)


class _Stop(Exception):
    def __init__(self, divergence: Divergence) -> None:
        self.divergence = divergence


def _cfg(thread_id: str, cid: str | None = None, base: dict | None = None, ns: str = "") -> dict:
    conf = dict(base or {})
    conf["thread_id"] = thread_id
    conf["checkpoint_ns"] = ns
    if cid:
        conf["checkpoint_id"] = cid
    return {"configurable": conf}


def _chain(saver: Any, thread_id: str) -> list[Any]:
    """The main line of the root namespace, first checkpoint first."""
    tuples = {t.config["configurable"]["checkpoint_id"]: t for t in saver.list(_cfg(thread_id))}
    if not tuples:
        raise NotFoundError(f"thread {thread_id!r} has no checkpoints")
    cid: str | None = max(tuples)
    out = []
    while cid is not None and cid in tuples:
        t = tuples[cid]
        out.append(t)
        cid = t.parent_config["configurable"]["checkpoint_id"] if t.parent_config else None
    out.reverse()
    return out


def _id(t: Any) -> str:
    return t.config["configurable"]["checkpoint_id"]


def _ns(t: Any) -> str:
    return t.config["configurable"].get("checkpoint_ns") or ""


def _writer(saver: Any, thread_id: str, cid: str, ns: str = "") -> dict[str, str]:
    """``{channel: node}`` of the pending writes stored for a checkpoint (from their task paths)."""
    out: dict[str, str] = {}
    for task_id, _idx, channel, path, _typed in _writes(saver, thread_id, ns, cid):
        out.setdefault(channel, fmt.writer_of(task_id, path, [channel]))
    return out


def _async_only(graph: Any) -> bool:
    """Whether a node of the graph has only an async body (it must be run with ``ainvoke``)."""
    for node in getattr(graph, "nodes", {}).values():
        bound = getattr(node, "bound", None)
        if bound is not None and getattr(bound, "func", 1) is None and getattr(bound, "afunc", None) is not None:
            return True
    return False


def _runner(graph: Any, use_async: bool | None):
    if use_async is None:
        use_async = _async_only(graph)
    if not use_async:
        return graph.invoke
    import asyncio
    import concurrent.futures
    import contextvars

    def run(inp: Any, cfg: dict) -> Any:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(graph.ainvoke(inp, cfg))
        ctx = contextvars.copy_context()  # inside a running loop: run in a thread of its own
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            return pool.submit(ctx.run, asyncio.run, graph.ainvoke(inp, cfg)).result()

    return run


# -- the scratch store -----------------------------------------------------------------

#: Where a reproduce's scratch store branch lives (not a thread line, not the store:
#: push, pull and the thread listings leave it alone).
SCRATCH_STORE_PREFIX = "refs/gitckpt/reproduce/"


class _ScratchStore:
    """The store a reproduce's runs use instead of the graph's own (docs/format.md, 18.1).

    A :class:`GitStore`: a scratch branch in the same repository, at the store's
    commit as of the start of each recorded run (what that run saw: :meth:`reset`),
    deleted afterwards unless kept. Any other ``BaseStore``: an
    ``InMemoryStore`` filled with a copy of the items it holds that were created
    by then (with their values as they are now: older values are not known)."""

    def __init__(self, store: Any, since_us: int | None, name: str) -> None:
        from .store.store import GitStore

        self.ref: str | None = None
        self.source_ref = ""
        self.repo: Any = None
        if isinstance(store, GitStore):
            self.repo = store.repo
            self.source_ref = store.ref
            self.ref = SCRATCH_STORE_PREFIX + name
            self._seen: list = []  # the store's history as walked so far (_store_commit_at)
            start = _store_commit_at(store.repo, store.ref, since_us, self._seen)
            if start is not None and not store.repo.update_ref(self.ref, None, start):
                raise GitckptError(f"the scratch store branch {self.ref} exists already")
            index = {k: v for k, v in (store.index_config or {}).items() if not k.startswith("__")} or None
            ttl = {k: v for k, v in (store.ttl_config or {}).items() if k != "sweep_interval_minutes"} or None
            self.store: Any = GitStore(store.repo, index=index, ttl=ttl, ref=self.ref)  # type: ignore[arg-type]
            self.name = self.ref
        else:
            self.store = _memory_copy(store, since_us)
            self.name = "memory"

    def reset(self, since_us: int | None) -> None:
        """Before a run that starts at a checkpoint made before any node ran (an
        ``input``, ``update`` or ``fork`` checkpoint): a GitStore's scratch branch
        moves to the store as it was then, so the run sees what the recorded one
        saw, other threads' writes and deletes between the runs included. (A
        copied store keeps what the earlier runs wrote.)"""
        if self.ref is None:
            return
        want = _store_commit_at(self.repo, self.source_ref, since_us, self._seen)
        have = self.repo.ref(self.ref)
        if want == have:
            return
        moved = self.repo.delete_ref(self.ref, have) if want is None else self.repo.update_ref(self.ref, have, want)
        if not moved:
            raise GitckptError(f"the scratch store branch {self.ref} moved during the reproduce")

    def discard(self, keep: bool) -> None:
        close = getattr(self.store, "close", None)
        if close is not None:
            close()
        if self.ref is not None and not keep:
            self.repo.delete_ref(self.ref)


def _store_commit_at(repo: Any, ref: str, since_us: int | None, seen: list | None = None) -> Any:
    """The newest commit of store branch ``ref`` made at or before ``since_us`` (µs),
    or None (the store was empty then). A commit's time is its ``Store-Time``
    trailer (µs, the store's own clock); a commit written before that trailer
    existed has the newest ``updated_at`` of the items it put (µs), or, if it put
    none, git's commit time (seconds). ``seen``: ``(time, commit)`` pairs of the
    first-parent history from the tip down, extended as far as this walk went
    (the runs of one reproduce look up later and later times: one walk in all)."""
    seen = [] if seen is None else seen
    if since_us is None:
        return seen[0][1] if seen else repo.ref(ref)
    for when, oid, _parent in seen:
        if when <= since_us:
            return oid
    oid = seen[-1][2] if seen else repo.ref(ref)
    while oid is not None:
        commit = repo.get(oid, "store commit")
        when = _store_commit_time(repo, commit)
        parent = commit.parent_ids[0] if commit.parent_ids else None
        seen.append((when, oid, parent))
        if when <= since_us:
            return oid
        oid = parent
    return None


def _store_commit_time(repo: Any, commit: Any) -> int:
    from .store.format import PUT, commit_time_us, item_path, parse_changes, parse_iso, unpack_item

    when = commit_time_us(commit.message)
    for kind, ns, key in parse_changes(commit.message) if when is None else ():
        if kind != PUT:
            continue
        obj: Any = commit.tree
        try:
            for part in item_path(tuple(ns), key):
                obj = obj[part]
            t = parse_iso(unpack_item(repo.read_blob(obj.id, "store item"))["updated_at"])
        except (KeyError, GitckptError, ValueError, TypeError):
            continue
        if t is not None and (when is None or t > when):
            when = t
    return when if when is not None else commit.commit_time * 1_000_000


def _memory_copy(store: Any, since_us: int | None) -> Any:
    """An ``InMemoryStore`` holding a copy of ``store``'s items created at or before
    ``since_us`` (µs), with their values as they are now (values, not vectors)."""
    from langgraph.store.memory import InMemoryStore

    from .store.format import datetime_to_us

    copy = InMemoryStore()
    page = 1000
    for ns in store.list_namespaces(limit=1_000_000):
        offset = 0
        while True:
            items = store.search(ns, limit=page, offset=offset)
            for item in items:
                created = getattr(item, "created_at", None)
                if since_us is not None and created is not None:
                    if created.tzinfo is None:
                        created = created.replace(tzinfo=timezone.utc)
                    if datetime_to_us(created) > since_us:
                        continue  # made after the thread began: the first run did not see it
                if tuple(item.namespace) == tuple(ns):
                    copy.put(tuple(ns), item.key, item.value, index=False)
            if len(items) < page:
                break
            offset += page
    return copy


def _ts_us(checkpoint: Any) -> int | None:
    from .store.format import parse_iso

    try:
        return parse_iso(checkpoint.get("ts"))
    except (TypeError, ValueError):
        return None


def reproduce(
    saver: Any,
    graph: Any,
    thread_id: str,
    *,
    keep: bool = False,
    configurable: dict | None = None,
    scratch: str | None = None,
    use_async: bool | None = None,
    ns: str | None = None,
) -> ReproduceResult:
    """Re-run thread ``thread_id``'s runs on a scratch thread, answered from its
    recording, and compare every new checkpoint with the recorded one (module docstring).

    ``use_async``: run with ``ainvoke`` (default: when a node has only an async body).
    ``ns``: compare only that subgraph namespace (and those nested in it), not the
    root's checkpoints (the root's runs are still run again: subgraphs run inside them)."""
    from langgraph.types import Command

    thread_id = str(thread_id)
    chain = _chain(saver, thread_id)
    token = uuid.uuid4().hex[:8]
    scratch = scratch or f"reproduce-{token}-{thread_id}"
    if saver.indexes.thread_refs(scratch):
        raise GitckptError(f"thread {scratch!r} exists already")
    store = getattr(graph, "store", None)
    scratch_store: _ScratchStore | None = None
    if store is not None:  # the runs write to a scratch store, never to the graph's own
        if not hasattr(graph, "copy"):
            raise GitckptError(f"the graph ({type(graph).__name__}) has a store but cannot be copied with another")
        scratch_store = _ScratchStore(store, _ts_us(chain[0].checkpoint), token)
        try:
            graph = graph.copy(update={"store": scratch_store.store})
        except Exception:
            scratch_store.discard(False)
            raise
    invoke = _runner(graph, use_async)
    base = dict(configurable or {})
    mapping: dict[str, str] = {}
    pairs: list[tuple[Any, Any]] = []
    runs = 0
    divergence: Divergence | None = None
    replay = None
    sub = (0, 0)
    root = ns is None
    try:
        with saver.replaying(thread_id) as replay:
            i = 0
            while i < len(chain):
                r = chain[i]
                md = r.metadata or {}
                src = md.get("source")
                parent = r.parent_config["configurable"]["checkpoint_id"] if r.parent_config else None
                if parent is not None and parent not in mapping:
                    raise _Stop(
                        Divergence(
                            md.get("step"),
                            None,
                            "source",
                            None,
                            f"checkpoint {_id(r)} continues {parent}, which is not on the main line",
                        )
                    )
                start = mapping.get(parent) if parent is not None else None
                latest = _latest_id(saver, scratch)
                at_tip = latest is None or latest == start
                cfg = _cfg(scratch, None if at_tip else start, base)
                before = set(mapping.values())
                error: BaseException | None = None
                runs += 1
                if scratch_store is not None and src in ("input", "update", "fork"):
                    scratch_store.reset(_ts_us(r.checkpoint))
                try:
                    if src == "input":
                        invoke(r.checkpoint["channel_values"].get(_START), cfg)
                    elif src == "update":
                        values, as_node = _update_of(saver, thread_id, chain[i - 1] if i else None, r)
                        graph.update_state(_cfg(scratch, start, base), values, as_node=as_node)
                    elif src == "fork":
                        invoke(None, _cfg(scratch, start, base))
                    else:
                        prev = chain[i - 1] if i else None
                        resume = _resume_of(saver, scratch, prev, mapping.get(_id(prev)) if prev else None)
                        invoke(Command(resume=resume[0]) if resume else None, cfg)
                except ReplayMissError as exc:
                    raise _Stop(
                        Divergence(
                            exc.step,
                            exc.node,
                            "call",
                            exc.kind,
                            str(exc).split("\n", 1)[0],
                            exc.diff,
                            _id(r),
                            # a call's namespace is its task's: the checkpoints' is the part before it
                            ns=(getattr(exc, "ns", "") or "").rpartition("|")[0],
                        )
                    ) from None
                except Exception as exc:  # the graph failed: a difference if the recording did not
                    error = exc
                new = _new_checkpoints(saver, scratch, before)
                # the recorded line may leave this run part way (a later fork or update_state
                # continued an earlier checkpoint): compare up to there
                for k in range(1, len(new)):
                    later = (chain[i + k].metadata or {}).get("source") if i + k < len(chain) else None
                    if later in ("input", "update", "fork"):
                        new = new[:k]
                        break
                for k, n in enumerate(new):
                    if i + k >= len(chain):
                        raise _Stop(
                            Divergence(
                                n.metadata.get("step"),
                                _last_writer(saver, scratch, n),
                                "end",
                                None,
                                "the new run went on past the end of the recorded thread",
                                recorded_checkpoint=None,
                                new_checkpoint=_id(n),
                            )
                        )
                    rec = chain[i + k]
                    if root:
                        _compare(saver, scratch, rec, n)
                    mapping[_id(rec)] = _id(n)
                    pairs.append((rec, n))
                if error is not None:
                    last = chain[i + len(new) - 1] if new else None
                    recorded_error = last is not None and any(w[1] == _ERROR for w in last.pending_writes)
                    if not recorded_error:
                        step = new[-1].metadata.get("step") if new else md.get("step")
                        raise _Stop(
                            Divergence(
                                step,
                                None,
                                "error",
                                type(error).__name__,
                                f"the graph raised {type(error).__name__}: {error}",
                            )
                        )
                if not new:
                    raise _Stop(
                        Divergence(
                            md.get("step"),
                            None,
                            "end",
                            None,
                            f"the new run stopped before step {md.get('step')} ({src} checkpoint {_id(r)})",
                            recorded_checkpoint=_id(r),
                        )
                    )
                i += len(new)
            for rec, n in pairs if root else ():  # now that every run added its writes
                _compare_writes(saver, thread_id, scratch, rec, n)
            sub = _compare_namespaces(saver, thread_id, scratch, ns)
    except _Stop as stop:
        divergence = stop.divergence
        if root and not divergence.ns and divergence.what != "call" and divergence.recorded_checkpoint:
            # a root checkpoint differs: a subgraph run before it may have differed first
            try:
                _compare_namespaces(
                    saver,
                    thread_id,
                    scratch,
                    None,
                    upto=divergence.recorded_checkpoint,
                    new_upto=divergence.new_checkpoint,
                )
            except _Stop as first:
                divergence = first.divergence
            except Exception:  # noqa: BLE001 - the root's divergence stands
                pass
    finally:
        if not keep:
            saver.delete_thread(scratch)
        if scratch_store is not None:
            scratch_store.discard(keep)
    return ReproduceResult(
        thread_id=thread_id,
        scratch_thread=scratch,
        checkpoints=len(chain),
        compared=len(pairs),
        runs=runs,
        answered=dict(replay.answered) if replay else {"model": 0, "tool": 0},
        live=dict(replay.live) if replay else {"model": 0, "tool": 0},
        divergence=divergence,
        kept=keep,
        subgraph_checkpoints=sub[0],
        namespaces=sub[1],
        only_ns=ns,
        scratch_store=scratch_store.name if scratch_store is not None else None,
    )


def _resume_of(saver: Any, scratch: str, prev: Any, scratch_prev: str | None) -> tuple[Any] | None:
    """What ``Command(resume=...)`` continued the run after checkpoint ``prev``, as a
    1-tuple, or None for a plain ``invoke(None)``.

    One value for every interrupt: LangGraph's null task wrote ``__resume__``. A map
    ``{interrupt id: value}``: only the interrupted tasks wrote ``__resume__``;
    interrupt ids differ in the new run, so each recorded interrupt is paired with
    the new one of the same value (else the same position)."""
    if prev is None:
        return None
    writes = prev.pending_writes
    null = [w[2] for w in writes if w[0] == fmt.NULL_TASK_ID and w[1] == _RESUME]
    if null:
        return (null[-1],)
    resumes = {w[0]: w[2] for w in writes if w[1] == _RESUME and w[0] != fmt.NULL_TASK_ID}
    if not resumes or scratch_prev is None:
        return None
    recorded = []  # (interrupt, resume value) in task order
    for task_id, channel, value in writes:
        if channel == "__interrupt__" and task_id in resumes:
            ints = value if isinstance(value, (list, tuple)) else [value]
            vals = resumes[task_id] if isinstance(resumes[task_id], list) else [resumes[task_id]]
            for k, intr in enumerate(ints):
                if k < len(vals):
                    recorded.append((intr, vals[k]))
    new_ints: list[Any] = []
    tup = saver.get_tuple(_cfg(scratch, scratch_prev))
    for _task, channel, value in tup.pending_writes if tup else []:
        if channel == "__interrupt__":
            new_ints.extend(value if isinstance(value, (list, tuple)) else [value])
    out: dict[str, Any] = {}
    free = list(new_ints)
    for intr, val in recorded:
        want = _key(canon(getattr(intr, "value", None)))
        match = next((n for n in free if _key(canon(getattr(n, "value", None))) == want), None)
        if match is None and free:
            match = free[0]
        if match is not None:
            free.remove(match)
            out[str(getattr(match, "id", ""))] = val
    return (out,) if out else None


def _latest_id(saver: Any, thread: str) -> str | None:
    with saver.lock:
        return saver.indexes.get(thread).latest("")


def _new_checkpoints(saver: Any, scratch: str, known: set[str]) -> list[Any]:
    """The scratch thread's checkpoints from its latest back to a known one, oldest first
    (ids from the index; only the new checkpoints are read)."""
    ids = []
    with saver.lock:
        idx = saver.indexes.get(scratch)
        cid = idx.latest("")
        while cid is not None and cid not in known:
            ids.append(cid)
            entry = idx.ckpt.get(("", cid))
            cid = entry.parent if entry is not None else None
    ids.reverse()
    return [saver.get_tuple(_cfg(scratch, cid)) for cid in ids]


def _last_writer(saver: Any, thread: str, t: Any) -> str | None:
    if not t.parent_config:
        return None
    writers = _writer(saver, thread, t.parent_config["configurable"]["checkpoint_id"], _ns(t))
    return next(iter(sorted(set(writers.values()))), None)


def _update_of(saver: Any, thread_id: str, parent: Any, update: Any) -> tuple[dict, str | None]:
    """The values and ``as_node`` of an ``update_state`` that made checkpoint ``update``."""
    values: dict[str, Any] = {}
    if parent is not None:
        pid = _id(parent)
        paths = {(t, c): p for t, _i, c, p, _ in _writes(saver, thread_id, "", pid)}
        for task_id, channel, value in parent.pending_writes:
            path = paths.get((task_id, channel)) or ""
            # update_state's task: no path, or LangGraph's "~__interrupt__, <n>" one (langgraph 1.2)
            if (
                task_id != fmt.NULL_TASK_ID
                and (not path or path.startswith("~__interrupt__"))
                and not fmt.is_internal_channel(channel)
            ):
                values[channel] = value
    seen_new = update.checkpoint.get("versions_seen", {})
    seen_old = parent.checkpoint.get("versions_seen", {}) if parent is not None else {}
    ran = [n for n, v in seen_new.items() if v != seen_old.get(n) and not n.startswith("__")]
    return values, (ran[0] if ran else None)


def _next(t: Any) -> tuple:
    """The nodes that run next from a checkpoint (``branch:to:`` channels and
    pending sends, as ``gitckpt show`` works them out), sorted."""
    from .ops import derive_next

    return tuple(sorted(derive_next(t.checkpoint)))


def _compare(saver: Any, scratch: str, rec: Any, new: Any) -> None:
    try:
        _compare_one(saver, scratch, rec, new)
    except _Stop as stop:
        stop.divergence.ns = stop.divergence.ns or _ns(rec)
        raise


def _compare_one(saver: Any, scratch: str, rec: Any, new: Any) -> None:
    step = rec.metadata.get("step")
    rid, nid = _id(rec), _id(new)
    for field in ("step", "source"):
        a, b = rec.metadata.get(field), new.metadata.get(field)
        if a != b:
            raise _Stop(
                Divergence(
                    step,
                    _last_writer(saver, scratch, new),
                    "source",
                    field,
                    f"the new checkpoint's {field} is {b!r}, the recorded one's {a!r}",
                    recorded_checkpoint=rid,
                    new_checkpoint=nid,
                )
            )
    a_next, b_next = _next(rec), _next(new)
    if a_next != b_next:
        raise _Stop(
            Divergence(
                step,
                _last_writer(saver, scratch, new),
                "next",
                None,
                f"the next nodes are {list(b_next)}, recorded {list(a_next)}",
                _diff(list(a_next), list(b_next)),
                rid,
                nid,
            )
        )
    av, bv = rec.checkpoint["channel_values"], new.checkpoint["channel_values"]
    chans = sorted(set(av) | set(bv), key=lambda c: (fmt.is_internal_channel(c), c))
    for ch in chans:
        a, b = _canon_channel(av.get(ch)), _canon_channel(bv.get(ch))
        if a != b:
            a, b = canon(av.get(ch)), canon(bv.get(ch))
            parent = new.parent_config["configurable"]["checkpoint_id"] if new.parent_config else None
            writers = _writer(saver, scratch, parent, _ns(new)) if parent else {}
            raise _Stop(
                Divergence(
                    step,
                    writers.get(ch) or _last_writer(saver, scratch, new),
                    "channel",
                    ch,
                    f"channel {ch!r} differs",
                    _diff(a, b),
                    rid,
                    nid,
                )
            )


def _canon_channel(value: Any) -> Any:
    if type(value) is list:
        return [canon(v, True) for v in value]
    return canon(value, True)


def _compare_writes(saver: Any, thread_id: str, scratch: str, rec: Any, new: Any) -> None:
    def bag(t: Any) -> list[str]:
        return sorted(_key([c, canon(v)]) for _task, c, v in t.pending_writes)

    a = bag(rec)  # the recorded thread's tuples were read once its recording was complete
    with saver.lock:  # the scratch checkpoint's writes as they are now (later runs added to them)
        idx = saver.indexes.get(scratch)
        b = sorted(_key([c, canon(v)]) for _task, c, v in saver._pending_writes(scratch, idx, _ns(new), _id(new)))
    if a != b:
        only_a = [json.loads(x) for x in a if x not in b]
        only_b = [json.loads(x) for x in b if x not in a]
        ch = (only_a or only_b)[0][0]
        writers = _writer(saver, thread_id, _id(rec), _ns(rec))
        raise _Stop(
            Divergence(
                rec.metadata.get("step"),
                writers.get(ch),
                "writes",
                ch,
                f"the pending writes of step {rec.metadata.get('step')} differ (channel {ch!r})",
                _diff(only_a, only_b),
                _id(rec),
                _id(new),
                _ns(rec),
            )
        )


# -- subgraph namespaces ------------------------------------------------------------


def _ns_checkpoints(saver: Any, thread: str, ns: str) -> list[Any]:
    """The checkpoints of namespace ``ns``, oldest first."""
    out = [t for t in saver.list(_cfg(thread, ns=ns)) if _ns(t) == ns]
    out.sort(key=_id)
    return out


def _ns_keys(saver: Any, thread: str, only: str | None) -> dict[tuple, tuple[str, list[Any]]]:
    """``{key: (namespace, its checkpoints)}`` for the thread's subgraph namespaces
    (``only``: that one and those nested in it).

    A namespace is ``parent|node:<task id>`` (LangGraph's checkpoint_ns); task ids
    differ between runs, so each ``node:<task id>`` part is keyed by what stays:
    the node, the step of the parent's checkpoint the task ran from (the
    ``parents`` of the subgraph's checkpoint metadata) and the task's path (from
    the pending writes of that parent checkpoint: ``~__pregel_push, <n>, ...``
    for a Send, ``~__pregel_pull, node`` for a node); namespaces that still share
    a key are told apart by the order of their first checkpoints."""
    with saver.lock:
        spaces = [n for n in saver.indexes.get(thread).namespaces() if n]
    if only is not None:
        spaces = [n for n in spaces if n == only or n.startswith(only + "|")]
    firsts: dict[str, list[Any]] = {}
    for ns in spaces:
        cps = _ns_checkpoints(saver, thread, ns)
        if cps:
            firsts[ns] = cps
    paths: dict[tuple[str, str], dict[str, str]] = {}

    def part(ns: str) -> tuple:
        parent_ns, _, last = ns.rpartition("|")
        node, _, task_id = last.partition(":")
        first = firsts.get(ns)
        parents = ((first[0].metadata or {}).get("parents") or {}) if first else {}
        pcid = parents.get(parent_ns)
        step, path = None, ""
        if pcid:
            if (parent_ns, pcid) not in paths:
                paths[(parent_ns, pcid)] = {t: p for t, _i, _c, p, _ty in _writes(saver, thread, parent_ns, pcid)}
                ptup = saver.get_tuple(_cfg(thread, pcid, ns=parent_ns))
                paths[(parent_ns, pcid)]["\0step"] = str((ptup.metadata or {}).get("step")) if ptup else ""
            found = paths[(parent_ns, pcid)]
            step, path = found.get("\0step"), found.get(task_id, "")
        return (node, step, path)

    groups: dict[tuple, list[str]] = {}
    for ns in firsts:
        parts = ns.split("|")
        key = tuple(part("|".join(parts[: k + 1])) for k in range(len(parts)))
        groups.setdefault(key, []).append(ns)
    out: dict[tuple, tuple[str, list[Any]]] = {}
    for key, names in groups.items():
        names.sort(key=lambda n: _id(firsts[n][0]))
        for k, ns in enumerate(names):
            out[key + (k,)] = (ns, firsts[ns])
    return out


def _compare_namespaces(
    saver: Any,
    thread_id: str,
    scratch: str,
    only: str | None,
    upto: str | None = None,
    new_upto: str | None = None,
) -> tuple[int, int]:
    """Compare each recorded subgraph namespace's checkpoints (and pending writes)
    with the scratch thread's namespace of the same key (:func:`_ns_keys`); then a
    namespace of the scratch thread that no recorded one corresponds to is a
    divergence too. Returns (checkpoints, namespaces) compared. ``upto``: only the
    namespaces run from root checkpoints before that recorded one (their writes
    made it or an earlier one), and ``new_upto``, the new namespaces run from root
    checkpoints before that new one. With ``only``, new namespaces are not looked at."""
    recorded = _ns_keys(saver, thread_id, only)
    new = _ns_keys(saver, scratch, None)
    # in the order the root ran them, then of their keys (a Send's index), not of the
    # clock: parallel tasks start in any order
    items = sorted(
        recorded.items(),
        key=lambda kv: (((kv[1][1][0].metadata or {}).get("parents") or {}).get("", ""), _key(kv[0])),
    )
    if upto is not None:
        items = [kv for kv in items if ((kv[1][1][0].metadata or {}).get("parents") or {}).get("", "") < upto]
    done: set[str] = set()

    def one(key: tuple, ns: str, recs: list[Any]) -> None:
        done.add(ns)
        found = new.get(key)
        first = recs[0].metadata or {}
        if found is None:
            raise _Stop(
                Divergence(
                    first.get("step"),
                    key[-2][0],
                    "end",
                    None,
                    f"the new run made no checkpoint in subgraph namespace {ns}",
                    recorded_checkpoint=_id(recs[0]),
                    ns=ns,
                )
            )
        _, news = found
        for k, rec in enumerate(recs):
            if k >= len(news):
                raise _Stop(
                    Divergence(
                        rec.metadata.get("step"),
                        key[-2][0],
                        "end",
                        None,
                        f"the new run stopped before step {rec.metadata.get('step')} of subgraph namespace {ns}",
                        recorded_checkpoint=_id(rec),
                        ns=ns,
                    )
                )
            _compare(saver, scratch, rec, news[k])
        if len(news) > len(recs):
            n = news[len(recs)]
            raise _Stop(
                Divergence(
                    n.metadata.get("step"),
                    _last_writer(saver, scratch, n) or key[-2][0],
                    "end",
                    None,
                    f"the new run went on past the end of subgraph namespace {ns}",
                    new_checkpoint=_id(n),
                    ns=ns,
                )
            )
        for rec, n in zip(recs, news):
            _compare_writes(saver, thread_id, scratch, rec, n)

    def checked(key: tuple, ns: str, recs: list[Any]) -> None:
        try:
            one(key, ns, recs)
        except _Stop as stop:
            d = stop.divergence
            if d.what not in ("channel", "next", "writes", "source") or not d.recorded_checkpoint:
                raise
            # a checkpoint of ns differs: a subgraph run inside ns before it may have differed first
            for k2, (ns2, recs2) in items:
                if ns2 not in done and ns2.startswith(ns + "|"):
                    parent = ((recs2[0].metadata or {}).get("parents") or {}).get(ns, "")
                    if parent < d.recorded_checkpoint:
                        checked(k2, ns2, recs2)
            raise

    for key, (ns, recs) in items:
        if ns not in done:
            checked(key, ns, recs)
    if only is None and (upto is None or new_upto is not None):
        _no_extra_namespace(saver, scratch, recorded, new, new_upto)
    return sum(len(recs) for _k, (_n, recs) in items), len(items)


def _no_extra_namespace(
    saver: Any, scratch: str, recorded: dict[tuple, Any], new: dict[tuple, Any], upto: str | None
) -> None:
    """A subgraph namespace the new run made that no recorded one corresponds to
    (same node path, parent step and task path) is a divergence: the earliest one
    (by the root checkpoint it ran from, then its key) is reported."""

    def parent(cps: list[Any]) -> str:
        return ((cps[0].metadata or {}).get("parents") or {}).get("", "")

    extra = sorted(
        ((key, ns_cps) for key, ns_cps in new.items() if key not in recorded),
        key=lambda kv: (parent(kv[1][1]), _key(kv[0])),
    )
    if upto is not None:
        extra = [kv for kv in extra if parent(kv[1][1]) < upto]
    if not extra:
        return
    key, (ns, cps) = extra[0]
    node, step, _path = key[-2]
    raise _Stop(
        Divergence(
            (cps[0].metadata or {}).get("step"),
            node,
            "end",
            None,
            f"the new run made subgraph namespace {ns} (node {node}"
            + (f", run from step {step}" if step not in (None, "") else "")
            + "), which the recording has no counterpart of",
            new_checkpoint=_id(cps[0]),
            ns=ns,
        )
    )


def _writes(saver: Any, thread_id: str, ns: str, cid: str) -> list[tuple[str, int, str, str, tuple[str, bytes]]]:
    """``(task_id, idx, channel, task_path, (type, payload))`` of a checkpoint's pending
    writes, undecoded (their task paths pair subgraph namespaces)."""
    with saver.lock:
        idx = saver.indexes.get(str(thread_id))
        blobs = saver.indexes.write_blobs(idx.writes.get((ns, cid), ()), cid)
    return read_writes(saver.repo, blobs)
