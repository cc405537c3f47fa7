"""Assembling committed shards (after an optional base version) into one index version folder.

Arrays are streamed shard by shard into preallocated memory maps, so peak memory is one shard plus
the global vectors the FAISS index holds anyway, whatever the archive's size.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from rsir.index.atomic import write_text
from rsir.index.dense import DenseRecall
from rsir.index.tokens import Codec, npy_shape, read_rows
from rsir.index.versions import (
    CAPTION_RECALL,
    IMAGE_RECALL,
    SKIPPED,
    LoadedIndex,
    Manifest,
    read_tombstones,
    write_captions,
    write_ids,
    write_tombstones,
)
from rsir.index.writer import VersionArrays
from rsir.index_builder import shards
from rsir.index_builder.metadata import write_metadata


class _Part:
    """A run of rows to copy: a committed shard, or the whole base version."""

    def __init__(
        self,
        arrays: dict[str, Any],
        ids: list[str],
        captions: list[str],
        skipped: list[dict[str, str]] | None = None,
    ) -> None:
        self.arrays, self.ids, self.captions = arrays, ids, captions
        self.skipped = skipped or []  # files of this shard left out, with reasons

    @staticmethod
    def of_shard(work: Path, number: int) -> _Part:
        meta = shards.read_shard_meta(work, number)
        names = ("vectors", "patches", "caption_image", "caption_vectors", "caption_tokens", "caption_mask")
        # Shard files are read row range by row range, never memory-mapped: mapped pages would stay in
        # the builder's RSS until the end, making its peak grow with the archive.
        paths = {n: shards.shard_dir(work, number) / f"{n}.npy" for n in names}
        return _Part(paths, meta["ids"], meta["captions"], meta["skipped"])

    @staticmethod
    def of_version(base: LoadedIndex) -> _Part:
        g, c = base.gallery, base.gallery.captions
        arrays: dict[str, Any] = {"vectors": g.vectors, "patches": g.patches}
        if c is not None:
            arrays |= {
                "caption_image": c.image_index,
                "caption_vectors": c.vectors,
                "caption_tokens": c.tokens,
                "caption_mask": c.mask,
            }
        return _Part(arrays, list(g.ids), list(c.texts) if c is not None else [])

    def rows(self, name: str, start: int, stop: int) -> NDArray[Any]:
        source = self.arrays[name]
        if isinstance(source, Path):
            return read_rows(source, start, stop)
        return np.asarray(source[start:stop])

    def width(self, name: str) -> int:
        """Axis-1 size of an array (the header only is read)."""
        source = self.arrays[name]
        shape = npy_shape(source) if isinstance(source, Path) else source.shape
        return int(shape[1])


def assemble(
    work: Path,
    numbers: Sequence[int],
    staged: Path,
    *,
    encoder: dict[str, Any],
    codec: Codec,
    factory: str,
    source: str,
    metadata: dict[str, dict[str, Any]],
    base: LoadedIndex | None = None,
    extra: dict[str, Any] | None = None,
    chunk: int = 2048,
    left_out: Sequence[dict[str, str]] = (),
) -> tuple[Manifest, list[dict[str, str]]]:
    """Write the version folder ``staged`` (manifest last) from ``base`` plus shards ``numbers``.

    Returns the manifest and the skipped files: ``left_out`` (scenes the listing could not use) and
    the shards' (also written to ``skipped.json``).
    """
    staged.mkdir(parents=True)
    parts = ([_Part.of_version(base)] if base is not None else []) + [
        _Part.of_shard(work, n) for n in numbers
    ]
    ids = [i for p in parts for i in p.ids]
    texts = [t for p in parts for t in p.captions]
    dim = int(encoder["dim"])
    grid = (int(encoder["grid"][0]), int(encoder["grid"][1]))
    m = grid[0] * grid[1]
    n_words = max((p.width("caption_tokens") for p in parts if "caption_tokens" in p.arrays), default=0)

    arrays = VersionArrays(
        staged, n_images=len(ids), n_captions=len(texts), dim=dim, m=m, n_words=n_words, codec=codec
    )
    cap_image = np.zeros(len(texts), np.int64)
    row = cap_row = 0
    for part in parts:
        n, nc = len(part.ids), len(part.captions)
        for s in range(0, n, chunk):
            e = min(s + chunk, n)
            arrays.add_images(part.rows("vectors", s, e), part.rows("patches", s, e))
        for s in range(0, nc, chunk):
            e = min(s + chunk, nc)
            arrays.add_captions(
                part.rows("caption_vectors", s, e),
                part.rows("caption_tokens", s, e),
                part.rows("caption_mask", s, e),
            )
        if nc:
            cap_image[cap_row : cap_row + nc] = part.rows("caption_image", 0, nc) + row
        row, cap_row = row + n, cap_row + nc
    arrays.close()

    write_ids(staged, ids)
    write_captions(staged, texts, cap_image.tolist())
    write_recall(staged, factory, base.folder if base is not None else None)
    write_metadata(staged / "metadata.parquet", ids, metadata)
    skipped = [*left_out, *(s for p in parts for s in p.skipped)]
    write_text(staged / SKIPPED, json.dumps(skipped, indent=1))
    write_tombstones(staged, read_tombstones(base.folder) if base else [])
    manifest = Manifest(
        encoder=encoder,
        n_images=len(ids),
        n_captions=len(texts),
        token_codec=codec,
        dim=dim,
        grid=grid,
        created_unix=time.time(),
        source=source,
        extra={"n_skipped": len(skipped), **(extra or {})},
    )
    manifest.write(staged)
    return manifest, skipped


def write_recall(staged: Path, factory: str, base: Path | None = None) -> None:
    """The FAISS indexes of a version whose vector files are written: new ones, or the ``base``
    version's extended with the new rows (no retraining)."""
    sides = [(IMAGE_RECALL, "image_vectors.npy"), (CAPTION_RECALL, "caption_vectors.npy")]
    for name, source in sides:
        vectors = np.load(staged / source, mmap_mode="r") if (staged / source).is_file() else None
        if vectors is None or not len(vectors):
            continue
        if base is None or not (base / name).is_file():
            recall = DenseRecall(np.asarray(vectors), factory)
        else:
            # A private copy: the served base maps its index read-only (FAISS aborts on adding to it).
            recall = DenseRecall.load(base / name)
            recall.index.add(np.ascontiguousarray(vectors[recall.size :], dtype=np.float32))
        recall.save(staged / name)
