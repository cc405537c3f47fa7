"""An archive on disk in each layout the builder reads, made of small random images."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest
from PIL import Image

from tests.conftest import random_images


def png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def write_folder(root: Path, n: int, seed: int = 0, prefix: str = "img") -> list[str]:
    """``n`` PNGs (every third one in a sub-folder); returns their ids (relative paths), sorted."""
    ids = []
    for i, image in enumerate(random_images(n, seed)):
        rel = f"sub/{prefix}{i:03d}.png" if i % 3 == 2 else f"{prefix}{i:03d}.png"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        image.save(root / rel)
        ids.append(rel)
    return sorted(ids)


def add_bad_files(root: Path) -> dict[str, str]:
    """One file of each kind the builder must skip, with a word its reason must contain."""
    good = png_bytes(random_images(1, seed=99)[0])
    (root / "empty.png").write_bytes(b"")
    (root / "notes.jpg").write_text("this is not an image")
    (root / "cut.png").write_bytes(good[: len(good) // 2])
    bomb = Image.new("L", (9000, 9000))  # 81 MP: over the 64 MP limit, yet a tiny PNG file
    bomb.save(root / "bomb.png", optimize=True)
    return {"empty.png": "empty", "notes.jpg": "format", "cut.png": "truncated", "bomb.png": "over the limit"}


@pytest.fixture
def folder_archive(tmp_path: Path) -> tuple[Path, list[str]]:
    root = tmp_path / "archive"
    return root, write_folder(root, 11)


def write_tar_shards(folder: Path, n: int, per_shard: int, seed: int = 0) -> dict[str, list[str]]:
    """webdataset-style shards: ``key.png`` + ``key.txt`` (captions) or ``key.json`` (captions + meta)."""
    folder.mkdir(parents=True, exist_ok=True)
    captions: dict[str, list[str]] = {}
    images = random_images(n, seed)
    for s in range(0, n, per_shard):
        with tarfile.open(folder / f"shard-{s // per_shard:03d}.tar", "w") as tar:
            for i in range(s, min(s + per_shard, n)):
                key = f"tile{i:04d}"
                caps = [f"caption {j} of tile {i}" for j in range(1 + i % 3)]
                captions[key] = caps
                if i % 2:
                    side = ("txt", "\n".join(caps).encode())
                else:
                    side = ("json", json.dumps({"captions": caps, "sensor": "synth"}).encode())
                for ext, data in (("png", png_bytes(images[i])), side):
                    info = tarfile.TarInfo(f"{key}.{ext}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    return captions
