"""Recall@K for image-text retrieval, in both directions, from ranked result lists.

Conventions (those of the RSICD/RSITMD retrieval papers, so numbers are comparable):

- Text-to-image (t2i): every caption is a query; a hit at K if its own image is among the first K
  images. Averaged over captions.
- Image-to-text (i2t): every image is a query; a hit at K if *any* of its captions is among the first
  K captions. Averaged over images. An image with zero captions can never hit: by default it counts
  as a miss (``captionless="miss"``), as clip_benchmark and the seeds' evaluators count it (they
  average over every image query); ``captionless="skip"`` leaves it out of the i2t average, this
  project's convention before 2026-12-05. It counts as a gallery item for t2i either way.
- Duplicated caption strings are not merged: each caption line is its own query and its own gallery
  item, as in the benchmarks' own evaluation code.
- Values are percentages (0..100); ``mR`` is the mean of the six.

Rankings come in as index arrays (``-1`` = no result, as FAISS pads short result lists), so the same
code scores a FAISS search, a rerank, or the full-similarity reference path
(:func:`report_from_similarity`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from rsir.model.errors import InvalidInputError

KS: tuple[int, ...] = (1, 5, 10)
# Images without a caption in the image-to-text average: a miss (the published convention) or left out.
Captionless = Literal["miss", "skip"]
CAPTIONLESS: tuple[str, ...] = ("miss", "skip")

# Rows sorted per chunk in ranks_from_similarity: bounds the [chunk, Ncols] int64 argsort buffer
# (~45 MB for a 5,465-column gallery) however many queries there are.
_SORT_CHUNK_ROWS = 1024


@dataclass(frozen=True)
class RecallReport:
    """Recall@{1,5,10} in percent for both directions."""

    t2i_r1: float
    t2i_r5: float
    t2i_r10: float
    i2t_r1: float
    i2t_r5: float
    i2t_r10: float

    @property
    def mR(self) -> float:  # noqa: N802 - the name the papers and the spec report it under
        """Mean of the six recalls (percent)."""
        return (self.t2i_r1 + self.t2i_r5 + self.t2i_r10 + self.i2t_r1 + self.i2t_r5 + self.i2t_r10) / 6.0

    def as_dict(self) -> dict[str, float]:
        """The six fields plus ``"mR"``."""
        out: dict[str, float] = asdict(self)
        out["mR"] = self.mR
        return out


def t2i_recall(
    ranked_images: NDArray[np.integer[Any]],
    caption_image: NDArray[np.integer[Any]],
    ks: Sequence[int] = KS,
) -> dict[int, float]:
    """Text-to-image Recall@K in percent, ``{K: value}``.

    ``ranked_images`` is ``[Nc, k_max]`` int: per caption query, gallery image indices best first
    (``-1`` = no result). ``caption_image`` is ``[Nc]`` int: the image of each caption. ``k_max`` must
    reach ``max(ks)`` unless the gallery is smaller; the gallery size is not passed here, so it is
    taken as at least ``1 + max`` of the indices seen (:func:`recall_report` knows it exactly).
    """
    cap_img = _as_index_vector(caption_image, "caption_image")
    ranked = _as_rank_matrix(ranked_images, "ranked_images", n_rows=cap_img.shape[0])
    seen_max = max(int(cap_img.max()), int(ranked.max(initial=-1)))
    return _t2i(ranked, cap_img, check_ks(ks), n_images=seen_max + 1)


def i2t_recall(
    ranked_captions: NDArray[np.integer[Any]],
    caption_image: NDArray[np.integer[Any]],
    ks: Sequence[int] = KS,
    captionless: Captionless = "miss",
) -> dict[int, float]:
    """Image-to-text Recall@K in percent, ``{K: value}``.

    ``ranked_captions`` is ``[Ni, k_max]`` int: row ``i`` is the query of image ``i``, caption indices
    best first (``-1`` = no result). ``caption_image`` is ``[Nc]`` int with values in ``[0, Ni)``.
    Image ``i`` hits at K if any caption ``c`` with ``caption_image[c] == i`` is among its first K.
    Images with no caption count as misses (``captionless="miss"``) or are left out of the average
    (``"skip"``).
    """
    ranked = _as_rank_matrix(ranked_captions, "ranked_captions")
    cap_img = _as_index_vector(caption_image, "caption_image")
    return _i2t(ranked, cap_img, check_ks(ks), captionless=_check_captionless(captionless))


@dataclass(frozen=True)
class QueryHits:
    """Per query, the 0-based position of its first hit (int64 max when none in the list).

    ``t2i [Nc]`` for the caption queries, ``i2t [Ni']`` for the image queries (all of them by default;
    with ``captionless="skip"`` only those that have a caption).
    Recall@K is the share below K; keeping positions lets a bootstrap resample queries.
    """

    t2i: NDArray[np.int64]
    i2t: NDArray[np.int64]

    def report(self) -> RecallReport:
        t2i, i2t = _recalls(self.t2i, KS), _recalls(self.i2t, KS)
        return RecallReport(
            t2i_r1=t2i[1], t2i_r5=t2i[5], t2i_r10=t2i[10], i2t_r1=i2t[1], i2t_r5=i2t[5], i2t_r10=i2t[10]
        )


def query_hits(
    ranked_images: NDArray[np.integer[Any]],
    ranked_captions: NDArray[np.integer[Any]],
    caption_image: NDArray[np.integer[Any]],
    query_captions: NDArray[np.integer[Any]] | None = None,
    query_images: NDArray[np.integer[Any]] | None = None,
    captionless: Captionless = "miss",
) -> QueryHits:
    """First-hit positions per query, with the inputs and checks of :func:`recall_report`."""
    rc = _as_rank_matrix(ranked_captions, "ranked_captions")
    cap_img = _as_index_vector(caption_image, "caption_image")
    how = _check_captionless(captionless)
    if query_captions is None and query_images is None:
        ri = _as_rank_matrix(ranked_images, "ranked_images", n_rows=cap_img.shape[0])
        i2t = _i2t_first(rc, cap_img, KS, captionless=how)
        t2i = _t2i_first(ri, cap_img, KS, n_images=rc.shape[0])
        return QueryHits(t2i=t2i, i2t=i2t)
    qc = _as_index_vector(
        np.arange(cap_img.shape[0]) if query_captions is None else query_captions, "query_captions"
    )
    n_images = int(cap_img.max()) + 1
    qi = _as_index_vector(np.arange(n_images) if query_images is None else query_images, "query_images")
    ri = _as_rank_matrix(ranked_images, "ranked_images", n_rows=qc.shape[0])
    t2i = _t2i_first(ri, cap_img[qc], KS, n_images=n_images)
    i2t = _i2t_first(_as_rank_matrix(rc, "ranked_captions", n_rows=qi.shape[0]), cap_img, KS, qi, how)
    return QueryHits(t2i=t2i, i2t=i2t)


def recall_report(
    ranked_images: NDArray[np.integer[Any]],
    ranked_captions: NDArray[np.integer[Any]],
    caption_image: NDArray[np.integer[Any]],
    query_captions: NDArray[np.integer[Any]] | None = None,
    query_images: NDArray[np.integer[Any]] | None = None,
    captionless: Captionless = "miss",
) -> RecallReport:
    """Both directions at K = 1, 5, 10; images without a caption per ``captionless`` (a miss by default).

    ``ranked_images`` ``[Nc, k_max]``, ``ranked_captions`` ``[Ni, k_max']``, ``caption_image`` ``[Nc]``;
    ``Ni`` (the image gallery size) is ``ranked_captions.shape[0]``.

    On a large gallery only some items may be queried: then row ``r`` of ``ranked_images`` is the
    query of caption ``query_captions[r]`` and row ``r`` of ``ranked_captions`` that of image
    ``query_images[r]``; the image gallery size is then ``1 + caption_image.max()``.
    """
    return query_hits(
        ranked_images, ranked_captions, caption_image, query_captions, query_images, captionless
    ).report()


def ranks_from_similarity(sim: NDArray[np.generic], k: int) -> NDArray[np.int64]:
    """``[Nq, Ng]`` scores -> ``[Nq, min(k, Ng)]`` int64 column indices, highest score first.

    Ties go to the lower column index (a stable sort), so results do not depend on the sort
    algorithm and match the brute-force rank "count of strictly better, plus equal with lower index".
    NaN scores are rejected because they have no place in that order.
    """
    scores = as_score_matrix(sim, "sim")
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise InvalidInputError(f"k must be a positive integer, got {k!r}")
    k = min(int(k), scores.shape[1])
    out = np.empty((scores.shape[0], k), dtype=np.int64)
    for start in range(0, scores.shape[0], _SORT_CHUNK_ROWS):
        block = scores[start : start + _SORT_CHUNK_ROWS]
        # Negating and sorting ascending keeps the stable sort's lower-index-first rule for ties;
        # float64 keeps float32 scores exact and makes negation safe for unsigned inputs.
        order = np.argsort(-block.astype(np.float64, copy=False), axis=1, kind="stable")
        out[start : start + block.shape[0]] = order[:, :k]
    return out


def report_from_similarity(
    sim_i2t: NDArray[np.generic], caption_image: NDArray[np.integer[Any]]
) -> RecallReport:
    """The full-matrix reference path: ``sim_i2t`` ``[Ni, Nc]`` image-caption scores.

    i2t ranks the rows of ``sim_i2t``; t2i ranks the rows of ``sim_i2t.T``.
    """
    scores = as_score_matrix(sim_i2t, "sim_i2t")
    cap_img = _as_index_vector(caption_image, "caption_image")
    if scores.shape[1] != cap_img.shape[0]:
        raise InvalidInputError(
            f"sim_i2t has {scores.shape[1]} caption columns but caption_image has {cap_img.shape[0]} entries"
        )
    k = max(KS)
    return recall_report(ranks_from_similarity(scores.T, k), ranks_from_similarity(scores, k), cap_img)


def _t2i(
    ranked: NDArray[np.int64], cap_img: NDArray[np.int64], ks: tuple[int, ...], n_images: int
) -> dict[int, float]:
    return _recalls(_t2i_first(ranked, cap_img, ks, n_images), ks)


def _t2i_first(
    ranked: NDArray[np.int64], cap_img: NDArray[np.int64], ks: tuple[int, ...], n_images: int
) -> NDArray[np.int64]:
    if int(cap_img.max()) >= n_images:
        raise InvalidInputError(
            f"caption_image has image index {int(cap_img.max())} but the gallery has {n_images} images"
        )
    if int(ranked.max(initial=-1)) >= n_images:
        raise InvalidInputError(
            f"ranked_images has image index {int(ranked.max())} but the gallery has {n_images} images"
        )
    _check_depth(ranked, ks, n_images, "ranked_images")
    _check_no_repeats(ranked, "ranked_images")
    # -1 padding never equals a real image index, so it can never count as a hit.
    return _first_hit(ranked == cap_img[:, None])


def _i2t(
    ranked: NDArray[np.int64],
    cap_img: NDArray[np.int64],
    ks: tuple[int, ...],
    query_images: NDArray[np.int64] | None = None,
    captionless: Captionless = "miss",
) -> dict[int, float]:
    return _recalls(_i2t_first(ranked, cap_img, ks, query_images, captionless), ks)


def _i2t_first(
    ranked: NDArray[np.int64],
    cap_img: NDArray[np.int64],
    ks: tuple[int, ...],
    query_images: NDArray[np.int64] | None = None,
    captionless: Captionless = "miss",
) -> NDArray[np.int64]:
    n_images, n_captions = ranked.shape[0], cap_img.shape[0]
    if query_images is not None:  # a subset of the images queried: row r is image query_images[r]
        n_images = max(int(cap_img.max()) + 1, int(query_images.max()) + 1)
    queries = np.arange(ranked.shape[0]) if query_images is None else query_images
    if int(cap_img.max()) >= n_images:
        raise InvalidInputError(
            f"caption_image has image index {int(cap_img.max())} but ranked_captions has only "
            f"{n_images} image rows"
        )
    if int(ranked.max(initial=-1)) >= n_captions:
        raise InvalidInputError(
            f"ranked_captions has caption index {int(ranked.max())} but there are {n_captions} captions"
        )
    _check_depth(ranked, ks, n_captions, "ranked_captions")
    _check_no_repeats(ranked, "ranked_captions")
    has_caption = (np.bincount(cap_img, minlength=n_images) > 0)[queries]
    valid = ranked >= 0
    owner = np.where(valid, cap_img[np.where(valid, ranked, 0)], -1)
    first = _first_hit(owner == queries[:, None])  # a captionless image never matches: a miss
    if captionless == "skip":
        if not has_caption.any():
            raise InvalidInputError("no image query has a caption: the image-to-text average is empty")
        return first[has_caption]
    return first


def _recalls(first: NDArray[np.int64], ks: tuple[int, ...]) -> dict[int, float]:
    return {K: 100.0 * float(np.mean(first < K)) for K in ks}


def _first_hit(match: NDArray[np.bool_]) -> NDArray[np.int64]:
    """``[N, k]`` bool -> ``[N]`` position of the first True; int64 max (never < any K) if none."""
    first: NDArray[np.int64] = np.argmax(match, axis=1).astype(np.int64)
    first[~match.any(axis=1)] = np.iinfo(np.int64).max
    return first


def _check_depth(ranked: NDArray[np.int64], ks: tuple[int, ...], gallery: int, name: str) -> None:
    # A list shorter than K is only complete when it already holds the whole gallery.
    need = min(max(ks), gallery)
    if ranked.shape[1] < need:
        raise InvalidInputError(
            f"{name} has {ranked.shape[1]} results per query but R@{max(ks)} over a gallery of "
            f"{gallery} needs {need}"
        )


def _check_no_repeats(ranked: NDArray[np.int64], name: str) -> None:
    # A repeated index would let one item fill two slots and inflate recall.
    srt = np.sort(ranked, axis=1)
    dup = (srt[:, 1:] == srt[:, :-1]) & (srt[:, 1:] >= 0)
    if dup.any():
        row = int(np.nonzero(dup.any(axis=1))[0][0])
        raise InvalidInputError(f"{name} row {row} lists the same index more than once")


def _check_captionless(value: str) -> Captionless:
    if value not in CAPTIONLESS:
        raise InvalidInputError(f"captionless must be 'miss' or 'skip', got {value!r}")
    return "miss" if value == "miss" else "skip"


def check_ks(ks: Sequence[int]) -> tuple[int, ...]:
    """The cut-offs K as a tuple of positive ints, or :class:`InvalidInputError`."""
    out = tuple(ks)
    if not out or any(isinstance(K, bool) or not isinstance(K, int | np.integer) or K < 1 for K in out):
        raise InvalidInputError(f"ks must be a non-empty sequence of positive integers, got {ks!r}")
    return tuple(int(K) for K in out)


def _as_index_vector(a: NDArray[np.integer[Any]], name: str) -> NDArray[np.int64]:
    arr = np.asarray(a)
    if arr.ndim != 1 or arr.shape[0] == 0:
        raise InvalidInputError(f"{name} must be a non-empty 1-D int array, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer):
        raise InvalidInputError(f"{name} must hold integers, got dtype {arr.dtype}")
    if int(arr.min()) < 0:
        raise InvalidInputError(f"{name} has negative image index {int(arr.min())}")
    return arr.astype(np.int64, copy=False)


def _as_rank_matrix(a: NDArray[np.integer[Any]], name: str, n_rows: int | None = None) -> NDArray[np.int64]:
    arr = np.asarray(a)
    if arr.ndim != 2 or arr.shape[0] == 0:
        raise InvalidInputError(
            f"{name} must be a 2-D int array with at least one row, got shape {arr.shape}"
        )
    if not np.issubdtype(arr.dtype, np.integer):
        raise InvalidInputError(f"{name} must hold integers, got dtype {arr.dtype}")
    if n_rows is not None and arr.shape[0] != n_rows:
        raise InvalidInputError(f"{name} has {arr.shape[0]} rows but caption_image has {n_rows} captions")
    if arr.size and int(arr.min()) < -1:
        raise InvalidInputError(f"{name} has index {int(arr.min())}; only -1 may mark a missing result")
    return arr.astype(np.int64, copy=False)


def as_score_matrix(a: NDArray[np.generic], name: str) -> NDArray[Any]:
    """A non-empty 2-D matrix of real, non-NaN scores (query x gallery), or :class:`InvalidInputError`
    naming ``name``."""
    arr = np.asarray(a)
    if arr.ndim != 2 or 0 in arr.shape:
        raise InvalidInputError(f"{name} must be a non-empty 2-D array, got shape {arr.shape}")
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_) or np.issubdtype(
        arr.dtype, np.complexfloating
    ):
        raise InvalidInputError(f"{name} must hold real numbers, got dtype {arr.dtype}")
    if np.issubdtype(arr.dtype, np.floating) and np.isnan(arr).any():
        raise InvalidInputError(f"{name} contains NaN scores")
    return arr
