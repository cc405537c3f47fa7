"""The engine's per-query methods (hash / SGPD recall, PPSR, SAR, the local rerank) and their checks,
each against a naive reference computed here with loops and direct formulas on seeded random features.
"""

from __future__ import annotations

from typing import Any, cast

import numpy as np
import pytest
import torch
from numpy.typing import NDArray

from rsir.index.extras import SideExtras, build_extras
from rsir.index.gallery import Gallery
from rsir.model.errors import InvalidInputError
from rsir.model.features import ImageFeatures, TextFeatures
from rsir.model.ftf import FTFParams, text_to_image
from rsir.model.hashing import HashHead, HashHeads, hamming_reference
from rsir.search.engine import EngineConfig, QueryOptions, SearchEngine, SearchResult
from rsir.search.evaluate import MethodOptions, evaluate
from tests.search.fakes import fake_engine, only, random_gallery, random_image_features, random_text_features

N_IMAGES, N_CAPTIONS, GRID, DIM, N_WORDS = 40, 90, (3, 4), 16, 6
TAU, LAM = 0.1, 0.4
# Few bits: many equal Hamming distances, so the cosine tie-break is exercised (at the cut too).
BITS = 16


def _texts(gen: torch.Generator, n: int) -> TextFeatures:
    return random_text_features(gen, n, N_WORDS, DIM)


def _images(gen: torch.Generator, n: int) -> ImageFeatures:
    return random_image_features(gen, n, GRID, DIM)


def _config(**kwargs: Any) -> EngineConfig:
    return EngineConfig(ftf=FTFParams(tau=TAU, lam=LAM), query_batch=4, device="cpu", **kwargs)


def _heads() -> HashHeads:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        heads = HashHeads(image=HashHead(DIM, BITS), text=HashHead(DIM, BITS), bits=BITS)
    heads.image.eval()
    heads.text.eval()
    return heads


class World:
    def __init__(self) -> None:
        gen = torch.Generator().manual_seed(41)
        self.gallery: Gallery = random_gallery(gen, N_IMAGES, N_CAPTIONS, GRID, DIM, N_WORDS)
        self.heads = _heads()
        self.extras = build_extras(self.gallery, self.heads, seed=0, sgpd=True)
        self.engine = fake_engine(self.gallery, _config(), extras=self.extras, hash_heads=self.heads)
        self.texts = _texts(gen, 8)
        self.images = _images(gen, 5)

    @property
    def captions(self) -> NDArray[np.float32]:
        store = self.gallery.captions
        assert store is not None
        return store.vectors


@pytest.fixture(scope="module")
def world() -> World:
    return World()


# -- naive references ----------------------------------------------------------------------------------
def _ids(result: SearchResult) -> list[int]:
    return [h.index for h in result.hits]


def _hash_order(
    query_code: NDArray[np.uint8],
    codes: NDArray[np.uint8],
    vectors: NDArray[np.float32],
    query: NDArray[np.float32],
    subset: NDArray[np.int64],
) -> tuple[list[int], list[float]]:
    """Every item of ``subset`` by (Hamming distance ascending, cosine descending), with its cosine."""
    dist = hamming_reference(query_code[None], codes[subset])[0]
    cos = [float(np.dot(vectors[i].astype(np.float64), query.astype(np.float64))) for i in subset]
    order = sorted(range(subset.size), key=lambda j: (int(dist[j]), -cos[j]))
    return [int(subset[j]) for j in order], [cos[j] for j in order]


def _cosine_order(
    vectors: NDArray[np.float32], query: NDArray[np.float32], subset: NDArray[np.int64]
) -> tuple[list[int], list[float]]:
    cos = [float(np.dot(vectors[i].astype(np.float64), query.astype(np.float64))) for i in subset]
    order = sorted(range(subset.size), key=lambda j: -cos[j])
    return [int(subset[j]) for j in order], [cos[j] for j in order]


def _ftf_fine(q: TextFeatures, i: int, gallery: Gallery, cand: list[int]) -> NDArray[np.float32]:
    patches = torch.from_numpy(np.asarray(gallery.patches[cand], np.float32))[None]
    fine: NDArray[np.float32] = (
        text_to_image(q.tokens[i : i + 1], q.mask[i : i + 1], patches, TAU).fine[0].numpy()
    )
    return fine


def _local_reference(
    words: NDArray[np.float32], mask: NDArray[np.bool_], patches: NDArray[np.float32]
) -> float:
    """``||W P^T||_F / sqrt(n_valid * M)`` for one (text, image) pair, by a loop over the pairs."""
    valid = [w for w, m in zip(words, mask, strict=True) if m]
    total = 0.0
    for w in valid:
        for p in patches:
            total += float(np.dot(w.astype(np.float64), p.astype(np.float64))) ** 2
    return float(np.sqrt(total) / np.sqrt(len(valid) * patches.shape[0]))


def _reverse_rank(profile: NDArray[np.float16], score: float) -> int:
    """How many of a candidate's reference similarities are strictly greater than ``score``."""
    return sum(1 for v in profile.astype(np.float32).tolist() if v > np.float32(score))


def _assert_hits(result: SearchResult, ids: list[int], scores: list[float], atol: float = 1e-5) -> None:
    assert _ids(result) == ids
    np.testing.assert_allclose([h.score for h in result.hits], scores, atol=atol)


# -- 1. hash recall ------------------------------------------------------------------------------------
@pytest.mark.parametrize("k", [1, 7, 13])
def test_hash_recall_orders_by_hamming_then_cosine(world: World, k: int) -> None:
    codes = world.heads.encode_images(world.gallery.vectors)
    everyone = np.arange(N_IMAGES, dtype=np.int64)
    results = world.engine.search(
        world.texts, [QueryOptions(k=k, rerank="none", recall="hash")] * len(world.texts)
    )
    ties = 0
    for i, r in enumerate(results):
        q = world.texts.vectors[i].numpy()
        qcode = world.heads.encode_texts(q[None])[0]
        ids, cos = _hash_order(qcode, codes, world.gallery.vectors, q, everyone)
        dist = hamming_reference(qcode[None], codes)[0]
        ties += int((dist == dist[ids[k - 1]]).sum()) > 1
        _assert_hits(r, ids[:k], cos[:k])
        np.testing.assert_allclose([h.coarse for h in r.hits], cos[:k], atol=1e-5)
        assert all(h.fine is None for h in r.hits)
    assert ties  # precondition: some query has equal distances at its k-th hit (the tie-break is tested)


def test_hash_recall_then_ftf_fuses_over_the_hash_candidates(world: World) -> None:
    codes = world.heads.encode_images(world.gallery.vectors)
    everyone = np.arange(N_IMAGES, dtype=np.int64)
    recall_k, k = 12, 5
    o = QueryOptions(k=k, recall_k=recall_k, rerank="ftf", recall="hash")
    results = world.engine.search(world.texts, [o] * len(world.texts))
    for i, r in enumerate(results):
        q = world.texts.vectors[i].numpy()
        qcode = world.heads.encode_texts(q[None])[0]
        ids, cos = _hash_order(qcode, codes, world.gallery.vectors, q, everyone)
        cand, coarse = ids[:recall_k], np.asarray(cos[:recall_k])
        fine = _ftf_fine(world.texts, i, world.gallery, cand)
        fused = LAM * coarse + (1 - LAM) * fine
        order = sorted(range(recall_k), key=lambda j: -fused[j])[:k]
        _assert_hits(r, [cand[j] for j in order], [float(fused[j]) for j in order])
        np.testing.assert_allclose([h.coarse for h in r.hits], coarse[order], atol=1e-5)
        np.testing.assert_allclose([h.fine or 0.0 for h in r.hits], fine[order], atol=1e-5)


# -- 2. SGPD recall ------------------------------------------------------------------------------------
@pytest.mark.parametrize("k", [3, 10])
def test_sgpd_recall_equals_sgpd_search(world: World, k: int) -> None:
    sgpd = world.extras["images"].sgpd
    assert sgpd is not None
    results = world.engine.search(
        world.texts, [QueryOptions(k=k, rerank="none", recall="sgpd")] * len(world.texts)
    )
    scores, ids = sgpd.search(world.texts.vectors.numpy(), k)
    for i, r in enumerate(results):
        found = ids[i] >= 0
        _assert_hits(r, [int(x) for x in ids[i][found]], [float(s) for s in scores[i][found]])
        q = world.texts.vectors[i].numpy().astype(np.float64)
        exact = [float(np.dot(world.gallery.vectors[h.index].astype(np.float64), q)) for h in r.hits]
        np.testing.assert_allclose([h.score for h in r.hits], exact, atol=1e-5)
        np.testing.assert_allclose([h.coarse for h in r.hits], exact, atol=1e-5)


# -- 3. PPSR -------------------------------------------------------------------------------------------
def _ppsr_reference(
    vectors: NDArray[np.float32],
    r_g: NDArray[np.float32],
    query: NDArray[np.float32],
    k: int,
    ppsr_k: int = 10,
) -> tuple[list[int], list[float]]:
    """``s - (r_q + r_g) / 2`` over every item, with ``r_q`` the mean of the top ``ppsr_k`` cosines,
    then the top ``k`` of the corrected scores."""
    ids, cos = _cosine_order(vectors, query, np.arange(vectors.shape[0], dtype=np.int64))
    r_q = sum(cos[:ppsr_k]) / min(ppsr_k, len(cos))
    corrected = [cos[j] - (r_q + float(r_g[ids[j]])) / 2 for j in range(len(ids))]
    order = sorted(range(len(corrected)), key=lambda j: -corrected[j])[:k]
    return [ids[j] for j in order], [corrected[j] for j in order]


@pytest.mark.parametrize("k", [5, 8])
def test_ppsr_corrects_dense_recall(world: World, k: int) -> None:
    r_g = world.extras["images"].ppsr_rg
    assert r_g is not None
    results = world.engine.search(
        world.texts, [QueryOptions(k=k, rerank="none", ppsr=True)] * len(world.texts)
    )
    changed = False
    for i, r in enumerate(results):
        q = world.texts.vectors[i].numpy()
        ids, corrected = _ppsr_reference(world.gallery.vectors, r_g, q, k)
        _assert_hits(r, ids, corrected)
        np.testing.assert_allclose([h.coarse for h in r.hits], corrected, atol=1e-5)
        changed |= ids != _cosine_order(world.gallery.vectors, q, np.arange(N_IMAGES, dtype=np.int64))[0][:k]
    assert changed  # precondition: the correction reorders some query's hits


def test_ppsr_with_a_small_k(world: World) -> None:
    """k below ppsr_k / 2: r_q still needs ppsr_k recall scores (the fetch is at least ppsr_k deep)."""
    r_g = world.extras["images"].ppsr_rg
    assert r_g is not None
    k = 2
    results = world.engine.search(
        world.texts, [QueryOptions(k=k, rerank="none", ppsr=True)] * len(world.texts)
    )
    for i, r in enumerate(results):
        q = world.texts.vectors[i].numpy()
        ids, cos = _cosine_order(world.gallery.vectors, q, np.arange(N_IMAGES, dtype=np.int64))
        r_q = sum(cos[:10]) / 10
        corrected = [cos[j] - (r_q + float(r_g[ids[j]])) / 2 for j in range(len(ids))]
        order = sorted(range(len(ids)), key=lambda j: -corrected[j])[:k]
        _assert_hits(r, [ids[j] for j in order], [corrected[j] for j in order])


# -- 4. SAR --------------------------------------------------------------------------------------------
def _sar_reference(
    vectors: NDArray[np.float32],
    profiles: NDArray[np.float16],
    query: NDArray[np.float32],
    recall_k: int,
    k: int,
    soft_weight: float | None,
) -> tuple[list[int], list[float]]:
    ids, cos = _cosine_order(vectors, query, np.arange(vectors.shape[0], dtype=np.int64))
    cand, score = ids[:recall_k], cos[:recall_k]
    q32 = query.astype(np.float32)
    rho = [_reverse_rank(profiles[c], float(np.dot(vectors[c], q32))) for c in cand]
    if soft_weight is None:
        order = sorted(range(len(cand)), key=lambda j: (rho[j], -score[j]))
    else:
        soft = [score[j] + soft_weight * float(np.exp(-0.05 * rho[j])) for j in range(len(cand))]
        order = sorted(range(len(cand)), key=lambda j: -soft[j])
    return [cand[j] for j in order[:k]], [score[j] for j in order[:k]]


@pytest.mark.parametrize("mode", ["hard", "soft"])
def test_sar_reorders_dense_candidates(world: World, mode: str) -> None:
    profiles = world.extras["images"].sar_profiles
    assert profiles is not None
    recall_k, k = 15, 6
    o = QueryOptions(k=k, recall_k=recall_k, rerank="none", sar=cast(Any, mode))
    results = world.engine.search(world.texts, [o] * len(world.texts))
    weight = world.engine.config.sar_weight if mode == "soft" else None
    changed = False
    for i, r in enumerate(results):
        q = world.texts.vectors[i].numpy()
        ids, cos = _sar_reference(world.gallery.vectors, profiles, q, recall_k, k, weight)
        _assert_hits(r, ids, cos)  # the hits keep their own (cosine) scores, in SAR's order
        np.testing.assert_allclose([h.coarse for h in r.hits], cos, atol=1e-5)
        changed |= ids != _cosine_order(world.gallery.vectors, q, np.arange(N_IMAGES, dtype=np.int64))[0][:k]
    assert changed  # precondition: SAR changes some query's order


# -- 5. the local rerank -------------------------------------------------------------------------------
@pytest.mark.parametrize(("recall_k", "k"), [(12, 5), (4, 4), (40, 10)])
def test_local_rerank_fuses_the_local_score(world: World, recall_k: int, k: int) -> None:
    w = world.engine.config.local_weight
    o = QueryOptions(k=k, recall_k=recall_k, rerank="local")
    results = world.engine.search(world.texts, [o] * len(world.texts))
    for i, r in enumerate(results):
        q = world.texts.vectors[i].numpy()
        cand, cos = _cosine_order(world.gallery.vectors, q, np.arange(N_IMAGES, dtype=np.int64))
        cand, cos = cand[:recall_k], cos[:recall_k]
        words, mask = world.texts.tokens[i].numpy(), world.texts.mask[i].numpy()
        local = [
            _local_reference(words, mask, np.asarray(world.gallery.patches[c], np.float32)) for c in cand
        ]
        fused = [w * cos[j] + (1 - w) * local[j] for j in range(len(cand))]
        order = sorted(range(len(cand)), key=lambda j: -fused[j])[:k]
        _assert_hits(r, [cand[j] for j in order], [fused[j] for j in order])
        np.testing.assert_allclose([h.fine or 0.0 for h in r.hits], [local[j] for j in order], atol=1e-5)
        np.testing.assert_allclose([h.coarse for h in r.hits], [cos[j] for j in order], atol=1e-5)


# -- 6. image -> captions ------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["hash", "sgpd", "ppsr", "sar"])
def test_image_to_captions_methods(world: World, method: str) -> None:
    store = world.gallery.captions
    assert store is not None
    side = world.extras["captions"]
    everyone = np.arange(N_CAPTIONS, dtype=np.int64)
    k, recall_k = 6, 14
    o = {
        "hash": QueryOptions(k=k, rerank="none", target="captions", recall="hash"),
        "sgpd": QueryOptions(k=k, rerank="none", target="captions", recall="sgpd"),
        "ppsr": QueryOptions(k=k, rerank="none", target="captions", ppsr=True),
        "sar": QueryOptions(k=k, recall_k=recall_k, rerank="none", target="captions", sar="hard"),
    }[method]
    results = world.engine.search(world.images, [o] * len(world.images))
    codes = world.heads.encode_texts(store.vectors)
    for i, r in enumerate(results):
        q = world.images.vectors[i].numpy()
        if method == "hash":
            qcode = world.heads.encode_images(q[None])[0]
            ids, scores = _hash_order(qcode, codes, store.vectors, q, everyone)
            ids, scores = ids[:k], scores[:k]
        elif method == "sgpd":
            assert side.sgpd is not None
            s, found = side.sgpd.search(q[None], k)
            ids, scores = [int(x) for x in found[0] if x >= 0], [float(x) for x in s[0][found[0] >= 0]]
        elif method == "ppsr":
            assert side.ppsr_rg is not None
            ids, scores = _ppsr_reference(store.vectors, side.ppsr_rg, q, k)
        else:
            assert side.sar_profiles is not None
            ids, scores = _sar_reference(store.vectors, side.sar_profiles, q, recall_k, k, None)
        _assert_hits(r, ids, scores)
        assert all(h.id == f"caption {h.index}" for h in r.hits)


def test_image_to_images_hash_recall(world: World) -> None:
    codes = world.heads.encode_images(world.gallery.vectors)
    everyone = np.arange(N_IMAGES, dtype=np.int64)
    o = QueryOptions(k=5, rerank="none", recall="hash")
    for i, r in enumerate(world.engine.search(world.images, [o] * len(world.images))):
        q = world.images.vectors[i].numpy()
        ids, cos = _hash_order(
            world.heads.encode_images(q[None])[0], codes, world.gallery.vectors, q, everyone
        )
        _assert_hits(r, ids[:5], cos[:5])


# -- 7. validate ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("options", "name"),
    [
        (QueryOptions(rerank="none", recall="hash"), "hash"),
        (QueryOptions(rerank="none", recall="sgpd"), "sgpd"),
        (QueryOptions(rerank="none", ppsr=True), "ppsr"),
        (QueryOptions(rerank="none", sar="hard"), "sar"),
        (QueryOptions(rerank="ftf", sar="soft"), "sar"),
        (QueryOptions(rerank="none", target="captions", recall="hash"), "hash"),
        (QueryOptions(rerank="none", target="captions", ppsr=True), "ppsr"),
    ],
)
def test_methods_without_their_data_are_rejected(world: World, options: QueryOptions, name: str) -> None:
    bare = fake_engine(world.gallery, _config())
    with pytest.raises(InvalidInputError, match=rf"^{name} is not available"):
        bare.validate(options, "image" if options.target == "captions" else "text")
    with pytest.raises(InvalidInputError, match=rf"^{name} is not available"):
        if options.target == "captions":
            bare.search(_one(world.images), [options])
        else:
            bare.search(world.texts.select(torch.tensor([0])), [options])


def _one(images: ImageFeatures) -> ImageFeatures:
    return ImageFeatures(images.vectors[:1], images.patches[:1], images.grid)


def test_hash_needs_the_heads_as_well_as_the_codes(world: World) -> None:
    no_heads = fake_engine(world.gallery, _config(), extras=world.extras)
    with pytest.raises(InvalidInputError, match=r"^hash is not available"):
        no_heads.validate(QueryOptions(rerank="none", recall="hash"))
    # Only the captions side lacks data: text -> images still works, image -> captions does not.
    partial = fake_engine(
        world.gallery,
        _config(),
        extras={"images": world.extras["images"], "captions": SideExtras()},
        hash_heads=world.heads,
    )
    partial.validate(QueryOptions(rerank="none", recall="sgpd", ppsr=True, sar="hard"))
    with pytest.raises(InvalidInputError, match=r"^sgpd is not available"):
        partial.validate(QueryOptions(rerank="none", target="captions", recall="sgpd"), "image")


@pytest.mark.parametrize(("ppsr", "sar"), [(True, "off"), (False, "hard"), (False, "soft")])
def test_image_to_image_takes_no_ppsr_or_sar(world: World, ppsr: bool, sar: str) -> None:
    o = QueryOptions(rerank="none", ppsr=ppsr, sar=cast(Any, sar))
    with pytest.raises(InvalidInputError, match="image-to-image"):
        world.engine.validate(o, "image")
    with pytest.raises(InvalidInputError, match="image-to-image"):
        world.engine.search(_one(world.images), [o])


@pytest.mark.parametrize(
    "options",
    [
        QueryOptions(rerank="exhaustive", recall="hash"),
        QueryOptions(rerank="exhaustive", recall="sgpd"),
        QueryOptions(rerank="exhaustive", ppsr=True),
        QueryOptions(rerank="exhaustive", sar="hard"),
    ],
)
def test_exhaustive_takes_no_method(world: World, options: QueryOptions) -> None:
    with pytest.raises(InvalidInputError, match="exhaustive"):
        world.engine.validate(options)


def test_unknown_method_values_are_rejected(world: World) -> None:
    with pytest.raises(InvalidInputError, match="recall must be one of dense, hash, sgpd; got 'magic'"):
        world.engine.validate(QueryOptions(recall=cast(Any, "magic")))
    with pytest.raises(InvalidInputError, match="sar must be one of off, hard, soft; got 'maybe'"):
        world.engine.validate(QueryOptions(sar=cast(Any, "maybe")))
    with pytest.raises(InvalidInputError, match="recall must be one of"):
        world.engine.search(world.texts.select(torch.tensor([0])), [QueryOptions(recall=cast(Any, "magic"))])


# -- 8. filters and deleted images ---------------------------------------------------------------------
DELETED = np.asarray([1, 4, 9, 16, 25, 36], np.int64)


@pytest.fixture(scope="module")
def deleted_engine(world: World) -> SearchEngine:
    return fake_engine(world.gallery, _config(), deleted=DELETED, extras=world.extras, hash_heads=world.heads)


def _mask(seed: int, p: float) -> NDArray[np.bool_]:
    mask: NDArray[np.bool_] = np.random.default_rng(seed).random(N_IMAGES) < p
    mask[DELETED[:3]] = True  # the filter lets some deleted images through: the tombstones win
    return mask


@pytest.mark.parametrize("mask_seed", [None, 1, 2])
def test_hash_recall_under_filters_and_deletions(
    world: World, deleted_engine: SearchEngine, mask_seed: int | None
) -> None:
    allowed = None if mask_seed is None else _mask(mask_seed, 0.5)
    ok = np.ones(N_IMAGES, np.bool_) if allowed is None else allowed.copy()
    ok[DELETED] = False
    subset = np.flatnonzero(ok).astype(np.int64)
    codes = world.heads.encode_images(world.gallery.vectors)
    k = 8
    o = QueryOptions(k=k, rerank="none", recall="hash", filters=only(allowed))
    for i, r in enumerate(deleted_engine.search(world.texts, [o] * len(world.texts))):
        q = world.texts.vectors[i].numpy()
        ids, cos = _hash_order(world.heads.encode_texts(q[None])[0], codes, world.gallery.vectors, q, subset)
        _assert_hits(r, ids[:k], cos[:k])
        assert all(ok[h.index] for h in r.hits)


@pytest.mark.parametrize("mask_seed", [None, 3, 4])
def test_sgpd_recall_under_filters_and_deletions(
    world: World, deleted_engine: SearchEngine, mask_seed: int | None
) -> None:
    allowed = None if mask_seed is None else _mask(mask_seed, 0.4)
    ok = np.ones(N_IMAGES, np.bool_) if allowed is None else allowed.copy()
    ok[DELETED] = False
    subset = np.flatnonzero(ok).astype(np.int64)
    sgpd = world.extras["images"].sgpd
    assert sgpd is not None
    k = 8
    o = QueryOptions(k=k, rerank="none", recall="sgpd", filters=only(allowed))
    for i, r in enumerate(deleted_engine.search(world.texts, [o] * len(world.texts))):
        q = world.texts.vectors[i].numpy()
        assert r.hits and all(ok[h.index] for h in r.hits)
        # SGPD over the live (and allowed) items; a filtered query SGPD came back short on is scored
        # exactly over its subset instead.
        s, found = sgpd.search(q[None], k, include=None if allowed is None else subset, exclude=DELETED)
        n_found = int((found[0] >= 0).sum())
        if allowed is None or n_found >= min(k, subset.size):
            ids, scores = [int(x) for x in found[0][:n_found]], [float(x) for x in s[0][:n_found]]
        else:
            ids, scores = _cosine_order(world.gallery.vectors, q, subset)
            ids, scores = ids[:k], scores[:k]
        _assert_hits(r, ids, scores)
        exact = [float(np.dot(world.gallery.vectors[h.index], q)) for h in r.hits]
        np.testing.assert_allclose([h.coarse for h in r.hits], exact, atol=1e-5)


def test_ppsr_and_sar_under_a_filter(world: World, deleted_engine: SearchEngine) -> None:
    allowed = _mask(5, 0.6)
    ok = allowed.copy()
    ok[DELETED] = False
    for o in (
        QueryOptions(k=6, rerank="none", ppsr=True, filters=only(allowed)),
        QueryOptions(k=6, recall_k=12, rerank="local", sar="soft", recall="sgpd", filters=only(allowed)),
        QueryOptions(
            k=6, recall_k=12, rerank="ftf", sar="hard", ppsr=True, recall="hash", filters=only(allowed)
        ),
    ):
        for r in deleted_engine.search(world.texts, [o] * len(world.texts)):
            assert len(r.hits) == 6 and all(ok[h.index] for h in r.hits)


# -- 9. evaluation with a method ------------------------------------------------------------------------
def test_evaluate_with_a_method(world: World) -> None:
    result = evaluate(
        world.engine,
        "local",
        recall_k=20,
        method=MethodOptions(recall="sgpd", ppsr=True, sar="hard"),
        caption_queries=np.arange(0, N_CAPTIONS, 9, dtype=np.int64),
        image_queries=np.arange(0, N_IMAGES, 8, dtype=np.int64),
    )
    out = result.as_dict()
    assert out["recall"] == "sgpd" and out["ppsr"] is True and out["sar"] == "hard"
    assert out["mode"] == "local" and out["K"] == 20
    for key in ("t2i_r1", "t2i_r10", "i2t_r1", "i2t_r10", "mR"):
        assert 0.0 <= out[key] <= 100.0
    dense = evaluate(
        world.engine,
        "none",
        method=MethodOptions(recall="hash"),
        caption_queries=np.arange(0, N_CAPTIONS, 9, dtype=np.int64),
        image_queries=np.arange(0, N_IMAGES, 8, dtype=np.int64),
    )
    assert dense.as_dict()["recall"] == "hash" and dense.as_dict()["sar"] == "off"
