"""`gitckpt demo`: the seed's "Bob" scenario, offline, on a fresh repository."""

from __future__ import annotations

import os
import subprocess
import sys

from click.testing import CliRunner
from langchain_core.messages import HumanMessage, SystemMessage

from gitckpt import GitSaver, GitStore, demo
from gitckpt.cli import cli


def gitckpt(*args: str, cwd, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gitckpt", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120, env=env)


def test_demo_in_a_fresh_repository(tmp_path):
    result = gitckpt("demo", "--repo", "demo.git", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    out = result.stdout.splitlines()
    said = [ln.strip() for ln in out if ln.strip().startswith(("human:", "ai:"))]
    assert said == [
        "human: Hi! Remember: my name is Bob",
        "ai:    Hello Bob! I'll remember that your name is Bob.",
        "human: what is my name?",
        "ai:    Your name is Bob.",
        "human: what is my name?",
        "ai:    I don't know your name yet. Tell me, and ask me to remember it.",
        "human: Please forget my name.",
        "ai:    Done: I have forgotten 1 thing(s) you told me.",
        "ai:    Hello Bob! I'll remember that your name is Bob.",
    ]
    text = result.stdout
    assert "⏸ interrupt: Forget 1 memory(ies) of user 1? (yes/no)" in text
    assert '▶ a human answers: Command(resume="yes")' in text
    assert "new branch: forks/1/" in text
    assert "the model was called 0 time(s) during the reproduction" in text
    assert max(len(ln) for ln in out) <= 80
    # it ends with the commands that show what happened
    assert "  gitckpt log 1 --graph --repo demo.git" in out
    assert "  git --git-dir demo.git log --graph --all --oneline" in out

    repo = tmp_path / "demo.git"
    with GitSaver.from_conn_string(str(repo)) as saver:
        assert saver.threads() == ["1", "2", "3"]
        one = saver.thread_info("1")
        assert one["forks"] == 1 and one["checkpoints"] == 8
        last2 = saver.get_tuple({"configurable": {"thread_id": "2"}}).checkpoint["channel_values"]["messages"][-1]
        assert last2.content == "Your name is Bob."
        last3 = saver.get_tuple({"configurable": {"thread_id": "3"}}).checkpoint["channel_values"]["messages"][-1]
        assert last3.content.startswith("I don't know your name")
        sources = [t.metadata["source"] for t in saver.list({"configurable": {"thread_id": "1"}})]
        assert sources.count("fork") == 1
        paused = [t for t in saver.list({"configurable": {"thread_id": "1"}})
                  if any(w[1] == "__interrupt__" for w in t.pending_writes)]
        assert len(paused) == 1 and paused[0].metadata["step"] == 3
        with GitStore(saver.repo) as store:
            assert [i.value for i in store.search(("memories", "1"))] == [{"data": "Hi! Remember: my name is Bob"}]
            assert store.search(("memories", "2")) == []
    # the printed commands work
    shown = gitckpt("log", "1", "--graph", "--repo", "demo.git", cwd=tmp_path)
    assert shown.returncode == 0 and "|/" in shown.stdout
    graph = subprocess.run(["git", "--git-dir", "demo.git", "log", "--graph", "--all", "--oneline"], cwd=tmp_path,
                           capture_output=True, text=True, check=True).stdout
    assert "fork of" in graph and "put memories/1" in graph and "delete memories/1" in graph
    assert "  gitckpt reproduce 3 --graph gitckpt.demo:graph --repo demo.git" in out
    reproduced = gitckpt("reproduce", "3", "--graph", "gitckpt.demo:graph", "--repo", "demo.git", cwd=tmp_path)
    assert reproduced.returncode == 0, reproduced.stdout + reproduced.stderr
    assert reproduced.stdout.startswith("reproduced 3/3 checkpoints of thread 3 (1 run; 1 model call")
    verify = CliRunner().invoke(cli, ["verify", "--repo", str(repo)])
    assert verify.exit_code == 0 and verify.stdout.startswith("OK: 3 thread(s), 14 checkpoint(s)")


def test_demo_in_the_default_repository(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "GITCKPT_REPO"}
    result = gitckpt("demo", cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / ".gitckpt" / "HEAD").is_file()
    lines = result.stdout.splitlines()
    assert lines[0] == "gitckpt demo · repository .gitckpt · built-in offline model"
    assert "  gitckpt log 1 --graph" in lines  # no --repo needed: the default finds it
    assert "  git --git-dir .gitckpt log --graph --all --oneline" in lines
    again = gitckpt("demo", cwd=tmp_path, env=env)
    assert again.returncode == 1
    assert again.stderr == (
        f"Error: {tmp_path}/.gitckpt already has thread '1'; run the demo on a new repository (--repo PATH)\n"
    )


def test_demo_model_is_deterministic():
    model = demo.DemoChatModel()

    def say(text, info=""):
        return model.invoke([SystemMessage(f"You are a helpful assistant. User info: {info}"),
                             HumanMessage(text)]).content

    assert say("Hi! Remember: my name is Bob") == "Hello Bob! I'll remember that your name is Bob."
    assert say("what is my name?", "Hi! Remember: my name is Bob") == "Your name is Bob."
    assert say("what is my name?") == "I don't know your name yet. Tell me, and ask me to remember it."
    assert say("my name is Ann") == "Nice to meet you, Ann!"
    assert say("the weather") == "You said: the weather"


def test_demo_events_in_order(tmp_path):
    events = []
    summary = demo.run(tmp_path / "d.git", lambda e, d: events.append(e))
    assert [e for e in events if e in ("section", "interrupt", "paused", "resume", "replay", "fork", "reproduce")] == [
        "section", "section", "reproduce", "section", "section", "section", "interrupt", "paused", "resume",
        "section", "replay", "fork",
    ]
    assert summary["interrupt_step"] == 3 and len(summary["fork_lines"]) == 1
    # thread 1 was recorded and reproduced offline: every checkpoint matched, the model was not called
    assert summary["reproduce"]["ok"] and summary["reproduce"]["compared"] == 3
    assert summary["reproduce"]["answered"] == {"model": 1, "tool": 0}
    assert summary["reproduce_model_calls"] == 0
