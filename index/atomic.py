"""Atomic file writes: write beside the target, fsync, then rename over it.

A reader (or a resumed job) sees either the old file or the complete new one, never a torn write.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path`` atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        with tmp.open("rb") as fh:
            os.fsync(fh.fileno())
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def save_npy(path: Path, array: np.ndarray[Any, Any]) -> None:
    """``np.save`` through :func:`atomic_path`."""
    with atomic_path(path) as tmp, tmp.open("wb") as fh:
        np.save(fh, array)
