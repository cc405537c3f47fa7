"""The engine still answers as the committed snapshot says, in every mode combination (see
``bench/behaviour_snapshot.py``, which also rewrites the snapshot after a deliberate change).

Scores are compared to 1e-4 and ranked ids exactly, except inside runs of scores closer than that:
machines embed the same images with last-bit differences, and such near-ties may order either way.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bench.behaviour_snapshot import build_demo, snapshot

SNAPSHOT = Path(__file__).parents[1] / "fixtures" / "behaviour_snapshot.json"
TOL = 1e-4


def _same_ranking(want_ids: list[int], want: list[float], got_ids: list[int], got: list[float]) -> bool:
    if len(want_ids) != len(got_ids):
        return False
    for i, (a, b) in enumerate(zip(want_ids, got_ids, strict=True)):
        if a == b:
            continue
        # a swap is allowed only where the snapshot's own scores at this rank are within TOL
        tied = [j for j in range(len(want)) if abs(want[j] - want[i]) <= TOL]
        if b not in [want_ids[j] for j in tied]:
            return False
    return all(abs(x - y) <= TOL for x, y in zip(want, got, strict=True))


@pytest.mark.slow
def test_every_mode_answers_as_the_snapshot(tmp_path: Path) -> None:
    want: dict[str, Any] = json.loads(SNAPSHOT.read_text())
    got = snapshot(*build_demo(tmp_path))
    assert sorted(got) == sorted(want), "the set of mode combinations changed"
    broken = []
    for case, expected in want.items():
        actual = got[case]
        if "error" in expected or "error" in actual:
            if expected != actual:
                broken.append(f"{case}: {expected} -> {actual}")
            continue
        rows = zip(expected["ids"], expected["scores"], actual["ids"], actual["scores"], strict=True)
        bad = [q for q, row in enumerate(rows) if not _same_ranking(*row)]
        if bad:
            broken.append(f"{case}: queries {bad[:5]}{'...' if len(bad) > 5 else ''} differ")
    assert not broken, f"{len(broken)} of {len(want)} cases changed:\n" + "\n".join(broken[:20])
