"""Evaluation end to end: `rsir eval --json` on tiny datasets, a perfect-retrieval case, real images."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile
import torch
from typer.testing import CliRunner

from bench.statistics import tie_aware_hits
from rsir.cli import app
from rsir.index.gallery import Gallery, gallery_from_features, permute_captions
from rsir.model.datasets import load_dataset
from rsir.model.encoders import ClipEncoder
from rsir.model.errors import InvalidInputError
from rsir.model.features import ImageFeatures, TextFeatures
from rsir.search.engine import EngineConfig, QueryOptions, SearchEngine
from rsir.search.evaluate import embed_dataset, evaluate, evaluate_caption_orders
from rsir.search.options import Rerank
from tests.conftest import TINY_ARCH, random_images, require_shared

KEYS = {"t2i_r1", "t2i_r5", "t2i_r10", "i2t_r1", "i2t_r5", "i2t_r10", "mR", "mode", "K", "ms_per_query"}


def _tiny_dataset(root: Path) -> Path:
    """Six images in three formats; 1 to 5 captions each, one caption duplicated across images."""
    (root / "images").mkdir(parents=True)
    entries = []
    for i, img in enumerate(random_images(6, seed=4, size=(70, 90))):
        name = f"tile{i}." + ("png", "jpg", "tif")[i % 3]
        if name.endswith("tif"):
            tifffile.imwrite(root / "images" / name, np.asarray(img))
        else:
            img.save(root / "images" / name)
        sentences = [{"raw": f"{n} red cars parked beside building {i} ."} for n in range(1 + i % 5)]
        sentences.append({"raw": "a river flows through green farmland ."})  # the same text everywhere
        entries.append({"filename": name, "split": "test" if i < 5 else "train", "sentences": sentences})
    path = root / "dataset.json"
    path.write_text(json.dumps({"dataset": "tiny", "images": entries}))
    return path


def _run_eval(*args: str) -> dict[str, object]:
    result = CliRunner().invoke(app, ["eval", *args, "--model", TINY_ARCH, "--device", "cpu", "--json"])
    assert result.exit_code == 0, result.output
    return dict(json.loads(result.stdout))


def test_rsir_eval_json_end_to_end(tmp_path: Path) -> None:
    dataset = _tiny_dataset(tmp_path)
    two_stage = _run_eval("--dataset", str(dataset), "--rerank", "ftf", "--recall-k", "5")
    assert set(two_stage) >= KEYS
    assert two_stage["mode"] == "ftf" and two_stage["K"] == 5
    assert two_stage["n_images"] == 5 and two_stage["n_captions"] == sum(1 + i % 5 + 1 for i in range(5))
    for key in ("t2i_r1", "t2i_r5", "t2i_r10", "i2t_r1", "i2t_r5", "i2t_r10", "mR"):
        value = two_stage[key]
        assert isinstance(value, float) and 0.0 <= value <= 100.0
    # With only 5 images, every caption's image is in its top 5 and top 10.
    assert two_stage["t2i_r5"] == two_stage["t2i_r10"] == 100.0
    # recall_k covering the whole split makes two-stage and exhaustive rank identically (text to
    # image only: the duplicated caption ties across images, and ties may break either way).
    exhaustive = _run_eval("--dataset", str(dataset), "--rerank", "exhaustive")
    for key in ("t2i_r1", "t2i_r5", "t2i_r10"):
        assert exhaustive[key] == pytest.approx(two_stage[key])
    coarse = _run_eval("--dataset", str(dataset), "--rerank", "none", "--split", "all")
    assert coarse["n_images"] == 6 and coarse["K"] is None


def test_rsir_eval_reports_bad_input_without_traceback(tmp_path: Path) -> None:
    dataset = _tiny_dataset(tmp_path)
    result = CliRunner().invoke(app, ["eval", "--dataset", str(dataset), "--rerank", "magic"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    # the choices come from the one vocabulary (rsir.search.options), whatever the console's wrapping
    flat = " ".join(result.output.replace("│", " ").split())
    assert "'magic' is not one of 'none', 'ftf', 'local', 'exhaustive'" in flat


def test_perfect_features_give_perfect_recall() -> None:
    # Each caption's vectors are its image's vectors: every query's own item scores cosine 1.
    gen = torch.Generator().manual_seed(0)
    n_img, grid, d = 15, (2, 2), 8
    vectors = torch.nn.functional.normalize(torch.randn(n_img, d, generator=gen), dim=-1)
    patches = vectors[:, None].expand(n_img, 4, d).clone()
    owner = [i for i in range(n_img) for _ in range(1 + i % 3)]
    captions = TextFeatures(
        vectors[owner], patches[owner][:, :2], torch.ones(len(owner), 2, dtype=torch.bool)
    )
    gallery = gallery_from_features(
        [str(i) for i in range(n_img)],
        ImageFeatures(vectors, patches, grid),
        captions,
        texts=[f"c{c}" for c in range(len(owner))],
        caption_image=owner,
    )
    engine = SearchEngine(gallery, None, EngineConfig(device="cpu"))
    modes: tuple[Rerank, ...] = ("none", "ftf", "exhaustive")
    for mode in modes:
        report = evaluate(engine, mode, recall_k=5).report
        assert report.mR == pytest.approx(100.0), mode
        some = evaluate(engine, mode, 5, caption_queries=np.array([0, 7, 20]), image_queries=np.array([3, 9]))
        assert some.report.mR == pytest.approx(100.0) and (some.n_captions, some.n_images) == (3, 2)


def test_real_images_end_to_end(tiny_encoder: ClipEncoder) -> None:
    dataset_json = require_shared("rs-real/dataset.json")
    ds = load_dataset(dataset_json)
    assert len(ds.images) == 60 and len(ds.captions) == 300
    gallery = embed_dataset(tiny_encoder, ds)  # decodes every JPEG and TIFF, encodes every caption
    assert gallery.vectors.shape == (60, tiny_encoder.dim)
    assert gallery.captions is not None and gallery.captions.mask.any(axis=1).all()
    engine = SearchEngine(gallery, tiny_encoder, EngineConfig(device="cpu"))
    result = evaluate(engine, "ftf", recall_k=20)
    values = result.as_dict()
    assert all(math.isfinite(values[key]) for key in ("mR", "t2i_r1", "i2t_r10", "ms_per_query"))
    hits = engine.search(["many buildings and green trees are around a playground"], QueryOptions(k=5))[
        0
    ].hits
    assert len(hits) == 5 and all(h.id.startswith(("rsicd_", "ucm_")) for h in hits)


def _gallery_with_repeated_strings(seed: int = 0) -> Gallery:
    """30 images, 5 captions each drawn from 12 strings; copies of a string share their features."""
    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    n_img, n_str, d = 30, 12, 8
    vectors = torch.nn.functional.normalize(torch.randn(n_img, d, generator=gen), dim=-1)
    patches = torch.nn.functional.normalize(torch.randn(n_img, 4, d, generator=gen), dim=-1)
    string_vec = torch.nn.functional.normalize(torch.randn(n_str, d, generator=gen), dim=-1)
    string_tok = torch.nn.functional.normalize(torch.randn(n_str, 3, d, generator=gen), dim=-1)
    strings = np.concatenate([rng.choice(n_str, 5, replace=False) for _ in range(n_img)])
    owner = np.repeat(np.arange(n_img), 5)
    return gallery_from_features(
        [str(i) for i in range(n_img)],
        ImageFeatures(vectors, patches, (2, 2)),
        TextFeatures(string_vec[strings], string_tok[strings], torch.ones(len(strings), 3, dtype=torch.bool)),
        texts=[f"string {s}" for s in strings],
        caption_image=owner.tolist(),
    )


def test_permute_captions_moves_every_array_together() -> None:
    g = _gallery_with_repeated_strings()
    assert g.captions is not None
    perm = np.random.default_rng(3).permutation(len(g.captions.texts))
    p = permute_captions(g, perm)
    assert p.captions is not None
    for j in (0, 17, 149):
        i = perm[j]
        assert p.captions.texts[j] == g.captions.texts[i]
        assert p.captions.image_index[j] == g.captions.image_index[i]
        np.testing.assert_array_equal(p.captions.tokens[j], g.captions.tokens[i])
    with pytest.raises(InvalidInputError, match="permutation"):
        permute_captions(g, np.zeros(150, np.int64))


def test_mean_over_caption_orders_is_the_tie_aware_expectation() -> None:
    # Independent expectation: the closed form over the full coarse score matrix (rsir.model.metrics),
    # against the engine's i2t searches over 300 random storage orders of the same captions.
    g = _gallery_with_repeated_strings()
    assert g.captions is not None

    def engine(h: Gallery) -> SearchEngine:
        return SearchEngine(h, None, EngineConfig(device="cpu"))

    spread = evaluate_caption_orders(g, engine, "none", 300)
    # The engine's copies of a string tie exactly...
    opts = QueryOptions(k=10, rerank="none", target="captions")
    for r in engine(g).search(g.image_features(np.arange(len(g))), [opts] * len(g)):
        by_text: dict[str, set[float]] = {}
        for hit in r.hits:
            by_text.setdefault(g.captions.texts[hit.index], set()).add(hit.score)
        assert all(len(v) == 1 for v in by_text.values())
    # ...so score each string once and copy it (a GEMM over repeated columns need not round alike).
    first = np.array([g.captions.texts.index(t) for t in g.captions.texts])
    scores = (np.asarray(g.vectors) @ np.asarray(g.captions.vectors).T)[:, first]
    relevant = g.captions.image_index[None, :] == np.arange(len(g))[:, None]
    want = 100 * tie_aware_hits(scores, relevant).mean(axis=0)
    got = [spread.mean[f"i2t_r{K}"] for K in (1, 5, 10)]
    # one order's i2t R@K has a spread of a few points over 30 queries; 300 orders: SE ~0.2
    np.testing.assert_allclose(got, want, atol=1.0)
    assert any(spread.sd[f"i2t_r{K}"] > 0 for K in (1, 5, 10))  # the order matters for i2t...
    assert all(spread.sd[f"t2i_r{K}"] == 0 for K in (1, 5, 10))  # ...and not for t2i
    with pytest.raises(InvalidInputError, match="orders"):
        evaluate_caption_orders(g, engine, "none", 0)


def test_rsir_eval_tie_orders(tmp_path: Path) -> None:
    dataset = _tiny_dataset(tmp_path)
    out = _run_eval("--dataset", str(dataset), "--rerank", "ftf", "--recall-k", "5", "--tie-orders", "3")
    spread = out["caption_orders"]
    assert isinstance(spread, dict) and spread["n_orders"] == 3
    assert spread["mean"]["t2i_r1"] == pytest.approx(out["t2i_r1"]) and spread["sd"]["t2i_r1"] == 0
    result = CliRunner().invoke(app, ["eval", "--index", str(tmp_path), "--tie-orders", "2"])
    assert result.exit_code == 2 and "not with --index" in result.output


def test_rsir_eval_dtype_reaches_the_engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dataset = _tiny_dataset(tmp_path)
    seen: list[torch.dtype] = []
    original = SearchEngine.__init__

    def spy(self: SearchEngine, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        seen.append(self.dtype)

    monkeypatch.setattr(SearchEngine, "__init__", spy)
    half = _run_eval("--dataset", str(dataset), "--rerank", "ftf", "--dtype", "bfloat16")
    assert seen == [torch.bfloat16]
    assert half["t2i_r5"] == half["t2i_r10"] == 100.0  # 5 images: as in float32, every caption's image
    bad = CliRunner().invoke(app, ["eval", "--dataset", str(dataset), "--dtype", "fp8"])
    assert bad.exit_code == 2 and "fp8" in bad.output and "bfloat16" in bad.output


def test_rsir_eval_captionless_flag_counts_or_skips_an_image_without_captions(tmp_path: Path) -> None:
    """Three test images, one with no caption: as a miss (the seeds' convention) it adds a zero to
    the i2t average over 3 images; skipped, the average is over the other 2, so miss = skip * 2/3."""
    (tmp_path / "images").mkdir()
    entries = []
    for i, img in enumerate(random_images(3, seed=9, size=(64, 64))):
        img.save(tmp_path / "images" / f"t{i}.png")
        sentences = [] if i == 1 else [{"raw": f"{i} boats beside pier {i} ."}, {"raw": f"tank {i} ."}]
        entries.append({"filename": f"t{i}.png", "split": "test", "sentences": sentences})
    dataset = tmp_path / "dataset.json"
    dataset.write_text(json.dumps({"dataset": "holes", "images": entries}))
    miss = _run_eval("--dataset", str(dataset), "--rerank", "none")
    skip = _run_eval("--dataset", str(dataset), "--rerank", "none", "--captionless", "skip")
    assert miss["captionless_images"] == "1 (miss)" and skip["captionless_images"] == "1 (skip)"
    for key in ("i2t_r1", "i2t_r5", "i2t_r10"):
        assert abs(float(miss[key]) - float(skip[key]) * 2 / 3) < 1e-9, key  # type: ignore[arg-type]
    assert float(skip["i2t_r10"]) == 100.0  # type: ignore[arg-type]  # 4 captions: all in any top 10
    assert miss["t2i_r1"] == skip["t2i_r1"]
