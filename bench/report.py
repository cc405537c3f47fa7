"""What the benchmark scripts write: the run's provenance, a JSON result file and the Markdown recall
table, in one form for all of them."""

from __future__ import annotations

import argparse
import json
import platform
from collections.abc import Callable, Sequence
from datetime import date
from pathlib import Path
from typing import Any

import torch

from rsir.model.encoders import ClipEncoder

RECALLS = ("t2i_r1", "t2i_r5", "t2i_r10", "i2t_r1", "i2t_r5", "i2t_r10", "mR")
RECALL_HEAD = ("t2i R@1", "R@5", "R@10", "i2t R@1", "R@5", "R@10", "mR")


def run_meta(encoder: ClipEncoder, args: argparse.Namespace) -> dict[str, Any]:
    """What a result file records of the run that made it."""
    return {
        "date": date.today().isoformat(),
        "machine": platform.node(),
        "torch_threads": torch.get_num_threads(),
        "encoder": encoder.describe(),
        "args": {k: str(v) for k, v in vars(args).items()},
    }


def write_json(path: Path | None, doc: Any) -> None:
    """``doc`` as indented JSON at ``path`` (its folder made); nothing when no ``--out`` was given."""
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1))


def recall_table(
    lead: Sequence[str],
    rows: Sequence[dict[str, Any]],
    cells: Callable[[dict[str, Any]], Sequence[object]],
    timing: bool = True,
) -> list[str]:
    """Markdown lines: the ``lead`` columns (``cells(row)`` fills them), the six recalls and mR to two
    decimals, then (``timing``) milliseconds per query each way."""
    head = [*lead, *RECALL_HEAD] + (["t2i ms/q", "i2t ms/q"] if timing else [])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        vals = [f"{r[name]:.2f}" for name in RECALLS]
        if timing:
            vals += [f"{r['t2i_ms_per_query']:.2f}", f"{r['i2t_ms_per_query']:.2f}"]
        lines.append("| " + " | ".join([*(str(c) for c in cells(r)), *vals]) + " |")
    return lines
