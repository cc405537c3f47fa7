"""A small learned stage 2 that can count: kernel pooling over the word-patch similarity matrix.

The twin probe (``lab/caption_truth.py``) shows where FTF's parameter-free block falls short: it
ranks a caption's own image above a twin that differs in a count or a side no better than the global
vector does. Its softmax-weighted mean of patches is, by design, blind to how many patches match a
word. Kernel pooling (K-NRM, Xiong et al., SIGIR 2017) keeps that number: for word ``i`` and kernel
``k`` (a Gaussian bin of cosine similarity), ``phi_ik = log(1 + sum_j exp(-(A_ij - mu_k)^2 / 2 sigma_k^2))``
is a soft count of the patches whose similarity to the word falls in the bin. Beside it the reranker
sees where the word looks: the FTF attention's mean patch position (x, y in [-1, 1]). A two-layer MLP
over ``[proj(w_i), phi_i, pos_i]`` scores each word; the masked mean over words corrects the coarse
logit::

    score(T, I) = s_c(T, I) / temperature + mean_i mlp(proj(w_i), phi_i, pos_i)

The last layer starts at zero, so an untrained reranker ranks exactly as the coarse score does. It
reads only the stored tokens and costs about what the FTF block costs. Trained with
:func:`lab.cross_rerank.group_loss`; measured in ``lab/learned_rerank.py``; not a mode of the engine.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from rsir.model.errors import InvalidInputError

# K-NRM's kernels: an exact-match bin at 1.0 and ten soft bins of width 0.1 across [-0.9, 0.9].
MUS = (1.0, 0.9, 0.7, 0.5, 0.3, 0.1, -0.1, -0.3, -0.5, -0.7, -0.9)
SIGMAS = (1e-3,) + (0.1,) * 10


@dataclass(frozen=True)
class KernelConfig:
    """Token dim and patch grid of the encoder; width of the word projection and of the MLP."""

    dim: int
    grid: tuple[int, int]
    word_width: int = 32
    hidden: int = 64
    tau: float = 0.05
    temperature: float = 0.05


class KernelReranker(nn.Module):
    """``forward(words [B,n,d], mask [B,n], patches [B,M,d], coarse [B]) -> scores [B]``."""

    def __init__(self, config: KernelConfig) -> None:
        super().__init__()
        self.config = config
        self.word_proj = nn.Linear(config.dim, config.word_width)
        self.mlp = nn.Sequential(
            nn.Linear(config.word_width + len(MUS) + 2, config.hidden),
            nn.ReLU(),
            nn.Linear(config.hidden, 1),
        )
        last = self.mlp[-1]
        assert isinstance(last, nn.Linear)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        rows, cols = config.grid
        ys, xs = torch.meshgrid(torch.linspace(-1, 1, rows), torch.linspace(-1, 1, cols), indexing="ij")
        self.coords: torch.Tensor
        self.mus: torch.Tensor
        self.sigmas: torch.Tensor
        self.register_buffer("coords", torch.stack([xs.flatten(), ys.flatten()], dim=-1), persistent=False)
        self.register_buffer("mus", torch.tensor(MUS), persistent=False)
        self.register_buffer("sigmas", torch.tensor(SIGMAS), persistent=False)

    def word_features(self, words: torch.Tensor, patches: torch.Tensor) -> torch.Tensor:
        """``[B, n, word_width + kernels + 2]``: projection, soft counts per kernel, attended position."""
        m = self.config.grid[0] * self.config.grid[1]
        if patches.shape[1] != m:
            raise InvalidInputError(
                f"reranker expects {m} patches ({self.config.grid} grid), got {patches.shape[1]}"
            )
        sim = torch.matmul(words, patches.transpose(-1, -2))  # [B, n, M]; unit vectors, so cosines
        diff = sim.unsqueeze(-1) - self.mus  # [B, n, M, K]
        soft_counts = torch.exp(-(diff**2) / (2 * self.sigmas**2)).sum(dim=2)  # [B, n, K]
        attention = torch.softmax(sim / self.config.tau, dim=-1)
        position = torch.matmul(attention, self.coords)  # [B, n, 2]
        return torch.cat([self.word_proj(words), torch.log1p(soft_counts), position], dim=-1)

    def correction(self, words: torch.Tensor, mask: torch.Tensor, patches: torch.Tensor) -> torch.Tensor:
        """The learned term per pair, ``[B]``: the masked mean of the per-word MLP scores."""
        per_word = self.mlp(self.word_features(words, patches)).squeeze(-1)  # [B, n]
        maskf = mask.to(per_word.dtype)
        out: torch.Tensor = (per_word * maskf).sum(-1) / maskf.sum(-1).clamp_min(1.0)
        return out

    def forward(
        self, words: torch.Tensor, mask: torch.Tensor, patches: torch.Tensor, coarse: torch.Tensor
    ) -> torch.Tensor:
        return coarse / self.config.temperature + self.correction(words, mask, patches)
