"""What a server does at start (and at every index switch) is bounded by what the build stored: SGPD's
clusters come from the version instead of a k-means per load, and the vectors are memory-mapped."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import faiss
import numpy as np
import pytest

from rsir.index.extras import SGPD_FILES
from rsir.index.sgpd import SGPDRecall
from rsir.index.versions import load_index, resolve_version
from rsir.index_builder.build import build
from rsir.index_builder.config import BuildConfig
from rsir.model.encoders import ClipEncoder
from tests.index_builder.conftest import write_tar_shards

SMALL = BuildConfig(shard_size=8, batch_size=4, workers=0, progress=False)


@pytest.fixture
def version(tmp_path: Path, tiny_encoder: ClipEncoder) -> Path:
    write_tar_shards(tmp_path / "tars", n=24, per_shard=8)  # with captions: both sides
    build(tmp_path / "tars", tmp_path / "idx", tiny_encoder, SMALL)
    return resolve_version(tmp_path / "idx")


class _NoKmeans:
    def __init__(self, *args: object, **kwargs: object) -> None:
        raise AssertionError("k-means ran while loading a version that stores its SGPD clusters")


def test_the_build_stores_sgpd_clusters_and_loading_uses_them(
    version: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for prefix in ("", "caption_"):
        for name in SGPD_FILES:
            assert (version / f"{prefix}{name}").is_file()
    files = {"images": "image_vectors.npy", "captions": "caption_vectors.npy"}
    expected = {side: SGPDRecall(np.load(version / file), seed=0) for side, file in files.items()}
    monkeypatch.setattr(faiss, "Kmeans", _NoKmeans)
    loaded = load_index(version)
    queries = np.asarray(loaded.gallery.vectors[:5], np.float32)
    for side, fresh in expected.items():
        sgpd = loaded.extras[side].sgpd
        assert sgpd is not None
        np.testing.assert_array_equal(sgpd.assignments, fresh.assignments)
        np.testing.assert_array_equal(sgpd.centroids, fresh.centroids)
        got, want = sgpd.search(queries, 5), fresh.search(queries, 5)
        np.testing.assert_array_equal(got[1], want[1])


def test_a_version_built_before_still_loads_by_computing_them(
    version: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for prefix in ("", "caption_"):
        for name in SGPD_FILES:
            (version / f"{prefix}{name}").unlink()
    calls = []
    real = faiss.Kmeans

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(faiss, "Kmeans", counting)
    loaded = load_index(version)
    assert len(calls) == 2 and loaded.extras["images"].sgpd is not None


def test_stored_clusters_that_do_not_fit_are_refused(version: Path) -> None:
    np.save(version / "sgpd_assignments.npy", np.zeros(3, np.int32))
    with pytest.raises(Exception, match="do not fit"):
        load_index(version)


def test_vectors_are_memory_mapped(version: Path) -> None:
    loaded = load_index(version)
    assert isinstance(loaded.gallery.vectors, np.memmap)
    assert loaded.gallery.captions is not None and isinstance(loaded.gallery.captions.vectors, np.memmap)
