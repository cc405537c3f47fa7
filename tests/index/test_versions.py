"""Index directories: round trips in both token codecs, refusal of incomplete or mismatched ones."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rsir.index.gallery import Gallery, gallery_from_features
from rsir.index.tokens import Codec, dequantize_int8, quantize_int8
from rsir.index.versions import IndexFormatError, Manifest, load_gallery, save_gallery
from rsir.model.errors import InvalidInputError
from rsir.model.features import ImageFeatures, TextFeatures
from rsir.search.engine import EngineConfig, QueryOptions, SearchEngine

ENCODER = {"arch": "a", "checkpoint_sha256": "abc", "dim": 16, "grid": [2, 3]}


def _gallery() -> Gallery:
    gen = torch.Generator().manual_seed(4)
    n, nc, d = 30, 60, 16
    images = ImageFeatures(
        F.normalize(torch.randn(n, d, generator=gen), dim=-1),
        F.normalize(torch.randn(n, 6, d, generator=gen), dim=-1),
        (2, 3),
    )
    mask = torch.arange(5)[None] < torch.randint(1, 6, (nc, 1), generator=gen)
    texts = TextFeatures(
        F.normalize(torch.randn(nc, d, generator=gen), dim=-1),
        F.normalize(torch.randn(nc, 5, d, generator=gen), dim=-1) * mask[..., None],
        mask,
    )
    return gallery_from_features(
        [f"i{i}.png" for i in range(n)],
        images,
        texts,
        [f"t{c}" for c in range(nc)],
        [c % n for c in range(nc)],
    )


def _manifest(g: Gallery, codec: Codec) -> Manifest:
    return Manifest(
        encoder=ENCODER,
        n_images=len(g),
        n_captions=60,
        token_codec=codec,
        dim=16,
        grid=(2, 3),
    )


def test_int8_codec_error_is_bounded_by_half_a_step() -> None:
    x = np.random.default_rng(0).normal(size=(7, 5, 16)).astype(np.float32)
    codes, scale = quantize_int8(x)
    err = np.abs(dequantize_int8(codes, scale) - x)
    step = np.abs(x).max(-1, keepdims=True) / 127
    assert np.all(err <= step * 0.5 + 1e-3 * step + 1e-7)
    assert quantize_int8(np.zeros((1, 1, 4)))[1][0, 0] == 0


@pytest.mark.parametrize("codec", ["fp16", "int8"])
def test_round_trip_searches_like_the_in_memory_gallery(tmp_path: Path, codec: Codec) -> None:
    g = _gallery()
    save_gallery(g, tmp_path / "v1", _manifest(g, codec))
    loaded, manifest = load_gallery(tmp_path / "v1", expect_encoder=ENCODER)
    assert manifest.token_codec == codec and loaded.ids == g.ids and loaded.grid == (2, 3)
    assert isinstance(np.load(tmp_path / "v1" / "image_vectors.npy", mmap_mode="r"), np.ndarray)
    cfg = EngineConfig(device="cpu")
    queries = g.caption_features(np.arange(10))
    a = SearchEngine(g, None, cfg).search(queries, QueryOptions(k=5, recall_k=20))
    b = SearchEngine(loaded, None, cfg).search(queries, QueryOptions(k=5, recall_k=20))
    for ra, rb in zip(a, b, strict=True):
        if codec == "fp16":
            assert [h.index for h in ra.hits] == [h.index for h in rb.hits]
        np.testing.assert_allclose([h.score for h in ra.hits], [h.score for h in rb.hits], atol=0.02)
    assert loaded.captions is not None and loaded.captions.texts == g.captions.texts  # type: ignore[union-attr]


def test_incomplete_or_mismatched_index_is_refused(tmp_path: Path) -> None:
    g = _gallery()
    save_gallery(g, tmp_path / "v1", _manifest(g, "fp16"))
    with pytest.raises(IndexFormatError, match="checkpoint_sha256='abc' but the running encoder"):
        load_gallery(tmp_path / "v1", expect_encoder={**ENCODER, "checkpoint_sha256": "zzz"})
    (tmp_path / "v1" / "manifest.json").unlink()
    with pytest.raises(IndexFormatError, match=r"no manifest\.json"):
        load_gallery(tmp_path / "v1")


def test_npy_appender_and_read_rows_round_trip_with_padding(tmp_path: Path) -> None:
    from rsir.index.tokens import NpyAppender, npy_shape, read_rows

    rng = np.random.default_rng(0)
    parts = [rng.normal(size=(3, 2, 4)), rng.normal(size=(0, 1, 4)), rng.normal(size=(4, 5, 4))]
    writer = NpyAppender(tmp_path / "a.npy", np.float32, (7, 5, 4))
    for p in parts:
        writer.append(p)
    writer.close()
    expected = np.zeros((7, 5, 4), np.float32)
    expected[:3, :2], expected[3:] = parts[0], parts[2]
    np.testing.assert_array_equal(np.load(tmp_path / "a.npy"), expected)
    np.testing.assert_array_equal(read_rows(tmp_path / "a.npy", 2, 6), expected[2:6])
    assert npy_shape(tmp_path / "a.npy") == (7, 5, 4)
    np.save(tmp_path / "e.npy", np.zeros((0, 0, 4), np.float16))
    assert read_rows(tmp_path / "e.npy", 0, 5).shape == (0, 0, 4)
    short = NpyAppender(tmp_path / "s.npy", np.float32, (2, 4))
    short.append(np.zeros((1, 4)))
    with pytest.raises(InvalidInputError, match="1 rows written, 2 declared"):
        short.close()
