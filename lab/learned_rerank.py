"""Does a *learned* stage 2 earn what FTF's parameter-free block does not? Two small rerankers, tried.

The shipped encoder is frozen; its tokens for a SynthRS train split are the training data. A
reranker (``--reranker cross``: :class:`lab.cross_rerank.CrossReranker`, a small transformer over
both token sets; ``kernel``: :class:`lab.kernel_rerank.KernelReranker`, kernel pooling of the
word-patch similarities) learns a correction to the coarse logit from listwise groups: a query
(caption or image) with its own item and ``--negatives`` items drawn from its coarse top ``--pool``
(its own items excluded; ranked within sub-galleries of the test split's size). Then, on the test
split, the engine's coarse top-K (``none`` mode) is re-ranked by the learned reranker and by FTF
(``ftf`` mode at the same K), all scored in expectation over tie orders
(``bench.statistics.expected_report``) in one run::

    .venv/bin/rsir synth --n 12000 --seed 1 --workers 2 --out data/synthrs-seed1
    .venv/bin/python -m lab.learned_rerank --data data/synthrs --train-data data/synthrs-seed1 \\
        --checkpoint model/weights/rsir-vit-tiny.safetensors --reranker kernel --lr 2e-3 \\
        --train-seconds 600 --recall-k 20 100 --out lab/results/kernel_rerank_seed1.json

Training on another seed keeps the tokens unseen by the encoder's training, and the groups are drawn
as a two-stage search draws candidates (:func:`hard_pools`); BENCHMARKS.md shows what goes wrong
otherwise.

``--negatives-from truth`` draws the negatives only among items the caption is *not* true of
(:mod:`rsir.synthrs.truth`): supervision from the scene descriptions, which a real archive lacks, so
that row is an upper bound on this design, not a deployable result. ``--negatives-from text`` is the
deployable stand-in: it drops negatives whose own captions are close to the query caption
(:func:`text_allowed`; ``lab/negative_filter.py`` measures it against the checker).
``--filter-directions`` applies either filter to caption queries, image queries or both.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.caption_ties import load_gallery, save_gallery
from bench.report import run_meta, write_json
from bench.statistics import expected_report
from lab.caption_truth import engine_scores
from lab.cross_rerank import CrossConfig, CrossReranker, group_loss
from lab.kernel_rerank import KernelConfig, KernelReranker
from rsir.index.gallery import Gallery
from rsir.model.datasets import load_dataset
from rsir.model.encoders import ClipEncoder, EncoderConfig
from rsir.model.ftf import FTFParams
from rsir.search.engine import EngineConfig, SearchEngine
from rsir.search.evaluate import embed_dataset
from rsir.synthrs.truth import truth_matrix


def features(encoder: ClipEncoder, data: Path, split: str, cache: Path | None) -> Gallery:
    """The split embedded once, kept in ``cache`` per data folder and split in ``bench.caption_ties``'s
    gallery format (for one checkpoint: clear the cache when the weights change; the train split
    takes minutes)."""
    folder = cache / f"{data.name}-{split}" if cache else None
    if folder is not None and (folder / "meta.json").exists():
        return load_gallery(folder)
    gallery = embed_dataset(encoder, load_dataset(data, split=split))
    if folder is not None:
        save_gallery(gallery, folder)
    return gallery


Pools = list[tuple[np.ndarray, np.ndarray]]  # per query: (own items, other items) in its coarse top-N


def hard_pools(
    gallery: Gallery,
    pool: int,
    allowed: np.ndarray | None,
    sub_gallery: int,
    seed: int,
    directions: str = "both",
) -> tuple[Pools, Pools]:
    """Per caption and per image query, the own items and the other items among its coarse top
    ``pool``: the candidate distribution a two-stage search hands its reranker. A query whose own
    item is ranked deeper is left for the coarse stage to fix (its positives are empty); training on
    it would teach the reranker to promote low-similarity pairs.

    The ranking is within a random sub-gallery of ``sub_gallery`` images (and their captions), the
    size of the test gallery: in a gallery 8x larger a caption is true of 8x more images, and its
    coarse top 50 holds almost nothing it is false of. ``allowed [Nc, Ni]`` (if given) limits the
    other items to pairs it marks, for caption queries (``directions`` t2i), image queries (i2t) or
    both."""
    assert gallery.captions is not None
    owners = gallery.captions.image_index
    cap_vecs = np.asarray(gallery.captions.vectors, np.float32)
    img_vecs = np.asarray(gallery.vectors, np.float32)
    n_img, n_cap = len(img_vecs), len(owners)
    part = np.empty(n_img, np.int64)
    part[np.random.default_rng(seed).permutation(n_img)] = np.arange(n_img) // sub_gallery
    t2i: Pools = [(np.empty(0, np.int64), np.empty(0, np.int64))] * n_cap
    i2t: Pools = [(np.empty(0, np.int64), np.empty(0, np.int64))] * n_img
    for g in range(int(part.max()) + 1):
        imgs = np.nonzero(part == g)[0]
        caps = np.nonzero(part[owners] == g)[0]
        s = cap_vecs[caps] @ img_vecs[imgs].T  # [caps, imgs]
        own = owners[caps][:, None] == imgs[None, :]
        ok = np.ones_like(own) if allowed is None else own | allowed[np.ix_(caps, imgs)]
        ok_t2i = ok if directions in ("both", "t2i") else np.ones_like(own)
        ok_i2t = ok if directions in ("both", "i2t") else np.ones_like(own)
        for q, row in enumerate(np.argsort(-s, axis=1)[:, :pool]):
            t2i[caps[q]] = (imgs[row[own[q, row]]], imgs[row[~own[q, row] & ok_t2i[q, row]]])
        for q, row in enumerate(np.argsort(-s.T, axis=1)[:, :pool]):
            i2t[imgs[q]] = (caps[row[own.T[q, row]]], caps[row[~own.T[q, row] & ok_i2t.T[q, row]]])
    return t2i, i2t


def text_allowed(
    vectors: np.ndarray, owners: np.ndarray, n_images: int, threshold: float, chunk: int = 2048
) -> np.ndarray:
    """``[Nc, Ni]`` from caption vectors ``[Nc, d]`` and their images ``owners [Nc]``: True where no
    caption of image ``g`` is within cosine ``threshold`` of caption ``c``. A deployable stand-in for
    the truth checker's false-negative filter: an image whose own captions say what ``c`` says is
    likely a true match, not a negative, and a real archive has its captions (not its scenes).
    ``lab/negative_filter.py`` measures it against the checker."""
    vecs = np.asarray(vectors, np.float32)
    by_owner = np.argsort(owners, kind="stable")
    starts = np.r_[0, np.flatnonzero(np.diff(owners[by_owner])) + 1]
    captioned = owners[by_owner][starts]
    out = np.ones((len(vecs), n_images), bool)
    for start in range(0, len(vecs), chunk):
        sims = vecs[start : start + chunk] @ vecs[by_owner].T  # [chunk, Nc], grouped by image
        best = np.maximum.reduceat(sims, starts, axis=1)  # per image, its captions' best similarity
        out[start : start + chunk, captioned] = best < threshold
    return out


def train(
    gallery: Gallery, model: torch.nn.Module, args: argparse.Namespace, allowed: np.ndarray | None
) -> dict[str, Any]:
    assert gallery.captions is not None
    c = gallery.captions
    words = torch.from_numpy(np.asarray(c.tokens, np.float32))
    mask = torch.from_numpy(np.asarray(c.mask))
    cap_vecs = torch.from_numpy(np.asarray(c.vectors, np.float32))
    patches = torch.from_numpy(np.asarray(gallery.patches, np.float32))
    img_vecs = torch.from_numpy(np.asarray(gallery.vectors, np.float32))
    t2i_pool, i2t_pool = hard_pools(
        gallery, args.pool, allowed, args.sub_gallery, args.seed, args.filter_directions
    )
    rng = np.random.default_rng(args.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    n = args.negatives
    # Groups: (caption, [images]) for caption queries and (image, [captions]) for image queries.
    queries = [("t", q) for q, (pos, neg) in enumerate(t2i_pool) if len(pos) and len(neg) >= n]
    queries += [("i", q) for q, (pos, neg) in enumerate(i2t_pool) if len(pos) and len(neg) >= n]
    print(f"{len(queries)} training queries have an own item in their coarse top {args.pool}", flush=True)
    steps, losses, t0 = 0, [], time.perf_counter()
    while time.perf_counter() - t0 < args.train_seconds:
        batch = [queries[int(j)] for j in rng.choice(len(queries), args.batch, replace=False)]
        cap_idx, img_idx = [], []
        for kind, q in batch:
            pos, neg = (t2i_pool if kind == "t" else i2t_pool)[q]
            items = [int(rng.choice(pos)), *rng.choice(neg, n, replace=False).tolist()]
            if kind == "t":
                cap_idx += [q] * (n + 1)
                img_idx += items
            else:
                cap_idx += items
                img_idx += [q] * (n + 1)
        ci, ii = torch.as_tensor(cap_idx), torch.as_tensor(img_idx)
        coarse = (cap_vecs[ci] * img_vecs[ii]).sum(-1)
        scores = model(words[ci], mask[ci], patches[ii], coarse).view(len(batch), n + 1)
        loss = group_loss(scores)
        opt.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        steps += 1
        losses.append(loss.item())
        if steps % 50 == 0:
            print(
                f"step {steps}: loss {np.mean(losses[-50:]):.4f} ({time.perf_counter() - t0:.0f} s)",
                flush=True,
            )
    return {
        "steps": steps,
        "groups": steps * args.batch,
        "seconds": time.perf_counter() - t0,
        "loss_first50": float(np.mean(losses[:50])),
        "loss_last50": float(np.mean(losses[-50:])),
    }


@torch.no_grad()
def rerank_scores(
    gallery: Gallery, model: torch.nn.Module, coarse: np.ndarray, image_queries: bool
) -> np.ndarray:
    """The learned reranker's scores for the finite (candidate) cells of a coarse score matrix."""
    assert gallery.captions is not None
    c = gallery.captions
    q, g = np.nonzero(np.isfinite(coarse))
    cap, img = (g, q) if image_queries else (q, g)
    out = np.full(coarse.shape, -np.inf)
    for start in range(0, len(q), 2048):
        ci, ii = cap[start : start + 2048], img[start : start + 2048]
        s = model(
            torch.from_numpy(np.asarray(c.tokens[ci], np.float32)),
            torch.from_numpy(np.asarray(c.mask[ci])),
            torch.from_numpy(np.asarray(gallery.patches[ii], np.float32)),
            torch.from_numpy(coarse[q[start : start + 2048], g[start : start + 2048]].astype(np.float32)),
        )
        out[q[start : start + 2048], g[start : start + 2048]] = s.numpy()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--arch", default="rsir-vit-tiny")
    ap.add_argument("--checkpoint", type=Path, required=True)
    ap.add_argument(
        "--train-data",
        type=Path,
        help="SynthRS folder to train the reranker on (default --data); another seed keeps its tokens "
        "unseen by the encoder's training",
    )
    ap.add_argument("--train-split", default="train")
    ap.add_argument("--cache", type=Path, default=Path("data/cache/cross"))
    ap.add_argument("--reranker", choices=["cross", "kernel"], default="cross")
    ap.add_argument("--recall-k", type=int, nargs="+", default=[20], help="candidate depths to evaluate")
    ap.add_argument("--save", type=Path, help="where to write the trained reranker's state dict")
    ap.add_argument("--load", type=Path, help="evaluate this saved state dict instead of training")
    ap.add_argument("--split", default="test", help="split of --data to evaluate on")
    ap.add_argument("--pool", type=int, default=20, help="coarse top-N that negatives are drawn from")
    ap.add_argument("--negatives", type=int, default=7)
    ap.add_argument(
        "--sub-gallery", type=int, default=1200, help="images per gallery the pools are ranked in"
    )
    ap.add_argument("--negatives-from", choices=["coarse", "truth", "text"], default="coarse")
    ap.add_argument(
        "--filter-directions",
        choices=["both", "t2i", "i2t"],
        default="both",
        help="which query kind's negatives --negatives-from truth|text filters",
    )
    ap.add_argument(
        "--text-threshold",
        type=float,
        default=0.9,
        help="--negatives-from text: drop negatives whose own captions are this close to the query caption",
    )
    ap.add_argument("--batch", type=int, default=64, help="groups per step")
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--train-seconds", type=float, default=900)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    torch.manual_seed(args.seed)

    encoder = ClipEncoder(
        EncoderConfig(arch=args.arch, checkpoint=args.checkpoint, device="cpu", batch_size=128)
    )
    t0 = time.perf_counter()
    train_g = features(encoder, args.train_data or args.data, args.train_split, args.cache)
    test_g = features(encoder, args.data, args.split, args.cache)
    print(f"features in {time.perf_counter() - t0:.0f} s")
    allowed = None
    if args.negatives_from == "truth":
        ds = load_dataset(args.train_data or args.data, split=args.train_split)
        scenes = [r.meta["scene"] for r in ds.images]
        truth = truth_matrix(ds.captions, [scenes[o]["class"] for o in ds.caption_image], scenes)
        allowed = ~truth
    elif args.negatives_from == "text":
        assert train_g.captions is not None
        c = train_g.captions
        allowed = text_allowed(c.vectors, c.image_index, len(train_g), args.text_threshold)
    config: CrossConfig | KernelConfig
    model: torch.nn.Module
    if args.reranker == "cross":
        config = CrossConfig(dim=train_g.dim, patches=train_g.patches.shape[1])
        model = CrossReranker(config)
    else:
        config = KernelConfig(dim=train_g.dim, grid=train_g.grid)
        model = KernelReranker(config)
    if args.load:
        model.load_state_dict(torch.load(args.load, weights_only=True))
        fit: dict[str, Any] = {"loaded": str(args.load)}
    else:
        fit = train(train_g, model, args, allowed)
    model.eval()

    assert test_g.captions is not None
    owners = test_g.captions.image_index
    own_t2i = np.zeros((len(owners), len(test_g)), bool)
    own_t2i[np.arange(len(owners)), owners] = True
    engine = SearchEngine(test_g, None, EngineConfig(ftf=FTFParams(), device="cpu"))
    rows: dict[str, dict[str, float]] = {}
    timing: dict[str, float] = {}
    for k in args.recall_k:
        none_t2i, none_i2t = engine_scores(engine, test_g, "none", k)
        ftf_t2i, ftf_i2t = engine_scores(engine, test_g, "ftf", k)
        t0 = time.perf_counter()
        learned_t2i = rerank_scores(test_g, model, none_t2i, image_queries=False)
        learned_i2t = rerank_scores(test_g, model, none_i2t, image_queries=True)
        timing[f"{args.reranker}@{k}_ms_per_query"] = (
            (time.perf_counter() - t0) * 1000 / (len(owners) + len(test_g))
        )
        for name, t2i, i2t in (
            ("none", none_t2i, none_i2t),
            (f"ftf@{k}", ftf_t2i, ftf_i2t),
            (f"{args.reranker}@{k}", learned_t2i, learned_i2t),
        ):
            rows[name] = expected_report(t2i, own_t2i, i2t, own_t2i.T).as_dict()
            print(f"{name:<10} " + " ".join(f"{v:6.2f}" for v in rows[name].values()), flush=True)
    if args.save:
        args.save.parent.mkdir(parents=True, exist_ok=True)
        torch.save(model.state_dict(), args.save)
    result = {
        **run_meta(encoder, args),
        "train": fit,
        "config": config.__dict__,
        "timing": timing,
        "rows": rows,
    }
    write_json(args.out, result)


if __name__ == "__main__":
    main()
