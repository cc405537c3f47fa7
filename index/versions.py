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
they can be served; see :mod:`rsir.index.originals`); a version of scene chips also ``scenes.json`` (how
each scene's chips were read: bands, nodata, reflectance rule or stretch; see :mod:`rsir.index.scenes`).

:func:`validate_version` checks a version's files against its manifest (presence, JSON, array
headers, counts, dims and byte sizes; FAISS indexes readable and of the right size) without reading
the arrays' data, so opening a corrupted copy fails with one line naming the file and the problem.

An index *root* holds versions ``v0001/``, ``v0002/``... and a ``CURRENT`` file naming the served one.
A version is staged in a hidden folder and renamed into place before ``CURRENT`` is replaced
(atomically), so a reader never sees a half-written version, and older versions stay loadable.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from rsir.index.atomic import save_npy, write_text
from rsir.index.columns import MetadataColumns
from rsir.index.dense import DenseRecall
from rsir.index.errors import CorruptIndexError as CorruptIndexError
from rsir.index.errors import IndexFormatError as IndexFormatError
from rsir.index.extras import SGPD_FILES, SGPD_POSTINGS, SideExtras, load_extras
from rsir.index.gallery import CaptionStore, Gallery
from rsir.index.metadata import load_metadata
from rsir.index.tokens import CODECS, Codec, open_tokens, write_tokens
from rsir.model.hashing import HashHeads

FORMAT_VERSION = 1
# A version's files, named once: the builder and the server read and write them through this module.
MANIFEST = "manifest.json"
IMAGES = "images.json"
CAPTIONS = "captions.json"
TOMBSTONES = "tombstones.json"
SKIPPED = "skipped.json"
IMAGE_RECALL = "recall.faiss"
CAPTION_RECALL = "caption_recall.faiss"


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
        path = folder / MANIFEST
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
        write_text(folder / MANIFEST, json.dumps(asdict(self), indent=1))


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
    extras: dict[str, SideExtras] = field(default_factory=dict)  # "images" / "captions"
    hash_heads: HashHeads | None = None  # when the version carries hash codes


def resolve_version(path: Path) -> Path:
    """``path`` itself when it is a version; the version ``CURRENT`` names when it is an index root."""
    path = Path(path)
    if (path / MANIFEST).is_file():
        return path
    pointer = path / CURRENT
    if pointer.is_file():
        name = pointer.read_text(encoding="utf-8").strip()
        if not name or name in (".", "..") or "/" in name or "\\" in name:
            raise IndexFormatError(f"{pointer} names no version ({name!r})")
        return path / name
    if not path.exists():
        raise IndexFormatError(f"index {path} does not exist")
    raise IndexFormatError(f"{path} is neither an index version (no manifest.json) nor a root (no {CURRENT})")


def list_versions(root: Path) -> list[str]:
    return sorted(p.name for p in Path(root).glob("v[0-9]*") if (p / MANIFEST).is_file())


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
    if not (Path(root) / name / MANIFEST).is_file():
        raise IndexFormatError(f"{root} has no complete version {name!r}; versions: {list_versions(root)}")
    write_text(Path(root) / CURRENT, name + "\n")


def read_tombstones(folder: Path) -> list[str]:
    path = folder / TOMBSTONES
    return list(json.loads(path.read_text(encoding="utf-8"))) if path.is_file() else []


def validate_version(folder: Path, check_faiss: bool = True) -> Manifest:
    """Check a version's files against its manifest; :class:`CorruptIndexError` at the first problem.

    Reads JSON files and array headers, never array data; with ``check_faiss`` also the FAISS
    indexes' structure (memory-mapped: their vectors are not read).
    """
    folder = Path(folder)
    m = _read_manifest(folder)
    ids = _json_file(folder, IMAGES, list)
    if len(ids) != m.n_images or not all(isinstance(i, str) for i in ids):
        raise CorruptIndexError(folder, IMAGES, f"{len(ids)} entries, the manifest says {m.n_images} ids")
    _npy(folder, "image_vectors.npy", (m.n_images, m.dim))
    _tokens(folder, "patches", m.token_codec, m.n_images, m.dim)
    has_captions = (folder / CAPTIONS).is_file()
    if m.n_captions and not has_captions:
        raise CorruptIndexError(folder, CAPTIONS, f"missing; the manifest says {m.n_captions} captions")
    if has_captions:
        caps = _json_file(folder, CAPTIONS, dict)
        texts, owners = caps.get("texts"), caps.get("image_index")
        if not isinstance(texts, list) or not isinstance(owners, list) or len(texts) != len(owners):
            raise CorruptIndexError(folder, CAPTIONS, "needs equal-length lists texts and image_index")
        if len(texts) != m.n_captions:
            raise CorruptIndexError(
                folder, CAPTIONS, f"{len(texts)} captions, the manifest says {m.n_captions}"
            )
        if any(not isinstance(i, int) or not 0 <= i < m.n_images for i in owners):
            raise CorruptIndexError(folder, CAPTIONS, f"an image_index outside [0, {m.n_images})")
        _npy(folder, "caption_vectors.npy", (m.n_captions, m.dim))
        words = _tokens(folder, "caption_tokens", m.token_codec, m.n_captions, m.dim)
        _npy(folder, "caption_mask.npy", (m.n_captions, words))
    for name, kind in ((TOMBSTONES, list), ("sources.json", dict), ("scenes.json", dict)):
        if (folder / name).is_file():
            _json_file(folder, name, kind)
    # The methods' optional arrays: only their integrity is checked here (their shapes are theirs).
    for prefix in ("", "caption_"):
        for name in ("ppsr_rg.npy", "sar_profiles.npy", "hash_codes.npy", *SGPD_FILES, *SGPD_POSTINGS):
            if (folder / f"{prefix}{name}").is_file():
                _npy(folder, f"{prefix}{name}", None)
    if check_faiss:
        for name, n in ((IMAGE_RECALL, m.n_images), (CAPTION_RECALL, m.n_captions)):
            if (folder / name).is_file():
                _faiss(folder, name, n, m.dim)
    return m


def _read_manifest(folder: Path) -> Manifest:
    if not (folder / MANIFEST).is_file():
        raise IndexFormatError(f"{folder} is not a complete index: no manifest.json")
    data = _json_file(folder, MANIFEST, dict)
    if data.get("format_version") != FORMAT_VERSION:
        raise IndexFormatError(
            f"{folder}: index format version {data.get('format_version')}, this rsir reads {FORMAT_VERSION}"
        )
    try:
        data["grid"] = tuple(data["grid"])
        m = Manifest(**data)
    except (KeyError, TypeError) as exc:
        raise CorruptIndexError(folder, MANIFEST, f"fields missing or unknown ({exc})") from None
    counts_ok = all(isinstance(v, int) and v >= 0 for v in (m.n_images, m.n_captions))
    if not counts_ok or not isinstance(m.dim, int) or m.dim <= 0 or m.token_codec not in CODECS:
        raise CorruptIndexError(folder, MANIFEST, "counts, dim or token_codec out of range")
    return m


def _json_file(folder: Path, name: str, kind: type) -> Any:
    path = folder / name
    if not path.is_file():
        raise CorruptIndexError(folder, name, "missing")
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise CorruptIndexError(folder, name, f"not valid JSON ({exc})") from None
    if not isinstance(value, kind):
        raise CorruptIndexError(folder, name, f"expected a JSON {kind.__name__}, got {type(value).__name__}")
    return value


def _npy(folder: Path, name: str, shape: tuple[int | None, ...] | None) -> tuple[int, ...]:
    """The array's shape from its header, after checking the file holds exactly that many bytes and
    (``shape``: ``None`` entries are free) the shape the manifest implies."""
    path = folder / name
    if not path.is_file():
        raise CorruptIndexError(folder, name, "missing")
    try:
        with path.open("rb") as f:
            version = np.lib.format.read_magic(f)
            read_header = (
                np.lib.format.read_array_header_1_0
                if version == (1, 0)
                else np.lib.format.read_array_header_2_0
            )
            found, _, dtype = read_header(f)
            data_at = f.tell()
    except (ValueError, OSError, EOFError) as exc:
        raise CorruptIndexError(folder, name, f"not a readable .npy file ({exc})") from None
    expected = data_at + math.prod(found) * dtype.itemsize
    size = path.stat().st_size
    if size != expected:
        raise CorruptIndexError(
            folder, name, f"{size} bytes, but its header ({dtype} {list(found)}) needs {expected}: truncated?"
        )
    if shape is not None and (
        len(found) != len(shape) or any(w is not None and w != f for w, f in zip(shape, found, strict=True))
    ):
        want = ["*" if w is None else w for w in shape]
        raise CorruptIndexError(folder, name, f"shape {list(found)}, the manifest implies {want}")
    return tuple(found)


def _tokens(folder: Path, name: str, codec: Codec, n: int, dim: int) -> int:
    """Check a token array (and its int8 scales); returns its tokens per item."""
    shape = _npy(folder, f"{name}.{codec}.npy", (n, None, dim))
    if codec == "int8":
        _npy(folder, f"{name}.scale.npy", shape[:2])
    return shape[1]


def _faiss(folder: Path, name: str, n: int, dim: int) -> DenseRecall:
    """The FAISS index ``name``, mapped (FAISS still reads its structure, so a truncated or garbled
    file fails here, while the vectors and lists stay on disk: validating a 1M-item index costs
    no 2 GB read, and a server shares the pages between versions)."""
    try:
        recall = DenseRecall.load(folder / name, mmap=True)
    except Exception as exc:  # FAISS reports a bad file as RuntimeError with a C++ trace
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        first = first.split("failed: ", 1)[-1]  # FAISS prefixes the C++ function and source line
        raise CorruptIndexError(folder, name, f"not a readable FAISS index ({first})") from None
    if recall.index.ntotal != n or recall.dim != dim:
        raise CorruptIndexError(
            folder, name, f"{recall.index.ntotal} vectors of dim {recall.dim}, the manifest says {n} of {dim}"
        )
    return recall


@contextmanager
def _reading(folder: Path, name: str) -> Iterator[None]:
    """Whatever a loader raises about a file that passed validation still names that file."""
    try:
        yield
    except IndexFormatError:
        raise
    except Exception as exc:
        raise CorruptIndexError(folder, name, f"cannot be read ({type(exc).__name__}: {exc})") from exc


def load_index(
    path: Path, expect_encoder: dict[str, Any] | None = None, with_sgpd: bool = True
) -> LoadedIndex:
    """Open a version (or a root's current version) with its FAISS indexes, if it has them, and the
    alternative methods' data (``with_sgpd``: also build SGPD's clusters, a k-means at load time)."""
    folder = resolve_version(path)
    validate_version(folder, check_faiss=False)  # FAISS files are checked as they load, below
    gallery, manifest = load_gallery(folder, expect_encoder)
    recalls: dict[str, DenseRecall | None] = {}
    for name, n in ((IMAGE_RECALL, manifest.n_images), (CAPTION_RECALL, manifest.n_captions)):
        recalls[name] = _faiss(folder, name, n, manifest.dim) if (folder / name).is_file() else None
    image_recall, caption_recall = recalls[IMAGE_RECALL], recalls[CAPTION_RECALL]
    with _reading(folder, TOMBSTONES):
        deleted = _positions(gallery.ids, read_tombstones(folder))
    with _reading(folder, "metadata.parquet"):
        metadata = load_metadata(folder, len(gallery.ids))
    with _reading(folder, "method arrays (ppsr/sar/hash/sgpd)"):
        extras, heads = load_extras(folder, gallery, with_sgpd)
    return LoadedIndex(
        folder, gallery, manifest, image_recall, caption_recall, deleted, metadata, extras, heads
    )


def _positions(ids: list[str], wanted: list[str]) -> NDArray[np.int64]:
    """Gallery indices of the ``wanted`` ids that exist, ascending (no index of all ids is built for
    none: at 1M ids that costs seconds of every start)."""
    if not wanted:
        return np.zeros(0, np.int64)
    asked = set(wanted)
    return np.asarray([i for i, ident in enumerate(ids) if ident in asked], np.int64)


def write_ids(folder: Path, ids: list[str]) -> None:
    """The version's image ids (file names), in gallery order."""
    write_text(folder / IMAGES, json.dumps(ids))


def read_ids(folder: Path) -> list[str]:
    ids: list[str] = json.loads((folder / IMAGES).read_text(encoding="utf-8"))
    return ids


def write_captions(folder: Path, texts: list[str], image_index: list[int]) -> None:
    """The caption texts and the gallery index of each one's image."""
    write_text(folder / CAPTIONS, json.dumps({"texts": texts, "image_index": image_index}))


def write_tombstones(folder: Path, ids: list[str]) -> None:
    """Ids deleted since the build: search never returns them."""
    write_text(folder / TOMBSTONES, json.dumps(ids))


def save_gallery(gallery: Gallery, folder: Path, manifest: Manifest) -> None:
    """Write ``gallery`` as one index version; the manifest goes last so a torn write is detectable."""
    folder.mkdir(parents=True, exist_ok=True)
    write_ids(folder, gallery.ids)
    save_npy(folder / "image_vectors.npy", np.asarray(gallery.vectors, dtype=np.float32))
    write_tokens(folder, "patches", np.asarray(gallery.patches[:]), manifest.token_codec)
    if gallery.captions is not None:
        c = gallery.captions
        write_captions(folder, c.texts, c.image_index.tolist())
        save_npy(folder / "caption_vectors.npy", np.asarray(c.vectors, dtype=np.float32))
        write_tokens(folder, "caption_tokens", np.asarray(c.tokens[:]), manifest.token_codec)
        save_npy(folder / "caption_mask.npy", np.asarray(c.mask, dtype=np.bool_))
    manifest.write(folder)


def load_gallery(folder: Path, expect_encoder: dict[str, Any] | None = None) -> tuple[Gallery, Manifest]:
    """Open an index version; ``expect_encoder`` (``ClipEncoder.describe()``) must match the manifest's."""
    manifest = Manifest.read(folder)
    if expect_encoder is not None:
        check_encoder(folder, manifest.encoder, expect_encoder)
    ids = json.loads((folder / IMAGES).read_text(encoding="utf-8"))
    captions = None
    if (folder / CAPTIONS).is_file():
        meta = json.loads((folder / CAPTIONS).read_text(encoding="utf-8"))
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


def check_encoder(folder: Path, built: dict[str, Any], running: dict[str, Any]) -> None:
    """:class:`IndexFormatError` naming both when the running encoder (``ClipEncoder.describe()``) is
    not the one the version at ``folder`` was built with (``built``: its manifest's ``encoder``)."""
    for key in ("arch", "checkpoint_sha256", "dim", "grid"):
        if built.get(key) != running.get(key):
            raise IndexFormatError(
                f"{folder} was built with {key}={built.get(key)!r} but the running encoder has "
                f"{key}={running.get(key)!r}; rebuild the index or load the matching model"
            )
