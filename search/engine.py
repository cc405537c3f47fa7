"""The search engine: encode -> recall (FAISS) -> rerank (FTF), with no HTTP types.

Modes (``rerank``): ``none`` returns the coarse top-k; ``ftf`` reranks the top ``recall_k`` coarse
candidates with the FTF block and fuses scores; ``exhaustive`` applies the block to the whole gallery
(for measurement). Text queries search images; image queries search images (coarse only: the FTF block
scores text-image pairs) or captions (reranked by the same block in the other direction).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal, TypeVar

import numpy as np
import torch
from numpy.typing import NDArray
from PIL import Image

from model import ftf
from model.encoders import ClipEncoder, resolve_device
from model.errors import InvalidInputError
from model.features import ImageFeatures, TextFeatures
from search.gallery import Gallery
from search.index_dir import LoadedIndex
from search.recall import DenseRecall

RerankMode = Literal["none", "ftf", "exhaustive"]
Target = Literal["images", "captions"]
RERANK_MODES: tuple[str, ...] = ("none", "ftf", "exhaustive")
_T = TypeVar("_T")


@dataclass(frozen=True)
class EngineConfig:
    """Server-side defaults and bounds; per-request values are call arguments, never mutations."""

    ftf: ftf.FTFParams = field(default_factory=ftf.FTFParams)
    default_recall_k: int = 100
    max_recall_k: int = 1000
    max_k: int = 1000
    query_batch: int = 16
    exhaustive_chunk: int = 512
    device: str = "auto"


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
    are never returned (tombstones), nor are their captions.
    """

    def __init__(
        self,
        gallery: Gallery,
        encoder: ClipEncoder | None,
        config: EngineConfig,
        image_recall: DenseRecall | None = None,
        caption_recall: DenseRecall | None = None,
        deleted: NDArray[np.int64] | None = None,
    ) -> None:
        self.gallery = gallery
        self.encoder = encoder
        self.config = config
        self.device = resolve_device(config.device)
        self.dtype = torch.float16 if self.device.type == "cuda" else torch.float32
        self.image_recall = image_recall or DenseRecall(gallery.vectors)
        has_captions = gallery.captions is not None and len(gallery.captions.texts) > 0
        self.caption_recall = caption_recall or (
            DenseRecall(_present(gallery.captions).vectors) if has_captions else None
        )
        for name, recall, rows in (
            ("image", self.image_recall, len(gallery)),
            ("caption", self.caption_recall, len(gallery.captions.texts) if gallery.captions else 0),
        ):
            if recall is not None and recall.size != rows:
                raise InvalidInputError(f"the {name} recall index holds {recall.size} vectors, not {rows}")
        self.deleted = np.unique(np.asarray(deleted if deleted is not None else [], dtype=np.int64))
        self.deleted_captions = (
            np.flatnonzero(np.isin(gallery.captions.image_index, self.deleted)).astype(np.int64)
            if gallery.captions is not None and self.deleted.size
            else np.zeros(0, np.int64)
        )

    @classmethod
    def from_index(
        cls, index: LoadedIndex, encoder: ClipEncoder | None, config: EngineConfig
    ) -> SearchEngine:
        """An engine over an opened index directory (see :func:`search.index_dir.load_index`)."""
        return cls(index.gallery, encoder, config, index.image_recall, index.caption_recall, index.deleted)

    # -- public entry points ------------------------------------------------------------------------
    def search_text(
        self,
        query: str,
        k: int = 10,
        recall_k: int | None = None,
        rerank: RerankMode = "ftf",
        explain: bool = False,
    ) -> SearchResult:
        return self.search_texts([query], k, recall_k, rerank, explain)[0]

    def search_texts(
        self,
        queries: Sequence[str],
        k: int = 10,
        recall_k: int | None = None,
        rerank: RerankMode = "ftf",
        explain: bool = False,
    ) -> list[SearchResult]:
        for i, q in enumerate(queries):
            if not q.strip():
                raise InvalidInputError(f"query {i} is empty")
        t0 = time.perf_counter()
        feats = self._require_encoder().encode_texts(queries)
        encode_ms = _ms_since(t0) / len(queries)
        results = self.search_text_features(feats, k, recall_k, rerank, explain)
        for r in results:
            r.timings_ms = {"encode": encode_ms, **r.timings_ms}
        return results

    def search_image(
        self,
        image: Image.Image,
        k: int = 10,
        recall_k: int | None = None,
        rerank: RerankMode | None = None,
        target: Target = "images",
    ) -> SearchResult:
        t0 = time.perf_counter()
        feats = self._require_encoder().encode_images([image])
        encode_ms = _ms_since(t0)
        result = self.search_image_features(feats, k, recall_k, rerank, target)[0]
        result.timings_ms = {"encode": encode_ms, **result.timings_ms}
        return result

    def search_text_features(
        self,
        feats: TextFeatures,
        k: int = 10,
        recall_k: int | None = None,
        rerank: RerankMode = "ftf",
        explain: bool = False,
    ) -> list[SearchResult]:
        """Text queries (already encoded) over the images. ``feats`` holds ``Q`` queries."""
        recall_k = self._check_knobs(k, recall_k, rerank)
        results: list[SearchResult] = []
        for start, stop in _batches(len(feats), self.config.query_batch):
            q = feats.select(slice(start, stop)).to(self.device, self.dtype)
            if rerank == "exhaustive":
                results += self._exhaustive(q, None, k, explain)
                continue
            results += self._two_stage(q, None, k, recall_k if rerank == "ftf" else k, rerank, explain)
        return results

    def search_image_features(
        self,
        feats: ImageFeatures,
        k: int = 10,
        recall_k: int | None = None,
        rerank: RerankMode | None = None,
        target: Target = "images",
    ) -> list[SearchResult]:
        """Image queries (already encoded) over the images or the captions."""
        if target not in ("images", "captions"):
            raise InvalidInputError(f"target must be 'images' or 'captions', got {target!r}")
        if target == "images":
            rerank = rerank or "none"
            if rerank != "none":
                raise InvalidInputError(
                    "image-to-image search is coarse only (rerank='none'): "
                    "the FTF block scores text-image pairs"
                )
        else:
            rerank = rerank or "ftf"
            if self.caption_recall is None:
                raise InvalidInputError("this index has no captions to search")
        recall_k = self._check_knobs(k, recall_k, rerank)
        results: list[SearchResult] = []
        for start, stop in _batches(len(feats), self.config.query_batch):
            sub = ImageFeatures(feats.vectors[start:stop], feats.patches[start:stop], feats.grid)
            q = sub.to(self.device, self.dtype)
            if target == "images":
                results += self._image_to_image(q, k)
            elif rerank == "exhaustive":
                results += self._exhaustive(None, q, k, False)
            else:
                results += self._two_stage(None, q, k, recall_k if rerank == "ftf" else k, rerank, False)
        return results

    # -- stages -------------------------------------------------------------------------------------
    def _two_stage(
        self,
        text: TextFeatures | None,
        image: ImageFeatures | None,
        k: int,
        recall_k: int,
        rerank: str,
        explain: bool,
    ) -> list[SearchResult]:
        """Recall then (optionally) FTF rerank for a batch of text queries or of image queries."""
        t0 = time.perf_counter()
        query_vectors = (text.vectors if text is not None else _present(image).vectors).float().cpu().numpy()
        recall = self.image_recall if text is not None else _present(self.caption_recall)
        exclude = self.deleted if text is not None else self.deleted_captions
        coarse_np, ids_np = recall.search(query_vectors, recall_k, exclude=exclude)
        n_queries = ids_np.shape[0]
        recall_ms = _ms_since(t0) / n_queries
        if rerank == "none":
            return [
                self._result(ids_np[q, :k], coarse_np[q, :k], coarse_np[q, :k], None, text is None)
                | {"recall": recall_ms}
                for q in range(n_queries)
            ]
        t1 = time.perf_counter()
        coarse = torch.from_numpy(coarse_np).to(self.device, self.dtype)
        ids = torch.from_numpy(ids_np)
        out = self._score(text, image, ids_np, return_attention=explain)
        fused = ftf.fuse(coarse, out.fine, self.config.ftf.lam)
        missing = torch.from_numpy(ids_np < 0).to(fused.device)  # fewer live items than recall_k
        fused = fused.masked_fill(missing, float("-inf"))
        top = torch.topk(fused.float(), min(k, fused.shape[1]), dim=1).indices.cpu()
        rerank_ms = _ms_since(t1) / n_queries
        results = []
        for q in range(n_queries):
            order = top[q]
            attention = None
            if out.attention is not None and text is not None:
                attention = self._attention_maps(out.attention[q, order], text.mask[q])
            results.append(
                self._result(
                    ids[q, order].numpy(),
                    fused[q, order].float().cpu().numpy(),
                    coarse_np[q, order.numpy()],
                    out.fine[q, order].float().cpu().numpy(),
                    text is None,
                    attention,
                )
                | {"recall": recall_ms, "rerank": rerank_ms}
            )
        return results

    def _exhaustive(
        self, text: TextFeatures | None, image: ImageFeatures | None, k: int, explain: bool
    ) -> list[SearchResult]:
        """The FTF block over every gallery item, in chunks; for measuring the two-stage shortcut."""
        t0 = time.perf_counter()
        captions = text is None
        total = len(_present(self.gallery.captions).texts) if captions else len(self.gallery)
        queries = text.vectors if text is not None else _present(image).vectors
        best_scores: list[torch.Tensor] = []
        best_ids: list[torch.Tensor] = []
        for start, stop in _batches(total, self.config.exhaustive_chunk):
            chunk = np.arange(start, stop, dtype=np.int64)
            gallery_vectors = self._gallery_vectors(chunk, captions)
            coarse = queries @ gallery_vectors.T  # [Q,C]
            ids = np.broadcast_to(chunk, (queries.shape[0], chunk.size))
            fused = ftf.fuse(coarse, self._score(text, image, ids).fine, self.config.ftf.lam).float()
            dead = np.isin(chunk, self.deleted_captions if captions else self.deleted)
            if dead.any():
                fused[:, torch.from_numpy(dead).to(fused.device)] = float("-inf")
            top = torch.topk(fused, min(k, fused.shape[1]), dim=1)
            best_scores.append(top.values.cpu())
            best_ids.append(torch.from_numpy(chunk)[top.indices.cpu()])
        scores = torch.cat(best_scores, dim=1)
        ids_all = torch.cat(best_ids, dim=1)
        order = torch.topk(scores, min(k, scores.shape[1]), dim=1).indices
        ms = _ms_since(t0) / queries.shape[0]
        results = []
        for q in range(queries.shape[0]):
            live = torch.isfinite(scores[q, order[q]])  # -inf: deleted items, when too few are alive
            ids_q = ids_all[q, order[q]][live].numpy()
            coarse_q = (queries[q : q + 1] @ self._gallery_vectors(ids_q, captions).T)[0].float().cpu()
            results.append(
                self._result(ids_q, scores[q, order[q]][live].numpy(), coarse_q.numpy(), None, captions)
                | {"exhaustive": ms}
            )
        return results

    def _image_to_image(self, image: ImageFeatures, k: int) -> list[SearchResult]:
        t0 = time.perf_counter()
        scores, ids = self.image_recall.search(image.vectors.float().cpu().numpy(), k, exclude=self.deleted)
        ms = _ms_since(t0) / ids.shape[0]
        return [
            self._result(ids[q], scores[q], scores[q], None, False) | {"recall": ms}
            for q in range(ids.shape[0])
        ]

    def _score(
        self,
        text: TextFeatures | None,
        image: ImageFeatures | None,
        ids: NDArray[np.int64],
        return_attention: bool = False,
    ) -> ftf.FTFOutput:
        """FTF fine scores ``[Q,K]`` of each query against its candidates ``ids [Q,K]``."""
        tau = self.config.ftf.tau
        if text is not None:
            patches = self._to_device(self.gallery.patches[ids])  # [Q,K,M,d]
            return ftf.text_to_image(text.tokens, text.mask, patches, tau, return_attention)
        store = _present(self.gallery.captions)
        words = self._to_device(store.tokens[ids])  # [Q,K,n,d]
        mask = torch.from_numpy(np.asarray(store.mask[ids])).to(self.device)
        return ftf.image_to_text(_present(image).patches, words, mask, tau, return_attention)

    # -- helpers ------------------------------------------------------------------------------------
    def _gallery_vectors(self, index: NDArray[np.int64], captions: bool) -> torch.Tensor:
        source = _present(self.gallery.captions).vectors if captions else self.gallery.vectors
        return self._to_device(source[index])

    def _to_device(self, array: NDArray[np.generic]) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(array)).to(self.device, self.dtype)

    def _attention_maps(self, attention: torch.Tensor, mask: torch.Tensor) -> NDArray[np.float32]:
        """``[k,n,M]`` attention of the hits -> ``[k, n_valid, gh, gw]`` over the patch grid."""
        valid = attention[:, mask.to(attention.device)]
        gh, gw = self.gallery.grid
        return valid.reshape(valid.shape[0], valid.shape[1], gh, gw).float().cpu().numpy()

    def _result(
        self,
        ids: NDArray[np.int64],
        scores: NDArray[np.floating],
        coarse: NDArray[np.floating],
        fine: NDArray[np.floating] | None,
        captions: bool,
        attention: NDArray[np.float32] | None = None,
    ) -> _PartialResult:
        names = _present(self.gallery.captions).texts if captions else self.gallery.ids
        hits = [
            Hit(
                index=int(i),
                id=names[int(i)],
                score=float(scores[j]),
                coarse=float(coarse[j]),
                fine=None if fine is None else float(fine[j]),
            )
            for j, i in enumerate(ids)
            if i >= 0
        ]
        return _PartialResult(hits, attention)

    def _check_knobs(self, k: int, recall_k: int | None, rerank: str) -> int:
        if rerank not in RERANK_MODES:
            raise InvalidInputError(f"rerank must be one of {', '.join(RERANK_MODES)}; got {rerank!r}")
        if not 1 <= k <= self.config.max_k:
            raise InvalidInputError(f"k must be in [1, {self.config.max_k}], got {k}")
        recall_k = self.config.default_recall_k if recall_k is None else recall_k
        if not 1 <= recall_k <= self.config.max_recall_k:
            raise InvalidInputError(f"recall_k must be in [1, {self.config.max_recall_k}], got {recall_k}")
        return max(recall_k, k)

    def _require_encoder(self) -> ClipEncoder:
        if self.encoder is None:
            raise InvalidInputError("this engine has no encoder: pass encoded features instead")
        return self.encoder


@dataclass
class _PartialResult:
    """Hits waiting for their timings: ``partial | {"stage": ms}`` gives the :class:`SearchResult`."""

    hits: list[Hit]
    attention: NDArray[np.float32] | None

    def __or__(self, timings: dict[str, float]) -> SearchResult:
        return SearchResult(self.hits, timings, self.attention)


def _present(value: _T | None) -> _T:
    if value is None:
        raise InvalidInputError("the gallery lacks the data this search needs")
    return value


def _batches(n: int, size: int) -> Iterator[tuple[int, int]]:
    for start in range(0, n, size):
        yield start, min(start + size, n)


def _ms_since(t0: float) -> float:
    return (time.perf_counter() - t0) * 1000.0
