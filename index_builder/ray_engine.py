"""The embedding stage on Ray Data: pending shards mapped over a pool of encoder actors.

Each actor holds one copy of the model (on a GPU when the cluster has them) and turns a shard number
into a committed shard folder, exactly as the local engine does (same batches, same files, same
done-markers), so a build can be resumed by either engine and gives the same index. The work
folder must be on storage every worker sees (a shared volume on Kubernetes; see docs/ray.md).

The model travels to the actors as its open_clip config plus its state dict in Ray's object store,
so actors need neither the checkpoint file nor any locally registered architecture.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import open_clip
import torch

from rsir.index_builder import shards
from rsir.index_builder.embed import DecodeDataset, ShardAccumulator, shard_batches
from rsir.index_builder.progress import progress_log
from rsir.index_builder.sources import ArchiveItem
from rsir.model.encoders import ClipEncoder, EncoderConfig
from rsir.model.errors import RsirError

if TYPE_CHECKING:
    from rsir.index_builder.config import BuildConfig


class ShardEmbedder:
    """A Ray actor: ``{"shard", "start", "stop"}`` rows in, the same rows plus counts out."""

    def __init__(
        self,
        items: Sequence[ArchiveItem],
        work: str,
        arch: str,
        model_config: dict[str, Any],
        state: dict[str, torch.Tensor],
        encoder_config: dict[str, Any],
        batch_size: int,
        max_pixels: int,
    ) -> None:
        import ray

        # Ray Data may hand the constructor the references themselves, not their values.
        items = ray.get(items) if isinstance(items, ray.ObjectRef) else items
        state = ray.get(state) if isinstance(state, ray.ObjectRef) else state
        config_dir = Path(tempfile.mkdtemp(prefix="rsir-model-config-"))
        (config_dir / f"{arch}.json").write_text(json.dumps(model_config))
        open_clip.add_model_config(config_dir)
        model = open_clip.create_model(arch, pretrained=None, device="cpu")
        model.load_state_dict(state)
        device = "cuda" if torch.cuda.is_available() else "cpu"
        self.encoder = ClipEncoder(EncoderConfig(**{**encoder_config, "device": device}), model=model)
        self.items = items
        self.work = Path(work)
        self.batch_size = batch_size
        self.decode = DecodeDataset(items, self.encoder.preprocess, max_pixels)

    def __call__(self, rows: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        counts = []
        for number, start, stop in zip(rows["shard"], rows["start"], rows["stop"], strict=True):
            acc = ShardAccumulator(self.encoder, self.items)
            for batch in shard_batches(int(start), int(stop), self.batch_size):
                acc.add([self.decode[i] for i in batch])
            shard = acc.finish()
            shards.write_shard(self.work, int(number), shard)
            counts.append(len(shard.ids))
        return {**rows, "images": np.asarray(counts, dtype=np.int64)}


def embed_with_ray(
    items: Sequence[ArchiveItem],
    bounds: Sequence[tuple[int, int]],
    pending: Sequence[int],
    work: Path,
    encoder: ClipEncoder,
    config: BuildConfig,
) -> None:
    """Embed the ``pending`` shards on the Ray cluster ``ray.init()`` finds (or a local one)."""
    try:
        import ray
    except ImportError as exc:
        raise RsirError("--engine ray needs Ray: pip install 'rsir[ray]'") from exc
    if not pending:
        return
    if not ray.is_initialized():
        ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
    arch = encoder.config.arch
    model_config = open_clip.get_model_config(arch)
    if model_config is None:
        raise RsirError(f"open_clip has no config for {arch!r} to send to the Ray workers")
    state = {k: v.detach().float().cpu() for k, v in encoder.model.state_dict().items()}
    gpus = ray.cluster_resources().get("GPU", 0)  # type: ignore[no-untyped-call]
    rows = [{"shard": n, "start": bounds[n][0], "stop": bounds[n][1]} for n in pending]
    dataset = ray.data.from_items(rows, override_num_blocks=len(rows))
    done = dataset.map_batches(
        ShardEmbedder,
        fn_constructor_kwargs={
            "items": ray.put(list(items)),
            "work": str(work),
            "arch": arch,
            "model_config": model_config,
            "state": ray.put(state),
            "encoder_config": {"arch": arch, "batch_size": encoder.config.batch_size},
            "batch_size": config.batch_size,
            "max_pixels": config.max_pixels,
        },
        batch_size=1,
        concurrency=max(1, min(config.ray_actors, len(rows))),
        num_gpus=1 if gpus else 0,
        num_cpus=1,
    )
    log = progress_log(config, sum(bounds[n][1] - bounds[n][0] for n in pending))
    embedded = 0
    for row in done.iter_rows():
        embedded += int(row["images"])
        if log is not None:
            size = int(row["stop"]) - int(row["start"])
            log.advance(size, size - int(row["images"]))
    if log is not None:
        log.close()
    missing = [n for n in pending if not shards.is_done(work, n)]
    if missing:
        raise RsirError(
            f"Ray finished but shards {missing[:5]} were not committed ({embedded} images embedded)"
        )
