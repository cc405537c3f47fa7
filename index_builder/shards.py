"""Embedded shards: the unit of work, commit and resume of a build.

A shard is a fixed run of the archive's sorted items. Its outputs are written into a hidden temporary
folder, which gets a ``DONE`` marker and is then renamed into place: a shard folder either exists
complete or not at all, so a job killed at any moment resumes by skipping the folders that exist.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

DONE = "DONE"


@dataclass
class Shard:
    """What one shard produced. ``caption_image`` indexes ``ids`` (the shard's kept images)."""

    ids: list[str]
    skipped: list[dict[str, str]]
    vectors: NDArray[np.float32]
    patches: NDArray[np.float16]
    captions: list[str]
    caption_image: NDArray[np.int64]
    caption_vectors: NDArray[np.float32]
    caption_tokens: NDArray[np.float16]
    caption_mask: NDArray[np.bool_]
    originals: dict[str, tuple[int, str]] = field(default_factory=dict)  # id -> (size, digest)
    nodata: list[str] = field(default_factory=list)  # chips left out as mostly nodata


def shard_dir(work: Path, number: int) -> Path:
    return work / "shards" / f"{number:05d}"


def is_done(work: Path, number: int) -> bool:
    return (shard_dir(work, number) / DONE).is_file()


def clear_partial(work: Path) -> None:
    """Remove what a killed job left half-written (temporary shard folders)."""
    root = work / "shards"
    if root.is_dir():
        for tmp in root.glob(".*.tmp"):
            shutil.rmtree(tmp, ignore_errors=True)


def write_shard(work: Path, number: int, shard: Shard) -> None:
    final = shard_dir(work, number)
    tmp = final.with_name(f".{final.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    meta = {
        "ids": shard.ids,
        "skipped": shard.skipped,
        "captions": shard.captions,
        "originals": {i: list(v) for i, v in shard.originals.items()},
        "nodata": shard.nodata,
    }
    (tmp / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
    arrays: dict[str, NDArray[Any]] = {
        "vectors": shard.vectors,
        "patches": shard.patches,
        "caption_image": shard.caption_image,
        "caption_vectors": shard.caption_vectors,
        "caption_tokens": shard.caption_tokens,
        "caption_mask": shard.caption_mask,
    }
    for name, array in arrays.items():
        np.save(tmp / f"{name}.npy", array)
    (tmp / DONE).write_text(json.dumps({"images": len(shard.ids), "skipped": len(shard.skipped)}))
    for path in tmp.iterdir():
        with path.open("rb") as fh:
            os.fsync(fh.fileno())
    shutil.rmtree(final, ignore_errors=True)  # an unmarked leftover of an older layout
    tmp.rename(final)


def read_shard_meta(work: Path, number: int) -> dict[str, Any]:
    meta: dict[str, Any] = json.loads((shard_dir(work, number) / "meta.json").read_text(encoding="utf-8"))
    return meta
