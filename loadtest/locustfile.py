"""Locust traffic for rsir: text queries drawn from real RS captions, a share of repeats (to exercise
the cache), filtered queries, query-by-example uploads and image-to-caption searches.

Configured by environment variables (the headless runner ``python -m rsir.loadtest.run`` sets them):

- ``RSIR_LOAD_QUERIES``: caption file, dataset.json, or a folder holding them (default: ../shared/data).
- ``RSIR_LOAD_IMAGES``: folder of images to upload (default: none, so no image queries).
- ``RSIR_LOAD_REPEAT``: share of text queries drawn from a small hot set (default 0.3).
- ``RSIR_LOAD_MIX``: ``mixed`` (default) or ``text`` (text searches only, for latency benchmarks).
- ``RSIR_LOAD_API_KEY``: sent as ``X-API-Key`` when set.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

from locust import FastHttpUser, constant, task

from rsir.loadtest.queries import load_queries

_REPO = Path(__file__).resolve().parents[1]
_QUERIES = load_queries(Path(os.environ.get("RSIR_LOAD_QUERIES", _REPO.parent / "shared" / "data")))
_HOT = _QUERIES[:50]
_REPEAT = float(os.environ.get("RSIR_LOAD_REPEAT", "0.3"))
_MIX = os.environ.get("RSIR_LOAD_MIX", "mixed")
_IMAGES_DIR = os.environ.get("RSIR_LOAD_IMAGES")
_IMAGES = (
    sorted(p for p in Path(_IMAGES_DIR).rglob("*") if p.suffix.lower() in {".png", ".jpg", ".jpeg", ".tif"})[
        :200
    ]
    if _IMAGES_DIR
    else []
)
_SENSORS = ["sentinel-2", "worldview-3", "aerial-0.3m"]


class SearchUser(FastHttpUser):
    wait_time = constant(float(os.environ.get("RSIR_LOAD_WAIT_S", "0")))

    def on_start(self) -> None:
        key = os.environ.get("RSIR_LOAD_API_KEY")
        self.headers = {"X-API-Key": key} if key else {}
        self.rng = random.Random()

    def _query(self) -> str:
        pool = _HOT if self.rng.random() < _REPEAT else _QUERIES
        return self.rng.choice(pool)

    def _post(self, body: dict[str, Any], name: str) -> None:
        self.client.post("/search/text", json=body, headers=self.headers, name=name)

    @task(10)
    def text(self) -> None:
        self._post({"query": self._query(), "k": 10}, "/search/text")

    @task(2)
    def filtered(self) -> None:
        if _MIX == "text":
            return self.text()
        year = self.rng.randint(2020, 2024)
        filters = {
            "sensor": [self.rng.choice(_SENSORS)],
            "time_from": f"{year}-01-01T00:00:00Z",
            "time_to": f"{year + 1}-06-30T00:00:00Z",
        }
        self._post({"query": self._query(), "k": 10, "filters": filters}, "/search/text [filtered]")

    @task(2)
    def by_image(self) -> None:
        if _MIX == "text" or not _IMAGES:
            return self.text()
        path = self.rng.choice(_IMAGES)
        target = "captions" if self.rng.random() < 0.5 else "images"
        with path.open("rb") as fh:
            self.client.post(
                "/search/image",
                data={"k": "10", "target": target},
                files={"file": (path.name, fh.read(), "application/octet-stream")},
                headers=self.headers,
                name=f"/search/image [{target}]",
            )
