"""The gitckpt CLI through click's CliRunner, on real bare repositories and real graphs.

Exit codes and error text are asserted exactly: an error is one line,
``Error: ...`` on stderr, exit status 1, never a traceback.
"""

from __future__ import annotations

import json
import operator
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Annotated, TypedDict

import pygit2
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from langgraph.graph import START, StateGraph

from gitckpt import GitSaver, GitStore, demo
from gitckpt.checkpoint import format as fmt
from gitckpt.git import trailers
from gitckpt.cli import cli

ROOT = Path(__file__).resolve().parent.parent
DEMO_GRAPH = f"{ROOT}/gitckpt/demo.py:graph"

# A small graph with a human-in-the-loop node, written to a file so that
# --graph FILE.py:ATTR and langgraph.json load it the way users' graphs load.
GRAPH_FILE = textwrap.dedent('''
    import operator
    from typing import Annotated, TypedDict

    from langgraph.graph import END, START, StateGraph
    from langgraph.types import interrupt


    class State(TypedDict):
        items: Annotated[list, operator.add]
        n: int


    def a(state):
        return {"items": ["a"], "n": state.get("n", 0) + 1}


    def b(state):
        answer = interrupt({"question": "go on?"})
        return {"items": [f"b:{answer}"]}


    builder = StateGraph(State)
    builder.add_node("a", a)
    builder.add_node("b", b)
    builder.add_edge(START, "a")
    builder.add_edge("a", "b")
    builder.add_edge("b", END)
    graph = builder.compile()
''')


def run(*args: str, repo: Path | None = None, env: dict | None = None):
    argv = list(args) + (["--repo", str(repo)] if repo is not None else [])
    return CliRunner(env=env).invoke(cli, argv, catch_exceptions=False)


def ok(*args: str, repo: Path | None = None, **kw):
    result = run(*args, repo=repo, **kw)
    assert result.exit_code == 0, (result.stdout, result.stderr)
    assert result.stderr == "" or "━" in result.stderr  # progress bars only
    return result


def fails(*args: str, repo: Path | None = None, **kw) -> str:
    """The command fails with one ``Error:`` line on stderr; returns that line."""
    result = run(*args, repo=repo, **kw)
    assert result.exit_code == 1, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    return lines[0]


def js(*args: str, repo: Path | None = None, **kw):
    return json.loads(ok(*args, "--json", repo=repo, **kw).stdout)


# -- fixtures -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo_template(tmp_path_factory):
    path = tmp_path_factory.mktemp("demo") / "demo.git"
    summary = demo.run(path, lambda event, data: None)
    return path, summary


@pytest.fixture
def demo_repo(demo_template, tmp_path):
    """A fresh copy of the repository the demo scenario leaves behind."""
    src, summary = demo_template
    dst = tmp_path / "demo.git"
    shutil.copytree(src, dst)
    return dst, summary


@pytest.fixture
def graph_file(tmp_path) -> Path:
    path = tmp_path / "agent.py"
    path.write_text(GRAPH_FILE)
    return path


@pytest.fixture
def paused_repo(tmp_path, graph_file):
    """Thread "t" ran a → b and is paused at b's interrupt."""
    from gitckpt.ops import load_graph

    path = tmp_path / "agent.git"
    saver = GitSaver(path)
    graph = load_graph(f"{graph_file}:graph", saver)
    graph.invoke({"items": [], "n": 0}, {"configurable": {"thread_id": "t"}})
    saver.close()
    return path


def history(repo: Path, thread: str, *extra: str) -> list[dict]:
    return js("log", thread, *extra, repo=repo)


# -- help, repository resolution, init ---------------------------------------------------


def all_commands():
    out = []
    for name, cmd in cli.commands.items():
        out.append((name,))
        if hasattr(cmd, "commands"):
            out += [(name, sub) for sub in cmd.commands]
    return out


def test_every_command_has_help_with_an_example():
    names = all_commands()
    assert {n[0] for n in names} >= {
        "init", "threads", "log", "show", "diff", "fork", "replay", "update", "copy", "delete", "prune", "gc",
        "verify", "watch", "store", "demo",
    }
    assert {n[1] for n in names if len(n) == 2} == {"ls", "get", "put", "rm", "search", "log", "init"}
    for path in names:
        result = CliRunner().invoke(cli, [*path, "--help"])
        assert result.exit_code == 0, path
        assert "Usage: " in result.stdout
        assert "Example" in result.stdout, f"{' '.join(path)} --help has no example"
        if len(path) == 2 or path[0] not in ("store", "server"):  # groups have no options
            assert "--repo PATH" in result.stdout, path
    top = CliRunner().invoke(cli, ["--help"])
    assert "gitckpt demo" in top.stdout and "memories/1" in top.stdout


def test_reading_commands_all_take_json():
    for path in [("threads",), ("log",), ("show",), ("diff",), ("store", "ls"), ("store", "get"),
                 ("store", "search"), ("store", "log"), ("gc",), ("verify",), ("watch",), ("replay",),
                 ("update",)]:
        assert "--json" in CliRunner().invoke(cli, [*path, "--help"]).stdout, path


def test_version():
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0 and result.stdout.startswith("gitckpt ")


def test_init_creates_and_reinitializes(tmp_path):
    path = tmp_path / "agent.git"
    assert ok("init", repo=path).stdout == f"Initialized empty gitckpt repository in {path}\n"
    assert pygit2.Repository(str(path)).is_bare
    assert ok("init", repo=path).stdout == f"Reinitialized existing gitckpt repository in {path}\n"


def test_init_refuses_a_file_and_a_foreign_directory(tmp_path):
    f = tmp_path / "notes.txt"
    f.write_text("x")
    assert fails("init", repo=f) == f"Error: {f} is a file, not a git repository; pass a directory path"
    d = tmp_path / "src"
    d.mkdir()
    (d / "main.py").write_text("")
    assert fails("init", repo=d) == f"Error: {d} is a non-empty directory that is not a git repository"


def test_not_a_repository(tmp_path):
    missing = tmp_path / "nowhere.git"
    expected = f"Error: {missing} is not a gitckpt repository (run `gitckpt init` to create one)"
    for args in (["threads"], ["log", "1"], ["show", "1"], ["diff", "1"], ["verify"], ["gc"],
                 ["store", "ls"], ["copy", "1", "2"], ["watch"]):
        assert fails(*args, repo=missing) == expected, args
    assert not missing.exists()  # reading never creates a repository


def test_repository_from_env_then_default(tmp_path, monkeypatch):
    path = tmp_path / "env.git"
    ok("init", repo=path)
    assert ok("threads", env={"GITCKPT_REPO": str(path)}).stdout == f"No threads in {path}.\n"
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("GITCKPT_REPO", raising=False)
    default = tmp_path / ".gitckpt"
    assert fails("threads") == f"Error: {default} is not a gitckpt repository (run `gitckpt init` to create one)"
    assert ok("init").stdout == f"Initialized empty gitckpt repository in {default}\n"
    assert ok("threads").stdout == f"No threads in {default}.\n"
    # --repo before the command works too, and the command's own wins
    assert CliRunner().invoke(cli, ["--repo", str(path), "threads"]).stdout == f"No threads in {path}.\n"
    both = CliRunner().invoke(cli, ["--repo", str(path), "threads", "--repo", str(default)])
    assert both.stdout == f"No threads in {default}.\n"


# -- threads / log --------------------------------------------------------------------------


def test_threads_table_and_json(demo_repo):
    repo, _ = demo_repo
    data = js("threads", repo=repo)
    assert [t["thread_id"] for t in data] == ["1", "2", "3"]
    one = data[0]
    assert set(one) >= {"thread_id", "checkpoints", "forks", "last_step", "last_update", "latest_checkpoint_id"}
    assert one["forks"] == 1 and one["checkpoints"] == 8
    assert [t["checkpoints"] for t in data[1:]] == [3, 3]
    table = ok("threads", repo=repo).stdout
    lines = table.splitlines()
    assert lines[0].split() == ["Thread", "Checkpoints", "Forks", "Last", "step", "Last", "update", "Latest"]
    assert lines[2].split()[:4] == ["1", "8", "1", "2"]
    assert max(len(ln) for ln in lines) <= 80


def test_log_json_is_newest_first_with_stable_keys(demo_repo):
    repo, summary = demo_repo
    rows = history(repo, "1")
    assert len(rows) == 8
    for row in rows:
        assert {"checkpoint_id", "step", "source", "parent_checkpoint_id", "wrote", "time"} <= set(row)
    ids = [r["checkpoint_id"] for r in rows]
    assert ids == sorted(ids, reverse=True)
    assert [r["source"] for r in rows] == ["loop", "fork", "loop", "loop", "input", "loop", "loop", "input"]
    assert rows[0]["wrote"] == {"call_model": ["messages"]}
    assert rows[1]["parent_checkpoint_id"] == summary["replayed_from"]
    assert rows[-1]["parent_checkpoint_id"] is None
    by_id = {r["checkpoint_id"]: r for r in rows}
    assert by_id[summary["interrupt_checkpoint"]]["step"] == 3
    assert history(repo, "1", "-n", "2") == rows[:2]


def test_log_table_and_graph(demo_repo):
    repo, summary = demo_repo
    plain = ok("log", "1", repo=repo).stdout.splitlines()
    assert plain[0] == "thread 1 · 8 checkpoint(s)"
    assert plain[1].split() == ["Checkpoint", "Step", "Source", "Time", "What", "happened"]
    assert plain[3].split()[1:3] == ["2", "loop"] and "(fork) call_model wrote messag" in plain[3]
    assert len(plain) == 3 + 8  # one line per checkpoint
    drawn = ok("log", "1", "--graph", repo=repo).stdout.splitlines()
    assert max(len(ln) for ln in drawn) <= 80
    marks = [ln[:4].rstrip() for ln in drawn[3:]]
    # the replay's two checkpoints, the main line's four, the join, the two shared ones
    assert marks == ["*", "*", "| *", "| *", "| *", "| *", "|/", "*", "*"]
    short = ok("log", "1", "-n", "1", repo=repo).stdout.splitlines()
    assert len(short) == 4


def test_log_errors(demo_repo):
    repo, _ = demo_repo
    assert fails("log", "nope", repo=repo) == f"Error: no thread 'nope' in {repo} (see `gitckpt threads`)"
    assert fails("log", "1", "--ns", "child", repo=repo) == (
        "Error: thread '1' has no namespace 'child' (its subgraph namespaces: none besides the root)"
    )
    result = run("log", "1", "-n", "0", repo=repo)
    assert result.exit_code == 2 and "0 is not in the range x>=1" in result.stderr


class Items(TypedDict):
    items: Annotated[list, operator.add]


def test_log_of_a_subgraph_namespace(tmp_path):
    S = Items
    sub = StateGraph(S)
    sub.add_node("inner", lambda s: {"items": ["inner"]})
    sub.add_edge(START, "inner")
    parent = StateGraph(S)
    parent.add_node("child", sub.compile())
    parent.add_edge(START, "child")
    repo = tmp_path / "sub.git"
    with GitSaver.from_conn_string(str(repo)) as saver:
        parent.compile(checkpointer=saver).invoke({"items": []}, {"configurable": {"thread_id": "x"}})
        ns = [n for n in saver.thread_info("x")["namespaces"] if n][0]
    out = ok("log", "x", repo=repo).stdout
    assert f"subgraph namespaces (--ns): {ns}" in out
    rows = history(repo, "x", "--ns", "child")  # a unique prefix names the namespace
    assert [r["checkpoint_ns"] for r in rows] == [ns] * 3
    assert rows[0]["wrote"] == {"inner": ["items"]}
    snap = js("show", "x", "--ns", ns, repo=repo)
    assert snap["values"] == {"items": ["inner"]} and snap["checkpoint_ns"] == ns


# -- show ---------------------------------------------------------------------------------


def test_show_latest_json(demo_repo):
    repo, summary = demo_repo
    snap = js("show", "1", repo=repo)
    assert set(snap) >= {"values", "next", "tasks", "metadata", "config", "parent_config", "pending_writes",
                         "created_at", "checkpoint_id"}
    assert snap["checkpoint_id"] == summary["latest_checkpoint"]
    msgs = snap["values"]["messages"]
    assert [(m["type"], m["content"]) for m in msgs] == [
        ("human", "Hi! Remember: my name is Bob"),
        ("ai", "Hello Bob! I'll remember that your name is Bob."),
    ]
    assert snap["next"] == [] and snap["tasks"] == []
    assert snap["metadata"]["user_id"] == "1" and snap["metadata"]["source"] == "loop"
    assert snap["config"]["configurable"]["thread_id"] == "1"
    assert snap["parent_config"]["configurable"]["checkpoint_id"] != summary["replayed_from"]


def test_show_interrupted_checkpoint_by_prefix(demo_repo):
    repo, summary = demo_repo
    cid = summary["interrupt_checkpoint"]
    snap = js("show", "1", cid[:18], repo=repo)
    assert snap["checkpoint_id"] == cid
    assert snap["next"] == ["confirm_forget"]
    [task] = snap["tasks"]
    assert task["name"] == "confirm_forget"
    assert task["interrupts"][0]["value"]["question"] == "Forget 1 memory(ies) of user 1? (yes/no)"
    channels = {w["channel"] for w in snap["pending_writes"]}
    assert {"__interrupt__", "__resume__", "messages"} <= channels
    # LangGraph's own answer agrees with the one worked out from the checkpoint
    exact = js("show", "1", cid, "--graph", DEMO_GRAPH, repo=repo)
    assert exact["next"] == ["confirm_forget"] and exact["tasks"][0]["name"] == "confirm_forget"
    text = ok("show", "1", cid, repo=repo).stdout
    assert f"thread 1 · checkpoint {cid}" in text
    assert "Next: confirm_forget" in text
    assert "human: Please forget my name." in text
    assert max(len(ln) for ln in text.splitlines()) <= 80


def test_show_errors(demo_repo):
    repo, _ = demo_repo
    assert fails("show", "1", "zzz", repo=repo) == "Error: thread '1' has no checkpoint 'zzz' (see `gitckpt log 1`)"
    ids = [r["checkpoint_id"] for r in history(repo, "1")]
    # ids are time-ordered, so ids made close together share a prefix; the first 8 characters change
    # every 27 s, so take the longest prefix two ids share, not the first 8 characters of all of them
    ordered = sorted(ids)
    common = max((os.path.commonprefix(pair) for pair in zip(ordered, ordered[1:])), key=len)
    assert len(common) >= 8
    sharing = sum(i.startswith(common) for i in ids)
    err = fails("show", "1", common, repo=repo)
    assert err.startswith(f"Error: checkpoint '{common}' is ambiguous in thread '1': it starts {sharing} ids (")
    assert fails("show", "9", repo=repo) == f"Error: no thread '9' in {repo} (see `gitckpt threads`)"


# -- diff -----------------------------------------------------------------------------------


def test_diff_latest_against_its_parent(demo_repo):
    repo, _ = demo_repo
    data = js("diff", "1", repo=repo)
    rows = history(repo, "1")
    assert data["to"]["checkpoint_id"] == rows[0]["checkpoint_id"]
    assert data["from"]["checkpoint_id"] == rows[0]["parent_checkpoint_id"]
    [change] = data["channels"]
    assert change["channel"] == "messages" and change["change"] == "changed"
    assert change["removed"] == []
    assert [m["content"] for m in change["added"]] == ["Hello Bob! I'll remember that your name is Bob."]
    text = ok("diff", "1", repo=repo).stdout.splitlines()
    assert text[1:] == ["~ messages: 1 → 2 items (+1)", "    + ai: Hello Bob! I'll remember that your name is Bob."]


def test_diff_from_to_and_no_differences(demo_repo):
    repo, summary = demo_repo
    rows = {r["step"]: r["checkpoint_id"] for r in history(repo, "1") if r["source"] != "fork"}
    data = js("diff", "1", rows[-1], summary["interrupt_checkpoint"], repo=repo)
    [change] = data["channels"]
    assert change["change"] == "added" and change["before"] is None  # the input checkpoint has no messages yet
    assert [m["content"] for m in change["after"]] == [
        "Hi! Remember: my name is Bob", "Hello Bob! I'll remember that your name is Bob.", "Please forget my name.",
    ]
    first = history(repo, "1")[-1]["checkpoint_id"]
    assert js("diff", "1", first, repo=repo)["to"]["checkpoint_id"] == history(repo, "1")[0]["checkpoint_id"]
    same = ok("diff", "1", summary["interrupt_checkpoint"], summary["interrupt_checkpoint"], repo=repo)
    assert same.stdout.splitlines()[-1] == "No differences."


def test_diff_of_the_first_checkpoint_is_against_nothing(tmp_path, graph_file, paused_repo):
    data = js("diff", "t", history(paused_repo, "t")[-1]["checkpoint_id"], history(paused_repo, "t")[-1]["checkpoint_id"], repo=paused_repo)
    assert data["channels"] == []
    first_only = tmp_path / "one.git"
    with GitSaver.from_conn_string(str(first_only)) as saver:
        from gitckpt.ops import load_graph

        load_graph(f"{graph_file}:graph", saver).update_state({"configurable": {"thread_id": "u"}}, {"n": 5})
    data = js("diff", "u", repo=first_only)
    assert data["from"] is None
    assert data["channels"] == [{"channel": "n", "change": "added", "before": None, "after": 5}]
    assert ok("diff", "u", repo=first_only).stdout.splitlines()[-1] == "+ n: 5"


# -- fork / copy / delete / prune ----------------------------------------------------------------


def test_fork_starts_a_thread_without_touching_the_source(demo_repo):
    repo, summary = demo_repo
    before = history(repo, "1")
    cid = summary["interrupt_checkpoint"]
    out = ok("fork", "1", cid[:20], "--to", "1-alt", repo=repo).stdout
    assert out == f"Forked thread 1 at checkpoint {cid} (step 3) as thread 1-alt.\n"
    assert history(repo, "1") == before
    forked = history(repo, "1-alt")
    assert forked[0]["checkpoint_id"] == cid
    # the interrupt came along: the fork can be resumed
    assert js("show", "1-alt", repo=repo)["next"] == ["confirm_forget"]
    assert fails("fork", "1", cid, "--to", "2", repo=repo) == (
        "Error: thread '2' already exists; pick another name or delete it"
    )
    assert fails("fork", "1", "nope", "--to", "x", repo=repo) == (
        "Error: thread '1' has no checkpoint 'nope' (see `gitckpt log 1`)"
    )
    result = run("fork", "1", cid, repo=repo)
    assert result.exit_code == 2 and "Missing option '--to'" in result.stderr


def test_copy_delete_prune(demo_repo):
    repo, _ = demo_repo
    assert ok("copy", "1", "1-copy", repo=repo).stdout == "Copied thread 1 (8 checkpoints) to thread 1-copy.\n"
    assert [r["checkpoint_id"] for r in history(repo, "1-copy")] == [r["checkpoint_id"] for r in history(repo, "1")]
    assert fails("copy", "1", "2", repo=repo) == (
        "Error: cannot copy thread '1' to '2': the target exists; delete it first"
    )
    assert fails("copy", "nope", "x", repo=repo) == f"Error: no thread 'nope' in {repo} (see `gitckpt threads`)"
    out = ok("delete", "1-copy", repo=repo).stdout.splitlines()
    assert out[0] == "Deleted thread 1-copy (8 checkpoints, 2 branch(es))."
    assert out[1].startswith("  forks/1-copy/") or out[1].startswith("  was ")
    assert "1-copy" not in [t["thread_id"] for t in js("threads", repo=repo)]
    assert fails("delete", "1-copy", repo=repo) == f"Error: no thread '1-copy' in {repo} (see `gitckpt threads`)"
    assert ok("prune", "1", "2", repo=repo).stdout == (
        "Pruned thread 1: 8 → 1 checkpoint(s).\nPruned thread 2: 3 → 1 checkpoint(s).\n"
    )
    assert js("show", "2", repo=repo)["values"]["messages"][-1]["content"] == "Your name is Bob."
    assert ok("prune", "3", "--all", repo=repo).stdout == "Deleted thread 3 (3 checkpoints).\n"
    assert [t["thread_id"] for t in js("threads", repo=repo)] == ["1", "2"]
    assert fails("prune", "1", "zz", repo=repo) == f"Error: no thread 'zz' in {repo} (see `gitckpt threads`)"
    assert run("prune", repo=repo).exit_code == 2


# -- replay / update ----------------------------------------------------------------------------


def test_replay_resumes_an_interrupt_on_a_new_thread(paused_repo, graph_file):
    repo = paused_repo
    paused = history(repo, "t")[0]
    result = ok("replay", "t", paused["checkpoint_id"], "--graph", f"{graph_file}:graph", "--resume", '"yes"',
                "--to", "t2", repo=repo)
    lines = result.stdout.splitlines()
    assert lines[0] == f"Forked thread t at {paused['checkpoint_id']} as thread t2."
    assert lines[1] == f"Running thread t2 from checkpoint {paused['checkpoint_id']} (step 1)"
    # replayed up to the interrupt, then answered
    assert lines[2:5] == ['⏸ interrupted: {"question": "go on?"}', 'Resuming with "yes"', 'b → items: ["b:yes"]']
    assert lines[5].startswith("thread t2 is now at checkpoint ") and lines[5].endswith("(step 3, loop) on threads/t2")
    assert js("show", "t2", repo=repo)["values"] == {"items": ["a", "b:yes"], "n": 1}
    assert history(repo, "t")[0] == paused  # the source thread is untouched
    # the same question answered differently on the original thread: a fork there
    ok("replay", "t", "--graph", f"{graph_file}:graph", "--resume", '"first"', repo=repo)
    out = ok("replay", "t", paused["checkpoint_id"], "--graph", f"{graph_file}:graph", "--resume", '"second"',
             repo=repo).stdout
    assert 'b → items: ["b:second"]' in out and "on forks/t/" in out
    assert js("show", "t", repo=repo)["values"]["items"] == ["a", "b:second"]
    # continuing a fork made at an answered checkpoint reuses the answer saved with it
    ok("fork", "t", paused["checkpoint_id"], "--to", "t3", repo=repo)
    out = ok("replay", "t3", "--graph", f"{graph_file}:graph", "--resume", '"ignored"', repo=repo).stdout
    assert 'b (saved writes) → items: ["b:first"]' in out.splitlines()
    done = history(repo, "t2")[0]["checkpoint_id"]
    assert fails("replay", "t2", done, "--graph", f"{graph_file}:graph", "--resume", '"x"', repo=repo) == (
        f"Error: replaying from {done} did not stop at an interrupt: --resume has nothing to answer"
    )


def test_replay_from_an_old_checkpoint_forks_the_thread(paused_repo, graph_file):
    repo = paused_repo
    old = [r for r in history(repo, "t") if r["step"] == 0][0]
    events = [json.loads(ln) for ln in ok("replay", "t", old["checkpoint_id"], "--graph", f"{graph_file}:graph",
                                          "--json", repo=repo).stdout.splitlines()]
    assert events[0] == {"event": "update", "node": "a", "update": {"items": ["a"], "n": 1}}
    assert events[1]["event"] == "interrupt" and events[1]["update"][0]["value"] == {"question": "go on?"}
    assert events[-1]["event"] == "done" and events[-1]["line"].startswith("forks/t/")
    info = js("threads", repo=repo)[0]
    assert info["forks"] == 1
    sources = [r["source"] for r in history(repo, "t")]
    assert "fork" in sources


def test_replay_input_with_langgraph_json(paused_repo, graph_file, tmp_path, monkeypatch):
    (tmp_path / "langgraph.json").write_text(json.dumps({"graphs": {"agent": "./agent.py:graph"}}))
    monkeypatch.chdir(tmp_path)
    out = ok("replay", "t", "--input", '{"items": ["x"], "n": 10}', "--to", "fresh", repo=paused_repo).stdout
    assert 'a → items: ["a"]' in out and "a → n: 11" in out
    assert "⏸ interrupted: {\"question\": \"go on?\"}" in out
    (tmp_path / "langgraph.json").write_text(json.dumps({"graphs": {"one": "./agent.py:graph", "two": "./agent.py:graph"}}))
    assert fails("replay", "t", repo=paused_repo) == (
        f"Error: {tmp_path}/langgraph.json names 2 graphs (one, two); pick one with --graph NAME"
    )
    assert ok("replay", "t", "--graph", "two", "--resume", '"ok"', repo=paused_repo).stdout.count("b → items") == 1
    assert fails("replay", "t", "--graph", "three", repo=paused_repo) == (
        f"Error: {tmp_path}/langgraph.json has no graph 'three' (it has: one, two)"
    )


def test_replay_errors(paused_repo, graph_file, tmp_path, monkeypatch):
    repo = paused_repo
    g = f"{graph_file}:graph"
    assert fails("replay", "t", "--graph", g, "--input", "{oops", repo=repo) == (
        "Error: --input is not valid JSON (Expecting property name enclosed in double quotes at line 1 column 2)"
    )
    assert fails("replay", "t", "--graph", g, "--input", "{}", "--resume", "1", repo=repo) == (
        "Error: pass either --input or --resume, not both"
    )
    assert fails("replay", "t", "--graph", g, "--config", "[1]", repo=repo) == (
        "Error: --config must be a JSON object of configurable values, e.g. '{\"user_id\": \"1\"}'"
    )
    broken = tmp_path / "broken.py"
    broken.write_text("import not_a_module_anywhere\n")
    assert fails("replay", "t", "--graph", f"{broken}:graph", repo=repo) == (
        f"Error: graph '{broken}:graph' does not import: ModuleNotFoundError: No module named 'not_a_module_anywhere'"
    )
    assert fails("replay", "t", "--graph", f"{graph_file}:nope", repo=repo) == (
        f"Error: graph '{graph_file}:nope': {graph_file} has no attribute 'nope'"
    )
    assert fails("replay", "t", "--graph", f"{tmp_path}/missing.py:graph", repo=repo) == (
        f"Error: graph '{tmp_path}/missing.py:graph': no file {tmp_path}/missing.py"
    )
    assert fails("replay", "t", "--graph", f"{graph_file}:State", repo=repo) == (
        f"Error: graph '{graph_file}:State' is a dict, not a LangGraph graph (StateGraph or compiled graph)"
    )
    assert fails("replay", "t", "--graph", "json:JSONDecodeError", repo=repo) == (
        "Error: graph 'json:JSONDecodeError': the factory failed: TypeError: "
        "JSONDecodeError.__init__() missing 2 required positional arguments: 'doc' and 'pos'"
    )
    assert fails("replay", "t", "--graph", "no_such_pkg.mod:graph", repo=repo) == (
        "Error: graph 'no_such_pkg.mod:graph' does not import: ModuleNotFoundError: No module named 'no_such_pkg'"
    )
    monkeypatch.chdir(tmp_path)
    assert fails("replay", "t", repo=repo) == (
        "Error: no graph given: pass --graph FILE.py:ATTR (or run where a langgraph.json names one)"
    )
    assert fails("replay", "nope", "--graph", g, repo=repo) == f"Error: no thread 'nope' in {repo} (see `gitckpt threads`)"
    # a node that raises: one line, no traceback
    bad = tmp_path / "bad.py"
    bad.write_text(GRAPH_FILE.replace('return {"items": ["a"]', 'raise RuntimeError("boom")\n    return {"items": ["a"]'))
    assert fails("replay", "t", "--graph", f"{bad}:graph", "--input", '{"items": []}', "--to", "t9", repo=repo) == (
        "Error: the graph failed: RuntimeError: boom"
    )


def test_replay_demo_graph_reuses_recorded_config(demo_repo):
    repo, _ = demo_repo
    out = ok("replay", "2", "--graph", DEMO_GRAPH, "--input",
             '{"messages": [{"role": "user", "content": "what is my name?"}]}', repo=repo).stdout.splitlines()
    assert out[0].endswith('with {"user_id": "1"}')
    assert out[1] == "call_model → messages: ai: Your name is Bob."
    nothing = ok("replay", "3", "--graph", DEMO_GRAPH, repo=repo).stdout.splitlines()
    latest3 = history(repo, "3")[0]["checkpoint_id"]
    assert nothing[1] == (f"Nothing ran: checkpoint {latest3} has no next node; pass --input to start a new turn "
                          "(or --resume to answer an interrupt).")
    out = ok("replay", "2", "--graph", DEMO_GRAPH, "--config", '{"user_id": "2"}', "--input",
             '{"messages": [{"role": "user", "content": "what is my name?"}]}', repo=repo).stdout.splitlines()
    assert out[1] == "call_model → messages: ai: I don't know your name yet. Tell me, and ask me to remember it."


def test_update_state(paused_repo, graph_file):
    repo = paused_repo
    g = f"{graph_file}:graph"
    before = history(repo, "t")
    data = js("update", "t", "--graph", g, "--values", '{"items": ["z"], "n": 7}', "--as-node", "a", repo=repo)
    assert data["parent_checkpoint_id"] == before[0]["checkpoint_id"]
    assert data["source"] == "update" and data["step"] == 2
    assert js("show", "t", repo=repo)["values"] == {"items": ["a", "z"], "n": 7}  # the reducer appended
    assert js("show", "t", repo=repo)["next"] == ["b"]
    # on an older checkpoint: a fork
    old = before[-1]["checkpoint_id"]
    out = ok("update", "t", "--graph", g, "--values", '{"n": 100}', "--checkpoint", old, repo=repo).stdout
    assert out.startswith("Updated thread t: checkpoint ") and out.endswith(f"(step 0, update), parent {old}.\n")
    assert js("threads", repo=repo)[0]["forks"] == 1
    assert fails("update", "t", "--graph", g, "--values", "[1]", repo=repo) == (
        "Error: --values must be a JSON object of channel values, e.g. '{\"n\": 3}'"
    )
    assert fails("update", "t", "--graph", g, "--values", "nope", repo=repo) == (
        "Error: --values is not valid JSON (Expecting value at line 1 column 1)"
    )
    assert fails("update", "t", "--graph", g, "--values", "{}", "--as-node", "zz", repo=repo) == (
        "Error: update_state failed: InvalidUpdateError: Node zz does not exist"
    )
    assert run("update", "t", "--graph", g, repo=repo).exit_code == 2


# -- gc / verify ------------------------------------------------------------------------------


def test_gc_prints_sizes(demo_repo):
    repo, _ = demo_repo
    result = ok("gc", repo=repo)
    assert result.stdout.startswith("Disk use (du -s): ") and " → " in result.stdout
    data = js("gc", repo=repo)
    assert set(data) == {"before", "after", "before_apparent", "after_apparent", "kept", "kept_until", "expire",
                         "steps", "packs_merged", "packs_made"}
    assert data["packs_merged"] == data["packs_made"] == 0  # a few packs: git's steps alone
    assert data["after"] <= data["before"] and data["expire"] == "2.weeks.ago"
    assert data["steps"] == ["pack refs", "repack objects", "prune old unreachable objects",
                             "remove packed loose objects"]
    assert js("verify", repo=repo) == {"ok": True, "problems": []}
    assert (repo / "packed-refs").exists()


def test_verify_ok_and_problems(demo_repo):
    repo, _ = demo_repo
    assert ok("verify", repo=repo).stdout == "OK: 3 thread(s), 14 checkpoint(s), no problems.\n"
    # a foreign writer adds a checkpoint whose blob does not decode, on a line
    # whose parent checkpoint does not exist
    r = pygit2.Repository(str(repo))
    sig = pygit2.Signature("x", "x@y")
    blob = r.create_blob(b"msgpack\n\xc1\xc1\xc1")
    tb = r.TreeBuilder()
    tb.insert("checkpoint", blob, pygit2.enums.FileMode.BLOB)
    tb.insert("metadata", blob, pygit2.enums.FileMode.BLOB)
    tree = tb.write()
    base = r.references["refs/heads/threads/2"].target
    msg = trailers.build_message("step 9 · loop", [(fmt.KIND, "checkpoint"), (fmt.THREAD, "2"),
                                                (fmt.CHECKPOINT, "1f1f0000-0000-6000-8000-000000000000"),
                                                (fmt.PARENT, "1f000000-dead-6000-8000-000000000000"),
                                                (fmt.STEP, 9), (fmt.SOURCE, "loop")])
    commit = r.create_commit(None, sig, sig, msg, tree, [base])
    r.references.create("refs/heads/threads/2", commit, force=True)
    result = run("verify", repo=repo)
    assert result.exit_code == 1
    problems = result.stdout.splitlines()
    assert problems[0].startswith(
        "✗ thread '2' checkpoint 1f1f0000-0000-6000-8000-000000000000: cannot decode the stored value"
    )
    assert len(problems) == 1  # decoding failed first; the rest of the thread is fine
    assert result.stderr.splitlines()[-1] == f"Error: 1 problem(s) found in {repo}"
    data = json.loads(run("verify", "--json", repo=repo).stdout)
    assert data["ok"] is False and len(data["problems"]) == 1


def test_an_encrypted_repository_is_read_with_serde(tmp_path):
    from langgraph.checkpoint.serde.encrypted import EncryptedSerializer

    key = "0123456789abcdef"
    repo = tmp_path / "secret.git"
    with GitSaver(repo, serde=EncryptedSerializer.from_pycryptodome_aes(key=key.encode())) as saver:
        class Note(TypedDict):
            note: str

        b = StateGraph(Note)
        b.add_node("n", lambda s: {"note": "top secret"})
        b.add_edge(START, "n")
        b.compile(checkpointer=saver).invoke({"note": "hi"}, {"configurable": {"thread_id": "1"}})
    # without the serializer: a sentence that says what to do, not a traceback
    err = fails("show", "1", repo=repo)
    assert err.startswith("Error: thread '1' checkpoint ") and err.endswith(
        "it is encrypted (msgpack+aes): read it with the serializer that wrote it "
        "(GitSaver(serde=...), or `gitckpt --serde aes` with $LANGGRAPH_AES_KEY set)")
    assert run("verify", repo=repo).exit_code == 1
    with_key = {"LANGGRAPH_AES_KEY": key}
    assert js("--serde", "aes", "show", "1", repo=repo, env=with_key)["values"] == {"note": "top secret"}
    assert ok("--serde", "aes", "verify", repo=repo, env=with_key).stdout.startswith("OK: 1 thread(s)")
    assert js("show", "1", repo=repo, env={**with_key, "GITCKPT_SERDE": "aes"})["values"] == {"note": "top secret"}
    # a serializer of the user's own, named as module:ATTR (here a class: called to make one)
    spec = "langgraph.checkpoint.serde.jsonplus:JsonPlusSerializer"
    assert fails("--serde", spec, "show", "1", repo=repo).startswith("Error: thread '1' checkpoint ")
    # bad specs
    assert fails("--serde", "aes", "show", "1", repo=repo, env={"LANGGRAPH_AES_KEY": ""}) == (
        "Error: --serde aes reads the key from $LANGGRAPH_AES_KEY, which is not set")
    assert fails("--serde", "json:dumps", "show", "1", repo=repo).startswith(
        "Error: --serde 'json:dumps': the factory failed: TypeError")
    assert fails("--serde", "os:sep", "show", "1", repo=repo) == (
        "Error: --serde 'os:sep' is a str, not a serializer (it needs dumps_typed and loads_typed)")
    assert fails("--serde", "nope", "show", "1", repo=repo) == (
        "Error: --serde 'nope' must look like FILE.py:ATTR or module.name:ATTR")


def test_history_from_the_index_equals_a_walk_and_the_commits(demo_repo):
    # the CLI's history comes from the saver's index (cache file included); it must say what a full
    # walk of the commits says, and each row's subject and time must be its commit's, as git shows them
    from gitckpt import ops

    repo, _ = demo_repo
    GitSaver(repo).close()
    fmt = "--format=" + "%x00".join(f"%(trailers:key={k},valueonly,separator=)" for k in
                                    ("Gitckpt", "Checkpoint-Ns", "Checkpoint-Id", "Parent-Checkpoint-Id", "Step"))
    for thread in ("1", "2", "3"):
        indexed = ops.thread_history(GitSaver(repo).indexes, thread)
        walked = ops.thread_history(GitSaver(repo).indexes, thread, fresh=True)  # the cache file not used
        assert {k: r.to_json() for k, r in indexed.rows.items()} == {k: r.to_json() for k, r in walked.rows.items()}
        # plain git over the thread's branches names the same checkpoints, parents and steps
        log = subprocess.run(["git", "--git-dir", str(repo), "log", fmt, *indexed.tips.values()],
                             capture_output=True, text=True, check=True).stdout
        from_git = {(ns, cid): (parent or None, int(step)) for kind, ns, cid, parent, step in
                    (line.split("\x00") for line in log.splitlines()) if kind == "checkpoint"}
        assert from_git == {k: (r.parent_checkpoint_id, r.step) for k, r in indexed.rows.items()}
        assert indexed.tips == walked.tips and dict(indexed.writes) == dict(walked.writes)
        for row in indexed.rows.values():
            shown = subprocess.run(["git", "--git-dir", str(repo), "log", "-1", "--format=%s%x00%ct%x00%P", row.commit],
                                   capture_output=True, text=True, check=True).stdout.rstrip("\n").split("\x00")
            assert [row.subject, row.time, row.root] == [shown[0], int(shown[1]), shown[2] == ""]
    assert any(r.wrote for r in ops.thread_history(GitSaver(repo).indexes, "1").rows.values())


def test_a_checkpoint_commit_without_its_id_is_named_not_a_traceback(demo_repo):
    repo, _ = demo_repo
    r = pygit2.Repository(str(repo))
    sig = pygit2.Signature("x", "x@y")
    tip = r.references["refs/heads/threads/2"].target
    msg = trailers.build_message("step 9 · loop", [(fmt.KIND, "checkpoint"), (fmt.THREAD, "2"), (fmt.STEP, 9)])
    bad = r.create_commit(None, sig, sig, msg, r[tip].tree_id, [tip])
    r.references.create("refs/heads/threads/2", bad, force=True)
    assert fails("log", "2", repo=repo) == f"Error: thread '2': commit {bad} has no Checkpoint-Id trailer"
    data = json.loads(run("verify", "--json", repo=repo).stdout)
    assert data["problems"] == [f"thread '2': commit {bad} has no Checkpoint-Id trailer"]
    from gitckpt import CorruptObjectError  # the library says the same, not a KeyError

    with pytest.raises(CorruptObjectError, match=f"^thread '2': commit {bad} has no Checkpoint-Id trailer$"):
        GitSaver(repo).get_tuple({"configurable": {"thread_id": "2"}})


def test_verify_names_a_broken_history(demo_repo):
    repo, _ = demo_repo
    r = pygit2.Repository(str(repo))
    sig = pygit2.Signature("x", "x@y")
    tip = r.references["refs/heads/threads/3"].target
    tree = r[tip].tree_id
    msg = trailers.build_message("step 2 · loop", [(fmt.KIND, "checkpoint"), (fmt.THREAD, "3"),
                                                (fmt.CHECKPOINT, "1fff0000-0000-6000-8000-000000000000"),
                                                (fmt.PARENT, "1f000000-dead-6000-8000-000000000000"),
                                                (fmt.STEP, 2), (fmt.SOURCE, "loop")])
    r.references.create("refs/heads/threads/3", r.create_commit(None, sig, sig, msg, tree, [tip]), force=True)
    data = json.loads(run("verify", "--json", repo=repo).stdout)
    real = history(repo, "3")[1]["checkpoint_id"]
    assert data["problems"] == [
        f"thread '3' checkpoint 1fff0000-0000-6000-8000-000000000000: the stored checkpoint says its id is {real!r}",
        "thread '3' checkpoint 1fff0000-0000-6000-8000-000000000000: its parent checkpoint "
        "1f000000-dead-6000-8000-000000000000 is missing",
    ]


# -- store ---------------------------------------------------------------------------------------


def test_store_commands(demo_repo):
    repo, _ = demo_repo
    assert js("store", "ls", repo=repo) == [{"namespace": "memories/1", "labels": ["memories", "1"], "items": 1}]
    assert ok("store", "put", "memories/2", "name", '{"data": "my name is Alice"}', repo=repo).stdout == (
        "Stored name in memories/2.\n"
    )
    assert json.loads(ok("store", "get", "memories/2", "name", repo=repo).stdout) == {"data": "my name is Alice"}
    item = js("store", "get", "memories/2", "name", repo=repo)
    assert item["namespace"] == ["memories", "2"] and item["key"] == "name" and item["created_at"]
    assert [r["namespace"] for r in js("store", "ls", "memories", repo=repo)] == ["memories/1", "memories/2"]
    found = js("store", "search", "memories", "--filter", '{"data": "my name is Alice"}', repo=repo)
    assert [(i["namespace"], i["key"]) for i in found] == [(["memories", "2"], "name")]
    assert len(js("store", "search", "memories", "-n", "1", repo=repo)) == 1
    table = ok("store", "search", "memories", repo=repo).stdout
    assert "memories/2" in table and "Alice" in table
    # a label with a slash, percent-encoded on the command line
    ok("store", "put", "docs/a%2Fb", "k", '{"x": 1}', repo=repo)
    assert "docs/a%2Fb" in [r["namespace"] for r in js("store", "ls", repo=repo)]
    assert js("store", "get", "docs/a%2Fb", "k", repo=repo)["namespace"] == ["docs", "a/b"]
    assert ok("store", "rm", "memories/2", "name", repo=repo).stdout == "Deleted name from memories/2.\n"
    log = js("store", "log", "memories/2", repo=repo)
    assert [(e["change"], e["key"], e["value"]) for e in log] == [
        ("delete", "name", None), ("put", "name", {"data": "my name is Alice"}),
    ]
    assert set(log[0]) >= {"commit", "time", "change", "namespace", "key", "value"}
    whole = js("store", "log", repo=repo)
    assert len(whole) == 6  # put, delete, put by the demo; put, put, delete here
    assert ok("store", "log", "memories/9", repo=repo).stdout == "No changes to memories/9.\n"


def test_store_log_shows_how_the_demo_memory_changed(demo_repo):
    repo, _ = demo_repo
    [item] = js("store", "search", "memories/1", repo=repo)
    key = item["key"]
    log = js("store", "log", "memories/1", key, repo=repo)
    assert [e["change"] for e in log] == ["put", "delete", "put"]
    assert log[0]["value"] == log[2]["value"] == {"data": "Hi! Remember: my name is Bob"}
    text = ok("store", "log", "memories/1", repo=repo).stdout.splitlines()
    assert text[0].split() == ["Commit", "Time", "Change", "Namespace", "Key", "Value"]
    changes = [ln.split()[2] for ln in text[2:] if len(ln.split()) > 3 and ln.split()[3] == "memories/1"]
    assert changes == ["put", "delete", "put"]


def test_store_errors(demo_repo):
    repo, _ = demo_repo
    assert fails("store", "get", "memories/1", "nope", repo=repo) == "Error: no item 'nope' in namespace memories/1"
    assert fails("store", "rm", "memories/1", "nope", repo=repo) == "Error: no item 'nope' in namespace memories/1"
    assert fails("store", "put", "memories/1", "k", "{bad", repo=repo) == (
        "Error: VALUE is not valid JSON (Expecting property name enclosed in double quotes at line 1 column 2)"
    )
    assert fails("store", "put", "memories/1", "k", "[1, 2]", repo=repo) == (
        "Error: VALUE must be a JSON object, e.g. '{\"data\": \"my name is Bob\"}'"
    )
    assert fails("store", "put", "", "k", "{}", repo=repo) == "Error: a namespace is needed, e.g. memories/1"
    assert fails("store", "get", "memories//1", "k", repo=repo) == (
        "Error: namespace 'memories//1' has an empty label; write labels joined by '/', e.g. memories/1"
    )
    assert fails("store", "search", "memories", "--filter", "[]", repo=repo) == (
        "Error: --filter must be a JSON object, e.g. '{\"kind\": \"name\"}'"
    )
    assert fails("store", "search", "memories", "--query", "name", repo=repo) == (
        "Error: --query needs an embedding model: add --embed provider:model (the one the items were indexed with)"
    )


def test_store_semantic_search_with_embeddings_from_a_file(demo_repo, tmp_path):
    repo, _ = demo_repo
    (tmp_path / "emb.py").write_text(textwrap.dedent('''
        def embeddings(texts):
            # a toy embedding: counts of a few letters
            return [[t.lower().count(c) + 0.1 for c in "aeiou"] for t in texts]
    '''))
    spec = f"{tmp_path}/emb.py:embeddings"
    with GitStore(repo, index={"embed": _toy_embed, "dims": 5}) as st:
        st.put(("docs",), "vowels", {"text": "aaaa eeee"})
        st.put(("docs",), "other", {"text": "uuuu"})
    found = js("store", "search", "docs", "--query", "aaa", "--embed", spec, repo=repo)
    assert [i["key"] for i in found] == ["vowels", "other"]
    assert found[0]["score"] > found[1]["score"]


def _toy_embed(texts):
    return [[t.lower().count(c) + 0.1 for c in "aeiou"] for t in texts]


# -- demo argument handling (the scenario itself: tests/test_demo.py) ------------------------------


def test_demo_refuses_a_repository_that_has_its_threads(demo_repo):
    repo, _ = demo_repo
    assert fails("demo", repo=repo) == (
        f"Error: {repo} already has thread '1'; run the demo on a new repository (--repo PATH)"
    )


def test_demo_model_argument(tmp_path):
    repo = tmp_path / "d.git"
    assert fails("demo", "--model", "gpt-4o", repo=repo) == (
        "Error: --model must look like provider:name (e.g. openai:gpt-4o-mini), not 'gpt-4o'"
    )
    try:
        import langchain.chat_models  # noqa: F401
    except ImportError:
        assert fails("demo", "--model", "openai:gpt-4o-mini", repo=repo) == (
            "Error: --model openai:gpt-4o-mini needs LangChain's init_chat_model: pip install langchain langchain-openai"
        )
    assert not repo.exists()


def test_every_command_is_documented():
    text = (ROOT / "docs" / "cli.md").read_text()
    for path in all_commands():
        name = path[-1]
        heading = f"## `{name}`" in text or f"`{name}`," in text or f", `{name}`" in text
        assert heading or f"`store {name}" in text or f"{name} NS" in text or f"`{name} [" in text, path
        assert f"$ gitckpt {' '.join(path)}" in text or path == ("store",), f"no example session for {path}"


def test_store_namespace_langgraph_refuses(demo_repo):
    repo, _ = demo_repo
    expected = "Error: Invalid namespace label 'a.b' found in ('a.b',). Namespace labels cannot contain periods ('.')."
    assert fails("store", "get", "a.b", "k", repo=repo) == expected
    assert fails("store", "put", "a.b", "k", "{}", repo=repo) == expected
    assert fails("store", "ls", "a.b", repo=repo) == expected


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(alphabet="ab01-", max_size=12), max_size=12), st.integers(min_value=0, max_value=9))
def test_short_ids_are_the_shortest_unique_prefixes(ids, minimum):
    from gitckpt.ops import short_ids

    out = short_ids(ids, minimum)
    assert set(out) == set(ids)
    for cid, short in out.items():
        assert cid.startswith(short) and len(short) >= min(minimum, len(cid))
        clash = [o for o in out if o != cid and o.startswith(short)]
        assert not clash or short == cid  # unique, unless the whole id is a prefix of another
        if len(short) > minimum:  # and no shorter prefix would do
            assert any(o != cid and o.startswith(short[:-1]) for o in out)


def test_log_and_threads_do_not_import_langgraph(demo_repo):
    # they read the thread indexes only; importing LangGraph is most of a CLI command's start
    repo, _ = demo_repo
    code = textwrap.dedent(f"""
        import sys
        from gitckpt.cli import cli
        for args in (["log", "1"], ["threads"], ["log", "1", "--graph", "--json"]):
            cli.main(["--repo", {str(repo)!r}, *args], standalone_mode=False)
        print(sorted({{m.split(".")[0] for m in sys.modules}} & {{"langgraph", "langchain_core", "pydantic"}}))
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1] == "[]"
    assert "thread 1" in proc.stdout  # the commands did run
