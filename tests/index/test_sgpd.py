"""SGPD recall: sparse codes against a per-row reference, the cluster selection worked by hand, recall
against exact search on clustered data, and include/exclude against brute force over the candidates."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rsir.index.sgpd import SGPDRecall, select_clusters, sparse_codes
from rsir.model.errors import InvalidInputError

NEG = -np.inf


def _clustered(n: int, d: int, centers: int, seed: int, spread: float = 0.6) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors around ``centers`` random unit centres (noise of norm ~``spread``), and labels."""
    rng = np.random.default_rng(seed)
    c = rng.normal(size=(centers, d))
    c /= np.linalg.norm(c, axis=1, keepdims=True)
    labels = rng.integers(0, centers, n)
    x = c[labels] + rng.normal(size=(n, d)) * (spread / math.sqrt(d))
    unit: np.ndarray = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    return unit, labels


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gallery and queries from one 40-centre mixture, overlapping enough that a query often needs
    more than one k-means cluster (recall ~0.99 at ~250 candidates of 4,000)."""
    x, labels = _clustered(4100, 64, 40, seed=0, spread=1.5)
    return x[:4000], x[4000:], labels[:4000]


@pytest.fixture(scope="module")
def index(data: tuple[np.ndarray, np.ndarray, np.ndarray]) -> SGPDRecall:
    return SGPDRecall(data[0], k_sparse=32, seed=0)


def _exact(g: np.ndarray, q: np.ndarray, k: int) -> np.ndarray:
    ids: np.ndarray = np.argsort(-(q @ g.T), axis=1, kind="stable")[:, :k]
    return ids


def test_sparse_codes_match_per_row_reference() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 20)).astype(np.float32)
    x[3, :15] = 0.0  # only five non-zero entries: the code keeps five, no stored zeros
    codes = sparse_codes(x, k=6)
    assert codes.shape == (50, 40) and codes.dtype == np.float32
    dense = codes.toarray()
    for i in range(50):
        z = np.maximum(np.concatenate([x[i], -x[i]]), 0.0)
        ref = np.zeros(40, dtype=np.float32)
        top = np.argsort(-z, kind="stable")[:6]
        ref[top] = z[top]
        np.testing.assert_array_equal(dense[i], ref)
    assert codes.getrow(3).nnz == 5 and np.diff(codes.indptr).tolist() == [6] * 3 + [5] + [6] * 46
    # k >= d keeps every non-zero entry: the whole of relu([x; -x])
    full = sparse_codes(x, k=32).toarray()
    np.testing.assert_array_equal(full, np.maximum(np.concatenate([x, -x], axis=1), 0.0))
    codes.check_format(full_check=True)  # sorted, in-range column indices


def test_select_clusters_two_reach_the_mass() -> None:
    # scores 0.9, 0.9 (cluster 0), 0.8 (cluster 1), 0.5 (cluster 2); temperature 0.1 -> logits 9, 9, 8, 5
    # softmax = [1, 1, e^-1, e^-4] / (2 + 0.367879 + 0.018316 = 2.386195)
    # P(0) = 2 / 2.386195 = 0.838155 (< 0.9, go on), P(1) = 0.154170 -> cumulative 0.992325 >= 0.9, stop
    clusters, scores = [0, 0, 1, 2], [0.9, 0.9, 0.8, 0.5]
    assert select_clusters(clusters, scores) == [0, 1]
    assert select_clusters(clusters, scores, mass=0.8) == [0]  # 0.838 alone is enough
    # P = 0.6, 0.3, 0.1 exactly (equal scores, 6/3/1 hits): 0.6 + 0.3 reaches 0.9 despite rounding
    assert select_clusters([5] * 6 + [2] * 3 + [8], [0.4] * 10) == [5, 2]
    # padding (cluster -1 or score -inf) is ignored; no hits -> no clusters
    assert select_clusters([0, 0, 1, 2, -1, 3], [0.9, 0.9, 0.8, 0.5, 0.99, NEG]) == [0, 1]
    assert select_clusters([-1], [NEG]) == []


def test_select_clusters_cap_binds() -> None:
    # one hit per cluster, scores 0.50, 0.49, ..., 0.45 -> weights e^0, e^-0.1, ..., e^-0.5
    # = [1, 0.904837, 0.818731, 0.740818, 0.670320, 0.606531], sum 4.741237
    # P = [0.210915, 0.190842, 0.172684, 0.156249, 0.141380, 0.127929]
    # cumulative after 4 clusters 0.730690 < 0.9: the cap of 4 binds; after 5: 0.872071; after 6: 1
    clusters = [7, 3, 9, 1, 4, 2]
    scores = [0.50, 0.49, 0.48, 0.47, 0.46, 0.45]
    assert select_clusters(clusters, scores) == [7, 3, 9, 1]
    assert select_clusters(clusters, scores, max_clusters=5) == [7, 3, 9, 1, 4]
    assert select_clusters(clusters, scores, max_clusters=10) == clusters
    # equal probabilities: ties go by cluster id
    assert select_clusters([6, 2, 4, 0, 8], [0.3] * 5) == [0, 2, 4, 6]


def test_method_select_clusters_maps_ids_to_clusters(index: SGPDRecall) -> None:
    ids = np.array([0, 10, 20, -1])
    scores = np.array([0.9, 0.8, 0.85, NEG])
    expected = select_clusters(index.assignments[ids[:3]], scores[:3])
    assert index.select_clusters(ids, scores) == expected


def test_recall_at_10_against_exact_search(
    data: tuple[np.ndarray, np.ndarray, np.ndarray], index: SGPDRecall
) -> None:
    g, q, _ = data
    assert index.n_clusters == round(math.sqrt(4000))
    scores, ids = index.search(q, 10)
    assert scores.shape == ids.shape == (100, 10)
    exact = _exact(g, q, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids, exact, strict=True)])
    assert recall >= 0.9, recall
    # scores are exact inner products, best first
    np.testing.assert_allclose(scores, np.take_along_axis(q @ g.T, ids, axis=1), rtol=1e-5, atol=1e-6)
    assert np.all(np.diff(scores, axis=1) <= 0)
    # and only part of the gallery was scored densely
    sizes = [c.size for c in index.candidates(q)]
    assert np.mean(sizes) < 0.2 * len(g)


def test_scoring_every_cluster_is_exact(data: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    g, q, _ = data
    g, q = g[:600], q[:20]
    everything = SGPDRecall(g, hits=600, mass=1.0, max_clusters=10**6)
    _, ids = everything.search(q, 15)
    assert np.array_equal(ids, _exact(g, q, 15))
    sparse_guided = SGPDRecall(g, hit_scores="sparse")
    _, ids_sparse = sparse_guided.search(q, 15)
    assert (ids_sparse >= 0).all()


def test_include_exclude_equal_brute_force_over_allowed_candidates(
    data: tuple[np.ndarray, np.ndarray, np.ndarray], index: SGPDRecall
) -> None:
    g, q, _ = data
    rng = np.random.default_rng(1)
    include = np.sort(rng.choice(4000, 2000, replace=False)).astype(np.int64)
    exclude = rng.choice(4000, 400, replace=False).astype(np.int64)
    in_include = np.isin(np.arange(4000), include)
    not_excluded = ~np.isin(np.arange(4000), exclude)
    allowed = in_include & not_excluded
    sims = q @ g.T
    for inc, exc, mask in (
        (include, None, in_include),
        (None, exclude, not_excluded),
        (include, exclude, allowed),
    ):
        scores, ids = index.search(q, 10, include=inc, exclude=exc)
        candidates = index.candidates(q, include=inc, exclude=exc)
        for i in range(len(q)):
            cand = candidates[i]
            assert cand.size and mask[cand].all()
            best = cand[np.lexsort((cand, -sims[i, cand]))][:10]  # brute force over the candidates
            assert ids[i].tolist() == best.tolist()
            np.testing.assert_allclose(scores[i], sims[i, best], rtol=1e-5, atol=1e-6)
    # the filtered search still finds the allowed exact neighbours most of the time
    _, ids = index.search(q, 10, include=include, exclude=exclude)
    masked = np.where(allowed[None, :], q @ g.T, -np.inf)
    exact = np.argsort(-masked, axis=1)[:, :10]
    assert np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids, exact, strict=True)]) >= 0.9


def test_filter_applies_before_the_hits_are_taken(
    data: tuple[np.ndarray, np.ndarray, np.ndarray], index: SGPDRecall
) -> None:
    g, q, labels = data
    # allow only items of a natural cluster other than the query's: unfiltered, the top hits would
    # all be near the query (and then filtered out); filtered first, the hits lie in the allowed set
    qlabel = labels[_exact(g, q[:1], 1)[0, 0]]
    other = np.flatnonzero(labels == (qlabel + 1) % 40).astype(np.int64)
    scores, ids = index.search(q[:1], 5, include=other)
    assert (ids >= 0).all() and np.isin(ids, other).all()
    # a tiny allowed set pads with -1 / -inf
    tiny = other[:3]
    scores, ids = index.search(q[:1], 10, include=tiny)
    assert set(ids[0, :3].tolist()) <= set(tiny.tolist()) and (ids[0, 3:] == -1).all()
    assert np.isneginf(scores[0, 3:]).all()
    _, ids = index.search(q[:2], 5, exclude=np.arange(4000))
    assert (ids == -1).all()


def test_memory_and_errors(index: SGPDRecall) -> None:
    mem = index.memory_bytes()
    assert mem.total == mem.sparse_codes + mem.assignments + mem.members + mem.centroids
    assert mem.per_item == pytest.approx(mem.total / 4000)
    assert mem.sparse_codes >= 4000 * 32 * 8  # a float32 value and an int32 id per posting
    assert mem.centroids == index.n_clusters * 64 * 4
    assert index.search(np.zeros((1, 64), np.float32), 3)[1].tolist() == [[-1, -1, -1]]  # empty code
    with pytest.raises(InvalidInputError, match=r"queries must be \[Q,64\]"):
        index.search(np.zeros((1, 8), np.float32), 3)
    with pytest.raises(InvalidInputError, match="include ids"):
        index.search(np.zeros((1, 64), np.float32), 3, include=np.array([4000]))
    with pytest.raises(InvalidInputError, match="k must be"):
        index.search(np.zeros((1, 64), np.float32), 0)
    with pytest.raises(InvalidInputError, match="mass"):
        SGPDRecall(np.eye(4, dtype=np.float32), mass=0.0)
