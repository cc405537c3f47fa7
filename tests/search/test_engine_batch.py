"""The engine's per-query API (``QueryOptions``, batches with mixed options, metadata filters,
deleted images, ``explain``) against naive references on seeded random features."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pytest
import torch
from numpy.typing import NDArray

import rsir.search.side as side_module
from rsir.index.dense import DenseRecall, exact_subset
from rsir.index.gallery import Gallery
from rsir.model.encoders import ClipEncoder
from rsir.model.errors import InvalidInputError
from rsir.model.features import ImageFeatures, TextFeatures
from rsir.model.ftf import FTFParams, image_to_text, text_to_image
from rsir.search.engine import EngineConfig, QueryOptions, SearchEngine, SearchResult
from rsir.search.filters import Filters
from rsir.search.options import Rerank
from tests.conftest import random_images
from tests.search.fakes import (
    encoded_engine,
    fake_engine,
    mask_of,
    only,
    random_gallery,
    random_image_features,
    random_text_features,
)

N_IMAGES, N_CAPTIONS, GRID, DIM, N_WORDS = 40, 90, (3, 4), 16, 6
TAU, LAM = 0.1, 0.4

World = tuple[SearchEngine, TextFeatures, ImageFeatures]


def _texts(gen: torch.Generator, n: int) -> TextFeatures:
    return random_text_features(gen, n, N_WORDS, DIM)


def _images(gen: torch.Generator, n: int) -> ImageFeatures:
    return random_image_features(gen, n, GRID, DIM)


def _gallery(gen: torch.Generator, n_images: int, n_captions: int) -> Gallery:
    return random_gallery(gen, n_images, n_captions, GRID, DIM, N_WORDS)


def _config(**kwargs: Any) -> EngineConfig:
    return EngineConfig(
        ftf=FTFParams(tau=TAU, lam=LAM), query_batch=4, exhaustive_chunk=7, device="cpu", **kwargs
    )


@pytest.fixture(scope="module")
def world() -> World:
    gen = torch.Generator().manual_seed(23)
    gallery = _gallery(gen, N_IMAGES, N_CAPTIONS)
    return fake_engine(gallery, _config()), _texts(gen, 9), _images(gen, 5)


def _mask(n: int, seed: int, p: float = 0.5) -> NDArray[np.bool_]:
    mask: NDArray[np.bool_] = np.random.default_rng(seed).random(n) < p
    return mask


# -- naive references ----------------------------------------------------------------------------------
def _coarse_top(
    vectors: NDArray[np.float32], query: NDArray[np.float32], subset: NDArray[np.int64], k: int
) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
    """Brute-force cosine top-k over ``subset`` of ``vectors``: (ids, scores), best first."""
    scores = vectors[subset] @ query
    order = np.argsort(-scores, kind="stable")[:k]
    return subset[order], scores[order]


def _ref_t2i(
    gallery: Gallery, q: TextFeatures, i: int, subset: NDArray[np.int64], recall_k: int, k: int
) -> tuple[list[int], NDArray[Any]]:
    """Coarse recall over ``subset``, then ``lam * coarse + (1 - lam) * fine`` over those, sorted."""
    cand, coarse = _coarse_top(gallery.vectors, q.vectors[i].numpy(), subset, recall_k)
    if cand.size == 0:
        return [], np.zeros(0, np.float32)
    patches = torch.from_numpy(np.asarray(gallery.patches[cand], np.float32))[None]
    fine = text_to_image(q.tokens[i : i + 1], q.mask[i : i + 1], patches, TAU).fine[0].numpy()
    fused = LAM * coarse + (1 - LAM) * fine
    order = np.argsort(-fused, kind="stable")[:k]
    return [int(c) for c in cand[order]], fused[order]


def _ref_i2t(
    gallery: Gallery, q: ImageFeatures, i: int, subset: NDArray[np.int64], recall_k: int, k: int
) -> tuple[list[int], NDArray[Any]]:
    store = gallery.captions
    assert store is not None
    cand, coarse = _coarse_top(store.vectors, q.vectors[i].numpy(), subset, recall_k)
    if cand.size == 0:
        return [], np.zeros(0, np.float32)
    fine = (
        image_to_text(
            q.patches[i : i + 1],
            torch.from_numpy(np.asarray(store.tokens[cand], np.float32))[None],
            torch.from_numpy(store.mask[cand])[None],
            TAU,
        )
        .fine[0]
        .numpy()
    )
    fused = LAM * coarse + (1 - LAM) * fine
    order = np.argsort(-fused, kind="stable")[:k]
    return [int(c) for c in cand[order]], fused[order]


def _live_subset(engine: SearchEngine, filters: Filters | None) -> NDArray[np.int64]:
    ok = mask_of(filters, len(engine.gallery))
    ok[engine.deleted] = False
    return np.flatnonzero(ok).astype(np.int64)


def _reference(engine: SearchEngine, q: TextFeatures, i: int, o: QueryOptions) -> tuple[list[int], Any]:
    """The expected (ids, scores) of text query ``i`` under options ``o``."""
    subset = _live_subset(engine, o.filters)
    if o.rerank == "none":
        ids, scores = _coarse_top(engine.gallery.vectors, q.vectors[i].numpy(), subset, o.k)
        return [int(x) for x in ids], scores
    recall_k = o.recall_k or engine.config.default_recall_k
    depth = subset.size if o.rerank == "exhaustive" else max(recall_k, o.k)
    return _ref_t2i(engine.gallery, q, i, subset, depth, o.k)


def _assert_matches(result: SearchResult, ids: Sequence[int], scores: Any, atol: float = 1e-5) -> None:
    assert [h.index for h in result.hits] == list(ids)
    np.testing.assert_allclose([h.score for h in result.hits], np.asarray(scores, np.float64), atol=atol)


def _assert_same(a: SearchResult, b: SearchResult) -> None:
    assert [h.index for h in a.hits] == [h.index for h in b.hits]
    assert [h.id for h in a.hits] == [h.id for h in b.hits]
    for name in ("score", "coarse"):
        np.testing.assert_allclose(
            [getattr(h, name) for h in a.hits], [getattr(h, name) for h in b.hits], atol=1e-5
        )
    assert [h.fine is None for h in a.hits] == [h.fine is None for h in b.hits]
    np.testing.assert_allclose([h.fine or 0.0 for h in a.hits], [h.fine or 0.0 for h in b.hits], atol=1e-5)
    assert (a.attention is None) == (b.attention is None)
    if a.attention is not None and b.attention is not None:
        np.testing.assert_allclose(a.attention, b.attention, atol=1e-5)


# -- batches with mixed options ------------------------------------------------------------------------
MIXED = [
    QueryOptions(k=5, rerank="none"),
    QueryOptions(k=3, recall_k=12, rerank="ftf", explain=True),
    QueryOptions(k=7, rerank="exhaustive"),
    QueryOptions(k=4, recall_k=4, rerank="ftf"),
    QueryOptions(k=10, recall_k=25, rerank="ftf", filters=only(_mask(N_IMAGES, 1))),
    QueryOptions(k=2, rerank="none", filters=only(_mask(N_IMAGES, 2))),
    QueryOptions(k=6, recall_k=8, rerank="ftf", explain=True, filters=only(_mask(N_IMAGES, 3))),
    QueryOptions(k=5, rerank="exhaustive", filters=only(_mask(N_IMAGES, 4, p=0.3))),
    QueryOptions(k=1, recall_k=1, rerank="ftf"),
]


def test_mixed_options_batch_equals_each_query_alone(world: World) -> None:
    engine, queries, _ = world
    assert len(queries) == len(MIXED)
    batch = engine.search(queries, MIXED)
    assert len(batch) == len(MIXED)
    for i, (o, result) in enumerate(zip(MIXED, batch, strict=True)):
        alone = engine.search(queries.select(torch.tensor([i])), [o])[0]
        _assert_same(result, alone)
        assert len(result.hits) == o.k
        assert (result.attention is not None) == o.explain
        ids, scores = _reference(engine, queries, i, o)
        _assert_matches(result, ids, scores)


def test_batch_option_count_must_match(world: World) -> None:
    engine, queries, images = world
    with pytest.raises(InvalidInputError, match="option sets"):
        engine.search(queries, MIXED[:3])
    with pytest.raises(InvalidInputError, match="option sets"):
        engine.search(images, [QueryOptions(rerank="none")])


# -- filtered text -> image search ---------------------------------------------------------------------
@pytest.mark.parametrize("seed", [5, 6])
@pytest.mark.parametrize("p", [0.15, 0.6])
def test_filtered_none_is_brute_force_over_subset(world: World, seed: int, p: float) -> None:
    engine, queries, _ = world
    allowed = _mask(N_IMAGES, seed, p)
    results = engine.search(queries, [QueryOptions(k=8, rerank="none", filters=only(allowed))] * 9)
    subset = np.flatnonzero(allowed)
    for i, r in enumerate(results):
        ids, scores = _coarse_top(engine.gallery.vectors, queries.vectors[i].numpy(), subset, 8)
        _assert_matches(r, [int(x) for x in ids], scores)
        assert all(allowed[h.index] for h in r.hits)
        assert all(h.fine is None for h in r.hits)


@pytest.mark.parametrize(("recall_k", "k"), [(5, 5), (10, 4), (30, 10)])
def test_filtered_ftf_matches_reference(world: World, recall_k: int, k: int) -> None:
    engine, queries, _ = world
    allowed = _mask(N_IMAGES, 7, 0.5)
    subset = np.flatnonzero(allowed).astype(np.int64)
    options = QueryOptions(k=k, recall_k=recall_k, rerank="ftf", filters=only(allowed))
    results = engine.search(queries, [options] * len(queries))
    for i, r in enumerate(results):
        ids, scores = _ref_t2i(engine.gallery, queries, i, subset, max(recall_k, k), k)
        _assert_matches(r, ids, scores)
        for h in r.hits:
            assert allowed[h.index] and h.fine is not None
            assert h.score == pytest.approx(LAM * h.coarse + (1 - LAM) * h.fine, abs=1e-5)


def test_filtered_exhaustive_is_brute_force_fused_over_subset(world: World) -> None:
    engine, queries, _ = world
    allowed = _mask(N_IMAGES, 8, 0.4)
    subset = np.flatnonzero(allowed).astype(np.int64)
    results = engine.search(
        queries, [QueryOptions(k=6, rerank="exhaustive", filters=only(allowed))] * len(queries)
    )
    for i, r in enumerate(results):
        ids, scores = _ref_t2i(engine.gallery, queries, i, subset, subset.size, 6)
        _assert_matches(r, ids, scores)
        coarse = engine.gallery.vectors[ids] @ queries.vectors[i].numpy()
        np.testing.assert_allclose([h.coarse for h in r.hits], coarse, atol=1e-5)


def test_filter_smaller_than_k_returns_every_match(world: World) -> None:
    engine, queries, _ = world
    allowed = np.zeros(N_IMAGES, np.bool_)
    allowed[[3, 17, 29]] = True
    for rerank in ("none", "ftf", "exhaustive"):
        options = QueryOptions(k=10, recall_k=20, rerank=rerank, filters=only(allowed))
        for i, r in enumerate(engine.search(queries, [options] * len(queries))):
            assert sorted(h.index for h in r.hits) == [3, 17, 29]
            _assert_matches(r, *_reference(engine, queries, i, options))


def test_filter_matching_nothing_gives_no_hits(world: World) -> None:
    engine, queries, images = world
    queries = queries.select(slice(0, 3))
    nothing = np.zeros(N_IMAGES, np.bool_)
    for rerank in ("none", "ftf", "exhaustive"):
        options = QueryOptions(k=5, recall_k=5, rerank=rerank, explain=rerank == "ftf", filters=only(nothing))
        for r in engine.search(queries, [options] * len(queries)):
            assert r.hits == []
    for o in (
        QueryOptions(k=5, rerank="none", filters=only(nothing)),
        QueryOptions(k=5, rerank="ftf", target="captions", filters=only(nothing)),
        QueryOptions(k=5, rerank="exhaustive", target="captions", filters=only(nothing)),
    ):
        for r in engine.search(images, [o] * len(images)):
            assert r.hits == []


def test_filters_are_resolved_against_the_engines_metadata(world: World) -> None:
    engine, queries, images = world
    # Without metadata nothing is known about any image, so a condition on it lets none through.
    bare = SearchEngine(engine.gallery, None, engine.config)
    sensor = Filters(sensors=("s3",))
    assert all(r.hits == [] for r in bare.search(queries, QueryOptions(k=5, filters=sensor)))
    assert [h.index for h in engine.search(queries, QueryOptions(k=5, filters=sensor))[0].hits] == [3]
    to_captions = engine.search(images, QueryOptions(k=50, recall_k=50, target="captions", filters=sensor))
    owners = engine.gallery.captions.image_index  # type: ignore[union-attr]
    assert all({int(owners[h.index]) for h in r.hits} == {3} for r in to_captions)
    # An empty filter (no condition) is no filter.
    plain = engine.search(queries, QueryOptions(k=5))
    assert [r.hits for r in engine.search(queries, QueryOptions(k=5, filters=Filters()))] == [
        r.hits for r in plain
    ]


# -- filters with an approximate (IVF) recall index ---------------------------------------------------
IVF_IMAGES = 512


@pytest.fixture(scope="module")
def ivf_world() -> tuple[Gallery, DenseRecall, TextFeatures]:
    gen = torch.Generator().manual_seed(31)
    gallery = _gallery(gen, IVF_IMAGES, 0)
    # 64 lists with the default nprobe (16) visits a quarter of the lists: a selective filter's
    # survivors mostly lie in lists the search does not visit.
    recall = DenseRecall(gallery.vectors, factory="IVF64,Flat", use_gpu=False)
    return gallery, recall, _texts(gen, 6)


class _Spy:
    """Counts calls of a wrapped function (and whether ``include`` was passed)."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn
        self.calls: list[dict[str, Any]] = []

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls.append(kwargs)
        return self.fn(*args, **kwargs)


@pytest.mark.parametrize("rerank", ["none", "ftf"])
def test_selective_filter_over_ivf_falls_back_to_exact(
    ivf_world: tuple[Gallery, DenseRecall, TextFeatures], monkeypatch: pytest.MonkeyPatch, rerank: Rerank
) -> None:
    gallery, recall, queries = ivf_world
    allowed = _mask(IVF_IMAGES, 9, p=0.03)
    subset = np.flatnonzero(allowed).astype(np.int64)
    m, k = int(subset.size), 10
    assert 10 < m < 40
    # Precondition: the ID-selector search alone misses some of the matches.
    _, found = recall.search(queries.vectors.numpy(), k, include=subset)
    assert ((found >= 0).sum(axis=1) < min(k, m)).any()

    options = [QueryOptions(k=k, recall_k=12, rerank=rerank, filters=only(allowed))] * len(queries)
    via_faiss = fake_engine(gallery, _config(exact_filter_max=0), image_recall=recall)
    exact = fake_engine(gallery, _config(exact_filter_max=10_000), image_recall=recall)
    search_spy, exact_spy = _Spy(recall.search), _Spy(exact_subset)
    monkeypatch.setattr(recall, "search", search_spy)
    monkeypatch.setattr(side_module, "exact_subset", exact_spy)

    approx_results = via_faiss.search(queries, options)
    assert len(search_spy.calls) == len(queries)
    assert all(c.get("include") is not None for c in search_spy.calls)
    assert exact_spy.calls  # the fallback ran for the queries FAISS came back short on

    search_spy.calls.clear()
    exact_results = exact.search(queries, options)
    assert search_spy.calls == []  # a subset below exact_filter_max never touches the index

    for i, (a, b) in enumerate(zip(approx_results, exact_results, strict=True)):
        assert len(a.hits) == min(k, m)
        assert all(allowed[h.index] for h in a.hits)
        _assert_same(a, b)
        _assert_matches(a, *_reference(exact, queries, i, options[i]))


def test_broad_filter_over_ivf_uses_the_index_results(
    ivf_world: tuple[Gallery, DenseRecall, TextFeatures],
) -> None:
    gallery, recall, queries = ivf_world
    allowed = _mask(IVF_IMAGES, 10, p=0.9)
    subset = np.flatnonzero(allowed).astype(np.int64)
    engine = fake_engine(gallery, _config(exact_filter_max=0), image_recall=recall)
    results = engine.search(
        queries, [QueryOptions(k=10, rerank="none", filters=only(allowed))] * len(queries)
    )
    scores, ids = recall.search(queries.vectors.numpy(), 10, include=subset)
    assert (ids >= 0).all()
    for i, r in enumerate(results):
        _assert_matches(r, [int(x) for x in ids[i]], scores[i])
        assert all(allowed[h.index] for h in r.hits)


# -- filters with deleted images -----------------------------------------------------------------------
def test_deleted_images_are_never_returned_under_filters(world: World) -> None:
    base, queries, images = world
    queries = queries.select(slice(0, 4))
    deleted = np.asarray([0, 2, 5, 11, 12, 13, 20, 33, 39], np.int64)
    engine = fake_engine(base.gallery, base.config, deleted=deleted)
    store = engine.gallery.captions
    assert store is not None
    allowed = _mask(N_IMAGES, 12, 0.5)
    allowed[deleted[:5]] = True  # the filter lets some deleted images through; the tombstones win
    only_deleted = np.zeros(N_IMAGES, np.bool_)
    only_deleted[deleted] = True
    for mask in (allowed, only_deleted, None):
        for rerank in ("none", "ftf", "exhaustive"):
            o = QueryOptions(k=12, recall_k=15, rerank=rerank, filters=only(mask))
            for i, r in enumerate(engine.search(queries, [o] * len(queries))):
                assert not {h.index for h in r.hits} & set(deleted.tolist())
                _assert_matches(r, *_reference(engine, queries, i, o))
                if mask is only_deleted:
                    assert r.hits == []
        to_images = QueryOptions(k=12, rerank="none", filters=only(mask))
        for r in engine.search(images, [to_images] * len(images)):
            assert not {h.index for h in r.hits} & set(deleted.tolist())
        for caption_mode in ("ftf", "exhaustive"):
            to_captions = QueryOptions(
                k=12, recall_k=30, rerank=caption_mode, target="captions", filters=only(mask)
            )
            for r in engine.search(images, [to_captions] * len(images)):
                assert not {int(store.image_index[h.index]) for h in r.hits} & set(deleted.tolist())


# -- image queries under filters -----------------------------------------------------------------------
def test_image_to_images_with_filter_is_brute_force(world: World) -> None:
    engine, _, images = world
    allowed = _mask(N_IMAGES, 13, 0.3)
    subset = np.flatnonzero(allowed).astype(np.int64)
    results = engine.search(images, [QueryOptions(k=6, rerank="none", filters=only(allowed))] * len(images))
    for i, r in enumerate(results):
        ids, scores = _coarse_top(engine.gallery.vectors, images.vectors[i].numpy(), subset, 6)
        _assert_matches(r, [int(x) for x in ids], scores)


@pytest.mark.parametrize("rerank", ["none", "ftf", "exhaustive"])
def test_image_to_captions_with_filter_returns_only_allowed_images_captions(
    world: World, rerank: Rerank
) -> None:
    engine, _, images = world
    store = engine.gallery.captions
    assert store is not None
    allowed = _mask(N_IMAGES, 14, 0.25)
    subset = np.flatnonzero(allowed[store.image_index]).astype(np.int64)
    options = QueryOptions(k=8, recall_k=15, rerank=rerank, target="captions", filters=only(allowed))
    results = engine.search(images, [options] * len(images))
    for i, r in enumerate(results):
        assert len(r.hits) == 8
        assert all(allowed[store.image_index[h.index]] for h in r.hits)
        assert all(h.id == f"caption {h.index}" for h in r.hits)
        if rerank == "none":
            ids, scores = _coarse_top(store.vectors, images.vectors[i].numpy(), subset, 8)
            _assert_matches(r, [int(x) for x in ids], scores)
        else:
            depth = subset.size if rerank == "exhaustive" else 15
            _assert_matches(r, *_ref_i2t(engine.gallery, images, i, subset, depth, 8))


def test_image_batch_with_mixed_targets_equals_each_alone(world: World) -> None:
    engine, _, images = world
    options = [
        QueryOptions(k=4, rerank="none"),
        QueryOptions(k=5, recall_k=10, rerank="ftf", target="captions"),
        QueryOptions(k=3, rerank="exhaustive", target="captions", filters=only(_mask(N_IMAGES, 15))),
        QueryOptions(k=6, rerank="none", filters=only(_mask(N_IMAGES, 16))),
        QueryOptions(k=2, rerank="none", target="captions", filters=only(_mask(N_IMAGES, 17))),
    ]
    batch = engine.search(images, options)
    for i, (o, r) in enumerate(zip(options, batch, strict=True)):
        one = ImageFeatures(images.vectors[i : i + 1], images.patches[i : i + 1], images.grid)
        _assert_same(r, engine.search(one, [o])[0])
        assert len(r.hits) == o.k


# -- explain -------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def boats(tiny_encoder: ClipEncoder) -> SearchEngine:
    return encoded_engine(tiny_encoder, random_images(10, seed=5), "boats moored beside a long pier")


def test_explain_equals_search_attention(boats: SearchEngine) -> None:
    engine = boats
    query = "two boats near a pier"
    result = engine.search([query], QueryOptions(k=4, recall_k=8, explain=True))[0]
    assert result.attention is not None and len(result.hits) == 4
    gh, gw = engine.gallery.grid
    for j, hit in enumerate(result.hits):
        maps = engine.explain(query, hit.index)
        assert maps.dtype == np.float32
        assert maps.shape == result.attention[j].shape and maps.shape[1:] == (gh, gw)
        np.testing.assert_allclose(maps, result.attention[j], atol=1e-5)
        np.testing.assert_allclose(maps.sum(axis=(1, 2)), 1.0, atol=1e-5)
        assert (maps >= 0).all()
    # The batch API with explain on one query only gives the same maps for that query.
    batch = engine.search(
        [query, "a field"], [QueryOptions(k=4, recall_k=8, explain=True), QueryOptions(k=2)]
    )
    assert batch[1].attention is None and batch[0].attention is not None
    np.testing.assert_allclose(batch[0].attention, result.attention, atol=1e-5)


def test_explain_validates_its_arguments(boats: SearchEngine) -> None:
    with pytest.raises(InvalidInputError, match="outside the gallery"):
        boats.explain("boats", len(boats.gallery))
    with pytest.raises(InvalidInputError, match="outside the gallery"):
        boats.explain("boats", -1)
    with pytest.raises(InvalidInputError, match="empty"):
        boats.explain("  ", 0)


def test_explain_needs_an_encoder(world: World) -> None:
    engine, _, _ = world
    with pytest.raises(InvalidInputError, match="no encoder"):
        engine.explain("ships", 0)


def test_nprobe_setting_reaches_the_ivf_search(ivf_world: tuple[Gallery, DenseRecall, TextFeatures]) -> None:
    gallery, recall, queries = ivf_world
    options = [QueryOptions(k=20, rerank="none")] * len(queries)

    def top(nprobe: int | None) -> list[list[int]]:
        engine = fake_engine(gallery, _config(nprobe=nprobe), image_recall=recall)
        return [[h.index for h in r.hits] for r in engine.search(queries, options)]

    # Independent expectation: the exact inner-product top 20 by numpy.
    scores = queries.vectors.numpy() @ np.asarray(gallery.vectors, np.float32).T
    exact = [list(np.argsort(-row, kind="stable")[:20]) for row in scores]
    assert top(64) == exact  # every list visited: exact
    one = top(1)
    overlap = np.mean([len(set(a) & set(b)) / 20 for a, b in zip(one, exact, strict=True)])
    assert overlap < 0.9  # one list of 64 misses most of the true neighbours
    assert top(None) == top(16)  # unset: the recall module's default
