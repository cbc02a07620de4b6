"""GitStore's byte formats and tree layout. Pure functions, light imports.

Kept apart from ``store.py`` so that ``gitckpt.textconv`` (run by ``git log
-p`` once per blob) can decode an item without importing LangGraph or numpy.

Tree layout of the ``refs/heads/store`` branch
----------------------------------------------
::

    <label 1>/<label 2>/.../.items/<h>/<h>/<key>

Each namespace label is a directory (``names.encode_tree_name``). The items
of a namespace live under its ``.items`` directory, fanned out over two levels
of 16 (the first and second hex digits of the SHA-1 of the key's UTF-8 bytes),
one blob per item named by its encoded key. ``.items`` cannot clash with a
label: LangGraph forbids ``.`` in namespace labels (it is its own separator),
so no encoded label contains one. With the fan-out a put rewrites a bucket
(~N/256 entries), two 16-entry trees and one tree per label, never an N-entry
tree; two levels of 16 rather than one of 256 keep the trees a put rewrites
small (every byte of them is hashed, compressed and written on each put).

Item blob
---------
``gitckpt-item\\n`` then one msgpack map::

    {"format": 1, "namespace": [labels], "key": str,
     "value": bin (msgpack of the value map),
     "created_at": ISO-8601, "updated_at": ISO-8601,
     "ttl": minutes | None, "expires_at": ISO-8601 | None,
     "index": None | False | [fields]       # the put's ``index`` argument
     "vectors": [[field, blake2b-128 of the embedded text, float32 bytes], ...]}

The blob names its own namespace and key, so it decodes without its path
(long keys are shortened in tree names), and carries its embeddings, so a
reopened store never re-embeds and an update re-embeds only the fields whose
text changed.
"""

from __future__ import annotations

import hashlib
import json
import sys
from array import array
from datetime import datetime, timedelta, timezone
from typing import Any

import msgpack

from ..errors import CorruptObjectError, InvalidInputError
from ..git import trailers
from ..git.names import decode, encode_tree_name

STORE_REF = "refs/heads/store"
#: The header line of an item blob (``gitckpt-item\n<msgpack ...>``).
ITEM_HEADER = b"gitckpt-item"
ITEMS = ".items"
FORMAT = 1
_HEADER = ITEM_HEADER + b"\n"
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)

# Trailer keys of store commits (``Gitckpt: store``).
PUT = "Store-Put"
DELETE = "Store-Delete"
REFRESH = "Store-Refresh"
EXPIRE = "Store-Expire"
#: When the batch was written (µs since the epoch, the store's clock): the state of
#: the store at a given time is found by it (``gitckpt reproduce``, docs/format.md 18.1).
TIME = "Store-Time"


# -- layout -------------------------------------------------------------------


def bucket(key: str) -> tuple[str, str]:
    h = hashlib.sha1(key.encode("utf-8")).hexdigest()
    return h[0], h[1]


def item_path(namespace: tuple[str, ...], key: str) -> list[str]:
    """Tree path components of an item, root first."""
    return [encode_tree_name(label) for label in namespace] + [ITEMS, *bucket(key), encode_tree_name(key)]


def parse_item_path(path: str) -> tuple[tuple[str, ...], str] | None:
    """``(namespace, key)`` from a tree path; None if it is not an item path or a
    component was shortened (read the blob instead)."""
    parts = path.split("/")
    if len(parts) < 5 or parts[-4] != ITEMS:
        return None
    decoded = [decode(p) for p in parts[:-4]] + [decode(parts[-1])]
    names = [n for n in decoded if n is not None]
    if len(names) != len(decoded):
        return None
    return tuple(names[:-1]), names[-1]


def is_item_path(path: str) -> bool:
    parts = path.rsplit("/", 4)
    return len(parts) == 5 and parts[1] == ITEMS


# -- time ---------------------------------------------------------------------


def us_to_datetime(us: int) -> datetime:
    return EPOCH + timedelta(microseconds=us)


def datetime_to_us(dt: datetime) -> int:
    delta = dt - EPOCH
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds


def iso(us: int | None) -> str | None:
    return None if us is None else us_to_datetime(us).isoformat()


def parse_iso(text: str | None) -> int | None:
    if text is None:
        return None
    dt = datetime.fromisoformat(text)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return datetime_to_us(dt)


# -- values -------------------------------------------------------------------

_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1


def _where(path: list) -> str:
    return "value" + "".join(f"[{p!r}]" for p in path)


def _check(obj: Any, path: list) -> None:
    t = type(obj)
    if t is str or t is bool or t is float or obj is None:
        return
    if t is int:
        if not _INT_MIN <= obj <= _INT_MAX:
            raise InvalidInputError(f"{_where(path)} = {obj} is too large to store (integers must fit in 64 bits)")
        return
    if isinstance(obj, dict):
        for k, v in obj.items():
            if not isinstance(k, str):
                raise InvalidInputError(
                    f"{_where(path)} has a key {k!r} of type {type(k).__name__}; store values are JSON: "
                    "dictionary keys must be strings"
                )
            _check(v, path + [k])
        return
    if isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _check(v, path + [i])
        return
    if isinstance(obj, (int, float)):  # subclasses (IntEnum, numpy scalars are not)
        return
    raise InvalidInputError(
        f"{_where(path)} is a {type(obj).__name__}, which cannot be stored; store values are JSON: "
        "dict (string keys), list, str, int, float, bool or None"
    )


def dump_value(value: Any) -> bytes:
    """msgpack bytes of a store value, or :class:`InvalidInputError` saying what
    part of it is not JSON data."""
    if not isinstance(value, dict):
        raise InvalidInputError(f"a store value must be a dict, not {type(value).__name__}")
    _check(value, [])
    try:
        return msgpack.packb(value, use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as exc:  # pragma: no cover - _check covers these
        raise InvalidInputError(f"value cannot be stored: {exc}") from exc


def load_value(data: bytes) -> dict:
    return msgpack.unpackb(data, raw=False)


def text_digest(text: str) -> bytes:
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()


# -- item blobs ---------------------------------------------------------------


def pack_item(
    namespace: tuple[str, ...],
    key: str,
    vbytes: bytes,
    created_us: int,
    updated_us: int,
    ttl: float | None,
    expires_us: int | None,
    index: Any,
    vectors: list[tuple[str, bytes, bytes]],
) -> bytes:
    body = {
        "format": FORMAT,
        "namespace": list(namespace),
        "key": key,
        "value": vbytes,
        "created_at": iso(created_us),
        "updated_at": iso(updated_us),
        "ttl": ttl,
        "expires_at": iso(expires_us),
        "index": index if index is None or index is False else list(index),
        "vectors": [[p, d, v] for p, d, v in vectors],
    }
    return _HEADER + msgpack.packb(body, use_bin_type=True)


def unpack_item(data: bytes, what: str = "store item") -> dict:
    """The raw map of an item blob (value still as bytes). Never runs code:
    plain msgpack, no extension types."""
    if not data.startswith(_HEADER):
        raise CorruptObjectError(f"{what}: not a gitckpt store item (no {ITEM_HEADER.decode()} header)")
    try:
        body = msgpack.unpackb(data[len(_HEADER) :], raw=False)
        if not isinstance(body, dict) or body.get("format") != FORMAT:
            raise ValueError(f"unknown item format {body.get('format') if isinstance(body, dict) else body!r}")
        body["namespace"] = tuple(body["namespace"])
        return body
    except (ValueError, KeyError, TypeError, msgpack.UnpackException) as exc:
        raise CorruptObjectError(f"{what}: cannot decode the store item ({exc})") from exc


def with_expiry(data: bytes, expires_us: int | None) -> bytes:
    """The same item blob with a new ``expires_at`` (a TTL refresh on read)."""
    body = unpack_item(data)
    body["namespace"] = list(body["namespace"])
    body["expires_at"] = iso(expires_us)
    return _HEADER + msgpack.packb(body, use_bin_type=True)


def decode_item_blob(data: bytes, *, full_vectors: bool = False) -> dict:
    """Decode an item blob into plain data, for people (``git log -p``).

    Returns ``{"namespace": [...], "key", "value", "created_at", "updated_at"}``
    plus, when set, ``"ttl"`` and ``"expires_at"``, ``"index"`` (the put's
    argument) and ``"vectors": [{"field", "dims", "text_digest", "head"}]``:
    each embedding summarized by its first four numbers (a string, so a diff
    shows it on one line), or given whole as
    ``"vector"`` with ``full_vectors=True``. Raises :class:`CorruptObjectError`
    if ``data`` is not an item blob. Imports nothing heavy, and never runs code
    from the data (plain msgpack, no extension types).
    """
    body = unpack_item(data)
    vectors = []
    for field, digest, raw in body.get("vectors") or []:
        vec = array("f")
        vec.frombytes(raw)
        if sys.byteorder != "little":  # pragma: no cover
            vec.byteswap()
        entry: dict[str, Any] = {"field": field, "dims": len(vec), "text_digest": digest.hex()}
        if full_vectors:
            entry["vector"] = vec.tolist()
        else:
            entry["head"] = ", ".join(f"{x:.4g}" for x in vec[:4]) + (", …" if len(vec) > 4 else "")
        vectors.append(entry)
    out = {
        "namespace": list(body["namespace"]),
        "key": body["key"],
        "value": load_value(body["value"]),
        "created_at": body["created_at"],
        "updated_at": body["updated_at"],
    }
    if body.get("ttl") is not None:
        out["ttl"] = body["ttl"]
        out["expires_at"] = body.get("expires_at")
    if body.get("index") is not None:
        out["index"] = body["index"]
    if vectors:
        out["vectors"] = vectors
    return out


# -- commit messages ----------------------------------------------------------

_VERBS = {PUT: "put", DELETE: "delete", REFRESH: "refresh ttl", EXPIRE: "expire"}


def _short(key: str, width: int = 32) -> str:
    key = " ".join(key.split()) or repr(key)
    return key if len(key) <= width else key[: width - 1] + "…"


def commit_message(
    changes: list[tuple[str, tuple[str, ...], str]],
    max_subject: int = 160,
    subject: str | None = None,
    when_us: int | None = None,
) -> str:
    """Subject naming what changed (``put memories/1: a, b; delete memories/2: c``),
    unless one is given, one trailer per change (``Store-Put: ["memories", "1", "a"]``),
    and ``Store-Time`` (µs) when ``when_us`` is given."""
    if subject is None:
        subject = _subject(changes, max_subject)
    pairs: list[tuple[str, Any]] = [(trailers.KIND, "store")]
    pairs += [(kind, json.dumps([*ns, key], ensure_ascii=False)) for kind, ns, key in changes]
    if when_us is not None:
        pairs.append((TIME, str(when_us)))
    return trailers.build_message(subject, pairs)


def commit_time_us(message: str) -> int | None:
    """A store commit's ``Store-Time`` (µs), or None (written before it existed, or a merge)."""
    value = trailers.parse_trailers(message).get(TIME)
    try:
        return int(value.split("\n")[-1]) if value else None
    except ValueError:
        return None


def _subject(changes: list[tuple[str, tuple[str, ...], str]], max_subject: int) -> str:
    groups: dict[tuple[str, tuple[str, ...]], list[str]] = {}
    for kind, ns, key in changes:
        groups.setdefault((kind, ns), []).append(key)
    parts = []
    for (kind, ns), keys in groups.items():
        shown = ", ".join(_short(k) for k in keys[:3])
        if len(keys) > 3:
            shown += f" (+{len(keys) - 3} more)"
        parts.append(f"{_VERBS[kind]} {'/'.join(ns)}: {shown}")
    subject = ""
    for i, part in enumerate(parts):
        candidate = part if not subject else f"{subject}; {part}"
        if len(candidate) > max_subject and subject:
            subject += f"; … ({len(parts) - i} more groups)"
            break
        subject = candidate
    return subject


def parse_changes(message: str) -> list[tuple[str, tuple[str, ...], str]]:
    """The ``(kind, namespace, key)`` changes a store commit's trailers name."""
    found = trailers.parse_trailers(message)
    out = []
    for kind in (PUT, DELETE, REFRESH, EXPIRE):
        for line in found.get(kind, "").split("\n") if kind in found else []:
            parts = json.loads(line)
            out.append((kind, tuple(parts[:-1]), parts[-1]))
    return out
