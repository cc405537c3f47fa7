"""Serving pixels from the source: a chip window, a thumbnail and a scene overview read from a COG by
rsir.index.scenes.read_window (the builder's read, which the service serves chips with), against scene
size (time per read, and the process's peak RSS, which must not follow the scene's size); and the
GeoJSON answer's cost for k hits.

    python -m bench.chip_pixels --sides 2048 4096 8192 --out bench/results/chip_pixels.json

Each scene is written by one process and read by another (peak RSS is per process, and writing a scene
costs memory that serving it must not). Scenes are uint8 RGB tiled GeoTIFFs (512 px blocks, deflate,
overviews 2..32: the COG layout) of noise, in a temporary folder deleted after. The reader's RSS
includes GDAL's block cache (GDAL_CACHEMAX, 5% of RAM by default), bounded whatever the scene size.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPEATS = 20


def write_cog(path: Path, side: int) -> None:
    import rasterio
    from rasterio.enums import Resampling
    from rasterio.transform import Affine
    from rasterio.windows import Window

    profile = {
        "driver": "GTiff",
        "width": side,
        "height": side,
        "count": 3,
        "dtype": "uint8",
        "crs": "EPSG:32633",
        "transform": Affine(0.5, 0, 400_000, 0, -0.5, 5_100_000),
        "tiled": True,
        "blockxsize": 512,
        "blockysize": 512,
        "compress": "deflate",
    }
    rng = np.random.default_rng(0)
    with rasterio.open(path, "w", **profile) as dst:
        for row in range(0, side, 512):  # written in strips: the writer's memory stays small too
            strip = rng.integers(0, 256, (3, min(512, side - row), side), dtype=np.uint8)
            dst.write(strip, window=Window(0, row, side, strip.shape[1]))
        dst.build_overviews([2, 4, 8, 16, 32], Resampling.average)


def read_scene(path: Path) -> dict[str, Any]:
    """Reads of ``path`` in this process (which did nothing else): medians and peak RSS."""
    from rsir.index.scenes import read_window
    from rsir.index_builder.scenes import PRESETS, open_scene

    scene = open_scene("bench", None, str(path), PRESETS["rgb"])  # as a build records it
    side = scene.width
    rng = np.random.default_rng(1)
    timings: dict[str, list[float]] = {"chip_224": [], "thumbnail_128_of_896": [], "overview_1024": []}
    for _ in range(REPEATS):
        col, row = (int(v) for v in rng.integers(0, side - 896, 2))
        t = time.perf_counter()
        read_window(scene, (col, row, 224, 224), 224)
        timings["chip_224"].append(time.perf_counter() - t)
        t = time.perf_counter()
        read_window(scene, (col, row, 896, 896), 128)
        timings["thumbnail_128_of_896"].append(time.perf_counter() - t)
        t = time.perf_counter()
        read_window(scene, (0, 0, side, side), 1024)
        timings["overview_1024"].append(time.perf_counter() - t)
    return {
        "side": side,
        "scene_mb_raw": round(side * side * 3 / 2**20, 1),
        "file_mb": round(path.stat().st_size / 2**20, 1),
        **{f"{k}_ms_median": round(1000 * float(np.median(v)), 2) for k, v in timings.items()},
        "reader_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def _child(*args: str) -> str:
    cmd = [sys.executable, "-m", "bench.chip_pixels", *args]
    return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip()


def geojson_cost(k: int) -> dict[str, Any]:
    from shapely.geometry import box

    from rsir.service.chip_merge import Place
    from rsir.service.geojson import feature_collection

    hits = [
        {
            "id": f"s{i % 5}/{i}",
            "rank": i + 1,
            "score": 1 - i / k,
            "metadata": {"time": "2024-01-01T00:00:00Z"},
        }
        for i in range(k)
    ]
    places = [
        Place(box(i * 0.01, 0, i * 0.01 + 0.02, 0.02), f"s{i % 5}", (i * 168, 0, 224, 224)) for i in range(k)
    ]
    runs = []
    for _ in range(REPEATS):
        t = time.perf_counter()
        json.dumps(feature_collection(hits, places))
        runs.append(time.perf_counter() - t)
    return {"k": k, "geojson_ms_median": round(1000 * float(np.median(runs)), 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sides", type=int, nargs="+", default=[2048, 4096, 8192])
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--write", nargs=2, default=None, help=argparse.SUPPRESS)  # child: side, path
    parser.add_argument("--read", type=Path, default=None, help=argparse.SUPPRESS)  # child: path
    args = parser.parse_args()
    if args.write is not None:
        write_cog(Path(args.write[1]), int(args.write[0]))
        return
    if args.read is not None:
        print(json.dumps(read_scene(args.read)))
        return
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for side in args.sides:
            path = Path(folder) / f"scene{side}.tif"
            _child("--write", str(side), str(path))  # its own process: writing costs memory, reading must not
            rows.append(json.loads(_child("--read", str(path)).splitlines()[-1]))
            path.unlink()
            print(json.dumps(rows[-1]), flush=True)
    result = {"scenes": rows, "geojson": [geojson_cost(k) for k in (10, 100)]}
    print(json.dumps(result["geojson"]))
    if args.out is not None:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
