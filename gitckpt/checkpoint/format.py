"""The checkpointer's commit format: blobs, trees, commit messages and refs.

Every reader and writer of a checkpoint commit goes through this module, so
the rules cannot drift apart. Pure functions, no git calls, no LangGraph.

Blobs
-----
Every blob gitckpt writes starts with one header line naming its format, so
that ``git cat-file -p`` and the textconv diff driver can decode any blob on
its own, without knowing where it sits in a tree:

* ``<type>\\n<payload>`` — a value serialized by the saver's ``serde``
  (``dumps_typed`` gives ``(type, payload)``; ``type`` is e.g. ``msgpack``,
  ``json``, ``null``, ``bytes`` or ``msgpack+aes`` for encrypted values);
* ``gitckpt-write\\n<msgpack [task_id, idx, channel, task_path, type, payload]>`` — one
  pending write;
* store items have their own format (``gitckpt/store/format.py``).

Commit messages
---------------
A subject line for people, a blank line, then ``Key: value`` trailers for
code (syntax: ``gitckpt/git/trailers.py``). :class:`Kind` names the commit
kinds; :func:`parse_commit` is the one parser of their trailers and the
``*_message`` functions the one place each kind's trailers are written.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

import msgpack

from ..errors import CorruptObjectError
from ..git.names import encode_ref_component
from ..git.trailers import KIND, build_message, parse_trailers

WRITE_HEADER = b"gitckpt-write"
CALL_HEADER = b"gitckpt-call"
#: A recorded call's entry in ``writes/<checkpoint>/``: ``<task>.call<NN>`` (docs/format.md, 18).
CALL_MARK = ".call"

# Trailer keys (the contract between the commit messages and the code).
THREAD = "Thread-Id"
NS = "Checkpoint-Ns"
CHECKPOINT = "Checkpoint-Id"
PARENT = "Parent-Checkpoint-Id"
WRITES_FOR = "Writes-For"
WRITES_TREE = "Writes-Tree"  # the writes/<checkpoint> subtree of a writes commit
STEP = "Step"
SOURCE = "Source"
RUN = "Run-Id"
TASK = "Task-Id"
DELETED = "Deleted-Checkpoint"


class Kind(str, enum.Enum):
    """The value of a commit's ``Gitckpt:`` trailer, on a thread's lines."""

    CHECKPOINT = "checkpoint"  # one checkpoint (its tree: checkpoint, metadata, channels/)
    WRITES = "writes"  # pending writes of one checkpoint, added under writes/<id>/
    DELETE = "delete"  # delete_for_runs: the checkpoints it names are gone
    COPY = "copy"  # copy_thread: the first commit of the copy's lines
    FORK = "fork"  # fork / a shared line's marker with no writes to carry


@dataclass(frozen=True)
class CommitMeta:
    """What a commit's trailers say, parsed once by :func:`parse_commit`.

    ``problem`` is None for a well-formed commit, else what is wrong with it
    (a checkpoint without its id, a ``Step:`` that is not a number, a writes
    commit without ``Writes-For``/``Writes-Tree``). Readers that build an index
    refuse such a commit; readers that only show commits skip it.
    """

    kind: Kind | None
    thread_id: str | None
    ns: str
    checkpoint_id: str | None = None
    parent_id: str | None = None
    step: int | None = None
    source: str | None = None
    run_id: str | None = None
    task_id: str | None = None
    writes_for: str | None = None
    writes_tree: str | None = None
    deleted: tuple[tuple[str, str], ...] = ()
    problem: str | None = None

    @property
    def is_checkpoint(self) -> bool:
        return self.kind is Kind.CHECKPOINT and self.problem is None


def parse_commit(message: str) -> CommitMeta:
    """The trailers of a commit message on a thread's line (never raises)."""
    t = parse_trailers(message)
    raw_kind = t.get(KIND)
    try:
        kind: Kind | None = Kind(raw_kind) if raw_kind is not None else None
    except ValueError:
        kind = None
    problem = None
    step_text = t.get(STEP)
    step = None
    if step_text not in (None, ""):
        try:
            step = int(step_text)
        except ValueError:
            problem = f"has a bad Step trailer {step_text!r}"
    cid = t.get(CHECKPOINT)
    if kind is Kind.CHECKPOINT and not cid:
        problem = "has no Checkpoint-Id trailer"
    elif kind is Kind.WRITES and not (t.get(WRITES_FOR) and _is_hex_id(t.get(WRITES_TREE))):
        problem = "is a writes commit with a missing or bad Writes-For / Writes-Tree trailer"
    deleted = tuple(
        (d_ns, d_cid) for d_ns, _, d_cid in (item.rpartition(" ") for item in t.get(DELETED, "").split("\n") if item)
    )
    return CommitMeta(
        kind=kind,
        thread_id=t.get(THREAD),
        ns=t.get(NS, ""),
        checkpoint_id=cid,
        parent_id=t.get(PARENT),
        step=step,
        source=t.get(SOURCE),
        run_id=t.get(RUN),
        task_id=t.get(TASK),
        writes_for=t.get(WRITES_FOR),
        writes_tree=t.get(WRITES_TREE),
        deleted=deleted,
        problem=problem,
    )


def _is_hex_id(text: str | None) -> bool:
    return text is not None and len(text) == 40 and all(c in "0123456789abcdef" for c in text)


def checkpoint_message(
    subject: str,
    *,
    thread_id: str,
    ns: str,
    checkpoint_id: str,
    parent_id: str | None,
    step: Any,
    source: Any,
    run_id: Any,
) -> str:
    return build_message(
        subject,
        [
            (KIND, Kind.CHECKPOINT.value),
            (THREAD, thread_id),
            (NS, ns or None),
            (CHECKPOINT, checkpoint_id),
            (PARENT, parent_id),
            (STEP, step),
            (SOURCE, source),
            (RUN, run_id),
        ],
    )


def writes_message(
    subject: str, *, thread_id: str, ns: str, writes_for: str, writes_tree: Any, task_id: str | None = None
) -> str:
    return build_message(
        subject,
        [
            (KIND, Kind.WRITES.value),
            (THREAD, thread_id),
            (NS, ns or None),
            (WRITES_FOR, writes_for),
            (WRITES_TREE, writes_tree),
            (TASK, task_id),
        ],
    )


def delete_message(subject: str, *, thread_id: str, deleted: list[tuple[str, str]]) -> str:
    return build_message(
        subject, [(KIND, Kind.DELETE.value), (THREAD, thread_id)] + [(DELETED, f"{ns} {cid}") for ns, cid in deleted]
    )


def marker_message(kind: Kind, subject: str, *, thread_id: str, ns: str = "") -> str:
    """A commit that only marks where a line starts (``copy``, ``fork``)."""
    return build_message(subject, [(KIND, kind.value), (THREAD, thread_id), (NS, ns or None)])


def pack_value(typed: tuple[str, bytes]) -> bytes:
    kind, payload = typed
    return kind.encode() + b"\n" + payload


def unpack_value(data: bytes) -> tuple[str, bytes]:
    head, sep, payload = data.partition(b"\n")
    if not sep:
        raise ValueError("blob has no header line")
    return head.decode(), payload


def pack_write(task_id: str, idx: int, channel: str, task_path: str, typed: tuple[str, bytes]) -> bytes:
    body = msgpack.packb([task_id, idx, channel, task_path, typed[0], typed[1]], use_bin_type=True)
    return WRITE_HEADER + b"\n" + body


def unpack_write(data: bytes) -> tuple[str, int, str, str, tuple[str, bytes]]:
    """``(task_id, idx, channel, task_path, (type, payload))`` of a write blob."""
    head, _, body = data.partition(b"\n")
    if head != WRITE_HEADER:
        raise ValueError("blob is not a pending write")
    task_id, idx, channel, task_path, kind, payload = msgpack.unpackb(body, raw=False)
    return task_id, idx, channel, task_path, (kind, payload)


def pack_call(record: dict) -> bytes:
    """A recorded model or tool call (plain msgpack; serialized values inside as ``[type, payload]``)."""
    return CALL_HEADER + b"\n" + msgpack.packb(record, use_bin_type=True)


def unpack_call(data: bytes) -> dict:
    head, _, body = data.partition(b"\n")
    if head != CALL_HEADER:
        raise ValueError("blob is not a recorded call")
    out = msgpack.unpackb(body, raw=False, strict_map_key=False)
    if not isinstance(out, dict):
        raise ValueError("a recorded call is not a map")
    return out


def read_call_blobs(repo: Any, blobs: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """``(entry name, decoded call)`` of the recorded calls among a checkpoint's
    ``writes/<id>`` blobs, by name. Nothing is constructed: answers stay serialized.
    Raises :class:`CorruptObjectError` for a call blob that cannot be decoded."""
    out = []
    for name, oid in sorted(blobs.items()):
        try:
            data = unpack_call(repo.read_blob(oid, f"recorded call {name}"))
        except CorruptObjectError:
            raise
        except Exception as exc:
            raise CorruptObjectError(f"recorded call {name} (blob {oid}) cannot be decoded ({exc})") from exc
        out.append((name, data))
    return out


def is_call_entry(name: str) -> bool:
    """Whether a ``writes/<checkpoint>/`` entry is a recorded call (not a pending write)."""
    return name.rpartition(".")[2].startswith("call")


def call_entry(task_name: str, n: int) -> str:
    return f"{task_name}{CALL_MARK}{n:02d}"


# -- LangGraph's names, as commit subjects and the CLI show them -----------------

#: The task id LangGraph gives writes that no node made (input, resume values).
NULL_TASK_ID = "00000000-0000-0000-0000-000000000000"


def is_internal_channel(name: str) -> bool:
    """LangGraph's bookkeeping channels (``__start__``, ``branch:to:x``, ...)."""
    return name.startswith(("branch:", "__")) or ":" in name


def writer_of(task_id: str, task_path: str, channels=()) -> str:
    """Who wrote a set of writes: the node of a task path
    (``~__pregel_pull, nodeA``), else what LangGraph's null task stands for (a
    resume value, or an input/update), else the task id."""
    if task_path:
        parts = [p.strip() for p in task_path.split(",")]
        if len(parts) >= 2 and parts[0].endswith("pull"):
            return parts[1]
        if parts[-1]:
            return parts[-1]
    if task_id == NULL_TASK_ID:
        return "input" if channels and "__resume__" not in channels else "resume"
    return task_id


# -- ref layout ---------------------------------------------------------------
#
#   refs/heads/threads/<T>                 root namespace, main line of thread T
#   refs/heads/forks/<T>/<checkpoint-id>   root namespace, every other line
#   refs/heads/subgraphs/<T>/<NS>          subgraph namespace NS, main line
#   refs/heads/subgraphs/<T>/<NS>@<id>     subgraph namespace NS, other lines
#   refs/heads/store                       the GitStore history (see store.py)

HEADS = "refs/heads/"
#: The folders that hold every line of every thread (main lines, fork lines, subgraph lines).
LINE_PREFIXES = (f"{HEADS}threads/", f"{HEADS}forks/", f"{HEADS}subgraphs/")


def thread_ref(thread_id: str) -> str:
    return f"{HEADS}threads/{encode_ref_component(thread_id)}"


def line_ref(thread_id: str, checkpoint_ns: str, fork_of: str | None) -> str:
    """The ref of a line of history: main line when ``fork_of`` is None."""
    t = encode_ref_component(thread_id)
    if checkpoint_ns == "":
        if fork_of is None:
            return f"{HEADS}threads/{t}"
        return f"{HEADS}forks/{t}/{encode_ref_component(fork_of)}"
    ns = encode_ref_component(checkpoint_ns)  # escapes "@", our separator
    if fork_of is None:
        return f"{HEADS}subgraphs/{t}/{ns}"
    return f"{HEADS}subgraphs/{t}/{ns}@{encode_ref_component(fork_of)}"


def thread_ref_globs(thread_id: str) -> tuple[str, str, str]:
    """(main ref, glob of root forks, glob of subgraph lines) of a thread."""
    return encoded_thread_ref_globs(encode_ref_component(thread_id))


def encoded_thread_ref_globs(t: str) -> tuple[str, str, str]:
    """:func:`thread_ref_globs` of a thread whose ref component is ``t`` (already encoded)."""
    return (f"{HEADS}threads/{t}", f"{HEADS}forks/{t}/*", f"{HEADS}subgraphs/{t}/*")


def parse_line_ref(ref: str) -> tuple[str, str | None] | None:
    """``(encoded thread, kind)`` of a line ref, or None if it is not one."""
    if not ref.startswith(HEADS):
        return None
    rest = ref[len(HEADS) :]
    head, _, tail = rest.partition("/")
    if head == "threads" and tail and "/" not in tail:
        return tail, "main"
    if head in ("forks", "subgraphs"):
        t, _, line = tail.partition("/")
        if t and line and "/" not in line:
            return t, head
    return None
