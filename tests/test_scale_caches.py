"""The thread index cache files of small threads, and list(None) over many threads (format.md 23).

Real repositories, real plain ``git``, real subprocesses. A cache file is derived
data: whatever is in it (stale, damaged, crafted, another thread's or another
repository's), every answer must be the answer a walk of the history gives.
No timing is asserted (scripts/bench.py --only scale measures).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import msgpack
import pytest
from langgraph.checkpoint.base import empty_checkpoint
from langgraph.checkpoint.base.id import uuid6

from gitckpt import GitSaver
from gitckpt.checkpoint.index import ThreadIndex

ROOT = Path(__file__).resolve().parent.parent
THREADS = ("a", "b", "c")
N = 12  # checkpoints a thread: above the cache file's threshold of 10


def put(saver, thread_id, parent=None, ns="", step=0, value=0):
    cp = empty_checkpoint()
    cp["id"] = str(uuid6(clock_seq=step))
    cp["channel_values"] = {"x": value}
    cp["channel_versions"] = {"x": saver.get_next_version(None, None)}
    config = {"configurable": {"thread_id": thread_id, "checkpoint_ns": ns}}
    if parent:
        config["configurable"]["checkpoint_id"] = parent
    out = saver.put(config, cp, {"source": "loop", "step": step, "parents": {}}, dict(cp["channel_versions"]))
    saver.put_writes(out, [("x", value + 1000)], f"task-{thread_id}-{step}")
    return cp["id"]


def build(repo_path: Path) -> dict[str, list[str]]:
    """Three threads of N checkpoints written round-robin; thread "a" also has a
    fork and a subgraph namespace of N checkpoints."""
    s = GitSaver(repo_path)
    ids: dict[str, list[str]] = {t: [] for t in THREADS}
    for step in range(N):
        for t in THREADS:
            ids[t].append(put(s, t, ids[t][-1] if ids[t] else None, step=step, value=step))
    put(s, "a", ids["a"][3], step=4, value=99)  # a fork from the fourth checkpoint
    parent = None
    for step in range(N):
        parent = put(s, "a", parent, ns="child:1", step=step, value=step)
    s.close()
    return ids


def listing(saver, config=None, **kw) -> list:
    return [
        (t.config, t.checkpoint, t.metadata, t.parent_config, t.pending_writes) for t in saver.list(config, **kw)
    ]


def every_answer(repo_path: Path) -> dict:
    """What a new saver answers: list(None), per thread, with filters and before/limit, threads' summaries."""
    s = GitSaver(repo_path)
    try:
        out = {"all": listing(s, None)}
        for t in THREADS:
            cfg = {"configurable": {"thread_id": t}}
            out[t] = listing(s, cfg)
            out[t, "step3"] = listing(s, cfg, filter={"step": 3})
            out[t, "limit"] = listing(s, {"configurable": {"thread_id": t, "checkpoint_ns": ""}}, limit=4)
            mid = out[t][len(out[t]) // 2][0]
            out[t, "before"] = listing(s, cfg, before=mid, limit=3)
            out[t, "info"] = s.indexes.thread_info(t)
        out["a", "child"] = listing(s, {"configurable": {"thread_id": "a", "checkpoint_ns": "child:1"}})
        return out
    finally:
        s.close()


def cache_file(repo_path: Path, thread_id: str) -> Path:
    return repo_path / "gitckpt-cache" / "threads" / thread_id


def without_cache(repo_path: Path) -> dict:
    """The answers with no cache file at all (the saver walks; its close() writes them again)."""
    shutil.rmtree(repo_path / "gitckpt-cache", ignore_errors=True)
    return every_answer(repo_path)


@pytest.fixture
def built(repo_path: Path):
    ids = build(repo_path)
    return repo_path, ids


def test_small_threads_get_a_cache_file_and_it_gives_the_walks_answers(built):
    repo_path, ids = built
    files = {t: cache_file(repo_path, t).read_bytes() for t in THREADS}  # written by close()
    with_cache = every_answer(repo_path)
    assert len(with_cache["all"]) == 3 * N + 1 + N
    assert [c["configurable"]["checkpoint_id"] for c, *_ in with_cache["all"]] == sorted(
        (c["configurable"]["checkpoint_id"] for c, *_ in with_cache["all"]), reverse=True
    )
    assert with_cache["a", "info"]["forks"] == 1 and with_cache["a", "info"]["namespaces"] == ["", "child:1"]
    assert all(len(w) == 1 for *_, w in with_cache["all"])
    assert {t: cache_file(repo_path, t).read_bytes() for t in THREADS} == files  # read, not rewritten
    assert with_cache == without_cache(repo_path)


def test_a_ref_moved_by_plain_git_or_another_process_is_not_answered_from_the_cache(built):
    repo_path, ids = built
    stale = cache_file(repo_path, "b").read_bytes()
    # plain git moves thread b back three checkpoints (each is a put and a put_writes commit)
    subprocess.run(["git", "--git-dir", str(repo_path), "update-ref", "refs/heads/threads/b", "threads/b~6"], check=True)
    assert cache_file(repo_path, "b").read_bytes() == stale
    moved_back = every_answer(repo_path)
    assert [c["configurable"]["checkpoint_id"] for c, *_ in moved_back["b"]] == ids["b"][: N - 3][::-1]
    cache_file(repo_path, "b").write_bytes(stale)
    assert every_answer(repo_path) == moved_back == without_cache(repo_path)

    # another process appends to thread c after its cache file was written
    stale = cache_file(repo_path, "c").read_bytes()
    code = (
        "import sys; sys.path.insert(0, sys.argv[2]); from test_scale_caches import put; from gitckpt import GitSaver\n"
        "s = GitSaver(sys.argv[1]); put(s, 'c', sys.argv[3], step=50, value=50); s.close()"
    )
    subprocess.run([sys.executable, "-c", code, str(repo_path), str(ROOT / "tests"), ids["c"][-1]], check=True)
    cache_file(repo_path, "c").write_bytes(stale)
    grown = every_answer(repo_path)
    assert len(grown["c"]) == N + 1 and grown["c"][0][2]["step"] == 50
    cache_file(repo_path, "c").write_bytes(stale)
    assert grown == without_cache(repo_path)


def _crafted(data: bytes, change) -> bytes:
    d = msgpack.unpackb(data, raw=False)
    change(d)
    return msgpack.packb(d, use_bin_type=True)


def test_corrupt_hostile_and_foreign_cache_files_are_ignored(built, tmp_path):
    repo_path, ids = built
    truth = without_cache(repo_path)
    every_answer(repo_path)  # writes nothing new: the files exist; make sure they do
    good = cache_file(repo_path, "a").read_bytes()
    assert ThreadIndex.from_bytes(good) is not None

    def set_cids_to_ints(d):
        d["ckpt"]["cid"] = list(range(len(d["ckpt"]["cid"])))

    def ext_in_a_column(d):
        d["ckpt"]["source"][0] = msgpack.ExtType(5, b"\x93\xa2os\xa6system\x91\xa2id")

    def bool_steps(d):
        d["ckpt"]["step"] = [True] * len(d["ckpt"]["step"])

    def line_out_of_range(d):
        d["ckpt"]["line"][0] = 10**6

    def negative_line(d):
        d["ckpt"]["line"][-1] = -1

    def negative_write_count(d):
        d["writes"]["count"][0] = -1
        d["writes"]["count"][1] += 2  # the ids still add up

    def seen_not_bytes(d):
        d["seen"] = [d["seen"][:20]]

    def short_ids(d):
        d["seen"] = d["seen"][:-1]

    def head_of_wrong_type(d):
        ref = next(iter(d["heads"]))
        d["heads"][ref] = [1, 2]

    hostile = [
        b"\x00garbage",
        good[: len(good) // 2],
        b"\xc1" * 64,
        msgpack.packb([1, 2, 3]),
        msgpack.packb({"v": 3}),
        _crafted(good, set_cids_to_ints),
        _crafted(good, ext_in_a_column),
        _crafted(good, bool_steps),
        _crafted(good, line_out_of_range),
        _crafted(good, negative_line),
        _crafted(good, negative_write_count),
        _crafted(good, seen_not_bytes),
        _crafted(good, short_ids),
        _crafted(good, head_of_wrong_type),
    ]
    for data in hostile[3:]:
        assert ThreadIndex.from_bytes(data) is None
    for data in hostile:
        cache_file(repo_path, "a").write_bytes(data)
        assert every_answer(repo_path) == truth

    # another thread's file: its refs are not this thread's, so it is stale
    cache_file(repo_path, "a").write_bytes(cache_file(repo_path, "b").read_bytes())
    assert every_answer(repo_path) == truth

    # another repository's file for a thread of the same name: its commits are not here
    other = tmp_path / "other.git"
    build(other)
    for t in THREADS:
        cache_file(repo_path, t).write_bytes(cache_file(other, t).read_bytes())
    assert every_answer(repo_path) == truth


def test_new_processes_read_the_caches_and_agree_with_a_walk(built):
    repo_path, ids = built
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "COLUMNS": "200"}
    import os

    env = {**os.environ, **env}

    def threads_json() -> list:
        out = subprocess.run(
            [sys.executable, "-m", "gitckpt", "--repo", str(repo_path), "threads", "--json"],
            capture_output=True, text=True, env=env, check=True,
        )
        return json.loads(out.stdout)

    code = (
        "import json, sys; from gitckpt import GitSaver; s = GitSaver(sys.argv[1]); "
        "print(json.dumps([[t.config, t.metadata, t.parent_config, len(t.pending_writes), t.checkpoint['id'], "
        "t.checkpoint['channel_values']] for t in s.list(None)])); s.close()"
    )

    def list_in_new_process() -> list:
        out = subprocess.run([sys.executable, "-c", code, str(repo_path)], capture_output=True, text=True, env=env,
                             check=True)
        return json.loads(out.stdout)

    assert all(cache_file(repo_path, t).is_file() for t in THREADS)
    cached = (threads_json(), list_in_new_process())
    shutil.rmtree(repo_path / "gitckpt-cache")
    walked = (threads_json(), list_in_new_process())
    assert cached == walked
    assert [r["thread_id"] for r in cached[0]] == list(THREADS)
    assert [r["checkpoints"] for r in cached[0]] == [2 * N + 1, N, N]
    assert len(cached[1]) == 3 * N + 1 + N
    # the reading command wrote the cache files again (derived data, for the next process)
    assert all(cache_file(repo_path, t).is_file() for t in THREADS)


def test_a_writer_over_many_threads_keeps_their_indexes_and_lists_them_all(repo_path):
    """One saver writing round-robin over more threads than the old LRU of 256
    held: every index stays in memory (no walk when a thread comes round again),
    each gets a cache file on close(), and list(None) gives every checkpoint."""
    s = GitSaver(repo_path)
    n_threads, rounds = 300, 10
    last: dict[str, str] = {}
    for step in range(rounds):
        for t in range(n_threads):
            tid = f"t{t:03d}"
            last[tid] = put(s, tid, last.get(tid), step=step, value=step)
    assert len(s.indexes._indexes) == n_threads
    got = listing(s, None)
    assert len(got) == n_threads * rounds
    s.close()
    assert len(list((repo_path / "gitckpt-cache" / "threads").iterdir())) == n_threads
    fresh = GitSaver(repo_path)
    assert listing(fresh, None) == got
    fresh.close()


def test_a_round_robin_writer_carries_unchanged_channels_from_each_parent(repo_path):
    """A put writes only the channels in ``new_versions`` and takes the others from
    its parent (format.md 5), whose entries the saver remembers (26). Over 300
    threads written round-robin, a channel written once at the first step must
    be in every later checkpoint of every thread, read back by a new process
    exactly as the writer put it; a fork from an old checkpoint (whose entry
    the writer no longer holds) carries it too."""
    saver = GitSaver(str(repo_path))
    n, rounds = 300, 4
    heads: dict[str, str] = {}
    versions: dict[str, dict] = {}
    for r in range(rounds):
        for t in range(n):
            tid = f"t{t}"
            cp = empty_checkpoint()
            cp["id"] = str(uuid6(clock_seq=r * n + t))
            changed = {"static": f"set once on {tid}", "step": r} if r == 0 else {"step": r}
            new_versions = {ch: saver.get_next_version(versions.get(tid, {}).get(ch), None) for ch in changed}
            versions.setdefault(tid, {}).update(new_versions)
            cp["channel_values"] = {"static": f"set once on {tid}", "step": r}
            cp["channel_versions"] = dict(versions[tid])
            config = {"configurable": {"thread_id": tid, "checkpoint_ns": ""}}
            if tid in heads:
                config["configurable"]["checkpoint_id"] = heads[tid]
            saver.put(config, cp, {"source": "loop", "step": r, "parents": {}}, new_versions)
            heads[tid] = cp["id"]
    first = saver.get_tuple({"configurable": {"thread_id": "t7", "checkpoint_ns": ""}})
    history = list(saver.list({"configurable": {"thread_id": "t7", "checkpoint_ns": ""}}))
    old = history[-2].config["configurable"]["checkpoint_id"]  # the second checkpoint
    cp = empty_checkpoint()
    cp["id"] = str(uuid6(clock_seq=99_999))
    v = saver.get_next_version(versions["t7"]["step"], None)
    cp["channel_values"] = {"static": "set once on t7", "step": -1}
    cp["channel_versions"] = {**history[-2].checkpoint["channel_versions"], "step": v}
    saver.put({"configurable": {"thread_id": "t7", "checkpoint_ns": "", "checkpoint_id": old}}, cp,
              {"source": "fork", "step": 2, "parents": {}}, {"step": v})
    saver.close()
    assert first.checkpoint["channel_values"] == {"static": "set once on t7", "step": rounds - 1}
    code = (
        "import json, sys\n"
        "from gitckpt import GitSaver\n"
        "s = GitSaver(sys.argv[1])\n"
        "out = {}\n"
        "for tup in s.list(None):\n"
        "    c = tup.config['configurable']\n"
        "    out.setdefault(c['thread_id'], []).append(tup.checkpoint['channel_values'])\n"
        "s.close()\n"
        "print(json.dumps(out))\n"
    )
    run = subprocess.run([sys.executable, "-c", code, str(repo_path)], capture_output=True, text=True, check=True)
    seen = json.loads(run.stdout)
    assert len(seen) == n
    for t in range(n):
        tid = f"t{t}"
        steps = sorted(v["step"] for v in seen[tid])
        assert steps == ([-1] if tid == "t7" else []) + list(range(rounds)), tid
        assert all(v["static"] == f"set once on {tid}" for v in seen[tid]), tid
