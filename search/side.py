"""One searchable side of a gallery: its images, or its captions.

Each side owns what a search over it reads: the global vectors (recall and the coarse score), the
fine-grained tokens the rerank scores (an image's patches, a caption's words and their mask), the
recall index, the items never returned (tombstoned images, and the captions of tombstoned images)
and the per-side extras of the other recall methods and corrections (hash codes, SGPD, PPSR, SAR).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from rsir.index.dense import DenseRecall, exact_subset, in_tie_order, pair_cosines
from rsir.index.extras import SideExtras
from rsir.index.gallery import Gallery
from rsir.model.errors import InvalidInputError
from rsir.search.options import Target

# One search's rows: (the method's own score, the cosine, ids), each [Q, k], in the method's order.
Found = tuple[NDArray[np.float32], NDArray[np.float32], NDArray[np.int64]]


@dataclass(frozen=True, eq=False)
class Side:
    """``names``: image ids or caption texts; ``owner``: each caption's image (None for the images,
    which own themselves); ``mask``: which word slots are real (None for patches, which all are)."""

    name: Target
    names: Sequence[str]
    vectors: NDArray[np.floating]
    tokens: NDArray[np.floating]
    mask: NDArray[np.bool_] | None
    recall: DenseRecall
    deleted: NDArray[np.int64]
    extras: SideExtras
    owner: NDArray[np.int64] | None = None

    def __post_init__(self) -> None:
        if self.recall.size != len(self.names):
            raise InvalidInputError(
                f"the {self.name.removesuffix('s')} recall index holds {self.recall.size} vectors, "
                f"not {len(self.names)}"
            )

    def __len__(self) -> int:
        return len(self.names)

    def cosines(self, queries: NDArray[np.float32], ids: NDArray[np.int64]) -> NDArray[np.float32]:
        """:func:`pair_cosines` of each query row with its ``ids`` (``-inf`` where the id is ``-1``).

        Always from the stored vectors, in float32 whatever the rerank's dtype: the coarse score is a
        cosine that the fusion adds to the fine one, and every method must fuse the same number."""
        cos = pair_cosines(queries, np.asarray(self.vectors[np.maximum(ids, 0)], np.float32))
        return np.where(ids >= 0, cos, -np.inf).astype(np.float32)

    def exact(self, queries: NDArray[np.float32], subset: NDArray[np.int64], k: int) -> Found:
        """The exact top ``k`` of ``subset`` by cosine, ties by id."""
        _, ids = exact_subset(self.vectors, queries, subset, k)
        cos, ids = in_tie_order(self.cosines(queries, ids), ids)
        return cos, cos, ids

    def items_of(self, images: NDArray[np.bool_]) -> NDArray[np.int64]:
        """Ids of the items whose image passes ``images`` (a mask over the gallery's images)."""
        keep = images if self.owner is None else images[self.owner]
        return np.flatnonzero(keep).astype(np.int64)


def gallery_sides(
    gallery: Gallery,
    image_recall: DenseRecall | None,
    caption_recall: DenseRecall | None,
    deleted: NDArray[np.int64],
    extras: dict[str, SideExtras],
) -> tuple[Side, Side | None]:
    """The images side and (when the gallery holds captions) the captions side; exact recall
    indexes are built from the vectors where none is given."""
    images = Side(
        "images",
        gallery.ids,
        gallery.vectors,
        gallery.patches,
        None,
        image_recall or DenseRecall(gallery.vectors),
        deleted,
        extras.get("images", SideExtras()),
    )
    store = gallery.captions
    if store is None or len(store.texts) == 0:
        if caption_recall is not None and caption_recall.size != 0:
            raise InvalidInputError(f"the caption recall index holds {caption_recall.size} vectors, not 0")
        return images, None
    dead = np.flatnonzero(np.isin(store.image_index, deleted)).astype(np.int64) if deleted.size else deleted
    captions = Side(
        "captions",
        store.texts,
        store.vectors,
        store.tokens,
        store.mask,
        caption_recall or DenseRecall(store.vectors),
        dead,
        extras.get("captions", SideExtras()),
        store.image_index,
    )
    return images, captions
