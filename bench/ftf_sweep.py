"""FTF hyperparameters on a validation split: mR of coarse-only recall and of ftf@K over tau x lam.

The split is embedded once; every setting searches the same features through the engine. Used to
check (not tune in secret) the spec's defaults tau=0.05, lam=0.5; results go to BENCHMARKS.md.

    .venv/bin/python -m bench.ftf_sweep --data data/synthrs --split val \\
        --checkpoint model/weights/rsir-vit-tiny.safetensors
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from bench.report import write_json
from rsir.model.datasets import load_dataset
from rsir.model.encoders import ClipEncoder, EncoderConfig
from rsir.model.ftf import FTFParams
from rsir.search.engine import EngineConfig, SearchEngine
from rsir.search.evaluate import embed_dataset, evaluate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--split", default="val")
    ap.add_argument("--model", default="rsir-vit-tiny")
    ap.add_argument("--checkpoint", type=Path, required=True)
    ap.add_argument("--recall-k", type=int, default=100)
    ap.add_argument("--taus", type=float, nargs="+", default=[0.02, 0.05, 0.1])
    ap.add_argument("--lams", type=float, nargs="+", default=[0.0, 0.25, 0.5, 0.75])
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    ds = load_dataset(args.data, split=args.split)
    encoder = ClipEncoder(
        EncoderConfig(arch=args.model, checkpoint=args.checkpoint, device="cpu", batch_size=128)
    )
    t0 = time.perf_counter()
    gallery = embed_dataset(encoder, ds)
    print(f"embedded {len(gallery)} images, {len(ds.captions)} captions in {time.perf_counter() - t0:.0f} s")
    rows = []
    coarse = evaluate(SearchEngine(gallery, None, EngineConfig(device="cpu")), "none")
    rows.append({"mode": "none", "tau": None, "lam": None, **coarse.report.as_dict()})
    print(f"none: mR {coarse.report.mR:.2f}")
    for tau in args.taus:
        for lam in args.lams:
            engine = SearchEngine(gallery, None, EngineConfig(ftf=FTFParams(tau=tau, lam=lam), device="cpu"))
            r = evaluate(engine, "ftf", args.recall_k).report
            rows.append({"mode": f"ftf@{args.recall_k}", "tau": tau, "lam": lam, **r.as_dict()})
            print(f"ftf@{args.recall_k} tau {tau} lam {lam}: mR {r.mR:.2f} (+{r.mR - coarse.report.mR:.2f})")
    write_json(args.out, rows)


if __name__ == "__main__":
    main()
