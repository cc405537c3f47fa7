"""Recall@K against small cases worked out by hand and against a brute-force rank loop."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import numpy as np
import pytest

from model import metrics
from model.errors import InvalidInputError
from model.metrics import (
    KS,
    QueryHits,
    RecallReport,
    bootstrap_mr,
    i2t_recall,
    query_hits,
    ranks_from_similarity,
    recall_report,
    report_from_similarity,
    t2i_recall,
)


def _ints(rows: list[list[int]] | list[int]) -> np.ndarray:
    return np.asarray(rows, dtype=np.int64)


# 3 images x 6 captions, two captions per image (c0,c1 -> img0; c2,c3 -> img1; c4,c5 -> img2).
SIM_3x6 = np.array(
    [
        [0.9, 0.1, 0.8, 0.2, 0.3, 0.4],
        [0.5, 0.6, 0.7, 0.1, 0.2, 0.3],
        [0.2, 0.3, 0.1, 0.9, 0.5, 0.6],
    ]
)
CAP_3x6 = _ints([0, 0, 1, 1, 2, 2])


def test_hand_computed_3x6() -> None:
    # i2t, rows sorted by score:
    #   img0: c0 .9, c2 .8, c5 .4, c4 .3, c3 .2, c1 .1 -> own c0 at rank 0: hit@1
    #   img1: c2 .7, c1 .6, c0 .5, c5 .3, c4 .2, c3 .1 -> own c2 at rank 0: hit@1
    #   img2: c3 .9, c5 .6, c4 .5, c1 .3, c0 .2, c2 .1 -> own c5 at rank 1: miss@1, hit@5
    #   R@1 = 2/3, R@5 = R@10 = 3/3
    # t2i, columns (img0, img1, img2):
    #   c0 (.9 .5 .2) own img0 rank 0 | c1 (.1 .6 .3) own img0 rank 2 | c2 (.8 .7 .1) own img1 rank 1
    #   c3 (.2 .1 .9) own img1 rank 2 | c4 (.3 .2 .5) own img2 rank 0 | c5 (.4 .3 .6) own img2 rank 0
    #   R@1 = 3/6; R@5 = R@10 = 6/6 (the gallery has only 3 images)
    rep = report_from_similarity(SIM_3x6, CAP_3x6)
    assert rep.t2i_r1 == pytest.approx(50.0)
    assert rep.t2i_r5 == pytest.approx(100.0)
    assert rep.t2i_r10 == pytest.approx(100.0)
    assert rep.i2t_r1 == pytest.approx(200.0 / 3)
    assert rep.i2t_r5 == pytest.approx(100.0)
    assert rep.i2t_r10 == pytest.approx(100.0)
    assert rep.mR == pytest.approx((50 + 100 + 100 + 200 / 3 + 100 + 100) / 6)
    # The ranked lists themselves, as worked out above.
    np.testing.assert_array_equal(ranks_from_similarity(SIM_3x6, 10)[2], [3, 5, 4, 1, 0, 2])
    np.testing.assert_array_equal(ranks_from_similarity(SIM_3x6.T, 10)[1], [1, 2, 0])


def test_t2i_ranks_at_known_positions_in_a_larger_gallery() -> None:
    # 12 images, 4 caption queries whose own image sits at rank 0, 3, 7 and 11 (cut off at 10):
    # R@1 = 1/4, R@5 = 2/4, R@10 = 3/4.
    caption_image = _ints([0, 1, 2, 3])
    rows = []
    for own, pos in zip(caption_image, [0, 3, 7, 11], strict=True):
        others = [i for i in range(12) if i != own]
        rows.append([*others[:pos], int(own), *others[pos:]][:10])
    assert t2i_recall(_ints(rows), caption_image) == pytest.approx({1: 25.0, 5: 50.0, 10: 75.0})
    assert t2i_recall(_ints(rows), caption_image, ks=(4, 8)) == pytest.approx({4: 50.0, 8: 75.0})


def test_duplicate_captions_each_count() -> None:
    # c0 and c1 are the same caption of img0 (identical score columns); c2 belongs to img1.
    sim = np.array([[0.2, 0.2, 0.1], [0.8, 0.8, 0.7]])
    caption_image = _ints([0, 0, 1])
    # t2i: c0 (.2 .8) and c1 (.2 .8) both rank img0 second: two misses; c2 (.1 .7) hits.
    #   R@1 = 1/3 (merging the duplicates would give 1/2).
    # i2t: img0 row (.2 .2 .1) -> c0 first: hit@1. img1 row (.8 .8 .7) -> c0, c1 both ahead of its c2:
    #   rank 2, miss@1 (merging would put c2 at rank 1). R@1 = 1/2, R@5 = 2/2.
    rep = report_from_similarity(sim, caption_image)
    assert rep.t2i_r1 == pytest.approx(100.0 / 3)
    assert rep.t2i_r5 == pytest.approx(100.0)
    assert (rep.i2t_r1, rep.i2t_r5, rep.i2t_r10) == pytest.approx((50.0, 100.0, 100.0))


def test_images_with_one_two_and_five_captions() -> None:
    # img0 owns c0; img1 owns c1, c2; img2 owns c3..c7 (8 captions, so 8 results is the whole gallery).
    caption_image = _ints([0, 1, 1, 2, 2, 2, 2, 2])
    ranked = _ints(
        [
            [1, 2, 3, 4, 5, 6, 7, 0],  # img0: own c0 at rank 7 -> hit@10 only
            [3, 4, 2, 1, 5, 6, 7, 0],  # img1: first own (c2) at rank 2 -> hit@5
            [3, 0, 1, 2, 4, 5, 6, 7],  # img2: c3 at rank 0 -> hit@1
        ]
    )
    assert i2t_recall(ranked, caption_image) == pytest.approx({1: 100 / 3, 5: 200 / 3, 10: 100.0})


def test_image_without_captions_is_an_i2t_miss_by_default() -> None:
    # img1 has no caption. The published convention (clip_benchmark, the seeds' evaluators): it is
    # still an i2t query, and a miss at every K. img0 hits @1, img2's own c2 is at rank 2 (@5, @10):
    # R@1 = 1/3, R@5 = R@10 = 2/3. Left out instead ("skip"), the average runs over img0 and img2.
    caption_image = _ints([0, 0, 2])
    ranked = _ints([[0, 1, 2], [2, 1, 0], [0, 1, 2]])
    assert i2t_recall(ranked, caption_image) == pytest.approx({1: 100 / 3, 5: 200 / 3, 10: 200 / 3})
    assert i2t_recall(ranked, caption_image, captionless="skip") == pytest.approx(
        {1: 50.0, 5: 100.0, 10: 100.0}
    )
    # The same through recall_report / query_hits, and with a subset of image queries (img1, img2).
    ranked_images = _ints([[0, 1, 2]] * 3)  # t2i: c0, c1 -> img0 hit@1; c2 -> img2 at rank 2
    report = recall_report(ranked_images, ranked, caption_image)
    assert (report.i2t_r1, report.i2t_r5, report.i2t_r10) == pytest.approx((100 / 3, 200 / 3, 200 / 3))
    hits = metrics.query_hits(
        ranked_images, ranked[1:], caption_image, query_images=_ints([1, 2]), captionless="miss"
    )
    assert hits.i2t.tolist() == [np.iinfo(np.int64).max, 2]
    skipped = metrics.query_hits(
        ranked_images, ranked[1:], caption_image, query_images=_ints([1, 2]), captionless="skip"
    )
    assert skipped.i2t.tolist() == [2]
    with pytest.raises(InvalidInputError, match="captionless"):
        i2t_recall(ranked, caption_image, captionless="drop")  # type: ignore[arg-type]


def test_minus_one_padding_is_never_a_hit() -> None:
    # t2i over a 20-image gallery where the search returned one result per query.
    pad = [-1] * 9
    ranked_images = _ints([[5, *pad], [3, *pad]])
    assert t2i_recall(ranked_images, _ints([5, 7])) == pytest.approx({1: 50.0, 5: 50.0, 10: 50.0})
    # i2t: -1 must not be read as "the last caption" (c1, which belongs to img1).
    caption_image = _ints([0, 1])
    ranked_captions = _ints([[0, -1], [-1, -1]])
    assert i2t_recall(ranked_captions, caption_image) == pytest.approx({1: 50.0, 5: 50.0, 10: 50.0})


def test_ties_go_to_the_lower_index() -> None:
    sim = np.array([[0.5, 0.7, 0.5, 0.7, 0.1], [1.0, 1.0, 1.0, 1.0, 1.0]])
    np.testing.assert_array_equal(ranks_from_similarity(sim, 5), [[1, 3, 0, 2, 4], [0, 1, 2, 3, 4]])
    np.testing.assert_array_equal(ranks_from_similarity(sim, 2), [[1, 3], [0, 1]])
    # k beyond the number of columns is clipped.
    assert ranks_from_similarity(sim, 50).shape == (2, 5)
    # All scores equal: caption 0 (img0) ranks img0 first and hits; caption 1 (img1) ranks it second.
    rep = report_from_similarity(np.zeros((2, 2)), _ints([0, 1]))
    assert (rep.t2i_r1, rep.i2t_r1) == pytest.approx((50.0, 50.0))


def test_ranks_are_the_same_across_row_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(3)
    sim = rng.integers(0, 4, size=(23, 9)).astype(np.float32)
    whole = ranks_from_similarity(sim, 6)
    monkeypatch.setattr(metrics, "_SORT_CHUNK_ROWS", 5)
    np.testing.assert_array_equal(ranks_from_similarity(sim, 6), whole)


def _brute_force(sim: np.ndarray, caption_image: np.ndarray) -> dict[str, float]:
    """Recall from ranks counted directly: rank = #strictly better + #equal with a lower index."""
    n_img, n_cap = sim.shape

    def rank(scores: list[float], target: int) -> int:
        return sum(
            1 for j, s in enumerate(scores) if s > scores[target] or (s == scores[target] and j < target)
        )

    t2i_ranks = [rank(list(sim[:, c]), int(caption_image[c])) for c in range(n_cap)]
    i2t_ranks = []
    for i in range(n_img):
        own = [c for c in range(n_cap) if caption_image[c] == i]
        # An image without captions is a query that never hits (the published convention).
        i2t_ranks.append(min(rank(list(sim[i]), c) for c in own) if own else n_cap)
    out = {}
    for K in KS:
        out[f"t2i_r{K}"] = 100.0 * sum(r < K for r in t2i_ranks) / len(t2i_ranks)
        out[f"i2t_r{K}"] = 100.0 * sum(r < K for r in i2t_ranks) / len(i2t_ranks)
    return out


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("tied", [False, True])
def test_matches_brute_force_on_random_matrices(seed: int, tied: bool) -> None:
    rng = np.random.default_rng(seed)
    n_img, n_cap = 20, 57
    # Few distinct values -> many ties, which is where rank conventions disagree.
    sim = (
        rng.integers(0, 4, size=(n_img, n_cap)).astype(np.float32)
        if tied
        else rng.normal(size=(n_img, n_cap))
    )
    caption_image = rng.integers(0, n_img, size=n_cap)
    caption_image[:3] = [0, 0, 0]
    via_ranks = recall_report(ranks_from_similarity(sim.T, 10), ranks_from_similarity(sim, 10), caption_image)
    reference = report_from_similarity(sim, caption_image)
    assert via_ranks == reference
    expected = _brute_force(sim, caption_image)
    got = via_ranks.as_dict()
    assert set(got) == {*expected, "mR"}
    for key, value in expected.items():
        assert got[key] == pytest.approx(value), key
    assert got["mR"] == pytest.approx(sum(expected.values()) / 6)


def test_report_as_dict() -> None:
    rep = RecallReport(t2i_r1=10, t2i_r5=20, t2i_r10=30, i2t_r1=40, i2t_r5=50, i2t_r10=60)
    assert rep.mR == pytest.approx(35.0)
    assert rep.as_dict() == {
        "t2i_r1": 10,
        "t2i_r5": 20,
        "t2i_r10": 30,
        "i2t_r1": 40,
        "i2t_r5": 50,
        "i2t_r10": 60,
        "mR": pytest.approx(35.0),
    }


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: t2i_recall(_ints([[0] * 10]), _ints([0, 1])), "rows"),
        (lambda: t2i_recall(_ints([[0] * 10]), _ints([-1])), "negative"),
        (lambda: t2i_recall(_ints([[-2] * 10]), _ints([0])), "only -1"),
        (lambda: t2i_recall(np.zeros((1, 10)), _ints([0])), "integers"),  # type: ignore[arg-type]
        (lambda: t2i_recall(_ints([0, 1]), _ints([0])), "2-D"),
        (lambda: t2i_recall(_ints([[0, 1, 0, -1]]), _ints([0])), "more than once"),
        (lambda: t2i_recall(_ints([[0, 1, 2]]), _ints([3])), "needs 4"),
        (lambda: t2i_recall(_ints([[0]]), _ints([0]), ks=()), "ks"),
        (lambda: t2i_recall(_ints([[0]]), _ints([0]), ks=(0,)), "ks"),
        (lambda: i2t_recall(_ints([[0, 1]]), _ints([0, 1])), "image index 1"),
        (lambda: i2t_recall(_ints([[0, 2], [1, 0]]), _ints([0, 1])), "caption index 2"),
        (lambda: i2t_recall(_ints([[0], [1]]), _ints([0, 1])), "needs 2"),
        (lambda: recall_report(_ints([[3, 0]]), _ints([[0], [0]]), _ints([0])), "gallery has 2"),
        (lambda: recall_report(_ints([[1]]), _ints([[0], [0]]), _ints([1])), "needs 2"),
        (lambda: report_from_similarity(np.zeros((2, 3)), _ints([0, 1])), "3 caption columns"),
        (lambda: report_from_similarity(np.array([[np.nan, 0.0]]), _ints([0, 0])), "NaN"),
        (lambda: report_from_similarity(np.zeros((0, 2)), _ints([0, 0])), "non-empty"),
        (lambda: ranks_from_similarity(np.zeros((2, 2)), 0), "positive"),
        (lambda: ranks_from_similarity(np.zeros(3), 1), "2-D"),
    ],
)
def test_bad_input_is_rejected(call, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        call()


def test_query_subsets_equal_the_rows_of_the_full_evaluation() -> None:
    rng = np.random.default_rng(5)
    n_img, owner = 12, np.repeat(np.arange(12), 3)
    sim = rng.normal(size=(n_img, owner.size))
    full_t2i = ranks_from_similarity(sim.T, 10)
    full_i2t = ranks_from_similarity(sim, 10)
    qc, qi = np.array([0, 4, 5, 30, 35]), np.array([1, 7, 11])
    sub = recall_report(full_t2i[qc], full_i2t[qi], owner, query_captions=qc, query_images=qi)
    # Independent: hit lists per query, averaged by hand.
    t2i_hit = [[owner[c] in full_t2i[c, :k] for c in qc] for k in (1, 5, 10)]
    i2t_hit = [[any(owner[j] == i for j in full_i2t[i, :k]) for i in qi] for k in (1, 5, 10)]
    assert [sub.t2i_r1, sub.t2i_r5, sub.t2i_r10] == pytest.approx([100 * np.mean(h) for h in t2i_hit])
    assert [sub.i2t_r1, sub.i2t_r5, sub.i2t_r10] == pytest.approx([100 * np.mean(h) for h in i2t_hit])


NO_HIT = int(np.iinfo(np.int64).max)


def _hits(t2i: list[int], i2t: list[int]) -> QueryHits:
    return QueryHits(t2i=np.array(t2i, np.int64), i2t=np.array(i2t, np.int64))


def test_query_hits_give_the_report() -> None:
    # Captions 0,1 -> image 0; caption 2 -> image 1. Rankings hand-made.
    cap_img = np.array([0, 0, 1])
    ranked_images = np.array([[1, 0], [0, 1], [0, 1]])
    ranked_captions = np.array([[2, 1, 0], [0, 1, 2]])
    hits = query_hits(ranked_images, ranked_captions, cap_img)
    np.testing.assert_array_equal(hits.t2i, [1, 0, 1])
    np.testing.assert_array_equal(hits.i2t, [1, 2])
    assert hits.report() == recall_report(ranked_images, ranked_captions, cap_img)


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
    got = metrics.tie_aware_hits(scores, relevant, KS)
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
    got = metrics.tie_aware_hits(sim, relevant)
    assert got.shape == (12, 3)
    assert {K: 100 * got[:, j].mean() for j, K in enumerate(KS)} == pytest.approx(plain)


def test_tie_probability_by_hand() -> None:
    # 2 items above, then 10 tied of which 1 is relevant: P(hit@1) = 0, P(hit@5) = 3/10, P(hit@10) = 8/10.
    np.testing.assert_allclose(metrics.tie_probability(np.array(2), np.array(10), np.array(1)), [0, 0.3, 0.8])
    # 4 tied, 3 relevant, none above: any one place holds a relevant item w.p. 3/4, two places surely.
    np.testing.assert_allclose(
        metrics.tie_probability(np.array(0), np.array(4), np.array(3), ks=(1, 2)), [0.75, 1.0]
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
    got = metrics.two_stage_tie_aware_hits(coarse, fused, relevant, depth, draws=20_000, seed=seed)[0]
    np.testing.assert_allclose(got, want, atol=0.02)  # sampled cut: ~0.004 standard error


def test_two_stage_tie_aware_hits_by_hand() -> None:
    # Item 0 above the cut; items 1-4 tied at the cut, 2 of them kept (depth 3); item 2 is relevant
    # (and so is item 6, which never passes the cut). The kept pair outranks item 0 on the fused score
    # and is ordered at random: hit@1 = P(2 kept) P(2 first) = 1/2 * 1/2, hit@5 = hit@10 = 1/2.
    coarse = np.array([[3.0, 2, 2, 2, 2, 1, 1, 1]])
    fused = np.array([[0.0, 5, 5, 5, 5, 9, 9, 9]])
    relevant = np.zeros((1, 8), bool)
    relevant[0, [2, 6]] = True
    got = metrics.two_stage_tie_aware_hits(coarse, fused, relevant, depth=3, draws=40_000)[0]
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
        metrics.two_stage_tie_aware_hits(coarse, fused, relevant, depth=30),
        metrics.tie_aware_hits(fused, relevant),
    )


def test_tie_aware_inputs_are_checked() -> None:
    with pytest.raises(InvalidInputError, match="same shape"):
        metrics.tie_aware_hits(np.zeros((2, 3)), np.zeros((2, 4), bool))
    with pytest.raises(InvalidInputError, match="depth"):
        metrics.two_stage_tie_aware_hits(np.zeros((1, 3)), np.zeros((1, 3)), np.ones((1, 3), bool), 0)


def test_bootstrap_of_hit_probabilities_centres_on_the_expected_mr() -> None:
    # Every caption query hits at every K with probability 0.2 and every image query with 0.6: the
    # resampled mR is the constant (0.2 + 0.6) / 2 = 40%, with no spread (all queries are alike).
    t2i, i2t = np.full((30, 3), 0.2), np.full((10, 3), 0.6)
    out = metrics.bootstrap_mr_rates([(t2i, i2t)], n_resamples=50)
    np.testing.assert_allclose(out[:, 0], 40.0)
    # 0/1 rates give bootstrap_mr's figures on the same resamples.
    run = _hits([0, 3, NO_HIT, 7, 0], [2, NO_HIT, 0])
    np.testing.assert_allclose(
        metrics.bootstrap_mr_rates([(metrics.hit_rates(run.t2i), metrics.hit_rates(run.i2t))], 100),
        bootstrap_mr([run], 100),
    )
    with pytest.raises(InvalidInputError, match="same queries"):
        metrics.bootstrap_mr_rates([(t2i, i2t), (t2i[:5], i2t)])


def test_expected_report_without_ties_is_the_standard_recall() -> None:
    rng = np.random.default_rng(11)
    sim = rng.random((12, 60))  # image x caption, no ties
    cap_img = np.repeat(np.arange(12), 5)
    own_i2t = cap_img[None, :] == np.arange(12)[:, None]
    got = metrics.expected_report(sim.T, own_i2t.T, sim, own_i2t)
    assert got.as_dict() == pytest.approx(report_from_similarity(sim, cap_img).as_dict())


def test_expected_report_by_hand() -> None:
    # t2i: 2 caption queries over 3 images. Query 0's own image was not returned (-inf): a miss at
    # every K. Query 1's own image ties with one other at the top: R@1 = 1/2, R@5 = R@10 = 1.
    t2i = np.array([[-np.inf, 0.5, 0.2], [0.9, 0.9, 0.1]])
    t2i_rel = np.array([[True, False, False], [False, True, False]])
    # i2t: one image query; the second and third captions are relevant, the third ranks first.
    i2t = np.array([[0.3, 0.2, 0.8]])
    i2t_rel = np.array([[False, True, True]])
    got = metrics.expected_report(t2i, t2i_rel, i2t, i2t_rel)
    assert (got.t2i_r1, got.t2i_r5, got.t2i_r10) == pytest.approx((25.0, 50.0, 50.0))
    assert (got.i2t_r1, got.i2t_r5, got.i2t_r10) == pytest.approx((100.0, 100.0, 100.0))


def test_expected_report_rejects_queries_that_cannot_hit() -> None:
    with pytest.raises(InvalidInputError, match="every query needs a relevant item"):
        metrics.expected_report(
            np.zeros((2, 3)),
            np.array([[True, False, False], [False] * 3]),
            np.zeros((1, 2)),
            np.ones((1, 2), bool),
        )
    with pytest.raises(InvalidInputError, match="NaN"):
        metrics.expected_report(
            np.full((1, 1), np.nan), np.ones((1, 1), bool), np.zeros((1, 1)), np.ones((1, 1), bool)
        )
