"""The images' lock files match pyproject.toml: made from its current dependency tables (the hash in
their header), every requirement (dependencies plus the lock's extras) pinned at a version its
specifier allows, markers for Linux/CPython 3.11 applied, torch left to the Dockerfiles."""

from __future__ import annotations

import importlib.util
import re
import tomllib
from pathlib import Path
from types import ModuleType
from typing import cast

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.conftest import REPO
from tests.deploy.support import DOCKER


def _load_lock_script() -> ModuleType:
    """docker/lock.py, the script that writes the locks (a file, not a package module)."""
    spec = importlib.util.spec_from_file_location("rsir_docker_lock", DOCKER / "lock.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


lock = _load_lock_script()

LINUX_311: dict[str, str] = {
    **cast(dict[str, str], default_environment()),
    "sys_platform": "linux",
    "platform_system": "Linux",
    "platform_machine": "x86_64",
    "python_version": "3.11",
    "python_full_version": "3.11.7",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
    "os_name": "posix",
}


def pins(path: Path) -> dict[str, str]:
    """``{canonical name: version}`` of a lock's ``name==version`` lines (hashes follow each)."""
    found = re.findall(r"^([A-Za-z0-9._-]+)==([^\s\\;]+)", path.read_text(encoding="utf-8"), re.MULTILINE)
    return {canonicalize_name(name): version for name, version in found}


def requirements(extras: tuple[str, ...]) -> list[Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    optional = project["optional-dependencies"]
    return [Requirement(r) for r in [*project["dependencies"], *(x for e in extras for x in optional[e])]]


@pytest.mark.parametrize(("name", "extras"), sorted(lock.LOCKS.items()))
def test_lock_was_made_from_the_current_pyproject(name: str, extras: tuple[str, ...]) -> None:
    text = (DOCKER / name).read_text()
    recorded = re.search(r"^# pyproject-dependencies-sha256: ([0-9a-f]{64})$", text, re.MULTILINE)
    assert recorded, f"{name} has no dependency hash: regenerate it with `python docker/lock.py`"
    assert recorded.group(1) == lock.dependency_hash(REPO / "pyproject.toml"), (
        f"pyproject.toml's dependencies changed since {name} was written: run `python docker/lock.py`"
    )
    assert f"extras {','.join(extras)};" in text


@pytest.mark.parametrize(("name", "extras"), sorted(lock.LOCKS.items()))
def test_every_requirement_is_pinned_within_its_range(name: str, extras: tuple[str, ...]) -> None:
    pinned = pins(DOCKER / name)
    for req in requirements(extras):
        if req.marker is not None and not req.marker.evaluate(LINUX_311):
            continue
        key = canonicalize_name(req.name)
        if key in lock.TORCH:
            assert key not in pinned, f"{name} must leave {key} to the Dockerfiles' exact pin"
            continue
        assert key in pinned, f"{name} does not pin {req.name} (pyproject.toml: {req})"
        assert req.specifier.contains(pinned[key], prereleases=True), (
            f"{name} pins {key}=={pinned[key]}, outside pyproject.toml's {req}"
        )
    text = (DOCKER / name).read_text()
    assert text.count("--hash=sha256:") >= len(pinned), "every pin carries its hashes"
    assert not any(k.startswith("nvidia-") or k == "triton" for k in pinned), "CUDA wheels come with torch"


def test_the_check_catches_a_stale_lock(tmp_path: Path) -> None:
    stale = tmp_path / "pyproject.toml"
    text = (REPO / "pyproject.toml").read_text().replace('"numpy>=1.26,<3"', '"numpy>=1.26,<2"')
    stale.write_text(text)
    assert lock.dependency_hash(stale) != lock.dependency_hash(REPO / "pyproject.toml")
    numpy = pins(DOCKER / "requirements.lock")["numpy"]
    assert not Requirement("numpy>=1.26,<2").specifier.contains(numpy), "the range check would fail too"


def test_the_ray_lock_is_the_plain_lock_plus_ray() -> None:
    plain, ray = pins(DOCKER / "requirements.lock"), pins(DOCKER / "requirements-ray.lock")
    assert "ray" in ray and "ray" not in plain
    shared = set(plain) & set(ray)
    assert {k for k in shared if plain[k] != ray[k]} <= {"pyarrow", "numpy", "packaging"}, (
        "the two images would differ in more than Ray needs"
    )
