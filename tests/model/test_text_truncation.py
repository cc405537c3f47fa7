"""The text tower run on the batch's real length gives what the whole context gives (issue 24 item 3).

Each case encodes the same ids twice through :func:`rsir.model.towers.text_features`: truncated and on the
full context (open_clip's own length), and compares the global vectors, the word tokens and masks,
and what retrieval makes of them (the top-k over a bank of vectors, and the FTF scores).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from rsir.model import towers
from rsir.model.encoders import DEFAULT_ARCH, DEFAULT_WEIGHTS, ClipEncoder, EncoderConfig, build_model
from rsir.model.errors import InvalidInputError
from rsir.model.ftf import text_to_image
from tests.conftest import TINY_ARCH

LONG = "many buildings and green trees are around a playground with a red track beside a river ."
SHORT = "a"
# Longer than any context here: the tokenizer cuts it and keeps the end token in the last slot.
OVERFLOW = " ".join(["two white planes are parked beside the long grey terminal building ."] * 12)
ATOL, RTOL = 2e-6, 1e-5


def _both(enc: ClipEncoder, ids: torch.Tensor) -> tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]:
    specials = enc._special_ids
    with torch.inference_mode():
        cut = towers.text_features(enc.model, ids, specials, truncate=True)
        full = towers.text_features(enc.model, ids, specials, truncate=False)
    return cut, full


def _assert_same_retrieval(cut: tuple[torch.Tensor, ...], full: tuple[torch.Tensor, ...]) -> None:
    (v1, w1, m1), (v0, w0, m0) = cut, full
    torch.testing.assert_close(v1, v0, atol=ATOL, rtol=RTOL)
    assert torch.equal(m1, m0)
    torch.testing.assert_close(w1, w0, atol=ATOL, rtol=RTOL)
    gen = torch.Generator().manual_seed(3)
    d = v0.shape[1]
    bank = F.normalize(torch.randn(500, d, generator=gen) + v0.mean(0), dim=-1)
    assert torch.equal((v1 @ bank.T).topk(20).indices, (v0 @ bank.T).topk(20).indices)
    patches = F.normalize(torch.randn(v0.shape[0], 30, 9, d, generator=gen), dim=-1)
    f1 = text_to_image(w1, m1, patches).fine
    f0 = text_to_image(w0, m0, patches).fine
    torch.testing.assert_close(f1, f0, atol=ATOL, rtol=RTOL)
    assert torch.equal(f1.topk(10).indices, f0.topk(10).indices)


def _check_encoder(enc: ClipEncoder) -> None:
    assert towers.truncatable(enc.model)
    ids = enc.tokenize([LONG, SHORT])
    # the batch's real length is the long text's: start + words + end, far below the context
    assert towers.real_length(enc.model, ids) == int((ids[0] != 0).sum()) < enc.context_length
    _assert_same_retrieval(*_both(enc, ids))
    # a text at the context limit: the real length is the whole context, nothing may be cut
    ids = enc.tokenize([OVERFLOW, SHORT])
    assert int(ids[0, -1]) == enc.tokenizer.eot_token_id  # type: ignore[attr-defined]
    assert towers.real_length(enc.model, ids) == enc.context_length
    _assert_same_retrieval(*_both(enc, ids))
    # alone, the short text runs on 3 positions and still equals its row in a full-context batch
    alone = towers.text_features(enc.model, enc.tokenize([SHORT]), enc._special_ids, truncate=True)
    batch = _both(enc, enc.tokenize([LONG, SHORT]))[1]
    torch.testing.assert_close(alone[0][0], batch[0][1], atol=ATOL, rtol=RTOL)
    torch.testing.assert_close(alone[1][0, :1], batch[1][1, :1], atol=ATOL, rtol=RTOL)


@pytest.fixture(scope="module")
def shipped() -> ClipEncoder:
    if not DEFAULT_WEIGHTS.is_file():
        pytest.skip(f"no shipped weights at {DEFAULT_WEIGHTS}")
    return ClipEncoder(EncoderConfig(arch=DEFAULT_ARCH, checkpoint=DEFAULT_WEIGHTS, device="cpu"))


def test_shipped_model_truncated_equals_full(shipped: ClipEncoder) -> None:
    _check_encoder(shipped)


@pytest.mark.slow
def test_vitb32_checkpoint_truncated_equals_full(tmp_path: Path) -> None:
    # random weights written and read back in the checkpoint format a user's RemoteCLIP file has
    arch = "ViT-B-32-quickgelu"
    state = {k: v.contiguous() for k, v in build_model(arch, seed=1234).state_dict().items()}
    save_file(state, str(tmp_path / "vitb32.safetensors"))
    enc = ClipEncoder(EncoderConfig(arch=arch, checkpoint=tmp_path / "vitb32.safetensors", device="cpu"))
    assert enc.context_length == 77
    _check_encoder(enc)


def test_padding_id_inside_a_text_does_not_cut_the_end_token() -> None:
    # CLIP's id 0 is both the padding and the BPE piece "!": counting non-zero ids would stop one
    # position short of this text's end token, and argmax pooling would then read a word.
    torch.manual_seed(0)
    enc = ClipEncoder(EncoderConfig(arch=TINY_ARCH, device="cpu"), model=build_model(TINY_ARCH))
    sot, eot = enc._special_ids
    ids = torch.zeros(2, enc.context_length, dtype=torch.long)
    ids[0, :6] = torch.tensor([sot, 320, 0, 321, 322, eot])
    ids[1, :3] = torch.tensor([sot, 320, eot])
    assert towers.real_length(enc.model, ids) == 6
    cut, full = _both(enc, ids)
    torch.testing.assert_close(cut[0], full[0], atol=ATOL, rtol=RTOL)
    torch.testing.assert_close(cut[1], full[1], atol=ATOL, rtol=RTOL)


def _variant(change: str) -> nn.Module:
    torch.manual_seed(0)
    model: Any = build_model(TINY_ARCH).eval()
    if change == "bidirectional":
        model.attn_mask = None
    else:
        model.text_pool_type = change
    out: nn.Module = model
    return out


@pytest.mark.parametrize("change", ["bidirectional", "last"])
def test_towers_where_padding_matters_run_the_whole_context(change: str) -> None:
    model = _variant(change)
    enc = ClipEncoder(EncoderConfig(arch=TINY_ARCH, device="cpu"), model=model)
    assert not towers.truncatable(model)
    ids = enc.tokenize([LONG, SHORT])
    with torch.inference_mode():
        served = enc.encode_token_ids(ids)
        full = towers.text_features(model, ids, enc._special_ids, truncate=False)
        cut = towers.text_features(model, ids, enc._special_ids, truncate=True)
    torch.testing.assert_close(served.vectors, full[0], atol=0, rtol=0)
    # the guard is needed: truncating such a tower changes its output
    assert not torch.allclose(cut[0], full[0], atol=1e-3)


def test_bfloat16_text_tower_is_a_choice_and_images_are_unchanged(shipped: ClipEncoder) -> None:
    bf16 = ClipEncoder(
        EncoderConfig(arch=DEFAULT_ARCH, checkpoint=DEFAULT_WEIGHTS, device="cpu", text_dtype="bfloat16")
    )
    assert shipped.text_dtype == torch.float32 and bf16.text_dtype == torch.bfloat16
    texts = [LONG, SHORT]
    want, got = shipped.encode_texts(texts), bf16.encode_texts(texts)
    assert got.vectors.dtype == got.tokens.dtype == torch.float32
    # bfloat16 keeps 8 bits: unit vectors move by about 1e-3, not by their size
    torch.testing.assert_close(got.vectors, want.vectors, atol=2e-2, rtol=0)
    assert float((got.vectors - want.vectors).abs().max()) > 0
    torch.testing.assert_close(got.tokens, want.tokens, atol=5e-2, rtol=0)
    pixels = torch.rand(2, 3, 224, 224)
    assert torch.equal(bf16.encode_pixels(pixels).patches, shipped.encode_pixels(pixels).patches)
    with pytest.raises(InvalidInputError, match="text_dtype must be one of auto, float32, bfloat16"):
        EncoderConfig(text_dtype="float64")
