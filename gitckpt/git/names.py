"""Names: how thread ids, namespaces and keys become ref names and tree entries.

Pure functions, no I/O. Two escaping schemes share one rule, percent-encoding
of UTF-8 bytes, and differ only in what they leave readable:

* ref components (``refs/heads/threads/<T>``) keep ``[A-Za-z0-9._+=,-]`` and
  escape everything else, so ordinary ids (``1``, ``user-42``, a UUID) stay
  exactly as typed and ``git log threads/<T>`` works;
* tree entry names keep every printable character except ``/`` and ``%``
  (so ``branch:to:node`` stays readable in ``git ls-tree``).

Both escape what git refuses or ``git fsck --strict`` flags: a leading ``.``,
a trailing ``.`` or ``.lock``. A component whose escaped form would be longer
than :data:`MAX_COMPONENT` bytes is shortened and suffixed with ``%h`` and a
SHA-1 of the original; such a name does not decode, and the original is read
from the commit trailers instead (``Thread-Id:``).
"""

from __future__ import annotations

import hashlib
import re
import string
from functools import lru_cache

MAX_COMPONENT = 150

_REF_SAFE = frozenset(string.ascii_letters + string.digits + "-_.+=,")
_TREE_UNSAFE = frozenset("/%\\~\x7f") | frozenset(chr(c) for c in range(32))
_HEX = "0123456789ABCDEF"


#: any character that _escape would change, for a fast path (a checkpoint or task
#: id has none: a regex search is 0.2 µs, the per-character loop 4.5 µs)
_REF_NEEDS = re.compile(r"[^A-Za-z0-9\-_.+=,]")
_TREE_NEEDS = re.compile(r"[/%\\~\x00-\x1f\x7f]")


def _escape(value: str, keep) -> str:
    out: list[str] = []
    for ch in value:
        if keep(ch):
            out.append(ch)
        else:
            out.extend("%" + _HEX[b >> 4] + _HEX[b & 15] for b in ch.encode("utf-8"))
    return "".join(out)


def _fix_edges(enc: str) -> str:
    while ".." in enc:  # git refuses ".." anywhere in a ref name
        enc = enc.replace("..", ".%2E")
    if enc.startswith("."):
        enc = "%2E" + enc[1:]
    if enc.endswith("."):
        enc = enc[:-1] + "%2E"
    if enc.endswith(".lock"):
        enc = enc[: -len(".lock")] + "%2Elock"
    return enc


def _shorten(value: str, enc: str) -> str:
    if len(enc.encode()) <= MAX_COMPONENT:
        return enc
    cut = 100
    # never cut inside an escape sequence
    while "%" in enc[max(0, cut - 2) : cut]:
        cut -= 1
    digest = hashlib.sha1(value.encode("utf-8")).hexdigest()
    return _fix_edges(enc[:cut]) + "%h" + digest


@lru_cache(maxsize=65536)
def encode_ref_component(value: str) -> str:
    """Encode ``value`` as one ref-name component (no ``/``, valid for git)."""
    if value == "":
        return "%e"
    enc = _fix_edges(_escape(value, _REF_SAFE.__contains__) if _REF_NEEDS.search(value) else value)
    return _shorten(value, enc)


@lru_cache(maxsize=65536)
def encode_tree_name(value: str) -> str:
    """Encode ``value`` as a tree entry name that ``git fsck --strict`` accepts."""
    if value == "":
        return "%e"
    enc = _fix_edges(_escape(value, lambda ch: ch not in _TREE_UNSAFE) if _TREE_NEEDS.search(value) else value)
    if enc.lower() in ("git~1",):  # NTFS short name of .git, flagged by fsck
        enc = "%67" + enc[1:]
    return _shorten(value, enc)


def decode(name: str) -> str | None:
    """Invert either encoding; ``None`` for a shortened (hashed) name."""
    if name == "%e":
        return ""
    if "%h" in name:
        return None
    if "%" not in name:
        return name
    raw = bytearray()
    i = 0
    while i < len(name):
        ch = name[i]
        if ch == "%":
            raw.append(int(name[i + 1 : i + 3], 16))
            i += 3
        else:
            raw.extend(ch.encode("utf-8"))
            i += 1
    return raw.decode("utf-8")
