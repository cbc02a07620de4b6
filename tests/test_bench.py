"""Smoke test of scripts/bench.py: it runs, and its JSON has the shape issue 5 asks for.

No timing is asserted: the numbers depend on the machine.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "scripts" / "bench.py"

#: cheap scenarios: stores (a read, and puts with durability variants), the direct-call
#: latency rows and one graph shape (every API x durability combination)
ONLY = ("store_get", "store_put", "put_p50", "put_writes_p99", "shape_chat_small")


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def test_bench_quick_json_schema(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.Popen(
        [sys.executable, str(BENCH), "--quick", "--only", ",".join(ONLY), "--json", str(out),
         "--workdir", str(tmp_path / "work")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
    )
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr[-3000:]
    data = json.loads(out.read_text())
    assert set(data) >= {"scenarios", "machine", "durability"}

    scenarios = data["scenarios"]
    # store_put has a durability variant: NAME (fsync vs FULL) and NAME@os (os vs NORMAL)
    shapes = {f"shape_chat_small:{api}:{d}{m}" for api in ("invoke", "ainvoke") for d in ("sync", "async", "exit")
              for m in ("", "@os")}
    assert set(scenarios) == {"store_get", "store_put", "store_put@os", "put_p50", "put_p50@os",
                              "put_writes_p99", "put_writes_p99@os"} | shapes
    for name, row in scenarios.items():
        for key in ("gitckpt", "sqlite", "memory", "unit", "ratio_vs_sqlite", "ratio_vs_memory", "target", "met"):
            assert key in row, (name, key)
        for key in ("gitckpt", "sqlite", "memory", "ratio_vs_sqlite", "ratio_vs_memory"):
            assert _number(row[key]), (name, key, row[key])
        assert isinstance(row["unit"], str) and row["unit"]
        assert isinstance(row["target"], str) and row["target"]
        assert isinstance(row["met"], bool)
        assert math.isclose(row["ratio_vs_sqlite"], row["gitckpt"] / row["sqlite"], rel_tol=1e-9)
        assert math.isclose(row["ratio_vs_memory"], row["gitckpt"] / row["memory"], rel_tol=1e-9)
        # each row says which durability mode each subject ran with
        d = row["durability"]
        assert d["gitckpt"] and d["sqlite"] and d["memory"] and d["compares"]
    assert scenarios["store_put"]["durability"]["gitckpt"].startswith("fsync")
    assert scenarios["store_put@os"]["durability"]["gitckpt"].startswith("os")
    assert "FULL" in scenarios["store_put"]["durability"]["sqlite"]
    assert "NORMAL" in scenarios["store_put@os"]["durability"]["sqlite"]
    for key in ("put_p50", "shape_chat_small:ainvoke:sync"):
        assert scenarios[key]["durability"]["gitckpt"].startswith("fsync")
        assert scenarios[key + "@os"]["durability"]["gitckpt"].startswith("os")
        assert "synchronous=2" in scenarios[key]["durability"]["sqlite_pragmas"]  # FULL, read back
        assert "synchronous=1" in scenarios[key + "@os"]["durability"]["sqlite_pragmas"]  # NORMAL
    assert "durability='exit'" in scenarios["shape_chat_small:invoke:exit"]["durability"]["compares"]

    # every subject (saver or store, durability mode) ran in a process of its own
    pids = data["info"]["pids"]
    assert set(pids) == {"shapes", "latency", "store"}
    for group, by_subject in pids.items():
        assert set(by_subject) == {"git-fsync", "git-os", "sqlite-FULL", "sqlite-NORMAL", "memory"}, group
    every = [p for by_subject in pids.values() for ps in by_subject.values() for p in ps]
    assert len(set(every)) == len(every) and proc.pid not in every

    machine = data["machine"]
    for key in ("cpu", "cores", "python", "pygit2", "libgit2", "langgraph", "filesystem"):
        assert machine.get(key), key
    assert set(data["durability"]["gitckpt"]) == {"os", "fsync"}
    assert data["run"]["mode"] == "quick"
    # the table is printed
    assert "store_put" in stdout


def test_bench_rejects_unknown_scenario(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--only", "no_such_thing", "--workdir", str(tmp_path)],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )
    assert proc.returncode != 0
    assert "no_such_thing" in proc.stderr
