"""Tie order: every mode lists equal scores lower gallery index first, as a stable sort does.

The gallery repeats some images and some captions (identical vectors, patches and tokens), so their
scores tie exactly; the references here score each distinct item once, give its copies that same
value, and rank with numpy's stable argsort. ``ftf`` with ``recall_k`` = the gallery size must then
return exactly what ``exhaustive`` returns: the same ids in the same order with the same scores.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from numpy.typing import NDArray

from rsir.index.dense import DenseRecall, exact_subset
from rsir.index.gallery import Gallery, gallery_from_features
from rsir.model.features import ImageFeatures, TextFeatures
from rsir.model.ftf import FTFParams, image_to_text, text_to_image
from rsir.model.precision import Precision
from rsir.search.engine import EngineConfig, QueryOptions, SearchEngine, SearchResult
from tests.search.fakes import random_image_features, random_text_features

GRID, DIM, N_WORDS = (2, 3), 12, 5
TAU, LAM = 0.1, 0.4
# Gallery position -> distinct item: items 2 and 5 appear three times, 7 twice, spread over chunks.
IMAGE_OF = [0, 1, 2, 3, 2, 4, 5, 6, 7, 5, 8, 2, 9, 7, 10, 5, 11, 12, 13, 14]
CAPTION_OF = [0, 1, 2, 1, 3, 4, 5, 2, 6, 7, 1, 8, 9, 2, 10, 11, 12, 13, 4, 14, 15, 16, 17, 18]


def _texts(gen: torch.Generator, n: int) -> TextFeatures:
    return random_text_features(gen, n, N_WORDS, DIM)


def _images(gen: torch.Generator, n: int) -> ImageFeatures:
    return random_image_features(gen, n, GRID, DIM)


class World:
    def __init__(self) -> None:
        gen = torch.Generator().manual_seed(5)
        self.base_images = _images(gen, max(IMAGE_OF) + 1)
        self.base_captions = _texts(gen, max(CAPTION_OF) + 1)
        im, cap = torch.as_tensor(IMAGE_OF), torch.as_tensor(CAPTION_OF)
        images = ImageFeatures(self.base_images.vectors[im], self.base_images.patches[im], GRID)
        captions = self.base_captions.select(cap)
        self.gallery: Gallery = gallery_from_features(
            [f"img{i}" for i in range(len(IMAGE_OF))],
            images,
            captions,
            texts=[f"caption {c}" for c in range(len(CAPTION_OF))],
            caption_image=[c % len(IMAGE_OF) for c in range(len(CAPTION_OF))],
            token_dtype=np.float32,
        )
        # Chunks of 4: the copies of items 2, 5 and 7 fall in different chunks of the exhaustive scan.
        config = EngineConfig(
            ftf=FTFParams(tau=TAU, lam=LAM), query_batch=3, exhaustive_chunk=4, device="cpu"
        )
        self.engine = SearchEngine(self.gallery, None, config)
        # Queries whose global vector is a repeated item's: its copies tie at the top of the list.
        words = _texts(gen, 3)
        self.texts = TextFeatures(
            self.base_images.vectors[torch.as_tensor([2, 5, 7])], words.tokens, words.mask
        )
        patches = _images(gen, 3).patches
        self.images = ImageFeatures(self.base_captions.vectors[torch.as_tensor([2, 1, 4])], patches, GRID)


@pytest.fixture(scope="module")
def world() -> World:
    return World()


def _ids(result: SearchResult) -> list[int]:
    return [h.index for h in result.hits]


def _stable_top(scores: NDArray[np.float64], k: int) -> list[int]:
    return [int(i) for i in np.argsort(-scores, kind="stable")[:k]]


def _t2i_reference(world: World, q: int, rerank: str) -> NDArray[np.float64]:
    """Scores of text query ``q`` against every gallery position, each distinct image scored once."""
    v = world.texts.vectors[q].double().numpy()
    base = world.base_images
    cos: NDArray[np.float64] = base.vectors.double().numpy() @ v
    if rerank == "none":
        plain: NDArray[np.float64] = cos[IMAGE_OF]
        return plain
    fine = text_to_image(world.texts.tokens[q : q + 1], world.texts.mask[q : q + 1], base.patches[None], TAU)
    fused: NDArray[np.float64] = LAM * cos + (1 - LAM) * fine.fine[0].double().numpy()
    out: NDArray[np.float64] = fused[IMAGE_OF]
    return out


def _i2t_reference(world: World, q: int, rerank: str) -> NDArray[np.float64]:
    v = world.images.vectors[q].double().numpy()
    base = world.base_captions
    cos: NDArray[np.float64] = base.vectors.double().numpy() @ v
    if rerank == "none":
        plain: NDArray[np.float64] = cos[CAPTION_OF]
        return plain
    fine = image_to_text(world.images.patches[q : q + 1], base.tokens[None], base.mask[None], TAU)
    fused: NDArray[np.float64] = LAM * cos + (1 - LAM) * fine.fine[0].double().numpy()
    out: NDArray[np.float64] = fused[CAPTION_OF]
    return out


def test_faiss_flat_lists_ties_lowest_id_first() -> None:
    """faiss-cpu's IndexFlatIP lists tied ids highest first; the recall wrapper re-sorts them."""
    vectors = np.zeros((8, 4), np.float32)
    vectors[:, 0] = 1.0
    vectors[[1, 4, 6], 0] = 0.5  # positions 0, 2, 3, 5, 7 tie at 1.0
    recall = DenseRecall(vectors, "Flat")
    for n_queries in (1, 25):  # FAISS scores one query and a BLAS batch on different code paths
        scores, ids = recall.search(np.tile(np.array([[1, 0, 0, 0]], np.float32), (n_queries, 1)), 3)
        assert ids.tolist() == [[0, 2, 3]] * n_queries
        scores, ids = recall.search(np.tile(np.array([[1, 0, 0, 0]], np.float32), (n_queries, 1)), 7)
        assert ids.tolist() == [[0, 2, 3, 5, 7, 1, 4]] * n_queries
        assert scores[0].tolist() == [1.0] * 5 + [0.5] * 2


def test_exact_subset_keeps_the_lowest_tied_ids_at_the_cut() -> None:
    vectors = np.zeros((40, 2), np.float32)
    vectors[:, 0] = 1.0
    subset = np.arange(0, 40, 3, dtype=np.int64)[::-1].copy()  # any order: a set of ids
    _, ids = exact_subset(vectors, np.array([[1.0, 0.0]], np.float32), subset, 4)
    assert ids.tolist() == [[0, 3, 6, 9]]


@pytest.mark.parametrize("rerank", ["none", "ftf", "exhaustive"])
def test_text_to_image_ties_by_index_in_every_mode(world: World, rerank: str) -> None:
    n = len(IMAGE_OF)
    k = 9  # the cut falls inside a tie group for some queries
    o = QueryOptions(k=k, recall_k=n, rerank="ftf" if rerank == "exhaustive" else rerank)  # type: ignore[arg-type]
    if rerank == "exhaustive":
        o = QueryOptions(k=k, rerank="exhaustive")
    results = world.engine.search(world.texts, [o] * len(world.texts))
    for q, r in enumerate(results):
        expected = _t2i_reference(world, q, "none" if rerank == "none" else "ftf")
        assert _ids(r) == _stable_top(expected, k)
        np.testing.assert_allclose([h.score for h in r.hits], np.sort(expected)[::-1][:k], atol=1e-5)


@pytest.mark.parametrize("rerank", ["none", "ftf", "exhaustive"])
def test_image_to_captions_ties_by_index_in_every_mode(world: World, rerank: str) -> None:
    n = len(CAPTION_OF)
    k = 10
    o = QueryOptions(k=k, recall_k=n, rerank=rerank, target="captions")  # type: ignore[arg-type]
    if rerank == "exhaustive":
        o = QueryOptions(k=k, rerank="exhaustive", target="captions")
    results = world.engine.search(world.images, [o] * len(world.images))
    for q, r in enumerate(results):
        expected = _i2t_reference(world, q, "none" if rerank == "none" else "ftf")
        assert _ids(r) == _stable_top(expected, k)


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_ftf_over_the_whole_gallery_equals_exhaustive_exactly(world: World, dtype: str) -> None:
    """Not within a tolerance: the same ids, order, fused and coarse scores, both directions, in
    every rerank dtype (the coarse score stays float32 in both paths)."""
    n_images, n_captions = len(IMAGE_OF), len(CAPTION_OF)
    engine = SearchEngine(world.gallery, None, replace(world.engine.config, dtype=Precision(dtype)))
    for k in (1, 6, n_images):
        two = engine.search(
            world.texts, [QueryOptions(k=k, recall_k=n_images, rerank="ftf")] * len(world.texts)
        )
        full = engine.search(world.texts, [QueryOptions(k=k, rerank="exhaustive")] * len(world.texts))
        for a, b in zip(two, full, strict=True):
            assert [(h.index, h.score, h.coarse) for h in a.hits] == [
                (h.index, h.score, h.coarse) for h in b.hits
            ]
    for k in (1, 7, n_captions):
        two = engine.search(
            world.images, [QueryOptions(k=k, recall_k=n_captions, target="captions")] * len(world.images)
        )
        full = engine.search(
            world.images, [QueryOptions(k=k, rerank="exhaustive", target="captions")] * len(world.images)
        )
        for a, b in zip(two, full, strict=True):
            assert [(h.index, h.score, h.coarse) for h in a.hits] == [
                (h.index, h.score, h.coarse) for h in b.hits
            ]


def test_the_references_have_ties_to_break(world: World) -> None:
    """Precondition: each query meets a tie inside its top 9 (else the tests above prove nothing)."""
    for rerank in ("none", "ftf"):
        for q in range(len(world.texts)):
            top = np.sort(_t2i_reference(world, q, rerank))[::-1][:9]
            assert (np.diff(top) == 0).any()
        for q in range(len(world.images)):
            top = np.sort(_i2t_reference(world, q, rerank))[::-1][:10]
            assert (np.diff(top) == 0).any()
