"""What an archive holds: a deterministic, sorted list of items (id, where its bytes are, captions).

Three layouts, recognised from the path given as ``--archive``:

- a Karpathy-style caption JSON (or a folder holding ``dataset.json``): its images with their captions;
- a folder of ``*.tar`` shards in the webdataset layout: members grouped by key (the member name up to
  its first dot after the last ``/``), an image member (``.jpg``/``.png``/``.tif``...) per key and an
  optional ``.txt`` (one caption per line) or ``.json`` (``{"captions": [...]}``) member; a single
  ``.tar`` file works too;
- any other folder: every image file under it, recursively; the id is the path relative to the folder.

Listing reads no pixels. Items are sorted by id so that shards (fixed runs of this list) are the same
on every run, which is what makes a resumed build identical to an uninterrupted one.
"""

from __future__ import annotations

import itertools
import json
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rsir.index_builder.scenes import Chip
from rsir.model.datasets import load_karpathy
from rsir.model.errors import DatasetError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp"})


@dataclass(frozen=True)
class ArchiveItem:
    """One image to index: a file, the byte range ``span`` (offset, size) of a member of a tar shard, or
    a ``chip`` (a window of a georeferenced scene, :mod:`rsir.index_builder.scenes`; ``path`` is then the
    scene's file).

    Shards are plain (uncompressed) tars, as webdataset writes them, so a member is read with one seek
    instead of a scan of the shard's headers.
    """

    id: str
    path: Path
    span: tuple[int, int] | None = None
    captions: tuple[str, ...] = ()
    meta: dict[str, Any] = field(default_factory=dict, compare=False)
    chip: Chip | None = None

    def read_bytes(self) -> bytes:
        if self.span is None:
            return self.path.read_bytes()
        offset, size = self.span
        with self.path.open("rb") as fh:
            fh.seek(offset)
            data = fh.read(size)
        if len(data) != size:
            raise OSError(f"{self.path}: member at byte {offset} is cut short ({len(data)} of {size} bytes)")
        return data


def scan_archive(source: Path, split: str | None = None) -> list[ArchiveItem]:
    """The items of ``source`` sorted by id; ``split`` filters a caption JSON's images."""
    source = Path(source)
    if not source.exists():
        raise DatasetError(f"archive {source} does not exist")
    if source.is_file() and source.suffix == ".json":
        return _from_karpathy(source, split)
    if source.is_dir() and (source / "dataset.json").is_file():
        return _from_karpathy(source / "dataset.json", split)
    if source.is_file() and source.suffix == ".tar":
        return _sorted_unique(_from_tar(source), source)
    if source.is_dir():
        shards = sorted(source.glob("*.tar"))
        if shards:
            return _sorted_unique((item for shard in shards for item in _from_tar(shard)), source)
        return _sorted_unique(_from_folder(source), source)
    raise DatasetError(
        f"archive {source}: expected a folder of images, a folder of .tar shards, a .tar shard, "
        "or a Karpathy-style caption .json"
    )


def _from_karpathy(path: Path, split: str | None) -> list[ArchiveItem]:
    ds = load_karpathy(path, split=split, on_blank="skip")
    captions: list[list[str]] = [[] for _ in ds.images]
    for text, owner in zip(ds.captions, ds.caption_image, strict=True):
        captions[owner].append(text)
    root = path.parent
    items = []
    for rec, caps in zip(ds.images, captions, strict=True):
        try:
            ident = rec.path.relative_to(root).as_posix()
        except ValueError:
            ident = rec.filename
        items.append(
            ArchiveItem(ident, rec.path, None, tuple(caps), {"split": rec.split, "filename": rec.filename})
        )
    return _sorted_unique(items, path)


def _from_folder(root: Path) -> Iterable[ArchiveItem]:
    for path in root.rglob("*"):
        if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file():
            yield ArchiveItem(path.relative_to(root).as_posix(), path)


def _from_tar(shard: Path) -> list[ArchiveItem]:
    groups: dict[str, dict[str, tarfile.TarInfo]] = {}
    try:
        with tarfile.open(shard, "r:") as tar:
            for info in tar:
                if not info.isfile():
                    continue
                folder, _, name = info.name.rpartition("/")
                stem, dot, ext = name.partition(".")
                if not dot:
                    continue
                key = f"{folder}/{stem}" if folder else stem
                groups.setdefault(key, {})[ext.lower()] = info
            items = [_tar_item(shard, tar, key, members) for key, members in groups.items()]
    except tarfile.TarError as exc:
        raise DatasetError(f"tar shard {shard} cannot be read: {exc}") from exc
    return [item for item in items if item is not None]


def _tar_item(
    shard: Path, tar: tarfile.TarFile, key: str, members: dict[str, tarfile.TarInfo]
) -> ArchiveItem | None:
    image = next((m for ext, m in sorted(members.items()) if f".{ext}" in IMAGE_SUFFIXES), None)
    if image is None:
        return None
    captions: list[str] = []
    meta: dict[str, Any] = {}
    if "txt" in members:
        captions = [line.strip() for line in _member_text(tar, members["txt"]).splitlines() if line.strip()]
    if "json" in members:
        try:
            payload = json.loads(_member_text(tar, members["json"]))
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{shard}:{members['json'].name} is not valid JSON: {exc}") from exc
        if isinstance(payload, dict):
            captions += [str(c) for c in payload.pop("captions", []) if str(c).strip()]
            meta = payload
    return ArchiveItem(key, shard, (image.offset_data, image.size), tuple(captions), meta)


def _member_text(tar: tarfile.TarFile, info: tarfile.TarInfo) -> str:
    fh = tar.extractfile(info)
    return fh.read().decode("utf-8", errors="replace") if fh is not None else ""


def _sorted_unique(items: Iterable[ArchiveItem], source: Path) -> list[ArchiveItem]:
    out = sorted(items, key=lambda item: item.id)
    for a, b in itertools.pairwise(out):
        if a.id == b.id:
            raise DatasetError(f"archive {source}: two images share the id {a.id!r}")
    return out
