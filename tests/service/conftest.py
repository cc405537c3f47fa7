"""The service under test for real: a tiny index built by the index builder, a uvicorn server in a
thread talking HTTP on a local port, and (where a test needs one) a real ``redis-server`` process.

Settings are always built from explicit arguments: :class:`ExplicitSettings` ignores ``RSIR_*``
environment variables, so nothing from the shell running the tests leaks into them.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
import redis
import uvicorn
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

from rsir.index.versions import load_index
from rsir.index_builder.build import build
from rsir.index_builder.config import BuildConfig
from rsir.model.encoders import ClipEncoder
from rsir.search.engine import SearchEngine
from rsir.service.app import create_app, engine_config
from rsir.service.server import uvicorn_config
from rsir.service.settings import Settings
from tests.conftest import random_images

N_IMAGES = 40
SENSORS = ("S2", "L8", "WV3")
_WORDS = ("harbour", "boats", "forest", "river", "runway", "planes", "farmland", "houses", "bridge", "desert")
EPOCH_2020 = int(dt.datetime(2020, 1, 1, tzinfo=dt.UTC).timestamp())
DAY = 86400


# -- the tiny index --------------------------------------------------------------------------------
@dataclass(frozen=True)
class TinyIndex:
    """What the index was built from, kept to compute expectations without the code under test."""

    root: Path  # the session's index root: never modified (tests that publish work on a copy)
    archive: Path
    ids: list[str]  # sorted, as the gallery orders them
    captions: dict[str, list[str]]  # id -> its captions, in order
    metadata: dict[str, dict[str, Any]]  # id -> the metadata.jsonl row written (absent: no row)

    def file(self, image_id: str) -> Path:
        return self.archive / image_id


def _metadata_row(i: int, ident: str) -> dict[str, Any] | None:
    """Known fields for most images; some rows lack fields, some images have no row at all."""
    if i % 10 == 9:
        return None
    row: dict[str, Any] = {"id": ident, "sensor": SENSORS[i % 3]}
    if i % 7 == 3:
        return row  # bbox, time and tags unknown
    lon, lat = -10.0 + i, 40.0 + (i % 5)
    row |= {"lon_min": lon, "lat_min": lat, "lon_max": lon + 0.5, "lat_max": lat + 0.5}
    when = dt.datetime.fromtimestamp(EPOCH_2020 + i * 30 * DAY, dt.UTC)
    row["time"] = when.strftime("%Y-%m-%dT%H:%M:%SZ")
    row["tags"] = [t for t, on in (("water", i % 2 == 0), ("urban", i % 4 == 0), ("rare", i % 13 == 0)) if on]
    if i % 4 == 1:
        row["cloud_cover"] = f"{i % 9 * 10}%"  # a column the schema does not know: kept as a string
    return row


def _write_dataset(folder: Path) -> tuple[list[str], dict[str, list[str]], dict[str, dict[str, Any]]]:
    (folder / "images").mkdir(parents=True)
    entries, captions, metadata = [], {}, {}
    meta_lines = []
    for i, image in enumerate(random_images(N_IMAGES, seed=11, size=(48, 64))):
        name = f"img{i:03d}.png"
        image.save(folder / "images" / name)
        ident = f"images/{name}"
        caps = [
            f"{_WORDS[i % 10]} beside {_WORDS[(3 * i + 1) % 10]} in tile {i}",
            f"tile {i} shows {_WORDS[(i + 5) % 10]}",
        ][: 1 + i % 2]
        captions[ident] = caps
        entries.append({"filename": name, "split": "train", "sentences": [{"raw": c} for c in caps]})
        row = _metadata_row(i, ident)
        if row is not None:
            metadata[ident] = row
            meta_lines.append(json.dumps(row))
    (folder / "dataset.json").write_text(json.dumps({"images": entries}))
    (folder / "metadata.jsonl").write_text("\n".join(meta_lines) + "\n")
    return sorted(captions), captions, metadata


@pytest.fixture(scope="session")
def tiny_index(tmp_path_factory: pytest.TempPathFactory, tiny_encoder: ClipEncoder) -> TinyIndex:
    base = tmp_path_factory.mktemp("service-index")
    archive = base / "archive"
    ids, captions, metadata = _write_dataset(archive)
    root = base / "index"
    build(
        archive,
        root,
        tiny_encoder,
        BuildConfig(shard_size=16, batch_size=8, workers=0, progress=False),
        metadata=archive / "metadata.jsonl",
    )
    return TinyIndex(root, archive, ids, captions, metadata)


@pytest.fixture
def index_copy(tiny_index: TinyIndex, tmp_path: Path) -> Path:
    """A private copy of the index root, for tests that publish new versions into it."""
    return Path(shutil.copytree(tiny_index.root, tmp_path / "index", symlinks=True))


# -- settings and servers --------------------------------------------------------------------------
class ExplicitSettings(Settings):
    """:class:`Settings` from constructor arguments only: no ``RSIR_*`` environment, no dotenv."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)


def make_settings(index: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "index": index,
        "device": "cpu",
        "index_poll_s": 0.0,
        "log_level": "warning",
        "log_json": False,
        # The tests compare responses with the engine's plain defaults; the server's automatic PPSR
        # default has its own test (test_methods_api.py).
        "default_ppsr": False,
    }
    return ExplicitSettings(**(values | overrides))


def _bound_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


def free_port() -> int:
    with _bound_socket() as sock:
        port: int = sock.getsockname()[1]
        return port


class LiveServer:
    """``create_app(settings)`` under uvicorn in a background thread, on its own local port."""

    def __init__(self, settings: Settings, encoder: ClipEncoder) -> None:
        self.settings = settings
        self.app = create_app(settings, encoder=encoder)
        self._socket = _bound_socket()
        self.port = self._socket.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn_config(self.app, settings, log_level="warning", timeout_graceful_shutdown=5)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self._socket]}, daemon=True, name="uvicorn"
        )
        self._clients: list[httpx.Client] = []

    def start(self, timeout_s: float = 60.0) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + timeout_s
        with httpx.Client(base_url=self.url, timeout=5.0) as probe:
            while time.monotonic() < deadline:
                if not self.thread.is_alive():
                    raise RuntimeError("the server thread exited during start-up (see its log above)")
                try:
                    if probe.get("/readyz").status_code == 200:
                        return self
                except httpx.TransportError:
                    pass
                time.sleep(0.05)
        raise RuntimeError(f"server at {self.url} not ready within {timeout_s} s")

    def client(self, **kwargs: Any) -> httpx.Client:
        client = httpx.Client(base_url=self.url, timeout=kwargs.pop("timeout", 30.0), **kwargs)
        self._clients.append(client)
        return client

    def stop(self) -> None:
        for client in self._clients:
            client.close()
        self.server.should_exit = True
        self.thread.join(timeout=15)
        self._socket.close()
        assert not self.thread.is_alive(), "the server did not stop"


ServerFactory = Callable[..., LiveServer]


@pytest.fixture
def serve(tiny_index: TinyIndex, tiny_encoder: ClipEncoder) -> Iterator[ServerFactory]:
    """``serve(index=None, **settings)``: a started server with these settings; stopped at teardown."""
    started: list[LiveServer] = []

    def start(index: Path | None = None, **overrides: Any) -> LiveServer:
        server = LiveServer(make_settings(index or tiny_index.root, **overrides), tiny_encoder)
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="session")
def server(tiny_index: TinyIndex, tiny_encoder: ClipEncoder) -> Iterator[LiveServer]:
    """One server with default settings over the (unchanging) session index, shared by read-only tests.

    Its cache and counters are shared too: tests compare metric deltas and use queries of their own.
    """
    live = LiveServer(make_settings(tiny_index.root), tiny_encoder).start()
    yield live
    live.stop()


@pytest.fixture
def client(server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30.0) as c:
        yield c


# -- Redis -----------------------------------------------------------------------------------------
class RedisProcess:
    def __init__(self, exe: str, folder: Path, port: int | None = None) -> None:
        self.exe, self.folder = exe, folder
        self.port = port or free_port()
        self.successor: RedisProcess | None = None
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc = subprocess.Popen(
            [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            cwd=folder,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=2.0)
        deadline = time.monotonic() + 10
        while True:
            try:
                if self.client.ping():
                    break
            except redis.RedisError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.proc.kill()
                    raise RuntimeError(f"redis-server did not start on port {self.port}") from None
                time.sleep(0.02)

    # Typed reads (redis-py's sync client is annotated as possibly returning awaitables).
    def keys(self, pattern: str) -> list[str]:
        return [k.decode() for k in cast(list[bytes], self.client.keys(pattern))]

    def ttl(self, key: str) -> int:
        return cast(int, self.client.ttl(key))

    def get(self, key: str) -> bytes | None:
        return cast(bytes | None, self.client.get(key))

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.client.close()
        if self.successor is not None:
            self.successor.kill()

    def restart(self) -> RedisProcess:
        """A new, empty redis-server on the same port (this one killed first; both at teardown)."""
        self.kill()
        self.successor = RedisProcess(self.exe, self.folder, self.port)
        return self.successor


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisProcess]:
    """A fresh ``redis-server`` of this test's own (so no test sees another's keys)."""
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.skip("redis-server is not on PATH")
    proc = RedisProcess(exe, tmp_path)
    yield proc
    proc.kill()


# -- helpers ---------------------------------------------------------------------------------------
def png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def metric(client: httpx.Client, name: str, api_key: str | None = None, **labels: str) -> float:
    """Sum of the samples ``name`` (e.g. ``rsir_cache_total``) whose labels include ``labels``
    (``api_key``: for a server whose keys guard /metrics)."""
    response = client.get("/metrics", headers={"X-API-Key": api_key} if api_key else None)
    assert response.status_code == 200, response.text
    text = response.text
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def wait_clear_of_minute_boundary(margin_s: float = 4.0) -> None:
    """Rate limits count in fixed one-minute windows: start a short test well inside one."""
    into = time.time() % 60
    if into > 60 - margin_s:
        time.sleep(60 - into + 0.05)


def assert_error(response: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    """The response is ``status`` with the API's one error shape; returns its ``error`` object."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}
    error: dict[str, Any] = body["error"]
    assert set(error) == {"code", "message", "request_id"}
    assert isinstance(error["message"], str) and error["message"]
    assert error["request_id"] == response.headers["x-request-id"]
    if code is not None:
        assert error["code"] == code, error
    return error


@pytest.fixture(scope="session")
def engine(tiny_index: TinyIndex, tiny_encoder: ClipEncoder) -> SearchEngine:
    """The engine the server wraps, built directly (the expectation of what the HTTP API returns)."""
    return SearchEngine.from_index(
        load_index(tiny_index.root), tiny_encoder, engine_config(make_settings(tiny_index.root))
    )
