"""PPSR (CSLS): a hand-worked 3x4 case, r_q's padding rule, r_g against the full similarity matrix."""

from __future__ import annotations

import numpy as np
import pytest

from rsir.model.errors import InvalidInputError
from rsir.model.ppsr import csls, gallery_term, query_term

NEG = -np.inf


def _unit(n: int, d: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    unit: np.ndarray = x / np.linalg.norm(x, axis=1, keepdims=True)
    return unit


def test_csls_3x4_by_hand() -> None:
    scores = np.array(
        [
            [0.9, 0.5, 0.3, NEG],  # the last slot is padding
            [0.2, 0.8, 0.6, 0.1],
            [0.7, 0.7, 0.4, 0.0],
        ],
        dtype=np.float32,
    )
    r_q = np.array([0.5, 0.4, 0.3], dtype=np.float32)
    r_g = np.array(
        [
            [0.6, 0.2, 0.1, 0.3],
            [0.5, 0.7, 0.2, 0.0],
            [0.3, 0.1, 0.4, 0.2],
        ],
        dtype=np.float32,
    )
    # s' = 2 s - r_q - r_g
    # row 0: 1.8-0.5-0.6 = 0.7   1.0-0.5-0.2 = 0.3   0.6-0.5-0.1 = 0.0   -inf stays -inf
    # row 1: 0.4-0.4-0.5 = -0.5  1.6-0.4-0.7 = 0.5   1.2-0.4-0.2 = 0.6   0.2-0.4-0.0 = -0.2
    #        (candidate 1 is a hub, r_g = 0.7: candidate 2 now ranks above it)
    # row 2: 1.4-0.3-0.3 = 0.8   1.4-0.3-0.1 = 1.0   0.8-0.3-0.4 = 0.1   0.0-0.3-0.2 = -0.5
    #        (the 0.7/0.7 tie is broken by r_g)
    expected = np.array(
        [
            [0.7, 0.3, 0.0, NEG],
            [-0.5, 0.5, 0.6, -0.2],
            [0.8, 1.0, 0.1, -0.5],
        ],
        dtype=np.float32,
    )
    out = csls(scores, r_q, r_g)
    assert out.dtype == np.float32 and out.shape == (3, 4)
    np.testing.assert_allclose(out, expected, atol=1e-6)
    assert np.isneginf(out[0, 3])
    # padding stays -inf even when its slot carries a non-finite r_g
    r_g[0, 3] = NEG
    assert np.isneginf(csls(scores, r_q, r_g)[0, 3])


def test_query_term_by_hand_ignores_padding_and_order() -> None:
    top = np.array(
        [
            [0.9, 0.5, 0.3, NEG, NEG],  # k=3: (0.9+0.5+0.3)/3 = 0.5667; k=4: the same (padding ignored)
            [0.1, 0.8, 0.4, 0.6, 0.2],  # unsorted; k=3: (0.8+0.6+0.4)/3 = 0.6; k=4: 2.0/4 = 0.5
            [NEG, NEG, NEG, NEG, NEG],  # nothing recalled: 0
        ],
        dtype=np.float32,
    )
    np.testing.assert_allclose(query_term(top, k=3), [1.7 / 3, 0.6, 0.0], atol=1e-6)
    np.testing.assert_allclose(query_term(top, k=4), [1.7 / 3, 0.5, 0.0], atol=1e-6)
    with pytest.raises(InvalidInputError, match="at least k=10"):
        query_term(top)


def test_gallery_term_by_hand() -> None:
    gallery = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    refs = np.array([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0], [-1.0, 0.0]], dtype=np.float32)
    # g0 . refs = [1, 0.6, 0, -1]: top-2 mean 0.8; all four (k=10 clipped to R=4): 0.6/4 = 0.15
    # g1 . refs = [0, 0.8, 1, 0]:  top-2 mean 0.9; all four: 1.8/4 = 0.45
    np.testing.assert_allclose(gallery_term(gallery, refs, k=2), [0.8, 0.9], atol=1e-6)
    np.testing.assert_allclose(gallery_term(gallery, refs), [0.15, 0.45], atol=1e-6)


def test_gallery_term_matches_full_matrix_and_chunking_changes_nothing() -> None:
    g, r = _unit(1000, 16, 0), _unit(300, 16, 1)
    full = g @ r.T
    naive = np.sort(full, axis=1)[:, ::-1][:, :10].mean(axis=1)
    whole = gallery_term(g, r, k=10, chunk=10**6, ref_chunk=10**6)
    assert whole.shape == (1000,) and whole.dtype == np.float32
    np.testing.assert_allclose(whole, naive, rtol=1e-5, atol=1e-6)
    for chunk, ref_chunk in ((64, 50), (333, 7), (1, 300)):
        np.testing.assert_allclose(
            gallery_term(g, r, k=10, chunk=chunk, ref_chunk=ref_chunk), whole, rtol=1e-5, atol=1e-6
        )


def test_end_to_end_hub_is_demoted() -> None:
    # gallery item 0 is a hub (close to every reference query); items 1 and 2 are not
    refs = _unit(200, 8, 2)
    hub = refs.mean(axis=0)
    gallery = np.stack([hub / np.linalg.norm(hub), *_unit(2, 8, 3)]).astype(np.float32)
    r_g = gallery_term(gallery, refs, k=10)
    assert r_g[0] > r_g[1] and r_g[0] > r_g[2]
    scores = np.array([[0.5, 0.49, 0.1]], dtype=np.float32)
    out = csls(scores, query_term(np.pad(scores, ((0, 0), (0, 7)), constant_values=NEG)), r_g[None, :])
    assert out[0, 0] - out[0, 1] == pytest.approx(2 * 0.01 - (r_g[0] - r_g[1]), abs=1e-5)


def test_errors() -> None:
    g = _unit(4, 8, 0)
    with pytest.raises(InvalidInputError, match="share the dimension"):
        gallery_term(g, _unit(4, 9, 1))
    with pytest.raises(InvalidInputError, match="empty"):
        gallery_term(g, np.zeros((0, 8), np.float32))
    with pytest.raises(InvalidInputError, match="k must be >= 1"):
        gallery_term(g, g, k=0)
    with pytest.raises(InvalidInputError, match=r"r_q \[Q\]"):
        csls(np.zeros((2, 3)), np.zeros(3), np.zeros((2, 3)))
