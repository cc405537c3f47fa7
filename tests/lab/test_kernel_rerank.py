"""The kernel-pooling reranker: hand-computed soft counts and positions, padding, and counting."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from lab.cross_rerank import group_loss
from lab.kernel_rerank import MUS, KernelConfig, KernelReranker
from rsir.model.errors import InvalidInputError

CFG = KernelConfig(dim=8, grid=(2, 3), word_width=4, hidden=16)


def _scene(matches: int, word: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """6 patches: the first ``matches`` equal to ``word``, the rest random unit vectors orthogonal to it."""
    other = torch.randn(6, CFG.dim, generator=g)
    other = F.normalize(other - (other @ word)[:, None] * word, dim=-1)
    other[:matches] = word
    return other


def test_untrained_reranker_is_the_coarse_logit() -> None:
    g = torch.Generator().manual_seed(0)
    words = F.normalize(torch.randn(3, 4, CFG.dim, generator=g), dim=-1)
    patches = F.normalize(torch.randn(3, 6, CFG.dim, generator=g), dim=-1)
    coarse = torch.rand(3, generator=g)
    out = KernelReranker(CFG)(words, torch.ones(3, 4, dtype=torch.bool), patches, coarse)
    torch.testing.assert_close(out, coarse / CFG.temperature)


def test_soft_counts_and_position_by_hand() -> None:
    """Word w; patches 0 and 1 (the top row's left two of a 2 x 3 grid) equal w, the other four are
    orthogonal to it: the exact-match kernel counts 2, the kernel at 0.1 sees four cosines of 0, each
    exp(-0.01 / 0.02), and the attention looks at x = mean(-1, 0), y = -1."""
    g = torch.Generator().manual_seed(1)
    w = F.normalize(torch.randn(CFG.dim, generator=g), dim=0)
    patches = _scene(2, w, g)
    feats = KernelReranker(CFG).word_features(w[None, None], patches[None])[0, 0]
    kernels = feats[CFG.word_width : CFG.word_width + len(MUS)]
    assert kernels[0].item() == pytest.approx(math.log1p(2.0), rel=1e-5)
    assert kernels[MUS.index(0.1)].item() == pytest.approx(math.log1p(4 * math.exp(-0.5)), rel=1e-4)
    x, y = feats[-2:].tolist()
    assert x == pytest.approx(-0.5, abs=1e-3) and y == pytest.approx(-1.0, abs=1e-3)


def test_padded_words_change_nothing() -> None:
    torch.manual_seed(0)
    model = KernelReranker(CFG)
    torch.nn.init.normal_(model.mlp[-1].weight)  # type: ignore[arg-type]
    g = torch.Generator().manual_seed(2)
    words = F.normalize(torch.randn(2, 5, CFG.dim, generator=g), dim=-1)
    mask = torch.tensor([[True, True, True, False, False], [True] * 5])
    patches = F.normalize(torch.randn(2, 6, CFG.dim, generator=g), dim=-1)
    base = model(words, mask, patches, torch.zeros(2))
    junk = words.clone()
    junk[~mask] = 5.0
    torch.testing.assert_close(model(junk, mask, patches, torch.zeros(2)), base)
    assert not torch.allclose(base, torch.zeros(2))


def test_learns_an_exact_count() -> None:
    """Each group: four images with 1, 2, 3 and 4 patches matching the caption's word, equal coarse
    scores, and the one with exactly 2 is the positive. No monotone score of the match (like FTF's
    attention-weighted mean) can pick it; kernel pooling must learn to."""
    torch.manual_seed(0)
    model = KernelReranker(CFG)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for step in range(150):
        g = torch.Generator().manual_seed(step)
        words, patches = [], []
        for _ in range(8):
            w = F.normalize(torch.randn(CFG.dim, generator=g), dim=0)
            for count in (2, 1, 3, 4):  # column 0 is the positive
                words.append(w[None])
                patches.append(_scene(count, w, g))
        scores = model(
            torch.stack(words), torch.ones(32, 1, dtype=torch.bool), torch.stack(patches), torch.zeros(32)
        )
        loss = group_loss(scores.view(8, 4))
        opt.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        opt.step()
        losses.append(loss.item())
    assert losses[0] == pytest.approx(math.log(4), abs=1e-4)
    assert sum(losses[-10:]) / 10 < 0.2


def test_wrong_patch_count_is_rejected() -> None:
    with pytest.raises(InvalidInputError, match="expects 6 patches"):
        KernelReranker(CFG)(
            torch.zeros(1, 2, 8), torch.ones(1, 2, dtype=torch.bool), torch.zeros(1, 5, 8), torch.zeros(1)
        )
