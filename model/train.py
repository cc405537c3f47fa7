"""Training an open_clip model with the FTF loss (§2), optional EBA and KER (§4) on a caption dataset.

Seeded, resumable (``last.pt`` holds model, optimiser, schedule, step and RNG states after every
epoch and every ``save_every`` steps), CPU or GPU. The exported weights are a plain open_clip state
dict in safetensors (fp16), loadable by the same loader as any real checkpoint. KER's decoder is
training-only: it is trained and checkpointed in ``last.pt`` (under ``"ker"``) but never exported.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import open_clip
import structlog
import torch
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from safetensors.torch import save_file

from rsir.model import towers
from rsir.model.datasets import CaptionDataset
from rsir.model.eba import EBAFilter
from rsir.model.encoders import build_model, resolve_device, special_ids
from rsir.model.errors import InvalidInputError
from rsir.model.images import decode_image
from rsir.model.ker import KERObjective
from rsir.model.losses import ftf_loss

log = structlog.get_logger(__name__)

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class TrainConfig:
    arch: str = "rsir-vit-tiny"
    init_checkpoint: Path | None = None
    epochs: int = 6
    batch_size: int = 64
    lr: float = 5e-4
    weight_decay: float = 0.1
    warmup_steps: int = 100
    temperature: float = 0.05
    tau: float = 0.05
    eba: bool = False
    eba_start_epoch: int = 4
    ker_weight: float = 0.0  # KER loss weight (§4): 0 = off, the spec's 0.5 when on
    # Weights of InfoNCE(s_f) and of L_intra in the §2 loss; the spec's loss is 1 and 1.
    fine_weight: float = 1.0
    intra_weight: float = 1.0
    # Hard negatives in the batch: images whose metadata agree at this dotted key (SynthRS:
    # "scene.family", the twins one caption-stated detail apart) are put in the same batch. None:
    # plain random batches, where a twin shares its batch with probability ~ batch / N.
    group_key: str | None = None
    # With group_key: which loss terms see a batch's same-group pairs as negatives. "all": every term
    # (plain hard negatives); "fine": InfoNCE(s_f) only, the coarse and L_intra terms leave them out.
    group_negatives: str = "all"
    max_steps: int | None = None
    save_every: int = 200
    log_every: int = 50
    seed: int = 0
    device: str = "auto"
    # "bf16": the towers' forward (and KER's decoder) under torch.autocast in bfloat16; the §2 loss,
    # the weights, gradients and optimiser state stay float32. Their L2-normalised outputs are cast
    # up as they are (norms within bfloat16's ~0.4% of 1), not re-normalised. On CPUs with AMX or
    # AVX512-BF16 and on GPUs the matrix products are several times faster (bench/train_step.py);
    # "fp32" is how the shipped model was trained.
    precision: str = "fp32"

    def __post_init__(self) -> None:
        if self.group_negatives not in ("all", "fine"):
            raise InvalidInputError(f"group_negatives must be 'all' or 'fine', got {self.group_negatives!r}")
        if self.group_negatives == "fine" and self.group_key is None:
            raise InvalidInputError("group_negatives='fine' needs group_key (the batch groups)")
        if self.precision not in PRECISIONS:
            raise InvalidInputError(f"precision must be one of {sorted(PRECISIONS)}, got {self.precision!r}")
        if self.batch_size < 2:
            raise InvalidInputError("batch_size must be >= 2: InfoNCE needs in-batch negatives")
        if self.epochs < 1:
            raise InvalidInputError("epochs must be >= 1")
        for name in ("ker_weight", "fine_weight", "intra_weight"):
            value = getattr(self, name)
            if not (value >= 0.0 and math.isfinite(value)):
                raise InvalidInputError(f"{name} must be a finite number >= 0, got {value}")


@dataclass(frozen=True)
class TrainReport:
    steps: int
    epochs_done: int
    first_loss: float
    last_loss: float
    seconds: float
    weights: Path
    first_ker_loss: float = math.nan  # the KER term (unweighted); NaN when KER is off
    last_ker_loss: float = math.nan


class PairSource:
    """A split's images (preprocessed once, kept as uint8) and tokenised captions."""

    def __init__(
        self,
        dataset: CaptionDataset,
        preprocess: Any,
        tokenizer: Any,
        context_length: int,
        group_key: str | None = None,
    ) -> None:
        if not dataset.images or not dataset.captions:
            raise InvalidInputError(f"dataset {dataset.name} has no image-caption pairs to train on")
        # open_clip's eval transform is [resize, crop, to-RGB, ToTensor, Normalize]. Keep the pixels
        # as uint8 before Normalize (exact: ToTensor only divides by 255) so a whole split fits in RAM.
        *geometric, normalize = preprocess.transforms
        self.mean = torch.tensor(normalize.mean).view(1, 3, 1, 1)
        self.std = torch.tensor(normalize.std).view(1, 3, 1, 1)
        first = _to_uint8(geometric, decode_image(dataset.images[0].path))
        self.pixels = torch.empty((len(dataset.images), *first.shape), dtype=torch.uint8)
        for i, rec in enumerate(dataset.images):
            self.pixels[i] = first if i == 0 else _to_uint8(geometric, decode_image(rec.path))
        self.tokens = tokenizer(dataset.captions, context_length=context_length)
        owner = dataset.caption_image_array()
        counts = np.bincount(owner, minlength=len(dataset.images))
        self.captions_of = np.split(np.argsort(owner, kind="stable"), np.cumsum(counts)[:-1])
        self.usable = np.array([i for i, c in enumerate(self.captions_of) if len(c)], dtype=np.int64)
        self.groups = None if group_key is None else batch_groups(dataset, group_key)

    def __len__(self) -> int:
        return int(self.usable.size)

    def batches(
        self, batch_size: int, rng: np.random.Generator
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor, np.ndarray]]:
        """One epoch: each image once, with one of its captions drawn at random; full batches only.

        Yields (pixels, caption tokens, the batch's image indices)."""
        order = epoch_order(self.usable, self.groups, rng)
        for start in range(0, order.size - batch_size + 1, batch_size):
            images = order[start : start + batch_size]
            captions = [int(rng.choice(self.captions_of[i])) for i in images]
            pixels = (self.pixels[images].float() / 255 - self.mean) / self.std
            yield pixels, self.tokens[captions], images

    def same_group(self, images: np.ndarray) -> torch.Tensor:
        """``[B,B]`` bool: the batch's pairs of images in one group (the diagonal included)."""
        if self.groups is None:
            raise InvalidInputError("same_group needs batch groups")
        g = torch.from_numpy(self.groups[images])
        return g[:, None] == g[None, :]


def epoch_order(usable: np.ndarray, groups: np.ndarray | None, rng: np.random.Generator) -> np.ndarray:
    """The order in which an epoch visits the ``usable`` image indices.

    Without groups, a random permutation. With ``groups`` (one label per image of the dataset), the
    groups in a random order and each group's images, in a random order, one after the other: a group
    shares a batch unless it straddles a batch boundary.
    """
    if groups is None:
        return rng.permutation(usable)
    _, group = np.unique(groups[usable], return_inverse=True)
    rank = rng.permutation(int(group.max()) + 1)
    return usable[np.lexsort((rng.random(usable.size), rank[group]))]


def batch_groups(dataset: CaptionDataset, key: str) -> np.ndarray:
    """One integer per image: equal where the images' metadata agree at the dotted ``key``.

    An image without that key forms a group of its own, so a dataset without the key trains as with
    plain random batches. A key that no image has is an error (a typo would otherwise go unnoticed).
    """
    labels: dict[str, int] = {}
    out = np.empty(len(dataset.images), dtype=np.int64)
    found = 0
    for i, rec in enumerate(dataset.images):
        value: Any = rec.meta
        for part in key.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if value is None:
            out[i] = -1 - i  # a group of its own
            continue
        found += 1
        out[i] = labels.setdefault(repr(value), len(labels))
    if found == 0:
        raise InvalidInputError(f"no image of {dataset.name} has the metadata key {key!r} to group by")
    return out


def _to_uint8(transforms: list[Any], image: Any) -> torch.Tensor:
    for t in transforms:
        image = t(image)
    pixels: torch.Tensor = (image * 255).round().to(torch.uint8)
    return pixels


def train(config: TrainConfig, dataset: CaptionDataset, out_dir: Path, resume: bool = True) -> TrainReport:
    """Train on ``dataset`` (its train split already selected) and export ``out_dir/weights.safetensors``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    device = resolve_device(config.device)
    torch.manual_seed(config.seed)
    model = build_model(config.arch, config.init_checkpoint, seed=config.seed).to(device).train()
    tokenizer = open_clip.get_tokenizer(config.arch)
    specials = special_ids(tokenizer)
    truncate = towers.truncatable(model)
    visual: Any = model.visual
    preprocess = open_clip.image_transform(
        visual.image_size,
        is_train=False,
        mean=visual.preprocess_cfg.get("mean"),
        std=visual.preprocess_cfg.get("std"),
    )
    context = int(getattr(model, "context_length", 77))
    source = PairSource(dataset, preprocess, tokenizer, context, config.group_key)
    steps_per_epoch = len(source) // config.batch_size
    if steps_per_epoch == 0:
        raise InvalidInputError(
            f"{len(source)} training images is fewer than one batch of {config.batch_size}"
        )
    total_steps = config.epochs * steps_per_epoch
    # max_steps stops the run early without changing the schedule, so a stopped run resumes exactly.
    stop_at = min(total_steps, config.max_steps or total_steps)

    ker = (
        KERObjective(tokenizer, _embed_dim(model), config.seed).to(device) if config.ker_weight > 0 else None
    )
    params = list(model.parameters()) + (list(ker.decoder.parameters()) if ker is not None else [])
    groups = _param_groups(model, config.weight_decay)
    if ker is not None:  # extra groups after the model's: a KER-off run's optimiser state is unchanged
        groups += _param_groups(ker.decoder, config.weight_decay)
    optimizer = torch.optim.AdamW(groups, lr=config.lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, _warmup_cosine(config.warmup_steps, total_steps))
    eba = EBAFilter() if config.eba else None
    state: dict[str, Any] = {"step": 0, "epoch": 0, "first_loss": math.nan, "last_loss": math.nan}
    state.update(first_ker_loss=math.nan, last_ker_loss=math.nan)
    rng = np.random.default_rng(config.seed)
    last = out_dir / "last.pt"
    if resume and last.exists():
        saved = torch.load(last, map_location="cpu", weights_only=False)
        if (saved.get("ker") is None) != (ker is None):
            raise InvalidInputError(
                f"{last} was written with KER {'off' if ker is not None else 'on'}; resume with the same "
                "ker_weight setting (on or off), or start a fresh run folder"
            )
        model.load_state_dict(saved["model"])
        if ker is not None:
            ker.load_state_dict(saved["ker"])
        optimizer.load_state_dict(saved["optimizer"])
        schedule.load_state_dict(saved["schedule"])
        state = {"first_ker_loss": math.nan, "last_ker_loss": math.nan, **saved["state"]}
        rng = saved["rng"]
        torch.set_rng_state(saved["torch_rng"])
        if eba is not None and saved.get("eba") is not None:
            eba.load_state_dict(saved["eba"])
        log.info("resumed", step=state["step"], epoch=state["epoch"])

    def checkpoint() -> None:
        payload = {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "schedule": schedule.state_dict(),
            "state": state,
            "rng": rng,
            "torch_rng": torch.get_rng_state(),
            "eba": eba.state_dict() if eba is not None else None,
            "ker": ker.state_dict() if ker is not None else None,
            "config": asdict(config),
        }
        tmp = last.with_suffix(".tmp")
        torch.save(payload, tmp)
        tmp.replace(last)  # atomic: a kill mid-save leaves the previous checkpoint intact

    autocast = precision_autocast(device, config.precision)
    t0 = time.perf_counter()
    with _progress() as progress:
        task = progress.add_task("train", total=stop_at, completed=state["step"], loss="")
        while state["step"] < stop_at and state["epoch"] < config.epochs:
            epoch_rng = np.random.default_rng([config.seed, int(state["epoch"])])
            skip = state["step"] - state["epoch"] * steps_per_epoch  # resume mid-epoch: same batches
            for i, (pixels, ids, images) in enumerate(source.batches(config.batch_size, epoch_rng)):
                if i < skip:
                    continue
                if state["step"] >= stop_at:
                    break
                pixels, ids = pixels.to(device), ids.to(device)
                v, p, t, w, m = batch_features(model, pixels, ids, specials, truncate, autocast)
                anchors = None
                if eba is not None:
                    anchors = eba.anchors((t * v).sum(-1).detach(), state["epoch"] >= config.eba_start_epoch)
                fine_w, intra_w = config.fine_weight, config.intra_weight
                only = source.same_group(images).to(device) if config.group_negatives == "fine" else None
                parts = ftf_loss(
                    v, p, t, w, m, config.temperature, config.tau, anchors, fine_w, intra_w, only
                )
                total = parts.total
                extra: dict[str, float] = {}
                if ker is not None:
                    with autocast:
                        ker_term = ker.loss(model, ids, p, specials, truncate, int(state["step"])).float()
                    total = total + config.ker_weight * ker_term
                    extra["ker"] = float(ker_term.detach())
                    extra["loss"] = float(total.detach())
                    state["first_ker_loss"] = _first(state["first_ker_loss"], extra["ker"])
                    state["last_ker_loss"] = extra["ker"]
                optimizer.zero_grad(set_to_none=True)
                total.backward()  # type: ignore[no-untyped-call]
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                optimizer.step()
                schedule.step()
                loss = float(total.detach())
                state["first_loss"] = _first(state["first_loss"], loss)
                state["last_loss"] = loss
                state["step"] += 1
                shown = f"loss {loss:.3f}" + (f" ker {extra['ker']:.3f}" if "ker" in extra else "")
                progress.update(task, advance=1, loss=shown)
                if state["step"] % config.log_every == 0:  # the bar is invisible when stdout is a file
                    log.info(
                        "step",
                        step=state["step"],
                        lr=schedule.get_last_lr()[0],
                        **{**parts.as_floats(), **extra},
                    )
                if state["step"] % config.save_every == 0:
                    checkpoint()
            else:
                state["epoch"] += 1
            checkpoint()
            ker_log = {"ker": state["last_ker_loss"]} if ker is not None else {}
            log.info("epoch", epoch=state["epoch"], step=state["step"], loss=state["last_loss"], **ker_log)
    weights = export_weights(model, out_dir / "weights.safetensors")
    return TrainReport(
        steps=int(state["step"]),
        epochs_done=int(state["epoch"]),
        first_loss=float(state["first_loss"]),
        last_loss=float(state["last_loss"]),
        seconds=time.perf_counter() - t0,
        weights=weights,
        first_ker_loss=float(state["first_ker_loss"]),
        last_ker_loss=float(state["last_ker_loss"]),
    )


def precision_autocast(device: torch.device, precision: str) -> torch.autocast:
    """The autocast context of ``precision`` (see :attr:`TrainConfig.precision`); disabled for fp32."""
    dtype = PRECISIONS[precision]
    return torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None)


def batch_features(
    model: torch.nn.Module,
    pixels: torch.Tensor,
    ids: torch.Tensor,
    specials: Any,
    truncate: bool,
    autocast: torch.autocast,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One training batch through both towers: (v, patches, t, words, word mask), float32 for the loss.

    Only the towers run under ``autocast``: the loss's logits are cosines over tau 0.05, where
    bfloat16's 8-bit mantissa would be an error of ~0.1 in every logit.
    """
    with autocast:
        v, p = towers.image_features(model, pixels)
        t, w, m = towers.text_features(model, ids, specials, truncate)
    return v.float(), p.float(), t.float(), w.float(), m


def _param_groups(module: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: matrices decay; biases, norms and embeddings do not."""
    named = list(module.named_parameters())
    decay = [p for n, p in named if p.ndim >= 2 and "embedding" not in n]
    no_decay = [p for n, p in named if not (p.ndim >= 2 and "embedding" not in n)]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _embed_dim(model: torch.nn.Module) -> int:
    visual: Any = model.visual
    return int(visual.proj.shape[1]) if visual.proj is not None else int(visual.output_dim)


def _first(current: float, value: float) -> float:
    return value if math.isnan(current) else current


def export_weights(model: torch.nn.Module, path: Path, dtype: torch.dtype = torch.float16) -> Path:
    """Write an open_clip state dict as safetensors (fp16 halves the size; loading casts back)."""
    tensors = {
        k: v.detach().to("cpu", dtype if v.is_floating_point() else v.dtype).contiguous()
        for k, v in model.state_dict().items()
    }
    tmp = path.with_suffix(".tmp")
    save_file(tensors, str(tmp), metadata={"format": "open_clip"})
    tmp.replace(path)
    return path


def _warmup_cosine(warmup: int, total: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return factor


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TextColumn("{task.fields[loss]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
