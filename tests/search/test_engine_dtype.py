"""The engine with its rerank forced to float16 and bfloat16 against the same engine in float32.

Every scoring path the engine runs (FTF and local rerank, exhaustive FTF; text -> images and image ->
captions) must keep every candidate (no score may come out non-finite) and give float32's top 10,
except where float32's own fused scores lie closer than the dtype's resolution ``u = eps / 2`` (the
block's half-precision scores are within ``u / 2`` of exact ones, tests/model/test_ftf_half.py, so only
such near-ties can swap). Those exceptions are counted and printed; at each rank of such a query the
half-precision hit must still score, in float32, within ``u`` of float32's hit at that rank.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rsir.index.gallery import gallery_from_features
from rsir.model.features import ImageFeatures, TextFeatures
from rsir.model.ftf import FTFParams
from rsir.model.precision import Precision
from rsir.search.engine import EngineConfig, QueryOptions, SearchEngine, SearchResult
from rsir.search.options import Rerank

N_IMAGES, N_CAPTIONS, GRID, DIM, N_WORDS = 60, 150, (7, 7), 64, 10
N_TEXT_QUERIES, N_IMAGE_QUERIES, RECALL_K, TOP = 24, 12, 40, 10
LAM, TAU = 0.5, 0.05


def _unit(gen: torch.Generator, common: torch.Tensor, *shape: int) -> torch.Tensor:
    """Unit vectors around a shared direction, as a CLIP tower's tokens are (cosines around 0.5)."""
    return F.normalize(torch.randn(*shape, DIM, generator=gen) + common, dim=-1)


def _texts(gen: torch.Generator, common: torch.Tensor, n: int) -> TextFeatures:
    lengths = torch.randint(1, N_WORDS + 1, (n,), generator=gen)
    lengths[0] = 1  # a one-word text: the old float16 path returned NaN for every such pair
    mask = torch.arange(N_WORDS)[None] < lengths[:, None]
    tokens = _unit(gen, common, n, N_WORDS) * mask[..., None]
    return TextFeatures(_unit(gen, common, n), tokens, mask)


def _images(gen: torch.Generator, common: torch.Tensor, n: int) -> ImageFeatures:
    return ImageFeatures(_unit(gen, common, n), _unit(gen, common, n, GRID[0] * GRID[1]), GRID)


@pytest.fixture(scope="module")
def world() -> tuple[dict[Precision, SearchEngine], TextFeatures, ImageFeatures]:
    gen = torch.Generator().manual_seed(19)
    common = torch.randn(DIM, generator=gen)
    gallery = gallery_from_features(
        [f"img{i}" for i in range(N_IMAGES)],
        _images(gen, common, N_IMAGES),
        _texts(gen, common, N_CAPTIONS),
        texts=[f"caption {c}" for c in range(N_CAPTIONS)],
        caption_image=[c % N_IMAGES for c in range(N_CAPTIONS)],
        token_dtype=np.float16,  # what an index stores
    )
    engines = {
        p: SearchEngine(
            gallery, None, EngineConfig(ftf=FTFParams(tau=TAU, lam=LAM), device="cpu", query_batch=8, dtype=p)
        )
        for p in (Precision.FLOAT32, Precision.FLOAT16, Precision.BFLOAT16)
    }
    return engines, _texts(gen, common, N_TEXT_QUERIES), _images(gen, common, N_IMAGE_QUERIES)


def _search(
    engine: SearchEngine, texts: TextFeatures, images: ImageFeatures, direction: str, rerank: Rerank
) -> list[SearchResult]:
    k = TOP if rerank == "exhaustive" else RECALL_K  # k = recall depth: every recalled candidate comes back
    if direction == "t2i":
        return engine.search(texts, QueryOptions(k=k, recall_k=RECALL_K, rerank=rerank))
    options = QueryOptions(k=k, recall_k=RECALL_K, rerank=rerank, target="captions")
    return engine.search(images, [options] * len(images))


@pytest.mark.parametrize("rerank", ["ftf", "local", "exhaustive"])
@pytest.mark.parametrize("direction", ["t2i", "i2t"])
@pytest.mark.parametrize("precision", [Precision.FLOAT16, Precision.BFLOAT16])
def test_half_precision_engine_keeps_float32_top10(
    world: tuple[dict[Precision, SearchEngine], TextFeatures, ImageFeatures],
    precision: Precision,
    direction: str,
    rerank: Rerank,
) -> None:
    engines, texts, images = world
    dtype = engines[precision].dtype
    assert dtype == {Precision.FLOAT16: torch.float16, Precision.BFLOAT16: torch.bfloat16}[precision]
    u = float(torch.finfo(dtype).eps) / 2
    exact = _search(engines[Precision.FLOAT32], texts, images, direction, rerank)
    half = _search(engines[precision], texts, images, direction, rerank)
    want = TOP if rerank == "exhaustive" else RECALL_K
    exceptions = []
    for q, (e, h) in enumerate(zip(exact, half, strict=True)):
        assert len(h.hits) == len(e.hits) == want, f"query {q}: {len(h.hits)} of {want} candidates kept"
        assert all(np.isfinite(hit.score) for hit in h.hits)
        e_ids, h_ids = [x.index for x in e.hits[:TOP]], [x.index for x in h.hits[:TOP]]
        if h_ids == e_ids:
            continue
        e_scores = np.array([x.score for x in e.hits])
        gaps = -np.diff(e_scores[: TOP + 1])
        exceptions.append((q, float(gaps.min())))
        assert gaps.min() < u, f"query {q}: top 10 differs though float32's gaps are >= {gaps.min():.3g} > u"
        if rerank != "exhaustive":  # exhaustive returns only the top 10 of float32, no other scores
            exact_score = {x.index: x.score for x in e.hits}
            for r, i in enumerate(h_ids):
                assert abs(exact_score[i] - e_scores[r]) < u, f"query {q} rank {r}: {i} is no near-tie"
    n = len(exact)
    print(f"{precision} {direction} {rerank}: {len(exceptions)} of {n} queries' top 10 differ (near-ties)")
    assert len(exceptions) <= n // 4, (
        f"{len(exceptions)} of {n} queries differ (query, min gap): {exceptions}"
    )
