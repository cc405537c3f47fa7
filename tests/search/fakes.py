"""Seeded random features for the engine tests: unit vectors and tokens of a given size, with ragged
word masks (padding rows zero). One copy, so every test file draws them the same way."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from model.features import ImageFeatures, TextFeatures


def random_text_features(gen: torch.Generator, n: int, n_words: int, dim: int) -> TextFeatures:
    lengths = torch.randint(1, n_words + 1, (n,), generator=gen)
    mask = torch.arange(n_words)[None] < lengths[:, None]
    tokens = F.normalize(torch.randn(n, n_words, dim, generator=gen), dim=-1) * mask[..., None]
    return TextFeatures(F.normalize(torch.randn(n, dim, generator=gen), dim=-1), tokens, mask)


def random_image_features(gen: torch.Generator, n: int, grid: tuple[int, int], dim: int) -> ImageFeatures:
    patches = F.normalize(torch.randn(n, grid[0] * grid[1], dim, generator=gen), dim=-1)
    return ImageFeatures(F.normalize(torch.randn(n, dim, generator=gen), dim=-1), patches, grid)
