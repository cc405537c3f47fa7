"""Typed containers for encoder outputs: global vectors plus tokens, always L2-normalised."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class ImageFeatures:
    """``vectors [B,d]``, ``patches [B,M,d]`` with ``M = grid[0] * grid[1]`` (row-major patch grid)."""

    vectors: torch.Tensor
    patches: torch.Tensor
    grid: tuple[int, int]

    def __len__(self) -> int:
        return int(self.vectors.shape[0])

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> ImageFeatures:
        return ImageFeatures(self.vectors.to(device, dtype), self.patches.to(device, dtype), self.grid)

    @staticmethod
    def cat(parts: Sequence[ImageFeatures]) -> ImageFeatures:
        return ImageFeatures(
            torch.cat([p.vectors for p in parts]), torch.cat([p.patches for p in parts]), parts[0].grid
        )


@dataclass(frozen=True)
class TextFeatures:
    """``vectors [B,d]``, word ``tokens [B,n,d]``, ``mask [B,n]`` (True at real words; left-aligned)."""

    vectors: torch.Tensor
    tokens: torch.Tensor
    mask: torch.Tensor

    def __len__(self) -> int:
        return int(self.vectors.shape[0])

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> TextFeatures:
        return TextFeatures(
            self.vectors.to(device, dtype), self.tokens.to(device, dtype), self.mask.to(device)
        )

    def select(self, index: torch.Tensor | slice) -> TextFeatures:
        return TextFeatures(self.vectors[index], self.tokens[index], self.mask[index])

    @staticmethod
    def cat(parts: Sequence[TextFeatures]) -> TextFeatures:
        """Concatenate batches, right-padding tokens/mask to the longest word count."""
        n = max(int(p.tokens.shape[1]) for p in parts)
        tokens = [F.pad(p.tokens, (0, 0, 0, n - p.tokens.shape[1])) for p in parts]
        masks = [F.pad(p.mask, (0, n - p.mask.shape[1]), value=False) for p in parts]
        return TextFeatures(torch.cat([p.vectors for p in parts]), torch.cat(tokens), torch.cat(masks))


def l2_normalize(x: torch.Tensor) -> torch.Tensor:
    """Unit vectors along the last axis; all-zero rows stay zero instead of becoming NaN."""
    return F.normalize(x, dim=-1, eps=1e-12)
