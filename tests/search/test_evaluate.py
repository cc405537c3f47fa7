"""Evaluation end to end: `rsir eval --json` on tiny datasets, a perfect-retrieval case, real images."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from typer.testing import CliRunner

from model.datasets import load_dataset
from model.encoders import ClipEncoder
from model.features import ImageFeatures, TextFeatures
from rsir.cli import app
from search.engine import EngineConfig, RerankMode, SearchEngine
from search.evaluate import embed_dataset, evaluate
from search.gallery import gallery_from_features
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
    assert result.exit_code == 2 and "must be one of none, ftf, local, exhaustive" in result.output


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
    modes: tuple[RerankMode, ...] = ("none", "ftf", "exhaustive")
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
    hits = engine.search_text("many buildings and green trees are around a playground", k=5).hits
    assert len(hits) == 5 and all(h.id.startswith(("rsicd_", "ucm_")) for h in hits)
