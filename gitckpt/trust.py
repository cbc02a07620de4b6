"""What gitckpt constructs when it reads values, and the check of what a pull brings in.

A checkpoint's values are LangGraph's msgpack: a LangChain message, a
dataclass or any other object is stored as an *extension* naming a Python
``(module, name)`` and its arguments. LangGraph's serializer, by default
(``LANGGRAPH_STRICT_MSGPACK`` unset), imports and calls whatever a blob names,
with a warning: a blob naming ``subprocess.Popen`` starts a process when it is
read. For a repository pulled from elsewhere that is someone else's code
running on the reader's machine. docs/format.md, section 16, gives the rules;
in short:

* **Reading is strict.** The CLI decodes with :class:`StrictSerializer`: only
  LangGraph's safe types (``SAFE_MSGPACK_TYPES``: messages, datetimes, UUIDs,
  ``Send``, ...) and the types the user allows (``--allow module:Name``, the
  repository's ``gitckpt.allow`` config) are constructed; anything else is
  kept as a :class:`NotConstructed` marker holding its type name and its data.
* **A pull checks before it moves refs.** :func:`scan_new` reads every blob the
  fetched commits add, structurally: extensions are recorded, never decoded into
  objects, and no serializer runs. A value naming a type outside the allowlist
  (or one that cannot be scanned: encrypted without the key, pickled) is
  reported by thread and checkpoint, or store item, and ``gitckpt.sync.pull``
  raises :class:`~gitckpt.errors.UntrustedDataError` unless ``trust=True``.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import re
from collections.abc import Callable, Iterable
from typing import Any

import ormsgpack

from .checkpoint import format as fmt
from .errors import InvalidInputError
from .git import trailers
from .store.format import ITEM_HEADER

#: The repository config key holding allowed types (one ``module:Name`` per value).
CONFIG_KEY = "gitckpt.allow"

# LangGraph's msgpack extension codes (langgraph/checkpoint/serde/jsonplus.py)
EXT_CONSTRUCTOR_SINGLE_ARG = 0
EXT_CONSTRUCTOR_POS_ARGS = 1
EXT_CONSTRUCTOR_KW_ARGS = 2
EXT_METHOD_SINGLE_ARG = 3
EXT_PYDANTIC_V1 = 4
EXT_PYDANTIC_V2 = 5
EXT_NUMPY_ARRAY = 6
EXT_DELTA_SNAPSHOT = 7
_CONSTRUCTORS = (
    EXT_CONSTRUCTOR_SINGLE_ARG,
    EXT_CONSTRUCTOR_POS_ARGS,
    EXT_CONSTRUCTOR_KW_ARGS,
    EXT_PYDANTIC_V1,
    EXT_PYDANTIC_V2,
)
_OPT = ormsgpack.OPT_NON_STR_KEYS

#: The JSON form of a value that was not constructed.
MARK = "__not_constructed__"


def _safe_types() -> frozenset:
    from langgraph.checkpoint.serde._msgpack import SAFE_MSGPACK_TYPES

    return SAFE_MSGPACK_TYPES


def _safe_methods() -> frozenset:
    try:
        from langgraph.checkpoint.serde._msgpack import SAFE_MSGPACK_METHODS
    except ImportError:  # pragma: no cover - older langgraph-checkpoint
        return frozenset({("datetime", "datetime", "fromisoformat")})
    return SAFE_MSGPACK_METHODS


# -- the allowlist --------------------------------------------------------------------

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


def parse_allow(spec: str) -> tuple[str, str]:
    """``(module, name)`` of ``module:Name`` (``pkg.models:State``)."""
    module, sep, name = spec.strip().partition(":")
    if not sep or not _IDENT.match(module) or not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", name):
        raise InvalidInputError(f"cannot allow {spec!r}: write a type as module:Name (e.g. myapp.state:Plan)")
    return module, name


def format_type(key: tuple) -> str:
    return ".".join(str(k) for k in key) if all(isinstance(k, str) for k in key) else repr(key)


def repo_allowlist(repo: Any) -> set[tuple[str, str]]:
    """The types a repository's config allows (``git config --add gitckpt.allow module:Name``)."""
    out = set()
    for v in repo.config_values(CONFIG_KEY):
        try:
            out.add(parse_allow(v))
        except InvalidInputError as exc:
            raise InvalidInputError(f"{CONFIG_KEY} in {repo.path}: {exc}") from None
    return out


def add_to_repo(repo: Any, specs: Iterable[str]) -> list[str]:
    """Add ``module:Name`` types to a repository's ``gitckpt.allow``; the ones that were new."""
    have = repo_allowlist(repo)
    added = []
    for spec in specs:
        key = parse_allow(spec)
        if key in have:
            continue
        repo.config_add(CONFIG_KEY, f"{key[0]}:{key[1]}")
        have.add(key)
        added.append(f"{key[0]}:{key[1]}")
    return added


def remove_from_repo(repo: Any, specs: Iterable[str]) -> list[str]:
    """Remove ``module:Name`` types from a repository's ``gitckpt.allow``; the ones it held."""
    removed = []
    for spec in specs:
        module, name = parse_allow(spec)
        if (module, name) in repo_allowlist(repo):
            repo.config_remove(CONFIG_KEY, f"{module}:{name}")
            removed.append(f"{module}:{name}")
    return removed


def normalize(allowed: Iterable[Any] | None) -> frozenset[tuple[str, ...]]:
    """An allowlist from ``(module, name)`` pairs, classes and ``module:Name`` strings."""
    out: set[tuple[str, ...]] = set()
    for a in allowed or ():
        if isinstance(a, str):
            out.add(parse_allow(a))
        elif isinstance(a, type):
            out.add((a.__module__, a.__name__))
        else:
            out.add(tuple(a))
    return frozenset(out)


# -- decoding strictly ---------------------------------------------------------------------


class NotConstructed:
    """A value whose type is not allowed: its type name and its stored data, as data.

    ``repr`` is ``<not constructed: subprocess.Popen([['touch', 'x']])>``; in
    JSON (``gitckpt ... --json``) it is ``{"__not_constructed__": "subprocess.Popen", "data": ...}``.
    """

    __slots__ = ("module", "name", "data")

    def __init__(self, module: Any, name: Any, data: Any) -> None:
        self.module, self.name, self.data = module, name, data

    @property
    def type_name(self) -> str:
        return format_type((self.module, self.name))

    def __repr__(self) -> str:
        return f"<not constructed: {self.type_name}({self.data!r})>"

    def __eq__(self, other: Any) -> bool:
        return isinstance(other, NotConstructed) and (self.module, self.name, self.data) == (
            other.module,
            other.name,
            other.data,
        )

    def __hash__(self) -> int:
        return hash((NotConstructed, self.type_name))


def make_ext_hook(allowed: Iterable[tuple[str, ...]] = ()) -> Callable[[int, bytes], Any]:
    """An ``ext_hook`` for ``ormsgpack.unpackb`` that builds LangGraph's extension
    values as LangGraph's own hook does, but only for its safe types and
    ``allowed``; any other type becomes a :class:`NotConstructed`, and nested
    values are decoded by the same rule, so a marker inside a message stays a marker."""
    safe = _safe_types() | frozenset(allowed)
    safe_methods = _safe_methods()
    # numpy arrays: LangGraph's hook (frombuffer of a dtype string; no import of a named module)
    from langgraph.checkpoint.serde.jsonplus import _create_msgpack_ext_hook

    lg_hook = _create_msgpack_ext_hook(None)

    def unpack(data: bytes) -> Any:
        return ormsgpack.unpackb(data, ext_hook=hook, option=_OPT)

    def hook(code: int, data: bytes) -> Any:
        if code == EXT_DELTA_SNAPSHOT:
            from langgraph.checkpoint.serde.types import _DeltaSnapshot

            return _DeltaSnapshot(unpack(data))
        if code == EXT_NUMPY_ARRAY:
            return lg_hook(code, data)
        if code not in _CONSTRUCTORS and code != EXT_METHOD_SINGLE_ARG:
            return None  # as LangGraph: an unknown extension is None
        try:
            tup = unpack(data)
            module, name, arg = tup[0], tup[1], tup[2]
        except Exception:
            return None  # LangGraph's fallback for a payload it cannot read
        if code == EXT_METHOD_SINGLE_ARG:
            try:
                method = tup[3]
                ok = (module, name, method) in safe_methods
            except Exception:
                method, ok = None, False
            if not ok:
                return NotConstructed(module, f"{name}.{method}", arg)
        else:
            try:
                ok = (module, name) in safe
            except TypeError:  # unhashable parts
                ok = False
            if not ok:
                return NotConstructed(module, name, arg)
        try:
            cls = getattr(importlib.import_module(module), name)
            if code == EXT_CONSTRUCTOR_SINGLE_ARG:
                return cls(arg)
            if code == EXT_CONSTRUCTOR_POS_ARGS:
                if module == "langgraph.types" and name == "Send":
                    from langgraph.types import Send

                    return Send(arg[0], arg[1]) if len(arg) == 2 else Send(arg[0], arg[1], timeout=arg[2])
                return cls(*arg)
            if code == EXT_CONSTRUCTOR_KW_ARGS:
                return cls(**arg)
            if code == EXT_METHOD_SINGLE_ARG:
                return getattr(cls, method)(arg)
            try:
                return cls(**arg)
            except Exception:
                return cls.construct(**arg) if code == EXT_PYDANTIC_V1 else cls.model_construct(**arg)
        except Exception:
            return arg  # LangGraph's fallback: the stored data

    return hook


def _strict_base():
    from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

    class StrictSerializer(JsonPlusSerializer):
        """LangGraph's ``JsonPlusSerializer`` that constructs only safe and allowed
        types and marks the rest (:class:`NotConstructed`); pickled values are not
        unpickled but marked too. Writes exactly as LangGraph's serializer does."""

        #: its msgpack values decode as LangGraph's do, with its own ext hook: GitSaver may
        #: wrap that hook to decode each message once (format.md 11), strictness kept
        gitckpt_wraps_ext_hook = True

        def __init__(self, allowed: Iterable[Any] = ()) -> None:
            self.allowed = normalize(allowed)
            super().__init__(
                allowed_msgpack_modules=tuple(self.allowed) or None, __unpack_ext_hook__=make_ext_hook(self.allowed)
            )

        def with_msgpack_allowlist(self, extra_allowlist: Iterable[Any]) -> Any:
            merged = self.allowed | normalize(extra_allowlist)
            return self if merged == self.allowed else StrictSerializer(merged)

        def loads_typed(self, data: tuple[str, bytes]) -> Any:
            if data[0] == "pickle":
                return NotConstructed("pickle", "loads", f"<{len(data[1])} bytes, not unpickled>")
            return super().loads_typed(data)

    return StrictSerializer


_strict_cls = None


def strict_serializer(allowed: Iterable[Any] = ()) -> Any:
    """A :class:`StrictSerializer` (built lazily: LangGraph is imported on first use)."""
    global _strict_cls
    if _strict_cls is None:
        _strict_cls = _strict_base()
    return _strict_cls(allowed)


def make_strict(serde: Any, allowed: Iterable[Any] = ()) -> tuple[Any, bool]:
    """``(serializer, strict)``: ``serde`` (None: LangGraph's default) made strict.

    LangGraph's ``JsonPlusSerializer`` is replaced by a :class:`StrictSerializer`
    (it writes identically), an ``EncryptedSerializer`` keeps its cipher around a
    strict inner serializer. Any other serializer is the user's own code and is
    returned as it is, with ``strict`` False (the caller says so).
    """
    from langgraph.checkpoint.serde.encrypted import EncryptedSerializer
    from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

    allowed = normalize(allowed)
    if _strict_cls is not None and isinstance(serde, _strict_cls):
        return serde.with_msgpack_allowlist(allowed), True
    if serde is None or isinstance(serde, JsonPlusSerializer):
        return strict_serializer(allowed), True
    if isinstance(serde, EncryptedSerializer):
        inner, strict = make_strict(serde.serde, allowed)
        return EncryptedSerializer(serde.cipher, inner), strict
    return serde, False


def jsonable_marker(value: NotConstructed, jsonable: Callable[[Any], Any]) -> dict[str, Any]:
    return {MARK: value.type_name, "data": jsonable(value.data)}


def marker_text(data: Any) -> Any:
    """``data`` (JSON) with every not-constructed marker as ``<not constructed: T(...)>`` text."""
    if isinstance(data, dict):
        if MARK in data and set(data) <= {MARK, "data"}:
            inner = json.dumps(data.get("data"), ensure_ascii=False, default=str)
            return f"<not constructed: {data[MARK]}({inner})>"
        return {k: marker_text(v) for k, v in data.items()}
    if isinstance(data, list):
        return [marker_text(v) for v in data]
    return data


# -- scanning without decoding -------------------------------------------------------------


def scan_msgpack(payload: bytes, allowed: frozenset = frozenset()) -> list[str]:
    """The types a msgpack value names that are outside LangGraph's safe types and
    ``allowed``, found without constructing anything: the same parser LangGraph
    uses (ormsgpack) with a hook that only records ``(module, name)`` and reads
    nested payloads the same way. A value that does not parse names nothing
    (LangGraph could not decode it either)."""
    safe = _safe_types() | allowed
    safe_methods = _safe_methods()
    found: list[str] = []

    def hook(code: int, data: bytes) -> None:
        if code not in _CONSTRUCTORS and code not in (EXT_METHOD_SINGLE_ARG, EXT_DELTA_SNAPSHOT):
            return None
        try:
            tup = ormsgpack.unpackb(data, ext_hook=hook, option=_OPT)
        except Exception:
            return None  # LangGraph's hook fails on it too, and constructs nothing
        if code == EXT_DELTA_SNAPSHOT:
            return None
        try:
            key = (tup[0], tup[1]) if code != EXT_METHOD_SINGLE_ARG else (tup[0], tup[1], tup[3])
        except Exception:
            return None  # no (module, name): LangGraph's hook falls back to data
        try:
            ok = key in (safe_methods if code == EXT_METHOD_SINGLE_ARG else safe)
        except TypeError:
            ok = False
        if not ok:
            found.append(format_type(key))
        return None

    try:
        ormsgpack.unpackb(payload, ext_hook=hook, option=_OPT)
    except Exception:
        pass
    return found


def _scan_json(payload: bytes, allowed: frozenset) -> list[str]:
    """lc:2 constructors (LangGraph's "json" values) outside the safe types and ``allowed``."""
    safe = _safe_types() | allowed
    found: list[str] = []

    def hook(d: dict) -> dict:
        if d.get("lc") == 2 and d.get("type") == "constructor" and isinstance(d.get("id"), list):
            ident = d["id"]
            key = (".".join(map(str, ident[:-1])), str(ident[-1])) if ident else ("", "")
            if key not in safe:
                found.append(format_type(key))
        return d

    try:
        json.loads(payload, object_hook=hook)
    except Exception:
        pass
    return found


_ENCRYPTED = re.compile(r"^(msgpack|json|pickle|bytes|bytearray|null)\+[A-Za-z0-9_.-]+$")


def scan_typed(kind: str, payload: bytes, allowed: frozenset, cipher: Any = None) -> list[str]:
    """What a ``(type, bytes)`` pair of ``serde.dumps_typed`` names that is not allowed."""
    if kind == "msgpack":
        return scan_msgpack(payload, allowed)
    if kind == "json":
        return _scan_json(payload, allowed)
    if kind == "pickle":
        return ["pickle (not scanned: unpickling runs code)"]
    if _ENCRYPTED.match(kind):
        if cipher is None:
            return [f"encrypted {kind} (not scanned: no key given)"]
        inner, ciphername = kind.split("+", 1)
        try:
            plain = cipher.decrypt(ciphername, payload)
        except Exception as exc:
            return [f"encrypted {kind} (not scanned: it does not decrypt with the key given: {type(exc).__name__})"]
        return scan_typed(inner, plain, allowed, cipher)
    return []


def scan_blob(data: bytes, allowed: frozenset = frozenset(), cipher: Any = None) -> list[str]:
    """What any blob gitckpt writes (value, pending write, store item; an unknown
    kind is read as msgpack after its header line) names that is not allowed."""
    head, sep, body = data.partition(b"\n")
    if head == fmt.WRITE_HEADER:
        try:
            *_, (kind, payload) = fmt.unpack_write(data)
        except Exception:
            return scan_msgpack(body, allowed)
        return scan_msgpack(body, allowed) + scan_typed(kind, payload, allowed, cipher)
    if head == fmt.CALL_HEADER:  # a recorded call: its answer (and any value in it) is [type, payload]
        try:
            record = fmt.unpack_call(data)
        except Exception:
            return scan_msgpack(body, allowed)
        return scan_msgpack(body, allowed) + _scan_typed_values(record, allowed, cipher)
    if head == ITEM_HEADER:
        found = scan_msgpack(body, allowed)
        try:
            value = ormsgpack.unpackb(body, option=_OPT, ext_hook=lambda c, d: None).get("value")
        except Exception:
            value = None
        if isinstance(value, bytes):
            found += scan_msgpack(value, allowed)
        return found
    if not sep:
        return []
    try:
        kind = head.decode("ascii")
    except UnicodeDecodeError:
        return []
    if kind in ("msgpack", "json", "pickle", "null", "bytes", "bytearray") or _ENCRYPTED.match(kind):
        return scan_typed(kind, body, allowed, cipher)
    return scan_msgpack(body, allowed)  # a kind this version does not know: scan it as msgpack


def _scan_typed_values(obj: Any, allowed: frozenset, cipher: Any) -> list[str]:
    """Every ``[type, payload]`` pair (a value serialized by the saver's serde) inside a
    decoded structure, scanned as such: the payload is bytes, which msgpack scanning of
    the structure around it does not look into."""
    if isinstance(obj, dict):
        return [f for v in obj.values() for f in _scan_typed_values(v, allowed, cipher)]
    if isinstance(obj, (list, tuple)):
        if len(obj) == 2 and isinstance(obj[0], str) and isinstance(obj[1], (bytes, bytearray)):
            return scan_typed(obj[0], bytes(obj[1]), allowed, cipher)
        return [f for v in obj for f in _scan_typed_values(v, allowed, cipher)]
    return []


@dataclasses.dataclass
class Finding:
    """One fetched blob that names types outside the allowlist (or cannot be scanned)."""

    what: str  # "checkpoint" | "pending write" | "store item" | "blob"
    thread_id: str | None
    checkpoint_ns: str | None
    checkpoint_id: str | None
    path: str  # the blob's path in its commit's tree
    blob: str
    commit: str
    types: list[str]
    item: str | None = None  # a store item's namespace/key

    def where(self) -> str:
        if self.what == "store item":
            return f"store item {self.item or self.path}"
        if self.thread_id is None:
            return f"{self.path} (commit {self.commit[:12]})"
        ns = f" namespace {self.checkpoint_ns!r}" if self.checkpoint_ns else ""
        cp = f" checkpoint {self.checkpoint_id}" if self.checkpoint_id else ""
        return f"thread {self.thread_id!r}{ns}{cp} {self.what} {self.path}"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class ScanReport:
    """What :func:`scan_new` found in the commits a fetch brought."""

    commits: int = 0
    blobs: int = 0
    findings: list[Finding] = dataclasses.field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings

    def types(self) -> list[str]:
        return sorted({t for f in self.findings for t in f.types})

    def lines(self, limit: int = 20) -> list[str]:
        out = [f"{f.where()}: {', '.join(f.types)}" for f in self.findings[:limit]]
        if len(self.findings) > limit:
            out.append(f"... and {len(self.findings) - limit} more")
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "commits": self.commits,
            "blobs": self.blobs,
            "types": self.types(),
            "findings": [f.to_dict() for f in self.findings],
        }


def _what(path: str, kind: str | None) -> str:
    if fmt.is_call_entry(path.rpartition("/")[2]):
        return "recorded call"
    if path.startswith("writes/") or "/writes/" in path or kind == "writes":
        return "pending write"
    return "checkpoint" if kind in ("checkpoint", None) else kind


def scan_new(
    repo: Any, tips: Iterable[Any], known: Iterable[Any], allowed: frozenset = frozenset(), cipher: Any = None
) -> ScanReport:
    """Scan every blob the commits reachable from ``tips`` and not from ``known``
    add (each commit against its first parent: a blob it inherits unchanged was
    scanned with the commit that added it, or is already known). Nothing is decoded
    into an object."""
    report = ScanReport()
    seen: set = set()
    for commit in repo.walk_new_many(tips, known):
        report.commits += 1
        parents = commit.parent_ids
        parent_tree = repo.commit_info(parents[0]).tree_id if parents else None
        t = trailers.parse_trailers(commit.message)
        kind = t.get(fmt.KIND)
        for path, _old, new in sorted(repo.diff_trees(parent_tree, commit.tree_id), key=lambda d: d[0]):
            if new is None or new in seen:
                continue
            seen.add(new)
            data = repo.read_blob(new, f"fetched blob {path}")
            report.blobs += 1
            found = list(dict.fromkeys(scan_blob(data, allowed, cipher)))  # each type once
            if not found:
                continue
            if kind == "store" or data.startswith(ITEM_HEADER + b"\n"):
                item = None
                try:
                    from .store.format import unpack_item

                    body = unpack_item(data)
                    item = "/".join(body["namespace"]) + f" key {body['key']!r}"
                except Exception:
                    pass
                report.findings.append(
                    Finding("store item", None, None, None, path, str(new), str(commit.id), found, item)
                )
                continue
            thread = t.get(fmt.THREAD)
            cid = t.get(fmt.CHECKPOINT) or t.get(fmt.WRITES_FOR)
            report.findings.append(
                Finding(
                    _what(path, kind),
                    thread,
                    t.get(fmt.NS, "") if thread else None,
                    cid,
                    path,
                    str(new),
                    str(commit.id),
                    found,
                )
            )
    return report


def cipher_of(serde: Any) -> Any:
    """The cipher of an ``EncryptedSerializer`` (to scan encrypted values), else None."""
    return getattr(serde, "cipher", None) if serde is not None and hasattr(serde, "cipher") else None


__all__ = [
    "CONFIG_KEY",
    "MARK",
    "NotConstructed",
    "Finding",
    "ScanReport",
    "make_ext_hook",
    "strict_serializer",
    "make_strict",
    "scan_blob",
    "scan_msgpack",
    "scan_new",
    "parse_allow",
    "repo_allowlist",
    "normalize",
    "add_to_repo",
    "remove_from_repo",
]
