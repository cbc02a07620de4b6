"""GitSaver under real LangGraph graphs, sync and async: the seed's scenarios."""

from __future__ import annotations

import operator
import subprocess
import sys
import textwrap
import time
from typing import Annotated, TypedDict

import pytest
from langgraph.checkpoint.serde.encrypted import EncryptedSerializer
from langgraph.graph import END, START, StateGraph
from langgraph.types import Command, interrupt

from gitckpt import GitSaver
from gitckpt.git.repo import publish_all


class State(TypedDict):
    foo: str
    bar: Annotated[list[str], operator.add]


def seed_graph(checkpointer):
    """The persistence doc's example: START -> node_a -> node_b -> END."""
    b = StateGraph(State)
    b.add_node("node_a", lambda s: {"foo": "a", "bar": ["a"]})
    b.add_node("node_b", lambda s: {"foo": "b", "bar": ["b"]})
    b.add_edge(START, "node_a")
    b.add_edge("node_a", "node_b")
    b.add_edge("node_b", END)
    return b.compile(checkpointer=checkpointer)


def git(repo, *args) -> str:
    publish_all()  # plain git sees what is published (format.md 21)
    return subprocess.run(["git", "--git-dir", str(repo), *args], check=True, capture_output=True, text=True).stdout


CFG = {"configurable": {"thread_id": "1"}}


def check_seed_history(history):
    assert len(history) == 4
    assert [s.values for s in history] == [
        {"foo": "b", "bar": ["a", "b"]},
        {"foo": "a", "bar": ["a"]},
        {"foo": "", "bar": []},
        {"bar": []},
    ]
    assert [s.next for s in history] == [(), ("node_b",), ("node_a",), ("__start__",)]
    assert [s.metadata["step"] for s in history] == [2, 1, 0, -1]
    assert [s.metadata["source"] for s in history] == ["loop", "loop", "loop", "input"]
    for newer, older in zip(history, history[1:]):
        assert newer.parent_config["configurable"]["checkpoint_id"] == older.config["configurable"]["checkpoint_id"]
    assert history[-1].parent_config is None


def test_seed_example_sync(saver, repo_path):
    graph = seed_graph(saver)
    assert graph.invoke({"foo": ""}, CFG) == {"foo": "b", "bar": ["a", "b"]}
    state = graph.get_state(CFG)
    assert state.values == {"foo": "b", "bar": ["a", "b"]} and state.next == ()
    history = list(graph.get_state_history(CFG))
    check_seed_history(history)
    # get_state of a given checkpoint
    old = graph.get_state(history[1].config)
    assert old.values == {"foo": "a", "bar": ["a"]} and old.next == ("node_b",)
    # and git tells the same story: 4 checkpoint commits on threads/1
    subjects = git(repo_path, "log", "--format=%s", "--grep=Gitckpt: checkpoint", "threads/1").splitlines()
    assert subjects[0] == "step 2 · loop · node_b wrote bar, foo"
    assert subjects[-1] == "step -1 · input"
    assert len(subjects) == 4


async def test_seed_example_async(saver):
    graph = seed_graph(saver)
    assert await graph.ainvoke({"foo": ""}, CFG) == {"foo": "b", "bar": ["a", "b"]}
    history = [s async for s in graph.aget_state_history(CFG)]
    check_seed_history(history)
    assert (await graph.aget_state(history[2].config)).values == {"foo": "", "bar": []}


@pytest.mark.parametrize("durability", ["sync", "async", "exit"])
def test_durability_modes(saver, durability):
    graph = seed_graph(saver)
    graph.invoke({"foo": ""}, CFG, durability=durability)
    history = list(graph.get_state_history(CFG))
    assert history[0].values == {"foo": "b", "bar": ["a", "b"]}
    assert len(history) == (1 if durability == "exit" else 4)


def test_replay_from_old_checkpoint_forks(saver, repo_path):
    graph = seed_graph(saver)
    graph.invoke({"foo": ""}, CFG)
    history = list(graph.get_state_history(CFG))
    before_a = history[2]  # next = node_a
    graph.invoke(None, before_a.config)
    new_history = list(graph.get_state_history(CFG))
    assert len(new_history) == 4 + 3  # the fork checkpoint, then node_a, node_b again
    fork = [s for s in new_history if s.metadata["source"] == "fork"]
    assert len(fork) == 1
    assert fork[0].parent_config["configurable"]["checkpoint_id"] == before_a.config["configurable"]["checkpoint_id"]
    assert graph.get_state(CFG).values == {"foo": "b", "bar": ["a", "b"]}
    # both lines are branches in git
    refs = git(repo_path, "for-each-ref", "--format=%(refname)").split()
    assert "refs/heads/threads/1" in refs
    assert any(r.startswith("refs/heads/forks/1/") for r in refs)
    graph_text = git(repo_path, "log", "--graph", "--all", "--oneline")
    assert "fork of" in graph_text and "|/" in graph_text


def test_update_state_with_reducer_and_as_node(saver):
    graph = seed_graph(saver)
    graph.invoke({"foo": ""}, CFG)
    first = list(graph.get_state_history(CFG))[2]  # before node_a ran
    cfg = graph.update_state(first.config, {"foo": "x", "bar": ["x"]}, as_node="node_a")
    state = graph.get_state(cfg)
    assert state.values == {"foo": "x", "bar": ["x"]}  # bar's reducer appended to []
    assert state.next == ("node_b",)  # as if node_a had produced it
    assert state.metadata["source"] == "update"
    assert state.parent_config["configurable"]["checkpoint_id"] == first.config["configurable"]["checkpoint_id"]
    assert graph.invoke(None, cfg) == {"foo": "b", "bar": ["x", "b"]}
    # the latest is the newest id: the continuation of the update line
    assert graph.get_state(CFG).values == {"foo": "b", "bar": ["x", "b"]}


class Approval(TypedDict):
    text: str
    approved: bool


def hitl_graph(checkpointer):
    def ask(state):
        answer = interrupt({"question": f"approve {state['text']}?"})
        return {"approved": answer == "yes"}

    b = StateGraph(Approval)
    b.add_node("ask", ask)
    b.add_edge(START, "ask")
    b.add_edge("ask", END)
    return b.compile(checkpointer=checkpointer)


def test_interrupt_then_resume(saver):
    graph = hitl_graph(saver)
    out = graph.invoke({"text": "deploy", "approved": False}, CFG)
    assert out["__interrupt__"][0].value == {"question": "approve deploy?"}
    state = graph.get_state(CFG)
    assert state.next == ("ask",)
    assert state.tasks[0].interrupts[0].value == {"question": "approve deploy?"}
    assert graph.invoke(Command(resume="yes"), CFG) == {"text": "deploy", "approved": True}
    assert graph.get_state(CFG).next == ()


async def test_interrupt_then_resume_async(saver):
    graph = hitl_graph(saver)
    out = await graph.ainvoke({"text": "deploy", "approved": False}, CFG)
    assert "__interrupt__" in out
    assert await graph.ainvoke(Command(resume="no"), CFG) == {"text": "deploy", "approved": False}


class Outer(TypedDict):
    log: Annotated[list[str], operator.add]


def nested_graph(checkpointer):
    inner = StateGraph(Outer)
    inner.add_node("inner_step", lambda s: {"log": ["inner"]})
    inner.add_edge(START, "inner_step")
    inner.add_edge("inner_step", END)
    outer = StateGraph(Outer)
    outer.add_node("before", lambda s: {"log": ["before"]})
    outer.add_node("sub", inner.compile())
    outer.add_edge(START, "before")
    outer.add_edge("before", "sub")
    outer.add_edge("sub", END)
    return outer.compile(checkpointer=checkpointer)


def test_subgraph_namespaces_are_their_own_lines(saver, repo_path):
    graph = nested_graph(saver)
    # same answer as InMemorySaver: the subgraph returns its whole state, the reducer appends it
    assert graph.invoke({"log": []}, CFG) == {"log": ["before", "before", "inner"]}
    namespaces = {t.config["configurable"]["checkpoint_ns"] for t in saver.list(CFG)}
    sub_ns = [ns for ns in namespaces if ns]
    assert sub_ns and all(ns.startswith("sub:") for ns in sub_ns)
    assert "" in namespaces
    refs = git(repo_path, "for-each-ref", "--format=%(refname)").split()
    assert any(r.startswith("refs/heads/subgraphs/1/sub") for r in refs)
    # the subgraph's own history is listed by its namespace
    sub_hist = list(saver.list({"configurable": {"thread_id": "1", "checkpoint_ns": sub_ns[0]}}))
    assert sub_hist and all(t.config["configurable"]["checkpoint_ns"] == sub_ns[0] for t in sub_hist)
    assert list(saver.list({"configurable": {"thread_id": "1", "checkpoint_ns": ""}}))[0].checkpoint["id"] == (
        graph.get_state(CFG).config["configurable"]["checkpoint_id"]
    )


def interrupting_subgraph(checkpointer):
    def inner_ask(state):
        return {"log": [interrupt("inner?")]}

    inner = StateGraph(Outer)
    inner.add_node("inner_ask", inner_ask)
    inner.add_edge(START, "inner_ask")
    inner.add_edge("inner_ask", END)
    outer = StateGraph(Outer)
    outer.add_node("sub", inner.compile())
    outer.add_edge(START, "sub")
    outer.add_edge("sub", END)
    return outer.compile(checkpointer=checkpointer)


def test_subgraph_interrupt_state(saver):
    graph = interrupting_subgraph(saver)
    graph.invoke({"log": []}, CFG)
    state = graph.get_state(CFG, subgraphs=True)
    sub_state = state.tasks[0].state
    assert sub_state.config["configurable"]["checkpoint_ns"].startswith("sub:")
    assert sub_state.next == ("inner_ask",)
    assert graph.invoke(Command(resume="answered"), CFG) == {"log": ["answered"]}


class Fan(TypedDict):
    results: Annotated[list[str], operator.add]


def test_failed_parallel_node_resume_does_not_rerun_successes(saver):
    calls = {"ok": 0, "flaky": 0}
    broken = {"on": True}

    def ok(state):
        calls["ok"] += 1
        return {"results": ["ok"]}

    def ok_is_stored() -> bool:
        tup = saver.get_tuple(CFG)
        return tup is not None and any(c == "results" for _, c, _ in tup.pending_writes or ())

    def flaky(state):
        calls["flaky"] += 1
        if broken["on"]:
            # Fail only once "ok"'s writes are stored: if "flaky" raises first, LangGraph
            # (every version, InMemorySaver too) may shut its executor down before it
            # saves them, and "ok" then runs again on resume; that race is not the saver's.
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and not ok_is_stored():
                time.sleep(0.01)
            raise RuntimeError("boom")
        return {"results": ["flaky"]}

    b = StateGraph(Fan)
    b.add_node("ok", ok)
    b.add_node("flaky", flaky)
    b.add_edge(START, "ok")
    b.add_edge(START, "flaky")
    b.add_edge("ok", END)
    b.add_edge("flaky", END)
    graph = b.compile(checkpointer=saver)
    with pytest.raises(RuntimeError, match="boom"):
        graph.invoke({"results": []}, CFG, durability="sync")
    state = graph.get_state(CFG)
    assert state.next == ("flaky",)  # "ok" already has its writes stored (as with InMemorySaver)
    writes = saver.get_tuple(CFG).pending_writes
    assert ("results", ["ok"]) in [(c, v) for _, c, v in writes]
    assert any(c == "__error__" for _, c, v in writes)
    broken["on"] = False
    assert sorted(graph.invoke(None, CFG)["results"]) == ["flaky", "ok"]
    assert calls == {"ok": 1, "flaky": 2}


def test_thread_continues_in_a_new_process(saver, repo_path):
    graph = seed_graph(saver)
    graph.invoke({"foo": ""}, CFG)
    saver.close()
    script = textwrap.dedent(
        f"""
        import json, operator
        from typing import Annotated, TypedDict
        from langgraph.graph import StateGraph, START, END
        from gitckpt import GitSaver

        class State(TypedDict):
            foo: str
            bar: Annotated[list[str], operator.add]

        b = StateGraph(State)
        b.add_node("node_a", lambda s: {{"foo": "a", "bar": ["a"]}})
        b.add_node("node_b", lambda s: {{"foo": "b", "bar": ["b"]}})
        b.add_edge(START, "node_a"); b.add_edge("node_a", "node_b"); b.add_edge("node_b", END)
        with GitSaver.from_conn_string({str(repo_path)!r}) as saver:
            g = b.compile(checkpointer=saver)
            cfg = {{"configurable": {{"thread_id": "1"}}}}
            before = g.get_state(cfg).values
            after = g.invoke({{"foo": "again"}}, cfg)
            print(json.dumps([before, after, len(list(g.get_state_history(cfg)))]))
        """
    )
    out = subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, text=True).stdout
    import json

    before, after, n = json.loads(out)
    assert before == {"foo": "b", "bar": ["a", "b"]}
    assert after == {"foo": "b", "bar": ["a", "b", "a", "b"]}
    assert n == 8
    # and this process sees what the other one wrote
    fresh = GitSaver(repo_path)
    assert fresh.get_tuple(CFG).checkpoint["channel_values"]["bar"] == ["a", "b", "a", "b"]


def test_encrypted_serializer(repo_path):
    serde = EncryptedSerializer.from_pycryptodome_aes(key=b"0123456789abcdef")
    saver = GitSaver(repo_path, serde=serde)
    graph = seed_graph(saver)
    graph.invoke({"foo": "secret"}, CFG)
    assert graph.get_state(CFG).values == {"foo": "b", "bar": ["a", "b"]}
    # nothing in the repository is readable without the key
    publish_all()  # plain git sees what is published (format.md 21)
    blob = subprocess.run(
        ["git", "--git-dir", str(repo_path), "cat-file", "blob", "threads/1:channels/foo"], check=True, capture_output=True
    ).stdout
    assert blob.startswith(b"msgpack+aes\n") and b"secret" not in blob
    shown = git(repo_path, "log", "-p", "threads/1")
    assert '"secret"' not in shown and "encrypted" in shown
    # a saver without the key cannot decode, and says which checkpoint failed
    from gitckpt import CorruptObjectError

    with pytest.raises(CorruptObjectError, match="thread '1' checkpoint"):
        GitSaver(repo_path).get_tuple(CFG)


def test_long_message_list_round_trips_in_chunks(saver, repo_path):
    from langchain_core.messages import AIMessage, HumanMessage
    from langgraph.graph import MessagesState

    b = StateGraph(MessagesState)
    b.add_node("bot", lambda s: {"messages": [AIMessage(content=f"reply {len(s['messages'])}")]})
    b.add_edge(START, "bot")
    b.add_edge("bot", END)
    graph = b.compile(checkpointer=saver)
    for i in range(60):
        graph.invoke({"messages": [HumanMessage(content=f"hi {i}")]}, CFG)
    msgs = graph.get_state(CFG).values["messages"]
    assert len(msgs) == 120
    assert [m.content for m in msgs[:3]] == ["hi 0", "reply 1", "hi 1"]
    assert msgs[-1].content == "reply 119"
    # stored as groups of chunks; an older checkpoint still has its shorter list
    tree = git(repo_path, "ls-tree", "-r", "--name-only", "threads/1", "channels/messages")
    assert "channels/messages/0000/00" in tree.split()
    hist = list(graph.get_state_history(CFG))
    assert [len(s.values.get("messages", [])) for s in hist[:4]] == [120, 119, 118, 118]
    # a fresh saver (no caches) reads the same list
    assert [m.content for m in GitSaver(repo_path).get_tuple(CFG).checkpoint["channel_values"]["messages"]] == [
        m.content for m in msgs
    ]


def test_git_log_p_and_show_print_decoded_values(saver, repo_path):
    from langchain_core.messages import AIMessage, HumanMessage
    from langgraph.graph import MessagesState

    b = StateGraph(MessagesState)
    b.add_node("bot", lambda s: {"messages": [AIMessage(content="Hello Bob!")]})
    b.add_edge(START, "bot")
    b.add_edge("bot", END)
    graph = b.compile(checkpointer=saver)
    graph.invoke({"messages": [HumanMessage(content="my name is Bob")]}, CFG)
    log = git(repo_path, "log", "-p", "threads/1")
    assert "Binary files" not in log
    assert '+    "content": "Hello Bob!"' in log  # the new message, decoded, as a diff line
    assert '"_type": "AIMessage"' in log
    assert "# pending write: channel 'messages'" in log  # a write commit shows its write
    # the latest checkpoint's commit, found by its trailer (writes may land after it on the branch)
    latest = graph.get_state(CFG).config["configurable"]["checkpoint_id"]
    commit = git(repo_path, "log", "--format=%H", f"--grep=Checkpoint-Id: {latest}", "threads/1").split()[0]
    show = git(repo_path, "show", commit)  # its diff, decoded
    assert "Binary files" not in show and '"content": "Hello Bob!"' in show
    blob = git(repo_path, "show", "--textconv", f"{commit}:channels/messages")  # one file, decoded
    assert "my name is Bob" in blob and "Hello Bob!" in blob
    # the subject says which node wrote which channel
    assert git(repo_path, "log", "-1", "--format=%s", commit).strip() == "step 1 · loop · bot wrote messages"
