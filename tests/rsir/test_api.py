"""The notebook API (``rsir.open_index``): the same answers as the engine it wraps, opened from a
built index with the model its manifest names."""

from __future__ import annotations

from pathlib import Path

import pytest

import rsir
from rsir.index.versions import load_index
from rsir.index_builder.demo import build_demo_index, shipped_encoder
from rsir.model.encoders import ClipEncoder
from rsir.model.errors import InvalidInputError
from rsir.search.engine import EngineConfig, QueryOptions, SearchEngine
from rsir.search.filters import Filters


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, ClipEncoder]:
    encoder = shipped_encoder()
    demo = build_demo_index(tmp_path_factory.mktemp("api"), 16, encoder)
    return demo.archive, demo.root, encoder


def test_open_index_answers_as_the_engine_does(built: tuple[Path, Path, ClipEncoder]) -> None:
    _, root, encoder = built
    idx = rsir.open_index(root, device="cpu")  # the model from the manifest, the shipped weights
    assert isinstance(idx, rsir.Index) and len(idx) == 16 and idx.version == "v0001"
    loaded = load_index(root, encoder.describe())
    engine = SearchEngine.from_index(loaded, encoder, EngineConfig(device="cpu"))
    query = "a few white planes parked near a terminal"
    want = engine.search([query], QueryOptions(k=5, rerank="ftf"))[0].hits
    got = idx.search_text(query, k=5)
    assert [(h.id, round(h.score, 6)) for h in got] == [(h.id, round(h.score, 6)) for h in want]
    assert [h.id for h in idx.search_text(query, k=5, rerank="none")] != []


def test_search_image_by_path_finds_the_tile_itself(built: tuple[Path, Path, ClipEncoder]) -> None:
    archive, root, _ = built
    idx = rsir.open_index(root, device="cpu")
    tile = sorted((archive / "images").iterdir())[3]
    top = idx.search_image(tile, k=3)
    assert top[0].id.endswith(tile.name) and top[0].score == pytest.approx(1.0, abs=1e-4)
    captions = idx.search_image(tile, k=3, target="captions", distinct=True)
    assert len({h.id for h in captions}) == 3


def test_options_are_checked_by_the_engine(built: tuple[Path, Path, ClipEncoder]) -> None:
    idx = rsir.open_index(built[1], device="cpu")
    with pytest.raises(InvalidInputError, match="k must be in"):
        idx.search_text("ships", k=0)


def test_filters_are_resolved_against_the_index_metadata(built: tuple[Path, Path, ClipEncoder]) -> None:
    idx = rsir.open_index(built[1], device="cpu")
    query = "a few white planes parked near a terminal"
    every = idx.search_text(query, k=16)
    sensors = [idx.engine.metadata_row(h.index)["sensor"] for h in every]
    assert len(set(sensors)) > 1  # precondition: the archive mixes sensors
    only = idx.search_text(query, k=16, filters=Filters(sensors=(sensors[0],)))
    assert [h.id for h in only] == [
        h.id for h in every if idx.engine.metadata_row(h.index)["sensor"] == sensors[0]
    ]
