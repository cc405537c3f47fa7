"""How much can any rerank add on SynthRS? Recall ceilings from the captions' truth, and what each score sees.

SynthRS captions state facts (class, counts, colours, sides, relations), and many images of a split
satisfy every fact of a caption: a caption is *true of* a set of images, not of its own image alone.
The standard recall (§6) still counts only the image the caption was written for. So there is a
ceiling no model can pass, and over a two-stage search's candidates there is a ceiling no rerank can
pass. This bench measures them with the independent truth checker (:mod:`rsir.synthrs.truth`):

1. **Truth sets**: for every caption of the split, the images it is true of (same class, every stated
   fact holds); their sizes.
2. **Oracle ceilings**, each the expected recall over random orders of what the oracle cannot tell
   apart (:func:`bench.statistics.expected_report`):
   - *class oracle*: ranks the caption's class first, knows nothing else;
   - *truth oracle*: ranks the images a caption is true of first (the best any model can do without
     reading more into a caption than it says);
   - *oracle rerank @K*: the coarse top-K candidates, true ones first, in random order;
   - *fact filter @K*: the same, but the true candidates keep their coarse order.
3. **The model**, through the engine (``none`` and ``ftf@K``), scored two ways: the standard recall
   (hit = own item) and a *true-match* recall (hit = any item the caption is true of), both in
   expectation over tie orders.
4. **Twin probe**: for twin pairs (same family, one attribute apart) and every caption of one twin
   that is false of the other, how often does each score (coarse, FTF's fine score and its two
   halves, fused, and optionally a trained kernel head) prefer the caption's own image? 50% is
   chance. Broken down by the kind of attribute (count, colour, side).

::

    .venv/bin/python -m lab.caption_truth --data data/synthrs --split test \\
        --checkpoint model/weights/rsir-vit-tiny.safetensors --out lab/results/caption_truth_test.json
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from bench.report import run_meta, write_json
from bench.statistics import expected_report
from lab.kernel_rerank import KernelConfig, KernelReranker
from rsir.index.gallery import Gallery
from rsir.model import ftf
from rsir.model.datasets import load_dataset
from rsir.model.encoders import ClipEncoder, EncoderConfig
from rsir.model.ftf import FTFParams
from rsir.search.engine import EngineConfig, QueryOptions, SearchEngine
from rsir.search.evaluate import embed_dataset
from rsir.synthrs.truth import truth_matrix

NAMES = ("t2i_r1", "t2i_r5", "t2i_r10", "i2t_r1", "i2t_r5", "i2t_r10")


def engine_scores(
    engine: SearchEngine, gallery: Gallery, mode: str, depth: int
) -> tuple[np.ndarray, np.ndarray]:
    """Score matrices ``[captions, images]`` and ``[images, captions]`` of a mode's top ``depth`` results
    (its final scores; ``-inf`` outside the top), searched through the engine."""
    assert gallery.captions is not None
    n_img, n_cap = len(gallery), len(gallery.captions.texts)
    opts = QueryOptions(k=depth, recall_k=depth, rerank=mode)  # type: ignore[arg-type]
    t2i = engine.search(gallery.caption_features(np.arange(n_cap)), [opts] * n_cap)
    img_opts = replace(opts, target="captions")
    i2t = engine.search(gallery.image_features(np.arange(n_img)), [img_opts] * n_img)
    out = []
    for results, shape in ((t2i, (n_cap, n_img)), (i2t, (n_img, n_cap))):
        m = np.full(shape, -np.inf)
        for q, r in enumerate(results):
            for h in r.hits:
                m[q, h.index] = h.score
        out.append(m)
    return out[0], out[1]


def twin_probe(
    gallery: Gallery,
    truth: NDArray[np.bool_],
    scenes: list[dict[str, Any]],
    params: FTFParams,
    kernel: KernelReranker | None = None,
) -> dict[str, dict[str, float]]:
    """Per attribute kind: how often each score ranks a caption's own image above its twin, over the
    captions false of the twin (ties count half). Counts are split by whether the twin has more or
    fewer of the object than the caption's own image. ``kernel``: a trained kernel-pooling head
    (``lab/learned_rerank.py --save``), probed beside the others."""
    assert gallery.captions is not None
    owners = gallery.captions.image_index
    family: dict[int, list[int]] = {}
    for j, scene in enumerate(scenes):
        family.setdefault(int(scene["family"]), []).append(j)
    rows: list[tuple[int, int, int, str]] = []  # caption, own image, twin image, kind
    for members in family.values():
        if len(members) != 2:
            continue
        a, b = members
        changed = [k for k, v in scenes[a]["attributes"].items() if scenes[b]["attributes"].get(k) != v]
        for own, twin in ((a, b), (b, a)):
            kind = "other"
            if len(changed) == 1:
                kind = changed[0].rsplit("_", 1)[-1]
                if kind == "count":
                    more = scenes[twin]["attributes"][changed[0]] > scenes[own]["attributes"][changed[0]]
                    kind = "count, twin has more" if more else "count, twin has fewer"
            for c in np.nonzero(owners == own)[0]:
                if not truth[c, twin]:
                    rows.append((int(c), own, twin, kind))
    cap = np.array([r[0] for r in rows])
    pair = np.array([[r[1], r[2]] for r in rows])
    text = gallery.caption_features(cap)
    vectors = torch.from_numpy(np.asarray(gallery.vectors, np.float32))
    patches = torch.from_numpy(np.asarray(gallery.patches, np.float32))
    coarse = torch.einsum("qd,qkd->qk", text.vectors, vectors[pair])
    parts = [
        ftf.text_to_image(
            text.tokens[i : i + 256], text.mask[i : i + 256], patches[pair[i : i + 256]], params.tau
        )
        for i in range(0, len(rows), 256)
    ]
    fine = torch.cat([o.fine for o in parts])
    scores = {
        "coarse": coarse,
        "fine": fine,
        "s_tv": torch.cat([o.s_tv for o in parts]),
        "s_vt": torch.cat([o.s_vt for o in parts]),
        "fused": ftf.fuse(coarse, fine, params.lam),
    }
    if kernel is not None:
        with torch.no_grad():
            words = text.tokens[:, None].expand(-1, 2, -1, -1).reshape(-1, *text.tokens.shape[1:])
            mask = text.mask[:, None].expand(-1, 2, -1).reshape(-1, text.mask.shape[1])
            flat = kernel(words, mask, patches[pair].reshape(-1, *patches.shape[1:]), coarse.reshape(-1))
        scores["kernel head"] = flat.view(-1, 2)
    kinds = np.array([r[3] for r in rows])
    out: dict[str, dict[str, float]] = {}
    for kind in ["all", *sorted(set(kinds))]:
        sel = np.ones(len(rows), bool) if kind == "all" else kinds == kind
        entry: dict[str, float] = {"pairs": int(sel.sum())}
        for name, s in scores.items():
            d = (s[:, 0] - s[:, 1]).numpy()[sel]
            entry[name] = 100.0 * float(((d > 0) + 0.5 * (d == 0)).mean())
        out[kind] = entry
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--split", default="test")
    ap.add_argument("--arch", default="rsir-vit-tiny")
    ap.add_argument("--checkpoint", type=Path, required=True)
    ap.add_argument("--recall-k", type=int, default=100)
    ap.add_argument("--tau", type=float, default=0.05)
    ap.add_argument("--lam", type=float, default=0.5)
    ap.add_argument("--kernel-weights", type=Path, help="a kernel head's state dict to probe as well")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    torch.manual_seed(0)

    ds = load_dataset(args.data, split=args.split)
    scenes = [rec.meta["scene"] for rec in ds.images]
    owners = np.asarray(ds.caption_image, np.int64)
    t0 = time.perf_counter()
    truth = truth_matrix(ds.captions, [scenes[o]["class"] for o in owners], scenes)
    t_truth = time.perf_counter() - t0
    classes = np.array([s["class"] for s in scenes])
    same_class = classes[owners][:, None] == classes[None, :]
    own_t2i = np.zeros_like(truth)
    own_t2i[np.arange(len(owners)), owners] = True
    if not truth[own_t2i].all():
        raise SystemExit(f"{int((~truth[own_t2i]).sum())} captions are not true of their own image")
    sizes = truth.sum(axis=1)
    # How much the class test narrows the sets: the checker alone, on a sample of captions.
    sample = np.random.default_rng(0).choice(len(owners), size=min(500, len(owners)), replace=False)
    loose = truth_matrix([ds.captions[c] for c in sample], None, scenes)
    other_class = float((loose & ~same_class[sample]).sum(axis=1).mean())
    print(f"truth matrix {truth.shape} in {t_truth:.0f} s; true-of set size median {np.median(sizes):.0f}")

    encoder = ClipEncoder(
        EncoderConfig(arch=args.arch, checkpoint=args.checkpoint, device="cpu", batch_size=128)
    )
    t0 = time.perf_counter()
    gallery = embed_dataset(encoder, ds)
    print(f"embedded {len(gallery)} images, {len(ds.captions)} captions in {time.perf_counter() - t0:.0f} s")
    params = FTFParams(tau=args.tau, lam=args.lam)
    engine = SearchEngine(gallery, None, EngineConfig(ftf=params, device="cpu"))
    k = args.recall_k
    none_t2i, none_i2t = engine_scores(engine, gallery, "none", k)
    ftf_t2i, ftf_i2t = engine_scores(engine, gallery, "ftf", k)

    # i2t relevance: rows are images, columns captions.
    own_i2t, truth_i2t = own_t2i.T, truth.T
    rows: dict[str, dict[str, float]] = {}

    def row(name: str, t2i: np.ndarray, i2t: np.ndarray, relevance: str) -> None:
        rel = (own_t2i, own_i2t) if relevance == "own" else (truth, truth_i2t)
        rows[name] = expected_report(t2i, rel[0], i2t, rel[1]).as_dict()
        print(f"{name:<42} " + " ".join(f"{rows[name][n]:6.2f}" for n in (*NAMES, "mR")))

    print(f"{'':<42} " + " ".join(f"{n:>6}" for n in (*NAMES, "mR")))
    row("standard: none", none_t2i, none_i2t, "own")
    row(f"standard: ftf@{k}", ftf_t2i, ftf_i2t, "own")
    row("class oracle", same_class.astype(float), same_class.T.astype(float), "own")
    row("truth oracle", truth.astype(float), truth_i2t.astype(float), "own")
    cand_t2i, cand_i2t = np.isfinite(none_t2i), np.isfinite(none_i2t)
    row(
        f"oracle rerank @{k} (random among true)",
        np.where(cand_t2i, 1.0 + truth, -np.inf),
        np.where(cand_i2t, 1.0 + truth_i2t, -np.inf),
        "own",
    )
    row(
        f"fact filter @{k} (coarse order among true)",
        np.where(cand_t2i, 10.0 * truth + none_t2i, -np.inf),
        np.where(cand_i2t, 10.0 * truth_i2t + none_i2t, -np.inf),
        "own",
    )
    row("true-match: none", none_t2i, none_i2t, "truth")
    row(f"true-match: ftf@{k}", ftf_t2i, ftf_i2t, "truth")

    kernel = None
    if args.kernel_weights:
        kernel = KernelReranker(KernelConfig(dim=gallery.dim, grid=gallery.grid))
        kernel.load_state_dict(torch.load(args.kernel_weights, weights_only=True))
        kernel.eval()
    probe = twin_probe(gallery, truth, scenes, params, kernel)
    print("twin probe (% of captions false of the twin whose own image scores higher):")
    for kind, e in probe.items():
        print(
            f"  {kind:<22} n={e['pairs']:<5} "
            + "  ".join(f"{n} {v:.1f}" for n, v in e.items() if n != "pairs")
        )

    result = {
        **run_meta(encoder, args),
        "split": args.split,
        "n_images": len(gallery),
        "n_captions": len(ds.captions),
        "truth_set_size": {
            "median": float(np.median(sizes)),
            "mean": float(sizes.mean()),
            "share_1": float((sizes == 1).mean()),
            "share_le5": float((sizes <= 5).mean()),
            "share_gt20": float((sizes > 20).mean()),
            "distinct_captions": len(set(ds.captions)),
            "mean_other_class_images_the_checker_accepts": other_class,
        },
        "truth_seconds": t_truth,
        "rows": rows,
        "twin_probe": probe,
    }
    write_json(args.out, result)


if __name__ == "__main__":
    main()
