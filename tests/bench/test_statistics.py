"""bench.statistics against brute force over every tie order, the binomial, and cases worked by hand."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import numpy as np
import pytest

from bench import statistics
from bench.statistics import bootstrap_mr
from rsir.model.errors import InvalidInputError
from rsir.model.metrics import KS, QueryHits, i2t_recall, ranks_from_similarity, report_from_similarity

NO_HIT = int(np.iinfo(np.int64).max)


def _hits(t2i: list[int], i2t: list[int]) -> QueryHits:
    return QueryHits(t2i=np.array(t2i, np.int64), i2t=np.array(i2t, np.int64))


def test_bootstrap_mr_spread_matches_the_binomial() -> None:
    # 400 caption queries, half hit at rank 0 and half never; every image query hits at rank 0. Then
    # R@1 = R@5 = R@10 for t2i, i2t is 100 on every resample, mR = (t2i + 100) / 2, and the spread
    # of t2i recall over resamples is the binomial's, 100 * sqrt(p (1 - p) / n) = 2.5 points.
    run = _hits([0] * 200 + [NO_HIT] * 200, [0] * 50)
    mr = bootstrap_mr([run], n_resamples=4000, seed=1)[:, 0]
    assert mr.shape == (4000,)
    assert mr.mean() == pytest.approx(75.0, abs=0.2)
    assert mr.std() == pytest.approx(2.5 / 2, rel=0.1)


def test_bootstrap_mr_is_paired_across_runs() -> None:
    a = _hits([0, 3, NO_HIT, 7, 0], [2, NO_HIT, 0])
    b = _hits([0, 3, NO_HIT, 7, 0], [2, NO_HIT, 0])
    worse = _hits([NO_HIT] * 5, [NO_HIT] * 3)
    out = bootstrap_mr([a, b, worse], n_resamples=300)
    np.testing.assert_array_equal(out[:, 0], out[:, 1])  # same queries drawn for every run
    assert (out[:, 2] == 0).all() and (out[:, 0] >= 0).all()
    with pytest.raises(InvalidInputError, match="same queries"):
        bootstrap_mr([a, _hits([0], [0])])


# -- ties ordered at random ---------------------------------------------------------------------------


def _enumerated_hits(
    order_of: Callable[[tuple[int, ...]], list[int]], relevant: np.ndarray, n: int
) -> np.ndarray:
    """Mean hit@K over every permutation ``pos`` of the gallery, ties broken by ``pos``: the exact
    expectation under random tie-breaking, by brute force."""
    total = np.zeros(len(KS))
    perms = list(itertools.permutations(range(n)))
    for pos in perms:
        ranking = order_of(pos)
        first = next((i for i, g in enumerate(ranking) if relevant[g]), None)
        total += [first is not None and first < K for K in KS]
    return total / len(perms)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_tie_aware_hits_equal_the_mean_over_every_tie_order(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 7
    scores = rng.integers(0, 3, size=(3, n)).astype(np.float64)  # few values: many ties
    relevant = rng.random((3, n)) < 0.3
    relevant[:, 0] = True  # every query has something to find
    got = statistics.tie_aware_hits(scores, relevant, KS)
    for q in range(3):

        def order(pos: tuple[int, ...], q: int = q) -> list[int]:
            return sorted(range(n), key=lambda g: (-scores[q, g], pos[g]))

        np.testing.assert_allclose(got[q], _enumerated_hits(order, relevant[q], n), atol=1e-12)


def test_tie_aware_hits_without_ties_are_the_plain_recall() -> None:
    rng = np.random.default_rng(5)
    sim = rng.random((40, 60))  # image x caption, no ties
    cap_img = np.repeat(np.arange(12), 5)
    relevant = cap_img[None, :] == np.arange(40)[:, None]
    # images 12..39 own no caption; tie_aware_hits scores only queries with a relevant item
    plain = i2t_recall(ranks_from_similarity(sim, 10), cap_img, captionless="skip")
    got = statistics.tie_aware_hits(sim, relevant)
    assert got.shape == (12, 3)
    assert {K: 100 * got[:, j].mean() for j, K in enumerate(KS)} == pytest.approx(plain)


def test_tie_probability_by_hand() -> None:
    # 2 items above, then 10 tied of which 1 is relevant: P(hit@1) = 0, P(hit@5) = 3/10, P(hit@10) = 8/10.
    np.testing.assert_allclose(
        statistics.tie_probability(np.array(2), np.array(10), np.array(1)), [0, 0.3, 0.8]
    )
    # 4 tied, 3 relevant, none above: any one place holds a relevant item w.p. 3/4, two places surely.
    np.testing.assert_allclose(
        statistics.tie_probability(np.array(0), np.array(4), np.array(3), ks=(1, 2)), [0.75, 1.0]
    )


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_two_stage_tie_aware_hits_equal_the_mean_over_every_tie_order(seed: int) -> None:
    # Items come in groups that share both scores (identical captions do); the cut at `depth` falls
    # inside a tied group. The brute force is the engine's procedure: coarse order with ties by
    # position, keep `depth`, stable sort by fused.
    rng = np.random.default_rng(seed)
    n, depth = 7, 3
    group = rng.integers(0, 3, size=n)
    coarse = rng.permutation(3).astype(np.float64)[group][None]
    fused = rng.permutation(3).astype(np.float64)[group][None]
    relevant = (rng.random(n) < 0.4)[None]
    relevant[0, rng.integers(n)] = True

    def order(pos: tuple[int, ...]) -> list[int]:
        kept = sorted(range(n), key=lambda g: (-coarse[0, g], pos[g]))[:depth]
        return sorted(kept, key=lambda g: -fused[0, g])  # stable: coarse order within fused ties

    want = _enumerated_hits(order, relevant[0], n)
    got = statistics.two_stage_tie_aware_hits(coarse, fused, relevant, depth, draws=20_000, seed=seed)[0]
    np.testing.assert_allclose(got, want, atol=0.02)  # sampled cut: ~0.004 standard error


def test_two_stage_tie_aware_hits_by_hand() -> None:
    # Item 0 above the cut; items 1-4 tied at the cut, 2 of them kept (depth 3); item 2 is relevant
    # (and so is item 6, which never passes the cut). The kept pair outranks item 0 on the fused score
    # and is ordered at random: hit@1 = P(2 kept) P(2 first) = 1/2 * 1/2, hit@5 = hit@10 = 1/2.
    coarse = np.array([[3.0, 2, 2, 2, 2, 1, 1, 1]])
    fused = np.array([[0.0, 5, 5, 5, 5, 9, 9, 9]])
    relevant = np.zeros((1, 8), bool)
    relevant[0, [2, 6]] = True
    got = statistics.two_stage_tie_aware_hits(coarse, fused, relevant, depth=3, draws=40_000)[0]
    np.testing.assert_allclose(got, [0.25, 0.5, 0.5], atol=0.01)

    def order(pos: tuple[int, ...]) -> list[int]:
        kept = sorted(range(8), key=lambda g: (-coarse[0, g], pos[g]))[:3]
        return sorted(kept, key=lambda g: -fused[0, g])

    np.testing.assert_allclose(_enumerated_hits(order, relevant[0], 8), [0.25, 0.5, 0.5])


def test_two_stage_at_full_depth_is_the_one_stage_expectation() -> None:
    rng = np.random.default_rng(9)
    coarse = rng.integers(0, 4, size=(5, 30)).astype(np.float64)
    fused = rng.integers(0, 4, size=(5, 30)).astype(np.float64)
    relevant = rng.random((5, 30)) < 0.2
    relevant[:, 3] = True
    np.testing.assert_allclose(
        statistics.two_stage_tie_aware_hits(coarse, fused, relevant, depth=30),
        statistics.tie_aware_hits(fused, relevant),
    )


def test_tie_aware_inputs_are_checked() -> None:
    with pytest.raises(InvalidInputError, match="same shape"):
        statistics.tie_aware_hits(np.zeros((2, 3)), np.zeros((2, 4), bool))
    with pytest.raises(InvalidInputError, match="depth"):
        statistics.two_stage_tie_aware_hits(np.zeros((1, 3)), np.zeros((1, 3)), np.ones((1, 3), bool), 0)


def test_bootstrap_of_hit_probabilities_centres_on_the_expected_mr() -> None:
    # Every caption query hits at every K with probability 0.2 and every image query with 0.6: the
    # resampled mR is the constant (0.2 + 0.6) / 2 = 40%, with no spread (all queries are alike).
    t2i, i2t = np.full((30, 3), 0.2), np.full((10, 3), 0.6)
    out = statistics.bootstrap_mr_rates([(t2i, i2t)], n_resamples=50)
    np.testing.assert_allclose(out[:, 0], 40.0)
    # 0/1 rates give bootstrap_mr's figures on the same resamples.
    run = _hits([0, 3, NO_HIT, 7, 0], [2, NO_HIT, 0])
    np.testing.assert_allclose(
        statistics.bootstrap_mr_rates([(statistics.hit_rates(run.t2i), statistics.hit_rates(run.i2t))], 100),
        bootstrap_mr([run], 100),
    )
    with pytest.raises(InvalidInputError, match="same queries"):
        statistics.bootstrap_mr_rates([(t2i, i2t), (t2i[:5], i2t)])


def test_expected_report_without_ties_is_the_standard_recall() -> None:
    rng = np.random.default_rng(11)
    sim = rng.random((12, 60))  # image x caption, no ties
    cap_img = np.repeat(np.arange(12), 5)
    own_i2t = cap_img[None, :] == np.arange(12)[:, None]
    got = statistics.expected_report(sim.T, own_i2t.T, sim, own_i2t)
    assert got.as_dict() == pytest.approx(report_from_similarity(sim, cap_img).as_dict())


def test_expected_report_by_hand() -> None:
    # t2i: 2 caption queries over 3 images. Query 0's own image was not returned (-inf): a miss at
    # every K. Query 1's own image ties with one other at the top: R@1 = 1/2, R@5 = R@10 = 1.
    t2i = np.array([[-np.inf, 0.5, 0.2], [0.9, 0.9, 0.1]])
    t2i_rel = np.array([[True, False, False], [False, True, False]])
    # i2t: one image query; the second and third captions are relevant, the third ranks first.
    i2t = np.array([[0.3, 0.2, 0.8]])
    i2t_rel = np.array([[False, True, True]])
    got = statistics.expected_report(t2i, t2i_rel, i2t, i2t_rel)
    assert (got.t2i_r1, got.t2i_r5, got.t2i_r10) == pytest.approx((25.0, 50.0, 50.0))
    assert (got.i2t_r1, got.i2t_r5, got.i2t_r10) == pytest.approx((100.0, 100.0, 100.0))


def test_expected_report_rejects_queries_that_cannot_hit() -> None:
    with pytest.raises(InvalidInputError, match="every query needs a relevant item"):
        statistics.expected_report(
            np.zeros((2, 3)),
            np.array([[True, False, False], [False] * 3]),
            np.zeros((1, 2)),
            np.ones((1, 2), bool),
        )
    with pytest.raises(InvalidInputError, match="NaN"):
        statistics.expected_report(
            np.full((1, 1), np.nan), np.ones((1, 1), bool), np.zeros((1, 1)), np.ones((1, 1), bool)
        )
