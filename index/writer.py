"""Streaming a version's arrays to disk in row order: the one writer of the image and caption arrays
(see :mod:`rsir.index.versions` for the files), used by the builder's assembly and by the scale bench.

Rows arrive in chunks and go straight to the files (plain appends, see
:class:`rsir.index.tokens.NpyAppender`), so writing a version of any size holds one chunk in memory.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from rsir.index.tokens import Codec, NpyAppender, TokenWriter


class VersionArrays:
    """``image_vectors``, ``patches``, ``caption_vectors``, ``caption_tokens`` and ``caption_mask`` of
    ``n_images`` images (``m`` patch tokens each) and ``n_captions`` captions (``n_words`` slots)."""

    def __init__(
        self,
        folder: Path,
        *,
        n_images: int,
        n_captions: int,
        dim: int,
        m: int,
        n_words: int,
        codec: Codec,
    ) -> None:
        self.vectors = NpyAppender(folder / "image_vectors.npy", np.float32, (n_images, dim))
        self.patches = TokenWriter(folder, "patches", (n_images, m, dim), codec)
        self.cap_vectors = NpyAppender(folder / "caption_vectors.npy", np.float32, (n_captions, dim))
        self.cap_tokens = TokenWriter(folder, "caption_tokens", (n_captions, n_words, dim), codec)
        self.cap_mask = NpyAppender(folder / "caption_mask.npy", np.bool_, (n_captions, n_words))

    def add_images(self, vectors: NDArray[np.floating], patches: NDArray[np.floating]) -> None:
        self.vectors.append(vectors)
        self.patches.append(patches)

    def add_images_int8(
        self, vectors: NDArray[np.floating], codes: NDArray[np.int8], scale: NDArray[np.float16]
    ) -> None:
        """Images whose patch tokens are already int8 codes and scales (an int8 version only)."""
        self.vectors.append(vectors)
        self.patches.append_int8(codes, scale)

    def add_captions_int8(
        self,
        vectors: NDArray[np.floating],
        codes: NDArray[np.int8],
        scale: NDArray[np.float16],
        mask: NDArray[np.bool_],
    ) -> None:
        self.cap_vectors.append(vectors)
        self.cap_tokens.append_int8(codes, scale)
        self.cap_mask.append(mask)

    def add_captions(
        self, vectors: NDArray[np.floating], tokens: NDArray[np.floating], mask: NDArray[np.bool_]
    ) -> None:
        self.cap_vectors.append(vectors)
        self.cap_tokens.append(tokens)
        self.cap_mask.append(mask)

    def close(self) -> None:
        """Close every file; raises when a file got fewer or more rows than declared."""
        for writer in (self.vectors, self.patches, self.cap_vectors, self.cap_tokens, self.cap_mask):
            writer.close()
