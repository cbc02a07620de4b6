"""Byte formats: blobs and commit messages. Pure functions, no git calls.

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
* ``gitckpt-item\\n<msgpack ...>`` — one store item (see ``store.py``).

Commit messages
---------------
A subject line for people, a blank line, then ``Key: value`` trailers for
code. Trailer values are percent-escaped where they hold ``%``, control
characters or non-ASCII text, so one trailer is always one line.
"""

from __future__ import annotations


import msgpack

from ..git.names import encode_ref_component
from ..git.trailers import KIND  # noqa: F401  (checkpoint | writes | delete | copy | prune | fork)

WRITE_HEADER = b"gitckpt-write"

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
