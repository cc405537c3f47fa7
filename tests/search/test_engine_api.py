"""The engine's public surface: one ``search`` for every query modality, options checked once (a
plan runs without a second check, and only on the engine that made it), the rerank registry
matching the vocabulary, and the read accessors callers show next to a hit."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pytest
import torch

import rsir.search.engine as engine_module
from rsir.model.errors import InvalidInputError
from rsir.model.features import ImageFeatures, TextFeatures
from rsir.search.engine import EngineConfig, QueryOptions, SearchEngine
from rsir.search.options import CANDIDATE_RERANKS, RERANKS, uses_recall_depth
from rsir.search.plan import check
from rsir.search.rerank import RERANKERS
from tests.search.fakes import fake_engine, random_gallery, random_image_features, random_text_features

N_IMAGES, N_CAPTIONS, GRID, DIM = 12, 30, (2, 3), 8

World = tuple[SearchEngine, TextFeatures, ImageFeatures]


@pytest.fixture(scope="module")
def world() -> World:
    gen = torch.Generator().manual_seed(5)
    gallery = random_gallery(gen, N_IMAGES, N_CAPTIONS, GRID, DIM, 4, owner=lambda c: (7 * c) % N_IMAGES)
    engine = fake_engine(gallery, EngineConfig(device="cpu"), deleted=np.asarray([4], np.int64))
    return engine, random_text_features(gen, 3, 4, DIM), random_image_features(gen, 2, GRID, DIM)


def test_every_candidate_rerank_has_an_implementation() -> None:
    assert set(RERANKERS) == set(CANDIDATE_RERANKS)
    assert set(CANDIDATE_RERANKS) == set(RERANKS) - {"none", "exhaustive"}
    assert {r for r in RERANKS if uses_recall_depth(r)} == set(CANDIDATE_RERANKS)  # type: ignore[arg-type]


def test_a_plan_runs_without_a_second_check(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    engine, texts, _ = world
    plans = [
        engine.validate(QueryOptions(k=3, recall_k=9)),
        engine.validate(QueryOptions(k=2, rerank="none")),
    ]
    want = engine.search(
        texts.select(torch.tensor([0, 1])), [QueryOptions(k=3, recall_k=9), QueryOptions(k=2, rerank="none")]
    )
    calls: list[Any] = []

    def spy(*args: Any) -> Any:
        calls.append(args)
        return check(*args)

    monkeypatch.setattr(engine_module, "check", spy)
    got = engine.search(texts.select(torch.tensor([0, 1])), plans)
    assert calls == []
    assert [r.hits for r in got] == [r.hits for r in want]
    engine.search(texts.select(torch.tensor([0])), QueryOptions(k=3))
    assert len(calls) == 1  # plain options are checked, once per query


def test_a_plan_is_not_run_by_another_engine_or_for_another_modality(world: World) -> None:
    engine, texts, images = world
    other = fake_engine(engine.gallery, EngineConfig(device="cpu", max_k=2))
    plan = engine.validate(QueryOptions(k=5))
    with pytest.raises(InvalidInputError, match="engine that made it"):
        other.search(texts.select(torch.tensor([0])), plan)
    with pytest.raises(InvalidInputError, match="for text queries"):
        engine.search(images, plan)


def test_queries_of_one_modality_in_a_list(world: World) -> None:
    engine, texts, _ = world
    with pytest.raises(InvalidInputError, match="a list"):
        engine.search("ships", QueryOptions())
    with pytest.raises(InvalidInputError, match="all sentences or all PIL images"):
        engine.search(["ships", 3], QueryOptions())  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="2 queries but 3 option sets"):
        engine.search(texts.select(torch.tensor([0, 1])), [QueryOptions()] * 3)
    assert engine.search([], QueryOptions()) == []


def test_image_queries_default_to_their_targets_rerank(world: World) -> None:
    engine, _, images = world
    to_images = engine.search(images, QueryOptions(k=3))
    assert all(h.fine is None for r in to_images for h in r.hits)  # coarse order
    to_captions = engine.search(images, QueryOptions(k=3, target="captions"))
    assert all(h.fine is not None for r in to_captions for h in r.hits)  # the FTF rerank


def test_read_accessors(world: World) -> None:
    engine, _, images = world
    assert (engine.n_images, engine.n_live_images, engine.grid) == (N_IMAGES, N_IMAGES - 1, GRID)
    assert not engine.is_live(4) and engine.is_live(5) and not engine.is_live(N_IMAGES)
    assert engine.image_id(5) == "img5"
    assert engine.metadata_row(5)["sensor"] == "s5"
    hit = engine.search(images, QueryOptions(k=1, target="captions"))[0].hits[0]
    assert engine.caption_image(hit.index) == (7 * hit.index) % N_IMAGES
    assert not engine.ppsr_available("dense", "images")


def test_a_servers_bounds_are_the_engines(world: World) -> None:
    engine, texts, _ = world
    config = replace(engine.config, max_k=8, max_explain_k=3, allow_recall_k_below_k=False)
    server = fake_engine(engine.gallery, config)
    one = texts.select(torch.tensor([0]))
    assert len(server.search(one, QueryOptions(k=8, recall_k=8))[0].hits) == 8
    assert len(server.search(one, QueryOptions(k=3, recall_k=3, explain=True))[0].hits) == 3
    for options, message in (
        (QueryOptions(k=9), r"k must be in \[1, 8\], got 9"),
        (QueryOptions(k=4, explain=True), r"k must be in \[1, 3\] with explain, got 4"),
        (QueryOptions(k=5, recall_k=4), r"recall_k must be in \[k \(5\), 1000\], got 4"),
    ):
        with pytest.raises(InvalidInputError, match=message):
            server.validate(options)
    # The defaults keep an engine's measurement uses open: a shallow recall_k still answers k hits.
    assert len(engine.search(one, QueryOptions(k=5, recall_k=2, explain=True))[0].hits) == 5
