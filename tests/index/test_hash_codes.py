"""Hamming recall: FAISS distances against a bit-count loop, filters on every path, padding, I/O."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray

import rsir.index.hash_codes as hr
from rsir.index.hash_codes import HashRecall, hamming_subset
from rsir.model.errors import InvalidInputError
from rsir.model.hashing import hamming_reference


def _codes(n: int, nbytes: int, seed: int, values: int = 256) -> NDArray[np.uint8]:
    # `values < 256` draws bytes from a few patterns, so equal distances (ties) are common
    return np.random.default_rng(seed).integers(0, values, (n, nbytes), dtype=np.uint8)


def _check(scores: np.ndarray, ids: np.ndarray, ref: np.ndarray, allowed: np.ndarray, width: int) -> None:
    """Each row is an exact top-``width`` of ``-ref`` over ``allowed`` (any order among ties)."""
    assert scores.shape == ids.shape == (ref.shape[0], width)
    assert scores.dtype == np.float32 and ids.dtype == np.int64
    pool = np.nonzero(allowed)[0]
    for r in range(ref.shape[0]):
        n_hits = min(width, pool.size)
        got, got_scores = ids[r, :n_hits], scores[r, :n_hits]
        assert (ids[r, n_hits:] == -1).all() and np.isneginf(scores[r, n_hits:]).all()
        assert (got >= 0).all() and len(set(got.tolist())) == n_hits and allowed[got].all()
        assert (np.diff(got_scores) <= 0).all()  # best first
        np.testing.assert_array_equal(got_scores, -ref[r, got].astype(np.float32))
        want = np.sort(ref[r, pool])[:n_hits]  # the score multiset of any exact answer
        np.testing.assert_array_equal(np.sort(-got_scores), want)
        if n_hits:  # everything strictly better than the worst returned score is returned
            strictly = pool[ref[r, pool] < -got_scores[-1]]
            assert set(strictly.tolist()) <= set(got.tolist())


@pytest.mark.parametrize(("nbytes", "values"), [(16, 256), (2, 4), (8, 2)])
def test_distances_equal_bit_count_loop(nbytes: int, values: int) -> None:
    codes, queries = _codes(300, nbytes, 0, values), _codes(6, nbytes, 1, values)
    ref = hamming_reference(queries, codes)
    index = HashRecall(codes)
    assert index.size == 300 and index.bits == nbytes * 8
    scores, ids = index.search(queries, 25)
    _check(scores, ids, ref, np.ones(300, dtype=bool), 25)
    full_scores, full_ids = index.search(queries, 1000)  # k > N: every item, k' = N
    assert full_ids.shape == (6, 300)
    for r in range(6):
        assert sorted(full_ids[r].tolist()) == list(range(300))
        np.testing.assert_array_equal(full_scores[r], -ref[r, full_ids[r]].astype(np.float32))


def _filter_cases(n: int, rng: np.random.Generator):
    yield None, rng.choice(n, 30, replace=False)  # exclude only
    yield None, np.array([-3, n + 7, 0])  # out-of-range excluded ids are ignored
    yield rng.choice(n, 40, replace=False), None  # include only
    yield rng.choice(n, 40, replace=False), rng.choice(n, 60, replace=False)  # both
    yield np.array([5, 5, 9]), None  # fewer allowed than k: padded
    yield np.array([], dtype=np.int64), None  # nothing allowed
    yield np.arange(n), np.arange(0, n, 2)  # a large include


def _allowed(n: int, include: np.ndarray | None, exclude: np.ndarray | None) -> np.ndarray:
    mask = np.zeros(n, dtype=bool) if include is not None else np.ones(n, dtype=bool)
    if include is not None:
        mask[include] = True
    if exclude is not None:
        ex = exclude[(exclude >= 0) & (exclude < n)]
        mask[ex] = False
    return mask


@pytest.mark.parametrize("path", ["default", "faiss_selector", "numpy_fallback"])
def test_include_exclude_match_reference(path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    n, k = 400, 20
    codes, queries = _codes(n, 4, 2, values=8), _codes(5, 4, 3, values=8)
    ref = hamming_reference(queries, codes)
    index = HashRecall(codes)
    if path == "faiss_selector":
        monkeypatch.setattr(hr, "SUBSET_EXACT_PAIRS", 0)  # even small include sets go to FAISS
    elif path == "numpy_fallback":
        index._faiss_selectors = False  # as on a FAISS without binary IDSelector support
    rng = np.random.default_rng(4)
    for include, exclude in _filter_cases(n, rng):
        scores, ids = index.search(queries, k, include=include, exclude=exclude)
        _check(scores, ids, ref, _allowed(n, include, exclude), k)
    if path == "faiss_selector":
        assert index._faiss_selectors is True  # this FAISS filtered itself (1.15 does)


def test_falls_back_when_faiss_rejects_search_params(monkeypatch: pytest.MonkeyPatch) -> None:
    codes, queries = _codes(200, 16, 5), _codes(3, 16, 6)
    ref = hamming_reference(queries, codes)
    index = HashRecall(codes)
    real = index.index

    class NoParams:  # an IndexBinaryFlat from a FAISS that has no selectors for binary indexes
        ntotal = real.ntotal

        def search(self, q, k, params=None):
            if params is not None:
                raise RuntimeError("search params not supported for this index")
            return real.search(q, k)

    index.index = NoParams()  # type: ignore[assignment]
    exclude = np.arange(0, 200, 3)
    scores, ids = index.search(queries, 15, exclude=exclude)
    assert index._faiss_selectors is False
    _check(scores, ids, ref, _allowed(200, None, exclude), 15)


def test_hamming_subset_exact_and_padded() -> None:
    codes, queries = _codes(120, 16, 7, values=4), _codes(4, 16, 8, values=4)
    ref = hamming_reference(queries, codes)
    subset = np.array([3, 3, 50, 7, 119, 64, 8, 9, 10])
    scores, ids = hamming_subset(codes, queries, subset, 12)
    _check(scores, ids, ref, _allowed(120, subset, None), 12)
    for r in range(4):  # ties in id order
        order = sorted(set(subset.tolist()), key=lambda i: (ref[r, i], i))
        assert ids[r, :8].tolist() == order
    scores, ids = hamming_subset(codes, queries, subset, 3)
    _check(scores, ids, ref, _allowed(120, subset, None), 3)
    with pytest.raises(InvalidInputError, match="subset ids"):
        hamming_subset(codes, queries, np.array([120]), 3)


def test_save_load_round_trip(tmp_path: Path) -> None:
    codes, queries = _codes(50, 16, 9), _codes(4, 16, 10)
    index = HashRecall(codes)
    index.save(tmp_path / "codes.faissb")
    again = HashRecall.load(tmp_path / "codes.faissb")
    assert again.size == 50 and again.bits == 128
    assert np.array_equal(again.codes, codes)
    for a, b in zip(index.search(queries, 10), again.search(queries, 10), strict=True):
        np.testing.assert_array_equal(a, b)
    s1, i1 = index.search(queries, 10, include=np.arange(20), exclude=np.array([1, 2]))
    s2, i2 = again.search(queries, 10, include=np.arange(20), exclude=np.array([1, 2]))
    np.testing.assert_array_equal(s1, s2)
    np.testing.assert_array_equal(i1, i2)


def test_input_errors() -> None:
    index = HashRecall(_codes(10, 16, 11))
    with pytest.raises(InvalidInputError, match="non-empty"):
        HashRecall(np.zeros((0, 16), dtype=np.uint8))
    with pytest.raises(InvalidInputError, match=r"\[M,16\] uint8"):
        index.search(np.zeros((2, 8), dtype=np.uint8), 3)
    with pytest.raises(InvalidInputError, match="uint8"):
        index.search(np.zeros((2, 16), dtype=np.int64), 3)
    with pytest.raises(InvalidInputError, match="k must be"):
        index.search(_codes(1, 16, 12), 0)
    with pytest.raises(InvalidInputError, match="include ids"):
        index.search(_codes(1, 16, 12), 3, include=np.array([10]))
