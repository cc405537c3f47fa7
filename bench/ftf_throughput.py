"""FTF block throughput: batched ``[Q,K]`` block vs a per-pair loop, by dtype and device.

Run: ``.venv/bin/python -m bench.ftf_throughput`` (prints a Markdown table for BENCHMARKS.md), e.g.
``--dtype float32 bfloat16 --dim 256 --words 16 --patches 49`` to compare dtypes in one run: the
dtypes are timed in alternation, repeat after repeat, so that load from other processes falls on
both alike. ``--json`` prints one JSON line per dtype instead (``pairs_per_s`` is the first
``--patches`` value's; ``by_patches`` has them all), e.g. for ``make gpu-check``:
``python -m bench.ftf_throughput --device cuda --dtype float16 --k 100 --json``.

With ``--from-store`` the timed call starts from float16 candidate tokens gathered by id, as an
index stores them, and includes their conversion to the dtype (what ``rsir.search.rerank.Scorer.ftf`` does).

"max abs diff" compares the block's fine scores with a float64 per-pair loop of ALGORITHMS.md §2 on
the same tokens (rounded to the dtype first, so it measures the block's arithmetic, not the storage).

The bound (issue 24): each round also times a 2048^3 float32 GEMM (the machine's GEMM rate in
GFLOP/s) and a read of a 256 MiB tensor (memory bandwidth), in the same rounds as the block, so load
from other processes falls on all three. The block's two products cost ``4 n M d`` FLOPs a pair
(``W P^T`` and ``a P``; the rest is ``O(n M (n + 1))``), and a text query's candidates bring ``M d``
token values each from memory: the table gives the block's GFLOP/s, its fraction of the GEMM rate,
and the roofline ``min(GEMM rate / FLOPs, bandwidth / bytes)`` pairs/s; for text queries also the
two products alone at the block's shapes (what the block would reach if everything else were free).
Rates come from wall time
and from CPU time (``time.process_time``); at ``--threads 1`` the CPU-time rate is what the machine
gives one core, time slices lost to other processes left out (on a shared machine the wall rate of
an OpenMP team is set by its slowest thread's time slices).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from rsir.model.ftf import image_to_text, text_to_image
from rsir.model.precision import Precision, resolve_dtype

LOOP_PAIRS = 20  # the loop is slow: it times a slice of the candidates, reported per pair
TAU = 0.05
GEMM_N = 2048
STREAM_BYTES = 256 * 2**20


def per_pair(W: torch.Tensor, P: torch.Tensor, tau: float) -> torch.Tensor:
    """One pair straight from ALGORITHMS.md §2: ``W [n,d]`` valid words only, ``P [M,d]``."""
    A = W @ P.T
    a = torch.softmax(A / tau, dim=1)
    s_tv = F.cosine_similarity(W, a @ P, dim=-1).mean()
    b = torch.softmax(A / tau, dim=0)
    s_vt = F.cosine_similarity(P, b.T @ W, dim=-1).mean()
    return (s_tv + s_vt) / 2


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _once(fn: Callable[[], object], device: torch.device) -> float:
    return _timed(fn, device)[0]


def _timed(fn: Callable[[], object], device: torch.device) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of one call."""
    _sync(device)
    t0, c0 = time.perf_counter(), time.process_time()
    fn()
    _sync(device)
    return time.perf_counter() - t0, time.process_time() - c0


class _Bound:
    """The machine's float32 GEMM rate and memory read bandwidth, timed once per round."""

    def __init__(self, device: torch.device) -> None:
        gen = torch.Generator().manual_seed(1)
        self.device = device
        self.a, self.b = (torch.randn(GEMM_N, GEMM_N, generator=gen).to(device) for _ in range(2))
        self.stream = torch.ones(STREAM_BYTES // 4, device=device)
        self.gemm: list[tuple[float, float]] = []
        self.read: list[tuple[float, float]] = []

        self.products: list[tuple[float, float]] = []

    def round(self, products: Callable[[], object] | None) -> None:
        self.gemm.append(_timed(lambda: self.a @ self.b, self.device))
        self.read.append(_timed(self.stream.sum, self.device))
        if products:
            self.products.append(_timed(products, self.device))

    def figures(self) -> dict[str, float]:
        flops, out = 2 * GEMM_N**3, {}
        for i, clock in enumerate(("wall", "cpu")):
            out[f"gemm_gflops_{clock}"] = flops / statistics.median(t[i] for t in self.gemm[1:]) / 1e9
            out[f"read_gbps_{clock}"] = STREAM_BYTES / statistics.median(t[i] for t in self.read[1:]) / 1e9
            if self.products:
                out[f"products_s_{clock}"] = statistics.median(t[i] for t in self.products[1:])
        return out


def _products(W: torch.Tensor, P: torch.Tensor) -> Callable[[], object]:
    """The t2i block's two products alone, at its shapes, query by query: ``W P^T`` as one GEMM over
    the candidates and ``a P`` as a batch of ``[n, M] x [M, d]`` products (``a`` random weights)."""
    Q, K, M, d = P.shape
    a = torch.rand(Q, K, W.shape[1], M, generator=torch.Generator().manual_seed(2)).to(P)

    def run() -> None:
        for q in range(Q):
            W[q] @ P[q].reshape(K * M, d).T
            torch.bmm(a[q], P[q])

    return run


def _case(
    args: argparse.Namespace, M: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Float32 unit tokens with a shared direction (as a CLIP tower's are) and ragged word masks."""
    gen = torch.Generator().manual_seed(M)
    Q, K, n, d = args.queries, args.k, args.words, args.dim
    common = torch.randn(d, generator=gen)
    W = F.normalize(torch.randn(Q, n, d, generator=gen) + common, dim=-1)
    lengths = torch.randint(n // 2, n + 1, (Q,), generator=gen)
    mask = torch.arange(n)[None] < lengths[:, None]
    W = W * mask[..., None]
    P = F.normalize(torch.randn(Q, K, M, d, generator=gen) + common, dim=-1)
    if args.direction == "i2t":  # image queries over caption candidates: one image and K captions each
        W = F.normalize(torch.randn(Q, K, n, d, generator=gen) + common, dim=-1)
        lengths = torch.randint(n // 2, n + 1, (Q, K), generator=gen)
        mask = torch.arange(n) < lengths[..., None]
        W, P = W * mask[..., None], P[:, 0]
    return W.to(device), mask.to(device), P.to(device), lengths


def _block(direction: str, W: torch.Tensor, mask: torch.Tensor, P: torch.Tensor) -> torch.Tensor:
    if direction == "t2i":
        return text_to_image(W, mask, P, TAU).fine
    return image_to_text(P, W, mask, TAU).fine


def _pair_tokens(
    direction: str, W: torch.Tensor, lengths: torch.Tensor, P: torch.Tensor, q: int, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    if direction == "t2i":
        return W[q, : lengths[q]], P[q, k]
    return W[q, k, : lengths[q, k]], P[q]


class _Store:
    """The candidates' tokens as an index holds them (float16 rows, gathered by id per query), for
    ``--from-store``: the time then includes what ``rsir.search.rerank.Scorer.ftf`` does before the block,
    the gather and the conversion to the rerank's dtype."""

    def __init__(self, W: torch.Tensor, P: torch.Tensor, direction: str) -> None:
        self.direction = direction
        self.query_side = (W if direction == "t2i" else P).cpu()
        side = P if direction == "t2i" else W  # [Q,K,...]: the candidates
        Q, K = side.shape[:2]
        self.rows = side.reshape(Q * K, *side.shape[2:]).cpu().numpy().astype(np.float16)
        self.ids = np.random.default_rng(0).permutation(Q * K).reshape(Q, K)
        # the stored rows in the order the queries will gather them
        inverse = np.empty(Q * K, np.int64)
        inverse[self.ids.ravel()] = np.arange(Q * K)
        self.rows = self.rows[inverse]

    def rerank(self, dtype: torch.dtype, mask: torch.Tensor, device: torch.device) -> torch.Tensor:
        gathered = torch.from_numpy(np.ascontiguousarray(self.rows[self.ids])).to(device, dtype)
        query = self.query_side.to(device, dtype)
        if self.direction == "t2i":
            return _block("t2i", query, mask, gathered)
        return _block("i2t", gathered, mask, query)


def measure(args: argparse.Namespace, M: int, device: torch.device) -> list[dict[str, Any]]:
    """One row per dtype at ``M`` patches: the dtypes' repeats (and the bound's) interleaved, medians
    reported."""
    W32, mask, P32, lengths = _case(args, M, device)
    dtypes = [resolve_dtype(Precision(name), device) for name in args.dtype]
    tokens = {dt: (W32.to(dt), P32.to(dt)) for dt in dtypes}
    timings: dict[torch.dtype, list[tuple[float, float]]] = {dt: [] for dt in dtypes}
    Q, K = args.queries, args.k
    bound = _Bound(device) if args.bound else None
    products = _products(W32, P32) if args.direction == "t2i" and not args.from_store else None
    with torch.inference_mode():
        store = _Store(W32, P32, args.direction) if args.from_store else None
        for _ in range(args.repeats + 1):  # the first round warms up
            for dt in dtypes:
                W, P = tokens[dt]
                run = (
                    partial(store.rerank, dt, mask, device)
                    if store
                    else partial(_block, args.direction, W, mask, P)
                )
                timings[dt].append(_timed(run, device))
            if bound:
                bound.round(products)
        timings = {dt: s[1:] for dt, s in timings.items()}
        seconds = {dt: [t[0] for t in s] for dt, s in timings.items()}
        rows = []
        for dt in dtypes:
            W, P = tokens[dt]
            fast = _block(args.direction, W, mask, P).double().cpu()
            W64, P64 = W.double().cpu(), P.double().cpu()
            ref = torch.tensor(
                [
                    [
                        float(per_pair(*_pair_tokens(args.direction, W64, lengths, P64, q, k), TAU))
                        for k in range(K)
                    ]
                    for q in range(Q)
                ],
                dtype=torch.float64,
            )
            row: dict[str, Any] = {
                "patches": M,
                "dtype": str(dt).removeprefix("torch."),
                "pairs_per_s": Q * K / statistics.median(seconds[dt]),
                "seconds": seconds[dt],
                "cpu_pairs_per_s": Q * K / statistics.median(t[1] for t in timings[dt]),
                "max_abs_diff": float((fast - ref).abs().max()),
                "finite": bool(torch.isfinite(fast).all()),
            }
            if bound:
                row |= _roofline(args, M, dt, row, bound.figures())
            if args.loop:
                pairs = min(K, LOOP_PAIRS)

                def loop(W: torch.Tensor = W, P: torch.Tensor = P, pairs: int = pairs) -> None:
                    for q in range(Q):
                        for k in range(pairs):
                            per_pair(*_pair_tokens(args.direction, W, lengths, P, q, k), TAU)

                row["loop_pairs_per_s"] = Q * pairs / _once(loop, device)
            rows.append(row)
    return rows


def _roofline(
    args: argparse.Namespace, M: int, dtype: torch.dtype, row: dict[str, Any], bound: dict[str, float]
) -> dict[str, Any]:
    """The block's GFLOP/s against the GEMM rate, and the roofline pairs/s, on each clock."""
    n, d = args.words, args.dim
    flops = 4 * n * M * d  # W P^T and a P
    # what each pair brings from memory: a text query's candidate patches (an image query's captions)
    tokens = (M if args.direction == "t2i" else n) * d
    pair_bytes = tokens * (2 if args.from_store else dtype.itemsize)
    out: dict[str, Any] = {"flops_per_pair": flops, "bytes_per_pair": pair_bytes} | bound
    for clock, key in (("wall", "pairs_per_s"), ("cpu", "cpu_pairs_per_s")):
        gemm, read = bound[f"gemm_gflops_{clock}"], bound[f"read_gbps_{clock}"]
        out[f"gflops_{clock}"] = row[key] * flops / 1e9
        out[f"of_gemm_{clock}"] = row[key] * flops / 1e9 / gemm
        out[f"roofline_pairs_per_s_{clock}"] = min(gemm * 1e9 / flops, read * 1e9 / pair_bytes)
        if f"products_s_{clock}" in bound:
            out[f"products_pairs_per_s_{clock}"] = args.queries * args.k / bound[f"products_s_{clock}"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--queries", type=int, default=16)
    parser.add_argument("--k", "--candidates", dest="k", type=int, default=100, help="candidates per query")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--words", type=int, default=16, help="word slots (8 to 16 of them valid)")
    parser.add_argument("--patches", type=int, nargs="+", default=[49, 196])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--dtype",
        nargs="+",
        default=["float32"],
        choices=[p.value for p in Precision if p is not Precision.AUTO],
    )
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument(
        "--direction", choices=["t2i", "i2t"], default="t2i", help="text->image or image->text"
    )
    parser.add_argument("--no-loop", dest="loop", action="store_false", help="skip timing the per-pair loop")
    parser.add_argument(
        "--from-store",
        action="store_true",
        help="time the gather of float16 candidate tokens by id and their conversion too, as the engine does",
    )
    parser.add_argument("--json", action="store_true", help="one JSON line per dtype instead of a table")
    parser.add_argument(
        "--no-bound", dest="bound", action="store_false", help="skip timing the GEMM rate and bandwidth"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is visible to torch")
    device = torch.device(args.device)
    rows = [row for M in args.patches for row in measure(args, M, device)]
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    setup = {
        "device": args.device,
        "device_name": where,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "direction": args.direction,
        "queries": args.queries,
        "k": args.k,
        "dim": args.dim,
        "words": args.words,
        "from_store": args.from_store,
    }
    if args.json:
        for name in args.dtype:
            dtype = str(resolve_dtype(Precision(name), device)).removeprefix("torch.")
            mine = [r for r in rows if r["dtype"] == dtype]
            print(
                json.dumps(
                    setup | {"dtype": dtype, "pairs_per_s": mine[0]["pairs_per_s"], "by_patches": mine}
                )
            )
        return
    threads = torch.get_num_threads()
    print(f"torch {torch.__version__}, {threads} threads, {where}, {args.direction}, d = {args.dim}")
    print(
        "| M (patches) | dtype | Q x K pairs | batched pairs/s (CPU-time rate) | loop pairs/s "
        "| max abs diff vs f64 |"
    )
    print("|---|---|---|---|---|---|")
    for r in rows:
        loop = f"{r['loop_pairs_per_s']:,.0f}" if "loop_pairs_per_s" in r else "-"
        print(
            f"| {r['patches']} | {r['dtype']} | {args.queries} x {args.k} | {r['pairs_per_s']:,.0f} "
            f"({r['cpu_pairs_per_s']:,.0f}) | {loop} | {r['max_abs_diff']:.1e} |"
        )
    if args.bound:
        print()
        print(
            "| M | dtype | clock | block GFLOP/s | GEMM GFLOP/s | block / GEMM | read GB/s "
            "| FLOPs, bytes a pair | roofline pairs/s | products alone pairs/s | pairs/s |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        for r in rows:
            for clock, key in (("wall", "pairs_per_s"), ("cpu", "cpu_pairs_per_s")):
                print(
                    f"| {r['patches']} | {r['dtype']} | {clock} | {r[f'gflops_{clock}']:.1f} "
                    f"| {r[f'gemm_gflops_{clock}']:.1f} | {r[f'of_gemm_{clock}']:.2f} "
                    f"| {r[f'read_gbps_{clock}']:.1f} | {r['flops_per_pair'] / 1e6:.2f} M, "
                    f"{r['bytes_per_pair'] / 1e3:.0f} kB | {r[f'roofline_pairs_per_s_{clock}']:,.0f} "
                    f"| {r.get(f'products_pairs_per_s_{clock}', float('nan')):,.0f} | {r[key]:,.0f} |"
                )


if __name__ == "__main__":
    main()
