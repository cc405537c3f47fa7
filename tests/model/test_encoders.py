"""The encoder wrapper against open_clip's own outputs, and checkpoint round trips in every format."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from rsir.model import towers
from rsir.model.encoders import ClipEncoder, EncoderConfig, build_model
from rsir.model.errors import CheckpointError, InvalidInputError, UnsupportedModelError
from rsir.model.features import TextFeatures
from tests.conftest import TINY_ARCH, random_images

ARCH = "ViT-B-32-quickgelu"
TEXTS = [
    "two ships moored beside a long pier near storage tanks .",
    "a",
    "many buildings and green trees are around a playground with a red track .",
]


@pytest.fixture(scope="module")
def vitb32() -> Any:
    torch.manual_seed(1234)
    return build_model(ARCH).eval()


def _encoder(model: nn.Module | None = None, checkpoint: Path | None = None) -> ClipEncoder:
    return ClipEncoder(EncoderConfig(arch=ARCH, checkpoint=checkpoint, device="cpu"), model=model)


def _features(enc: ClipEncoder) -> tuple[torch.Tensor, ...]:
    img = enc.encode_images(random_images(2, seed=5, size=(224, 224)))
    txt = enc.encode_texts(TEXTS)
    return img.vectors, img.patches, txt.vectors, txt.tokens, txt.mask


class _OpenAIJitLike(nn.Module):
    """Same parameter names as OpenAI's released CLIP TorchScript files, plus their three int buffers."""

    def __init__(self, clip: nn.Module) -> None:
        super().__init__()
        for name, child in clip.named_children():
            self.add_module(name, child)
        for name, param in clip.named_parameters(recurse=False):
            self.register_parameter(name, param)
        self.register_buffer("input_resolution", torch.tensor(224))
        self.register_buffer("context_length", torch.tensor(77))
        self.register_buffer("vocab_size", torch.tensor(49408))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale: Any = self.logit_scale
        out: torch.Tensor = x * scale
        return out


def _save_all_formats(model: nn.Module, root: Path) -> dict[str, Path]:
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    paths = {
        "pt": root / "plain.pt",
        "bin": root / "wrapped_ddp.bin",
        "safetensors": root / "weights.safetensors",
        "torchscript": root / "openai_jit.pt",
    }
    torch.save(state, paths["pt"])
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in state.items()}}, paths["bin"])
    save_file(state, str(paths["safetensors"]))
    traced = torch.jit.trace(_OpenAIJitLike(model), torch.ones(1))  # type: ignore[no-untyped-call]
    traced.save(str(paths["torchscript"]))
    return paths


@pytest.mark.slow
def test_every_checkpoint_format_gives_identical_features(vitb32: nn.Module, tmp_path: Path) -> None:
    reference = _features(_encoder(model=vitb32))
    for fmt, path in _save_all_formats(vitb32, tmp_path).items():
        loaded = _encoder(checkpoint=path)
        assert loaded.checkpoint_sha256 is not None and len(loaded.checkpoint_sha256) == 64
        for ref, got in zip(reference, _features(loaded), strict=True):
            assert torch.equal(ref, got), f"{fmt}: features differ after a round trip"


def test_global_and_tokens_match_open_clip(vitb32: Any) -> None:
    enc = _encoder(model=vitb32)
    images = random_images(3, seed=2, size=(240, 260))
    pixels = enc.preprocess_images(images)
    captured: dict[str, torch.Tensor] = {}
    hooks = [
        vitb32.visual.ln_post.register_forward_hook(lambda m, i, o: captured.__setitem__("ln_post", o)),
        vitb32.ln_final.register_forward_hook(lambda m, i, o: captured.__setitem__("ln_final", o)),
    ]
    try:
        with torch.no_grad():
            expected_img = F.normalize(vitb32.encode_image(pixels), dim=-1)
            ids = enc.tokenize(TEXTS)
            expected_txt = F.normalize(vitb32.encode_text(ids), dim=-1)
    finally:
        for h in hooks:
            h.remove()
    expected_patches = F.normalize(captured["ln_post"][:, 1:] @ vitb32.visual.proj, dim=-1)
    all_words = F.normalize(captured["ln_final"] @ vitb32.text_projection, dim=-1)

    img = enc.encode_images(images)
    txt = enc.encode_texts(TEXTS)
    torch.testing.assert_close(img.vectors, expected_img, atol=1e-5, rtol=1e-5)
    assert img.patches.shape == (3, 49, enc.dim) and enc.grid == (7, 7)
    torch.testing.assert_close(img.patches, expected_patches, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(txt.vectors, expected_txt, atol=1e-5, rtol=1e-5)
    for row, text in enumerate(TEXTS):
        n = int((ids[row] != 0).sum()) - 2  # minus start and end tokens
        assert int(txt.mask[row].sum()) == n and bool(txt.mask[row, :n].all())
        torch.testing.assert_close(txt.tokens[row, :n], all_words[row, 1 : 1 + n], atol=1e-5, rtol=1e-5)
        assert torch.all(txt.tokens[row, n:] == 0), f"padding of {text!r} must be zero"
    assert torch.allclose(img.vectors.norm(dim=-1), torch.ones(3))
    assert img.vectors.dtype == torch.float32  # fp32 on the CPU


def test_batching_does_not_change_features(tiny_encoder: ClipEncoder) -> None:
    texts = [f"{i} planes are parked near the terminal " * (1 + i % 3) for i in range(9)]
    batched = tiny_encoder.encode_texts(texts)  # batch_size 4: three batches of different lengths
    singles = TextFeatures.cat([tiny_encoder.encode_texts([t]) for t in texts])
    torch.testing.assert_close(batched.vectors, singles.vectors, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(batched.tokens, singles.tokens, atol=1e-5, rtol=1e-5)
    assert torch.equal(batched.mask, singles.mask)
    images = random_images(6, seed=9)
    together = tiny_encoder.encode_images(images)
    alone = torch.cat([tiny_encoder.encode_images([im]).vectors for im in images])
    torch.testing.assert_close(together.vectors, alone, atol=1e-5, rtol=1e-5)


def test_empty_inputs_rejected(tiny_encoder: ClipEncoder) -> None:
    with pytest.raises(InvalidInputError):
        tiny_encoder.encode_texts([])
    with pytest.raises(InvalidInputError):
        tiny_encoder.encode_images([])


def test_missing_and_malformed_checkpoints_name_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.safetensors"
    with pytest.raises(CheckpointError, match=r"not found: .*nope\.safetensors"):
        build_model(TINY_ARCH, missing)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"this is not a checkpoint")
    with pytest.raises(CheckpointError, match=r"garbage\.pt.*expected an open_clip/OpenAI state dict"):
        build_model(TINY_ARCH, garbage)
    wrong_suffix = tmp_path / "weights.npz"
    wrong_suffix.write_bytes(b"x")
    with pytest.raises(CheckpointError, match=r"weights\.npz.*suffix '\.npz'.*expected one of"):
        build_model(TINY_ARCH, wrong_suffix)
    not_a_dict = tmp_path / "list.pt"
    torch.save([torch.zeros(1)], not_a_dict)
    with pytest.raises(CheckpointError, match=r"list\.pt holds a list, expected .*state dict"):
        build_model(TINY_ARCH, not_a_dict)


def test_checkpoint_of_another_architecture_is_refused(vitb32: nn.Module, tmp_path: Path) -> None:
    tiny = tmp_path / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in build_model(TINY_ARCH).state_dict().items()}, str(tiny))
    with pytest.raises(CheckpointError, match=r"tiny\.safetensors does not fit this architecture"):
        build_model(ARCH, tiny)
    partial = tmp_path / "partial.pt"
    state = dict(vitb32.state_dict())
    state.pop("ln_final.weight")
    torch.save(state, partial)
    with pytest.raises(CheckpointError, match=r"1 missing keys \[ln_final\.weight\]"):
        build_model(ARCH, partial)


def test_unsupported_architectures_fail_clearly() -> None:
    with pytest.raises(UnsupportedModelError, match="unknown open_clip architecture 'no-such-model'"):
        build_model("no-such-model")
    with pytest.raises(UnsupportedModelError, match="exposes no patch tokens"):
        build_model("RN50")


def test_shipped_default_model_loads_through_the_common_loader() -> None:
    from rsir.model.encoders import DEFAULT_ARCH, DEFAULT_WEIGHTS, default_checkpoint

    if not DEFAULT_WEIGHTS.is_file():
        pytest.skip(f"no shipped weights at {DEFAULT_WEIGHTS}")
    assert default_checkpoint(DEFAULT_ARCH) == DEFAULT_WEIGHTS
    assert default_checkpoint(ARCH) is None
    assert DEFAULT_WEIGHTS.stat().st_size <= 40 * 2**20
    enc = ClipEncoder(EncoderConfig(checkpoint=DEFAULT_WEIGHTS, device="cpu"))
    assert enc.describe()["arch"] == DEFAULT_ARCH and enc.checkpoint_sha256 is not None
    txt = enc.encode_texts(["three white planes are parked on the right side of the airport ."])
    assert txt.vectors.shape == (1, enc.dim) and torch.isfinite(txt.tokens).all()


@pytest.mark.parametrize(("arch", "grid"), [("rsir-vit-tiny", 7), ("rsir-vit-tiny-p16", 14)])
def test_rsir_configs_give_their_patch_grid(arch: str, grid: int) -> None:
    # 224 px input: 32 px patches give 7 x 7 tokens, 16 px patches 14 x 14 (the finer FTF grid).
    model = build_model(arch).eval()
    with torch.no_grad():
        v, p = towers.image_features(model, torch.zeros(1, 3, 224, 224))
    assert v.shape == (1, 256)
    assert p.shape == (1, grid * grid, 256)
