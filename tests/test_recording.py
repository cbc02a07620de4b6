"""Recording model and tool calls, offline replay and ``gitckpt reproduce`` (issue 13).

Real graphs (tests/agent_app.py): a chat model that answers at random and logs
each call to a file, a tool that logs each run to a file. Reproductions run in
subprocesses (``python -m gitckpt reproduce``), so a thread recorded in this
process is reproduced in another one.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from langgraph.types import Command

from gitckpt import GitSaver, ReplayMissError
from tests import agent_app

ROOT = Path(__file__).resolve().parent.parent
APP = str(ROOT / "tests" / "agent_app.py")


@pytest.fixture
def logs(tmp_path: Path, monkeypatch):
    """The model-call and tool-run log files, empty; returns a reader of both."""
    count, tools = tmp_path / "model-calls.txt", tmp_path / "tool-runs.txt"
    monkeypatch.setenv("AGENT_COUNT", str(count))
    monkeypatch.setenv("AGENT_TOOLS", str(tools))
    for var in ("AGENT_SYSTEM", "AGENT_ROUTE", "AGENT_CITY_SUFFIX", "AGENT_RESEARCH_PROMPT", "AGENT_NOTE_SUFFIX",
                "AGENT_INNER_VALUE"):
        monkeypatch.delenv(var, raising=False)

    class Logs:
        def clear(self) -> None:
            count.write_text("")
            tools.write_text("")

        def models(self) -> int:
            return len(count.read_text().splitlines()) if count.exists() else 0

        def tools(self) -> int:
            return len(tools.read_text().splitlines()) if tools.exists() else 0

    logs = Logs()
    logs.clear()
    return logs


def cfg(thread: str) -> dict:
    return {"configurable": {"thread_id": thread}}


def gitckpt(repo: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gitckpt", "--repo", str(repo), *args], capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, cwd=ROOT, timeout=120)


def record_chat(repo: Path) -> list:
    saver = GitSaver(repo, record=True)
    graph = agent_app.builder.compile(checkpointer=saver)
    graph.invoke({"messages": [("user", "what's the weather in Paris and Rome")]}, cfg("1"))
    graph.update_state(cfg("1"), {"messages": [("user", "(a note added by update_state)")]}, as_node="agent")
    out = graph.invoke({"messages": [("user", "thanks")]}, cfg("1"))
    saver.close()
    return out["messages"]


def contents(messages: list) -> list:
    return [(m.type, m.content, [c["args"] for c in getattr(m, "tool_calls", [])]) for m in messages]


def test_record_stores_each_call_with_its_step_node_and_answer(repo_path, logs):
    messages = record_chat(repo_path)
    assert logs.models() == 3 and logs.tools() == 2
    saver = GitSaver(repo_path)
    calls = saver.recorded_calls("1")
    assert [(c["kind"], c["node"], c["step"]) for c in calls if c["kind"] == "model"] == [
        ("model", "agent", 1), ("model", "agent", 3), ("model", "agent", 7)]
    tools = sorted(json.dumps(c["args"]) for c in calls if c["kind"] == "tool")
    assert tools == ['{"city": "Paris"}', '{"city": "Rome"}']
    assert {c["node"] for c in calls if c["kind"] == "tool"} == {"tools"}
    first = next(c for c in calls if c["kind"] == "model")
    assert first["summary"].startswith(messages[1].content[:20])
    assert first["settings"]["temperature"] == 0.7 and "api_key" not in first["settings"]
    # the prompt points at the checkpoint's messages instead of copying them
    from gitckpt.checkpoint.recording import digest, resolve_input

    last = [c for c in calls if c["kind"] == "model"][-1]
    assert last["prompt"][0] == ["msg", 0] and last["prompt"][1][0] == "ref" and len(last["inline"]) <= 2
    assert sum(seg[3] - seg[2] for seg in last["prompt"] if seg[0] == "ref") >= 6
    # read back through the references, every prompt is what was asked (the same digest)
    for c in calls:
        asked = resolve_input(saver, c)
        assert digest(asked) == c["digest"]
        if c["kind"] == "model":
            assert asked["messages"][0] == {"type": "system", "content": "You are a helpful weather bot."}
    # pending writes read as before: calls are not writes
    for t in saver.list(cfg("1")):
        assert all(not isinstance(w[2], dict) or "digest" not in w[2] for w in t.pending_writes)
    saver.close()


def test_reproduce_in_another_process_makes_no_call(repo_path, logs):
    record_chat(repo_path)
    logs.clear()
    r = gitckpt(repo_path, "reproduce", "1", "--graph", f"{APP}:builder")
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.strip().splitlines() == [
        "reproduced 9/9 checkpoints of thread 1 (3 runs; 3 model calls and 2 tool calls answered from the recording)"]
    assert logs.models() == 0 and logs.tools() == 0
    saver = GitSaver(repo_path)
    assert saver.threads() == ["1"]  # the scratch thread is gone
    saver.close()
    r = gitckpt(repo_path, "reproduce", "1", "--graph", f"{APP}:builder", "--json", "--keep")
    out = json.loads(r.stdout)
    assert r.returncode == 0 and out["ok"] and out["divergence"] is None and out["kept"]
    assert out["answered"] == {"model": 3, "tool": 2} and out["compared"] == 9
    assert out["scratch_thread"] in GitSaver(repo_path).threads()


@pytest.mark.parametrize(
    "env, node, what",
    [
        ({"AGENT_SYSTEM": "You are a pirate."}, "agent", "You are a pirate."),
        ({"AGENT_ROUTE": "end"}, "agent", "the next nodes are [], recorded ['tools']"),
    ],
    ids=["system-prompt", "route"],
)
def test_reproduce_names_the_node_of_a_change(repo_path, logs, env, node, what):
    record_chat(repo_path)
    logs.clear()
    r = gitckpt(repo_path, "reproduce", "1", "--graph", f"{APP}:builder", env=env)
    assert r.returncode == 1, r.stdout + r.stderr
    first = r.stdout.splitlines()[0]
    assert first.startswith(f"first divergence at step 1, node {node}: "), r.stdout
    assert what in r.stdout
    assert logs.models() == 0 and logs.tools() == 0
    r = gitckpt(repo_path, "reproduce", "1", "--graph", f"{APP}:builder", "--json", env=env)
    out = json.loads(r.stdout)
    assert r.returncode == 1 and out["divergence"]["node"] == node and out["divergence"]["step"] == 1


def test_fan_out_subgraphs_interrupt_and_resume_reproduce(repo_path, logs):
    saver = GitSaver(repo_path, record=True)
    graph = agent_app.fan_builder.compile(checkpointer=saver)
    first = graph.invoke({"topics": ["a", "b", "c", "d"]}, cfg("fan"))
    assert "__interrupt__" in first
    done = graph.invoke(Command(resume="Oslo"), cfg("fan"))
    assert done["approved"].startswith("Oslo / ")
    saver.close()
    assert logs.models() == 4 and logs.tools() == 1
    logs.clear()
    r = gitckpt(repo_path, "reproduce", "fan", "--graph", f"{APP}:fan_builder")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "4 model calls and 1 tool call answered" in r.stdout
    assert logs.models() == 0 and logs.tools() == 0
    # a tool asked something else: the node that called it is named, with the arguments
    r = gitckpt(repo_path, "reproduce", "fan", "--graph", f"{APP}:fan_builder", env={"AGENT_CITY_SUFFIX": "-x"})
    assert r.returncode == 1, r.stdout + r.stderr
    assert r.stdout.startswith("first divergence at step 2, node review: ")
    assert "tool 'get_weather' was called with arguments it was not called with before" in r.stdout
    assert '"Oslo-x"' in r.stdout and logs.tools() == 0


def test_offline_replay_on_a_new_thread_gives_the_recorded_answers(repo_path, logs):
    recorded = record_chat(repo_path)
    logs.clear()
    saver = GitSaver(repo_path)
    graph = agent_app.builder.compile(checkpointer=saver)
    with saver.replaying("1") as replay:
        graph.invoke({"messages": [("user", "what's the weather in Paris and Rome")]}, cfg("2"))
        graph.update_state(cfg("2"), {"messages": [("user", "(a note added by update_state)")]}, as_node="agent")
        out = graph.invoke({"messages": [("user", "thanks")]}, cfg("2"))
    assert contents(out["messages"]) == contents(recorded)
    assert replay.answered == {"model": 3, "tool": 2} and logs.models() == 0 and logs.tools() == 0
    # a question never asked: the error names the node and the nearest recorded call
    with pytest.raises(ReplayMissError) as err, saver.replaying("1"):
        graph.invoke({"messages": [("user", "what's the weather in Lima")]}, cfg("3"))
    assert err.value.node == "agent" and err.value.kind == "model" and err.value.step == 1
    assert "nearest recorded call: model 'random-1' of node 'agent' at step 1" in str(err.value)
    assert '+   "content": "what\'s the weather in Lima",' in err.value.diff
    assert logs.models() == 0
    # on_miss="live": asked for real, and recorded
    with saver.replaying("1", on_miss="live") as replay:
        graph.invoke({"messages": [("user", "what's the weather in Lima")]}, cfg("4"))
    assert logs.models() == 2 and logs.tools() == 1
    assert replay.live == {"model": 2, "tool": 1}
    assert [c["kind"] for c in saver.recorded_calls("4")] == ["model", "tool", "model"]
    saver.close()


def test_cli_replay_offline_from_an_old_checkpoint(repo_path, logs):
    record_chat(repo_path)
    logs.clear()
    saver = GitSaver(repo_path)
    first_input = [t for t in saver.list(cfg("1")) if t.metadata["step"] == 0][0]
    saver.close()
    cid = first_input.config["configurable"]["checkpoint_id"]
    r = gitckpt(repo_path, "replay", "1", cid, "--to", "1-b", "--graph", f"{APP}:builder", "--offline")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Offline: 2 model call(s) and 2 tool call(s) answered from the recording of thread 1" in r.stdout
    assert logs.models() == 0 and logs.tools() == 0
    r = gitckpt(repo_path, "replay", "1", "--to", "1-c", "--graph", f"{APP}:builder", "--offline",
                "--input", '{"messages": [{"role": "user", "content": "hello?"}]}')
    assert r.returncode == 1 and "offline replay: no recorded answer at step 10, node 'agent'" in r.stderr
    assert logs.models() == 0


def test_log_show_and_git_log_show_the_calls(repo_path, logs):
    record_chat(repo_path)
    r = gitckpt(repo_path, "log", "1", "--json")
    rows = {row["step"]: row for row in json.loads(r.stdout)}
    assert rows[1]["calls"] == 1 and rows[2]["calls"] == 2 and rows[0]["calls"] == 0
    r = gitckpt(repo_path, "log", "1", env={"COLUMNS": "200"})
    assert "tools wrote messages · 2 calls recorded" in r.stdout
    step2 = rows[2]["checkpoint_id"]
    r = gitckpt(repo_path, "show", "1", step2, "--json")
    shown = json.loads(r.stdout)["calls"]  # the step that made it, then the tasks that ran from it
    assert [(c["kind"], c["step"]) for c in shown] == [("tool", 2), ("tool", 2), ("model", 3)]
    assert sorted(c["args"]["city"] for c in shown[:2]) == ["Paris", "Rome"]
    assert all(" in " in c["summary"] for c in shown[:2])
    r = gitckpt(repo_path, "show", "1", step2)
    assert "Recorded calls" in r.stdout and "tool get_weather" in r.stdout
    log = subprocess.run(["git", "--git-dir", str(repo_path), "log", "-p", "threads/1"], capture_output=True,
                         text=True, check=True).stdout
    assert "# recorded model call 'random-1': node agent, step 1" in log
    assert "# recorded tool call 'get_weather': node tools, step 2" in log


def test_no_secret_in_any_object(repo_path, logs):
    saver = GitSaver(repo_path, record=True)
    graph = agent_app.leaky_builder.compile(checkpointer=saver)
    graph.invoke({"messages": [("user", "what's the weather in Paris")]}, cfg("1"))
    saver.close()
    calls = GitSaver(repo_path).recorded_calls("1")
    settings = [c["settings"] for c in calls if c["kind"] == "model"][0]
    assert "api_key" not in settings and settings["endpoint"] == "https://api.example/v1?key=<secret>"
    assert settings["default_headers"] == {"X-Trace": "on"} and settings["note"] == "the key is <secret>"
    blobs = subprocess.run(["git", "--git-dir", str(repo_path), "cat-file", "--batch-all-objects", "--batch"],
                           capture_output=True, check=True).stdout
    assert b"gitckpt-call" in blobs  # the calls are there (loose or packed objects, decompressed)
    assert agent_app.SECRET_KEY.encode() not in blobs


def test_streaming_model_and_async_graphs(repo_path, logs):
    saver = GitSaver(repo_path, record=True)
    streaming = agent_app.stream_builder.compile(checkpointer=saver)
    out = streaming.invoke({"messages": [("user", "hi")]}, cfg("s"))
    # LangGraph's "messages" mode makes an invoke stream its tokens
    chat = agent_app.builder.compile(checkpointer=saver)
    chunks = list(chat.stream({"messages": [("user", "weather in Oslo")]}, cfg("m"), stream_mode="messages"))
    assert len(chunks) > 3

    async def run_async() -> None:
        graph = agent_app.async_builder.compile(checkpointer=saver)
        await graph.ainvoke({"messages": [("user", "weather in Oslo and Bergen")]}, cfg("a"))
        async for _ in graph.astream({"messages": [("user", "and now?")]}, cfg("a")):
            pass

    asyncio.run(run_async())
    saver.close()
    recorded = GitSaver(repo_path).recorded_calls("s")
    assert recorded[0]["summary"] == out["messages"][-1].content
    assert [c["kind"] for c in GitSaver(repo_path).recorded_calls("a")] == ["model", "tool", "tool", "model", "model",
                                                                             "model"]
    logs.clear()
    for thread, attr in (("s", "stream_builder"), ("m", "builder"), ("a", "async_builder")):
        r = gitckpt(repo_path, "reproduce", thread, "--graph", f"{APP}:{attr}")
        assert r.returncode == 0, (thread, r.stdout + r.stderr)
    assert logs.models() == 0 and logs.tools() == 0

    async def replay_async() -> list:
        saver = GitSaver(repo_path)
        graph = agent_app.async_builder.compile(checkpointer=saver)
        with saver.replaying("a"):
            out = await graph.ainvoke({"messages": [("user", "weather in Oslo and Bergen")]}, cfg("a2"))
            async for _ in graph.astream({"messages": [("user", "and now?")]}, cfg("a2"), stream_mode="messages"):
                pass
        return out["messages"]

    again = asyncio.run(replay_async())
    assert logs.models() == 0 and logs.tools() == 0
    assert again[-1].content.startswith("summary: answer ")


def test_calls_travel_with_the_thread(repo_path, logs, tmp_path, server):
    record_chat(repo_path)
    saver = GitSaver(repo_path)
    saver.copy_thread("1", "copy")
    last = saver.get_tuple(cfg("1")).config["configurable"]["checkpoint_id"]
    step2 = [t for t in saver.list(cfg("1")) if t.metadata["step"] == 1][0].config["configurable"]["checkpoint_id"]
    saver.fork("1", step2, "forked")
    assert len(saver.recorded_calls("copy")) == 5
    # a fork carries the checkpoint's own writes, and so the calls of the tasks that ran from it
    assert [c["kind"] for c in saver.recorded_calls("forked") if c["step"] == 2] == ["tool", "tool"]
    saver.prune(["copy"])  # keep_latest: only the latest checkpoint (its own calls: none)
    assert saver.recorded_calls("copy") == []
    saver.close()
    assert last
    # push to a git daemon, clone with plain git, reproduce there
    r = gitckpt(repo_path, "push", server["url"])
    assert r.returncode == 0, r.stdout + r.stderr
    clone = tmp_path / "clone.git"
    subprocess.run(["git", "clone", "-q", "--bare", server["url"], str(clone)], check=True)
    logs.clear()
    r = gitckpt(clone, "reproduce", "1", "--graph", f"{APP}:builder")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "3 model calls and 2 tool calls answered" in r.stdout
    assert logs.models() == 0 and logs.tools() == 0
    # deleting the threads and collecting garbage drops every recorded call
    saver = GitSaver(repo_path)
    for thread in saver.threads():
        saver.delete_thread(thread)
    saver.close()
    subprocess.run(["git", "--git-dir", str(repo_path), "gc", "-q", "--prune=now"], check=True)
    subprocess.run(["git", "--git-dir", str(repo_path), "reflog", "expire", "--expire=now", "--all"], check=True)
    subprocess.run(["git", "--git-dir", str(repo_path), "gc", "-q", "--prune=now"], check=True)
    blobs = subprocess.run(["git", "--git-dir", str(repo_path), "cat-file", "--batch-all-objects", "--batch"],
                           capture_output=True, check=True).stdout
    assert b"gitckpt-call" not in blobs


def test_a_recording_saver_ignores_other_savers_runs(repo_path, logs, tmp_path):
    from langgraph.checkpoint.memory import InMemorySaver

    recording = GitSaver(repo_path, record=True)
    other = GitSaver(tmp_path / "other.git")
    agent_app.builder.compile(checkpointer=other).invoke({"messages": [("user", "hi")]}, cfg("x"))
    agent_app.builder.compile(checkpointer=InMemorySaver()).invoke({"messages": [("user", "hi")]}, cfg("y"))
    assert other.recorded_calls("x") == [] and recording.threads() == []
    assert recording._recording._pending == {}
    recording.close()
    other.close()


def test_create_agent_tool_calls_as_parallel_tasks(repo_path, logs):
    agents = pytest.importorskip("langchain.agents")  # the `test` extra installs langchain
    saver = GitSaver(repo_path, record=True)
    agent = agents.create_agent(agent_app.RandomModel(), tools=[agent_app.get_weather],
                                system_prompt="You are a weather bot.", checkpointer=saver)
    out = agent.invoke({"messages": [("user", "weather in Paris and Rome and Oslo")]}, cfg("1"))
    assert [m.type for m in out["messages"]] == ["human", "ai", "tool", "tool", "tool", "ai"]
    calls = saver.recorded_calls("1")
    assert sorted((c["kind"], c["step"]) for c in calls) == [("model", 1), ("model", 3), ("tool", 2), ("tool", 2),
                                                             ("tool", 2)]
    assert len({c["task"] for c in calls if c["kind"] == "tool"}) == 3  # one Send task per tool call
    saver.close()
    logs.clear()
    for _ in range(2):  # the three tool tasks run in any order
        plain = GitSaver(repo_path)
        again = agents.create_agent(agent_app.RandomModel(), tools=[agent_app.get_weather],
                                    system_prompt="You are a weather bot.", checkpointer=plain)
        from gitckpt.reproduce import reproduce

        result = reproduce(plain, again, "1")
        assert result.ok, result.summary() + "\n" + (result.divergence.diff if result.divergence else "")
        assert result.answered == {"model": 2, "tool": 3}
        plain.close()
    assert logs.models() == 0 and logs.tools() == 0


def test_recording_rows_of_the_benchmark(tmp_path):
    """scripts/bench.py's recording rows: each subject in its own process, the numbers
    the issue asks for (no timing is asserted)."""
    out = tmp_path / "bench.json"
    r = subprocess.run([sys.executable, "scripts/bench.py", "--quick", "--only", "recording", "--json", str(out),
                        "--workdir", str(tmp_path / "work")], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    data = json.loads(out.read_text())
    rows = data["scenarios"]
    assert set(rows) == {"record_turn", "record_disk", "reproduce_thread"}
    for row in rows.values():
        assert row["gitckpt"] > 0 and row["baseline"] > 0 and isinstance(row["met"], bool)
        assert abs(row["ratio_vs_baseline"] - row["gitckpt"] / row["baseline"]) < 1e-9
    assert rows["record_turn"]["unit"] == "ms/turn" and rows["record_turn"]["target"] == "record/plain <= 1.1"
    assert rows["record_disk"]["target"] == "record/plain <= 1.3" and rows["record_turn"]["cpu_ms"]["ratio"] > 0
    assert rows["reproduce_thread"]["summary"] == (
        "reproduced 60/60 checkpoints of thread chat (20 runs; 20 model calls and 0 tool calls answered from the "
        "recording)")
    pids = data["info"]["pids"]["recording"]
    assert set(pids) == {"plain", "record", "reproduce"}
    assert len({p for ps in pids.values() for p in ps}) == 3
    assert "record_turn" in r.stdout and "reproduce / run" in r.stdout


def test_resume_with_a_map_of_interrupt_ids(repo_path, logs):
    saver = GitSaver(repo_path, record=True)
    graph = agent_app.approvals_builder.compile(checkpointer=saver)
    paused = graph.invoke({"items": ["a", "b", "c"]}, cfg("ok"))["__interrupt__"]
    answers = {i.id: f"yes to {i.value}" for i in paused}
    out = graph.invoke(Command(resume=answers), cfg("ok"))
    assert sorted(o.split(":")[0] for o in out["out"]) == [f"{x}=yes to approve {x}?" for x in "abc"]
    saver.close()
    logs.clear()
    r = gitckpt(repo_path, "reproduce", "ok", "--graph", f"{APP}:approvals_builder")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "(2 runs; 3 model calls and 0 tool calls answered" in r.stdout
    assert logs.models() == 0


def test_concurrent_threads_file_their_own_calls(repo_path, logs):
    from concurrent.futures import ThreadPoolExecutor

    from gitckpt.checkpoint.recording import resolve_input
    from gitckpt.reproduce import reproduce

    saver = GitSaver(repo_path, record=True)
    graph = agent_app.builder.compile(checkpointer=saver)
    cities = ["Paris", "Rome", "Oslo", "Lima", "Kyiv", "Quito"]

    def chat(city: str) -> None:
        graph.invoke({"messages": [("user", f"weather in {city}")]}, cfg(city))
        graph.invoke({"messages": [("user", f"and {city} tomorrow?")]}, cfg(city))

    with ThreadPoolExecutor(6) as pool:
        list(pool.map(chat, cities))
    assert logs.models() == 18 and logs.tools() == 6
    for city in cities:
        calls = saver.recorded_calls(city)
        assert [c["kind"] for c in calls] == ["model", "tool", "model", "model"]
        assert [c["args"] for c in calls if c["kind"] == "tool"] == [{"city": city}]
        for c in calls:
            if c["kind"] == "model":
                asked = resolve_input(saver, c)
                humans = [m["content"] for m in asked["messages"] if m["type"] == "human"]
                assert all(city in h for h in humans), (city, humans)
    logs.clear()
    for city in cities:
        result = reproduce(saver, graph, city)
        assert result.ok and result.answered == {"model": 3, "tool": 1}, result.summary()
    assert logs.models() == 0 and logs.tools() == 0
    saver.close()


def test_batch_inside_a_node_is_recorded_and_answered(repo_path, logs):
    from langgraph.graph import START, StateGraph

    from gitckpt.reproduce import reproduce

    model = agent_app.RandomModel()

    def poll(state: agent_app.State) -> dict:
        answers = model.batch([[("user", f"opinion {i}")] for i in range(4)])
        return {"messages": [("ai", " | ".join(a.content for a in answers))]}

    b = StateGraph(agent_app.State)
    b.add_node("poll", poll)
    b.add_edge(START, "poll")
    saver = GitSaver(repo_path, record=True)
    graph = b.compile(checkpointer=saver)
    out = graph.invoke({"messages": [("user", "poll")]}, cfg("b"))
    assert [c["kind"] for c in saver.recorded_calls("b")] == ["model"] * 4
    logs.clear()
    result = reproduce(saver, graph, "b")
    assert result.ok and result.answered["model"] == 4, result.summary()
    with saver.replaying("b"):
        again = graph.invoke({"messages": [("user", "poll")]}, cfg("b2"))
    assert again["messages"][-1].content == out["messages"][-1].content
    assert logs.models() == 0
    saver.close()


def record_fan(repo: Path, topics: list[str]) -> dict[str, str]:
    """The fan graph's thread "fan" (a subgraph per topic, each asking the model);
    returns ``{topic: its subgraph namespace}``."""
    saver = GitSaver(repo, record=True)
    graph = agent_app.fan_builder.compile(checkpointer=saver)
    graph.invoke({"topics": topics}, cfg("fan"))
    graph.invoke(Command(resume="Oslo"), cfg("fan"))
    saver.close()
    saver = GitSaver(repo)
    out = {}
    for ns in saver.indexes.get("fan").namespaces():
        if ns:
            first = min(saver.list({"configurable": {"thread_id": "fan", "checkpoint_ns": ns}}),
                        key=lambda t: t.config["configurable"]["checkpoint_id"])
            out[first.checkpoint["channel_values"]["__start__"]["topic"]] = ns
    saver.close()
    return out


def test_reproduce_compares_subgraph_checkpoints(repo_path, logs):
    spaces = record_fan(repo_path, ["a", "b", "c"])
    assert sorted(spaces) == ["a", "b", "c"] and all(ns.startswith("worker:") for ns in spaces.values())
    logs.clear()
    r = gitckpt(repo_path, "reproduce", "fan", "--graph", f"{APP}:fan_builder")
    assert r.returncode == 0, r.stdout + r.stderr
    # each worker subgraph: input, step 0, step 1
    assert r.stdout.startswith("reproduced 4/4 checkpoints of thread fan and 9 subgraph checkpoints in 3 namespaces ")
    r = gitckpt(repo_path, "reproduce", "fan", "--graph", f"{APP}:fan_builder", "--json")
    out = json.loads(r.stdout)
    assert r.returncode == 0 and out["ok"] and out["compared"] == 4
    assert out["subgraph_checkpoints"] == 9 and out["namespaces"] == 3 and out["answered"]["model"] == 3
    assert logs.models() == 0 and logs.tools() == 0
    assert GitSaver(repo_path).threads() == ["fan"]


@pytest.mark.parametrize(
    "env, what",
    [
        ({"AGENT_NOTE_SUFFIX": "-x"}, "channel 'notes' differs"),
        ({"AGENT_RESEARCH_PROMPT": "an essay on"}, "the model was asked something it was not asked before"),
    ],
    ids=["written-value", "prompt"],
)
def test_reproduce_names_the_subgraph_namespace_of_a_change(repo_path, logs, env, what):
    spaces = record_fan(repo_path, ["a", "b"])
    logs.clear()
    r = gitckpt(repo_path, "reproduce", "fan", "--graph", f"{APP}:fan_builder", "--json", env=env)
    assert r.returncode == 1, r.stdout + r.stderr
    d = json.loads(r.stdout)["divergence"]
    assert d["ns"] in spaces.values() and d["node"] == "research" and d["step"] == 1 and what in d["message"]
    if "AGENT_NOTE_SUFFIX" in env:  # the first Send's subgraph is reported, not the root's later checkpoint
        assert d["ns"] == spaces["a"] and '"a-x: answer' in d["diff"] and d["what"] == "channel"
    r = gitckpt(repo_path, "reproduce", "fan", "--graph", f"{APP}:fan_builder", env=env)
    assert r.returncode == 1
    assert r.stdout.startswith(f"first divergence at step 1, node research in namespace {d['ns']}: "), r.stdout
    assert what in r.stdout and logs.models() == 0
    # --ns: only that subgraph's checkpoints are compared (the root's differ too, unreported)
    if "AGENT_NOTE_SUFFIX" in env:
        r = gitckpt(repo_path, "reproduce", "fan", "--graph", f"{APP}:fan_builder", "--ns", spaces["b"][:15],
                    "--json", env=env)
        d = json.loads(r.stdout)["divergence"]
        assert r.returncode == 1 and d["ns"] == spaces["b"] and '"b-x: answer' in d["diff"], r.stdout


def test_reproduce_ns_of_a_subgraph(repo_path, logs):
    spaces = record_fan(repo_path, ["a", "b"])
    logs.clear()
    r = gitckpt(repo_path, "reproduce", "fan", "--graph", f"{APP}:fan_builder", "--ns", spaces["b"])
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.startswith(f"reproduced 3 checkpoints of namespace {spaces['b']} of thread fan "), r.stdout
    r = gitckpt(repo_path, "reproduce", "fan", "--graph", f"{APP}:fan_builder", "--ns", spaces["a"][:12], "--json")
    out = json.loads(r.stdout)
    assert r.returncode == 0 and out["only_ns"] == spaces["a"] and out["subgraph_checkpoints"] == 3
    assert out["namespaces"] == 1 and logs.models() == 0
    # a call the recording cannot answer stops the runs: it is reported with --ns too
    r = gitckpt(repo_path, "reproduce", "fan", "--graph", f"{APP}:fan_builder", "--ns", spaces["a"],
                env={"AGENT_CITY_SUFFIX": "-x"})
    assert r.returncode == 1 and "node review" in r.stdout  # a call miss stops the runs: it is still named
    r = gitckpt(repo_path, "reproduce", "fan", "--graph", f"{APP}:fan_builder", "--ns", "nosuch")
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr.strip() == (
        f"Error: thread 'fan' has no namespace 'nosuch' (its subgraph namespaces: {', '.join(sorted(spaces.values()))})"
    )
    r = gitckpt(repo_path, "reproduce", "fan", "--graph", f"{APP}:fan_builder", "--ns", "worker")
    assert r.returncode != 0 and "namespace 'worker' is ambiguous in thread 'fan'" in r.stderr


def test_reproduce_nested_subgraphs_with_interrupts(repo_path, logs):
    """Subgraphs inside subgraphs, each paused and resumed: the innermost namespace's
    change is reported there, not in the subgraph or root checkpoints it reaches."""
    saver = GitSaver(repo_path, record=True)
    graph = agent_app.nested_builder.compile(checkpointer=saver)
    assert "__interrupt__" in graph.invoke({"x": []}, cfg("nest"))
    graph.invoke(Command(resume="y"), cfg("nest"))
    done = graph.invoke(Command(resume="z"), cfg("nest"))
    assert [v.split(":")[0] for v in done["x"]] == ["v=y", "v=z"]
    spaces = [n for n in saver.indexes.get("nest").namespaces() if n]
    saver.close()
    assert len(spaces) == 4 and sum("|mid:" in n for n in spaces) == 2
    logs.clear()
    r = gitckpt(repo_path, "reproduce", "nest", "--graph", f"{APP}:nested_builder", "--json")
    out = json.loads(r.stdout)
    assert r.returncode == 0 and out["ok"] and out["namespaces"] == 4 and out["runs"] == 3, r.stdout + r.stderr
    assert out["subgraph_checkpoints"] >= 8 and out["answered"]["model"] == 2 and logs.models() == 0
    r = gitckpt(repo_path, "reproduce", "nest", "--graph", f"{APP}:nested_builder", "--json",
                env={"AGENT_INNER_VALUE": "w"})
    d = json.loads(r.stdout)["divergence"]
    assert r.returncode == 1 and d["node"] == "inner" and d["what"] == "channel", r.stdout
    assert d["ns"] in spaces and d["ns"].startswith("outer:") and "|mid:" in d["ns"] and '"w=y: answer' in d["diff"]


def test_structured_output_is_recorded_and_reproduced(repo_path, logs):
    """``with_structured_output`` (tools bound, the answer parsed into a pydantic model)."""
    saver = GitSaver(repo_path, record=True)
    graph = agent_app.judge_builder.compile(checkpointer=saver)
    out = graph.invoke({"messages": [("user", "Paris is the capital of France.")]}, cfg("j"))
    calls = saver.recorded_calls("j")
    saver.close()
    assert logs.models() == 1 and isinstance(out["score"], int) and out["reason"].startswith("reason ")
    assert [(c["kind"], c["node"]) for c in calls] == [("model", "grade")]
    logs.clear()
    r = gitckpt(repo_path, "reproduce", "j", "--graph", f"{APP}:judge_builder", "--json")
    result = json.loads(r.stdout)
    assert r.returncode == 0 and result["ok"] and result["answered"] == {"model": 1, "tool": 0}, r.stdout + r.stderr
    assert logs.models() == 0
    # offline on a new thread: the recorded verdict, parsed again, and no model call
    with GitSaver(repo_path) as saver, saver.replaying("j"):
        again = agent_app.judge_builder.compile(checkpointer=saver).invoke(
            {"messages": [("user", "Paris is the capital of France.")]}, cfg("j2"))
    assert (again["score"], again["reason"]) == (out["score"], out["reason"]) and logs.models() == 0
    # another instruction to the judge is a divergence at its node
    r = gitckpt(repo_path, "reproduce", "j", "--graph", f"{APP}:judge_builder", env={"AGENT_JUDGE": "Be harsh."})
    assert r.returncode == 1 and r.stdout.startswith("first divergence at step 1, node grade: "), r.stdout + r.stderr
    assert logs.models() == 0


# -- the scratch store (format.md 18.7) ---------------------------------------------------


def _store_items(store) -> dict:
    return {(tuple(i.namespace), i.key): (i.value, i.updated_at) for i in store.search(("memories",), limit=1000)}


def test_reproduce_runs_on_a_scratch_git_store(repo_path, logs):
    """A node that reads and writes the GitStore: reproduce leaves the real store as it
    was, and each run sees the store as it was when the recorded run began (a
    delete made between the runs, in the same second, included)."""
    from gitckpt import GitStore

    store = GitStore(repo_path)
    store.put(("memories", "ann"), "seed", {"text": "likes tea"})
    saver = GitSaver(repo_path, record=True)
    graph = agent_app.memory_builder.compile(checkpointer=saver, store=store)
    first = graph.invoke({"messages": [("user", "hello")]}, cfg("mem"))
    assert first["messages"][-1].content.startswith("(1 known) ")
    store.delete(("memories", "ann"), "seed")  # outside the thread, between its runs
    second = graph.invoke({"messages": [("user", "I live in Oslo")]}, cfg("mem"))
    assert second["messages"][-1].content.startswith("(1 known) ")
    store.put(("memories", "ann"), "later", {"text": "written after the thread"})  # not seen by the runs
    before, tip = _store_items(store), store.repo.ref("refs/heads/store")
    assert "\nStore-Time: " in store.repo.get(tip).message  # µs: git's commit time has seconds only
    saver.close()
    store.close()
    logs.clear()
    r = gitckpt(repo_path, "reproduce", "mem", "--graph", f"{APP}:memory_builder")
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.startswith("reproduced 6/6 checkpoints of thread mem (2 runs; 2 model calls"), r.stdout
    assert logs.models() == 0
    store = GitStore(repo_path)
    assert store.repo.ref("refs/heads/store") == tip and _store_items(store) == before  # the real store: unchanged
    assert store.repo.refs("refs/gitckpt/") == {}  # the scratch branch is gone
    store.close()
    # --keep: the scratch branch holds what the last run wrote on the store as that run began
    r = gitckpt(repo_path, "reproduce", "mem", "--graph", f"{APP}:memory_builder", "--keep", "--json")
    out = json.loads(r.stdout)
    assert r.returncode == 0 and out["ok"] and out["scratch_store"].startswith("refs/gitckpt/reproduce/")
    kept = GitStore(repo_path, ref=out["scratch_store"])
    assert sorted(k for _ns, k in _store_items(kept)) == ["m1"]
    assert kept.get(("memories", "ann"), "m1").value == {"text": "I live in Oslo"}
    real = GitStore(repo_path)
    assert real.repo.ref("refs/heads/store") == tip and _store_items(real) == before
    kept.close()
    real.close()


def test_reproduce_copies_another_store(repo_path, logs):
    """A graph compiled with a store that is not a GitStore: its runs use an
    InMemoryStore holding the items created before the thread began."""
    from langgraph.store.memory import InMemoryStore

    from gitckpt.reproduce import reproduce

    store = InMemoryStore()
    store.put(("memories", "ann"), "seed", {"text": "likes tea"})
    saver = GitSaver(repo_path, record=True)
    graph = agent_app.memory_builder.compile(checkpointer=saver, store=store)
    graph.invoke({"messages": [("user", "hello")]}, cfg("mem"))
    graph.invoke({"messages": [("user", "I live in Oslo")]}, cfg("mem"))
    before = _store_items(store)
    assert len(before) == 3
    logs.clear()
    result = reproduce(saver, graph, "mem")
    assert result.ok, result.summary()
    assert result.scratch_store == "memory" and result.answered["model"] == 2 and logs.models() == 0
    assert _store_items(store) == before  # the real store: unchanged
    assert graph.store is store
    saver.close()


def test_reproduce_reports_a_namespace_only_one_side_has(repo_path, logs, monkeypatch):
    """A subgraph that runs only in the new run (or only in the recorded one) is a
    divergence, though the root's checkpoints are the same."""
    monkeypatch.delenv("AGENT_EXTRA_SUB", raising=False)
    saver = GitSaver(repo_path, record=True)
    graph = agent_app.optional_sub_builder.compile(checkpointer=saver)
    graph.invoke({"x": []}, cfg("plain"))
    monkeypatch.setenv("AGENT_EXTRA_SUB", "1")
    graph.invoke({"x": []}, cfg("sub"))
    assert [n for n in saver.indexes.get("sub").namespaces() if n]  # the recorded subgraph
    assert not [n for n in saver.indexes.get("plain").namespaces() if n]
    saver.close()
    monkeypatch.delenv("AGENT_EXTRA_SUB")
    app = f"{APP}:optional_sub_builder"
    r = gitckpt(repo_path, "reproduce", "plain", "--graph", app)
    assert r.returncode == 0, r.stdout + r.stderr
    r = gitckpt(repo_path, "reproduce", "plain", "--graph", app, "--json", env={"AGENT_EXTRA_SUB": "1"})
    assert r.returncode == 1, r.stdout + r.stderr
    d = json.loads(r.stdout)["divergence"]
    assert d["node"] == "step" and d["ns"].startswith("step:") and d["what"] == "end"
    assert "the new run made subgraph namespace step:" in d["message"] and "no counterpart" in d["message"]
    r = gitckpt(repo_path, "reproduce", "plain", "--graph", app, env={"AGENT_EXTRA_SUB": "1"})
    assert r.returncode == 1 and r.stdout.startswith("first divergence at step -1, node step in namespace step:")
    # the other way round: recorded with the subgraph, run without it
    r = gitckpt(repo_path, "reproduce", "sub", "--graph", app, env={"AGENT_EXTRA_SUB": "1"})
    assert r.returncode == 0, r.stdout + r.stderr
    r = gitckpt(repo_path, "reproduce", "sub", "--graph", app, "--json")
    assert r.returncode == 1, r.stdout + r.stderr
    d = json.loads(r.stdout)["divergence"]
    assert d["ns"].startswith("step:") and "the new run made no checkpoint in subgraph namespace" in d["message"]


def _ancestors(saver, thread: str, cid: str) -> set:
    out, t = set(), saver.get_tuple({"configurable": {"thread_id": thread, "checkpoint_id": cid}})
    while t.parent_config:
        out.add(t.parent_config["configurable"]["checkpoint_id"])
        t = saver.get_tuple(t.parent_config)
    return out


def test_fork_and_copy_carry_the_calls_of_their_steps(repo_path, logs):
    """A fork carries the calls that made its checkpoints, wherever LangGraph stored
    them (another line of the thread after a time-travel replay, or after the
    checkpoint); replay and reproduce on a fork and on a copy find them."""
    record_chat(repo_path)
    saver = GitSaver(repo_path, record=True)
    chain = sorted(saver.list(cfg("1")), key=lambda t: t.config["configurable"]["checkpoint_id"])
    latest = chain[-1].config["configurable"]["checkpoint_id"]
    saver.fork("1", latest, "forked")
    saver.copy_thread("1", "copy")
    assert len(saver.recorded_calls("forked")) == len(saver.recorded_calls("copy")) == 5
    # time travel on thread 1 from step 1: a new line, whose calls LangGraph files with
    # the step-1 checkpoint's writes on the main line, out of the new line's history
    graph = agent_app.builder.compile(checkpointer=saver)
    step1 = [t for t in chain if t.metadata["step"] == 1][0]
    graph.invoke(None, step1.config)
    tip = graph.get_state(cfg("1")).config["configurable"]["checkpoint_id"]
    saver.fork("1", tip, "tt")
    ancestors = _ancestors(saver, "1", tip)
    want = {(c["checkpoint_id"], c["entry"]) for c in saver.recorded_calls("1") if c["checkpoint_id"] in ancestors}
    have = {(c["checkpoint_id"], c["entry"]) for c in saver.recorded_calls("tt")}
    assert len(want) == 6 and have == want
    # the fork's checkpoints are those of the source
    ids = [t.config["configurable"]["checkpoint_id"] for t in saver.list(cfg("tt"))]
    assert set(ids) == ancestors | {tip}
    for cid in ids:
        a = saver.get_tuple({"configurable": {"thread_id": "1", "checkpoint_id": cid}})
        b = saver.get_tuple({"configurable": {"thread_id": "tt", "checkpoint_id": cid}})
        assert contents(b.checkpoint["channel_values"].get("messages", [])) == contents(
            a.checkpoint["channel_values"].get("messages", []))
        assert cid != tip or len(b.pending_writes) == len(a.pending_writes)  # its own writes (not its parents')
    saver.close()
    logs.clear()
    # replay offline from the fork's step-1 checkpoint: every call is answered by the fork's recording
    r = gitckpt(repo_path, "replay", "tt", step1.config["configurable"]["checkpoint_id"], "--to", "tt-b",
                "--graph", f"{APP}:builder", "--offline")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Offline: 1 model call(s) and 2 tool call(s) answered from the recording of thread tt" in r.stdout
    for thread in ("forked", "copy"):
        r = gitckpt(repo_path, "reproduce", thread, "--graph", f"{APP}:builder")
        assert r.returncode == 0, r.stdout + r.stderr
        assert "(3 runs; 3 model calls and 2 tool calls answered" in r.stdout, r.stdout
    assert logs.models() == 0 and logs.tools() == 0
