"""Workloads for scripts/bench.py: the savers and stores under test, the chat
graph, deterministic messages and the fake embedding.

Everything here is deterministic: the same text, the same message ids and the
same vectors for every saver and store, so they do identical work.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from typing_extensions import TypedDict

from langchain_core.messages import AIMessage, HumanMessage
from langgraph.checkpoint.base import empty_checkpoint
from langgraph.checkpoint.base.id import uuid6
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages

# -- text ----------------------------------------------------------------------

_WORDS = (
    "the agent checks a tool result and answers with a short plan for the user who asked about "
    "deploying their service on a small cluster while keeping costs low and latency under control "
    "memory store thread checkpoint graph node edge state message reply summary context window "
    "retry budget schedule invoice report draft email meeting calendar weather travel booking"
).split()

#: Characters of content per chat message (a short reply). A message serializes
#: to ~300 bytes; with 3 messages and 4 checkpoints a turn SQLite stores the
#: whole list again at every checkpoint: ~180 MB after 300 turns.
MESSAGE_CHARS = 120


def text(seed: int, chars: int = MESSAGE_CHARS) -> str:
    rnd = random.Random(seed)
    out: list[str] = []
    n = 0
    while n < chars:
        w = _WORDS[rnd.randrange(len(_WORDS))]
        out.append(w)
        n += len(w) + 1
    return " ".join(out)[:chars]


def msg_id(seed: int) -> str:
    return str(uuid.UUID(int=random.Random(seed * 7919 + 13).getrandbits(128), version=4))


def human(seed: int) -> HumanMessage:
    return HumanMessage(content=text(seed), id=msg_id(seed))


def ai(seed: int) -> AIMessage:
    return AIMessage(content=text(seed), id=msg_id(seed))


# -- the chat graph ------------------------------------------------------------


class ChatState(TypedDict):
    messages: Annotated[list, add_messages]


def chat_graph(checkpointer: Any):
    """Two nodes a turn: ``assistant`` answers, ``reviewer`` adds a note.

    ``invoke`` of one turn makes 4 checkpoints (input, after __start__, after
    each node) and grows the message list by 3 (the user's, two replies).
    """

    def assistant(state: ChatState) -> dict:
        n = len(state["messages"])
        return {"messages": [ai(1_000_003 * 2 + n)]}

    def reviewer(state: ChatState) -> dict:
        n = len(state["messages"])
        return {"messages": [ai(1_000_003 * 3 + n)]}

    b = StateGraph(ChatState)
    b.add_node("assistant", assistant)
    b.add_node("reviewer", reviewer)
    b.add_edge(START, "assistant")
    b.add_edge("assistant", "reviewer")
    b.add_edge("reviewer", END)
    return b.compile(checkpointer=checkpointer)


def turn_input(turn: int) -> dict:
    return {"messages": [human(turn)]}


# -- the savers and stores under test -------------------------------------------


@dataclass
class Subject:
    """One saver (or store) under test, with what it promises after a crash."""

    kind: str  # "gitckpt" | "sqlite" | "memory"
    label: str  # e.g. "gitckpt[fsync]"
    durability: str  # shown in the table and the JSON
    obj: Any = None
    paths: list[Path] = field(default_factory=list)  # files/dirs that hold its data
    closers: list[Callable[[], Any]] = field(default_factory=list)
    aclosers: list[Callable[[], Any]] = field(default_factory=list)

    def close(self) -> None:
        for c in self.closers:
            c()
        self.closers.clear()

    async def aclose(self) -> None:
        for c in self.aclosers:
            await c()
        self.aclosers.clear()
        self.close()


GIT_DURABILITY = {
    "os": "os (write+rename; survives a process crash)",
    "fsync": "fsync (on disk before each put returns, through a journal flushed with fdatasync; survives power loss)",
}
SQLITE_DURABILITY = {
    "FULL": "WAL, synchronous=FULL (default; survives power loss)",
    "NORMAL": "WAL, synchronous=NORMAL (survives a process crash)",
    "OFF": "WAL, synchronous=OFF",
}
STORE_SQLITE_DURABILITY = {
    "FULL": "journal=DELETE, synchronous=FULL (default; survives power loss)",
    "NORMAL": "journal=DELETE, synchronous=NORMAL (survives a process crash)",
}
MEMORY_DURABILITY = "none (process memory)"

#: The like-with-like pairs: gitckpt's mode -> the SQLite setting with the same promise.
PAIRS = {"fsync": "FULL", "os": "NORMAL"}


def _pragma(conn: sqlite3.Connection, name: str) -> str:
    return str(conn.execute(f"PRAGMA {name}").fetchone()[0])


def git_saver(workdir: Path, name: str, durability: str = "os", **kw: Any) -> Subject:
    from gitckpt import GitSaver

    path = workdir / f"{name}.git"
    saver = GitSaver(str(path), durability=durability, **kw)
    s = Subject("gitckpt", f"gitckpt[{durability}]", GIT_DURABILITY[durability], saver, [path])
    s.closers.append(saver.close)
    return s


def sqlite_saver(workdir: Path, name: str, synchronous: str = "FULL") -> Subject:
    path = workdir / f"{name}.sqlite"
    conn = sqlite3.connect(str(path), check_same_thread=False)
    saver = SqliteSaver(conn)
    saver.setup()  # journal_mode=WAL; synchronous stays at SQLite's default (FULL)
    if synchronous != "FULL":
        conn.execute(f"PRAGMA synchronous={synchronous}")
    mode = f"journal_mode={_pragma(conn, 'journal_mode')}, synchronous={_pragma(conn, 'synchronous')}"
    s = Subject("sqlite", f"sqlite[{synchronous}]", SQLITE_DURABILITY[synchronous], saver, sqlite_files(path))
    s.checked = mode  # type: ignore[attr-defined]
    s.closers.append(conn.close)
    return s


async def async_sqlite_saver(workdir: Path, name: str, synchronous: str = "FULL") -> Subject:
    import aiosqlite
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

    path = workdir / f"{name}.sqlite"
    conn = await aiosqlite.connect(str(path))
    saver = AsyncSqliteSaver(conn)
    await saver.setup()
    if synchronous != "FULL":
        await conn.execute(f"PRAGMA synchronous={synchronous}")
    got = []
    for name in ("journal_mode", "synchronous"):
        async with conn.execute(f"PRAGMA {name}") as cur:
            got.append(f"{name}={(await cur.fetchone())[0]}")
    s = Subject("sqlite", f"asqlite[{synchronous}]", SQLITE_DURABILITY[synchronous], saver, sqlite_files(path))
    s.checked = ", ".join(got)  # type: ignore[attr-defined]
    s.aclosers.append(conn.close)
    return s


def memory_saver() -> Subject:
    return Subject("memory", "memory", MEMORY_DURABILITY, InMemorySaver())


def sqlite_files(path: Path) -> list[Path]:
    return [path, Path(f"{path}-wal"), Path(f"{path}-shm"), Path(f"{path}-journal")]


def disk_bytes(paths: list[Path]) -> int:
    total = 0
    for p in paths:
        if p.is_dir():
            for root, _, files in os.walk(p):
                for f in files:
                    try:
                        total += os.lstat(os.path.join(root, f)).st_size
                    except FileNotFoundError:
                        pass
        elif p.exists():
            total += p.stat().st_size
    return total


def memory_saver_bytes(saver: InMemorySaver) -> int:
    """Bytes of serialized data an InMemorySaver holds (its 'disk')."""
    total = 0

    def walk(x: Any) -> None:
        nonlocal total
        if isinstance(x, (bytes, bytearray)):
            total += len(x)
        elif isinstance(x, str):
            total += len(x)
        elif isinstance(x, dict):
            for v in x.values():
                walk(v)
        elif isinstance(x, (list, tuple)):
            for v in x:
                walk(v)

    walk(saver.storage)
    walk(saver.writes)
    walk(saver.blobs)
    return total


# -- direct checkpoints ----------------------------------------------------------


#: The timestamp (100 ns since 1582, as in uuid6) of the first direct checkpoint id.
ID_BASE = time.time_ns() // 100 + 0x01B21DD213814000


def ckpt_id(step: int) -> str:
    """A uuid6 checkpoint id, time-ordered by ``step`` and the same in every
    saver (LangGraph's ``uuid6()`` with a fixed clock)."""
    ts = ID_BASE + step * 10
    n = ((ts >> 12) & 0xFFFFFFFFFFFF) << 80 | (ts & 0x0FFF) << 64 | (step & 0x3FFF) << 48 | 0x5EED5EED5EED
    return str(uuid6.__globals__["UUID"](int=n, version=6))


class ThreadWriter:
    """Writes checkpoints to one saver with direct ``put`` calls, the way
    LangGraph's loop does: only the channels in ``new_versions`` changed."""

    def __init__(self, saver: Any, thread_id: str) -> None:
        self.saver = saver
        self.config: dict = {"configurable": {"thread_id": thread_id, "checkpoint_ns": ""}}
        self.versions: dict[str, Any] = {}
        self.step = -1
        self.ids: list[str] = []

    def put(self, values: dict[str, Any], changed: list[str]) -> dict:
        self.step += 1
        new_versions = {}
        for ch in changed:
            new_versions[ch] = self.saver.get_next_version(self.versions.get(ch), None)
        self.versions.update(new_versions)
        cp = empty_checkpoint()
        cp["id"] = ckpt_id(self.step)
        cp["channel_values"] = values
        cp["channel_versions"] = dict(self.versions)
        cp["versions_seen"] = {"node": {ch: v for ch, v in self.versions.items()}}
        cp["updated_channels"] = list(changed)
        md = {"source": "loop", "step": self.step, "parents": {}}
        self.config = self.saver.put(self.config, cp, md, new_versions)
        self.ids.append(cp["id"])
        return self.config

    def put_writes(self, writes: list[tuple[str, Any]], task: int) -> None:
        self.saver.put_writes(self.config, writes, msg_id(10_000_000 + task), "~__pregel_pull, node")


# -- fake embedding --------------------------------------------------------------

DIMS = 64


def fake_vector(t: str) -> list[float]:
    seed = int.from_bytes(hashlib.sha256(t.encode()).digest()[:8], "little")
    v = np.random.default_rng(seed).standard_normal(DIMS)
    v /= np.linalg.norm(v)
    return v.tolist()


def fake_embed(texts: list[str]) -> list[list[float]]:
    return [fake_vector(t) for t in texts]


def index_config() -> dict:
    return {"dims": DIMS, "embed": fake_embed, "fields": ["text"]}


def git_store(workdir: Path, name: str, durability: str = "os") -> Subject:
    from gitckpt import GitStore

    path = workdir / f"{name}.git"
    store = GitStore(str(path), index=index_config(), durability=durability)
    s = Subject("gitckpt", f"gitstore[{durability}]", GIT_DURABILITY[durability], store, [path])
    s.closers.append(store.close)
    return s


def sqlite_module() -> tuple[Any, str]:
    """The sqlite3 module SqliteStore's vector index can use: it loads the
    sqlite-vec extension, which many Pythons' sqlite3 cannot (built without
    extension loading); pysqlite3-binary ships one that can."""
    if hasattr(sqlite3.Connection, "enable_load_extension"):
        return sqlite3, f"sqlite3 (SQLite {sqlite3.sqlite_version})"
    try:
        import pysqlite3.dbapi2 as psq  # type: ignore[import-not-found]

        return psq, f"pysqlite3-binary (SQLite {psq.sqlite_version})"
    except ImportError:
        return None, "none: this Python's sqlite3 cannot load extensions (pip install pysqlite3-binary)"


def sqlite_store(workdir: Path, name: str, synchronous: str = "FULL") -> Subject:
    from langgraph.store.sqlite import SqliteStore

    mod, lib = sqlite_module()
    path = workdir / f"{name}.sqlite"
    conn = (mod or sqlite3).connect(str(path), check_same_thread=False, isolation_level=None)
    store = SqliteStore(conn, index=index_config() if mod is not None else None)
    store.setup()
    if synchronous != "FULL":
        conn.execute(f"PRAGMA synchronous={synchronous}")
    s = Subject("sqlite", f"sqlitestore[{synchronous}]", STORE_SQLITE_DURABILITY[synchronous], store,
                sqlite_files(path))
    s.checked = f"journal_mode={_pragma(conn, 'journal_mode')}, synchronous={_pragma(conn, 'synchronous')}"  # type: ignore[attr-defined]
    s.semantic = mod is not None  # type: ignore[attr-defined]
    s.library = lib  # type: ignore[attr-defined]
    s.closers.append(conn.close)
    return s


def memory_store() -> Subject:
    from langgraph.store.memory import InMemoryStore

    return Subject("memory", "memorystore", MEMORY_DURABILITY, InMemoryStore(index=index_config()))


def store_item(i: int) -> dict:
    return {"text": text(50_000_000 + i, 120), "kind": f"k{i % 10}", "n": i, "tags": ["a", f"t{i % 7}"]}


def store_ns(i: int) -> tuple[str, ...]:
    return ("memories", f"user{i % 20}")


# -- timing ----------------------------------------------------------------------

perf = time.perf_counter


def rotate(seq: list, k: int) -> list:
    k %= len(seq)
    return seq[k:] + seq[:k]


def rmtree(p: Path) -> None:
    shutil.rmtree(p, ignore_errors=True)


_ = threading  # re-exported for helpers
