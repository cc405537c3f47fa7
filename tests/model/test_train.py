"""A short training run lowers the loss, resumes exactly, and exports loadable weights."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from rsir.model.datasets import load_dataset
from rsir.model.encoders import ClipEncoder, EncoderConfig
from rsir.model.train import TrainConfig, batch_groups, epoch_order, train
from tests.conftest import TINY_ARCH, random_images

COLOURS = ["red", "grey", "white", "green"]


def _dataset(root: Path, n: int = 16) -> Path:
    (root / "images").mkdir(parents=True)
    entries = []
    for i, img in enumerate(random_images(n, seed=8, size=(64, 64))):
        img.save(root / "images" / f"{i}.png")
        sentences = [{"raw": f"{i % 5 + 1} {COLOURS[i % 4]} planes near runway {i} ."} for _ in range(2)]
        entries.append({"filename": f"{i}.png", "split": "train", "sentences": sentences})
    (root / "dataset.json").write_text(json.dumps({"dataset": "t", "images": entries}))
    return root / "dataset.json"


def _config(**kw: object) -> TrainConfig:
    base: dict[str, object] = dict(
        arch=TINY_ARCH, batch_size=8, lr=2e-3, warmup_steps=2, epochs=12, device="cpu", save_every=3
    )
    base.update(kw)
    return TrainConfig(**base)  # type: ignore[arg-type]


def test_training_lowers_the_loss_and_exports_open_clip_weights(tmp_path: Path) -> None:
    ds = load_dataset(_dataset(tmp_path / "data"), split="train")
    report = train(_config(), ds, tmp_path / "run")
    assert report.steps == 24 and report.epochs_done == 12
    assert report.last_loss < 0.7 * report.first_loss
    state = load_file(str(report.weights))
    assert state["visual.proj"].dtype == torch.float16
    enc = ClipEncoder(EncoderConfig(arch=TINY_ARCH, checkpoint=report.weights, device="cpu"))
    assert enc.encode_texts(["red planes"]).vectors.shape == (1, 32)


def test_resume_gives_the_same_weights_as_one_run(tmp_path: Path) -> None:
    ds = load_dataset(_dataset(tmp_path / "data"), split="train")
    straight = train(_config(epochs=3), ds, tmp_path / "straight")
    # Stop after 3 steps (mid-epoch 1, right after a save), then resume to the end.
    stopped = train(_config(epochs=3, max_steps=3), ds, tmp_path / "split")
    assert stopped.steps == 3
    (tmp_path / "split" / "weights.safetensors").unlink()
    resumed = train(_config(epochs=3), ds, tmp_path / "split")
    assert resumed.steps == straight.steps == 6
    a, b = load_file(str(straight.weights)), load_file(str(resumed.weights))
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_fine_only_group_negatives_train_and_need_groups(tmp_path: Path) -> None:
    ds = load_dataset(_grouped_dataset(tmp_path / "data"), split="train")
    report = train(_config(group_key="scene.family", group_negatives="fine", epochs=6), ds, tmp_path / "run")
    assert report.last_loss < report.first_loss
    # The same batches with every term seeing the twins start from a higher loss (more negatives).
    plain = train(_config(group_key="scene.family", max_steps=1), ds, tmp_path / "all")
    assert plain.first_loss > report.first_loss
    with pytest.raises(ValueError, match="needs group_key"):
        _config(group_negatives="fine")
    with pytest.raises(ValueError, match="group_negatives must be"):
        _config(group_key="scene.family", group_negatives="coarse")


def test_bf16_training_lowers_the_loss_and_keeps_float32_weights(tmp_path: Path) -> None:
    ds = load_dataset(_dataset(tmp_path / "data"), split="train")
    report = train(_config(precision="bf16"), ds, tmp_path / "run")
    assert report.last_loss < 0.7 * report.first_loss
    saved = torch.load(tmp_path / "run" / "last.pt", map_location="cpu", weights_only=False)
    # Autocast changes the arithmetic of the forward pass, not the dtype of what is trained.
    assert saved["model"]["visual.proj"].dtype == torch.float32
    # And it does change the arithmetic: the first step's loss differs from a float32 run's.
    plain = train(_config(max_steps=1), ds, tmp_path / "plain")
    bf16 = train(_config(max_steps=1, precision="bf16"), ds, tmp_path / "bf16")
    assert plain.first_loss != bf16.first_loss
    assert bf16.first_loss == pytest.approx(plain.first_loss, rel=0.05)


def test_unknown_precision_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="precision must be one of"):
        _config(precision="fp8")


def test_too_small_dataset_is_a_clear_error(tmp_path: Path) -> None:
    ds = load_dataset(_dataset(tmp_path / "data", n=4), split="train")
    with pytest.raises(ValueError, match="fewer than one batch"):
        train(_config(), ds, tmp_path / "run")


def _grouped_dataset(root: Path, n: int = 24) -> Path:
    """Pairs of images (families 0..n/2-1) in the SynthRS layout ``scene.family``; image 5 has none."""
    path = _dataset(root, n)
    data = json.loads(path.read_text())
    for i, entry in enumerate(data["images"]):
        if i != 5:
            entry["scene"] = {"family": i // 2, "variant": i % 2}
    path.write_text(json.dumps(data))
    return path


def test_batch_groups_label_images_by_their_metadata_key(tmp_path: Path) -> None:
    ds = load_dataset(_grouped_dataset(tmp_path / "data"), split="train")
    groups = batch_groups(ds, "scene.family")
    assert [groups[2 * f] == groups[2 * f + 1] for f in range(12) if f != 2] == [True] * 11
    assert len({groups[2 * f] for f in range(12)}) == 12
    assert groups[5] not in np.delete(groups, 5)  # no key: a group of its own
    with pytest.raises(ValueError, match=r"scene\.famly"):
        batch_groups(ds, "scene.famly")


def test_grouped_epochs_visit_each_image_once_with_its_group_adjacent() -> None:
    usable = np.arange(30)
    groups = np.repeat(np.arange(10), 3)  # groups of three consecutive images
    orders = []
    for epoch in range(4):
        order = epoch_order(usable, groups, np.random.default_rng([0, epoch]))
        assert sorted(order.tolist()) == usable.tolist()
        # Each group's three members are consecutive in the visit order.
        labels = groups[order]
        assert [len(set(labels[i : i + 3])) for i in range(0, 30, 3)] == [1] * 10
        orders.append(order.tolist())
    assert len({tuple(o) for o in orders}) == 4  # the group order and the order within groups vary
    plain = epoch_order(usable, None, np.random.default_rng(0))
    assert sorted(plain.tolist()) == usable.tolist()


def test_grouped_training_runs_and_lowers_the_loss(tmp_path: Path) -> None:
    ds = load_dataset(_grouped_dataset(tmp_path / "data"), split="train")
    report = train(_config(group_key="scene.family", epochs=6), ds, tmp_path / "run")
    assert report.steps == 18
    assert report.last_loss < report.first_loss
