"""Reading local CLIP checkpoints (open_clip or OpenAI layouts) into an open_clip model.

Formats: ``.safetensors``; ``.pt``/``.bin``/``.pth`` pickled state dicts (optionally wrapped in
``{"state_dict": ...}`` and/or prefixed ``module.`` by DDP); OpenAI TorchScript archives. RemoteCLIP
and GeoRSCLIP ship as open_clip state dicts. Nothing is downloaded: a path that does not exist is an
error, never a hub lookup.
"""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path
from typing import Any

import torch
from open_clip.factory import (
    convert_state_dict,
    convert_to_custom_text_state_dict,
    resize_pos_embed,
    resize_text_pos_embed,
)

from rsir.model.errors import CheckpointError

STATE_DICT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin")
_OPENAI_JIT_EXTRA_KEYS = ("input_resolution", "context_length", "vocab_size")
_HASH_CHUNK = 1 << 20


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks (checkpoints are hundreds of MB)."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def is_torchscript_archive(path: Path) -> bool:
    """True for a TorchScript zip (what OpenAI's CLIP releases are); those need ``torch.jit.load``."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as zf:
        return any(name.endswith("constants.pkl") or "/code/" in name for name in zf.namelist())


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Load a checkpoint file as a flat ``name -> tensor`` dict on the CPU.

    Raises :class:`CheckpointError` naming the file and what was expected when it is missing, of an
    unknown suffix, unreadable, or not a state dict.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint file not found: {path}")
    suffix = path.suffix.lower()
    if suffix not in STATE_DICT_SUFFIXES:
        raise CheckpointError(
            f"checkpoint {path} has suffix {suffix!r}; expected one of {', '.join(STATE_DICT_SUFFIXES)}"
        )
    try:
        loaded = _load_raw(path, suffix)
    except CheckpointError:
        raise
    except Exception as exc:  # torch/safetensors raise many types for a corrupt file
        raise CheckpointError(
            f"cannot read checkpoint {path} as a {suffix} file ({type(exc).__name__}: {exc}); "
            "expected an open_clip/OpenAI state dict or an OpenAI TorchScript archive"
        ) from exc
    return _unwrap(loaded, path)


def load_into(model: torch.nn.Module, path: Path) -> None:
    """Load ``path`` into ``model`` strictly, applying open_clip's own key conversions.

    A checkpoint of another architecture fails with the missing/unexpected keys or the first shape
    mismatch, not a silent partial load.
    """
    state_dict = read_state_dict(path)
    state_dict = convert_state_dict(model, state_dict)
    if "positional_embedding" in state_dict and not hasattr(model, "positional_embedding"):
        state_dict = convert_to_custom_text_state_dict(state_dict)
    logit_scale = getattr(model, "logit_scale", None)
    if "logit_scale" in state_dict and isinstance(logit_scale, torch.Tensor):
        state_dict["logit_scale"] = state_dict["logit_scale"].reshape(logit_scale.shape)

    own = model.state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    if missing or unexpected:
        raise CheckpointError(
            f"checkpoint {path} does not fit this architecture: {len(missing)} missing keys "
            f"{_preview(missing)}, {len(unexpected)} unexpected keys {_preview(unexpected)}"
        )
    try:
        # open_clip interpolates position embeddings to another image size or context length.
        resize_pos_embed(state_dict, model)
        resize_text_pos_embed(state_dict, model)
    except (AssertionError, RuntimeError) as exc:
        raise CheckpointError(
            f"checkpoint {path} does not fit this architecture: position embeddings cannot be adapted ({exc})"
        ) from exc
    for key, tensor in state_dict.items():
        if tuple(tensor.shape) != tuple(own[key].shape):
            raise CheckpointError(
                f"checkpoint {path} does not fit this architecture: {key} has shape "
                f"{tuple(tensor.shape)}, the model expects {tuple(own[key].shape)}"
            )
    model.load_state_dict(state_dict, strict=True)


def _load_raw(path: Path, suffix: str) -> Any:
    if suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    if is_torchscript_archive(path):
        scripted = torch.jit.load(str(path), map_location="cpu")  # type: ignore[no-untyped-call]
        state = dict(scripted.state_dict())
        for key in _OPENAI_JIT_EXTRA_KEYS:
            state.pop(key, None)
        return state
    # weights_only: a checkpoint must never be able to run code on load.
    return torch.load(path, map_location="cpu", weights_only=True)


def _unwrap(loaded: Any, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(loaded, dict) and isinstance(loaded.get("state_dict"), dict):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, dict) or not loaded:
        raise CheckpointError(
            f"checkpoint {path} holds a {type(loaded).__name__}, expected a non-empty state dict "
            "(name -> tensor) or {'state_dict': ...}"
        )
    tensors = {str(k): v for k, v in loaded.items() if isinstance(v, torch.Tensor)}
    if len(tensors) != len(loaded):
        raise CheckpointError(f"checkpoint {path} has non-tensor entries; expected a state dict of tensors")
    if all(key.startswith("module.") for key in tensors):
        tensors = {key[len("module.") :]: value for key, value in tensors.items()}
    return tensors


def _preview(keys: list[str], n: int = 5) -> str:
    return "[" + ", ".join(keys[:n]) + (", ..." if len(keys) > n else "") + "]"
