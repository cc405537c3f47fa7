"""The iEBAKER local score as a batched stage-2 scorer (ALGORITHMS.md §4). No learnable parameters.

For one (text, image) pair with valid word tokens ``W`` (n x d) and patch tokens ``P`` (M x d),
``C = W P^T`` and ``s_l = ||C||_F / sqrt(n * M)``: the root mean square of the word-patch inner
products. The paper uses the bare ``||C||_F``; **[ours]** the ``sqrt(n * M)`` normalisation (``n`` the
number of valid words of that text) makes scores of texts of different lengths comparable and puts
``s_l`` on the scale of a similarity before it is fused with the global score.

Shapes and broadcasting follow :func:`rsir.model.ftf.interaction`: ``words [Qw,Kw,n,d]``, ``word_mask
[Qw,Kw,n]``, ``patches [Qp,Kp,M,d]``, leading dims broadcasting to ``[Q, K]``; ``A = W P^T`` is formed
by :func:`rsir.model.ftf._match` (one large GEMM when one side is shared across candidates).
"""

from __future__ import annotations

import torch

from rsir.model.errors import InvalidInputError
from rsir.model.ftf import DEFAULT_TAU, _check_inputs, _match, accumulation_dtype


def local_score(words: torch.Tensor, word_mask: torch.Tensor, patches: torch.Tensor) -> torch.Tensor:
    """``s_l [Q, K]`` for every (text, image) pair of a batch.

    Args:
        words: ``[Qw, Kw, n, d]`` word tokens.
        word_mask: ``[Qw, Kw, n]`` bool, True for real words; padding rows of ``C`` are left out of
            both the norm and ``n``.
        patches: ``[Qp, Kp, M, d]`` patch tokens.

    Memory: one ``[Q, K, n, M]`` tensor, as in FTF. Half-precision tokens give float32 scores: the
    product runs in their dtype, the sums of squares in float32.
    """
    _check_inputs(words, word_mask, patches, DEFAULT_TAU)  # shapes, sizes, texts with no valid word
    mask = word_mask.to(torch.bool)
    acc = accumulation_dtype(words.dtype, patches.dtype)
    # The product runs in the tokens' dtype, its squares and sums in acc (a float16 square of a
    # small product underflows, and a bfloat16 sum of n * M squares keeps 8 bits).
    A = _match(words, patches).to(acc)  # [Q,K,n,M]
    # where, not a multiply: a garbage padding word may give inf, and inf * 0 is NaN.
    sq = torch.where(mask, (A * A).sum(-1), 0.0)  # [Q,K,n]
    n_valid = mask.sum(-1).to(acc)  # [Qw,Kw]
    M = patches.shape[2]
    return sq.sum(-1).sqrt() / (n_valid * M).sqrt()


def text_to_image_local(words: torch.Tensor, word_mask: torch.Tensor, patches: torch.Tensor) -> torch.Tensor:
    """Text queries over image candidates: ``words [Q,n,d]``, ``word_mask [Q,n]``, ``patches
    [Q,K,M,d]`` -> ``[Q, K]``."""
    if words.dim() != 3 or word_mask.dim() != 2:
        raise InvalidInputError(
            f"text query tokens must be [Q,n,d] with mask [Q,n], got {tuple(words.shape)} "
            f"and {tuple(word_mask.shape)}"
        )
    return local_score(words.unsqueeze(1), word_mask.unsqueeze(1), patches)


def image_to_text_local(patches: torch.Tensor, words: torch.Tensor, word_mask: torch.Tensor) -> torch.Tensor:
    """Image queries over caption candidates: ``patches [Q,M,d]``, ``words [Q,K,n,d]``, ``word_mask
    [Q,K,n]`` -> ``[Q, K]``."""
    if patches.dim() != 3:
        raise InvalidInputError(f"image query tokens must be [Q,M,d], got {tuple(patches.shape)}")
    return local_score(words, word_mask, patches.unsqueeze(1))
