"""The errors of opening an index version, apart from the code that opens one: the modules that read a
version's parts (metadata, extras) raise them too, and must not import :mod:`rsir.index.versions`."""

from __future__ import annotations

from pathlib import Path

from rsir.model.errors import RsirError


class IndexFormatError(RsirError):
    """An index directory is incomplete, of another format version, or made by another encoder."""


class CorruptIndexError(IndexFormatError):
    """One file of a version is missing, unreadable or disagrees with the manifest.

    ``str()`` names the file by its full path (for the operator's terminal); ``public`` names it by
    version and file name only (for HTTP answers, which must not say where the index lives).
    """

    def __init__(self, folder: Path, file: str, problem: str) -> None:
        super().__init__(f"{folder / file}: {problem}")
        self.version, self.file = folder.name, file
        # Library messages (FAISS's) may quote the path themselves.
        self.problem = problem.replace(str(folder / file), file).replace(str(folder), folder.name)

    @property
    def public(self) -> str:
        return f"{self.version}/{self.file}: {self.problem}"
