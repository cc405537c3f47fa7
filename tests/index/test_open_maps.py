"""Opening a version reads none of its large arrays: they are memory-mapped and untouched until a query
gathers rows, so a server's resident memory at start does not grow with the token store (issue 24).

Checked with the kernel's own accounting: ``/proc/self/smaps`` gives, per mapping, the pages this
process has touched (``Rss``); a file that was mapped but never read has none."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bench.scale_index import mixture_seeds, write_scale_version
from rsir.index.versions import load_index
from rsir.search.engine import EngineConfig, QueryOptions, SearchEngine

DIM, GRID, N = 64, (7, 7), 2000
ENCODER = {"arch": "maps-test", "checkpoint_sha256": None, "dim": DIM, "grid": list(GRID)}
# Arrays whose size grows with the gallery's token store or vectors: never read by opening.
LARGE = (
    "patches.int8.npy",
    "caption_tokens.int8.npy",
    "image_vectors.npy",
    "caption_vectors.npy",
    "recall.faiss",
    "caption_recall.faiss",
)
PAGE_SLACK_KIB = 64  # a header and the kernel's fault-around (16 pages), never the data
MAPPING = re.compile(r"^[0-9a-f]+-[0-9a-f]+ ")  # the first line of a mapping in smaps


def mapped_rss_kib(folder: Path) -> dict[str, int]:
    """Resident KiB of this process's mappings of files in ``folder``, by file name."""
    folder = folder.resolve()  # smaps names files by their real paths
    out: dict[str, int] = {}
    current: str | None = None
    for line in Path("/proc/self/smaps").read_text().splitlines():
        fields = line.split()
        if MAPPING.match(line):  # a mapping's first line; a file's has its path as the sixth field
            path = Path(fields[5]) if len(fields) >= 6 and fields[5].startswith("/") else None
            current = path.name if path is not None and path.parent == folder else None
        elif current is not None and fields[:1] == ["Rss:"]:
            out[current] = out.get(current, 0) + int(fields[1])
    return out


@pytest.fixture(scope="module")
def version(tmp_path_factory: pytest.TempPathFactory) -> Path:
    seeds = mixture_seeds(np.random.default_rng(0), DIM, GRID[0] * GRID[1], 2, 8, [])
    root = tmp_path_factory.mktemp("maps")
    folder, _ = write_scale_version(root, N, encoder=ENCODER, per_image=2, codec="int8", seeds=seeds)
    return folder


def probe(version: Path) -> dict[str, dict[str, int]]:
    """In a fresh process (no mapping of the version's files left from writing it): the mapped
    resident KiB after opening and after one batch of FTF queries, and whether SGPD's inverted index
    is the build's file, mapped (not coded again from the vectors)."""
    version = Path(version)
    loaded = load_index(version)
    engine = SearchEngine.from_index(loaded, None, EngineConfig(device="cpu"))
    opened = mapped_rss_kib(version)
    sgpd = loaded.extras["images"].sgpd
    base = sgpd.inverted.indices if sgpd is not None else None
    while base is not None and not isinstance(base, np.memmap):
        base = getattr(base, "base", None)
    postings = isinstance(base, np.memmap) and Path(str(base.filename)).name == "sgpd_postings_indices.npy"
    engine.search(
        loaded.gallery.caption_features(np.arange(4)), QueryOptions(k=10, recall_k=100, rerank="ftf")
    )
    return {"opened": opened, "queried": mapped_rss_kib(version), "postings_mapped": {"yes": int(postings)}}


@pytest.mark.slow
def test_opening_reads_no_large_array_until_a_query(version: Path) -> None:
    code = f"from tests.index.test_open_maps import probe; print(json.dumps(probe({str(version)!r})))"
    code = "import json; " + code
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    found = json.loads(done.stdout.strip().splitlines()[-1])
    opened, queried = found["opened"], found["queried"]
    for name in LARGE:
        assert name in opened, f"{name} is not memory-mapped: {sorted(opened)}"
        assert opened[name] <= PAGE_SLACK_KIB, f"opening read {opened[name]} KiB of {name}"
    assert found["postings_mapped"]["yes"] == 1
    # The check can see reading: a query gathers its candidates' tokens, and their pages appear.
    assert queried["patches.int8.npy"] > opened["patches.int8.npy"] + PAGE_SLACK_KIB
