"""The embedding stage on one machine: decode in worker processes, encode in batches, one shard at a time.

Decoding and preprocessing run in a torch ``DataLoader``'s workers (they are the CPU-heavy part);
the encoder runs in this process on the GPU when there is one. A file that cannot be decoded is
reported with its reason and left out; it never stops the job.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from rsir.index.originals import digest
from rsir.index.scenes import OpenRasters
from rsir.index_builder.scenes import Chip, read_chip
from rsir.index_builder.shards import Shard
from rsir.index_builder.sources import ArchiveItem
from rsir.model.encoders import ClipEncoder
from rsir.model.errors import DatasetError, ImageDecodeError
from rsir.model.features import TextFeatures
from rsir.model.images import DEFAULT_MAX_PIXELS, decode_image


@dataclass(frozen=True)
class Decoded:
    """A decoded item: ``pixels [3,H,W]`` ready for the model, or ``error`` saying why not; ``size``
    and ``digest`` of the bytes read (recorded in ``sources.json``, hashed here where they are read)."""

    position: int
    pixels: torch.Tensor | None
    error: str | None
    size: int = 0
    digest: str = ""
    nodata: bool = False  # a chip left out for being mostly nodata (counted, not an error)


class DecodeDataset(Dataset[Decoded]):
    def __init__(
        self, items: Sequence[ArchiveItem], preprocess: Callable[..., torch.Tensor], max_pixels: int
    ) -> None:
        self.items = items
        self.preprocess = preprocess
        self.max_pixels = max_pixels
        self.rasters = OpenRasters()  # scenes' files stay open in each loader worker between chips

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, position: int) -> Decoded:
        item = self.items[position]
        if item.chip is not None:
            return self._chip(position, item.chip)
        try:
            data = item.read_bytes()
            image = decode_image(data, max_pixels=self.max_pixels)
            return Decoded(position, self.preprocess(image), None, len(data), digest(data))
        except ImageDecodeError as exc:
            return Decoded(position, None, str(exc).removeprefix("upload: "))
        except OSError as exc:  # unreadable file, vanished file, short tar member
            return Decoded(position, None, f"unreadable: {exc}")

    def _chip(self, position: int, chip: Chip) -> Decoded:
        if chip.out_side * chip.out_side > self.max_pixels:
            return Decoded(
                position, None, f"chip of {chip.out_side}^2 pixels, over the limit of {self.max_pixels}"
            )
        try:
            read = read_chip(chip, self.rasters)
        except DatasetError as exc:
            return Decoded(position, None, str(exc))
        nodata = 1.0 - read.valid_fraction
        if nodata > chip.max_nodata:
            return Decoded(position, None, f"{nodata:.0%} nodata", nodata=True)
        return Decoded(
            position, self.preprocess(Image.fromarray(read.rgb)), None, chip.file_size, read.digest
        )


def _collate(batch: list[Decoded]) -> list[Decoded]:
    return batch


def shard_batches(start: int, stop: int, batch_size: int) -> list[range]:
    """The batches a shard's items are encoded in. Every engine uses these boundaries: the same
    batches give the same floats, which is what lets a build resume on another engine."""
    return [range(b, min(b + batch_size, stop)) for b in range(start, stop, batch_size)]


def decode_batches(
    items: Sequence[ArchiveItem],
    shards: Sequence[tuple[int, int]],
    encoder: ClipEncoder,
    batch_size: int,
    workers: int,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> Iterator[list[Decoded]]:
    """Decoded batches of ``items``; each batch lies inside one ``(start, stop)`` shard, in order."""
    batches = [list(batch) for start, stop in shards for batch in shard_batches(start, stop, batch_size)]
    loader = DataLoader(
        DecodeDataset(items, encoder.preprocess, max_pixels),
        batch_sampler=batches,
        num_workers=workers,
        collate_fn=_collate,
        prefetch_factor=4 if workers else None,
    )
    yield from loader


class ShardAccumulator:
    """Collects one shard's encoded batches (features only: pixels are dropped batch by batch)."""

    def __init__(self, encoder: ClipEncoder, items: Sequence[ArchiveItem]) -> None:
        self.encoder = encoder
        self.items = items
        self.kept: list[ArchiveItem] = []
        self.originals: dict[str, tuple[int, str]] = {}  # id -> (size, digest) of the bytes indexed
        self.skipped: list[dict[str, str]] = []
        self.nodata: list[str] = []  # chips left out as mostly nodata
        self.vectors: list[np.ndarray] = []
        self.patches: list[np.ndarray] = []

    def add(self, batch: Sequence[Decoded]) -> None:
        good = [d for d in batch if d.pixels is not None]
        self.skipped += [
            {"id": self.items[d.position].id, "reason": str(d.error)}
            for d in batch
            if d.pixels is None and not d.nodata
        ]
        self.nodata += [self.items[d.position].id for d in batch if d.nodata]
        if not good:
            return
        self.kept += [self.items[d.position] for d in good]
        self.originals |= {self.items[d.position].id: (d.size, d.digest) for d in good}
        feats = self.encoder.encode_pixels(torch.stack([d.pixels for d in good if d.pixels is not None]))
        self.vectors.append(feats.vectors.float().cpu().numpy())
        self.patches.append(feats.patches.cpu().numpy().astype(np.float16))

    def finish(self) -> Shard:
        """The shard: image features so far, plus the kept images' captions encoded now."""
        enc = self.encoder
        m = enc.grid[0] * enc.grid[1]
        vectors = np.concatenate(self.vectors) if self.vectors else np.zeros((0, enc.dim), np.float32)
        patches = np.concatenate(self.patches) if self.patches else np.zeros((0, m, enc.dim), np.float16)
        texts = [c for item in self.kept for c in item.captions]
        owner = np.asarray([i for i, item in enumerate(self.kept) for _ in item.captions], dtype=np.int64)
        if texts:
            t = enc.encode_texts(texts)
        else:
            t = TextFeatures(
                torch.zeros(0, enc.dim), torch.zeros(0, 0, enc.dim), torch.zeros(0, 0, dtype=torch.bool)
            )
        return Shard(
            ids=[item.id for item in self.kept],
            skipped=self.skipped,
            vectors=vectors,
            patches=patches,
            captions=texts,
            caption_image=owner,
            caption_vectors=t.vectors.float().cpu().numpy(),
            caption_tokens=t.tokens.cpu().numpy().astype(np.float16),
            caption_mask=t.mask.cpu().numpy(),
            originals=self.originals,
            nodata=self.nodata,
        )
