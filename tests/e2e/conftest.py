"""The search page end to end: a real server (uvicorn in a thread) over a small SynthRS index built with
the shipped model, driven by Debian's Chromium through Playwright (no browser download).

Tests that need the browser skip, with the reason, when Playwright or ``/usr/bin/chromium`` (or
``RSIR_E2E_CHROMIUM``) is missing. Screenshots go to ``logs/e2e-screenshots/`` (not committed).
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import uvicorn
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

from rsir.index_builder.demo import DemoIndex, build_demo_index, shipped_encoder
from rsir.model.encoders import ClipEncoder
from rsir.service.app import create_app
from rsir.service.server import uvicorn_config
from rsir.service.settings import Settings
from tests.conftest import REPO

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page, ViewportSize

CHROMIUM = Path(os.environ.get("RSIR_E2E_CHROMIUM", "/usr/bin/chromium"))
SCREENSHOTS = REPO / "logs" / "e2e-screenshots"
N_IMAGES = 40
LAPTOP: ViewportSize = {"width": 1280, "height": 900}
PHONE: ViewportSize = {"width": 390, "height": 844}


@dataclass(frozen=True)
class LiveServer:
    url: str
    index: DemoIndex


class _ExplicitSettings(Settings):
    """Settings from arguments only: no ``RSIR_*`` variable of the shell running the tests leaks in."""

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


@pytest.fixture(scope="session")
def demo_encoder() -> ClipEncoder:
    """The shipped default model: its thumbnails' rankings and heatmaps look like the demo's."""
    return shipped_encoder()


@pytest.fixture(scope="session")
def demo_index(tmp_path_factory: pytest.TempPathFactory, demo_encoder: ClipEncoder) -> DemoIndex:
    return build_demo_index(tmp_path_factory.mktemp("e2e"), N_IMAGES, demo_encoder)


@pytest.fixture(scope="session")
def live_server(demo_index: DemoIndex, demo_encoder: ClipEncoder) -> Iterator[LiveServer]:
    """``create_app`` under uvicorn on a local port, as ``rsir serve`` runs it."""
    yield from _serve(demo_index, demo_encoder)


KEY = "e2e-key"


@pytest.fixture(scope="session")
def keyed_server(demo_index: DemoIndex, demo_encoder: ClipEncoder) -> Iterator[LiveServer]:
    """The same, with an API key guarding searches and the archive's images."""
    yield from _serve(demo_index, demo_encoder, api_keys={KEY: 0})


def _serve(demo_index: DemoIndex, demo_encoder: ClipEncoder, **overrides: Any) -> Iterator[LiveServer]:
    values: dict[str, Any] = {
        "index": demo_index.root,
        "device": "cpu",
        "index_poll_s": 0.0,
        "log_level": "warning",
        "log_json": False,
    }
    settings = _ExplicitSettings(**(values | overrides))
    app = create_app(settings, encoder=demo_encoder)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    server = uvicorn.Server(uvicorn_config(app, settings, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True, name="e2e-uvicorn")
    thread.start()
    try:
        _wait_ready(url, thread)
        yield LiveServer(url, demo_index)
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()


def _wait_ready(url: str, thread: threading.Thread, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    with httpx.Client(base_url=url, timeout=5.0) as probe:
        while time.monotonic() < deadline:
            if not thread.is_alive():
                raise RuntimeError("the server thread exited during start-up (see its log above)")
            try:
                if probe.get("/readyz").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
    raise RuntimeError(f"server at {url} not ready within {timeout_s} s")


# -- the browser -----------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="Playwright for Python is not installed (pip install -e '.[dev]')"
    )
    if not CHROMIUM.is_file():
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium, or set RSIR_E2E_CHROMIUM)")
    with sync_api.sync_playwright() as p:
        launched: Browser = p.chromium.launch(executable_path=str(CHROMIUM))
        yield launched
        launched.close()


PageFactory = Callable[..., "Page"]


@pytest.fixture
def open_page(browser: Browser, live_server: LiveServer) -> Iterator[PageFactory]:
    """``open_page(viewport=LAPTOP)``: the search page loaded in a fresh browser context.

    Script errors on the page fail the test (a failed request is the page's to report, not an error).
    """
    contexts: list[Any] = []
    errors: list[str] = []

    def start(viewport: ViewportSize = LAPTOP) -> Page:
        context = browser.new_context(viewport=viewport)
        context.set_default_timeout(10_000)
        contexts.append(context)
        page = context.new_page()
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(live_server.url + "/")
        return page

    yield start
    for context in contexts:
        context.close()
    assert not errors, f"script errors on the page: {errors}"


def screenshot(page: Page, name: str) -> Path:
    """Full-page PNG under logs/e2e-screenshots/ for a person to look at."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
