"""Shared fixtures: tiny seeded models and images, and the path of the real data beside the repo."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image

from rsir.model.encoders import ClipEncoder, EncoderConfig, build_model

REPO = Path(__file__).resolve().parents[1]
TEST_CONFIGS = Path(__file__).parent / "fixtures" / "model_configs"
TINY_ARCH = "test-vit-tiny"


def shared_data() -> Path:
    return Path(os.environ.get("RSIR_SHARED_DATA", REPO.parent / "shared" / "data"))


def require_shared(sub: str) -> Path:
    path = shared_data() / sub
    if not path.exists():
        pytest.skip(f"real data not available at {path} (set RSIR_SHARED_DATA to its folder)")
    return path


@pytest.fixture(scope="session", autouse=True)
def _test_model_configs() -> None:
    open_clip.add_model_config(TEST_CONFIGS)


@pytest.fixture(scope="session")
def tiny_encoder(_test_model_configs: None) -> ClipEncoder:
    torch.manual_seed(0)
    return ClipEncoder(
        EncoderConfig(arch=TINY_ARCH, device="cpu", batch_size=4), model=build_model(TINY_ARCH)
    )


def random_images(n: int, seed: int = 0, size: tuple[int, int] = (72, 96)) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (size[0], size[1], 3), dtype=np.uint8)) for _ in range(n)]
