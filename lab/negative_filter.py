"""How well does caption-text similarity find the false negatives of a reranker's training groups?

``lab/learned_rerank.py --negatives-from text`` drops, from a caption query's negatives, every image
one of whose own captions is within a cosine threshold of the query caption (``text_allowed``): such
an image is likely a true match, not a negative, and only the archive's captions are needed to tell.
This measures that filter against the truth checker (:mod:`rsir.synthrs.truth`) on the groups the
reranker trains on: the non-own images of each caption's coarse top ``--pool`` within one random
sub-gallery of ``--sub-gallery`` images of a split whose features ``lab.learned_rerank`` cached::

    .venv/bin/python -m lab.negative_filter --data data/synthrs-seed1 --split train \\
        --cache data/cache/cross/synthrs-seed1-train
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from bench.caption_ties import load_gallery
from lab.learned_rerank import text_allowed
from rsir.model.datasets import load_dataset
from rsir.synthrs.truth import truth_matrix


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--split", default="train")
    ap.add_argument("--cache", type=Path, required=True, help="the split's features (lab.learned_rerank's)")
    ap.add_argument("--pool", type=int, default=20)
    ap.add_argument("--sub-gallery", type=int, default=1200)
    ap.add_argument("--thresholds", type=float, nargs="+", default=[0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.98])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()

    ds = load_dataset(args.data, split=args.split)
    full = load_gallery(args.cache)
    assert full.captions is not None
    imgs = np.sort(np.random.default_rng(args.seed).choice(len(full), args.sub_gallery, replace=False))
    caps = np.flatnonzero(np.isin(full.captions.image_index, imgs))
    owners = np.searchsorted(imgs, full.captions.image_index[caps])  # positions in imgs
    vectors = np.asarray(full.captions.vectors, np.float32)[caps]
    scenes = [ds.images[int(i)].meta["scene"] for i in imgs]
    texts = [full.captions.texts[int(c)] for c in caps]
    truth = truth_matrix(texts, [scenes[o]["class"] for o in owners], scenes)  # [Nc, Ni]
    coarse = vectors @ np.asarray(full.vectors, np.float32)[imgs].T
    top = np.argsort(-coarse, axis=1)[:, : args.pool]
    rows = np.arange(len(owners))[:, None]
    other = owners[:, None] != top
    true_of = truth[rows, top][other]
    print(f"{true_of.size} non-own pairs in the coarse top {args.pool}; true-of share {true_of.mean():.3f}")
    rows_out: list[dict[str, float]] = []
    result = {"pairs": int(true_of.size), "true_of_share": float(true_of.mean()), "rows": rows_out}
    for threshold in args.thresholds:
        keep = text_allowed(vectors, owners, len(imgs), threshold)[rows, top][other]
        row = {
            "threshold": threshold,
            "kept_share": float(keep.mean()),
            "true_of_share_kept": float(true_of[keep].mean()) if keep.any() else 0.0,
            "true_of_dropped": float((~keep[true_of]).mean()),
        }
        print(" ".join(f"{k} {v:.3f}" for k, v in row.items()))
        rows_out.append(row)
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
