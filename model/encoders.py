"""The open_clip encoder wrapper: any architecture, an optional local checkpoint, tokens included.

``encode_images`` -> :class:`ImageFeatures` (global ``[B,d]``, patches ``[B,M,d]``);
``encode_texts`` -> :class:`TextFeatures` (global ``[B,d]``, words ``[B,n,d]``, mask ``[B,n]``).
All L2-normalised in the joint space, computed in batches under ``torch.inference_mode``, fp16 on CUDA
and fp32 on CPU.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import open_clip
import structlog
import torch
from PIL import Image

from rsir.model import towers
from rsir.model.checkpoint import file_sha256, load_into
from rsir.model.errors import InvalidInputError, UnsupportedModelError
from rsir.model.features import ImageFeatures, TextFeatures

# rsir's own architectures (JSON, open_clip's config schema) live beside this module.
CONFIG_DIR = Path(__file__).parent / "configs"
# The shipped default model: trained on SynthRS by the command in BENCHMARKS.md.
DEFAULT_ARCH = "rsir-vit-tiny"
DEFAULT_WEIGHTS = Path(__file__).parent / "weights" / "rsir-vit-tiny.safetensors"

# CFITR hash heads trained on the shipped model's vectors (`rsir train-hash`); they fit no other weights.
DEFAULT_HASH_HEADS = Path(__file__).parent / "weights" / "rsir-vit-tiny.hash.safetensors"

log = structlog.get_logger(__name__)


def default_checkpoint(arch: str) -> Path | None:
    """The shipped weights for the default architecture; None (random init) for any other."""
    return DEFAULT_WEIGHTS if arch == DEFAULT_ARCH and DEFAULT_WEIGHTS.is_file() else None


def default_hash_heads(arch: str, checkpoint: Path | None) -> Path | None:
    """The shipped hash heads when the encoder runs the shipped weights (heads fit one set of weights)."""
    shipped = checkpoint is not None and Path(checkpoint).resolve() == DEFAULT_WEIGHTS.resolve()
    return DEFAULT_HASH_HEADS if arch == DEFAULT_ARCH and shipped and DEFAULT_HASH_HEADS.is_file() else None


# The text tower's dtype: "auto" is the encoder's (float16 on CUDA, float32 on the CPU). bfloat16 on
# the CPU is a choice, not the default: lab/HISTORY.md ("Text encoding and the rerank near their
# limits") measured it against float32.
TEXT_DTYPES = {"auto": None, "float32": torch.float32, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class EncoderConfig:
    """Which model to run and where. ``device="auto"`` picks CUDA when present; ``text_dtype`` is one
    of :data:`TEXT_DTYPES` (the text tower only; images always run in the encoder's dtype)."""

    arch: str = DEFAULT_ARCH
    checkpoint: Path | None = None
    device: str = "auto"
    batch_size: int = 64
    text_dtype: str = "auto"

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise InvalidInputError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.text_dtype not in TEXT_DTYPES:
            raise InvalidInputError(
                f"text_dtype must be one of {', '.join(TEXT_DTYPES)}; got {self.text_dtype!r}"
            )


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def register_rsir_configs() -> None:
    """Make rsir's JSON architectures known to open_clip (idempotent)."""
    if CONFIG_DIR.is_dir() and CONFIG_DIR not in open_clip.factory._MODEL_CONFIG_PATHS:
        open_clip.add_model_config(CONFIG_DIR)


def build_model(arch: str, checkpoint: Path | None = None, seed: int = 0) -> torch.nn.Module:
    """A float32 CPU open_clip model of ``arch``, loaded from ``checkpoint`` or randomly initialised.

    Random initialisation is seeded so that two runs without a checkpoint share their weights.
    """
    register_rsir_configs()
    if arch not in open_clip.list_models():
        raise UnsupportedModelError(
            f"unknown open_clip architecture {arch!r}; see open_clip.list_models() or model/configs/"
        )
    with torch.random.fork_rng(devices=[]), _quiet_open_clip():
        torch.manual_seed(seed)
        # pretrained=None and no hub/text weights: nothing may be downloaded at run time.
        model: torch.nn.Module = open_clip.create_model(
            arch, pretrained=None, pretrained_text=False, device="cpu"
        )
    towers.check_supported(model, arch)
    if checkpoint is not None:
        load_into(model, Path(checkpoint))
    else:
        log.warning("random_weights", arch=arch, reason="no checkpoint given: features are meaningless")
    return model


@contextlib.contextmanager
def _quiet_open_clip() -> Iterator[None]:
    """Drop open_clip's "No pretrained weights loaded" line: rsir loads (or reports) weights itself."""

    def drop(record: logging.LogRecord) -> bool:
        return "No pretrained weights loaded" not in record.getMessage()

    root = logging.getLogger()
    root.addFilter(drop)
    try:
        yield
    finally:
        root.removeFilter(drop)


class ClipEncoder:
    """Encodes images and texts into the joint space, with tokens (see module docstring)."""

    def __init__(self, config: EncoderConfig, model: torch.nn.Module | None = None) -> None:
        self.config = config
        self.device = resolve_device(config.device)
        self.dtype = torch.float16 if self.device.type == "cuda" else torch.float32
        base = model if model is not None else build_model(config.arch, config.checkpoint)
        towers.check_supported(base, config.arch)
        self.model = base.to(self.device, self.dtype).eval()
        self.text_dtype = TEXT_DTYPES[config.text_dtype] or self.dtype
        if self.text_dtype != self.dtype:
            towers.cast_text_tower(self.model, self.text_dtype)
        self.checkpoint_sha256 = file_sha256(config.checkpoint) if config.checkpoint else None
        self.tokenizer: Callable[..., torch.Tensor] = open_clip.get_tokenizer(config.arch)
        self._special_ids = special_ids(self.tokenizer)
        visual: Any = self.model.visual
        self.image_size: tuple[int, int] = (int(visual.image_size[0]), int(visual.image_size[1]))
        self.grid: tuple[int, int] = (int(visual.grid_size[0]), int(visual.grid_size[1]))
        preprocess_cfg = getattr(visual, "preprocess_cfg", {})
        self.preprocess = open_clip.image_transform(
            self.image_size,
            is_train=False,
            mean=preprocess_cfg.get("mean"),
            std=preprocess_cfg.get("std"),
        )
        self._truncate_text = towers.truncatable(self.model)

    @property
    def dim(self) -> int:
        visual: Any = self.model.visual
        return int(visual.proj.shape[1]) if visual.proj is not None else int(visual.output_dim)

    @property
    def context_length(self) -> int:
        return int(getattr(self.model, "context_length", 77))

    def describe(self) -> dict[str, Any]:
        """What a manifest or ``/version`` needs to know about this encoder."""
        return {
            "arch": self.config.arch,
            "checkpoint": str(self.config.checkpoint) if self.config.checkpoint else None,
            "checkpoint_sha256": self.checkpoint_sha256,
            "dim": self.dim,
            "grid": list(self.grid),
            "image_size": list(self.image_size),
        }

    # -- images -------------------------------------------------------------------------------------
    def preprocess_images(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """PIL images -> ``[B,3,H,W]`` float32 pixels, resized/cropped/normalised for the model."""
        return torch.stack([self.preprocess(img.convert("RGB")) for img in images])

    def encode_images(self, images: Sequence[Image.Image]) -> ImageFeatures:
        if len(images) == 0:
            raise InvalidInputError("encode_images needs at least one image")
        parts = [
            self.encode_pixels(self.preprocess_images(images[i : i + self.config.batch_size]))
            for i in range(0, len(images), self.config.batch_size)
        ]
        return ImageFeatures.cat(parts)

    @torch.inference_mode()
    def encode_pixels(self, pixels: torch.Tensor) -> ImageFeatures:
        """``[B,3,H,W]`` preprocessed pixels -> normalised features (one forward pass per batch)."""
        parts = []
        for i in range(0, pixels.shape[0], self.config.batch_size):
            batch = pixels[i : i + self.config.batch_size].to(self.device, self.dtype)
            vectors, patches = towers.image_features(self.model, batch)
            parts.append(ImageFeatures(vectors, patches, self.grid))
        return ImageFeatures.cat(parts)

    # -- texts --------------------------------------------------------------------------------------
    def tokenize(self, texts: Sequence[str]) -> torch.Tensor:
        """``[B, context_length]`` token ids (long texts truncated by open_clip, keeping the end token)."""
        return self.tokenizer(list(texts), context_length=self.context_length)

    def encode_texts(self, texts: Sequence[str]) -> TextFeatures:
        if len(texts) == 0:
            raise InvalidInputError("encode_texts needs at least one text")
        parts = [
            self.encode_token_ids(self.tokenize(texts[i : i + self.config.batch_size]))
            for i in range(0, len(texts), self.config.batch_size)
        ]
        return TextFeatures.cat(parts)

    def word_pieces(self, text: str) -> list[str]:
        """The tokenizer's pieces of ``text`` at its real-word positions, in the order of the mask.

        These label the rows of an explanation: one attention map per piece (BPE splits rare words).
        """
        ids = self.tokenize([text])[0]
        keep = towers.word_mask(ids.unsqueeze(0), self._special_ids)[0]
        decode: Callable[[list[int]], str] = getattr(self.tokenizer, "decode", lambda t: str(t[0]))
        return [decode([int(i)]).strip() for i in ids[keep].tolist()]

    @torch.inference_mode()
    def encode_token_ids(self, token_ids: torch.Tensor) -> TextFeatures:
        """``[B,L]`` ids -> features; word tokens are trimmed to the batch's longest text."""
        vectors, words, mask = towers.text_features(
            self.model, token_ids.to(self.device), self._special_ids, self._truncate_text
        )
        # features leave in the encoder's dtype, whatever the text tower ran in
        return TextFeatures(vectors.to(self.dtype), words.to(self.dtype), mask)


def special_ids(tokenizer: Any) -> tuple[int, ...]:
    ids = [getattr(tokenizer, name, None) for name in ("sot_token_id", "eot_token_id")]
    found = tuple(int(i) for i in ids if i is not None)
    if len(found) != 2:
        raise UnsupportedModelError(
            f"tokenizer {type(tokenizer).__name__} exposes no start/end token ids; rsir needs them to "
            "mask word tokens"
        )
    return found
