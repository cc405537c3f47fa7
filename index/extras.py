"""Per-side data of the alternative recall and rerank methods (ALGORITHMS.md §3-§5), and building it.

A *side* is what a query searches: the images (text and image queries) or the captions (image
queries). Each side may carry CFITR hash codes (in a FAISS binary index), an SGPD index, PPSR's
gallery term ``r_g`` and SAR's reference profiles. Index versions store them (see
:mod:`rsir.index.versions`); :func:`build_extras` computes them from a gallery's vectors.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from rsir.index.gallery import Gallery
from rsir.index.hash_codes import HashRecall
from rsir.index.sgpd import SGPDRecall
from rsir.model import ppsr, sar
from rsir.model.hashing import HashHeads

__all__ = ["HashHeads", "SideExtras", "build_extras", "reference_sample"]

# SGPD's k-means as a version stores it (centroids [C, d] float32, assignments [N] int), per side prefix.
SGPD_FILES = ("sgpd_centroids.npy", "sgpd_assignments.npy")
# SGPD's inverted index as CSR arrays (values float32, item ids int32, list offsets int64), mapped at load.
SGPD_POSTINGS = ("sgpd_postings_data.npy", "sgpd_postings_indices.npy", "sgpd_postings_indptr.npy")

# SAR's reference set: a seeded sample of the other modality's items. N x R profile entries are
# stored per side (fp16), so R bounds the memory: 512 -> 1 KB per gallery item.
SAR_REFERENCES = 512


@dataclass
class SideExtras:
    hash: HashRecall | None = None
    sgpd: SGPDRecall | None = None
    ppsr_rg: NDArray[np.float32] | None = None
    # PPSR's r_g over hash codes (mean of the 10 best minus-Hamming scores against reference codes).
    ppsr_rg_hash: NDArray[np.float32] | None = None
    sar_profiles: NDArray[np.float16] | None = None


def reference_sample(n: int, size: int, seed: int = 0) -> NDArray[np.int64]:
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, min(n, size), replace=False)).astype(np.int64)


def side_data(
    vectors: NDArray[np.float32],
    references: NDArray[np.float32],
    seed: int = 0,
    sar_references: int = SAR_REFERENCES,
) -> tuple[NDArray[np.float32], NDArray[np.float16]]:
    """PPSR's ``r_g`` against every reference query, and SAR's profiles against a sample of them."""
    r_g = ppsr.gallery_term(vectors, references)
    sample = references[reference_sample(len(references), sar_references, seed)]
    profiles = sar.reference_profiles(vectors, sample).astype(np.float16)
    return r_g.astype(np.float32), profiles


def build_extras(
    gallery: Gallery, heads: HashHeads | None = None, seed: int = 0, sgpd: bool = True
) -> dict[str, SideExtras]:
    """Every method's data for both sides of ``gallery``, computed in memory (the index builder
    stores the same arrays; the benchmarks call this on galleries they embed themselves)."""
    images = np.asarray(gallery.vectors, np.float32)
    out = {"images": SideExtras()}
    captions = gallery.captions
    caption_vectors = np.asarray(captions.vectors, np.float32) if captions is not None else None
    if caption_vectors is not None and len(caption_vectors):
        r_g, profiles = side_data(images, caption_vectors, seed)
        out["images"] = SideExtras(ppsr_rg=r_g, sar_profiles=profiles)
        r_g_c, profiles_c = side_data(caption_vectors, images, seed)
        out["captions"] = SideExtras(ppsr_rg=r_g_c, sar_profiles=profiles_c)
    if heads is not None:
        image_codes = heads.encode_images(images)
        out["images"].hash = HashRecall(image_codes)
        if caption_vectors is not None and "captions" in out:
            caption_codes = heads.encode_texts(caption_vectors)
            out["captions"].hash = HashRecall(caption_codes)
            out["images"].ppsr_rg_hash = ppsr.hamming_gallery_term(image_codes, caption_codes)
            out["captions"].ppsr_rg_hash = ppsr.hamming_gallery_term(caption_codes, image_codes)
    if sgpd:
        out["images"].sgpd = SGPDRecall(images, seed=seed)
        if caption_vectors is not None and "captions" in out:
            out["captions"].sgpd = SGPDRecall(caption_vectors, seed=seed)
    return out


def load_extras(
    folder: Path, gallery: Gallery, with_sgpd: bool = True, seed: int = 0
) -> tuple[dict[str, SideExtras], HashHeads | None]:
    """The arrays :mod:`rsir.index_builder.extras` wrote (those present), plus SGPD: its clusters as the
    build stored them, or computed from the vectors for versions built before that."""
    heads_file = folder / "hash_heads.safetensors"
    heads = HashHeads.load(heads_file) if heads_file.is_file() else None
    out: dict[str, SideExtras] = {}
    sides = [("images", "", gallery.vectors)]
    if gallery.captions is not None and len(gallery.captions.texts):
        sides.append(("captions", "caption_", gallery.captions.vectors))
    for side, prefix, vectors in sides:
        extras = SideExtras()
        if (folder / f"{prefix}ppsr_rg.npy").is_file():
            extras.ppsr_rg = np.load(folder / f"{prefix}ppsr_rg.npy")
        if (folder / f"{prefix}sar_profiles.npy").is_file():
            extras.sar_profiles = np.load(folder / f"{prefix}sar_profiles.npy", mmap_mode="r")
        if heads is not None and (folder / f"{prefix}hash_codes.npy").is_file():
            extras.hash = HashRecall(np.load(folder / f"{prefix}hash_codes.npy"))
        if (folder / f"{prefix}hash_ppsr_rg.npy").is_file():
            extras.ppsr_rg_hash = np.load(folder / f"{prefix}hash_ppsr_rg.npy")
        if with_sgpd:
            extras.sgpd = _sgpd(folder, prefix, vectors, seed)
        out[side] = extras
    return out, heads


def _sgpd(folder: Path, prefix: str, vectors: NDArray[np.float32], seed: int) -> SGPDRecall:
    """SGPD over what the build stored (clusters, inverted index); what a version lacks is computed."""
    paths = [folder / f"{prefix}{name}" for name in SGPD_FILES]
    clusters = None
    if all(p.is_file() for p in paths):
        clusters = (np.load(paths[0]), np.load(paths[1]))
    lists = [folder / f"{prefix}{name}" for name in SGPD_POSTINGS]
    postings = None
    if all(p.is_file() for p in lists):
        data, ids, offsets = (np.load(p, mmap_mode="r") for p in lists)
        # Mapped arrays of the dtypes scipy keeps as they are: no copy, nothing read at load.
        postings = sp.csr_matrix((data, ids, offsets), shape=(2 * vectors.shape[1], len(vectors)), copy=False)
    return SGPDRecall(np.asarray(vectors, np.float32), seed=seed, clusters=clusters, postings=postings)


def postings_arrays(sgpd: SGPDRecall) -> tuple[NDArray[np.float32], NDArray[np.int32], NDArray[np.int64]]:
    """SGPD's inverted index as the three arrays :data:`SGPD_POSTINGS` name, in their stored dtypes."""
    inv = sgpd.inverted
    return (
        np.asarray(inv.data, np.float32),
        np.asarray(inv.indices, np.int32),
        np.asarray(inv.indptr, np.int64),
    )
