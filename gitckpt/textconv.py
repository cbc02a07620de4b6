"""Render any gitckpt blob as text, safely: the textconv diff driver.

Every repository gitckpt opens registers this module as git's ``textconv`` for
its blobs (``diff.gitckpt.textconv`` in the config, ``* diff=gitckpt`` in
``info/attributes``), so ``git log -p threads/1``, ``git show`` and
``git diff`` print decoded values instead of "Binary files differ".

Decoding here never imports a module named by the data and never constructs
an object from it: msgpack extension types (LangChain messages, pydantic
models, dataclasses, Send, ...) are shown as ``{"_type": "module.Name", ...}``
from their stored fields. So rendering a repository cloned from elsewhere runs
no code from it. Pickled and encrypted values are shown as placeholders.

Usage (git calls it): ``python -m gitckpt.textconv FILE``.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import ormsgpack

from .checkpoint import format as fmt
from .store.format import ITEM_HEADER, decode_item_blob  # light: no LangGraph import

_OPTS = ormsgpack.OPT_NON_STR_KEYS


def _ext(code: int, data: bytes) -> Any:
    try:
        tup = ormsgpack.unpackb(data, ext_hook=_ext, option=_OPTS)
    except Exception:
        return f"<ext {code}: {len(data)} bytes>"
    if not isinstance(tup, (list, tuple)) or len(tup) < 3:
        return tup
    module, name, args = tup[0], tup[1], tup[2]
    if module == "uuid" and name == "UUID" and isinstance(args, str) and len(args) == 32:
        return f"{args[:8]}-{args[8:12]}-{args[12:16]}-{args[16:20]}-{args[20:]}"
    if module == "datetime" or module == "decimal" or module == "pathlib":
        return args if not isinstance(args, (list, tuple)) else list(args)
    out: dict[str, Any] = {"_type": f"{module}.{name}" if not module.startswith("langchain_core.messages") else name}
    if isinstance(args, dict):
        out.update({k: v for k, v in args.items() if v not in (None, {}, [], "")})
    elif isinstance(args, (list, tuple)):
        out["args"] = list(args)
    else:
        out["value"] = args
    return out


def decode_typed(kind: str, payload: bytes) -> Any:
    """The value of a ``serde.dumps_typed`` pair, decoded without running code."""
    if kind == "msgpack":
        return ormsgpack.unpackb(payload, ext_hook=_ext, option=_OPTS)
    if kind == "json":
        return json.loads(payload)
    if kind == "null":
        return None
    if kind == "bytes":
        return f"<bytes: {len(payload)}>"
    if kind == "bytearray":
        return f"<bytearray: {len(payload)}>"
    if kind == "pickle":
        return f"<pickle: {len(payload)} bytes, not decoded>"
    if "+" in kind:
        return f"<{kind}: {len(payload)} bytes, encrypted>"
    return f"<{kind}: {len(payload)} bytes>"


def render_value(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, default=str, sort_keys=False)


def render_call(call: dict) -> str:
    """A recorded model or tool call (docs/format.md, 18): a header line, then its
    input and answer as JSON; serialized answers decoded as values are."""
    shown = dict(call)
    for key in ("output",):
        typed = shown.get(key)
        if isinstance(typed, (list, tuple)) and len(typed) == 2 and isinstance(typed[0], str):
            shown[key] = decode_typed(typed[0], bytes(typed[1]))
    head = (
        f"# recorded {call.get('kind')} call {call.get('name')!r}: node {call.get('node')}, "
        f"step {call.get('step')}, task {call.get('task')} (call {call.get('n')})"
    )
    return head + "\n" + render_value(shown) + "\n"


def render(data: bytes) -> str:
    """Text for one blob written by gitckpt (or the blob as text if it is not one)."""
    try:
        head = data.split(b"\n", 1)[0]
        if head == fmt.WRITE_HEADER:
            task_id, idx, channel, task_path, (kind, payload) = fmt.unpack_write(data)
            return (
                f"# pending write: channel {channel!r}, task {task_id} (index {idx})"
                + (f", path {task_path}" if task_path else "")
                + "\n"
                + render_value(decode_typed(kind, payload))
                + "\n"
            )
        if head == fmt.CALL_HEADER:
            return render_call(fmt.unpack_call(data))
        if head == ITEM_HEADER:
            return render_value(decode_item_blob(data)) + "\n"
        kind, payload = fmt.unpack_value(data)
        return render_value(decode_typed(kind, payload)) + "\n"
    except Exception:
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            return f"<binary: {len(data)} bytes>\n"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m gitckpt.textconv FILE", file=sys.stderr)
        return 2
    with open(args[0], "rb") as fh:
        data = fh.read()
    sys.stdout.write(render(data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
