"""`rsir` subcommands. Each one parses options into the library's small typed configs and calls it."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import numpy as np
import structlog
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from rsir.model.errors import RsirError
from rsir.model.metrics import Captionless
from rsir.model.precision import Precision
from rsir.search.options import HashPpsr, Recall, Rerank, Sar

if TYPE_CHECKING:
    from rsir.index_builder.build import BuildReport
    from rsir.index_builder.chips import ChipConfig
    from rsir.index_builder.config import BuildConfig
    from rsir.model.encoders import ClipEncoder

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
DTYPE_HELP = (
    "rerank token dtype: auto = float16 on CUDA, float32 on the CPU; softmaxes, norms and means "
    "run in float32 whichever is chosen"
)


@app.command("eval")
def eval_cmd(
    dataset: Annotated[
        Path | None, typer.Option(help="dataset.json (Karpathy), a folder holding one, or *_caps.txt")
    ] = None,
    index: Annotated[
        Path | None,
        typer.Option(help="evaluate a built index (root or version) instead: its captions are the queries"),
    ] = None,
    images: Annotated[
        Path | None, typer.Option(help="image folder (default: beside the dataset file)")
    ] = None,
    split: Annotated[str, typer.Option(help="split to evaluate, or 'all'")] = "test",
    model: ModelOpt = "rsir-vit-tiny",
    checkpoint: CheckpointOpt = None,
    rerank: Annotated[Rerank, typer.Option(help="the rerank (see README, Methods)")] = "ftf",
    recall: Annotated[Recall, typer.Option(help="the recall method")] = "dense",
    ppsr: Annotated[bool, typer.Option("--ppsr/--no-ppsr", help="PPSR (CSLS) correction of recall")] = False,
    sar: Annotated[Sar, typer.Option(help="SAR: sort after reversed retrieval")] = "off",
    hash_ppsr: Annotated[
        HashPpsr, typer.Option(help="PPSR over hash recall: hamming (the spec) or cosine (README, Methods)")
    ] = "hamming",
    captionless: Annotated[
        Captionless,
        typer.Option(help="an image with no caption: an i2t miss (the seeds' convention) or skipped"),
    ] = "miss",
    hash_heads: Annotated[
        Path | None, typer.Option(help="CFITR hash heads (default: the shipped ones for the shipped model)")
    ] = None,
    recall_k: Annotated[int, typer.Option(help="K candidates kept by recall for the ftf rerank")] = 100,
    tau: Annotated[float, typer.Option(help="FTF softmax temperature")] = 0.05,
    lam: Annotated[float, typer.Option(help="weight of the coarse score in the fused score")] = 0.5,
    device: DeviceOpt = "auto",
    dtype: Annotated[Precision, typer.Option(help=DTYPE_HELP)] = Precision.AUTO,
    batch_size: Annotated[int, typer.Option(help="images/texts per encoder forward pass")] = 64,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object instead of a table")] = False,
    tie_orders: Annotated[
        int,
        typer.Option(
            min=0,
            help="also evaluate with the captions stored in N seeded random orders and report the mean "
            "and sd: identical caption strings tie, and the tie-break follows storage order (--dataset only)",
        ),
    ] = 0,
) -> None:
    """Recall@1/5/10 both ways and mR of a caption dataset, searched through the engine."""
    from rsir.index.extras import build_extras
    from rsir.index.gallery import Gallery
    from rsir.index.versions import load_index
    from rsir.model.datasets import load_dataset
    from rsir.model.encoders import default_hash_heads
    from rsir.model.ftf import FTFParams
    from rsir.model.hashing import HashHeads
    from rsir.search.engine import EngineConfig, SearchEngine
    from rsir.search.evaluate import (
        MethodOptions,
        OrderSpread,
        embed_dataset,
        evaluate,
        evaluate_caption_orders,
    )

    if (dataset is None) == (index is None):
        raise typer.BadParameter("give exactly one of --dataset and --index", param_hint="--dataset")
    if tie_orders and index is not None:
        raise typer.BadParameter(
            "reorders the captions of an embedded --dataset; not with --index", param_hint="--tie-orders"
        )
    encoder = _encoder(model, checkpoint, device, batch_size)
    config = EngineConfig(
        ftf=FTFParams(tau=tau, lam=lam),
        device=device,
        dtype=dtype,
        max_recall_k=max(1000, recall_k),
        hash_ppsr=hash_ppsr,
    )
    if index is not None:
        loaded = load_index(index, encoder.describe())
        engine = SearchEngine.from_index(loaded, encoder, config)
        name = f"{loaded.folder}"
    elif dataset is not None:
        ds = load_dataset(dataset, images, None if split == "all" else split)
        gallery = embed_dataset(encoder, ds)
        heads_file = hash_heads or default_hash_heads(model, encoder.config.checkpoint)
        heads = HashHeads.load(heads_file) if heads_file else None

        def make_engine(g: Gallery) -> SearchEngine:
            extras = build_extras(g, heads, sgpd=recall == "sgpd")
            return SearchEngine(g, encoder, config, extras=extras, hash_heads=heads)

        engine = make_engine(gallery)
        name = f"{ds.name}:{split}"
    method = MethodOptions(recall, ppsr, sar)
    result = evaluate(engine, rerank, recall_k, dataset_name=name, method=method, captionless=captionless)
    spread: OrderSpread | None = None
    if tie_orders:
        spread = evaluate_caption_orders(engine.gallery, make_engine, rerank, tie_orders, recall_k, method)
    if as_json:
        typer.echo(json.dumps(result.as_dict() | ({"caption_orders": spread.as_dict()} if spread else {})))
        return
    table = Table(title=f"{name}: {result.n_images} images, {result.n_captions} captions")
    for col in ("mode", "K", "t2i R@1", "R@5", "R@10", "i2t R@1", "R@5", "R@10", "mR", "ms/query"):
        table.add_column(col, justify="right")
    r = result.report
    table.add_row(
        rerank,
        str(result.recall_k or "-"),
        *(f"{v:.2f}" for v in (r.t2i_r1, r.t2i_r5, r.t2i_r10, r.i2t_r1, r.i2t_r5, r.i2t_r10, r.mR)),
        f"{result.ms_per_query:.2f}",
    )
    if spread is not None:
        keys = ("t2i_r1", "t2i_r5", "t2i_r10", "i2t_r1", "i2t_r5", "i2t_r10", "mR")
        for label, values in ((f"mean, {spread.n_orders} orders", spread.mean), ("sd", spread.sd)):
            table.add_row(label, "", *(f"{values[k]:.2f}" for k in keys), "")
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
    from rsir.synthrs import SynthConfig, write_dataset

    report = write_dataset(SynthConfig(n=n, seed=seed, size=size, workers=workers), out)
    Console().print(
        f"wrote {report.n_images} images to {report.out} in {report.seconds:.1f} s "
        f"({report.images_per_second:.0f} images/s)"
    )


@app.command("train-hash")
def train_hash_cmd(
    data: Annotated[Path, typer.Option(help="dataset.json (Karpathy) or a folder holding one")],
    out: Annotated[Path, typer.Option(help="where to write the heads (.safetensors)")],
    split: Annotated[str, typer.Option(help="split to train on")] = "train",
    model: ModelOpt = "rsir-vit-tiny",
    checkpoint: CheckpointOpt = None,
    bits: Annotated[int, typer.Option(help="code length (a multiple of 8)")] = 128,
    epochs: Annotated[int, typer.Option()] = 20,
    batch_size: Annotated[int, typer.Option(help="(caption, image) pairs per step")] = 256,
    lr: Annotated[float, typer.Option()] = 1e-3,
    seed: Annotated[int, typer.Option()] = 0,
    device: DeviceOpt = "auto",
) -> None:
    """Train CFITR hash heads (ALGORITHMS.md §3) on a model's frozen global vectors of a dataset."""
    import time

    from rsir.model.datasets import load_dataset
    from rsir.model.hashing import train_hash_heads
    from rsir.search.evaluate import embed_dataset

    encoder = _encoder(model, checkpoint, device, 64)
    ds = load_dataset(data, None, None if split == "all" else split)
    t0 = time.perf_counter()
    gallery = embed_dataset(encoder, ds)
    embed_s = time.perf_counter() - t0
    captions = gallery.captions
    if captions is None:
        raise typer.BadParameter("the dataset has no captions", param_hint="--data")
    t0 = time.perf_counter()
    heads, losses = train_hash_heads(
        np.asarray(gallery.vectors, np.float32),
        np.asarray(captions.vectors, np.float32),
        captions.image_index,
        bits=bits,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        device=encoder.device,
    )
    heads.save(out)
    Console().print(
        f"hash heads ({bits} bits) -> {out}: {len(gallery)} images, {len(captions.texts)} captions embedded "
        f"in {embed_s:.1f} s; {epochs} epochs in {time.perf_counter() - t0:.1f} s, "
        f"loss {losses[0]:.4f} -> {losses[-1]:.4f}"
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
    ker_weight: Annotated[
        float, typer.Option(help="KER (§4): weight of the masked-keyword loss; 0 = off, the spec uses 0.5")
    ] = 0.0,
    fine_weight: Annotated[
        float, typer.Option(help="weight of InfoNCE(s_f) in the loss (the spec: 1)")
    ] = 1.0,
    intra_weight: Annotated[
        float, typer.Option(help="weight of the two L_intra terms in the loss (the spec: 1)")
    ] = 1.0,
    batch_groups: Annotated[
        str | None,
        typer.Option(
            help="metadata key whose equal values share a batch (hard negatives), e.g. scene.family "
            "for SynthRS twins; default: random batches"
        ),
    ] = None,
    group_negatives: Annotated[
        str,
        typer.Option(
            help="with --batch-groups: all = same-group pairs are negatives of every loss term; "
            "fine = of InfoNCE(s_f) only (the coarse and L_intra terms leave them out)"
        ),
    ] = "all",
    seed: int = 0,
    device: DeviceOpt = "auto",
    precision: Annotated[
        str,
        typer.Option(
            help="fp32 | bf16: the towers under bfloat16 autocast (fast on GPUs and AMX/AVX512-BF16 "
            "CPUs; the loss and the weights stay float32)"
        ),
    ] = "fp32",
    resume: Annotated[bool, typer.Option(help="continue from OUT/last.pt when present")] = True,
) -> None:
    """Train with the FTF loss (L_inter + L_intra); export fp16 open_clip weights as safetensors."""
    from rsir.model.datasets import load_dataset
    from rsir.model.train import TrainConfig, train

    config = TrainConfig(
        arch=arch,
        init_checkpoint=init_checkpoint,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        warmup_steps=warmup_steps,
        max_steps=max_steps,
        eba=eba,
        ker_weight=ker_weight,
        fine_weight=fine_weight,
        intra_weight=intra_weight,
        group_key=batch_groups,
        group_negatives=group_negatives,
        seed=seed,
        device=device,
        precision=precision,
    )
    report = train(config, load_dataset(data, split=split), out, resume=resume)
    Console().print(
        f"trained {report.steps} steps ({report.epochs_done} epochs) in {report.seconds:.0f} s; "
        f"loss {report.first_loss:.3f} -> {report.last_loss:.3f}; weights: {report.weights}"
    )


ArchiveOpt = Annotated[
    Path,
    typer.Option(
        "--archive",
        help="a folder of images, a folder of webdataset .tar shards (or one .tar), "
        "a Karpathy-style caption .json (or a folder holding dataset.json), "
        "or a STAC catalog/collection/ItemCollection .json (its scenes are cut into chips)",
    ),
]
ChipSizeOpt = Annotated[
    int | None,
    typer.Option(
        help="cut georeferenced GeoTIFF/COG scenes into chips of this many pixels (default: "
        "no chipping, every file is one image; a STAC catalog is always chipped, at 224)"
    ),
]
OverlapOpt = Annotated[float, typer.Option(help="fraction of a chip shared with its neighbour (0 <= x < 1)")]
GsdOpt = Annotated[float | None, typer.Option(help="resample chips to this ground resolution (metres/pixel)")]
BandsOpt = Annotated[
    str,
    typer.Option(
        help="R,G,B bands of scenes: a preset (rgb, naip, sentinel2-l2a, landsat-c2-l2) or "
        "three 1-based indexes or band names, e.g. 4,3,2 or B04,B03,B02"
    ),
]
MaxNodataOpt = Annotated[float, typer.Option(help="leave out chips with more nodata than this fraction")]
MetadataOpt = Annotated[
    Path | None, typer.Option(help="CSV or JSONL: id, lon_min, lat_min, lon_max, lat_max, time, sensor, tags")
]
SplitOpt = Annotated[str | None, typer.Option(help="only this split of a caption JSON")]
BatchOpt = Annotated[int, typer.Option(help="images per encoder forward pass")]
ShardOpt = Annotated[int, typer.Option(help="images per committed (resumable) shard")]
WorkersOpt = Annotated[int, typer.Option(help="image decoding processes")]
EngineOpt = Annotated[str, typer.Option(help="local | ray (Ray Data actor pool)")]
RayActorsOpt = Annotated[int, typer.Option(help="model copies on Ray (e.g. one per GPU worker)")]
ProgressEveryOpt = Annotated[
    float, typer.Option(help="seconds between JSON progress lines on stderr when it is not a terminal")
]
# Exit status of build-index / index add when the index was built but some files were left out.
EXIT_SKIPPED = 3


def _build_options(
    shard_size: int,
    batch_size: int,
    workers: int,
    token_codec: str,
    factory: str,
    split: str | None,
    engine: str,
    ray_actors: int,
    progress_every: float = 30.0,
    chips: ChipConfig | None = None,
    bands: str = "rgb",
) -> BuildConfig:
    from rsir.index_builder.config import BuildConfig

    return BuildConfig(
        chips=chips,
        bands=bands,
        shard_size=shard_size,
        batch_size=batch_size,
        workers=workers,
        token_codec=token_codec,  # type: ignore[arg-type]
        factory=factory,
        split=split,
        engine=engine,  # type: ignore[arg-type]
        ray_actors=ray_actors,
        progress=sys.stderr.isatty(),
        # No terminal (a Job, a RayJob): structured progress lines instead of the bar.
        progress_log_s=progress_every,
    )


def _chip_config(
    chip_size: int | None, overlap: float, gsd: float | None, max_nodata: float
) -> ChipConfig | None:
    """Chipping when any chip option is given (``--chip-size`` alone, or with its defaults)."""
    from rsir.index_builder.chips import ChipConfig

    if chip_size is None and overlap == 0 and gsd is None and max_nodata == 0.5:
        return None
    return ChipConfig(chip_size or 224, overlap, gsd, max_nodata)


def _report_build(report: BuildReport) -> None:
    console = Console()
    console.print(
        f"published {report.version} ({report.n_images} images, {report.n_captions} captions); "
        f"embedded {report.n_embedded} images in {report.embed_seconds:.1f} s "
        f"({report.images_per_second:.1f} img/s), {report.shards_reused} shards reused from an earlier run",
        soft_wrap=True,
    )
    if report.extra.get("chips"):
        console.print(
            f"{report.extra['chips']} chips listed, {report.extra['chips_nodata']} left out as mostly nodata"
        )
    for row in report.extra.get("scenes_missing", [])[:10]:
        _err.print(f"  {row['id']}: indexed without {row['missing']}")
    if report.skipped:
        from rsir.index.versions import SKIPPED

        where = report.version / SKIPPED
        _err.print(f"[bold yellow]{len(report.skipped)} files skipped[/]; reasons in {where}")
        for row in report.skipped[:10]:
            _err.print(f"  {row['id']}: {row['reason']}")
        raise typer.Exit(EXIT_SKIPPED)


@app.command("build-index")
def build_index_cmd(
    archive: ArchiveOpt,
    out: Annotated[Path, typer.Option(help="index root: versions v0001... and a CURRENT pointer")],
    metadata: MetadataOpt = None,
    model: ModelOpt = "rsir-vit-tiny",
    checkpoint: CheckpointOpt = None,
    device: DeviceOpt = "auto",
    split: SplitOpt = None,
    batch_size: BatchOpt = 64,
    shard_size: ShardOpt = 1024,
    workers: WorkersOpt = 2,
    token_codec: Annotated[str, typer.Option(help="fp16 | int8 (per-vector scales)")] = "fp16",
    factory: Annotated[
        str, typer.Option(help="FAISS factory string, or auto (Flat < 100k, IVF above)")
    ] = "auto",
    engine: EngineOpt = "local",
    ray_actors: RayActorsOpt = 2,
    progress_every: ProgressEveryOpt = 30.0,
    chip_size: ChipSizeOpt = None,
    overlap: OverlapOpt = 0.0,
    gsd: GsdOpt = None,
    bands: BandsOpt = "rgb",
    max_nodata: MaxNodataOpt = 0.5,
) -> None:
    """Embed an image archive into a new index root (resumable: run it again after a kill).

    Exit status: 0 when every file was indexed, 3 when the index was built but some files were
    skipped (listed with reasons in the version's skipped.json), 2 on an error.
    """
    from rsir.index_builder.build import build

    encoder = _encoder(model, checkpoint, device, batch_size)
    config = _build_options(
        shard_size,
        batch_size,
        workers,
        token_codec,
        factory,
        split,
        engine,
        ray_actors,
        progress_every,
        _chip_config(chip_size, overlap, gsd, max_nodata),
        bands,
    )
    _report_build(build(archive, out, encoder, config, metadata))


index_app = typer.Typer(
    no_args_is_help=True, help="Update an index: add images, delete ids, switch versions."
)
app.add_typer(index_app, name="index")


@index_app.command("add")
def index_add_cmd(
    archive: ArchiveOpt,
    index: Annotated[Path, typer.Option(help="index root")],
    metadata: MetadataOpt = None,
    model: ModelOpt = "rsir-vit-tiny",
    checkpoint: CheckpointOpt = None,
    device: DeviceOpt = "auto",
    split: SplitOpt = None,
    batch_size: BatchOpt = 64,
    shard_size: ShardOpt = 1024,
    workers: WorkersOpt = 2,
    engine: EngineOpt = "local",
    ray_actors: RayActorsOpt = 2,
    progress_every: ProgressEveryOpt = 30.0,
    chip_size: ChipSizeOpt = None,
    overlap: OverlapOpt = 0.0,
    gsd: GsdOpt = None,
    bands: BandsOpt = "rgb",
    max_nodata: MaxNodataOpt = 0.5,
) -> None:
    """Publish a new version holding the current one plus the archive's images it lacks (by id).

    Scenes are cut as the current version's were unless chip options are given."""
    from rsir.index.versions import Manifest, resolve_version
    from rsir.index_builder.build import add
    from rsir.index_builder.chips import ChipConfig

    encoder = _encoder(model, checkpoint, device, batch_size)
    current = Manifest.read(resolve_version(index))
    codec = current.token_codec
    chips = _chip_config(chip_size, overlap, gsd, max_nodata)
    built = current.extra.get("build_config") or {}
    if chips is None and isinstance(built.get("chips"), dict):
        chips = ChipConfig(**built["chips"])
        bands = str(built.get("bands", bands))
    config = _build_options(
        shard_size,
        batch_size,
        workers,
        codec,
        "auto",
        split,
        engine,
        ray_actors,
        progress_every,
        chips,
        bands,
    )
    _report_build(add(archive, index, encoder, config, metadata))


@index_app.command("delete")
def index_delete_cmd(
    index: Annotated[Path, typer.Option(help="index root")],
    ids: Annotated[list[str] | None, typer.Argument(help="image ids to delete")] = None,
    ids_file: Annotated[Path | None, typer.Option(help="a file with one id per line")] = None,
) -> None:
    """Publish a new version in which these image ids are tombstoned (never returned by search)."""
    from rsir.index_builder.build import delete

    wanted = list(ids or [])
    if ids_file is not None:
        wanted += [line.strip() for line in ids_file.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not wanted:
        raise typer.BadParameter("give ids as arguments or with --ids-file", param_hint="IDS")
    Console().print(f"published {delete(index, wanted)} with {len(set(wanted))} more ids deleted")


@index_app.command("list")
def index_list_cmd(index: Annotated[Path, typer.Option(help="index root")]) -> None:
    """The versions of an index root; the served one is marked."""
    from rsir.index.versions import Manifest, list_versions, read_tombstones, resolve_version

    current = resolve_version(index).name
    table = Table()
    for col in ("version", "images", "captions", "deleted", "codec", "model", "source"):
        table.add_column(col)
    for name in list_versions(index):
        m = Manifest.read(index / name)
        table.add_row(
            f"{name} *" if name == current else name,
            str(m.n_images),
            str(m.n_captions),
            str(len(read_tombstones(index / name))),
            m.token_codec,
            str(m.encoder.get("arch")),
            m.source,
        )
    Console().print(table)


@index_app.command("use")
def index_use_cmd(
    index: Annotated[Path, typer.Option(help="index root")],
    version: Annotated[str, typer.Argument(help="version to serve, e.g. v0002 (a rollback is the same)")],
) -> None:
    """Point CURRENT at another complete version, after checking its files against its manifest (a
    broken version is refused with exit 2, and CURRENT is left as it was)."""
    from rsir.index.versions import MANIFEST, switch_current, validate_version

    if not (index / version / MANIFEST).is_file():
        switch_current(index, version)  # raises, listing the versions there are
    validate_version(index / version)
    switch_current(index, version)
    Console().print(f"{index}: serving {version}")


@app.command("serve")
def serve_cmd(
    index: Annotated[Path | None, typer.Option(help="index root or version (default: RSIR_INDEX)")] = None,
    host: Annotated[str | None, typer.Option(help="bind address (default: RSIR_HOST, 127.0.0.1)")] = None,
    port: Annotated[int | None, typer.Option(help="port (default: RSIR_PORT, 8000)")] = None,
    redis_url: Annotated[
        str | None, typer.Option(help="redis://host:port/db for the shared cache (default: in-process LRU)")
    ] = None,
    dtype: Annotated[Precision | None, typer.Option(help=f"{DTYPE_HELP} (default: RSIR_DTYPE, auto)")] = None,
) -> None:
    """Serve an index over HTTP. Every setting also reads RSIR_* environment variables."""
    import uvicorn
    from pydantic import ValidationError

    from rsir.index.versions import load_index
    from rsir.service.app import create_app, engine_config, load_encoder
    from rsir.service.logs import configure_logging
    from rsir.service.server import uvicorn_config
    from rsir.service.serving_index import ServingIndex
    from rsir.service.settings import Settings

    given = {"index": index, "host": host, "port": port, "redis_url": redis_url, "dtype": dtype}
    try:
        settings = Settings(**{k: v for k, v in given.items() if v is not None})  # type: ignore[arg-type]
    except ValidationError as exc:
        for e in exc.errors():
            name = "RSIR_" + "_".join(str(part) for part in e["loc"]).upper()
            _err.print(f"[bold red]error:[/] {name}={e.get('input')!r}: {e['msg']}", soft_wrap=True)
        raise typer.Exit(2) from None
    # Opened here, before the server starts, so that a damaged file, then an index built with another
    # model, ends in one line and exit 2 (main), not in a traceback from the app's start-up; every
    # file is checked and read once (the FAISS indexes as they load).
    loaded = load_index(settings.index)
    encoder = load_encoder(settings)
    serving = ServingIndex.serve(loaded, encoder, engine_config(settings))
    configure_logging(settings.log_level, settings.log_json)
    url = f"http://{settings.host}:{settings.port}"
    _err.print(f"rsir: serving {settings.index} on {url}  (API docs: {url}/docs)")
    _err.print(
        f"  try: curl -s {url}/search/text -H 'content-type: application/json' "
        """-d '{"query": "three planes parked near a terminal", "k": 5}'"""
    )
    uvicorn.Server(uvicorn_config(create_app(settings, encoder, serving), settings)).run()


def _encoder(model: str, checkpoint: Path | None, device: str, batch_size: int) -> ClipEncoder:
    from rsir.model.encoders import ClipEncoder, EncoderConfig, default_checkpoint

    weights = checkpoint or default_checkpoint(model)
    return ClipEncoder(EncoderConfig(arch=model, checkpoint=weights, device=device, batch_size=batch_size))


def main() -> None:
    try:
        app()
    except RsirError as exc:
        # One line, as is: no markup parsing of the message, no wrapping at the terminal's width.
        _err.print(f"[bold red]error:[/] {escape(str(exc))}", soft_wrap=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
