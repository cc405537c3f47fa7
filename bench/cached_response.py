"""What a cached search answer costs the server in body handling, before and after the routes
returned checked response models (issue 20): per request, from the cached bytes to the bytes sent.

- ``before``: ``json.loads`` of the cached body, the per-request fields added, ``json.dumps`` (the
  code the routes ran until then, copied here; an explain body's ``json.dumps`` ran on a thread);
  ``before_keys`` adds the signing of every URL for an API key, as it was done (on dicts).
- ``after``: ``SearchResults.model_validate_json`` of the cached body, the ``SearchResponse`` built,
  then what FastAPI's ``response_model`` does with it (validate, ``dump_json``); ``after_keys`` adds
  the signing of every URL for an API key.

Bodies are shaped like real answers: image hits with metadata, caption hits, and explain answers of
the shipped model (7 x 7 patches, 8 word pieces) at k = 10 and at the server's largest explain k, 50.

    python -m bench.cached_response [--repeats 2000]

Prints one JSON object (microseconds per request, best and median of 5 runs).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from pydantic import TypeAdapter

from rsir.service.schemas import SearchResponse, SearchResults
from rsir.service.signing import UrlSigner, sign_results, with_token

GRID = (7, 7)
WORDS = 8


def _image_hits(k: int, explain: bool, rng: np.random.Generator) -> list[dict[str, Any]]:
    hits = []
    for rank in range(1, k + 1):
        ident = f"images/tile_{rank:06d}.png"
        url = f"/images/{ident}"
        hit: dict[str, Any] = {
            "rank": rank,
            "id": ident,
            "score": float(rng.random()),
            "coarse_score": float(rng.random()),
            "fine_score": float(rng.random()),
            "metadata": {
                "bbox": [float(v) for v in rng.random(4)],
                "time": "2021-09-22T00:00:00Z",
                "sensor": "S2",
                "tags": ["urban", "water"],
                "filename": f"tile_{rank:06d}.png",
                "split": "test",
            },
            "image_url": url,
            "thumbnail_url": f"{url}/thumbnail",
            "explain": None,
        }
        if explain:
            maps = np.round(rng.random((WORDS, *GRID)), 4)
            hit["explain"] = {
                "words": [f"word{w}" for w in range(WORDS)],
                "grid": list(GRID),
                "maps": maps.tolist(),
                "overlay_urls": [f"{url}/explain.png?query=a%20query&word={w}" for w in range(WORDS)],
            }
        hits.append(hit)
    return hits


def _caption_hits(k: int, rng: np.random.Generator) -> list[dict[str, Any]]:
    return [
        {
            "rank": rank,
            "caption": f"many buildings and some green trees are around a playground {rank}",
            "image_id": f"images/tile_{rank:06d}.png",
            "score": float(rng.random()),
            "coarse_score": float(rng.random()),
            "fine_score": float(rng.random()),
            "thumbnail_url": f"/images/images/tile_{rank:06d}.png/thumbnail",
        }
        for rank in range(1, k + 1)
    ]


def bodies() -> dict[str, bytes]:
    """The cached bodies (what the cache held before the change: ``json.dumps`` of the shared part)."""
    rng = np.random.default_rng(0)
    shared = {
        "images k=10": {"results": _image_hits(10, False, rng), "target": "images"},
        "captions k=10": {"results": _caption_hits(10, rng), "target": "captions"},
        "explain k=10": {"results": _image_hits(10, True, rng), "target": "images"},
        "explain k=50": {"results": _image_hits(50, True, rng), "target": "images"},
    }
    return {name: json.dumps({**body, "index_version": "v0001"}).encode() for name, body in shared.items()}


def _before(raw: bytes, signer: UrlSigner | None = None) -> bytes:
    payload = json.loads(raw)
    payload.update(cache="hit", timings_ms={"cache": 0.1, "total": 0.2}, request_id="0" * 32)
    if signer is not None:
        payload["results"] = _sign_dicts(payload["results"], signer, "0123456789abcdef")
    return json.dumps(payload).encode()


def _sign_dicts(results: list[dict[str, Any]], signer: UrlSigner, key_id: str) -> list[dict[str, Any]]:
    """``rsir.service.signing.sign_results`` as it was, over the hits as dicts."""
    signed = []
    for hit in results:
        token = signer.token(str(hit.get("id") or hit.get("image_id")), key_id)
        out = dict(hit)
        for field in ("image_url", "thumbnail_url"):
            if field in out:
                out[field] = with_token(out[field], token)
        if isinstance(out.get("explain"), dict):
            out["explain"] = {
                **out["explain"],
                "overlay_urls": [with_token(u, token) for u in out["explain"]["overlay_urls"]],
            }
        signed.append(out)
    return signed


_RESPONSE = TypeAdapter(SearchResponse)  # what FastAPI's response_model field wraps


def _after(raw: bytes, sign: Callable[[SearchResults], Any] | None = None) -> bytes:
    shared = SearchResults.model_validate_json(raw)
    results = shared.results if sign is None else sign(shared)
    response = SearchResponse(
        results=results,
        target=shared.target,
        index_version=shared.index_version,
        explain_note=shared.explain_note,
        cache="hit",
        timings_ms={"cache": 0.1, "total": 0.2},
        request_id="0" * 32,
    )
    return _RESPONSE.dump_json(_RESPONSE.validate_python(response))


def _time(work: Callable[[], object], repeats: int) -> list[float]:
    runs = []
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(repeats):
            work()
        runs.append((time.perf_counter() - t0) / repeats * 1e6)
    return [round(min(runs), 1), round(statistics.median(runs), 1)]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=2000)
    args = parser.parse_args()
    signer = UrlSigner(b"\0" * 32, 900)

    def sign(shared: SearchResults) -> Any:
        return sign_results(shared.results, signer, "0123456789abcdef")

    out: dict[str, Any] = {"unit": "us per request, [best, median] of 5 runs"}
    for name, raw in bodies().items():
        # The same content either way (the fixture test checks it on real answers; here, once more).
        assert json.loads(_before(raw)) == json.loads(_after(raw)), name
        assert json.loads(_before(raw, signer)) == json.loads(_after(raw, sign)), name
        repeats = max(args.repeats // (20 if "k=50" in name else 1), 20)
        out[name] = {
            "bytes": len(raw),
            "before": _time(lambda raw=raw: _before(raw), repeats),  # type: ignore[misc]
            "before_keys": _time(lambda raw=raw: _before(raw, signer), repeats),  # type: ignore[misc]
            "after": _time(lambda raw=raw: _after(raw), repeats),  # type: ignore[misc]
            "after_keys": _time(lambda raw=raw: _after(raw, sign), repeats),  # type: ignore[misc]
        }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
