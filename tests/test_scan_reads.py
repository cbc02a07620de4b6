"""Long listings are scans (format.md 25): same answers, caches left as they were.

A listing reads its first ``SCAN_AFTER`` checkpoints like ``get_tuple`` and the
rest (every one of ``list(None)``) without adding to the decoded-value, blob and
tree caches. What it returns must still be, value for value and type for type,
what ``get_tuple`` of a saver without any cache returns, and every read must own
its values (format.md 11) whether they came from the cache or not. Real
repositories; no timing (scripts/bench.py --only scale measures).
"""

from __future__ import annotations

import msgpack
import pytest
from langchain_core.messages import AIMessage, HumanMessage
from langgraph.checkpoint.base import empty_checkpoint
from langgraph.checkpoint.base.id import uuid6

from gitckpt import GitSaver
from gitckpt.checkpoint.index import ThreadIndex
from gitckpt.checkpoint.saver import CHUNK_MIN, SCAN_AFTER

STEPS = SCAN_AFTER + 26  # past the scan threshold; the last lists are chunked (> CHUNK_MIN messages)


def msg(i: int):
    cls = HumanMessage if i % 2 == 0 else AIMessage
    return cls(content=f"m{i}", id=f"id{i}", additional_kwargs={"k": [i]}, response_metadata={"n": {"i": i}})


def build(saver: GitSaver, threads: tuple[str, ...]) -> None:
    """Round-robin chats: a growing message list, a counter shared by every thread at a
    step, and one pending write (a message) per checkpoint; a subgraph namespace on the first."""
    configs = {t: {"configurable": {"thread_id": t, "checkpoint_ns": ""}} for t in threads}
    for step in range(STEPS):
        for t in threads:
            cp = empty_checkpoint()
            cp["id"] = str(uuid6(clock_seq=step))
            cp["channel_values"] = {"messages": [msg(i) for i in range(step + 1)], "counter": step}
            cp["channel_versions"] = {"messages": step + 1, "counter": step + 1}
            configs[t] = saver.put(configs[t], cp, {"source": "loop", "step": step, "parents": {}},
                                   {"messages": step + 1, "counter": step + 1})
            saver.put_writes(configs[t], [("messages", [msg(10_000 + step)])], f"task-{t}-{step}")
    sub = {"configurable": {"thread_id": threads[0], "checkpoint_ns": "child:1"}}
    for step in range(3):
        cp = empty_checkpoint()
        cp["id"] = str(uuid6(clock_seq=1000 + step))
        cp["channel_values"] = {"x": step}
        cp["channel_versions"] = {"x": step + 1}
        sub = saver.put(sub, cp, {"source": "loop", "step": step, "parents": {}}, {"x": step + 1})


def as_tuple(t) -> tuple:
    return (t.config, t.checkpoint, t.metadata, t.parent_config, t.pending_writes)


def types_of(value) -> list:
    """The types of every value and message in a checkpoint tuple, in order."""
    out: list = []

    def walk(v):
        out.append(type(v))
        if isinstance(v, dict):
            for x in v.values():
                walk(x)
        elif isinstance(v, (list, tuple)):
            for x in v:
                walk(x)

    walk(value)
    return out


@pytest.fixture
def chats(repo_path):
    with GitSaver(repo_path) as s:
        build(s, ("a", "b"))
    return repo_path


def truth(repo_path, configs) -> list:
    """get_tuple of each checkpoint by a saver that keeps nothing decoded."""
    with GitSaver(repo_path, decoded_cache_bytes=0) as fresh:
        return [as_tuple(fresh.get_tuple(c)) for c in configs]


def test_a_long_listing_equals_get_tuple_of_each_checkpoint(chats):
    with GitSaver(chats) as s:
        every = [as_tuple(t) for t in s.list(None)]
        one = [as_tuple(t) for t in s.list({"configurable": {"thread_id": "a"}})]
        assert len(every) == 2 * STEPS + 3 and len(one) == STEPS + 3
        main = [t for t in one if t[0]["configurable"]["checkpoint_ns"] == ""]
        assert len(main[0][1]["channel_values"]["messages"]) > CHUNK_MIN  # chunked lists are read too
        again = [as_tuple(t) for t in s.list(None)]  # now partly from what get_tuple-like reads kept
    want = truth(chats, [t[0] for t in every])
    assert every == want == again
    assert [types_of(t) for t in every] == [types_of(t) for t in want] == [types_of(t) for t in again]
    assert one == [t for t in every if t[0]["configurable"]["thread_id"] == "a"]


def test_a_scan_adds_nothing_to_the_caches(chats):
    with GitSaver(chats) as s:
        for _ in s.list(None):
            pass
        assert s._decoded.size == 0 and not s._decoded.data and not s._decoded._once
        assert not s.repo._blob_cache and not s.repo._tree_cache and not s._bases and not s._chunks

    cfg = {"configurable": {"thread_id": "a"}}
    with GitSaver(chats) as head, GitSaver(chats) as whole:
        list(head.list(cfg, limit=SCAN_AFTER))  # the part of a listing read like get_tuple
        list(whole.list(cfg))  # the same, then a scan of the rest
        assert head._decoded.size > 0
        for name in ("_blob_cache", "_tree_cache"):
            assert list(getattr(head.repo, name)) == list(getattr(whole.repo, name))
        assert list(head._decoded.data) == list(whole._decoded.data)
        assert list(head._decoded._once) == list(whole._decoded._once)
        assert list(head._bases) == list(whole._bases)


def test_what_a_scan_returns_belongs_to_the_caller(chats):
    cfg = {"configurable": {"thread_id": "b"}}
    with GitSaver(chats) as s:
        for _ in range(2):  # the messages are kept (by their bytes) and rebuilt by the scan's hook
            latest = s.get_tuple(cfg)
        assert any(isinstance(k, bytes) for k in s._decoded.data)
        first = [as_tuple(t) for t in s.list(cfg)]
        for _, checkpoint, metadata, _, writes in first:
            for m in checkpoint["channel_values"]["messages"]:
                m.content = "changed"
                m.additional_kwargs["k"].append("changed")
                m.response_metadata["n"]["i"] = -1
            checkpoint["channel_values"]["messages"].append(msg(-1))
            metadata["step"] = -1
            writes[0][2][0].content = "changed"
        second = [as_tuple(t) for t in s.list(cfg)]
        assert as_tuple(s.get_tuple(cfg)) == as_tuple(latest) == second[0]
    assert second == truth(chats, [t[0] for t in second])


def test_a_scan_reads_what_only_this_process_log_holds(repo_path, monkeypatch):
    import gitckpt.git.repo as repo_mod

    monkeypatch.setattr(repo_mod, "PUBLISH_IDLE", 3600.0)  # nothing published behind the updates (format.md 21)
    monkeypatch.setattr(repo_mod, "PUBLISH_AFTER", 3600.0)
    with GitSaver(repo_path) as s:
        build(s, ("a",))
        assert s.repo._pending  # objects only the log holds so far
        every = [as_tuple(t) for t in s.list(None)]
        assert len(every) == STEPS + 3
    assert every == truth(repo_path, [t[0] for t in every])


def test_a_cache_file_keeps_its_commit_ids_unparsed_until_a_walk_needs_them(chats):
    data = (chats / "gitckpt-cache" / "threads" / "a").read_bytes()
    idx = ThreadIndex.from_bytes(data)
    assert idx is not None and idx._seen_file and not idx._seen
    count = idx.seen_count()
    seen = idx.seen  # made a set now
    assert not idx._seen_file and len(seen) == count == len(msgpack.unpackb(data)["seen"]) // 20
    assert ThreadIndex.from_bytes(idx.to_bytes()).seen == seen
    # a writer of the thread in a new process: its first put makes the set and goes on from it
    with GitSaver(chats) as s:
        tip = s.get_tuple({"configurable": {"thread_id": "a", "checkpoint_ns": ""}})
        cp = empty_checkpoint()
        cp["id"] = str(uuid6(clock_seq=9999))
        cp["channel_values"] = {"counter": 1}
        cp["channel_versions"] = {"counter": 999}
        s.put(tip.config, cp, {"source": "loop", "step": STEPS, "parents": {}}, {"counter": 999})
    with GitSaver(chats) as s:
        walked = [t.config for t in s.list({"configurable": {"thread_id": "a"}})]
    (chats / "gitckpt-cache" / "threads" / "a").unlink()
    with GitSaver(chats) as s:
        assert [t.config for t in s.list({"configurable": {"thread_id": "a"}})] == walked
        assert walked[0]["configurable"]["checkpoint_id"] == cp["id"]
