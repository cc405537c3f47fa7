"""Token-level forward passes through open_clip towers (ALGORITHMS.md §1), differentiable.

open_clip's ``encode_image``/``encode_text`` return only the pooled vector. rsir also needs the tokens in
the joint space: image patch tokens after the visual transformer's final LayerNorm, mapped by the same
projection as the pooled output; word tokens after the text transformer's final LayerNorm, mapped by
the text projection. These functions reproduce open_clip's forward for the towers that expose tokens
and fail with :class:`UnsupportedModelError` for the others. Outputs are not normalised.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from open_clip.transformer import TextTransformer, VisionTransformer, text_global_pool
from torch import nn

from rsir.model.errors import UnsupportedModelError


def check_supported(model: nn.Module, name: str) -> None:
    """Raise :class:`UnsupportedModelError` when ``model`` cannot give rsir its tokens."""
    visual = getattr(model, "visual", None)
    if not isinstance(visual, VisionTransformer):
        raise UnsupportedModelError(
            f"{name}: the image tower is {type(visual).__name__}, not an open_clip VisionTransformer, "
            "so it exposes no patch tokens; rsir needs a ViT image tower"
        )
    if visual.attn_pool is not None or visual.pool_type not in ("tok", "avg"):
        raise UnsupportedModelError(
            f"{name}: the image tower pools with {'attention' if visual.attn_pool is not None else 'none'}; "
            "its output tokens are not patch tokens"
        )
    text = getattr(model, "text", None)
    if text is not None and not isinstance(text, TextTransformer):
        raise UnsupportedModelError(
            f"{name}: the text tower is {type(text).__name__}; rsir needs an open_clip TextTransformer "
            "to take word tokens"
        )
    tower = text if text is not None else model
    if getattr(tower, "cls_emb", None) is not None:
        raise UnsupportedModelError(f"{name}: text towers with a CLS embedding are not supported")


def image_forward(model: nn.Module, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``pixels [B,3,H,W]`` -> (pooled ``[B,d]``, patch tokens ``[B,M,d]``) in the joint space."""
    visual: Any = model.visual
    x = visual.transformer(visual._embeds(pixels))
    pooled, tokens = visual._pool(x)
    if visual.final_ln_after_pool:
        # open_clip normalises only the pooled vector here; the spec wants tokens after the final LN.
        tokens = visual.ln_post(tokens)
    if visual.proj is not None:
        pooled = pooled @ visual.proj
        tokens = tokens @ visual.proj
    return pooled, tokens


def text_forward(model: nn.Module, token_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``token_ids [B,L]`` -> (pooled ``[B,d]``, per-position tokens ``[B,L,d]``) in the joint space."""
    # open_clip's CLIP keeps its text tower's parts on the model itself; CustomTextCLIP has `.text`.
    tower = _text_tower(model)
    cast_dtype = tower.transformer.get_cast_dtype()
    x = tower.token_embedding(token_ids).to(cast_dtype)
    x = x + tower.positional_embedding[: token_ids.shape[1]].to(cast_dtype)
    attn_mask = tower.attn_mask
    if attn_mask is not None:
        attn_mask = attn_mask[: token_ids.shape[1], : token_ids.shape[1]]
    x = tower.transformer(x, attn_mask=attn_mask)
    x = tower.ln_final(x)
    pooled = text_global_pool(x, token_ids, _pool_type(tower), eos_token_id=_eos_id(model, tower))
    projection = tower.text_projection
    if projection is not None:
        if isinstance(projection, nn.Linear):
            pooled, x = projection(pooled), projection(x)
        else:
            pooled, x = pooled @ projection, x @ projection
    return pooled, x


def text_features(
    model: nn.Module, token_ids: torch.Tensor, special_ids: tuple[int, ...], truncate: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``token_ids [B,L]`` -> unit (global ``[B,d]``, words ``[B,n,d]``, mask ``[B,n]``); differentiable.

    Words are the positions after the start token, trimmed to the batch's longest text; padded
    positions are zero. With ``truncate`` (:func:`truncatable` says when it is exact) the forward
    pass runs on the batch's real length (:func:`real_length`) instead of the whole context.
    """
    mask = word_mask(token_ids, special_ids)
    used = real_length(model, token_ids) if truncate else token_ids.shape[1]
    pooled, tokens = text_forward(model, token_ids[:, :used])
    n_words = max(int(mask.sum(-1).max()), 1)
    words_mask = mask[:, 1 : 1 + n_words].to(tokens.device)
    words = F.normalize(tokens[:, 1 : 1 + n_words], dim=-1) * words_mask[..., None]
    return F.normalize(pooled, dim=-1), words, words_mask


def image_features(model: nn.Module, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``pixels [B,3,H,W]`` -> unit (global ``[B,d]``, patches ``[B,M,d]``); differentiable."""
    pooled, patches = image_forward(model, pixels)
    return F.normalize(pooled, dim=-1), F.normalize(patches, dim=-1)


def _text_tower(model: nn.Module) -> Any:
    """The module holding the text tower's parts: ``model.text`` (CustomTextCLIP) or CLIP itself."""
    text = getattr(model, "text", None)
    return text if text is not None else model


def _pool_type(tower: Any) -> str | None:
    pool: str | None = getattr(tower, "text_pool_type", None) or getattr(tower, "pool_type", None)
    return pool


def _eos_id(model: nn.Module, tower: Any) -> int | None:
    eos: int | None = getattr(tower, "text_eos_id" if tower is model else "eos_id", None)
    return eos


def truncatable(model: nn.Module) -> bool:
    """True when running the text tower on the batch's real length gives the same outputs as on the
    whole context: open_clip's own text transformer (CLIP, or a TextTransformer tower) under a causal
    mask, pooled at a position inside the text. Position ``t``'s output then depends on positions
    ``<= t`` only, so the padding after the longest text changes none of them. Not so for a
    bidirectional tower (no ``attn_mask``), a pool that reads the context's last position or every
    position (``last``, ``none``), or any other tower class (a Hugging Face encoder).
    """
    tower = _text_tower(model)
    builtin = isinstance(tower, TextTransformer) or (tower is model and hasattr(model, "token_embedding"))
    return (
        builtin
        and getattr(tower, "attn_mask", None) is not None
        and getattr(tower, "cls_emb", None) is None
        and _pool_type(tower) in ("argmax", "eos", "first")
    )


def real_length(model: nn.Module, token_ids: torch.Tensor) -> int:
    """One past the last position any text of the batch uses: its last non-padding token or the
    position its pool reads (an ``eos`` pool whose end id is the padding id reads a padding slot).

    Not a count of non-padding ids: CLIP's id 0 (the padding) is also the BPE piece "!", which may
    occur inside a text, so the count could end before the end token.
    """
    tower = _text_tower(model)
    pad_id = int(getattr(tower, "pad_id", 0))
    positions = torch.arange(token_ids.shape[1], device=token_ids.device).expand_as(token_ids)
    last = int(torch.where(token_ids != pad_id, positions, 0).max())
    pool = _pool_type(tower)
    if pool == "argmax":  # text_global_pool's rule: the end token has the largest id
        last = max(last, int(token_ids.argmax(-1).max()))
    elif pool == "eos":
        is_eos = torch.eq(token_ids, int(_eos_id(model, tower) or 0))
        last = max(last, int(is_eos.int().argmax(-1).max()))
    return last + 1


def cast_text_tower(model: nn.Module, dtype: torch.dtype) -> None:
    """Cast the text tower's weights (and its causal mask) to ``dtype`` in place, the image tower not:
    CLIP keeps the text parts on the model itself, CustomTextCLIP in ``model.text``."""
    tower = _text_tower(model)
    if tower is not model:
        tower.to(dtype)
        return
    for name in ("token_embedding", "transformer", "ln_final", "positional_embedding", "text_projection"):
        part = getattr(model, name, None)
        if isinstance(part, nn.Parameter):
            part.data = part.data.to(dtype)
        elif isinstance(part, nn.Module):
            part.to(dtype)
    if getattr(model, "attn_mask", None) is not None:
        model.attn_mask = model.attn_mask.to(dtype)


def word_mask(token_ids: torch.Tensor, special_ids: tuple[int, ...]) -> torch.Tensor:
    """``[B,L]`` bool, True at real words: padding (0) and the given start/end ids are excluded."""
    mask = token_ids != 0
    for special in special_ids:
        mask &= token_ids != special
    return mask
