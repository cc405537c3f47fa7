"""The engine's three modes against brute-force references on seeded random features."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rsir.model.encoders import ClipEncoder
from rsir.model.errors import InvalidInputError
from rsir.model.features import ImageFeatures, TextFeatures
from rsir.model.ftf import FTFParams, fuse, image_to_text, text_to_image
from rsir.search.engine import EngineConfig, QueryOptions, SearchEngine
from tests.conftest import random_images
from tests.search.fakes import encoded_engine, random_gallery, random_image_features, random_text_features

N_IMAGES, N_CAPTIONS, GRID, DIM, N_WORDS = 40, 90, (3, 4), 16, 6


def _texts(gen: torch.Generator, n: int) -> TextFeatures:
    return random_text_features(gen, n, N_WORDS, DIM)


def _images(gen: torch.Generator, n: int) -> ImageFeatures:
    return random_image_features(gen, n, GRID, DIM)


@pytest.fixture(scope="module")
def world() -> tuple[SearchEngine, TextFeatures, ImageFeatures]:
    gen = torch.Generator().manual_seed(11)
    gallery = random_gallery(gen, N_IMAGES, N_CAPTIONS, GRID, DIM, N_WORDS)
    config = EngineConfig(ftf=FTFParams(tau=0.1, lam=0.4), query_batch=4, exhaustive_chunk=7, device="cpu")
    return SearchEngine(gallery, None, config), _texts(gen, 9), _images(gen, 5)


def _reference_t2i(engine: SearchEngine, q: TextFeatures, recall_k: int) -> list[list[int]]:
    """Per query: coarse top-recall_k by numpy argsort, then fused FTF score over just those, sorted."""
    g = engine.gallery
    coarse = q.vectors.numpy() @ g.vectors.T
    ranked = []
    for i in range(len(q)):
        cand = np.argsort(-coarse[i], kind="stable")[:recall_k]
        patches = torch.from_numpy(g.patches[cand])[None]
        fine = text_to_image(q.tokens[i : i + 1], q.mask[i : i + 1], patches, engine.config.ftf.tau).fine[0]
        fused = fuse(torch.from_numpy(coarse[i, cand]), fine, engine.config.ftf.lam)
        ranked.append([int(cand[j]) for j in torch.argsort(fused, descending=True)])
    return ranked


def test_coarse_only_is_exact_inner_product_order(
    world: tuple[SearchEngine, TextFeatures, ImageFeatures],
) -> None:
    engine, queries, _ = world
    results = engine.search(queries, QueryOptions(k=10, rerank="none"))
    coarse = queries.vectors.numpy() @ engine.gallery.vectors.T
    for i, r in enumerate(results):
        assert [h.index for h in r.hits] == list(np.argsort(-coarse[i])[:10])
        assert [h.id for h in r.hits] == [f"img{h.index}" for h in r.hits]
        np.testing.assert_allclose([h.score for h in r.hits], np.sort(coarse[i])[::-1][:10], rtol=1e-5)
        assert all(h.fine is None for h in r.hits) and "recall" in r.timings_ms


@pytest.mark.parametrize("recall_k", [1, 12, 40])
def test_two_stage_matches_reference(
    world: tuple[SearchEngine, TextFeatures, ImageFeatures], recall_k: int
) -> None:
    engine, queries, _ = world
    k = min(8, recall_k)
    results = engine.search(queries, QueryOptions(k=k, recall_k=recall_k, rerank="ftf"))
    for r, expected in zip(results, _reference_t2i(engine, queries, recall_k), strict=True):
        assert [h.index for h in r.hits] == expected[:k]
        for h in r.hits:
            assert h.fine is not None
            assert h.score == pytest.approx(0.4 * h.coarse + 0.6 * h.fine, abs=1e-6)


def test_exhaustive_equals_two_stage_over_whole_gallery(
    world: tuple[SearchEngine, TextFeatures, ImageFeatures],
) -> None:
    engine, queries, images = world
    full = engine.search(queries, QueryOptions(k=10, recall_k=N_IMAGES, rerank="ftf"))
    exhaustive = engine.search(queries, QueryOptions(k=10, rerank="exhaustive"))
    for a, b in zip(full, exhaustive, strict=True):
        assert [h.index for h in a.hits] == [h.index for h in b.hits]
        np.testing.assert_allclose([h.score for h in a.hits], [h.score for h in b.hits], atol=1e-5)
        np.testing.assert_allclose([h.coarse for h in a.hits], [h.coarse for h in b.hits], atol=1e-5)
    to_captions = engine.search(
        images, QueryOptions(k=10, recall_k=N_CAPTIONS, rerank="ftf", target="captions")
    )
    exhaustive_c = engine.search(images, QueryOptions(k=10, rerank="exhaustive", target="captions"))
    for a, b in zip(to_captions, exhaustive_c, strict=True):
        assert [h.index for h in a.hits] == [h.index for h in b.hits]


def test_image_to_captions_matches_reference(world: tuple[SearchEngine, TextFeatures, ImageFeatures]) -> None:
    engine, _, images = world
    store = engine.gallery.captions
    assert store is not None
    results = engine.search(images, QueryOptions(k=5, recall_k=20, target="captions"))
    coarse = images.vectors.numpy() @ store.vectors.T
    for i, r in enumerate(results):
        cand = np.argsort(-coarse[i], kind="stable")[:20]
        fine = image_to_text(
            images.patches[i : i + 1],
            torch.from_numpy(store.tokens[cand])[None],
            torch.from_numpy(store.mask[cand])[None],
            tau=0.1,
        ).fine[0]
        fused = fuse(torch.from_numpy(coarse[i, cand]), fine, 0.4)
        assert [h.index for h in r.hits] == [int(cand[j]) for j in torch.argsort(fused, descending=True)[:5]]
        assert r.hits[0].id == f"caption {r.hits[0].index}"


def test_explain_returns_attention_over_the_grid(
    world: tuple[SearchEngine, TextFeatures, ImageFeatures],
) -> None:
    engine, queries, _ = world
    results = engine.search(queries, QueryOptions(k=3, recall_k=10, explain=True))
    for i, r in enumerate(results):
        assert r.attention is not None
        n_valid = int(queries.mask[i].sum())
        assert r.attention.shape == (3, n_valid, *GRID)
        np.testing.assert_allclose(r.attention.sum(axis=(2, 3)), 1.0, atol=1e-5)


def test_knobs_are_validated(world: tuple[SearchEngine, TextFeatures, ImageFeatures]) -> None:
    engine, queries, images = world
    with pytest.raises(InvalidInputError, match="k must be in"):
        engine.search(queries, QueryOptions(k=0))
    with pytest.raises(InvalidInputError, match="recall_k must be in"):
        engine.search(queries, QueryOptions(recall_k=5000))
    with pytest.raises(InvalidInputError, match="rerank must be one of"):
        engine.search(queries, QueryOptions(rerank="magic"))  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="coarse only"):
        engine.search(images, QueryOptions(rerank="ftf", target="images"))
    with pytest.raises(InvalidInputError, match="no encoder"):
        engine.search(["ships"], QueryOptions())[0]


def test_end_to_end_with_encoder(tiny_encoder: ClipEncoder) -> None:
    images = random_images(12, seed=3)
    engine = encoded_engine(tiny_encoder, images, "white planes parked near the terminal")
    result = engine.search(["three planes near a terminal"], QueryOptions(k=5, recall_k=8))[0]
    assert len(result.hits) == 5 and {"encode", "recall", "rerank"} <= set(result.timings_ms)
    assert [h.score for h in result.hits] == sorted((h.score for h in result.hits), reverse=True)
    by_example = engine.search([images[7]], QueryOptions(k=3))[0]
    assert by_example.hits[0].id == "tile7.png"  # an indexed image finds itself first
    assert by_example.hits[0].score == pytest.approx(1.0, abs=1e-2)  # global vectors are kept in fp32
    to_text = engine.search([images[7]], QueryOptions(k=12, target="captions"))[0]
    assert sorted(h.index for h in to_text.hits) == list(range(12))
    with pytest.raises(InvalidInputError, match="query 0 is empty"):
        engine.search(["   "], QueryOptions())[0]
