"""FAISS recall: exact search against numpy, IVF at full probing against exact, save/load."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rsir.index.dense import DenseRecall, auto_factory, exact_subset, gpu_count
from rsir.model.errors import InvalidInputError


def _unit(n: int, d: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    unit: np.ndarray = x / np.linalg.norm(x, axis=1, keepdims=True)
    return unit


def test_flat_equals_numpy_argsort() -> None:
    g, q = _unit(500, 24, 0), _unit(7, 24, 1)
    scores, ids = DenseRecall(g, "Flat").search(q, 10)
    ref = q @ g.T
    for i in range(7):
        assert list(ids[i]) == list(np.argsort(-ref[i])[:10])
        np.testing.assert_allclose(scores[i], np.sort(ref[i])[::-1][:10], rtol=1e-5)


def test_ivf_with_all_lists_probed_is_exact_and_fewer_probes_may_miss() -> None:
    g, q = _unit(3000, 16, 2), _unit(20, 16, 3)
    exact = DenseRecall(g, "Flat").search(q, 50)[1]
    ivf = DenseRecall(g, "IVF32,Flat")
    full = ivf.search(q, 50, nprobe=32)[1]
    assert np.array_equal(np.sort(full, axis=1), np.sort(exact, axis=1))
    one = ivf.search(q, 50, nprobe=1)[1]
    overlap = np.mean([len(set(a) & set(b)) / 50 for a, b in zip(one, exact, strict=True)])
    assert overlap < 1.0  # one list of 32 cannot hold every true neighbour of 20 random queries


def test_auto_factory_and_k_clipping_and_errors(tmp_path: Path) -> None:
    assert auto_factory(99_999) == "Flat" and auto_factory(1_000_000) == "IVF1000,Flat"
    small = DenseRecall(_unit(5, 8, 4))
    assert small.search(_unit(2, 8, 5), 50)[1].shape == (2, 5)
    with pytest.raises(InvalidInputError, match="invalid FAISS factory"):
        DenseRecall(_unit(5, 8, 4), "NotAnIndex")
    with pytest.raises(InvalidInputError, match=r"queries must be \[Q,8\]"):
        small.search(_unit(2, 9, 5), 3)
    small.save(tmp_path / "x.faiss")
    again = DenseRecall.load(tmp_path / "x.faiss")
    q = _unit(3, 8, 6)
    assert np.array_equal(again.search(q, 5)[1], small.search(q, 5)[1])


@pytest.mark.parametrize("factory", ["Flat", "IVF16,Flat", "HNSW16"])
def test_excluded_ids_are_skipped_and_k_live_results_remain(factory: str) -> None:
    g, q = _unit(600, 16, 5), _unit(6, 16, 6)
    exclude = np.random.default_rng(0).choice(600, 150, replace=False).astype(np.int64)
    recall = DenseRecall(g, factory)
    _, ids = recall.search(q, 10, nprobe=16, exclude=exclude)
    ref = q @ g.T
    ref[:, exclude] = -np.inf  # naive reference: drop the excluded columns, then rank
    for i in range(6):
        assert not set(ids[i]) & set(exclude.tolist()) and (ids[i] >= 0).all()
        if factory != "HNSW16":  # HNSW is approximate; the other two are exact here
            assert list(ids[i]) == list(np.argsort(-ref[i])[:10])


def _brute_force(g: np.ndarray, q: np.ndarray, allowed: np.ndarray, k: int) -> list[list[int]]:
    """The naive reference: score every allowed row, rank, keep k."""
    ref = q @ g.T
    out = []
    for row in ref:
        ranked = sorted(allowed.tolist(), key=lambda i: -row[i])
        out.append(ranked[:k])
    return out


@pytest.mark.parametrize("factory", ["Flat", "IVF16,Flat"])
def test_include_and_exclude_match_a_brute_force_over_the_allowed_ids(factory: str) -> None:
    g, q = _unit(800, 16, 9), _unit(5, 16, 10)
    rng = np.random.default_rng(1)
    include = rng.choice(800, 120, replace=False).astype(np.int64)
    exclude = np.concatenate([include[:30], rng.choice(800, 50).astype(np.int64)])
    recall = DenseRecall(g, factory)
    for inc, exc in ((include, None), (include, exclude)):
        allowed = np.setdiff1d(inc, exc) if exc is not None else inc
        scores, ids = recall.search(q, 10, nprobe=16, include=inc, exclude=exc)
        assert ids.tolist() == _brute_force(g, q, allowed, 10)
        np.testing.assert_allclose(scores, np.take_along_axis(q @ g.T, ids, axis=1), rtol=1e-5)


def test_include_smaller_than_k_leaves_missing_slots_and_bad_include_is_refused() -> None:
    g, q = _unit(50, 8, 11), _unit(2, 8, 12)
    recall = DenseRecall(g, "Flat")
    ids = recall.search(q, 5, include=np.array([7, 3, 7], np.int64), exclude=np.array([3], np.int64))[1]
    assert ids.tolist() == [[7, -1, -1, -1, -1]] * 2
    assert (recall.search(q, 5, include=np.array([], np.int64))[1] == -1).all()
    with pytest.raises(InvalidInputError, match=r"include ids must lie in \[0, 50\)"):
        recall.search(q, 5, include=np.array([50], np.int64))


def test_exact_subset_matches_brute_force_and_pads_short_subsets() -> None:
    g, q = _unit(300, 12, 13), _unit(4, 12, 14)
    subset = np.random.default_rng(2).choice(300, 40, replace=False).astype(np.int64)
    scores, ids = exact_subset(g, q, subset, 7)
    assert ids.tolist() == _brute_force(g, q, subset, 7)
    np.testing.assert_allclose(scores, np.take_along_axis(q @ g.T, ids, axis=1), rtol=1e-5)
    # The whole subset fits in k: every row, best first, then -1 / -inf padding.
    scores, ids = exact_subset(g, q, subset[:3], 5)
    assert ids[:, :3].tolist() == _brute_force(g, q, subset[:3], 3)
    assert (ids[:, 3:] == -1).all() and np.isneginf(scores[:, 3:]).all()
    scores, ids = exact_subset(g, q, np.array([], np.int64), 2)
    assert ids.shape == (4, 2) and (ids == -1).all() and np.isneginf(scores).all()
    # Same answer as the FAISS path restricted to the subset.
    assert ids.dtype == np.int64 and scores.dtype == np.float32
    faiss_ids = DenseRecall(g, "Flat").search(q, 7, include=subset)[1]
    assert exact_subset(g, q, subset, 7)[1].tolist() == faiss_ids.tolist()
    with pytest.raises(InvalidInputError, match="subset ids"):
        exact_subset(g, q, np.array([300], np.int64), 2)
    with pytest.raises(InvalidInputError, match=r"queries must be \[Q,12\]"):
        exact_subset(g, q[:, :5], subset, 2)


@pytest.mark.gpu
@pytest.mark.skipif(gpu_count() == 0, reason="FAISS sees no GPU")
def test_gpu_trained_ivf_searches_like_the_cpu_trained_one() -> None:
    g, q = _unit(20_000, 32, 7), _unit(50, 32, 8)
    cpu, gpu = DenseRecall(g, "IVF64,Flat", use_gpu=False), DenseRecall(g, "IVF64,Flat", use_gpu=True)
    exact = DenseRecall(g, "Flat").search(q, 10)[1]
    for recall in (cpu, gpu):
        ids = recall.search(q, 10, nprobe=64)[1]
        assert (ids == exact).mean() > 0.99  # all lists probed: exact up to ties
