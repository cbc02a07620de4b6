"""gitckpt behind `langgraph dev` (LangGraph's local Agent Server).

The unit tests read the environment and langgraph.json the way the entry
points do. The server test (``-m server``) starts a real ``langgraph dev`` on
127.0.0.1 with a small graph that interrupts, drives it with
``langgraph-sdk`` and, after each operation, reads the git repository with
pygit2 and with the ``gitckpt`` command (click's runner in this process; a
real ``python -m gitckpt`` run in the project folder for ``server init`` and
the first ``log``, to show it finds the server's repository by itself); then
it restarts the server and reads the same threads again.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

import pygit2
import pytest
from click.testing import CliRunner

from gitckpt import GitSaver, GitStore
from gitckpt import langgraph_server as ls
from gitckpt.cli import cli
from gitckpt.errors import InvalidInputError

ENV_KEYS = (ls.REPO_ENV, ls.DURABILITY_ENV, ls.ALLOW_ENV, ls.SERDE_ENV, ls.RECORD_ENV)


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    for key in ENV_KEYS:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    return monkeypatch


# -- configuration from the environment ------------------------------------------------------


def test_default_repo_is_outside_the_project_and_stable(clean_env, tmp_path):
    project = tmp_path / "my agent"
    project.mkdir()
    repo = ls.default_repo(project)
    assert repo.parent == tmp_path / "xdg" / "gitckpt" / "projects"
    assert repo.name.startswith("my_agent-") and len(repo.name) == len("my_agent-") + 8
    assert project.resolve() not in repo.parents
    assert ls.default_repo(project) == repo  # the same folder, the same repository
    other = tmp_path / "b" / "my agent"
    other.mkdir(parents=True)
    assert ls.default_repo(other) != repo  # a folder of the same name elsewhere: another one
    clean_env.chdir(project)
    assert ls.repo_path() == repo
    clean_env.setenv(ls.REPO_ENV, "rel.git")
    assert ls.repo_path() == project / "rel.git"


def test_allowlist_parsing():
    assert ls.parse_allowlist("a.b:C, d:E") == [("a.b", "C"), ("d", "E")]
    assert ls.parse_allowlist("strict") == []
    for bad in ("nocolon", "a:", ":B", "a:b:c", " , ", "a b:C", "mod:Na.me"):
        with pytest.raises(InvalidInputError, match="GITCKPT_ALLOW"):
            ls.parse_allowlist(bad)


@dataclass
class Pt:  # a type only an allowlist lets the serializer rebuild
    x: int


def test_allowlist_reaches_the_serializer(clean_env):
    clean_env.setenv(ls.ALLOW_ENV, "strict")
    strict = ls.serializer()
    clean_env.setenv(ls.ALLOW_ENV, f"{Pt.__module__}:Pt")
    allowing = ls.serializer()
    assert strict._allowed_msgpack_modules is None
    assert allowing._allowed_msgpack_modules == {(Pt.__module__, "Pt")}
    typed = allowing.dumps_typed(Pt(3))
    assert allowing.loads_typed(typed) == Pt(3)
    assert not isinstance(strict.loads_typed(typed), Pt)  # strict: the raw data, no object
    clean_env.setenv(ls.SERDE_ENV, "aes")
    with pytest.raises(InvalidInputError, match="GITCKPT_ALLOW and \\$GITCKPT_SERDE are both set"):
        ls.serializer()


async def test_serde_env_encrypts_what_the_server_writes(clean_env, tmp_path):
    from langgraph.checkpoint.serde.encrypted import EncryptedSerializer

    clean_env.setenv(ls.REPO_ENV, str(tmp_path / "r.git"))
    clean_env.setenv(ls.SERDE_ENV, "aes")
    clean_env.setenv("LANGGRAPH_AES_KEY", "k" * 16)
    async with ls.checkpointer() as saver:
        assert isinstance(saver.serde, EncryptedSerializer)
        typed = saver.serde.dumps_typed({"secret": 1})
        assert typed[0].endswith("+aes") and b"secret" not in typed[1]
    clean_env.delenv("LANGGRAPH_AES_KEY")
    with pytest.raises(InvalidInputError, match=r"^\$GITCKPT_SERDE=aes: .*LANGGRAPH_AES_KEY, which is not set"):
        ls.saver_kwargs()


def test_saver_kwargs_and_record(clean_env):
    assert ls.saver_kwargs() == {"durability": "os", "serde": None}
    clean_env.setenv(ls.DURABILITY_ENV, "fsync")
    assert ls.saver_kwargs()["durability"] == "fsync"
    clean_env.setenv(ls.DURABILITY_ENV, "disk")
    with pytest.raises(InvalidInputError, match="GITCKPT_DURABILITY must be 'os' or 'fsync'"):
        ls.saver_kwargs()
    clean_env.delenv(ls.DURABILITY_ENV)
    clean_env.setenv(ls.RECORD_ENV, "maybe")
    with pytest.raises(InvalidInputError, match="GITCKPT_RECORD must be"):
        ls.saver_kwargs()
    clean_env.setenv(ls.RECORD_ENV, "1")
    assert ls.saver_kwargs() == {"durability": "os", "serde": None, "record": True}
    clean_env.setenv(ls.RECORD_ENV, "off")
    assert "record" not in ls.saver_kwargs()


async def test_record_env_makes_a_recording_saver(clean_env, tmp_path):
    clean_env.setenv(ls.REPO_ENV, str(tmp_path / "r.git"))
    clean_env.setenv(ls.RECORD_ENV, "1")
    async with ls.checkpointer() as saver:
        assert saver.record is True


async def test_entry_points_share_one_saver_and_store_and_close_them(clean_env, tmp_path):
    clean_env.setenv(ls.REPO_ENV, str(tmp_path / "r.git"))
    async with ls.checkpointer() as a, ls.checkpointer() as b, ls.store() as st:
        assert isinstance(a, GitSaver) and a is b
        assert isinstance(st, GitStore)
        await st.aput(("n",), "k", {"v": 1})
    async with ls.checkpointer() as c:  # the last exit closed it: a new one now
        assert c is not a
    assert (tmp_path / "r.git" / "refs" / "heads" / "store").is_file()


EMBED = textwrap.dedent("""
    WORDS = ("tea", "coffee", "cat")


    def embed(texts):  # a deterministic toy embedding: which of three words a text holds
        return [[float(w in t.lower()) for w in WORDS] + [0.1] for t in texts]
""")


async def test_store_index_and_ttl_come_from_langgraph_json(clean_env, tmp_path):
    """The server hands langgraph.json's store entry to its process as $LANGGRAPH_STORE, nothing more."""
    (tmp_path / "embed.py").write_text(EMBED)
    clean_env.chdir(tmp_path)
    clean_env.setenv(ls.REPO_ENV, str(tmp_path / "r.git"))
    clean_env.setenv(
        ls.STORE_CONFIG_ENV,
        json.dumps(
            {
                "path": ls.STORE_PATH,
                "index": {"embed": "./embed.py:embed", "dims": 4, "fields": ["text"]},
                "ttl": {"default_ttl": 60, "refresh_on_read": True},
            }
        ),
    )
    async with ls.store() as st:
        assert st.ttl_config == {"default_ttl": 60, "refresh_on_read": True}
        await st.aput(("notes",), "a", {"text": "I like tea"})
        await st.aput(("notes",), "b", {"text": "the cat sleeps"})
        found = await st.asearch(("notes",), query="a cat")
        assert [i.key for i in found] == ["b", "a"] and found[0].score > found[1].score
        assert found[0].value == {"text": "the cat sleeps"}
    for bad, message in [
        ("{", "LANGGRAPH_STORE is not JSON"),
        ('{"index": {"dims": 4}}', 'needs "embed" and "dims"'),
        ('{"index": {"embed": "./nope.py:embed", "dims": 4}}', 'the "index.embed" of the store .*: .*no file'),
        ('{"ttl": 5}', 'the "ttl" of the store in langgraph.json must be an object'),
    ]:
        clean_env.setenv(ls.STORE_CONFIG_ENV, bad)
        with pytest.raises(InvalidInputError, match=message):
            ls.store_kwargs()


# -- gitckpt server init ---------------------------------------------------------------------


def test_server_init_creates_and_preserves(clean_env, tmp_path):
    clean_env.chdir(tmp_path)
    runner = CliRunner()
    res = runner.invoke(cli, ["server", "init"])
    assert res.exit_code == 0, res.output
    data = json.loads((tmp_path / "langgraph.json").read_text())
    assert data == {
        "dependencies": ["."],
        "graphs": {},
        "checkpointer": {"path": ls.CHECKPOINTER_PATH},
        "store": {"path": ls.STORE_PATH},
    }
    assert f"repository: {ls.default_repo(tmp_path)}" in res.output

    original = {
        "graphs": {"agent": "./graph.py:graph"},
        "env": {"A": "1"},
        "http": {"cors": {"x": [1]}},
        "store": {"index": {"dims": 4}},
        "python_version": "3.12",
    }
    cfg = tmp_path / "sub" / "langgraph.json"
    cfg.parent.mkdir()
    cfg.write_text(json.dumps(original))
    res = runner.invoke(cli, ["server", "init", "--config", str(cfg)])
    assert res.exit_code == 0, res.output
    data = json.loads(cfg.read_text())
    assert list(data) == ["graphs", "env", "http", "store", "python_version", "checkpointer"]
    assert data["store"] == {"index": {"dims": 4}, "path": ls.STORE_PATH}
    assert {k: data[k] for k in ("graphs", "env", "http", "python_version")} == {
        k: original[k] for k in ("graphs", "env", "http", "python_version")
    }
    before = cfg.read_text()
    res = runner.invoke(cli, ["server", "init", "--config", str(cfg)])
    assert res.exit_code == 0 and "already uses gitckpt" in res.output
    assert cfg.read_text() == before


def test_server_init_errors_change_nothing(clean_env, tmp_path):
    clean_env.chdir(tmp_path)
    cfg = tmp_path / "langgraph.json"
    runner = CliRunner()
    for text, message in [
        (
            '{"graphs": {},',
            "Error: langgraph.json is not valid JSON: Expecting property name enclosed in double "
            "quotes at line 1, column 15; fix it (nothing was changed)",
        ),
        ("[1, 2]", "Error: langgraph.json holds a JSON list, not an object (nothing was changed)"),
        (
            '{"checkpointer": {"path": "./mine.py:saver"}}',
            "Error: langgraph.json already has a checkpointer ('./mine.py:saver'); pass --force to replace it "
            "with gitckpt's (nothing was changed)",
        ),
        (
            '{"store": "x"}',
            "Error: langgraph.json: 'store' is a JSON str, not an object with a path; fix it "
            "or pass --force to replace it (nothing was changed)",
        ),
    ]:
        cfg.write_text(text)
        res = runner.invoke(cli, ["server", "init"])
        assert res.exit_code == 1
        assert res.output.strip() == message
        assert cfg.read_text() == text
    cfg.write_text('{"checkpointer": {"path": "./mine.py:saver", "ttl": {"strategy": "delete"}}}')
    res = runner.invoke(cli, ["server", "init", "--force"])
    assert res.exit_code == 0, res.output
    assert json.loads(cfg.read_text())["checkpointer"] == {"path": ls.CHECKPOINTER_PATH, "ttl": {"strategy": "delete"}}
    res = runner.invoke(cli, ["server", "init", "--config", str(tmp_path / "nope" / "langgraph.json")])
    assert res.exit_code == 1 and "the folder" in res.output and "does not exist" in res.output


def test_server_init_repo_sets_the_env(clean_env, tmp_path):
    clean_env.chdir(tmp_path)
    cfg = tmp_path / "langgraph.json"
    cfg.write_text(json.dumps({"graphs": {}, "env": {"A": "1"}}))
    runner = CliRunner()
    res = runner.invoke(cli, ["server", "init", "--repo", "../runs.git"])
    assert res.exit_code == 0, res.output
    assert json.loads(cfg.read_text())["env"] == {"A": "1", ls.REPO_ENV: "../runs.git"}
    assert f"repository: {(tmp_path / '../runs.git').absolute()}" in res.output
    assert ls.project_repo(tmp_path) == (tmp_path / "../runs.git").absolute()
    assert "note:" not in res.output
    res = runner.invoke(cli, ["server", "init", "--repo", "data/ck.git"])
    assert res.exit_code == 0, res.output
    assert "updated langgraph.json: env GITCKPT_REPO=data/ck.git" in res.output
    assert "note: it is inside the project folder, which langgraph dev watches" in res.output
    cfg.write_text(json.dumps({"env": ".env"}))
    res = runner.invoke(cli, ["server", "init", "--repo", "x.git"])
    assert res.exit_code == 1
    assert res.output.strip() == (
        "Error: langgraph.json: env names the file '.env'; put GITCKPT_REPO=x.git in "
        "that file instead (nothing was changed)"
    )
    assert json.loads(cfg.read_text()) == {"env": ".env"}


def test_cli_finds_the_servers_repository(clean_env, tmp_path):
    """In a project whose langgraph.json names gitckpt, `gitckpt` reads the server's repository."""
    clean_env.chdir(tmp_path)
    (tmp_path / "langgraph.json").write_text(json.dumps({"graphs": {}, "checkpointer": {"path": ls.CHECKPOINTER_PATH}}))
    assert ls.project_repo(tmp_path) == ls.default_repo(tmp_path)
    with GitSaver(ls.default_repo(tmp_path)) as saver:
        from langgraph.graph import START, StateGraph

        g = StateGraph(dict)
        g.add_node("n", lambda s: {"x": 1})
        g.add_edge(START, "n")
        g.compile(checkpointer=saver).invoke({"x": 0}, {"configurable": {"thread_id": "t1"}})
    res = CliRunner().invoke(cli, ["threads", "--json"])
    assert res.exit_code == 0, res.output
    assert [t["thread_id"] for t in json.loads(res.output)] == ["t1"]
    # the env of langgraph.json (a mapping, or a .env file) moves it, as it does for the server
    (tmp_path / "langgraph.json").write_text(
        json.dumps({"env": {ls.REPO_ENV: "data/ck.git"}, "store": {"path": ls.STORE_PATH}})
    )
    assert ls.project_repo(tmp_path) == tmp_path / "data" / "ck.git"
    (tmp_path / ".env").write_text(f'OTHER=1\nexport {ls.REPO_ENV}="/abs/ck.git"\n')
    (tmp_path / "langgraph.json").write_text(json.dumps({"env": ".env", "store": {"path": ls.STORE_PATH}}))
    assert ls.project_repo(tmp_path) == Path("/abs/ck.git")
    (tmp_path / "langgraph.json").write_text(json.dumps({"graphs": {}}))
    assert ls.project_repo(tmp_path) is None  # not a gitckpt project: ./.gitckpt as before


# -- a real `langgraph dev` --------------------------------------------------------------------

GRAPH = textwrap.dedent("""
    import operator
    import time
    from typing import Annotated, TypedDict

    from langgraph.graph import END, START, StateGraph
    from langgraph.runtime import Runtime
    from langgraph.types import interrupt


    class State(TypedDict, total=False):
        items: Annotated[list[str], operator.add]
        approved: bool
        note: str


    def add(state: State) -> dict:
        if state.get("items") == ["slow"]:  # a run to cancel while it runs
            time.sleep(3)
        return {"items": [f"add:{len(state.get('items') or [])}"]}


    def review(state: State) -> dict:
        answer = interrupt({"question": "approve?", "items": state.get("items") or []})
        return {"approved": answer == "yes", "items": [f"review:{answer}"]}


    def done(state: State, runtime: Runtime) -> dict:
        runtime.store.put(("graph", "done"), "last", {"items": state.get("items") or []})
        return {"items": ["done"]}


    class SubState(TypedDict, total=False):
        note: str


    def inner(state: SubState) -> dict:
        return {"note": "inner"}


    sub = StateGraph(SubState)
    sub.add_node("inner", inner)
    sub.add_edge(START, "inner")

    builder = StateGraph(State)
    builder.add_node("sub", sub.compile())  # a subgraph: its own checkpoint namespace
    builder.add_node("add", add)
    builder.add_node("review", review)
    builder.add_node("done", done)
    builder.add_edge(START, "add")
    builder.add_edge("add", "review")
    builder.add_edge("review", "done")
    builder.add_edge("done", "sub")
    builder.add_edge("sub", END)
    graph = builder.compile()
""")

HAS_SERVER = all(importlib.util.find_spec(m) is not None for m in ("langgraph_cli", "langgraph_api", "langgraph_sdk"))
SERVER_SKIP = "langgraph-cli[inmem] is not installed (pip install -e '.[server]')"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class DevServer:
    """`langgraph dev` in its own process group, stopped by that group's id."""

    def __init__(self, project: Path, env: dict[str, str], log: Path) -> None:
        self.project, self.env, self.log = project, env, log
        self.proc: subprocess.Popen | None = None
        self.url = ""

    def start(self, timeout: float = 40) -> None:
        port = _free_port()
        self.url = f"http://127.0.0.1:{port}"
        exe = Path(sys.executable).parent / "langgraph"
        cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "langgraph_cli"]
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [*cmd, "dev", "--no-browser", "--host", "127.0.0.1", "--port", str(port)],
                cwd=self.project,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"langgraph dev exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/ok", timeout=1) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                time.sleep(0.2)
        pytest.fail(f"langgraph dev did not answer within {timeout}s:\n{self.tail()}")

    def wait_for(self, ready, timeout: float = 40) -> None:
        """Until ``ready(log text)`` and the server answers."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if ready(self.log.read_text(errors="replace")):
                try:
                    with urllib.request.urlopen(f"{self.url}/ok", timeout=1) as resp:
                        if resp.status == 200:
                            return
                except OSError:
                    pass
            time.sleep(0.2)
        pytest.fail(f"langgraph dev was not ready within {timeout}s:\n{self.tail()}")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)

    def tail(self, n: int = 60) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])


def _refs(repo: Path) -> set[str]:
    # read as a gitckpt process reads: it waits for the server's leases (format.md 21)
    from gitckpt.git.repo import GitRepo

    r = GitRepo(repo, create=False, auto_pack=False)
    try:
        return set(r.refs("refs/"))
    finally:
        r.close()


@pytest.mark.server
@pytest.mark.skipif(not HAS_SERVER, reason=SERVER_SKIP)
async def test_langgraph_dev_on_git(tmp_path, clean_env):
    from langgraph_sdk import get_client

    project = tmp_path / "project"
    project.mkdir()
    (project / "graph.py").write_text(GRAPH)
    (project / "embed.py").write_text(EMBED)
    (project / "langgraph.json").write_text(
        json.dumps(
            {
                "dependencies": ["."],
                "graphs": {"agent": "./graph.py:graph"},
                "env": {"APP_FLAG": "1"},
                "store": {"index": {"embed": "./embed.py:embed", "dims": 4, "fields": ["text"]}},
            },
            indent=4,
        )
    )
    env = {k: v for k, v in os.environ.items() if k not in ENV_KEYS and not k.startswith(("LANGSMITH", "LANGCHAIN"))}
    env.update(
        XDG_DATA_HOME=str(tmp_path / "xdg"),
        LANGGRAPH_NO_VERSION_CHECK="true",
        LANGGRAPH_CLI_NO_ANALYTICS="1",
        LANGSMITH_TRACING="false",
        # the checkpoints decode LangGraph's safe types only: nothing else is needed here
        GITCKPT_ALLOW="strict",
        # fsync mode: each writing process keeps a journal, deleted when it closes the repository,
        # so an empty journal folder after a stop shows the server closed the saver and the store
        GITCKPT_DURABILITY="fsync",
    )

    def gitckpt_process(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "gitckpt", *args], cwd=project, env=env, capture_output=True, text=True, timeout=60
        )

    clean_env.chdir(project)  # the command finds the server's repository from the project folder

    def gitckpt(*args: str, ok: bool = True):
        """The command in this process (click's runner): a subprocess each costs ~1 s of start-up."""
        res = CliRunner().invoke(cli, list(args))
        if not ok:
            return res
        assert res.exit_code == 0, f"gitckpt {' '.join(args)}: {res.output}"
        return json.loads(res.stdout) if "--json" in args else res.stdout

    res = gitckpt_process("server", "init")
    assert res.returncode == 0, res.stderr
    repo = ls.default_repo(project)
    assert f"repository: {repo}" in res.stdout
    assert project not in repo.parents  # outside what the dev server watches
    assert json.loads((project / "langgraph.json").read_text())["env"] == {"APP_FLAG": "1"}

    server = DevServer(project, env, tmp_path / "server.log")
    try:
        server.start()
        client = get_client(url=server.url, timeout=60)

        # create a thread and run it (wait) up to the interrupt
        t1 = (await client.threads.create())["thread_id"]
        result = await client.runs.wait(t1, "agent", input={"items": ["hello"]})
        assert result["items"] == ["hello", "add:1"]
        assert f"refs/heads/threads/{t1}" in _refs(repo)
        res = gitckpt_process("log", t1, "--json")  # a real process, run in the project folder
        assert res.returncode == 0, res.stderr
        log = json.loads(res.stdout)
        assert log == gitckpt("log", t1, "--json")
        state = await client.threads.get_state(t1)
        assert state["next"] == ["review"]
        assert state["tasks"][0]["interrupts"][0]["value"] == {"question": "approve?", "items": ["hello", "add:1"]}
        assert log[0]["checkpoint_id"] == state["checkpoint"]["checkpoint_id"]
        shown = gitckpt("show", t1, "--json")
        assert shown["values"]["items"] == ["hello", "add:1"]
        assert [t["interrupts"][0]["value"] for t in shown["tasks"]] == [
            {"question": "approve?", "items": ["hello", "add:1"]}
        ]
        paused_at = state["checkpoint"]["checkpoint_id"]

        # resume it, streaming
        chunks = [c async for c in client.runs.stream(t1, "agent", command={"resume": "yes"}, stream_mode="values")]
        values = [c.data for c in chunks if c.event == "values"]
        assert values[-1]["items"] == ["hello", "add:1", "review:yes", "done"]
        assert gitckpt("show", t1, "--json")["values"] == {
            "items": ["hello", "add:1", "review:yes", "done"],
            "approved": True,
            "note": "inner",
        }

        # the subgraph's checkpoints: their own line in git, read back through the API
        sub_refs = [r for r in _refs(repo) if r.startswith(f"refs/heads/subgraphs/{t1}/sub")]
        assert len(sub_refs) == 1, _refs(repo)
        sub_log = gitckpt("log", t1, "--ns", "sub", "--json")
        sub_ns = sub_log[0]["checkpoint_ns"]
        assert sub_ns.startswith("sub:") and len(sub_log) >= 2
        sub_history = await client.threads.get_history(t1, checkpoint={"checkpoint_ns": sub_ns}, limit=20)
        assert [h["checkpoint"]["checkpoint_id"] for h in sub_history] == [r["checkpoint_id"] for r in sub_log]
        assert sub_history[0]["values"] == {"note": "inner"}

        # history: the server's is the repository's
        history = await client.threads.get_history(t1, limit=100)
        log = gitckpt("log", t1, "--json")
        assert [h["checkpoint"]["checkpoint_id"] for h in history] == [r["checkpoint_id"] for r in log]
        assert [h["metadata"]["step"] for h in history] == [r["step"] for r in log] == [4, 3, 2, 1, 0, -1]

        # the state at an old checkpoint
        old = await client.threads.get_state(t1, checkpoint_id=paused_at)
        assert old["values"]["items"] == ["hello", "add:1"] and old["next"] == ["review"]
        assert gitckpt("show", t1, paused_at, "--json")["values"]["items"] == ["hello", "add:1"]

        # edit the past (Studio's edit and fork): a new line from the old checkpoint
        upd = await client.threads.update_state(t1, {"items": ["edited"]}, checkpoint_id=paused_at)
        fork_id = upd["checkpoint"]["checkpoint_id"]
        refs = _refs(repo)
        assert any(r.startswith(f"refs/heads/forks/{t1}/") for r in refs), refs
        row = next(r for r in gitckpt("log", t1, "--json") if r["checkpoint_id"] == fork_id)
        assert row["parent_checkpoint_id"] == paused_at and row["source"] == "update"
        forked = await client.runs.wait(t1, "agent", input=None, checkpoint_id=fork_id)
        assert forked["items"] == ["hello", "add:1", "edited"]  # the fork pauses at review again
        main = gitckpt("show", t1, log[0]["checkpoint_id"], "--json")["values"]["items"]
        assert main == ["hello", "add:1", "review:yes", "done"]  # the main line is untouched
        diff = gitckpt("diff", t1, paused_at, fork_id, "--json")
        assert (diff["from"]["checkpoint_id"], diff["to"]["checkpoint_id"]) == (paused_at, fork_id)
        assert [(c["channel"], c.get("added")) for c in diff["channels"]] == [("items", ["edited"])]

        # copy the thread: new refs on the same commits' trees
        t2 = (await client.threads.copy(t1))["thread_id"]
        assert f"refs/heads/threads/{t2}" in _refs(repo)
        assert (await client.threads.get_state(t2))["values"] == (await client.threads.get_state(t1))["values"]
        assert {r["checkpoint_id"] for r in gitckpt("log", t2, "--json")} == {
            r["checkpoint_id"] for r in gitckpt("log", t1, "--json")
        }

        # delete the copy
        await client.threads.delete(t2)
        assert not any(t2 in r for r in _refs(repo))
        gone = gitckpt("log", t2, "--json", ok=False)
        assert gone.exit_code == 1 and "Error:" in gone.output
        assert gitckpt("log", t1, "--json")  # the original is still there

        # delete a run: its checkpoints go, the thread's earlier ones stay
        t3 = (await client.threads.create())["thread_id"]
        await client.runs.wait(t3, "agent", input={"items": ["x"]})
        before = {r["checkpoint_id"] for r in gitckpt("log", t3, "--json")}
        run2 = await client.runs.create(t3, "agent", command={"resume": "no"})
        await client.runs.join(t3, run2["run_id"])
        assert len(gitckpt("log", t3, "--json")) > len(before)
        await client.runs.delete(t3, run2["run_id"])
        assert {r["checkpoint_id"] for r in gitckpt("log", t3, "--json")} == before
        # the writes the run made on the earlier checkpoint stay, as with the server's own
        # checkpointer: the state is that checkpoint with review's result pending
        state3 = await client.threads.get_state(t3)
        assert state3["checkpoint"]["checkpoint_id"] == gitckpt("log", t3, "--json")[0]["checkpoint_id"]
        assert [(t["name"], t["result"]) for t in state3["tasks"]] == [
            ("review", {"approved": False, "items": ["review:no"]})
        ]
        pending = gitckpt("show", t3, "--json")["pending_writes"]
        assert {(w["channel"], json.dumps(w["value"])) for w in pending} >= {("approved", "false")}
        t4 = (await client.threads.create())["thread_id"]
        await client.runs.wait(t4, "agent", input={"items": ["y"]})  # paused across the restart

        # a run cancelled by a newer one with multitask_strategy="rollback": its checkpoints go
        t7 = (await client.threads.create())["thread_id"]
        slow = await client.runs.create(t7, "agent", input={"items": ["slow"]})
        deadline = time.monotonic() + 30
        while f"refs/heads/threads/{t7}" not in _refs(repo) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)  # until the slow run has written its first checkpoints
        assert gitckpt("log", t7, "--json")[-1]["run_id"] == slow["run_id"]
        fast = await client.runs.create(t7, "agent", input={"items": ["b"]}, multitask_strategy="rollback")
        await client.runs.join(t7, fast["run_id"])
        log7 = gitckpt("log", t7, "--json")
        assert {r["run_id"] for r in log7} == {fast["run_id"]}
        assert [h["checkpoint"]["checkpoint_id"] for h in await client.threads.get_history(t7, limit=20)] == [
            r["checkpoint_id"] for r in log7
        ]
        assert (await client.threads.get_state(t7))["values"]["items"] == ["b", "add:1"]

        # the store, through the API and from inside the graph
        await client.store.put_item(["notes", "u1"], "k1", {"text": "hello world"})
        found = await client.store.search_items(["notes"], filter={"text": "hello world"})
        assert [(i["namespace"], i["key"]) for i in found["items"]] == [(["notes", "u1"], "k1")]
        assert "refs/heads/store" in _refs(repo)
        assert gitckpt("store", "get", "notes/u1", "k1", "--json")["value"] == {"text": "hello world"}
        # semantic search, with the index langgraph.json gives the store
        await client.store.put_item(["notes", "u1"], "k2", {"text": "a cup of tea"})
        found = await client.store.search_items(["notes"], query="tea please")
        assert [i["key"] for i in found["items"]] == ["k2", "k1"]
        assert found["items"][0]["score"] > found["items"][1]["score"]
        # the graph's own store writes (node done): t1's, then t3's deleted run's (a store write is not a checkpoint)
        assert gitckpt("store", "get", "graph/done", "last", "--json")["value"] == {
            "items": ["x", "add:1", "review:no"]
        }
        assert [e["value"] for e in gitckpt("store", "log", "graph/done", "last", "--json")] == [
            {"items": ["x", "add:1", "review:no"]},
            {"items": ["hello", "add:1", "review:yes"]},
        ]

        # git's writes stayed out of the watched folder: nothing reloaded the server
        assert "Reloading" not in server.log.read_text(errors="replace")

        journal = repo / "gitckpt-journal"
        assert list(journal.iterdir())  # the server's journal, open while it runs

        # restart: the same threads, read back from git
        server.stop()
        assert not list(journal.iterdir())  # closed, and nothing left to replay
        server.start()
        client = get_client(url=server.url, timeout=60)
        assert (await client.threads.get_state(t1))["values"]["items"] == ["hello", "add:1", "edited"]
        history2 = await client.threads.get_history(t1, limit=100)
        assert {h["checkpoint"]["checkpoint_id"] for h in history2} == {
            r["checkpoint_id"] for r in gitckpt("log", t1, "--json")
        }
        assert (await client.threads.get_state(t1, checkpoint_id=paused_at))["values"]["items"] == ["hello", "add:1"]
        assert (await client.threads.get_state(t3))["values"] == state3["values"]
        found = await client.store.search_items(["notes"], query="tea")
        assert [i["key"] for i in found["items"]] == ["k2", "k1"]

        # a thread another process writes (here `gitckpt fork`) shows once the server has a record of it
        t5 = str(uuid.uuid4())
        gitckpt("fork", t1, paused_at, "--to", t5)
        await client.threads.create(thread_id=t5, if_exists="do_nothing", graph_id="agent")
        state5 = await client.threads.get_state(t5)
        # the fork starts at the paused checkpoint, with the writes t1 made on it (review's result)
        assert state5["checkpoint"]["checkpoint_id"] == paused_at
        assert [(t["name"], t["result"]) for t in state5["tasks"]] == [
            ("review", {"approved": True, "items": ["review:yes"]})
        ]
        assert [h["checkpoint"]["checkpoint_id"] for h in await client.threads.get_history(t5, limit=20)] == [
            r["checkpoint_id"] for r in gitckpt("log", t5, "--json")
        ]
        # pruning threads through the API deletes them in git
        assert (await client.threads.prune([t5]))["pruned_count"] == 1
        assert not any(t5 in r for r in _refs(repo))
        assert (await client.threads.get_state(t4))["next"] == ["review"]
        done = await client.runs.wait(t4, "agent", command={"resume": "yes"})
        assert done["items"] == ["y", "add:1", "review:yes", "done"]
        assert gitckpt("show", t4, "--json")["values"]["items"] == ["y", "add:1", "review:yes", "done"]

        # editing the graph's code reloads the server: it closes the saver and store and opens them again
        started = server.log.read_text(errors="replace").count("Application started up")
        (project / "graph.py").write_text(GRAPH + "\n# edited\n")
        server.wait_for(lambda log: log.count("Application started up") > started and "Reloading" in log)
        t6 = (await client.threads.create())["thread_id"]
        assert (await client.runs.wait(t6, "agent", input={"items": ["z"]}))["items"] == ["z", "add:1"]
        assert (
            gitckpt("log", t6, "--json")[0]["checkpoint_id"]
            == (await client.threads.get_state(t6))["checkpoint"]["checkpoint_id"]
        )
        assert (await client.threads.get_state(t4))["values"]["items"] == ["y", "add:1", "review:yes", "done"]
    finally:
        server.stop()
    assert not (project / ".gitckpt").exists()
    assert not list((repo / "gitckpt-journal").iterdir())  # the reloaded and the stopped server closed it


# -- recording through the server, reproduced offline (issue 15, with issue 13's recording) ---

AGENT = textwrap.dedent('''
    """A deterministic tool-calling agent; counts model calls and tool runs in files."""
    import json
    import os
    from typing import Annotated, TypedDict

    from langchain_core.language_models.chat_models import BaseChatModel
    from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage, ToolMessage
    from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
    from langchain_core.tools import tool
    from langchain_core.utils.function_calling import convert_to_openai_tool
    from langgraph.graph import END, START, StateGraph
    from langgraph.graph.message import add_messages
    from langgraph.prebuilt import ToolNode


    def _log(var, line):
        with open(os.environ[var], "a") as fh:
            fh.write(line + "\\n")


    class CountingModel(BaseChatModel):
        @property
        def _llm_type(self):
            return "counting-test-model"

        def _answer(self, messages):
            _log("STUDIO_MODEL_LOG", f"model {len(messages)}")
            last = messages[-1]
            if isinstance(last, HumanMessage) and "weather in" in str(last.content):
                city = str(last.content).split("weather in", 1)[1].strip()
                return AIMessage(content="", tool_calls=[
                    {"name": "get_weather", "args": {"city": city}, "id": f"call_{len(messages)}"}])
            if isinstance(last, ToolMessage):
                return AIMessage(content=f"it is {last.content}")
            return AIMessage(content=f"you said {last.content}")

        def _generate(self, messages, stop=None, run_manager=None, **kwargs):
            return ChatResult(generations=[ChatGeneration(message=self._answer(messages))])

        def _stream(self, messages, stop=None, run_manager=None, **kwargs):  # Studio streams messages
            msg = self._answer(messages)
            chunks = [{"content": w} for w in msg.content.split(" ")] if msg.content else [{"content": ""}]
            if msg.tool_calls:
                chunks[-1]["tool_call_chunks"] = [
                    {"name": c["name"], "args": json.dumps(c["args"]), "id": c["id"], "index": i}
                    for i, c in enumerate(msg.tool_calls)]
            for i, chunk in enumerate(chunks):
                if i < len(chunks) - 1:
                    chunk["content"] += " "
                yield ChatGenerationChunk(message=AIMessageChunk(**chunk))

        def bind_tools(self, tools, **kwargs):
            return self.bind(tools=[convert_to_openai_tool(t) for t in tools], **kwargs)


    @tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        _log("STUDIO_TOOL_LOG", f"get_weather {city}")
        return f"sunny in {city}"


    class State(TypedDict):
        messages: Annotated[list, add_messages]


    model = CountingModel().bind_tools([get_weather])


    def agent(state: State) -> dict:
        return {"messages": [model.invoke(state["messages"])]}


    def route(state: State) -> str:
        return "tools" if getattr(state["messages"][-1], "tool_calls", None) else END


    builder = StateGraph(State)
    builder.add_node("agent", agent)
    builder.add_node("tools", ToolNode([get_weather]))
    builder.add_edge(START, "agent")
    builder.add_conditional_edges("agent", route, ["tools", END])
    builder.add_edge("tools", "agent")
    graph = builder.compile()
''')


@pytest.mark.server
@pytest.mark.skipif(not HAS_SERVER, reason=SERVER_SKIP)
async def test_langgraph_dev_records_and_reproduce_replays_a_studio_thread(tmp_path, clean_env):
    """GITCKPT_RECORD=1: the runs the server makes are recorded; `gitckpt reproduce` re-runs
    a thread made through the server API (as Studio makes them) with no model call and no tool run."""
    from langgraph_sdk import get_client

    project = tmp_path / "project"
    project.mkdir()
    (project / "graph.py").write_text(AGENT)
    (project / "langgraph.json").write_text(
        json.dumps({"dependencies": ["."], "graphs": {"agent": "./graph.py:graph"}, "env": {ls.RECORD_ENV: "1"}})
    )
    models, tools = tmp_path / "model-calls.txt", tmp_path / "tool-runs.txt"
    env = {k: v for k, v in os.environ.items() if k not in ENV_KEYS and not k.startswith(("LANGSMITH", "LANGCHAIN"))}
    env.update(
        XDG_DATA_HOME=str(tmp_path / "xdg"),
        LANGGRAPH_NO_VERSION_CHECK="true",
        LANGGRAPH_CLI_NO_ANALYTICS="1",
        LANGSMITH_TRACING="false",
        STUDIO_MODEL_LOG=str(models),
        STUDIO_TOOL_LOG=str(tools),
    )

    def gitckpt_process(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "gitckpt", *args], cwd=project, env=env, capture_output=True, text=True, timeout=60
        )

    res = gitckpt_process("server", "init")
    assert res.returncode == 0, res.stderr
    repo = ls.default_repo(project)
    server = DevServer(project, env, tmp_path / "server.log")
    try:
        server.start()
        client = get_client(url=server.url, timeout=60)
        thread = (await client.threads.create())["thread_id"]
        # a run as runs.wait makes it (the model is invoked) ...
        ask = {"messages": [{"role": "user", "content": "weather in Paris"}]}
        out = await client.runs.wait(thread, "agent", input=ask)
        assert [m["content"] for m in out["messages"]] == [
            "weather in Paris", "", "sunny in Paris", "it is sunny in Paris"]
        # ... and one as Studio makes it: streaming the model's messages (the model is streamed)
        chunks = [
            c
            async for c in client.runs.stream(
                thread, "agent", input={"messages": [{"role": "user", "content": "thanks"}]},
                stream_mode=["values", "messages-tuple"],
            )
        ]
        assert any(c.event == "messages" for c in chunks)
        state = await client.threads.get_state(thread)
        assert state["values"]["messages"][-1]["content"] == "you said thanks"
        assert len(models.read_text().splitlines()) == 3 and tools.read_text() == "get_weather Paris\n"

        # the repository holds the calls, each with the step that made it
        log = gitckpt_process("log", thread, "--json")
        assert log.returncode == 0, log.stderr
        rows = json.loads(log.stdout)
        assert [(r["step"], r["calls"]) for r in rows if r["calls"]] == [(6, 1), (3, 1), (2, 1), (1, 1)]
        shown = gitckpt_process("show", thread)  # the latest checkpoint: the streamed model call
        assert shown.returncode == 0 and "Recorded calls" in shown.stdout and "model CountingModel" in shown.stdout, (
            shown.stdout + shown.stderr
        )
        with GitSaver(repo) as saver:
            calls = saver.recorded_calls(thread)
        assert sorted((c["kind"], c["node"]) for c in calls) == [
            ("model", "agent"), ("model", "agent"), ("model", "agent"), ("tool", "tools")]

        # reproduce, offline, in another process, while the server runs: no model call, no tool run
        before = (models.read_text(), tools.read_text())
        rep = gitckpt_process("reproduce", thread, "--graph", str(project / "graph.py") + ":graph", "--json")
        assert rep.returncode == 0, rep.stdout + rep.stderr
        result = json.loads(rep.stdout)
        assert result["ok"] and result["runs"] == 2 and result["compared"] == result["checkpoints"]
        assert result["answered"] == {"model": 3, "tool": 1} and result["live"] == {"model": 0, "tool": 0}
        assert (models.read_text(), tools.read_text()) == before
        # the graph named by langgraph.json works as well, and the scratch threads are gone
        rep = gitckpt_process("reproduce", thread, "--graph", "agent")
        assert rep.returncode == 0, rep.stdout + rep.stderr
        assert rep.stdout.startswith("reproduced ") and "3 model calls and 1 tool call answered" in rep.stdout
        assert (models.read_text(), tools.read_text()) == before
        assert not any("reproduce-" in r for r in _refs(repo))
        assert (await client.threads.get_state(thread))["values"] == state["values"]  # the server's view is untouched
    finally:
        server.stop()
