"""SGPD: sparse-guided partial dense recall (ALGORITHMS.md §5, [ours]), an alternative to IVF for large
galleries. Training-free.

Build:

1. a sparse code per item, the top-``k`` entries of ``relu([x; -x])`` (:func:`sparse_codes`), kept as
   an inverted index: one posting list (item ids and values) per signed dimension, so a query reads
   only the lists of its own ``k`` active dimensions;
2. k-means of the dense vectors into ``C ~ sqrt(N)`` clusters (FAISS, seeded), and each cluster's
   member list.

Query:

1. sparse search: the query's code against the inverted index -> the top ``M = 50`` hits;
2. cluster probabilities ``P(c) = sum over hits h in c of softmax(score_h / 0.1)``; clusters are taken
   by decreasing ``P`` until the cumulative probability reaches 0.9 or 4 clusters are taken
   (:func:`select_clusters`);
3. exact dense scores of the union of those clusters' members and the hits; the top-K is returned.

The hit scores fed to the softmax are, by default, the hits' exact dense (cosine) scores (``hit_scores
="dense"``: 50 dot products, on the scale the 0.1 temperature is meant for, and computed anyway for
step 3); ``hit_scores="sparse"`` uses the sparse scores that ranked them.

Cost note: a posting list holds about ``N * k / (2d)`` items, so a query with ``k`` active dimensions
reads about ``N * k^2 / (2d)`` postings (``N`` for ``k = 32``, ``d = 512``): the sparse stage is a
cheap scan of the gallery, not a sublinear one; the saving is in the dense stage.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import faiss
import numpy as np
import scipy.sparse as sp
from numpy.typing import ArrayLike, NDArray

from rsir.index.dense import allowed_mask
from rsir.model.errors import InvalidInputError

DEFAULT_K_SPARSE = 32
DEFAULT_HITS = 50
DEFAULT_TEMPERATURE = 0.1
DEFAULT_MASS = 0.9
DEFAULT_MAX_CLUSTERS = 4
KMEANS_ITERATIONS = 20
_CODE_CHUNK = 65536  # rows per block when coding (a [chunk, d] working array)
_QUERY_BLOCK = 16  # queries per sparse product: its result holds up to ~N postings (12 B) per query
_MASS_TOLERANCE = 1e-9  # 0.6 + 0.3 must count as reaching 0.9


def sparse_codes(vectors: NDArray[np.float32], k: int = DEFAULT_K_SPARSE) -> sp.csr_matrix:
    """The top-``k`` entries (values kept) of ``relu([x; -x])`` for every row of ``vectors [N, d]``.

    Returns a ``[N, 2d]`` float32 CSR matrix: column ``j < d`` holds ``x_j`` where ``x_j > 0``, column
    ``d + j`` holds ``-x_j`` where ``x_j < 0``. At most one of each pair is non-zero, so this is the
    top-``k`` of ``|x|`` with the sign choosing the column; zeros are never stored (a row with fewer
    than ``k`` non-zero entries keeps fewer). Ties at the ``k``-th value are broken arbitrarily.
    """
    X = np.asarray(vectors, dtype=np.float32)
    if X.ndim != 2:
        raise InvalidInputError(f"vectors must be [N,d], got shape {X.shape}")
    if k < 1:
        raise InvalidInputError(f"k must be >= 1, got {k}")
    N, d = X.shape
    kk = min(k, d)
    data_parts: list[NDArray[np.float32]] = []
    col_parts: list[NDArray[np.int32]] = []
    counts = np.zeros(N, dtype=np.int64)
    for start in range(0, N, _CODE_CHUNK):
        block = X[start : start + _CODE_CHUNK]
        if kk < d:
            idx = np.argpartition(-np.abs(block), kk - 1, axis=1)[:, :kk]
        else:
            idx = np.broadcast_to(np.arange(d), block.shape)
        vals = np.take_along_axis(block, idx, axis=1)
        cols = np.where(vals > 0, idx, idx + d)
        order = np.argsort(cols, axis=1)  # CSR column order within each row
        cols = np.take_along_axis(cols, order, axis=1)
        vals = np.abs(np.take_along_axis(vals, order, axis=1))
        keep = vals > 0
        counts[start : start + block.shape[0]] = keep.sum(axis=1)
        data_parts.append(vals[keep])
        col_parts.append(cols[keep].astype(np.int32))
    indptr = np.zeros(N + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    data = np.concatenate(data_parts) if data_parts else np.zeros(0, np.float32)
    cols_all = np.concatenate(col_parts) if col_parts else np.zeros(0, np.int32)
    return sp.csr_matrix((data, cols_all, indptr), shape=(N, 2 * d))


def select_clusters(
    hit_clusters: ArrayLike,
    hit_scores: ArrayLike,
    temperature: float = DEFAULT_TEMPERATURE,
    mass: float = DEFAULT_MASS,
    max_clusters: int = DEFAULT_MAX_CLUSTERS,
) -> list[int]:
    """The probabilistic cluster selection, a pure function of the hits' clusters and scores.

    ``P(c) = sum over hits h in c of softmax(score_h / temperature)`` (the softmax over all hits);
    clusters are taken by decreasing ``P`` (ties by cluster id) until the cumulative ``P`` reaches
    ``mass`` or ``max_clusters`` are taken. Hits with a negative cluster or a non-finite score
    (padding) are ignored; no hits -> ``[]``.
    """
    c = np.asarray(hit_clusters, dtype=np.int64).ravel()
    s = np.asarray(hit_scores, dtype=np.float64).ravel()
    if c.shape != s.shape:
        raise InvalidInputError(f"hit_clusters and hit_scores differ in length: {c.shape} vs {s.shape}")
    if not temperature > 0:
        raise InvalidInputError(f"temperature must be > 0, got {temperature}")
    if max_clusters < 1:
        raise InvalidInputError(f"max_clusters must be >= 1, got {max_clusters}")
    valid = np.isfinite(s) & (c >= 0)
    if not valid.any():
        return []
    z = s[valid] / temperature
    p = np.exp(z - z.max())
    p /= p.sum()
    clusters, which = np.unique(c[valid], return_inverse=True)
    P = np.bincount(which, weights=p, minlength=clusters.size)
    chosen: list[int] = []
    cumulative = 0.0
    for j in np.lexsort((clusters, -P))[:max_clusters]:
        chosen.append(int(clusters[j]))
        cumulative += float(P[j])
        if cumulative >= mass - _MASS_TOLERANCE:
            break
    return chosen


@dataclass(frozen=True)
class SGPDMemory:
    """Bytes held by the SGPD index beyond the dense vectors (which the gallery stores anyway)."""

    sparse_codes: int  # the inverted index: values, item ids, list offsets
    assignments: int  # each item's cluster
    members: int  # the items grouped by cluster, and the group offsets
    centroids: int
    total: int
    per_item: float


class SGPDRecall:
    """Sparse-guided partial dense recall over unit vectors ``[N, d]`` float32 (inner product).

    Args:
        vectors: the gallery's global vectors (kept by reference when already contiguous float32).
        k_sparse: active dimensions per sparse code.
        n_clusters: k-means clusters, ``round(sqrt(N))`` by default (clipped to ``[1, N]``).
        seed: k-means seed.
        hits: ``M``, the sparse hits guiding the cluster choice.
        temperature, mass, max_clusters: the cluster selection (see :func:`select_clusters`).
        hit_scores: ``"dense"`` (default) or ``"sparse"``: the scores of the hits fed to the softmax.
        clusters: ``(centroids [C, d], assignments [N])`` computed before (an index version stores
            them at build time): skips the k-means, the slow part of building (37.6 s at 1M).
        postings: the inverted index (:attr:`inverted`, ``[2d, N]`` CSR of ``k_sparse`` codes) computed
            before, possibly over memory-mapped arrays: skips coding every vector at load.
    """

    def __init__(
        self,
        vectors: NDArray[np.float32],
        k_sparse: int = DEFAULT_K_SPARSE,
        n_clusters: int | None = None,
        seed: int = 0,
        hits: int = DEFAULT_HITS,
        temperature: float = DEFAULT_TEMPERATURE,
        mass: float = DEFAULT_MASS,
        max_clusters: int = DEFAULT_MAX_CLUSTERS,
        hit_scores: Literal["dense", "sparse"] = "dense",
        clusters: tuple[NDArray[np.float32], NDArray[np.integer[Any]]] | None = None,
        postings: sp.csr_matrix | None = None,
    ) -> None:
        data = np.ascontiguousarray(vectors, dtype=np.float32)
        if data.ndim != 2 or data.shape[0] == 0:
            raise InvalidInputError(f"SGPD needs a non-empty [N,d] matrix, got shape {data.shape}")
        for name, value in (("k_sparse", k_sparse), ("hits", hits), ("max_clusters", max_clusters)):
            if value < 1:
                raise InvalidInputError(f"{name} must be >= 1, got {value}")
        if not temperature > 0:
            raise InvalidInputError(f"temperature must be > 0, got {temperature}")
        if not 0.0 < mass <= 1.0:
            raise InvalidInputError(f"mass must be in (0, 1], got {mass}")
        if hit_scores not in ("dense", "sparse"):
            raise InvalidInputError(f"hit_scores must be 'dense' or 'sparse', got {hit_scores!r}")
        self.vectors = data
        self.size, self.dim = int(data.shape[0]), int(data.shape[1])
        self.k_sparse, self.hits = k_sparse, hits
        self.temperature, self.mass, self.max_clusters = temperature, mass, max_clusters
        self.hit_scores = hit_scores

        # Row j of the transposed codes is dimension j's posting list (item ids and values).
        if postings is None:
            postings = sparse_codes(data, k_sparse).T.tocsr()
        elif postings.shape != (2 * self.dim, self.size):
            raise InvalidInputError(
                f"SGPD postings {postings.shape} do not fit {self.size} vectors of dim {self.dim}"
            )
        self.inverted: sp.csr_matrix = postings

        index_dtype = np.int32 if self.size < 2**31 else np.int64
        if clusters is None:
            wanted = round(math.sqrt(self.size)) if n_clusters is None else n_clusters
            self.n_clusters = min(max(int(wanted), 1), self.size)
            kmeans = faiss.Kmeans(
                self.dim, self.n_clusters, niter=KMEANS_ITERATIONS, seed=seed, spherical=True
            )
            kmeans.train(data)
            self.centroids = np.ascontiguousarray(kmeans.centroids, dtype=np.float32)
            _, nearest = kmeans.index.search(data, 1)
            self.assignments = nearest[:, 0].astype(index_dtype)
        else:
            centroids, assignments = clusters
            if (
                centroids.ndim != 2
                or centroids.shape[1] != self.dim
                or assignments.shape != (self.size,)
                or (self.size and not 0 <= int(assignments.min()) <= int(assignments.max()) < len(centroids))
            ):
                raise InvalidInputError(
                    f"SGPD clusters {centroids.shape} / {assignments.shape} do not fit {self.size} "
                    f"vectors of dim {self.dim}"
                )
            self.n_clusters = int(centroids.shape[0])
            self.centroids = np.ascontiguousarray(centroids, dtype=np.float32)
            self.assignments = np.asarray(assignments).astype(index_dtype)
        self.members = np.argsort(self.assignments, kind="stable").astype(index_dtype)
        self.member_offsets = np.zeros(self.n_clusters + 1, dtype=np.int64)
        np.cumsum(np.bincount(self.assignments, minlength=self.n_clusters), out=self.member_offsets[1:])

    def cluster_members(self, cluster: int) -> NDArray[np.int64]:
        """The ids of one cluster's members, ascending."""
        lo, hi = self.member_offsets[cluster], self.member_offsets[cluster + 1]
        return self.members[lo:hi].astype(np.int64)

    def select_clusters(
        self, hit_ids: ArrayLike, hit_scores: ArrayLike, max_clusters: int | None = None
    ) -> list[int]:
        """:func:`select_clusters` for hits given as item ids (``-1`` = padding, ignored)."""
        ids = np.asarray(hit_ids, dtype=np.int64).ravel()
        clusters = np.where(ids >= 0, self.assignments[np.clip(ids, 0, self.size - 1)], -1)
        return select_clusters(
            clusters,
            hit_scores,
            self.temperature,
            self.mass,
            self.max_clusters if max_clusters is None else max_clusters,
        )

    def candidates(
        self,
        queries: NDArray[np.float32],
        include: NDArray[np.int64] | None = None,
        exclude: NDArray[np.int64] | None = None,
        max_clusters: int | None = None,
    ) -> list[NDArray[np.int64]]:
        """Per query, the ids :meth:`search` scores exactly (ascending): the members of the selected
        clusters and the sparse hits, all allowed by ``include`` / ``exclude``. Its length is the
        dense work a query costs."""
        q = self._queries(queries)
        allowed = self._allowed(include, exclude)
        return [cand for _, cand in self._candidates(q, allowed, max_clusters)]

    def search(
        self,
        queries: NDArray[np.float32],
        k: int,
        include: NDArray[np.int64] | None = None,
        exclude: NDArray[np.int64] | None = None,
        max_clusters: int | None = None,
    ) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
        """``queries [Q,d]`` -> (scores ``[Q,k']``, ids ``[Q,k']``), best first, ``k' = min(k, N)``.

        Scores are exact inner products of the candidates (:meth:`candidates`); equal scores are in id
        order. ``exclude``: ids never returned; ``include``: the only ids that may be hits or
        candidates (less ``exclude``). Missing slots are id ``-1``, score ``-inf``.
        ``max_clusters`` overrides the constructor's cap for this call.
        """
        if k < 1:
            raise InvalidInputError(f"k must be >= 1, got {k}")
        q = self._queries(queries)
        allowed = self._allowed(include, exclude)
        kk = min(k, self.size)
        scores = np.full((q.shape[0], kk), -np.inf, dtype=np.float32)
        ids = np.full((q.shape[0], kk), -1, dtype=np.int64)
        for i, cand in self._candidates(q, allowed, max_clusters):
            if cand.size == 0:
                continue
            sims = self.vectors[cand] @ q[i]
            if cand.size > kk:
                top = np.argpartition(-sims, kk - 1)[:kk]
                cand, sims = cand[top], sims[top]
            order = np.lexsort((cand, -sims))
            scores[i, : cand.size] = sims[order]
            ids[i, : cand.size] = cand[order]
        return scores, ids

    def memory_bytes(self) -> SGPDMemory:
        """What the index holds besides the dense vectors, in bytes, and per gallery item."""
        inv = self.inverted
        sparse_bytes = int(inv.data.nbytes + inv.indices.nbytes + inv.indptr.nbytes)
        assignments = int(self.assignments.nbytes)
        members = int(self.members.nbytes + self.member_offsets.nbytes)
        centroids = int(self.centroids.nbytes)
        total = sparse_bytes + assignments + members + centroids
        return SGPDMemory(sparse_bytes, assignments, members, centroids, total, total / self.size)

    # -- internals ---------------------------------------------------------------------------------

    def _queries(self, queries: NDArray[np.float32]) -> NDArray[np.float32]:
        q = np.ascontiguousarray(queries, dtype=np.float32)
        if q.ndim != 2 or q.shape[1] != self.dim:
            raise InvalidInputError(f"queries must be [Q,{self.dim}], got shape {q.shape}")
        return q

    def _allowed(
        self, include: NDArray[np.int64] | None, exclude: NDArray[np.int64] | None
    ) -> NDArray[np.bool_] | None:
        """A boolean mask over the gallery, or None when every id is allowed."""
        if include is None and (exclude is None or exclude.size == 0):
            return None
        return allowed_mask(self.size, include, exclude)

    def _candidates(
        self, q: NDArray[np.float32], allowed: NDArray[np.bool_] | None, max_clusters: int | None
    ) -> list[tuple[int, NDArray[np.int64]]]:
        cap = self.max_clusters if max_clusters is None else max_clusters
        if cap < 1:
            raise InvalidInputError(f"max_clusters must be >= 1, got {cap}")
        out: list[tuple[int, NDArray[np.int64]]] = []
        for start in range(0, q.shape[0], _QUERY_BLOCK):
            block = q[start : start + _QUERY_BLOCK]
            sparse = sparse_codes(block, self.k_sparse) @ self.inverted  # [B, N], postings read only
            for b in range(block.shape[0]):
                lo, hi = sparse.indptr[b], sparse.indptr[b + 1]
                hit_ids = np.asarray(sparse.indices[lo:hi], dtype=np.int64)
                hit_vals = np.asarray(sparse.data[lo:hi], dtype=np.float32)
                if allowed is not None:
                    keep = allowed[hit_ids]
                    hit_ids, hit_vals = hit_ids[keep], hit_vals[keep]
                if hit_ids.size > self.hits:
                    top = np.argpartition(-hit_vals, self.hits - 1)[: self.hits]
                    hit_ids, hit_vals = hit_ids[top], hit_vals[top]
                guide = self.vectors[hit_ids] @ block[b] if self.hit_scores == "dense" else hit_vals
                chosen = self.select_clusters(hit_ids, guide, cap)
                parts = [hit_ids, *(self.cluster_members(c) for c in chosen)]
                cand = np.unique(np.concatenate(parts))
                if allowed is not None:
                    cand = cand[allowed[cand]]
                out.append((start + b, cand))
        return out
