"""Query texts for load tests: real RS captions when the shared data is present, else SynthRS's."""

from __future__ import annotations

import json
from pathlib import Path

REAL_CAPTION_FILES = ("rsicd_test_caps.txt", "rsitmd_test_caps.txt", "rsicd_train_caps.txt")


def load_queries(source: Path | None, limit: int = 5000) -> list[str]:
    """Caption texts from ``source``: a ``*_caps.txt`` (one caption per line), a Karpathy
    ``dataset.json``, or a folder holding either; blank and duplicate lines are dropped."""
    texts: list[str] = []
    for path in _candidates(source):
        if path.suffix == ".txt":
            texts += path.read_text(encoding="utf-8").splitlines()
        elif path.suffix == ".json":
            doc = json.loads(path.read_text(encoding="utf-8"))
            texts += [s.get("raw", "") for img in doc.get("images", []) for s in img.get("sentences", [])]
        if len(texts) >= limit:
            break
    unique = list(dict.fromkeys(t.strip() for t in texts if t.strip()))
    if not unique:
        raise SystemExit(f"no query texts found in {source}")
    return unique[:limit]


def _candidates(source: Path | None) -> list[Path]:
    if source is None:
        return []
    if source.is_file():
        return [source]
    found = [source / name for name in REAL_CAPTION_FILES if (source / name).is_file()]
    found += [p for p in (source / "captions",) if p.is_dir() for p in _candidates(p)]
    if (source / "dataset.json").is_file():
        found.append(source / "dataset.json")
    return found
