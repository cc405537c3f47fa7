"""Print rsir's dependencies (plus the named extras) from pyproject.toml, one requirement a line.

The images install these before the code is copied in, so that layer is rebuilt only when
pyproject.toml changes: ``python requirements.py cpu`` / ``gpu`` / ``gpu,ray``. Standard library only
(it runs in the build stage before anything is installed).
"""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path


def requirements(pyproject: Path, extras: list[str]) -> list[str]:
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    optional: dict[str, list[str]] = project.get("optional-dependencies", {})
    unknown = [e for e in extras if e not in optional]
    if unknown:
        raise SystemExit(f"unknown extras {unknown}; pyproject.toml has {sorted(optional)}")
    return list(project["dependencies"]) + [req for extra in extras for req in optional[extra]]


def main(argv: list[str]) -> int:
    extras = [e.strip() for e in (argv[1] if len(argv) > 1 else "").split(",") if e.strip()]
    pyproject = Path(argv[2]) if len(argv) > 2 else Path("pyproject.toml")
    sys.stdout.write("".join(f"{req}\n" for req in requirements(pyproject, extras)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
