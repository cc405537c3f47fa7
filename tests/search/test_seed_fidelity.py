"""PPSR and SAR against the seeds' published definitions, written here independently with loops.

- PPSR (CFITR's CSLS, ALGORITHMS.md §3): ``2 s - r_q - r_g`` over the *whole* gallery, not over a
  fixed multiple of the cut; over minus the Hamming distance for hash recall; the response's
  ``coarse_score`` is half of that (README, Methods).
- SAR (after GaLR's ``t2i_rerank`` / ``i2t_rerank``): a candidate's reverse rank is the query's place
  among everything the candidate would retrieve from the reference set, the query itself excluded,
  compared at the stored (float16) precision.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from numpy.typing import NDArray

from rsir.index.extras import load_extras
from rsir.index_builder.extras import write_extras
from rsir.model import ppsr
from rsir.model.features import ImageFeatures, TextFeatures
from rsir.model.hashing import hamming_reference
from rsir.search.engine import QueryOptions, SearchEngine, SearchResult
from tests.search.fakes import fake_engine, only
from tests.search.test_engine_methods import N_CAPTIONS, N_IMAGES, World

PPSR_K = 10


@pytest.fixture(scope="module")
def world() -> World:
    return World()


def _ids(result: SearchResult) -> list[int]:
    return [h.index for h in result.hits]


def _caption_queries(world: World) -> TextFeatures:
    store = world.gallery.captions
    assert store is not None
    return TextFeatures(
        torch.from_numpy(np.asarray(store.vectors, np.float32)),
        torch.from_numpy(np.asarray(store.tokens, np.float32)),
        torch.from_numpy(np.asarray(store.mask)),
    )


def _cos64(a: NDArray[np.float32], b: NDArray[np.float32]) -> float:
    return float(sum(float(x) * float(y) for x, y in zip(a.tolist(), b.tolist(), strict=True)))


# -- PPSR ------------------------------------------------------------------------------------------------
def _full_csls(scores: list[float], r_g: NDArray[np.float32]) -> list[float]:
    """``2 s - r_q - r_g`` for every gallery item, ``r_q`` the mean of the query's 10 best scores."""
    best = sorted(scores, reverse=True)[:PPSR_K]
    r_q = sum(best) / len(best)
    return [2 * s - r_q - float(r_g[g]) for g, s in enumerate(scores)]


@pytest.fixture(scope="module")
def hubby(world: World) -> SearchEngine:
    """An engine whose images carry a spread-out r_g (strong hubs and anti-hubs), so PPSR's top-10
    often comes from beyond the cosine top-20."""
    rng = np.random.default_rng(7)
    r_g = rng.uniform(-0.4, 0.8, N_IMAGES).astype(np.float32)
    extras = dict(world.extras)
    extras["images"] = replace(world.extras["images"], ppsr_rg=r_g)
    return fake_engine(world.gallery, world.engine.config, extras=extras, hash_heads=world.heads)


@pytest.mark.parametrize("k", [3, 10])
def test_ppsr_is_full_csls_over_the_whole_gallery(world: World, hubby: SearchEngine, k: int) -> None:
    r_g = hubby.images.extras.ppsr_rg
    assert r_g is not None
    results = hubby.search(world.texts, [QueryOptions(k=k, rerank="none", ppsr=True)] * 8)
    beyond = 0
    for q, r in enumerate(results):
        v = world.texts.vectors[q].numpy()
        cos = [_cos64(world.gallery.vectors[g], v) for g in range(N_IMAGES)]
        corrected = _full_csls(cos, r_g)
        expected = sorted(range(N_IMAGES), key=lambda g: (-corrected[g], g))[:k]
        assert _ids(r) == expected
        # The response's coarse_score is half the CSLS value: s - (r_q + r_g) / 2 (README, Methods).
        np.testing.assert_allclose(
            [h.coarse for h in r.hits], [corrected[g] / 2 for g in expected], atol=1e-5
        )
        cosine_rank = sorted(range(N_IMAGES), key=lambda g: -cos[g])
        beyond += any(cosine_rank.index(g) >= 2 * k for g in expected)
    assert beyond > 0  # precondition: some hit lies beyond the cosine top-2k (the old fixed depth)


def test_ppsr_exact_under_a_filter(world: World, hubby: SearchEngine) -> None:
    r_g = hubby.images.extras.ppsr_rg
    assert r_g is not None
    allowed = np.random.default_rng(3).random(N_IMAGES) < 0.7
    o = QueryOptions(k=6, rerank="none", ppsr=True, filters=only(allowed))
    for q, r in enumerate(hubby.search(world.texts, [o] * 8)):
        v = world.texts.vectors[q].numpy()
        subset = [g for g in range(N_IMAGES) if allowed[g]]
        cos = [_cos64(world.gallery.vectors[g], v) for g in subset]
        best = sorted(cos, reverse=True)[:PPSR_K]
        r_q = sum(best) / len(best)
        corrected = {g: 2 * c - r_q - float(r_g[g]) for g, c in zip(subset, cos, strict=True)}
        assert _ids(r) == sorted(subset, key=lambda g: (-corrected[g], g))[:6]


def test_hash_ppsr_term_is_the_mean_of_the_best_hamming_scores(world: World) -> None:
    heads = world.heads
    image_codes = heads.encode_images(np.asarray(world.gallery.vectors, np.float32))
    caption_codes = heads.encode_texts(np.asarray(world.captions, np.float32))
    dist = hamming_reference(image_codes, caption_codes)  # [N_IMAGES, N_CAPTIONS]
    expected = [sum(sorted((-d for d in row.tolist()), reverse=True)[:PPSR_K]) / PPSR_K for row in dist]
    np.testing.assert_allclose(ppsr.hamming_gallery_term(image_codes, caption_codes), expected, atol=1e-6)
    stored = world.extras["images"].ppsr_rg_hash
    assert stored is not None
    np.testing.assert_allclose(stored, expected, atol=1e-6)


@pytest.mark.parametrize("k", [4, 10])
def test_hash_ppsr_corrects_minus_the_hamming_distance(world: World, k: int) -> None:
    """The spec's form: CSLS over -Hamming over every item, ties by cosine then id; coarse = cosine."""
    r_g = world.extras["images"].ppsr_rg_hash
    assert r_g is not None
    codes = world.heads.encode_texts(world.texts.vectors.numpy())
    image_codes = world.heads.encode_images(np.asarray(world.gallery.vectors, np.float32))
    o = QueryOptions(k=k, rerank="none", recall="hash", ppsr=True)
    for q, r in enumerate(world.engine.search(world.texts, [o] * 8)):
        v = world.texts.vectors[q].numpy()
        neg = [-float(d) for d in hamming_reference(codes[q : q + 1], image_codes)[0].tolist()]
        # Integers and means of 10 integers: rounded, so that equal values tie whatever the rounding.
        corrected = [round(c, 4) for c in _full_csls(neg, r_g)]
        cos = [_cos64(world.gallery.vectors[g], v) for g in range(N_IMAGES)]
        expected = sorted(range(N_IMAGES), key=lambda g: (-corrected[g], -cos[g], g))[:k]
        assert _ids(r) == expected
        np.testing.assert_allclose([h.coarse for h in r.hits], [cos[g] for g in expected], atol=1e-5)


def test_hash_ppsr_cosine_variant_stays_selectable(world: World) -> None:
    """``hash_ppsr="cosine"``: CSLS over the cosines of the Hamming order's first 2k candidates."""
    engine = fake_engine(
        world.gallery,
        replace(world.engine.config, hash_ppsr="cosine"),
        extras=world.extras,
        hash_heads=world.heads,
    )
    r_g = world.extras["images"].ppsr_rg
    assert r_g is not None
    k = 5
    codes = world.heads.encode_texts(world.texts.vectors.numpy())
    image_codes = world.heads.encode_images(np.asarray(world.gallery.vectors, np.float32))
    o = QueryOptions(k=k, rerank="none", recall="hash", ppsr=True)
    for q, r in enumerate(engine.search(world.texts, [o] * 8)):
        v = world.texts.vectors[q].numpy()
        dist = hamming_reference(codes[q : q + 1], image_codes)[0].tolist()
        cos = [_cos64(world.gallery.vectors[g], v) for g in range(N_IMAGES)]
        fetched = sorted(range(N_IMAGES), key=lambda g: (dist[g], -cos[g], g))[: max(2 * k, PPSR_K)]
        best = sorted((cos[g] for g in fetched), reverse=True)[:PPSR_K]
        r_q = sum(best) / len(best)
        half = {g: cos[g] - (r_q + float(r_g[g])) / 2 for g in fetched}
        expected = sorted(fetched, key=lambda g: (-half[g], g))[:k]
        assert _ids(r) == expected
        np.testing.assert_allclose([h.coarse for h in r.hits], [half[g] for g in expected], atol=1e-5)


# -- SAR -------------------------------------------------------------------------------------------------
def _galr_reverse_rank(
    query: int, candidate_vector: NDArray[np.float32], references: NDArray[np.float32]
) -> int:
    """GaLR's reverse rank of reference item ``query`` for one candidate: how many *other* references
    the candidate scores above it (its place in the candidate's own retrieval list), at float16."""
    sims = [np.float16(_cos64(candidate_vector, references[r])) for r in range(references.shape[0])]
    return sum(1 for r in range(len(sims)) if r != query and sims[r] > sims[query])


def _sar_expected(cos: list[float], cand: list[int], rho: dict[int, int], k: int) -> list[int]:
    return sorted(cand, key=lambda g: (rho[g], -cos[g], g))[:k]


def test_sar_text_queries_from_the_reference_set_exclude_themselves(world: World) -> None:
    """Every indexed caption as a query: each is in the images' reference set (all 90 captions)."""
    profiles = world.extras["images"].sar_profiles
    assert profiles is not None and profiles.shape == (N_IMAGES, N_CAPTIONS)
    queries = _caption_queries(world)
    recall_k, k = 12, 6
    o = QueryOptions(k=k, recall_k=recall_k, rerank="none", sar="hard")
    results = world.engine.search(queries, [o] * N_CAPTIONS)
    reordered = 0
    for j, r in enumerate(results):
        v = world.captions[j]
        cos = [_cos64(world.gallery.vectors[g], v) for g in range(N_IMAGES)]
        cand = sorted(range(N_IMAGES), key=lambda g: (-cos[g], g))[:recall_k]
        rho = {g: _galr_reverse_rank(j, world.gallery.vectors[g], world.captions) for g in cand}
        expected = _sar_expected(cos, cand, rho, k)
        assert _ids(r) == expected, f"caption query {j}"
        reordered += expected != cand[:k]
    assert reordered > 0  # precondition: SAR changes some order


def test_sar_image_queries_from_the_reference_set_exclude_themselves(world: World) -> None:
    profiles = world.extras["captions"].sar_profiles
    assert profiles is not None and profiles.shape == (N_CAPTIONS, N_IMAGES)
    images = ImageFeatures(
        torch.from_numpy(np.asarray(world.gallery.vectors, np.float32)),
        torch.from_numpy(np.asarray(world.gallery.patches, np.float32)),
        world.gallery.grid,
    )
    recall_k, k = 15, 5
    o = QueryOptions(k=k, recall_k=recall_k, rerank="none", sar="hard", target="captions")
    results = world.engine.search(images, [o] * N_IMAGES)
    for i, r in enumerate(results):
        v = world.gallery.vectors[i]
        cos = [_cos64(world.captions[c], v) for c in range(N_CAPTIONS)]
        cand = sorted(range(N_CAPTIONS), key=lambda c: (-cos[c], c))[:recall_k]
        rho = {c: _galr_reverse_rank(i, world.captions[c], world.gallery.vectors) for c in cand}
        assert _ids(r) == _sar_expected(cos, cand, rho, k), f"image query {i}"


def test_index_build_writes_and_loads_the_hash_ppsr_term(world: World, tmp_path: Path) -> None:
    np.save(tmp_path / "image_vectors.npy", np.asarray(world.gallery.vectors, np.float32))
    np.save(tmp_path / "caption_vectors.npy", np.asarray(world.captions, np.float32))
    heads_file = tmp_path / "heads.safetensors"
    world.heads.save(heads_file)
    write_extras(tmp_path, heads_file)
    extras, heads = load_extras(tmp_path, world.gallery, with_sgpd=False)
    assert heads is not None
    image_codes = world.heads.encode_images(np.asarray(world.gallery.vectors, np.float32))
    caption_codes = world.heads.encode_texts(np.asarray(world.captions, np.float32))
    for side, codes, refs in (
        ("images", image_codes, caption_codes),
        ("captions", caption_codes, image_codes),
    ):
        dist = hamming_reference(codes, refs)  # every reference: fewer than the build's sample size
        expected = [sum(sorted((-d for d in row.tolist()), reverse=True)[:PPSR_K]) / PPSR_K for row in dist]
        stored = extras[side].ppsr_rg_hash
        assert stored is not None
        np.testing.assert_allclose(stored, expected, atol=1e-6)
    engine = fake_engine(world.gallery, world.engine.config, extras=extras, hash_heads=heads)
    assert engine.ppsr_available("hash", "images") and engine.ppsr_available("dense", "captions")
