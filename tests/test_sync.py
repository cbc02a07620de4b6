"""Sharing through git remotes: pull, push, sync against a real ``git daemon``.

Two people (alice, bob) each have their own repository and share runs of real
LangGraph graphs through a bare repository served by ``git daemon`` on
127.0.0.1. Nothing here is mocked: the transport is libgit2's git:// client,
the server is git's own.
"""

from __future__ import annotations

import operator
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated, TypedDict

import pytest
from click.testing import CliRunner
from langgraph.graph import END, START, StateGraph

from gitckpt import GitSaver, GitStore, RemoteError, sync
from tests.conftest import free_port
from gitckpt.cli import cli
from gitckpt.errors import NotFoundError
from gitckpt.git.repo import GitRepo
from gitckpt.git.repo import publish_all


class State(TypedDict):
    items: Annotated[list[str], operator.add]


def make_graph(saver, who: str):
    b = StateGraph(State)
    b.add_node("work", lambda s: {"items": [f"{who}:{len(s['items'])}"]})
    b.add_edge(START, "work")
    b.add_edge("work", END)
    return b.compile(checkpointer=saver)


def cfg(thread: str = "1") -> dict:
    return {"configurable": {"thread_id": thread}}


def git(repo: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    publish_all()  # plain git sees what is published (format.md 21)
    return subprocess.run(["git", "--git-dir", str(repo), *args], check=check, capture_output=True, text=True)


def ids_of(graph, thread: str = "1") -> list[str]:
    return [s.config["configurable"]["checkpoint_id"] for s in graph.get_state_history(cfg(thread))]


@pytest.fixture
def people(tmp_path: Path, server):
    """alice's and bob's repositories, each with ``origin`` set to the server."""
    out = {}
    for who in ("alice", "bob"):
        path = tmp_path / f"{who}.git"
        GitRepo(path).close()
        git(path, "remote", "add", "origin", server["url"])
        out[who] = path
    return out


def statuses(result: sync.Result) -> dict[str, str]:
    return {sync._short(r.ref): r.status for r in result.refs}


# -- library ---------------------------------------------------------------------------


def test_share_a_thread_both_ways(people, server):
    alice_path, bob_path = people["alice"], people["bob"]
    with GitSaver(alice_path) as alice_saver, GitSaver(bob_path) as bob_saver:
        alice = make_graph(alice_saver, "alice")
        alice.invoke({"items": ["hi"]}, cfg())
        pushed = sync.push(alice_path)
        assert pushed.ok and statuses(pushed) == {"threads/1": sync.PUSHED}
        assert git(server["path"], "rev-parse", "threads/1").stdout.strip() == str(alice_saver.repo.ref("refs/heads/threads/1"))

        bob = make_graph(bob_saver, "bob")
        assert bob.get_state(cfg()).values == {}
        pulled = sync.pull(bob_path)
        assert statuses(pulled) == {"threads/1": sync.CREATED}
        # bob's open saver sees alice's run, exactly
        assert bob.get_state(cfg()).values == alice.get_state(cfg()).values == {"items": ["hi", "alice:1"]}
        assert ids_of(bob) == ids_of(alice)

        bob.invoke({"items": ["more"]}, cfg())
        assert statuses(sync.push(bob_path)) == {"threads/1": sync.PUSHED}
        assert statuses(sync.push(bob_path)) == {"threads/1": sync.UP_TO_DATE}

        # alice's already open saver sees bob's checkpoints after the pull
        assert statuses(sync.pull(alice_path)) == {"threads/1": sync.FAST_FORWARDED}
        assert alice.get_state(cfg()).values == {"items": ["hi", "alice:1", "more", "bob:3"]}
        assert ids_of(alice) == ids_of(bob)
        assert statuses(sync.pull(alice_path)) == {"threads/1": sync.UP_TO_DATE}


def test_concurrent_work_on_one_thread_keeps_both_lines(people, server):
    alice_path, bob_path = people["alice"], people["bob"]
    with GitSaver(alice_path) as alice_saver, GitSaver(bob_path) as bob_saver:
        alice, bob = make_graph(alice_saver, "alice"), make_graph(bob_saver, "bob")
        alice.invoke({"items": ["start"]}, cfg())
        sync.push(alice_path)
        sync.pull(bob_path)
        shared = set(ids_of(alice))

        alice.invoke({"items": ["a"]}, cfg())  # both continue the same checkpoint
        bob.invoke({"items": ["b"]}, cfg())
        alice_ids, bob_ids = set(ids_of(alice)), set(ids_of(bob))
        assert alice_ids & bob_ids == shared

        assert statuses(sync.push(bob_path)) == {"threads/1": sync.PUSHED}
        rejected = sync.push(alice_path)
        assert not rejected.ok
        [ref] = rejected.refs
        assert ref.status == sync.REJECTED and ref.detail == "the remote's line has changes you do not have; pull first"

        pulled = sync.pull(alice_path)
        [ref] = pulled.refs
        assert ref.status == sync.FORKED
        first_bob = min(bob_ids - shared)
        assert ref.target == f"refs/heads/forks/1/{first_bob}"
        # nothing lost: every checkpoint of both lines, through the open saver
        assert set(ids_of(alice)) == alice_ids | bob_ids
        latest = max(alice_ids | bob_ids)
        assert alice.get_state(cfg()).config["configurable"]["checkpoint_id"] == latest

        # alice's push now sends her line as a fork line; bob's pull brings it
        pushed = sync.push(alice_path)
        assert pushed.ok and [r.status for r in pushed.refs] == [sync.FORKED, sync.UP_TO_DATE]
        assert pushed.refs[0].target == f"refs/heads/forks/1/{min(alice_ids - shared)}"
        assert statuses(sync.pull(bob_path)) == {"threads/1": sync.UP_TO_DATE,
                                                  f"forks/1/{min(alice_ids - shared)}": sync.CREATED}
        assert set(ids_of(bob)) == set(ids_of(alice)) == alice_ids | bob_ids
        assert bob.get_state(cfg()).values == alice.get_state(cfg()).values

        # a second round converges without new refs
        assert sync.sync(alice_path).to_dict()["ok"]
        assert all(r.status == sync.UP_TO_DATE for r in sync.sync(bob_path).push.refs)
    for path in (alice_path, bob_path, server["path"]):
        assert git(path, "fsck", "--strict").returncode == 0
    git(alice_path, "gc", "--prune=now", "--quiet")
    with GitSaver(alice_path) as again:
        assert set(ids_of(make_graph(again, "x"))) == alice_ids | bob_ids


def test_store_items_shared_and_merged(people):
    alice_path, bob_path = people["alice"], people["bob"]
    with GitStore(alice_path) as a_store:
        a_store.put(("memories", "1"), "name", {"text": "Bob"})
        a_store.put(("memories", "1"), "food", {"text": "tea"})
    assert statuses(sync.push(alice_path)) == {"store": sync.PUSHED}
    with GitStore(bob_path) as b_store:
        assert statuses(sync.pull(bob_path)) == {"store": sync.CREATED}
        assert b_store.get(("memories", "1"), "name").value == {"text": "Bob"}
        b_store.put(("memories", "1"), "food", {"text": "coffee"})  # both change food; bob later
        b_store.put(("memories", "2"), "pet", {"text": "cat"})
    with GitStore(alice_path) as a_store:
        a_store.put(("memories", "1"), "food", {"text": "water"})
        a_store.delete(("memories", "1"), "name")
        a_store.put(("memories", "3"), "city", {"text": "Oslo"})
    b_store = GitStore(bob_path)
    b_store.put(("memories", "1"), "food", {"text": "juice"})  # bob's is the later food
    assert statuses(sync.push(bob_path)) == {"store": sync.PUSHED}
    rejected = sync.push(alice_path)
    assert rejected.refs[0].status == sync.REJECTED
    assert rejected.refs[0].detail == "the remote's store has changes you do not have; pull first"
    with GitStore(alice_path) as a_store:
        assert a_store.get(("memories", "1"), "food").value == {"text": "water"}
        pulled = sync.pull(alice_path)
        assert statuses(pulled) == {"store": sync.MERGED}
        # the open store sees the merge
        assert a_store.get(("memories", "1"), "food").value == {"text": "juice"}
        assert a_store.get(("memories", "2"), "pet").value == {"text": "cat"}
        assert a_store.get(("memories", "3"), "city").value == {"text": "Oslo"}
        assert a_store.get(("memories", "1"), "name") is None  # deleted by alice, untouched by bob
    merge = git(alice_path, "rev-list", "--parents", "-n", "1", "store").stdout.split()
    assert len(merge) == 3
    assert statuses(sync.push(alice_path)) == {"store": sync.PUSHED}
    assert statuses(sync.pull(bob_path)) == {"store": sync.FAST_FORWARDED}
    assert b_store.get(("memories", "3"), "city").value == {"text": "Oslo"}
    assert b_store.get(("memories", "1"), "food").value == {"text": "juice"}
    b_store.close()
    assert git(alice_path, "fsck", "--strict").returncode == 0


def test_named_threads_and_errors(people, server, tmp_path):
    alice_path, bob_path = people["alice"], people["bob"]
    with GitSaver(alice_path) as saver:
        g = make_graph(saver, "alice")
        g.invoke({"items": ["x"]}, cfg("1"))
        g.invoke({"items": ["y"]}, cfg("two words"))
    assert statuses(sync.push(alice_path, threads=["two words"], store=False)) == {"threads/two%20words": sync.PUSHED}
    assert statuses(sync.push(alice_path)) == {"threads/1": sync.PUSHED, "threads/two%20words": sync.UP_TO_DATE}
    assert statuses(sync.pull(bob_path, threads=["1"], store=False)) == {"threads/1": sync.CREATED}
    with pytest.raises(NotFoundError, match=r"^remote 'origin' \(git://.*\) has no thread 'nope'$"):
        sync.pull(bob_path, threads=["nope"])
    with pytest.raises(RemoteError, match=r"^no remote 'upstream' in "):
        sync.pull(bob_path, "upstream")
    # a plain path works as a remote too, and a file:// URL
    assert statuses(sync.pull(bob_path, str(server["path"]))) == {"threads/1": sync.UP_TO_DATE,
                                                                    "threads/two%20words": sync.CREATED}
    assert sync.pull(bob_path, f"file://{server['path']}").ok
    assert not [r for r in git(bob_path, "for-each-ref").stdout.splitlines() if "gitckpt-fetch" in r]
    dead = f"git://127.0.0.1:{free_port()}/team.git"
    with pytest.raises(RemoteError, match=r"^cannot reach remote .*Connection refused"):
        sync.push(bob_path, dead)


# -- the CLI ---------------------------------------------------------------------------


def run(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_cli_push_pull_sync(people, server, tmp_path):
    alice_path, bob_path = people["alice"], people["bob"]
    with GitSaver(alice_path) as saver:
        make_graph(saver, "alice").invoke({"items": ["x"]}, cfg("1"))
    result = run("push", "--repo", str(alice_path))
    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines()[0] == f"Pushed to origin ({server['url']}):"
    assert result.stdout.splitlines()[3].split() == ["threads/1", "pushed", "(new)"]

    result = run("pull", "--repo", str(bob_path), "--json")
    assert result.exit_code == 0, result.stderr
    data = __import__("json").loads(result.stdout)
    assert data["ok"] and data["refs"][0]["ref"] == "threads/1" and data["refs"][0]["status"] == "created"

    # diverge, then push is rejected with exit status 1
    for path, who in ((alice_path, "alice"), (bob_path, "bob")):
        with GitSaver(path) as saver:
            make_graph(saver, who).invoke({"items": [who]}, cfg("1"))
    assert run("push", "--repo", str(bob_path)).exit_code == 0
    result = run("push", "--repo", str(alice_path))
    assert result.exit_code == 1
    assert result.stderr.splitlines()[-1] == "Error: 1 ref(s) rejected by origin: pull first (`gitckpt pull origin`)"
    assert "threads/1   rejected: the remote's line has changes you do not have; pull first" in result.stdout
    # sync = pull (keeps bob's line as a fork) + push (sends alice's as one)
    result = run("sync", "--repo", str(alice_path))
    assert result.exit_code == 0, result.stderr
    assert "threads/1   diverged, remote's line kept as" in result.stdout
    assert "threads/1   pushed as forks/1/" in result.stdout
    assert run("sync", "--repo", str(bob_path)).exit_code == 0
    assert git(alice_path, "for-each-ref", "--format=%(objectname)", "refs/heads/").stdout.split().__len__() == 2
    a = set(git(alice_path, "rev-list", "--all").stdout.split())
    assert a <= set(git(bob_path, "rev-list", "--all").stdout.split())


def test_cli_errors(people, server, tmp_path):
    bob_path = people["bob"]

    def fails(*args: str) -> str:
        result = run(*args)
        assert result.exit_code == 1, (result.stdout, result.stderr)
        assert "Traceback" not in result.stderr
        lines = result.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
        return lines[0]

    assert fails("pull", "upstream", "--repo", str(bob_path)) == (
        f"Error: no remote 'upstream' in {bob_path} (add one with "
        f"`git --git-dir {bob_path} remote add upstream URL`, or give a URL)"
    )
    dead = f"git://127.0.0.1:{free_port()}/team.git"
    assert fails("push", dead, "--repo", str(bob_path)) == (
        f"Error: cannot reach remote '{dead}': failed to connect to 127.0.0.1: Connection refused"
    )
    assert fails("pull", "origin", "7", "--repo", str(bob_path)) == (
        f"Error: remote 'origin' ({server['url']}) has no thread '7'"
    )
    assert fails("push", "origin", "7", "--repo", str(bob_path)) == f"Error: no thread '7' in {bob_path}"
    nowhere = tmp_path / "nothing-here"
    assert fails("sync", "--repo", str(nowhere)) == (
        f"Error: {nowhere} is not a gitckpt repository (run `gitckpt init` to create one)"
    )
    (tmp_path / "plain").mkdir()
    assert fails("pull", str(tmp_path / "plain"), "--repo", str(bob_path)) == (
        f"Error: remote '{tmp_path / 'plain'}' is not a git repository "
        f"(could not find repository at '{tmp_path / 'plain'}')"
    )
    assert fails("pull", str(tmp_path / "no-such.git"), "--repo", str(bob_path)) == (
        f"Error: remote '{tmp_path / 'no-such.git'}': no repository at {tmp_path / 'no-such.git'}"
    )


def test_cli_subprocess_pull_into_a_running_saver(people, server):
    """A real ``python -m gitckpt pull`` while this process holds the saver open."""
    alice_path, bob_path = people["alice"], people["bob"]
    with GitSaver(alice_path) as saver:
        make_graph(saver, "alice").invoke({"items": ["x"]}, cfg("1"))
    sync.push(alice_path)
    with GitSaver(bob_path) as saver:
        bob = make_graph(saver, "bob")
        assert bob.get_state(cfg("1")).values == {}
        proc = subprocess.run([sys.executable, "-m", "gitckpt", "pull", "--repo", str(bob_path)],
                              capture_output=True, text=True, env=os.environ)
        assert proc.returncode == 0, proc.stderr
        assert bob.get_state(cfg("1")).values == {"items": ["x", "alice:1"]}
        bob.invoke({"items": ["y"]}, cfg("1"))
    proc = subprocess.run([sys.executable, "-m", "gitckpt", "push", "--repo", str(bob_path)],
                          capture_output=True, text=True, env=os.environ)
    assert proc.returncode == 0, proc.stderr
    assert git(server["path"], "rev-parse", "threads/1").stdout.strip() == git(bob_path, "rev-parse", "threads/1").stdout.strip()


def test_pull_that_loses_a_race_decides_again(people, tmp_path):
    """Another writer moves the ref while the pull waits for its lock: the pull
    does not overwrite it, it re-reads the tip and keeps the remote's line as a fork."""
    import threading

    alice_path, bob_path = people["alice"], people["bob"]
    with GitSaver(alice_path) as saver:
        alice = make_graph(saver, "alice")
        alice.invoke({"items": ["x"]}, cfg())
        sync.push(alice_path)
        sync.pull(bob_path)
        shared = set(ids_of(alice))
        alice.invoke({"items": ["a"]}, cfg())
        sync.push(alice_path)
        alice_tip = saver.repo.ref("refs/heads/threads/1")
        first_alice = min(set(ids_of(alice)) - shared)
    base = git(bob_path, "rev-parse", "threads/1").stdout.strip()
    with GitSaver(bob_path) as saver:
        make_graph(saver, "bob").invoke({"items": ["b"]}, cfg())
    bob_tip = git(bob_path, "rev-parse", "threads/1").stdout.strip()
    git(bob_path, "update-ref", "refs/heads/forks/keep", bob_tip)  # test set-up only
    git(bob_path, "update-ref", "refs/heads/threads/1", base)
    ref_file = bob_path / "refs" / "heads" / "threads" / "1"
    lock = Path(f"{ref_file}.lock")
    lock.write_text("")  # "another writer" holds the ref
    out: list = []
    puller = threading.Thread(target=lambda: out.append(sync.pull(bob_path, threads=["1"], store=False)))
    puller.start()
    time.sleep(1.0)  # the pull fetched and tried to fast-forward base -> alice's tip
    ref_file.write_text(bob_tip + "\n")  # the other writer's update lands
    lock.unlink()
    puller.join(20)
    git(bob_path, "update-ref", "-d", "refs/heads/forks/keep")
    [ref] = out[0].refs
    assert ref.status == sync.FORKED
    assert git(bob_path, "rev-parse", "threads/1").stdout.strip() == bob_tip  # not overwritten
    assert git(bob_path, "rev-parse", ref.target).stdout.strip() == str(alice_tip)
    assert ref.target == f"refs/heads/forks/1/{first_alice}"
