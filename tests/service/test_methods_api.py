"""``POST /search/text`` with the per-request methods (recall, ppsr, sar, the local rerank) over an
index the builder wrote, against the engine called directly; bad values and missing data are 422s."""

from __future__ import annotations

from dataclasses import replace

import httpx
import pytest

from rsir.index.versions import load_index
from rsir.model.images import decode_image
from rsir.search.engine import QueryOptions, SearchEngine
from tests.service.conftest import ServerFactory, TinyIndex, assert_error

QUERY = "boats beside a harbour in tile 7"


def test_the_builder_writes_the_methods_data(tiny_index: TinyIndex) -> None:
    loaded = load_index(tiny_index.root, with_sgpd=False)
    for name in ("ppsr_rg.npy", "sar_profiles.npy", "caption_ppsr_rg.npy", "caption_sar_profiles.npy"):
        assert (loaded.folder / name).is_file(), name
    # The tiny test encoder has no shipped hash heads, so the version carries no codes.
    assert not (loaded.folder / "hash_codes.npy").exists() and loaded.hash_heads is None


def test_text_search_with_methods_matches_the_engine(client: httpx.Client, engine: SearchEngine) -> None:
    body = {"query": QUERY, "k": 5, "recall_k": 20, "recall": "sgpd", "rerank": "local", "sar": "hard"}
    response = client.post("/search/text", json=body | {"ppsr": True})
    assert response.status_code == 200, response.text
    hits = response.json()["results"]
    options = QueryOptions(5, 20, "local", recall="sgpd", ppsr=True, sar="hard")
    expected = engine.search([QUERY], [options])[0]
    assert [h["id"] for h in hits] == [h.id for h in expected.hits]
    assert len(hits) == 5
    for got, want in zip(hits, expected.hits, strict=True):
        assert abs(got["score"] - want.score) < 1e-5
        assert abs(got["coarse_score"] - want.coarse) < 1e-5


def test_bad_method_values_are_422(client: httpx.Client) -> None:
    for extra in ({"recall": "magic"}, {"sar": "maybe"}, {"ppsr": "sometimes"}, {"rerank": "magic"}):
        assert_error(client.post("/search/text", json={"query": QUERY} | extra), 422)


def test_exhaustive_is_a_known_mode_that_a_server_does_not_offer(client: httpx.Client) -> None:
    error = assert_error(client.post("/search/text", json={"query": QUERY, "rerank": "exhaustive"}), 422)
    assert "exhaustive" in error["message"] and "measurement" in error["message"]


def test_hash_without_hash_data_is_422_naming_hash(client: httpx.Client) -> None:
    error = assert_error(client.post("/search/text", json={"query": QUERY, "recall": "hash"}), 422)
    assert "hash" in error["message"]


def test_server_default_turns_ppsr_on_where_the_index_has_its_data(
    serve: ServerFactory, engine: SearchEngine
) -> None:
    client = serve(default_ppsr=None).client()
    body = {"query": QUERY, "k": 5, "recall_k": 20}
    hits = client.post("/search/text", json=body).json()["results"]
    with_ppsr = engine.search([QUERY], [QueryOptions(5, 20, "ftf", ppsr=True)])[0]
    without = engine.search([QUERY], [QueryOptions(5, 20, "ftf")])[0]
    assert [h["coarse_score"] for h in hits] == pytest.approx([h.coarse for h in with_ppsr.hits], abs=1e-5)
    assert [h.coarse for h in with_ppsr.hits] != pytest.approx([h.coarse for h in without.hits], abs=1e-5)
    # An explicit false wins over the default.
    plain = client.post("/search/text", json=body | {"ppsr": False}).json()["results"]
    assert [h["coarse_score"] for h in plain] == pytest.approx([h.coarse for h in without.hits], abs=1e-5)


def test_server_defaults_fill_text_and_image_queries_alike(
    serve: ServerFactory, engine: SearchEngine, tiny_index: TinyIndex
) -> None:
    # Every query with text on one side takes the server's rerank, SAR and PPSR defaults; an image
    # query over images (no text on either side) takes none of them.
    client = serve(default_rerank="local", default_sar="soft", default_ppsr=None).client()
    data = tiny_index.file(tiny_index.ids[5]).read_bytes()
    image = decode_image(data)
    text = client.post("/search/text", json={"query": QUERY, "k": 5, "recall_k": 20})
    captions = client.post(
        "/search/image",
        files={"file": ("q.png", data)},
        data={"k": "5", "recall_k": "20", "target": "captions"},
    )
    images = client.post("/search/image", files={"file": ("q.png", data)}, data={"k": "5", "recall_k": "20"})
    cross = QueryOptions(5, 20, "local", sar="soft", ppsr=True)
    expected = [
        (text, engine.search([QUERY], [cross])[0], "id"),
        (captions, engine.search([image], [replace(cross, target="captions")])[0], "caption"),
        (images, engine.search([image], [QueryOptions(5, 20, "none")])[0], "id"),
    ]
    for response, want, field in expected:
        assert response.status_code == 200, response.text
        hits = response.json()["results"]
        assert [h[field] for h in hits] == [h.id for h in want.hits]
        assert [h["score"] for h in hits] == pytest.approx([h.score for h in want.hits], abs=1e-5)
