"""A store's first operation in a new process (issue 14), as rows of scripts/bench.py.

Group ``store_cold``, three subjects, each in its own forked process like every
other subject of bench.py:

* ``git-os``: a ``GitStore`` of N items (``durability="os"``, its default);
* ``sqlite-FULL``: a ``SqliteStore`` of the same items (its defaults);
* ``memory``: an ``InMemoryStore``, which keeps nothing between processes, so a
  new process must put every item again (embedding them) before it can answer:
  its column is that rebuild plus the operation.

The subject's process builds the store in a process of its own and closes it,
then starts one **new process per operation** (forked from the subject's
process, which has imported everything and opened nothing), which opens the
store and times the open and one operation:

* ``store_first_search_50k``: ``search(("memories",), query=..., limit=10)``,
  the fake 64-dim embedding of bench.py's store rows; target gitckpt <= 0.3 s
  (issue 14 measured 2.4 s);
* ``store_first_get_50k``: ``get`` of one item;
* ``store_first_filter_50k``: ``search(("memories",), filter={"kind": ...}, limit=10)``.

Imports are not timed (the same for every subject). Each operation's process
also times a second, warm operation of the same kind, for context. For
gitckpt the search is also timed once more with the repository's derived
files (``gitckpt-cache/``) removed: a repository that came from a pull or
from plain git, or was written by an older version, is in that state once.

Registered by bench.py (``register``), which keeps its own code apart from this
workload's.
"""

from __future__ import annotations

import atexit
import json
import multiprocessing
import shutil
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import _bench_workloads as W

GROUP = "store_cold"
SUBJECTS = ("git-os", "sqlite-FULL", "memory")
OPS = {"store_first_search_50k": "search", "store_first_get_50k": "get", "store_first_filter_50k": "filter"}
FULL_N = 50_000
QUICK_N = 2_000
BATCH = 500
QUERY = "which tools did the agent use to deploy the service"


def _own_process(fn: Callable[..., dict], *args: Any) -> dict:
    """``fn(*args)`` in a forked process of its own; its result (a JSON dict)."""
    out = Path(args[0]).parent / f"cold-{fn.__name__}-{time.monotonic_ns()}.json"

    def child() -> None:
        try:
            out.write_text(json.dumps(fn(*args)))
        except BaseException:
            out.write_text(json.dumps({"_error": traceback.format_exc()}))
        finally:
            atexit._run_exitfuncs()  # multiprocessing's children skip them (gitckpt's clean-ups live there)

    proc = multiprocessing.get_context("fork").Process(target=child)
    proc.start()
    proc.join()
    if not out.exists():
        raise RuntimeError(f"{fn.__name__}: the process exited with {proc.exitcode} and no result")
    res = json.loads(out.read_text())
    out.unlink()
    if "_error" in res:
        raise RuntimeError(f"{fn.__name__} failed in its process:\n{res['_error']}")
    return res


def _open(kind: str, path: str) -> Any:
    if kind == "git":
        from gitckpt import GitStore

        return GitStore(path, index=W.index_config()), None
    if kind == "sqlite":
        from langgraph.store.sqlite import SqliteStore

        mod, lib = W.sqlite_module()
        import sqlite3

        conn = (mod or sqlite3).connect(path, check_same_thread=False, isolation_level=None)
        store = SqliteStore(conn, index=W.index_config() if mod is not None else None)
        store.setup()
        return store, conn
    from langgraph.store.memory import InMemoryStore

    return InMemoryStore(index=W.index_config()), None


def _fill(store: Any, n: int) -> None:
    from langgraph.store.base import PutOp

    for a in range(0, n, BATCH):
        store.batch([PutOp(W.store_ns(i), f"item-{i}", W.store_item(i)) for i in range(a, min(a + BATCH, n))])


def _build(path: str, kind: str, n: int) -> dict:
    t = W.perf()
    store, conn = _open(kind, path)
    _fill(store, n)
    if kind == "git":
        store.close()
    elif conn is not None:
        conn.close()
    return {"build_s": W.perf() - t}


def _op(store: Any, op: str, k: int, n: int) -> None:
    if op == "search":
        got = store.search(("memories",), query=f"{QUERY} {k}", limit=10)
        assert len(got) == 10 and got[0].score is not None, got[:1]
    elif op == "get":
        i = (k * 7919 + 17) % n
        assert store.get(W.store_ns(i), f"item-{i}") is not None
    else:
        got = store.search(("memories",), filter={"kind": f"k{k % 10}"}, limit=10)
        assert len(got) == 10


def _first(path: str, kind: str, op: str, n: int) -> dict:
    """Open the store and run ``op`` once (timed), then once more (warm)."""
    t = W.perf()
    store, conn = _open(kind, path)
    opened = W.perf() - t
    if kind == "memory":
        _fill(store, n)  # InMemoryStore: a new process has to rebuild it
    filled = W.perf() - t
    t1 = W.perf()
    _op(store, op, 0, n)
    first = W.perf() - t1
    t2 = W.perf()
    _op(store, op, 1, n)
    second = W.perf() - t2
    if kind == "git":
        store.close()
    elif conn is not None:
        conn.close()
    return {"s": filled + first, "open_s": opened, "fill_s": filled - opened, "op_s": first, "second_s": second}


def measure(ctx: Any, key: str) -> dict:
    """One subject of group ``store_cold`` (bench.py's ``MEASURE``), in its own process."""
    kind = key.split("-")[0]
    n = ctx.sizes["cold_store_n"]
    ctx.workdir.mkdir(parents=True, exist_ok=True)
    path = str(ctx.workdir / ("store.git" if kind == "git" else "store.sqlite"))
    semantic = kind != "sqlite" or W.sqlite_module()[0] is not None
    out: dict[str, Any] = {"items": n, "semantic": semantic, "library": W.sqlite_module()[1]}
    if kind != "memory":
        ctx.log(f"{GROUP}[{key}]: building {n} items in a process of its own")
        out.update(_own_process(_build, path, kind, n))
    for name, op in OPS.items():
        if not ctx.wants(name) or (op == "search" and not semantic):
            continue
        ctx.log(f"{GROUP}[{key}]: first {op} in a new process")
        out[op] = _own_process(_first, path, kind, op, n)
    if kind == "git" and ctx.wants("store_first_search_50k"):
        shutil.rmtree(Path(path) / "gitckpt-cache", ignore_errors=True)
        out["search_without_cache"] = _own_process(_first, path, kind, "search", n)
    return out


def rows(bench: Any, rows: dict, res: dict, sizes: dict, selected: set[str], info: dict) -> None:
    """bench.py's ``ROWS`` entry: seconds from opening the store to the first answer."""
    git, sq, mem = res["git-os"], res["sqlite-FULL"], res["memory"]
    n = sizes["cold_store_n"]
    for name, op in OPS.items():
        if name not in selected:
            continue
        values = {"gitckpt": git[op]["s"], "sqlite": sq[op]["s"] if op in sq else None, "memory": mem[op]["s"]}
        extra: dict[str, Any] = {
            "items": n,
            "stat": "median over rounds; seconds from opening the store to the first answer in a new process "
                    "(imports not timed; memory: putting every item again, then the operation)",
            "parts_s": {k: {p: r[op][p] for p in ("open_s", "fill_s", "op_s", "second_s")}
                        for k, r in (("gitckpt", git), ("sqlite", sq), ("memory", mem)) if op in r},
        }
        if op not in sq:
            extra["sqlite_missing"] = "SqliteStore has no vector index here: " + str(sq.get("library"))
        if op == "search" and "search_without_cache" in git:
            extra["gitckpt_without_cache_s"] = git["search_without_cache"]["s"]
        bench.add_row(rows, name, None, GROUP, res, values, "git-os", "sqlite-FULL", like="reads: a new process",
                      **extra)
        rows[name]["durability"]["sqlite"] = W.STORE_SQLITE_DURABILITY["FULL"]
    info["cold_store_build_seconds"] = {"gitckpt": round(git.get("build_s", 0.0), 2),
                                        "sqlite": round(sq.get("build_s", 0.0), 2)}


def register(bench: Any) -> None:
    """Add the group ``store_cold`` to bench.py's tables (its module object)."""
    spec = bench.Spec
    what = ("a GitStore of N items (fake 64-dim embedding, 20 namespaces), closed; then in a new process: open it "
            "and {}; seconds to the first answer (scripts/_bench_store_cold.py)")
    for s in (
        spec("store_first_search_50k", GROUP, "s", "gitckpt <= 0.3 s",
             lambda r: (r.get("gitckpt") or float("inf")) <= 0.3,
             what.format("search(('memories',), query=..., limit=10)")),
        spec("store_first_get_50k", GROUP, "s", "none (measured)", lambda r: True,
             what.format("get one item")),
        spec("store_first_filter_50k", GROUP, "s", "none (measured)", lambda r: True,
             what.format("search(('memories',), filter={'kind': ...}, limit=10)")),
    ):
        bench.SPECS[s.name] = s
    bench.GROUP_SUBJECTS[GROUP] = SUBJECTS
    bench.GROUP_ORDER = (*bench.GROUP_ORDER, GROUP)
    bench.SIZES["full"]["rounds"][GROUP] = 3
    bench.SIZES["full"]["cold_store_n"] = FULL_N
    bench.SIZES["quick"]["rounds"][GROUP] = 1
    bench.SIZES["quick"]["cold_store_n"] = QUICK_N
    bench.MEASURE[GROUP] = measure
    bench.ROWS[GROUP] = lambda *a: rows(bench, *a)
