"""The recall stage: each query's coarse candidates over one side, by its recall method (dense,
hash, SGPD), under its filter, optionally re-sorted by PPSR.

The candidates' coarse score is the cosine of the global vectors (recomputed from the stored
vectors for every method, so the rerank fuses the same number whichever method found an item), or
with PPSR over dense or SGPD recall its hubness-corrected form on the cosine's scale.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
from numpy.typing import NDArray

from rsir.index.dense import by_score, in_tie_order
from rsir.index.extras import HashHeads
from rsir.model import ppsr
from rsir.model.errors import InvalidInputError
from rsir.search.config import EngineConfig
from rsir.search.plan import Plan, ppsr_term
from rsir.search.side import Found, Side

# PPSR's first fetch, in multiples of the cut's depth; it deepens until the cut is exact.
PPSR_FETCH = 2
_T = TypeVar("_T")

# Per query: (coarse, cosine, ids), best first, padded with -inf / -1.
Ranked = tuple[NDArray[np.float32], NDArray[np.float32], NDArray[np.int64]]


@dataclass(frozen=True)
class Candidates:
    """``coarse [Q,R]``: the score the rerank fuses; ``cosine [Q,R]``: the plain cosine (SAR's
    input); ``ids [Q,R]`` (``-1`` padding where fewer live items than the depth)."""

    coarse: NDArray[np.float32]
    cosine: NDArray[np.float32]
    ids: NDArray[np.int64]


@dataclass(frozen=True, eq=False)
class Recaller:
    """The recall methods over a gallery's sides, with the engine's settings."""

    config: EngineConfig
    hash_heads: HashHeads | None

    def recall(self, queries: NDArray[np.float32], plans: Sequence[Plan], side: Side) -> Candidates:
        """Coarse candidates with each query's own depth, recall method and filter; rows are padded
        up to the deepest plan. A filtered query searches only its subset (:meth:`_search_subset`)."""
        depths = [p.depth for p in plans]
        width = max(depths)
        coarse = np.full((len(plans), width), -np.inf, np.float32)
        cosine = np.full((len(plans), width), -np.inf, np.float32)
        ids = np.full((len(plans), width), -1, np.int64)
        groups: dict[tuple[str, bool, bool], list[int]] = {}
        for q, p in enumerate(plans):
            if p.allowed is None:
                groups.setdefault((p.options.recall, p.image_query, p.options.ppsr), []).append(q)
        found: dict[int, Ranked] = {}
        for (method, image_query, use_ppsr), rows in groups.items():

            def search(sub: list[int], k: int, m: str = method, iq: bool = image_query) -> Found:
                return self.backend(m, iq, queries[sub], k, side)

            ranked = self._ranked(search, rows, [depths[q] for q in rows], method, use_ppsr, side)
            found.update(zip(rows, ranked, strict=True))
        for q, p in enumerate(plans):
            if p.allowed is not None:
                subset = side.items_of(p.allowed)

                def search_subset(
                    sub: list[int], k: int, p: Plan = p, s: NDArray[np.int64] = subset
                ) -> Found:
                    return self._search_subset(p, queries[sub], s, k, side)

                found[q] = self._ranked(
                    search_subset, [q], [depths[q]], p.options.recall, p.options.ppsr, side
                )[0]
        for q in range(len(plans)):
            c, s, i = found[q]
            n = min(depths[q], i.size)
            coarse[q, :n], cosine[q, :n], ids[q, :n] = c[:n], s[:n], i[:n]
            coarse[q, ids[q] < 0] = -np.inf
            cosine[q, ids[q] < 0] = -np.inf
        return Candidates(coarse, cosine, ids)

    def backend(
        self,
        method: str,
        image_query: bool,
        vectors: NDArray[np.float32],
        k: int,
        side: Side,
        include: NDArray[np.int64] | None = None,
    ) -> Found:
        """One recall method over one side: ``(own score, cosine, ids)`` in the method's order.

        FAISS's own score of a pair depends on how many queries were searched together, so the
        cosine is recomputed (:meth:`Side.cosines`). Dense and SGPD order by that cosine, ties by
        id; hash orders by Hamming distance, then cosine, then id."""
        if method in ("dense", "sgpd"):
            if method == "dense":
                _, ids = side.recall.search(
                    vectors, k, nprobe=self.config.nprobe, exclude=side.deleted, include=include
                )
            else:
                sgpd = _require(side.extras.sgpd, "sgpd")
                _, ids = sgpd.search(vectors, k, include=include, exclude=side.deleted)
            cos, ids = in_tie_order(side.cosines(vectors, ids), ids)
            return cos, cos, ids
        heads = _require(self.hash_heads, "hash")
        codes = heads.encode_images(vectors) if image_query else heads.encode_texts(vectors)
        index = _require(side.extras.hash, "hash")
        fetch = k
        while True:  # deep enough to hold every item tied with the k-th distance, for the cosine tie-break
            neg_hamming, ids = index.search(codes, fetch, include=include, exclude=side.deleted)
            kth = neg_hamming[:, min(k, ids.shape[1]) - 1]
            if fetch >= index.size or bool(((neg_hamming[:, -1] < kth) | (ids[:, -1] < 0)).all()):
                break
            fetch = min(index.size, 2 * fetch)
        cos = side.cosines(vectors, ids)
        id_key = np.where(ids < 0, np.iinfo(np.int64).max, ids)
        order = np.lexsort((id_key, -cos, -neg_hamming), axis=1)[:, :k]
        return (
            np.take_along_axis(neg_hamming, order, 1).astype(np.float32),
            np.take_along_axis(cos, order, 1),
            np.take_along_axis(ids, order, 1),
        )

    def _search_subset(
        self, p: Plan, vectors: NDArray[np.float32], subset: NDArray[np.int64], k: int, side: Side
    ) -> Found:
        """A filtered query: an exact product over a small subset; otherwise the method with an ID
        selector, falling back to the exact product when an approximate index found too few."""
        want = min(k, subset.size)
        if want == 0:
            none = np.full((vectors.shape[0], k), -np.inf, np.float32)
            return none, none, np.full((vectors.shape[0], k), -1, np.int64)
        if subset.size > self.config.exact_filter_max or p.options.recall != "dense":
            own, cos, ids = self.backend(p.options.recall, p.image_query, vectors, k, side, include=subset)
            if int((ids[0] >= 0).sum()) >= want:
                return own, cos, ids
        return side.exact(vectors, subset, k)

    def _ranked(
        self,
        search: Callable[[list[int], int], Found],
        rows: list[int],
        depths: list[int],
        method: str,
        use_ppsr: bool,
        side: Side,
    ) -> list[Ranked]:
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
        hamming = method == "hash" and self.config.hash_ppsr == "hamming"
        if method == "hash" and not hamming:
            r_g_cos = _require(side.extras.ppsr_rg, "ppsr")
            k = max(max(d * PPSR_FETCH, self.config.ppsr_k) for d in depths)
            own, cos, ids = _padded(search(rows, k), k)
            out = []
            for j, d in enumerate(depths):
                corrected = self._csls(cos[j], ids[j], r_g_cos) / 2.0
                order = by_score(corrected, ids[j])[:d]
                out.append(_pad3(corrected[order], cos[j][order], ids[j][order], d))
            return out
        r_g = _require(ppsr_term(self.config, method, side), "ppsr")
        return self._ppsr_exact(search, rows, depths, r_g, hamming)

    def _ppsr_exact(
        self,
        search: Callable[[list[int], int], Found],
        rows: list[int],
        depths: list[int],
        r_g: NDArray[np.float32],
        hamming: bool,
    ) -> list[Ranked]:
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
        out: dict[int, Ranked] = {}
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

    def _csls(
        self, scores: NDArray[np.float32], ids: NDArray[np.int64], r_g: NDArray[np.float32]
    ) -> NDArray[np.float32]:
        """``2 s - r_q - r_g`` for one row of recall scores (``-inf`` padding stays ``-inf``)."""
        r_q = ppsr.query_term(scores[None, :], self.config.ppsr_k)
        r_g_row = np.where(ids >= 0, r_g[np.maximum(ids, 0)], 0.0)[None, :]
        return np.asarray(ppsr.csls(scores[None, :], r_q, r_g_row)[0], np.float32)


def _require(value: _T | None, name: str) -> _T:
    if value is None:
        raise InvalidInputError(f"{name} is not available for this index (its data was not built)")
    return value


def _pad3(first: NDArray[np.float32], cos: NDArray[np.float32], ids: NDArray[np.int64], width: int) -> Ranked:
    """One row cut or padded (``-inf`` / ``-1``) to ``width``; FAISS pads with -1 ids."""
    a = np.full(width, -np.inf, np.float32)
    c = np.full(width, -np.inf, np.float32)
    i = np.full(width, -1, np.int64)
    n = min(width, ids.size)
    a[:n], c[:n], i[:n] = first[:n], cos[:n], ids[:n]
    a[i < 0] = -np.inf
    c[i < 0] = -np.inf
    return a, c, i


def _padded(found: Found, width: int) -> Found:
    """A search's ``[Q, k']`` arrays padded to ``[Q, width]`` columns (``k' < width``: a small gallery)."""
    rows = [_pad3(found[0][j], found[1][j], found[2][j], width) for j in range(found[2].shape[0])]
    if not rows:
        return found
    return np.stack([r[0] for r in rows]), np.stack([r[1] for r in rows]), np.stack([r[2] for r in rows])
