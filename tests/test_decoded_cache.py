"""The decoded-value cache: reads are as if every value were decoded from its bytes.

A read served from the cache must equal a read decoded from the repository, and
must share no mutable object with any other read, so a caller who changes what
it got cannot change what the saver returns next.
"""

from __future__ import annotations

import datetime
import enum
import gc
import uuid
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langgraph.checkpoint.base import empty_checkpoint
from langgraph.checkpoint.base.id import uuid6
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

from gitckpt import GitSaver
from gitckpt.checkpoint.values import DecodedCache, Unsupported, freeze, thaw


class Color(enum.Enum):
    RED = "red"


@dataclass
class Note:
    text: str


def mutable_objects(value, out=None):
    """Every mutable object reachable from ``value`` (containers and models)."""
    out = [] if out is None else out
    if isinstance(value, (list, dict, set)):
        out.append(value)
        items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else []
        for _, v in items:
            mutable_objects(v, out)
    elif isinstance(value, tuple):
        for v in value:
            mutable_objects(v, out)
    elif hasattr(value, "__pydantic_fields_set__"):
        out.append(value)
        mutable_objects(value.__dict__, out)
    return out


def messages():
    return [
        HumanMessage(content="hi", id="1"),
        AIMessage(
            content=[{"type": "text", "text": "hello"}],
            id="2",
            tool_calls=[{"name": "search", "args": {"q": "x"}, "id": "c1"}],
            response_metadata={"model": "m", "usage": {"in": 3}},
        ),
        ToolMessage(content="result", tool_call_id="c1", id="3", artifact={"rows": [1, 2]}),
    ]


plain = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8) | st.binary(max_size=8),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(max_size=4), inner, max_size=4)
    | st.tuples(inner, inner)
    | st.sets(st.integers(), max_size=3),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None)
@given(plain)
def test_thaw_of_freeze_equals_the_value_and_shares_nothing_mutable(value):
    template = freeze(value)
    a, b = thaw(template), thaw(template)
    assert a == value and b == value
    ids_a = {id(o) for o in mutable_objects(a)}
    assert ids_a.isdisjoint(id(o) for o in mutable_objects(value))
    assert ids_a.isdisjoint(id(o) for o in mutable_objects(b))


def test_messages_round_trip_whole_and_independent():
    value = messages()
    got = thaw(freeze(value))
    assert got == value
    assert [type(m) for m in got] == [type(m) for m in value]
    assert [m.model_fields_set for m in got] == [m.model_fields_set for m in value]
    got[1].tool_calls[0]["args"]["q"] = "changed"
    got[1].response_metadata["usage"]["in"] = 99
    got[0].content = "changed"
    assert value == messages()


def test_scalars_enums_and_dates_are_kept_and_user_classes_are_not_cached():
    when = datetime.datetime(2026, 1, 2, tzinfo=datetime.timezone.utc)
    value = {"when": when, "id": uuid.UUID(int=5), "color": Color.RED}
    assert thaw(freeze(value)) == value
    with pytest.raises(Unsupported):
        freeze([Note("x")])


def test_a_full_cache_adds_no_object_for_the_garbage_collector_to_walk():
    cache = DecodedCache(max_bytes=64 << 20)
    batches = [messages() * 100 for _ in range(10)]
    gc.collect()
    before = len(gc.get_objects())
    for i, batch in enumerate(batches):
        cache.put(i, batch, 1000)
        cache.put(i, batch, 1000)  # kept from the second read on
    gc.collect()
    assert len(cache.data) == 10
    assert len(gc.get_objects()) - before < 50  # 3,000 messages cached: no live objects for them


def test_cache_is_bounded_by_the_size_of_its_templates_and_remembers_what_it_cannot_keep():
    size = len(freeze([0] * 10))
    cache = DecodedCache(max_bytes=10 * size)
    cache.put("once", [1], 1)
    assert cache.get("once") == (False, None)  # a value read once is not kept
    for i in range(50):
        cache.put(i, [i] * 10, 1)
        cache.put(i, [i] * 10, 1)
    assert cache.size <= 10 * size and len(cache.data) == 10
    assert cache.get(49) == (True, [49] * 10) and cache.get(0) == (False, None)
    cache.put("note", Note("x"), 10)
    cache.put("note", Note("x"), 10)
    assert cache.get("note") == (False, None) and "note" in cache.data
    off = DecodedCache(max_bytes=0)
    off.put(1, [1], 1)
    off.put(1, [1], 1)
    assert off.get(1) == (False, None)


def _chat_checkpoint(saver, thread, msgs, parent=None):
    cp = empty_checkpoint()
    cp["id"] = str(uuid6(clock_seq=len(msgs)))
    cp["channel_values"] = {"messages": msgs, "note": Note("n")}
    cp["channel_versions"] = {"messages": len(msgs), "note": 1}
    cfg = {"configurable": {"thread_id": thread, "checkpoint_ns": ""}}
    if parent:
        cfg["configurable"]["checkpoint_id"] = parent
    return saver.put(cfg, cp, {"step": len(msgs)}, {"messages": len(msgs), "note": 1})


@pytest.mark.parametrize("n", [3, 200])  # one blob, and a chunked list
def test_a_caller_changing_what_it_read_does_not_change_the_next_read(repo_path, n):
    msgs = [HumanMessage(content=f"m{i}", id=str(i), additional_kwargs={"k": [i]}) for i in range(n)]
    with GitSaver(repo_path) as saver:
        cfg = _chat_checkpoint(saver, "t", msgs)
        for _ in range(4):  # decoded, decoded and kept, then from the cache twice
            got = saver.get_tuple(cfg)
            assert got.checkpoint["channel_values"]["messages"] == msgs
            assert got.checkpoint["channel_values"]["note"] == Note("n")
            assert got.metadata["step"] == n
            values = got.checkpoint["channel_values"]
            values["messages"][0].content = "changed"
            values["messages"][1].additional_kwargs["k"].append("changed")
            values["messages"].append(HumanMessage(content="extra"))
            values["note"].text = "changed"
            got.metadata["step"] = -1
        assert any(isinstance(v[0], bytes) for v in saver._decoded.data.values())  # the cache was used
        second = saver.get_tuple(cfg)
    # and a new process's view (nothing cached) is the same
    with GitSaver(repo_path, decoded_cache_bytes=0) as fresh:
        assert fresh.get_tuple(cfg).checkpoint == second.checkpoint


def test_reads_with_and_without_the_cache_are_equal(repo_path):
    serde = JsonPlusSerializer()
    msgs = messages() * 30
    with GitSaver(repo_path) as saver:
        cfg = None
        for k in range(1, 5):
            cfg = _chat_checkpoint(saver, "t", msgs[: 20 * k], cfg and cfg["configurable"]["checkpoint_id"])
        cached = [serde.dumps_typed(t.checkpoint) for t in saver.list({"configurable": {"thread_id": "t"}})]
        cached_again = [serde.dumps_typed(t.checkpoint) for t in saver.list({"configurable": {"thread_id": "t"}})]
    with GitSaver(repo_path, decoded_cache_bytes=0) as fresh:
        uncached = [serde.dumps_typed(t.checkpoint) for t in fresh.list({"configurable": {"thread_id": "t"}})]
    assert cached == cached_again == uncached


def _odd_values():
    from langgraph.types import Send

    when = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)
    return [
        messages(),
        {"note": Note("n"), "color": Color.RED, "when": when, "id": uuid.UUID(int=7)},
        [Send("node", {"x": 1}), {1, 2}, (1, "a"), {(1, 2): "tuple key"}],
        {"nested": {"deeper": [messages()[1], {"k": messages()[0]}]}},
        None,
        b"raw bytes",
    ]


def test_each_message_is_decoded_once_and_reads_equal_the_serializers_own(repo_path):
    # GitSaver decodes msgpack values with an ext_hook that keeps each extension value (a message) by its
    # bytes; every read must still equal what JsonPlusSerializer.loads_typed gives, type for type
    with GitSaver(repo_path) as saver:
        assert saver._msgpack_hook is not None
        for value in _odd_values():
            typed = saver.serde.dumps_typed(value)
            want = saver.serde.loads_typed(typed)
            for _ in range(3):  # decoded, then rebuilt from the kept templates
                got = saver._loads(typed)
                assert got == want and type(got) is type(want)
                assert saver.serde.dumps_typed(got) == typed
        assert any(isinstance(k, bytes) for k in saver._decoded.data)  # items were kept by their bytes


def test_a_message_shared_by_two_lists_is_not_shared_by_their_reads(repo_path):
    a, b, c = (HumanMessage(content=x, id=x, additional_kwargs={"k": [x]}) for x in "abc")
    with GitSaver(repo_path) as saver:
        first = _chat_checkpoint(saver, "t", [a, b])
        second = _chat_checkpoint(saver, "t", [b, c], first["configurable"]["checkpoint_id"])
        read_first = saver.get_tuple(first).checkpoint["channel_values"]["messages"]
        read_second = saver.get_tuple(second).checkpoint["channel_values"]["messages"]  # b from the kept template
        read_second[0].additional_kwargs["k"].append("changed")
        read_second[0].content = "changed"
        assert read_first[1] == b and read_first[1] is not read_second[0]
        assert saver.get_tuple(first).checkpoint["channel_values"]["messages"] == [a, b]
        assert saver.get_tuple(second).checkpoint["channel_values"]["messages"] == [b, c]


def test_other_serializers_are_used_as_they_are(repo_path):
    from langgraph.checkpoint.serde.encrypted import EncryptedSerializer

    assert GitSaver(repo_path, serde=EncryptedSerializer.from_pycryptodome_aes(key=b"k" * 16))._msgpack_hook is None
    assert GitSaver(repo_path, decoded_cache_bytes=0)._msgpack_hook is None
    custom = JsonPlusSerializer(__unpack_ext_hook__=lambda code, data: ("custom", code))
    assert GitSaver(repo_path, serde=custom)._msgpack_hook is None


def test_messages_kept_by_their_bytes_count_those_bytes_against_the_bound():
    serde = JsonPlusSerializer()
    msgs = [HumanMessage(content="x" * 200, id=str(i)) for i in range(400)]
    typed = serde.dumps_typed(msgs)
    cache = DecodedCache(max_bytes=64 << 10)
    import ormsgpack

    assert ormsgpack.unpackb(typed[1], ext_hook=cache.ext_hook(serde._unpack_ext_hook),
                             option=ormsgpack.OPT_NON_STR_KEYS) == msgs
    kept = [k for k in cache.data if isinstance(k, bytes)]
    assert kept and cache.size <= cache.max_bytes
    assert cache.size == sum(len(k) + len(t) for k, (t, _) in cache.data.items())
