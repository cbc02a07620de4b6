"""GitStore: every BaseStore operation (sync and async), validation, layout,
history, semantic search, TTL. Real bare repositories in tmp_path, no mocks."""

from __future__ import annotations

import asyncio
import hashlib
import json
import subprocess
import threading
import time
from pathlib import Path

import pygit2
import pytest
from langchain_core.embeddings import Embeddings
from langgraph.store.base import (
    GetOp,
    InvalidNamespaceError,
    ListNamespacesOp,
    PutOp,
    SearchOp,
)
from langgraph.store.memory import InMemoryStore

from gitckpt import CorruptObjectError, GitStore, InvalidInputError
from gitckpt.git.repo import GitRepo
from gitckpt.store.format import STORE_REF, decode_item_blob, parse_changes
from gitckpt.git.repo import publish_all

ALPHABET = "abcdefghijklmnopqrstuvwxyz"


def letters(text: str) -> list[float]:
    return [float(text.lower().count(c)) for c in ALPHABET] + [1.0]


class CountingEmbeddings(Embeddings):
    """Deterministic bag-of-letters embeddings that count what they embed."""

    def __init__(self) -> None:
        self.documents: list[str] = []
        self.queries: list[str] = []

    def embed_documents(self, texts):
        self.documents.extend(texts)
        return [letters(t) for t in texts]

    def embed_query(self, text):
        self.queries.append(text)
        return letters(text)


def git(repo: Path, *args: str) -> str:
    publish_all()  # plain git sees what is published (format.md 21)
    out = subprocess.run(["git", "--git-dir", str(repo), *args], capture_output=True, text=True, check=True)
    return out.stdout


def commits(repo: Path) -> int:
    try:
        return int(git(repo, "rev-list", "--count", "store").strip())
    except subprocess.CalledProcessError:
        return 0


@pytest.fixture
def store(repo_path):
    with GitStore.from_conn_string(repo_path) as s:
        yield s


@pytest.fixture
def vstore(repo_path):
    emb = CountingEmbeddings()
    with GitStore(repo_path, index={"dims": 27, "embed": emb, "fields": ["text"]}) as s:
        s.emb = emb
        yield s


def keys(items):
    return [(i.namespace, i.key) for i in items]


# -- get / put / delete -----------------------------------------------------------


def test_put_get_delete(store, repo_path):
    assert store.get(("users", "1"), "prefs") is None
    store.put(("users", "1"), "prefs", {"theme": "dark", "n": [1, 2.5, None, True], "d": {"x": "ü"}})
    item = store.get(("users", "1"), "prefs")
    assert item.namespace == ("users", "1") and item.key == "prefs"
    assert item.value == {"theme": "dark", "n": [1, 2.5, None, True], "d": {"x": "ü"}}
    assert item.created_at == item.updated_at and item.created_at.tzinfo is not None
    store.put(("users", "1"), "prefs", {"theme": "light"})
    again = store.get(("users", "1"), "prefs")
    assert again.value == {"theme": "light"}
    assert again.created_at == item.created_at and again.updated_at > item.updated_at
    store.delete(("users", "1"), "prefs")
    assert store.get(("users", "1"), "prefs") is None
    store.delete(("users", "1"), "prefs")  # deleting nothing writes nothing
    assert commits(repo_path) == 3


async def test_put_get_delete_async(store, repo_path):
    assert await store.aget(("users", "1"), "prefs") is None
    await store.aput(("users", "1"), "prefs", {"theme": "dark"})
    item = await store.aget(("users", "1"), "prefs")
    assert item.value == {"theme": "dark"}
    await store.aput(("users", "1"), "prefs", {"theme": "light"})
    assert (await store.aget(("users", "1"), "prefs")).created_at == item.created_at
    await store.adelete(("users", "1"), "prefs")
    assert await store.aget(("users", "1"), "prefs") is None
    assert commits(repo_path) == 3


def test_returned_values_are_copies(store):
    value = {"list": [1, 2], "d": {"a": 1}}
    store.put(("ns",), "k", value)
    value["list"].append(3)  # the caller's object is not the stored one
    got = store.get(("ns",), "k")
    got.value["d"]["a"] = 99
    assert store.get(("ns",), "k").value == {"list": [1, 2], "d": {"a": 1}}
    assert store.search(("ns",), filter={"list": [1, 2]})[0].value == {"list": [1, 2], "d": {"a": 1}}


def test_batch_is_one_commit_and_reads_see_the_store_before_it(store, repo_path):
    store.put(("a",), "old", {"v": 0})
    results = store.batch([
        PutOp(("a",), "k1", {"v": 1}),
        GetOp(("a",), "k1"),
        PutOp(("a",), "old", None),
        SearchOp(("a",)),
        PutOp(("b", "c"), "k2", {"v": 2}),
        PutOp(("a",), "k1", {"v": 11}),  # last write wins
        ListNamespacesOp(),
    ])
    assert results[0] is None and results[1] is None and results[2] is None
    assert keys(results[3]) == [(("a",), "old")]
    assert results[6] == [("a",)]
    assert store.get(("a",), "k1").value == {"v": 11}
    assert store.get(("a",), "old") is None
    assert commits(repo_path) == 2
    subject = git(repo_path, "log", "-1", "--format=%s", "store").strip()
    assert subject == "put a: k1; delete a: old; put b/c: k2"


async def test_abatch(store, repo_path):
    results = await store.abatch([PutOp(("a",), "k", {"v": 1}), GetOp(("a",), "k")])
    assert results == [None, None]
    results = await store.abatch([GetOp(("a",), "k"), SearchOp(("a",)), ListNamespacesOp()])
    assert results[0].value == {"v": 1} and keys(results[1]) == [(("a",), "k")] and results[2] == [("a",)]
    assert commits(repo_path) == 1


async def test_abatch_does_git_work_off_the_event_loop(repo_path):
    loop_thread = threading.get_ident()
    seen: list[int] = []

    class AsyncOnly(Embeddings):
        def embed_documents(self, texts):
            raise AssertionError("the async API must use aembed_documents")

        def embed_query(self, text):
            raise AssertionError("the async API must use aembed_query")

        async def aembed_documents(self, texts):
            seen.append(threading.get_ident())
            return [letters(t) for t in texts]

        async def aembed_query(self, text):
            seen.append(threading.get_ident())
            return letters(text)

    repo = GitRepo(repo_path)
    store = GitStore(repo, index={"dims": 27, "embed": AsyncOnly()})
    committed_on: list[int] = []
    commit = repo.commit

    def spy(*args, **kwargs):
        committed_on.append(threading.get_ident())
        return commit(*args, **kwargs)

    repo.commit = spy
    await store.aput(("docs",), "d", {"text": "apple"})
    assert [r.key for r in await store.asearch(("docs",), query="apple")] == ["d"]
    assert committed_on and loop_thread not in committed_on
    assert seen == [loop_thread, loop_thread]  # embeddings ran on the caller's loop
    store.close()
    repo.close()


# -- validation: clear errors, nothing written ----------------------------------


@pytest.mark.parametrize("namespace", [(), ("a.b",), ("",), ("a", ""), ("a", 1), ("langgraph", "x"), ("a\x00",)])
def test_bad_namespace_raises_and_writes_nothing(store, repo_path, namespace):
    store.put(("ok",), "k", {"v": 1})
    with pytest.raises(InvalidNamespaceError):
        store.put(namespace, "k", {"v": 1})
    if namespace != ("langgraph", "x"):  # a raw PutOp may use the reserved root label: see below
        with pytest.raises(InvalidNamespaceError):
            store.batch([PutOp(("ok",), "k2", {"v": 2}), PutOp(namespace, "k", {"v": 1})])
    assert commits(repo_path) == 1
    assert store.get(("ok",), "k2") is None


def _reserved_root_story(s) -> list:
    """What a store answers about the reserved root label "langgraph": the public
    put() refuses it, a raw PutOp through batch() stores it (LangGraph's stores
    keep internal namespaces there), and it reads, lists and deletes like any other."""
    seen: list = []
    try:
        s.put(("langgraph", "x"), "k", {"v": 0})
        seen.append("put accepted")
    except InvalidNamespaceError as exc:
        seen.append(("put refused", str(exc)))
    seen.append(s.batch([PutOp(("langgraph", "x"), "k", {"v": 1}), PutOp(("langgraph",), "top", {"v": 2})]))
    seen.append(s.batch([GetOp(("langgraph", "x"), "k")])[0].value)
    seen.append(sorted((tuple(i.namespace), i.key, i.value["v"]) for i in s.search(("langgraph",))))
    seen.append(s.list_namespaces(prefix=("langgraph",)))
    seen.append(s.get(("langgraph",), "top").value)
    s.batch([PutOp(("langgraph",), "top", None)])  # a delete
    seen.append(s.get(("langgraph",), "top"))
    return seen


async def _reserved_root_story_async(s) -> list:
    seen: list = []
    try:
        await s.aput(("langgraph", "y"), "k", {"v": 0})
        seen.append("aput accepted")
    except InvalidNamespaceError as exc:
        seen.append(("aput refused", str(exc)))
    seen.append(await s.abatch([PutOp(("langgraph", "y"), "k", {"v": 3})]))
    seen.append((await s.abatch([GetOp(("langgraph", "y"), "k")]))[0].value)
    seen.append(sorted((tuple(i.namespace), i.key, i.value["v"]) for i in await s.asearch(("langgraph", "y"))))
    seen.append(await s.alist_namespaces(prefix=("langgraph",)))
    await s.abatch([PutOp(("langgraph", "y"), "k", None)])
    seen.append(await s.aget(("langgraph", "y"), "k"))
    return seen


def test_reserved_root_label_matches_inmemorystore(repo_path):
    ref = _reserved_root_story(InMemoryStore())
    assert ref[0][0] == "put refused" and ref[1] == [None, None]  # the reference's rule, as observed
    with GitStore(repo_path) as s:
        assert _reserved_root_story(s) == ref
    assert commits(repo_path) == 2  # the batch's two puts are one commit, the delete another
    with GitStore(repo_path) as s:  # what batch() stored is in the repository, not only in memory
        assert s.get(("langgraph", "x"), "k").value == {"v": 1}
        assert s.list_namespaces() == [("langgraph", "x")]


async def test_reserved_root_label_matches_inmemorystore_async(repo_path):
    ref = await _reserved_root_story_async(InMemoryStore())
    assert ref[0][0] == "aput refused" and ref[1] == [None]
    with GitStore(repo_path) as s:
        assert await _reserved_root_story_async(s) == ref


def test_bad_namespace_on_reads(store):
    for call in (
        lambda: store.get(("a.b",), "k"),
        lambda: store.search(("a", ""),),
        lambda: store.list_namespaces(prefix=("a.b",)),
        lambda: store.batch([GetOp(("x.y",), "k")]),
        lambda: store.batch([SearchOp(("",))]),
    ):
        with pytest.raises(InvalidNamespaceError):
            call()


async def test_bad_namespace_async(store):
    with pytest.raises(InvalidNamespaceError):
        await store.aput(("a.b",), "k", {"v": 1})
    with pytest.raises(InvalidNamespaceError):
        await store.abatch([PutOp((), "k", {"v": 1})])


@pytest.mark.parametrize(
    "value, where",
    [
        ({"s": {1, 2}}, "value['s'] is a set"),
        ({"o": object()}, "value['o'] is a object"),
        ({"nested": {"deep": [1, b"bytes"]}}, "value['nested']['deep'][1] is a bytes"),
        ({"k": {1: "int key"}}, "value['k'] has a key 1 of type int"),
        ({"big": 2**70}, "value['big'] = 1180591620717411303424 is too large"),
    ],
)
def test_unserializable_value_raises_and_writes_nothing(store, repo_path, value, where):
    store.put(("ok",), "k", {"v": 1})
    with pytest.raises(InvalidInputError) as exc:
        store.batch([PutOp(("ok",), "good", {"v": 2}), PutOp(("ok",), "bad", value)])
    assert where in str(exc.value) and "ok: 'bad'" in str(exc.value)
    assert commits(repo_path) == 1
    assert store.get(("ok",), "good") is None


def test_bad_arguments(store):
    with pytest.raises(InvalidInputError, match="a store value must be a dict"):
        store.batch([PutOp(("a",), "k", ["not", "a", "dict"])])
    with pytest.raises(InvalidInputError, match="key must be a str"):
        store.batch([PutOp(("a",), 5, {"v": 1})])
    with pytest.raises(InvalidInputError, match="ttl must be a number"):
        store.batch([PutOp(("a",), "k", {"v": 1}, ttl="soon")])
    with pytest.raises(InvalidInputError, match="unsupported filter operator"):
        store.search(("a",), filter={"n": {"$regex": "x"}})
    with pytest.raises(InvalidInputError, match="compares numbers"):
        store.search(("a",), filter={"n": {"$gt": "ten"}})


def test_closed_store_says_so(repo_path):
    s = GitStore(repo_path)
    s.close()
    s.close()
    with pytest.raises(Exception, match="closed"):
        s.get(("a",), "k")


# -- search -------------------------------------------------------------------------


def fill(store):
    store.batch([
        PutOp(("docs", "a"), "1", {"color": "red", "n": 1, "tags": ["x"], "meta": {"lang": "en"}}),
        PutOp(("docs", "a"), "2", {"color": "blue", "n": 2.5, "tags": ["x", "y"], "meta": {"lang": "fr"}}),
        PutOp(("docs", "b"), "3", {"color": "red", "n": 3, "flag": True}),
        PutOp(("docs",), "4", {"color": "green", "n": "4"}),
        PutOp(("other",), "5", {"color": "red", "n": 5}),
    ])


@pytest.mark.parametrize("use_async", [False, True])
def test_search_filters(store, use_async):
    fill(store)

    def search(prefix, **kw):
        return keys(asyncio.run(store.asearch(prefix, **kw)) if use_async else store.search(prefix, **kw))

    assert search(("docs",)) == [(("docs",), "4"), (("docs", "a"), "1"), (("docs", "a"), "2"), (("docs", "b"), "3")]
    assert search(("docs",), filter={"color": "red"}) == [(("docs", "a"), "1"), (("docs", "b"), "3")]
    assert search((), filter={"color": "red"}) == [(("docs", "a"), "1"), (("docs", "b"), "3"), (("other",), "5")]
    assert search(("docs",), filter={"n": {"$gt": 2}}) == [(("docs",), "4"), (("docs", "a"), "2"), (("docs", "b"), "3")]
    assert search(("docs",), filter={"n": {"$gte": 2.5, "$lt": 4}}) == [(("docs", "a"), "2"), (("docs", "b"), "3")]
    assert search(("docs",), filter={"n": {"$lte": 1}}) == [(("docs", "a"), "1")]
    assert search(("docs",), filter={"n": {"$eq": 3}}) == [(("docs", "b"), "3")]
    assert search(("docs",), filter={"color": {"$ne": "red"}}) == [(("docs",), "4"), (("docs", "a"), "2")]
    assert search(("docs",), filter={"meta": {"lang": "fr"}}) == [(("docs", "a"), "2")]
    assert search(("docs",), filter={"tags": ["x"]}) == [(("docs", "a"), "1")]
    assert search(("docs",), filter={"flag": True, "color": "red"}) == [(("docs", "b"), "3")]
    assert search(("docs",), filter={"missing": {"$gt": 0}}) == []  # InMemoryStore raises here
    assert search(("docs",), limit=2, offset=1) == [(("docs", "a"), "1"), (("docs", "a"), "2")]
    assert search(("docs",), limit=0) == []
    assert search(("doc",)) == []  # a prefix is whole labels
    assert search(("docs", "a", "deeper")) == []


def test_search_order_is_inmemorystores(store):
    """Namespaces by name, items by creation; an update keeps an item's place."""
    mem = InMemoryStore()
    for ns in [("a",), ("b",)]:
        mem.get(ns, "-")  # InMemoryStore orders namespaces by first use
    ops = [("b",), "x"], [("a",), "y"], [("a",), "z"], [("b",), "w"], [("a",), "y"]
    for ns, k in ops:
        store.put(ns, k, {"k": k})
        mem.put(ns, k, {"k": k})
    store.delete(("a",), "y")
    mem.delete(("a",), "y")
    store.put(("a",), "y", {"k": "again"})
    mem.put(("a",), "y", {"k": "again"})
    assert keys(store.search(())) == keys(mem.search(())) == [
        (("a",), "z"), (("a",), "y"), (("b",), "x"), (("b",), "w")
    ]


def test_list_namespaces(store):
    for ns in [("a", "b", "c"), ("a", "b", "d", "e"), ("a", "b", "d", "i"), ("a", "b", "f"), ("a", "c", "f"),
               ("users", "1", "memories"), ("users", "2", "memories"), ("users", "2", "prefs")]:
        store.put(ns, "k", {"v": 1})
    assert store.list_namespaces(prefix=("a", "b"), max_depth=3) == [("a", "b", "c"), ("a", "b", "d"), ("a", "b", "f")]
    assert store.list_namespaces(suffix=("f",)) == [("a", "b", "f"), ("a", "c", "f")]
    assert store.list_namespaces(prefix=("users", "*", "memories")) == [
        ("users", "1", "memories"), ("users", "2", "memories")
    ]
    assert store.list_namespaces(suffix=("*", "memories")) == [("users", "1", "memories"), ("users", "2", "memories")]
    assert store.list_namespaces(prefix=("a",), suffix=("*", "f")) == [("a", "b", "f"), ("a", "c", "f")]
    assert store.list_namespaces(max_depth=1) == [("a",), ("users",)]
    assert store.list_namespaces(limit=2, offset=1) == [("a", "b", "d", "e"), ("a", "b", "d", "i")]
    assert store.list_namespaces(prefix=("zzz",)) == []
    store.delete(("a", "c", "f"), "k")  # a namespace without items is not listed
    assert store.list_namespaces(suffix=("f",)) == [("a", "b", "f")]


async def test_list_namespaces_async(store):
    await store.aput(("a", "b"), "k", {"v": 1})
    await store.aput(("a", "c"), "k", {"v": 1})
    assert await store.alist_namespaces(prefix=("a",)) == [("a", "b"), ("a", "c")]
    assert await store.alist_namespaces(suffix=("c",)) == [("a", "c")]
    assert await store.alist_namespaces(max_depth=1) == [("a",)]
    assert await store.alist_namespaces(limit=1, offset=1) == [("a", "c")]


# -- names, layout and history ---------------------------------------------------------

ODD = [
    (("users", "with space", "ü ñ 日本"), "key with space"),
    (("slash/inside", "a"), "../../etc/passwd"),
    (("x" * 300,), "y" * 400),
    (("%41", "~tilde", ":colon"), ""),
    (("a",), "ends.lock"),
    (("a",), ".hidden"),
    (("a",), ".."),
]


def test_odd_names_round_trip_and_fsck(repo_path):
    with GitStore(repo_path) as s:
        for i, (ns, key) in enumerate(ODD):
            s.put(ns, key, {"i": i})
    with GitStore(repo_path) as s:  # from git alone
        for i, (ns, key) in enumerate(ODD):
            assert s.get(ns, key).value == {"i": i}, (ns, key)
        assert s.list_namespaces() == sorted([ns for ns, _ in ODD[:4]] + [("a",)])
        s.delete(("x" * 300,), "y" * 400)  # a shortened name is found through the blob
    with GitStore(repo_path) as s:
        assert s.get(("x" * 300,), "y" * 400) is None
        assert s.get(("a",), "..").value == {"i": 6}
    subprocess.run(["git", "--git-dir", str(repo_path), "fsck", "--strict"], check=True, capture_output=True)


def test_tree_layout_fans_out_items(store, repo_path):
    store.batch([PutOp(("memories", "1"), f"k{i}", {"i": i}) for i in range(3000)])
    store.put(("memories", "1", "sub"), "k", {"i": -1})
    files = git(repo_path, "ls-tree", "-r", "--name-only", "store").split()
    h = hashlib.sha1(b"k7").hexdigest()
    assert f"memories/1/.items/{h[0]}/{h[1]}/k7" in files
    assert "memories/1/sub/.items/1/3/k" in files
    assert len(files) == 3001
    sizes = []
    for first in git(repo_path, "ls-tree", "--name-only", "store:memories/1/.items").split():
        second = git(repo_path, "ls-tree", "--name-only", f"store:memories/1/.items/{first}").split()
        sizes.append(len(second))
        sizes += [len(git(repo_path, "ls-tree", f"store:memories/1/.items/{first}/{b}").splitlines()) for b in second]
    # a put rewrites trees of ~16 and ~N/256 entries, never an N-entry tree
    assert max(sizes) < 30


def test_store_touches_only_its_branch(repo_path):
    repo = GitRepo(repo_path)
    blob = repo.blob(b"x")
    tree = repo.tree({"x": (blob, 0o100644)})
    other = repo.commit(tree, [], "not the store's")
    assert repo.update_ref("refs/heads/threads/1", None, other)
    with GitStore(repo) as s:
        s.put(("a",), "k", {"v": 1})
        s.delete(("a",), "k")
    assert repo.ref("refs/heads/threads/1") == other
    assert set(git(repo_path, "for-each-ref", "--format=%(refname)").split()) == {"refs/heads/threads/1", STORE_REF}
    repo.close()


def test_commit_messages_name_what_changed(store, repo_path):
    store.put(("memories", "1"), "3f2a", {"text": "hi"})
    store.batch([PutOp(("memories", "1"), "b", {"v": 1}), PutOp(("memories", "1"), "3f2a", None)])
    store.batch([PutOp(("memories", "2"), f"key{i}", {"v": i}) for i in range(10)])
    log = git(repo_path, "log", "--format=%s", "store").splitlines()
    assert log == [
        "put memories/2: key0, key1, key2 (+7 more)",
        "put memories/1: b; delete memories/1: 3f2a",
        "put memories/1: 3f2a",
    ]
    message = pygit2.Repository(str(repo_path)).revparse_single("store~1").message
    assert "Gitckpt: store" in message
    assert parse_changes(message) == [
        ("Store-Put", ("memories", "1"), "b"), ("Store-Delete", ("memories", "1"), "3f2a")
    ]
    # a person can find every change to one key
    assert len(git(repo_path, "log", "--format=%h", "--grep", '"memories", "1", "3f2a"', "store").split()) == 2


def test_git_log_p_shows_decoded_values(repo_path):
    with GitStore(repo_path, index={"dims": 27, "embed": CountingEmbeddings(), "fields": ["text"]}) as s:
        s.put(("memories", "1"), "name", {"text": "Hi! Remember: my name is Bob"})
        s.put(("memories", "1"), "name", {"text": "Call me Robert"}, ttl=60)
        s.delete(("memories", "1"), "name")
    log = git(repo_path, "log", "-p", "store")
    assert "Binary files" not in log
    assert '-    "text": "Hi! Remember: my name is Bob"' in log
    assert '+    "text": "Call me Robert"' in log
    assert '"ttl": 60' in log and '"expires_at":' in log
    assert '"field": "text"' in log and '"dims": 27' in log
    h = hashlib.sha1(b"name").hexdigest()
    path = f"memories/1/.items/{h[0]}/{h[1]}/name"
    shown = json.loads(git(repo_path, "show", "--textconv", f"store~1:{path}"))
    assert shown["value"] == {"text": "Call me Robert"} and shown["namespace"] == ["memories", "1"]


def test_decode_item_blob(repo_path):
    emb = CountingEmbeddings()
    with GitStore(repo_path, index={"dims": 27, "embed": emb, "fields": ["text", "tags[*]"]}) as s:
        s.put(("n", "s"), "k", {"text": "apple", "tags": ["x", "y"]}, ttl=5)
        oid = s._idx.get(("n", "s"), "k").oid
    data = pygit2.Repository(str(repo_path))[oid].data
    item = decode_item_blob(data)
    assert item["namespace"] == ["n", "s"] and item["key"] == "k"
    assert item["value"] == {"text": "apple", "tags": ["x", "y"]}
    assert item["ttl"] == 5 and item["expires_at"] > item["updated_at"]
    assert [v["field"] for v in item["vectors"]] == ["text", "tags[*].0", "tags[*].1"]
    assert item["vectors"][0]["dims"] == 27 and item["vectors"][0]["head"] == "1, 0, 0, 0, …"
    full = decode_item_blob(data, full_vectors=True)
    assert full["vectors"][0]["vector"] == letters("apple")
    json.dumps(item)  # plain data
    with pytest.raises(CorruptObjectError, match="not a gitckpt store item"):
        decode_item_blob(b"msgpack\n...")


# -- several instances, threads, lifecycle -------------------------------------------------


def test_another_instance_sees_writes_incrementally(repo_path):
    a, b = GitStore(repo_path), GitStore(repo_path)
    a.batch([PutOp(("ns",), f"k{i}", {"i": i}) for i in range(50)])
    assert len(b.search(("ns",), limit=100)) == 50
    a.put(("ns",), "k1", {"i": "changed"})
    a.delete(("ns",), "k2")
    a.put(("ns2",), "new", {"i": 0})
    assert b.get(("ns",), "k1").value == {"i": "changed"}
    assert b.get(("ns",), "k2") is None
    assert b.list_namespaces() == [("ns",), ("ns2",)]
    b.put(("ns",), "k3", {"i": "from b"})  # b writes on top of a's commits
    assert a.get(("ns",), "k3").value == {"i": "from b"}
    assert commits(repo_path) == 5
    a.close()
    b.close()


def test_threads_lose_nothing(store, repo_path):
    def work(t):
        for i in range(15):
            store.put(("t", str(t)), f"k{i}", {"t": t, "i": i})

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(store.search(("t",), limit=1000)) == 60
    assert commits(repo_path) == 60


def test_two_instances_racing_lose_nothing(repo_path):
    stores = [GitStore(repo_path) for _ in range(3)]

    def work(n):
        for i in range(15):
            stores[n].put(("race",), f"{n}-{i}", {"n": n})

    threads = [threading.Thread(target=work, args=(n,)) for n in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with GitStore(repo_path) as fresh:
        assert len(fresh.search(("race",), limit=100)) == 45
    assert commits(repo_path) == 45
    for s in stores:
        s.close()


def test_lifecycle(repo_path):
    with GitStore.from_conn_string(repo_path) as s:
        s.setup()
        s.setup()
        s.put(("a",), "k", {"v": 1})
    repo = GitRepo(repo_path)
    with GitStore(repo) as s:  # a shared GitRepo (e.g. a GitSaver's) is not closed by the store
        assert s.get(("a",), "k").value == {"v": 1}
    assert repo.ref(STORE_REF) is not None
    repo.close()


async def test_async_context_manager(repo_path):
    async with GitStore(repo_path) as s:
        await s.aput(("a",), "k", {"v": 1})
    assert GitStore(repo_path).get(("a",), "k").value == {"v": 1}


# -- semantic search ---------------------------------------------------------------------


def test_semantic_search_with_embeddings_class(vstore):
    vstore.put(("docs",), "apple", {"text": "apple apple"})
    vstore.put(("docs",), "zebra", {"text": "zebra"})
    vstore.put(("docs",), "raw", {"text": "apple"}, index=False)
    found = vstore.search(("docs",), query="apple")
    assert [r.key for r in found] == ["apple", "zebra", "raw"]
    assert found[0].score == pytest.approx(15 / (29**0.5 * 8**0.5)) and found[2].score is None
    assert vstore.get(("docs",), "raw").value == {"text": "apple"}  # not embedded, still stored
    assert vstore.emb.documents == ["apple apple", "zebra"]
    assert [r.key for r in vstore.search(("docs",), query="zebra", limit=1)] == ["zebra"]
    assert [r.key for r in vstore.search(("docs",), query="zebra", limit=1, offset=1)] == ["apple"]
    assert [r.key for r in vstore.search(("docs",), query="apple", filter={"text": "zebra"})] == ["zebra"]


def test_scores_ties_and_unembedded_items_match_inmemorystore(repo_path):
    cases = [
        ("a", {"text": "apple"}, None), ("b", {"text": "apple"}, None), ("c", {"text": "pear"}, False),
        ("d", {"text": "apple pie"}, None), ("e", {"other": 1}, None), ("f", {"text": "pear"}, False),
    ]
    index = {"dims": 27, "embed": lambda texts: [letters(t) for t in texts], "fields": ["text"]}
    mem = InMemoryStore(index=index)
    with GitStore(repo_path, index=index) as s:
        for key, value, ix in cases:
            s.put(("n",), key, value, index=ix)
            mem.put(("n",), key, value, index=ix)
        for limit, offset in [(10, 0), (2, 0), (2, 1), (4, 2), (5, 3), (1, 5)]:
            got = s.search(("n",), query="apple", limit=limit, offset=offset)
            want = mem.search(("n",), query="apple", limit=limit, offset=offset)
            assert [(r.key, r.score) for r in got] == [(r.key, r.score) for r in want], (limit, offset)


async def test_semantic_search_with_sync_and_async_functions(repo_path, tmp_path):
    calls = []

    def sync_embed(texts):
        calls.append(("sync", len(texts)))
        return [letters(t) for t in texts]

    async def async_embed(texts):
        calls.append(("async", len(texts)))
        return [letters(t) for t in texts]

    for embed, path in [(sync_embed, repo_path), (async_embed, tmp_path / "second.git")]:
        with GitStore(path, index={"dims": 27, "embed": embed}) as s:
            await s.aput(("docs",), "1", {"text": "banana"})
            s.put(("docs",), "2", {"text": "cherry"})  # an async function works from the sync API too
            assert [r.key for r in await s.asearch(("docs",), query="banana")] == ["1", "2"]
            assert [r.key for r in s.search(("docs",), query="cherry")] == ["2", "1"]
    assert {kind for kind, _ in calls} == {"sync", "async"}


def test_embed_given_as_provider_string(repo_path, monkeypatch):
    import langgraph.store.base.embed as embed_mod

    made = []

    def init_embeddings(name):
        made.append(name)
        return CountingEmbeddings()

    monkeypatch.setattr(embed_mod, "_get_init_embeddings", lambda: init_embeddings)
    with GitStore(repo_path, index={"dims": 27, "embed": "fake:letters", "fields": ["text"]}) as s:
        s.put(("d",), "k", {"text": "kiwi"})
        assert s.search(("d",), query="kiwi")[0].score == pytest.approx(1.0)
    assert made == ["fake:letters"]


def test_fields_json_paths(repo_path):
    emb = CountingEmbeddings()
    index = {"dims": 27, "embed": emb, "fields": ["meta.title", "chunks[*].text", "authors[0].name"]}
    with GitStore(repo_path, index=index) as s:
        s.put(("d",), "doc", {
            "meta": {"title": "zebra"},
            "chunks": [{"text": "kiwi"}, {"text": "apple"}],
            "authors": [{"name": "mango"}, {"name": "papaya"}],
            "ignored": "banana",
        })
        s.put(("d",), "other", {"meta": {"title": "banana"}})
        assert sorted(emb.documents) == ["apple", "banana", "kiwi", "mango", "zebra"]
        # the best-matching vector ranks the item (max over its fields)
        for q in ["kiwi", "apple", "mango", "zebra"]:
            top = s.search(("d",), query=q, limit=1)[0]
            assert top.key == "doc" and top.score == pytest.approx(1.0), q
        assert s.search(("d",), query="banana", limit=1)[0].key == "other"
        # a put names its own fields
        s.put(("d",), "own", {"body": {"x": "papaya"}, "meta": {"title": "kiwi"}}, index=["body.x"])
        assert s.search(("d",), query="papaya", limit=1)[0].key == "own"
        assert emb.documents[-1] == "papaya"


def test_whole_document_field(repo_path):
    emb = CountingEmbeddings()
    with GitStore(repo_path, index={"dims": 27, "embed": emb}) as s:  # fields default to ["$"]
        s.put(("d",), "k", {"b": "x", "a": "y"})
        s.put(("d",), "j", {"t": "q"}, index=["$"])
    assert emb.documents == ['{"a": "y", "b": "x"}', '{"t": "q"}']


def test_update_reembeds_only_what_changed_and_reopen_never(repo_path):
    emb = CountingEmbeddings()
    index = {"dims": 27, "embed": emb, "fields": ["title", "body"]}
    with GitStore(repo_path, index=index) as s:
        s.put(("d",), "k", {"title": "apple", "body": "banana"})
        assert emb.documents == ["apple", "banana"]
        s.put(("d",), "k", {"title": "apple", "body": "banana", "n": 1})  # text unchanged
        assert emb.documents == ["apple", "banana"]
        s.put(("d",), "k", {"title": "apple", "body": "cherry"})
        assert emb.documents == ["apple", "banana", "cherry"]
        s.batch([PutOp(("d",), "x", {"title": "same", "body": "same"}), PutOp(("d",), "y", {"title": "same"})])
        assert emb.documents[-1:] == ["same"]  # one distinct text, embedded once
    emb.documents.clear()
    with GitStore(repo_path, index=index) as s:
        assert s.search(("d",), query="cherry", limit=1)[0].key == "k"
        s.put(("d",), "k", {"title": "apple", "body": "cherry", "n": 2})
    assert emb.documents == [] and emb.queries == ["cherry"]


def test_embedding_dims_mismatch_writes_nothing(repo_path):
    with GitStore(repo_path, index={"dims": 5, "embed": lambda texts: [[1.0, 2.0] for _ in texts]}) as s:
        with pytest.raises(InvalidInputError, match="index dims is 5"):
            s.put(("d",), "k", {"text": "x"})
    assert commits(repo_path) == 0


def test_index_false_and_store_without_index(repo_path):
    with GitStore(repo_path) as s:  # no index: query is ignored, index arguments too
        s.put(("d",), "k", {"text": "x"}, index=["text"])
        assert [(r.key, r.score) for r in s.search(("d",), query="x")] == [("k", None)]


# -- TTL -----------------------------------------------------------------------------------

MIN = 1 / 60  # one second, in minutes


def test_ttl_expiry_hides_items_until_swept(repo_path):
    with GitStore(repo_path, ttl={"default_ttl": 0.4 * MIN}) as s:
        s.put(("t",), "short", {"v": 1})
        s.put(("t",), "long", {"v": 2}, ttl=None)
        s.put(("t2",), "short", {"v": 3})
        assert s.get(("t",), "short").value == {"v": 1}
        time.sleep(0.6)
        assert s.get(("t",), "short") is None
        assert keys(s.search(("t",))) == [(("t",), "long")]
        assert s.list_namespaces() == [("t",)]
        assert s.batch([GetOp(("t2",), "short")]) == [None]
        before = commits(repo_path)
        assert s.sweep_ttl() == 2
        assert commits(repo_path) == before + 1
        assert git(repo_path, "log", "-1", "--format=%s", "store").strip() == "expire t: short; expire t2: short"
        assert s.sweep_ttl() == 0
    with GitStore(repo_path) as s:
        assert s.search((), limit=10)[0].key == "long" and len(s.search(())) == 1


def test_put_over_an_expired_item_creates_it_again(repo_path):
    with GitStore(repo_path) as s:
        s.put(("t",), "k", {"v": 1}, ttl=0.2 * MIN)
        first = s.get(("t",), "k")
        time.sleep(0.3)
        s.put(("t",), "k", {"v": 2})
        again = s.get(("t",), "k")
        assert again.value == {"v": 2} and again.created_at > first.created_at


def test_refresh_on_read(repo_path):
    with GitStore(repo_path, ttl={"default_ttl": 1.2 * MIN, "refresh_on_read": True}) as s:
        s.put(("t",), "read", {"v": 1})
        s.put(("t",), "unread", {"v": 2})
        s.put(("t",), "searched", {"v": 3})
        s.put(("t",), "no-refresh", {"v": 4})
        time.sleep(0.7)
        assert s.get(("t",), "read") is not None
        assert keys(s.search(("t",), filter={"v": 3})) == [(("t",), "searched")]
        assert s.get(("t",), "no-refresh", refresh_ttl=False) is not None
        time.sleep(0.8)  # past the first expiry, within the refreshed one
        assert [r.key for r in s.search(("t",), refresh_ttl=False)] == ["read", "searched"]
        # the refresh is in git, so another process sees it too
        subjects = git(repo_path, "log", "--format=%s", "store").splitlines()
        assert "refresh ttl t: read" in subjects and "refresh ttl t: searched" in subjects
        with GitStore(repo_path) as other:
            assert sorted(r.key for r in other.search(("t",))) == ["read", "searched"]


def test_no_refresh_when_config_says_so(repo_path):
    with GitStore(repo_path, ttl={"default_ttl": 1.0 * MIN, "refresh_on_read": False}) as s:
        s.put(("t",), "k", {"v": 1})
        time.sleep(0.3)
        assert s.get(("t",), "k") is not None
        time.sleep(0.8)
        assert s.get(("t",), "k") is None


def test_sweeper_deletes_in_background_and_stops_on_close(repo_path):
    s = GitStore(repo_path, ttl={"default_ttl": 0.1 * MIN, "sweep_interval_minutes": 0.2 * MIN})
    thread = s._sweeper
    assert thread is not None and thread.is_alive()
    s.put(("t",), "k", {"v": 1})
    s.put(("t",), "keep", {"v": 1}, ttl=None)
    deadline = time.time() + 5
    while time.time() < deadline and "expire t: k" not in git(repo_path, "log", "--format=%s", "store"):
        time.sleep(0.05)
    assert "expire t: k" in git(repo_path, "log", "--format=%s", "store")
    s.close()
    assert not thread.is_alive()
    with GitStore(repo_path, ttl={"sweep_interval_minutes": 0.2 * MIN}) as s2:
        thread2 = s2._sweeper
        assert thread2.is_alive()
    assert not thread2.is_alive()  # context exit stops it
    with GitStore(repo_path) as s3:
        assert keys(s3.search(("t",))) == [(("t",), "keep")]


def test_start_and_stop_ttl_sweeper(repo_path):
    with GitStore(repo_path, ttl={"default_ttl": 1}) as s:
        assert s._sweeper is None  # no interval configured: not started
        future = s.start_ttl_sweeper(0.1 * MIN)
        assert s._sweeper.is_alive()
        assert s.stop_ttl_sweeper(timeout=5)
        assert future.result(timeout=5) is None
    with GitStore(repo_path) as s:  # no TTL config: nothing to sweep
        assert s.start_ttl_sweeper().done()


async def test_ttl_async(repo_path):
    async with GitStore(repo_path, ttl={"default_ttl": 1.0 * MIN, "refresh_on_read": True}) as s:
        await s.aput(("t",), "k", {"v": 1})
        await s.aput(("t",), "short", {"v": 2}, ttl=0.2 * MIN)
        await s.aput(("t",), "forever", {"v": 3}, ttl=None)
        await asyncio.sleep(0.4)
        assert await s.aget(("t",), "short") is None
        assert (await s.aget(("t",), "k")).value == {"v": 1}  # refreshed: now expires at ~1.4 s
        await asyncio.sleep(0.7)  # past its first expiry (1.0 s)
        assert [r.key for r in await s.asearch(("t",))] == ["k", "forever"]
        assert await s.alist_namespaces() == [("t",)]
        assert await asyncio.to_thread(s.sweep_ttl) == 1
