"""The search engine: encode -> recall -> rerank, with no HTTP types.

One entry point, :meth:`SearchEngine.search`, takes a batch of queries of one modality (sentences,
images, or their encodings) and one :class:`QueryOptions` per query (or one for all). Text queries
search the images; image queries search the images (coarse only: the FTF block scores text-image
pairs) or the captions (reranked by the same block in the other direction). Options are checked once,
at this boundary (:meth:`SearchEngine.validate`, :mod:`rsir.search.plan`); the stages below read plans:
:mod:`rsir.search.candidates` (recall, PPSR), :mod:`rsir.search.rerank` (the rerank modes, SAR, exhaustive),
each over a :class:`rsir.search.side.Side`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, TypeVar

import numpy as np
import torch
from numpy.typing import NDArray
from PIL import Image

from rsir.index.columns import MetadataColumns
from rsir.index.dense import DenseRecall
from rsir.index.extras import HashHeads, SideExtras
from rsir.index.gallery import Gallery
from rsir.index.versions import LoadedIndex
from rsir.model.encoders import ClipEncoder, resolve_device
from rsir.model.errors import InvalidInputError
from rsir.model.features import ImageFeatures, TextFeatures
from rsir.model.precision import resolve_dtype
from rsir.search.candidates import Recaller
from rsir.search.config import EngineConfig
from rsir.search.filters import Filters
from rsir.search.options import EXHAUSTIVE, Modality, QueryOptions, Recall, Target
from rsir.search.plan import Bounds, Plan, check, ppsr_term
from rsir.search.rerank import RERANKERS, Query, Ranking, Scorer, exhaustive, final_order
from rsir.search.side import Side, gallery_sides

_T = TypeVar("_T")

__all__ = ["EngineConfig", "Hit", "Plan", "QueryOptions", "SearchEngine", "SearchResult"]

Queries = Sequence[str] | Sequence[Image.Image] | TextFeatures | ImageFeatures
"""A batch of one modality: sentences, images, or their encodings (``TextFeatures`` /
``ImageFeatures`` holding ``Q`` queries, as the encoder returns them)."""


@dataclass(frozen=True)
class Hit:
    """One ranked item: ``index`` into the gallery (or its captions), with its scores."""

    index: int
    id: str
    score: float
    coarse: float
    fine: float | None = None


@dataclass
class SearchResult:
    """Ranked hits, per-stage milliseconds, and (text queries with ``explain``) attention maps.

    ``attention [k, n_words, grid_h, grid_w]``: for each hit, each query word's softmax over patches.
    """

    hits: list[Hit]
    timings_ms: dict[str, float]
    attention: NDArray[np.float32] | None = None


class SearchEngine:
    """Search over one gallery. ``image_recall``/``caption_recall``: prebuilt FAISS indexes (an index
    directory's); exact ones are built from the gallery when absent. ``deleted``: image indices that
    are never returned (tombstones), nor are their captions. ``metadata``: the images' metadata that
    filters are resolved against (none: nothing is known, so every filter excludes every image).
    """

    def __init__(
        self,
        gallery: Gallery,
        encoder: ClipEncoder | None,
        config: EngineConfig,
        image_recall: DenseRecall | None = None,
        caption_recall: DenseRecall | None = None,
        deleted: NDArray[np.int64] | None = None,
        extras: dict[str, SideExtras] | None = None,
        hash_heads: HashHeads | None = None,
        metadata: MetadataColumns | None = None,
    ) -> None:
        self.gallery = gallery
        self.encoder = encoder
        self.config = config
        self.device = resolve_device(config.device)
        self.dtype = resolve_dtype(config.dtype, self.device)
        self.metadata = metadata if metadata is not None else MetadataColumns.empty(len(gallery))
        if len(self.metadata) != len(gallery):
            raise InvalidInputError(
                f"the metadata describes {len(self.metadata)} images, the gallery holds {len(gallery)}"
            )
        self.deleted = np.unique(np.asarray(deleted if deleted is not None else [], dtype=np.int64))
        self.live_images = np.ones(len(gallery), np.bool_)
        self.live_images[self.deleted] = False
        self.images, self.captions = gallery_sides(
            gallery, image_recall, caption_recall, self.deleted, extras or {}
        )
        self._recaller = Recaller(config, hash_heads)
        self._scorer = Scorer(config, self.device, self.dtype)
        self._bounds = Bounds(
            config, self.images, self.captions, hash_heads, self.metadata, self.live_images, object()
        )

    @classmethod
    def from_index(
        cls, index: LoadedIndex, encoder: ClipEncoder | None, config: EngineConfig
    ) -> SearchEngine:
        """An engine over an opened index directory (see :func:`rsir.index.versions.load_index`)."""
        return cls(
            index.gallery,
            encoder,
            config,
            index.image_recall,
            index.caption_recall,
            index.deleted,
            index.extras,
            index.hash_heads,
            index.metadata,
        )

    @cached_property
    def scoring_id(self) -> str:
        """What, beside the model and the index version, decides this engine's scores: replicas that
        share a result cache must key it with this, or one configured otherwise serves another's."""
        c = self.config
        return (
            f"dtype={str(self.dtype).removeprefix('torch.')},tau={c.ftf.tau},lam={c.ftf.lam},"
            f"local={c.local_weight},sar={c.sar_weight},ppsr_k={c.ppsr_k},hash_ppsr={c.hash_ppsr},"
            f"nprobe={c.nprobe}"
        )

    # -- the public API -----------------------------------------------------------------------------
    def validate(self, options: QueryOptions, modality: Modality = "text") -> Plan:
        """Check one query's options against this engine's bounds and data (raises
        :class:`InvalidInputError`); the plan it returns is what :meth:`search` runs without checking
        again (the service checks before a request enters its batcher)."""
        return check(options, modality, self._bounds)

    def search(
        self, queries: Queries, options: QueryOptions | Plan | Sequence[QueryOptions | Plan]
    ) -> list[SearchResult]:
        """One result per query, in order. ``options``: one for every query, or one per query (each
        a :class:`QueryOptions`, or a :class:`Plan` this engine's :meth:`validate` returned).

        Queries are encoded in one pass, then recalled and reranked in batches of one rerank mode
        (what the service's micro-batcher calls with concurrent requests)."""
        if len(queries) == 0:
            return []
        modality = _modality(queries)
        per_query = [options] * len(queries) if isinstance(options, QueryOptions | Plan) else list(options)
        if len(per_query) != len(queries):
            raise InvalidInputError(f"{len(queries)} queries but {len(per_query)} option sets")
        if isinstance(queries, TextFeatures | ImageFeatures):
            return self._search_features(queries, self._plans(per_query, modality))
        if modality == "text":
            for i, q in enumerate(queries):
                if not str(q).strip():
                    raise InvalidInputError(f"query {i} is empty")
        plans = self._plans(per_query, modality)
        t0 = time.perf_counter()
        encoder = self._require_encoder()
        feats: TextFeatures | ImageFeatures
        if modality == "text":
            feats = encoder.encode_texts([str(q) for q in queries])
        else:
            feats = encoder.encode_images([q for q in queries if isinstance(q, Image.Image)])
        encode_ms = _ms_since(t0) / len(queries)
        results = self._search_features(feats, plans)
        for r in results:
            r.timings_ms = {"encode": encode_ms, **r.timings_ms}
        return results

    def explain(self, query: str, index: int) -> NDArray[np.float32]:
        """One text query's per-word attention over image ``index``'s patches: ``[n_words, gh, gw]``."""
        if not 0 <= index < len(self.gallery):
            raise InvalidInputError(
                f"image index {index} is outside the gallery (0..{len(self.gallery) - 1})"
            )
        if not query.strip():
            raise InvalidInputError("query is empty")
        text = self._text_on_device(self._require_encoder().encode_texts([query]))
        out = self._scorer.ftf(text, self.images, np.asarray([[index]], np.int64), attention=True)
        maps: NDArray[np.float32] = self._attention_maps(_present(out.attention)[0], text.mask[0])[0]
        return maps

    # -- read accessors (what a caller shows next to a hit) ------------------------------------------
    @property
    def grid(self) -> tuple[int, int]:
        """The patch grid (rows, columns) that attention maps are laid out on."""
        return self.gallery.grid

    @property
    def n_images(self) -> int:
        return len(self.gallery)

    @property
    def n_live_images(self) -> int:
        """Images a search may return (not tombstoned)."""
        return int(self.live_images.sum())

    def is_live(self, index: int) -> bool:
        return 0 <= index < len(self.gallery) and bool(self.live_images[index])

    def image_id(self, index: int) -> str:
        return self.gallery.ids[index]

    @property
    def image_ids(self) -> Sequence[str]:
        """Every image's id in gallery order (one read for a caller's id -> position map)."""
        return self.gallery.ids

    def metadata_row(self, index: int) -> dict[str, Any]:
        """Image ``index``'s metadata, JSON-ready (:meth:`MetadataColumns.row`)."""
        return self.metadata.row(index)

    def matching(self, filters: Filters) -> NDArray[np.int64]:
        """Gallery indexes of the live images that meet ``filters``, resolved as a search resolves
        them (e.g. the chips of one scene)."""
        return np.flatnonzero(self._bounds.allowed(filters))

    def caption_image(self, index: int) -> int:
        """The image that caption ``index`` describes."""
        return int(_present(_present(self.captions, "captions").owner, "captions")[index])

    def ppsr_available(self, recall: Recall | str, target: Target | str) -> bool:
        """Whether PPSR's stored term exists for recall method ``recall`` over ``target`` (images or
        captions)."""
        side = self.images if target == "images" else self.captions
        return side is not None and ppsr_term(self.config, recall, side) is not None

    # -- stages -------------------------------------------------------------------------------------
    def _plans(self, options: Sequence[QueryOptions | Plan], modality: Modality) -> list[Plan]:
        plans = []
        for o in options:
            if isinstance(o, QueryOptions):
                plans.append(self.validate(o, modality))
            elif o.checked_by is not self._bounds.checked_by or o.modality != modality:
                raise InvalidInputError(f"a plan is run by the engine that made it, for {o.modality} queries")
            else:
                plans.append(o)
        return plans

    def _search_features(
        self, feats: TextFeatures | ImageFeatures, plans: Sequence[Plan]
    ) -> list[SearchResult]:
        """Run queries in batches of one side and rerank each, and give the results back in order."""
        groups: dict[tuple[str, str], list[int]] = {}
        for i, p in enumerate(plans):
            groups.setdefault((p.options.target, p.rerank), []).append(i)
        out: list[SearchResult | None] = [None] * len(plans)
        for rows in groups.values():
            for start in range(0, len(rows), self.config.query_batch):
                chunk = rows[start : start + self.config.query_batch]
                for r, result in zip(chunk, self._run(feats, chunk, [plans[r] for r in chunk]), strict=True):
                    out[r] = result
        return [_present(r) for r in out]

    def _run(
        self, feats: TextFeatures | ImageFeatures, rows: list[int], plans: Sequence[Plan]
    ) -> list[SearchResult]:
        """One batch that shares a side and a rerank mode."""
        index = torch.as_tensor(rows)
        query: Query
        if isinstance(feats, TextFeatures):
            query = self._text_on_device(feats.select(index))
        else:
            query = ImageFeatures(
                feats.vectors[index].to(self.device, torch.float32),
                feats.patches[index].to(self.device, self.dtype),
                feats.grid,
            )
        side = self.images if plans[0].options.target == "images" else _present(self.captions, "captions")
        if isinstance(query, ImageFeatures) and side is self.images:
            return self._image_to_image(query, plans)
        if plans[0].rerank == EXHAUSTIVE:
            t0 = time.perf_counter()
            live = [side.items_of(p.allowed if p.allowed is not None else self.live_images) for p in plans]
            rankings = exhaustive(self._scorer, query, side, plans, live)
            ms = _ms_since(t0) / len(plans)
            return [self._result(r, side, {"exhaustive": ms}) for r in rankings]
        return self._two_stage(query, side, plans)

    def _two_stage(self, query: Query, side: Side, plans: Sequence[Plan]) -> list[SearchResult]:
        """Recall then (optionally) rerank, each query with its own ``k``, depth, method and filter;
        all candidates go through one batched block call. SAR, when asked, re-sorts last."""
        t0 = time.perf_counter()
        found = self._recaller.recall(query.vectors.float().cpu().numpy(), plans, side)
        ids_np = found.ids
        n_queries = ids_np.shape[0]
        recall_ms = _ms_since(t0) / n_queries
        rerank = plans[0].rerank
        t1 = time.perf_counter()
        want_attention = any(p.options.explain for p in plans) and isinstance(query, TextFeatures)
        coarse = torch.from_numpy(found.coarse).to(self.device).clamp_min(-4.0)
        reranker = RERANKERS.get(rerank)
        fine: torch.Tensor | None = None
        attention: torch.Tensor | None = None
        if reranker is None:
            fused = coarse
        else:
            scored = reranker(self._scorer, query, side, np.maximum(ids_np, 0), coarse, want_attention)
            fused, fine, attention = scored.fused, scored.fine, scored.attention
        missing = torch.from_numpy(ids_np < 0).to(fused.device)  # fewer live items than the depth
        fused_np = fused.masked_fill(missing, float("-inf")).float().cpu().numpy()
        fine_np = fine.float().cpu().numpy() if fine is not None else None
        results = []
        for q, p in enumerate(plans):
            order = final_order(fused_np[q], found.cosine[q], ids_np[q], p, side, self.config.sar_weight)
            order = order[np.isfinite(fused_np[q, order])]
            if p.options.distinct:
                order = order[_first_per_text(side.names, ids_np[q, order])]
            order = order[: p.options.k]
            maps = None
            if p.options.explain and attention is not None and isinstance(query, TextFeatures):
                maps = self._attention_maps(attention[q, torch.from_numpy(order)], query.mask[q])
            timings = {"recall": recall_ms} | ({"rerank": _ms_since(t1) / n_queries} if reranker else {})
            ranking = Ranking(ids_np[q, order], fused_np[q, order], found.coarse[q, order])
            results.append(
                self._result(ranking, side, timings, None if fine_np is None else fine_np[q, order], maps)
            )
        return results

    def _image_to_image(self, query: ImageFeatures, plans: Sequence[Plan]) -> list[SearchResult]:
        t0 = time.perf_counter()
        found = self._recaller.recall(query.vectors.float().cpu().numpy(), plans, self.images)
        ms = _ms_since(t0) / found.ids.shape[0]
        return [
            self._result(
                Ranking(
                    found.ids[q, : p.options.k],
                    found.coarse[q, : p.options.k],
                    found.coarse[q, : p.options.k],
                ),
                self.images,
                {"recall": ms},
            )
            for q, p in enumerate(plans)
        ]

    # -- helpers ------------------------------------------------------------------------------------
    def _text_on_device(self, feats: TextFeatures) -> TextFeatures:
        """Tokens in the rerank's dtype; the global vectors stay float32 for recall and the coarse score."""
        return TextFeatures(
            feats.vectors.to(self.device, torch.float32),
            feats.tokens.to(self.device, self.dtype),
            feats.mask.to(self.device),
        )

    def _attention_maps(self, attention: torch.Tensor, mask: torch.Tensor) -> NDArray[np.float32]:
        """``[k,n,M]`` attention of the hits -> ``[k, n_valid, gh, gw]`` over the patch grid."""
        valid = attention[:, mask.to(attention.device)]
        gh, gw = self.gallery.grid
        return valid.reshape(valid.shape[0], valid.shape[1], gh, gw).float().cpu().numpy()

    def _result(
        self,
        ranking: Ranking,
        side: Side,
        timings: dict[str, float],
        fine: NDArray[np.floating] | None = None,
        attention: NDArray[np.float32] | None = None,
    ) -> SearchResult:
        hits = [
            Hit(
                index=int(i),
                id=side.names[int(i)],
                score=float(ranking.scores[j]),
                coarse=float(ranking.coarse[j]),
                fine=None if fine is None else float(fine[j]),
            )
            for j, i in enumerate(ranking.ids)
            if i >= 0
        ]
        return SearchResult(hits, timings, attention)

    def _require_encoder(self) -> ClipEncoder:
        if self.encoder is None:
            raise InvalidInputError("this engine has no encoder: pass encoded features instead")
        return self.encoder


def _modality(queries: Queries) -> Modality:
    if isinstance(queries, TextFeatures):
        return "text"
    if isinstance(queries, ImageFeatures):
        return "image"
    if isinstance(queries, str | bytes | Image.Image):
        raise InvalidInputError("queries must be a list (of sentences or of images), not one query")
    kinds = {
        "text" if isinstance(q, str) else "image" if isinstance(q, Image.Image) else "?" for q in queries
    }
    if kinds == {"image"}:
        return "image"
    if kinds <= {"text"}:
        return "text"
    raise InvalidInputError("queries must be all sentences or all PIL images (or their encoded features)")


def _first_per_text(texts: Sequence[str], ids: NDArray[np.int64]) -> NDArray[np.int64]:
    """Positions in ``ids`` (best first) of each text's first occurrence."""
    seen: set[str] = set()
    keep = []
    for j, i in enumerate(ids.tolist()):
        if texts[i] not in seen:
            seen.add(texts[i])
            keep.append(j)
    return np.asarray(keep, np.int64)


def _present(value: _T | None, what: str = "data this search needs") -> _T:
    if value is None:
        raise InvalidInputError(f"the gallery lacks the {what}")
    return value


def _ms_since(t0: float) -> float:
    return (time.perf_counter() - t0) * 1000.0
