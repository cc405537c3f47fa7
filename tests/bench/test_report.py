"""bench.report: the Markdown recall table against one written by hand; result files."""

from __future__ import annotations

import json
from pathlib import Path

from bench.report import recall_table, write_json

ROW = {
    "mode": "ftf",
    "t2i_r1": 1.234,
    "t2i_r5": 5.5,
    "t2i_r10": 10,
    "i2t_r1": 2,
    "i2t_r5": 3,
    "i2t_r10": 4,
    "mR": 5.678,
    "t2i_ms_per_query": 0.126,
    "i2t_ms_per_query": 9.876,
}


def test_recall_table_by_hand() -> None:
    assert recall_table(("mode",), [ROW], lambda r: (r["mode"],)) == [
        "| mode | t2i R@1 | R@5 | R@10 | i2t R@1 | R@5 | R@10 | mR | t2i ms/q | i2t ms/q |",
        "|---|---|---|---|---|---|---|---|---|---|",
        "| ftf | 1.23 | 5.50 | 10.00 | 2.00 | 3.00 | 4.00 | 5.68 | 0.13 | 9.88 |",
    ]
    assert recall_table(("a", "b"), [ROW], lambda r: ("x", 7), timing=False) == [
        "| a | b | t2i R@1 | R@5 | R@10 | i2t R@1 | R@5 | R@10 | mR |",
        "|---|---|---|---|---|---|---|---|---|",
        "| x | 7 | 1.23 | 5.50 | 10.00 | 2.00 | 3.00 | 4.00 | 5.68 |",
    ]


def test_write_json_makes_the_folder_and_skips_without_a_path(tmp_path: Path) -> None:
    out = tmp_path / "new" / "result.json"
    write_json(out, {"rows": [1, 2]})
    assert json.loads(out.read_text()) == {"rows": [1, 2]}
    write_json(None, {"rows": []})  # no --out: nothing written, no error
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["new", "result.json"]
