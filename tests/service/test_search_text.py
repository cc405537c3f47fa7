"""``POST /search/text`` over HTTP: the engine's ranking, explanations, and metadata filters, each
checked against an expectation computed without the service (the engine called directly, the
encoder's own word pieces, a brute-force cosine over the filtered subset, the metadata as written)."""

from __future__ import annotations

import datetime as dt
import io
import math
import threading
from typing import Any
from urllib.parse import quote

import httpx
import numpy as np
import pytest
import shapely
from PIL import Image

from rsir.index.versions import load_index
from rsir.model.encoders import ClipEncoder
from rsir.search.engine import QueryOptions, SearchEngine
from rsir.search.filters import Filters
from tests.service.conftest import ServerFactory, TinyIndex, assert_error, metric

QUERIES = ("harbour beside boats", "a forest near the river in tile 3", "planes parked on a runway")


def _expected_metadata(tiny: TinyIndex, ident: str) -> dict[str, Any]:
    """What ``metadata`` of a hit must be, from the metadata.jsonl row and the caption JSON entry."""
    row = tiny.metadata.get(ident, {})
    box = [row.get(k) for k in ("lon_min", "lat_min", "lon_max", "lat_max")]
    out: dict[str, Any] = {
        "bbox": None if None in box else box,
        "time": row.get("time"),
        "sensor": row.get("sensor"),
        "tags": sorted(row.get("tags", [])),
        "split": "train",  # the caption JSON's own keys come along as extra columns
        "filename": ident.rsplit("/", 1)[-1],
    }
    if "cloud_cover" in row:
        out["cloud_cover"] = row["cloud_cover"]
    return out


def _check_hits(hits: list[dict[str, Any]], expected: Any, rerank: str, tiny: TinyIndex) -> None:
    assert [h["id"] for h in hits] == [h.id for h in expected.hits]
    assert [h["rank"] for h in hits] == list(range(1, len(hits) + 1))
    for got, want in zip(hits, expected.hits, strict=True):
        assert got["score"] == pytest.approx(want.score, abs=1e-5)
        assert got["coarse_score"] == pytest.approx(want.coarse, abs=1e-5)
        if rerank == "none":
            assert got["fine_score"] is None
        else:
            assert got["fine_score"] == pytest.approx(want.fine, abs=1e-5)
        assert got["image_url"] == f"/images/{quote(got['id'])}"
        assert got["thumbnail_url"] == f"/images/{quote(got['id'])}/thumbnail"
        assert got["metadata"] == _expected_metadata(tiny, got["id"])
        assert got["explain"] is None


@pytest.mark.parametrize("rerank", ["ftf", "none"])
def test_text_search_returns_the_engines_ranking(
    client: httpx.Client, engine: SearchEngine, tiny_index: TinyIndex, rerank: str
):
    for query in QUERIES:
        response = client.post("/search/text", json={"query": query, "k": 7, "rerank": rerank})
        assert response.status_code == 200, response.text
        body = response.json()
        expected = engine.search([query], QueryOptions(k=7, rerank=rerank))[0]  # type: ignore[arg-type]
        assert len(expected.hits) == 7
        _check_hits(body["results"], expected, rerank, tiny_index)
        assert body["target"] == "images" and body["index_version"] == "v0001"
        assert body["cache"] in ("miss", "hit")
        stages = {"queue", "encode", "recall", "total"} | ({"rerank"} if rerank == "ftf" else set())
        if body["cache"] == "miss":
            assert stages <= set(body["timings_ms"]), body["timings_ms"]
            assert all(v >= 0 for v in body["timings_ms"].values())


def test_rerank_modes_differ_and_default_k_applies(client: httpx.Client):
    query = "bridge over the river"
    ftf = client.post("/search/text", json={"query": query}).json()
    none = client.post("/search/text", json={"query": query, "rerank": "none"}).json()
    assert len(ftf["results"]) == len(none["results"]) == 10  # the server's default_k
    assert all(h["fine_score"] is not None for h in ftf["results"])
    assert all(h["fine_score"] is None for h in none["results"])
    # Coarse order without the rerank: scores are the coarse cosines, descending.
    scores = [h["score"] for h in none["results"]]
    assert scores == sorted(scores, reverse=True)
    assert [h["coarse_score"] for h in none["results"]] == scores
    assert ftf["cache"] == "miss" and set(ftf["timings_ms"]) >= {"encode", "recall", "rerank", "total"}


def test_request_id_is_echoed_or_generated(client: httpx.Client):
    given = client.post(
        "/search/text", json={"query": "request id echo"}, headers={"X-Request-ID": "trace-42.a_b"}
    )
    assert given.headers["x-request-id"] == "trace-42.a_b"
    assert given.json()["request_id"] == "trace-42.a_b"
    fresh = [client.post("/search/text", json={"query": "request id echo"}) for _ in range(2)]
    ids = [r.headers["x-request-id"] for r in fresh]
    assert ids[0] != ids[1] and all(len(i) == 32 and int(i, 16) >= 0 for i in ids)
    assert [r.json()["request_id"] for r in fresh] == ids
    unsafe = client.post("/search/text", json={"query": "x"}, headers={"X-Request-ID": "a b\tc"})
    assert unsafe.headers["x-request-id"] != "a b\tc" and len(unsafe.headers["x-request-id"]) == 32
    # Errors carry it too, in the header and in the body.
    error = assert_error(
        client.post("/search/text", json={"query": ""}, headers={"X-Request-ID": "err-1"}), 422
    )
    assert error["request_id"] == "err-1"


# -- explain ---------------------------------------------------------------------------------------
def test_explain_gives_per_word_softmax_maps_and_overlays(
    client: httpx.Client, engine: SearchEngine, tiny_encoder: ClipEncoder
):
    query = "harbour with boats near the river"
    response = client.post("/search/text", json={"query": query, "k": 3, "explain": True})
    assert response.status_code == 200, response.text
    hits = response.json()["results"]
    assert len(hits) == 3
    words = tiny_encoder.word_pieces(query)
    assert len(words) >= 5
    gh, gw = tiny_encoder.describe()["grid"]
    for hit in hits:
        explain = hit["explain"]
        assert explain["words"] == words
        assert explain["grid"] == [gh, gw]
        maps = np.asarray(explain["maps"])
        assert maps.shape == (len(words), gh, gw)
        assert (maps >= 0).all()
        # Softmax over patches: each word's map sums to 1 (values are rounded to 4 decimals).
        np.testing.assert_allclose(maps.sum(axis=(1, 2)), 1.0, atol=gh * gw * 5e-5 + 1e-4)
        position = engine.gallery.ids.index(hit["id"])
        np.testing.assert_allclose(maps, engine.explain(query, position), atol=1e-4)
        assert len(explain["overlay_urls"]) == len(words)
        for w, url in enumerate(explain["overlay_urls"][:2]):
            assert url.endswith(f"&word={w}")
            for size, expect in ((None, 256), (64, 64)):
                png = client.get(url if size is None else f"{url}&size={size}")
                assert png.status_code == 200, png.text
                assert png.headers["content-type"] == "image/png"
                with Image.open(io.BytesIO(png.content)) as image:
                    assert image.format == "PNG" and image.size == (expect, expect)

    url = hits[0]["explain"]["overlay_urls"][0].replace("&word=0", f"&word={len(words)}")
    error = assert_error(client.get(url), 422, "invalid_request")
    assert "word" in error["message"]
    assert_error(client.get(url.replace(f"&word={len(words)}", "&word=-1")), 422)
    base = hits[0]["explain"]["overlay_urls"][0].split("?")[0]
    assert_error(client.get(f"{base}?query=%20&word=0"), 422)  # blank query
    assert_error(client.get("/images/nope.png/explain.png?query=boats"), 404, "not_found")


def test_explain_k_over_its_limit_is_refused(client: httpx.Client):
    error = assert_error(client.post("/search/text", json={"query": "boats", "k": 51, "explain": True}), 422)
    assert "explain" in error["message"]


# -- filters ---------------------------------------------------------------------------------------
def _unix(text: str) -> int:
    return int(dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp())


def _passes(row: dict[str, Any] | None, f: dict[str, Any]) -> bool:
    """The filter semantics, written out plainly: unknown values never pass a condition on them."""
    row = row or {}
    if "bbox" in f:
        box = [row.get(k) for k in ("lon_min", "lat_min", "lon_max", "lat_max")]
        if None in box:
            return False
        lo0, la0, lo1, la1 = f["bbox"]
        if not (box[0] <= lo1 and box[2] >= lo0 and box[1] <= la1 and box[3] >= la0):
            return False
    if "intersects" in f:
        box = [row.get(k) for k in ("lon_min", "lat_min", "lon_max", "lat_max")]
        if None in box or not shapely.box(*box).intersects(shapely.geometry.shape(f["intersects"])):
            return False
    if "time_from" in f or "time_to" in f:
        if "time" not in row:
            return False
        t = _unix(row["time"])
        if "time_from" in f and t < _unix(f["time_from"]):
            return False
        if "time_to" in f and t > _unix(f["time_to"]):
            return False
    if "sensor" in f and row.get("sensor") not in f["sensor"]:
        return False
    return "tags" not in f or set(f["tags"]) <= set(row.get("tags", []))


def _engine_filters(f: dict[str, Any]) -> Filters:
    """The engine's form of a request's filters (what the route builds from the JSON)."""
    return Filters(
        bbox=tuple(f["bbox"]) if "bbox" in f else None,
        time_from=_unix(f["time_from"]) if "time_from" in f else None,
        time_to=_unix(f["time_to"]) if "time_to" in f else None,
        sensors=tuple(f["sensor"]) if "sensor" in f else None,
        tags=tuple(f["tags"]) if "tags" in f else None,
        intersects=f.get("intersects"),
    )


FILTERS = [
    {"bbox": [-5.0, 40.0, 5.0, 42.2]},
    {"time_from": "2020-06-01T00:00:00Z", "time_to": "2021-06-01T00:00:00+00:00"},
    {"time_from": "2021-01-01T02:00:00+02:00"},  # an offset other than UTC
    {"sensor": ["S2", "WV3"]},
    {"tags": ["water", "urban"]},
    {"sensor": ["L8"], "time_to": "2021-12-31T00:00:00Z", "bbox": [-180, -90, 180, 90]},
    {"intersects": {"type": "Polygon", "coordinates": [[[-5, 40], [5, 40], [0, 42.2], [-5, 40]]]}},
]


@pytest.mark.parametrize("filters", FILTERS)
def test_filtered_coarse_search_equals_a_brute_force_cosine(
    client: httpx.Client, tiny_index: TinyIndex, tiny_encoder: ClipEncoder, filters: dict[str, Any]
):
    subset = [i for i, ident in enumerate(tiny_index.ids) if _passes(tiny_index.metadata.get(ident), filters)]
    assert 3 <= len(subset) < len(tiny_index.ids)  # each filter is selective, none is empty
    gallery = load_index(tiny_index.root).gallery
    assert gallery.ids == tiny_index.ids
    query = "farmland and houses"
    q = tiny_encoder.encode_texts([query]).vectors[0].numpy()
    scores = np.asarray(gallery.vectors)[subset] @ q
    order = np.argsort(-scores, kind="stable")[:8]
    response = client.post(
        "/search/text", json={"query": query, "k": 8, "rerank": "none", "filters": filters}
    )
    assert response.status_code == 200, response.text
    hits = response.json()["results"]
    assert [h["id"] for h in hits] == [tiny_index.ids[subset[j]] for j in order]
    np.testing.assert_allclose([h["score"] for h in hits], scores[order], atol=1e-5)


@pytest.mark.parametrize("filters", FILTERS[::2])
def test_filtered_reranked_search_equals_the_engine_on_the_subset(
    client: httpx.Client, engine: SearchEngine, tiny_index: TinyIndex, filters: dict[str, Any]
):
    mask = np.asarray([_passes(tiny_index.metadata.get(i), filters) for i in tiny_index.ids])
    query = "desert road"
    response = client.post("/search/text", json={"query": query, "k": 5, "filters": filters})
    assert response.status_code == 200, response.text
    hits = response.json()["results"]
    assert all(mask[tiny_index.ids.index(h["id"])] for h in hits)
    expected = engine.search([query], QueryOptions(k=5, filters=_engine_filters(filters)))[0]
    assert [h["id"] for h in hits] == [h.id for h in expected.hits]
    np.testing.assert_allclose([h["score"] for h in hits], [h.score for h in expected.hits], atol=1e-5)


@pytest.mark.parametrize("rerank", ["ftf", "none"])
def test_a_filter_matching_fewer_than_k_images_returns_all_of_them(
    client: httpx.Client, tiny_index: TinyIndex, rerank: str
):
    filters = {"tags": ["rare"]}
    matching = {i for i in tiny_index.ids if _passes(tiny_index.metadata.get(i), filters)}
    assert len(matching) == 3  # fewer than k, and far fewer than the default recall depth
    response = client.post(
        "/search/text", json={"query": "rare tiles", "k": 10, "rerank": rerank, "filters": filters}
    )
    assert response.status_code == 200, response.text
    hits = response.json()["results"]
    assert len(hits) == 3 and {h["id"] for h in hits} == matching
    assert all(math.isfinite(h["score"]) for h in hits)


def test_a_filter_matching_nothing_gives_empty_results(client: httpx.Client):
    for filters in (
        {"sensor": ["no-such-sensor"]},
        {"time_to": "1999-01-01T00:00:00Z"},
        {"bbox": [100.0, -50.0, 120.0, -40.0]},
    ):
        response = client.post("/search/text", json={"query": "boats", "filters": filters})
        assert response.status_code == 200, response.text
        assert response.json()["results"] == []


def test_invalid_filters_are_422(client: httpx.Client):
    def post(filters: dict[str, Any]) -> httpx.Response:
        return client.post("/search/text", json={"query": "boats", "filters": filters})

    assert "bbox" in assert_error(post({"bbox": [0.0, 5.0, 1.0, 1.0]}), 422, "invalid_request")["message"]
    bowtie = {"type": "Polygon", "coordinates": [[[0, 0], [1, 1], [1, 0], [0, 1], [0, 0]]]}
    assert (
        "Self-intersection" in assert_error(post({"intersects": bowtie}), 422, "invalid_request")["message"]
    )
    assert (
        "no numeric property 'cloud'" in assert_error(post({"ranges": {"cloud": {"lte": 1}}}), 422)["message"]
    )
    assert "ranges" in assert_error(post({"ranges": {"gsd": {"max": 1}}}), 422)["message"]  # unknown operator
    assert "bbox" in assert_error(post({"bbox": [0.0, 0.0, 1.0]}), 422)["message"]
    assert "bbox" in assert_error(post({"bbox": [0.0, -95.0, 1.0, 1.0]}), 422)["message"]
    naive = assert_error(post({"time_from": "2020-01-01T00:00:00"}), 422, "invalid_request")
    assert "time_from" in naive["message"] and "timezone" in naive["message"]
    assert "time_to" in assert_error(post({"time_to": "yesterday"}), 422)["message"]
    backwards = {"time_from": "2021-01-01T00:00:00Z", "time_to": "2020-01-01T00:00:00Z"}
    assert "time_from" in assert_error(post(backwards), 422)["message"]
    assert "sensor" in assert_error(post({"sensor": []}), 422)["message"]
    assert "sensor" in assert_error(post({"sensor": [" "]}), 422)["message"]
    assert "sensors" in assert_error(post({"sensors": ["S2"]}), 422)["message"]  # unknown field


def test_overlay_urls_carry_queries_with_url_special_characters(client: httpx.Client):
    query = "boats & planes + river #1 / 50%? a=b"
    response = client.post("/search/text", json={"query": query, "k": 1, "explain": True})
    assert response.status_code == 200, response.text
    hit = response.json()["results"][0]
    url = hit["explain"]["overlay_urls"][1]
    via_link = client.get(url)
    via_params = client.get(f"/images/{hit['id']}/explain.png", params={"query": query, "word": 1})
    other = client.get(f"/images/{hit['id']}/explain.png", params={"query": "boats and planes", "word": 1})
    assert via_link.status_code == via_params.status_code == other.status_code == 200
    assert via_link.content == via_params.content  # the link names this very query and word
    assert via_link.content != other.content


# -- concurrent requests batched together ----------------------------------------------------------
def _concurrently(url: str, bodies: list[dict[str, Any]]) -> list[httpx.Response]:
    """POST each body to /search/text from its own thread, all released at once."""
    out: list[httpx.Response | None] = [None] * len(bodies)
    barrier = threading.Barrier(len(bodies))

    def post(i: int) -> None:
        with httpx.Client(base_url=url, timeout=30) as c:
            barrier.wait()
            out[i] = c.post("/search/text", json=bodies[i])

    threads = [threading.Thread(target=post, args=(i,)) for i in range(len(bodies))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert all(r is not None for r in out)
    return [r for r in out if r is not None]


def test_concurrent_requests_with_different_options_each_get_their_own_answer(
    serve: ServerFactory, engine: SearchEngine, tiny_index: TinyIndex
):
    # A long batch window, so the requests (different k, depth, rerank, explain and filters) share
    # one model call; each must still get exactly what it asked for.
    server = serve(batch_wait_ms=250, cache_lru_entries=0)
    water = {"tags": ["water"]}
    bodies: list[dict[str, Any]] = [
        {"query": "harbour beside boats", "k": 3},
        {"query": "a forest near the river", "k": 9, "rerank": "none"},
        {"query": "planes parked on a runway", "k": 5, "recall_k": 12},
        {"query": "houses and a bridge", "k": 4, "explain": True},
        {"query": "desert farmland", "k": 6, "filters": water},
        {"query": "desert farmland", "k": 6, "rerank": "none", "filters": water},
    ]
    responses = _concurrently(server.url, bodies)
    client = server.client()
    sizes = metric(client, "rsir_batch_size_sum", kind="text")
    batches = metric(client, "rsir_batch_size_count", kind="text")
    assert sizes == len(bodies) and batches < len(bodies)  # some requests were batched together
    for body, response in zip(bodies, responses, strict=True):
        assert response.status_code == 200, response.text
        expected = engine.search(
            [body["query"]],
            QueryOptions(
                k=body["k"],
                recall_k=body.get("recall_k"),
                rerank=body.get("rerank", "ftf"),
                explain=body.get("explain", False),
                filters=_engine_filters(body["filters"]) if "filters" in body else None,
            ),
        )[0]
        hits = response.json()["results"]
        assert [h["id"] for h in hits] == [h.id for h in expected.hits], body
        np.testing.assert_allclose([h["score"] for h in hits], [h.score for h in expected.hits], atol=1e-5)
        if body.get("explain"):
            assert expected.attention is not None
            np.testing.assert_allclose([h["explain"]["maps"] for h in hits], expected.attention, atol=1e-4)
        else:
            assert all(h["explain"] is None for h in hits)


def test_an_unscorable_query_fails_alone_not_its_batch(serve: ServerFactory):
    # A query with no word tokens cannot be reranked; batched with good ones, only it is refused.
    server = serve(batch_wait_ms=250, cache_lru_entries=0)
    bodies = [{"query": "\x00"}, {"query": "boats in a harbour"}, {"query": "a forest"}]
    responses = _concurrently(server.url, bodies)
    assert_error(responses[0], 422, "invalid_request")
    assert [r.status_code for r in responses[1:]] == [200, 200]
    assert all(len(r.json()["results"]) == 10 for r in responses[1:])
