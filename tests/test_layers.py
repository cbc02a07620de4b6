"""The architecture, checked: imports flow one way between the package's wings
(docs/architecture.md), and the modules that must start fast import no LangGraph."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

PKG = Path(__file__).resolve().parent.parent / "gitckpt"

# module (or folder) -> what it may import from inside gitckpt; checked by prefix
ALLOWED = {
    "gitckpt.errors": set(),
    "gitckpt.git": {"gitckpt.errors", "gitckpt.git"},
    "gitckpt.checkpoint": {"gitckpt.errors", "gitckpt.git", "gitckpt.checkpoint"},
    "gitckpt.store": {"gitckpt.errors", "gitckpt.git", "gitckpt.store"},
    "gitckpt.trust": {"gitckpt.errors", "gitckpt.git", "gitckpt.checkpoint", "gitckpt.store"},
    "gitckpt.sync": {"gitckpt.errors", "gitckpt.git", "gitckpt.checkpoint", "gitckpt.store", "gitckpt.trust"},
    "gitckpt.textconv": {"gitckpt.checkpoint.format", "gitckpt.store.format"},
}
# modules that must not import LangGraph or LangChain, even indirectly (the CLI's
# log/threads and the textconv driver start without them)
LIGHT = ["gitckpt.git.repo", "gitckpt.git.remote", "gitckpt.checkpoint.format", "gitckpt.checkpoint.index",
         "gitckpt.store.format", "gitckpt.store.merge", "gitckpt.sync",
         "gitckpt.textconv", "gitckpt.trust", "gitckpt.langgraph_server"]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _internal_imports(path: Path) -> set[str]:
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            elif node.module and node.module.startswith("gitckpt"):
                target = node.module
            else:
                continue
            # "from .checkpoint import format" imports the module gitckpt.checkpoint.format
            found |= {f"{target}.{a.name}" if _is_module(f"{target}.{a.name}") else target for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("gitckpt")}
    return found


def _is_module(name: str) -> bool:
    path = PKG.parent.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _rule(module: str) -> set[str] | None:
    best = max((k for k in ALLOWED if module == k or module.startswith(k + ".")), key=len, default=None)
    return None if best is None else ALLOWED[best]


def test_imports_flow_one_way():
    wrong = []
    for path in sorted(PKG.rglob("*.py")):
        module = _module_name(path)
        allowed = _rule(module)
        if allowed is None:  # ops, cli, demo, the package root: the top layer
            continue
        for target in _internal_imports(path):
            if target == module or target.startswith(module + "."):
                continue
            if not any(target == a or target.startswith(a + ".") for a in allowed):
                wrong.append(f"{module} imports {target}")
    assert not wrong, "\n".join(wrong)


def test_the_layer_rules_see_every_import():  # the rule checker itself: a known import is found
    assert "gitckpt.git.repo" in _internal_imports(PKG / "checkpoint" / "saver.py")
    assert "gitckpt.checkpoint.format" in _internal_imports(PKG / "textconv.py")
    assert _rule("gitckpt.git.repo") == ALLOWED["gitckpt.git"]


def test_light_modules_import_no_langgraph():
    code = (
        "import json, sys\n"
        f"for m in {LIGHT!r}: __import__(m)\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('langgraph', 'langchain_core', "
        "'langchain'))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert json.loads(out) == []


def test_only_the_git_engine_imports_pygit2():
    wrong = [str(p.relative_to(PKG)) for p in PKG.rglob("*.py")
             if "git" not in p.relative_to(PKG).parts[:1]
             and any(a in {"pygit2"} or a.startswith("pygit2.") for a in _all_imports(p))]
    assert not wrong


def _all_imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            found.add(node.module)
    return found
