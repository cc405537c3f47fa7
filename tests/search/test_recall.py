"""FAISS recall: exact search against numpy, IVF at full probing against exact, save/load."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from model.errors import InvalidInputError
from search.recall import DenseRecall, auto_factory, gpu_count


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
    assert auto_factory(99_999) == "Flat" and auto_factory(1_000_000) == "IVF4000,Flat"
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


@pytest.mark.gpu
@pytest.mark.skipif(gpu_count() == 0, reason="FAISS sees no GPU")
def test_gpu_trained_ivf_searches_like_the_cpu_trained_one() -> None:
    g, q = _unit(20_000, 32, 7), _unit(50, 32, 8)
    cpu, gpu = DenseRecall(g, "IVF64,Flat", use_gpu=False), DenseRecall(g, "IVF64,Flat", use_gpu=True)
    exact = DenseRecall(g, "Flat").search(q, 10)[1]
    for recall in (cpu, gpu):
        ids = recall.search(q, 10, nprobe=64)[1]
        assert (ids == exact).mean() > 0.99  # all lists probed: exact up to ties
