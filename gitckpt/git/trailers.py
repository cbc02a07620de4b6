"""Commit messages: a subject line for people, then ``Key: value`` trailers for code.

Pure functions, no git calls. Trailer values are percent-escaped where they
hold ``%``, control characters or non-ASCII text, so one trailer is always one
line. Both commit formats (``checkpoint/format.py``, ``store/format.py``) build
and parse their messages here, so the rules cannot drift apart.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, unquote

#: The trailer that names a commit's kind (checkpoint, writes, store, ...), in both formats.
KIND = "Gitckpt"

_SAFE = "".join(chr(c) for c in range(32, 127) if chr(c) != "%")


def esc(value: Any) -> str:
    text = str(value)
    if text.isascii() and text.isprintable() and "%" not in text:  # nothing to escape: 0.2 µs, not 0.9
        return text
    return quote(text, safe=_SAFE)


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
