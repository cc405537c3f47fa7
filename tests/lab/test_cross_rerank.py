"""The learned cross-encoder reranker: starts as the coarse score, ignores padding, and learns."""

from __future__ import annotations

import math

import pytest
import torch

from lab.cross_rerank import CrossConfig, CrossReranker, group_loss
from rsir.model.errors import InvalidInputError

CFG = CrossConfig(dim=16, patches=4, width=32, layers=2, heads=2, max_words=8)


def _inputs(b: int, n: int = 5, seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    words = torch.randn(b, n, CFG.dim, generator=g)
    mask = torch.ones(b, n, dtype=torch.bool)
    mask[:, -2:] = False
    patches = torch.randn(b, CFG.patches, CFG.dim, generator=g)
    coarse = torch.rand(b, generator=g)
    return words, mask, patches, coarse


def test_untrained_reranker_is_the_coarse_logit() -> None:
    torch.manual_seed(0)
    words, mask, patches, coarse = _inputs(6)
    scores = CrossReranker(CFG)(words, mask, patches, coarse)
    torch.testing.assert_close(scores, coarse / CFG.temperature)


def test_padded_words_change_nothing() -> None:
    torch.manual_seed(0)
    model = CrossReranker(CFG).eval()
    torch.nn.init.normal_(model.head.weight)
    words, mask, patches, coarse = _inputs(3)
    base = model(words, mask, patches, coarse)
    noisy = words.clone()
    noisy[~mask] = 100.0  # garbage where the mask says padding
    longer = torch.cat([noisy, torch.randn(3, 2, CFG.dim)], dim=1)
    longer_mask = torch.cat([mask, torch.zeros(3, 2, dtype=torch.bool)], dim=1)
    torch.testing.assert_close(model(longer, longer_mask, patches, coarse), base, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(base, coarse / CFG.temperature)  # the correction is really applied


def test_group_loss_by_hand() -> None:
    # Two items with equal scores: -log(1/2). Positive far ahead: ~0.
    assert float(group_loss(torch.zeros(1, 2))) == pytest.approx(math.log(2))
    assert float(group_loss(torch.tensor([[30.0, 0.0, 0.0]]))) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(InvalidInputError, match="C >= 2"):
        group_loss(torch.zeros(4))


def test_training_learns_to_match_words_to_patches() -> None:
    """Groups of 4 images with equal coarse scores, each image's patches one repeated random vector;
    only the positive's vector is the caption's first word. The untrained loss is log 4; a short
    training must bring it well below: the reranker learns a word-patch match the coarse score lacks."""
    torch.manual_seed(0)
    model = CrossReranker(CFG)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for step in range(150):
        g = torch.Generator().manual_seed(step)
        words = torch.randn(16, 1, 5, CFG.dim, generator=g).expand(16, 4, 5, CFG.dim)
        patches = torch.randn(16, 4, 1, CFG.dim, generator=g).expand(16, 4, CFG.patches, CFG.dim).clone()
        patches[:, 0] = words[:, 0, :1]
        mask = torch.ones(16, 4, 5, dtype=torch.bool)
        flat = model(
            words.reshape(-1, 5, CFG.dim),
            mask.reshape(-1, 5),
            patches.reshape(-1, CFG.patches, CFG.dim),
            torch.zeros(64),
        )
        loss = group_loss(flat.view(16, 4))
        opt.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        opt.step()
        losses.append(loss.item())
    assert losses[0] == pytest.approx(math.log(4), abs=1e-4)
    assert sum(losses[-15:]) / 15 < 0.5 * math.log(4)


def test_shapes_are_checked() -> None:
    model = CrossReranker(CFG)
    words, mask, patches, coarse = _inputs(2)
    with pytest.raises(InvalidInputError, match="exactly 4 patches"):
        model(words, mask, patches[:, :3], coarse)
    with pytest.raises(InvalidInputError, match="at most 8 words"):
        model(torch.randn(2, 9, CFG.dim), torch.ones(2, 9, dtype=torch.bool), patches, coarse)
