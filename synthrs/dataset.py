"""Write a SynthRS dataset folder: ``images/synth_{index:06d}.png``, a Karpathy-style ``dataset.json``
and ``metadata.jsonl`` (footprint, time, sensor, tags per image; see :mod:`rsir.synthrs.metadata`).

Every image depends only on ``(seed, index, size)``, so workers render disjoint indices in any order
and the files are byte-identical whatever the worker count; results are gathered in index order.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rich.progress import track

from rsir.model.errors import InvalidInputError
from rsir.synthrs.captions import captions_for
from rsir.synthrs.metadata import metadata_jsonl
from rsir.synthrs.png import encode_png
from rsir.synthrs.render import render_scene
from rsir.synthrs.sampler import make_scene, split_of

DATASET_NAME = "synthrs"
_CHUNK = 16  # indices per task: amortises inter-process overhead (~10 ms of work per image)


@dataclass(frozen=True)
class SynthConfig:
    """What to generate: ``n`` images of ``size`` x ``size`` pixels, split by ``splits`` (train/val/test)."""

    n: int
    seed: int = 0
    size: int = 224
    splits: tuple[float, float, float] = (0.8, 0.1, 0.1)
    workers: int = 1

    def validate(self) -> None:
        """Raise :class:`InvalidInputError` for out-of-range settings."""
        if self.n < 1:
            raise InvalidInputError(f"n must be >= 1, got {self.n}")
        if self.seed < 0:
            raise InvalidInputError(f"seed must be >= 0, got {self.seed}")
        if self.size < 16:
            raise InvalidInputError(f"size must be >= 16 pixels, got {self.size}")
        if self.workers < 1:
            raise InvalidInputError(f"workers must be >= 1, got {self.workers}")
        if len(self.splits) != 3 or min(self.splits) < 0 or not math.isclose(sum(self.splits), 1.0):
            raise InvalidInputError(
                f"splits must be 3 non-negative fractions summing to 1, got {self.splits}"
            )


@dataclass(frozen=True)
class SynthReport:
    """Outcome of :func:`write_dataset`; ``seconds`` is wall time including the JSON files."""

    n_images: int
    seconds: float
    images_per_second: float
    out: Path


def image_entry(
    seed: int, index: int, size: int, splits: tuple[float, float, float]
) -> tuple[dict[str, Any], bytes]:
    """The ``dataset.json`` entry and PNG bytes of one image."""
    scene = make_scene(seed, index)
    png = encode_png(np.asarray(render_scene(scene, size)))
    entry: dict[str, Any] = {
        "filename": f"synth_{index:06d}.png",
        "imgid": index,
        "split": split_of(seed, index, splits),
        "sentences": [{"raw": s, "tokens": s[:-2].split()} for s in captions_for(scene, seed, index)],
        "scene": scene.to_json(),
    }
    return entry, png


def _write_chunk(job: tuple[int, int, int, int, tuple[float, float, float], str]) -> list[dict[str, Any]]:
    """Render and write images ``[start, stop)``; returns their entries in index order."""
    seed, start, stop, size, splits, images = job
    entries = []
    for index in range(start, stop):
        entry, png = image_entry(seed, index, size, splits)
        (Path(images) / entry["filename"]).write_bytes(png)
        entries.append(entry)
    return entries


def write_dataset(cfg: SynthConfig, out: Path, progress: bool = True) -> SynthReport:
    """Generate ``cfg.n`` images with captions and metadata into ``out`` (created if missing; files are
    overwritten)."""
    cfg.validate()
    start = time.perf_counter()
    images = out / "images"
    images.mkdir(parents=True, exist_ok=True)
    jobs = [
        (cfg.seed, lo, min(lo + _CHUNK, cfg.n), cfg.size, cfg.splits, str(images))
        for lo in range(0, cfg.n, _CHUNK)
    ]
    entries: list[dict[str, Any]] = []
    label = f"synth {cfg.n} images"
    if cfg.workers == 1:
        for job in track(jobs, description=label, disable=not progress):
            entries.extend(_write_chunk(job))
    else:
        # fork where the OS has it: workers start in milliseconds and need no importable __main__ (stdin
        # scripts, notebooks). They only touch numpy and PIL, never state a parent's threads may hold.
        method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
        ctx = multiprocessing.get_context(method)
        with ctx.Pool(min(cfg.workers, len(jobs))) as pool:
            chunks = pool.imap(_write_chunk, jobs)
            for chunk in track(chunks, total=len(jobs), description=label, disable=not progress):
                entries.extend(chunk)
    doc = {"dataset": DATASET_NAME, "images": entries}
    (out / "dataset.json").write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    (out / "metadata.jsonl").write_text(metadata_jsonl(cfg.seed, entries), encoding="utf-8")
    seconds = time.perf_counter() - start
    return SynthReport(cfg.n, seconds, cfg.n / seconds if seconds > 0 else float("inf"), out)
