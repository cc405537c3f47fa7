"""A learned cross-encoder reranker over stored tokens (ALGORITHMS.md §3's "optional later row").

FTF's stage 2 is parameter-free. This is the learned alternative the spec names: a small transformer
reads one caption's word tokens and one image's patch tokens together (the tokens the index already
stores, from a frozen encoder) and outputs a correction to the coarse logit::

    score(T, I) = s_c(T, I) / temperature + r(W, P)

``r`` starts at zero (zero-initialised head), so an untrained reranker ranks exactly as the coarse
score does. Training is listwise: a query's own item among hard negatives drawn from its coarse
top-K, softmax cross-entropy over the group (:func:`group_loss`). The same pair scorer serves both
directions of search. It is an experiment measured in ``lab/learned_rerank.py``, not a mode of the
engine.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from rsir.model.errors import InvalidInputError


@dataclass(frozen=True)
class CrossConfig:
    """Shape of the reranker: token dim of the encoder, and the transformer's width, depth and heads."""

    dim: int
    patches: int
    width: int = 128
    layers: int = 2
    heads: int = 4
    max_words: int = 77
    temperature: float = 0.05


class CrossReranker(nn.Module):
    """``forward(words [B,n,d], mask [B,n], patches [B,M,d], coarse [B]) -> scores [B]``."""

    def __init__(self, config: CrossConfig) -> None:
        super().__init__()
        self.config = config
        w = config.width
        # One projection for both kinds of token: they already share the joint space (ALGORITHMS.md §1),
        # so a word and the patch it describes start out close; a type embedding tells them apart.
        self.tokens_in = nn.Linear(config.dim, w)
        self.word_type = nn.Parameter(torch.randn(w) * 0.02)
        self.patch_type = nn.Parameter(torch.randn(w) * 0.02)
        # Learned positions: the side of an object is a fact captions state, and patch order is the grid.
        self.word_pos = nn.Parameter(torch.randn(config.max_words, w) * 0.02)
        self.patch_pos = nn.Parameter(torch.randn(config.patches, w) * 0.02)
        self.cls = nn.Parameter(torch.randn(1, 1, w) * 0.02)
        layer = nn.TransformerEncoderLayer(
            w, config.heads, 2 * w, dropout=0.0, batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, config.layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(w)
        self.head = nn.Linear(w, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def correction(self, words: torch.Tensor, mask: torch.Tensor, patches: torch.Tensor) -> torch.Tensor:
        """``r(W, P)`` per pair, ``[B]``."""
        b, n, _ = words.shape
        if n > self.config.max_words or patches.shape[1] != self.config.patches:
            raise InvalidInputError(
                f"reranker takes at most {self.config.max_words} words and exactly {self.config.patches} "
                f"patches, got {n} and {patches.shape[1]}"
            )
        x = torch.cat(
            [
                self.cls.expand(b, -1, -1),
                self.tokens_in(words) + self.word_type + self.word_pos[:n],
                self.tokens_in(patches) + self.patch_type + self.patch_pos,
            ],
            dim=1,
        )
        pad = torch.cat(
            [mask.new_zeros(b, 1), ~mask.to(torch.bool), mask.new_zeros(b, patches.shape[1])], dim=1
        ).to(torch.bool)
        h = self.encoder(x, src_key_padding_mask=pad)
        out: torch.Tensor = self.head(self.norm(h[:, 0])).squeeze(-1)
        return out

    def forward(
        self, words: torch.Tensor, mask: torch.Tensor, patches: torch.Tensor, coarse: torch.Tensor
    ) -> torch.Tensor:
        return coarse / self.config.temperature + self.correction(words, mask, patches)


def group_loss(scores: torch.Tensor) -> torch.Tensor:
    """Listwise loss over ``[G, C]`` groups whose column 0 is the positive: mean cross-entropy."""
    if scores.dim() != 2 or scores.shape[1] < 2:
        raise InvalidInputError(f"group scores must be [G, C] with C >= 2, got {tuple(scores.shape)}")
    target = torch.zeros(scores.shape[0], dtype=torch.long, device=scores.device)
    return nn.functional.cross_entropy(scores, target)
