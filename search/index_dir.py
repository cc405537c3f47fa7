"""The on-disk index directory: what the builder writes and the engine (and service) loads.

One version is a folder holding ``manifest.json`` (written last: its presence marks the version
complete) and the artifacts::

    manifest.json          format version, encoder (arch, checkpoint hash, dims, grid), counts, codecs
    images.json            image ids (file names), in gallery order
    image_vectors.npy      float32 [N, d]
    patches.{codec}.npy    [N, M, d] patch tokens (+ patches.scale.npy for int8)
    captions.json          caption texts and their image index
    caption_vectors.npy    float32 [Nc, d]
    caption_tokens.{codec}.npy, caption_mask.npy   [Nc, n, d] word tokens and [Nc, n] bool

Token arrays are memory-mapped on load, so opening a large index costs no RAM until rows are read.
A built index also holds ``recall.faiss`` / ``caption_recall.faiss`` (the FAISS indexes, so loading
trains nothing), ``metadata.parquet``, ``skipped.json`` (files the build left out, with reasons),
``tombstones.json`` (ids deleted since the build; search never returns them) and ``sources.json``
(``{id: [path]}`` or ``{id: [tar_path, offset, size]}``: where each image's original bytes are, so
they can be served; see :mod:`search.originals`).

An index *root* holds versions ``v0001/``, ``v0002/``... and a ``CURRENT`` file naming the served one.
A version is staged in a hidden folder and renamed into place before ``CURRENT`` is replaced
(atomically), so a reader never sees a half-written version, and older versions stay loadable.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from model.errors import RsirError
from search.atomic import save_npy, write_text
from search.filters import MetadataColumns
from search.gallery import CaptionStore, Gallery
from search.recall import DenseRecall
from search.token_store import Codec, open_tokens, write_tokens

FORMAT_VERSION = 1


class IndexFormatError(RsirError):
    """An index directory is incomplete, of another format version, or made by another encoder."""


@dataclass(frozen=True)
class Manifest:
    """Build parameters saved with the artifact; a service refuses an index that does not match it."""

    encoder: dict[str, Any]
    n_images: int
    n_captions: int
    token_codec: Codec
    dim: int
    grid: tuple[int, int]
    format_version: int = FORMAT_VERSION
    created_unix: float = field(default_factory=time.time)
    source: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @staticmethod
    def read(folder: Path) -> Manifest:
        path = folder / "manifest.json"
        if not path.is_file():
            raise IndexFormatError(f"{folder} is not a complete index: no manifest.json")
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("format_version") != FORMAT_VERSION:
            raise IndexFormatError(
                f"{folder}: index format version {data.get('format_version')}, "
                f"this rsir reads {FORMAT_VERSION}"
            )
        data["grid"] = tuple(data["grid"])
        return Manifest(**data)

    def write(self, folder: Path) -> None:
        """Write ``manifest.json``: the last file of a version, whose presence marks it complete."""
        write_text(folder / "manifest.json", json.dumps(asdict(self), indent=1))


CURRENT = "CURRENT"


@dataclass(frozen=True)
class LoadedIndex:
    """An opened version: the gallery, its manifest, its FAISS indexes, its deleted image indices and
    its images' metadata (all unknown when the version has none)."""

    folder: Path
    gallery: Gallery
    manifest: Manifest
    image_recall: DenseRecall | None
    caption_recall: DenseRecall | None
    deleted: NDArray[np.int64]
    metadata: MetadataColumns
    extras: dict[str, Any] = field(default_factory=dict)  # side -> search.extras.SideExtras
    hash_heads: Any = None  # model.hashing.HashHeads, when the version carries hash codes


def resolve_version(path: Path) -> Path:
    """``path`` itself when it is a version; the version ``CURRENT`` names when it is an index root."""
    path = Path(path)
    if (path / "manifest.json").is_file():
        return path
    pointer = path / CURRENT
    if pointer.is_file():
        return path / pointer.read_text(encoding="utf-8").strip()
    if not path.exists():
        raise IndexFormatError(f"index {path} does not exist")
    raise IndexFormatError(f"{path} is neither an index version (no manifest.json) nor a root (no {CURRENT})")


def list_versions(root: Path) -> list[str]:
    return sorted(p.name for p in Path(root).glob("v[0-9]*") if (p / "manifest.json").is_file())


def next_version_name(root: Path) -> str:
    names = [int(p.name[1:]) for p in Path(root).glob("v[0-9]*") if p.name[1:].isdigit()]
    return f"v{max(names, default=0) + 1:04d}"


def publish(root: Path, staged: Path, name: str) -> Path:
    """Move a complete staged version into ``root/name`` and point ``CURRENT`` at it."""
    Manifest.read(staged)  # refuse to publish a version without its manifest
    final = Path(root) / name
    staged.rename(final)
    switch_current(root, name)
    return final


def switch_current(root: Path, name: str) -> None:
    if not (Path(root) / name / "manifest.json").is_file():
        raise IndexFormatError(f"{root} has no complete version {name!r}; versions: {list_versions(root)}")
    write_text(Path(root) / CURRENT, name + "\n")


def read_tombstones(folder: Path) -> list[str]:
    path = folder / "tombstones.json"
    return list(json.loads(path.read_text(encoding="utf-8"))) if path.is_file() else []


def load_index(
    path: Path, expect_encoder: dict[str, Any] | None = None, with_sgpd: bool = True
) -> LoadedIndex:
    """Open a version (or a root's current version) with its FAISS indexes, if it has them, and the
    alternative methods' data (``with_sgpd``: also build SGPD's clusters, a k-means at load time)."""
    # Imported here: these modules import this one (IndexFormatError, Gallery types).
    from search.extras import load_extras
    from search.metadata_io import load_metadata

    folder = resolve_version(path)
    gallery, manifest = load_gallery(folder, expect_encoder)
    image_recall = DenseRecall.load(folder / "recall.faiss") if (folder / "recall.faiss").is_file() else None
    caption_file = folder / "caption_recall.faiss"
    caption_recall = DenseRecall.load(caption_file) if caption_file.is_file() else None
    position = {ident: i for i, ident in enumerate(gallery.ids)}
    deleted = np.asarray(sorted(position[i] for i in read_tombstones(folder) if i in position), np.int64)
    metadata = load_metadata(folder, len(gallery.ids))
    extras, heads = load_extras(folder, gallery, with_sgpd)
    return LoadedIndex(
        folder, gallery, manifest, image_recall, caption_recall, deleted, metadata, extras, heads
    )


def save_gallery(gallery: Gallery, folder: Path, manifest: Manifest) -> None:
    """Write ``gallery`` as one index version; the manifest goes last so a torn write is detectable."""
    folder.mkdir(parents=True, exist_ok=True)
    write_text(folder / "images.json", json.dumps(gallery.ids))
    save_npy(folder / "image_vectors.npy", np.asarray(gallery.vectors, dtype=np.float32))
    write_tokens(folder, "patches", np.asarray(gallery.patches[:]), manifest.token_codec)
    if gallery.captions is not None:
        c = gallery.captions
        write_text(
            folder / "captions.json",
            json.dumps({"texts": c.texts, "image_index": c.image_index.tolist()}),
        )
        save_npy(folder / "caption_vectors.npy", np.asarray(c.vectors, dtype=np.float32))
        write_tokens(folder, "caption_tokens", np.asarray(c.tokens[:]), manifest.token_codec)
        save_npy(folder / "caption_mask.npy", np.asarray(c.mask, dtype=np.bool_))
    manifest.write(folder)


def load_gallery(folder: Path, expect_encoder: dict[str, Any] | None = None) -> tuple[Gallery, Manifest]:
    """Open an index version; ``expect_encoder`` (``ClipEncoder.describe()``) must match the manifest's."""
    manifest = Manifest.read(folder)
    if expect_encoder is not None:
        _check_encoder(folder, manifest.encoder, expect_encoder)
    ids = json.loads((folder / "images.json").read_text(encoding="utf-8"))
    captions = None
    if (folder / "captions.json").is_file():
        meta = json.loads((folder / "captions.json").read_text(encoding="utf-8"))
        captions = CaptionStore(
            texts=meta["texts"],
            image_index=np.asarray(meta["image_index"], dtype=np.int64),
            vectors=np.load(folder / "caption_vectors.npy", mmap_mode="r"),
            tokens=open_tokens(folder, "caption_tokens", manifest.token_codec),  # type: ignore[arg-type]
            mask=np.load(folder / "caption_mask.npy", mmap_mode="r"),
        )
    gallery = Gallery(
        ids=ids,
        # Memory-mapped: the page cache holds them, shared with the next version during a switch and
        # evictable, instead of a private copy per loaded version (issue 22 item 9).
        vectors=np.load(folder / "image_vectors.npy", mmap_mode="r"),
        patches=open_tokens(folder, "patches", manifest.token_codec),  # type: ignore[arg-type]
        grid=manifest.grid,
        captions=captions,
    )
    return gallery, manifest


def _check_encoder(folder: Path, built: dict[str, Any], running: dict[str, Any]) -> None:
    for key in ("arch", "checkpoint_sha256", "dim", "grid"):
        if built.get(key) != running.get(key):
            raise IndexFormatError(
                f"{folder} was built with {key}={built.get(key)!r} but the running encoder has "
                f"{key}={running.get(key)!r}; rebuild the index or load the matching model"
            )
