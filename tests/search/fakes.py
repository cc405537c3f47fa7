"""The engine tests' shared fakes: seeded random features (unit vectors and tokens of a given size,
with ragged word masks, padding rows zero), an engine over a gallery of them, and filters that pick
any set of images. One copy, so every test file draws and builds them the same way."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray

from index.columns import MetadataColumns
from index.gallery import Gallery
from model.features import ImageFeatures, TextFeatures
from search.engine import EngineConfig, SearchEngine
from search.filters import Filters


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
