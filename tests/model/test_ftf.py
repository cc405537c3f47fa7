"""The batched FTF block against a per-pair loop written straight from ALGORITHMS.md §2."""

from __future__ import annotations

import math

import pytest
import torch

from rsir.model.errors import InvalidInputError
from rsir.model.ftf import FTFParams, fuse, image_to_text, interaction, text_to_image


def _unit(x: torch.Tensor) -> torch.Tensor:
    unit: torch.Tensor = x / x.norm(dim=-1, keepdim=True)
    return unit


def naive_pair(W: list[list[float]], P: list[list[float]], tau: float) -> tuple[float, list[list[float]]]:
    """One pair, plain Python floats and loops: W holds only the valid words (n x d), P is M x d."""

    def dot(u: list[float], v: list[float]) -> float:
        return sum(x * y for x, y in zip(u, v, strict=True))

    def cos(u: list[float], v: list[float]) -> float:
        return dot(u, v) / (math.sqrt(dot(u, u)) * math.sqrt(dot(v, v)))

    n, M = len(W), len(P)
    A = [[dot(W[i], P[j]) for j in range(M)] for i in range(n)]
    a_rows = []
    s_tv = 0.0
    for i in range(n):
        e = [math.exp(A[i][j] / tau) for j in range(M)]
        a = [x / sum(e) for x in e]
        a_rows.append(a)
        vhat = [sum(a[j] * P[j][c] for j in range(M)) for c in range(len(P[0]))]
        s_tv += cos(W[i], vhat)
    s_tv /= n
    s_vt = 0.0
    for j in range(M):
        e = [math.exp(A[i][j] / tau) for i in range(n)]
        b = [x / sum(e) for x in e]
        what = [sum(b[i] * W[i][c] for i in range(n)) for c in range(len(W[0]))]
        s_vt += cos(P[j], what)
    s_vt /= M
    return (s_tv + s_vt) / 2, a_rows


def _ragged_texts(gen: torch.Generator, Q: int, n: int, d: int) -> tuple[torch.Tensor, torch.Tensor]:
    words = _unit(torch.randn(Q, n, d, generator=gen, dtype=torch.float64))
    lengths = torch.randint(1, n + 1, (Q,), generator=gen)
    lengths[0] = n  # at least one full-length text
    lengths[-1] = 1  # and a one-word text
    mask = torch.arange(n)[None, :] < lengths[:, None]
    # Padding positions hold garbage on purpose: the mask alone must exclude them.
    words = torch.where(mask[..., None], words, 7.0 * torch.ones_like(words))
    return words, mask


@pytest.mark.parametrize(("Q", "K", "n", "M", "d"), [(3, 4, 6, 9, 8), (2, 1, 5, 4, 16), (1, 1, 1, 1, 4)])
def test_text_to_image_matches_naive_loop(Q: int, K: int, n: int, M: int, d: int) -> None:
    gen = torch.Generator().manual_seed(Q * 100 + K)
    tau = 0.07
    words, mask = _ragged_texts(gen, Q, n, d)
    patches = _unit(torch.randn(Q, K, M, d, generator=gen, dtype=torch.float64))

    out = text_to_image(words, mask, patches, tau=tau, return_attention=True)
    assert out.fine.shape == (Q, K)
    assert out.attention is not None and out.attention.shape == (Q, K, n, M)
    for q in range(Q):
        valid = [w.tolist() for w, m in zip(words[q], mask[q], strict=True) if m]
        for k in range(K):
            expected, a_rows = naive_pair(valid, patches[q, k].tolist(), tau)
            assert out.fine[q, k].item() == pytest.approx(expected, abs=1e-9)
            valid_attention = out.attention[q, k][mask[q]]
            torch.testing.assert_close(valid_attention, torch.tensor(a_rows, dtype=torch.float64))


@pytest.mark.parametrize(("Q", "K"), [(2, 5), (1, 1), (4, 1)])
def test_image_to_text_matches_naive_loop(Q: int, K: int) -> None:
    gen = torch.Generator().manual_seed(7 + Q + K)
    n, M, d, tau = 5, 6, 8, 0.05
    patches = _unit(torch.randn(Q, M, d, generator=gen, dtype=torch.float64))
    flat_words, flat_mask = _ragged_texts(gen, Q * K, n, d)
    words, mask = flat_words.view(Q, K, n, d), flat_mask.view(Q, K, n)

    out = image_to_text(patches, words, mask, tau=tau)
    assert out.fine.shape == (Q, K)
    assert out.attention is None
    for q in range(Q):
        for k in range(K):
            valid = [w.tolist() for w, m in zip(words[q, k], mask[q, k], strict=True) if m]
            expected, _ = naive_pair(valid, patches[q].tolist(), tau)
            assert out.fine[q, k].item() == pytest.approx(expected, abs=1e-9)


def test_broadcast_equals_explicit_expand_and_float32_close() -> None:
    gen = torch.Generator().manual_seed(3)
    words, mask = _ragged_texts(gen, 3, 7, 16)
    patches = _unit(torch.randn(3, 10, 12, 16, generator=gen, dtype=torch.float64))
    broadcast = text_to_image(words, mask, patches).fine
    expanded = interaction(words[:, None].expand(3, 10, 7, 16), mask[:, None].expand(3, 10, 7), patches).fine
    torch.testing.assert_close(broadcast, expanded)
    single = text_to_image(words.float(), mask, patches.float()).fine
    torch.testing.assert_close(single.double(), broadcast, atol=1e-5, rtol=0)


def test_identical_tokens_give_high_fine_score() -> None:
    # A text whose words equal patches of the image is a near-perfect match at low tau: every word
    # attends to its own patch and vice versa, so both cosines approach 1.
    gen = torch.Generator().manual_seed(0)
    P = _unit(torch.randn(1, 1, 4, 32, generator=gen, dtype=torch.float64))
    W = P[0, :, :, :].clone()  # [1,4,32]: the four words are the four patches
    out = text_to_image(W, torch.ones(1, 4, dtype=torch.bool), P, tau=0.01)
    assert out.fine.item() > 0.99


def test_fuse_is_convex_combination() -> None:
    c = torch.tensor([[0.2, 0.8]])
    f = torch.tensor([[0.6, 0.0]])
    torch.testing.assert_close(fuse(c, f, 0.25), torch.tensor([[0.5, 0.2]]))
    with pytest.raises(InvalidInputError):
        FTFParams(lam=1.5)
    with pytest.raises(InvalidInputError):
        FTFParams(tau=0.0)


def test_all_padding_text_is_rejected() -> None:
    words = torch.randn(2, 3, 8)
    mask = torch.tensor([[True, False, False], [False, False, False]])
    with pytest.raises(InvalidInputError, match=r"\(1, 0\).*no valid word tokens"):
        text_to_image(words, mask, torch.randn(2, 4, 5, 8))


def test_shape_errors_are_clear() -> None:
    with pytest.raises(InvalidInputError, match="embedding size"):
        text_to_image(torch.randn(1, 3, 8), torch.ones(1, 3, dtype=torch.bool), torch.randn(1, 2, 5, 4))
    with pytest.raises(InvalidInputError, match="no candidates"):
        text_to_image(torch.randn(1, 3, 8), torch.ones(1, 3, dtype=torch.bool), torch.randn(1, 0, 5, 8))
    with pytest.raises(InvalidInputError, match="does not match"):
        text_to_image(torch.randn(1, 3, 8), torch.ones(1, 4, dtype=torch.bool), torch.randn(1, 2, 5, 8))
    with pytest.raises(InvalidInputError, match=r"\[Q,n,d\]"):
        text_to_image(torch.randn(3, 8), torch.ones(3, dtype=torch.bool), torch.randn(1, 2, 5, 8))


def test_shared_candidates_layouts_match_pairwise() -> None:
    # Exhaustive search shares one candidate set across queries: [Q,1,...] against [1,K,...].
    gen = torch.Generator().manual_seed(21)
    words, mask = _ragged_texts(gen, 3, 5, 8)
    patches = _unit(torch.randn(6, 7, 8, generator=gen, dtype=torch.float64))  # K=6 images
    shared = interaction(words[:, None], mask[:, None], patches[None]).fine
    pairwise = text_to_image(words, mask, patches[None].expand(3, 6, 7, 8)).fine
    torch.testing.assert_close(shared, pairwise)
    images = _unit(torch.randn(4, 7, 8, generator=gen, dtype=torch.float64))  # Q=4 image queries
    caps, cap_mask = _ragged_texts(gen, 5, 6, 8)  # K=5 captions
    shared_i = interaction(caps[None], cap_mask[None], images[:, None]).fine
    pairwise_i = image_to_text(images, caps[None].expand(4, 5, 6, 8), cap_mask[None].expand(4, 5, 6)).fine
    torch.testing.assert_close(shared_i, pairwise_i)
    for q in range(4):
        for k in range(5):
            valid = [w.tolist() for w, m in zip(caps[k], cap_mask[k], strict=True) if m]
            assert shared_i[q, k].item() == pytest.approx(
                naive_pair(valid, images[q].tolist(), 0.05)[0], abs=1e-9
            )


@pytest.mark.parametrize("chunk_bytes", [1, 10_000])
@pytest.mark.parametrize("layout", ["t2i", "i2t", "shared"])
def test_chunked_batches_give_the_whole_batch_scores(
    monkeypatch: pytest.MonkeyPatch, layout: str, chunk_bytes: int
) -> None:
    # A text query's attended vectors are formed in chunks of pairs (one pair at a time with 1 byte,
    # a few with 10,000; the other layouts take no chunks): every score, and the attention, as in one go.
    from rsir.model import ftf

    gen = torch.Generator().manual_seed(31)
    Q, K, n, M, d = 5, 7, 4, 5, 8
    texts, mask = _ragged_texts(gen, Q * K, n, d)
    if layout == "t2i":
        words, mask = texts[:Q, None], mask[:Q, None]
        patches = _unit(torch.randn(Q, K, M, d, generator=gen, dtype=torch.float64))
    elif layout == "i2t":
        words, mask = texts.view(Q, K, n, d), mask.view(Q, K, n)
        patches = _unit(torch.randn(Q, 1, M, d, generator=gen, dtype=torch.float64))
    else:  # the same candidates for every query
        words, mask = texts[:Q, None], mask[:Q, None]
        patches = _unit(torch.randn(1, K, M, d, generator=gen, dtype=torch.float64))
    whole = interaction(words, mask, patches, return_attention=True)
    monkeypatch.setattr(ftf, "_CHUNK_BYTES", chunk_bytes)
    chunked = interaction(words, mask, patches, return_attention=True)
    assert chunked.fine.shape == (Q, K) and chunked.attention is not None and whole.attention is not None
    for field in ("fine", "s_tv", "s_vt", "attention"):
        torch.testing.assert_close(getattr(chunked, field), getattr(whole, field), atol=1e-12, rtol=0)
    q, k = 3, 6  # and one pair against the loop, far from the first chunk
    valid = [
        w.tolist()
        for w, m in zip(
            words[q, 0 if layout != "i2t" else k], mask[q, 0 if layout != "i2t" else k], strict=True
        )
        if m
    ]
    image = patches[q if layout != "shared" else 0, k if layout != "i2t" else 0]
    assert chunked.fine[q, k].item() == pytest.approx(naive_pair(valid, image.tolist(), 0.05)[0], abs=1e-9)
