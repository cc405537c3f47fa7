"""KER, keyword explicit reasoning (ALGORITHMS.md §4, iEBAKER), training only and optional.

The caption's keywords (scene/object words of :data:`KEYWORDS`) are replaced by a mask token; the text
tower encodes the masked caption, and a small cross-attention decoder (:class:`KERDecoder`) predicts
each masked keyword from its word token attending to the image's patch tokens. :func:`ker_loss` is the
cross-entropy over the masked positions; training adds ``0.5 * ker_loss`` (``TrainConfig.ker_weight``)
through :class:`KERObjective`, which owns the vocabulary and the decoder (checkpointed, never exported).

Design choices:

- **Single-piece keywords.** A keyword is one class of the decoder's classifier, so it must be one
  position of the caption: only words that the model's tokenizer turns into exactly one BPE piece are
  kept (:func:`build_keyword_vocab`, computed at construction; the others are listed in
  ``KeywordVocab.dropped``). Singular and plural forms are distinct classes. A kept piece is the
  word-final form (``plane</w>``), so it matches a whole word, or, rarely, the last piece of a longer
  word that BPE splits (``ware|houses``); that rare case is masked too and is harmless noise.
- **Mask token.** CLIP's BPE has no ``[MASK]``, and the causal text tower needs a real embedding row.
  rsir uses the byte-level piece of the NUL byte with the word-end marker (id 444 in CLIP's
  vocabulary): a real row of the embedding table that tokenising text can never produce (the tokenizer's
  text cleaning drops control characters), so it is neither a keyword nor any caption's word; it is
  not 0 (padding) nor a start/end token, so word masks and end-token pooling are unchanged.
- **All occurrences.** :func:`mask_keywords` masks every keyword occurrence by default
  (``probability=1.0``, the spec's "mask the caption's keywords"); a lower probability masks each
  occurrence independently, drawn from the given generator.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import structlog
import torch
import torch.nn.functional as F
from torch import nn

from rsir.model import towers
from rsir.model.errors import InvalidInputError, UnsupportedModelError

log = structlog.get_logger(__name__)

IGNORE_INDEX = -100
DEFAULT_WEIGHT = 0.5  # the spec's KER loss weight
MASK_PROBABILITY = 1.0

# Scene and object words of remote-sensing captions: SynthRS's scene classes and object nouns
# (synthrs/phrases.py), RSICD/UCM/NWPU class names, and their plurals. Order is the class index;
# append only, or trained decoders change meaning (they are training-only, so this is mild).
KEYWORDS: tuple[str, ...] = (
    # SynthRS objects (singular, plural)
    "plane", "planes", "airplane", "airplanes", "terminal", "terminals", "runway", "runways",
    "car", "cars", "parking", "tree", "trees", "building", "buildings", "house", "houses",
    "road", "roads", "field", "fields", "crop", "crops", "river", "rivers", "boat", "boats",
    "pond", "ponds", "lake", "lakes", "sea", "seas", "ocean", "oceans", "beach", "beaches",
    "bridge", "bridges", "playground", "playgrounds", "court", "courts", "tennis", "basketball",
    "tank", "tanks", "storage", "oil", "ship", "ships", "vessel", "vessels", "pier", "piers",
    "dock", "docks", "baseball", "diamond", "diamonds", "roundabout", "roundabouts", "island", "islands",
    # scene classes (SynthRS, RSICD, UCM, NWPU)
    "airport", "airports", "port", "ports", "harbor", "harbors", "harbour", "farmland", "farmlands",
    "forest", "forests", "residential", "dense", "sparse", "medium", "commercial", "industrial",
    "bareland", "desert", "meadow", "meadows", "mountain", "mountains", "park", "parks",
    "church", "churches", "center", "centre", "school", "schools", "square", "squares",
    "stadium", "stadiums", "resort", "resorts", "railway", "railways", "station", "stations",
    "viaduct", "viaducts", "highway", "highways", "freeway", "intersection", "intersections",
    "overpass", "golf", "course", "swimming", "pool", "pools", "track", "tracks", "grass",
    "grassland", "lawn", "water", "sand", "wetland", "wetlands", "container", "containers",
    "factory", "factories", "warehouse", "warehouses", "vegetation", "orchard", "hill", "hills",
    "dam", "reservoir", "canal",
)  # fmt: skip


@dataclass(frozen=True)
class KeywordVocab:
    """The keywords one tokenizer keeps: class ``k`` is ``words[k]``, token ``token_ids[k]``."""

    words: tuple[str, ...]
    token_ids: torch.Tensor  # [V] long
    mask_token_id: int
    dropped: tuple[str, ...]  # multi-piece words left out

    def __len__(self) -> int:
        return len(self.words)


def build_keyword_vocab(tokenizer: Any, words: Sequence[str] = KEYWORDS) -> KeywordVocab:
    """Keep the ``words`` that ``tokenizer`` makes one piece (first spelling wins on a shared piece)."""
    specials = {
        0,
        *(int(getattr(tokenizer, n)) for n in ("sot_token_id", "eot_token_id") if hasattr(tokenizer, n)),
    }
    mask_id = mask_token_id(tokenizer)
    kept: list[str] = []
    ids: list[int] = []
    dropped: list[str] = []
    for word in words:
        pieces = [int(i) for i in tokenizer([word])[0].tolist() if int(i) not in specials]
        if len(pieces) != 1:
            dropped.append(word)
        elif pieces[0] not in ids and pieces[0] != mask_id:
            kept.append(word)
            ids.append(pieces[0])
    if not kept:
        raise InvalidInputError("no keyword is a single piece of this tokenizer: KER has nothing to predict")
    return KeywordVocab(tuple(kept), torch.tensor(ids, dtype=torch.long), mask_id, tuple(dropped))


def mask_token_id(tokenizer: Any) -> int:
    """The NUL byte's word-final piece of a CLIP BPE tokenizer (see the module docstring)."""
    encoder = getattr(tokenizer, "encoder", None)
    byte_encoder = getattr(tokenizer, "byte_encoder", None)
    if not isinstance(encoder, dict) or not isinstance(byte_encoder, dict):
        raise UnsupportedModelError(
            f"KER needs open_clip's BPE tokenizer to pick a mask token; got {type(tokenizer).__name__}"
        )
    return int(encoder[byte_encoder[0] + "</w>"])


def mask_keywords(
    token_ids: torch.Tensor,
    keyword_token_ids: torch.Tensor,
    mask_token_id: int,
    generator: torch.Generator | None = None,
    probability: float = MASK_PROBABILITY,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``token_ids [B,L]`` -> (masked ids ``[B,L]``, targets ``[B,L]``).

    A target is the keyword's class (its index in ``keyword_token_ids [V]``) where a keyword was
    masked, :data:`IGNORE_INDEX` elsewhere. Each occurrence is masked with ``probability`` (1: all of
    them, no draw); the draws come from ``generator`` (a CPU generator: they are drawn on the CPU).
    """
    if not 0.0 <= probability <= 1.0:
        raise InvalidInputError(f"mask probability must be in [0, 1], got {probability}")
    keywords = keyword_token_ids.to(token_ids.device)
    hits = token_ids.unsqueeze(-1) == keywords  # [B,L,V]
    chosen = hits.any(-1)
    if probability < 1.0:
        draws = torch.rand(token_ids.shape, generator=generator).to(token_ids.device)
        chosen &= draws < probability
    targets = torch.where(chosen, hits.to(torch.uint8).argmax(-1), IGNORE_INDEX)
    masked = torch.where(chosen, torch.full_like(token_ids, mask_token_id), token_ids)
    return masked, targets


class KERDecoder(nn.Module):
    """One pre-norm cross-attention block (words attend to patches) and a keyword classifier.

    ``heads`` falls back to the largest of 8, 4, 2, 1 that divides ``dim`` when it does not.

    ``forward(words [B,n,d], word_mask [B,n], patches [B,M,d]) -> logits [B,n,V]``; logits at
    positions outside ``word_mask`` are zero (they carry no target).
    """

    def __init__(self, dim: int, n_keywords: int, heads: int = 4, mlp_ratio: int = 4) -> None:
        super().__init__()
        if dim % heads:
            heads = next(h for h in (8, 4, 2, 1) if dim % h == 0)
        self.norm_q = nn.LayerNorm(dim)
        self.norm_kv = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm_mlp = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_ratio * dim), nn.GELU(), nn.Linear(mlp_ratio * dim, dim))
        self.norm_out = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, n_keywords)

    def forward(self, words: torch.Tensor, word_mask: torch.Tensor, patches: torch.Tensor) -> torch.Tensor:
        kv = self.norm_kv(patches)
        x = words + self.attn(self.norm_q(words), kv, kv, need_weights=False)[0]
        x = x + self.mlp(self.norm_mlp(x))
        logits: torch.Tensor = self.head(self.norm_out(x))
        return logits * word_mask.to(logits.dtype).unsqueeze(-1)


def ker_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of ``logits [B,n,V]`` at the positions where ``targets [B,n]`` != -100.

    A batch without any masked keyword gives 0 (still attached to the graph, so ``backward`` works).
    """
    valid = targets != IGNORE_INDEX
    if not bool(valid.any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits[valid], targets[valid])


class KERObjective:
    """Training-side KER: the keyword vocabulary and a seeded decoder, trained beside the model.

    The decoder is training-only: its state goes into the training checkpoint (:meth:`state_dict`,
    with the keyword list so a resume with another vocabulary is refused), never into model weights.
    """

    def __init__(
        self,
        tokenizer: Any,
        dim: int,
        seed: int = 0,
        probability: float = MASK_PROBABILITY,
        words: Sequence[str] = KEYWORDS,
    ) -> None:
        self.vocab = build_keyword_vocab(tokenizer, words)
        self.seed = seed
        self.probability = probability
        with torch.random.fork_rng(devices=[]):  # seeded init that leaves the caller's stream alone
            torch.manual_seed(seed)
            self.decoder = KERDecoder(dim, len(self.vocab)).train()
        if self.vocab.dropped:
            log.info("ker_keywords", kept=len(self.vocab), dropped_multi_piece=list(self.vocab.dropped))

    def to(self, device: torch.device | str) -> KERObjective:
        self.decoder.to(device)
        return self

    def loss(
        self,
        model: nn.Module,
        token_ids: torch.Tensor,
        patches: torch.Tensor,
        special_ids: tuple[int, ...],
        truncate: bool,
        step: int,
    ) -> torch.Tensor:
        """Unweighted KER loss of a batch: mask ``token_ids [B,L]``, run the text tower on the masked
        captions, predict the keywords from the masked word tokens attending to ``patches [B,M,d]``
        (the image tower's unit patch tokens, kept in the graph so both towers learn from it).

        The mask draws are seeded by (seed, step), so a resumed run masks exactly as an unbroken one.
        """
        generator = torch.Generator().manual_seed(
            int(np.random.SeedSequence([self.seed, step]).generate_state(1)[0])
        )
        masked, targets = mask_keywords(
            token_ids.cpu(), self.vocab.token_ids, self.vocab.mask_token_id, generator, self.probability
        )
        _, words, word_mask = towers.text_features(model, masked.to(patches.device), special_ids, truncate)
        # words are positions 1..n (after the start token); the mask token is a word, so n is unchanged
        targets = targets[:, 1 : 1 + words.shape[1]].to(patches.device)
        return ker_loss(self.decoder(words, word_mask, patches), targets)

    def state_dict(self) -> dict[str, Any]:
        return {"decoder": self.decoder.state_dict(), "keywords": list(self.vocab.words)}

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        if list(saved["keywords"]) != list(self.vocab.words):
            raise InvalidInputError("the checkpoint's KER keyword vocabulary differs from this run's")
        self.decoder.load_state_dict(saved["decoder"])
