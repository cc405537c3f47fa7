"""The request vocabulary: the names of the search methods, in one place.

The engine, the service's request schemas and settings, the multipart form's OpenAPI schema and the
CLI all take their choices from here, so a new method is added here and in its implementation, and
nowhere else. They are ``Literal`` types (not enums) so that the plain strings callers and JSON
bodies carry type-check as they are; each has its tuple of values for the places that list them.
"""

from __future__ import annotations

from typing import Literal, get_args

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

RERANKS: tuple[str, ...] = get_args(Rerank)
RECALLS: tuple[str, ...] = get_args(Recall)
SARS: tuple[str, ...] = get_args(Sar)
TARGETS: tuple[str, ...] = get_args(Target)
HASH_PPSRS: tuple[str, ...] = get_args(HashPpsr)


def image_rerank(rerank: Rerank | None, target: Target) -> Rerank:
    """An image query's rerank when none is asked for: the coarse order over images (the FTF block
    scores text-image pairs) and the FTF rerank over captions."""
    if rerank is not None:
        return rerank
    return "none" if target == "images" else "ftf"
