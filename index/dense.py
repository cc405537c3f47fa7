"""Stage 1: text-agnostic recall of the top-K gallery items by inner product of global vectors.

The FAISS index type comes from a factory string. ``"auto"`` picks exact search below
``EXACT_LIMIT`` vectors (it is fast enough there and loses nothing) and IVF above, with about
``sqrt(N)`` lists trained on a sample. Per-request knobs (``nprobe``) are passed as FAISS
``SearchParameters`` to each call, never set on the shared index (a race under concurrency).
"""

from __future__ import annotations

import math
import os
import threading
from pathlib import Path

import faiss
import numpy as np
from numpy.typing import NDArray

from rsir.model.errors import InvalidInputError

EXACT_LIMIT = 100_000
TRAIN_SAMPLE_PER_LIST = 64  # FAISS warns below 39 training points per centroid
DEFAULT_NPROBE = 16


def auto_factory(n: int) -> str:
    """The factory string ``"auto"`` resolves to for ``n`` vectors.

    ``sqrt(N)`` lists rather than FAISS's suggested ``4-16 sqrt(N)``: searched at the fixed default
    nprobe, 4 sqrt(N) lists recalled 0.931 of the exact top-100 at 1M vectors against 0.997 for
    sqrt(N), at about the same time per query and a ninth of the build time (BENCHMARKS.md, recall
    at scale). Any other layout is one ``--factory`` string away."""
    if n < EXACT_LIMIT:
        return "Flat"
    return f"IVF{round(math.sqrt(n))},Flat"


def _index_from_factory(dim: int, factory: str) -> faiss.Index:
    try:
        return faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as exc:
        raise InvalidInputError(f"invalid FAISS factory string {factory!r}: {exc}") from exc


def check_factory(dim: int, factory: str) -> None:
    """Fail fast on a factory string FAISS cannot parse (before an hour of embedding, not after)."""
    if factory != "auto":
        _index_from_factory(dim, factory)


def gpu_count() -> int:
    """GPUs FAISS can use: 0 with faiss-cpu, or with faiss-gpu on a machine without a GPU."""
    get = getattr(faiss, "get_num_gpus", None)
    return int(get()) if get is not None else 0


def _to_gpus(index: faiss.Index) -> faiss.Index | None:
    """A GPU clone of ``index`` for training/adding, or None (no GPU, or a type FAISS has no GPU
    version of, such as HNSW)."""
    if gpu_count() == 0:
        return None
    try:
        return faiss.index_cpu_to_all_gpus(index)
    except (RuntimeError, AttributeError):
        return None


class DenseRecall:
    """Inner-product search over unit vectors (cosine); ``vectors [N,d]`` float32.

    ``factory``: a FAISS factory string (``"Flat"``, ``"IVF1024,Flat"``, ``"IVF1024,PQ32"``,
    ``"HNSW32"``...) or ``"auto"``.
    """

    def __init__(
        self, vectors: NDArray[np.float32], factory: str = "auto", seed: int = 0, use_gpu: bool = True
    ) -> None:
        if vectors.ndim != 2 or vectors.shape[0] == 0:
            raise InvalidInputError(f"recall needs a non-empty [N,d] matrix, got shape {vectors.shape}")
        data = np.ascontiguousarray(vectors, dtype=np.float32)
        self.dim = int(data.shape[1])
        self.factory = auto_factory(data.shape[0]) if factory == "auto" else factory
        self.index = _index_from_factory(self.dim, self.factory)
        # Training (k-means) and adding run on the GPUs when FAISS has them; the kept index is a CPU
        # copy, so saving, loading and per-request SearchParameters work the same everywhere.
        work = _to_gpus(self.index) if use_gpu else None
        target = work if work is not None else self.index
        if not target.is_trained:
            rng = np.random.default_rng(seed)
            ivf = faiss.try_extract_index_ivf(self.index)
            centroids = ivf.nlist if ivf is not None else 256  # 256: a PQ codebook's size
            sample = min(data.shape[0], centroids * TRAIN_SAMPLE_PER_LIST)
            target.train(data[np.sort(rng.choice(data.shape[0], sample, replace=False))])
        target.add(data)
        if work is not None:
            self.index = faiss.index_gpu_to_cpu(work)

    @classmethod
    def load(cls, path: Path, mmap: bool = False) -> DenseRecall:
        """Read a saved index. ``mmap``: map its vectors and lists from the file instead of reading
        them into private memory (a server's choice: its pages are the kernel's cache, shared with
        the next version and evictable, and opening costs no read). A mapped index is read-only:
        FAISS aborts the whole process on ``add`` to it, so a builder that extends an index loads it
        without ``mmap``."""
        self = cls.__new__(cls)
        self.index = faiss.read_index(str(path), faiss.IO_FLAG_MMAP_IFC if mmap else 0)
        if mmap:
            prefetch(Path(path))
        self.dim = int(self.index.d)
        self.factory = "loaded"
        return self

    def save(self, path: Path) -> None:
        tmp = path.with_name(f".{path.name}.tmp")
        faiss.write_index(self.index, str(tmp))
        tmp.replace(path)

    @property
    def size(self) -> int:
        return int(self.index.ntotal)

    def search(
        self,
        queries: NDArray[np.float32],
        k: int,
        nprobe: int | None = None,
        exclude: NDArray[np.int64] | None = None,
        include: NDArray[np.int64] | None = None,
    ) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
        """``queries [Q,d]`` -> (scores ``[Q,k']``, ids ``[Q,k']``), best first, equal scores in id
        order (:func:`in_tie_order`), ``k' = min(k, N)``.

        ``nprobe`` (IVF only): lists visited for this call; more is slower and closer to exact.
        ``exclude``: ids never returned (deleted items); ``include``: the only ids that may be returned
        (a metadata filter's survivors), less any in ``exclude``. FAISS skips the others while
        searching, so the result still has ``k`` allowed items when there are that many. Missing slots
        have id ``-1``.
        """
        if queries.ndim != 2 or queries.shape[1] != self.dim:
            raise InvalidInputError(f"queries must be [Q,{self.dim}], got shape {queries.shape}")
        if k < 1:
            raise InvalidInputError(f"k must be >= 1, got {k}")
        q = np.ascontiguousarray(queries, dtype=np.float32)
        kk = min(k, self.size)
        kwargs: dict[str, object] = {}
        # `bitmap` and `batch` are locals so that they outlive the search: SWIG keeps no reference to
        # them for `sel` (and `swig_ptr` is a bare pointer into the numpy buffer).
        if include is not None:
            bitmap = self._allowed_bitmap(include, exclude)
            kwargs["sel"] = faiss.IDSelectorBitmap(bitmap.size, faiss.swig_ptr(bitmap))
        elif exclude is not None and exclude.size:
            batch = faiss.IDSelectorBatch(np.ascontiguousarray(exclude, dtype=np.int64))
            kwargs["sel"] = faiss.IDSelectorNot(batch)
        params: faiss.SearchParameters | None = None
        if faiss.try_extract_index_ivf(self.index) is not None:
            kwargs["nprobe"] = nprobe or DEFAULT_NPROBE
            params = faiss.SearchParametersIVF(**kwargs)
        elif kwargs:
            params = faiss.SearchParameters(**kwargs)
        # FAISS keeps an arbitrary subset of the items tied with the k-th score, so the search goes
        # one deeper and, while the extra one still ties, deeper again: then every tied item is in
        # hand and the cut keeps the lowest ids, as a stable sort of all the scores would.
        fetch = min(kk + 1, self.size)
        while True:
            scores, ids = self.index.search(q, fetch, params=params)
            if fetch <= kk or fetch >= self.size:
                break
            last, kth = scores[:, -1], scores[:, kk - 1]
            if not bool(((last < kth) | (ids[:, -1] < 0)).all()):
                fetch = min(self.size, 2 * fetch)
                continue
            break
        scores, ids = in_tie_order(scores, ids)
        return scores[:, :kk], ids[:, :kk]

    def _allowed_bitmap(
        self, include: NDArray[np.int64], exclude: NDArray[np.int64] | None
    ) -> NDArray[np.uint8]:
        """One bit per id, set for ``include`` minus ``exclude``: FAISS tests a bit in O(1) whatever the
        set's size, where a hash set (``IDSelectorBatch``) of a million survivors costs its building."""
        return np.packbits(allowed_mask(self.size, include, exclude), bitorder="little")


def prefetch(path: Path) -> None:
    """Ask the kernel to read ``path`` into its page cache, in the background: a mapped index's first
    queries then scan lists from memory instead of waiting on the disk (every IVF query reads ~2% of
    the lists: ~48 MB at 1M vectors of d = 512). Nothing is read into this process's memory, and
    opening does not wait for it; where the call is missing (not Linux) nothing happens."""
    advise = getattr(os, "posix_fadvise", None)
    if advise is None:
        return

    def run() -> None:
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            return
        try:
            advise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
        except OSError:
            pass
        finally:
            os.close(fd)

    threading.Thread(target=run, name=f"prefetch {path.name}", daemon=True).start()


def allowed_mask(
    size: int, include: NDArray[np.int64] | None, exclude: NDArray[np.int64] | None
) -> NDArray[np.bool_]:
    """A mask over ``size`` ids: ``include`` (None: every id) minus ``exclude`` (ids outside the
    range are ignored there; in ``include`` they are an error)."""
    if include is None:
        mask = np.ones(size, dtype=np.bool_)
    else:
        wanted = np.asarray(include, dtype=np.int64).ravel()
        if wanted.size and (wanted.min() < 0 or wanted.max() >= size):
            raise InvalidInputError(
                f"include ids must lie in [0, {size}), got {wanted.min()}..{wanted.max()}"
            )
        mask = np.zeros(size, dtype=np.bool_)
        mask[wanted] = True
    if exclude is not None and exclude.size:
        dropped = np.asarray(exclude, dtype=np.int64).ravel()
        mask[dropped[(dropped >= 0) & (dropped < size)]] = False
    return mask


def in_tie_order(
    scores: NDArray[np.float32], ids: NDArray[np.int64]
) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """Each row best first with equal scores in ascending id order, ``-1`` slots last.

    Every search mode breaks ties this way (lower gallery index first, as a stable sort does), so
    that a two-stage search over the whole gallery equals the exhaustive one exactly. faiss-cpu
    1.15's ``IndexFlatIP`` keeps the lowest tied ids at the cut but lists them highest id first.
    """
    s = np.asarray(scores, np.float32)
    i = np.asarray(ids, np.int64)
    # lexsort's last key is the primary one; -1 padding sorts after every real id and score.
    order = np.lexsort((np.where(i < 0, np.iinfo(np.int64).max, i), np.where(i < 0, np.inf, -s)), axis=-1)
    return np.take_along_axis(s, order, -1), np.take_along_axis(i, order, -1)


def by_score(scores: NDArray[np.floating], ids: NDArray[np.int64]) -> NDArray[np.int64]:
    """Positions of one row's candidates by descending score, ties by ascending id, ``-1`` ids last."""
    id_key = np.where(ids < 0, np.iinfo(np.int64).max, ids)
    return np.lexsort((id_key, np.where(ids < 0, np.inf, -np.asarray(scores, np.float64)))).astype(np.int64)


def pair_cosines(queries: NDArray[np.float32], candidates: NDArray[np.float32]) -> NDArray[np.float32]:
    """``[Q,K]`` inner products of each query ``[Q,d]`` with its own candidates ``[Q,K,d]``.

    Summed in float64 and rounded once to float32, so a pair gets the same float32 score however
    many queries and candidates are scored together (a float32 GEMM's rounding depends on the
    blocking its shape picks): a two-stage search and the exhaustive one then fuse identical
    coarse scores, and SAR compares a query's score with the stored one on equal terms.
    """
    out = np.einsum("qkd,qd->qk", np.asarray(candidates, np.float64), np.asarray(queries, np.float64))
    scores: NDArray[np.float32] = out.astype(np.float32)
    return scores


def exact_subset(
    vectors: NDArray[np.float32], queries: NDArray[np.float32], subset: NDArray[np.int64], k: int
) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """Exact inner-product search over the rows ``subset`` of ``vectors [N,d]`` only.

    Returns (scores ``[Q,k]``, ids ``[Q,k]``), best first; when the subset has
    fewer than ``k`` rows the tail is padded with id ``-1`` and score ``-inf``. For a small filtered
    subset this reads and scores only its rows, where an index search would visit the whole gallery.
    """
    if vectors.ndim != 2:
        raise InvalidInputError(f"vectors must be [N,d], got shape {vectors.shape}")
    d = vectors.shape[1]
    if queries.ndim != 2 or queries.shape[1] != d:
        raise InvalidInputError(f"queries must be [Q,{d}], got shape {queries.shape}")
    if k < 1:
        raise InvalidInputError(f"k must be >= 1, got {k}")
    rows = np.unique(np.asarray(subset, dtype=np.int64).ravel())  # a repeated id is one candidate
    if rows.size and (rows[0] < 0 or rows[-1] >= vectors.shape[0]):
        raise InvalidInputError(f"subset ids must lie in [0, {vectors.shape[0]}), got {rows[0]}..{rows[-1]}")
    n_queries = queries.shape[0]
    scores = np.full((n_queries, k), -np.inf, dtype=np.float32)
    ids = np.full((n_queries, k), -1, dtype=np.int64)
    if rows.size == 0:
        return scores, ids
    sims = np.asarray(queries, dtype=np.float32) @ np.asarray(vectors[rows], dtype=np.float32).T
    kk = min(k, rows.size)
    # A full stable sort, not argpartition: the cut must keep the lowest ids among scores tied at
    # the k-th, and argpartition picks any of them. ``rows`` is ascending, so position order is id order.
    order = np.argsort(-sims, axis=1, kind="stable")[:, :kk]
    scores[:, :kk] = np.take_along_axis(sims, order, axis=1)
    ids[:, :kk] = rows[order]
    return scores, ids
