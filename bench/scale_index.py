"""An index version of N items at a given model's shapes without embedding anything (issue 24 item 1).

    python -m bench.scale_index --n 1000000 --model ViT-B-32 --captions-per-image 1 --codec int8 \\
        --base /work/scale-data/demo-index --out /work/scale-data/vitb32-1m

Structure: every item is a noisy copy of a *seed*, an image of ``--base`` (an index version, e.g. the
demo's real SynthRS features) with its patch tokens and captions. Without ``--base`` the seeds are a
two-level Gaussian mixture (classes, then clusters) with patch and word tokens scattered around their
global vectors. A copy of seed ``s`` is ``unit(v_s + sigma * g / sqrt(d))`` for its global vector
(cosine ~ ``1 / sqrt(1 + sigma^2)`` to the seed), and ``t + sigma * |t| * p`` for its tokens with
``p`` a row of a fixed pool of Gaussian noise (fresh noise for 25 G token values would cost more than
the rest of the build). Seeds of another width are carried to ``d`` by a random orthonormal map
(inner products kept), and to ``M`` patches by repeating the grid's rows. So clusters, near
duplicates and the cross-modal gap are the seeds', as IVF, SGPD and PPSR see them on real data.

Everything goes through the builder's own writers: :class:`rsir.index.writer.VersionArrays` for the arrays,
:func:`rsir.index_builder.assemble.write_recall` for the FAISS indexes (``auto`` factory),
:func:`rsir.index_builder.extras.write_extras` for PPSR / SAR / SGPD / hash codes, then the manifest, and
the version is published under ``--out`` (a root: ``v0001``, ``CURRENT``), so it opens and serves
as a built one. Stage timings are printed as JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

import numpy as np
from numpy.typing import NDArray

from rsir.index.atomic import write_text
from rsir.index.tokens import Codec, quantize_int8
from rsir.index.versions import (
    SKIPPED,
    Manifest,
    load_index,
    next_version_name,
    publish,
    write_captions,
    write_ids,
    write_tombstones,
)
from rsir.index.writer import VersionArrays
from rsir.index_builder.assemble import write_recall
from rsir.index_builder.extras import write_extras
from rsir.index_builder.metadata import write_metadata

F32 = NDArray[np.float32]
NOISE_POOL = 512  # noise rows shared by all token arrays' copies
CHUNK = 2048
SEED_CLASSES, SEED_CLUSTERS = 40, 400
DEFAULT_WORDS = 16


@dataclass(frozen=True)
class Seeds:
    """What copies are made of: ``vectors [B,d]`` (unit), ``patches [B,M,d]``, ``captions [B,c]`` (rows
    of the caption arrays, per seed), ``caption_vectors [R,d]``, ``caption_tokens [R,w,d]``,
    ``caption_mask [R,w]`` and ``texts [R]``."""

    vectors: F32
    patches: F32
    captions: NDArray[np.int64]
    caption_vectors: F32
    caption_tokens: F32
    caption_mask: NDArray[np.bool_]
    texts: list[str]


def _unit(x: F32) -> F32:
    out: F32 = (x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)).astype(np.float32)
    return out


def _noise(rng: np.random.Generator, shape: tuple[int, ...], dim: int) -> F32:
    out: F32 = rng.standard_normal(shape, dtype=np.float32) / np.float32(math.sqrt(dim))
    return out


def mixture_seeds(
    rng: np.random.Generator, dim: int, m: int, per_image: int, words: int, texts: list[str]
) -> Seeds:
    """Seeds from a two-level mixture: classes, clusters near a class, tokens near their item."""
    classes = _unit(rng.standard_normal((SEED_CLASSES, dim), dtype=np.float32))
    vectors = _unit(
        classes[rng.integers(SEED_CLASSES, size=SEED_CLUSTERS)] + _noise(rng, (SEED_CLUSTERS, dim), dim)
    )
    patches = vectors[:, None, :] + _noise(rng, (SEED_CLUSTERS, m, dim), dim)
    n_caps = SEED_CLUSTERS * per_image
    owners = np.repeat(np.arange(SEED_CLUSTERS), per_image)
    # Captions sit 0.6 of a unit away from their image: the cross-modal gap of bench.recall_scale.
    cap_vectors = _unit(vectors[owners] + 0.6 * _unit(rng.standard_normal((n_caps, dim), dtype=np.float32)))
    tokens = cap_vectors[:, None, :] + _noise(rng, (n_caps, words, dim), dim)
    pool = texts or [f"caption {i}" for i in range(n_caps)]
    return Seeds(
        vectors=vectors,
        patches=patches.astype(np.float32),
        captions=np.arange(n_caps, dtype=np.int64).reshape(SEED_CLUSTERS, per_image),
        caption_vectors=cap_vectors,
        caption_tokens=tokens.astype(np.float32),
        caption_mask=np.ones((n_caps, words), np.bool_),
        texts=[pool[i % len(pool)] for i in range(n_caps)],
    )


def version_seeds(
    folder: Path, rng: np.random.Generator, dim: int, m: int, per_image: int, words: int | None
) -> Seeds:
    """Seeds from an index version's features, carried to ``dim`` and ``m`` patches."""
    loaded = load_index(folder, with_sgpd=False)
    g, c = loaded.gallery, loaded.gallery.captions
    if c is None or not len(c.texts):
        raise SystemExit(f"{folder}: the base version has no captions to copy")
    base_dim = g.dim
    # A random orthonormal map keeps every inner product when widening (QR of a Gaussian matrix).
    q, _ = np.linalg.qr(rng.standard_normal((max(dim, base_dim), min(dim, base_dim))))
    carry = (q.T if dim >= base_dim else q).astype(np.float32)  # [base_dim, dim]

    def to_dim(x: NDArray[Any]) -> F32:
        out: F32 = np.asarray(x, np.float32) @ carry
        return out

    vectors = _unit(to_dim(g.vectors))
    patches = to_dim(np.asarray(g.patches[:], np.float32))[:, np.arange(m) % g.patches.shape[1]]
    width = words or c.tokens.shape[1]
    slots = np.arange(width) % c.tokens.shape[1]
    mask = np.asarray(c.mask)[:, slots] & (np.arange(width) < c.tokens.shape[1])
    owned: list[list[int]] = [[] for _ in range(len(g.ids))]
    for row, owner in enumerate(c.image_index.tolist()):
        owned[owner].append(row)
    with_caps = [i for i, rows in enumerate(owned) if rows]
    table = np.array([[owned[i][j % len(owned[i])] for j in range(per_image)] for i in with_caps], np.int64)
    return Seeds(
        vectors=vectors[with_caps],
        patches=patches[with_caps],
        captions=table.reshape(len(with_caps), per_image),
        caption_vectors=_unit(to_dim(c.vectors)),
        caption_tokens=to_dim(np.asarray(c.tokens[:], np.float32))[:, slots] * mask[..., None],
        caption_mask=mask,
        texts=list(c.texts),
    )


class TokenCopies:
    """Noisy copies of the rows of one seed token array ``[R,T,d]``, made in the codec they are stored
    in: for int8 the seeds are quantised once and the noise is added to their codes (in int16, then
    clipped), which costs a few passes over bytes instead of a float pass and a quantisation of
    every copied token; the noise is the same, ``sigma * |t| * p``, with ``|t|`` the seeds' mean token
    norm in code units."""

    def __init__(self, tokens: F32, rng: np.random.Generator, sigma: float, codec: Codec) -> None:
        dim = tokens.shape[-1]
        pool = _noise(rng, (NOISE_POOL, *tokens.shape[1:]), dim)
        self.codec = codec
        if codec == "int8":
            self.codes, self.scale = quantize_int8(tokens)
            norms = np.linalg.norm(self.codes.astype(np.float32), axis=-1)
            mean = float(norms[norms > 0].mean()) if (norms > 0).any() else 0.0
            self.pool: NDArray[Any] = np.rint(sigma * mean * pool).astype(np.int16)
        else:
            self.tokens = tokens
            self.norms = np.linalg.norm(tokens, axis=-1, keepdims=True)
            self.pool = sigma * pool

    def int8(
        self, rows: NDArray[np.int64], rng: np.random.Generator
    ) -> tuple[NDArray[np.int8], NDArray[np.float16]]:
        """Copies of ``rows`` as int8 codes and scales; masked (zero) tokens stay zero (scale 0)."""
        q = self.codes[rows].astype(np.int16)
        q += self.pool[rng.integers(len(self.pool), size=len(rows))]
        np.clip(q, -127, 127, out=q)
        return q.astype(np.int8), self.scale[rows]

    def floats(self, rows: NDArray[np.int64], rng: np.random.Generator) -> F32:
        """Copies of ``rows`` as float32 tokens; masked (zero) tokens stay zero."""
        noise = self.pool[rng.integers(len(self.pool), size=len(rows))]
        out: F32 = (self.tokens[rows] + self.norms[rows] * noise).astype(np.float32)
        return out


def _copies(rng: np.random.Generator, rows: NDArray[np.int64], vectors: F32, sigma: float) -> F32:
    """Noisy unit copies of the seeds' global vectors ``rows``."""
    dim = vectors.shape[1]
    return _unit(vectors[rows] + sigma * _noise(rng, (len(rows), dim), dim))


def write_scale_version(
    out: Path,
    n: int,
    *,
    encoder: dict[str, Any],
    per_image: int,
    codec: Codec,
    seeds: Seeds,
    sigma: float = 0.5,
    seed: int = 0,
    factory: str = "auto",
    hash_heads: Path | None = None,
) -> tuple[Path, dict[str, float]]:
    """Write and publish a version of ``n`` copies of ``seeds`` under the root ``out``; returns its
    folder and the seconds of each stage."""
    rng = np.random.default_rng(seed + 1)
    dim, m = int(encoder["dim"]), int(encoder["grid"][0]) * int(encoder["grid"][1])
    if seeds.vectors.shape[1] != dim or seeds.patches.shape[1:] != (m, dim):
        raise ValueError(f"seeds {seeds.patches.shape} do not have the encoder's shapes ({m}, {dim})")
    words = seeds.caption_tokens.shape[1]
    patches = TokenCopies(seeds.patches, rng, sigma, codec)
    word_tokens = TokenCopies(seeds.caption_tokens, rng, sigma, codec)
    out.mkdir(parents=True, exist_ok=True)
    staged = out / f".staging-{uuid.uuid4().hex[:8]}"
    staged.mkdir()
    times: dict[str, float] = {}
    t0 = time.perf_counter()
    arrays = VersionArrays(
        staged, n_images=n, n_captions=n * per_image, dim=dim, m=m, n_words=words, codec=codec
    )
    int8 = codec == "int8"
    texts: list[str] = []
    for start in range(0, n, CHUNK):
        which = rng.integers(len(seeds.vectors), size=min(CHUNK, n - start))
        vectors = _copies(rng, which, seeds.vectors, sigma)
        if int8:
            arrays.add_images_int8(vectors, *patches.int8(which, rng))
        else:
            arrays.add_images(vectors, patches.floats(which, rng))
        if per_image:
            caps = seeds.captions[which].ravel()
            vectors, mask = _copies(rng, caps, seeds.caption_vectors, sigma), seeds.caption_mask[caps]
            if int8:
                arrays.add_captions_int8(vectors, *word_tokens.int8(caps, rng), mask)
            else:
                arrays.add_captions(vectors, word_tokens.floats(caps, rng), mask)
            texts.extend(seeds.texts[i] for i in caps)
    arrays.close()
    times["arrays_s"] = time.perf_counter() - t0
    ids = [f"scale{i:08d}.jpg" for i in range(n)]
    write_ids(staged, ids)
    write_captions(staged, texts, np.repeat(np.arange(n), per_image).tolist())
    write_metadata(staged / "metadata.parquet", ids, {})
    write_text(staged / SKIPPED, "[]")
    write_tombstones(staged, [])
    t0 = time.perf_counter()
    write_recall(staged, factory)
    times["faiss_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    write_extras(staged, hash_heads, seed)
    times["extras_s"] = time.perf_counter() - t0
    manifest = Manifest(
        encoder=encoder,
        n_images=n,
        n_captions=len(texts),
        token_codec=codec,
        dim=dim,
        grid=(int(encoder["grid"][0]), int(encoder["grid"][1])),
        source=f"bench.scale_index: {n} copies of {len(seeds.vectors)} seeds, sigma {sigma}",
        extra={"n_skipped": 0, "synthetic": True},
    )
    manifest.write(staged)
    folder = publish(out, staged, next_version_name(out))
    return folder, times


def _caption_texts(path: Path | None) -> list[str]:
    if path is None or not path.is_file():
        return []
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, required=True)
    p.add_argument("--out", type=Path, required=True, help="index root (created; a new version is added)")
    p.add_argument("--model", default=None, help="open_clip architecture (default: the shipped one)")
    p.add_argument("--checkpoint", type=Path, default=None)
    p.add_argument("--base", type=Path, default=None, help="index version whose features seed the copies")
    p.add_argument("--captions-per-image", type=int, default=1)
    p.add_argument(
        "--words", type=int, default=None, help=f"word slots (default: the base's, or {DEFAULT_WORDS})"
    )
    p.add_argument("--codec", choices=get_args(Codec), default="int8")
    p.add_argument("--sigma", type=float, default=0.5)
    p.add_argument("--factory", default="auto")
    p.add_argument("--texts", type=Path, default=None, help="caption texts, one a line (mixture seeds only)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    from rsir.model.encoders import (
        DEFAULT_ARCH,
        ClipEncoder,
        EncoderConfig,
        default_checkpoint,
        default_hash_heads,
    )

    arch = args.model or DEFAULT_ARCH
    checkpoint = args.checkpoint or default_checkpoint(arch)
    encoder = ClipEncoder(EncoderConfig(arch=arch, checkpoint=checkpoint, device="cpu"))
    describe = encoder.describe()
    dim, m = encoder.dim, encoder.grid[0] * encoder.grid[1]
    del encoder
    rng = np.random.default_rng(args.seed)
    t0 = time.perf_counter()
    if args.base is not None:
        seeds = version_seeds(args.base, rng, dim, m, args.captions_per_image, args.words)
    else:
        texts = _caption_texts(args.texts)
        seeds = mixture_seeds(rng, dim, m, args.captions_per_image, args.words or DEFAULT_WORDS, texts)
    folder, times = write_scale_version(
        args.out,
        args.n,
        encoder=describe,
        per_image=args.captions_per_image,
        codec=args.codec,
        seeds=seeds,
        sigma=args.sigma,
        seed=args.seed,
        factory=args.factory,
        hash_heads=default_hash_heads(arch, checkpoint),
    )
    size = sum(f.stat().st_size for f in folder.iterdir())
    report = {
        "version": str(folder),
        "n": args.n,
        "bytes": size,
        "total_s": time.perf_counter() - t0,
        **times,
    }
    sys.stdout.write(
        json.dumps({k: round(v, 1) if isinstance(v, float) else v for k, v in report.items()}) + "\n"
    )


if __name__ == "__main__":
    main()
