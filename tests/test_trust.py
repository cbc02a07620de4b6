"""Reading a repository from elsewhere never constructs a type the reader did not allow.

Crafted values name ``subprocess.Popen`` in every msgpack extension LangGraph
defines (single-argument, positional, keyword, pydantic v1/v2 constructors and
a method call), nested inside a LangChain message, in a plain channel, in a
pending write and in a store value. Each would run ``touch <marker>`` when
decoded with LangGraph's default serializer (the positive controls prove it).
Then every surface reads them, and no marker file may appear: every CLI command
(real ``gitckpt`` subprocesses), pull/sync/clone against a real ``git daemon``,
``git log -p`` through the textconv driver, ``GitSaver`` in strict mode and its
``with_allowlist`` copies (with the decoded-value cache warm), and ``GitStore``.
An allowed type (``--allow``, ``gitckpt.allow``, ``allowed_msgpack_modules``)
*is* constructed: a class in a test module that touches its own marker file.
"""

from __future__ import annotations

import json
import operator
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated, Any, TypedDict

import msgpack
import ormsgpack
import pytest
from langchain_core.messages import HumanMessage
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from langgraph.graph import END, START, StateGraph

from gitckpt import GitSaver, GitStore, sync, trust
from gitckpt.checkpoint import format as fmt
from gitckpt.errors import UntrustedDataError
from gitckpt.git.repo import GitRepo

GITCKPT = [sys.executable, "-m", "gitckpt"]

EVILMOD = '''
from pathlib import Path


class Touch:
    """An allowed type in the tests: constructing it leaves a file."""

    def __init__(self, path):
        Path(path).touch()
        self.path = path
'''


def ext(code: int, *tup: Any) -> ormsgpack.Ext:
    return ormsgpack.Ext(code, ormsgpack.packb(tup))


def payloads(marks: Path) -> dict[str, ormsgpack.Ext]:
    """One value per extension kind; decoding it permissively runs ``touch marks/<kind>``."""
    def m(name: str) -> str:
        return str(marks / name)

    return {
        "single": ext(trust.EXT_CONSTRUCTOR_SINGLE_ARG, "subprocess", "Popen", ["touch", m("single")]),
        "positional": ext(trust.EXT_CONSTRUCTOR_POS_ARGS, "subprocess", "Popen", [["touch", m("positional")]]),
        "keyword": ext(trust.EXT_CONSTRUCTOR_KW_ARGS, "subprocess", "Popen", {"args": ["touch", m("keyword")]}),
        "pydantic_v1": ext(trust.EXT_PYDANTIC_V1, "subprocess", "Popen", {"args": ["touch", m("pydantic_v1")]}),
        "pydantic_v2": ext(trust.EXT_PYDANTIC_V2, "subprocess", "Popen", {"args": ["touch", m("pydantic_v2")]},
                           "model_validate_json"),
        "method": ext(trust.EXT_METHOD_SINGLE_ARG, "subprocess", "Popen", ["touch", m("method")], "__call__"),
    }


def touch_ext(path: Path) -> ormsgpack.Ext:
    """The allowed type: ``evilmod.Touch(path)``."""
    return ext(trust.EXT_CONSTRUCTOR_SINGLE_ARG, "evilmod", "Touch", str(path))


def settle() -> None:
    time.sleep(0.6)  # a started ``touch`` has long finished by then


def no_marks(marks: Path) -> None:
    settle()
    assert sorted(p.name for p in marks.iterdir()) == []


def wait_for(path: Path, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            return True
        time.sleep(0.02)
    return False


class State(TypedDict):
    messages: Annotated[list, operator.add]
    data: Any


def write_evil(path: Path, marks: Path, allowed_mark: Path) -> dict[str, Any]:
    """A repository holding the payloads in a real graph's checkpoints (inside a
    message and in a plain channel), in a pending write and in a store value."""
    P = payloads(marks)
    store_mark = marks / "store"
    turn = {"n": 0}

    def node(state: State) -> dict:
        turn["n"] += 1
        if turn["n"] > 1:
            return {"data": "second turn"}
        return {
            "messages": [HumanMessage("hi", additional_kwargs={"evil": list(P.values())})],
            "data": {"deep": [P["positional"], {"k": P["keyword"]}], "mine": touch_ext(allowed_mark)},
        }

    b = StateGraph(State)
    b.add_node("work", node)
    b.add_edge(START, "work")
    b.add_edge("work", END)
    # the writer reads strictly, so writing the payloads runs nothing here either
    with GitSaver(path, allowed_msgpack_modules=()) as saver:
        graph = b.compile(checkpointer=saver)
        cfg = {"configurable": {"thread_id": "t"}}
        graph.invoke({"messages": [], "data": None}, cfg)
        first = saver.get_tuple(cfg).config
        graph.invoke({"messages": [], "data": None}, cfg)
        saver.put_writes(first, [("data", P["single"])], "task-evil")
        cids = [c.config["configurable"]["checkpoint_id"] for c in saver.list(cfg)]
    import gitckpt.store.store as store_mod

    real = store_mod.dump_value
    store_mod.dump_value = lambda v: msgpack.packb(v, use_bin_type=True)  # the attacker skips the JSON check
    try:
        with GitStore(path) as st:
            st.put(("mem", "1"), "k", {"v": msgpack.ExtType(
                trust.EXT_CONSTRUCTOR_POS_ARGS, msgpack.packb(["subprocess", "Popen", [["touch", str(store_mark)]]]))})
    finally:
        store_mod.dump_value = real
    return {"checkpoints": cids, "first": first["configurable"]["checkpoint_id"]}


@pytest.fixture
def evil(tmp_path: Path, monkeypatch):
    marks = tmp_path / "marks"
    marks.mkdir()
    mods = tmp_path / "mods"
    mods.mkdir()
    (mods / "evilmod.py").write_text(EVILMOD)
    monkeypatch.syspath_prepend(str(mods))
    monkeypatch.delenv("LANGGRAPH_STRICT_MSGPACK", raising=False)
    allowed_mark = tmp_path / "allowed-mark"
    repo = tmp_path / "evil.git"
    info = write_evil(repo, marks, allowed_mark)
    assert sorted(marks.iterdir()) == [] and not allowed_mark.exists()
    env = {k: v for k, v in os.environ.items() if k not in ("LANGGRAPH_STRICT_MSGPACK", "GITCKPT_ALLOW",
                                                             "GITCKPT_SERDE", "GITCKPT_REPO")}
    env["PYTHONPATH"] = os.pathsep.join([str(mods), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return {"repo": repo, "marks": marks, "allowed_mark": allowed_mark, "env": env, "tmp": tmp_path, **info}


def gitckpt(env: dict, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([*GITCKPT, *args], env=env, capture_output=True, text=True, timeout=timeout)


# -- positive controls: the payloads are live ------------------------------------------------


def test_the_payloads_run_with_langgraphs_default_serializer(tmp_path, monkeypatch):
    monkeypatch.delenv("LANGGRAPH_STRICT_MSGPACK", raising=False)
    serde = JsonPlusSerializer()
    assert serde._allowed_msgpack_modules is True  # the default: permissive
    for kind, value in payloads(tmp_path).items():
        serde.loads_typed(("msgpack", ormsgpack.packb({"x": [value]})))
        if kind == "method":  # LangGraph gates method calls always; listed for the scan
            settle()
            assert not (tmp_path / kind).exists()
        else:
            assert wait_for(tmp_path / kind), f"{kind} did not run: the test would prove nothing"


def test_the_stored_blobs_run_with_langgraphs_default_serializer(evil):
    """The very blobs the repository holds: read by a GitSaver with LangGraph's default."""
    with GitSaver(evil["repo"]) as saver:  # LangGraph's JsonPlusSerializer, permissive
        cfg = {"configurable": {"thread_id": "t", "checkpoint_id": evil["first"]}}
        tup = saver.get_tuple(cfg)
        assert tup.pending_writes
    for kind in ("single", "positional", "keyword", "pydantic_v1", "pydantic_v2"):
        assert wait_for(evil["marks"] / kind), kind
    assert wait_for(evil["allowed_mark"])


# -- the CLI -------------------------------------------------------------------------------------


GRAPH_FILE = '''
import operator
from typing import Annotated, Any, TypedDict
from langgraph.graph import END, START, StateGraph


class State(TypedDict):
    messages: Annotated[list, operator.add]
    data: Any


def work(state):
    return {"data": "replayed"}


b = StateGraph(State)
b.add_node("work", work)
b.add_edge(START, "work")
b.add_edge("work", END)
graph = b
'''


def test_every_cli_command_reads_strictly(evil):
    repo, env, marks = str(evil["repo"]), evil["env"], evil["marks"]
    graph_file = evil["tmp"] / "g.py"
    graph_file.write_text(GRAPH_FILE)
    first = evil["first"]
    reading = [
        ["threads"], ["log", "t"], ["log", "t", "--graph"], ["show", "t"], ["show", "t", first],
        ["show", "t", first, "--json"], ["show", "t", first, "--graph", f"{graph_file}:graph"],
        ["diff", "t"], ["diff", "t", first], ["diff", "t", first, "--json"], ["verify"], ["verify", "--json"],
        ["store", "ls"], ["store", "get", "mem/1", "k"], ["store", "get", "mem/1", "k", "--json"],
        ["store", "search", "mem"], ["store", "search", "mem", "--json"], ["store", "log"],
        ["store", "log", "--json"], ["--serde", "aes", "show", "t", first],
        ["fork", "t", first, "--to", "f"], ["copy", "t", "c"],
        ["replay", "t", first, "--graph", f"{graph_file}:graph", "--to", "r"],
        ["update", "t", "--values", '{"data": "x"}', "--graph", f"{graph_file}:graph"],
        ["gc"], ["prune", "c"], ["delete", "f"], ["threads", "--json"], ["log", "t", "--json"], ["init"],
        ["demo"],  # its own threads beside the crafted one; its store search meets the crafted item's branch
    ]
    out = {}
    for args in reading:
        e = dict(env, LANGGRAPH_AES_KEY="0123456789abcdef") if "--serde" in args else env
        r = gitckpt(e, "--repo", repo, *args)
        assert r.returncode == 0, (args, r.stderr)
        assert "Traceback" not in r.stderr, (args, r.stderr)
        out[tuple(args)] = r
    no_marks(marks)
    assert not evil["allowed_mark"].exists()
    # shown as data with its type name, clearly marked
    text = out[("show", "t", first)].stdout
    assert "<not constructed: subprocess.Popen(" in text
    flat = " ".join(text.split())  # a message shows its content, and says what else it holds
    assert "human: hi (also holds <not constructed: subprocess.Popen, subprocess.Popen.__call__>)" in flat
    data = json.loads(out[("show", "t", first, "--json")].stdout)
    evil_list = data["values"]["messages"][0]["additional_kwargs"]["evil"]
    assert {"__not_constructed__": "subprocess.Popen", "data": [["touch", str(marks / "positional")]]} in evil_list
    assert {"__not_constructed__": "subprocess.Popen.__call__", "data": ["touch", str(marks / "method")]} in evil_list
    assert data["values"]["data"]["mine"] == {"__not_constructed__": "evilmod.Touch",
                                              "data": str(evil["allowed_mark"])}
    assert data["pending_writes"][0]["value"]["__not_constructed__"] == "subprocess.Popen"
    diff = json.loads(out[("diff", "t", first, "--json")].stdout)
    assert "subprocess.Popen" in json.dumps(diff)
    item = json.loads(out[("store", "get", "mem/1", "k", "--json")].stdout)
    assert item["value"]["v"] == {"__not_constructed__": "subprocess.Popen",
                                  "data": [["touch", str(marks / "store")]]}
    table = "".join(out[("store", "search", "mem")].stdout.split())  # a table: wrapped cells interleave
    assert "<notconstructed:" in table and 'subprocess.Popen([["touch"' in table
    found = json.loads(out[("store", "search", "mem", "--json")].stdout)
    assert found[0]["value"]["v"]["__not_constructed__"] == "subprocess.Popen"
    assert out[("verify",)].returncode == 0, out[("verify",)].stderr


def test_watch_reads_strictly(evil):
    repo, env = str(evil["repo"]), evil["env"]
    proc = subprocess.Popen([*GITCKPT, "--repo", repo, "watch", "--json"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr.readline().startswith("Watching ")
        with GitSaver(repo, allowed_msgpack_modules=()) as saver:  # another writer continues thread t
            b = StateGraph(State)
            b.add_node("work", lambda s: {"data": "more"})
            b.add_edge(START, "work")
            b.add_edge("work", END)
            b.compile(checkpointer=saver).invoke({"messages": [], "data": None}, {"configurable": {"thread_id": "w"}})
        time.sleep(2)
    finally:
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=30)
    assert '"thread_id": "w"' in stdout, (stdout, stderr)
    no_marks(evil["marks"])


def test_allowed_types_are_constructed_by_the_cli(evil):
    repo, env, first = str(evil["repo"]), evil["env"], evil["first"]
    mark = evil["allowed_mark"]
    r = gitckpt(env, "--repo", repo, "--allow", "evilmod:Touch", "show", "t", first, "--json")
    assert r.returncode == 0, r.stderr
    assert wait_for(mark)
    assert "__not_constructed__\": \"subprocess.Popen" in r.stdout  # the rest stays data
    mark.unlink()
    # the repository's config: `gitckpt allow` (git config gitckpt.allow)
    r = gitckpt(env, "--repo", repo, "allow", "evilmod:Touch")
    assert r.returncode == 0 and "Allowed: evilmod:Touch." in r.stdout, r.stderr
    git = subprocess.run(["git", "--git-dir", repo, "config", "--get-all", "gitckpt.allow"],
                         capture_output=True, text=True)
    assert git.stdout.split() == ["evilmod:Touch"]
    r = gitckpt(env, "--repo", repo, "show", "t", first)
    assert r.returncode == 0, r.stderr
    assert wait_for(mark)
    mark.unlink()
    r = gitckpt(env, "--repo", repo, "allow", "--remove", "evilmod:Touch")
    assert r.returncode == 0 and "none" in r.stdout
    r = gitckpt(env, "--repo", repo, "--allow", "not a type", "show", "t")
    assert r.returncode == 1 and "write a type as module:Name" in r.stderr
    gitckpt(env, "--repo", repo, "show", "t", first)
    no_marks(evil["marks"])
    assert not mark.exists()


def test_textconv_renders_without_constructing(evil):
    r = subprocess.run(["git", "--git-dir", str(evil["repo"]), "log", "-p", "--all"], capture_output=True,
                       text=True, env=evil["env"])
    assert r.returncode == 0, r.stderr
    assert "subprocess.Popen" in r.stdout and "evilmod.Touch" in r.stdout
    no_marks(evil["marks"])
    assert not evil["allowed_mark"].exists()


# -- the library --------------------------------------------------------------------------


def read_all(saver: GitSaver) -> list:
    out = []
    for _ in range(3):  # the decoded-value cache keeps a value from its second read on
        for tup in saver.list({"configurable": {"thread_id": "t"}}):
            out.append(tup)
    return out


def test_gitsaver_strict_and_allowlist_with_the_cache_warm(evil):
    marks, mark = evil["marks"], evil["allowed_mark"]
    with GitSaver(evil["repo"], allowed_msgpack_modules=()) as strict:
        assert strict._msgpack_hook is not None  # the ext_hook fast path is the one in use
        tups = read_all(strict)
        msg = [t for t in tups if t.checkpoint["id"] == evil["first"]][0].checkpoint["channel_values"]["messages"][0]
        assert isinstance(msg, HumanMessage)
        # LangGraph's strict mode: the stored data, not the object
        assert [["touch", str(marks / "positional")]] in msg.additional_kwargs["evil"]
        no_marks(marks)
        assert not mark.exists()
        # LangGraph's shallow copy with a larger allowlist: its own hook and caches
        allowing = strict.with_allowlist([("evilmod", "Touch")])
        assert allowing is not strict and allowing._decoded is not strict._decoded
        assert allowing._msgpack_hook is not strict._msgpack_hook
        read_all(allowing)
        assert wait_for(mark)
        mark.unlink()
        # the original still constructs nothing, cache and all
        again = read_all(strict)
        data = [t for t in again if t.checkpoint["id"] == evil["first"]][0].checkpoint["channel_values"]["data"]
        assert data["mine"] == str(mark)
        settle()
        assert not mark.exists()
        no_marks(marks)
    with GitSaver(evil["repo"], allowed_msgpack_modules=[("evilmod", "Touch")], decoded_cache_bytes=0) as saver:
        assert saver._msgpack_hook is None  # the serializer's own loads_typed: same rule
        read_all(saver)
        assert wait_for(mark)
    no_marks(marks)


def test_gitsaver_under_langgraph_strict_mode(evil):
    """LANGGRAPH_STRICT_MSGPACK=true: LangGraph's compile() calls GitSaver.with_allowlist."""
    code = f'''
import operator
from typing import Annotated, Any, TypedDict
from langgraph.graph import END, START, StateGraph
from gitckpt import GitSaver

class State(TypedDict):
    messages: Annotated[list, operator.add]
    data: Any

b = StateGraph(State)
b.add_node("work", lambda s: {{}})
b.add_edge(START, "work")
b.add_edge("work", END)
saver = GitSaver({str(evil["repo"])!r})
graph = b.compile(checkpointer=saver)
cfg = {{"configurable": {{"thread_id": "t", "checkpoint_id": {evil["first"]!r}}}}}
for _ in range(3):
    state = graph.get_state(cfg)
    list(graph.get_state_history({{"configurable": {{"thread_id": "t"}}}}))
print(type(state.values["messages"][0]).__name__)
'''
    env = dict(evil["env"], LANGGRAPH_STRICT_MSGPACK="true")
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "HumanMessage"
    no_marks(evil["marks"])
    assert not evil["allowed_mark"].exists()


def test_gitsaver_refuses_two_allowlists(tmp_path):
    from gitckpt.errors import InvalidInputError

    with pytest.raises(InvalidInputError, match="give allowed_msgpack_modules to your serializer"):
        GitSaver(tmp_path / "r.git", serde=JsonPlusSerializer(), allowed_msgpack_modules=())


def test_gitstore_constructs_nothing(evil):
    with GitStore(evil["repo"]) as st:
        for _ in range(2):
            item = st.get(("mem", "1"), "k")
            assert isinstance(item.value["v"], msgpack.ExtType)  # kept as data
            assert st.search(("mem",))[0].key == "k"
    no_marks(evil["marks"])


def test_strict_serializer_marks_and_round_trips(tmp_path):
    s = trust.strict_serializer()
    P = payloads(tmp_path)
    value = s.loads_typed(("msgpack", ormsgpack.packb({"all": list(P.values())})))
    assert all(isinstance(v, trust.NotConstructed) for v in value["all"])
    assert repr(value["all"][1]) == f"<not constructed: subprocess.Popen([['touch', '{tmp_path}/positional']])>"
    # safe types are constructed as LangGraph constructs them, and it writes as LangGraph does
    import datetime
    import uuid

    v = {"m": HumanMessage("hi"), "u": uuid.uuid4(), "t": datetime.datetime.now(), "p": Path("/x")}
    typed = s.dumps_typed(v)
    assert typed == JsonPlusSerializer().dumps_typed(v)
    assert s.loads_typed(typed) == v
    assert s.loads_typed(("pickle", b"cos\nsystem\n(S'touch x'\ntR.")).type_name == "pickle.loads"
    no_marks(tmp_path)


# -- the scan: what it finds ---------------------------------------------------------------


def test_scan_finds_every_variant_without_constructing(tmp_path):
    P = payloads(tmp_path)
    for kind, value in P.items():
        blob = fmt.pack_value(("msgpack", ormsgpack.packb([{"a": value}])))
        expected = ["subprocess.Popen.__call__"] if kind == "method" else ["subprocess.Popen"]
        assert trust.scan_blob(blob) == expected, kind
    # nested inside an allowed type, and inside a delta snapshot
    nested = ext(trust.EXT_PYDANTIC_V2, "langchain_core.messages.human", "HumanMessage",
                 {"content": "x", "additional_kwargs": {"e": P["keyword"]}}, "model_validate_json")
    assert trust.scan_msgpack(ormsgpack.packb(nested)) == ["subprocess.Popen"]
    assert trust.scan_msgpack(ormsgpack.packb(ormsgpack.Ext(trust.EXT_DELTA_SNAPSHOT, ormsgpack.packb([nested])))) \
        == ["subprocess.Popen"]
    # a dict payload indexed like a tuple (LangGraph reads tup[0], tup[1])
    odd = ormsgpack.Ext(1, ormsgpack.packb({0: "subprocess", 1: "Popen", 2: [["true"]]}, option=ormsgpack.OPT_NON_STR_KEYS))
    assert trust.scan_msgpack(ormsgpack.packb(odd)) == ["subprocess.Popen"]
    # allowed, safe, and plain values name nothing
    assert trust.scan_msgpack(ormsgpack.packb(touch_ext(tmp_path / "x")), frozenset({("evilmod", "Touch")})) == []
    assert trust.scan_blob(fmt.pack_value(JsonPlusSerializer().dumps_typed([HumanMessage("hi")]))) == []
    # pending write, json lc:2 constructor, pickle, encrypted
    w = fmt.pack_write("t", 0, "c", "", ("msgpack", ormsgpack.packb(P["single"])))
    assert trust.scan_blob(w) == ["subprocess.Popen"]
    lc = json.dumps({"lc": 2, "type": "constructor", "id": ["subprocess", "Popen"], "args": [["true"]]}).encode()
    assert trust.scan_blob(b"json\n" + lc) == ["subprocess.Popen"]
    assert trust.scan_blob(b"pickle\n...")[0].startswith("pickle")
    assert trust.scan_blob(b"msgpack+aes\n...")[0].startswith("encrypted msgpack+aes (not scanned")
    # a recorded call: its answer is a [type, payload] pair whose payload is bytes (a replay decodes it)
    call = fmt.pack_call({"kind": "model", "output": ["msgpack", ormsgpack.packb([P["positional"]])], "n": 0})
    assert trust.scan_blob(call) == ["subprocess.Popen"]
    safe = fmt.pack_call({"kind": "model", "output": list(JsonPlusSerializer().dumps_typed(HumanMessage("hi")))})
    assert trust.scan_blob(safe) == []
    assert trust._what("writes/abc/task%2E1.call00", "writes") == "recorded call"
    no_marks(tmp_path)


# -- pull, sync, clone against a real git daemon ------------------------------------------------


def local_refs(path: Path) -> dict[str, str]:
    r = subprocess.run(["git", "--git-dir", str(path), "for-each-ref", "--format=%(refname) %(objectname)",
                        "refs/heads/"], capture_output=True, text=True, check=True)
    return dict(line.split() for line in r.stdout.splitlines())


def test_pull_refuses_what_names_other_types(evil, server, tmp_path):
    sync.push(evil["repo"], server["url"])
    bob = tmp_path / "bob.git"
    GitRepo(bob).close()
    subprocess.run(["git", "--git-dir", str(bob), "remote", "add", "origin", server["url"]], check=True)
    with pytest.raises(UntrustedDataError) as err:
        sync.pull(bob, "origin")
    report = err.value.report
    assert local_refs(bob) == {}  # nothing moved
    whats = {(f.what, f.thread_id, f.checkpoint_id) for f in report.findings}
    assert ("checkpoint", "t", evil["first"]) in whats
    assert ("pending write", "t", evil["first"]) in whats
    assert any(f.what == "store item" and f.item == "mem/1 key 'k'" for f in report.findings)
    assert "subprocess.Popen" in report.types() and "evilmod.Touch" in report.types()
    assert f"thread 't' checkpoint {evil['first']}" in str(err.value)
    # a second pull checks again (the objects are here now, but no ref of ours reaches them)
    with pytest.raises(UntrustedDataError):
        sync.pull(bob, "origin")
    with pytest.raises(UntrustedDataError):
        sync.sync(bob, "origin")
    # allowing a type takes it off the report; the rest still blocks
    with pytest.raises(UntrustedDataError) as err:
        sync.pull(bob, "origin", allow=["evilmod:Touch"])
    assert "evilmod.Touch" not in err.value.report.types()
    # trust=True moves the refs; the scan is still reported
    result = sync.pull(bob, "origin", trust=True)
    assert result.ok and not result.scan.ok
    assert "refs/heads/threads/t" in local_refs(bob)
    # and reading it strictly constructs nothing
    with GitSaver(bob, allowed_msgpack_modules=()) as saver:
        read_all(saver)
    with GitStore(bob) as st:
        st.get(("mem", "1"), "k")
    no_marks(evil["marks"])
    assert not evil["allowed_mark"].exists()


def test_pull_of_allowed_types_only_goes_through(tmp_path, server, monkeypatch):
    mods = tmp_path / "mods"
    mods.mkdir()
    (mods / "evilmod.py").write_text(EVILMOD)
    monkeypatch.syspath_prepend(str(mods))
    mark = tmp_path / "mine"
    alice = tmp_path / "alice.git"
    with GitSaver(alice, allowed_msgpack_modules=()) as saver:
        b = StateGraph(State)
        b.add_node("work", lambda s: {"data": touch_ext(mark), "messages": [HumanMessage("hi")]})
        b.add_edge(START, "work")
        b.add_edge("work", END)
        b.compile(checkpointer=saver).invoke({"messages": [], "data": None}, {"configurable": {"thread_id": "a"}})
    sync.push(alice, server["url"])
    bob = tmp_path / "bob.git"
    GitRepo(bob).close()
    with pytest.raises(UntrustedDataError):
        sync.pull(bob, server["url"])
    r = GitRepo(bob)
    trust.add_to_repo(r, ["evilmod:Touch"])  # the repository's gitckpt.allow
    r.close()
    result = sync.pull(bob, server["url"])
    assert result.ok and result.scan.ok and result.scan.blobs > 0
    assert not mark.exists()  # the check constructed nothing, even of an allowed type


def test_encrypted_values_are_scanned_with_the_key_only(tmp_path, server):
    from langgraph.checkpoint.serde.encrypted import EncryptedSerializer

    key = b"0123456789abcdef"
    enc = EncryptedSerializer.from_pycryptodome_aes(key=key)
    alice = tmp_path / "alice.git"
    with GitSaver(alice, serde=enc) as saver:
        b = StateGraph(State)
        b.add_node("work", lambda s: {"data": "secret", "messages": [HumanMessage("hi")]})
        b.add_edge(START, "work")
        b.add_edge("work", END)
        b.compile(checkpointer=saver).invoke({"messages": [], "data": None}, {"configurable": {"thread_id": "a"}})
    sync.push(alice, server["url"])
    bob = tmp_path / "bob.git"
    GitRepo(bob).close()
    with pytest.raises(UntrustedDataError) as err:
        sync.pull(bob, server["url"])
    assert any("encrypted msgpack+aes (not scanned: no key given)" in t for t in err.value.report.types())
    wrong = EncryptedSerializer.from_pycryptodome_aes(key=b"fedcba9876543210")
    with pytest.raises(UntrustedDataError, match="does not decrypt"):
        sync.pull(bob, server["url"], serde=wrong)
    result = sync.pull(bob, server["url"], serde=enc)
    assert result.ok and result.scan.ok
    # an encrypted payload is found once decrypted
    marks = tmp_path / "marks"
    marks.mkdir()
    carol = tmp_path / "carol.git"
    with GitSaver(carol, serde=enc) as saver:
        b = StateGraph(State)
        b.add_node("work", lambda s: {"data": payloads(marks)["keyword"]})
        b.add_edge(START, "work")
        b.add_edge("work", END)
        b.compile(checkpointer=saver).invoke({"messages": [], "data": None}, {"configurable": {"thread_id": "c"}})
    with pytest.raises(UntrustedDataError) as err:
        sync.pull(bob, str(carol), serde=enc)
    assert err.value.report.types() == ["subprocess.Popen"]
    no_marks(marks)


def test_cli_pull_sync_clone(evil, server, tmp_path):
    env = evil["env"]
    r = gitckpt(env, "--repo", str(evil["repo"]), "push", server["url"])
    assert r.returncode == 0, r.stderr
    served = local_refs(server["path"])
    bob = tmp_path / "bob.git"
    GitRepo(bob).close()
    subprocess.run(["git", "--git-dir", str(bob), "remote", "add", "origin", server["url"]], check=True)
    with GitSaver(bob) as saver:  # bob has a thread of his own, for sync to push
        b = StateGraph(State)
        b.add_node("work", lambda s: {"data": "bob"})
        b.add_edge(START, "work")
        b.add_edge("work", END)
        b.compile(checkpointer=saver).invoke({"messages": [], "data": None}, {"configurable": {"thread_id": "b"}})
    before = local_refs(bob)
    for cmd in (["pull"], ["sync"], ["pull", "--json"]):
        r = gitckpt(env, "--repo", str(bob), *cmd)
        assert r.returncode == 1, (cmd, r.stdout, r.stderr)
        assert local_refs(bob) == before
        assert local_refs(server["path"]) == served  # sync pushed nothing
        if "--json" in cmd:
            report = json.loads(r.stdout)
            assert report["error"] == "untrusted" and "subprocess.Popen" in report["scan"]["types"]
        else:
            assert f"thread 't' checkpoint {evil['first']}" in r.stderr
            assert "Error: nothing was pulled" in r.stderr
    # clone: refused, and nothing left behind
    dest = tmp_path / "clone.git"
    r = gitckpt(env, "clone", server["url"], str(dest))
    assert r.returncode == 1 and "store item mem/1 key 'k'" in r.stderr, r.stderr
    assert not dest.exists()
    # clone --trust: a configured gitckpt repository
    r = gitckpt(env, "--allow", "evilmod:Touch", "clone", server["url"], str(dest), "--trust")
    assert r.returncode == 0, r.stderr
    assert "Warning: --trust took" in r.stderr
    cfg = subprocess.run(["git", "--git-dir", str(dest), "config", "--list"], capture_output=True, text=True).stdout
    assert "diff.gitckpt.textconv=" in cfg and f"remote.origin.url={server['url']}" in cfg
    assert "gitckpt.allow=evilmod:Touch" in cfg
    assert "refs/heads/threads/t" in local_refs(dest) and "refs/heads/store" in local_refs(dest)
    log = subprocess.run(["git", "--git-dir", str(dest), "log", "-p", "--all"], capture_output=True, text=True,
                         env=env)
    assert "subprocess.Popen" in log.stdout
    r = gitckpt(env, "--repo", str(dest), "show", "t", evil["first"])
    assert r.returncode == 0 and "<not constructed: subprocess.Popen(" in r.stdout
    assert wait_for(evil["allowed_mark"])  # allowed at clone time: constructed when shown
    evil["allowed_mark"].unlink()
    # pull --trust, then sync --trust
    r = gitckpt(env, "--repo", str(bob), "pull", "--trust")
    assert r.returncode == 0, r.stderr
    assert "refs/heads/threads/t" in local_refs(bob)
    r = gitckpt(env, "--repo", str(bob), "sync", "--trust")
    assert r.returncode == 0, r.stderr
    assert "refs/heads/threads/b" in local_refs(server["path"])
    no_marks(evil["marks"])
    assert not evil["allowed_mark"].exists()
    shutil.rmtree(dest)


def test_serde_aes_and_a_serializer_of_ones_own(tmp_path, monkeypatch):
    """--serde aes reads encrypted values strictly; a --serde that is not LangGraph's
    serializer is used as it is, with a warning that says gitckpt cannot make it strict."""
    from langgraph.checkpoint.serde.encrypted import EncryptedSerializer

    monkeypatch.delenv("LANGGRAPH_STRICT_MSGPACK", raising=False)
    marks = tmp_path / "marks"
    marks.mkdir()
    key = "0123456789abcdef"
    writer = EncryptedSerializer.from_pycryptodome_aes(serde=JsonPlusSerializer(allowed_msgpack_modules=()),
                                                       key=key.encode())
    repo = tmp_path / "secret.git"
    with GitSaver(repo, serde=writer) as saver:
        b = StateGraph(State)
        b.add_node("work", lambda s: {"data": [payloads(marks)["positional"]]})
        b.add_edge(START, "work")
        b.add_edge("work", END)
        b.compile(checkpointer=saver).invoke({"messages": [], "data": None}, {"configurable": {"thread_id": "s"}})
    env = {k: v for k, v in os.environ.items() if k not in ("LANGGRAPH_STRICT_MSGPACK", "GITCKPT_SERDE")}
    env["LANGGRAPH_AES_KEY"] = key
    r = gitckpt(env, "--repo", str(repo), "--serde", "aes", "show", "s", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["values"]["data"] == [
        {"__not_constructed__": "subprocess.Popen", "data": [["touch", str(marks / "positional")]]}]
    r = gitckpt(env, "--repo", str(repo), "--serde", "aes", "verify")
    assert r.returncode == 0, r.stderr
    own = tmp_path / "own.py"
    own.write_text(
        "from langgraph.checkpoint.serde.encrypted import EncryptedSerializer\n"
        "from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer\n"
        "class Mine:\n"
        "    def __init__(self):\n"
        "        inner = JsonPlusSerializer(allowed_msgpack_modules=())\n"
        "        self.inner = EncryptedSerializer.from_pycryptodome_aes(serde=inner)\n"
        "    def dumps_typed(self, obj):\n"
        "        return self.inner.dumps_typed(obj)\n"
        "    def loads_typed(self, data):\n"
        "        return self.inner.loads_typed(data)\n"
        "serde = Mine()\n")
    r = gitckpt(env, "--repo", str(repo), "--serde", f"{own}:serde", "show", "s")
    assert r.returncode == 0, r.stderr
    assert "Warning: --serde Mine is not LangGraph's serializer; gitckpt cannot make it strict" in r.stderr
    no_marks(marks)


def test_a_checkpoint_blob_that_is_not_a_map_is_a_clear_error(tmp_path):
    """A crafted checkpoint blob decoding to something else than a map: one Error line."""
    repo = tmp_path / "r.git"
    with GitSaver(repo, allowed_msgpack_modules=()) as saver:
        b = StateGraph(State)
        b.add_node("work", lambda s: {"data": 1})
        b.add_edge(START, "work")
        b.add_edge("work", END)
        # durability="sync": the line's tip is then the last checkpoint's commit, not a writes commit
        # that async durability may store after it
        b.compile(checkpointer=saver).invoke({"messages": [], "data": None}, {"configurable": {"thread_id": "x"}},
                                             durability="sync")
    # rewrite the tip's checkpoint blob as msgpack nil, as a remote could
    git = ["git", "--git-dir", str(repo)]
    tree = subprocess.run([*git, "ls-tree", "threads/x"], capture_output=True, text=True, check=True).stdout
    nil = subprocess.run([*git, "hash-object", "-w", "--stdin"], input="msgpack\n\xc0".encode("latin-1"),
                         capture_output=True, check=True).stdout.decode().strip()
    lines = [ln.replace(ln.split()[2], nil) if ln.endswith("\tcheckpoint") else ln for ln in tree.splitlines()]
    new_tree = subprocess.run([*git, "mktree"], input="\n".join(lines) + "\n", capture_output=True, text=True,
                              check=True).stdout.strip()
    msg = subprocess.run([*git, "log", "-1", "--format=%B", "threads/x"], capture_output=True, text=True).stdout
    commit = subprocess.run([*git, "commit-tree", new_tree, "-p", "threads/x", "-m", msg], capture_output=True,
                            text=True, check=True).stdout.strip()
    subprocess.run([*git, "update-ref", "refs/heads/threads/x", commit], check=True)
    r = gitckpt(dict(os.environ), "--repo", str(repo), "show", "x")
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert "its checkpoint blob holds a NoneType, not a map" in r.stderr
