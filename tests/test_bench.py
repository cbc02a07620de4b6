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

#: two cheap scenarios: one pair of savers with durability variants, one of stores
ONLY = ("store_get", "store_put")


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def test_bench_quick_json_schema(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--only", ",".join(ONLY), "--json", str(out),
         "--workdir", str(tmp_path / "work")],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads(out.read_text())
    assert set(data) >= {"scenarios", "machine", "durability"}

    scenarios = data["scenarios"]
    # store_put has a durability variant: NAME (fsync vs FULL) and NAME@os (os vs NORMAL)
    assert set(scenarios) == {"store_get", "store_put", "store_put@os"}
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

    machine = data["machine"]
    for key in ("cpu", "cores", "python", "pygit2", "libgit2", "langgraph", "filesystem"):
        assert machine.get(key), key
    assert set(data["durability"]["gitckpt"]) == {"os", "fsync"}
    assert data["run"]["mode"] == "quick"
    # the table is printed
    assert "store_put" in proc.stdout


def test_bench_rejects_unknown_scenario(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--only", "no_such_thing", "--workdir", str(tmp_path)],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )
    assert proc.returncode != 0
    assert "no_such_thing" in proc.stderr
