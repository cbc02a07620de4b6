"""Shared fixtures: a real bare repository on disk per test."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# subprocesses started by tests import the same checkout
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)


@pytest.fixture
def repo_path(tmp_path: Path) -> Path:
    return tmp_path / "agent.git"


@pytest.fixture
def saver(repo_path: Path):
    from gitckpt import GitSaver

    s = GitSaver(repo_path)
    yield s
    s.close()
