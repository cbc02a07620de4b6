"""Scale (issue 14): 1,000 threads x 30 checkpoints, then reads in new processes.

Group ``scale``, two subjects, each in its own forked process like every other
subject of bench.py: ``git-os`` (GitSaver, ``durability="os"``, its default) and
``sqlite-NORMAL`` (SqliteSaver, WAL, ``synchronous=NORMAL``: the same promise).

A subject's process builds the repository (the database): ``threads`` threads,
``checkpoints`` rounds, each round one ``put`` and one ``put_writes`` on every
thread in turn (as a server serving that many conversations at once would),
then ``close()``. Checkpoint ids are unique across threads (time-ordered by
round, then thread). Then it starts **new processes** (``python -m`` of this
file, so nothing is warm in them but the page cache) that read what it built:

* ``scale_build``: seconds to build it, ``close()`` included; gitckpt/sqlite,
  goal <= 1.5 (reported here; the update's latency is other work's);
* ``scale_threads``: seconds of ``python -m gitckpt --repo R threads`` as a
  subprocess (interpreter start and imports included, what a user waits for),
  median of ``READS`` runs; an absolute goal: <= 1.5 s (no peer);
* ``scale_list_all``: seconds of ``list(None)`` over every checkpoint in a new
  process (opening the saver included, imports not), median of ``READS`` runs;
  gitckpt/sqlite <= 2. The order and content of both listings are compared
  (a digest of thread, checkpoint id and pending write count per tuple);
* ``scale_packs_after_close``: ``.pack`` files in the repository after
  ``close()``, goal <= 64.

Registered by bench.py (``register``), as the recording rows are. Run on its
own for development: ``python scripts/_bench_scale.py build DIR/r.git 1000 30``
builds a repository and prints its numbers; ``list R`` and ``threads R`` time
one read in this process (``--profile`` under pyinstrument).
"""

from __future__ import annotations

import hashlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

SUBJECTS = ("git-os", "sqlite-NORMAL")
ROW_NAMES = ("scale_build", "scale_threads", "scale_list_all", "scale_packs_after_close")
FULL = (1000, 30)
QUICK = (50, 10)
READS = 3  # new processes per read measurement (median)
WINDOW = 3  # messages in a checkpoint's state


def ckpt_id(seq: int) -> str:
    """A uuid6 checkpoint id time-ordered by ``seq`` (LangGraph's layout, fixed clock)."""
    import _bench_workloads as W

    return W.ckpt_id(seq)


def build(saver: Any, threads: int, checkpoints: int) -> None:
    """``checkpoints`` rounds of one put and one put_writes on every thread."""
    import _bench_workloads as W
    from langgraph.checkpoint.base import empty_checkpoint

    configs: list[dict] = [{"configurable": {"thread_id": f"user-{t:04d}", "checkpoint_ns": ""}}
                           for t in range(threads)]
    versions: list[dict] = [{} for _ in range(threads)]
    for r in range(checkpoints):
        for t in range(threads):
            seq = r * threads + t
            new_versions = {ch: saver.get_next_version(versions[t].get(ch), None) for ch in ("messages", "counter")}
            versions[t].update(new_versions)
            msgs = [W.human(50_000_000 + t * 1000 + j) if j % 2 == 0 else W.ai(50_000_000 + t * 1000 + j)
                    for j in range(max(0, r - WINDOW + 1), r + 1)]
            cp = empty_checkpoint()
            cp["id"] = ckpt_id(seq)
            cp["channel_values"] = {"messages": msgs, "counter": r}
            cp["channel_versions"] = dict(versions[t])
            cp["versions_seen"] = {"node": dict(versions[t])}
            cp["updated_channels"] = ["messages", "counter"]
            md = {"source": "loop", "step": r, "parents": {}}
            configs[t] = saver.put(configs[t], cp, md, new_versions)
            saver.put_writes(configs[t], [("messages", [W.ai(60_000_000 + seq)])], W.msg_id(70_000_000 + seq),
                             "~__pregel_pull, node")


def count_packs(repo: Path) -> int:
    return sum(1 for p in (repo / "objects" / "pack").iterdir() if p.name.endswith(".pack"))


def open_saver(kind: str, path: str) -> tuple[Any, Any]:
    """(saver, its closer) on an existing repository or database."""
    if kind == "gitckpt":
        from gitckpt import GitSaver

        s = GitSaver(path)
        return s, s.close
    import sqlite3

    from langgraph.checkpoint.sqlite import SqliteSaver

    conn = sqlite3.connect(path, check_same_thread=False)
    return SqliteSaver(conn), conn.close


def _import_saver(kind: str) -> None:
    """Import what ``list_all`` of ``kind`` will use, LangChain's message classes included
    (LangGraph's decoder imports them at the first message), so its timing leaves imports out."""
    import langchain_core.messages  # noqa: F401

    if kind == "gitckpt":
        import gitckpt.checkpoint.saver  # noqa: F401
    else:
        import langgraph.checkpoint.sqlite  # noqa: F401


def list_all(kind: str, path: str) -> dict:
    """``list(None)`` over everything, timed from opening the saver; a digest of what came out."""
    t = time.perf_counter()
    saver, close = open_saver(kind, path)
    h = hashlib.sha256()
    n = 0
    for tup in saver.list(None):
        c = tup.config["configurable"]
        # ids differ between the two builds (their clock starts when a process does): the step stands for it
        h.update(f"{c['thread_id']}|{c['checkpoint_ns']}|{tup.metadata.get('step')}|{len(tup.pending_writes or ())}"
                 f"|{len(tup.checkpoint['channel_values'].get('messages', ()))}\n".encode())
        n += 1
    seconds = time.perf_counter() - t
    close()
    return {"seconds": seconds, "n": n, "digest": h.hexdigest()[:16]}


def _new_process(*args: str) -> dict:
    """Run this file in a new interpreter; its last stdout line is JSON."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(x for x in (root, env.get("PYTHONPATH")) if x)
    out = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise RuntimeError(f"{args}: exit {out.returncode}\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def time_threads_command(repo: str) -> dict:
    """``gitckpt threads`` as a user runs it: a new interpreter, wall time."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(x for x in (root, env.get("PYTHONPATH")) if x)
    env["COLUMNS"] = "120"
    t = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "gitckpt", "--repo", repo, "threads"], capture_output=True,
                         text=True, env=env)
    seconds = time.perf_counter() - t
    if out.returncode != 0:
        raise RuntimeError(f"gitckpt threads: exit {out.returncode}\n{out.stderr[-3000:]}")
    return {"seconds": seconds, "rows": sum(1 for line in out.stdout.splitlines() if "user-" in line),
            "digest": hashlib.sha256(out.stdout.encode()).hexdigest()[:16]}


def measure(ctx: Any, key: str) -> dict:
    """One subject of group ``scale`` (bench.py's ``MEASURE``), in its own process.
    A profile (``--profile scale_list_all`` / ``scale_threads``) passes
    ``git-<mode>``: it builds, then runs the read in this process under the profiler."""
    import _bench_workloads as W

    threads, checkpoints = ctx.sizes["scale_threads"], ctx.sizes["scale_checkpoints"]
    ctx.workdir.mkdir(parents=True, exist_ok=True)
    kind = "gitckpt" if key.startswith("git") else "sqlite"
    ctx.log(f"scale[{key}]: {threads} threads x {checkpoints} checkpoints (put + put_writes each)")
    if kind == "gitckpt":
        s = W.git_saver(ctx.workdir, "scale", "os")
    else:
        s = W.sqlite_saver(ctx.workdir, "scale", "NORMAL")
    path = str(s.paths[0])
    t = time.perf_counter()
    build(s.obj, threads, checkpoints)
    s.close()
    out: dict[str, Any] = {"build_s": time.perf_counter() - t, "checked": getattr(s, "checked", None),
                           "load_after_build": list(os.getloadavg())}
    if kind == "gitckpt":
        out["packs"] = count_packs(Path(path))
    if ctx.profiler is not None:  # --profile: the read in this process, under the profiler
        ctx.profiler.start()
        try:
            if ctx.selected & {"scale_threads"}:
                from gitckpt.cli import cli

                cli.main(["--repo", path, "threads"], standalone_mode=False)
            else:
                out["list"] = list_all(kind, path)
        finally:
            ctx.profiler.stop()
        return out
    lists = [_new_process("list", kind, path) for _ in range(READS)]
    if len({x["digest"] for x in lists}) != 1:
        raise RuntimeError(f"scale[{key}]: list(None) differed between processes: {lists}")
    if lists[0]["n"] != threads * checkpoints:
        raise RuntimeError(f"scale[{key}]: list(None) gave {lists[0]['n']} checkpoints, expected "
                           f"{threads * checkpoints}")
    out["list_s"] = statistics.median(x["seconds"] for x in lists)
    out["list_runs"] = [round(x["seconds"], 3) for x in lists]
    out["list_digest"] = lists[0]["digest"]
    if kind == "gitckpt":
        runs = [time_threads_command(path) for _ in range(READS)]
        if any(r["rows"] != threads for r in runs):
            raise RuntimeError(f"gitckpt threads listed {[r['rows'] for r in runs]} threads, expected {threads}")
        out["threads_s"] = statistics.median(r["seconds"] for r in runs)
        out["threads_runs"] = [round(r["seconds"], 3) for r in runs]
    return out


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else a / b


def rows(bench: Any, rows: dict, res: dict, sizes: dict, selected: set[str], info: dict) -> None:
    """bench.py's ``ROWS`` entry."""
    g, sq = res["git-os"], res["sqlite-NORMAL"]
    if g["list_digest"] != sq["list_digest"]:
        raise RuntimeError("list(None) gave different checkpoints (or order) on gitckpt and SQLite")
    size = {"threads": sizes["scale_threads"], "checkpoints_per_thread": sizes["scale_checkpoints"]}
    dur = {"gitckpt": "os (GitSaver's default)", "sqlite": "WAL, synchronous=NORMAL", "memory": None,
           "compares": "both survive a process crash", "sqlite_pragmas": sq.get("checked")}

    def add(name: str, git: float, sqlite: float | None, **extra: Any) -> None:
        spec = bench.SPECS[name]
        row = {"gitckpt": git, "sqlite": sqlite, "memory": None, "unit": spec.unit,
               "ratio_vs_sqlite": _ratio(git, sqlite), "ratio_vs_memory": None, "target": spec.target,
               "durability": dur, **size, **extra}
        row["met"] = bool(spec.check(row))
        row["what"] = spec.what
        rows[name] = row

    if "scale_build" in selected:
        add("scale_build", g["build_s"], sq["build_s"])
    if "scale_threads" in selected:
        add("scale_threads", g["threads_s"], None, runs=g["threads_runs"])
    if "scale_list_all" in selected:
        add("scale_list_all", g["list_s"], sq["list_s"], runs={"gitckpt": g["list_runs"], "sqlite": sq["list_runs"]})
    if "scale_packs_after_close" in selected:
        add("scale_packs_after_close", g["packs"], None)
    info["scale_load_after_build"] = {k: [round(x, 2) for x in v["load_after_build"]] for k, v in res.items()}


def register(bench: Any) -> None:
    """Add the group ``scale`` to bench.py's tables (its module object)."""
    spec = bench.Spec

    def ratio_at_most(limit: float) -> Any:
        return lambda r: (r.get("ratio_vs_sqlite") or float("inf")) <= limit

    def value_at_most(limit: float) -> Any:
        return lambda r: (r.get("gitckpt") if r.get("gitckpt") is not None else float("inf")) <= limit

    for s in (
        spec("scale_build", "scale", "s", "gitckpt/sqlite <= 1.5", ratio_at_most(1.5),
             "one process: N threads x M rounds of put + put_writes, round-robin over the threads, then close() "
             "(gitckpt os vs SQLite NORMAL; scripts/_bench_scale.py)"),
        spec("scale_threads", "scale", "s", "gitckpt <= 1.5 s", value_at_most(1.5),
             "`gitckpt threads` on that repository, a new process (interpreter and imports included)"),
        spec("scale_list_all", "scale", "s", "gitckpt/sqlite <= 2", ratio_at_most(2),
             "list(None) over every checkpoint, in a new process (opening the saver included)"),
        spec("scale_packs_after_close", "scale", "packs", "gitckpt <= 64", value_at_most(64),
             ".pack files in the repository after the builder's close()"),
    ):
        bench.SPECS[s.name] = s
    bench.GROUP_SUBJECTS["scale"] = SUBJECTS
    bench.GROUP_ORDER = (*bench.GROUP_ORDER, "scale")
    bench.SIZES["full"]["rounds"]["scale"] = 1
    bench.SIZES["full"]["scale_threads"], bench.SIZES["full"]["scale_checkpoints"] = FULL
    bench.SIZES["quick"]["rounds"]["scale"] = 1
    bench.SIZES["quick"]["scale_threads"], bench.SIZES["quick"]["scale_checkpoints"] = QUICK
    bench.MEASURE["scale"] = measure
    bench.ROWS["scale"] = lambda *a: rows(bench, *a)


def _main(argv: list[str]) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    cmd = argv[0]
    if cmd == "list":  # a new process of measure(): list(None), one JSON line
        _import_saver(argv[1])  # imports are not timed (the docstring's promise; they were, until format.md 25)
        print(json.dumps(list_all(argv[1], argv[2])))
        return
    if cmd == "build":  # development: python scripts/_bench_scale.py build PATH [THREADS CHECKPOINTS] [sqlite]
        kind = argv[4] if len(argv) > 4 else "gitckpt"
        n, m = (int(argv[2]), int(argv[3])) if len(argv) > 3 else FULL
        t = time.perf_counter()
        if kind == "gitckpt":
            from gitckpt import GitSaver

            saver: Any = GitSaver(argv[1])
            close = saver.close
        else:
            import sqlite3

            from langgraph.checkpoint.sqlite import SqliteSaver

            conn = sqlite3.connect(argv[1], check_same_thread=False)
            saver = SqliteSaver(conn)
            saver.setup()
            conn.execute("PRAGMA synchronous=NORMAL")
            close = conn.close
        build(saver, n, m)
        close()
        res = {"build_s": time.perf_counter() - t, "load": os.getloadavg()}
        if kind == "gitckpt":
            res["packs"] = count_packs(Path(argv[1]))
        print(json.dumps(res))
        return
    raise SystemExit(f"unknown command {cmd!r}")


if __name__ == "__main__":
    _main(sys.argv[1:])
