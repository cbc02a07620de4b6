"""gitckpt/git/cache.py: the one bounded cache type."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gitckpt.git.cache import LRU


def test_the_least_recently_used_goes_first_and_eviction_is_reported():
    dropped = []
    c: LRU[str, int] = LRU(3, on_evict=lambda k, v: dropped.append((k, v)))
    for k in "abc":
        c[k] = ord(k)
    assert c.get("a") == ord("a")  # a is now the most recently used
    c["d"] = 4
    assert list(c) == ["c", "a", "d"] and dropped == [("b", ord("b"))]
    assert "b" not in c and c.get("b", "gone") == "gone"


def test_weights_bound_the_total():
    c: LRU[str, bytes] = LRU(10, getsizeof=len)
    c["a"] = b"1234"
    c["b"] = b"12345"
    c["c"] = b"12"  # 11 > 10: "a" goes
    assert list(c) == ["b", "c"] and c.currsize == 7
    c["b"] = b"1"  # replacing reweighs
    assert c.currsize == 3
    del c["c"]
    assert c.pop("b") == b"1" and c.pop("b") is None and c.currsize == 0
    with pytest.raises(ValueError, match="does not fit"):
        c["big"] = b"x" * 11


@given(st.lists(st.tuples(st.sampled_from(["set", "get", "pop"]), st.integers(0, 12), st.integers(1, 5)), max_size=80))
@settings(max_examples=150)
def test_the_weight_it_counts_is_the_weight_it_holds(ops):
    c: LRU[int, int] = LRU(12, getsizeof=lambda v: v)
    for op, key, value in ops:
        if op == "set":
            c[key] = value
        elif op == "get":
            c.get(key)
        else:
            c.pop(key)
        assert c.currsize == sum(c.values()) <= 12


def test_peek_reads_without_marking_used():
    """A scan reads through ``peek`` (format.md 25): the LRU order, and so what is
    evicted next, is as if the scan had not read."""
    c = LRU(2)
    c["a"], c["b"] = 1, 2
    assert c.peek("a") == 1 and c.peek("z") is None and c.peek("z", 0) == 0
    c["c"] = 3  # "a" was only peeked: it is still the least recently used
    assert list(c) == ["b", "c"]
    assert c.get("b") == 2
    c["d"] = 4
    assert list(c) == ["b", "d"]
