"""Made-up but plausible per-image metadata for SynthRS (``metadata.jsonl``), to exercise search filters.

Each image gets a small footprint in a fixed region, an acquisition time in 2020-2025 and a sensor,
drawn from a stream of its own ``(seed, index)``, and tags it really has: its scene class and the
object types drawn in it. Nothing depends on rendering, on ``n`` or on the worker count.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable
from typing import Any

import numpy as np

SENSORS = ("sentinel-2", "worldview-3", "aerial-0.3m")
REGION = (2.0, 43.0, 8.0, 49.0)  # lon_min, lat_min, lon_max, lat_max of where footprints are drawn
FOOTPRINT_DEG = 0.01
_START = int(dt.datetime(2020, 1, 1, tzinfo=dt.UTC).timestamp())
_END = int(dt.datetime(2026, 1, 1, tzinfo=dt.UTC).timestamp())
_STREAM = 7  # keeps this stream apart from the scene sampler's streams of the same (seed, index)


def image_id(filename: str) -> str:
    """The id the index builder gives the image when reading ``dataset.json``: its path relative to
    the dataset folder, where ``write_dataset`` puts images under ``images/``."""
    return f"images/{filename}"


def metadata_row(seed: int, index: int, entry: dict[str, Any]) -> dict[str, Any]:
    """The ``metadata.jsonl`` object of the image whose ``dataset.json`` entry is ``entry``."""
    rng = np.random.default_rng([seed, index, _STREAM])
    lon = REGION[0] + rng.random() * (REGION[2] - REGION[0] - FOOTPRINT_DEG)
    lat = REGION[1] + rng.random() * (REGION[3] - REGION[1] - FOOTPRINT_DEG)
    when = int(rng.integers(_START, _END))
    sensor = SENSORS[int(rng.integers(len(SENSORS)))]
    scene = entry["scene"]
    objects = sorted({o["type"] for o in scene["objects"] if o["count"] > 0})
    return {
        "id": image_id(entry["filename"]),
        # Rounded so that the text is short and the same on every platform's float printing.
        "lon_min": round(lon, 6),
        "lat_min": round(lat, 6),
        "lon_max": round(lon + FOOTPRINT_DEG, 6),
        "lat_max": round(lat + FOOTPRINT_DEG, 6),
        "time": dt.datetime.fromtimestamp(when, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "sensor": sensor,
        "tags": [scene["class"], *objects],
    }


def metadata_jsonl(seed: int, entries: Iterable[dict[str, Any]]) -> str:
    """One JSON object per line, in index order (``entries`` are ``dataset.json``'s images)."""
    return "".join(json.dumps(metadata_row(seed, e["imgid"], e)) + "\n" for e in entries)
