"""The batched local score against a per-pair loop, and a tiny case worked by hand."""

from __future__ import annotations

import math

import pytest
import torch

from rsir.model.errors import InvalidInputError
from rsir.model.local_score import image_to_text_local, local_score, text_to_image_local


def naive_pair(W: torch.Tensor, mask: torch.Tensor, P: torch.Tensor) -> float:
    """One pair, loops over the valid words and the patches: ||W P^T||_F / sqrt(n_valid * M)."""
    total, n = 0.0, 0
    for i in range(W.shape[0]):
        if not bool(mask[i]):
            continue
        n += 1
        for j in range(P.shape[0]):
            total += float(W[i] @ P[j]) ** 2
    return math.sqrt(total) / math.sqrt(n * P.shape[0])


def _mask(shape: tuple[int, ...], gen: torch.Generator) -> torch.Tensor:
    mask = torch.rand(shape, generator=gen) > 0.4
    mask[..., 0] = True  # every text has at least one word
    return mask


def test_tiny_case_by_hand() -> None:
    W = torch.tensor([[[[1.0, 0.0], [1.0, 1.0]]]])  # [1,1,n=2,d=2]
    P = torch.tensor([[[[1.0, 2.0], [0.0, 1.0]]]])  # [1,1,M=2,d=2]
    # C = W P^T: w1 = (1,0) -> [1, 0]; w2 = (1,1) -> [3, 1]
    # both words: ||C||_F^2 = 1 + 0 + 9 + 1 = 11 -> s_l = sqrt(11) / sqrt(2*2) = 1.658312
    both = local_score(W, torch.tensor([[[True, True]]]), P)
    assert both.shape == (1, 1)
    assert float(both) == pytest.approx(math.sqrt(11) / 2, rel=1e-6)
    # w2 is padding: ||C||_F^2 = 1 -> s_l = 1 / sqrt(1*2) = 0.707107
    first = local_score(W, torch.tensor([[[True, False]]]), P)
    assert float(first) == pytest.approx(1 / math.sqrt(2), rel=1e-6)


@pytest.mark.parametrize(
    ("w_lead", "p_lead"),
    [
        ((3, 1), (3, 4)),  # text queries, each over its own image candidates
        ((3, 1), (1, 4)),  # text queries, all over the same images
        ((3, 4), (3, 1)),  # image queries, each over its own caption candidates
        ((1, 4), (3, 1)),  # image queries, all over the same captions
        ((3, 4), (3, 4)),  # one text and one image per pair
    ],
)
def test_batched_matches_per_pair_loop(w_lead: tuple[int, int], p_lead: tuple[int, int]) -> None:
    gen = torch.Generator().manual_seed(0)
    n, M, d = 5, 6, 8
    words = torch.randn(*w_lead, n, d, generator=gen)
    mask = _mask((*w_lead, n), gen)
    words = words.masked_fill(~mask.unsqueeze(-1), 1e3)  # padding rows hold junk that must not count
    patches = torch.randn(*p_lead, M, d, generator=gen)
    out = local_score(words, mask, patches)
    Q, K = max(w_lead[0], p_lead[0]), max(w_lead[1], p_lead[1])
    assert out.shape == (Q, K)
    for q in range(Q):
        for k in range(K):
            wq, wk = min(q, w_lead[0] - 1), min(k, w_lead[1] - 1)
            pq, pk = min(q, p_lead[0] - 1), min(k, p_lead[1] - 1)
            ref = naive_pair(words[wq, wk], mask[wq, wk], patches[pq, pk])
            assert float(out[q, k]) == pytest.approx(ref, rel=1e-4), (q, k)


def test_direction_wrappers() -> None:
    gen = torch.Generator().manual_seed(1)
    Q, K, n, M, d = 2, 3, 4, 5, 6
    words_q = torch.randn(Q, n, d, generator=gen)
    mask_q = _mask((Q, n), gen)
    patches_k = torch.randn(Q, K, M, d, generator=gen)
    t2i = text_to_image_local(words_q, mask_q, patches_k)
    assert torch.allclose(t2i, local_score(words_q[:, None], mask_q[:, None], patches_k))
    patches_q = torch.randn(Q, M, d, generator=gen)
    words_k = torch.randn(Q, K, n, d, generator=gen)
    mask_k = _mask((Q, K, n), gen)
    i2t = image_to_text_local(patches_q, words_k, mask_k)
    assert torch.allclose(i2t, local_score(words_k, mask_k, patches_q[:, None]))
    assert float(i2t[1, 2]) == pytest.approx(naive_pair(words_k[1, 2], mask_k[1, 2], patches_q[1]), rel=1e-4)


def test_errors() -> None:
    words, patches = torch.randn(1, 2, 3, 4), torch.randn(1, 2, 5, 4)
    mask = torch.ones(1, 2, 3, dtype=torch.bool)
    mask[0, 1] = False
    with pytest.raises(InvalidInputError, match="no valid word tokens"):
        local_score(words, mask, patches)
    with pytest.raises(InvalidInputError, match=r"\[Q,n,d\]"):
        text_to_image_local(words, mask, patches)
    with pytest.raises(InvalidInputError, match=r"\[Q,M,d\]"):
        image_to_text_local(patches, words, mask)


@pytest.mark.parametrize("fill", [0.0, 1e4, float("nan")])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize(("w_lead", "p_lead", "M"), [((2, 1), (2, 3), 49), ((2, 3), (2, 1), 196)])
def test_half_precision_within_one_rounding(
    w_lead: tuple[int, int], p_lead: tuple[int, int], M: int, dtype: torch.dtype, fill: float
) -> None:
    # Each entry of C = W P^T is rounded once to the dtype (relative error <= u = eps/2) and the rest
    # runs in float32, so ||C||_F, hence s_l, is within a relative u of the float64 value on the same
    # (rounded) tokens. Padding rows hold `fill`: 1e4 overflows float16 products to inf.
    gen = torch.Generator().manual_seed(M)
    n, d = 8, 128
    words = torch.nn.functional.normalize(torch.randn(*w_lead, n, d, generator=gen) + 1.0, dim=-1).to(dtype)
    mask = _mask((*w_lead, n), gen)
    words = words.masked_fill(~mask.unsqueeze(-1), fill)
    patches = torch.nn.functional.normalize(torch.randn(*p_lead, M, d, generator=gen) + 1.0, dim=-1).to(dtype)
    out = local_score(words, mask, patches)
    assert out.dtype == torch.float32 and bool(torch.isfinite(out).all())
    u = float(torch.finfo(dtype).eps) / 2
    for q in range(out.shape[0]):
        for k in range(out.shape[1]):
            wq, wk = min(q, w_lead[0] - 1), min(k, w_lead[1] - 1)
            pq, pk = min(q, p_lead[0] - 1), min(k, p_lead[1] - 1)
            ref = naive_pair(words[wq, wk].double(), mask[wq, wk], patches[pq, pk].double())
            assert float(out[q, k]) == pytest.approx(ref, rel=u, abs=0), (q, k, dtype)
