"""Stage 1: text-agnostic recall of the top-K gallery items by inner product of global vectors."""

from __future__ import annotations

import faiss
import numpy as np
from numpy.typing import NDArray

from model.errors import InvalidInputError


class DenseRecall:
    """Exact inner-product search over unit vectors (cosine), backed by a FAISS flat index.

    ``vectors [N,d]`` float32. The index-builder issue adds approximate indexes behind this interface.
    """

    def __init__(self, vectors: NDArray[np.float32]) -> None:
        if vectors.ndim != 2 or vectors.shape[0] == 0:
            raise InvalidInputError(f"recall needs a non-empty [N,d] matrix, got shape {vectors.shape}")
        self.dim = int(vectors.shape[1])
        self.index = faiss.IndexFlatIP(self.dim)
        self.index.add(np.ascontiguousarray(vectors, dtype=np.float32))

    @property
    def size(self) -> int:
        return int(self.index.ntotal)

    def search(self, queries: NDArray[np.float32], k: int) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
        """``queries [Q,d]`` -> (scores ``[Q,k']``, ids ``[Q,k']``), best first, ``k' = min(k, N)``."""
        if queries.ndim != 2 or queries.shape[1] != self.dim:
            raise InvalidInputError(f"queries must be [Q,{self.dim}], got shape {queries.shape}")
        if k < 1:
            raise InvalidInputError(f"k must be >= 1, got {k}")
        scores, ids = self.index.search(np.ascontiguousarray(queries, dtype=np.float32), min(k, self.size))
        return scores, ids
