"""CFITR coarse recall over packed hash codes (ALGORITHMS.md §3): score = minus the Hamming distance.

Codes are ``[N, bits/8]`` uint8 from :mod:`rsir.model.hashing` (16 bytes per item at 128 bits). The index is
an exact ``faiss.IndexBinaryFlat``: popcount of XOR over every stored code.

Filters: ``include`` / ``exclude`` go to FAISS as an ``IDSelector`` in ``SearchParameters`` where the
installed FAISS supports that on binary indexes (1.15 does; older releases raise "search params not
supported for this index"). Without it: ``exclude`` alone over-fetches ``k + |exclude|`` and drops the
excluded ids (exact: at most ``|exclude|`` of the unfiltered top list can go); ``include`` runs the exact
numpy :func:`hamming_subset` over the allowed rows. A small ``include`` set always takes that path (it
reads only its own rows, where FAISS would scan the whole gallery). Results are exact either way; only
the order among equal distances may differ between paths.
"""

from __future__ import annotations

from pathlib import Path

import faiss
import numpy as np
from numpy.typing import NDArray

from rsir.model.errors import InvalidInputError

# Below this many (query x allowed item) pairs an ``include`` filter is searched by numpy directly.
SUBSET_EXACT_PAIRS = 1 << 20
_CHUNK_BYTES = 1 << 25  # bound on the XOR temporary of hamming_subset (32 MiB)
_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)
_FAISS_NO_NEIGHBOUR = np.iinfo(np.int32).max  # the distance FAISS gives a -1 slot


def _hamming(queries: NDArray[np.uint8], codes: NDArray[np.uint8]) -> NDArray[np.int32]:
    """Distances ``[Q,S]`` between packed codes, by a 256-entry popcount table over XOR bytes."""
    n_q, n_s, nbytes = queries.shape[0], codes.shape[0], codes.shape[1]
    out = np.empty((n_q, n_s), dtype=np.int32)
    step = max(1, _CHUNK_BYTES // max(1, n_q * nbytes))
    for s in range(0, n_s, step):
        xor = np.bitwise_xor(queries[:, None, :], codes[None, s : s + step, :])
        out[:, s : s + step] = _POPCOUNT[xor].sum(axis=2, dtype=np.int32)
    return out


def _check_codes(codes: NDArray[np.uint8], nbytes: int | None, what: str) -> NDArray[np.uint8]:
    if codes.ndim != 2 or codes.dtype != np.uint8 or (nbytes is not None and codes.shape[1] != nbytes):
        want = f"[M,{nbytes}]" if nbytes is not None else "[M,bytes]"
        raise InvalidInputError(f"{what} must be {want} uint8 packed codes, got {codes.dtype} {codes.shape}")
    return np.ascontiguousarray(codes)


def hamming_subset(
    codes: NDArray[np.uint8], queries: NDArray[np.uint8], subset: NDArray[np.int64], k: int
) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """Exact Hamming search over the rows ``subset`` of ``codes [N,nb]`` only, in numpy.

    Returns (scores ``[Q,k]`` = minus the distance as float32, ids ``[Q,k]``), best first, equal
    distances in id order; when the subset has fewer than ``k`` rows the tail is ``-1`` / ``-inf``.
    A repeated id counts once.
    """
    codes = _check_codes(codes, None, "codes")
    queries = _check_codes(queries, codes.shape[1], "queries")
    if k < 1:
        raise InvalidInputError(f"k must be >= 1, got {k}")
    rows = np.unique(np.asarray(subset, dtype=np.int64).ravel())
    if rows.size and (rows[0] < 0 or rows[-1] >= codes.shape[0]):
        raise InvalidInputError(f"subset ids must lie in [0, {codes.shape[0]}), got {rows[0]}..{rows[-1]}")
    n_queries = queries.shape[0]
    scores = np.full((n_queries, k), -np.inf, dtype=np.float32)
    ids = np.full((n_queries, k), -1, dtype=np.int64)
    if rows.size == 0 or n_queries == 0:
        return scores, ids
    dist = _hamming(queries, codes[rows])
    kk = min(k, rows.size)
    if kk < rows.size:
        top = np.argpartition(dist, kk - 1, axis=1)[:, :kk]
        top.sort(axis=1)  # position order = id order, so the stable sort keeps ties in id order
    else:
        top = np.broadcast_to(np.arange(rows.size), (n_queries, rows.size))
    top_dist = np.take_along_axis(dist, top, axis=1)
    order = np.argsort(top_dist, axis=1, kind="stable")
    scores[:, :kk] = -np.take_along_axis(top_dist, order, axis=1).astype(np.float32)
    ids[:, :kk] = rows[np.take_along_axis(top, order, axis=1)]
    return scores, ids


class HashRecall:
    """Exact Hamming search over packed codes ``[N, bits/8]`` uint8 (``faiss.IndexBinaryFlat``)."""

    def __init__(self, codes: NDArray[np.uint8]) -> None:
        data = _check_codes(codes, None, "codes")
        if data.shape[0] == 0 or data.shape[1] == 0:
            raise InvalidInputError(f"hash recall needs a non-empty [N,bytes] matrix, got {data.shape}")
        self.bits = int(data.shape[1]) * 8
        self.index: faiss.IndexBinary = faiss.IndexBinaryFlat(self.bits)
        self.index.add(data)
        self._codes: NDArray[np.uint8] | None = None  # read back from FAISS on first use
        self._faiss_selectors: bool | None = None  # unknown until a filtered search tries them

    @classmethod
    def load(cls, path: Path) -> HashRecall:
        self = cls.__new__(cls)
        self.index = faiss.read_index_binary(str(path))
        self.bits = int(self.index.d)
        self._codes = None
        self._faiss_selectors = None
        return self

    def save(self, path: Path) -> None:
        path = Path(path)
        tmp = path.with_name(f".{path.name}.tmp")
        faiss.write_index_binary(self.index, str(tmp))
        tmp.replace(path)

    @property
    def size(self) -> int:
        return int(self.index.ntotal)

    @property
    def nbytes(self) -> int:
        return self.bits // 8

    @property
    def codes(self) -> NDArray[np.uint8]:
        """The stored codes ``[N, bits/8]`` (read back from the index after :meth:`load`)."""
        if self._codes is None:
            out = np.empty((self.size, self.nbytes), dtype=np.uint8)
            self.index.reconstruct_n(0, self.size, out)
            self._codes = out
        return self._codes

    def search(
        self,
        query_codes: NDArray[np.uint8],
        k: int,
        include: NDArray[np.int64] | None = None,
        exclude: NDArray[np.int64] | None = None,
    ) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
        """``query_codes [Q, bits/8]`` -> (scores ``[Q,k']`` = minus Hamming, ids ``[Q,k']``), best first.

        ``k' = min(k, N)``. ``exclude``: ids never returned (out-of-range ones are ignored);
        ``include``: the only ids that may be returned, less any in ``exclude`` (must lie in
        ``[0, N)``). Missing slots have id ``-1`` and score ``-inf``. Exact; among equal distances the
        order is FAISS's (or id order on the numpy path).
        """
        q = _check_codes(query_codes, self.nbytes, "query codes")
        if k < 1:
            raise InvalidInputError(f"k must be >= 1, got {k}")
        kk = min(k, self.size)
        dropped = self._in_range(exclude)
        if include is not None:
            wanted = np.unique(np.asarray(include, dtype=np.int64).ravel())
            if wanted.size and (wanted[0] < 0 or wanted[-1] >= self.size):
                raise InvalidInputError(
                    f"include ids must lie in [0, {self.size}), got {wanted[0]}..{wanted[-1]}"
                )
            allowed = np.setdiff1d(wanted, dropped, assume_unique=True) if dropped.size else wanted
            if allowed.size * max(1, q.shape[0]) > SUBSET_EXACT_PAIRS and self._faiss_selectors is not False:
                mask = np.zeros(self.size, dtype=np.bool_)
                mask[allowed] = True
                found = self._search_selected(q, kk, mask)
                if found is not None:
                    return found
            return hamming_subset(self.codes, q, allowed, kk)
        if dropped.size == 0:
            return self._plain(q, kk)
        if self._faiss_selectors is not False:
            mask = np.ones(self.size, dtype=np.bool_)
            mask[dropped] = False
            found = self._search_selected(q, kk, mask)
            if found is not None:
                return found
        return self._overfetch(q, kk, dropped)

    def _in_range(self, exclude: NDArray[np.int64] | None) -> NDArray[np.int64]:
        if exclude is None:
            return np.zeros(0, dtype=np.int64)
        ids = np.unique(np.asarray(exclude, dtype=np.int64).ravel())
        return ids[(ids >= 0) & (ids < self.size)]

    @staticmethod
    def _convert(
        dist: NDArray[np.int32], ids: NDArray[np.int64]
    ) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
        scores = -dist.astype(np.float32)
        scores[ids < 0] = -np.inf
        return scores, ids.astype(np.int64, copy=False)

    def _plain(self, q: NDArray[np.uint8], kk: int) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
        dist, ids = self.index.search(q, kk)
        return self._convert(dist, ids)

    def _search_selected(
        self, q: NDArray[np.uint8], kk: int, mask: NDArray[np.bool_]
    ) -> tuple[NDArray[np.float32], NDArray[np.int64]] | None:
        """FAISS search restricted to ``mask``; None when this FAISS cannot filter binary indexes."""
        bitmap = np.packbits(mask, bitorder="little")  # a local: must outlive the search (SWIG)
        selector = faiss.IDSelectorBitmap(bitmap.size, faiss.swig_ptr(bitmap))
        params = faiss.SearchParameters()
        params.sel = selector
        try:
            dist, ids = self.index.search(q, kk, params=params)
        except (RuntimeError, TypeError):
            self._faiss_selectors = False
            return None
        hits = ids[ids >= 0]
        if not bool(mask[hits].all()):  # a FAISS that accepted the selector but ignored it
            self._faiss_selectors = False
            return None
        self._faiss_selectors = True
        return self._convert(dist, ids)

    def _overfetch(
        self, q: NDArray[np.uint8], kk: int, dropped: NDArray[np.int64]
    ) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
        fetch = min(self.size, kk + dropped.size)
        scores, ids = self._plain(q, fetch)
        out_scores = np.full((q.shape[0], kk), -np.inf, dtype=np.float32)
        out_ids = np.full((q.shape[0], kk), -1, dtype=np.int64)
        keep = (ids >= 0) & ~np.isin(ids, dropped)
        for r in range(q.shape[0]):
            row_ids, row_scores = ids[r][keep[r]][:kk], scores[r][keep[r]][:kk]
            out_ids[r, : row_ids.size] = row_ids
            out_scores[r, : row_scores.size] = row_scores
        return out_scores, out_ids
