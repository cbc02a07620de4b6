"""GitSaver behaviour LangGraph relies on beyond the conformance suite."""

from __future__ import annotations

import asyncio
import operator
import threading
from typing import Annotated, TypedDict

from langgraph.channels.delta import DeltaChannel
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph

from gitckpt import GitSaver

CFG = {"configurable": {"thread_id": "d"}}


def extend(state, batches):
    out = list(state or [])
    for batch in batches:
        out.extend(batch if isinstance(batch, list) else [batch])
    return out


class DeltaState(TypedDict):
    items: Annotated[list, DeltaChannel(extend, snapshot_frequency=3)]


def delta_graph(checkpointer):
    b = StateGraph(DeltaState)
    b.add_node("add", lambda s: {"items": [len(s.get("items") or [])]})
    b.add_edge(START, "add")
    b.add_edge("add", END)
    return b.compile(checkpointer=checkpointer)


def test_delta_channel_history_matches_in_memory_saver(saver):
    results = {}
    for name, cp in (("git", saver), ("memory", InMemorySaver())):
        graph = delta_graph(cp)
        for _ in range(7):
            graph.invoke({"items": ["in"]}, CFG)
        results[name] = graph.get_state(CFG).values["items"]
        history = list(graph.get_state_history(CFG))
        mid = history[len(history) // 2].config
        results[name + "-mid"] = graph.get_state(mid).values.get("items")
        raw = cp.get_delta_channel_history(config=mid, channels=["items"])["items"]
        # task ids are random per run: compare what was written, in order, and the seed
        results[name + "-raw"] = ([(c, v) for _, c, v in raw["writes"]], raw.get("seed"))
    assert results["git"] == results["memory"] and len(results["git"]) == 14
    assert results["git-mid"] == results["memory-mid"]
    assert results["git-raw"] == results["memory-raw"]


async def test_delta_channel_history_async(saver):
    seen = {}
    for name, cp in (("git", saver), ("memory", InMemorySaver())):
        graph = delta_graph(cp)
        for _ in range(4):
            await graph.ainvoke({"items": ["in"]}, CFG)
        seen[name + "-state"] = (await graph.aget_state(CFG)).values["items"]
        raw = (await cp.aget_delta_channel_history(config=CFG, channels=["items"]))["items"]
        seen[name] = ([(c, v) for _, c, v in raw["writes"]], raw.get("seed"))
    assert len(seen["git-state"]) == 8 and seen["git-state"] == seen["memory-state"]
    assert seen["git"] == seen["memory"] and (seen["git"][0] or seen["git"][1] is not None)


class Counter(TypedDict):
    n: Annotated[int, operator.add]
    seen: int


def introspecting_graph(saver):
    """A node that calls the checkpointer's sync methods from LangGraph's worker thread."""

    def node(state, config):
        history = list(saver.list({"configurable": {"thread_id": config["configurable"]["thread_id"]}}))
        latest = saver.get_tuple({"configurable": {"thread_id": config["configurable"]["thread_id"]}})
        assert latest is not None
        return {"n": 1, "seen": len(history)}

    b = StateGraph(Counter)
    b.add_node("a", node)
    b.add_node("b", node)
    b.add_edge(START, "a")
    b.add_edge("a", "b")
    b.add_edge("b", END)
    return b.compile(checkpointer=saver)


def run_with_timeout(fn, seconds=60):
    box = {}
    t = threading.Thread(target=lambda: box.setdefault("out", fn()), daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), "deadlock: the graph did not finish"
    return box["out"]


def test_sync_methods_inside_a_sync_graph_do_not_deadlock(saver):
    graph = introspecting_graph(saver)
    # LangGraph's default durability ("async") saves a step's checkpoint while
    # the next step runs, so what a node sees of the history depends on timing
    out = run_with_timeout(lambda: graph.invoke({"n": 0, "seen": 0}, {"configurable": {"thread_id": "x"}}))
    assert out["n"] == 2 and out["seen"] >= 1
    # with durability="sync" every earlier checkpoint is stored before the next step
    out = run_with_timeout(
        lambda: graph.invoke({"n": 0, "seen": 0}, {"configurable": {"thread_id": "x2"}}, durability="sync")
    )
    assert out["n"] == 2 and out["seen"] >= 2


def test_sync_methods_inside_an_async_graph_do_not_deadlock(saver):
    graph = introspecting_graph(saver)
    out = run_with_timeout(
        lambda: asyncio.run(graph.ainvoke({"n": 0, "seen": 0}, {"configurable": {"thread_id": "y"}}))
    )
    assert out["n"] == 2


async def test_async_methods_do_not_block_the_event_loop(saver):
    """While a put runs (holding the saver's lock), the loop keeps ticking."""
    ticks = 0
    stop = asyncio.Event()

    async def ticker():
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            await asyncio.sleep(0)

    with saver.lock:  # make every saver call wait for a moment
        task = asyncio.create_task(ticker())
        waiter = asyncio.create_task(saver.aget_tuple({"configurable": {"thread_id": "nobody"}}))
        await asyncio.sleep(0.05)
        assert not waiter.done() and ticks > 10
    assert await waiter is None
    stop.set()
    await task


def test_many_threads_writing_one_saver(saver):
    """Parallel puts and writes from Python threads (one process) lose nothing."""
    from test_saver_storage import put

    def work(t):
        parent = None
        for i in range(15):
            parent = put(saver, f"t{t}", parent=parent, values={"i": i}, metadata={"step": i})
            saver.put_writes({"configurable": {"thread_id": f"t{t}", "checkpoint_id": parent}}, [("i", i)], f"k{i}")

    threads = [threading.Thread(target=work, args=(t,)) for t in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    fresh = GitSaver(saver.repo.path)
    for t in range(6):
        tups = list(fresh.list({"configurable": {"thread_id": f"t{t}"}}))
        assert [x.metadata["step"] for x in tups] == list(range(14, -1, -1))
        assert all(x.pending_writes == [(f"k{x.metadata['step']}", "i", x.metadata["step"])] for x in tups)


def test_parallel_tasks_writing_one_checkpoint_are_all_kept(saver):
    from test_saver_storage import put

    cid = put(saver, "fan", values={"x": 0})
    cfg = {"configurable": {"thread_id": "fan", "checkpoint_ns": "", "checkpoint_id": cid}}
    barrier = threading.Barrier(8)

    def task(i):
        barrier.wait()
        for k in range(5):
            saver.put_writes(cfg, [("x", (i, k))], f"task-{i}-{k}", f"~__pregel_pull, node{i}")

    threads = [threading.Thread(target=task, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for s in (saver, GitSaver(saver.repo.path)):
        writes = s.get_tuple(cfg).pending_writes
        assert sorted(v for _, _, v in writes) == sorted([i, k] for i in range(8) for k in range(5))


def test_a_batch_that_loses_its_ref_race_is_redone_update_by_update(saver, repo_path):
    """Another writer (a second saver on the same repository) moves the line while
    a batch of this saver is about to move it: nothing of either is lost."""
    from test_saver_storage import put

    a = put(saver, "race", values={"x": 1})
    saver.publish()  # no lease of this saver's is left for the rival to wait for (format.md 21)
    other = GitSaver(repo_path)
    real_update_ref = saver.repo.log_update
    raced = []

    def update_ref_after_a_rival(name, old, new):
        if not raced:
            raced.append(put(other, "race", parent=a, values={"x": "rival"}))  # a real, competing put
        return real_update_ref(name, old, new)

    saver.repo.log_update = update_ref_after_a_rival
    try:
        cfg = {"configurable": {"thread_id": "race", "checkpoint_ns": "", "checkpoint_id": a}}
        saver.put_writes(cfg, [("x", "w")], "task")
        b = put(saver, "race", parent=a, values={"x": 2})
    finally:
        saver.repo.log_update = real_update_ref
    fresh = GitSaver(repo_path)
    ids = {t.checkpoint["id"] for t in fresh.list({"configurable": {"thread_id": "race"}})}
    assert ids == {a, b, raced[0]}
    assert fresh.get_tuple(cfg).pending_writes == [("task", "x", "w")]
    assert len(fresh.thread_info("race")["lines"]) == 2  # b and the rival diverge from a
