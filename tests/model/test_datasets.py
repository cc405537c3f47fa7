"""Caption loaders on tiny files written per test, and on the real benchmark files when present."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rsir.model.datasets import (
    CaptionDataset,
    ImageRecord,
    load_dataset,
    load_galr,
    load_karpathy,
    missing_images,
)
from rsir.model.errors import DatasetError
from tests.conftest import require_shared


def _write_json(path: Path, data: Any) -> Path:
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def _entry(filename: str, split: str, *captions: str, **extra: Any) -> dict[str, Any]:
    return {"filename": filename, "split": split, "sentences": [{"raw": c} for c in captions], **extra}


KARPATHY = {
    "dataset": "tiny",
    "images": [
        _entry("a.jpg", "train", "a one ", "a two", source="RSICD", sentids=[0, 1], imgid=0),
        _entry("b.tif", "test", "b one", "b one", "b three", filepath="sub", scene="farm"),
        _entry("c.png", "test"),  # no captions: kept as a gallery image
        _entry("d.jpg", "val", "d one"),
    ],
}


def _write_galr(
    tmp_path: Path, name: str, caps: list[str], names: list[str], end: str = "\n"
) -> tuple[Path, Path]:
    caps_txt = tmp_path / f"{name}_caps.txt"
    names_txt = tmp_path / f"{name}_filename.txt"
    caps_txt.write_text(end.join(caps) + end, encoding="utf-8")
    names_txt.write_text(end.join(names) + end, encoding="utf-8")
    return caps_txt, names_txt


# ---------------------------------------------------------------- Karpathy JSON


def test_karpathy_fields_paths_and_meta(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    ds = load_karpathy(_write_json(tmp_path / "dataset.json", KARPATHY))
    assert ds.name == "tiny"
    assert [r.filename for r in ds.images] == ["a.jpg", "b.tif", "c.png", "d.jpg"]
    assert ds.images[0].path == tmp_path / "images" / "a.jpg"
    assert ds.images[1].path == tmp_path / "images" / "sub" / "b.tif"
    # Extra keys are kept; Karpathy's position indices are not (they go stale on subsetting).
    assert ds.images[0].meta == {"source": "RSICD"}
    assert ds.images[1].meta == {"scene": "farm"}
    assert ds.images[2].meta == {}
    # Captions stripped, duplicates kept, the caption-less image has none.
    assert ds.captions == ["a one", "a two", "b one", "b one", "b three", "d one"]
    assert ds.caption_image == [0, 0, 1, 1, 1, 3]
    arr = ds.caption_image_array()
    assert arr.dtype == np.int64
    np.testing.assert_array_equal(arr, [0, 0, 1, 1, 1, 3])
    assert ds.splits == ["test", "train", "val"]


def test_karpathy_image_root_defaults(tmp_path: Path) -> None:
    # No images/ folder beside the JSON: images sit next to it.
    path = _write_json(tmp_path / "caps.json", {"images": [_entry("x.jpg", "test", "x")]})
    ds = load_karpathy(path)
    assert ds.images[0].path == tmp_path / "x.jpg"
    assert ds.name == "caps"  # no "dataset" key: the file stem
    assert (
        load_karpathy(path, image_root=tmp_path / "elsewhere").images[0].path
        == tmp_path / "elsewhere" / "x.jpg"
    )


def test_karpathy_split_filter_reindexes(tmp_path: Path) -> None:
    path = _write_json(tmp_path / "d.json", KARPATHY)
    test = load_karpathy(path, split="test")
    assert [r.filename for r in test.images] == ["b.tif", "c.png"]
    assert test.captions == ["b one", "b one", "b three"]
    assert test.caption_image == [0, 0, 0]
    assert load_karpathy(path).split("val").caption_image == [0]
    with pytest.raises(DatasetError, match=r"no split 'dev'.*\['test', 'train', 'val'\]"):
        load_karpathy(path, split="dev")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"dataset": "x"}, r'"images" list'),
        ([1, 2], r'"images" list'),
        (
            {"images": [_entry("a", "test", "a"), {"filename": "b", "sentences": [{"tokens": []}]}]},
            r"\[1\].*raw",
        ),
        ({"images": [{"filename": "a", "split": "test"}]}, r'\[0\] has no "sentences"'),
        ({"images": [{"split": "test", "sentences": []}]}, r'\[0\] has no "filename"'),
        (
            {"images": [_entry("a", "test", "x"), _entry("a", "train", "y")]},
            r"\[1\] repeats image 'a' of entry 0",
        ),
        ({"images": [_entry("a", "test", "x", "  ")]}, r'"sentences"\[1\] has a blank'),
    ],
)
def test_karpathy_malformed(tmp_path: Path, data: Any, message: str) -> None:
    path = _write_json(tmp_path / "bad.json", data)
    with pytest.raises(DatasetError, match=message) as info:
        load_karpathy(path)
    assert str(path) in str(info.value)


def test_karpathy_blank_caption_can_be_skipped(tmp_path: Path) -> None:
    path = _write_json(
        tmp_path / "d.json", {"images": [_entry("a", "test", "x", " "), _entry("b", "test", "")]}
    )
    ds = load_karpathy(path, on_blank="skip")
    assert ds.captions == ["x"]
    assert len(ds.images) == 2


def test_karpathy_missing_split_means_test_and_invalid_json(tmp_path: Path) -> None:
    path = _write_json(tmp_path / "d.json", {"images": [{"filename": "a", "sentences": [{"raw": "x"}]}]})
    assert load_karpathy(path).splits == ["test"]
    bad = tmp_path / "broken.json"
    bad.write_text("{", encoding="utf-8")
    with pytest.raises(DatasetError, match="not valid JSON"):
        load_karpathy(bad)
    with pytest.raises(DatasetError, match="no such file"):
        load_karpathy(tmp_path / "absent.json")


# ---------------------------------------------------------------- GaLR text pairs


def test_galr_one_filename_line_per_caption(tmp_path: Path) -> None:
    caps = ["a1", "a2", "b1", "c1", "c2", "c3"]
    names = ["a.tif", "a.tif", "b.tif", "c.tif", "c.tif", "c.tif"]
    caps_txt, names_txt = _write_galr(tmp_path, "set_test", caps, names)
    ds = load_galr(caps_txt, names_txt, tmp_path / "img")
    assert ds.name == "set_test"
    assert [r.filename for r in ds.images] == ["a.tif", "b.tif", "c.tif"]
    assert ds.images[2].path == tmp_path / "img" / "c.tif"
    assert {r.split for r in ds.images} == {"test"}
    assert ds.captions == caps
    assert ds.caption_image == [0, 0, 1, 2, 2, 2]


def test_galr_one_filename_line_per_image(tmp_path: Path) -> None:
    caps = [f"{img}{k}" for img in "ab" for k in range(5)]
    caps_txt, names_txt = _write_galr(tmp_path, "set_train", caps, ["a.tif", "b.tif"], end="\r\n")
    ds = load_galr(caps_txt, names_txt, tmp_path, split="train")
    assert [r.filename for r in ds.images] == ["a.tif", "b.tif"]
    assert ds.captions == caps  # \r stripped
    assert ds.caption_image == [0] * 5 + [1] * 5
    assert ds.splits == ["train"]


def test_galr_strips_whitespace_and_reads_a_file_without_final_newline(tmp_path: Path) -> None:
    caps_txt = tmp_path / "x_caps.txt"
    names_txt = tmp_path / "x_filename.txt"
    caps_txt.write_text("one caption  \n\ttwo caption", encoding="utf-8")
    names_txt.write_text("a.tif \na.tif", encoding="utf-8")
    ds = load_galr(caps_txt, names_txt, tmp_path)
    assert ds.captions == ["one caption", "two caption"]
    assert [r.filename for r in ds.images] == ["a.tif"]


def test_galr_bad_ratio_names_both_files_and_counts(tmp_path: Path) -> None:
    caps_txt, names_txt = _write_galr(tmp_path, "r", [f"c{i}" for i in range(7)], ["a", "b"])
    with pytest.raises(DatasetError) as info:
        load_galr(caps_txt, names_txt, tmp_path)
    msg = str(info.value)
    assert str(caps_txt) in msg and str(names_txt) in msg
    assert "7 caption lines" in msg and "2 filename lines" in msg


def test_galr_blank_caption_line(tmp_path: Path) -> None:
    caps_txt, names_txt = _write_galr(tmp_path, "b", ["a1", "a2", "   ", "b1"], ["a", "a", "b", "b"])
    with pytest.raises(DatasetError, match=r"b_caps\.txt: line 3 is a blank caption"):
        load_galr(caps_txt, names_txt, tmp_path)
    ds = load_galr(caps_txt, names_txt, tmp_path, on_blank="skip")
    assert ds.captions == ["a1", "a2", "b1"]
    assert ds.caption_image == [0, 0, 1]


def test_galr_image_whose_captions_are_all_blank_stays_in_the_gallery(tmp_path: Path) -> None:
    caps = ["a"] * 5 + [""] * 5 + ["c"] * 5
    caps_txt, names_txt = _write_galr(tmp_path, "z", caps, ["a", "b", "c"])
    ds = load_galr(caps_txt, names_txt, tmp_path, on_blank="skip")
    assert len(ds.images) == 3
    assert ds.caption_image == [0] * 5 + [2] * 5


@pytest.mark.parametrize(
    ("caps", "names", "message"),
    [
        (["x", "y"], ["a", ""], r"filename\.txt: line 2 is blank"),
        (["x", "y", "z"], ["a", "b", "a"], r"line 3 lists 'a' again.*line 1"),
        (["x"] * 10, ["a", "a"], r"line 2 repeats 'a' of line 1"),
    ],
)
def test_galr_malformed_filenames(tmp_path: Path, caps: list[str], names: list[str], message: str) -> None:
    caps_txt, names_txt = _write_galr(tmp_path, "m", caps, names)
    with pytest.raises(DatasetError, match=message):
        load_galr(caps_txt, names_txt, tmp_path)


def test_galr_empty_files(tmp_path: Path) -> None:
    caps_txt, names_txt = tmp_path / "e_caps.txt", tmp_path / "e_filename.txt"
    caps_txt.write_text("", encoding="utf-8")
    names_txt.write_text("", encoding="utf-8")
    with pytest.raises(DatasetError, match="empty caption set"):
        load_galr(caps_txt, names_txt, tmp_path)


# ---------------------------------------------------------------- dispatch, dataclasses


def test_load_dataset_dispatch(tmp_path: Path) -> None:
    _write_json(tmp_path / "dataset.json", KARPATHY)
    assert load_dataset(tmp_path).name == "tiny"
    assert len(load_dataset(tmp_path / "dataset.json", split="test").images) == 2

    caps_txt, _ = _write_galr(tmp_path, "foo_train", [f"c{i}" for i in range(5)], ["a.tif"])
    with pytest.raises(DatasetError, match="needs image_root"):
        load_dataset(caps_txt)
    ds = load_dataset(caps_txt, image_root=tmp_path / "img")
    assert ds.splits == ["train"]  # from the file name
    assert ds.images[0].path == tmp_path / "img" / "a.tif"
    assert load_dataset(caps_txt, image_root=tmp_path, split="train").captions == ds.captions
    with pytest.raises(DatasetError, match="no split 'test'"):
        load_dataset(caps_txt, image_root=tmp_path, split="test")

    caps_txt, _ = _write_galr(tmp_path, "bar", ["c"], ["a.tif"])
    assert load_dataset(caps_txt, image_root=tmp_path).splits == ["test"]
    assert load_dataset(caps_txt, image_root=tmp_path, split="val").splits == ["val"]


def test_load_dataset_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="no such file"):
        load_dataset(tmp_path / "nope.json")
    with pytest.raises(DatasetError, match=r"no dataset\.json"):
        load_dataset(tmp_path)
    lone = tmp_path / "lone_caps.txt"
    lone.write_text("x\n", encoding="utf-8")
    with pytest.raises(DatasetError, match=r"lone_filename\.txt does not exist"):
        load_dataset(lone, image_root=tmp_path)
    other = tmp_path / "notes.csv"
    other.write_text("x\n", encoding="utf-8")
    with pytest.raises(DatasetError, match="not a dataset"):
        load_dataset(other)


def test_caption_dataset_checks_its_indices(tmp_path: Path) -> None:
    rec = ImageRecord(filename="a", path=tmp_path / "a", split="test")
    with pytest.raises(DatasetError, match="2 captions but 1"):
        CaptionDataset(name="x", images=[rec], captions=["p", "q"], caption_image=[0])
    with pytest.raises(DatasetError, match="caption 1 points at image 1"):
        CaptionDataset(name="x", images=[rec], captions=["p", "q"], caption_image=[0, 1])


def test_missing_images(tmp_path: Path) -> None:
    (tmp_path / "images" / "sub").mkdir(parents=True)
    (tmp_path / "images" / "a.jpg").write_bytes(b"")
    (tmp_path / "images" / "sub" / "b.tif").write_bytes(b"")
    ds = load_karpathy(_write_json(tmp_path / "dataset.json", KARPATHY))
    assert missing_images(ds) == [str(tmp_path / "images" / "c.png"), str(tmp_path / "images" / "d.jpg")]


# ---------------------------------------------------------------- the real files beside the repo


def test_real_rs_real_dataset() -> None:
    ds = load_dataset(require_shared("rs-real"))
    assert (len(ds.images), len(ds.captions)) == (60, 300)
    assert ds.splits == ["test"]
    assert missing_images(ds) == []
    assert {r.meta["source"] for r in ds.images} >= {"RSICD"}


def test_real_rsitmd_test() -> None:
    caps = require_shared("captions/rsitmd_test_caps.txt")
    ds = load_galr(caps, caps.with_name("rsitmd_test_filename.txt"), Path("/nonexistent"))
    assert (len(ds.images), len(ds.captions)) == (452, 2260)
    assert np.bincount(ds.caption_image_array()).tolist() == [5] * 452


def test_real_rsitmd_train() -> None:
    caps = require_shared("captions/rsitmd_train_caps.txt")
    names = caps.with_name("rsitmd_train_filename.txt")
    # The published file has 21,455 caption lines, 20 of them blank: all five lines of four images
    # (first at line 9631). Strict loading says where; skipping keeps those images caption-less.
    with pytest.raises(DatasetError, match="line 9631 is a blank caption"):
        load_galr(caps, names, Path("/nonexistent"), split="train")
    ds = load_galr(caps, names, Path("/nonexistent"), split="train", on_blank="skip")
    assert len(ds.images) == 4291
    assert len(ds.captions) == 21455 - 20
    counts = np.bincount(ds.caption_image_array(), minlength=len(ds.images))
    assert sorted(ds.images[i].filename for i in np.nonzero(counts == 0)[0]) == [
        "mountain_2378.tif",
        "railwaystation_3254.tif",
        "storagetanks_4367.tif",
        "viaduct_4635.tif",
    ]
    assert set(counts.tolist()) == {0, 5}


def test_real_ucm_captions() -> None:
    ds = load_dataset(require_shared("captions/ucm_dataset.json"))
    assert (len(ds.images), len(ds.captions)) == (2100, 10500)
    test = ds.split("test")
    assert (len(test.images), len(test.captions)) == (210, 1050)
