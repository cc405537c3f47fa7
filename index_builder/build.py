"""The build job: list the archive, embed it shard by shard (resumable), assemble, publish a version.

Layout of an index root (see :mod:`rsir.index.versions` for a version's files)::

    ROOT/CURRENT            the served version's name
    ROOT/v0001/ ...         complete versions (never modified once published)
    ROOT/.work/<plan>/      shards of a build in progress, keyed by what determines their contents

``build`` makes the first version, ``add`` a version with new images appended, ``delete`` a version
with more tombstones. A killed job started again with the same arguments finds its plan's committed
shards and embeds only the rest; the result is the same as an uninterrupted run's.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from rsir.index.dense import check_factory
from rsir.index.originals import (
    Original,
    Sources,
    archive_root_of,
    common_root,
    digest,
    read_sources,
    relative_to,
    write_sources,
)
from rsir.index.scenes import Scene, is_remote, locate_scene, read_scenes, write_scenes
from rsir.index.versions import (
    MANIFEST,
    TOMBSTONES,
    LoadedIndex,
    Manifest,
    list_versions,
    load_index,
    next_version_name,
    publish,
    read_ids,
    read_tombstones,
    resolve_version,
    write_tombstones,
)
from rsir.index_builder import shards
from rsir.index_builder.assemble import assemble
from rsir.index_builder.chipper import SceneListing
from rsir.index_builder.config import BuildConfig
from rsir.index_builder.embed import ShardAccumulator, decode_batches, shard_batches
from rsir.index_builder.extras import write_extras
from rsir.index_builder.listing import list_archive
from rsir.index_builder.metadata import base_rows, read_metadata
from rsir.index_builder.progress import progress_log
from rsir.index_builder.scenes import read_chip
from rsir.index_builder.sources import ArchiveItem
from rsir.model.encoders import ClipEncoder, default_hash_heads
from rsir.model.errors import DatasetError, InvalidInputError

WORK = ".work"


@dataclass
class BuildReport:
    version: Path
    n_images: int
    n_captions: int
    n_new: int
    n_embedded: int  # by this run: the rest came from shards an interrupted run had committed
    skipped: list[dict[str, str]]
    seconds: float
    embed_seconds: float
    shards_reused: int
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def images_per_second(self) -> float:
        return self.n_embedded / self.embed_seconds if self.embed_seconds > 0 else float("nan")


class BuildInterruptedError(RuntimeError):
    """Raised by ``stop_after_shards``: the job stopped as if killed, leaving its shards for a resume."""


def build(
    archive: Path, root: Path, encoder: ClipEncoder, config: BuildConfig, metadata: Path | None = None
) -> BuildReport:
    """Build the first version of ``root`` from ``archive`` (refuses a root that has versions)."""
    root = Path(root)
    if list_versions(root):
        raise InvalidInputError(
            f"{root} already holds an index ({list_versions(root)}); use `rsir index add`"
        )
    listing = list_archive(archive, config)
    if not listing.items:
        reasons = "; ".join(f"{s['id']}: {s['reason']}" for s in listing.skipped[:3])
        raise DatasetError(f"archive {archive} holds no images" + (f" ({reasons})" if reasons else ""))
    return _run(listing.items, root, encoder, config, metadata, None, archive, listing)


def add(
    archive: Path, root: Path, encoder: ClipEncoder, config: BuildConfig, metadata: Path | None = None
) -> BuildReport:
    """A new version: the current one plus the archive's images whose ids it does not hold yet."""
    base = load_index(root, encoder.describe())
    known = set(base.gallery.ids)
    listing = list_archive(archive, config)
    items = [i for i in listing.items if i.id not in known]
    if not items:
        raise InvalidInputError(f"{archive} has no images that {base.folder.name} does not already hold")
    return _run(items, Path(root), encoder, config, metadata, base, archive, listing)


def delete(root: Path, ids: Sequence[str]) -> Path:
    """A new version whose tombstones also hold ``ids``; the arrays are hard links to the current one's."""
    root = Path(root)
    current = resolve_version(root)
    known = set(read_ids(current))
    unknown = [i for i in ids if i not in known]
    if unknown:
        raise InvalidInputError(f"{len(unknown)} ids are not in {current.name}: {unknown[:5]}")
    name = next_version_name(root)
    staged = root / f".{name}.tmp"
    shutil.rmtree(staged, ignore_errors=True)
    staged.mkdir()
    for path in current.iterdir():
        if path.name not in (MANIFEST, TOMBSTONES):
            os.link(path, staged / path.name)
    tombstones = sorted(set(read_tombstones(current)) | set(ids))
    write_tombstones(staged, tombstones)
    manifest = Manifest.read(current)
    extra = {**manifest.extra, "version": name, "parent": current.name, "n_deleted": len(tombstones)}
    dataclasses.replace(manifest, created_unix=time.time(), extra=extra).write(staged)
    return publish(root, staged, name)


def _run(
    items: list[ArchiveItem],
    root: Path,
    encoder: ClipEncoder,
    config: BuildConfig,
    metadata: Path | None,
    base: LoadedIndex | None,
    archive: Path,
    listing: SceneListing,
) -> BuildReport:
    t0 = time.perf_counter()
    source = str(archive)
    archive_root = archive_root_of(archive)
    check_factory(encoder.dim, config.factory)
    rows = base_rows(base.folder) if base is not None else {}
    rows |= read_metadata(metadata) if metadata is not None else {}
    for item in items:  # metadata shipped inside tar shards or read from scenes, under the file's own
        if item.meta:
            # A chip's row is typed (footprint WKB, window, numbers); a tar member's JSON is kept as text.
            own = item.meta if item.chip is not None else {k: str(v) for k, v in item.meta.items()}
            rows[item.id] = {**own, **rows.get(item.id, {})}
    work = root / WORK / _plan_key(items, encoder, config, base)
    work.mkdir(parents=True, exist_ok=True)
    shards.clear_partial(work)
    bounds = [(s, min(s + config.shard_size, len(items))) for s in range(0, len(items), config.shard_size)]
    pending = [n for n in range(len(bounds)) if not shards.is_done(work, n)]
    reused = len(bounds) - len(pending)
    t_embed = time.perf_counter()
    embed: Callable[..., None] = _embed_local
    if config.engine == "ray":
        from rsir.index_builder.ray_engine import embed_with_ray

        embed = embed_with_ray
    embed(items, bounds, pending, work, encoder, config)
    embed_seconds = time.perf_counter() - t_embed

    name = next_version_name(root)
    staged = root / f".{name}.tmp"
    shutil.rmtree(staged, ignore_errors=True)
    extra = {
        "version": name,
        "parent": base.folder.name if base else None,
        "build_config": _plan_config(config),
    }
    manifest, skipped = assemble(
        work,
        range(len(bounds)),
        staged,
        encoder=encoder.describe(),
        codec=config.token_codec,
        factory=config.factory,
        source=source,
        metadata=rows,
        base=base,
        extra=extra,
        left_out=listing.skipped,
    )
    if manifest.n_images == 0:
        shutil.rmtree(staged)
        raise DatasetError(f"no image of {source} could be decoded ({len(skipped)} skipped)")
    ids = read_ids(staged)
    recorded = _recorded_originals(work, range(len(bounds)))
    sources = version_sources(ids, items, base, recorded, config.archive_root or archive_root)
    write_sources(staged, sources)
    scenes = version_scenes(ids, items, base)
    if scenes:  # a version of tiles only stays as it was before scenes
        write_scenes(staged, scenes, sources.root)
    nodata = sum(len(shards.read_shard_meta(work, n).get("nodata", [])) for n in range(len(bounds)))
    heads = config.hash_heads or default_hash_heads(encoder.config.arch, encoder.config.checkpoint)
    write_extras(staged, heads)
    version = publish(root, staged, name)
    shutil.rmtree(work, ignore_errors=True)
    return BuildReport(
        version=version,
        n_images=manifest.n_images,
        n_captions=manifest.n_captions,
        n_new=len(items) - len(skipped) - nodata + len(listing.skipped),
        n_embedded=sum(bounds[n][1] - bounds[n][0] for n in pending),
        skipped=skipped,
        seconds=time.perf_counter() - t0,
        embed_seconds=embed_seconds,
        shards_reused=reused,
        extra=_scene_report(items, nodata, listing) if config.chips or listing.missing else {},
    )


def version_sources(
    ids: Sequence[str],
    items: Sequence[ArchiveItem],
    base: LoadedIndex | None,
    recorded: Mapping[str, Sequence[Any]],
    root: Path,
) -> Sources:
    """Where the originals of a version's images ``ids`` are, relative to one archive root.

    The root is ``root``, widened when needed so it holds every new file and the base version's
    relative entries (an ``add`` from a folder beside the first archive widens it to their parent).
    ``recorded`` is ``{id: (size, digest)}`` of the bytes the embedding read; an id missing from it
    (a shard committed by an older rsir, resumed) is read and hashed here. The base version's
    absolute (format 1) entries stay absolute.
    """
    old = read_sources(base.folder) if base is not None else Sources(None, {})
    wanted = set(ids)
    new = [item for item in items if item.id in wanted]
    new_ids = {item.id for item in new}
    carried = {i: e for i, e in old.items.items() if i in wanted and i not in new_ids}
    relative_old = {i: old.locate(e) for i, e in carried.items() if not Path(e.path).is_absolute()}
    paths = {item.id: Path(item.path).resolve() for item in new if not _remote(item)}
    root = common_root(Path(root).resolve(), [*paths.values(), *relative_old.values()])
    out: dict[str, Original] = {
        i: Original(relative_to(root, relative_old[i]), e.offset, e.size, e.digest)
        if i in relative_old
        else e
        for i, e in carried.items()
    }
    for item in new:
        size, hashed = recorded.get(item.id) or _size_and_digest(item)
        offset = item.span[0] if item.span is not None else None
        # A chip of a scene in object storage keeps its GDAL path (absolute, like format 1's entries).
        where = (
            item.chip.scene.bands[0].href
            if _remote(item) and item.chip
            else relative_to(root, paths[item.id])
        )
        out[item.id] = Original(where, offset, int(size), str(hashed))
    return Sources(str(root), out)


def version_scenes(
    ids: Sequence[str], items: Sequence[ArchiveItem], base: LoadedIndex | None
) -> dict[str, Scene]:
    """How each scene of a version's chips was read (the service reads a chip's pixels again by it):
    the base version's scenes and those of the new chips among ``ids``."""
    out = {}
    if base is not None:
        located = read_sources(base.folder)
        out = {i: locate_scene(scene, located) for i, scene in read_scenes(base.folder).items()}
    wanted = set(ids)
    out |= {i.chip.scene.id: i.chip.scene for i in items if i.chip is not None and i.id in wanted}
    return out


def _scene_report(items: Sequence[ArchiveItem], nodata: int, listing: SceneListing) -> dict[str, Any]:
    chips = sum(i.chip is not None for i in items)
    return {"chips": chips, "chips_nodata": nodata, "scenes_missing": listing.missing}


def _remote(item: ArchiveItem) -> bool:
    return item.chip is not None and is_remote(item.chip.scene.bands[0].href)


def _size_and_digest(item: ArchiveItem) -> tuple[int, str]:
    if item.chip is not None:
        return item.chip.file_size, read_chip(item.chip).digest
    data = item.read_bytes()
    return len(data), digest(data)


def _recorded_originals(work: Path, numbers: Iterable[int]) -> dict[str, Sequence[Any]]:
    """``{id: (size, digest)}`` from the committed shards' metadata."""
    out: dict[str, Sequence[Any]] = {}
    for number in numbers:
        out |= shards.read_shard_meta(work, number).get("originals", {})
    return out


def _embed_local(
    items: Sequence[ArchiveItem],
    bounds: Sequence[tuple[int, int]],
    pending: Sequence[int],
    work: Path,
    encoder: ClipEncoder,
    config: BuildConfig,
) -> None:
    todo = [bounds[n] for n in pending]
    total = sum(stop - start for start, stop in todo)
    log = progress_log(config, total)
    with _progress(config.progress) as progress:
        task = progress.add_task("embed", total=total)
        batches = decode_batches(items, todo, encoder, config.batch_size, config.workers, config.max_pixels)
        for done, (number, (start, stop)) in enumerate(zip(pending, todo, strict=True)):
            if config.stop_after_shards is not None and done >= config.stop_after_shards:
                raise BuildInterruptedError(f"stopped after {done} shards")
            acc = ShardAccumulator(encoder, items)
            for _ in shard_batches(start, stop, config.batch_size):
                batch = next(batches)
                acc.add(batch)
                progress.advance(task, len(batch))
                if log is not None:
                    log.advance(len(batch), sum(d.pixels is None and not d.nodata for d in batch))
            shards.write_shard(work, number, acc.finish())
    if log is not None:
        log.close()


def _plan_config(config: BuildConfig) -> dict[str, Any]:
    plan: dict[str, Any] = {
        "shard_size": config.shard_size,
        "batch_size": config.batch_size,
        "max_pixels": config.max_pixels,
        "token_codec": config.token_codec,
        "factory": config.factory,
        "split": config.split,
    }
    if config.chips is not None:  # absent for tiles, so a tile build's plan is the same as before scenes
        plan |= {"chips": dataclasses.asdict(config.chips), "bands": config.bands}
    return plan


def _plan_key(
    items: Sequence[ArchiveItem], encoder: ClipEncoder, config: BuildConfig, base: LoadedIndex | None
) -> str:
    """What fixes the shards' contents: the items, the encoder, the sharding and the base version."""
    h = hashlib.sha256()
    plan = {
        "encoder": encoder.describe(),
        "config": _plan_config(config),
        "base": base.folder.name if base else None,
    }
    h.update(json.dumps(plan, sort_keys=True).encode())
    for item in items:
        window = f"\0{item.chip.window}" if item.chip is not None else ""
        h.update(f"{item.id}\0{item.path}\0{item.span}\0{len(item.captions)}{window}\n".encode())
    return h.hexdigest()[:16]


class _RateColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        return Text(f"{task.speed:.1f} img/s" if task.speed else "... img/s")


def _progress(enabled: bool) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.completed}/{task.total} images"),
        _RateColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        disable=not enabled,
    )
