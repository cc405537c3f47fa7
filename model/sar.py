"""SAR, sort after reversed retrieval (ALGORITHMS.md §4, [ours] after GaLR's reverse rerank).

For a query q and its top-K candidates ``c_j``, ``rho_j`` is the rank of ``s(q, c_j)`` among the
similarities of ``c_j`` to a reference set of R items of q's modality: "would ``c_j`` retrieve q back,
and how high?". A candidate that q is unusually close to (relative to everything else it is close to)
gets a small ``rho_j``.

Storage: :func:`reference_profiles` precomputes, per gallery item, its R reference similarities
sorted in DESCENDING order (``[N, R]`` float32, ``N * R * 4`` bytes: 4 GB for a million items against
R = 1,000, so R is a sample of the reference queries, not all of them). At query time
:func:`reverse_ranks` finds each candidate's rank by a binary search over its row (``log2 R`` steps),
vectorised over all ``Q * K`` candidates at once.

Reranking: :func:`sar_order` (hard: ascending ``rho``, ties by descending original score) or
:func:`sar_soft` (``s + w * exp(-0.05 * rho)``).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from rsir.model.errors import InvalidInputError

DEFAULT_CHUNK = 4096
SOFT_DECAY = 0.05


def reference_profiles(
    gallery_vectors: NDArray[np.float32],
    reference_vectors: NDArray[np.float32],
    chunk: int = DEFAULT_CHUNK,
    out: NDArray[np.float32] | None = None,
) -> NDArray[np.float32]:
    """Every gallery item's similarities to the reference set, each row sorted descending.

    Args:
        gallery_vectors: ``[N, d]``; reference_vectors: ``[R, d]`` (R a sample, e.g. 1,000).
        chunk: gallery rows per block (``chunk * R * 4`` bytes of working memory).
        out: an optional ``[N, R]`` float32 array to fill (e.g. an ``np.memmap``), since the result is
            ``N * R * 4`` bytes.

    Returns ``[N, R]`` float32, ``out`` when given.
    """
    G = np.ascontiguousarray(gallery_vectors, dtype=np.float32)
    Rv = np.ascontiguousarray(reference_vectors, dtype=np.float32)
    if G.ndim != 2 or Rv.ndim != 2 or G.shape[1] != Rv.shape[1]:
        raise InvalidInputError(
            f"expected gallery [N,d] and reference [R,d] vectors, got {G.shape} and {Rv.shape}"
        )
    if Rv.shape[0] == 0:
        raise InvalidInputError("the reference set is empty")
    if chunk < 1:
        raise InvalidInputError(f"chunk must be >= 1, got {chunk}")
    shape = (G.shape[0], Rv.shape[0])
    if out is None:
        out = np.empty(shape, dtype=np.float32)
    elif out.shape != shape or out.dtype != np.float32:
        raise InvalidInputError(f"out must be float32 {shape}, got {out.dtype} {out.shape}")
    for start in range(0, G.shape[0], chunk):
        # float64 then one rounding, as rsir.index.dense.pair_cosines scores a query at search time: a
        # query that is itself a reference then meets its own entry as an exact tie.
        sims = (G[start : start + chunk].astype(np.float64) @ Rv.T.astype(np.float64)).astype(np.float32)
        sims.sort(axis=1)
        out[start : start + chunk] = sims[:, ::-1]
    return out


def reverse_ranks(profiles_of_candidates: ArrayLike, scores: ArrayLike) -> NDArray[np.int64]:
    """``rho [Q, K]``: how many of each candidate's reference similarities are strictly greater than
    ``s(q, c_j)`` (a 0-based rank; a tie with a reference similarity does not count against it).

    Args:
        profiles_of_candidates: ``[Q, K, R]``, the candidates' rows of :func:`reference_profiles`
            (each sorted descending), e.g. ``profiles[ids]``.
        scores: ``[Q, K]`` the query-candidate similarities.

    Each row's entries greater than the score form a prefix of the descending row, so its length is
    found by a binary search; the search runs for all ``Q * K`` rows together. A ``-inf`` score
    (padding) gets ``rho = R`` (every finite similarity is greater).
    """
    P = np.asarray(profiles_of_candidates, dtype=np.float32)
    S = np.asarray(scores, dtype=np.float32)
    if P.ndim != 3 or S.shape != P.shape[:2]:
        raise InvalidInputError(f"expected profiles [Q,K,R] and scores [Q,K], got {P.shape} and {S.shape}")
    R = P.shape[2]
    flat = P.reshape(-1, R)
    s = S.reshape(-1)
    lo = np.zeros(s.shape[0], dtype=np.int64)  # invariant: flat[:lo] > s >= flat[hi:]
    hi = np.full(s.shape[0], R, dtype=np.int64)
    if R > 0:
        for _ in range(int(R).bit_length()):
            active = lo < hi
            mid = (lo + hi) // 2
            value = np.take_along_axis(flat, np.minimum(mid, R - 1)[:, None], axis=1)[:, 0]
            greater = value > s
            lo = np.where(active & greater, mid + 1, lo)
            hi = np.where(active & ~greater, mid, hi)
    return lo.reshape(S.shape)


def sar_order(scores: ArrayLike, rho: ArrayLike) -> NDArray[np.int64]:
    """The hard SAR order: per query, candidate indices (into K) by ascending ``rho``, ties by
    descending original score, then by original position (so the order is fully deterministic).
    ``-inf`` (padding) candidates always come last, whatever their ``rho``.

    Returns ``[Q, K]`` int64; ``np.take_along_axis(ids, order, 1)`` reorders the candidates.
    """
    S, rh = _pair(scores, rho)
    padding = np.isneginf(S)
    # np.lexsort sorts by the last key first and is stable, so equal keys keep their position order.
    order = np.lexsort((-S.astype(np.float64), rh, padding), axis=-1)
    return order.astype(np.int64)


def sar_soft(scores: ArrayLike, rho: ArrayLike, w: float) -> NDArray[np.float32]:
    """The soft SAR score ``s + w * exp(-0.05 * rho)`` (``[Q, K]``; ``-inf`` stays ``-inf``)."""
    S, rh = _pair(scores, rho)
    bonus = w * np.exp(-SOFT_DECAY * rh.astype(np.float64))
    return (S + bonus).astype(np.float32)


def _pair(scores: ArrayLike, rho: ArrayLike) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    S = np.asarray(scores, dtype=np.float32)
    rh = np.asarray(rho, dtype=np.int64)
    if S.ndim != 2 or rh.shape != S.shape:
        raise InvalidInputError(f"expected scores and rho of the same [Q,K] shape, got {S.shape}, {rh.shape}")
    return S, rh
