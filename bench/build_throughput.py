"""Index build throughput against the bare model forward pass, and the build's peak memory by size.

1. ``prepare``: a Karpathy-style archive of N images (symlinks to SynthRS images, with their captions).
2. ``forward``: images/s of the encoder's forward pass alone on the same batches, pixels decoded and
   preprocessed beforehand (the upper bound a build could reach).
3. ``build``: ``rsir build-index`` on the archive in a child process; its embed rate and peak RSS
   (``ru_maxrss`` of the child).

    .venv/bin/python -m bench.build_throughput --sources data/synthrs data/synthrs-distractors \\
        --sizes 2000 20000 --out bench/results/build.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from datetime import date
from pathlib import Path
from typing import Any

import torch

from bench.report import write_json
from rsir.model.encoders import DEFAULT_WEIGHTS, ClipEncoder, EncoderConfig
from rsir.model.images import decode_image


def prepare(sources: list[Path], n: int, out: Path) -> Path:
    """``out/dataset.json`` + ``out/images/`` holding the first ``n`` images of ``sources``."""
    shutil.rmtree(out, ignore_errors=True)
    (out / "images").mkdir(parents=True)
    records: list[dict[str, Any]] = []
    for s, source in enumerate(sources):
        data = json.loads((source / "dataset.json").read_text())
        for img in data["images"]:
            if len(records) == n:
                break
            name = f"s{s}_{img['filename']}"
            os.symlink((source / "images" / img["filename"]).resolve(), out / "images" / name)
            records.append({"filename": name, "split": "all", "sentences": img["sentences"]})
    if len(records) < n:
        raise SystemExit(f"the sources hold only {len(records)} images, fewer than {n}")
    (out / "dataset.json").write_text(json.dumps({"dataset": f"bench{n}", "images": records}))
    return out


def forward_rate(archive: Path, n: int, batch_size: int) -> float:
    encoder = ClipEncoder(EncoderConfig(checkpoint=DEFAULT_WEIGHTS, device="cpu", batch_size=batch_size))
    files = sorted((archive / "images").iterdir())[:n]
    batches = [
        torch.stack([encoder.preprocess(decode_image(f)) for f in files[i : i + batch_size]])
        for i in range(0, len(files), batch_size)
    ]
    t0 = time.perf_counter()
    for pixels in batches:
        encoder.encode_pixels(pixels)
    return len(files) / (time.perf_counter() - t0)


def build_run(
    archive: Path, out: Path, batch_size: int, workers: int, extra: list[str] | None = None
) -> dict[str, Any]:
    """``rsir build-index`` (plus ``extra`` options) in a child process: its rate and peak RSS."""
    shutil.rmtree(out, ignore_errors=True)
    cmd = [
        sys.executable, "-m", "rsir.cli", "build-index", "--archive", str(archive), "--out", str(out),
        "--device", "cpu", "--batch-size", str(batch_size), "--workers", str(workers), *(extra or []),
    ]  # fmt: skip
    log = out.with_suffix(".log")
    t0 = time.perf_counter()
    with log.open("w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT)
        # wait4 gives this child's own resource usage (its largest RSS, or a waited-for
        # descendant's): each size is measured in its own process.
        _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t0
    stdout = log.read_text()
    if os.waitstatus_to_exitcode(status) not in (0, 3):
        raise SystemExit(f"build failed:\n{stdout}")
    peak_kib = usage.ru_maxrss
    rate = re.search(r"\(([\d.]+) img/s\)", stdout)
    return {
        "wall_s": seconds,
        "embed_img_per_s": float(rate.group(1)) if rate else None,
        "peak_rss_mib": peak_kib / 1024,
        "stdout": stdout.strip()[-2000:],
    }


def result_header() -> dict[str, Any]:
    """Date, machine and torch threads of a build measurement, with an empty ``runs`` list."""
    return {
        "date": str(date.today()),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, no GPU",
        "torch_threads": torch.get_num_threads(),
        "runs": [],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sources", type=Path, nargs="+", required=True)
    ap.add_argument("--sizes", type=int, nargs="+", default=[2000, 20000])
    ap.add_argument("--work", type=Path, default=Path("data/bench-build"))
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--forward-images", type=int, default=1024)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    result = result_header()
    for n in sorted(args.sizes):
        archive = prepare(args.sources, n, args.work / f"archive{n}")
        run = build_run(archive, args.work / f"index{n}", args.batch_size, args.workers)
        run["images"] = n
        result["runs"].append(run)
        print(json.dumps({k: v for k, v in run.items() if k != "stdout"}))
    first = args.work / f"archive{min(args.sizes)}"
    result["forward_img_per_s"] = forward_rate(first, args.forward_images, args.batch_size)
    print(f"bare forward pass: {result['forward_img_per_s']:.1f} img/s")
    write_json(args.out, result)


if __name__ == "__main__":
    main()
