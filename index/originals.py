"""Where each indexed image's original bytes are: a version's ``sources.json``, and reading them back.

A server returns the exact indexed bytes without keeping a copy: the archive stays where it is, and
``sources.json`` says where in it each image is, how many bytes it had and their hash at build time.

Format 2 (written now)::

    {"format": 2, "root": "/data/archive", "hash": "sha256-128",
     "items": {"<id>": ["rel/path.png", null, 48213, "<hex>"],          # a whole file
               "<id>": ["shard-000.tar", 1536, 48213, "<hex>"]}}       # a member's byte range

Paths are relative to ``root``, the archive root as the builder saw it. A server resolves them
against its own ``RSIR_ARCHIVE_ROOT`` when set (the archive mounted somewhere else: another machine,
a pod), else against ``root``. Size and hash let it refuse an original that changed since indexing
instead of serving it "as indexed".

Format 1 (versions built before): ``{"<id>": [absolute path]}`` or ``[absolute path, offset, size]``;
still read, served from those absolute paths, with no hash to check.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from rsir.index.atomic import write_text
from rsir.model.errors import RsirError

SOURCES_FILE = "sources.json"
FORMAT = 2
HASH = "sha256-128"


class OriginalUnavailableError(RsirError):
    """An image's original bytes cannot be read: its file moved, shrank or was never recorded."""


class OriginalChangedError(OriginalUnavailableError):
    """An image's original file still reads, but its bytes are not the ones that were indexed."""


def digest(data: bytes) -> str:
    """The hash recorded per original: SHA-256 cut to 128 bits (enough to tell a changed file). SHA-256,
    not BLAKE2b: OpenSSL runs it on the CPU's SHA instructions, 1.3-2x faster on the development
    machine (BENCHMARKS.md, "Opening an index version")."""
    return hashlib.sha256(data).hexdigest()[:32]


@dataclass(frozen=True)
class Original:
    """One image's original: ``path`` (relative to the archive root; absolute in format 1), the byte
    ``offset`` of a tar member (None: the whole file), and the ``size`` and ``digest`` of its bytes at
    build time (None in format 1, where a whole file's size was not recorded)."""

    path: str
    offset: int | None = None
    size: int | None = None
    digest: str | None = None


@dataclass(frozen=True)
class Sources:
    """A version's originals: ``root`` is the archive root at build time (None in format 1)."""

    root: str | None
    items: dict[str, Original]

    def get(self, ident: str) -> Original | None:
        return self.items.get(ident)

    def __len__(self) -> int:
        return len(self.items)

    def locate(self, entry: Original, archive_root: Path | None = None) -> Path:
        """The file holding ``entry``'s bytes: its relative path under ``archive_root`` (the server's
        setting) or else under the recorded root; format 1's absolute paths as they are."""
        path = PurePosixPath(entry.path)
        if path.is_absolute():
            return Path(path)
        base = archive_root if archive_root is not None else self.root
        if base is None:
            raise OriginalUnavailableError("sources.json records a relative path but no archive root")
        if ".." in path.parts:  # a hand-edited sources.json must not reach outside the archive
            raise OriginalUnavailableError(f"sources.json path {entry.path!r} leaves the archive root")
        return Path(base) / path


def archive_root_of(archive: Path) -> Path:
    """The default archive root of ``--archive``: the folder itself, or the folder holding a file."""
    archive = Path(archive).resolve()
    return archive if archive.is_dir() else archive.parent


def common_root(root: Path, paths: Iterable[Path]) -> Path:
    """``root``, widened to the deepest folder that also holds every file of ``paths`` (absolute)."""
    folders = {str(Path(p).parent) for p in paths}
    return Path(os.path.commonpath([str(root), *folders])) if folders else root


def relative_to(root: Path, path: Path) -> str:
    return Path(path).relative_to(root).as_posix()


def sources_json(sources: Sources) -> str:
    items = {ident: [e.path, e.offset, e.size, e.digest] for ident, e in sorted(sources.items.items())}
    return json.dumps({"format": FORMAT, "root": sources.root, "hash": HASH, "items": items})


def write_sources(folder: Path, sources: Sources) -> None:
    write_text(Path(folder) / SOURCES_FILE, sources_json(sources))


def read_sources(folder: Path) -> Sources:
    """A version's sources; empty when the version has no ``sources.json`` (built before it)."""
    path = Path(folder) / SOURCES_FILE
    if not path.is_file():
        return Sources(None, {})
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise OriginalUnavailableError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise OriginalUnavailableError(f"{path}: expected an object mapping ids to sources")
    if isinstance(doc.get("format"), int):
        return _parse_v2(doc, path)
    return Sources(None, {str(i): _parse_v1(v, f"{path}: entry {i!r}") for i, v in doc.items()})


def _parse_v2(doc: Mapping[str, Any], path: Path) -> Sources:
    if doc["format"] != FORMAT or doc.get("hash") != HASH:
        raise OriginalUnavailableError(
            f"{path}: format {doc['format']} with hash {doc.get('hash')!r}; this rsir reads format "
            f"{FORMAT} with {HASH}"
        )
    root, items = doc.get("root"), doc.get("items")
    if not isinstance(root, str) or not isinstance(items, dict):
        raise OriginalUnavailableError(f"{path}: format 2 needs a string 'root' and an object 'items'")
    return Sources(root, {str(i): _parse_v2_entry(v, f"{path}: entry {i!r}") for i, v in items.items()})


def _parse_v2_entry(value: Any, where: str) -> Original:
    if (
        isinstance(value, list)
        and len(value) == 4
        and isinstance(value[0], str)
        and (value[1] is None or (isinstance(value[1], int) and value[1] >= 0))
        and isinstance(value[2], int)
        and value[2] >= 0
        and isinstance(value[3], str)
    ):
        return Original(value[0], value[1], value[2], value[3])
    raise OriginalUnavailableError(f"{where} must be [path, offset or null, size, hash], got {value!r}")


def _parse_v1(value: Any, where: str) -> Original:
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], str):
        return Original(value[0])
    if (
        isinstance(value, list)
        and len(value) == 3
        and isinstance(value[0], str)
        and all(isinstance(v, int) and v >= 0 for v in value[1:])
    ):
        return Original(value[0], value[1], value[2])
    raise OriginalUnavailableError(f"{where} must be [path] or [path, offset, size], got {value!r}")


def read_original(path: Path, entry: Original) -> bytes:
    """The bytes of ``entry`` from the file ``path`` (see :meth:`Sources.locate`), checked against the
    size and hash recorded at build time.

    Raises :class:`OriginalChangedError` when they differ, :class:`OriginalUnavailableError` when the
    file cannot be read or is cut short.
    """
    try:
        with open(path, "rb") as fh:
            if entry.offset is None:
                data = fh.read()
            else:
                fh.seek(entry.offset)
                data = fh.read(entry.size if entry.size is not None else -1)
    except OSError as exc:
        raise OriginalUnavailableError(f"original image {path} cannot be read: {exc}") from exc
    if entry.size is not None and len(data) != entry.size:
        where = f" at byte {entry.offset}" if entry.offset is not None else ""
        raise OriginalChangedError(
            f"{path}: the original{where} is {len(data)} bytes, {entry.size} when indexed; "
            "the archive changed since it was indexed"
        )
    if entry.digest is not None and digest(data) != entry.digest:
        raise OriginalChangedError(
            f"{path}: the original's bytes differ from the ones indexed ({HASH} mismatch); "
            "the archive changed since it was indexed"
        )
    return data
