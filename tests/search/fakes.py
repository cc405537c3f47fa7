"""The engine tests' shared fakes: seeded random features (unit vectors and tokens of a given size,
with ragged word masks, padding rows zero), an engine over a gallery of them, and filters that pick
any set of images. One copy, so every test file draws and builds them the same way."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray
from PIL import Image

from rsir.index.columns import MetadataColumns
from rsir.index.gallery import Gallery, gallery_from_features
from rsir.model.encoders import ClipEncoder
from rsir.model.features import ImageFeatures, TextFeatures
from rsir.search.engine import EngineConfig, SearchEngine
from rsir.search.filters import Filters


def random_text_features(gen: torch.Generator, n: int, n_words: int, dim: int) -> TextFeatures:
    lengths = torch.randint(1, n_words + 1, (n,), generator=gen)
    mask = torch.arange(n_words)[None] < lengths[:, None]
    tokens = F.normalize(torch.randn(n, n_words, dim, generator=gen), dim=-1) * mask[..., None]
    return TextFeatures(F.normalize(torch.randn(n, dim, generator=gen), dim=-1), tokens, mask)


def random_image_features(gen: torch.Generator, n: int, grid: tuple[int, int], dim: int) -> ImageFeatures:
    patches = F.normalize(torch.randn(n, grid[0] * grid[1], dim, generator=gen), dim=-1)
    return ImageFeatures(F.normalize(torch.randn(n, dim, generator=gen), dim=-1), patches, grid)


def sensor_per_image(n: int) -> MetadataColumns:
    """Metadata in which image ``i``'s sensor is ``s{i}``, so that any set of images is a filter
    (:func:`only`); nothing else about the images is known."""
    empty = MetadataColumns.empty(n)
    return replace(empty, sensor=np.asarray([f"s{i}" for i in range(n)], dtype=object))


def only(mask: NDArray[np.bool_] | None) -> Filters | None:
    """A filter that lets exactly the images of ``mask`` through, over :func:`sensor_per_image`
    metadata (None: no filter)."""
    if mask is None:
        return None
    picked = np.flatnonzero(mask)
    return Filters(sensors=tuple(f"s{i}" for i in picked) if picked.size else ("no such sensor",))


def mask_of(filters: Filters | None, n: int) -> NDArray[np.bool_]:
    """The images an :func:`only` filter lets through, read back from its sensor names."""
    mask = np.ones(n, np.bool_)
    if filters is not None:
        mask[:] = False
        picked = [int(s[1:]) for s in filters.sensors or () if s.startswith("s") and s[1:].isdigit()]
        mask[picked] = True
    return mask


def fake_engine(gallery: Gallery, config: EngineConfig, **kwargs: Any) -> SearchEngine:
    """An engine without an encoder (queries are features) over ``gallery``, with
    :func:`sensor_per_image` metadata so tests can filter on any set of images."""
    return SearchEngine(gallery, None, config, metadata=sensor_per_image(len(gallery)), **kwargs)


def random_gallery(
    gen: torch.Generator,
    n_images: int,
    n_captions: int,
    grid: tuple[int, int],
    dim: int,
    n_words: int,
    owner: Callable[[int], int] | None = None,
) -> Gallery:
    """Images ``img{i}`` and captions ``caption {c}`` of seeded random features (images drawn first),
    caption ``c`` describing image ``owner(c)`` (default ``c % n_images``); float32 tokens."""
    own = owner or (lambda c: c % n_images)
    return gallery_from_features(
        [f"img{i}" for i in range(n_images)],
        random_image_features(gen, n_images, grid, dim),
        random_text_features(gen, n_captions, n_words, dim),
        texts=[f"caption {c}" for c in range(n_captions)],
        caption_image=[own(c) for c in range(n_captions)],
        token_dtype=np.float32,
    )


def encoded_engine(encoder: ClipEncoder, images: Sequence[Image.Image], sentence: str) -> SearchEngine:
    """An engine with ``encoder`` over ``tile{i}.png`` images, image ``i`` captioned by ``sentence``
    numbered ``i`` (the path that encodes raw queries)."""
    texts = [f"{n} {sentence}" for n in range(len(images))]
    gallery = gallery_from_features(
        [f"tile{i}.png" for i in range(len(images))],
        encoder.encode_images(images),
        encoder.encode_texts(texts),
        texts=texts,
        caption_image=list(range(len(images))),
    )
    return SearchEngine(gallery, encoder, EngineConfig(device="cpu"))
