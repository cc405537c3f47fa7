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
    tower: Any = model.text if isinstance(getattr(model, "text", None), TextTransformer) else model
    cast_dtype = tower.transformer.get_cast_dtype()
    x = tower.token_embedding(token_ids).to(cast_dtype)
    x = x + tower.positional_embedding[: token_ids.shape[1]].to(cast_dtype)
    attn_mask = tower.attn_mask
    if attn_mask is not None:
        attn_mask = attn_mask[: token_ids.shape[1], : token_ids.shape[1]]
    x = tower.transformer(x, attn_mask=attn_mask)
    x = tower.ln_final(x)
    pool_type = getattr(tower, "text_pool_type", None) or tower.pool_type
    eos_id = getattr(tower, "text_eos_id", None) if tower is model else getattr(tower, "eos_id", None)
    pooled = text_global_pool(x, token_ids, pool_type, eos_token_id=eos_id)
    projection = tower.text_projection
    if projection is not None:
        if isinstance(projection, nn.Linear):
            pooled, x = projection(pooled), projection(x)
        else:
            pooled, x = pooled @ projection, x @ projection
    return pooled, x


def text_features(
    model: nn.Module, token_ids: torch.Tensor, special_ids: tuple[int, ...], causal: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``token_ids [B,L]`` -> unit (global ``[B,d]``, words ``[B,n,d]``, mask ``[B,n]``); differentiable.

    Words are the positions after the start token, trimmed to the batch's longest text; padded
    positions are zero. Under a causal attention mask, positions after a text's end token cannot
    change earlier outputs, so the forward pass runs only to the longest text instead of the context.
    """
    mask = word_mask(token_ids, special_ids)
    used = int((token_ids != 0).sum(-1).max()) if causal else token_ids.shape[1]
    pooled, tokens = text_forward(model, token_ids[:, : max(used, 1)])
    n_words = max(int(mask.sum(-1).max()), 1)
    words_mask = mask[:, 1 : 1 + n_words].to(tokens.device)
    words = F.normalize(tokens[:, 1 : 1 + n_words], dim=-1) * words_mask[..., None]
    return F.normalize(pooled, dim=-1), words, words_mask


def image_features(model: nn.Module, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``pixels [B,3,H,W]`` -> unit (global ``[B,d]``, patches ``[B,M,d]``); differentiable."""
    pooled, patches = image_forward(model, pixels)
    return F.normalize(pooled, dim=-1), F.normalize(patches, dim=-1)


def is_causal(model: nn.Module) -> bool:
    """True when the text tower uses a causal mask (all of open_clip's CLIP text transformers)."""
    tower = getattr(model, "text", model)
    return getattr(tower, "attn_mask", None) is not None


def word_mask(token_ids: torch.Tensor, special_ids: tuple[int, ...]) -> torch.Tensor:
    """``[B,L]`` bool, True at real words: padding (0) and the given start/end ids are excluded."""
    mask = token_ids != 0
    for special in special_ids:
        mask &= token_ids != special
    return mask
