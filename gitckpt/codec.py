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

from typing import Any
from urllib.parse import quote, unquote

import msgpack

WRITE_HEADER = b"gitckpt-write"
ITEM_HEADER = b"gitckpt-item"

# Trailer keys (the contract between the commit messages and the code).
KIND = "Gitckpt"  # checkpoint | writes | delete | copy | prune | fork | store
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

_SAFE = "".join(chr(c) for c in range(32, 127) if chr(c) != "%")


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


def esc(value: Any) -> str:
    return quote(str(value), safe=_SAFE)


def unesc(value: str) -> str:
    return unquote(value) if "%" in value else value


def build_message(subject: str, trailers: list[tuple[str, Any]], body: str = "") -> str:
    subject = " ".join(subject.split())  # one line, always
    lines = [subject, ""]
    if body:
        lines += [body.rstrip("\n"), ""]
    lines += [f"{k}: {esc(v)}" for k, v in trailers if v is not None]
    return "\n".join(lines) + "\n"


def parse_trailers(message: str) -> dict[str, str]:
    """The trailers of a gitckpt commit message (last paragraph), unescaped.

    A key that occurs more than once (``Deleted-Checkpoint``) keeps every value,
    joined by newlines.
    """
    block = message.rstrip("\n").rpartition("\n\n")[2]
    out: dict[str, str] = {}
    for line in block.split("\n"):
        key, sep, value = line.partition(": ")
        if not sep or " " in key:
            continue
        value = unesc(value)
        out[key] = out[key] + "\n" + value if key in out else value
    return out
