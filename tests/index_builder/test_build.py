"""Builds end to end: contents against the encoder itself, bad files, resume, add/delete, Ray."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rsir.index.originals import read_sources
from rsir.index.versions import CURRENT, list_versions, load_index, switch_current
from rsir.index_builder.build import BuildInterruptedError, add, build, delete
from rsir.index_builder.config import BuildConfig
from rsir.index_builder.metadata import read_metadata_table
from rsir.model.encoders import ClipEncoder
from rsir.model.errors import InvalidInputError
from rsir.search.engine import EngineConfig, QueryOptions, SearchEngine
from tests.index_builder.conftest import add_bad_files, write_folder, write_tar_shards

SMALL = BuildConfig(shard_size=4, batch_size=3, workers=0, progress=False)


def _arrays(root: Path) -> dict[str, np.ndarray]:
    g = load_index(root).gallery
    out = {"vectors": np.asarray(g.vectors), "patches": np.asarray(g.patches[:], np.float32)}
    if g.captions is not None:
        out |= {"cv": np.asarray(g.captions.vectors), "ct": np.asarray(g.captions.tokens[:], np.float32)}
    return out


def test_folder_build_matches_the_encoder_and_reports_bad_files(
    tmp_path: Path, tiny_encoder: ClipEncoder
) -> None:
    archive = tmp_path / "archive"
    ids = write_folder(archive, 10)
    reasons = add_bad_files(archive)
    report = build(
        archive, tmp_path / "idx", tiny_encoder, BuildConfig(shard_size=4, batch_size=3, workers=2)
    )
    assert {s["id"]: s["reason"] for s in report.skipped}.keys() == reasons.keys()
    for row in report.skipped:
        assert reasons[row["id"]] in row["reason"]
    version = load_index(tmp_path / "idx", tiny_encoder.describe())
    assert version.folder.name == "v0001" and (tmp_path / "idx" / CURRENT).read_text().strip() == "v0001"
    assert json.loads((version.folder / "skipped.json").read_text()) == report.skipped
    assert version.gallery.ids == ids and version.manifest.n_images == 10
    # Independent expectation: the encoder run directly on the decoded files.
    direct = tiny_encoder.encode_images([Image.open(archive / i).convert("RGB") for i in ids])
    np.testing.assert_allclose(version.gallery.vectors, direct.vectors.numpy(), atol=1e-5)
    np.testing.assert_allclose(
        np.asarray(version.gallery.patches[:], np.float32), direct.patches.numpy(), atol=2e-3
    )
    # The engine over the directory ranks like an engine built in memory from the direct features.
    engine = SearchEngine.from_index(version, tiny_encoder, EngineConfig(device="cpu"))
    hits = engine.search(direct, QueryOptions(k=1))
    assert [r.hits[0].id for r in hits] == ids


def test_tar_shards_build_with_captions_and_metadata(tmp_path: Path, tiny_encoder: ClipEncoder) -> None:
    captions = write_tar_shards(tmp_path / "tars", n=9, per_shard=4)
    (tmp_path / "meta.jsonl").write_text(
        json.dumps({"id": "tile0001", "sensor": "S2", "lon_min": 3.5}) + "\n"
    )
    build(tmp_path / "tars", tmp_path / "idx", tiny_encoder, SMALL, metadata=tmp_path / "meta.jsonl")
    version = load_index(tmp_path / "idx")
    store = version.gallery.captions
    assert store is not None
    assert store.texts == [c for key in sorted(captions) for c in captions[key]]
    owners = [version.gallery.ids[i] for i in store.image_index]
    assert owners == [key for key in sorted(captions) for _ in captions[key]]
    direct = tiny_encoder.encode_texts(store.texts)
    np.testing.assert_allclose(store.vectors, direct.vectors.numpy(), atol=1e-5)
    table = {r["id"]: r for r in read_metadata_table(version.folder / "metadata.parquet").to_pylist()}
    assert list(table) == version.gallery.ids
    assert table["tile0001"]["sensor"] == "S2" and table["tile0001"]["lon_min"] == 3.5
    assert table["tile0000"]["sensor"] == "synth"  # from the shard's own .json side file
    engine = SearchEngine.from_index(version, tiny_encoder, EngineConfig(device="cpu"))
    found = engine.search([store.texts[5]], QueryOptions(k=len(version.gallery), rerank="ftf"))[0]
    assert {h.id for h in found.hits} == set(version.gallery.ids)


def test_interrupted_build_resumes_to_the_same_index(tmp_path: Path, tiny_encoder: ClipEncoder) -> None:
    archive = tmp_path / "archive"
    write_folder(archive, 13)
    add_bad_files(archive)
    build(archive, tmp_path / "whole", tiny_encoder, SMALL)
    stopped = BuildConfig(shard_size=4, batch_size=3, workers=0, progress=False, stop_after_shards=2)
    with pytest.raises(BuildInterruptedError):
        build(archive, tmp_path / "resumed", tiny_encoder, stopped)
    assert not list_versions(tmp_path / "resumed")  # nothing published by the stopped job
    report = build(archive, tmp_path / "resumed", tiny_encoder, SMALL)
    assert report.shards_reused == 2
    whole, resumed = _arrays(tmp_path / "whole"), _arrays(tmp_path / "resumed")
    for name in whole:
        np.testing.assert_array_equal(whole[name], resumed[name])
    assert not (tmp_path / "resumed" / ".work").exists() or not any(
        (tmp_path / "resumed" / ".work").iterdir()
    )


@pytest.mark.slow
def test_kill_9_mid_build_then_rerun_gives_the_uninterrupted_index(tmp_path: Path) -> None:
    archive = tmp_path / "archive"
    write_folder(archive, 24)
    cmd = [
        sys.executable, "-m", "rsir.cli", "build-index", "--archive", str(archive),
        "--model", "rsir-vit-tiny", "--device", "cpu",
        "--shard-size", "4", "--batch-size", "2", "--workers", "0",
    ]  # fmt: skip
    subprocess.run([*cmd, "--out", str(tmp_path / "whole")], check=True, capture_output=True)
    proc = subprocess.Popen([*cmd, "--out", str(tmp_path / "killed")], stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not list((tmp_path / "killed").glob(".work/*/shards/00001/DONE")):
        assert proc.poll() is None and time.monotonic() < deadline, "the build ended before it was killed"
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not list_versions(tmp_path / "killed")
    out = subprocess.run(
        [*cmd, "--out", str(tmp_path / "killed")], check=True, capture_output=True, text=True
    )
    assert "embedded 16 images" in out.stdout and "2 shards reused" in out.stdout
    whole, killed = _arrays(tmp_path / "whole"), _arrays(tmp_path / "killed")
    for name in whole:
        np.testing.assert_array_equal(whole[name], killed[name])


@pytest.mark.slow
def test_cli_exit_status_counts_skipped_files(tmp_path: Path) -> None:
    archive = tmp_path / "archive"
    write_folder(archive, 2)
    add_bad_files(archive)
    cmd = [
        sys.executable,
        "-m",
        "rsir.cli",
        "build-index",
        "--archive",
        str(archive),
        "--out",
        str(tmp_path / "i"),
    ]
    done = subprocess.run([*cmd, "--device", "cpu", "--workers", "0"], capture_output=True, text=True)
    assert done.returncode == 3, done.stderr
    assert "4 files skipped" in done.stderr and "empty.png" in done.stderr


def test_add_and_delete_publish_new_versions_and_keep_old_ones(
    tmp_path: Path, tiny_encoder: ClipEncoder
) -> None:
    root = tmp_path / "idx"
    first_ids = write_folder(tmp_path / "a", 6, seed=1, prefix="a")
    build(tmp_path / "a", root, tiny_encoder, SMALL)
    write_folder(tmp_path / "b", 5, seed=2, prefix="b")
    shutil.copytree(tmp_path / "a", tmp_path / "b", dirs_exist_ok=True)  # already-indexed files are ignored
    report = add(tmp_path / "b", root, tiny_encoder, SMALL)
    assert report.n_new == 5 and report.version.name == "v0002"
    v1, v2 = load_index(root / "v0001"), load_index(root)
    assert v2.gallery.ids[:6] == first_ids == v1.gallery.ids and len(v2.gallery) == 11
    np.testing.assert_array_equal(v2.gallery.vectors[:6], v1.gallery.vectors)
    assert v2.image_recall is not None and v2.image_recall.size == 11

    engine = SearchEngine.from_index(v2, tiny_encoder, EngineConfig(device="cpu"))
    queries = v2.gallery.image_features(np.arange(11))
    assert [r.hits[0].id for r in engine.search(queries, QueryOptions(k=1))] == v2.gallery.ids

    gone = [v2.gallery.ids[0], v2.gallery.ids[8]]
    delete(root, gone)
    v3 = load_index(root)
    assert v3.folder.name == "v0003" and sorted(v3.deleted.tolist()) == [0, 8]
    engine3 = SearchEngine.from_index(v3, tiny_encoder, EngineConfig(device="cpu"))
    for result in engine3.search(queries, QueryOptions(k=11)):
        assert {h.id for h in result.hits} == set(v2.gallery.ids) - set(gone)
    texts = tiny_encoder.encode_texts(["a scene", "many planes"])
    for mode in ("none", "ftf", "exhaustive"):
        for result in engine3.search(texts, QueryOptions(k=11, rerank=mode)):
            assert len(result.hits) == 9 and not {h.id for h in result.hits} & set(gone)
    # The old version still serves the deleted images until CURRENT is switched back to it.
    switch_current(root, "v0002")
    assert load_index(root).deleted.size == 0
    with pytest.raises(InvalidInputError, match="not in v0002"):
        delete(root, ["nope.png"])
    with pytest.raises(InvalidInputError, match="invalid FAISS factory"):
        build(
            tmp_path / "b", tmp_path / "other", tiny_encoder, dataclasses.replace(SMALL, factory="IVFx,Flat")
        )
    assert not (tmp_path / "other" / ".work").exists()  # refused before any embedding
    with pytest.raises(InvalidInputError, match="already holds"):
        build(tmp_path / "a", root, tiny_encoder, SMALL)


def test_int8_token_codec_build_searches_like_fp16(tmp_path: Path, tiny_encoder: ClipEncoder) -> None:
    write_tar_shards(tmp_path / "tars", n=8, per_shard=8)
    build(tmp_path / "tars", tmp_path / "f", tiny_encoder, SMALL)
    int8 = BuildConfig(shard_size=4, batch_size=3, workers=0, progress=False, token_codec="int8")
    build(tmp_path / "tars", tmp_path / "q", tiny_encoder, int8)
    assert (tmp_path / "q" / "v0001" / "patches.int8.npy").is_file()
    a, b = _arrays(tmp_path / "f"), _arrays(tmp_path / "q")
    np.testing.assert_allclose(a["patches"], b["patches"], atol=np.abs(a["patches"]).max() / 127)


@pytest.mark.slow
def test_ray_engine_gives_the_same_vectors_as_the_local_engine(
    tmp_path: Path, tiny_encoder: ClipEncoder, capsys: pytest.CaptureFixture[str]
) -> None:
    ray = pytest.importorskip("ray")
    write_tar_shards(tmp_path / "tars", n=10, per_shard=5)
    (tmp_path / "tars" / "broken.png").write_bytes(b"")  # ignored: a folder of shards reads only shards
    build(tmp_path / "tars", tmp_path / "local", tiny_encoder, SMALL)
    on_ray = BuildConfig(
        shard_size=4, batch_size=3, workers=0, progress=False, engine="ray", ray_actors=1, progress_log_s=0.0
    )
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    capsys.readouterr()
    try:
        build(tmp_path / "tars", tmp_path / "ray", tiny_encoder, on_ray)
    finally:
        ray.shutdown()
    local, remote = _arrays(tmp_path / "local"), _arrays(tmp_path / "ray")
    for name in local:
        np.testing.assert_allclose(local[name], remote[name], atol=1e-6)
    # The actors record each original's size and hash as the local engine does; progress is logged.
    assert read_sources(tmp_path / "local" / "v0001") == read_sources(tmp_path / "ray" / "v0001")
    lines = [json.loads(x) for x in capsys.readouterr().err.splitlines() if '"build_progress"' in x]
    assert lines and (lines[-1]["done"], lines[-1]["total"], lines[-1]["skipped"]) == (10, 10, 0)


def test_geotiff_tiles_are_indexed_and_cli_evaluates_a_built_index(tmp_path: Path) -> None:
    import tifffile
    from typer.testing import CliRunner

    from rsir.cli import app

    captions = write_tar_shards(tmp_path / "tars", n=6, per_shard=6)
    rng = np.random.default_rng(3)
    tile = rng.integers(200, 4000, (80, 80, 4), dtype=np.uint16)  # 16-bit, 4 bands
    tifffile.imwrite(tmp_path / "tile.tif", tile, photometric="minisblack", planarconfig="contig")
    with tarfile.open(tmp_path / "tars" / "shard-009.tar", "w") as tar:
        for name, data in (("geo.tif", (tmp_path / "tile.tif").read_bytes()), ("geo.txt", b"a bright tile")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    runner = CliRunner()
    common = ["--model", "test-vit-tiny", "--device", "cpu"]
    archive = ["--archive", str(tmp_path / "tars"), "--out", str(tmp_path / "i")]
    built = runner.invoke(app, ["build-index", *archive, *common, "--workers", "0"])
    assert built.exit_code == 0, built.output
    assert "geo" in load_index(tmp_path / "i").gallery.ids
    done = runner.invoke(app, ["eval", "--index", str(tmp_path / "i"), *common, "--rerank", "ftf", "--json"])
    assert done.exit_code == 0, done.output
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["n_images"] == 7 and result["n_captions"] == sum(map(len, captions.values())) + 1
    assert 0 <= result["mR"] <= 100 and result["K"] == 100
