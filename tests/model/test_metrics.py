"""Recall@K against small cases worked out by hand and against a brute-force rank loop."""

from __future__ import annotations

import numpy as np
import pytest

from rsir.model import metrics
from rsir.model.errors import InvalidInputError
from rsir.model.metrics import (
    KS,
    RecallReport,
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


def test_query_hits_give_the_report() -> None:
    # Captions 0,1 -> image 0; caption 2 -> image 1. Rankings hand-made.
    cap_img = np.array([0, 0, 1])
    ranked_images = np.array([[1, 0], [0, 1], [0, 1]])
    ranked_captions = np.array([[2, 1, 0], [0, 1, 2]])
    hits = query_hits(ranked_images, ranked_captions, cap_img)
    np.testing.assert_array_equal(hits.t2i, [1, 0, 1])
    np.testing.assert_array_equal(hits.i2t, [1, 2])
    assert hits.report() == recall_report(ranked_images, ranked_captions, cap_img)
