"""SynthRS: determinism, caption truth (independent checker), class coverage, splits, dataset shape."""

from __future__ import annotations

import collections
import io
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from rsir.index_builder.metadata import read_metadata
from rsir.index_builder.sources import scan_archive
from rsir.model.errors import InvalidInputError
from rsir.synthrs import (
    CLASS_NAMES,
    SynthConfig,
    captions_for,
    make_scene,
    render_scene,
    split_of,
    write_dataset,
)
from rsir.synthrs.metadata import FOOTPRINT_DEG, REGION, SENSORS
from rsir.synthrs.png import encode_png
from rsir.synthrs.sampler import CLASSES, sample_attributes
from rsir.synthrs.truth import COLOURS, NUMBERS, check_caption, parse_caption, true_of, truth_matrix

N_SMALL = 24  # > one family per class is not needed here; 24 images take well under a second


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth_a")
    write_dataset(SynthConfig(n=N_SMALL, seed=3, size=64), out, progress=False)
    return out


def test_same_seed_gives_identical_files(small_dataset: Path, tmp_path: Path) -> None:
    report = write_dataset(SynthConfig(n=N_SMALL, seed=3, size=64), tmp_path, progress=False)
    assert report.n_images == N_SMALL and report.out == tmp_path and report.images_per_second > 0
    first, second = _files(small_dataset), _files(tmp_path)
    assert len(first) == N_SMALL + 2  # the images, dataset.json and metadata.jsonl
    assert first == second


def test_two_workers_match_one(small_dataset: Path, tmp_path: Path) -> None:
    write_dataset(SynthConfig(n=N_SMALL, seed=3, size=64, workers=2), tmp_path, progress=False)
    assert _files(tmp_path) == _files(small_dataset)


def test_different_seeds_differ(tmp_path: Path) -> None:
    write_dataset(SynthConfig(n=4, seed=4, size=64), tmp_path, progress=False)
    other = json.loads((tmp_path / "dataset.json").read_text())
    ours = [make_scene(3, i).to_json() for i in range(4)]
    assert [im["scene"] for im in other["images"]] != ours
    a = render_scene(make_scene(0, 0), 64).tobytes()
    b = render_scene(make_scene(1, 0), 64).tobytes()
    assert a != b


def test_scene_does_not_depend_on_n(small_dataset: Path) -> None:
    doc = json.loads((small_dataset / "dataset.json").read_text())
    for index in (0, 7, N_SMALL - 1):
        assert doc["images"][index]["scene"] == make_scene(3, index).to_json()
        assert [s["raw"] for s in doc["images"][index]["sentences"]] == captions_for(
            make_scene(3, index), 3, index
        )


def test_dataset_json_is_karpathy_shaped(small_dataset: Path) -> None:
    doc = json.loads((small_dataset / "dataset.json").read_text())
    assert doc["dataset"] == "synthrs"
    assert len(doc["images"]) == N_SMALL
    for index, image in enumerate(doc["images"]):
        assert image["filename"] == f"synth_{index:06d}.png"
        assert image["split"] in ("train", "val", "test")
        assert len(image["sentences"]) == 5
        assert all(isinstance(s["raw"], str) and s["raw"].endswith(" .") for s in image["sentences"])
        scene = image["scene"]
        assert scene["class"] in CLASS_NAMES
        for obj in scene["objects"]:
            assert set(obj) == {"type", "count", "colour", "position", "bbox"}
            assert obj["position"] in ("left", "right", "top", "bottom", "center", "around")
        with Image.open(small_dataset / "images" / image["filename"]) as img:
            assert img.size == (64, 64) and img.mode == "RGB"


def test_metadata_jsonl_uses_the_builders_ids_and_states_true_tags(small_dataset: Path) -> None:
    lines = (small_dataset / "metadata.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in lines]
    # The ids are the ones the index builder gives these images, so `--metadata` attaches every row.
    assert sorted(r["id"] for r in rows) == [item.id for item in scan_archive(small_dataset)]
    doc = json.loads((small_dataset / "dataset.json").read_text())
    for row, image in zip(rows, doc["images"], strict=True):
        assert row["id"].endswith(image["filename"])
        scene = image["scene"]
        assert row["tags"][0] == scene["class"]
        assert sorted(row["tags"][1:]) == sorted(o["type"] for o in scene["objects"])
        assert REGION[0] <= row["lon_min"] < row["lon_max"] <= REGION[2]
        assert REGION[1] <= row["lat_min"] < row["lat_max"] <= REGION[3]
        assert row["lon_max"] - row["lon_min"] == pytest.approx(FOOTPRINT_DEG, abs=2e-6)
        assert re.fullmatch(r"202[0-5]-\d\d-\d\dT\d\d:\d\d:\d\dZ", row["time"])
        assert row["sensor"] in SENSORS
    assert len({r["sensor"] for r in rows}) > 1 and len({r["time"] for r in rows}) == len(rows)
    parsed = read_metadata(small_dataset / "metadata.jsonl")  # the builder's own reader accepts it
    assert set(parsed) == {r["id"] for r in rows} and all(p["time"].year >= 2020 for p in parsed.values())


def test_metadata_depends_on_the_seed(small_dataset: Path, tmp_path: Path) -> None:
    write_dataset(SynthConfig(n=4, seed=4, size=64), tmp_path, progress=False)
    ours = (small_dataset / "metadata.jsonl").read_text().splitlines()[:4]
    other = (tmp_path / "metadata.jsonl").read_text().splitlines()
    assert [json.loads(a)["id"] for a in ours] == [json.loads(b)["id"] for b in other]
    assert all(a != b for a, b in zip(ours, other, strict=True))


def test_captions_are_true_of_their_scene() -> None:
    """Every number, colour, noun and position word in 200 scenes' captions matches the scene JSON."""
    problems = []
    for seed, index in [(s, i) for s in (0, 5) for i in range(100)]:
        scene = make_scene(seed, index)
        captions = captions_for(scene, seed, index)
        assert len(captions) == 5 and len(set(captions)) == 5
        for caption in captions:
            problems += [
                f"{scene.cls} #{index}: {caption!r}: {p}" for p in check_caption(caption, scene.to_json())
            ]
    assert not problems, "\n".join(problems[:20])


def test_checker_catches_false_captions() -> None:
    """Guards the checker itself: wrong counts, colours, sides and missing objects are reported."""
    scene = {
        "objects": [
            {"type": "plane", "count": 3, "colour": "white", "position": "left"},
            {"type": "terminal", "count": 1, "colour": None, "position": "right"},
        ],
        "relations": [{"subject": "plane", "relation": "left of", "object": "terminal"}],
    }
    assert check_caption("three white planes are on the left of the terminal .", scene) == []
    for false in (
        "four white planes are parked .",
        "three red planes are parked .",
        "three white planes are on the right side .",
        "three planes are on the right of the terminal .",
        "a plane is parked next to two cars .",
        "a white runway .",
    ):
        assert check_caption(false, scene), false


def test_checker_reads_vague_quantifiers() -> None:
    """'a couple of' is two, 'several' three or more, 'many' / 'lots of' / 'a lot of' six or more."""

    def scene(n: int) -> dict[str, Any]:
        return {
            "objects": [{"type": "car", "count": n, "colour": "red", "position": "left"}],
            "relations": [],
        }

    cases = {
        "a couple of red cars are parked .": {2},
        "several red cars are parked .": {3, 4, 6, 9},
        "many red cars are parked .": {6, 9},
        "lots of red cars are parked .": {6, 9},
        "a lot of cars are parked .": {6, 9},
        "some cars are parked on the left .": {2, 3, 4, 6, 9},
    }
    for caption, true_counts in cases.items():
        claims = parse_caption(caption)
        for n in (1, 2, 3, 4, 6, 9):
            assert true_of(claims, scene(n)) == (n in true_counts), (caption, n)
            assert (check_caption(caption, scene(n)) == []) == (n in true_counts), (caption, n)


def test_captions_state_exact_counts_and_details() -> None:
    counted = 0
    for index in range(150):
        scene = make_scene(2, index)
        attrs = dict(scene.attributes)
        captions = captions_for(scene, 2, index)
        with_number = [c for c in captions if any(w in NUMBERS for w in c.split())]
        positive = [v for k, v in attrs.items() if k.endswith("_count") and isinstance(v, int) and v > 0]
        # A count of one is often stated as "a ship", which is exact but has no number word.
        if positive and min(positive) >= 2:
            counted += 1
            assert len(with_number) >= 2, captions
        if any(k.endswith("_colour") for k in attrs):
            assert any(w in COLOURS for c in captions for w in c.split()), captions
    assert counted > 80


def test_twins_differ_in_one_stated_detail() -> None:
    """Hard negatives: each family pair has one class and exactly one changed attribute, and almost
    always at least one caption of one twin is false of the other."""
    distinguishable = pairs = 0
    for family in range(150):
        a, b = make_scene(1, 2 * family), make_scene(1, 2 * family + 1)
        assert a.cls == b.cls and a.family == b.family
        changed = [k for (k, va), (_, vb) in zip(a.attributes, b.attributes, strict=True) if va != vb]
        assert len(changed) == 1
        ja, jb = a.to_json(), b.to_json()
        crossed = [c for c in captions_for(a, 1, 2 * family) if check_caption(c, jb)]
        crossed += [c for c in captions_for(b, 1, 2 * family + 1) if check_caption(c, ja)]
        pairs += 1
        distinguishable += bool(crossed)
    assert distinguishable / pairs > 0.95


def test_attributes_vary_independently() -> None:
    """Within every class, each pair of attributes shows every combination of values."""
    for spec in CLASSES:
        draws = [sample_attributes(spec, 0, family, 0) for family in range(1500)]
        names = [name for name, _ in spec.domains]
        for i, a in enumerate(names):
            for b in names[i + 1 :]:
                seen = {(d[a], d[b]) for d in draws}
                sizes = dict(spec.domains)
                assert len(seen) == len(sizes[a]) * len(sizes[b]), (spec.name, a, b)


def test_every_class_appears_in_500_images() -> None:
    counts = collections.Counter(make_scene(0, i).cls for i in range(500))
    assert set(counts) == set(CLASS_NAMES)
    assert len(CLASS_NAMES) >= 12
    assert min(counts.values()) >= 20


def test_split_fractions_are_close() -> None:
    splits = (0.8, 0.1, 0.1)
    counts = collections.Counter(split_of(7, i, splits) for i in range(2000))
    for name, fraction in zip(("train", "val", "test"), splits, strict=True):
        assert abs(counts[name] / 2000 - fraction) < 0.02, counts
    assert split_of(7, 10, splits) == split_of(7, 11, splits)  # twins share a split


def test_render_is_deterministic_and_sized() -> None:
    scene = make_scene(9, 17)
    first, second = render_scene(scene, 96), render_scene(make_scene(9, 17), 96)
    assert first.size == (96, 96) and first.mode == "RGB"
    assert first.tobytes() == second.tobytes()
    assert np.asarray(first).std() > 5  # textured, not a flat fill


def test_png_encoder_round_trips() -> None:
    pixels = np.asarray(render_scene(make_scene(0, 5), 48))
    decoded = np.asarray(Image.open(io.BytesIO(encode_png(pixels))))
    assert np.array_equal(decoded, pixels)


def test_invalid_config_is_rejected(tmp_path: Path) -> None:
    for cfg in (
        SynthConfig(n=0),
        SynthConfig(n=1, seed=-1),
        SynthConfig(n=1, size=8),
        SynthConfig(n=1, workers=0),
        SynthConfig(n=1, splits=(0.5, 0.2, 0.2)),
    ):
        with pytest.raises(InvalidInputError):
            write_dataset(cfg, tmp_path, progress=False)
    with pytest.raises(InvalidInputError):
        make_scene(-1, 0)


def test_captions_are_lower_case_sentences() -> None:
    pattern = re.compile(r"^[a-z][a-z ]* \.$")
    for index in range(60):
        for caption in captions_for(make_scene(4, index), 4, index):
            assert pattern.match(caption), caption


def test_truth_matrix_is_the_checker_over_every_pair() -> None:
    """Own captions are true of their scene; every cell equals the checker's verdict (plus the class
    test), and without classes it is the checker alone."""
    scenes = [make_scene(4, i) for i in range(40)]
    jsons = [s.to_json() for s in scenes]
    captions = [(c, i) for i, s in enumerate(scenes) for c in captions_for(s, 4, i)]
    texts = [c for c, _ in captions]
    owner_class = [scenes[i].cls for _, i in captions]
    got = truth_matrix(texts, owner_class, jsons)
    loose = truth_matrix(texts, None, jsons)
    for c, (text, own) in enumerate(captions):
        assert got[c, own]
        for j, scene in enumerate(jsons):
            holds = check_caption(text, scene) == []
            assert loose[c, j] == holds
            assert got[c, j] == (holds and scene["class"] == owner_class[c])
    assert got.sum() > len(captions)  # some captions are true of another scene (hard negatives)
