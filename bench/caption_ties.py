"""Ties between identical captions: how much of the large gallery's i2t figures is tie-breaking?

SynthRS captions are templated, so one string is often the caption of many images: the 20,000-image
gallery's 100,000 captions hold 12,181 distinct strings. Identical strings get identical vectors and
tokens, hence identical coarse and fused scores, and which copy ranks first is then decided by the
tie-break: FAISS and the engine's stable sorts prefer the lower caption index. The two-stage table
indexes the test split first, so every tie between a query image's own caption and a distractor's
copy of the same string goes to the own one, a hit, in whichever mode keeps that order.

This bench measures, on the two-stage table's gallery and image queries (same seeds):

1. the engine's i2t recall with the captions indexed in the dataset's order (test first, as in the
   table) and in seeded random orders (random tie-breaks);
2. from the full score matrices (coarse and fused, over all captions; fine scores computed once per
   distinct string), the i2t recall for none / ftf@K / exhaustive as (a) the index-order draw the
   engine makes, checked against the engine's own results, (b) its expectation over random tie
   orders (``bench.statistics.tie_aware_hits``, ``two_stage_tie_aware_hits``), and (c) with relevance
   by string (a hit when the retrieved caption's string is one of the query image's own), which no
   tie order changes;

on the test split alone and on the large gallery::

    .venv/bin/python -m bench.caption_ties --data data/synthrs --distractors data/synthrs-distractors \
        --checkpoint model/weights/rsir-vit-tiny.safetensors --cache data/cache/large20k \
        --out bench/results/caption_ties.json
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.report import recall_table, run_meta, write_json
from bench.statistics import bootstrap_mr_rates, hit_rates, tie_aware_hits, two_stage_tie_aware_hits
from bench.two_stage_table import add_gallery_args, build, distractors, embed, query_sample
from rsir.index.gallery import CaptionStore, Gallery
from rsir.model import ftf
from rsir.model.datasets import CaptionDataset, load_dataset
from rsir.model.encoders import ClipEncoder, EncoderConfig
from rsir.model.ftf import FTFParams
from rsir.model.metrics import KS
from rsir.search.engine import EngineConfig, QueryOptions, SearchEngine
from rsir.search.evaluate import reorder_captions

DEPTHS = (10, 50, 100, 1000)


def save_gallery(g: Gallery, path: Path) -> None:
    assert g.captions is not None
    path.mkdir(parents=True, exist_ok=True)
    c = g.captions
    for name, arr in {
        "vectors": g.vectors,
        "patches": g.patches,
        "cap_index": c.image_index,
        "cap_vectors": c.vectors,
        "cap_tokens": c.tokens,
        "cap_mask": c.mask,
    }.items():
        np.save(path / f"{name}.npy", arr)
    (path / "meta.json").write_text(json.dumps({"ids": g.ids, "grid": list(g.grid), "texts": c.texts}))


def load_gallery(path: Path) -> Gallery:
    meta = json.loads((path / "meta.json").read_text())

    def arr(name: str) -> Any:
        return np.load(path / f"{name}.npy", mmap_mode="r")

    store = CaptionStore(
        texts=meta["texts"],
        image_index=np.asarray(arr("cap_index")),
        vectors=np.asarray(arr("cap_vectors")),
        tokens=arr("cap_tokens"),
        mask=np.asarray(arr("cap_mask")),
    )
    return Gallery(
        ids=meta["ids"],
        vectors=np.asarray(arr("vectors")),
        patches=arr("patches"),
        grid=(int(meta["grid"][0]), int(meta["grid"][1])),
        captions=store,
    )


def duplicate_stats(gallery: Gallery, iq: np.ndarray) -> dict[str, Any]:
    """How many query images own a caption string that other images' captions repeat, and how often."""
    c = gallery.captions
    assert c is not None
    counts = Counter(c.texts)
    own: dict[int, list[str]] = {int(i): [] for i in iq}
    for text, owner in zip(c.texts, c.image_index.tolist(), strict=True):
        if owner in own:
            own[owner].append(text)
    copies = [max(counts[t] - texts.count(t) for t in texts) for texts in own.values()]
    return {
        "captions": len(c.texts),
        "distinct_strings": len(counts),
        "query_images": len(own),
        "query_images_with_a_repeated_own_string": int(sum(1 for x in copies if x > 0)),
        "median_copies_of_most_repeated_own_string": float(np.median(copies)),
    }


def identical_strings_score_alike(gallery: Gallery) -> bool:
    """Whether repeated strings were embedded to bit-identical vectors (so their scores tie exactly)."""
    c = gallery.captions
    assert c is not None
    first: dict[str, int] = {}
    for i, text in enumerate(c.texts[:20_000]):
        j = first.setdefault(text, i)
        if j != i and not np.array_equal(c.vectors[i], c.vectors[j]):
            return False
    return True


def leading_part(gallery: Gallery, n_images: int) -> Gallery:
    """The first ``n_images`` images and their captions (the test split, which the gallery starts with)."""
    c = gallery.captions
    assert c is not None
    keep = np.nonzero(c.image_index < n_images)[0]
    assert keep.size and keep[-1] == keep.size - 1, "the test split's captions come first"
    store = CaptionStore(
        texts=c.texts[: keep.size],
        image_index=c.image_index[: keep.size],
        vectors=c.vectors[: keep.size],
        tokens=c.tokens[: keep.size],
        mask=c.mask[: keep.size],
    )
    return replace(
        gallery,
        ids=gallery.ids[:n_images],
        vectors=gallery.vectors[:n_images],
        patches=gallery.patches[:n_images],
        captions=store,
    )


def full_scores(
    gallery: Gallery, iq: np.ndarray, params: FTFParams
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Coarse and fused scores ``[len(iq), Nc]`` of the image queries ``iq`` against every caption, and
    each caption's string id. The FTF block runs once per distinct string, whose copies share tokens."""
    c = gallery.captions
    assert c is not None
    strings: dict[str, int] = {}
    string_of = np.array([strings.setdefault(t, len(strings)) for t in c.texts], np.int64)
    first = np.zeros(len(strings), np.int64)
    first[string_of[::-1]] = np.arange(string_of.size)[::-1]  # first caption of each string
    q = gallery.image_features(iq)
    coarse = (q.vectors @ torch.from_numpy(np.array(c.vectors, np.float32)).T).numpy()
    fine = np.empty((len(iq), len(strings)), np.float32)
    for s0 in range(0, len(strings), 512):
        rows = first[s0 : s0 + 512]
        words = torch.from_numpy(np.asarray(c.tokens[rows], np.float32))[None]
        mask = torch.from_numpy(np.asarray(c.mask[rows]))[None]
        for q0 in range(0, len(iq), 50):
            out = ftf.interaction(words, mask, q.patches[q0 : q0 + 50, None], params.tau)
            fine[q0 : q0 + 50, s0 : s0 + 512] = out.fine.numpy()
    fused = ftf.fuse(torch.from_numpy(coarse), torch.from_numpy(fine[:, string_of]), params.lam).numpy()
    return coarse, fused, string_of


def first_hit(coarse: np.ndarray, fused: np.ndarray, relevant: np.ndarray, depth: int | None) -> np.ndarray:
    """First-hit position per query with ties to the lower index: ``depth`` None ranks all by
    ``fused``; else the coarse top ``depth``, then a stable sort by fused. Used with relevance by
    string, where the tie order cannot matter (a tied group is one string: all hits or none)."""
    out = np.full(coarse.shape[0], np.iinfo(np.int64).max, np.int64)
    for q in range(coarse.shape[0]):
        if depth is None:
            order = np.argsort(-fused[q].astype(np.float64), kind="stable")[: max(KS)]
        else:
            cand = np.argsort(-coarse[q].astype(np.float64), kind="stable")[:depth]
            order = cand[np.argsort(-fused[q, cand].astype(np.float64), kind="stable")][: max(KS)]
        hit = np.nonzero(relevant[q, order])[0]
        if hit.size:
            out[q] = hit[0]
    return out


def recalls(p: np.ndarray) -> dict[str, float]:
    """``p [Nq, len(KS)]`` hit probabilities (or 0/1 hits) -> i2t recall in percent."""
    return {f"i2t_r{K}": 100.0 * float(p[:, j].mean()) for j, K in enumerate(KS)}


def analyse(
    label: str, gallery: Gallery, iq: np.ndarray, params: FTFParams, engine_first: dict[str, np.ndarray]
) -> tuple[list[dict[str, Any]], dict[str, np.ndarray]]:
    t0 = time.perf_counter()
    coarse, fused, string_of = full_scores(gallery, iq, params)
    c = gallery.captions
    assert c is not None
    relevant = c.image_index[None, :] == iq[:, None]
    own_strings = [set(string_of[relevant[q]].tolist()) for q in range(len(iq))]
    by_string = np.stack([np.isin(string_of, list(s)) for s in own_strings])
    print(f"{label}: full scores in {time.perf_counter() - t0:.0f} s", flush=True)
    rows = []
    rates: dict[str, np.ndarray] = {}
    for mode, depth in [("none", None), *[("ftf", k) for k in DEPTHS], ("exhaustive", None)]:
        if mode == "ftf" and depth is not None and depth >= coarse.shape[1]:
            continue
        if mode == "none":
            string_first = first_hit(coarse, coarse, by_string, None)
            expected = tie_aware_hits(coarse, relevant)
            string = tie_aware_hits(coarse, by_string)  # ties are all hits or all misses: no draw
        elif mode == "exhaustive":
            string_first = first_hit(coarse, fused, by_string, None)
            expected = tie_aware_hits(fused, relevant)
            string = tie_aware_hits(fused, by_string)
        else:
            assert depth is not None
            string_first = first_hit(coarse, fused, by_string, depth)
            expected = two_stage_tie_aware_hits(coarse, fused, relevant, depth)
            string = two_stage_tie_aware_hits(coarse, fused, by_string, depth)
        name = f"{mode}@{depth}" if mode == "ftf" else mode
        row: dict[str, Any] = {"gallery": label, "mode": name}
        row |= {f"expected_{k}": v for k, v in recalls(expected).items()}
        row |= {f"by_string_{k}": v for k, v in recalls(string).items()}
        if name in engine_first:  # the engine's first hits by string, which no tie order changes
            row["by_string_first_hit_agrees_with_engine"] = float(np.mean(engine_first[name] == string_first))
        rows.append(row)
        rates[name] = expected
        print(row, flush=True)
    return rows, rates


def t2i_hits(engine: SearchEngine, cq: np.ndarray) -> dict[str, np.ndarray]:
    """Per caption query, hits at K in ``KS`` for none, ftf@10/50/100 and exhaustive (text to image:
    the gallery's images are distinct, so no tie order is in play)."""
    g = engine.gallery
    assert g.captions is not None
    owner = g.captions.image_index[cq]
    out = {}
    for mode, k in [("none", None), ("ftf", 10), ("ftf", 50), ("ftf", 100), ("exhaustive", None)]:
        t0 = time.perf_counter()
        opts = QueryOptions(k=max(KS), recall_k=k, rerank=mode)  # type: ignore[arg-type]
        results = engine.search(g.caption_features(cq), [opts] * len(cq))
        first = np.full(len(cq), np.iinfo(np.int64).max, np.int64)
        for q, r in enumerate(results):
            pos = [p for p, h in enumerate(r.hits) if h.index == owner[q]]
            if pos:
                first[q] = pos[0]
        name = f"{mode}@{k}" if k else mode
        out[name] = hit_rates(first)
        print(f"  t2i {name}: {time.perf_counter() - t0:.0f} s", flush=True)
    return out


def combined(
    label: str, t2i: dict[str, np.ndarray], i2t: dict[str, np.ndarray], n_resamples: int
) -> dict[str, Any]:
    """The two-stage table's rows with i2t taken in expectation over tie orders, and the targets'
    figures with 95% paired-bootstrap intervals."""
    names = list(t2i)
    rows: list[dict[str, Any]] = []
    mean_r: dict[str, float] = {}
    for name in names:
        t, i = 100 * t2i[name].mean(0), 100 * i2t[name].mean(0)
        mean_r[name] = float((t.sum() + i.sum()) / 6)
        rows.append(
            {"gallery": label, "mode": name}
            | {f"t2i_r{K}": float(v) for K, v in zip(KS, t, strict=True)}
            | {f"i2t_r{K}": float(v) for K, v in zip(KS, i, strict=True)}
            | {"mR": mean_r[name]}
        )
    mr = bootstrap_mr_rates([(t2i[n], i2t[n]) for n in names], n_resamples)
    col = {n: j for j, n in enumerate(names)}
    ftf100, exh, none = mr[:, col["ftf@100"]], mr[:, col["exhaustive"]], mr[:, col["none"]]
    with np.errstate(divide="ignore", invalid="ignore"):
        share = np.where(exh > 0, ftf100 / exh, np.nan)
    return {
        "rows": rows,
        "ftf100_share_of_exhaustive": mean_r["ftf@100"] / mean_r["exhaustive"],
        "ftf100_share_of_exhaustive_ci": [float(v) for v in np.nanpercentile(share, [2.5, 97.5])],
        "ftf100_gain_over_none": mean_r["ftf@100"] - mean_r["none"],
        "ftf100_gain_over_none_ci": [float(v) for v in np.percentile(ftf100 - none, [2.5, 97.5])],
    }


def markdown(tables: list[dict[str, Any]]) -> str:
    rows = [r for t in tables for r in t["rows"]]
    lines = recall_table(("gallery", "mode"), rows, lambda r: (r["gallery"], r["mode"]), timing=False)
    lines += [
        "",
        "| gallery | ftf@100 / exhaustive | 95% interval | ftf@100 - none | 95% interval |",
        "|---|---|---|---|---|",
    ]
    for t in tables:
        lo, hi = t["ftf100_share_of_exhaustive_ci"]
        glo, ghi = t["ftf100_gain_over_none_ci"]
        lines.append(
            f"| {t['rows'][0]['gallery']} | {100 * t['ftf100_share_of_exhaustive']:.1f}% | "
            f"{100 * lo:.0f}% to {100 * hi:.0f}% | {t['ftf100_gain_over_none']:+.2f} | "
            f"{glo:+.2f} to {ghi:+.2f} |"
        )
    return "\n".join(lines)


def engine_runs(
    gallery: Gallery, encoder: ClipEncoder, config: EngineConfig, iq: np.ndarray, orders: int
) -> tuple[dict[str, np.ndarray], list[dict[str, Any]]]:
    """The engine's i2t recall with the captions in the dataset's order and in ``orders`` random orders,
    and, for the dataset order, each query's first hit by string (which no tie order changes: the
    check on the score-matrix path)."""
    by_string_first: dict[str, np.ndarray] = {}
    rows = []
    assert gallery.captions is not None
    own: dict[int, set[str]] = {}  # each image's caption strings: the same in every storage order
    for text, owner in zip(gallery.captions.texts, gallery.captions.image_index.tolist(), strict=True):
        own.setdefault(owner, set()).add(text)
    for seed in [None, *range(orders)]:
        g = gallery if seed is None else reorder_captions(gallery, seed)
        c = g.captions
        assert c is not None
        engine = SearchEngine(g, encoder, config)
        # Exhaustive search through the engine costs minutes per order; the score-matrix path covers it.
        for mode, k in [("none", None), ("ftf", 100)]:
            opts = QueryOptions(k=max(KS), recall_k=k, rerank=mode, target="captions")  # type: ignore[arg-type]
            results = engine.search(g.image_features(iq), [opts] * len(iq))
            first = np.full((2, len(iq)), np.iinfo(np.int64).max, np.int64)
            for q, r in enumerate(results):
                ids = [h.index for h in r.hits]
                own_hits = [p for p, i in enumerate(ids) if c.image_index[i] == iq[q]]
                string_hits = [p for p, i in enumerate(ids) if c.texts[i] in own[int(iq[q])]]
                first[:, q] = [
                    own_hits[0] if own_hits else first[0, q],
                    string_hits[0] if string_hits else first[1, q],
                ]
            name = f"{mode}@{k}" if k else mode
            if seed is None:
                by_string_first[name] = first[1]
            label = "dataset" if seed is None else f"random {seed}"
            rows.append({"order": label, "mode": name} | recalls(hit_rates(first[0])))
    return by_string_first, rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_gallery_args(parser, distractors_required=True, device="cpu")
    parser.add_argument("--orders", type=int, default=20, help="random caption orders for the engine runs")
    parser.add_argument("--skip-small", action="store_true", help="only the large gallery")
    parser.add_argument("--bootstrap", type=int, default=2000, help="resamples for the 95%% intervals")
    parser.add_argument("--cache", type=Path, help="folder to keep the embedded gallery in between runs")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    torch.manual_seed(0)
    encoder = ClipEncoder(EncoderConfig(arch=args.arch, checkpoint=args.checkpoint, device=args.device))
    test: CaptionDataset = load_dataset(args.data, split="test")
    if args.cache is not None and (args.cache / "meta.json").exists():
        gallery = load_gallery(args.cache)
    else:
        t0 = time.perf_counter()
        distract = distractors(load_dataset(args.distractors), args.gallery_size - len(test.images))
        gallery = build([(test, *embed(encoder, test)), (distract, *embed(encoder, distract))])
        print(f"embedded {len(gallery)} images in {time.perf_counter() - t0:.0f} s", flush=True)
        if args.cache is not None:
            save_gallery(gallery, args.cache)
    cq, iq = query_sample(test, args.caption_queries, args.image_queries)
    small = leading_part(gallery, len(test.images))
    config = EngineConfig(ftf=FTFParams(), device=args.device)
    found: dict[str, Any] = {}
    tables = []
    for label, g, queries, captions in [
        (f"test {len(small)}", small, np.arange(len(small)), np.arange(len(test.captions))),
        (f"large {len(gallery)}", gallery, iq, cq),
    ][args.skip_small :]:
        stats = duplicate_stats(g, queries) | {
            "identical_strings_tie_exactly": identical_strings_score_alike(g)
        }
        print(label, stats, flush=True)
        first, engine_rows = engine_runs(g, encoder, config, queries, args.orders)
        for r in engine_rows:
            print(label, r, flush=True)
        rows, i2t = analyse(label, g, queries, config.ftf, first)
        t2i = t2i_hits(SearchEngine(g, encoder, config), captions)
        tables.append(combined(label, t2i, {n: i2t[n] for n in t2i}, args.bootstrap))
        found[label] = {"duplicates": stats, "engine": engine_rows, "analysis": rows, "table": tables[-1]}
    table = markdown(tables)
    print(table)
    write_json(args.out, {"meta": run_meta(encoder, args), "galleries": found, "markdown": table})


if __name__ == "__main__":
    main()
