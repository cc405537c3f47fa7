"""The request vocabulary: the names of the search methods and one query's options, in one place.

The engine, the service's request schemas and settings, the multipart form's OpenAPI schema and the
CLI all take their choices from here, so a new method is added here and in its implementation, and
nowhere else. They are ``Literal`` types (not enums) so that the plain strings callers and JSON
bodies carry type-check as they are; each has its tuple of values for the places that list them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from rsir.search.filters import Filters

Rerank = Literal["none", "ftf", "local", "exhaustive"]
"""``none``: the coarse order; ``ftf``: the FTF block over the recalled top K, fused with the coarse
score; ``local``: iEBAKER's local score instead; ``exhaustive``: the FTF block over the whole gallery
(for measurement: a server offers it only when its engine config allows it)."""

Recall = Literal["dense", "hash", "sgpd"]
"""``dense``: FAISS over the global vectors; ``hash``: CFITR codes by Hamming distance; ``sgpd``:
sparse-guided partial dense search."""

Sar = Literal["off", "hard", "soft"]
"""SAR's re-sort by reverse-retrieval rank: off, its hard form, or its soft form."""

HashPpsr = Literal["hamming", "cosine"]
"""PPSR over hash recall: ``hamming`` corrects minus the Hamming distance (ALGORITHMS.md §3, CFITR);
``cosine`` corrects the cosines of the Hamming order's candidates (measured better with the FTF rerank)."""

Target = Literal["images", "captions"]
"""What an image query searches (text queries always search images)."""

Modality = Literal["text", "image"]
"""What a query is: a sentence (or its encoding) or an image (or its encoding)."""

RERANKS: tuple[str, ...] = get_args(Rerank)
RECALLS: tuple[str, ...] = get_args(Recall)
SARS: tuple[str, ...] = get_args(Sar)
TARGETS: tuple[str, ...] = get_args(Target)
HASH_PPSRS: tuple[str, ...] = get_args(HashPpsr)

COARSE: Rerank = "none"
EXHAUSTIVE: Rerank = "exhaustive"
CANDIDATE_RERANKS: tuple[str, ...] = tuple(r for r in RERANKS if r not in (COARSE, EXHAUSTIVE))
"""The reranks that rescore recall's top ``recall_k`` candidates (every mode but the coarse order and
the whole-gallery measurement): a new one is added to :data:`Rerank` and to
``rsir.search.rerank.RERANKERS``."""


def uses_recall_depth(rerank: Rerank) -> bool:
    """Whether ``recall_k`` shapes the answer of this rerank (it rescores that many candidates)."""
    return rerank in CANDIDATE_RERANKS


def default_rerank(rerank: Rerank | None, modality: Modality, target: Target) -> Rerank:
    """The rerank a query runs when it names none: the FTF rerank for text queries and for image
    queries over captions, the coarse order for image queries over images (the FTF block scores
    text-image pairs)."""
    if rerank is not None:
        return rerank
    return COARSE if modality == "image" and target == "images" else "ftf"


@dataclass(frozen=True)
class QueryOptions:
    """One query's knobs. ``rerank``: None for the query's default (:func:`default_rerank`);
    ``filters``: conditions on the images' metadata, resolved by the engine against its index (None:
    every live image); an image query searches ``target``'s items (text queries search images)."""

    k: int = 10
    recall_k: int | None = None
    rerank: Rerank | None = None
    explain: bool = False
    filters: Filters | None = None
    target: Target = "images"
    recall: Recall = "dense"
    ppsr: bool = False
    sar: Sar = "off"
    # Caption search only: each caption text once, at its best-ranked copy. Archives repeat captions
    # across images (SynthRS's templates, RSICD's "many buildings are in a dense residential area"),
    # and a describe-this-image answer that lists one sentence five times tells the user nothing.
    distinct: bool = False
