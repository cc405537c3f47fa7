"""The engine's server-side defaults and bounds (one object, built once and passed explicitly)."""

from __future__ import annotations

from dataclasses import dataclass, field

from rsir.model import ftf
from rsir.model.precision import Precision
from rsir.search.options import HashPpsr


@dataclass(frozen=True)
class EngineConfig:
    """Server-side defaults and bounds; per-request values are call arguments, never mutations."""

    ftf: ftf.FTFParams = field(default_factory=ftf.FTFParams)
    default_recall_k: int = 100
    max_recall_k: int = 1000
    max_k: int = 1000
    # An explain answer carries n_words x grid floats per hit: a server bounds its k lower (None: max_k).
    max_explain_k: int | None = None
    # recall_k below k still returns k hits (recall fetches max(recall_k, k)); a server refuses it, as
    # the rerank would then reorder fewer candidates than the answer holds.
    allow_recall_k_below_k: bool = True
    query_batch: int = 16
    exhaustive_chunk: int = 512
    # Filtered queries whose subset is at most this many items are scored exactly (one product over
    # the subset), which is also cheaper than an ID-selector scan of an approximate index.
    exact_filter_max: int = 50_000
    device: str = "auto"
    # The rerank's token dtype (auto: float16 on CUDA, float32 on the CPU). Scores are float32 in
    # every dtype: the block reduces in float32 (model/ftf.py), and the coarse score never leaves it.
    dtype: Precision = Precision.AUTO
    # iEBAKER's local score fusion: w * coarse + (1 - w) * s_l (the paper's 0.6 / 0.4 split).
    local_weight: float = 0.6
    # SAR's soft form: s + w * exp(-0.05 * rho).
    sar_weight: float = 0.1
    # PPSR: r_q is the mean of the query's top ppsr_k recall scores.
    ppsr_k: int = 10
    # PPSR over hash recall: "hamming" corrects minus the Hamming distance (ALGORITHMS.md §3, CFITR);
    # "cosine" corrects the cosines of the Hamming order's candidates (the earlier variant).
    hash_ppsr: HashPpsr = "hamming"
    # IVF lists visited per query by dense recall (None: rsir.index.dense.DEFAULT_NPROBE); exact indexes
    # ignore it. BENCHMARKS.md (recall at scale) has recall@100 against exact search by nprobe.
    nprobe: int | None = None
    # rerank="exhaustive" runs the block over the whole gallery: for measurement (rsir eval); a server
    # turns it off so that one request cannot hold the model thread for seconds.
    allow_exhaustive: bool = True
