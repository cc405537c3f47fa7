"""FTF rerank depth on the large gallery: ftf@K for K beyond the table's 100, coarse-only alongside.

The two-stage table (``bench/two_stage_table.py``) found that on the 20,000-image gallery the
image-to-caption rerank over the 50-100 nearest of 100,000 captions loses to exhaustive search. This
asks how deep the rerank must go to close that gap, on the table's own gallery and query sample
(same seeds), without re-running exhaustive search::

    .venv/bin/python -m bench.rerank_depth --data data/synthrs --distractors data/synthrs-distractors \\
        --checkpoint model/weights/rsir-vit-tiny.safetensors --out bench/results/rerank_depth.json
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch

from bench.report import run_meta, write_json
from bench.two_stage_table import add_gallery_args, build, distractors, embed, query_sample
from rsir.model.datasets import load_dataset
from rsir.model.encoders import ClipEncoder, EncoderConfig
from rsir.model.ftf import FTFParams
from rsir.search.engine import EngineConfig, SearchEngine
from rsir.search.evaluate import evaluate


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_gallery_args(parser, distractors_required=True, device="cpu")
    parser.add_argument("--ks", type=int, nargs="+", default=[100, 250, 500, 1000])
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    torch.manual_seed(0)
    encoder = ClipEncoder(EncoderConfig(arch=args.arch, checkpoint=args.checkpoint, device=args.device))
    test = load_dataset(args.data, split="test")
    distract = distractors(load_dataset(args.distractors), args.gallery_size - len(test.images))
    gallery = build([(test, *embed(encoder, test)), (distract, *embed(encoder, distract))])
    cq, iq = query_sample(test, args.caption_queries, args.image_queries)
    config = EngineConfig(
        ftf=FTFParams(), device=args.device, max_recall_k=max([*args.ks, EngineConfig().default_recall_k])
    )
    engine = SearchEngine(gallery, encoder, config)
    rows: list[dict[str, Any]] = []
    for mode, k in [("none", None)] + [("ftf", k) for k in args.ks]:
        row = evaluate(
            engine, mode, k, f"large {len(gallery)}", caption_queries=cq, image_queries=iq
        ).as_dict()
        row.pop("encoder")
        rows.append(row)
        print(
            f"{mode:<5} K={k!s:<5} t2i R@1/5/10 {row['t2i_r1']:.2f}/{row['t2i_r5']:.2f}/{row['t2i_r10']:.2f} "
            f"i2t R@1/5/10 {row['i2t_r1']:.2f}/{row['i2t_r5']:.2f}/{row['i2t_r10']:.2f} mR {row['mR']:.2f} "
            f"t2i {row['t2i_ms_per_query']:.2f} ms i2t {row['i2t_ms_per_query']:.2f} ms",
            flush=True,
        )
    write_json(args.out, {"meta": run_meta(encoder, args), "rows": rows})


if __name__ == "__main__":
    main()
