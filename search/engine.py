"""The search engine: encode -> recall (FAISS) -> rerank (FTF), with no HTTP types.

Modes (``rerank``): ``none`` returns the coarse top-k; ``ftf`` reranks the top ``recall_k`` coarse
candidates with the FTF block and fuses scores; ``exhaustive`` applies the block to the whole gallery
(for measurement). Text queries search images; image queries search images (coarse only: the FTF block
scores text-image pairs) or captions (reranked by the same block in the other direction).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import TypeVar

import numpy as np
import torch
from numpy.typing import NDArray
from PIL import Image

from index.dense import DenseRecall, by_score, exact_subset, in_tie_order, pair_cosines
from index.extras import HashHeads, SideExtras
from index.gallery import Gallery
from index.versions import LoadedIndex
from model import ftf, local_score, ppsr, sar
from model.encoders import ClipEncoder, resolve_device
from model.errors import InvalidInputError
from model.features import ImageFeatures, TextFeatures
from model.precision import Precision, resolve_dtype
from search.options import (
    RECALLS,
    RERANKS,
    SARS,
    TARGETS,
    HashPpsr,
    Recall,
    Rerank,
    Sar,
    Target,
    image_rerank,
)

# PPSR's first fetch, in multiples of the cut's depth; it deepens until the cut is exact.
PPSR_FETCH = 2
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
    # Filtered queries whose subset is at most this many items are scored exactly (one product over
    # the subset), which is also cheaper than an ID-selector scan of an approximate index.
    exact_filter_max: int = 50_000
    device: str = "auto"
    # The rerank's token dtype (auto: float16 on CUDA, float32 on the CPU). Scores are float32 in
    # every dtype: the block reduces in float32 (model/ftf.py), and the coarse score never leaves it.
    dtype: Precision = Precision.AUTO
    # iEBAKER's local score fusion: w * coarse + (1 - w) * s_l (the paper's 0.6 / 0.4 split).
    local_weight: float = 0.6
    # SAR's soft form: s + w * exp(-0.05 * rho).
    sar_weight: float = 0.1
    # PPSR: r_q is the mean of the query's top ppsr_k recall scores.
    ppsr_k: int = 10
    # PPSR over hash recall: "hamming" corrects minus the Hamming distance (ALGORITHMS.md §3, CFITR);
    # "cosine" corrects the cosines of the Hamming order's candidates (the earlier variant).
    hash_ppsr: HashPpsr = "hamming"
    # IVF lists visited per query by dense recall (None: index.dense.DEFAULT_NPROBE); exact indexes
    # ignore it. BENCHMARKS.md (recall at scale) has recall@100 against exact search by nprobe.
    nprobe: int | None = None
    # rerank="exhaustive" runs the block over the whole gallery: for measurement (rsir eval); a server
    # turns it off so that one request cannot hold the model thread for seconds.
    allow_exhaustive: bool = True


@dataclass(frozen=True)
class QueryOptions:
    """One query's knobs. ``allowed``: a mask over the gallery's images from metadata filters (None:
    every live image); an image query searches ``target``'s items and ``image_query`` says so."""

    k: int = 10
    recall_k: int | None = None
    rerank: Rerank = "ftf"
    explain: bool = False
    allowed: NDArray[np.bool_] | None = None
    target: Target = "images"
    image_query: bool = False
    recall: Recall = "dense"
    ppsr: bool = False
    sar: Sar = "off"
    # Caption search only: each caption text once, at its best-ranked copy. Archives repeat captions
    # across images (SynthRS's templates, RSICD's "many buildings are in a dense residential area"),
    # and a describe-this-image answer that lists one sentence five times tells the user nothing.
    distinct: bool = False


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
        extras: dict[str, SideExtras] | None = None,
        hash_heads: HashHeads | None = None,
    ) -> None:
        self.gallery = gallery
        self.encoder = encoder
        self.extras = extras or {}
        self.hash_heads = hash_heads
        self.config = config
        self.device = resolve_device(config.device)
        self.dtype = resolve_dtype(config.dtype, self.device)
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
        self.live_images = np.ones(len(gallery), np.bool_)
        self.live_images[self.deleted] = False
        self.deleted_captions = (
            np.flatnonzero(np.isin(gallery.captions.image_index, self.deleted)).astype(np.int64)
            if gallery.captions is not None and self.deleted.size
            else np.zeros(0, np.int64)
        )

    @classmethod
    def from_index(
        cls, index: LoadedIndex, encoder: ClipEncoder | None, config: EngineConfig
    ) -> SearchEngine:
        """An engine over an opened index directory (see :func:`index.versions.load_index`)."""
        return cls(
            index.gallery,
            encoder,
            config,
            index.image_recall,
            index.caption_recall,
            index.deleted,
            index.extras,
            index.hash_heads,
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

    # -- public entry points ------------------------------------------------------------------------
    def search_text(
        self,
        query: str,
        k: int = 10,
        recall_k: int | None = None,
        rerank: Rerank = "ftf",
        explain: bool = False,
        allowed: NDArray[np.bool_] | None = None,
    ) -> SearchResult:
        options = QueryOptions(k, recall_k, rerank, explain, allowed)
        return self.search_text_batch([query], [options])[0]

    def search_texts(
        self,
        queries: Sequence[str],
        k: int = 10,
        recall_k: int | None = None,
        rerank: Rerank = "ftf",
        explain: bool = False,
    ) -> list[SearchResult]:
        return self.search_text_batch(queries, [QueryOptions(k, recall_k, rerank, explain)] * len(queries))

    def search_text_batch(
        self, queries: Sequence[str], options: Sequence[QueryOptions]
    ) -> list[SearchResult]:
        """Text queries with their own options: encoded in one pass, then recalled and reranked in
        batches (what the service's micro-batcher calls with concurrent requests)."""
        for i, q in enumerate(queries):
            if not q.strip():
                raise InvalidInputError(f"query {i} is empty")
        for o in options:
            self.check_options(o)
        t0 = time.perf_counter()
        feats = self._require_encoder().encode_texts(queries)
        encode_ms = _ms_since(t0) / len(queries)
        results = self.search_text_features_batch(feats, options)
        for r in results:
            r.timings_ms = {"encode": encode_ms, **r.timings_ms}
        return results

    def search_image(
        self,
        image: Image.Image,
        k: int = 10,
        recall_k: int | None = None,
        rerank: Rerank | None = None,
        target: Target = "images",
        allowed: NDArray[np.bool_] | None = None,
    ) -> SearchResult:
        options = QueryOptions(k, recall_k, image_rerank(rerank, target), False, allowed, target)
        return self.search_image_batch([image], [options])[0]

    def search_image_batch(
        self, images: Sequence[Image.Image], options: Sequence[QueryOptions]
    ) -> list[SearchResult]:
        options = [replace(o, image_query=True) for o in options]
        for o in options:
            self.check_options(o)
        t0 = time.perf_counter()
        feats = self._require_encoder().encode_images(images)
        encode_ms = _ms_since(t0) / len(images)
        results = self.search_image_features_batch(feats, options)
        for r in results:
            r.timings_ms = {"encode": encode_ms, **r.timings_ms}
        return results

    def search_text_features(
        self,
        feats: TextFeatures,
        k: int = 10,
        recall_k: int | None = None,
        rerank: Rerank = "ftf",
        explain: bool = False,
    ) -> list[SearchResult]:
        """Text queries (already encoded) over the images. ``feats`` holds ``Q`` queries."""
        return self.search_text_features_batch(
            feats, [QueryOptions(k, recall_k, rerank, explain)] * len(feats)
        )

    def search_image_features(
        self,
        feats: ImageFeatures,
        k: int = 10,
        recall_k: int | None = None,
        rerank: Rerank | None = None,
        target: Target = "images",
    ) -> list[SearchResult]:
        """Image queries (already encoded) over the images or the captions."""
        options = QueryOptions(k, recall_k, image_rerank(rerank, target), False, None, target)
        return self.search_image_features_batch(feats, [options] * len(feats))

    def search_text_features_batch(
        self, feats: TextFeatures, options: Sequence[QueryOptions]
    ) -> list[SearchResult]:
        if len(options) != len(feats):
            raise InvalidInputError(f"{len(feats)} queries but {len(options)} option sets")
        for o in options:
            self.check_options(o)

        def run(rows: list[int], mode: str) -> list[SearchResult]:
            q = self._text_on_device(feats.select(torch.as_tensor(rows)))
            opts = [options[r] for r in rows]
            return self._exhaustive(q, None, opts) if mode == "exhaustive" else self._two_stage(q, None, opts)

        return self._grouped(options, run)

    def search_image_features_batch(
        self, feats: ImageFeatures, options: Sequence[QueryOptions]
    ) -> list[SearchResult]:
        if len(options) != len(feats):
            raise InvalidInputError(f"{len(feats)} queries but {len(options)} option sets")
        options = [replace(o, image_query=True) for o in options]
        for o in options:
            self.check_options(o)

        def run(rows: list[int], mode: str) -> list[SearchResult]:
            index = torch.as_tensor(rows)
            q = ImageFeatures(
                feats.vectors[index].to(self.device, torch.float32),
                feats.patches[index].to(self.device, self.dtype),
                feats.grid,
            )
            opts = [options[r] for r in rows]
            if mode == "image":
                return self._image_to_image(q, opts)
            return self._exhaustive(None, q, opts) if mode == "exhaustive" else self._two_stage(None, q, opts)

        return self._grouped(options, run)

    def explain(self, query: str, index: int) -> NDArray[np.float32]:
        """One text query's per-word attention over image ``index``'s patches: ``[n_words, gh, gw]``."""
        if not 0 <= index < len(self.gallery):
            raise InvalidInputError(
                f"image index {index} is outside the gallery (0..{len(self.gallery) - 1})"
            )
        if not query.strip():
            raise InvalidInputError("query is empty")
        text = self._text_on_device(self._require_encoder().encode_texts([query]))
        out = self._score(text, None, np.asarray([[index]], np.int64), return_attention=True)
        maps: NDArray[np.float32] = self._attention_maps(_present(out.attention)[0], text.mask[0])[0]
        return maps

    def check_options(self, o: QueryOptions) -> int:
        """Validate one query's options (raises :class:`InvalidInputError`); returns its recall depth."""
        if o.target not in TARGETS:
            raise InvalidInputError(f"target must be 'images' or 'captions', got {o.target!r}")
        if o.rerank not in RERANKS:
            raise InvalidInputError(f"rerank must be one of {', '.join(RERANKS)}; got {o.rerank!r}")
        if o.rerank == "exhaustive" and not self.config.allow_exhaustive:
            raise InvalidInputError(
                "rerank 'exhaustive' scores the whole gallery and is for measurement (rsir eval); "
                "this server offers none, ftf and local"
            )
        if o.target == "captions" and not o.image_query:
            raise InvalidInputError("text queries search images (target 'images')")
        if o.target == "images" and o.image_query and o.rerank != "none":
            raise InvalidInputError(
                "image-to-image search is coarse only (rerank='none'): the FTF block scores text-image pairs"
            )
        if o.target == "captions" and self.caption_recall is None:
            raise InvalidInputError("this index has no captions to search")
        if not 1 <= o.k <= self.config.max_k:
            raise InvalidInputError(f"k must be in [1, {self.config.max_k}], got {o.k}")
        recall_k = self.config.default_recall_k if o.recall_k is None else o.recall_k
        if not 1 <= recall_k <= self.config.max_recall_k:
            raise InvalidInputError(f"recall_k must be in [1, {self.config.max_recall_k}], got {recall_k}")
        if o.allowed is not None and o.allowed.shape != (len(self.gallery),):
            raise InvalidInputError(
                f"the filter mask has shape {o.allowed.shape}, the gallery {len(self.gallery)} images"
            )
        if o.recall not in RECALLS:
            raise InvalidInputError(f"recall must be one of {', '.join(RECALLS)}; got {o.recall!r}")
        if o.sar not in SARS:
            raise InvalidInputError(f"sar must be one of {', '.join(SARS)}; got {o.sar!r}")
        side = self.extras.get(o.target if o.image_query else "images", SideExtras())
        needs = {
            "hash": o.recall == "hash" and (side.hash is None or self.hash_heads is None),
            "sgpd": o.recall == "sgpd" and side.sgpd is None,
            "ppsr": o.ppsr and self._ppsr_term(o.recall, side) is None,
            "sar": o.sar != "off" and side.sar_profiles is None,
        }
        for name, missing in needs.items():
            if missing:
                raise InvalidInputError(f"{name} is not available for this index (its data was not built)")
        if (o.ppsr or o.sar != "off") and o.image_query and o.target == "images":
            raise InvalidInputError(
                "ppsr and sar correct cross-modal scores; image-to-image search takes neither"
            )
        if o.rerank == "exhaustive" and (o.recall != "dense" or o.ppsr or o.sar != "off"):
            raise InvalidInputError("exhaustive scores every item: it takes no recall method, ppsr or sar")
        if o.distinct and not (o.image_query and o.target == "captions"):
            raise InvalidInputError("distinct applies to caption search (an image query, target 'captions')")
        if o.distinct and o.rerank == "exhaustive":
            raise InvalidInputError("exhaustive is for measurement: it takes no distinct")
        # distinct drops repeated texts, so it needs candidates beyond k even without a rerank.
        deep = o.rerank in ("ftf", "local") or o.sar != "off" or o.distinct
        return max(recall_k, o.k) if deep else o.k

    # -- stages -------------------------------------------------------------------------------------
    def _grouped(
        self, options: Sequence[QueryOptions], run: Callable[[list[int], str], list[SearchResult]]
    ) -> list[SearchResult]:
        """Run queries in batches of one mode each, and give the results back in query order."""
        groups: dict[str, list[int]] = {}
        for i, o in enumerate(options):
            mode: str = "image" if o.image_query and o.target == "images" else o.rerank
            groups.setdefault(mode, []).append(i)
        out: list[SearchResult | None] = [None] * len(options)
        for mode, rows in groups.items():
            for start, stop in _batches(len(rows), self.config.query_batch):
                chunk = rows[start:stop]
                for r, result in zip(chunk, run(chunk, mode), strict=True):
                    out[r] = result
        return [_present(r) for r in out]

    def _recall(
        self, query_vectors: NDArray[np.float32], options: Sequence[QueryOptions], captions: bool
    ) -> tuple[NDArray[np.float32], NDArray[np.float32], NDArray[np.int64]]:
        """Coarse candidates ``(coarse [Q,R], cosine [Q,R], ids [Q,R])`` with each query's own depth,
        recall method and filter; rows are padded with ``-inf`` / ``-1`` up to the deepest ``R``.

        ``coarse`` is the score the rerank fuses: the cosine of the global vectors, or with PPSR over
        dense (or SGPD) recall its hubness-corrected form on the cosine's scale. A filtered query
        searches only its subset (see :meth:`_search_subset`).
        """
        depths = [self.check_options(o) for o in options]
        width = max(depths)
        coarse = np.full((len(options), width), -np.inf, np.float32)
        cosine = np.full((len(options), width), -np.inf, np.float32)
        ids = np.full((len(options), width), -1, np.int64)
        groups: dict[tuple[str, bool, bool], list[int]] = {}
        for q, o in enumerate(options):
            if o.allowed is None:
                groups.setdefault((o.recall, o.image_query, o.ppsr), []).append(q)
        found: dict[int, _Ranked] = {}
        for (method, image_query, use_ppsr), rows in groups.items():

            def search(sub: list[int], k: int, m: str = method, iq: bool = image_query) -> _Found:
                return self._backend(m, iq, query_vectors[sub], k, captions)

            ranked = self._ranked(search, rows, [depths[q] for q in rows], method, use_ppsr, captions)
            found.update(zip(rows, ranked, strict=True))
        for q, o in enumerate(options):
            if o.allowed is not None:
                subset = self._subset(o.allowed, captions)

                def search_subset(
                    sub: list[int], k: int, o: QueryOptions = o, s: NDArray[np.int64] = subset
                ) -> _Found:
                    return self._search_subset(o, query_vectors[sub], s, k, captions)

                found[q] = self._ranked(search_subset, [q], [depths[q]], o.recall, o.ppsr, captions)[0]
        for q in range(len(options)):
            c, s, i = found[q]
            n = min(depths[q], i.size)
            coarse[q, :n], cosine[q, :n], ids[q, :n] = c[:n], s[:n], i[:n]
            coarse[q, ids[q] < 0] = -np.inf
            cosine[q, ids[q] < 0] = -np.inf
        return coarse, cosine, ids

    def _ranked(
        self,
        search: Callable[[list[int], int], _Found],
        rows: list[int],
        depths: list[int],
        method: str,
        use_ppsr: bool,
        captions: bool,
    ) -> list[_Ranked]:
        """Per row of ``rows``, ``(coarse, cosine, ids)`` best first, at least ``depths[j]`` deep
        (padded with ``-inf`` / ``-1``). ``search(rows, k)`` is the recall method's own search:
        ``(own score, cosine, ids) [len(rows), k]`` in the method's order.

        Without PPSR the method's order is kept. With PPSR (CSLS, ALGORITHMS.md §3) the candidates
        are re-sorted by ``2 s - r_q - r_g`` over the method's own score ``s`` (the cosine for dense
        and SGPD recall, minus the Hamming distance for hash recall: the spec's form) and cut; the
        search is deepened until the cut is exact (:meth:`_ppsr_exact`). ``EngineConfig.hash_ppsr =
        "cosine"`` keeps the earlier variant for hash recall: CSLS over the cosines of the Hamming
        order's first ``PPSR_FETCH * depth`` candidates.
        """
        if not use_ppsr:
            own, cos, ids = search(rows, max(depths))
            return [
                (p[1], p[1], p[2]) for p in (_pad3(own[j], cos[j], ids[j], d) for j, d in enumerate(depths))
            ]
        side = self.extras.get("captions" if captions else "images", SideExtras())
        hamming = method == "hash" and self.config.hash_ppsr == "hamming"
        if method == "hash" and not hamming:
            r_g_cos = _require(side.ppsr_rg, "ppsr")
            k = max(max(d * PPSR_FETCH, self.config.ppsr_k) for d in depths)
            own, cos, ids = _padded(search(rows, k), k)
            out = []
            for j, d in enumerate(depths):
                corrected = self._csls(cos[j], ids[j], r_g_cos) / 2.0
                order = by_score(corrected, ids[j])[:d]
                out.append(_pad3(corrected[order], cos[j][order], ids[j][order], d))
            return out
        r_g = _require(self._ppsr_term(method, side), "ppsr")
        return self._ppsr_exact(search, rows, depths, r_g, hamming)

    def _ppsr_exact(
        self,
        search: Callable[[list[int], int], _Found],
        rows: list[int],
        depths: list[int],
        r_g: NDArray[np.float32],
        hamming: bool,
    ) -> list[_Ranked]:
        """PPSR's top-``depth`` by ``2 s - r_q - r_g`` over the whole gallery, fetching as deep as needed.

        An item the search did not return has ``s <= s_last`` (the last fetched score), so its
        corrected score is at most ``2 s_last - r_q - min(r_g)``; once the ``depth``-th corrected
        score of the fetched items beats that bound, nothing unfetched can enter the cut. Until then
        the fetch doubles (up to the whole gallery). ``r_q`` is the mean of the ``ppsr_k`` best scores,
        which any fetch of at least ``ppsr_k`` holds. Dense: the coarse score returned is the
        correction halved, ``s - (r_q + r_g) / 2`` (the same order, on the cosine's scale, so the
        rerank's fusion weight keeps its meaning). Hash: the order is the corrected Hamming score
        (ties by cosine, then id); the coarse score stays the cosine, as for plain hash recall.
        """
        floor = float(r_g.min()) if r_g.size else 0.0
        total = r_g.size
        out: dict[int, _Ranked] = {}
        fetch = {j: max(d * PPSR_FETCH, self.config.ppsr_k) for j, d in enumerate(depths)}
        pending = list(range(len(rows)))
        while pending:
            k = max(fetch[j] for j in pending)
            own, cos, ids = _padded(search([rows[j] for j in pending], k), k)
            deeper = []
            for row, j in enumerate(pending):
                s, c, i = own[row], cos[row], ids[row]
                corrected = self._csls(s, i, r_g)
                if hamming:  # multiples of 1/ppsr_k: equal values must tie, not differ by rounding
                    corrected = np.round(corrected, 4).astype(np.float32)
                id_key = np.where(i < 0, np.iinfo(np.int64).max, i)
                order = np.lexsort((id_key, -c, -corrected) if hamming else (id_key, -corrected))
                order = order[np.isfinite(corrected[order])]
                d = depths[j]
                valid = s[i >= 0]
                complete = valid.size < k or k >= total
                if not complete and order.size >= d:
                    r_q = float(ppsr.query_term(s[None], self.config.ppsr_k)[0])
                    bound = 2.0 * float(valid[-1]) - r_q - floor
                    # Slack for float32 rounding (and, for Hamming, the 1e-4 grid rounded to above).
                    slack = 1e-3 if hamming else 1e-5 * (1.0 + abs(bound))
                    complete = float(corrected[order[d - 1]]) > bound + slack
                if complete or fetch[j] >= total:
                    order = order[:d]
                    score = c[order] if hamming else corrected[order] / 2.0
                    out[j] = _pad3(score.astype(np.float32), c[order], i[order], d)
                else:
                    fetch[j] = 2 * fetch[j]
                    deeper.append(j)
            pending = deeper
        return [out[j] for j in range(len(rows))]

    def ppsr_available(self, method: str, side: str) -> bool:
        """Whether PPSR's stored term exists for recall ``method`` over ``side`` (images or captions)."""
        return self._ppsr_term(method, self.extras.get(side, SideExtras())) is not None

    def _ppsr_term(self, method: str, side: SideExtras) -> NDArray[np.float32] | None:
        """PPSR's stored ``r_g`` for recall ``method``: over Hamming scores for hash recall (unless the
        cosine variant is configured), over cosines otherwise."""
        hamming = method == "hash" and self.config.hash_ppsr == "hamming"
        return side.ppsr_rg_hash if hamming else side.ppsr_rg

    def _csls(
        self, scores: NDArray[np.float32], ids: NDArray[np.int64], r_g: NDArray[np.float32]
    ) -> NDArray[np.float32]:
        """``2 s - r_q - r_g`` for one row of recall scores (``-inf`` padding stays ``-inf``)."""
        r_q = ppsr.query_term(scores[None, :], self.config.ppsr_k)
        r_g_row = np.where(ids >= 0, r_g[np.maximum(ids, 0)], 0.0)[None, :]
        return np.asarray(ppsr.csls(scores[None, :], r_q, r_g_row)[0], np.float32)

    def _backend(
        self,
        method: str,
        image_query: bool,
        vectors: NDArray[np.float32],
        k: int,
        captions: bool,
        include: NDArray[np.int64] | None = None,
    ) -> _Found:
        """One recall method over one side: ``(own score, cosine, ids)`` in the method's order.

        The cosine is recomputed from the stored vectors for every method (:func:`pair_cosines`), so
        the rerank fuses the same number whichever method (or the exhaustive mode) found the item;
        FAISS's own score of a pair depends on how many queries were searched together. Dense and
        SGPD order by that cosine, ties by id; hash orders by Hamming distance, then cosine, then id.
        """
        exclude = self.deleted_captions if captions else self.deleted
        side = self.extras.get("captions" if captions else "images", SideExtras())
        if method in ("dense", "sgpd"):
            if method == "dense":
                recall = _present(self.caption_recall) if captions else self.image_recall
                _, ids = recall.search(
                    vectors, k, nprobe=self.config.nprobe, exclude=exclude, include=include
                )
            else:
                _, ids = _require(side.sgpd, "sgpd").search(vectors, k, include=include, exclude=exclude)
            cos, ids = in_tie_order(self._cosines(vectors, ids, captions), ids)
            return cos, cos, ids
        heads = _require(self.hash_heads, "hash")
        codes = heads.encode_images(vectors) if image_query else heads.encode_texts(vectors)
        index = _require(side.hash, "hash")
        fetch = k
        while True:  # deep enough to hold every item tied with the k-th distance, for the cosine tie-break
            neg_hamming, ids = index.search(codes, fetch, include=include, exclude=exclude)
            kth = neg_hamming[:, min(k, ids.shape[1]) - 1]
            if fetch >= index.size or bool(((neg_hamming[:, -1] < kth) | (ids[:, -1] < 0)).all()):
                break
            fetch = min(index.size, 2 * fetch)
        cos = self._cosines(vectors, ids, captions)
        id_key = np.where(ids < 0, np.iinfo(np.int64).max, ids)
        order = np.lexsort((id_key, -cos, -neg_hamming), axis=1)[:, :k]
        return (
            np.take_along_axis(neg_hamming, order, 1).astype(np.float32),
            np.take_along_axis(cos, order, 1),
            np.take_along_axis(ids, order, 1),
        )

    def _cosines(
        self, vectors: NDArray[np.float32], ids: NDArray[np.int64], captions: bool
    ) -> NDArray[np.float32]:
        """:func:`pair_cosines` of each query row with its ``ids`` (``-inf`` where the id is ``-1``)."""
        gallery = _present(self.gallery.captions).vectors if captions else self.gallery.vectors
        cos = pair_cosines(vectors, np.asarray(gallery[np.maximum(ids, 0)], np.float32))
        return np.where(ids >= 0, cos, -np.inf).astype(np.float32)

    def _search_subset(
        self,
        o: QueryOptions,
        vectors: NDArray[np.float32],
        subset: NDArray[np.int64],
        k: int,
        captions: bool,
    ) -> _Found:
        """A filtered query: an exact product over a small subset; otherwise the method with an ID
        selector, falling back to the exact product when an approximate index found too few."""
        want = min(k, subset.size)
        if want == 0:
            none = np.full((vectors.shape[0], k), -np.inf, np.float32)
            return none, none, np.full((vectors.shape[0], k), -1, np.int64)
        if subset.size > self.config.exact_filter_max or o.recall != "dense":
            own, cos, ids = self._backend(o.recall, o.image_query, vectors, k, captions, include=subset)
            if int((ids[0] >= 0).sum()) >= want:
                return own, cos, ids
        source = _present(self.gallery.captions).vectors if captions else self.gallery.vectors
        _, ids = exact_subset(source, vectors, subset, k)
        cos, ids = in_tie_order(self._cosines(vectors, ids, captions), ids)
        return cos, cos, ids

    def _subset(self, allowed: NDArray[np.bool_], captions: bool) -> NDArray[np.int64]:
        """Live ids passing a filter mask over images (for captions: those of passing images)."""
        live = allowed & self.live_images
        if captions:
            store = _present(self.gallery.captions)
            return np.flatnonzero(live[store.image_index]).astype(np.int64)
        return np.flatnonzero(live).astype(np.int64)

    def _two_stage(
        self, text: TextFeatures | None, image: ImageFeatures | None, options: Sequence[QueryOptions]
    ) -> list[SearchResult]:
        """Recall then (optionally) rerank for a batch of text queries or of image queries, each with
        its own ``k``, depth, method and filter; all candidates go through one batched block call.
        The batch shares one rerank mode (see :meth:`_grouped`); SAR, when asked, re-sorts last."""
        t0 = time.perf_counter()
        captions = text is None
        query_vectors = (text.vectors if text is not None else _present(image).vectors).float().cpu().numpy()
        coarse_np, cosine_np, ids_np = self._recall(query_vectors, options, captions)
        n_queries = ids_np.shape[0]
        recall_ms = _ms_since(t0) / n_queries
        rerank = options[0].rerank
        t1 = time.perf_counter()
        explain = any(o.explain for o in options) and text is not None and rerank == "ftf"
        fine: torch.Tensor | None = None
        attention: torch.Tensor | None = None
        coarse = torch.from_numpy(coarse_np).to(self.device).clamp_min(-4.0)
        if rerank == "ftf":
            out = self._score(text, image, np.maximum(ids_np, 0), return_attention=explain)
            fine, attention = out.fine, out.attention
            fused = ftf.fuse(coarse, fine, self.config.ftf.lam)
        elif rerank == "local":
            fine = self._local(text, image, np.maximum(ids_np, 0))
            w = self.config.local_weight
            fused = w * coarse + (1.0 - w) * fine
        else:
            fused = coarse
        missing = torch.from_numpy(ids_np < 0).to(fused.device)  # fewer live items than the depth
        fused_np = fused.masked_fill(missing, float("-inf")).float().cpu().numpy()
        fine_np = fine.float().cpu().numpy() if fine is not None else None
        results = []
        for q, o in enumerate(options):
            order = self._final_order(fused_np[q], cosine_np[q], ids_np[q], o, captions)
            order = order[np.isfinite(fused_np[q, order])]
            if o.distinct:
                order = order[_first_per_text(_present(self.gallery.captions).texts, ids_np[q, order])]
            order = order[: o.k]
            maps = None
            if o.explain and attention is not None and text is not None:
                maps = self._attention_maps(attention[q, torch.from_numpy(order)], text.mask[q])
            timings = {"recall": recall_ms} | (
                {"rerank": _ms_since(t1) / n_queries} if rerank != "none" else {}
            )
            results.append(
                self._result(
                    ids_np[q, order],
                    fused_np[q, order],
                    coarse_np[q, order],
                    None if fine_np is None else fine_np[q, order],
                    captions,
                    maps,
                )
                | timings
            )
        return results

    def _final_order(
        self,
        scores: NDArray[np.float32],
        cosine: NDArray[np.float32],
        ids: NDArray[np.int64],
        o: QueryOptions,
        captions: bool,
    ) -> NDArray[np.int64]:
        """Candidates best first: by score (ties by id), or re-sorted by SAR's reverse ranks when asked.

        SAR's rank compares the query's cosine with the candidate's stored reference similarities at
        the stored precision (float16): a query that is itself in the reference set then meets its
        own entry as a tie, which does not count against it, as GaLR's reverse rank skips the query.
        """
        # Without a rerank, recall's own order (hash: Hamming first; PPSR: its correction).
        base = np.arange(scores.size, dtype=np.int64) if o.rerank == "none" else by_score(scores, ids)
        if o.sar == "off":
            return base
        side = self.extras.get("captions" if captions else "images", SideExtras())
        profiles = _require(side.sar_profiles, "sar")
        s, c, i = scores[base], cosine[base], ids[base]
        valid = i >= 0
        rho = np.full(i.shape, np.iinfo(np.int64).max // 2, np.int64)
        if valid.any():
            cand = np.asarray(profiles[i[valid]], np.float32)[None]
            like = np.asarray(c[valid], profiles.dtype).astype(np.float32)
            rho[valid] = sar.reverse_ranks(cand, like[None])[0]
        if o.sar == "hard":  # ties by score, then by position in the base order (score, then id)
            return base[np.asarray(sar.sar_order(s[None], rho[None])[0], np.int64)]
        soft = sar.sar_soft(s[None], rho[None], self.config.sar_weight)[0]
        return base[by_score(soft, i)]

    def _exhaustive(
        self, text: TextFeatures | None, image: ImageFeatures | None, options: Sequence[QueryOptions]
    ) -> list[SearchResult]:
        """The FTF block over every gallery item, in chunks; for measuring the two-stage shortcut.

        Scores are the two-stage search's (the same :func:`pair_cosines` coarse score, the same block)
        and ties go to the lower index, so ``ftf`` with ``recall_k`` = the gallery size returns the
        same list exactly."""
        t0 = time.perf_counter()
        captions = text is None
        total = len(_present(self.gallery.captions).texts) if captions else len(self.gallery)
        queries = text.vectors if text is not None else _present(image).vectors
        query_np = queries.float().cpu().numpy()
        k = max(o.k for o in options)
        live = np.zeros((len(options), total), np.bool_)
        for q, o in enumerate(options):
            live[q, self._subset(o.allowed if o.allowed is not None else self.live_images, captions)] = True
        best_scores: list[torch.Tensor] = []
        best_ids: list[torch.Tensor] = []
        for start, stop in _batches(total, self.config.exhaustive_chunk):
            chunk = np.arange(start, stop, dtype=np.int64)
            ids = np.broadcast_to(chunk, (queries.shape[0], chunk.size))
            # float32 in every dtype, as in the two-stage path, so ftf at recall_k = N still equals this
            coarse = torch.from_numpy(self._cosines(query_np, ids, captions)).to(self.device)
            fused = ftf.fuse(coarse, self._score(text, image, ids).fine, self.config.ftf.lam).float()
            dead = torch.from_numpy(~live[:, start:stop]).to(fused.device)
            fused = fused.masked_fill(dead, float("-inf"))
            # A stable descending sort keeps equal scores in index order (torch.topk does not).
            top = torch.sort(fused, dim=1, descending=True, stable=True)
            keep = min(k, fused.shape[1])
            best_scores.append(top.values[:, :keep].cpu())
            best_ids.append(torch.from_numpy(chunk)[top.indices[:, :keep].cpu()])
        scores = torch.cat(best_scores, dim=1)
        ids_all = torch.cat(best_ids, dim=1)
        # Chunks are in index order and each chunk's ties too, so a stable sort keeps ties by index.
        order = torch.sort(scores, dim=1, descending=True, stable=True).indices[:, :k]
        ms = _ms_since(t0) / queries.shape[0]
        results = []
        for q, o in enumerate(options):
            top_q = order[q, : o.k]
            finite = torch.isfinite(scores[q, top_q])  # -inf: deleted or filtered out
            ids_q = ids_all[q, top_q][finite].numpy()
            coarse_q = self._cosines(query_np[q : q + 1], ids_q[None], captions)[0]
            results.append(
                self._result(ids_q, scores[q, top_q][finite].numpy(), coarse_q, None, captions)
                | {"exhaustive": ms}
            )
        return results

    def _image_to_image(self, image: ImageFeatures, options: Sequence[QueryOptions]) -> list[SearchResult]:
        t0 = time.perf_counter()
        scores, _, ids = self._recall(image.vectors.float().cpu().numpy(), options, captions=False)
        ms = _ms_since(t0) / ids.shape[0]
        return [
            self._result(ids[q, : o.k], scores[q, : o.k], scores[q, : o.k], None, False) | {"recall": ms}
            for q, o in enumerate(options)
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

    def _local(
        self, text: TextFeatures | None, image: ImageFeatures | None, ids: NDArray[np.int64]
    ) -> torch.Tensor:
        """iEBAKER's local score ``||W P^T||_F / sqrt(n M)`` of each query against its candidates."""
        if text is not None:
            patches = self._to_device(self.gallery.patches[ids])
            return local_score.text_to_image_local(text.tokens, text.mask, patches)
        store = _present(self.gallery.captions)
        words = self._to_device(store.tokens[ids])
        mask = torch.from_numpy(np.asarray(store.mask[ids])).to(self.device)
        return local_score.image_to_text_local(_present(image).patches, words, mask)

    # -- helpers ------------------------------------------------------------------------------------
    def _gallery_vectors(self, index: NDArray[np.int64], captions: bool) -> torch.Tensor:
        """Global vectors in float32 whatever the rerank's dtype: the coarse score is a cosine that
        the fusion adds to the fine one, and a float16 cosine would round it to 2^-11 (bfloat16: 2^-8)."""
        source = _present(self.gallery.captions).vectors if captions else self.gallery.vectors
        return torch.from_numpy(np.asarray(source[index], np.float32)).to(self.device)

    def _text_on_device(self, feats: TextFeatures) -> TextFeatures:
        """Tokens in the rerank's dtype; the global vectors stay float32 for recall and the coarse score."""
        return TextFeatures(
            feats.vectors.to(self.device, torch.float32),
            feats.tokens.to(self.device, self.dtype),
            feats.mask.to(self.device),
        )

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

    def _require_encoder(self) -> ClipEncoder:
        if self.encoder is None:
            raise InvalidInputError("this engine has no encoder: pass encoded features instead")
        return self.encoder


def _first_per_text(texts: Sequence[str], ids: NDArray[np.int64]) -> NDArray[np.int64]:
    """Positions in ``ids`` (best first) of each text's first occurrence."""
    seen: set[str] = set()
    keep = []
    for j, i in enumerate(ids.tolist()):
        if texts[i] not in seen:
            seen.add(texts[i])
            keep.append(j)
    return np.asarray(keep, np.int64)


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


def _require(value: _T | None, name: str) -> _T:
    if value is None:
        raise InvalidInputError(f"{name} is not available for this index (its data was not built)")
    return value


_Found = tuple[NDArray[np.float32], NDArray[np.float32], NDArray[np.int64]]  # own score, cosine, ids
_Ranked = tuple[NDArray[np.float32], NDArray[np.float32], NDArray[np.int64]]  # coarse, cosine, ids


def _pad3(
    first: NDArray[np.float32], cos: NDArray[np.float32], ids: NDArray[np.int64], width: int
) -> _Ranked:
    """One row cut or padded (``-inf`` / ``-1``) to ``width``; FAISS pads with -1 ids."""
    a = np.full(width, -np.inf, np.float32)
    c = np.full(width, -np.inf, np.float32)
    i = np.full(width, -1, np.int64)
    n = min(width, ids.size)
    a[:n], c[:n], i[:n] = first[:n], cos[:n], ids[:n]
    a[i < 0] = -np.inf
    c[i < 0] = -np.inf
    return a, c, i


def _padded(found: _Found, width: int) -> _Found:
    """A search's ``[Q, k']`` arrays padded to ``[Q, width]`` columns (``k' < width``: a small gallery)."""
    rows = [_pad3(found[0][j], found[1][j], found[2][j], width) for j in range(found[2].shape[0])]
    if not rows:
        return found
    return np.stack([r[0] for r in rows]), np.stack([r[1] for r in rows]), np.stack([r[2] for r in rows])


def _batches(n: int, size: int) -> Iterator[tuple[int, int]]:
    for start in range(0, n, size):
        yield start, min(start + size, n)


def _ms_since(t0: float) -> float:
    return (time.perf_counter() - t0) * 1000.0
