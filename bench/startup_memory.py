"""What opening an index version costs a server: time and memory of ``open_serving_index`` (what the
API does at start and at every index switch) on a synthetic version of N images.

    python bench/startup_memory.py make --n 50000 --out /tmp/startup-index
    python bench/startup_memory.py compare /tmp/startup-index --before /tmp/old-checkout --rounds 2
    python -m bench.startup_memory measure /work/scale-data/vitb32-1m --model ViT-B-32
    python -m bench.startup_memory ready /work/scale-data/vitb32-1m --model ViT-B-32

(``bench/scale_index.py`` writes versions of 10^5-10^6 items at a real model's shapes.)

``make`` writes a version with the shipped model's shapes (dim 256, 7x7 patches, 2 captions per image,
fp16 tokens) from random unit vectors, through the builder's own writers (FAISS indexes, the methods'
extras, and SGPD's clusters when the checkout stores them). ``compare`` opens it in fresh processes,
alternating the code in ``--before`` (another checkout, on PYTHONPATH) and this one, and prints each
run's seconds and memory: peak RSS, and the resident anonymous (private) and file-backed (page cache,
shared, evictable) memory after the open. The model is loaded before the clock starts. ``measure``
also opens the version a second time while holding the first, as an index switch does, and reports
what that second open added. ``ready`` times ``rsir serve`` from process start to ``/readyz`` answering
200 (model load included) and reads the server's resident memory from ``/proc/<pid>/status`` then.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
WORDS = 8
CAPTIONS_PER_IMAGE = 2


def _unit(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray[Any, Any]:
    x = rng.standard_normal(shape, dtype=np.float32)
    unit: np.ndarray[Any, Any] = x / np.linalg.norm(x, axis=-1, keepdims=True)
    return unit


def _repeated(rng: np.random.Generator, n: int, shape: tuple[int, int]) -> np.ndarray[Any, Any]:
    return np.broadcast_to(_unit(rng, (1, *shape)).astype(np.float16), (n, *shape))


def make(n: int, out: Path, seed: int = 0) -> None:
    from rsir.cli import _encoder
    from rsir.index.dense import DenseRecall
    from rsir.index.gallery import CaptionStore, Gallery
    from rsir.index.versions import Manifest, save_gallery, switch_current
    from rsir.index_builder.extras import write_extras

    encoder = _encoder("rsir-vit-tiny", None, "cpu", 64)
    rng = np.random.default_rng(seed)
    m = encoder.grid[0] * encoder.grid[1]
    nc = n * CAPTIONS_PER_IMAGE
    captions = CaptionStore(
        texts=[f"caption {i}" for i in range(nc)],
        image_index=np.repeat(np.arange(n), CAPTIONS_PER_IMAGE),
        vectors=_unit(rng, (nc, encoder.dim)),
        # token arrays are memory-mapped by every version of the code: one random row repeated is enough
        tokens=_repeated(rng, nc, (WORDS, encoder.dim)),
        mask=np.ones((nc, WORDS), np.bool_),
    )
    gallery = Gallery(
        ids=[f"img{i:07d}.png" for i in range(n)],
        vectors=_unit(rng, (n, encoder.dim)),
        patches=_repeated(rng, n, (m, encoder.dim)),
        grid=encoder.grid,
        captions=captions,
    )
    folder = out / "v0001"
    manifest = Manifest(
        encoder=encoder.describe(),
        n_images=n,
        n_captions=nc,
        token_codec="fp16",
        dim=encoder.dim,
        grid=encoder.grid,
    )
    save_gallery(gallery, folder, manifest)
    DenseRecall(np.asarray(gallery.vectors)).save(folder / "recall.faiss")
    DenseRecall(np.asarray(captions.vectors)).save(folder / "caption_recall.faiss")
    write_extras(folder, None)
    (folder / "tombstones.json").write_text("[]")
    switch_current(out, "v0001")


def _status(pid: int | str = "self") -> dict[str, float]:
    """RssAnon / RssFile / VmRSS / VmHWM of a process, MiB (Linux /proc)."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("RssAnon", "RssFile", "VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) / 1024
    return out


def measure(index: Path, model: str = "rsir-vit-tiny", checkpoint: Path | None = None) -> dict[str, float]:
    from rsir.cli import _encoder
    from rsir.search.engine import EngineConfig
    from rsir.service.serving_index import open_serving_index

    encoder = _encoder(model, checkpoint, "cpu", 64)
    before = _status()
    t0 = time.perf_counter()
    served = open_serving_index(index, encoder, EngineConfig(device="cpu"))
    seconds = time.perf_counter() - t0
    after = _status()
    assert served.images > 0
    # An index switch: the next version opens while requests still hold this one.
    t0 = time.perf_counter()
    switched = open_serving_index(index, encoder, EngineConfig(device="cpu"))
    switch_seconds = time.perf_counter() - t0
    both = _status()
    assert switched.images == served.images
    return {
        "seconds": round(seconds, 2),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "anon_mib_added": round(after["RssAnon"] - before["RssAnon"], 1),
        "file_mib_added": round(after["RssFile"] - before["RssFile"], 1),
        "model_rss_mib": round(before["RssAnon"] + before["RssFile"], 1),
        "switch_seconds": round(switch_seconds, 2),
        "switch_anon_mib_added": round(both["RssAnon"] - after["RssAnon"], 1),
        "switch_file_mib_added": round(both["RssFile"] - after["RssFile"], 1),
    }


def ready(index: Path, model: str, checkpoint: Path | None, timeout_s: float = 600) -> dict[str, float]:
    """Seconds from starting ``rsir serve`` to ``/readyz`` answering 200, and its memory then."""
    from bench.load_service import serve

    env = {"RSIR_MODEL": model} | ({"RSIR_CHECKPOINT": str(checkpoint)} if checkpoint is not None else {})
    t0 = time.perf_counter()
    proc, _ = serve(index, env, timeout_s)
    try:
        seconds = time.perf_counter() - t0
        status = _status(proc.pid)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    return {"ready_seconds": round(seconds, 1), **{f"{k}_mib": round(v, 1) for k, v in status.items()}}


def compare(index: Path, before: Path, rounds: int) -> list[dict[str, Any]]:
    rows = []
    for r in range(rounds):
        for label, code in (("before", before), ("after", REPO)):
            env = {**os.environ, "PYTHONPATH": str(code), "OMP_NUM_THREADS": "2"}
            done = subprocess.run(
                [sys.executable, str(Path(__file__).resolve()), "measure", str(index)],
                env=env,
                cwd=code,
                capture_output=True,
                text=True,
                check=True,
            )
            row = {"code": label, "round": r, **json.loads(done.stdout.strip().splitlines()[-1])}
            rows.append(row)
            sys.stderr.write(json.dumps(row) + "\n")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_make = sub.add_parser("make")
    p_make.add_argument("--n", type=int, default=50_000)
    p_make.add_argument("--out", type=Path, required=True)
    p_measure = sub.add_parser("measure")
    p_measure.add_argument("index", type=Path)
    p_ready = sub.add_parser("ready")
    p_ready.add_argument("index", type=Path)
    for p_model in (p_measure, p_ready):
        p_model.add_argument("--model", default="rsir-vit-tiny")
        p_model.add_argument("--checkpoint", type=Path, default=None)
    p_compare = sub.add_parser("compare")
    p_compare.add_argument("index", type=Path)
    p_compare.add_argument("--before", type=Path, required=True)
    p_compare.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    if args.cmd == "make":
        make(args.n, args.out)
    elif args.cmd == "measure":
        sys.stdout.write(json.dumps(measure(args.index, args.model, args.checkpoint)) + "\n")
    elif args.cmd == "ready":
        sys.stdout.write(json.dumps(ready(args.index, args.model, args.checkpoint)) + "\n")
    else:
        json.dump(compare(args.index, args.before, args.rounds), sys.stdout, indent=1)
        sys.stdout.write("\n")


if __name__ == "__main__":
    main()
