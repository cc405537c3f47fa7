"""SAR: a hand-worked 1 x 3 x R=4 case, binary-search ranks against counting, ordering rules."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rsir.model.errors import InvalidInputError
from rsir.model.sar import reference_profiles, reverse_ranks, sar_order, sar_soft

NEG = -np.inf


def _unit(n: int, d: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    unit: np.ndarray = x / np.linalg.norm(x, axis=1, keepdims=True)
    return unit


def test_one_query_three_candidates_by_hand() -> None:
    profiles = np.array(
        [
            [
                [0.90, 0.80, 0.70, 0.60],  # c0, s = 0.75: 0.90 and 0.80 are greater -> rho 2
                [0.50, 0.40, 0.30, 0.20],  # c1, s = 0.60: none greater -> rho 0
                [0.95, 0.90, 0.85, 0.80],  # c2, s = 0.85: 0.95, 0.90 (0.85 ties, not greater) -> rho 2
            ]
        ],
        dtype=np.float32,
    )
    scores = np.array([[0.75, 0.60, 0.85]], dtype=np.float32)
    rho = reverse_ranks(profiles, scores)
    assert rho.dtype == np.int64 and rho.tolist() == [[2, 0, 2]]
    # hard: c1 (rho 0) first; c0 and c2 tie at rho 2 -> by score, c2 (0.85) before c0 (0.75)
    assert sar_order(scores, rho).tolist() == [[1, 2, 0]]
    # soft, w = 0.1: 0.75 + 0.1 e^-0.1 = 0.840484, 0.60 + 0.1 e^0 = 0.70, 0.85 + 0.1 e^-0.1 = 0.940484
    bump = 0.1 * math.exp(-0.1)
    np.testing.assert_allclose(sar_soft(scores, rho, 0.1), [[0.75 + bump, 0.70, 0.85 + bump]], atol=1e-6)
    # a score above the whole row ranks 0, below it ranks R
    assert reverse_ranks(profiles, np.array([[0.91, -1.0, 0.96]])).tolist() == [[0, 4, 0]]


@pytest.mark.parametrize("R", [1, 2, 3, 4, 5, 8, 17, 64, 100])
def test_reverse_ranks_match_counting(R: int) -> None:
    rng = np.random.default_rng(R)
    Q, K = 5, 7
    profiles = -np.sort(-rng.normal(size=(Q, K, R)).astype(np.float32), axis=-1)
    profiles[0, 0] = profiles[0, 0, 0]  # a row of equal values
    scores = rng.normal(size=(Q, K)).astype(np.float32)
    scores[1] = profiles[1, :, R // 2]  # exact ties with a stored similarity
    scores[2, 0], scores[2, 1], scores[2, 2] = 10.0, -10.0, NEG
    scores[0, 0] = profiles[0, 0, 0]
    rho = reverse_ranks(profiles, scores)
    for q in range(Q):
        for k in range(K):
            assert rho[q, k] == sum(1 for v in profiles[q, k] if v > scores[q, k]), (q, k)
    assert rho[2, 2] == R  # padding


def test_sar_order_ties_and_padding() -> None:
    scores = np.array([[0.5, 0.7, 0.7, 0.6], [0.3, NEG, 0.2, NEG]], dtype=np.float32)
    rho = np.array([[1, 1, 1, 0], [5, 0, 5, 0]], dtype=np.int64)
    # row 0: rho 0 first (index 3); then rho 1 by score 0.7, 0.7 (position order), 0.5
    # row 1: padding last whatever its rho; 0.3 before 0.2 at equal rho
    assert sar_order(scores, rho).tolist() == [[3, 1, 2, 0], [0, 2, 1, 3]]
    soft = sar_soft(scores, rho, 0.2)
    assert np.isneginf(soft[1, 1]) and np.isneginf(soft[1, 3])


def test_reference_profiles_sorted_descending_and_chunked() -> None:
    g, r = _unit(50, 8, 0), _unit(30, 8, 1)
    naive = np.sort(g @ r.T, axis=1)[:, ::-1]
    whole = reference_profiles(g, r)
    assert whole.shape == (50, 30) and whole.dtype == np.float32
    np.testing.assert_allclose(whole, naive, atol=1e-6)
    out = np.zeros((50, 30), dtype=np.float32)
    assert reference_profiles(g, r, chunk=7, out=out) is out
    np.testing.assert_allclose(out, naive, atol=1e-6)
    # end to end: ranks from the gathered profiles equal counting over the full matrix
    q_scores = np.array([[0.3, 0.0, -0.2]], dtype=np.float32)
    ids = np.array([[4, 9, 20]])
    rho = reverse_ranks(whole[ids], q_scores)
    assert rho.tolist() == [[int((naive[i] > s).sum()) for i, s in zip(ids[0], q_scores[0], strict=True)]]


def test_errors() -> None:
    with pytest.raises(InvalidInputError, match=r"profiles \[Q,K,R\]"):
        reverse_ranks(np.zeros((2, 3, 4)), np.zeros((2, 4)))
    with pytest.raises(InvalidInputError, match="same"):
        sar_order(np.zeros((2, 3)), np.zeros((3, 2)))
    with pytest.raises(InvalidInputError, match="out must be"):
        reference_profiles(_unit(4, 8, 0), _unit(3, 8, 1), out=np.zeros((4, 4), np.float32))
