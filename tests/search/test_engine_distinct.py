"""Caption search with ``distinct``: each caption text once, at its best-ranked copy, against a
naive reference (rank every candidate, then keep first occurrences) on seeded random features whose
texts repeat."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rsir.index.gallery import Gallery, gallery_from_features
from rsir.model.errors import InvalidInputError
from rsir.model.features import ImageFeatures, TextFeatures
from rsir.model.ftf import FTFParams, image_to_text
from rsir.search.engine import EngineConfig, QueryOptions, SearchEngine

N_IMAGES, N_CAPTIONS, N_TEXTS, GRID, DIM, N_WORDS = 30, 120, 9, (2, 3), 16, 5
TAU, LAM = 0.1, 0.5


def _world() -> tuple[SearchEngine, ImageFeatures]:
    gen = torch.Generator().manual_seed(3)
    lengths = torch.randint(1, N_WORDS + 1, (N_CAPTIONS,), generator=gen)
    mask = torch.arange(N_WORDS)[None] < lengths[:, None]
    tokens = F.normalize(torch.randn(N_CAPTIONS, N_WORDS, DIM, generator=gen), dim=-1) * mask[..., None]
    texts = TextFeatures(F.normalize(torch.randn(N_CAPTIONS, DIM, generator=gen), dim=-1), tokens, mask)

    def images(n: int) -> ImageFeatures:
        patches = F.normalize(torch.randn(n, GRID[0] * GRID[1], DIM, generator=gen), dim=-1)
        return ImageFeatures(F.normalize(torch.randn(n, DIM, generator=gen), dim=-1), patches, GRID)

    gallery = gallery_from_features(
        [f"img{i}" for i in range(N_IMAGES)],
        images(N_IMAGES),
        texts,
        # Only 9 distinct strings over 120 captions: every query's top 40 repeats some.
        texts=[f"caption {c % N_TEXTS}" for c in range(N_CAPTIONS)],
        caption_image=[c % N_IMAGES for c in range(N_CAPTIONS)],
        token_dtype=np.float32,
    )
    config = EngineConfig(ftf=FTFParams(tau=TAU, lam=LAM), query_batch=4, device="cpu")
    return SearchEngine(gallery, None, config), images(5)


def _first(q: ImageFeatures) -> ImageFeatures:
    return ImageFeatures(q.vectors[:1], q.patches[:1], q.grid)


def _reference(gallery: Gallery, q: ImageFeatures, i: int, rerank: str, recall_k: int, k: int) -> list[int]:
    store = gallery.captions
    assert store is not None
    coarse = store.vectors @ q.vectors[i].numpy()
    cand = np.argsort(-coarse, kind="stable")[:recall_k]
    scores = coarse[cand]
    if rerank == "ftf":
        words = torch.from_numpy(np.asarray(store.tokens[cand], np.float32))[None]
        fine = image_to_text(q.patches[i : i + 1], words, torch.from_numpy(store.mask[cand])[None], TAU)
        scores = LAM * scores + (1 - LAM) * fine.fine[0].numpy()
    ranked = cand[np.argsort(-scores, kind="stable")]
    seen: set[str] = set()
    out = []
    for c in ranked.tolist():
        if store.texts[c] not in seen:
            seen.add(store.texts[c])
            out.append(c)
    return out[:k]


@pytest.mark.parametrize("rerank", ["ftf", "none"])
def test_distinct_keeps_each_text_once_at_its_best_rank(rerank: str) -> None:
    engine, queries = _world()
    store = engine.gallery.captions
    assert store is not None
    options = [
        QueryOptions(k=6, recall_k=40, rerank=rerank, target="captions", distinct=True)  # type: ignore[arg-type]
    ] * len(queries)
    results = engine.search(queries, options)
    plain = engine.search(
        queries,
        [QueryOptions(k=6, recall_k=40, rerank=rerank, target="captions")] * len(queries),  # type: ignore[arg-type]
    )
    repeated = 0
    for i, (result, undeduped) in enumerate(zip(results, plain, strict=True)):
        got = [h.index for h in result.hits]
        assert got == _reference(engine.gallery, queries, i, rerank, 40, 6)
        assert len({h.id for h in result.hits}) == len(result.hits) == 6
        repeated += len({h.id for h in undeduped.hits}) < len(undeduped.hits)
    assert repeated  # precondition: without distinct some answer repeats a text


def test_distinct_returns_fewer_when_the_candidates_hold_fewer_texts() -> None:
    engine, queries = _world()
    result = engine.search(
        _first(queries), [QueryOptions(k=20, recall_k=N_CAPTIONS, target="captions", distinct=True)]
    )[0]
    assert sorted(h.id for h in result.hits) == sorted(f"caption {t}" for t in range(N_TEXTS))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (QueryOptions(k=5, target="images", rerank="none", distinct=True), "distinct applies to caption"),
        (QueryOptions(k=5, target="captions", rerank="exhaustive", distinct=True), "takes no distinct"),
    ],
)
def test_distinct_is_refused_where_it_does_not_apply(options: QueryOptions, message: str) -> None:
    engine, queries = _world()
    with pytest.raises(InvalidInputError, match=message):
        engine.search(_first(queries), [options])
