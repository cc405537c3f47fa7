"""Loaders for the caption files that remote-sensing retrieval benchmarks ship in.

Two layouts are read into one :class:`CaptionDataset` (images, captions, and caption -> image):

- Karpathy-style JSON (RSICD, UCM-captions, Sydney, the rs-real fixture):
  ``{"dataset": ..., "images": [{"filename", "split", "sentences": [{"raw"}], "filepath"?, ...}]}``.
- GaLR/AMFMN text pairs: ``{name}_caps.txt`` (one caption per line) and ``{name}_filename.txt``,
  whose lines are either one per caption (same count; consecutive equal names are one image) or one
  per image with exactly five consecutive captions each (caption count = 5 x filename count).

Image files are not opened or checked here: the caption-only benchmark sets have no images on this
machine. :func:`missing_images` reports them when a caller needs the images.

Caption order is file order and duplicates are kept, because the retrieval metrics treat every
caption line as its own query (see :mod:`rsir.model.metrics`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from rsir.model.errors import DatasetError

BlankPolicy = Literal["error", "skip"]

GALR_CAPTIONS_PER_IMAGE = 5
DEFAULT_SPLIT = "test"
# Karpathy bookkeeping (positions inside the file): meaningless once images are subset or re-indexed.
_KARPATHY_INDEX_KEYS = frozenset({"sentids", "imgid", "cocoid"})
_KARPATHY_RECORD_KEYS = frozenset({"filename", "filepath", "split", "sentences"})
_KNOWN_SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class ImageRecord:
    """One gallery image: its file name as listed, its resolved path, its split, and extra keys."""

    filename: str
    path: Path
    split: str
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class CaptionDataset:
    """Images and captions; ``caption_image[c]`` is the index into ``images`` of caption ``c``.

    An image may have any number of captions, including none.
    """

    name: str
    images: list[ImageRecord]
    captions: list[str]
    caption_image: list[int]

    def __post_init__(self) -> None:
        if len(self.captions) != len(self.caption_image):
            raise DatasetError(
                f"{self.name}: {len(self.captions)} captions but "
                f"{len(self.caption_image)} caption_image entries"
            )
        n = len(self.images)
        bad = next((c for c, i in enumerate(self.caption_image) if not 0 <= i < n), None)
        if bad is not None:
            raise DatasetError(
                f"{self.name}: caption {bad} points at image {self.caption_image[bad]}, "
                f"but there are {n} images"
            )

    @property
    def splits(self) -> list[str]:
        """The split names present, sorted."""
        return sorted({rec.split for rec in self.images})

    def split(self, name: str) -> CaptionDataset:
        """The images of split ``name`` with their captions; ``caption_image`` is re-indexed."""
        if name not in self.splits:
            raise DatasetError(f"{self.name}: no split {name!r}; available splits: {self.splits}")
        new_index: dict[int, int] = {}
        images: list[ImageRecord] = []
        for old, rec in enumerate(self.images):
            if rec.split == name:
                new_index[old] = len(images)
                images.append(rec)
        captions: list[str] = []
        caption_image: list[int] = []
        for cap, old in zip(self.captions, self.caption_image, strict=True):
            if old in new_index:
                captions.append(cap)
                caption_image.append(new_index[old])
        return CaptionDataset(name=self.name, images=images, captions=captions, caption_image=caption_image)

    def caption_image_array(self) -> NDArray[np.int64]:
        """``[Nc]`` int64 image index of each caption (the form :mod:`rsir.model.metrics` takes)."""
        return np.asarray(self.caption_image, dtype=np.int64)


def load_karpathy(
    json_path: Path,
    image_root: Path | None = None,
    split: str | None = None,
    *,
    on_blank: BlankPolicy = "error",
) -> CaptionDataset:
    """Read a Karpathy-style caption JSON.

    ``image_root`` defaults to ``json_path.parent / "images"`` when that folder exists, else to
    ``json_path.parent``; an image's path is ``image_root / filepath / filename`` (``filepath`` only
    when the entry has one). ``split`` keeps only that split. An entry without ``"split"`` is put in
    ``"test"``. Entries with an empty ``sentences`` list are kept as images without captions. Keys
    beyond the standard ones (e.g. ``"source"``, ``"scene"``) go to :attr:`ImageRecord.meta`, except
    Karpathy's position indices (``sentids``, ``imgid``, ``cocoid``), which subsetting would falsify.
    A blank ``raw`` caption raises unless ``on_blank="skip"``.
    """
    json_path = Path(json_path)
    try:
        data = json.loads(_read_text(json_path))
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{json_path}: not valid JSON ({exc})") from exc
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise DatasetError(f'{json_path}: expected a JSON object with an "images" list')
    if image_root is None:
        image_root = json_path.parent / "images"
        if not image_root.is_dir():
            image_root = json_path.parent
    image_root = Path(image_root)

    images: list[ImageRecord] = []
    captions: list[str] = []
    caption_image: list[int] = []
    first_entry: dict[str, int] = {}
    for idx, entry in enumerate(data["images"]):
        where = f'{json_path}: "images"[{idx}]'
        if not isinstance(entry, dict):
            raise DatasetError(f"{where} is not an object")
        filename = entry.get("filename")
        if not isinstance(filename, str) or not filename.strip():
            raise DatasetError(f'{where} has no "filename" string')
        filename = filename.strip()
        subdir = entry.get("filepath")
        if subdir is not None and not isinstance(subdir, str):
            raise DatasetError(f'{where} has a non-string "filepath"')
        rel = f"{subdir}/{filename}" if subdir else filename
        if rel in first_entry:
            # A second gallery copy of one image would make its own captions count as misses.
            raise DatasetError(f"{where} repeats image {rel!r} of entry {first_entry[rel]}")
        first_entry[rel] = idx
        split_name = entry.get("split", DEFAULT_SPLIT)
        if not isinstance(split_name, str) or not split_name:
            raise DatasetError(f'{where} has an invalid "split" {split_name!r}')
        sentences = entry.get("sentences")
        if not isinstance(sentences, list):
            raise DatasetError(f'{where} has no "sentences" list')
        image_idx = len(images)
        for s_idx, sent in enumerate(sentences):
            raw = sent.get("raw") if isinstance(sent, dict) else None
            if not isinstance(raw, str):
                raise DatasetError(f'{where} "sentences"[{s_idx}] has no "raw" string')
            text = raw.strip()
            if not text:
                if on_blank == "skip":
                    continue
                raise DatasetError(f'{where} "sentences"[{s_idx}] has a blank "raw" caption')
            captions.append(text)
            caption_image.append(image_idx)
        meta = {
            k: v for k, v in entry.items() if k not in _KARPATHY_RECORD_KEYS and k not in _KARPATHY_INDEX_KEYS
        }
        path = image_root / subdir / filename if subdir else image_root / filename
        images.append(ImageRecord(filename=filename, path=path, split=split_name, meta=meta))

    name = data.get("dataset")
    ds = CaptionDataset(
        name=name if isinstance(name, str) and name else json_path.stem,
        images=images,
        captions=captions,
        caption_image=caption_image,
    )
    return ds if split is None else ds.split(split)


def load_galr(
    caps_txt: Path,
    filename_txt: Path,
    image_root: Path,
    split: str = DEFAULT_SPLIT,
    *,
    on_blank: BlankPolicy = "error",
) -> CaptionDataset:
    """Read a GaLR/AMFMN ``*_caps.txt`` + ``*_filename.txt`` pair; every image gets split ``split``.

    The layout is told apart by line counts: equal counts mean one filename line per caption
    (consecutive equal names are one image; a name that comes back later is an error), and
    ``captions == 5 x filenames`` means one line per image with five consecutive captions each. Lines
    are stripped of surrounding whitespace. A blank filename line always raises; a blank caption line
    raises unless ``on_blank="skip"``, which drops it (its image keeps its place; real RSITMD train
    has four images whose five caption lines are all blank).
    """
    caps_txt, filename_txt, image_root = Path(caps_txt), Path(filename_txt), Path(image_root)
    caps = _read_lines(caps_txt)
    names = _read_lines(filename_txt)
    if not caps or not names:
        raise DatasetError(
            f"{caps_txt} ({len(caps)} lines) / {filename_txt} ({len(names)} lines): empty caption set"
        )
    for n, fname in enumerate(names, start=1):
        if not fname:
            raise DatasetError(f"{filename_txt}: line {n} is blank")

    # image index per caption line, from whichever layout the counts say this is
    owner: list[int] = []
    images: list[str] = []
    if len(caps) == len(names):
        seen: dict[str, int] = {}  # name -> line of its first run
        for n, fname in enumerate(names, start=1):
            if not images or images[-1] != fname:
                if fname in seen:
                    raise DatasetError(
                        f"{filename_txt}: line {n} lists {fname!r} again after other images (first at "
                        f"line {seen[fname]}); captions of one image must be consecutive"
                    )
                seen[fname] = n
                images.append(fname)
            owner.append(len(images) - 1)
    elif len(caps) == GALR_CAPTIONS_PER_IMAGE * len(names):
        first_line: dict[str, int] = {}
        for n, fname in enumerate(names, start=1):
            if fname in first_line:
                raise DatasetError(f"{filename_txt}: line {n} repeats {fname!r} of line {first_line[fname]}")
            first_line[fname] = n
        images = names
        owner = [c // GALR_CAPTIONS_PER_IMAGE for c in range(len(caps))]
    else:
        raise DatasetError(
            f"{caps_txt} has {len(caps)} caption lines and {filename_txt} has {len(names)} filename "
            f"lines: expected equal counts (one name per caption) or {GALR_CAPTIONS_PER_IMAGE} captions "
            "per name"
        )

    captions: list[str] = []
    caption_image: list[int] = []
    for n, (cap, img) in enumerate(zip(caps, owner, strict=True), start=1):
        if not cap:
            if on_blank == "skip":
                continue
            raise DatasetError(f"{caps_txt}: line {n} is a blank caption")
        captions.append(cap)
        caption_image.append(img)
    records = [ImageRecord(filename=f, path=image_root / f, split=split) for f in images]
    name = caps_txt.name.removesuffix(".txt").removesuffix("_caps")
    return CaptionDataset(name=name, images=records, captions=captions, caption_image=caption_image)


def load_dataset(
    path: Path,
    image_root: Path | None = None,
    split: str | None = None,
    *,
    on_blank: BlankPolicy = "error",
) -> CaptionDataset:
    """Load by what ``path`` is.

    - a ``.json`` file: :func:`load_karpathy`;
    - a directory holding ``dataset.json``: :func:`load_karpathy` on it;
    - a ``*_caps.txt`` file: :func:`load_galr` with the sibling ``*_filename.txt``; ``image_root`` is
      required (the text files say nothing about where images live). The images' split label is the
      file name's ``_train``/``_val``/``_test`` suffix, else ``split``, else ``"test"``.

    ``split``, when given, keeps only that split (an error if the file has no such split).
    """
    path = Path(path)
    if path.is_dir():
        candidate = path / "dataset.json"
        if not candidate.is_file():
            raise DatasetError(f"{path}: directory has no dataset.json")
        return load_karpathy(candidate, image_root, split, on_blank=on_blank)
    if not path.exists():
        raise DatasetError(f"{path}: no such file or directory")
    if path.suffix.lower() == ".json":
        return load_karpathy(path, image_root, split, on_blank=on_blank)
    if path.name.endswith("_caps.txt"):
        stem = path.name.removesuffix("_caps.txt")
        names_file = path.with_name(f"{stem}_filename.txt")
        if not names_file.is_file():
            raise DatasetError(f"{path}: the matching filename list {names_file} does not exist")
        if image_root is None:
            raise DatasetError(f"{path}: a GaLR caption file needs image_root (where its images live)")
        suffix = stem.rsplit("_", 1)[-1]
        label = suffix if suffix in _KNOWN_SPLITS else (split or DEFAULT_SPLIT)
        ds = load_galr(path, names_file, image_root, label, on_blank=on_blank)
        return ds if split is None else ds.split(split)
    raise DatasetError(f"{path}: not a dataset (expected a .json file, a *_caps.txt file, or a folder)")


def missing_images(ds: CaptionDataset) -> list[str]:
    """Paths (as strings, in dataset order) of the images that are not existing files."""
    return [str(rec.path) for rec in ds.images if not rec.path.is_file()]


def _read_text(path: Path) -> str:
    try:
        # utf-8-sig: files saved by Windows editors start with a BOM that would stick to line 1.
        return path.read_text(encoding="utf-8-sig")
    except FileNotFoundError as exc:
        raise DatasetError(f"{path}: no such file") from exc
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{path}: not UTF-8 text ({exc})") from exc
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read ({exc})") from exc


def _read_lines(path: Path) -> list[str]:
    """Stripped lines; a final newline does not make an extra empty line."""
    # split("\n") rather than splitlines(): the latter also breaks on \x0c, \x1c, \u2028 ..., which
    # can occur inside a caption and would shift every later caption onto the wrong image.
    lines = _read_text(path).split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line.strip() for line in lines]
