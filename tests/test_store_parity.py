"""GitStore gives InMemoryStore's answers.

Hypothesis runs random sequences of operations (single puts, deletes, gets,
searches with filters, queries, limits and offsets, namespace listings, mixed
batches; sync and async; through two GitStore instances on one repository, so
each also catches up with the other's commits; with reopenings) on GitStore
and on InMemoryStore, and compares every result: items, values, order and
scores.

The reference is InMemoryStore with three corrections, each for a behaviour a
persistent store cannot or should not copy (docs/store.md, "Differences"):

* InMemoryStore orders namespaces by first use (a dict), which no other
  process can know; GitStore orders them by name. The reference touches every
  namespace of the test in name order first, so both agree.
* InMemoryStore lists a namespace that once held items, or was merely read,
  forever; the reference lists namespaces that hold items (what SqliteStore
  and GitStore do), computed by InMemoryStore's own code.
* InMemoryStore keeps an item's old vectors when an update no longer indexes a
  field (or is ``index=False``); the reference drops them before each put.

And one crash fix: InMemoryStore raises when one text occurs twice among the
fields a batch embeds; the reference gives each place its text's embedding.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from pathlib import Path
from types import SimpleNamespace

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from langgraph.store.base import (
    GetOp,
    ListNamespacesOp,
    MatchCondition,
    PutOp,
    SearchOp,
)
from langgraph.store.memory import InMemoryStore

from gitckpt import GitStore

ALPHABET = "abcdefghijklmnopqrstuvwxyz"


def embed(texts):
    """Deterministic, integer-valued (so float32 storage is exact): letter counts plus a bias."""
    return [[float(t.lower().count(c)) for c in ALPHABET] + [1.0] for t in texts]


# Few namespaces and keys, so items collide, update and share search scopes;
# odd labels and keys (unicode, "/", "", "..", 200 characters) among them.
NAMESPACES = sorted([("a",), ("a", "a"), ("a", "b"), ("b",), ("ü x/y", "a")])
PREFIXES = sorted({ns[:i] for ns in NAMESPACES for i in range(len(ns) + 1)})
KEYS = ["k1", "k2", "k3", "k4", "k1", "k2", "", "../x", "k" * 200]
WORDS = ["apple", "banana", "cherry pie", "apple pie", "zebra", ""]

INDEX_CONFIGS = {
    "none": None,
    "whole2": {"dims": 27, "embed": embed},
    "whole": {"dims": 27, "embed": embed},
    "fields": {"dims": 27, "embed": embed, "fields": ["text", "items[*]"]},
}

values = st.fixed_dictionaries(
    {"text": st.sampled_from(WORDS), "n": st.integers(0, 5)},
    optional={
        "tag": st.sampled_from(["x", "y", None]),
        "items": st.lists(st.sampled_from(WORDS), max_size=3),
        "meta": st.fixed_dictionaries({"color": st.sampled_from(["red", "blue"])}),
        "f": st.floats(-2, 2, allow_nan=False),
    },
)
filters = st.sampled_from([
    None,
    {"tag": "x"},
    {"n": 3},
    {"n": {"$gt": 2}},
    {"n": {"$gte": 1, "$lte": 3}},
    {"n": {"$lt": 2}},
    {"text": {"$ne": "apple"}},
    {"text": {"$eq": "zebra"}},
    {"meta": {"color": "red"}},
    {"items": ["apple"]},
    {"tag": None},
    {"text": "apple pie", "n": {"$gte": 2}},
])
index_args = st.sampled_from([None, None, None, False, False, ["text"], ["items[*]"], ["meta.color", "text"]])
patterns = st.sampled_from([None, ("a",), ("*",), ("a", "*"), ("*", "b"), ("ü x/y",), ("*", "a"), ("*", "*")])

put_op = st.builds(
    lambda ns, k, v, ix: PutOp(ns, k, v, ix), st.sampled_from(NAMESPACES), st.sampled_from(KEYS), values, index_args
)
delete_op = st.builds(lambda ns, k: PutOp(ns, k, None), st.sampled_from(NAMESPACES), st.sampled_from(KEYS))
get_op = st.builds(lambda ns, k: GetOp(ns, k), st.sampled_from(NAMESPACES + [("nope",)]), st.sampled_from(KEYS))
search_op = st.builds(
    lambda prefix, flt, limit, offset, query: SearchOp(prefix, flt, limit, offset, query),
    st.sampled_from(PREFIXES + [(), (), (), ("a",), ("a",)]),
    st.one_of(st.none(), filters),
    st.integers(0, 6),
    st.integers(0, 4),
    st.sampled_from([None, "apple", "zebra pie", "banana cherry"]),
)


def _list_op(prefix, suffix, max_depth, limit, offset):
    conds = []
    if prefix:
        conds.append(MatchCondition("prefix", prefix))
    if suffix:
        conds.append(MatchCondition("suffix", suffix))
    return ListNamespacesOp(tuple(conds), max_depth, limit, offset)


list_op = st.builds(
    _list_op, patterns, patterns, st.sampled_from([None, 1, 2]), st.integers(0, 12), st.integers(0, 3)
)
single_op = st.one_of(put_op, put_op, delete_op, get_op, search_op, search_op, list_op)
step = st.one_of(
    st.tuples(st.just("op"), single_op, st.sampled_from(["A", "B"]), st.booleans()),
    st.tuples(
        st.just("batch"),
        st.lists(st.one_of(put_op, put_op, delete_op, get_op, search_op, list_op), min_size=1, max_size=8),
        st.sampled_from(["A", "B"]),
        st.booleans(),
    ),
    st.tuples(st.just("reopen"), st.none(), st.sampled_from(["A", "B"]), st.booleans()),
)


class _InMemoryStore(InMemoryStore):
    def _insertinmem_store(self, to_embed, embeddings):
        # InMemoryStore embeds each distinct text once, then zips one embedding
        # per *place* a text occurs, and raises when a text occurs twice (a
        # field and a list element with the same text). Give each place its
        # text's embedding, as intended.
        for (_, places), embedding in zip(to_embed.items(), embeddings, strict=True):
            for ns, key, path in places:
                self._vectors[ns][key][path] = embedding


class Reference:
    """InMemoryStore plus the corrections named in the module docstring."""

    def __init__(self, index) -> None:
        self.mem = _InMemoryStore(index=index)
        for ns in NAMESPACES:  # first use in name order
            self.mem.get(ns, "-")

    def batch(self, ops):
        mem = self.mem
        results = [None] * len(ops)
        reads = [(i, op) for i, op in enumerate(ops) if not isinstance(op, (PutOp, ListNamespacesOp))]
        if reads:
            for (i, _), r in zip(reads, mem.batch([op for _, op in reads])):
                results[i] = r
        holding = SimpleNamespace(_data={ns: d for ns, d in mem._data.items() if d})
        for i, op in enumerate(ops):
            if isinstance(op, ListNamespacesOp):
                results[i] = InMemoryStore._handle_list_namespaces(holding, op)
        puts = [op for op in ops if isinstance(op, PutOp)]
        if puts:
            for op in puts:
                mem._vectors[op.namespace].pop(op.key, None)
            mem.batch(puts)
        return results


def run_single(store: GitStore, op, use_async: bool):
    """The op through BaseStore's public helpers (put, get, search, ...)."""
    if isinstance(op, PutOp):
        if op.value is None:
            call = (store.adelete if use_async else store.delete)(op.namespace, op.key)
        else:
            call = (store.aput if use_async else store.put)(op.namespace, op.key, op.value, index=op.index)
    elif isinstance(op, GetOp):
        call = (store.aget if use_async else store.get)(op.namespace, op.key)
    elif isinstance(op, SearchOp):
        call = (store.asearch if use_async else store.search)(
            op.namespace_prefix, query=op.query, filter=op.filter, limit=op.limit, offset=op.offset
        )
    else:
        kw = {c.match_type: c.path for c in op.match_conditions}
        call = (store.alist_namespaces if use_async else store.list_namespaces)(
            prefix=kw.get("prefix"), suffix=kw.get("suffix"), max_depth=op.max_depth, limit=op.limit, offset=op.offset
        )
    return asyncio.run(call) if use_async else call


def comparable(result):
    if result is None:
        return None
    if isinstance(result, list):
        return [comparable(r) for r in result]
    if isinstance(result, tuple):
        return result
    out = (result.namespace, result.key, result.value)
    if hasattr(result, "score"):
        out += (result.score,)
    return out


def check_timestamps(result):
    for item in result if isinstance(result, list) else [result]:
        if item is not None and hasattr(item, "created_at"):
            assert item.created_at <= item.updated_at
            assert item.created_at.tzinfo is not None


@settings(
    max_examples=int(os.environ.get("GITCKPT_PARITY_EXAMPLES", "150")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    report_multiple_bugs=False,
)
@given(
    config=st.sampled_from(sorted(INDEX_CONFIGS)),
    seed=st.lists(put_op, min_size=2, max_size=12),
    steps=st.lists(step, min_size=1, max_size=30),
)
def test_gitstore_matches_inmemorystore(config, seed, steps):
    index = INDEX_CONFIGS[config]
    ref = Reference(index)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "agent.git"
        stores = {"A": GitStore(path, index=index), "B": GitStore(path, index=index)}
        try:
            steps = [("batch", seed, "A", False), *steps]  # every example starts with some items
            for n, (kind, payload, which, use_async) in enumerate(steps):
                store = stores[which]
                if kind == "reopen":
                    store.close()
                    stores[which] = GitStore(path, index=index)
                    continue
                ops = [payload] if kind == "op" else payload
                expected = ref.batch(ops)
                if kind == "op":
                    got = [run_single(store, payload, use_async)]
                else:
                    got = asyncio.run(store.abatch(ops)) if use_async else store.batch(ops)
                for op, e, g in zip(ops, expected, got):
                    check_timestamps(g)
                    assert comparable(g) == comparable(e), f"step {n}: {op}"
            everything = SearchOp((), limit=1000)
            for store in stores.values():
                assert comparable(store.batch([everything])) == comparable(ref.batch([everything]))
        finally:
            for store in stores.values():
                store.close()
