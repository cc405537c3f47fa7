"""How far the earlier PPSR and SAR readings were from the seeds' definitions, on the SynthRS test split.

1. PPSR depth: CSLS over the whole gallery against CSLS over the cosine top ``2k`` only (the engine's
   fixed depth before 2026-12-05): the share of queries whose top-``k`` differs, and how deep in the
   cosine order the exact top-``k`` reaches (the fetch the exact search needs), for k = 10 and 100.
2. SAR's self-count: for queries that are themselves in the reference sample, the share of their
   top-100 candidates whose stored (float16) profile entry for the query itself ranks above the
   query's score: compared in float32 (the earlier reading) and at the stored precision (now).

    .venv/bin/python -m bench.seed_fidelity --data data/synthrs --out bench/results/seed_fidelity.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bench.methods_table import ARCH
from bench.two_stage_table import build, embed
from rsir.index.dense import pair_cosines
from rsir.index.extras import SAR_REFERENCES, reference_sample, side_data
from rsir.model import ppsr
from rsir.model.datasets import load_dataset
from rsir.model.encoders import ClipEncoder, EncoderConfig, default_checkpoint


def ppsr_depth(
    queries: NDArray[np.float32], gallery: NDArray[np.float32], r_g: NDArray[np.float32], k: int
) -> dict[str, Any]:
    sims = queries.astype(np.float64) @ gallery.astype(np.float64).T
    r_q = ppsr.query_term(sims.astype(np.float32), ppsr.DEFAULT_K).astype(np.float64)
    corrected = 2 * sims - r_q[:, None] - r_g[None, :].astype(np.float64)
    cos_order = np.argsort(-sims, axis=1, kind="stable")
    cos_rank = np.empty_like(cos_order)
    np.put_along_axis(cos_rank, cos_order, np.arange(sims.shape[1])[None, :], axis=1)
    exact = np.argsort(-corrected, axis=1, kind="stable")[:, :k]
    fetched = cos_order[:, : 2 * k]
    sub = np.take_along_axis(corrected, fetched, 1)
    old = np.take_along_axis(fetched, np.argsort(-sub, axis=1, kind="stable")[:, :k], 1)
    reach = np.take_along_axis(cos_rank, exact, 1).max(axis=1) + 1  # cosine depth holding the exact top-k
    return {
        "k": k,
        "queries": int(sims.shape[0]),
        "top_k_list_differs_pct": 100.0 * float((old != exact).any(axis=1).mean()),
        "top_k_set_differs_pct": 100.0
        * float(np.mean([set(a) != set(b) for a, b in zip(old.tolist(), exact.tolist(), strict=True)])),
        "depth_needed_mean": float(reach.mean()),
        "depth_needed_p99": float(np.percentile(reach, 99)),
        "depth_needed_max": int(reach.max()),
        "beyond_2k_pct": 100.0 * float((reach > 2 * k).mean()),
    }


def sar_self(
    queries: NDArray[np.float32],
    gallery: NDArray[np.float32],
    references: NDArray[np.int64],
    profiles_of: NDArray[np.float16],
) -> dict[str, Any]:
    """``queries[references[j]]`` is reference ``j``; ``profiles_of`` the gallery's unsorted fp16
    similarities to the references (``[N, R]``), to find each query's own entry."""
    q = queries[references]
    top = np.argsort(-(q @ gallery.T), axis=1, kind="stable")[:, :100]
    own = np.take_along_axis(profiles_of.T, top, 1).astype(np.float32)  # each candidate's entry for q
    score32 = pair_cosines(q, gallery[top])
    old = float((own > score32).mean())
    new = float((own > score32.astype(np.float16).astype(np.float32)).mean())
    return {
        "queries": int(references.size),
        "pairs": int(top.size),
        "old_pct": 100 * old,
        "new_pct": 100 * new,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--split", default="test")
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    encoder = ClipEncoder(EncoderConfig(arch=ARCH, checkpoint=default_checkpoint(ARCH), device="cpu"))
    ds = load_dataset(args.data, split=args.split)
    gallery = build([(ds, *embed(encoder, ds))])
    store = gallery.captions
    assert store is not None
    images = np.asarray(gallery.vectors, np.float32)
    captions = np.asarray(store.vectors, np.float32)
    r_g_images, _ = side_data(images, captions)
    r_g_captions, _ = side_data(captions, images)
    out: dict[str, Any] = {"split": args.split, "images": len(images), "captions": len(captions)}
    for k in (10, 100):
        out[f"t2i_k{k}"] = ppsr_depth(captions, images, r_g_images, k)
        out[f"i2t_k{k}"] = ppsr_depth(images, captions, r_g_captions, k)
    # SAR: the references are a seeded sample of the other side (rsir.index.extras.side_data's).
    ref_c = reference_sample(len(captions), SAR_REFERENCES)
    ref_i = reference_sample(len(images), SAR_REFERENCES)
    raw_images = (images.astype(np.float64) @ captions[ref_c].astype(np.float64).T).astype(np.float32)
    raw_captions = (captions.astype(np.float64) @ images[ref_i].astype(np.float64).T).astype(np.float32)
    out["sar_t2i"] = sar_self(captions, images, ref_c, raw_images.astype(np.float16))
    out["sar_i2t"] = sar_self(images, captions, ref_i, raw_captions.astype(np.float16))
    print(json.dumps(out, indent=1))
    if args.out is not None:
        args.out.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
