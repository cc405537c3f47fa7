"""The two-stage accuracy/speed table: modes none, ftf@K (10, 50, 100) and exhaustive, in one run.

1. The SynthRS test split (every caption and image is a query).
2. A large gallery: the test split plus distractor images (another SynthRS seed) up to
   ``--gallery-size`` images; a seeded sample of the test captions/images are the queries, the same
   sample for every mode.

Run (see BENCHMARKS.md for the exact commands behind the recorded figures)::

    .venv/bin/python -m bench.two_stage_table --data data/synthrs --distractors data/synthrs-distractors \\
        --checkpoint model/weights/rsir-vit-tiny.safetensors --out bench/results/two_stage.json
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.report import recall_table, run_meta, write_json
from bench.statistics import bootstrap_mr
from rsir.index.gallery import Gallery, gallery_from_features
from rsir.model.datasets import CaptionDataset, load_dataset
from rsir.model.encoders import ClipEncoder, EncoderConfig
from rsir.model.features import ImageFeatures, TextFeatures
from rsir.model.ftf import FTFParams
from rsir.model.metrics import QueryHits
from rsir.search.engine import EngineConfig, SearchEngine
from rsir.search.evaluate import evaluate, load_images
from rsir.search.options import Rerank

MODES: list[tuple[Rerank, int | None]] = [
    ("none", None),
    ("ftf", 10),
    ("ftf", 50),
    ("ftf", 100),
    ("exhaustive", None),
]


def embed(encoder: ClipEncoder, ds: CaptionDataset) -> tuple[ImageFeatures, TextFeatures]:
    images = ImageFeatures.cat([encoder.encode_images(b) for b in load_images(ds.images, 128)])
    texts = TextFeatures.cat(
        [encoder.encode_texts(ds.captions[i : i + 512]) for i in range(0, len(ds.captions), 512)]
    )
    return images, texts


def build(parts: list[tuple[CaptionDataset, ImageFeatures, TextFeatures]]) -> Gallery:
    ids: list[str] = []
    owners: list[int] = []
    texts: list[str] = []
    for ds, _, _ in parts:
        offset = len(ids)
        ids += [rec.filename for rec in ds.images]
        owners += [offset + i for i in ds.caption_image]
        texts += ds.captions
    images = ImageFeatures.cat([p[1] for p in parts])
    captions = TextFeatures.cat([p[2] for p in parts])
    return gallery_from_features(ids, images, captions, texts=texts, caption_image=owners)


def distractors(extra: CaptionDataset, n: int) -> CaptionDataset:
    """The first ``n`` images of ``extra`` with their captions: what fills the large gallery."""
    keep = extra.images[:n]
    pairs = [(c, o) for c, o in zip(extra.captions, extra.caption_image, strict=True) if o < len(keep)]
    return CaptionDataset(
        name=extra.name,
        images=keep,
        captions=[c for c, _ in pairs],
        caption_image=[o for _, o in pairs],
    )


def query_sample(test: CaptionDataset, n_captions: int, n_images: int) -> tuple[np.ndarray, np.ndarray]:
    """The large gallery's seeded query sample (indices of test captions, test images), sorted; the
    benchmarks that compare against this table's rows draw theirs here so that the samples agree."""
    rng = np.random.default_rng(0)
    cq = np.sort(rng.choice(len(test.captions), min(n_captions, len(test.captions)), replace=False))
    iq = np.sort(rng.choice(len(test.images), min(n_images, len(test.images)), replace=False))
    return cq, iq


def run_modes(
    engine: SearchEngine, label: str, cq: np.ndarray | None, iq: np.ndarray | None
) -> tuple[list[dict[str, Any]], list[QueryHits]]:
    rows = []
    hits = []
    for mode, k in MODES:
        t0 = time.perf_counter()
        result = evaluate(engine, mode, k, label, caption_queries=cq, image_queries=iq)
        row = result.as_dict() | {"gallery": label, "wall_s": time.perf_counter() - t0}
        row.pop("encoder")
        rows.append(row)
        hits.append(result.hits)
        print(
            f"  {label} {mode:<10} K={k!s:<4} mR={row['mR']:6.2f} t2i={row['t2i_ms_per_query']:8.2f} ms "
            f"i2t={row['i2t_ms_per_query']:8.2f} ms",
            flush=True,
        )
    return rows, hits


def intervals(label: str, hits: list[QueryHits], n_resamples: int) -> dict[str, Any]:
    """95% paired-bootstrap intervals (queries resampled) for each mode's mR, for ftf@100's share of
    exhaustive's mR, and for the rerank's gain over coarse-only: the targets' figures, with the
    uncertainty that a sample of queries leaves in them."""
    mr = bootstrap_mr(hits, n_resamples)
    names = [f"{mode}@{k}" if k else mode for mode, k in MODES]
    col = {name: j for j, name in enumerate(names)}
    ftf100, exh, none = mr[:, col["ftf@100"]], mr[:, col["exhaustive"]], mr[:, col["none"]]
    with np.errstate(divide="ignore", invalid="ignore"):
        share = np.where(exh > 0, ftf100 / exh, np.nan)

    def ci(x: np.ndarray) -> list[float]:
        return [float(v) for v in np.nanpercentile(x, [2.5, 97.5])]

    return {
        "gallery": label,
        "n_resamples": n_resamples,
        "mR_ci": {name: ci(mr[:, j]) for name, j in col.items()},
        "ftf100_share_of_exhaustive_ci": ci(share),
        "ftf100_gain_over_none_ci": ci(ftf100 - none),
    }


def interval_markdown(found: list[dict[str, Any]]) -> str:
    lines = [
        "| gallery | none mR | ftf@100 mR | exhaustive mR | ftf@100 / exhaustive | ftf@100 - none |",
        "|" + "---|" * 6,
    ]
    for f in found:
        m = f["mR_ci"]
        share = f["ftf100_share_of_exhaustive_ci"]
        gain = f["ftf100_gain_over_none_ci"]
        lines.append(
            f"| {f['gallery']} | "
            + " | ".join(
                f"{m[name][0]:.2f} to {m[name][1]:.2f}" for name in ("none", "ftf@100", "exhaustive")
            )
            + f" | {100 * share[0]:.0f}% to {100 * share[1]:.0f}% | {gain[0]:+.2f} to {gain[1]:+.2f} |"
        )
    return "\n".join(lines)


def markdown(rows: list[dict[str, Any]]) -> str:
    lead = ("gallery", "mode", "K")
    return "\n".join(recall_table(lead, rows, lambda r: (r["gallery"], r["mode"], r["K"] or "-")))


def add_gallery_args(parser: argparse.ArgumentParser, distractors_required: bool, device: str) -> None:
    """The options every bench over this table's galleries takes, with the same defaults, so that
    their rows are comparable: data, the large gallery's make-up and query sample, and the model."""
    parser.add_argument("--data", type=Path, required=True, help="SynthRS folder; its test split is used")
    parser.add_argument(
        "--distractors", type=Path, required=distractors_required, help="SynthRS folder of distractors"
    )
    parser.add_argument("--gallery-size", type=int, default=20_000)
    parser.add_argument("--caption-queries", type=int, default=500, help="large gallery: caption queries")
    parser.add_argument("--image-queries", type=int, default=200, help="large gallery: image queries")
    parser.add_argument("--arch", default="rsir-vit-tiny")
    parser.add_argument("--checkpoint", type=Path)
    parser.add_argument("--device", default=device)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_gallery_args(parser, distractors_required=False, device="auto")
    parser.add_argument("--split", default="test", help="split of --data to query (val for tuning)")
    parser.add_argument("--tau", type=float, default=0.05, help="FTF softmax temperature")
    parser.add_argument("--lam", type=float, default=0.5, help="coarse weight in the fused score")
    parser.add_argument("--skip-small", action="store_true", help="only the large gallery")
    parser.add_argument("--bootstrap", type=int, default=2000, help="resamples for the 95%% intervals")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    torch.manual_seed(0)
    encoder = ClipEncoder(EncoderConfig(arch=args.arch, checkpoint=args.checkpoint, device=args.device))
    config = EngineConfig(ftf=FTFParams(tau=args.tau, lam=args.lam), device=args.device)
    test = load_dataset(args.data, split=args.split)
    t0 = time.perf_counter()
    test_feats = embed(encoder, test)
    print(
        f"embedded test split: {len(test.images)} images, {len(test.captions)} captions "
        f"in {time.perf_counter() - t0:.0f} s",
        flush=True,
    )
    rows: list[dict[str, Any]] = []
    found: list[dict[str, Any]] = []
    if not args.skip_small:
        small = build([(test, *test_feats)])
        label = f"test {len(test.images)}"
        part, hits = run_modes(SearchEngine(small, encoder, config), label, None, None)
        rows += part
        found.append(intervals(label, hits, args.bootstrap))

    if args.distractors is not None:
        distract = distractors(load_dataset(args.distractors), args.gallery_size - len(test.images))
        t0 = time.perf_counter()
        big = build([(test, *test_feats), (distract, *embed(encoder, distract))])
        print(f"embedded {len(distract.images)} distractors in {time.perf_counter() - t0:.0f} s", flush=True)
        cq, iq = query_sample(test, args.caption_queries, args.image_queries)
        label = f"large {len(big)}"
        part, hits = run_modes(SearchEngine(big, encoder, config), label, cq, iq)
        rows += part
        found.append(intervals(label, hits, args.bootstrap))

    table = markdown(rows) + "\n\n95% bootstrap intervals (queries resampled):\n\n" + interval_markdown(found)
    print(table)
    doc = {"meta": run_meta(encoder, args), "rows": rows, "intervals": found, "markdown": table}
    write_json(args.out, doc)


if __name__ == "__main__":
    main()
