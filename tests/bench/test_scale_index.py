"""The scale tool's version is a real version: it validates, opens with ``load_index``, carries every
derived array a build writes, and the engine searches it like any other (checked against brute force
over its own vectors)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bench.scale_index import mixture_seeds, version_seeds, write_scale_version
from rsir.index.extras import SGPD_FILES, SGPD_POSTINGS
from rsir.index.versions import load_index, validate_version
from rsir.search.engine import EngineConfig, QueryOptions, SearchEngine

DIM, GRID, N, PER_IMAGE = 32, (2, 2), 500, 2
ENCODER = {"arch": "scale-test", "checkpoint_sha256": None, "dim": DIM, "grid": list(GRID)}


@pytest.fixture(scope="module")
def version(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("scale")
    rng = np.random.default_rng(0)
    seeds = mixture_seeds(rng, DIM, GRID[0] * GRID[1], PER_IMAGE, 6, ["a field", "a harbour", "a road"])
    folder, _ = write_scale_version(root, N, encoder=ENCODER, per_image=PER_IMAGE, codec="int8", seeds=seeds)
    return folder


def test_version_validates_and_opens_with_every_derived_array(version: Path) -> None:
    manifest = validate_version(version, check_faiss=True)
    assert (manifest.n_images, manifest.n_captions, manifest.dim, manifest.token_codec) == (
        N,
        N * PER_IMAGE,
        DIM,
        "int8",
    )
    for prefix in ("", "caption_"):
        for name in ("ppsr_rg.npy", "sar_profiles.npy", *SGPD_FILES, *SGPD_POSTINGS):
            assert (version / f"{prefix}{name}").is_file(), prefix + name
    loaded = load_index(version.parent)  # the root: CURRENT names the published version
    assert loaded.folder == version and len(loaded.gallery) == N
    assert loaded.image_recall is not None and loaded.image_recall.size == N
    assert loaded.caption_recall is not None and loaded.caption_recall.size == N * PER_IMAGE
    assert loaded.extras["images"].sgpd is not None and loaded.extras["images"].ppsr_rg is not None
    vectors = np.asarray(loaded.gallery.vectors)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    # Copies of a seed cluster: each item's nearest other item is far closer than a random pair.
    sims = vectors @ vectors.T
    np.fill_diagonal(sims, -1)
    assert sims.max(axis=1).mean() > sims.mean() + 0.3


def test_engine_searches_it_like_brute_force(version: Path) -> None:
    loaded = load_index(version)
    engine = SearchEngine.from_index(loaded, None, EngineConfig(device="cpu"))
    vectors = np.asarray(loaded.gallery.vectors, np.float64)
    store = loaded.gallery.captions
    assert store is not None
    captions = np.arange(0, N * PER_IMAGE, 97)
    queries = loaded.gallery.caption_features(captions)
    found = engine.search(queries, QueryOptions(k=10, rerank="none"))
    for c, result in zip(captions, found, strict=True):
        exact = vectors @ np.asarray(store.vectors[c], np.float64)
        want = np.lexsort((np.arange(N), -exact.astype(np.float32)))[:10]
        assert [h.index for h in result.hits] == want.tolist()
        assert np.allclose([h.score for h in result.hits], exact[want], atol=1e-5)
    reranked = engine.search(queries, QueryOptions(k=10, recall_k=50, rerank="ftf"))
    for c, result in zip(captions, reranked, strict=True):
        exact = vectors @ np.asarray(store.vectors[c], np.float64)
        shortlist = set(np.argsort(-exact, kind="stable")[:50].tolist())
        assert len(result.hits) == 10 and {h.index for h in result.hits} <= shortlist
    items = np.arange(0, N, 61)
    own = engine.search(loaded.gallery.image_features(items), QueryOptions(k=1, rerank="none"))
    assert [r.hits[0].index for r in own] == items.tolist()
    # An image query over the captions (FTF over word tokens) finds one of the image's own captions.
    theirs = engine.search(loaded.gallery.image_features(items), QueryOptions(k=1, target="captions"))
    owners = store.image_index
    assert np.mean([owners[r.hits[0].index] == i for r, i in zip(theirs, items, strict=True)]) >= 0.5


def test_version_seeds_keep_inner_products_when_widened(version: Path) -> None:
    seeds = version_seeds(version, np.random.default_rng(3), 48, 6, 3, None)
    loaded = load_index(version, with_sgpd=False)
    base = np.asarray(loaded.gallery.vectors, np.float64)
    assert seeds.vectors.shape == (N, 48) and seeds.patches.shape == (N, 6, 48)
    assert np.allclose(seeds.vectors @ seeds.vectors.T, base @ base.T, atol=1e-5)
    # Patches 4 and 5 repeat the 2x2 grid's first two; each image's captions are its own.
    assert np.allclose(seeds.patches[:, 4:], seeds.patches[:, :2])
    owners = loaded.gallery.captions.image_index  # type: ignore[union-attr]
    assert seeds.captions.shape == (N, 3)
    assert (owners[seeds.captions] == np.arange(N)[:, None]).all()


def test_fp16_and_int8_copies_carry_the_same_structure(tmp_path: Path) -> None:
    """Both codecs' copy paths: each copy's patch tokens stay near one seed's (cosine to the nearest
    seed token set far above that to another seed's), whichever codec wrote them."""
    rng = np.random.default_rng(1)
    seeds = mixture_seeds(rng, DIM, GRID[0] * GRID[1], 1, 4, [])
    flat_seeds = seeds.patches.reshape(len(seeds.patches), -1)
    flat_seeds /= np.linalg.norm(flat_seeds, axis=1, keepdims=True)
    for codec in ("fp16", "int8"):
        folder, _ = write_scale_version(
            tmp_path / codec,
            200,
            encoder=ENCODER,
            per_image=1,
            codec=codec,
            seeds=seeds,
        )
        loaded = load_index(folder, with_sgpd=False)
        patches = np.asarray(loaded.gallery.patches[:], np.float32).reshape(200, -1)
        sims = (patches / np.linalg.norm(patches, axis=1, keepdims=True)) @ flat_seeds.T
        best = np.sort(sims, axis=1)
        assert best[:, -1].mean() > 0.8 and (best[:, -1] - best[:, -2]).mean() > 0.1, codec
