"""Recall quality at scale: FAISS IVF, CFITR hash and SGPD against exact search (issue 7).

For each gallery size ``N`` (generated vectors) and, optionally, one gallery of real model vectors:

- ground truth: the exact top-100 of every query by FAISS ``Flat`` (inner product; also timed);
- IVF-Flat with ``nlist = round(sqrt(N))`` (SGPD's cluster count), ``nprobe`` 4 (= SGPD's cluster cap:
  "equal probes", ALGORITHMS.md §5) and 16 (from 100k items on, what ``--factory auto`` builds);
  and ``IVF{4 sqrt N},Flat`` (FAISS's suggested lower bound, ``auto``'s layout before 2026-12-01) at
  the default nprobe 16, and at 32 and 64;
- CFITR hash recall (ALGORITHMS.md §3): 128-bit heads trained on separate (item, noisy copy) pairs; the
  Hamming top-100, and the Hamming top-1000 re-scored by exact cosine and cut to 100 (the hash as a
  candidate generator);
- SGPD (ALGORITHMS.md §5) with its defaults (``k_sparse`` 32, ``C = round(sqrt(N))``, 50 hits,
  temperature 0.1, mass 0.9, at most 4 clusters), and with the cap raised to 16 clusters.

Each method reports recall@100 (mean over queries of ``|approx top-100 & exact top-100| / 100``), ms per
query with all queries in one call, the median ms of single-query calls, the dense vectors scored per
query, build seconds and bytes per gallery item.

Generated data (``--dim`` 256, the shipped model's): a two-level Gaussian mixture on the unit sphere.
40 "classes" (random unit centres); 2,000 clusters, each centred near one class's centre
(``unit(class + 0.8 g / sqrt(d))``, cosine ~0.8 to it), with log-normal sizes; an item is
``unit(centre + s g / sqrt(d))`` with a per-cluster spread ``s ~ U(0.3, 0.6)``. Queries are "text-like":
a random gallery item plus isotropic noise, ``unit(x + 0.6 n)`` with ``|n| = 1`` (a cross-modal gap).

Real data (``--real``, an index version directory): the gallery is its image vectors; queries are
captions of 1,000 held-out images (one caption each); the hash heads are trained on the captions of the
other images, so no query caption and no caption of a query's image is seen in training.

``--methods ivf`` (a comma list of ivf, hash, sgpd) runs only some of them beside exact search.

Run::

    .venv/bin/python -m bench.recall_scale --sizes 100000 1000000 --real data/index20k/v0001 \\
        --out bench/results/recall_scale.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import statistics
import time
from collections.abc import Callable, Sequence
from datetime import date
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import torch
from numpy.typing import NDArray

from rsir.index.dense import DEFAULT_NPROBE, DenseRecall
from rsir.index.hash_codes import HashRecall
from rsir.index.sgpd import SGPDRecall
from rsir.model.hashing import HashHeads, train_hash_heads

K = 100
HASH_FETCH = 1000  # Hamming candidates re-scored exactly
HASH_BITS = 128
N_CLASSES = 40
ITEMS_PER_CLUSTER = 50  # mean cluster size when the cluster count scales with N
CLASS_SPREAD = 0.8
ITEM_SPREAD = (0.3, 0.6)
QUERY_NOISE = 0.6
HASH_TRAIN_ITEMS = 50_000
SINGLE_QUERIES = 50
CANDIDATE_QUERIES = 200  # queries whose SGPD candidate counts are averaged
_GEN_CHUNK = 100_000
_RESCORE_CHUNK = 100
_TRAIN_THREADS = torch.get_num_threads()
METHODS = ("ivf", "hash", "sgpd", "pq", "hnsw")
PQ_SHORTLIST = 1000  # IVF-PQ candidates re-scored by exact inner product
HNSW_M = 32
HNSW_EF = (64, 128, 256)

F32 = NDArray[np.float32]
I64 = NDArray[np.int64]
SearchFn = Callable[[F32], tuple[Any, I64]]


def unit(x: NDArray[np.floating]) -> F32:
    x = np.asarray(x, dtype=np.float32)
    out: F32 = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


# -- generated data ------------------------------------------------------------------------------


class Mixture:
    """Clusters under the shared classes: a centre near one class's centre, a weight, an item spread."""

    def __init__(self, classes: F32, n_clusters: int, rng: np.random.Generator) -> None:
        self.dim = int(classes.shape[1])
        self.n_clusters = n_clusters
        owner = rng.integers(0, classes.shape[0], n_clusters)
        noise = rng.standard_normal((n_clusters, self.dim)) / math.sqrt(self.dim)
        self.centres = unit(classes[owner] + CLASS_SPREAD * noise)
        weights = rng.lognormal(0.0, 0.5, n_clusters)
        self.weights = weights / weights.sum()
        self.spread = rng.uniform(*ITEM_SPREAD, n_clusters).astype(np.float32)

    def items(self, n: int, rng: np.random.Generator) -> F32:
        out = np.empty((n, self.dim), dtype=np.float32)
        labels = rng.choice(self.n_clusters, n, p=self.weights)
        for s in range(0, n, _GEN_CHUNK):
            lab = labels[s : s + _GEN_CHUNK]
            noise = rng.standard_normal((lab.size, self.dim), dtype=np.float32)
            noise *= self.spread[lab, None] / math.sqrt(self.dim)
            out[s : s + lab.size] = unit(self.centres[lab] + noise)
        return out


class World:
    """The classes every generated set shares, and the cluster mixture of a set of ``n`` items.

    ``clusters > 0``: one fixed mixture of that many clusters for every set; ``0``: a mixture of its own
    per size, with ``round(n / items_per_cluster)`` clusters (seeded by ``n``).
    """

    def __init__(
        self, dim: int, seed: int, clusters: int = 0, items_per_cluster: int = ITEMS_PER_CLUSTER
    ) -> None:
        rng = np.random.default_rng([seed, 0])
        self.dim, self.seed = dim, seed
        self.clusters, self.items_per_cluster = clusters, items_per_cluster
        self.classes = unit(rng.standard_normal((N_CLASSES, dim)))
        self.fixed = Mixture(self.classes, clusters, rng) if clusters > 0 else None

    def mixture(self, n: int) -> Mixture:
        if self.fixed is not None:
            return self.fixed
        wanted = max(1, round(n / self.items_per_cluster))
        return Mixture(self.classes, wanted, np.random.default_rng([self.seed, 0, n]))

    def items(self, n: int, rng: np.random.Generator) -> F32:
        return self.mixture(n).items(n, rng)


def noisy_copies(x: F32, rng: np.random.Generator, noise: float = QUERY_NOISE) -> F32:
    """``unit(x + noise * n)``, ``n`` a random unit vector per row."""
    out = np.empty_like(x)
    for s in range(0, x.shape[0], _GEN_CHUNK):
        block = x[s : s + _GEN_CHUNK]
        n = unit(rng.standard_normal(block.shape, dtype=np.float32))
        out[s : s + block.shape[0]] = unit(block + noise * n)
    return out


# -- measurements --------------------------------------------------------------------------------


def recall_at(approx: I64, exact: I64, k: int = K) -> float:
    """Mean over queries of ``|approx[:, :k] & exact[:, :k]| / k`` (``-1`` slots never match)."""
    hits = [np.intersect1d(a[:k][a[:k] >= 0], e[:k]).size for a, e in zip(approx, exact, strict=True)]
    return float(np.mean(hits)) / k


def own_in_top(ids: I64, owners: I64, k: int = K) -> float:
    """Fraction of queries whose own (paired) item is in their top-``k``."""
    return float(np.mean([o in row[:k] for row, o in zip(ids, owners, strict=True)]))


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def single_ms(search: SearchFn, queries: F32) -> float:
    """Median ms of one-query calls over the first ``SINGLE_QUERIES`` queries, FAISS on one thread.

    One thread: on a shared 2-core VM a 2-thread OpenMP region waits for whichever thread the kernel has
    descheduled, which put ~30 ms on every single FAISS query while other jobs ran; a latency-bound
    service answering concurrent requests would run each on one thread anyway.
    """
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    times = []
    try:
        for i in range(min(SINGLE_QUERIES, queries.shape[0])):
            t0 = time.perf_counter()
            search(queries[i : i + 1])
            times.append(time.perf_counter() - t0)
    finally:
        faiss.omp_set_num_threads(threads)
    return 1000 * statistics.median(times)


def rescore(vectors: F32, queries: F32, cand: I64, k: int = K) -> I64:
    """Per query, its candidates ranked by exact inner product, the top ``k`` kept."""
    out = np.full((queries.shape[0], k), -1, dtype=np.int64)
    for s in range(0, queries.shape[0], _RESCORE_CHUNK):
        ids = cand[s : s + _RESCORE_CHUNK]
        safe = np.where(ids >= 0, ids, 0)
        sims = np.einsum("qkd,qd->qk", vectors[safe], queries[s : s + _RESCORE_CHUNK])
        sims[ids < 0] = -np.inf
        order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
        out[s : s + ids.shape[0], : order.shape[1]] = np.take_along_axis(ids, order, axis=1)
    return out


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


class Case:
    """One gallery and its queries, the exact top-100 and what every row shares."""

    def __init__(self, data: str, gallery: F32, queries: F32, owners: I64 | None, seed: int) -> None:
        self.data, self.gallery, self.queries, self.owners, self.seed = data, gallery, queries, owners, seed
        self.n, self.dim = int(gallery.shape[0]), int(gallery.shape[1])
        self.nlist = round(math.sqrt(self.n))
        self.exact = np.zeros((0, K), dtype=np.int64)
        self.rows: list[dict[str, Any]] = []

    def add(
        self,
        method: str,
        ids: I64,
        batch_s: float,
        single: float,
        build_s: float,
        bytes_per_item: float,
        memory_note: str,
        scored: float | None,
    ) -> None:
        """One method's row (recall@100 against :attr:`exact`), printed as it is measured."""
        out: dict[str, Any] = {
            "data": self.data,
            "n": self.n,
            "method": method,
            "recall_at_100": recall_at(ids, self.exact),
            "ms_per_query_batch": 1000 * batch_s / ids.shape[0],
            "ms_single_median": single,
            "dense_scored_per_query": scored,
            "build_s": build_s,
            "bytes_per_item": bytes_per_item,
            "memory_counted": memory_note,
        }
        if self.owners is not None:
            out["own_item_in_top100"] = own_in_top(ids, self.owners)
        print(
            f"  {self.data:<10} N={self.n:>9,} {method:<34} R@100={out['recall_at_100']:.4f} "
            f"batch={out['ms_per_query_batch']:8.3f} ms single={single:8.3f} ms build={build_s:7.1f} s "
            f"bytes/item={bytes_per_item:8.1f} scored={scored if scored is None else round(scored)}",
            flush=True,
        )
        self.rows.append(out)


def run_exact(case: Case) -> dict[str, Any]:
    """Exact search (FAISS Flat): the ground truth; returns its timings."""
    t0 = time.perf_counter()
    flat = DenseRecall(case.gallery, "Flat", seed=case.seed, use_gpu=False)
    build = time.perf_counter() - t0
    t0 = time.perf_counter()
    _, case.exact = flat.search(case.queries, K)
    batch = time.perf_counter() - t0
    single = single_ms(lambda q: flat.search(q, K), case.queries)
    case.add("exact (FAISS Flat)", case.exact, batch, single, build, 4 * case.dim, "float32 vectors", case.n)
    return {"data": case.data, "n": case.n, "build_s": build, "search_s": batch, "queries": len(case.queries)}


def run_ivf(case: Case) -> None:
    """IVF-Flat with ``nlist = round(sqrt(N))`` at nprobe 4 and 16, and with ``4 sqrt(N)`` lists at the
    service's default nprobe and deeper (the two layouts ``--factory auto`` has had above 100k items)."""
    wide = int(4 * math.sqrt(case.n))
    configs: list[tuple[str, int, tuple[int, ...]]] = [
        (f"IVF{case.nlist},Flat", case.nlist, (4, 16)),
        (f"IVF{wide},Flat", wide, (DEFAULT_NPROBE, 2 * DEFAULT_NPROBE, 4 * DEFAULT_NPROBE)),
    ]
    for factory, nlist, probes in configs:
        t0 = time.perf_counter()
        ivf = DenseRecall(case.gallery, factory, seed=case.seed, use_gpu=False)
        build = time.perf_counter() - t0
        index = faiss.extract_index_ivf(ivf.index)
        invlists = index.invlists
        assert invlists is not None
        sizes = np.array([invlists.list_size(i) for i in range(nlist)], dtype=np.int64)
        ivf_bytes = 4 * case.dim + 8 + nlist * case.dim * 4 / case.n
        for nprobe in probes:
            t0 = time.perf_counter()
            _, ids = ivf.search(case.queries, K, nprobe=nprobe)
            batch = time.perf_counter() - t0
            single = single_ms(lambda q, p=nprobe, r=ivf: r.search(q, K, nprobe=p), case.queries)  # type: ignore[misc]
            _, lists = index.quantizer.search(case.queries, nprobe)
            scanned = float(sizes[lists].sum(axis=1).mean())
            case.add(f"{factory} nprobe={nprobe}", ids, batch, single, build, ivf_bytes,
                     "float32 vectors + int64 id + centroids", scanned)  # fmt: skip


def run_pq(case: Case) -> None:
    """IVF-PQ and OPQ + IVF-PQ (``d/8`` bytes a vector, ``sqrt(N)`` lists, the default nprobe and 4x),
    alone and with their top-``PQ_SHORTLIST`` re-scored by exact inner product over the float32
    vectors (which a version keeps on disk anyway: the shortlist reads 1,000 rows a query)."""
    sub = case.dim // 8
    for factory in (f"IVF{case.nlist},PQ{sub}", f"OPQ{sub},IVF{case.nlist},PQ{sub}"):
        t0 = time.perf_counter()
        pq = DenseRecall(case.gallery, factory, seed=case.seed, use_gpu=False)
        build = time.perf_counter() - t0
        code_bytes = sub + 8 + case.nlist * case.dim * 4 / case.n
        for nprobe in (DEFAULT_NPROBE, 4 * DEFAULT_NPROBE):
            t0 = time.perf_counter()
            _, ids = pq.search(case.queries, K, nprobe=nprobe)
            batch = time.perf_counter() - t0
            single = single_ms(lambda q, p=nprobe, r=pq: r.search(q, K, nprobe=p), case.queries)  # type: ignore[misc]
            case.add(f"{factory} nprobe={nprobe}", ids, batch, single, build, code_bytes,
                     "PQ codes + int64 id + centroids", None)  # fmt: skip

            def shortlist(q: F32, p: int = nprobe, r: DenseRecall = pq) -> tuple[None, I64]:
                return None, rescore(case.gallery, q, r.search(q, PQ_SHORTLIST, nprobe=p)[1])

            t0 = time.perf_counter()
            _, ids = shortlist(case.queries)
            batch = time.perf_counter() - t0
            single = single_ms(shortlist, case.queries)
            note = "PQ codes + int64 id + centroids (+ float32 rows read)"
            name = f"{factory} nprobe={nprobe} + exact top-{PQ_SHORTLIST}"
            case.add(name, ids, batch, single, build, code_bytes, note, PQ_SHORTLIST)


def run_hnsw(case: Case) -> None:
    """HNSW (``M = 32``, FAISS's default construction depth) at several search depths."""
    t0 = time.perf_counter()
    graph = DenseRecall(case.gallery, f"HNSW{HNSW_M}", seed=case.seed, use_gpu=False)
    build = time.perf_counter() - t0
    hnsw_bytes = 4 * case.dim + 2 * HNSW_M * 4 * 1.05  # vectors + level-0 links (+ upper levels)
    for ef in HNSW_EF:
        faiss.downcast_index(graph.index).hnsw.efSearch = ef  # type: ignore[attr-defined]
        t0 = time.perf_counter()
        _, ids = graph.search(case.queries, K)
        batch = time.perf_counter() - t0
        single = single_ms(lambda q: graph.search(q, K), case.queries)
        case.add(f"HNSW{HNSW_M} efSearch={ef}", ids, batch, single, build, hnsw_bytes,
                 "float32 vectors + graph links", None)  # fmt: skip


def run_hash(case: Case, heads: HashHeads, train_s: float) -> None:
    """CFITR hash: Hamming top-100, and Hamming top-1000 re-scored exactly (build includes training)."""
    t0 = time.perf_counter()
    hashed = HashRecall(heads.encode_images(case.gallery))
    build = train_s + time.perf_counter() - t0
    gallery = case.gallery

    def hamming(q: F32, k: int) -> I64:
        ids: I64 = hashed.search(heads.encode_texts(q), k)[1]
        return ids

    def rescored(q: F32) -> I64:
        return rescore(gallery, q, hamming(q, HASH_FETCH))

    t0 = time.perf_counter()
    ids = hamming(case.queries, K)
    batch = time.perf_counter() - t0
    single = single_ms(lambda q: (None, hamming(q, K)), case.queries)
    case.add(f"hash {HASH_BITS} bit, Hamming top-{K}", ids, batch, single, build, HASH_BITS / 8,
             "packed codes only", 0.0)  # fmt: skip
    t0 = time.perf_counter()
    ids = rescored(case.queries)
    batch = time.perf_counter() - t0
    single = single_ms(lambda q: (None, rescored(q)), case.queries)
    case.add(f"hash {HASH_BITS} bit top-{HASH_FETCH} + exact rescore", ids, batch, single, build,
             HASH_BITS / 8 + 4 * case.dim, "packed codes + float32 vectors", float(HASH_FETCH))  # fmt: skip


def run_sgpd(case: Case) -> None:
    """SGPD with its defaults (mass 0.9, at most 4 clusters); the cap raised to 16; and mass 1.0 (the cap
    always binds: exactly 4 or 16 clusters, IVF's "equal probes"). ``mass`` is set on the built index
    between runs, so one k-means serves all four rows."""
    t0 = time.perf_counter()
    sgpd = SGPDRecall(case.gallery, seed=case.seed)
    build = time.perf_counter() - t0
    mem = sgpd.memory_bytes()
    n, d = case.n, case.dim
    note = (
        f"float32 vectors ({4 * d}) + sparse inverted index ({mem.sparse_codes / n:.1f}) + cluster "
        f"assignments/members ({(mem.assignments + mem.members) / n:.1f}) + centroids "
        f"({mem.centroids / n:.2f})"
    )
    for mass, cap in ((0.9, 4), (0.9, 16), (1.0, 4), (1.0, 16)):
        sgpd.mass = mass
        t0 = time.perf_counter()
        _, ids = sgpd.search(case.queries, K, max_clusters=cap)
        batch = time.perf_counter() - t0
        single = single_ms(lambda q, c=cap: sgpd.search(q, K, max_clusters=c), case.queries)  # type: ignore[misc]
        cands = sgpd.candidates(case.queries[:CANDIDATE_QUERIES], max_clusters=cap)
        scored = float(np.mean([c.size for c in cands]))
        label = f"SGPD C={sgpd.n_clusters}, mass {mass}, max {cap} clusters"
        label += " (default)" if (mass, cap) == (0.9, 4) else ""
        case.add(label, ids, batch, single, build, mem.per_item + 4 * d, note, scored)


def evaluate(
    data: str,
    gallery: F32,
    queries: F32,
    heads: HashHeads | None,
    hash_train_s: float,
    seed: int,
    owners: I64 | None = None,
    methods: Sequence[str] = METHODS,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Exact search and ``methods`` on one gallery; returns the rows and the ground-truth timings."""
    case = Case(data, gallery, queries, owners, seed)
    load_start = os.getloadavg()[0]
    truth = run_exact(case) | {"load_average_1min_at_start": load_start}
    if "ivf" in methods:
        run_ivf(case)
    if "hash" in methods and heads is not None:
        run_hash(case, heads, hash_train_s)
    if "sgpd" in methods:
        run_sgpd(case)
    if "pq" in methods:
        run_pq(case)
    if "hnsw" in methods:
        run_hnsw(case)
    truth["peak_rss_gib"] = peak_rss_gib()
    truth["load_average_1min_at_end"] = os.getloadavg()[0]
    return case.rows, truth


# -- data sets -----------------------------------------------------------------------------------


def train_heads(
    items: F32, texts: F32, owner: I64, epochs: int, seed: int
) -> tuple[HashHeads, float, list[float]]:
    torch.set_num_threads(_TRAIN_THREADS)
    (heads, losses), secs = timed(
        lambda: train_hash_heads(
            items, texts, owner, bits=HASH_BITS, epochs=epochs, batch_size=256, seed=seed
        )
    )
    print(
        f"  hash heads: {texts.shape[0]:,} pairs, {epochs} epochs, {secs:.1f} s, losses {losses}", flush=True
    )
    # Encoding is a small MLP: one torch thread, so that torch's idle OpenMP workers do not compete with
    # FAISS's (two OpenMP runtimes on two cores made single FAISS queries several times slower).
    torch.set_num_threads(1)
    return heads, secs, losses


def real_split(path: Path, n_queries: int, seed: int) -> tuple[F32, F32, I64, F32, I64, dict[str, Any]]:
    """(gallery, queries, query owners, hash-train texts, their images, info) from an index version."""
    gallery = np.ascontiguousarray(np.load(path / "image_vectors.npy"), dtype=np.float32)
    captions = np.load(path / "caption_vectors.npy", mmap_mode="r")
    owner = np.asarray(json.loads((path / "captions.json").read_text())["image_index"], dtype=np.int64)
    rng = np.random.default_rng([seed, 4])
    held = np.sort(rng.choice(gallery.shape[0], n_queries, replace=False))
    is_held = np.zeros(gallery.shape[0], dtype=np.bool_)
    is_held[held] = True
    query_caps = np.array([rng.choice(np.flatnonzero(owner == i)) for i in held], dtype=np.int64)
    train_caps = np.flatnonzero(~is_held[owner])
    if train_caps.size > HASH_TRAIN_ITEMS:  # the same training budget as the generated data's heads
        train_caps = np.sort(rng.choice(train_caps, HASH_TRAIN_ITEMS, replace=False))
    queries = np.ascontiguousarray(captions[query_caps], dtype=np.float32)
    texts = np.ascontiguousarray(captions[train_caps], dtype=np.float32)
    info = {"path": str(path), "images": int(gallery.shape[0]), "hash_train_captions": int(train_caps.size)}
    return gallery, queries, held, texts, owner[train_caps], info


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument(
        "--clusters",
        type=int,
        default=0,
        help="generated data: one mixture of this many clusters for all sizes (0: N / --items-per-cluster)",
    )
    parser.add_argument("--items-per-cluster", type=int, default=ITEMS_PER_CLUSTER)
    parser.add_argument("--hash-epochs", type=int, default=5)
    parser.add_argument(
        "--real", type=Path, default=None, help="an index version dir (image/caption vectors)"
    )
    parser.add_argument(
        "--real-hash-heads",
        type=Path,
        default=None,
        help="hash heads of the model behind --real (model/hashing.py format), used instead of training",
    )
    parser.add_argument(
        "--methods",
        default=",".join(METHODS),
        help="which besides exact search: a comma list of " + ", ".join(METHODS),
    )
    parser.add_argument("--out", type=Path, default=Path("bench/results/recall_scale.json"))
    args = parser.parse_args()
    methods = [m for m in args.methods.split(",") if m]
    if unknown := sorted(set(methods) - set(METHODS)):
        parser.error(f"unknown --methods {unknown}; choose from {', '.join(METHODS)}")

    t_start = time.perf_counter()
    rows: list[dict[str, Any]] = []
    truths: list[dict[str, Any]] = []
    meta: dict[str, Any] = {
        "date": date.today().isoformat(),
        "machine": platform.node(),
        "processor": platform.processor(),
        "faiss": faiss.__version__,
        "faiss_threads": faiss.omp_get_max_threads(),
        "torch_threads": f"{_TRAIN_THREADS} for training the hash heads, then 1",
        "args": {k: str(v) for k, v in vars(args).items()},
        "k": K,
        "hash_fetch": HASH_FETCH,
        "single_queries": SINGLE_QUERIES,
        "generated": {
            "classes": N_CLASSES,
            "clusters": args.clusters or f"round(N / {args.items_per_cluster})",
            "class_spread": CLASS_SPREAD,
            "item_spread": ITEM_SPREAD,
            "query_noise": QUERY_NOISE,
            "hash_train_items": HASH_TRAIN_ITEMS,
        },
    }

    if args.real is not None:
        print(f"real vectors: {args.real}", flush=True)
        gallery, queries, held, texts, text_owner, info = real_split(args.real, args.queries, args.seed)
        if args.real_hash_heads is not None:
            heads, secs = HashHeads.load(args.real_hash_heads), 0.0
            info |= {"hash_heads": str(args.real_hash_heads)}
        else:
            heads, secs, losses = train_heads(gallery, texts, text_owner, args.hash_epochs, args.seed)
            info |= {"hash_train_s": secs, "hash_losses": losses}
        meta["real"] = info
        got, truth = evaluate("real", gallery, queries, heads, secs, args.seed, owners=held, methods=methods)
        rows += got
        truths.append(truth)
        del gallery, queries, texts

    world = World(args.dim, args.seed, args.clusters, args.items_per_cluster)
    print("generated vectors", flush=True)
    gen_heads: HashHeads | None = None
    secs = 0.0
    if "hash" in methods:  # the heads' training is the hash rows' cost only
        train_items = world.items(HASH_TRAIN_ITEMS, np.random.default_rng([args.seed, 3]))
        train_texts = noisy_copies(train_items, np.random.default_rng([args.seed, 3, 1]))
        gen_heads, secs, losses = train_heads(
            train_items, train_texts, np.arange(HASH_TRAIN_ITEMS, dtype=np.int64), args.hash_epochs, args.seed
        )
        meta["generated"] |= {"hash_train_s": secs, "hash_losses": losses}
        del train_items, train_texts
    for n in args.sizes:
        (gallery, queries, source), gen_s = timed(lambda n=n: generate(world, n, args.queries, args.seed))  # type: ignore[misc]
        print(f" N={n:,}: generated in {gen_s:.1f} s", flush=True)
        got, truth = evaluate(
            "generated", gallery, queries, gen_heads, secs, args.seed, owners=source, methods=methods
        )
        rows += got
        truths.append(truth | {"generate_s": gen_s})
        del gallery, queries
        write(args.out, meta, truths, rows, time.perf_counter() - t_start)  # partial results survive a crash

    wall = time.perf_counter() - t_start
    write(args.out, meta, truths, rows, wall)
    print(markdown(rows))
    print(f"total {wall:.0f} s, peak RSS {peak_rss_gib():.2f} GiB")


def generate(world: World, n: int, n_queries: int, seed: int) -> tuple[F32, F32, I64]:
    gallery = world.items(n, np.random.default_rng([seed, 1, n]))
    rng = np.random.default_rng([seed, 2, n])
    source = rng.choice(n, n_queries, replace=False).astype(np.int64)
    return gallery, noisy_copies(gallery[source], rng), source


def write(
    out: Path, meta: dict[str, Any], truths: list[dict[str, Any]], rows: list[dict[str, Any]], wall: float
) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "meta": meta | {"wall_s": wall, "peak_rss_gib": peak_rss_gib()},
        "ground_truth": truths,
        "rows": rows,
    }
    out.write_text(json.dumps(doc, indent=1) + "\n")


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| data | N | method | recall@100 | ms/query (batch) | ms single (median) | dense scored/query "
        "| build s | bytes/item | own item in top-100 |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        scored = "-" if not r["dense_scored_per_query"] else f"{r['dense_scored_per_query']:,.0f}"
        own = f"{r['own_item_in_top100']:.3f}" if "own_item_in_top100" in r else "-"
        lines.append(
            f"| {r['data']} | {r['n']:,} | {r['method']} | {r['recall_at_100']:.3f} | "
            f"{r['ms_per_query_batch']:.3f} | {r['ms_single_median']:.2f} | {scored} | {r['build_s']:.1f} | "
            f"{r['bytes_per_item']:,.0f} | {own} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
