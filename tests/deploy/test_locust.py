"""The deployment path end to end on this machine, without containers: the images' index job
(docker/demo-index.sh) builds a small demo index, ``rsir serve`` serves it as the image's command does,
the images' health check probes it, and a 20 s headless Locust run (``python -m rsir.loadtest.run``, the
mixed traffic of loadtest/locustfile.py) must finish with zero failed requests."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow

N_IMAGES = 48
LOAD_USERS = 4
LOAD_TIME = "20s"


@dataclass(frozen=True)
class Demo:
    root: Path  # INDEX_ROOT: demo-synth/ (archive) and demo/ (index root)

    @property
    def archive(self) -> Path:
        return self.root / "demo-synth"

    @property
    def index(self) -> Path:
        return self.root / "demo"


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without RSIR_* settings (none leaks into the server), the venv's bin
    first on PATH (the script calls ``rsir``), plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RSIR_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return {**env, **extra}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def demo_index_script(root: Path) -> subprocess.CompletedProcess[str]:
    env = clean_env(INDEX_ROOT=str(root), DEMO_N=str(N_IMAGES), DEMO_WORKERS="1", BUILD_ARGS="--device cpu")
    return subprocess.run(
        ["sh", str(REPO / "docker" / "demo-index.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Demo:
    root = tmp_path_factory.mktemp("deploy") / "index"
    root.mkdir()
    first = demo_index_script(root)
    assert first.returncode == 0, first.stdout + first.stderr
    return Demo(root)


@pytest.fixture(scope="module")
def server(demo: Demo, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``rsir serve`` on a free loopback port, configured through RSIR_* variables as in the images."""
    port = free_port()
    log = tmp_path_factory.mktemp("server") / "serve.log"
    env = clean_env(
        RSIR_INDEX=str(demo.index),
        RSIR_DEVICE="cpu",
        RSIR_INDEX_POLL_S="0",
        RSIR_LOG_LEVEL="warning",
    )
    with log.open("w") as out:
        proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "rsir"), "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        with httpx.Client(base_url=url, timeout=5.0, trust_env=False) as client:
            while True:
                if proc.poll() is not None:
                    pytest.fail(f"rsir serve exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
                try:
                    if client.get("/readyz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    pytest.fail(f"rsir serve not ready in 180 s:\n{log.read_text()[-4000:]}")
                time.sleep(0.2)
        yield url
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def test_demo_index_script_builds_once(demo: Demo) -> None:
    assert (demo.index / "CURRENT").read_text().strip() == "v0001"
    assert (demo.archive / "dataset.json").is_file()
    again = demo_index_script(demo.root)  # the compose job / Kubernetes Job started a second time
    assert again.returncode == 0, again.stderr
    assert "already built" in again.stdout
    assert sorted(p.name for p in demo.index.iterdir() if p.name.startswith("v")) == ["v0001"]


def relative_sources(index: Path) -> dict[str, object]:
    """The served version's sources.json, checked to hold no absolute path (issue 22 item 3)."""
    version = index / (index / "CURRENT").read_text().strip()
    doc: dict[str, object] = json.loads((version / "sources.json").read_text())
    items = doc["items"]
    assert doc["format"] == 2 and isinstance(items, dict) and items
    assert not [e for e in items.values() if Path(e[0]).is_absolute()], "sources must be relative"
    return doc


def test_demo_sources_are_relative_to_the_demo_archive(demo: Demo) -> None:
    """What lets the API find the originals wherever the volume is mounted (RSIR_ARCHIVE_ROOT)."""
    assert relative_sources(demo.index)["root"] == str(demo.archive.resolve())


def test_index_archive_script_builds_a_users_archive_once(demo: Demo, tmp_path: Path) -> None:
    """docker/index-archive.sh, as compose.archive.yaml and k8s/components/archive run it."""
    env = clean_env(ARCHIVE_DIR=str(demo.archive), INDEX_DIR=str(tmp_path / "archive"), WORKERS="0")
    argv = ["sh", str(REPO / "docker" / "index-archive.sh")]
    first = subprocess.run([*argv], env=env, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "index ready" in first.stdout and '"event": "build_progress"' in first.stderr
    assert relative_sources(tmp_path / "archive")["root"] == str(demo.archive.resolve())
    again = subprocess.run([*argv], env=env, capture_output=True, text=True, timeout=60)
    assert again.returncode == 0 and "already built" in again.stdout


def healthcheck(*args: str, port: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rsir.service.healthcheck", *args],
        env=clean_env(RSIR_PORT=port),
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_the_image_health_check_probes_the_server(server: str) -> None:
    port = server.rsplit(":", 1)[1]
    for args in ((), ("--ready",)):
        done = healthcheck(*args, port=port)
        assert done.returncode == 0, done.stderr
    closed = healthcheck(port=str(free_port()))
    assert closed.returncode == 1 and "no answer" in closed.stderr


def test_locust_run_has_no_failures(server: str, demo: Demo, tmp_path: Path) -> None:
    out = tmp_path / "locust"
    argv = [
        sys.executable, "-m", "rsir.loadtest.run", "--host", server, "--users", str(LOAD_USERS),
        "--time", LOAD_TIME, "--out", str(out), "--queries", str(demo.archive),
        "--images", str(demo.archive / "images"), "--max-failures", "0",
    ]  # fmt: skip
    done = subprocess.run(
        argv,
        cwd=REPO,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    total = summary["Aggregated"]
    assert total["failures"] == 0
    assert total["requests"] >= 20, summary
    names = set(summary) - {"Aggregated"}
    assert {"/search/text", "/search/text [filtered]"} <= names, names
    assert any(n.startswith("/search/image") for n in names), names
