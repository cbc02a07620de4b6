"""Operations for people: what the ``gitckpt`` CLI does, as library functions.

No click and no terminal output here: every function takes a :class:`GitSaver`
(or a repository path), returns plain data and raises :class:`GitckptError`
subclasses with a sentence a person understands. The CLI only renders.

* :func:`history` — a thread's checkpoints from the commit trailers alone
  (no channel value is decoded), with the nodes that wrote each one.
* :func:`resolve_checkpoint` — a checkpoint id or a unique prefix of one.
* :func:`snapshot`, :func:`diff_channels` — a checkpoint's state and the
  per-channel differences between two checkpoints.
* :func:`load_graph` — the user's graph from ``FILE.py:ATTR``, ``module:ATTR``
  or ``langgraph.json``, bound to the repository's saver and store.
* :func:`verify`, :func:`gc` — integrity check and maintenance.
* :func:`store_history` — how store items changed, from the ``store`` branch.
* :func:`parse_namespace`, :func:`format_namespace` — the one command-line
  form of a store namespace: labels joined by ``/`` (``memories/1``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import importlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import msgpack

from .checkpoint import format as fmt
from .checkpoint.index import ThreadIndexes
from .errors import CorruptObjectError, GitckptError, InvalidInputError, NotFoundError, RepositoryError
from .git import names
from .git.maintenance import PACK_GOAL, maintenance_lock, merge_small_packs, pack_count
from .git.repo import Oid
from .trust import MARK, NotConstructed, jsonable_marker, marker_text  # noqa: F401 (the CLI's)

#: A progress callback: ``progress(done, total, what)``.
Progress = Callable[[int, int, str], None]

NULL_TASK = fmt.NULL_TASK_ID

# -- namespaces on the command line -------------------------------------------


def parse_namespace(text: str) -> tuple[str, ...]:
    """``memories/1`` -> ``("memories", "1")``. A label holding ``/`` or ``%`` is
    written percent-encoded (``%2F``, ``%25``). The empty string is the root."""
    if text in ("", "/"):
        return ()
    labels = tuple(unquote(part) for part in text.strip("/").split("/"))
    if any(label == "" for label in labels):
        raise InvalidInputError(f"namespace {text!r} has an empty label; write labels joined by '/', e.g. memories/1")
    return labels


def format_namespace(namespace: tuple[str, ...] | list[str]) -> str:
    """The inverse of :func:`parse_namespace`."""
    return "/".join(quote(label, safe="") if ("/" in label or "%" in label) else label for label in namespace)


def parse_json(text: str, what: str) -> Any:
    """JSON from the command line, or an error naming the option and the position."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInputError(
            f"{what} is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
        ) from None


# -- values as JSON -------------------------------------------------------------


def jsonable(value: Any) -> Any:
    """Plain JSON data for any channel value (messages, pydantic models,
    dataclasses, LangGraph's ``Interrupt``, bytes...)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, NotConstructed):  # a type outside the allowlist: its name and data (trust.py)
        return jsonable_marker(value, jsonable)
    if isinstance(value, msgpack.ExtType):  # an extension in a store value (never constructed)
        return _ext_marker(value)
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        items = list(value)
        if isinstance(value, (set, frozenset)):
            items.sort(key=repr)
        return [jsonable(v) for v in items]
    if isinstance(value, (bytes, bytearray)):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            return bytes(value).hex()
    if isinstance(value, (_dt.datetime, _dt.date)):
        return value.isoformat()
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        try:
            return jsonable(dump(mode="json"))
        except Exception:
            return jsonable(dump())
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if hasattr(value, "_asdict"):
        return jsonable(value._asdict())
    if hasattr(value, "__dict__") and type(value).__module__.startswith("langgraph"):
        return {k: jsonable(v) for k, v in vars(value).items() if not k.startswith("_")}
    return repr(value)


def _ext_marker(ext: msgpack.ExtType) -> Any:
    """A msgpack extension a store value holds, as a not-constructed marker (its type read, not built)."""
    try:
        tup = msgpack.unpackb(
            ext.data,
            raw=False,
            strict_map_key=False,
            ext_hook=lambda code, data: _ext_marker(msgpack.ExtType(code, data)),
        )
        return jsonable_marker(NotConstructed(tup[0], tup[1], tup[2]), jsonable)
    except Exception:
        return {MARK: f"msgpack extension {ext.code}", "data": ext.data.hex()}


# -- the history of a thread ----------------------------------------------------


class CheckpointRow:
    """One checkpoint of a thread's history.

    Its id, parent, step, source and run come from the thread's index; its
    commit's subject, time and parents, and which nodes wrote which channels
    to make it, are read the first time they are asked for. So a command that
    shows the newest ten checkpoints of a long thread reads ten commits, not
    the whole history.
    """

    __slots__ = (
        "checkpoint_id",
        "parent_checkpoint_id",
        "step",
        "source",
        "checkpoint_ns",
        "run_id",
        "lines",
        "_oid",
        "_repo",
        "_hist",
        "_wrote",
    )

    def __init__(
        self,
        checkpoint_id: str,
        parent_checkpoint_id: str | None,
        step: int | None,
        source: str | None,
        checkpoint_ns: str,
        run_id: str | None,
        oid: Oid | bytes,
        repo: Any,
        hist: ThreadHistory | None = None,
        lines: list[str] | None = None,
    ) -> None:
        self.checkpoint_id = checkpoint_id
        self.parent_checkpoint_id = parent_checkpoint_id
        self.step = step
        self.source = source
        self.checkpoint_ns = checkpoint_ns
        self.run_id = run_id
        self.lines = lines if lines is not None else []  # refs whose newest checkpoint this is
        self._oid = (
            oid if isinstance(oid, bytes) else oid.raw
        )  # the commit's raw id (a 10,000-row history makes no Oids)
        self._repo, self._hist = repo, hist
        self._wrote: dict[str, list[str]] | None = None

    @property
    def commit(self) -> str:
        return self._oid.hex()

    def _info(self) -> Any:
        return self._repo.commit_info(Oid(raw=self._oid), f"checkpoint {self.checkpoint_id}")

    @property
    def time(self) -> int:
        """Unix seconds of the commit."""
        return self._info().commit_time

    @property
    def subject(self) -> str:
        return self._info().message.split("\n", 1)[0]

    @property
    def root(self) -> bool:
        """The commit has no parent (the start of the history, or what prune kept)."""
        return not self._info().parent_ids

    @property
    def wrote(self) -> dict[str, list[str]]:
        """``{node: channels}`` the parent's pending writes say made this checkpoint (a ``loop`` step)."""
        if self._wrote is None:
            self._wrote = {}
            if self._hist is not None and self.source == "loop" and self.parent_checkpoint_id:
                self._wrote = _wrote(
                    self._repo, self._hist.writes.get((self.checkpoint_ns, self.parent_checkpoint_id), {})
                )
        return self._wrote

    def _call_blobs(self) -> dict[str, Oid]:
        """The recorded calls of the step that made this checkpoint (stored with
        its parent's pending writes): entry names and blobs, nothing read."""
        if self._hist is None or not self.parent_checkpoint_id or self.source not in ("loop", "fork"):
            return {}
        return self._hist.writes.calls((self.checkpoint_ns, self.parent_checkpoint_id))

    @property
    def calls(self) -> list[dict[str, Any]]:
        """The model and tool calls recorded for the step that made this checkpoint, decoded."""
        return read_calls(self._repo, self._call_blobs())

    @property
    def call_count(self) -> int:
        """How many calls :attr:`calls` holds, without reading them (``gitckpt log``)."""
        return len(self._call_blobs())

    @property
    def summary(self) -> str:
        """Which nodes wrote which channels to make this checkpoint, else the commit subject's tail."""
        if self.wrote:
            return "; ".join(f"{node} wrote {', '.join(chans)}" for node, chans in self.wrote.items())
        parts = self.subject.split(" · ")
        if parts and parts[0].startswith("step "):
            parts = parts[1:]
        if parts and parts[0] == self.source:
            parts = parts[1:]
        return " · ".join(parts)

    def to_json(self) -> dict[str, Any]:
        return {
            "checkpoint_id": self.checkpoint_id,
            "parent_checkpoint_id": self.parent_checkpoint_id,
            "step": self.step,
            "source": self.source,
            "checkpoint_ns": self.checkpoint_ns,
            "run_id": self.run_id,
            "wrote": self.wrote,
            "calls": self.call_count,
            "summary": self.summary,
            "time": self.time,
            "commit": self.commit,
            "lines": [short_ref(r) for r in self.lines],
        }


def short_ref(ref: str) -> str:
    return ref[len(fmt.HEADS) :] if ref.startswith(fmt.HEADS) else ref


class _Writes(Mapping):
    """``(ns, checkpoint id) -> {entry name: blob}`` of pending writes, read from
    the ``writes/<id>`` trees the index names when a checkpoint's are asked for."""

    def __init__(self, indexes: ThreadIndexes, subtrees: dict[tuple[str, str], list[bytes]]) -> None:
        self._indexes, self._subtrees = indexes, subtrees
        self._read: dict[tuple[str, str], dict[str, Oid]] = {}

    def __getitem__(self, key: tuple[str, str]) -> dict[str, Oid]:
        if key not in self._read:
            self._read[key] = self._indexes.write_blobs(self._subtrees[key], key[1])
        return self._read[key]

    def calls(self, key: tuple[str, str]) -> dict[str, Oid]:
        """``{entry name: blob}`` of the calls recorded with a checkpoint's writes (format.md 18)."""
        if key not in self._subtrees:
            return {}
        return self._indexes.write_blobs(self._subtrees[key], key[1], calls=None)

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._subtrees)

    def __len__(self) -> int:
        return len(self._subtrees)


@dataclasses.dataclass
class ThreadHistory:
    thread_id: str
    rows: dict[tuple[str, str], CheckpointRow]  # (ns, checkpoint id) -> row
    writes: _Writes  # (ns, checkpoint id) -> {entry name: blob}; .calls(key): the recorded calls
    tips: dict[str, str]  # line ref -> tip commit

    def namespaces(self) -> list[str]:
        return sorted({ns for ns, _ in self.rows})

    def checkpoints(self, ns: str = "") -> list[CheckpointRow]:
        """Newest first: greatest checkpoint id first, as ``GitSaver.list``."""
        return sorted((r for (n, _), r in self.rows.items() if n == ns), key=lambda r: r.checkpoint_id, reverse=True)


def thread_history(indexes: ThreadIndexes, thread_id: str, *, fresh: bool = False) -> ThreadHistory:
    """Every checkpoint of a thread (every namespace, every line), from its
    index (``indexes``, a saver's or the CLI's) (docs/format.md, 6): a new process reads the
    index's cache file and walks only newer commits, so this does not walk a
    long history. ``fresh`` walks it all instead (``verify``). Raises
    :class:`NotFoundError` if the thread does not exist.
    """
    with indexes.lock:
        idx = indexes.thread_index(thread_id, fresh=fresh)
        if not idx.tips:
            raise NotFoundError(f"no thread {thread_id!r} in {indexes.repo.path} (see `gitckpt threads`)")
        entries = list(idx.ckpt.items())
        heads = dict(idx.heads)
        subtrees = {key: list(oids) for key, oids in idx.writes.items()}
        tips = {ref: str(oid) for ref, oid in idx.tips.items()}
    hist = ThreadHistory(thread_id, {}, _Writes(indexes, subtrees), tips)
    repo = indexes.repo
    hist.rows = {
        (ns, cid): CheckpointRow(cid, e.parent, e.step, e.source, ns, e.run_id, e.commit_raw, repo, hist)
        for (ns, cid), e in entries
    }
    for ref, (ns, head) in heads.items():
        if head is not None and (ns, head) in hist.rows:
            hist.rows[(ns, head)].lines.append(ref)
    return hist


def read_writes(repo: Any, blobs: dict[str, Oid]) -> list[tuple[str, int, str, str, tuple[str, bytes]]]:
    """``(task_id, idx, channel, task_path, typed value)`` of each write blob."""
    out = []
    for name, oid in sorted(blobs.items()):
        try:
            out.append(fmt.unpack_write(repo.read_blob(oid, f"pending write {name}")))
        except CorruptObjectError:
            raise
        except Exception as exc:
            raise CorruptObjectError(f"pending write {name} (blob {oid}) cannot be decoded ({exc})") from exc
    return out


def read_calls(repo: Any, blobs: dict[str, Oid]) -> list[dict[str, Any]]:
    """The recorded calls among ``blobs``, as shown to people: kind, name, node,
    step, order, input (a tool's arguments) and a one-line answer. Nothing is
    constructed: answers stay serialized (the summary was written with them)."""
    out = []
    for _name, c in fmt.read_call_blobs(repo, blobs):
        out.append(
            {
                "kind": c.get("kind"),
                "name": c.get("name"),
                "node": c.get("node"),
                "step": c.get("step"),
                "task": c.get("task"),
                "n": c.get("n"),
                "args": c.get("args"),
                "summary": c.get("summary", ""),
                "error": c.get("error"),
                "replayed": bool(c.get("replayed")),
            }
        )
    out.sort(key=lambda c: (str(c["node"]), str(c["task"]), c["n"] or 0))
    return out


def _wrote(repo: Any, blobs: dict[str, Oid]) -> dict[str, list[str]]:
    wrote: dict[str, list[str]] = {}
    for task_id, _, channel, task_path, _ in read_writes(repo, blobs):
        if task_id == fmt.NULL_TASK_ID or fmt.is_internal_channel(channel):
            continue
        chans = wrote.setdefault(fmt.writer_of(task_id, task_path, (channel,)), [])
        if channel not in chans:
            chans.append(channel)
    return {node: sorted(chans) for node, chans in sorted(wrote.items())}


def resolve_namespace(hist: ThreadHistory, ns: str) -> str:
    """A checkpoint namespace of the thread: ``""`` (the root), an exact one, or a
    unique prefix of one (``child`` for ``child:1b7e...``)."""
    if ns == "":
        return ""
    spaces = [n for n in hist.namespaces() if n]
    if ns in spaces:
        return ns
    found = [n for n in spaces if n.startswith(ns)]
    if len(found) == 1:
        return found[0]
    where = f"thread {hist.thread_id!r}"
    if found:
        raise InvalidInputError(f"namespace {ns!r} is ambiguous in {where}: {', '.join(found[:3])}")
    listed = ", ".join(spaces) if spaces else "none besides the root"
    raise NotFoundError(f"{where} has no namespace {ns!r} (its subgraph namespaces: {listed})")


def resolve_checkpoint(hist: ThreadHistory, ref: str | None, ns: str = "") -> CheckpointRow:
    """The checkpoint ``ref`` names in ``ns``: a full id or a unique prefix; None: the latest."""
    rows = hist.checkpoints(ns)
    where = f"thread {hist.thread_id!r}" + (f" namespace {ns!r}" if ns else "")
    if not rows:
        raise NotFoundError(
            f"{where} has no checkpoints"
            + (f" (its namespaces: {', '.join(map(repr, hist.namespaces()))})" if hist.namespaces() else "")
        )
    if ref is None or ref == "latest":
        return rows[0]
    ref = ref.strip()
    exact = [r for r in rows if r.checkpoint_id == ref]
    if exact:
        return exact[0]
    found = [r for r in rows if r.checkpoint_id.startswith(ref)] if ref else []
    if len(found) == 1:
        return found[0]
    if len(found) > 1:
        shown = ", ".join(r.checkpoint_id for r in found[:3]) + (", ..." if len(found) > 3 else "")
        raise InvalidInputError(f"checkpoint {ref!r} is ambiguous in {where}: it starts {len(found)} ids ({shown})")
    raise NotFoundError(f"{where} has no checkpoint {ref!r} (see `gitckpt log {hist.thread_id}`)")


def short_ids(ids: list[str], minimum: int = 8) -> dict[str, str]:
    """The shortest prefix (at least ``minimum`` characters) that tells each id apart."""
    ids = sorted(set(ids))
    # the common prefix of each id and the next one in sorted order (only neighbours can share more)
    common = [_common_prefix(a, b) for a, b in zip(ids, ids[1:])]
    out: dict[str, str] = {}
    for i, cid in enumerate(ids):
        need = max(minimum, common[i - 1] + 1 if i else 0, common[i] + 1 if i < len(common) else 0)
        out[cid] = cid[: min(need, len(cid))]
    return out


def _common_prefix(a: str, b: str) -> int:
    """Length of the common prefix of ``a`` and ``b`` (a bisection on slices, which compare in C)."""
    lo, hi = 0, min(len(a), len(b))
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo


# -- drawing the lines of a thread ------------------------------------------------


def graph_lanes(rows: list[CheckpointRow]) -> list[tuple[str, CheckpointRow | None]]:
    """``git log --graph`` for checkpoints: ``(drawing, row)`` pairs, newest
    first; ``row`` is None on the connector lines where a fork joins its base."""
    known = {r.checkpoint_id for r in rows}
    lanes: list[str | None] = []  # the checkpoint id each lane waits for
    out: list[tuple[str, CheckpointRow | None]] = []
    for row in rows:
        cid = row.checkpoint_id
        mine = [i for i, want in enumerate(lanes) if want == cid]
        if not mine:
            lanes.append(cid)
            mine = [len(lanes) - 1]
        keep = mine[0]
        for j in sorted(mine[1:], reverse=True):  # forks joining here: "|/"
            cells = [" "] * (2 * len(lanes) - 1)
            for k in range(len(lanes)):
                if k < j:
                    cells[2 * k] = "|"
                else:
                    cells[2 * k - 1] = "/"
            out.append(("".join(cells).rstrip(), None))
            del lanes[j]
        out.append((" ".join("*" if k == keep else "|" for k in range(len(lanes))), row))
        parent = row.parent_checkpoint_id
        if parent is not None and parent in known:
            lanes[keep] = parent
        else:
            del lanes[keep]
    return out


# -- state and differences ---------------------------------------------------------


def derive_next(checkpoint: dict) -> list[str]:
    """The nodes a checkpoint will run next, from its channels alone.

    LangGraph decides from the graph; without it, the ``branch:to:<node>``
    channels updated by the step that made the checkpoint name them (and
    ``__start__`` when the input was just written). Pass a graph to get
    LangGraph's own answer.
    """
    updated = checkpoint.get("updated_channels")
    nodes: list[str] = []
    if updated is not None:
        for ch in updated:
            if ch.startswith("branch:to:"):
                nodes.append(ch[len("branch:to:") :])
            elif ch == "__start__":
                nodes.append("__start__")
        return sorted(set(nodes))
    versions = checkpoint.get("channel_versions", {})
    seen = checkpoint.get("versions_seen", {})
    values = checkpoint.get("channel_values", {})
    for ch, ver in versions.items():
        if ch.startswith("branch:to:") and ch in values:  # a consumed trigger holds no value
            node = ch[len("branch:to:") :]
            if str(ver) > str(seen.get(node, {}).get(ch, "")):
                nodes.append(node)
    return sorted(set(nodes))


def snapshot(saver: Any, hist: ThreadHistory, row: CheckpointRow, graph: Any = None) -> dict[str, Any]:
    """The state at a checkpoint, as JSON data: values, next, tasks, metadata,
    created_at, config, parent_config and pending writes.

    With ``graph`` (bound to ``saver``) ``next`` and ``tasks`` are LangGraph's
    own (``get_state``); without it they are derived from the checkpoint.
    """
    config = {
        "configurable": {
            "thread_id": hist.thread_id,
            "checkpoint_ns": row.checkpoint_ns,
            "checkpoint_id": row.checkpoint_id,
        }
    }
    tup = saver.get_tuple(config)
    if tup is None:
        raise NotFoundError(f"thread {hist.thread_id!r} has no checkpoint {row.checkpoint_id!r}")
    values = {k: v for k, v in tup.checkpoint.get("channel_values", {}).items() if not fmt.is_internal_channel(k)}
    blobs = hist.writes.get((row.checkpoint_ns, row.checkpoint_id), {})
    paths = {(t, i): (ch, fmt.writer_of(t, p, (ch,))) for t, i, ch, p, _ in read_writes(saver.repo, blobs)}
    tasks: dict[str, dict[str, Any]] = {}
    pending = []
    for task_id, channel, value in tup.pending_writes or []:
        pending.append({"task_id": task_id, "channel": channel, "value": jsonable(value)})
        node = next((n for (t, _), (ch, n) in paths.items() if t == task_id), None)
        task = tasks.setdefault(task_id, {"id": task_id, "name": node, "writes": [], "interrupts": [], "error": None})
        if channel == "__interrupt__":
            task["interrupts"].extend(jsonable(v) for v in (value if isinstance(value, (list, tuple)) else [value]))
        elif channel == "__error__":
            task["error"] = jsonable(value)
        else:
            task["writes"].append(channel)
    if graph is not None:
        state = graph.get_state(config)
        next_nodes = list(state.next)
        task_list = [
            {
                "id": t.id,
                "name": t.name,
                "interrupts": jsonable(list(t.interrupts)),
                "error": None if t.error is None else repr(t.error),
            }
            for t in state.tasks
        ]
        derived = False
    else:
        next_nodes = derive_next(tup.checkpoint)
        task_list = [t for t in tasks.values() if t["id"] != NULL_TASK]
        named = {t["name"] for t in task_list}
        task_list += [
            {"id": None, "name": n, "writes": [], "interrupts": [], "error": None} for n in next_nodes if n not in named
        ]
        derived = True
    return {
        "thread_id": hist.thread_id,
        "checkpoint_id": row.checkpoint_id,
        "checkpoint_ns": row.checkpoint_ns,
        "values": jsonable(values),
        "raw_values": values,
        "next": next_nodes,
        "next_derived": derived,
        "tasks": task_list,
        "metadata": jsonable(tup.metadata),
        "created_at": tup.checkpoint.get("ts"),
        "config": tup.config,
        "parent_config": tup.parent_config,
        "pending_writes": pending,
        # the calls of the step that made this checkpoint, then those of tasks that ran from it
        "calls": row.calls + read_calls(saver.repo, hist.writes.calls((row.checkpoint_ns, row.checkpoint_id))),
    }


def diff_channels(before: dict[str, Any], after: dict[str, Any]) -> list[dict[str, Any]]:
    """Per-channel differences, as JSON data. Lists report the items removed
    and added after their common prefix (a chat's new messages)."""
    out = []
    for ch in sorted(set(before) | set(after)):
        if fmt.is_internal_channel(ch):
            continue
        a, b = before.get(ch, _MISSING), after.get(ch, _MISSING)
        if a is _MISSING:
            out.append({"channel": ch, "change": "added", "before": None, "after": jsonable(b)})
        elif b is _MISSING:
            out.append({"channel": ch, "change": "removed", "before": jsonable(a), "after": None})
        else:
            ja, jb = jsonable(a), jsonable(b)
            if ja == jb:
                continue
            item = {"channel": ch, "change": "changed", "before": ja, "after": jb}
            if isinstance(ja, list) and isinstance(jb, list):
                k = 0
                while k < min(len(ja), len(jb)) and ja[k] == jb[k]:
                    k += 1
                item["removed"] = ja[k:]
                item["added"] = jb[k:]
            out.append(item)
    return out


_MISSING = object()


# -- loading the user's graph -----------------------------------------------------


def _load_object(spec: str, base: Path, what: str) -> Any:
    target, sep, attr = spec.rpartition(":")
    if not sep or not target or not attr:
        raise InvalidInputError(f"{what} {spec!r} must look like FILE.py:ATTR or module.name:ATTR")
    is_file = target.endswith(".py") or "/" in target or os.sep in target
    if is_file:
        path = (base / target).resolve()
        if not path.is_file():
            raise InvalidInputError(f"{what} {spec!r}: no file {path}")
        name = f"_gitckpt_user_{abs(hash(str(path)))}"
        module = sys.modules.get(name)
        if module is None:
            try:
                module_spec = importlib.util.spec_from_file_location(name, path)
                if module_spec is None or module_spec.loader is None:
                    raise InvalidInputError(f"{what} {spec!r}: {path} cannot be imported as a Python module")
                module = importlib.util.module_from_spec(module_spec)
                sys.modules[name] = module
                sys.path.insert(0, str(path.parent))
                try:
                    module_spec.loader.exec_module(module)
                finally:
                    with contextlib.suppress(ValueError):
                        sys.path.remove(str(path.parent))
            except Exception as exc:
                sys.modules.pop(name, None)
                raise InvalidInputError(f"{what} {spec!r} does not import: {type(exc).__name__}: {exc}") from exc
    else:
        try:
            module = importlib.import_module(target)
        except Exception as exc:
            raise InvalidInputError(f"{what} {spec!r} does not import: {type(exc).__name__}: {exc}") from exc
    try:
        return getattr(module, attr)
    except AttributeError:
        raise InvalidInputError(f"{what} {spec!r}: {target} has no attribute {attr!r}") from None


def graph_spec_from_config(name: str | None, cwd: Path) -> tuple[str, Path]:
    """``(FILE.py:ATTR, base directory)`` of a graph named in ``langgraph.json``."""
    path = cwd / "langgraph.json"
    if not path.is_file():
        raise InvalidInputError("no graph given: pass --graph FILE.py:ATTR (or run where a langgraph.json names one)")
    try:
        config = json.loads(path.read_text())
        graphs = config["graphs"]
        if not isinstance(graphs, dict) or not graphs:
            raise KeyError
    except (json.JSONDecodeError, KeyError, TypeError):
        raise InvalidInputError(f'{path} has no "graphs" object naming FILE.py:ATTR entries') from None
    if name is None:
        if len(graphs) > 1:
            raise InvalidInputError(
                f"{path} names {len(graphs)} graphs ({', '.join(sorted(graphs))}); pick one with --graph NAME"
            )
        name = next(iter(graphs))
    if name not in graphs:
        raise InvalidInputError(f"{path} has no graph {name!r} (it has: {', '.join(sorted(graphs))})")
    entry = graphs[name]
    spec = entry.get("path") if isinstance(entry, dict) else entry
    if not isinstance(spec, str):
        raise InvalidInputError(f"{path}: graph {name!r} has no path")
    return spec, path.parent


def load_graph(spec: str | None, saver: Any, store: Any = None, cwd: Path | None = None) -> Any:
    """The user's compiled graph, persisting to ``saver`` (and ``store``).

    ``spec`` is ``FILE.py:ATTR``, ``module.name:ATTR``, the name of a graph in
    ``./langgraph.json``, or None for the only graph ``langgraph.json`` names.
    ``ATTR`` may be a compiled graph, a ``StateGraph`` builder, or a function
    returning either (called with no arguments, or with a config).
    """
    from langgraph.graph import StateGraph
    from langgraph.pregel import Pregel

    cwd = cwd or Path.cwd()
    base = cwd
    if spec is None or ":" not in spec:
        spec, base = graph_spec_from_config(spec, cwd)
    obj = _load_object(spec, base, "graph")
    if callable(obj) and not isinstance(obj, (Pregel, StateGraph)):
        try:
            try:
                obj = obj()
            except TypeError:
                obj = obj({"configurable": {}})
        except Exception as exc:
            raise InvalidInputError(f"graph {spec!r}: the factory failed: {type(exc).__name__}: {exc}") from exc
    if isinstance(obj, StateGraph):
        saver = _with_schema_types(saver, obj)
        return obj.compile(checkpointer=saver, store=store)
    if isinstance(obj, Pregel):
        saver = _with_schema_types(saver, getattr(obj, "builder", None), getattr(obj, "channels", None))
        return obj.copy(update={"checkpointer": saver, "store": store})
    raise InvalidInputError(
        f"graph {spec!r} is a {type(obj).__name__}, not a LangGraph graph (StateGraph or compiled graph)"
    )


def _with_schema_types(saver: Any, builder: Any, channels: Any = None) -> Any:
    """``saver`` allowing the types the user's graph declares (its state, input and
    output schemas, its channels' types), as LangGraph does in strict mode
    (``LANGGRAPH_STRICT_MSGPACK``): a graph that is run needs its own state types."""
    if saver is None or not hasattr(saver, "with_allowlist"):
        return saver
    try:
        from langgraph._internal._serde import build_serde_allowlist
    except ImportError:  # pragma: no cover - another langgraph layout: the user's --allow still works
        return saver
    schemas = []
    if builder is not None and hasattr(builder, "state_schema"):
        schemas = [
            builder.state_schema,
            builder.input_schema,
            builder.output_schema,
            getattr(builder, "context_schema", None),
        ]
        schemas += [n.input_schema for n in builder.nodes.values()]
        channels = channels if channels is not None else builder.channels
    try:
        allow = build_serde_allowlist(schemas=[s for s in schemas if s is not None], channels=channels or {})
    except Exception:  # a schema LangGraph's walker cannot read: the user's --allow still works
        return saver
    return saver.with_allowlist(allow) if allow else saver


def load_serializer(spec: str | None, cwd: Path | None = None) -> Any:
    """The serializer a repository was written with, for reading it back.

    ``None`` or ``""``: LangGraph's default (``JsonPlusSerializer``). ``aes``:
    ``EncryptedSerializer.from_pycryptodome_aes()``, whose key is read from
    ``$LANGGRAPH_AES_KEY``. ``FILE.py:ATTR`` or ``module.name:ATTR``: a serializer
    (anything with ``dumps_typed``/``loads_typed``), or a function returning one.
    """
    if not spec:
        return None
    if spec == "aes":
        if not os.environ.get("LANGGRAPH_AES_KEY"):
            raise InvalidInputError("--serde aes reads the key from $LANGGRAPH_AES_KEY, which is not set")
        try:
            from langgraph.checkpoint.serde.encrypted import EncryptedSerializer

            return EncryptedSerializer.from_pycryptodome_aes()
        except ImportError as exc:
            raise InvalidInputError(f"--serde aes needs pycryptodome (pip install pycryptodome): {exc}") from None
        except Exception as exc:  # a key of the wrong length
            raise InvalidInputError(f"--serde aes: {type(exc).__name__}: {exc}") from None
    obj = _load_object(spec, cwd or Path.cwd(), "--serde")
    if (isinstance(obj, type) or not hasattr(obj, "loads_typed")) and callable(obj):  # a class or a factory
        try:
            obj = obj()
        except Exception as exc:
            raise InvalidInputError(f"--serde {spec!r}: the factory failed: {type(exc).__name__}: {exc}") from exc
    if not (hasattr(obj, "loads_typed") and hasattr(obj, "dumps_typed")):
        raise InvalidInputError(
            f"--serde {spec!r} is a {type(obj).__name__}, not a serializer (it needs dumps_typed and loads_typed)"
        )
    return obj


def load_embeddings(spec: str) -> Any:
    """An embeddings object from ``provider:model`` (LangChain's init_embeddings)
    or from ``FILE.py:ATTR`` / ``module.name:ATTR`` (an ``Embeddings`` or a function)."""
    target = spec.rpartition(":")[0]
    if target.endswith(".py") or "/" in target or "." in target:
        return _load_object(spec, Path.cwd(), "--embed")
    try:
        from langchain.embeddings import init_embeddings  # noqa: F401
    except ImportError:
        raise InvalidInputError(
            f"--embed {spec} needs LangChain's init_embeddings: pip install langchain langchain-{target or 'openai'}"
        ) from None
    return spec


# -- verify ---------------------------------------------------------------------------


def reading_serde(serde: Any, allow: Any, repo: Any) -> tuple[Any, bool]:
    """The serializer to read ``repo`` with: ``serde`` (None: LangGraph's) made
    strict (trust.py), allowing ``allow`` and the repository's ``gitckpt.allow``;
    and whether it could be made strict (a serializer of the user's own cannot)."""
    from .trust import make_strict, normalize, repo_allowlist

    return make_strict(serde, normalize(allow) | repo_allowlist(repo))


def verify(
    repo_path: str | os.PathLike, progress: Progress | None = None, serde: Any = None, allow: Any = ()
) -> list[str]:
    """Check a repository: every checkpoint and pending write of every thread
    decodes (with ``serde``, the serializer it was written with; default
    LangGraph's, made strict: only safe types and ``allow`` and the repository's
    ``gitckpt.allow`` are constructed), every history is intact, every store item
    decodes, and ``git fsck`` finds every object. Returns the problems found (empty: all good).
    """
    from .checkpoint.saver import GitSaver
    from .git.repo import GitRepo

    problems: list[str] = []
    repo = GitRepo(repo_path, create=False, auto_pack=False)
    saver = GitSaver(repo, serde=reading_serde(serde, allow, repo)[0])
    try:
        threads = saver.threads()
        histories: dict[str, ThreadHistory] = {}
        for tid in threads:
            try:
                histories[tid] = thread_history(saver.indexes, tid, fresh=True)
            except GitckptError as exc:
                problems.append(str(exc))
        store_items = _store_items(saver.repo, problems)
        total = sum(len(h.rows) for h in histories.values()) + len(store_items) + 1
        done = 0
        for tid, hist in histories.items():
            for (ns, cid), row in sorted(hist.rows.items()):
                where = f"thread {tid!r}" + (f" namespace {ns!r}" if ns else "") + f" checkpoint {cid}"
                if progress:
                    progress(done, total, f"thread {tid}")
                done += 1
                try:
                    tup = saver.get_tuple(
                        {"configurable": {"thread_id": tid, "checkpoint_ns": ns, "checkpoint_id": cid}}
                    )
                except GitckptError as exc:
                    # in the words of the warning list() logs when it leaves it out (format.md 17.5)
                    text, own = str(exc), f"thread {tid!r} checkpoint {cid}"
                    problems.append(where + text[len(own) :] if text.startswith(own) else f"{where}: {text}")
                    continue
                except Exception as exc:  # a serializer failing in an unexpected way
                    problems.append(f"{where}: cannot decode ({type(exc).__name__}: {exc})")
                    continue
                if tup is None:
                    problems.append(f"{where}: in the history but not readable through GitSaver")
                    continue
                if tup.checkpoint.get("id") != cid:
                    problems.append(f"{where}: the stored checkpoint says its id is {tup.checkpoint.get('id')!r}")
                parent = row.parent_checkpoint_id
                if parent is not None:
                    prow = hist.rows.get((ns, parent))
                    if prow is None:
                        if not row.root:
                            problems.append(f"{where}: its parent checkpoint {parent} is missing")
                    elif not saver.repo.descendant_of(Oid(hex=row.commit), Oid(hex=prow.commit)):
                        problems.append(
                            f"{where}: its commit {row.commit[:10]} does not descend from its parent's "
                            f"commit {prow.commit[:10]}"
                        )
            for ns, cid in hist.writes:
                if (ns, cid) not in hist.rows:
                    problems.append(f"thread {tid!r}: pending writes for checkpoint {cid}, which does not exist")
        for path, oid in store_items:
            if progress:
                progress(done, total, "store")
            done += 1
            try:
                from .store.format import decode_item_blob

                decode_item_blob(saver.repo.read_blob(oid, f"store item {path}"))
            except GitckptError as exc:
                problems.append(f"store item {path}: {exc}")
        if progress:
            progress(done, total, "git fsck")
        problems.extend(_fsck(saver.repo.path))
        if progress:
            progress(total, total, "done")
    finally:
        saver.close()
        repo.close()
    return problems


def _store_items(repo: Any, problems: list[str]) -> list[tuple[str, Oid]]:
    from .git.repo import TREE
    from .store.format import STORE_REF, is_item_path

    tip = repo.ref(STORE_REF)
    if tip is None:
        return []
    out: list[tuple[str, Oid]] = []
    try:
        stack = [("", repo.get(tip, "store branch").tree_id)]
        while stack:
            prefix, oid = stack.pop()
            for e in repo.get(oid, f"store tree {prefix or '/'}"):
                path = prefix + e.name
                if e.filemode == TREE:
                    stack.append((path + "/", e.id))
                elif is_item_path(path):
                    out.append((path, e.id))
    except GitckptError as exc:
        problems.append(f"store: {exc}")
    return out


def _fsck(path: Path) -> list[str]:
    git = shutil.which("git")
    if git is None:
        return []
    proc = subprocess.run(
        [git, "--git-dir", str(path), "fsck", "--no-dangling", "--no-progress", "--connectivity-only"],
        capture_output=True,
        text=True,
    )
    if proc.returncode == 0:
        return []
    lines = [ln.strip() for ln in (proc.stdout + proc.stderr).splitlines() if ln.strip()]
    return [f"git fsck: {ln}" for ln in lines[:20]] or [f"git fsck exited with status {proc.returncode}"]


# -- gc -------------------------------------------------------------------------------

#: Unreachable objects younger than this survive gc (git's own default for
#: ``gc.pruneExpire``, which a repository's config overrides): another process
#: may have written them and not yet pointed a ref at them (format.md 17.4).
GRACE = "2.weeks.ago"


def gc(repo_path: str | os.PathLike, progress: Progress | None = None, prune_now: bool = False) -> dict[str, Any]:
    """Pack and compact the repository; safe while other processes write to it
    (``prune_now=False``). format.md 17.4.

    Runs ``git pack-refs --all``, then ``git repack -d --cruft
    --cruft-expiration=EXPIRE``: everything reachable goes into one pack, the
    unreachable objects younger than EXPIRE (``gc.pruneExpire``, git's default
    two weeks) into one *cruft* pack, instead of thousands of loose files, and
    older ones are deleted; then ``git prune --expire=EXPIRE`` of loose ones.
    ``prune_now`` makes EXPIRE ``now``: the space of deleted and pruned history
    is freed at once, which is safe only while no other process writes to the
    repository.

    With more than ``PACK_GOAL`` (64) packs, the packs without deltas
    (gitckpt's own, one per update) are first merged a few thousand at a time
    by copying their entries (``maintenance.merge_small_packs``): git maps every
    pack it opens, and past ~32,000 packs it fails ("cannot be mapped, check
    sys.vm.max_map_count"). format.md 22.

    Returns sizes as ``du`` reports them (``before``/``after``: bytes allocated
    on disk, as ``du -s``; ``*_apparent``: file sizes, as ``du -s -b``), the
    unreachable bytes kept (``kept``) and when the last of them expires
    (``kept_until``, a Unix time, or None), ``expire``, the ``steps`` run, and
    how many packs were merged by copying into how many (``packs_merged``,
    ``packs_made``).
    """
    from .git.repo import open_repository, prune_expire

    repo = open_repository(repo_path, create=False)
    path = Path(repo.path)
    git = shutil.which("git")
    if git is None:
        raise RepositoryError("gc needs the git executable on PATH")
    expire = "now" if prune_now else prune_expire(repo, GRACE)
    before = disk_usage(path)
    cruft = _git_has_cruft(git)
    repack = (
        ["repack", "-d", "-q", "--cruft", f"--cruft-expiration={expire}"]
        if cruft
        else ["repack", "-d", "-A", "-q", f"--unpack-unreachable={expire}"]
    )
    steps = [
        ("pack refs", ["pack-refs", "--all", "--prune"]),
        ("repack objects", repack),
        ("prune old unreachable objects", ["prune", f"--expire={expire}"]),
        ("remove packed loose objects", ["prune-packed", "-q"]),
    ]
    done = []
    merged = made = 0
    with maintenance_lock(path) as held:
        count = pack_count(path)
        if count > PACK_GOAL:
            # git maps every pack it opens, and thousands of them exhaust
            # vm.max_map_count: gitckpt's own packs (no deltas) are first merged
            # by copying, a few at a time (format.md 22)
            label = f"merge {count} packs"
            if progress:
                progress(0, count, label)
            merged, made = merge_small_packs(path, _progress_of(progress, label))
            done.append("merge small packs")
        for i, (label, args) in enumerate(steps):
            if progress:
                progress(i, len(steps), label)
            # git inherits the flocked lock: killed with us, it still holds it until it ends
            proc = subprocess.run(
                [git, "--git-dir", str(path), *args],
                capture_output=True,
                text=True,
                env={**os.environ, "GIT_DIR": str(path)},
                pass_fds=(held.fd,),
            )
            if proc.returncode != 0:
                err = proc.stderr.strip() or str(proc.returncode)
                raise RepositoryError(f"gc of {path}: git {' '.join(args)} failed: {err}")
            done.append(label)
    if progress:
        progress(len(steps), len(steps), "done")
    after = disk_usage(path)
    kept, until = _unreachable_kept(path, expire)
    return {
        "before": before[0],
        "after": after[0],
        "before_apparent": before[1],
        "after_apparent": after[1],
        "kept": kept,
        "kept_until": until,
        "expire": expire,
        "steps": done,
        "packs_merged": merged,
        "packs_made": made,
    }


def _progress_of(progress: Progress | None, label: str) -> Callable[[int, int], None] | None:
    if progress is None:
        return None
    return lambda done, total: progress(done, total, label)


def _git_has_cruft(git: str) -> bool:
    """Whether this git has cruft packs (``repack --cruft``, git 2.37)."""
    out = subprocess.run([git, "version"], capture_output=True, text=True).stdout
    try:
        major, minor = (int(x) for x in out.split()[2].split(".")[:2])
    except (IndexError, ValueError):
        return False
    return (major, minor) >= (2, 37)


def disk_usage(path: Path) -> tuple[int, int]:
    """``(allocated, apparent)`` bytes of everything under ``path``, as ``du -s``
    and ``du -s -b`` count them: directories included, each inode once."""
    allocated = apparent = 0
    seen: set[tuple[int, int]] = set()
    for root, _, files in os.walk(path):
        for name in [root, *(os.path.join(root, f) for f in files)]:
            with contextlib.suppress(OSError):
                st = os.lstat(name)
                if (st.st_dev, st.st_ino) in seen:
                    continue
                seen.add((st.st_dev, st.st_ino))
                allocated += getattr(st, "st_blocks", 0) * 512 or st.st_size
                apparent += st.st_size
    return allocated, apparent


def _unreachable_kept(path: Path, expire: str) -> tuple[int, int | None]:
    """Bytes on disk of the unreachable objects gc kept (cruft packs, loose
    objects git did not pack), and the Unix time after which a gc deletes the
    last of them (None: nothing kept)."""
    if expire == "now":
        return 0, None
    pack_dir = path / "objects" / "pack"
    kept = 0
    newest = None
    for mtimes in pack_dir.glob("pack-*.mtimes"):
        data = mtimes.read_bytes()
        if data[:4] != b"MTME":
            continue
        n = (len(data) - 12 - 40) // 4  # header, then one 4-byte time per object, then two sha1 trailers
        times = [int.from_bytes(data[12 + 4 * i : 16 + 4 * i], "big") for i in range(max(n, 0))]
        if times:
            newest = max(newest or 0, max(times))
        for ext in (".pack", ".idx", ".mtimes"):
            with contextlib.suppress(OSError):
                kept += os.stat(mtimes.with_suffix(ext)).st_blocks * 512
    for folder in (path / "objects").glob("[0-9a-f][0-9a-f]"):
        for obj in folder.iterdir():
            with contextlib.suppress(OSError):
                st = obj.stat()
                kept += st.st_blocks * 512
                newest = max(newest or 0, int(st.st_mtime))
    if newest is None:
        return kept, None
    return kept, newest + _expire_seconds(expire)


def _expire_seconds(expire: str) -> int:
    """``2.weeks.ago`` and the like as seconds (git's approxidate, for the common forms)."""
    units = {"second": 1, "minute": 60, "hour": 3600, "day": 86400, "week": 604800, "month": 2592000, "year": 31536000}
    parts = expire.replace(".", " ").split()
    try:
        n = int(parts[0])
        unit = parts[1].rstrip("s")
        return n * units[unit]
    except (IndexError, ValueError, KeyError):
        return 14 * 86400


# -- the store's history ------------------------------------------------------------------


def store_history(
    repo: Any, namespace: tuple[str, ...] = (), key: str | None = None, limit: int | None = None
) -> list[dict[str, Any]]:
    """How store items changed, newest first: one entry per change of an item
    under ``namespace`` (and with ``key``): ``commit``, ``time``, ``change``
    (put, delete, refresh ttl, expire), ``namespace``, ``key`` and, for puts,
    the ``value`` written."""
    from .store.format import DELETE, EXPIRE, PUT, REFRESH, STORE_REF, item_path, load_value, parse_changes, unpack_item

    verbs = {PUT: "put", DELETE: "delete", REFRESH: "refresh ttl", EXPIRE: "expire"}
    tip = repo.ref(STORE_REF)
    out: list[dict[str, Any]] = []
    oid = tip
    while oid is not None:
        commit = repo.get(oid, "store commit")
        for kind, ns, k in parse_changes(commit.message):
            if tuple(ns[: len(namespace)]) != tuple(namespace) or (key is not None and k != key):
                continue
            entry: dict[str, Any] = {
                "commit": str(commit.id),
                "time": commit.commit_time,
                "change": verbs[kind],
                "namespace": list(ns),
                "key": k,
                "value": None,
            }
            if kind == PUT:
                obj: Any = commit.tree
                try:
                    for part in item_path(tuple(ns), k):
                        obj = obj[part]
                    entry["value"] = load_value(unpack_item(repo.read_blob(obj.id, "store item"))["value"])
                except (KeyError, GitckptError):
                    entry["value"] = None
            out.append(entry)
            if limit is not None and len(out) >= limit:
                return out
        oid = commit.parent_ids[0] if commit.parent_ids else None
    return out


# -- watching -------------------------------------------------------------------------


class CheckpointFeed:
    """The checkpoints that appeared since the last look, for ``gitckpt watch``.

    Call :meth:`new_checkpoints` when something under ``refs/`` changed: it
    lists the line refs (one directory listing each), walks only the commits
    it has not seen, and returns the new checkpoints oldest first, each with
    its ``thread_id``. Checkpoints that exist when the feed is created are
    not reported.
    """

    def __init__(self, indexes: ThreadIndexes, thread_id: str | None = None) -> None:
        self.indexes = indexes
        self.thread_id = thread_id
        self.seen: set[Oid] = set()
        self.reported: set[tuple[str, str, str]] = set()
        self.new_checkpoints()

    def _refs(self) -> dict[str, Oid]:
        if self.thread_id is not None:
            return self.indexes.thread_refs(self.thread_id)
        return self.indexes.repo.refs(*fmt.LINE_PREFIXES)

    def new_checkpoints(self) -> list[tuple[str, CheckpointRow]]:
        repo = self.indexes.repo
        found: list[tuple[str, CheckpointRow]] = []
        for ref, tip in sorted(self._refs().items()):
            stack = [tip]
            while stack:
                oid = stack.pop()
                if oid in self.seen:
                    continue
                try:
                    commit = repo.get(oid, "commit")
                except CorruptObjectError:
                    continue  # a ref to an object not yet visible: seen next time
                self.seen.add(oid)
                stack.extend(commit.parent_ids)
                meta = fmt.parse_commit(commit.message)
                if not meta.is_checkpoint:
                    continue
                tid = meta.thread_id or names.decode((fmt.parse_line_ref(ref) or ("?",))[0]) or "?"
                ns, cid = meta.ns, meta.checkpoint_id or ""  # is_checkpoint: it has one
                if (tid, ns, cid) in self.reported:
                    continue
                self.reported.add((tid, ns, cid))
                found.append(
                    (
                        tid,
                        CheckpointRow(
                            cid,
                            meta.parent_id,
                            meta.step,
                            meta.source,
                            ns,
                            meta.run_id,
                            commit.id,
                            repo,
                            lines=[ref],
                        ),
                    )
                )
        found.sort(key=lambda item: item[1].checkpoint_id)
        return found
