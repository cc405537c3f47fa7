"""Headless Locust run against a URL:
``python -m rsir.loadtest.run --host URL --users 16 --time 30s --out DIR``.

Writes Locust's CSVs (``DIR/locust_stats.csv``...) and ``DIR/summary.json``, and prints the summary:
requests, failures, requests/s, p50/p95/p99 in ms, per request name and in aggregate.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

LOCUSTFILE = Path(__file__).with_name("locustfile.py")


def summarise(stats_csv: Path) -> dict[str, dict[str, Any]]:
    """Per-name and aggregate figures from Locust's ``*_stats.csv``."""
    out: dict[str, dict[str, Any]] = {}
    with stats_csv.open(newline="") as fh:
        for row in csv.DictReader(fh):
            count = int(row["Request Count"])
            out[row["Name"]] = {
                "requests": count,
                "failures": int(row["Failure Count"]),
                "rps": round(float(row["Requests/s"]), 2),
                "p50_ms": _num(row["50%"]),
                "p95_ms": _num(row["95%"]),
                "p99_ms": _num(row["99%"]),
                "mean_ms": round(float(row["Average Response Time"]), 2),
            }
    return out


def _num(value: str) -> float | None:
    return None if value in ("", "N/A") else float(value)


def run(
    host: str,
    users: int,
    duration: str,
    out: Path,
    spawn_rate: float | None = None,
    env: dict[str, str] | None = None,
) -> dict[str, dict[str, Any]]:
    out.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--host", host,
        "--users", str(users), "--spawn-rate", str(spawn_rate or users), "--run-time", duration,
        "--csv", str(out / "locust"), "--only-summary", "--stop-timeout", "10", "--exit-code-on-error", "0",
    ]  # fmt: skip
    subprocess.run(
        cmd, check=True, env={**os.environ, **(env or {})}, cwd=Path(__file__).resolve().parents[1]
    )
    summary = summarise(out / "locust_stats.csv")
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def main(
    host: Annotated[str, typer.Option(help="base URL of a running rsir service")],
    users: Annotated[int, typer.Option(help="concurrent simulated users")] = 8,
    time: Annotated[str, typer.Option("--time", help="run time, e.g. 20s, 2m")] = "20s",
    out: Annotated[Path, typer.Option(help="folder for the CSVs and summary.json")] = Path("logs/locust"),
    queries: Annotated[
        Path | None, typer.Option(help="caption file/dataset.json/folder of query texts")
    ] = None,
    images: Annotated[Path | None, typer.Option(help="folder of images for image queries")] = None,
    repeat: Annotated[float, typer.Option(help="share of queries from a hot set of 50")] = 0.3,
    mix: Annotated[str, typer.Option(help="mixed | text")] = "mixed",
    max_failures: Annotated[int, typer.Option(help="exit 1 when more requests than this failed")] = 0,
) -> None:
    env = {"RSIR_LOAD_REPEAT": str(repeat), "RSIR_LOAD_MIX": mix}
    if queries is not None:
        env["RSIR_LOAD_QUERIES"] = str(queries.resolve())
    if images is not None:
        env["RSIR_LOAD_IMAGES"] = str(images.resolve())
    summary = run(host, users, time, out, env=env)
    for name, s in summary.items():
        typer.echo(
            f"{name:32s} {s['requests']:7d} req {s['failures']:5d} fail {s['rps']:8.2f} req/s  "
            f"p50 {s['p50_ms']} p95 {s['p95_ms']} p99 {s['p99_ms']} ms"
        )
    failures = summary.get("Aggregated", {}).get("failures", 0)
    if failures > max_failures:
        typer.echo(f"{failures} requests failed (allowed: {max_failures})", err=True)
        raise typer.Exit(1)


if __name__ == "__main__":
    typer.run(main)
