"""Check that the running environment holds every direct dependency at its floor.

.ci/run installs the package with ``uv pip install --resolution lowest-direct``
into a second virtualenv and runs the floor tests there (docs/format.md 20).
This script, run with that virtualenv's python, proves the install really is
the floors: for each requirement ``name>=X`` of ``[project.dependencies]`` and
of the extras named on the command line, the installed version must equal X.
A floor that cannot be installed (another dependency needs more) would show as
a newer version here and fail, so a declared floor is always one that was tested.

    python scripts/check_floors.py test
"""

from __future__ import annotations

import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

try:
    import tomllib
except ImportError:  # Python 3.10: pytest depends on tomli there
    import tomli as tomllib
from packaging.requirements import Requirement
from packaging.version import Version


def floors(pyproject: Path, extras: list[str]) -> list[tuple[str, Version]]:
    project = tomllib.loads(pyproject.read_text())["project"]
    lines = list(project["dependencies"])
    for extra in extras:
        lines += project["optional-dependencies"][extra]
    result = []
    for line in lines:
        req = Requirement(line)
        if req.marker is not None and not req.marker.evaluate():
            continue
        lows = [Version(s.version) for s in req.specifier if s.operator == ">="]
        if len(lows) != 1:
            raise SystemExit(f"{line!r}: expected one '>=' floor")
        result.append((req.name, lows[0]))
    return result


def main(argv: list[str]) -> int:
    pyproject = Path(__file__).resolve().parent.parent / "pyproject.toml"
    bad = 0
    for name, floor in floors(pyproject, argv):
        try:
            installed = Version(version(name))
        except PackageNotFoundError:
            installed = None
        ok = installed == floor
        bad += not ok
        print(f"{'ok ' if ok else 'BAD'} {name:34} floor {str(floor):10} installed {installed}")
    if bad:
        print(f"{bad} direct dependencies are not at their declared floor", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
