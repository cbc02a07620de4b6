"""One bounded cache type for the whole package: least recently used dropped first.

Written by hand on purpose (docs/format.md 15): it is an ``OrderedDict``, so
``in``, ``len``, iteration and plain indexing run at C speed, and only ``get``
(which marks an entry as used) and insertion (which weighs and evicts) are
Python. cachetools' ``LRUCache`` was used for a while and measured: every
operation is several Python calls (format.md 15 gives the callgrind counts).
"""

from __future__ import annotations

import gc
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from typing import Any, Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class LRU(OrderedDict[K, V], Generic[K, V]):
    """A dict bounded by the total weight of its values (by default, their count).

    Args:
        maxsize: the total weight it may hold.
        getsizeof: the weight of a value (default 1 each).
        on_evict: called with ``(key, value)`` for an entry dropped to make room.
    """

    def __init__(
        self,
        maxsize: int,
        getsizeof: Callable[[V], int] | None = None,
        on_evict: Callable[[K, V], Any] | None = None,
    ) -> None:
        super().__init__()
        self.maxsize = maxsize
        self.currsize = 0
        self._weigh = getsizeof
        self._on_evict = on_evict

    #: The value or ``default``, without marking it used (a scan's read, format.md 25):
    #: ``OrderedDict.get`` itself, so it runs at C speed.
    peek = OrderedDict.get

    def getsizeof(self, value: V) -> int:
        return self._weigh(value) if self._weigh is not None else 1

    def get(self, key: K, default: Any = None) -> Any:
        """The value (now the most recently used), or ``default``."""
        try:
            value = OrderedDict.__getitem__(self, key)
        except KeyError:
            return default
        self.move_to_end(key)
        return value

    def __setitem__(self, key: K, value: V) -> None:
        size = self.getsizeof(value)
        if size > self.maxsize:
            raise ValueError(f"a value of weight {size} does not fit a cache of {self.maxsize}")
        if OrderedDict.__contains__(self, key):
            self.currsize -= self.getsizeof(OrderedDict.pop(self, key))
        OrderedDict.__setitem__(self, key, value)
        self.currsize += size
        while self.currsize > self.maxsize:
            old_key, old = OrderedDict.popitem(self, last=False)
            self.currsize -= self.getsizeof(old)
            if self._on_evict is not None:
                self._on_evict(old_key, old)

    def __delitem__(self, key: K) -> None:
        self.currsize -= self.getsizeof(OrderedDict.pop(self, key))

    def pop(self, key: K, default: Any = None) -> Any:
        if not OrderedDict.__contains__(self, key):
            return default
        value = OrderedDict.pop(self, key)
        self.currsize -= self.getsizeof(value)
        return value

    def clear(self) -> None:
        OrderedDict.clear(self)
        self.currsize = 0


@contextmanager
def gc_paused() -> Iterator[None]:
    """The garbage collector paused for a block that builds objects which all live on
    (an index loaded from its cache file): collecting there would only walk the heap
    again. Nested blocks are one pause; the collector runs again when the outermost ends."""
    paused = gc.isenabled()
    if paused:
        gc.disable()
    try:
        yield
    finally:
        if paused:
            gc.enable()


def only_types(values: Any, *types: type) -> bool:
    """Every item of ``values`` is exactly of one of ``types`` (no subclass: ``True``
    is not an ``int`` here). For the columns of a cache file, which are untrusted
    bytes decoded by plain msgpack: C-level, ~0.1 ms for a 10,000-item column."""
    return set(map(type, values)) <= set(types)
