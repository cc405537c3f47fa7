"""``POST /search/image``: query by example over the images or the captions, multipart or JSON."""

from __future__ import annotations

import base64
import json

import httpx
import numpy as np
import pytest

from rsir.model.images import decode_image
from rsir.search.engine import QueryOptions, SearchEngine
from tests.service.conftest import TinyIndex, assert_error


def _multipart(client: httpx.Client, data: bytes, **fields: str) -> httpx.Response:
    return client.post("/search/image", files={"file": ("query.png", data, "image/png")}, data=fields)


def test_an_indexed_image_finds_itself_first(
    client: httpx.Client, engine: SearchEngine, tiny_index: TinyIndex
):
    for ident in (tiny_index.ids[2], tiny_index.ids[31]):
        data = tiny_index.file(ident).read_bytes()
        response = _multipart(client, data, k="5", target="images")
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["target"] == "images"
        hits = body["results"]
        assert hits[0]["id"] == ident
        assert hits[0]["score"] == pytest.approx(1.0, abs=1e-4)  # the same pixels, the same vector
        assert all(h["fine_score"] is None for h in hits)  # coarse only
        expected = engine.search([decode_image(data)], QueryOptions(k=5))[0]
        assert [h["id"] for h in hits] == [h.id for h in expected.hits]
        np.testing.assert_allclose([h["score"] for h in hits], [h.score for h in expected.hits], atol=1e-5)

        as_json = client.post("/search/image", json={"image_base64": base64.b64encode(data).decode(), "k": 5})
        assert as_json.status_code == 200, as_json.text
        assert [h["id"] for h in as_json.json()["results"]] == [h["id"] for h in hits]
        np.testing.assert_allclose(
            [h["score"] for h in as_json.json()["results"]], [h["score"] for h in hits], atol=1e-6
        )


def test_image_search_honours_filters_in_both_forms(client: httpx.Client, tiny_index: TinyIndex):
    data = tiny_index.file(tiny_index.ids[0]).read_bytes()
    filters = {"sensor": ["L8"]}
    l8 = {i for i in tiny_index.ids if tiny_index.metadata.get(i, {}).get("sensor") == "L8"}
    multipart = _multipart(client, data, k="40", filters=json.dumps(filters))
    assert multipart.status_code == 200, multipart.text
    as_json = client.post(
        "/search/image",
        json={"image_base64": base64.b64encode(data).decode(), "k": 40, "filters": filters},
    )
    for response in (multipart, as_json):
        assert {h["id"] for h in response.json()["results"]} == l8
    assert_error(_multipart(client, data, filters="{not json"), 400, "invalid_json")
    assert_error(_multipart(client, data, filters='{"bbox": [0, 3, 1, 1]}'), 422, "invalid_request")


def test_captions_target_returns_the_engines_caption_ranking(
    client: httpx.Client, engine: SearchEngine, tiny_index: TinyIndex
):
    owner = {text: ident for ident, texts in tiny_index.captions.items() for text in texts}
    n_captions = len(owner)
    ident = tiny_index.ids[11]
    data = tiny_index.file(ident).read_bytes()
    response = _multipart(client, data, k="6", target="captions")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["target"] == "captions"
    hits = body["results"]
    expected = engine.search([decode_image(data)], QueryOptions(k=6, target="captions"))[0]
    assert [h["caption"] for h in hits] == [h.id for h in expected.hits]
    np.testing.assert_allclose([h["score"] for h in hits], [h.score for h in expected.hits], atol=1e-5)
    for hit in hits:
        assert hit["caption"] in owner  # a caption text the index was built with
        assert hit["image_id"] == owner[hit["caption"]]
        assert hit["thumbnail_url"] == f"/images/{hit['image_id']}/thumbnail"
        assert hit["fine_score"] is not None  # captions are reranked by default

    # Every caption ranked: the image's own captions are all there, each once.
    everything = _multipart(client, data, k=str(n_captions), target="captions").json()["results"]
    assert len(everything) == n_captions
    assert sorted(h["caption"] for h in everything) == sorted(owner)
    assert {h["caption"] for h in everything if h["image_id"] == ident} == set(tiny_index.captions[ident])

    coarse = _multipart(client, data, k="6", target="captions", rerank="none").json()["results"]
    assert all(h["fine_score"] is None for h in coarse)
    scores = [h["score"] for h in coarse]
    assert scores == sorted(scores, reverse=True)


def test_distinct_captions_pass_through_to_the_engine(
    client: httpx.Client, engine: SearchEngine, tiny_index: TinyIndex
):
    data = tiny_index.file(tiny_index.ids[5]).read_bytes()
    image = decode_image(data)
    for rerank in ("ftf", "none"):
        response = _multipart(client, data, k="7", target="captions", rerank=rerank, distinct="true")
        assert response.status_code == 200, response.text
        hits = response.json()["results"]
        options = QueryOptions(k=7, rerank=rerank, target="captions", distinct=True)
        expected = engine.search([image], [options])[0]
        assert [h["caption"] for h in hits] == [h.id for h in expected.hits]
        assert len({h["caption"] for h in hits}) == len(hits) == 7
    error = assert_error(_multipart(client, data, target="images", distinct="true"), 422, "invalid_request")
    assert "distinct" in error["message"]


def test_ftf_rerank_of_an_image_over_images_is_refused(client: httpx.Client, tiny_index: TinyIndex):
    data = tiny_index.file(tiny_index.ids[0]).read_bytes()
    error = assert_error(_multipart(client, data, target="images", rerank="ftf"), 422, "invalid_request")
    assert "coarse" in error["message"]
    as_json = client.post(
        "/search/image", json={"image_base64": base64.b64encode(data).decode(), "rerank": "ftf"}
    )
    assert_error(as_json, 422, "invalid_request")
    assert_error(_multipart(client, data, target="everything"), 422, "invalid_request")


def test_caption_search_honours_image_filters(client: httpx.Client, tiny_index: TinyIndex):
    data = tiny_index.file(tiny_index.ids[4]).read_bytes()
    filters = {"tags": ["urban"]}
    urban = {i for i in tiny_index.ids if "urban" in tiny_index.metadata.get(i, {}).get("tags", [])}
    response = _multipart(client, data, k="100", target="captions", filters=json.dumps(filters))
    assert response.status_code == 200, response.text
    hits = response.json()["results"]
    assert {h["image_id"] for h in hits} == urban
    assert len(hits) == sum(len(tiny_index.captions[i]) for i in urban)


@pytest.mark.parametrize("rerank", ["ftf", "none"])
def test_k_beyond_the_gallery_returns_every_image_once(
    client: httpx.Client, tiny_index: TinyIndex, rerank: str
):
    response = client.post("/search/text", json={"query": "everything", "k": 150, "rerank": rerank})
    assert response.status_code == 200, response.text
    ids = [h["id"] for h in response.json()["results"]]
    assert sorted(ids) == tiny_index.ids
