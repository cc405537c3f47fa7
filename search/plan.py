"""A query's options checked against one engine: the one place with the bounds and the refusals.

:func:`check` turns :class:`QueryOptions` into a :class:`Plan` (or raises
:class:`InvalidInputError`, which the service answers with a 422): the defaults resolved, the side it
searches chosen, its recall depth worked out and its metadata filter resolved to a mask over images.
The engine's stages read plans only, so nothing below the engine's boundary checks options again.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from rsir.index.columns import MetadataColumns
from rsir.index.extras import HashHeads
from rsir.model.errors import InvalidInputError
from rsir.search.config import EngineConfig
from rsir.search.filters import Filters, filter_mask
from rsir.search.options import (
    COARSE,
    EXHAUSTIVE,
    RECALLS,
    RERANKS,
    SARS,
    TARGETS,
    Modality,
    QueryOptions,
    Rerank,
    default_rerank,
    uses_recall_depth,
)
from rsir.search.side import Side


@dataclass(frozen=True, eq=False)
class Plan:
    """``options`` as given; ``rerank`` resolved; ``depth``: how many candidates recall fetches;
    ``allowed``: the live images the filters let through (None: no filter); ``checked_by``: the engine's
    identity, so a plan is never run by an engine whose bounds or metadata did not check it."""

    options: QueryOptions
    modality: Modality
    rerank: Rerank
    depth: int
    allowed: NDArray[np.bool_] | None
    checked_by: object

    @property
    def image_query(self) -> bool:
        return self.modality == "image"


@dataclass(frozen=True, eq=False)
class Bounds:
    """What a check reads from its engine."""

    config: EngineConfig
    images: Side
    captions: Side | None
    hash_heads: HashHeads | None
    metadata: MetadataColumns
    live_images: NDArray[np.bool_]
    checked_by: object

    def allowed(self, filters: Filters) -> NDArray[np.bool_]:
        """The live images that meet ``filters``: what a filtered search draws from."""
        return filter_mask(self.metadata, filters) & self.live_images


def check(o: QueryOptions, modality: Modality, b: Bounds) -> Plan:
    """Validate one query's options (raises :class:`InvalidInputError`) and plan it."""
    if o.target not in TARGETS:
        raise InvalidInputError(f"target must be 'images' or 'captions', got {o.target!r}")
    rerank = default_rerank(o.rerank, modality, o.target)
    image_query = modality == "image"
    if rerank not in RERANKS:
        raise InvalidInputError(f"rerank must be one of {', '.join(RERANKS)}; got {rerank!r}")
    if rerank == EXHAUSTIVE and not b.config.allow_exhaustive:
        raise InvalidInputError(
            "rerank 'exhaustive' scores the whole gallery and is for measurement (rsir eval); "
            f"this server offers {', '.join(r for r in RERANKS if r != EXHAUSTIVE)}"
        )
    if o.target == "captions" and not image_query:
        raise InvalidInputError("text queries search images (target 'images')")
    if o.target == "images" and image_query and rerank != COARSE:
        raise InvalidInputError(
            "image-to-image search is coarse only (rerank='none'): the FTF block scores text-image pairs"
        )
    if o.target == "captions" and b.captions is None:
        raise InvalidInputError("this index has no captions to search")
    c = b.config
    if not 1 <= o.k <= c.max_k:
        raise InvalidInputError(f"k must be in [1, {c.max_k}], got {o.k}")
    if o.explain and c.max_explain_k is not None and o.k > c.max_explain_k:
        raise InvalidInputError(f"k must be in [1, {c.max_explain_k}] with explain, got {o.k}")
    recall_k = c.default_recall_k if o.recall_k is None else o.recall_k
    if not 1 <= recall_k <= c.max_recall_k:
        raise InvalidInputError(f"recall_k must be in [1, {c.max_recall_k}], got {recall_k}")
    if o.recall_k is not None and o.recall_k < o.k and not c.allow_recall_k_below_k:
        raise InvalidInputError(f"recall_k must be in [k ({o.k}), {c.max_recall_k}], got {o.recall_k}")
    if o.recall not in RECALLS:
        raise InvalidInputError(f"recall must be one of {', '.join(RECALLS)}; got {o.recall!r}")
    if o.sar not in SARS:
        raise InvalidInputError(f"sar must be one of {', '.join(SARS)}; got {o.sar!r}")
    side = b.captions if o.target == "captions" and b.captions is not None else b.images
    needs = {
        "hash": o.recall == "hash" and (side.extras.hash is None or b.hash_heads is None),
        "sgpd": o.recall == "sgpd" and side.extras.sgpd is None,
        "ppsr": o.ppsr and ppsr_term(b.config, o.recall, side) is None,
        "sar": o.sar != "off" and side.extras.sar_profiles is None,
    }
    for name, missing in needs.items():
        if missing:
            raise InvalidInputError(f"{name} is not available for this index (its data was not built)")
    if (o.ppsr or o.sar != "off") and image_query and o.target == "images":
        raise InvalidInputError(
            "ppsr and sar correct cross-modal scores; image-to-image search takes neither"
        )
    if rerank == EXHAUSTIVE and (o.recall != "dense" or o.ppsr or o.sar != "off"):
        raise InvalidInputError("exhaustive scores every item: it takes no recall method, ppsr or sar")
    if o.distinct and not (image_query and o.target == "captions"):
        raise InvalidInputError("distinct applies to caption search (an image query, target 'captions')")
    if o.distinct and rerank == EXHAUSTIVE:
        raise InvalidInputError("exhaustive is for measurement: it takes no distinct")
    # distinct drops repeated texts, so it needs candidates beyond k even without a rerank.
    deep = uses_recall_depth(rerank) or o.sar != "off" or o.distinct
    depth = max(recall_k, o.k) if deep else o.k
    allowed = None
    if o.filters is not None and not o.filters.is_empty:
        allowed = b.allowed(o.filters)
    return Plan(o, modality, rerank, depth, allowed, b.checked_by)


def ppsr_term(config: EngineConfig, method: str, side: Side) -> NDArray[np.float32] | None:
    """PPSR's stored ``r_g`` for recall ``method``: over Hamming scores for hash recall (unless the
    cosine variant is configured), over cosines otherwise."""
    hamming = method == "hash" and config.hash_ppsr == "hamming"
    return side.extras.ppsr_rg_hash if hamming else side.extras.ppsr_rg
