"""The images, checked without a Docker engine: hadolint (with ShellCheck on every RUN) finds nothing in
either Dockerfile, and the files say what the deployment relies on: multi-stage, non-root, a health check,
the same code and the same lock in both, CPU torch in one and CUDA 12 torch in the other."""

from __future__ import annotations

import fnmatch
import json
import tomllib
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.deploy.support import DOCKER, Dockerfile, arg_default, read_dockerfile, run, tool

DOCKERFILES = {"cpu": DOCKER / "Dockerfile.cpu", "gpu": DOCKER / "Dockerfile.gpu"}
# The wheel's packages and the folders its rsir/ links bring in (rsir.model is model/, ...).
WHEEL: list[str] = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["hatch"]["build"]["targets"][
    "wheel"
]["packages"]
PACKAGES = WHEEL + sorted(p.name for p in (REPO / "rsir").iterdir() if p.is_symlink())


@pytest.fixture(scope="module", params=sorted(DOCKERFILES))
def image(request: pytest.FixtureRequest) -> tuple[str, Dockerfile]:
    flavour: str = request.param
    return flavour, read_dockerfile(DOCKERFILES[flavour])


@pytest.mark.parametrize("flavour", sorted(DOCKERFILES))
def test_hadolint_finds_nothing(flavour: str) -> None:
    tool("shellcheck")  # hadolint runs ShellCheck over RUN commands when it is on PATH
    done = run([tool("hadolint"), "--no-color", "--config", ".hadolint.yaml", str(DOCKERFILES[flavour])])
    assert done.returncode == 0 and not done.stdout.strip(), done.stdout + done.stderr


def test_hadolint_reports_a_bad_dockerfile(tmp_path: Path) -> None:
    """The lint above can fail: the same command flags the usual mistakes (and a RUN that ShellCheck
    objects to)."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python\nRUN apt-get install curl\nRUN cd /src && pip install rsir\nUSER root\n")
    done = run([tool("hadolint"), "--no-color", "--config", ".hadolint.yaml", str(bad)])
    assert done.returncode != 0
    for rule in ("DL3006", "DL3014", "DL3003", "DL3013", "DL3042", "DL3002"):
        assert rule in done.stdout, done.stdout


def test_demo_index_script_passes_shellcheck() -> None:
    done = run([tool("shellcheck"), "--shell=sh", str(DOCKER / "demo-index.sh")])
    assert done.returncode == 0, done.stdout + done.stderr


def test_multi_stage_non_root_with_a_health_check(image: tuple[str, Dockerfile]) -> None:
    _, df = image
    assert len(df.stages) >= 2, "a builder stage and a runtime stage"
    final = df.final
    builder = next(s for s in df.stages if s.name == "builder")
    # the runtime stage takes the venv and nothing else from the builder
    assert [c for c in final.all("COPY") if "--from=" in c] == ["--from=builder /opt/venv /opt/venv"]
    assert not any("pip install" in r for r in final.all("RUN")), "no installs in the runtime stage"
    assert any("pip install" in r for r in builder.all("RUN"))

    users = final.all("USER")
    assert users and users[-1].split(":")[0] not in ("0", "root")
    assert users[-1].split(":")[0].isdigit(), "numeric uid: Kubernetes' runAsNonRoot can verify it"
    uid = users[-1].split(":")[0]
    assert any(f"--uid {uid}" in r for r in final.all("RUN"))

    (health,) = final.all("HEALTHCHECK")
    cmd = json.loads(health[health.index("CMD") + 3 :].strip())
    assert cmd == ["python", "-m", "rsir.service.healthcheck"], "liveness: /healthz, standard library only"
    assert final.all("EXPOSE") == ["8000"]
    (command,) = final.all("CMD")
    assert json.loads(command) == ["rsir", "serve", "--host", "0.0.0.0", "--port", "8000"]
    assert "/usr/local/bin/rsir-demo-index" in " ".join(final.all("COPY")), "index build tool in the image"


def test_both_images_install_the_same_code(image: tuple[str, Dockerfile]) -> None:
    """Every package of the wheel is copied in (a new top-level package must be added to the images)."""
    _, df = image
    builder = next(s for s in df.stages if s.name == "builder")
    copied = {args.split()[0] for args in builder.all("COPY") if not args.startswith("--")}
    sources = {p for args in builder.all("COPY") for p in args.split()[:-1]}
    assert set(PACKAGES) <= copied, f"not copied into the image: {sorted(set(PACKAGES) - copied)}"
    assert {"README.md", "docker/requirements.lock", "docker/requirements-ray.lock"} <= sources
    pips = [pip_command(r) for r in builder.all("RUN")]
    assert any(r.startswith("pip install --no-cache-dir --no-deps .") for r in pips)


def test_both_images_install_exactly_the_lock(image: tuple[str, Dockerfile]) -> None:
    """Everything but torch comes from the lock, hash-checked, with no resolution, then pip check."""
    _, df = image
    builder = next(s for s in df.stages if s.name == "builder")
    assert arg_default(df, "RSIR_LOCK") == "requirements.lock"
    (lock_install,) = [pip_command(r) for r in builder.all("RUN") if "-r " in r]
    assert lock_install.startswith('pip install --no-cache-dir --no-deps --require-hashes -r "${RSIR_LOCK}"')
    assert "pip check" in lock_install
    installs = [r for r in builder.all("RUN") if "pip install" in r]
    # the torch step, the lock, the code: nothing installed by name from a range
    assert len(installs) == 3, installs
    torch_step = installs[0]
    assert '"torch==${TORCH_VERSION}" "torchvision==${TORCHVISION_VERSION}"' in torch_step


def pip_command(run_args: str) -> str:
    """A RUN's pip install onwards: what comes before is the CA secret mount and the env it sets."""
    return run_args[run_args.index("pip install") :] if "pip install" in run_args else run_args


def test_every_pip_step_takes_the_proxy_ca_as_a_build_secret(image: tuple[str, Dockerfile]) -> None:
    """pip behind a TLS-intercepting proxy (this machine's) needs its CA; it comes in as a BuildKit
    secret mounted for that RUN only, so no layer holds it (make compose-check also looks in the built
    image), and without the secret the same RUN uses pip's own bundle."""
    _, df = image
    mount = "--mount=type=secret,id=pip_ca "
    ca = "if [ -f /run/secrets/pip_ca ]; then export PIP_CERT=/run/secrets/pip_ca; fi"
    for stage in df.stages:
        for args in stage.all("RUN"):
            if "pip install" in args:
                assert args.startswith(mount + ca), args
    for args in [a for s in df.stages for a in s.all("COPY") + s.all("ADD")]:
        assert ".crt" not in args and ".pem" not in args and "pip_ca" not in args, args


def test_cpu_image_uses_cpu_torch() -> None:
    df = read_dockerfile(DOCKERFILES["cpu"])
    assert arg_default(df, "PYTHON_IMAGE").startswith("python:3.11-slim")
    assert arg_default(df, "TORCH_INDEX_URL") == "https://download.pytorch.org/whl/cpu"


def test_gpu_image_uses_cuda_12_torch_and_cpu_faiss() -> None:
    """faiss-cpu in the GPU image too: serving searches a CPU index, and faiss-gpu-cu12 has no
    Blackwell kernels (docs/deploy.md)."""
    df = read_dockerfile(DOCKERFILES["gpu"])
    assert arg_default(df, "CUDA_IMAGE").startswith("nvidia/cuda:12.")
    assert arg_default(df, "TORCH_INDEX_URL").startswith("https://download.pytorch.org/whl/cu12")
    lock = (DOCKER / "requirements.lock").read_text()
    assert "\nfaiss-cpu==" in lock and "faiss-gpu" not in lock


def test_torch_pins_match_the_development_install() -> None:
    """The images pin the torch/torchvision pair the Makefile installs."""
    makefile = (REPO / "Makefile").read_text()
    for df in map(read_dockerfile, DOCKERFILES.values()):
        assert f"torch=={arg_default(df, 'TORCH_VERSION')} " in makefile
        assert f"torchvision=={arg_default(df, 'TORCHVISION_VERSION')}" in makefile


def test_dockerignore_keeps_local_state_out_and_the_code_in() -> None:
    patterns = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for local in (".venv", "data", "runs", "logs", ".git", ".mypy_cache", ".pytest_cache", ".ruff_cache"):
        assert local in patterns, f"{local} should stay out of the build context"
    needed = [
        *PACKAGES,
        "pyproject.toml",
        "README.md",
        "docker/requirements.lock",
        "docker/requirements-ray.lock",
        "docker/demo-index.sh",
        "docker/index-archive.sh",
    ]
    for path in needed:
        hits = [p for p in patterns if not p.startswith("!") and fnmatch.fnmatch(path, p)]
        assert not hits, f"{path} is copied into the image but .dockerignore drops it ({hits})"
    assert (DOCKER / "demo-index.sh").stat().st_mode & 0o111, "demo-index.sh must stay executable"
