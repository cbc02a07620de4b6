"""GitStore's index cache file (docs/format.md 24): a new process answers from it,
with exactly the answers it gives without it, and a stale, damaged or crafted
file is never used for more than it is worth.

Real bare repositories, real processes (each reader is ``python -c``); no
timing is asserted (the benchmark row ``store_first_search_50k`` measures it).
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import msgpack
import pytest

from gitckpt import GitStore
from gitckpt.store import cache
from gitckpt.store import store as store_mod
from gitckpt.git.repo import publish_all

DIMS = 16
N = 1_200  # above cache.MIN_ITEMS: a store this big gets a file

EMBED = '''
import hashlib
import numpy as np

def embed(texts):
    out = []
    for t in texts:
        seed = int.from_bytes(hashlib.sha256(t.encode()).digest()[:8], "little")
        v = np.random.default_rng(seed).standard_normal(16)
        out.append((v / np.linalg.norm(v)).tolist())
    return out
'''
exec(EMBED)  # the same function in this process and in the readers

INDEX = {"dims": DIMS, "embed": embed, "fields": ["text"]}  # noqa: F821 (defined by exec)

#: A new process that opens the store, runs every kind of read and prints the answers
#: as JSON (``refresh_ttl=False``: a reader writes nothing).
READER = EMBED + '''
import json, sys
from gitckpt import GitStore

def item(x):
    return [list(x.namespace), x.key, x.value, x.created_at.isoformat(), x.updated_at.isoformat(),
            getattr(x, "score", None)]

store = GitStore(sys.argv[1], index={"dims": 16, "embed": embed, "fields": ["text"]})
out = {
    "query": [item(x) for x in store.search(("memories",), query="the agent deploys a service", limit=40,
                                            refresh_ttl=False)],
    "query_all": [item(x) for x in store.search((), query="calendar and travel", limit=2000, refresh_ttl=False)],
    "query_filter": [item(x) for x in store.search(("memories",), query="budget", filter={"kind": "k3"},
                                                   limit=30, refresh_ttl=False)],
    "filter": [item(x) for x in store.search(("memories",), filter={"kind": "k2"}, limit=50, offset=5,
                                             refresh_ttl=False)],
    "filter_op": [item(x) for x in store.search((), filter={"n": {"$gte": 600, "$lt": 640}}, limit=100,
                                                refresh_ttl=False)],
    "all": [item(x) for x in store.search((), limit=5000, refresh_ttl=False)],
    "namespaces": store.list_namespaces(limit=1000),
    "namespaces_depth": store.list_namespaces(max_depth=1, limit=1000),
    "gets": [None if (g := store.get(tuple(ns), k, refresh_ttl=False)) is None else item(g)
             for ns, k in json.loads(sys.argv[2])],
}
if len(sys.argv) > 3:
    store.close()
print(json.dumps(out))
'''


def text(i: int) -> str:
    words = "agent deploy service budget calendar travel report memory graph node edge retry plan".split()
    return " ".join(words[(i * 7 + j * 3) % len(words)] for j in range(6)) + f" #{i}"


def ns_of(i: int) -> tuple[str, ...]:
    return ("memories", f"u{i % 7}") if i % 11 else ("docs", "shared", f"d{i % 3}")


def value(i: int, rev: int = 0) -> dict:
    return {"text": text(i + 1000 * rev), "kind": f"k{i % 5}", "n": i, "tags": ["a", f"t{i % 4}"], "rev": rev}


def build(path: Path, n: int = N) -> list[list]:
    """A store with every case a load must carry: several namespace depths,
    unembedded items, items with a long TTL, expired items, updates that keep an
    item's place, deletes, and a delete followed by a new put. Returns the
    (namespace, key) pairs the readers get (present, deleted and expired ones)."""
    with GitStore(path, index=INDEX) as s:
        for a in range(0, n, 300):
            for i in range(a, min(a + 300, n)):
                if i % 13 == 0:
                    s.put(ns_of(i), f"item-{i}", value(i), index=False)
                elif i % 17 == 0:
                    s.put(ns_of(i), f"item-{i}", value(i), ttl=60)
                elif i % 19 == 0:
                    s.put(ns_of(i), f"item-{i}", value(i), ttl=0.0005)  # 30 ms: expired when read
                else:
                    s.put(ns_of(i), f"item-{i}", value(i))
        for i in range(0, n, 23):
            s.put(ns_of(i), f"item-{i}", value(i, rev=1))  # an update keeps its place
        for i in range(5, n, 29):
            s.delete(ns_of(i), f"item-{i}")
        for i in range(5, n, 58):
            s.put(ns_of(i), f"item-{i}", value(i, rev=2))  # created again: at the end of its namespace
    time.sleep(0.05)
    return [[list(ns_of(i)), f"item-{i}"] for i in range(0, n, 3)] + [[["nowhere"], "x"]]


def read(path: Path, gets: list, *, close: bool = False) -> dict:
    args = [sys.executable, "-c", READER, str(path), json.dumps(gets)] + (["close"] if close else [])
    proc = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


def read_without_cache(path: Path, gets: list) -> dict:
    """The answers of a process that reads the store from git (the file moved away and back)."""
    f = Path(cache.cache_path(str(path)))
    keep = f.with_name("kept")
    if f.exists():
        f.rename(keep)
    try:
        return read(path, gets)
    finally:
        if keep.exists():
            keep.replace(f)


def cache_file(path: Path) -> Path:
    return Path(cache.cache_path(str(path)))


def file_tip(path: Path) -> str | None:
    loaded = cache.read(str(cache_file(path)))
    return None if loaded is None else str(loaded.tip)


def git(path: Path, *args: str) -> str:
    publish_all()  # plain git sees what is published (format.md 21, 30)
    return subprocess.run(["git", "--git-dir", str(path), *args], capture_output=True, text=True,
                          check=True).stdout.strip()


def rewrite(path: Path, change) -> None:
    """Re-encode the cache file with ``change(meta)`` applied: a valid size and
    CRC around whatever ``change`` made (a crafted file)."""
    loaded = cache.read(str(cache_file(path)))
    assert loaded is not None
    meta = dict(loaded.meta)
    change(meta)
    cache_file(path).write_bytes(cache.encode(meta, bytes(loaded.vectors)))


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """One store, built and closed (close() writes the file), and the answers of
    a process that read it from git."""
    path = tmp_path_factory.mktemp("cache") / "agent.git"
    gets = build(path)
    assert cache_file(path).exists()
    assert file_tip(path) == git(path, "rev-parse", "refs/heads/store")
    return path, gets, read_without_cache(path, gets)


@pytest.fixture
def repo(built, tmp_path):
    """A copy of the built store for a test that changes it (plain ``cp -a``)."""
    path, gets, expected = built
    dst = tmp_path / "agent.git"
    subprocess.run(["cp", "-a", str(path), str(dst)], check=True)
    return dst, gets, expected


def test_answers_with_the_file_equal_answers_without_it(built):
    path, gets, expected = built
    assert expected["query"] and expected["filter"] and expected["gets"].count(None) > 10
    assert any(x[5] is None for x in expected["query_all"])  # unembedded items fill the page
    before = cache_file(path).read_bytes()
    got = read(path, gets)
    assert got == expected
    assert cache_file(path).read_bytes() == before  # a reader that changed nothing leaves the file alone


def test_a_new_process_answers_from_the_file(repo):
    """Proof that a reader uses the file: a value changed in the file (and only
    there) is what it answers, until the file is removed."""
    path, gets, expected = repo

    def change(meta):
        i = meta["key"].index("item-1")
        meta["value"] = list(meta["value"])
        meta["value"][i] = msgpack.packb({**msgpack.unpackb(meta["value"][i]), "text": "only in the file"})

    rewrite(path, change)
    got = read(path, [[["memories", "u1"], "item-1"]])
    assert got["gets"][0][2]["text"] == "only in the file"
    cache_file(path).unlink()
    got = read(path, [[["memories", "u1"], "item-1"]])
    assert got["gets"][0][2]["text"] == value(1)["text"]


def test_stale_file_after_another_process_writes(repo):
    """Another process writes a few items (fewer than CACHE_ON_CLOSE: its close()
    leaves the file as it was); a new process answers with those writes."""
    path, gets, _ = repo
    tip_before = file_tip(path)
    code = EMBED + f'''
import sys
from gitckpt import GitStore
with GitStore(sys.argv[1], index={{"dims": 16, "embed": embed, "fields": ["text"]}}) as s:
    s.put(("memories", "u1"), "item-1", {{"text": "changed by another process", "kind": "k9", "n": -1}})
    s.put(("memories", "new"), "fresh", {{"text": "a new namespace", "kind": "k2", "n": 5000}})
    s.delete(("memories", "u2"), "item-2")
    s.put(("memories", "u3"), "item-3", {{"text": "short lived", "kind": "k2", "n": 3}}, ttl=0.0005)
'''
    subprocess.run([sys.executable, "-c", code, str(path)], check=True, timeout=120)
    time.sleep(0.05)
    assert file_tip(path) == tip_before != git(path, "rev-parse", "refs/heads/store")
    gets2 = gets + [[["memories", "u1"], "item-1"], [["memories", "new"], "fresh"], [["memories", "u2"], "item-2"]]
    got = read(path, gets2)
    assert got == read_without_cache(path, gets2)
    assert got["gets"][-3][2]["text"] == "changed by another process"
    assert got["gets"][-2][2]["text"] == "a new namespace"
    assert got["gets"][-1] is None
    assert ["memories", "new"] in got["namespaces"]


def test_stale_file_after_plain_git_moves_the_branch_back(repo):
    """``git update-ref`` takes the branch back 3 commits: the file is newer than
    the branch; its tree is diffed to the branch's like any other."""
    path, gets, expected = repo
    git(path, "update-ref", "refs/heads/store", "refs/heads/store~3")
    got = read(path, gets)
    assert got == read_without_cache(path, gets)
    assert got != expected  # the 3 commits undone are visible


def test_file_whose_commit_is_gone_is_ignored(repo):
    path, gets, expected = repo
    rewrite(path, lambda meta: meta.update(tip=bytes(range(20))))
    assert read(path, gets) == expected


def test_file_whose_tree_does_not_match_its_commit_is_ignored(repo):
    """The file names the tip, but the tree of another commit: a lie the store checks."""
    path, gets, expected = repo
    other = git(path, "rev-parse", "refs/heads/store~5^{tree}")
    rewrite(path, lambda meta: meta.update(tree=bytes.fromhex(other)))
    assert read(path, gets) == expected


@pytest.mark.parametrize(
    "damage",
    ["truncated", "empty", "flipped byte", "flipped vector byte", "garbage", "other version", "longer"],
)
def test_damaged_file_is_ignored(repo, damage):
    path, gets, expected = repo
    f = cache_file(path)
    data = bytearray(f.read_bytes())
    if damage == "truncated":
        data = data[: len(data) // 2]
    elif damage == "empty":
        data = bytearray()
    elif damage == "flipped byte":
        data[len(cache.MAGIC) + 40] ^= 0x40
    elif damage == "flipped vector byte":
        data[-100] ^= 0x01
    elif damage == "garbage":
        data = bytearray(os.urandom(len(data)))
    elif damage == "other version":
        struct.pack_into("<I", data, len(cache.MAGIC), cache.VERSION + 1)
    else:
        data += b"\0" * 8
    f.write_bytes(bytes(data))
    assert read(path, gets) == expected


def _swap_types(meta):
    meta["key"] = list(range(len(meta["key"])))


def _ext_values(meta):
    meta["value"] = [msgpack.ExtType(1, b"os.system") for _ in meta["value"]]


def _short_column(meta):
    meta["created"] = meta["created"][:-1]


def _bad_rows(meta):
    meta["vrow"] = [0 for _ in meta["vrow"]]


def _unsorted_ns(meta):
    meta["ns"] = list(reversed(meta["ns"]))
    meta["count"] = list(reversed(meta["count"]))


def _duplicate_key(meta):
    meta["key"] = list(meta["key"])
    meta["key"][1] = meta["key"][0]


def _huge_time(meta):
    meta["updated"] = [2**62 for _ in meta["updated"]]


def _bad_index(meta):
    meta["index"] = [True for _ in meta["index"]]


def _bad_dims(meta):
    meta["dims"] = DIMS * 1000


def _not_a_map(meta):
    meta.clear()
    meta["tip"] = b"x"


@pytest.mark.parametrize(
    "craft",
    [_swap_types, _ext_values, _short_column, _bad_rows, _unsorted_ns, _duplicate_key, _huge_time, _bad_index,
     _bad_dims, _not_a_map],
)
def test_crafted_file_is_ignored(repo, craft):
    """A file with a valid size and CRC whose columns have the wrong types or
    lengths (msgpack extension types included) builds nothing: the reader answers
    from git, and nothing in the file is turned into an object."""
    path, gets, expected = repo
    rewrite(path, craft)
    assert read(path, gets) == expected


def test_crafted_columns_are_refused_in_process(built):
    """The same files, checked directly: ``fill`` refuses them and leaves the index empty."""
    path, _, _ = built
    from gitckpt.store.index import StoreIndex

    good = cache.read(str(cache_file(path)))
    assert good is not None
    idx = StoreIndex(DIMS)
    assert cache.fill(idx, good) and len(idx) > 0
    for craft in (_swap_types, _ext_values, _short_column, _bad_rows, _unsorted_ns, _duplicate_key, _huge_time,
                  _bad_index, _bad_dims):
        loaded = cache.read(str(cache_file(path)))
        meta = dict(loaded.meta)
        craft(meta)
        again = cache.parse(cache.encode(meta, bytes(loaded.vectors)))
        assert again is not None, craft.__name__  # size and CRC are right ...
        idx = StoreIndex(DIMS)
        assert not cache.fill(idx, again), craft.__name__  # ... the columns are not
        assert len(idx) == 0 and idx.names == [] and idx._rows == 0


def test_index_configurations_share_the_file(repo):
    """A store opened without an index (the CLI's) uses the file of one opened with
    ``dims=16`` when every stored vector has 16 numbers; an index of another length
    would take other vectors than the file holds, so it reads git instead."""
    path, gets, expected = repo
    from gitckpt.store.index import StoreIndex

    loaded = cache.read(str(cache_file(path)))
    assert loaded is not None and loaded.meta["dims_config"] == DIMS
    assert cache.fill(StoreIndex(None), loaded)
    assert not cache.fill(StoreIndex(DIMS + 1), loaded)
    with GitStore(path) as s:  # no index configured
        assert [[list(x.namespace), x.key, x.value] for x in s.search((), limit=5000, refresh_ttl=False)] == [
            x[:3] for x in expected["all"]
        ]
    assert read(path, gets) == expected


def test_close_rewrites_a_file_that_is_behind(repo):
    """A process that changed at least CACHE_ON_CLOSE items writes the file on close()."""
    path, gets, _ = repo
    from langgraph.store.base import PutOp

    with GitStore(path, index=INDEX) as s:
        s.batch([PutOp(("memories", "bulk"), f"b{i}", value(i)) for i in range(store_mod.CACHE_ON_CLOSE)])
        tip = git(path, "rev-parse", "refs/heads/store")
        assert file_tip(path) != tip
    assert file_tip(path) == tip
    gets2 = gets + [[["memories", "bulk"], "b7"]]
    got = read(path, gets2)
    assert got == read_without_cache(path, gets2) and got["gets"][-1][2]["n"] == 7


def test_background_rewrite_when_enough_changed(repo, monkeypatch):
    """Past CACHE_EVERY changes the file is rewritten by a background thread,
    atomically: no temporary file is left."""
    path, gets, _ = repo
    monkeypatch.setattr(store_mod, "CACHE_EVERY", 20)
    monkeypatch.setattr(store_mod, "CACHE_ON_CLOSE", 10**9)  # only the background rewrite
    before = file_tip(path)
    s = GitStore(path, index=INDEX)
    try:
        assert len(s.search((), limit=5000, refresh_ttl=False)) < 16 * 100
        for i in range(100):  # a sixteenth of the store or more
            s.put(("memories", "bg"), f"k{i}", value(i))
        thread = s._cache_thread
        assert thread is not None
        thread.join()
        written = file_tip(path)
        assert written is not None and written != before
        git(path, "merge-base", "--is-ancestor", written, "refs/heads/store")  # a commit of these puts
        assert int(git(path, "rev-list", "--count", f"{before}..{written}")) >= 16
    finally:
        s.close()
    assert [p.name for p in cache_file(path).parent.iterdir()] == ["index"]
    gets2 = gets + [[["memories", "bg"], "k3"]]
    assert read(path, gets2) == read_without_cache(path, gets2)


def test_a_small_store_has_no_file(tmp_path):
    path = tmp_path / "small.git"
    with GitStore(path, index=INDEX) as s:
        for i in range(50):
            s.put(("a",), f"k{i}", value(i))
    assert not cache_file(path).exists()


def test_read_only_cache_folder_still_works(repo):
    """A repository whose cache folder cannot be written works without the file."""
    path, gets, expected = repo
    if os.geteuid() == 0:
        pytest.skip("root writes into read-only folders")
    folder = cache_file(path).parent
    cache_file(path).unlink()
    folder.chmod(0o500)
    try:
        assert read(path, gets, close=True) == expected
        assert not cache_file(path).exists()
    finally:
        folder.chmod(0o700)


def test_file_format_header(built):
    """The layout docs/format.md 24 describes: magic, version, lengths, CRC-32."""
    path, _, _ = built
    data = cache_file(path).read_bytes()
    assert data.startswith(b"gitckpt-store-index\n")
    version, meta_len, vec_len, crc = struct.unpack_from("<IQQI", data, len(cache.MAGIC))
    start = len(cache.MAGIC) + struct.calcsize("<IQQI")
    assert version == cache.VERSION and start + meta_len + vec_len == len(data)
    assert zlib.crc32(data[start:]) == crc
    meta = msgpack.unpackb(data[start : start + meta_len], raw=False)
    assert meta["dims"] == DIMS and vec_len == meta["rows"] * (DIMS * 4 + 8)
    assert meta["tip"] == bytes.fromhex(git(path, "rev-parse", "refs/heads/store"))
