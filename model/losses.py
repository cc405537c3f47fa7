"""Training losses (ALGORITHMS.md §2): ``L = L_inter + L_intra``, tensors in, scalar out.

- ``L_inter = InfoNCE(s_c) + InfoNCE(s_f)`` over the ``B x B`` batch grid (coarse and FTF fine scores);
- ``L_intra = InfoNCE_images(v, mean_i vhat_i) + InfoNCE_texts(t, mean_j what_j)``: each item's global
  vector against the fine view of it that its paired text (image) attends to.

All InfoNCE terms are symmetric with in-batch negatives; row ``b`` and column ``b`` are the positive pair.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from rsir.model.ftf import DEFAULT_TAU, interaction

DEFAULT_TEMPERATURE = 0.05


@dataclass(frozen=True)
class LossParts:
    """The scalar total and its four terms (detached copies are what a progress bar shows)."""

    total: torch.Tensor
    coarse: torch.Tensor
    fine: torch.Tensor
    intra_images: torch.Tensor
    intra_texts: torch.Tensor

    def as_floats(self) -> dict[str, float]:
        return {
            "loss": float(self.total.detach()),
            "coarse": float(self.coarse.detach()),
            "fine": float(self.fine.detach()),
            "intra_img": float(self.intra_images.detach()),
            "intra_txt": float(self.intra_texts.detach()),
        }


def info_nce(
    scores: torch.Tensor,
    temperature: float | torch.Tensor = DEFAULT_TEMPERATURE,
    anchors: torch.Tensor | None = None,
    exclude: torch.Tensor | None = None,
) -> torch.Tensor:
    """Symmetric InfoNCE of a ``[B,B]`` score matrix whose diagonal holds the positives.

    ``anchors [B]`` bool (EBA): only these pairs contribute rows/columns as anchors; every item stays a
    negative. ``None`` or an all-False mask uses every pair.
    ``exclude [B,B]`` bool: off-diagonal pairs that are not negatives here (left out of both softmaxes).
    """
    logits = scores / temperature
    if exclude is not None:
        off_diagonal = exclude & ~torch.eye(scores.shape[0], dtype=torch.bool, device=scores.device)
        logits = logits.masked_fill(off_diagonal, float("-inf"))
    target = torch.arange(scores.shape[0], device=scores.device)
    per_text = F.cross_entropy(logits, target, reduction="none")
    per_image = F.cross_entropy(logits.T, target, reduction="none")
    if anchors is None or not bool(anchors.any()):
        return (per_text.mean() + per_image.mean()) / 2
    keep = anchors.to(per_text.dtype)
    return ((per_text * keep).sum() + (per_image * keep).sum()) / (2 * keep.sum())


def paired_views(
    words: torch.Tensor, word_mask: torch.Tensor, patches: torch.Tensor, tau: float = DEFAULT_TAU
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fine views of matched pairs: ``words [B,n,d]``, ``mask [B,n]``, ``patches [B,M,d]``.

    Returns (``mean_i vhat_i`` ``[B,d]``, the image as its text sees it; ``mean_j what_j`` ``[B,d]``,
    the text as its image sees it), both L2-normalised. The word mean is over valid words only.
    """
    mask = word_mask.to(torch.bool)
    logits = torch.matmul(words, patches.transpose(-1, -2)) / tau  # [B,n,M]
    vhat = torch.matmul(torch.softmax(logits, dim=-1), patches)  # [B,n,d]
    maskf = mask.to(vhat.dtype).unsqueeze(-1)
    visual_view = (vhat * maskf).sum(1) / maskf.sum(1)
    b = torch.softmax(logits.masked_fill(~mask.unsqueeze(-1), float("-inf")), dim=1)  # over words
    what = torch.matmul(b.transpose(-1, -2), words)  # [B,M,d]
    text_view = what.mean(1)
    return F.normalize(visual_view, dim=-1), F.normalize(text_view, dim=-1)


def ftf_loss(
    image_vectors: torch.Tensor,
    patches: torch.Tensor,
    text_vectors: torch.Tensor,
    words: torch.Tensor,
    word_mask: torch.Tensor,
    temperature: float | torch.Tensor = DEFAULT_TEMPERATURE,
    tau: float = DEFAULT_TAU,
    anchors: torch.Tensor | None = None,
    fine_weight: float = 1.0,
    intra_weight: float = 1.0,
    fine_only_negatives: torch.Tensor | None = None,
) -> LossParts:
    """``L_inter + L_intra`` for a batch of ``B`` matched pairs (all inputs L2-normalised).

    ``image_vectors [B,d]``, ``patches [B,M,d]``, ``text_vectors [B,d]``, ``words [B,n,d]``,
    ``word_mask [B,n]``. Row ``i`` of the score grids is text ``i``; column ``j`` is image ``j``.
    ``anchors [B]``: the EBA mask of pairs kept as anchors (None: all).
    ``fine_weight`` scales ``InfoNCE(s_f)`` and ``intra_weight`` both ``L_intra`` terms; the spec's
    loss is 1 and 1. They exist to test whether a fine score trained harder, or less tied to the
    global vector, adds more to the coarse one (BENCHMARKS.md); the parts are reported unweighted.
    ``fine_only_negatives [B,B]`` bool: pairs that are negatives of ``InfoNCE(s_f)`` only, left out of
    the coarse and ``L_intra`` terms (a two-stage search asks the fine score alone to tell apart the
    near-twins that the coarse score lets through; None: every pair is a negative of every term).
    """
    coarse_scores = text_vectors @ image_vectors.T  # [B_text, B_image]
    fine_scores = interaction(words[:, None], word_mask[:, None], patches[None], tau).fine  # [B,B]
    visual_view, text_view = paired_views(words, word_mask, patches, tau)
    only = fine_only_negatives
    coarse = info_nce(coarse_scores, temperature, anchors, only)
    fine = info_nce(fine_scores, temperature, anchors)
    intra_images = info_nce(image_vectors @ visual_view.T, temperature, anchors, only)
    intra_texts = info_nce(text_vectors @ text_view.T, temperature, anchors, only)
    total = coarse + fine_weight * fine + intra_weight * (intra_images + intra_texts)
    return LossParts(total, coarse, fine, intra_images, intra_texts)
