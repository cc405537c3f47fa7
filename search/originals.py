"""Where each indexed image's original bytes are: a version's ``sources.json``, and reading them back.

``sources.json`` maps an image id to ``[path]`` (a file) or ``[path, offset, size]`` (a member's byte
range in an uncompressed tar shard), with absolute paths, so a server can return the exact uploaded
bytes without keeping a copy: the archive stays where it was indexed from.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from model.errors import RsirError
from search.atomic import write_text

SOURCES_FILE = "sources.json"

# (absolute path, byte offset, byte size); offset and size are None for a whole file.
Source = tuple[str, int | None, int | None]


class OriginalUnavailableError(RsirError):
    """An image's original bytes cannot be read: its file moved, shrank or was never recorded."""


def source_of(path: Path, span: tuple[int, int] | None = None) -> Source:
    """The entry of a file, or of the byte range ``span`` (offset, size) of a tar shard."""
    absolute = str(Path(path).resolve())
    return (absolute, None, None) if span is None else (absolute, int(span[0]), int(span[1]))


def sources_json(sources: Mapping[str, Source]) -> str:
    """The text of ``sources.json``; a whole file is written ``[path]`` rather than with nulls."""
    doc = {ident: [p] if off is None else [p, off, size] for ident, (p, off, size) in sources.items()}
    return json.dumps(doc)


def write_sources(folder: Path, sources: Mapping[str, Source]) -> None:
    write_text(Path(folder) / SOURCES_FILE, sources_json(sources))


def read_sources(folder: Path) -> dict[str, Source]:
    """``{id: source}`` of a version; empty when the version has no ``sources.json`` (built before it)."""
    path = Path(folder) / SOURCES_FILE
    if not path.is_file():
        return {}
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise OriginalUnavailableError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise OriginalUnavailableError(f"{path}: expected an object mapping ids to sources")
    return {str(ident): _parse(value, f"{path}: entry {ident!r}") for ident, value in doc.items()}


def _parse(value: Any, where: str) -> Source:
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], str):
        return (value[0], None, None)
    if (
        isinstance(value, list)
        and len(value) == 3
        and isinstance(value[0], str)
        and all(isinstance(v, int) and v >= 0 for v in value[1:])
    ):
        return (value[0], value[1], value[2])
    raise OriginalUnavailableError(f"{where} must be [path] or [path, offset, size], got {value!r}")


def read_original(entry: Source) -> bytes:
    """The bytes ``entry`` points at: the whole file, or exactly ``size`` bytes from ``offset``."""
    path, offset, size = entry
    try:
        with open(path, "rb") as fh:
            if offset is None or size is None:
                return fh.read()
            fh.seek(offset)
            data = fh.read(size)
    except OSError as exc:
        raise OriginalUnavailableError(f"original image {path} cannot be read: {exc}") from exc
    if len(data) != size:
        raise OriginalUnavailableError(
            f"{path}: the original at byte {offset} is cut short ({len(data)} of {size} bytes); "
            "the archive changed since it was indexed"
        )
    return data
