"""Evaluation (ALGORITHMS.md §6): embed a caption dataset, search it with the engine, report recalls.

Text-to-image queries are the gallery's own captions; image-to-text queries are its own images. Both go
through :class:`SearchEngine`, the same object the service uses.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from rsir.index.gallery import Gallery, gallery_from_features, permute_captions
from rsir.model.datasets import CaptionDataset, ImageRecord
from rsir.model.encoders import ClipEncoder
from rsir.model.errors import DatasetError, ImageDecodeError, InvalidInputError
from rsir.model.features import ImageFeatures, TextFeatures
from rsir.model.images import decode_image
from rsir.model.metrics import KS, Captionless, QueryHits, RecallReport, query_hits
from rsir.search.engine import QueryOptions, SearchEngine
from rsir.search.options import Recall, Rerank, Sar, uses_recall_depth

# Query encoding is timed on a sample of captions: it does not depend on the mode or the gallery.
ENCODE_SAMPLE = 256


@dataclass(frozen=True)
class EvalResult:
    """Recalls (percent) plus what every reported figure must state (§6)."""

    dataset: str
    n_images: int
    n_captions: int
    mode: str
    recall_k: int | None
    # Per-query first-hit positions: the recalls derive from them, and bootstrap intervals need them.
    hits: QueryHits
    t2i_ms_per_query: float
    i2t_ms_per_query: float
    text_encode_ms_per_query: float | None
    encoder: dict[str, Any]
    method: dict[str, Any] | None = None
    # How images without a caption enter the i2t average ("miss": as clip_benchmark and the seeds).
    captionless: Captionless = "miss"
    n_captionless: int = 0

    @property
    def report(self) -> RecallReport:
        return self.hits.report()

    @property
    def ms_per_query(self) -> float:
        """Search time (recall + rerank) per query, averaged over both directions' queries."""
        n_q = self.n_captions + self.n_images
        return (self.t2i_ms_per_query * self.n_captions + self.i2t_ms_per_query * self.n_images) / n_q

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = self.report.as_dict()
        out.update(
            **(self.method or {}),
            mode=self.mode,
            K=self.recall_k,
            ms_per_query=self.ms_per_query,
            t2i_ms_per_query=self.t2i_ms_per_query,
            i2t_ms_per_query=self.i2t_ms_per_query,
            text_encode_ms_per_query=self.text_encode_ms_per_query,
            dataset=self.dataset,
            n_images=self.n_images,
            n_captions=self.n_captions,
            captionless_images=f"{self.n_captionless} ({self.captionless})",
            encoder=self.encoder,
        )
        return out


def load_images(records: Sequence[ImageRecord], batch_size: int) -> Iterator[list[Image.Image]]:
    """Decode images batch by batch so memory holds one batch of pixels, not the dataset."""
    for start in range(0, len(records), batch_size):
        batch = []
        for rec in records[start : start + batch_size]:
            try:
                batch.append(decode_image(rec.path))
            except ImageDecodeError as exc:
                raise DatasetError(f"evaluation image {rec.filename} cannot be used: {exc}") from exc
            except FileNotFoundError as exc:
                raise DatasetError(f"evaluation image {rec.filename} not found at {rec.path}") from exc
        yield batch


def embed_dataset(encoder: ClipEncoder, dataset: CaptionDataset) -> Gallery:
    """Encode every image and caption of ``dataset`` into an in-memory :class:`Gallery`."""
    if not dataset.images or not dataset.captions:
        raise DatasetError(
            f"dataset {dataset.name} has {len(dataset.images)} images and "
            f"{len(dataset.captions)} captions; evaluation needs both"
        )
    images = ImageFeatures.cat(
        [encoder.encode_images(batch) for batch in load_images(dataset.images, encoder.config.batch_size)]
    )
    captions = TextFeatures.cat(
        [
            encoder.encode_texts(dataset.captions[i : i + 4 * encoder.config.batch_size])
            for i in range(0, len(dataset.captions), 4 * encoder.config.batch_size)
        ]
    )
    return gallery_from_features(
        [rec.filename for rec in dataset.images],
        images,
        captions,
        texts=dataset.captions,
        caption_image=dataset.caption_image,
    )


@dataclass(frozen=True)
class MethodOptions:
    """The recall method and score corrections an evaluation runs with (the rerank is its ``mode``)."""

    recall: Recall = "dense"
    ppsr: bool = False
    sar: Sar = "off"


def evaluate(
    engine: SearchEngine,
    mode: Rerank,
    recall_k: int | None = None,
    dataset_name: str = "",
    caption_queries: NDArray[np.int64] | None = None,
    image_queries: NDArray[np.int64] | None = None,
    method: MethodOptions | None = None,
    captionless: Captionless = "miss",
) -> EvalResult:
    """Search the captions over the images and the images over the captions; report R@1/5/10 and mR.

    By default every caption and every image is a query; on large galleries ``caption_queries`` and
    ``image_queries`` (indices into the gallery's captions / images) pick a subset. An image query
    with no caption counts as an i2t miss (``captionless="skip"``: left out of the average).
    """
    gallery = engine.gallery
    if gallery.captions is None:
        raise InvalidInputError("evaluation needs a gallery with captions")
    k = max(KS)
    subset = caption_queries is not None or image_queries is not None
    cq = np.arange(len(gallery.captions.texts)) if caption_queries is None else caption_queries
    iq = np.arange(len(gallery)) if image_queries is None else image_queries
    n_images, n_captions = len(iq), len(cq)

    m = method or MethodOptions()
    text_opts = QueryOptions(k, recall_k, mode, recall=m.recall, ppsr=m.ppsr, sar=m.sar)
    image_opts = replace(text_opts, target="captions")
    t0 = time.perf_counter()
    t2i = engine.search(gallery.caption_features(cq), text_opts)
    t2i_ms = (time.perf_counter() - t0) * 1000 / n_captions
    t0 = time.perf_counter()
    i2t = engine.search(gallery.image_features(iq), image_opts)
    i2t_ms = (time.perf_counter() - t0) * 1000 / n_images

    encode_ms = None
    if engine.encoder is not None:
        sample = gallery.captions.texts[:ENCODE_SAMPLE]
        t0 = time.perf_counter()
        engine.encoder.encode_texts(sample)
        encode_ms = (time.perf_counter() - t0) * 1000 / len(sample)

    owners = gallery.captions.image_index
    if subset:
        hits = query_hits(_ranked(t2i, k), _ranked(i2t, k), owners, cq, iq, captionless=captionless)
    else:
        hits = query_hits(_ranked(t2i, k), _ranked(i2t, k), owners, captionless=captionless)
    n_captionless = int((np.bincount(np.asarray(owners), minlength=len(gallery))[iq] == 0).sum())
    return EvalResult(
        dataset=dataset_name,
        n_images=n_images,
        n_captions=n_captions,
        mode=mode,
        recall_k=(recall_k or engine.config.default_recall_k) if uses_recall_depth(mode) else None,
        method=asdict(m),
        hits=hits,
        t2i_ms_per_query=t2i_ms,
        i2t_ms_per_query=i2t_ms,
        text_encode_ms_per_query=encode_ms,
        encoder=engine.encoder.describe() if engine.encoder else {},
        captionless=captionless,
        n_captionless=n_captionless,
    )


def _ranked(results: Sequence[Any], k: int) -> np.ndarray:
    """Hit indices as ``[Q, k]``, padded with -1 where a gallery is smaller than ``k``."""
    out = np.full((len(results), k), -1, dtype=np.int64)
    for q, r in enumerate(results):
        ids = [h.index for h in r.hits][:k]
        out[q, : len(ids)] = ids
    return out


def reorder_captions(gallery: Gallery, seed: int) -> Gallery:
    """The gallery with its captions stored in the seeded random order :func:`evaluate_caption_orders`
    uses for ``seed``."""
    if gallery.captions is None:
        raise InvalidInputError("evaluation needs a gallery with captions")
    return permute_captions(gallery, np.random.default_rng(seed).permutation(len(gallery.captions.texts)))


@dataclass(frozen=True)
class OrderSpread:
    """Recalls (percent) over several caption storage orders: per-figure mean and standard deviation."""

    n_orders: int
    mean: dict[str, float]
    sd: dict[str, float]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def evaluate_caption_orders(
    gallery: Gallery,
    make_engine: Callable[[Gallery], SearchEngine],
    mode: Rerank,
    orders: int,
    recall_k: int | None = None,
    method: MethodOptions | None = None,
) -> OrderSpread:
    """:func:`evaluate` with the gallery's captions stored in ``orders`` seeded random orders.

    Identical caption strings score alike, so which copy ranks first follows storage order; on
    caption sets that repeat strings (RSICD, UCM, SynthRS) the image-to-text figures of one order are
    one draw of that tie-break, and a dataset's own order can favour the query's copies. The mean
    over random orders estimates the figure with ties ordered at random. Text-to-image figures do
    not depend on caption order (the sd shows it). ``make_engine`` builds the engine (with whatever
    per-gallery data its methods need) for a reordered gallery.
    """
    if isinstance(orders, bool) or not isinstance(orders, int) or orders < 1:
        raise InvalidInputError(f"orders must be a positive integer, got {orders!r}")
    rows = []
    for seed in range(orders):
        engine = make_engine(reorder_captions(gallery, seed))
        rows.append(evaluate(engine, mode, recall_k, method=method).report.as_dict())
    keys = list(rows[0])
    values = {k: np.array([r[k] for r in rows], np.float64) for k in keys}
    return OrderSpread(
        n_orders=orders,
        mean={k: float(v.mean()) for k, v in values.items()},
        sd={k: float(v.std(ddof=1)) if orders > 1 else 0.0 for k, v in values.items()},
    )
