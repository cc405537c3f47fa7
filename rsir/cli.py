"""`rsir` subcommands. Each one parses options into the library's small typed configs and calls it."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import structlog
import typer
from rich.console import Console
from rich.table import Table

from model.errors import RsirError

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Remote-sensing image-text retrieval.")
_err = Console(stderr=True)


@app.callback()
def _root() -> None:
    """Remote-sensing image-text retrieval: evaluate, build indexes, serve."""
    # Logs go to stderr so that stdout carries only results (e.g. `rsir eval --json | jq`); the
    # stream is looked up per logger, not captured once, so a replaced sys.stderr is honoured.
    structlog.configure(logger_factory=lambda *_: structlog.PrintLogger(file=sys.stderr))


ModelOpt = Annotated[str, typer.Option("--model", help="open_clip architecture name (or rsir's own)")]
CheckpointOpt = Annotated[
    Path | None,
    typer.Option(
        "--checkpoint",
        help="local .pt/.bin/.safetensors or OpenAI TorchScript file; default: the shipped weights "
        "for rsir-vit-tiny, random weights (with a warning) for other architectures",
    ),
]
DeviceOpt = Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:1...")]


@app.command("eval")
def eval_cmd(
    dataset: Annotated[
        Path, typer.Option(help="dataset.json (Karpathy), a folder holding one, or *_caps.txt")
    ],
    images: Annotated[
        Path | None, typer.Option(help="image folder (default: beside the dataset file)")
    ] = None,
    split: Annotated[str, typer.Option(help="split to evaluate, or 'all'")] = "test",
    model: ModelOpt = "rsir-vit-tiny",
    checkpoint: CheckpointOpt = None,
    rerank: Annotated[str, typer.Option(help="none | ftf | exhaustive")] = "ftf",
    recall_k: Annotated[int, typer.Option(help="K candidates kept by recall for the ftf rerank")] = 100,
    tau: Annotated[float, typer.Option(help="FTF softmax temperature")] = 0.05,
    lam: Annotated[float, typer.Option(help="weight of the coarse score in the fused score")] = 0.5,
    device: DeviceOpt = "auto",
    batch_size: Annotated[int, typer.Option(help="images/texts per encoder forward pass")] = 64,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object instead of a table")] = False,
) -> None:
    """Recall@1/5/10 both ways and mR of a caption dataset, searched through the engine."""
    from model.datasets import load_dataset
    from model.encoders import ClipEncoder, EncoderConfig, default_checkpoint
    from model.ftf import FTFParams
    from search.engine import RERANK_MODES, EngineConfig, SearchEngine
    from search.evaluate import embed_dataset, evaluate

    if rerank not in RERANK_MODES:
        raise typer.BadParameter(f"must be one of {', '.join(RERANK_MODES)}", param_hint="--rerank")
    ds = load_dataset(dataset, images, None if split == "all" else split)
    weights = checkpoint or default_checkpoint(model)
    encoder = ClipEncoder(EncoderConfig(arch=model, checkpoint=weights, device=device, batch_size=batch_size))
    gallery = embed_dataset(encoder, ds)
    config = EngineConfig(ftf=FTFParams(tau=tau, lam=lam), device=device, max_recall_k=max(1000, recall_k))
    engine = SearchEngine(gallery, encoder, config)
    result = evaluate(engine, rerank, recall_k, dataset_name=f"{ds.name}:{split}")  # type: ignore[arg-type]
    if as_json:
        typer.echo(json.dumps(result.as_dict()))
        return
    table = Table(title=f"{ds.name} ({split}): {result.n_images} images, {result.n_captions} captions")
    for col in ("mode", "K", "t2i R@1", "R@5", "R@10", "i2t R@1", "R@5", "R@10", "mR", "ms/query"):
        table.add_column(col, justify="right")
    r = result.report
    table.add_row(
        rerank,
        str(result.recall_k or "-"),
        *(f"{v:.2f}" for v in (r.t2i_r1, r.t2i_r5, r.t2i_r10, r.i2t_r1, r.i2t_r5, r.i2t_r10, r.mR)),
        f"{result.ms_per_query:.2f}",
    )
    Console().print(table)


@app.command("synth")
def synth_cmd(
    n: Annotated[int, typer.Option(help="number of images")],
    out: Annotated[Path, typer.Option(help="output folder: images/ and dataset.json")],
    seed: Annotated[int, typer.Option(help="same seed, same bytes")] = 0,
    size: Annotated[int, typer.Option(help="image side in pixels")] = 224,
    workers: Annotated[int, typer.Option(help="processes; the output does not depend on it")] = 1,
) -> None:
    """Generate SynthRS: aerial-looking scenes with five true RSICD-style captions each."""
    from model.synth import SynthConfig, write_dataset

    report = write_dataset(SynthConfig(n=n, seed=seed, size=size, workers=workers), out)
    Console().print(
        f"wrote {report.n_images} images to {report.out} in {report.seconds:.1f} s "
        f"({report.images_per_second:.0f} images/s)"
    )


@app.command("train")
def train_cmd(
    data: Annotated[
        Path, typer.Option(help="dataset.json (Karpathy) or a folder holding one, e.g. from rsir synth")
    ],
    out: Annotated[Path, typer.Option(help="run folder: last.pt (resumable) and weights.safetensors")],
    arch: Annotated[str, typer.Option(help="open_clip architecture or rsir's own")] = "rsir-vit-tiny",
    init_checkpoint: CheckpointOpt = None,
    split: Annotated[str, typer.Option(help="split to train on")] = "train",
    epochs: int = 6,
    batch_size: int = 64,
    lr: float = 5e-4,
    warmup_steps: int = 100,
    max_steps: Annotated[int | None, typer.Option(help="stop after this many steps")] = None,
    eba: Annotated[bool, typer.Option(help="EBA: drop the least similar positives as anchors (§4)")] = False,
    seed: int = 0,
    device: DeviceOpt = "auto",
    resume: Annotated[bool, typer.Option(help="continue from OUT/last.pt when present")] = True,
) -> None:
    """Train with the FTF loss (L_inter + L_intra); export fp16 open_clip weights as safetensors."""
    from model.datasets import load_dataset
    from model.train import TrainConfig, train

    config = TrainConfig(
        arch=arch,
        init_checkpoint=init_checkpoint,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        warmup_steps=warmup_steps,
        max_steps=max_steps,
        eba=eba,
        seed=seed,
        device=device,
    )
    report = train(config, load_dataset(data, split=split), out, resume=resume)
    Console().print(
        f"trained {report.steps} steps ({report.epochs_done} epochs) in {report.seconds:.0f} s; "
        f"loss {report.first_loss:.3f} -> {report.last_loss:.3f}; weights: {report.weights}"
    )


def main() -> None:
    try:
        app()
    except RsirError as exc:
        _err.print(f"[bold red]error:[/] {exc}")
        sys.exit(2)
