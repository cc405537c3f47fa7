"""PPSR: the CSLS hubness correction of recall scores (ALGORITHMS.md §3). Training-free.

``s'(q, g) = 2 s(q, g) - r_q - r_g`` where

- ``r_q`` is the mean of q's top-``k`` similarities over the gallery, read off the recall scores the
  query already has (:func:`query_term`);
- ``r_g`` is the mean of gallery item g's top-``k`` similarities over a reference set of queries of
  q's modality (e.g. the indexed captions for image items), precomputed once per gallery item at
  index-build time (:func:`gallery_term`), stored as one float per item.

A hub (an item close to many queries) has a large ``r_g`` and is pushed down; a query in a dense region
has a large ``r_q``, which shifts all of its scores equally and so never changes its ranking.
:func:`csls` applies the correction to recall scores before the top-K cut. ``k = 10`` as in the paper.
"""

from __future__ import annotations

import faiss
import numpy as np
from numpy.typing import ArrayLike, NDArray

from rsir.model.errors import InvalidInputError

DEFAULT_K = 10
DEFAULT_CHUNK = 4096
DEFAULT_REF_CHUNK = 16384


def gallery_term(
    gallery_vectors: NDArray[np.float32],
    reference_vectors: NDArray[np.float32],
    k: int = DEFAULT_K,
    chunk: int = DEFAULT_CHUNK,
    ref_chunk: int = DEFAULT_REF_CHUNK,
) -> NDArray[np.float32]:
    """``r_g`` for every gallery item: the mean of its top-``k`` inner products with the reference set.

    Args:
        gallery_vectors: ``[N, d]`` (unit vectors: inner product = cosine).
        reference_vectors: ``[R, d]`` reference queries of the other modality.
        k: neighbours averaged; clipped to ``R`` when the reference set is smaller.
        chunk: gallery rows per block; ``ref_chunk``: reference rows per block. The similarity block
            in memory is at most ``chunk * ref_chunk * 4`` bytes (256 MiB at the defaults; lower them on a
            small machine), never ``N * R``: each block's top-``k`` is merged into a running top-``k``
            of ``chunk * k`` values, so a million-item gallery against a million captions works.

    Returns ``[N]`` float32.
    """
    G = _matrix(gallery_vectors, "gallery_vectors")
    Rv = _matrix(reference_vectors, "reference_vectors")
    if G.shape[1] != Rv.shape[1]:
        raise InvalidInputError(
            f"gallery and reference vectors must share the dimension, got {G.shape[1]} and {Rv.shape[1]}"
        )
    if Rv.shape[0] == 0:
        raise InvalidInputError("the reference set is empty")
    _positive(k=k, chunk=chunk, ref_chunk=ref_chunk)
    kk = min(k, Rv.shape[0])
    out = np.empty(G.shape[0], dtype=np.float32)
    for start in range(0, G.shape[0], chunk):
        block = G[start : start + chunk]
        best: NDArray[np.float32] | None = None  # running top-kk per row, unordered
        for r0 in range(0, Rv.shape[0], ref_chunk):
            sims = block @ Rv[r0 : r0 + ref_chunk].T
            pool = sims if best is None else np.concatenate([best, sims], axis=1)
            best = _top_values(pool, kk)
        assert best is not None  # R > 0
        out[start : start + chunk] = best.mean(axis=1, dtype=np.float64)
    return out


def hamming_gallery_term(
    gallery_codes: NDArray[np.uint8], reference_codes: NDArray[np.uint8], k: int = DEFAULT_K
) -> NDArray[np.float32]:
    """``r_g`` over hash codes: per gallery item, the mean of its ``k`` best scores (minus the Hamming
    distance, the score hash recall ranks by) against the reference queries' codes.

    CFITR applies CSLS to the Hamming scores (ALGORITHMS.md §3 fuses minus the Hamming distance), so
    ``r_g`` must be on that scale, not the cosine's. Exact: a ``faiss.IndexBinaryFlat`` over the
    references. ``[N, bits/8]`` and ``[R, bits/8]`` uint8 codes; returns ``[N]`` float32.
    """
    G = np.ascontiguousarray(gallery_codes)
    R = np.ascontiguousarray(reference_codes)
    if G.ndim != 2 or R.ndim != 2 or G.dtype != np.uint8 or R.dtype != np.uint8 or G.shape[1] != R.shape[1]:
        raise InvalidInputError(
            f"expected packed uint8 codes [N,b] and [R,b], got {G.dtype} {G.shape} and {R.dtype} {R.shape}"
        )
    if R.shape[0] == 0:
        raise InvalidInputError("the reference set is empty")
    _positive(k=k)
    index = faiss.IndexBinaryFlat(G.shape[1] * 8)
    index.add(R)
    distances, _ = index.search(G, min(k, R.shape[0]))
    out: NDArray[np.float32] = (-distances.astype(np.float64).mean(axis=1)).astype(np.float32)
    return out


def query_term(top_scores: ArrayLike, k: int = DEFAULT_K) -> NDArray[np.float32]:
    """``r_q`` for every query: the mean of its ``k`` best recall scores ``[Q, >=k]``.

    The scores need not be sorted. ``-inf`` padding (a gallery smaller than ``k``, or ids a filter
    removed) is ignored: the mean runs over the finite scores among the ``k`` best; a row with none
    gets ``r_q = 0`` (its scores stay ``-inf`` under :func:`csls` anyway). Fewer than ``k`` columns is
    an error: recall must be asked for at least ``k`` candidates for ``r_q`` to mean the same thing
    whatever top-K the caller wants.
    """
    S = np.asarray(top_scores, dtype=np.float32)
    if S.ndim != 2:
        raise InvalidInputError(f"top_scores must be [Q, >=k], got shape {S.shape}")
    _positive(k=k)
    if S.shape[1] < k:
        raise InvalidInputError(f"r_q needs at least k={k} recall scores per query, got {S.shape[1]}")
    top = _top_values(S, k).astype(np.float64)
    finite = np.isfinite(top)
    count = finite.sum(axis=1)
    total = np.where(finite, top, 0.0).sum(axis=1)
    r_q = np.zeros(total.shape, dtype=np.float64)
    np.divide(total, count, out=r_q, where=count > 0)
    return r_q.astype(np.float32)


def csls(scores: ArrayLike, r_q: ArrayLike, r_g_of_candidates: ArrayLike) -> NDArray[np.float32]:
    """``2 s - r_q - r_g`` for ``scores [Q, K]``, ``r_q [Q]`` and the candidates' ``r_g`` ``[Q, K]``.

    ``-inf`` scores (padding) stay ``-inf``, whatever ``r_g`` the padding slot was given. The result is
    not re-sorted: order candidates by it before the top-K cut.
    """
    S = np.asarray(scores, dtype=np.float32)
    rq = np.asarray(r_q, dtype=np.float32)
    rg = np.asarray(r_g_of_candidates, dtype=np.float32)
    if S.ndim != 2 or rq.shape != (S.shape[0],) or rg.shape != S.shape:
        raise InvalidInputError(
            f"expected scores [Q,K], r_q [Q], r_g [Q,K]; got {S.shape}, {rq.shape}, {rg.shape}"
        )
    with np.errstate(invalid="ignore"):  # -inf - (-inf) in padding slots, replaced below
        out = 2.0 * S - rq[:, None] - rg
    return np.where(np.isneginf(S), np.float32(-np.inf), out).astype(np.float32)


def _top_values(x: NDArray[np.float32], k: int) -> NDArray[np.float32]:
    """The ``k`` largest values of each row of ``x [B, m]`` (``k <= m``), in no particular order."""
    if k >= x.shape[1]:
        return x
    part: NDArray[np.float32] = np.partition(x, x.shape[1] - k, axis=1)[:, x.shape[1] - k :]
    return part


def _matrix(x: NDArray[np.float32], name: str) -> NDArray[np.float32]:
    arr = np.ascontiguousarray(x, dtype=np.float32)
    if arr.ndim != 2:
        raise InvalidInputError(f"{name} must be [rows, d], got shape {arr.shape}")
    return arr


def _positive(**values: int) -> None:
    for name, value in values.items():
        if value < 1:
            raise InvalidInputError(f"{name} must be >= 1, got {value}")
