"""Decoded values, cached by blob id and handed out as independent copies.

Decoding is most of the cost of a read: a LangChain message takes ~10 µs to
rebuild from msgpack (pydantic validation), and a chat re-reads its whole
message list at the start of every ``invoke``. A blob never changes, so its
decoded value can be kept; but the objects a saver returns belong to the
caller, who may change them. So the cache keeps an immutable template of the
value, and every read gets a new value built from it (~2-3 µs a message
against ~10 µs to decode), never an object another read also got.

Only values made of types this module knows how to rebuild completely are
cached: immutable scalars, ``list``/``dict``/``tuple``/``set``, enum members,
and pydantic models (LangChain messages) whose whole state is their fields.
Anything else (a user's class, a dataclass) is decoded from its bytes at every
read, as before.
"""

from __future__ import annotations

import datetime
import decimal
import enum
import functools
import marshal
import operator
import pickle
import uuid
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel

from ..git.cache import LRU

#: Immutable scalars marshal stores as they are.
_ATOMIC: frozenset[type] = frozenset({str, int, float, bool, type(None), bytes, complex})
#: Immutable scalars kept pickled in a template.
_PICKLED_TYPES: frozenset[type] = frozenset(
    {
        uuid.UUID,
        decimal.Decimal,
        datetime.datetime,
        datetime.date,
        datetime.time,
        datetime.timedelta,
        datetime.timezone,
    }
)

#: Nesting deeper than this is not cached.
_MAX_DEPTH = 32

# A cached value is kept as a *template* that :func:`thaw` rebuilds the value
# from, marshalled into one ``bytes``. A bytes object is not tracked by the
# garbage collector, so a large cache adds nothing to the cost of a collection
# (a cache of live objects made every full collection of the process walk it:
# measured, it doubled the time of a chat's reads), and its size is the memory
# it takes.
#
# A *plain* list or dict (exact types, holding only immutable scalars and plain
# lists and dicts, with scalar keys) is its own template: ``marshal.loads``
# rebuilds it, new, in C, and :func:`thaw` hands it out as it is. That is most
# of a LangChain message's fields, so rebuilding a message is one marshal load
# plus a new object and its ``__dict__`` (2.8x faster than rebuilding every
# list and dict from tagged tuples in Python, measured on a chat's messages).
# Everything else is a tagged tuple:
_LIST, _DICT, _TUPLE, _SET, _FROZENSET, _MODEL, _ENUM, _PICKLED = range(8)

# pydantic model classes and enum classes, by number (a class in a template
# would keep the template tracked)
_classes: list[type] = []
_class_ids: dict[type, int] = {}


class Unsupported(Exception):
    """A value :func:`freeze` cannot turn into a template."""


def _class_id(cls: type) -> int:
    n = _class_ids.get(cls)
    if n is None:
        n = _class_ids[cls] = len(_classes)
        _classes.append(cls)
    return n


@functools.lru_cache(maxsize=1024)
def _plain_model(cls: type) -> bool:
    """A pydantic model whose whole state is __dict__, fields set, extra and private."""
    if getattr(cls, "__copy__", None) is not BaseModel.__copy__:
        return False
    for klass in cls.__mro__:
        if klass is BaseModel:
            return True
        if klass.__dict__.get("__slots__"):
            return False  # slots of its own, which a copy would have to know about
    return False


def freeze(value: Any) -> bytes:
    """The template of ``value``; raises :class:`Unsupported` for what it cannot rebuild completely."""
    return marshal.dumps(_template(value, 0))


def thaw(template: bytes) -> Any:
    """A new value from a template: it shares no mutable object with any other."""
    return _build(marshal.loads(template))


def _template(value: Any, depth: int) -> Any:
    t = type(value)
    if t in _ATOMIC:
        return value
    if depth > _MAX_DEPTH:
        raise Unsupported("too deep")
    d = depth + 1
    if t is list:
        items = [x if type(x) in _ATOMIC else _template(x, d) for x in value]
        if all(map(operator.is_, items, value)):
            return value  # plain: its own template
        return (_LIST, tuple(items))
    if t is dict:
        flat: list[Any] = []
        plain = True
        for k, x in value.items():
            kt = k if type(k) in _ATOMIC else _template(k, d)
            xt = x if type(x) in _ATOMIC else _template(x, d)
            plain = plain and kt is k and xt is x
            flat.append(kt)
            flat.append(xt)
        return value if plain else (_DICT, tuple(flat))
    if t is tuple:
        return (_TUPLE, tuple([_template(x, d) for x in value]))
    if t is set or t is frozenset:
        return (_SET if t is set else _FROZENSET, tuple([_template(x, d) for x in value]))
    if t in _PICKLED_TYPES:
        return (_PICKLED, pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL))
    if isinstance(value, enum.Enum):
        return (_ENUM, _class_id(t), value.name)
    if isinstance(value, BaseModel) and _plain_model(t):  # type: ignore[arg-type]  # a class is hashable
        extra, private = value.__pydantic_extra__, value.__pydantic_private__
        if extra is not None and type(extra) is not dict or private is not None and type(private) is not dict:
            raise Unsupported(t.__name__)
        return (
            _MODEL,
            _class_id(t),
            _template(value.__dict__, d),
            tuple(value.__pydantic_fields_set__),
            None if extra is None else _template(extra, d),
            None if private is None else _template(private, d),
        )
    raise Unsupported(t.__name__)


_new_object = object.__new__
_setattr = object.__setattr__


def _build(template: Any) -> Any:
    if type(template) is not tuple:
        return template
    tag = template[0]
    if tag == _DICT:
        flat = template[1]
        if not flat:
            return {}
        it = iter(flat)
        return {(_build(k) if type(k) is tuple else k): (_build(x) if type(x) is tuple else x) for k, x in zip(it, it)}
    if tag == _LIST:
        items = template[1]
        return [_build(x) if type(x) is tuple else x for x in items] if items else []
    if tag == _MODEL:
        _, cid, fields, fields_set, extra, private = template
        new: Any = _new_object(_classes[cid])
        _setattr(new, "__dict__", _build(fields) if type(fields) is tuple else fields)
        _setattr(new, "__pydantic_fields_set__", set(fields_set))
        _setattr(new, "__pydantic_extra__", None if extra is None else _build(extra))
        _setattr(new, "__pydantic_private__", None if private is None else _build(private))
        return new
    if tag == _TUPLE:
        return tuple([_build(x) for x in template[1]])
    if tag == _SET:
        return {_build(x) for x in template[1]}
    if tag == _FROZENSET:
        return frozenset(_build(x) for x in template[1])
    if tag == _PICKLED:
        return pickle.loads(template[1])
    if tag == _ENUM:
        enum_class: Any = _classes[template[1]]
        return enum_class[template[2]]
    raise ValueError(f"not a template: {template!r}")


_UNCACHEABLE = object()


def _weight(entry: tuple[Any, int]) -> int:
    return entry[1]


class DecodedCache:
    """Blob id (or an extension value's bytes, see :meth:`ext_hook`) -> decoded
    value, bounded by the total size of its templates (bytes).

    ``get`` returns ``(True, a new copy)`` or ``(False, None)``; ``put`` keeps
    the template of a value decoded for the second time, if :func:`freeze` can
    make one, and remembers the blobs whose values it cannot, so they are not
    examined again.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        # key -> (template, weight), least recently used dropped first
        self.data: LRU[Any, tuple[Any, int]] = LRU(max(max_bytes, 1), getsizeof=_weight)
        # Blobs read once. A value is kept from its second read on: a one-off
        # read (an old checkpoint looked up once) pays no template, and the
        # values a chat re-reads at every turn are kept from the second turn.
        self._once: LRU[Any, None] = LRU(8192)

    def get(self, oid: Any, touch: bool = True) -> tuple[bool, Any]:
        """``(True, a new copy)`` or ``(False, None)``; ``touch=False`` leaves the
        entry's place in the LRU as it was (a scan's read, format.md 25)."""
        hit = self.data.get(oid) if touch else self.data.peek(oid)
        if hit is None or hit[0] is _UNCACHEABLE:
            return False, None
        return True, thaw(hit[0])

    def put(self, oid: Any, value: Any, nbytes: int, *, at_once: bool = False) -> None:
        if self.max_bytes <= 0 or nbytes > self.max_bytes // 8 or oid in self.data:
            return
        if not at_once:
            if oid not in self._once:
                self._once[oid] = None
                return
            del self._once[oid]
        key_bytes = len(oid) if type(oid) is bytes else 0  # an extension value's bytes are its key: weighed too
        try:
            template = freeze(value)
        except Unsupported:
            entry = (_UNCACHEABLE, 64 + key_bytes)  # remembered, weighed as a small entry
        else:
            entry = (template, len(template) + key_bytes)
        if entry[1] <= self.max_bytes:
            self.data[oid] = entry

    def ext_hook(self, decode: Callable[[int, bytes], Any], keep: bool = True) -> Callable[[int, bytes], Any]:
        """A msgpack ``ext_hook`` that decodes each extension value once.

        LangGraph's serializer writes every LangChain message (every pydantic
        model, every constructed object) as one msgpack extension value, so the
        same message has the same bytes in every list that holds it: in the
        checkpoint after the one it was added in, in the next chunk of a long
        list, in a pending write. ``decode`` (the serializer's own hook) runs
        for bytes seen for the first time, and its result is kept, by those
        bytes, as a template; the next occurrence is rebuilt from it. Values
        that cannot be templated are decoded every time, as before.
        ``keep=False`` gives a scan's hook: it uses what is kept and keeps
        nothing new (format.md 25).
        """
        get, put = self.get, self.put

        def hook(code: int, data: bytes) -> Any:
            hit, value = get(data)
            if hit:
                return value
            value = decode(code, data)
            put(data, value, len(data), at_once=True)
            return value

        def scan_hook(code: int, data: bytes) -> Any:
            hit, value = get(data, False)
            return value if hit else decode(code, data)

        return hook if keep else scan_hook

    def clear(self) -> None:
        self.data.clear()
        self._once.clear()

    @property
    def size(self) -> int:
        """The total weight of what is kept (bytes of templates and of keys)."""
        return int(self.data.currsize)
