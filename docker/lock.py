"""Regenerate the images' lock files from pyproject.toml: ``python docker/lock.py`` (needs ``uv``, from
the dev extra, and PyPI).

Each lock pins, with hashes, every package the images install *except torch and torchvision*, which
the Dockerfiles install first, exact (``TORCH_VERSION``), from PyTorch's CPU or CUDA wheel index. So
the CPU and the GPU image install the same lock; what torch itself pulls in on the CUDA index (its
``nvidia-*`` libraries and ``triton``, pinned exactly by the torch wheel) is not in it: resolving
that index needs download.pytorch.org, which the development machine cannot reach.

The lock's first lines record the SHA-256 of the dependency tables of pyproject.toml it was made from;
tests/deploy/test_lock.py fails when they differ (run this again) or when a pin no longer satisfies
a requirement.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PLATFORM = ("--python-version", "3.11", "--python-platform", "x86_64-manylinux_2_28")
# lock file -> the extras it holds (faiss-cpu in every image: docs/deploy.md, "Which GPUs")
LOCKS = {"requirements.lock": ("cpu",), "requirements-ray.lock": ("cpu", "ray")}
TORCH = ("torch", "torchvision")


def dependency_hash(pyproject: Path) -> str:
    """SHA-256 of what the locks are resolved from: the dependencies and the extras they hold (not
    ``dev``, which no image installs)."""
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    optional = project.get("optional-dependencies", {})
    used = sorted({e for extras in LOCKS.values() for e in extras})
    doc = {"dependencies": project["dependencies"], "extras": {e: optional.get(e) for e in used}}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def _compile(uv: str, extras: tuple[str, ...], exclude: list[str], out: Path | None) -> str:
    args = [uv, "pip", "compile", str(REPO / "pyproject.toml"), *PLATFORM, "--quiet", "--no-header"]
    args += [a for e in extras for a in ("--extra", e)]
    args += [a for name in exclude for a in ("--no-emit-package", name)]
    if out is not None:
        args += ["--generate-hashes", "-o", str(out)]
    return subprocess.run(args, check=True, capture_output=True, text=True).stdout


def torch_only(uv: str) -> list[str]:
    """Packages PyPI's torch pulls in that its CPU wheel does not need (CUDA libraries, triton)."""
    names = [line.split("==")[0] for line in _compile(uv, (), [], None).splitlines() if "==" in line]
    return sorted(n for n in names if n.startswith(("nvidia-", "cuda-")) or n == "triton")


def main() -> int:
    uv = shutil.which("uv") or str(Path(sys.executable).parent / "uv")
    exclude = [*TORCH, *torch_only(uv)]
    digest = dependency_hash(REPO / "pyproject.toml")
    for name, extras in LOCKS.items():
        path = REPO / "docker" / name
        _compile(uv, extras, exclude, path)
        header = (
            f"# rsir lock: pyproject.toml dependencies + extras {','.join(extras)}; "
            "regenerate with `python docker/lock.py`\n"
            f"# pyproject-dependencies-sha256: {digest}\n"
            f"# not in this lock (the Dockerfiles install torch exact from PyTorch's index): "
            f"{' '.join(exclude)}\n"
        )
        path.write_text(header + path.read_text(encoding="utf-8"), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
