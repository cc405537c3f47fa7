"""Helpers for the deployment checks: the dev-extra tools (hadolint, shellcheck, kubectl, check-jsonschema),
kustomize rendering, a small Dockerfile reader, and walking the pod specs of rendered objects."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import REPO

K8S = REPO / "k8s"
DOCKER = REPO / "docker"
SCHEMAS = Path(__file__).parent / "schemas"
# Kubernetes versions the manifests are validated against: an old still-common one and the newest
# that kubernetes-validate bundles.
K8S_VERSIONS = ("1.29", "latest")

Obj = dict[str, Any]


def tool(name: str) -> str:
    """A command-line tool from the venv the tests run in (the dev extra installs them), else PATH."""
    beside = Path(sys.executable).parent / name
    if beside.is_file():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: it comes with the dev extra (pip install -e '.[dev]')")
    return found


def tool_env() -> dict[str, str]:
    """The environment for the tools: the venv's bin first (hadolint finds shellcheck there)."""
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}


def run(args: list[str], cwd: Path = REPO, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, env=tool_env(), capture_output=True, text=True, timeout=timeout)


def kustomize(path: Path) -> list[Obj]:
    """``kubectl kustomize PATH`` (kustomize built into kubectl), parsed into objects."""
    done = run([tool("kubectl"), "kustomize", str(path)])
    assert done.returncode == 0, f"kubectl kustomize {path} failed:\n{done.stderr}"
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def one(objs: list[Obj], kind: str, name: str | None = None) -> Obj:
    found = [o for o in objs if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


@dataclass(frozen=True)
class PodSpec:
    where: str  # "Deployment/rsir-api", "RayJob/rsir-build-index head"...
    labels: dict[str, str]
    spec: Obj

    def containers(self, init: bool = True) -> list[Obj]:
        extra = list(self.spec.get("initContainers", [])) if init else []
        return list(self.spec.get("containers", [])) + extra


def pod_templates(obj: Obj) -> Iterator[tuple[str, Obj]]:
    """``(where, pod template)`` for every pod template an object carries."""
    kind, name, spec = obj["kind"], obj["metadata"]["name"], obj.get("spec", {})
    if kind in ("Deployment", "StatefulSet", "DaemonSet", "Job", "ReplicaSet"):
        yield f"{kind}/{name}", spec["template"]
    elif kind == "CronJob":
        yield f"{kind}/{name}", spec["jobTemplate"]["spec"]["template"]
    elif kind == "RayJob":
        cluster = spec.get("rayClusterSpec", {})
        yield f"{kind}/{name} head", cluster["headGroupSpec"]["template"]
        for group in cluster.get("workerGroupSpecs", []):
            yield f"{kind}/{name} workers {group['groupName']}", group["template"]
        if "submitterPodTemplate" in spec:
            yield f"{kind}/{name} submitter", spec["submitterPodTemplate"]


def pod_specs(objs: list[Obj]) -> list[PodSpec]:
    return [
        PodSpec(where, dict(t.get("metadata", {}).get("labels", {})), t["spec"])
        for obj in objs
        for where, t in pod_templates(obj)
    ]


# -- Dockerfiles ------------------------------------------------------------------------------------
@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)  # (INSTRUCTION, arguments)

    def all(self, instruction: str) -> list[str]:
        return [args for ins, args in self.instructions if ins == instruction]


@dataclass
class Dockerfile:
    global_args: dict[str, str]
    stages: list[Stage]

    @property
    def final(self) -> Stage:
        return self.stages[-1]


def read_dockerfile(path: Path) -> Dockerfile:
    """Instructions per stage (continuation lines joined, comments dropped), and the ARGs before FROM."""
    logical: list[str] = []
    pending = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):  # a comment line inside a continued instruction
            continue
        if line.endswith("\\"):
            pending += line[:-1].strip() + " "
            continue
        logical.append(pending + line)
        pending = ""
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        instruction, _, args = line.partition(" ")
        instruction = instruction.upper()
        if instruction == "FROM":
            m = re.fullmatch(r"(\S+)(?:\s+AS\s+(\S+))?", args.strip(), flags=re.IGNORECASE)
            assert m, f"cannot read FROM {args!r} in {path}"
            stages.append(Stage(base=m.group(1), name=m.group(2)))
        elif not stages:
            assert instruction == "ARG", f"{instruction} before FROM in {path}"
            key, _, value = args.strip().partition("=")
            global_args[key] = value
        else:
            stages[-1].instructions.append((instruction, args.strip()))
    return Dockerfile(global_args, stages)


def arg_default(dockerfile: Dockerfile, name: str) -> str:
    """The default of ``ARG name=...`` anywhere in the file (global or in a stage)."""
    if name in dockerfile.global_args:
        return dockerfile.global_args[name]
    for stage in dockerfile.stages:
        for args in stage.all("ARG"):
            key, _, value = args.partition("=")
            if key == name:
                return value
    raise AssertionError(f"no ARG {name}")
