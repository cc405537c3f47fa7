"""The demo index: a seeded SynthRS archive indexed with the shipped default model.

``make demo-index`` builds the full-size one through the CLI (``rsir synth --seed 7``, then
``rsir build-index``); the behaviour snapshot, the notebook API's tests and the search page's
end-to-end tests build smaller ones in-process here, so that all of them index the same kind of
gallery the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rsir.index_builder.build import build
from rsir.index_builder.config import BuildConfig
from rsir.model.encoders import DEFAULT_ARCH, ClipEncoder, EncoderConfig, default_checkpoint
from rsir.synthrs.dataset import SynthConfig, write_dataset

DEMO_SEED = 7  # the seed `make demo` passes to `rsir synth`


@dataclass(frozen=True)
class DemoIndex:
    archive: Path  # the SynthRS folder: images/synth_000000.png ..., dataset.json, metadata.jsonl
    root: Path  # the index root, holding one version


def shipped_encoder(batch_size: int = 32) -> ClipEncoder:
    """The shipped default model on the CPU."""
    checkpoint = default_checkpoint(DEFAULT_ARCH)
    return ClipEncoder(
        EncoderConfig(arch=DEFAULT_ARCH, checkpoint=checkpoint, device="cpu", batch_size=batch_size)
    )


def build_demo_index(work: Path, n: int, encoder: ClipEncoder, seed: int = DEMO_SEED) -> DemoIndex:
    """``n`` SynthRS images under ``work/synth`` and their index under ``work/index``."""
    archive = Path(work) / "synth"
    write_dataset(SynthConfig(n=n, seed=seed), archive, progress=False)
    root = Path(work) / "index"
    # Shard and batch sizes fix the float results (BuildConfig); the behaviour snapshot was recorded
    # with these, in-process (no worker processes).
    config = BuildConfig(shard_size=64, batch_size=32, workers=0, progress=False)
    build(archive, root, encoder, config, metadata=archive / "metadata.jsonl")
    return DemoIndex(archive, root)
