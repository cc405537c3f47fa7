"""The FTF block in float16 and bfloat16 against a float64 per-pair loop (ALGORITHMS.md §2).

Tolerance. The reference sees the tokens already rounded to the dtype, so what is measured is the
block's own arithmetic. That rounds three products once each to the dtype (``A = W P^T``, the
attended patches ``a P`` and the word Gram ``W W^T``), a relative error of at most ``u = eps / 2``
per entry (float16 2^-11, bfloat16 2^-8); everything after them runs in float32, whose cascaded sums
err by about ``log2(n M) 2^-24`` (under 1e-6 for n <= 8, M <= 196), negligible against u. A rounded
``A_ij`` moves its logit by ``u |A_ij| / tau``, but each score is a mean over ``n`` words and ``M``
patches of cosines built from softmax-weighted sums, so the independent, unbiased roundings average
out (a sum of ``m`` of them grows as ``sqrt(m)``, not ``m``). The test asks for
``|s_f - s_ref| <= u / 2``: finer than the dtype's own resolution near 1, which is all a block that
reduces or returns scores in the dtype can reach (before this fix the bfloat16 block was off by
1.0-1.2 u on tokens like these, and the float16 one returned NaN). Each direction alone gets ``u``:
for a one-word text ``s_tv`` is a single cosine, with no mean over words to average the softmax's
amplification (``|A| / tau`` is about 12 here). Measured worst cases of the fixed block on these
cases: ``s_f`` 0.22 u, ``s_tv`` 0.38 u, ``s_vt`` 0.08 u; over 48 further shapes (M 49 and 196, d 64
to 512, both directions, independent and correlated tokens, against the block in float64) ``s_f``
stayed under 0.34 u.
"""

from __future__ import annotations

import pytest
import torch

from rsir.model.ftf import image_to_text, text_to_image

HALF = [pytest.param(torch.float16, id="float16"), pytest.param(torch.bfloat16, id="bfloat16")]
TAU, D = 0.05, 128


def unit_roundoff(dtype: torch.dtype) -> float:
    return float(torch.finfo(dtype).eps) / 2


def reference_pair(W: torch.Tensor, P: torch.Tensor, tau: float) -> tuple[float, float]:
    """``(s_tv, s_vt)`` of one pair in float64, straight from the spec: ``W`` holds only valid words."""
    W, P = W.double(), P.double()
    A = W @ P.T
    a = torch.softmax(A / tau, dim=1)
    s_tv = torch.nn.functional.cosine_similarity(W, a @ P, dim=-1).mean()
    b = torch.softmax(A / tau, dim=0)
    s_vt = torch.nn.functional.cosine_similarity(P, b.T @ W, dim=-1).mean()
    return float(s_tv), float(s_vt)


def tokens(gen: torch.Generator, common: torch.Tensor, *shape: int) -> torch.Tensor:
    """Unit tokens around a ``common`` direction, as a CLIP tower's are (pair cosines around 0.5)."""
    x = torch.randn(*shape, D, generator=gen, dtype=torch.float64) + common
    unit: torch.Tensor = x / x.norm(dim=-1, keepdim=True)
    return unit


def ragged_mask(gen: torch.Generator, lead: tuple[int, ...], n: int, one_word: bool) -> torch.Tensor:
    lengths = torch.ones(lead, dtype=torch.long)
    if not one_word:
        lengths = torch.randint(1, n + 1, lead, generator=gen)
        lengths.view(-1)[0] = n  # a full-length text
        lengths.view(-1)[-1] = 1  # and a one-word text
    return torch.arange(n) < lengths[..., None]


def _case(
    direction: str, Q: int, K: int, n: int, M: int, one_word: bool, dtype: torch.dtype, seed: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(words, mask, patches)`` rounded to ``dtype``, zero in the padding rows; shapes per direction."""
    gen = torch.Generator().manual_seed(seed)
    common = torch.randn(D, generator=gen, dtype=torch.float64)
    if direction == "t2i":
        words, patches = tokens(gen, common, Q, n), tokens(gen, common, Q, K, M)
        mask = ragged_mask(gen, (Q,), n, one_word)
    else:
        words, patches = tokens(gen, common, Q, K, n), tokens(gen, common, Q, M)
        mask = ragged_mask(gen, (Q, K), n, one_word)
    words = torch.where(mask[..., None], words, 0.0)
    return words.to(dtype), mask, patches.to(dtype)


def _run(direction: str, words: torch.Tensor, mask: torch.Tensor, patches: torch.Tensor) -> torch.Tensor:
    """``[3, Q, K]``: fine, s_tv and s_vt."""
    if direction == "t2i":
        out = text_to_image(words, mask, patches, TAU)
    else:
        out = image_to_text(patches, words, mask, TAU)
    return torch.stack([out.fine, out.s_tv, out.s_vt])


def _pair(
    direction: str, words: torch.Tensor, mask: torch.Tensor, patches: torch.Tensor, q: int, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    if direction == "t2i":
        return words[q][mask[q]], patches[q, k]
    return words[q, k][mask[q, k]], patches[q]


CASES = [
    pytest.param(3, 4, 8, 49, False, id="ragged-M49"),
    pytest.param(2, 3, 8, 196, False, id="ragged-M196"),
    pytest.param(4, 1, 8, 49, False, id="K1"),
    pytest.param(2, 1, 8, 196, False, id="K1-M196"),
    pytest.param(2, 3, 6, 49, True, id="one-word"),
]


@pytest.mark.parametrize("direction", ["t2i", "i2t"])
@pytest.mark.parametrize(("Q", "K", "n", "M", "one_word"), CASES)
@pytest.mark.parametrize("dtype", HALF)
def test_half_block_matches_float64_loop(
    dtype: torch.dtype, Q: int, K: int, n: int, M: int, one_word: bool, direction: str
) -> None:
    words, mask, patches = _case(direction, Q, K, n, M, one_word, dtype, seed=Q * 1000 + K * 100 + M + n)
    got = _run(direction, words, mask, patches)
    assert got.dtype == torch.float32, "scores are float32 whatever the tokens' dtype"
    assert bool(torch.isfinite(got).all()), f"non-finite scores in {dtype}: {got}"
    expected = torch.empty(3, Q, K, dtype=torch.float64)
    for q in range(Q):
        for k in range(K):
            s_tv, s_vt = reference_pair(*_pair(direction, words, mask, patches, q, k), TAU)
            expected[:, q, k] = torch.tensor([(s_tv + s_vt) / 2, s_tv, s_vt])
    u = unit_roundoff(dtype)
    err = (got.double() - expected).abs().amax(dim=(1, 2)).tolist()
    for name, e, tol in zip(("fine", "s_tv", "s_vt"), err, (u / 2, u, u), strict=True):
        assert e <= tol, (
            f"{dtype} {direction} {name}: max |s - s_ref| = {e:.3g} = {e / u:.2f} u > {tol / u} u"
        )


@pytest.mark.parametrize("fill", [7.0, 1e4, float("inf"), float("nan")])
@pytest.mark.parametrize("direction", ["t2i", "i2t"])
@pytest.mark.parametrize("dtype", HALF)
def test_garbage_in_padding_rows_changes_no_score(dtype: torch.dtype, direction: str, fill: float) -> None:
    # 1e4 is finite in both dtypes, but its products with unit patches overflow float16 to inf.
    words, mask, patches = _case(direction, 3, 4, 8, 49, False, dtype, seed=5)
    clean = _run(direction, words, mask, patches)
    dirty = _run(direction, torch.where(mask[..., None], words, torch.full_like(words, fill)), mask, patches)
    assert bool(torch.isfinite(dirty).all()), f"padding filled with {fill} gave non-finite scores"
    torch.testing.assert_close(dirty, clean, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", HALF)
def test_half_attention_is_a_distribution_over_patches(dtype: torch.dtype) -> None:
    words, mask, patches = _case("t2i", 2, 3, 8, 49, False, dtype, seed=9)
    words = torch.where(mask[..., None], words, torch.full_like(words, float("nan")))
    attention = text_to_image(words, mask, patches, TAU, return_attention=True).attention
    assert attention is not None and attention.dtype == torch.float32
    valid = attention[mask[:, None].expand(2, 3, 8)]  # [valid rows, M]
    assert bool(torch.isfinite(valid).all())
    torch.testing.assert_close(valid.sum(-1), torch.ones(valid.shape[0]), rtol=0, atol=1e-6)
