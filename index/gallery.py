"""The searchable arrays: image global vectors and patch tokens, and the captions with their tokens.

Arrays are numpy (possibly memory-mapped, fp16 or fp32); the engine gathers candidates from them and
moves only those to the compute device.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np
from numpy.typing import NDArray

from rsir.model.errors import InvalidInputError
from rsir.model.features import ImageFeatures, TextFeatures


@dataclass(frozen=True)
class CaptionStore:
    """``vectors [Nc,d]``, ``tokens [Nc,n,d]``, ``mask [Nc,n]``; ``image_index [Nc]`` -> owning image."""

    texts: list[str]
    image_index: NDArray[np.int64]
    vectors: NDArray[np.float32]
    tokens: NDArray[np.floating]
    mask: NDArray[np.bool_]

    def __post_init__(self) -> None:
        nc = len(self.texts)
        shapes = (self.image_index.shape[0], self.vectors.shape[0], self.tokens.shape[0], self.mask.shape[0])
        if any(s != nc for s in shapes):
            raise InvalidInputError(f"caption arrays disagree on the caption count: {nc} texts, {shapes}")
        if self.tokens.shape[:2] != self.mask.shape:
            raise InvalidInputError(f"caption tokens {self.tokens.shape} and mask {self.mask.shape} disagree")


@dataclass(frozen=True)
class Gallery:
    """``vectors [N,d]`` float32 and ``patches [N,M,d]`` with ``M = grid[0]*grid[1]``; ``ids [N]``."""

    ids: list[str]
    vectors: NDArray[np.float32]
    patches: NDArray[np.floating]
    grid: tuple[int, int]
    captions: CaptionStore | None = None
    meta: dict[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.ids)
        if self.vectors.shape[0] != n or self.patches.shape[0] != n:
            raise InvalidInputError(
                f"gallery arrays disagree: {n} ids, vectors {self.vectors.shape}, "
                f"patches {self.patches.shape}"
            )
        if self.patches.shape[1] != self.grid[0] * self.grid[1]:
            raise InvalidInputError(f"patches {self.patches.shape} do not fill the {self.grid} grid")
        if self.captions is not None and self.captions.image_index.size:
            top = int(self.captions.image_index.max())
            if top >= n or int(self.captions.image_index.min()) < 0:
                raise InvalidInputError(f"caption image_index out of range [0, {n}): max {top}")

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def image_features(self, index: NDArray[np.int64] | slice) -> ImageFeatures:
        """Stored features of some images, as float32 CPU tensors (e.g. to use them as queries)."""
        import torch

        return ImageFeatures(
            torch.from_numpy(np.asarray(self.vectors[index], dtype=np.float32)),
            torch.from_numpy(np.asarray(self.patches[index], dtype=np.float32)),
            self.grid,
        )

    def caption_features(self, index: NDArray[np.int64] | slice) -> TextFeatures:
        """Stored features of some captions, as float32 CPU tensors."""
        import torch

        if self.captions is None:
            raise InvalidInputError("this gallery has no captions")
        c = self.captions
        return TextFeatures(
            torch.from_numpy(np.asarray(c.vectors[index], dtype=np.float32)),
            torch.from_numpy(np.asarray(c.tokens[index], dtype=np.float32)),
            torch.from_numpy(np.asarray(c.mask[index], dtype=np.bool_)),
        )


def gallery_from_features(
    ids: Sequence[str],
    images: ImageFeatures,
    captions: TextFeatures | None = None,
    texts: Sequence[str] = (),
    caption_image: Sequence[int] = (),
    token_dtype: type[np.floating] = np.float16,
) -> Gallery:
    """An in-memory gallery from encoder outputs; tokens stored as ``token_dtype`` (fp16 halves memory)."""
    store = None
    if captions is not None:
        store = CaptionStore(
            texts=list(texts),
            image_index=np.asarray(caption_image, dtype=np.int64),
            vectors=captions.vectors.float().cpu().numpy(),
            tokens=captions.tokens.cpu().numpy().astype(token_dtype),
            mask=captions.mask.cpu().numpy(),
        )
    return Gallery(
        ids=list(ids),
        vectors=images.vectors.float().cpu().numpy(),
        patches=images.patches.cpu().numpy().astype(token_dtype),
        grid=images.grid,
        captions=store,
    )


def permute_captions(gallery: Gallery, perm: NDArray[np.integer]) -> Gallery:
    """The same gallery with its captions stored in another order: new position ``j`` holds caption
    ``perm[j]``. Search results over identical caption strings tie exactly, and the tie-break follows
    storage order, so evaluating over several orders exposes how much a figure owes to it."""
    c = gallery.captions
    if c is None:
        raise InvalidInputError("this gallery has no captions to reorder")
    p = np.asarray(perm, dtype=np.int64)
    if p.shape != (len(c.texts),) or not np.array_equal(np.sort(p), np.arange(len(c.texts))):
        raise InvalidInputError(f"perm must be a permutation of the {len(c.texts)} caption indices")
    store = CaptionStore(
        texts=[c.texts[i] for i in p],
        image_index=c.image_index[p],
        vectors=np.asarray(c.vectors)[p],
        tokens=np.asarray(c.tokens)[p],
        mask=np.asarray(c.mask)[p],
    )
    return replace(gallery, captions=store)
