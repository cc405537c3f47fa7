"""Losses against hand-computed cases and direct formulas."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from rsir.model.eba import EBAFilter
from rsir.model.errors import InvalidInputError
from rsir.model.ftf import text_to_image
from rsir.model.losses import ftf_loss, info_nce, paired_views
from rsir.model.train import TrainConfig


def _features(
    seed: int | torch.Generator, B: int, n: int, M: int, d: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random L2-normalised image vectors, patches, text vectors and words of a batch."""
    gen = seed if isinstance(seed, torch.Generator) else torch.Generator().manual_seed(seed)
    shapes = [(B, d), (B, M, d), (B, d), (B, n, d)]
    v, p, t, w = (F.normalize(torch.randn(*shape, generator=gen), dim=-1) for shape in shapes)
    return v, p, t, w


def test_info_nce_hand_computed() -> None:
    # 2x2 grid, temperature 1: row 0 logits [1, 0] -> -log(e/(e+1)); row 1 logits [0, 1] -> same.
    scores = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    expected = -math.log(math.e / (math.e + 1))
    assert info_nce(scores, 1.0).item() == pytest.approx(expected)
    # Asymmetric: rows see [2,0] and [1,0]; columns see [2,1] and [0,0].
    scores = torch.tensor([[2.0, 0.0], [1.0, 0.0]])
    rows = -math.log(math.exp(2) / (math.exp(2) + 1)) - math.log(1 / (math.exp(1) + 1))
    cols = -math.log(math.exp(2) / (math.exp(2) + math.exp(1))) - math.log(0.5)
    assert info_nce(scores, 1.0).item() == pytest.approx((rows / 2 + cols / 2) / 2)


def test_info_nce_anchor_mask_drops_rows_but_keeps_negatives() -> None:
    scores = torch.tensor([[2.0, 0.5, 0.1], [0.3, -1.0, 0.2], [0.0, 0.4, 1.5]])
    keep = torch.tensor([True, False, True])
    per_row = F.cross_entropy(scores, torch.arange(3), reduction="none")
    per_col = F.cross_entropy(scores.T, torch.arange(3), reduction="none")
    expected = (per_row[[0, 2]].sum() + per_col[[0, 2]].sum()) / 4
    assert info_nce(scores, 1.0, keep).item() == pytest.approx(expected.item())
    assert info_nce(scores, 1.0, torch.zeros(3, dtype=torch.bool)).item() == pytest.approx(
        info_nce(scores, 1.0).item()
    )


def test_info_nce_exclude_drops_pairs_from_both_softmaxes() -> None:
    # 3x3 grid, temperature 1, pair (0, 1) excluded: row 0 and column 1 lose that logit, and
    # nothing else changes (hand-computed from the log-sum-exp of what is left).
    scores = torch.tensor([[2.0, 0.5, 0.1], [0.3, -1.0, 0.2], [0.0, 0.4, 1.5]])
    exclude = torch.zeros(3, 3, dtype=torch.bool)
    exclude[0, 1] = True
    exclude[2, 2] = True  # the diagonal is the positive: never excluded

    def ce(logits: list[float], positive: int) -> float:
        return -logits[positive] + math.log(sum(math.exp(x) for x in logits))

    rows = ce([2.0, 0.1], 0) + ce([0.3, -1.0, 0.2], 1) + ce([0.0, 0.4, 1.5], 2)
    cols = ce([2.0, 0.3, 0.0], 0) + ce([-1.0, 0.4], 0) + ce([0.1, 0.2, 1.5], 2)
    assert info_nce(scores, 1.0, exclude=exclude).item() == pytest.approx((rows / 3 + cols / 3) / 2)
    nothing = torch.zeros(3, 3, dtype=torch.bool)
    assert info_nce(scores, 1.0, exclude=nothing).item() == pytest.approx(info_nce(scores, 1.0).item())


def test_fine_only_negatives_leave_the_fine_term_alone() -> None:
    B, n = 4, 5
    v, p, t, w = _features(3, B, n, M=6, d=8)
    m = torch.ones(B, n, dtype=torch.bool)
    groups = torch.tensor([0, 0, 1, 1])
    same = groups[:, None] == groups[None, :]
    spec = ftf_loss(v, p, t, w, m)
    parts = ftf_loss(v, p, t, w, m, fine_only_negatives=same)
    assert parts.fine.item() == pytest.approx(spec.fine.item())
    assert parts.coarse.item() == pytest.approx(info_nce(t @ v.T, 0.05, exclude=same).item())
    assert parts.coarse.item() < spec.coarse.item()  # fewer negatives in every softmax
    assert parts.intra_images.item() < spec.intra_images.item()
    assert parts.intra_texts.item() < spec.intra_texts.item()


def test_paired_views_direct_formula() -> None:
    gen = torch.Generator().manual_seed(0)
    words = F.normalize(torch.randn(3, 4, 8, generator=gen), dim=-1)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]], dtype=torch.bool)
    patches = F.normalize(torch.randn(3, 5, 8, generator=gen), dim=-1)
    visual, text = paired_views(words, mask, patches, tau=0.1)
    for b in range(3):
        W, P = words[b][mask[b]], patches[b]
        A = W @ P.T
        vhat = torch.softmax(A / 0.1, dim=1) @ P
        what = torch.softmax(A / 0.1, dim=0).T @ W
        torch.testing.assert_close(visual[b], F.normalize(vhat.mean(0), dim=0))
        torch.testing.assert_close(text[b], F.normalize(what.mean(0), dim=0))


def test_ftf_loss_terms_and_gradients() -> None:
    B, n = 4, 5
    v, p, t, w = _features(1, B, n, M=6, d=8)
    v.requires_grad_()
    m = torch.ones(B, n, dtype=torch.bool)
    parts = ftf_loss(v, p, t, w, m, temperature=0.05, tau=0.05)
    assert parts.coarse.item() == pytest.approx(info_nce(t @ v.T, 0.05).item())
    fine_grid = torch.stack([text_to_image(w[i : i + 1], m[i : i + 1], p[None]).fine[0] for i in range(B)])
    assert parts.fine.item() == pytest.approx(info_nce(fine_grid, 0.05).item(), rel=1e-5)
    total = parts.coarse + parts.fine + parts.intra_images + parts.intra_texts
    assert parts.total.item() == pytest.approx(total.item())
    parts.total.backward()  # type: ignore[no-untyped-call]
    assert v.grad is not None and torch.isfinite(v.grad).all() and v.grad.abs().sum() > 0


def test_ftf_loss_term_weights() -> None:
    B, n = 5, 4
    gen = torch.Generator().manual_seed(2)
    v, p, t, w = _features(gen, B, n, M=6, d=8)
    m = torch.rand(B, n, generator=gen) > 0.3
    m[:, 0] = True
    spec = ftf_loss(v, p, t, w, m)
    weighted = ftf_loss(v, p, t, w, m, fine_weight=3.0, intra_weight=0.0)
    # The parts stay the unweighted terms; only the total changes, by the weights.
    assert weighted.fine.item() == pytest.approx(spec.fine.item())
    assert weighted.intra_images.item() == pytest.approx(spec.intra_images.item())
    assert weighted.total.item() == pytest.approx(spec.coarse.item() + 3.0 * spec.fine.item())
    assert weighted.total.item() != pytest.approx(spec.total.item())


@pytest.mark.parametrize("bad", [-1.0, math.inf, math.nan])
def test_loss_weights_must_be_finite_and_non_negative(bad: float) -> None:
    with pytest.raises(InvalidInputError, match="fine_weight"):
        TrainConfig(fine_weight=bad)
    with pytest.raises(InvalidInputError, match="intra_weight"):
        TrainConfig(intra_weight=bad)


def test_eba_filter_drops_low_positives_once_active() -> None:
    eba = EBAFilter(size=100)
    assert eba.anchors(torch.linspace(0.0, 0.99, 100), active=False) is None
    mask = eba.anchors(torch.tensor([-0.5, 0.5, 0.005]), active=True)
    assert mask is not None and mask.tolist() == [False, True, False]  # 1st percentile ~ 0.0099
    state = eba.state_dict()
    other = EBAFilter(size=100)
    other.load_state_dict(state)
    assert other.filled == 100 and torch.equal(other.queue, eba.queue)
