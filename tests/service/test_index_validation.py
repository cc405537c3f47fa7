"""A corrupted index version is refused with one line naming the file and the problem (issue 21,
items 9 and 10): when it is opened (library), when the service starts on it (``rsir serve``: exit 2,
no traceback), and before ``rsir index use`` points CURRENT at it (CURRENT left unchanged).

Each corruption damages a private copy of the session's built index the way disks and interrupted
copies do: truncation, garbage, a count that disagrees with the manifest.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from rsir.index.versions import (
    CorruptIndexError,
    IndexFormatError,
    load_index,
    resolve_version,
    validate_version,
)
from tests.conftest import REPO, TEST_CONFIGS, TINY_ARCH
from tests.service.conftest import TinyIndex


def _truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def _edit_json(path: Path, change: Callable[[object], object]) -> None:
    path.write_text(json.dumps(change(json.loads(path.read_text()))))


def _manifest_dim(doc: object) -> object:
    assert isinstance(doc, dict)
    return {**doc, "dim": doc["dim"] * 2}


def _manifest_count(doc: object) -> object:
    assert isinstance(doc, dict)
    return {**doc, "n_images": doc["n_images"] + 1}


def _drop_one(doc: object) -> object:
    assert isinstance(doc, list)
    return doc[:-1]


# (file named in the error, how it is damaged, a word the problem must contain)
CORRUPTIONS: dict[str, tuple[str, Callable[[Path], object], str]] = {
    "recall.faiss truncated": ("recall.faiss", lambda v: _truncate(v / "recall.faiss"), "FAISS"),
    "recall.faiss garbage": (
        "recall.faiss",
        lambda v: (v / "recall.faiss").write_bytes(b"IxFI" + b"\0" * 40),
        "FAISS",
    ),
    "caption_recall.faiss truncated": (
        "caption_recall.faiss",
        lambda v: _truncate(v / "caption_recall.faiss", 0.9),
        "FAISS",
    ),
    "manifest.json truncated": ("manifest.json", lambda v: _truncate(v / "manifest.json"), "JSON"),
    "manifest.json dim": (
        "image_vectors.npy",
        lambda v: _edit_json(v / "manifest.json", _manifest_dim),
        "shape",
    ),
    "manifest.json count": (
        "images.json",
        lambda v: _edit_json(v / "manifest.json", _manifest_count),
        "entries",
    ),
    "images.json truncated": ("images.json", lambda v: _truncate(v / "images.json"), "JSON"),
    "images.json one id short": (
        "images.json",
        lambda v: _edit_json(v / "images.json", _drop_one),
        "entries",
    ),
    "images.json missing": ("images.json", lambda v: (v / "images.json").unlink(), "missing"),
    "image_vectors.npy truncated": (
        "image_vectors.npy",
        lambda v: _truncate(v / "image_vectors.npy"),
        "bytes",
    ),
    "patches truncated": ("patches.fp16.npy", lambda v: _truncate(v / "patches.fp16.npy", 0.99), "truncated"),
    "patches header garbage": (
        "patches.fp16.npy",
        lambda v: (v / "patches.fp16.npy").write_bytes(b"\x93NUMPY garbage"),
        ".npy",
    ),
    "caption tokens truncated": (
        "caption_tokens.fp16.npy",
        lambda v: _truncate(v / "caption_tokens.fp16.npy"),
        "truncated",
    ),
    "caption mask missing": ("caption_mask.npy", lambda v: (v / "caption_mask.npy").unlink(), "missing"),
    "caption_vectors truncated": (
        "caption_vectors.npy",
        lambda v: _truncate(v / "caption_vectors.npy"),
        "bytes",
    ),
    "captions.json truncated": ("captions.json", lambda v: _truncate(v / "captions.json"), "JSON"),
    "tombstones.json garbage": (
        "tombstones.json",
        lambda v: (v / "tombstones.json").write_text("{oops"),
        "JSON",
    ),
    "sources.json truncated": ("sources.json", lambda v: _truncate(v / "sources.json"), "JSON"),
    "sar_profiles truncated": ("sar_profiles.npy", lambda v: _truncate(v / "sar_profiles.npy"), "bytes"),
    "metadata.parquet truncated": ("metadata.parquet", lambda v: _truncate(v / "metadata.parquet"), "read"),
}


def _corrupt_copy(
    tiny_index: TinyIndex, tmp_path: Path, damage: Callable[[Path], object]
) -> tuple[Path, Path]:
    root = Path(shutil.copytree(tiny_index.root, tmp_path / "index", symlinks=True))
    version = resolve_version(root)
    damage(version)
    return root, version


@pytest.mark.parametrize("case", sorted(CORRUPTIONS))
def test_opening_a_corrupted_version_names_the_file(tiny_index: TinyIndex, tmp_path: Path, case: str):
    file, damage, word = CORRUPTIONS[case]
    root, version = _corrupt_copy(tiny_index, tmp_path, damage)
    with pytest.raises(IndexFormatError) as raised:
        load_index(root)
    message = str(raised.value)
    assert "\n" not in message.strip()
    assert file in message and word in message, message
    if isinstance(raised.value, CorruptIndexError):
        assert raised.value.file == file and raised.value.public.startswith(f"{version.name}/{file}: ")
        assert str(tmp_path) not in raised.value.public
    # The cheap check (no data read) finds all but the metadata table (read by its own loader).
    if file != "metadata.parquet":
        with pytest.raises(CorruptIndexError, match=file.replace(".", r"\.")):
            validate_version(version)


def test_the_intact_index_validates(tiny_index: TinyIndex):
    manifest = validate_version(resolve_version(tiny_index.root))
    assert manifest.n_images == len(tiny_index.ids)


def _rsir(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RSIR_")}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])
    return subprocess.run(
        [sys.executable, "-m", "rsir", *args], capture_output=True, text=True, timeout=120, env=env
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    "case",
    ["recall.faiss truncated", "manifest.json truncated", "images.json one id short", "patches truncated"],
)
def test_serve_on_a_corrupted_index_exits_2_with_one_line(tiny_index: TinyIndex, tmp_path: Path, case: str):
    file, damage, _ = CORRUPTIONS[case]
    root, _ = _corrupt_copy(tiny_index, tmp_path, damage)
    run = _rsir("serve", "--index", str(root), "--port", "1")
    assert run.returncode == 2, run.stderr[-2000:]
    assert "Traceback" not in run.stderr
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and file in lines[0], run.stderr


@pytest.mark.slow
def test_index_use_refuses_a_broken_version_and_keeps_current(tiny_index: TinyIndex, tmp_path: Path):
    root = Path(shutil.copytree(tiny_index.root, tmp_path / "index", symlinks=True))
    served = resolve_version(root).name
    shutil.copytree(root / served, root / "v0004")
    _truncate(root / "v0004" / "recall.faiss")
    before = (root / "CURRENT").read_text()
    run = _rsir("index", "use", "v0004", "--index", str(root))
    assert run.returncode == 2, run.stdout + run.stderr
    assert "recall.faiss" in run.stderr and "Traceback" not in run.stderr
    assert len([line for line in run.stderr.splitlines() if line.strip()]) == 1
    assert (root / "CURRENT").read_text() == before
    # A sound version is switched to, and an unknown one is refused listing the versions.
    shutil.copytree(root / served, root / "v0005")
    ok = _rsir("index", "use", "v0005", "--index", str(root))
    assert ok.returncode == 0, ok.stderr
    assert (root / "CURRENT").read_text().strip() == "v0005"
    unknown = _rsir("index", "use", "v0099", "--index", str(root))
    assert unknown.returncode == 2 and "v0005" in unknown.stderr


@pytest.mark.slow
def test_serve_on_an_index_of_another_model_exits_2_naming_both(tiny_index: TinyIndex):
    # The session's index was built with the tests' tiny model; ``rsir serve`` loads the default one.
    built = json.loads((resolve_version(tiny_index.root) / "manifest.json").read_text())["encoder"]["arch"]
    run = _rsir("serve", "--index", str(tiny_index.root), "--port", "1")
    assert run.returncode == 2, run.stderr[-2000:]
    assert "Traceback" not in run.stderr
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), run.stderr
    assert f"arch={built!r}" in lines[0] and "arch='rsir-vit-tiny'" in lines[0], lines[0]


_SERVE_COUNTING_READS = """
import json, sys
from pathlib import Path
import faiss, open_clip, uvicorn
from fastapi.testclient import TestClient
from rsir.cli import main
open_clip.add_model_config(Path(sys.argv[1]))
reads = []
read_index = faiss.read_index
faiss.read_index = lambda path, *rest: reads.append(Path(path).name) or read_index(path, *rest)

def run(server, *args, **kwargs):  # instead of listening: start the app, search once, stop
    with TestClient(server.config.app) as client:
        status = client.post("/search/text", json={"query": "boats", "k": 3}).status_code
    print(json.dumps({"reads": sorted(reads), "search": status}))

uvicorn.Server.run = run
sys.argv = ["rsir", "serve", "--index", sys.argv[2], "--port", "1"]
main()
"""


@pytest.mark.slow
def test_serve_reads_each_faiss_file_once(tiny_index: TinyIndex):
    # Before: validate_version read them before the server started, and load_index again at start-up.
    env = {k: v for k, v in os.environ.items() if not k.startswith("RSIR_")}
    env |= {"PYTHONPATH": str(REPO), "RSIR_MODEL": TINY_ARCH, "RSIR_DEVICE": "cpu", "RSIR_INDEX_POLL_S": "0"}
    run = subprocess.run(
        [sys.executable, "-c", _SERVE_COUNTING_READS, str(TEST_CONFIGS), str(tiny_index.root)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert report == {"reads": ["caption_recall.faiss", "recall.faiss"], "search": 200}, report
