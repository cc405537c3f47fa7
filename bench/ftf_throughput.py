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
    _sync(device)
    t0 = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - t0


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
    """One row per dtype at ``M`` patches: the dtypes' repeats interleaved, medians reported."""
    W32, mask, P32, lengths = _case(args, M, device)
    dtypes = [resolve_dtype(Precision(name), device) for name in args.dtype]
    tokens = {dt: (W32.to(dt), P32.to(dt)) for dt in dtypes}
    seconds: dict[torch.dtype, list[float]] = {dt: [] for dt in dtypes}
    Q, K = args.queries, args.k
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
                seconds[dt].append(_once(run, device))
        seconds = {dt: s[1:] for dt, s in seconds.items()}
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
                "max_abs_diff": float((fast - ref).abs().max()),
                "finite": bool(torch.isfinite(fast).all()),
            }
            if args.loop:
                pairs = min(K, LOOP_PAIRS)

                def loop(W: torch.Tensor = W, P: torch.Tensor = P, pairs: int = pairs) -> None:
                    for q in range(Q):
                        for k in range(pairs):
                            per_pair(*_pair_tokens(args.direction, W, lengths, P, q, k), TAU)

                row["loop_pairs_per_s"] = Q * pairs / _once(loop, device)
            rows.append(row)
    return rows


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
    args = parser.parse_args()
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
    print("| M (patches) | dtype | Q x K pairs | batched pairs/s | loop pairs/s | max abs diff vs f64 |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        loop = f"{r['loop_pairs_per_s']:,.0f}" if "loop_pairs_per_s" in r else "-"
        print(
            f"| {r['patches']} | {r['dtype']} | {args.queries} x {args.k} | {r['pairs_per_s']:,.0f} | {loop} "
            f"| {r['max_abs_diff']:.1e} |"
        )


if __name__ == "__main__":
    main()
