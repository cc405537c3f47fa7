"""Chipping and embedding georeferenced scenes: peak memory by scene size, and chip throughput against
the bare forward pass on the same chips.

1. ``write_scene``: an N x N x 3 uint8 UTM GeoTIFF (tiled, deflate), written window by window.
2. ``build``: ``rsir build-index --archive scene.tif --chip-size 224`` in a child process; its embed
   rate and peak RSS (``ru_maxrss`` of the child, as in :mod:`bench.build_throughput`). Peak RSS must
   not grow with the scene's size: the scene is read a chip window at a time.
3. ``forward``: images/s of the encoder alone on chips read and preprocessed beforehand.

    .venv/bin/python -m bench.scene_build --sizes 5000 10000 20000 --out bench/results/scene_build.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import torch
from PIL import Image
from rasterio.transform import from_origin
from rasterio.windows import Window

from bench.build_throughput import build_run, result_header
from rsir.index_builder.chipper import list_folder
from rsir.index_builder.chips import ChipConfig
from rsir.index_builder.scenes import PRESETS, read_chip
from rsir.model.encoders import DEFAULT_WEIGHTS, ClipEncoder, EncoderConfig

BAND_ROWS = 512


def write_scene(path: Path, side: int) -> Path:
    """Smooth fields plus noise (texture the model responds to, and a file deflate can shrink)."""
    profile: dict[str, Any] = {"driver": "GTiff", "width": side, "height": side, "count": 3, "dtype": "uint8"}
    profile |= {"crs": "EPSG:32633", "transform": from_origin(500_000, 4_600_000, 0.5, 0.5)}
    profile |= {"tiled": True, "blockxsize": 512, "blockysize": 512, "compress": "deflate"}
    rng = np.random.default_rng(0)
    x = np.arange(side, dtype=np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(path, "w", **profile) as dst:
        for top in range(0, side, BAND_ROWS):
            rows = min(BAND_ROWS, side - top)
            y = np.arange(top, top + rows, dtype=np.float32)[:, None]
            base = 128 + 60 * np.sin(x[None, :] / 97.0) * np.cos(y / 131.0)
            block = np.stack([base + 20 * c for c in range(3)]) + rng.normal(0, 12, (3, rows, side))
            dst.write(np.clip(block, 0, 255).astype(np.uint8), window=Window(0, top, side, rows))
    return path


def forward_rate(scene: Path, n: int, batch_size: int) -> float:
    encoder = ClipEncoder(EncoderConfig(checkpoint=DEFAULT_WEIGHTS, device="cpu", batch_size=batch_size))
    chips = [i.chip for i in list_folder(scene, ChipConfig(224), PRESETS["rgb"]).items[:n] if i.chip]
    pixels = [encoder.preprocess(Image.fromarray(read_chip(c).rgb)) for c in chips]
    batches = [torch.stack(pixels[i : i + batch_size]) for i in range(0, len(pixels), batch_size)]
    t0 = time.perf_counter()
    for batch in batches:
        encoder.encode_pixels(batch)
    return len(pixels) / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sizes", type=int, nargs="+", default=[5000, 10000, 20000])
    ap.add_argument("--work", type=Path, default=Path("data/bench-scenes"))
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--forward-chips", type=int, default=512)
    ap.add_argument("--keep", action="store_true", help="keep the scenes and indexes")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    result = result_header()
    for side in sorted(args.sizes):
        t0 = time.perf_counter()
        scene = write_scene(args.work / f"scene{side}" / "scene.tif", side)
        write_s = time.perf_counter() - t0
        chip_args = ["--chip-size", "224", "--shard-size", "1024"]
        run = build_run(scene, args.work / f"index{side}", args.batch_size, args.workers, chip_args)
        run |= {"side": side, "chips": len(list_folder(scene, ChipConfig(224), PRESETS["rgb"]).items)}
        run |= {"scene_mib": scene.stat().st_size / 2**20, "write_s": write_s}
        result["runs"].append(run)
        print(json.dumps({k: v for k, v in run.items() if k != "stdout"}), flush=True)
        if side != min(args.sizes) and not args.keep:
            shutil.rmtree(args.work / f"scene{side}", ignore_errors=True)
        if not args.keep:
            shutil.rmtree(args.work / f"index{side}", ignore_errors=True)
    first = args.work / f"scene{min(args.sizes)}" / "scene.tif"
    result["forward_img_per_s"] = forward_rate(first, args.forward_chips, args.batch_size)
    print(f"bare forward pass on the same chips: {result['forward_img_per_s']:.1f} img/s")
    if not args.keep:
        shutil.rmtree(args.work, ignore_errors=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
