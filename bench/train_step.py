"""Seconds per training step of an architecture, float32 against bfloat16 autocast, on this machine.

One step is what ``rsir train`` does per batch: both towers forward (``rsir.model.train.batch_features``,
under autocast for bf16), the §2 loss in float32, backward, gradient clipping, AdamW. Inputs are
random (the time does not depend on them). Also times a square matrix product in both precisions,
which tells whether the CPU has fast bfloat16 (AMX / AVX512-BF16) at all. Used for BENCHMARKS.md::

    .venv/bin/python -m bench.train_step --archs rsir-vit-tiny rsir-vit-tiny-p16
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import open_clip
import torch

from rsir.model import towers
from rsir.model.encoders import build_model, special_ids
from rsir.model.losses import ftf_loss
from rsir.model.train import batch_features, precision_autocast

CAPTION = "many cars are parked in a parking lot next to a road with some green trees"


def matmul_seconds(size: int, dtype: torch.dtype, repeats: int = 10) -> float:
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    a @ b  # warm-up: the first call picks the kernel
    t0 = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return (time.perf_counter() - t0) / repeats


def step_seconds(arch: str, bf16: bool, batch: int, steps: int, warmup: int) -> list[float]:
    torch.manual_seed(0)
    model = build_model(arch).train()
    tokenizer = open_clip.get_tokenizer(arch)
    specials, truncate = special_ids(tokenizer), towers.truncatable(model)
    visual: Any = model.visual
    size = visual.image_size
    side = int(size[0] if isinstance(size, (tuple, list)) else size)
    pixels = torch.randn(batch, 3, side, side)
    ids = tokenizer([CAPTION] * batch, context_length=int(getattr(model, "context_length", 77)))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    autocast = precision_autocast(torch.device("cpu"), "bf16" if bf16 else "fp32")
    times = []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        v, p, t, w, m = batch_features(model, pixels, ids, specials, truncate, autocast)
        loss = ftf_loss(v, p, t, w, m).total
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--archs", nargs="+", default=["rsir-vit-tiny", "rsir-vit-tiny-p16"])
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--matmul-size", type=int, default=2048)
    args = ap.parse_args()
    n = args.matmul_size
    for dtype in (torch.float32, torch.bfloat16):
        s = matmul_seconds(n, dtype)
        print(f"matmul {n}x{n} {dtype}: {s * 1e3:.1f} ms ({2 * n**3 / s / 1e9:.0f} GFLOPS)")
    for arch in args.archs:
        for bf16 in (False, True):
            times = step_seconds(arch, bf16, args.batch_size, args.steps, args.warmup)
            print(
                f"{arch} {'bf16' if bf16 else 'fp32'}: median {statistics.median(times):.2f} s/step "
                f"(min {min(times):.2f}, max {max(times):.2f}, {len(times)} steps after {args.warmup})"
            )


if __name__ == "__main__":
    main()
