"""The alternative methods' per-version data (see :mod:`rsir.index.extras`), written beside the arrays.

- ``ppsr_rg.npy`` / ``caption_ppsr_rg.npy``: PPSR's gallery term against a sample of at most
  ``PPSR_REFERENCES`` queries of the other modality (the indexed captions for images, the images for
  captions), so an online query needs only its own term.
- ``sar_profiles.npy`` / ``caption_sar_profiles.npy``: SAR's sorted similarities to a smaller sample.
- ``hash_heads.safetensors`` + ``hash_codes.npy`` / ``caption_hash_codes.npy``: CFITR codes, when the
  build is given hash heads (the heads travel with the version: queries need them to be encoded), and
  ``hash_ppsr_rg.npy`` / ``caption_hash_ppsr_rg.npy``: PPSR's gallery term over those codes.
- ``sgpd_centroids.npy`` + ``sgpd_assignments.npy`` (and ``caption_``): SGPD's k-means, so a server
  loads the clusters instead of recomputing them at every start and index switch (37.6 s at 1M
  vectors); versions without them still work, computing them at load as before.
- ``sgpd_postings_{data,indices,indptr}.npy`` (and ``caption_``): SGPD's inverted index (the sparse
  codes), memory-mapped at load instead of coding every vector at every start.

They are recomputed from the whole version's vectors on every build, add and delete is left alone
(delete hard-links them: tombstones do not change any item's vector).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from rsir.index.atomic import save_npy
from rsir.index.extras import SGPD_FILES, SGPD_POSTINGS, postings_arrays, reference_sample, side_data
from rsir.index.sgpd import SGPDRecall
from rsir.model.ppsr import hamming_gallery_term

HASH_HEADS_FILE = "hash_heads.safetensors"
PPSR_REFERENCES = 10_000


def write_extras(staged: Path, hash_heads: Path | None, seed: int = 0) -> None:
    images = np.load(staged / "image_vectors.npy", mmap_mode="r")
    caption_file = staged / "caption_vectors.npy"
    captions = np.load(caption_file, mmap_mode="r") if caption_file.is_file() else None
    if captions is not None and len(captions):
        for prefix, side, other in (("", images, captions), ("caption_", captions, images)):
            refs = np.asarray(other[reference_sample(len(other), PPSR_REFERENCES, seed)], np.float32)
            r_g, profiles = side_data(np.asarray(side, np.float32), refs, seed)
            save_npy(staged / f"{prefix}ppsr_rg.npy", r_g)
            save_npy(staged / f"{prefix}sar_profiles.npy", profiles)
    sides = [("", images)] + ([("caption_", captions)] if captions is not None and len(captions) else [])
    for prefix, vectors in sides:
        sgpd = SGPDRecall(np.asarray(vectors, np.float32), seed=seed)
        centroids, assignments = SGPD_FILES
        save_npy(staged / f"{prefix}{centroids}", sgpd.centroids)
        save_npy(staged / f"{prefix}{assignments}", sgpd.assignments)
        lists: tuple[NDArray[Any], ...] = postings_arrays(sgpd)
        for name, array in zip(SGPD_POSTINGS, lists, strict=True):
            save_npy(staged / f"{prefix}{name}", array)
    if hash_heads is not None:
        from rsir.model.hashing import HashHeads

        heads = HashHeads.load(hash_heads)
        shutil.copyfile(hash_heads, staged / HASH_HEADS_FILE)
        image_codes = heads.encode_images(np.asarray(images, np.float32))
        save_npy(staged / "hash_codes.npy", image_codes)
        if captions is not None and len(captions):
            caption_codes = heads.encode_texts(np.asarray(captions, np.float32))
            save_npy(staged / "caption_hash_codes.npy", caption_codes)
            # PPSR over hash recall corrects Hamming scores, so its r_g is taken over codes too.
            for prefix, side_codes, other_codes in (
                ("", image_codes, caption_codes),
                ("caption_", caption_codes, image_codes),
            ):
                code_refs = other_codes[reference_sample(len(other_codes), PPSR_REFERENCES, seed)]
                save_npy(staged / f"{prefix}hash_ppsr_rg.npy", hamming_gallery_term(side_codes, code_refs))
