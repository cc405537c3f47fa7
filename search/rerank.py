"""The rerank stage: each rerank mode's scores over recalled candidates, SAR's final re-sort, and the
exhaustive measurement mode (the FTF block over a whole side).

A text query's candidates are images (its words attend over their patches); an image query's are
captions (its patches attend over their words). Image-to-image search is coarse only and never
reaches this module.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from numpy.typing import NDArray

from rsir.index.dense import by_score
from rsir.model import ftf, local_score, sar
from rsir.model.errors import InvalidInputError
from rsir.model.features import ImageFeatures, TextFeatures
from rsir.search.config import EngineConfig
from rsir.search.plan import Plan
from rsir.search.side import Side

Query = TextFeatures | ImageFeatures
"""Queries on the engine's device: text tokens or image patches in the rerank's dtype, global
vectors in float32."""


@dataclass(frozen=True)
class Reranked:
    """``fused [Q,K]``: the score candidates are ranked by; ``fine [Q,K]``: the rerank's own score;
    ``attention [Q,K,n,M]``: the FTF block's, when asked for and the mode has one."""

    fused: torch.Tensor
    fine: torch.Tensor
    attention: torch.Tensor | None = None


@dataclass(frozen=True, eq=False)
class Scorer:
    """The fine-grained scores of queries against candidates on one device and dtype."""

    config: EngineConfig
    device: torch.device
    dtype: torch.dtype

    def on_device(self, array: NDArray[np.generic]) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(array)).to(self.device, self.dtype)

    def ftf(self, query: Query, side: Side, ids: NDArray[np.int64], attention: bool = False) -> ftf.FTFOutput:
        """FTF fine scores ``[Q,K]`` of each query against its candidates ``ids [Q,K]``."""
        tau = self.config.ftf.tau
        tokens = self.on_device(side.tokens[ids])  # [Q,K,M,d] patches or [Q,K,n,d] words
        if isinstance(query, TextFeatures):
            return ftf.text_to_image(query.tokens, query.mask, tokens, tau, attention)
        return ftf.image_to_text(query.patches, tokens, self._mask(side, ids), tau, attention)

    def local(self, query: Query, side: Side, ids: NDArray[np.int64]) -> torch.Tensor:
        """iEBAKER's local score ``||W P^T||_F / sqrt(n M)`` of each query against its candidates."""
        tokens = self.on_device(side.tokens[ids])
        if isinstance(query, TextFeatures):
            return local_score.text_to_image_local(query.tokens, query.mask, tokens)
        return local_score.image_to_text_local(query.patches, tokens, self._mask(side, ids))

    def _mask(self, side: Side, ids: NDArray[np.int64]) -> torch.Tensor:
        if side.mask is None:
            raise InvalidInputError(f"the {side.name} side has no word mask: image queries search captions")
        return torch.from_numpy(np.asarray(side.mask[ids])).to(self.device)


Reranker = Callable[[Scorer, Query, Side, NDArray[np.int64], torch.Tensor, bool], Reranked]


def _ftf(
    s: Scorer, query: Query, side: Side, ids: NDArray[np.int64], coarse: torch.Tensor, attention: bool
) -> Reranked:
    out = s.ftf(query, side, ids, attention)
    return Reranked(ftf.fuse(coarse, out.fine, s.config.ftf.lam), out.fine, out.attention)


def _local(
    s: Scorer, query: Query, side: Side, ids: NDArray[np.int64], coarse: torch.Tensor, attention: bool
) -> Reranked:
    fine = s.local(query, side, ids)
    w = s.config.local_weight
    return Reranked(w * coarse + (1.0 - w) * fine, fine)


RERANKERS: dict[str, Reranker] = {"ftf": _ftf, "local": _local}
"""Each of :data:`rsir.search.options.CANDIDATE_RERANKS`: its scores of the recalled candidates ``ids``
given their ``coarse`` scores (``attention``: return the block's attention if the mode has one)."""


def final_order(
    scores: NDArray[np.float32],
    cosine: NDArray[np.float32],
    ids: NDArray[np.int64],
    plan: Plan,
    side: Side,
    sar_weight: float,
) -> NDArray[np.int64]:
    """Candidates best first: by score (ties by id), or re-sorted by SAR's reverse ranks when asked.

    SAR's rank compares the query's cosine with the candidate's stored reference similarities at
    the stored precision (float16): a query that is itself in the reference set then meets its
    own entry as a tie, which does not count against it, as GaLR's reverse rank skips the query.
    """
    # Without a rerank, recall's own order (hash: Hamming first; PPSR: its correction).
    base = np.arange(scores.size, dtype=np.int64) if plan.rerank == "none" else by_score(scores, ids)
    if plan.options.sar == "off":
        return base
    profiles = side.extras.sar_profiles
    if profiles is None:
        raise InvalidInputError("sar is not available for this index (its data was not built)")
    s, c, i = scores[base], cosine[base], ids[base]
    valid = i >= 0
    rho = np.full(i.shape, np.iinfo(np.int64).max // 2, np.int64)
    if valid.any():
        cand = np.asarray(profiles[i[valid]], np.float32)[None]
        like = np.asarray(c[valid], profiles.dtype).astype(np.float32)
        rho[valid] = sar.reverse_ranks(cand, like[None])[0]
    if plan.options.sar == "hard":  # ties by score, then by position in the base order (score, then id)
        return base[np.asarray(sar.sar_order(s[None], rho[None])[0], np.int64)]
    soft = sar.sar_soft(s[None], rho[None], sar_weight)[0]
    return base[by_score(soft, i)]


@dataclass(frozen=True)
class Ranking:
    """One query's hits: ``ids``, fused ``scores`` and ``coarse`` scores, best first."""

    ids: NDArray[np.int64]
    scores: NDArray[np.float32]
    coarse: NDArray[np.float32]


def exhaustive(
    s: Scorer, query: Query, side: Side, plans: Sequence[Plan], live: Sequence[NDArray[np.int64]]
) -> list[Ranking]:
    """The FTF block over every item of ``side`` (``live[q]``: the ids query ``q`` may return), in
    chunks; for measuring the two-stage shortcut.

    Scores are the two-stage search's (the same coarse cosine, the same block) and ties go to the
    lower index, so ``ftf`` with ``recall_k`` = the side's size returns the same list exactly."""
    total = len(side)
    query_np = query.vectors.float().cpu().numpy()
    k = max(p.options.k for p in plans)
    allowed = np.zeros((len(plans), total), np.bool_)
    for q, ids in enumerate(live):
        allowed[q, ids] = True
    best_scores: list[torch.Tensor] = []
    best_ids: list[torch.Tensor] = []
    for start, stop in _batches(total, s.config.exhaustive_chunk):
        chunk = np.arange(start, stop, dtype=np.int64)
        ids = np.broadcast_to(chunk, (query_np.shape[0], chunk.size))
        # float32 in every dtype, as in the two-stage path, so ftf at recall_k = N still equals this
        coarse = torch.from_numpy(side.cosines(query_np, ids)).to(s.device)
        fused = ftf.fuse(coarse, s.ftf(query, side, ids).fine, s.config.ftf.lam).float()
        dead = torch.from_numpy(~allowed[:, start:stop]).to(fused.device)
        fused = fused.masked_fill(dead, float("-inf"))
        # A stable descending sort keeps equal scores in index order (torch.topk does not).
        top = torch.sort(fused, dim=1, descending=True, stable=True)
        keep = min(k, fused.shape[1])
        best_scores.append(top.values[:, :keep].cpu())
        best_ids.append(torch.from_numpy(chunk)[top.indices[:, :keep].cpu()])
    scores = torch.cat(best_scores, dim=1)
    ids_all = torch.cat(best_ids, dim=1)
    # Chunks are in index order and each chunk's ties too, so a stable sort keeps ties by index.
    order = torch.sort(scores, dim=1, descending=True, stable=True).indices[:, :k]
    out = []
    for q, p in enumerate(plans):
        top_q = order[q, : p.options.k]
        finite = torch.isfinite(scores[q, top_q])  # -inf: deleted or filtered out
        ids_q = ids_all[q, top_q][finite].numpy()
        coarse_q = side.cosines(query_np[q : q + 1], ids_q[None])[0]
        out.append(Ranking(ids_q, scores[q, top_q][finite].numpy(), coarse_q))
    return out


def _batches(n: int, size: int) -> Iterator[tuple[int, int]]:
    for start in range(0, n, size):
        yield start, min(start + size, n)
