"""FTF block throughput on the CPU: batched ``[Q,K]`` block vs a per-pair loop of the same formulas.

Run: ``.venv/bin/python -m bench.ftf_throughput`` (prints a Markdown table for BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import platform
import time
from functools import partial

import torch
import torch.nn.functional as F

from model.ftf import text_to_image


def per_pair(W: torch.Tensor, P: torch.Tensor, tau: float) -> torch.Tensor:
    """One pair straight from ALGORITHMS.md §2: ``W [n,d]`` valid words only, ``P [M,d]``."""
    A = W @ P.T
    a = torch.softmax(A / tau, dim=1)
    s_tv = F.cosine_similarity(W, a @ P, dim=-1).mean()
    b = torch.softmax(A / tau, dim=0)
    s_vt = F.cosine_similarity(P, b.T @ W, dim=-1).mean()
    return (s_tv + s_vt) / 2


def _loop(W: torch.Tensor, lengths: torch.Tensor, P: torch.Tensor, pairs: int) -> None:
    for q in range(W.shape[0]):
        for k in range(pairs):
            per_pair(W[q, : lengths[q]], P[q, k], 0.05)


def _time(fn: object, repeats: int) -> float:
    assert callable(fn)
    fn()  # warm-up
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - t0) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--queries", type=int, default=16)
    parser.add_argument("--candidates", type=int, default=100)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--words", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    Q, K, n, d = args.queries, args.candidates, args.words, args.dim
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or 'cpu'}")
    print("| M (patches) | Q x K pairs | batched pairs/s | per-pair loop pairs/s | speed-up | max abs diff |")
    print("|---|---|---|---|---|---|")
    for M in (49, 196):
        W = F.normalize(torch.randn(Q, n, d), dim=-1)
        lengths = torch.randint(n // 2, n + 1, (Q,))
        mask = torch.arange(n)[None] < lengths[:, None]
        P = F.normalize(torch.randn(Q, K, M, d), dim=-1)
        with torch.inference_mode():
            batched = _time(partial(text_to_image, W, mask, P), args.repeats)
            loop_pairs = min(K, 20)  # the loop is slow: time a slice of candidates, report per pair
            looped = _time(partial(_loop, W, lengths, P, loop_pairs), max(1, args.repeats // 2))
            fast = text_to_image(W, mask, P).fine
            ref = torch.stack(
                [
                    torch.stack([per_pair(W[q, : lengths[q]], P[q, k], 0.05) for k in range(K)])
                    for q in range(Q)
                ]
            )
            diff = (fast - ref).abs().max().item()
        b_rate, l_rate = Q * K / batched, Q * loop_pairs / looped
        print(f"| {M} | {Q} x {K} | {b_rate:,.0f} | {l_rate:,.0f} | {b_rate / l_rate:.1f}x | {diff:.1e} |")


if __name__ == "__main__":
    main()
