"""Statistics of benchmark runs that the product does not use: paired bootstrap of mR, and recall in
expectation over random orders of tied scores (one- and two-stage searches).

They score the same rankings as :mod:`rsir.model.metrics` (first-hit positions, relevance matrices) and keep
its conventions (K in ``KS``, percentages, :class:`~rsir.model.errors.InvalidInputError` on bad input).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from rsir.model.errors import InvalidInputError
from rsir.model.metrics import KS, QueryHits, RecallReport, as_score_matrix, check_ks


def bootstrap_mr(hits: Sequence[QueryHits], n_resamples: int = 2000, seed: int = 0) -> NDArray[np.float64]:
    """mR of each of several runs over the *same* queries, on ``n_resamples`` paired resamples.

    Caption queries and image queries are resampled (with replacement) independently, and every run
    sees the same resample, so differences and ratios between runs keep their pairing: the spread
    of ``out[:, a] / out[:, b]`` is the sampling uncertainty of that ratio. Returns
    ``[n_resamples, len(hits)]`` in percent.
    """
    return bootstrap_mr_rates([(hit_rates(h.t2i), hit_rates(h.i2t)) for h in hits], n_resamples, seed)


def hit_rates(first: NDArray[np.int64]) -> NDArray[np.float64]:
    """First-hit positions ``[N]`` -> ``[N, len(KS)]`` hits (1.0 or 0.0) at each K."""
    return np.stack([first < K for K in KS], axis=1).astype(np.float64)


def bootstrap_mr_rates(
    runs: Sequence[tuple[NDArray[np.float64], NDArray[np.float64]]], n_resamples: int = 2000, seed: int = 0
) -> NDArray[np.float64]:
    """:func:`bootstrap_mr` for runs given as per-query hit rates at K in ``KS``: ``(t2i [Nc, 3],
    i2t [Ni, 3])``, each entry a hit (0/1) or a hit probability (:func:`tie_aware_hits`)."""
    if not runs:
        raise InvalidInputError("bootstrap_mr needs at least one run")
    if n_resamples < 1:
        raise InvalidInputError(f"n_resamples must be >= 1, got {n_resamples}")
    n_t, n_i = runs[0][0].shape[0], runs[0][1].shape[0]
    if any(t.shape != (n_t, len(KS)) or i.shape != (n_i, len(KS)) for t, i in runs):
        raise InvalidInputError("bootstrap_mr compares runs over the same queries: query counts differ")
    if n_t == 0 or n_i == 0:
        raise InvalidInputError("bootstrap_mr needs caption and image queries")
    rng = np.random.default_rng(seed)
    pick_t = rng.integers(0, n_t, size=(n_resamples, n_t))
    pick_i = rng.integers(0, n_i, size=(n_resamples, n_i))
    out = np.empty((n_resamples, len(runs)), np.float64)
    for j, (t, i) in enumerate(runs):
        # mean over K and both directions of the resampled mean rate, in percent
        out[:, j] = 100.0 * (t.sum(1)[pick_t].mean(1) + i.sum(1)[pick_i].mean(1)) / (2 * len(KS))
    return out


def tie_aware_hits(
    scores: NDArray[np.generic], relevant: NDArray[np.bool_], ks: Sequence[int] = KS
) -> NDArray[np.float64]:
    """Per query, the probability of a hit at each K when tied scores are ordered at random.

    ``scores [Nq, Ng]``, ``relevant [Nq, Ng]`` bool; returns ``[Nq', len(ks)]`` for the ``Nq'`` queries
    with a relevant item. A ranking that breaks ties by index (as every search mode of
    :class:`rsir.search.engine.SearchEngine` and the stable sorts do: lower gallery index first) is one
    draw of this order; where relevance correlates with index (the own captions indexed first)
    that draw is biased, and the expectation is the unbiased figure. With ``m`` items scored above the
    best relevant score ``s*``, ``t`` items tied at ``s*`` and ``o`` of those relevant, the first
    ``r = K - m`` of the ``t`` tied places hold a relevant item with probability
    ``1 - C(t - o, r) / C(t, r)``.
    """
    s = as_score_matrix(scores, "scores").astype(np.float64, copy=False)
    rel = np.asarray(relevant, dtype=np.bool_)
    if rel.shape != s.shape:
        raise InvalidInputError(f"relevant {rel.shape} and scores {s.shape} must have the same shape")
    ks_ = check_ks(ks)
    has = rel.any(axis=1)
    s, rel = s[has], rel[has]
    best = np.where(rel, s, -np.inf).max(axis=1, keepdims=True)
    above = (s > best).sum(axis=1)
    tied = s == best
    return tie_probability(above, tied.sum(axis=1), (tied & rel).sum(axis=1), ks_)


def tie_probability(
    above: NDArray[np.integer[Any]],
    tied: NDArray[np.integer[Any]],
    tied_relevant: NDArray[np.integer[Any]],
    ks: Sequence[int] = KS,
) -> NDArray[np.float64]:
    """``P(hit@K)`` for ``above`` items ranked strictly first, then a random order of ``tied`` items of
    which ``tied_relevant`` (>= 1) are relevant; ``[..., len(ks)]``."""
    m = np.asarray(above, np.int64)[..., None]
    t = np.asarray(tied, np.int64)[..., None]
    o = np.asarray(tied_relevant, np.int64)[..., None]
    k = np.asarray(check_ks(ks), np.int64)
    r = np.clip(k - m, 0, t)  # tied places inside the top K
    # C(t-o, r) / C(t, r) = prod_{i<r} (t-o-i) / (t-i); a factor <= 0 means a relevant item must be in.
    miss = np.ones(np.broadcast_shapes(m.shape, k.shape), np.float64)
    for i in range(int(r.max(initial=0))):
        factor = np.clip((t - o - i) / np.maximum(t - i, 1), 0.0, 1.0)
        miss = np.where(i < r, miss * factor, miss)
    return 1.0 - miss


def expected_report(
    t2i_scores: NDArray[np.generic],
    t2i_relevant: NDArray[np.bool_],
    i2t_scores: NDArray[np.generic],
    i2t_relevant: NDArray[np.bool_],
) -> RecallReport:
    """R@1/5/10 both ways, in expectation over random orders of tied scores, for any relevance.

    ``t2i_scores [Nc, Ni]`` and ``i2t_scores [Ni, Nc]``; ``-inf`` marks an item a search did not return
    (outside a two-stage search's candidates), which is never a hit. Unlike :func:`tie_aware_hits`, a
    query with nothing relevant in reach counts as a miss, so every row of the relevance matrices is
    a query: relevance by ownership gives the standard recall in expectation, relevance by "the
    caption is true of the image" a true-match recall. Every query must have a relevant item
    somewhere, or it could never hit whatever the scores.
    """
    values: list[float] = []
    for name, scores, relevant in (("t2i", t2i_scores, t2i_relevant), ("i2t", i2t_scores, i2t_relevant)):
        s = np.asarray(scores, np.float64)
        rel = np.asarray(relevant, np.bool_)
        if s.ndim != 2 or rel.shape != s.shape:
            raise InvalidInputError(
                f"{name} scores {s.shape} and relevance {rel.shape} must be one matrix shape"
            )
        if np.isnan(s).any() or np.isposinf(s).any():
            raise InvalidInputError(f"{name} scores hold NaN or +inf")
        if not rel.any(axis=1).all():
            raise InvalidInputError(f"{name}: every query needs a relevant item")
        reach = rel & np.isfinite(s)
        floor = s[np.isfinite(s)].min(initial=0.0) - 1.0  # below every returned item
        p = tie_aware_hits(np.where(np.isfinite(s), s, floor), reach)
        values += list(100.0 * p.sum(axis=0) / s.shape[0])
    return RecallReport(*values)


def two_stage_tie_aware_hits(
    coarse: NDArray[np.generic],
    fused: NDArray[np.generic],
    relevant: NDArray[np.bool_],
    depth: int,
    ks: Sequence[int] = KS,
    draws: int = 1000,
    seed: int = 0,
) -> NDArray[np.float64]:
    """:func:`tie_aware_hits` for a two-stage search: the ``depth`` best by ``coarse`` (ties at the cut
    drawn at random), then ranked by ``fused`` (ties at random). ``[Nq', len(ks)]``.

    Only the draw of the cut's tied items is sampled (``draws`` times per query); the order within
    each draw's candidates is taken in expectation by :func:`tie_probability`.
    """
    c = as_score_matrix(coarse, "coarse").astype(np.float64, copy=False)
    f = as_score_matrix(fused, "fused").astype(np.float64, copy=False)
    rel = np.asarray(relevant, dtype=np.bool_)
    if not (c.shape == f.shape == rel.shape):
        raise InvalidInputError(f"coarse {c.shape}, fused {f.shape} and relevant {rel.shape} must agree")
    if isinstance(depth, bool) or not isinstance(depth, int | np.integer) or depth < 1:
        raise InvalidInputError(f"depth must be a positive integer, got {depth!r}")
    ks_ = check_ks(ks)
    rng = np.random.default_rng(seed)
    out = []
    for q in np.nonzero(rel.any(axis=1))[0]:
        cq, fq, rq = c[q], f[q], rel[q]
        if depth >= cq.size:
            out.append(tie_aware_hits(fq[None], rq[None], ks_)[0])
            continue
        cut = np.partition(cq, cq.size - depth)[cq.size - depth]  # the depth-th largest coarse score
        sure = np.nonzero(cq > cut)[0]
        edge = np.nonzero(cq == cut)[0]
        take = depth - sure.size
        # [draws, |edge|]: which tied items each draw lets through the cut (exactly `take` of them).
        keys = rng.random((draws, edge.size))
        chosen = np.argsort(np.argsort(keys, axis=1), axis=1) < take
        f_sure, r_sure, f_edge, r_edge = fq[sure], rq[sure], fq[edge], rq[edge]
        best_sure = f_sure[r_sure].max(initial=-np.inf)
        best_edge = np.where(chosen & r_edge, f_edge, -np.inf).max(axis=1)
        best = np.maximum(best_sure, best_edge)[:, None]  # [draws, 1]
        found = np.isfinite(best[:, 0])
        above = (f_sure > best).sum(1) + ((f_edge > best) & chosen).sum(1)
        tied = (f_sure == best).sum(1) + ((f_edge == best) & chosen).sum(1)
        tied_rel = ((f_sure == best) & r_sure).sum(1) + ((f_edge == best) & chosen & r_edge).sum(1)
        p = tie_probability(above, np.maximum(tied, 1), np.maximum(tied_rel, 1), ks_)
        out.append(np.where(found[:, None], p, 0.0).mean(axis=0))
    return np.asarray(out, np.float64).reshape(-1, len(ks_))
