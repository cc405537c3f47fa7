"""The methods table (issue 7): recall {exact, IVF, hash, SGPD} x rerank {none, ftf, local} x
{plain, +PPSR, +SAR} on the SynthRS test split, every caption and image a query, in one run.

    .venv/bin/python -m bench.methods_table --data data/synthrs --out bench/results/methods.json

The gallery is embedded once with the shipped model; every row searches it through the same
:class:`rsir.search.engine.SearchEngine` (only the options differ), so rows differ only by method.
IVF is the dense recall with ``IVF{nlist},Flat`` indexes (nlist ~ sqrt(N)) at the default nprobe.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from dataclasses import replace
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.report import recall_table
from bench.two_stage_table import build, embed
from rsir.index.dense import DenseRecall
from rsir.index.extras import build_extras
from rsir.model.datasets import load_dataset
from rsir.model.encoders import DEFAULT_HASH_HEADS, ClipEncoder, EncoderConfig, default_checkpoint
from rsir.model.ftf import FTFParams
from rsir.model.hashing import HashHeads
from rsir.search.engine import EngineConfig, SearchEngine
from rsir.search.evaluate import MethodOptions, evaluate
from rsir.search.options import Rerank

ARCH = "rsir-vit-tiny"
RECALLS = ("exact", "ivf", "hash", "sgpd")
RERANKS: tuple[Rerank, ...] = ("none", "ftf", "local")
CORRECTIONS = ("plain", "ppsr", "sar")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--split", default="test")
    p.add_argument("--hash-heads", type=Path, default=DEFAULT_HASH_HEADS)
    p.add_argument("--recall-k", type=int, default=100)
    p.add_argument("--device", default="auto")
    p.add_argument("--local-weight", type=float, default=0.6)
    p.add_argument("--sar", default="hard", choices=("hard", "soft"))
    p.add_argument(
        "--hash-ppsr",
        default="hamming",
        choices=("hamming", "cosine"),
        help="PPSR over hash recall: CSLS of minus the Hamming distance (the spec) or of the cosines",
    )
    p.add_argument("--recalls", default=",".join(RECALLS), help="subset of rows, e.g. exact,hash")
    p.add_argument("--reranks", default=",".join(RERANKS))
    p.add_argument("--corrections", default=",".join(CORRECTIONS))
    p.add_argument(
        "--local-weights", default=None, help="sweep: comma-separated local weights (rerank local)"
    )
    p.add_argument("--caption-queries", type=int, default=0, help="a seeded sample of captions (0: all)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--out", type=Path)
    args = p.parse_args()

    torch.manual_seed(0)
    if args.threads:
        torch.set_num_threads(args.threads)
    encoder = ClipEncoder(
        EncoderConfig(
            arch="rsir-vit-tiny", checkpoint=default_checkpoint("rsir-vit-tiny"), device=args.device
        )
    )
    ds = load_dataset(args.data, split=args.split)
    t0 = time.perf_counter()
    gallery = build([(ds, *embed(encoder, ds))])
    print(
        f"embedded {len(ds.images)} images, {len(ds.captions)} captions in {time.perf_counter() - t0:.0f} s"
    )
    heads = HashHeads.load(args.hash_heads)
    t0 = time.perf_counter()
    extras = build_extras(gallery, heads)
    print(f"extras (hash codes, SGPD, PPSR r_g, SAR profiles) built in {time.perf_counter() - t0:.1f} s")
    config = EngineConfig(
        ftf=FTFParams(), device=args.device, local_weight=args.local_weight, hash_ppsr=args.hash_ppsr
    )
    store = gallery.captions
    assert store is not None
    nlist_i = max(1, round(np.sqrt(len(gallery))))
    nlist_c = max(1, round(np.sqrt(len(store.texts))))
    engines = {
        "exact": SearchEngine(gallery, encoder, config, extras=extras, hash_heads=heads),
        "ivf": SearchEngine(
            gallery,
            encoder,
            config,
            image_recall=DenseRecall(np.asarray(gallery.vectors), f"IVF{nlist_i},Flat"),
            caption_recall=DenseRecall(np.asarray(store.vectors), f"IVF{nlist_c},Flat"),
            extras=extras,
            hash_heads=heads,
        ),
    }
    cq = None
    if args.caption_queries:
        rng = np.random.default_rng(0)
        cq = np.sort(rng.choice(len(store.texts), min(args.caption_queries, len(store.texts)), replace=False))
    rows: list[dict[str, Any]] = []
    if args.local_weights:
        for w in (float(x) for x in args.local_weights.split(",")):
            engine = SearchEngine(gallery, encoder, replace(config, local_weight=w), extras=extras)
            result = evaluate(engine, "local", args.recall_k, f"{ds.name}:{args.split}", caption_queries=cq)
            rows.append(result.as_dict() | {"local_weight": w})
            print(f"local weight {w:.2f}: mR={rows[-1]['mR']:.2f}", flush=True)
        if args.out is not None:
            args.out.write_text(json.dumps({"split": args.split, "rows": rows}, indent=1, default=str))
        return
    for recall in args.recalls.split(","):
        engine = engines.get(recall, engines["exact"])
        method_recall = "dense" if recall in ("exact", "ivf") else recall
        for rerank in args.reranks.split(","):
            for correction in args.corrections.split(","):
                method = MethodOptions(
                    recall=method_recall,  # type: ignore[arg-type]
                    ppsr=correction == "ppsr",
                    sar=args.sar if correction == "sar" else "off",
                )
                recall_k = args.recall_k if rerank != "none" or correction == "sar" else None
                t0 = time.perf_counter()
                mode: Rerank = rerank
                name = f"{ds.name}:{args.split}"
                result = evaluate(engine, mode, recall_k, name, caption_queries=cq, method=method)
                row = result.as_dict() | {"recall_method": recall, "correction": correction}
                row["wall_s"] = time.perf_counter() - t0
                row.pop("encoder", None)
                rows.append(row)
                print(
                    f"{recall:<5} {rerank:<5} {correction:<5} mR={row['mR']:6.2f} "
                    f"t2i {row['t2i_ms_per_query']:7.2f} ms i2t {row['i2t_ms_per_query']:7.2f} ms",
                    flush=True,
                )
    lead = ("recall", "rerank", "correction")
    lines = recall_table(lead, rows, lambda r: (r["recall_method"], r["mode"], r["correction"]))
    print("\n".join(lines))
    if args.out is not None:
        meta = {
            "date": date.today().isoformat(),
            "machine": platform.node(),
            "cpu_threads": torch.get_num_threads(),
            "recall_k": args.recall_k,
            "sar": args.sar,
            "hash_ppsr": args.hash_ppsr,
            "captionless_images": "miss",
            "local_weight": args.local_weight,
            "nlist": [nlist_i, nlist_c],
            "caption_queries": "all" if cq is None else len(cq),
        }
        args.out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
