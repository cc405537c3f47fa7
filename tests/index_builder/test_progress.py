"""Progress without a terminal: the builder writes periodic JSON lines (done/total, rate, ETA, skipped)
to stderr, so the logs of a build running as a Job say how far it is."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from rsir.index_builder.progress import ProgressLog
from tests.index_builder.conftest import add_bad_files, write_folder


def _lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith('{"event": "build_progress"')]


def test_a_build_with_stderr_not_a_tty_logs_structured_progress(tmp_path: Path) -> None:
    archive = tmp_path / "archive"
    write_folder(archive, 10)
    bad = add_bad_files(archive)
    total = 10 + len(bad)
    cmd = [
        sys.executable, "-m", "rsir.cli", "build-index", "--archive", str(archive),
        "--out", str(tmp_path / "idx"), "--device", "cpu", "--workers", "0",
        "--shard-size", "4", "--batch-size", "2", "--progress-every", "0",
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)  # stderr: a pipe, not a TTY
    assert done.returncode == 3, done.stderr  # built, with the bad files skipped
    lines = _lines(done.stderr)
    assert len(lines) >= total // 2, done.stderr  # every batch of 2 with --progress-every 0
    assert {k for line in lines for k in line} == {
        "event", "stage", "done", "total", "skipped", "rate_per_s", "elapsed_s", "eta_s",
    }  # fmt: skip
    first, last = lines[0], lines[-1]
    assert (first["done"], first["total"], first["eta_s"]) == (0, total, None)
    assert (last["done"], last["total"], last["skipped"], last["eta_s"]) == (total, total, len(bad), 0)
    assert last["rate_per_s"] > 0
    assert [x["done"] for x in lines] == sorted(x["done"] for x in lines)
    assert "\x1b[" not in done.stderr, "no progress bar escape codes in a log"


def test_lines_come_every_interval_with_rate_and_eta_from_the_clock() -> None:
    now = [100.0]
    out = io.StringIO()
    log = ProgressLog(total=1000, every_s=30.0, stream=out, clock=lambda: now[0])
    for _ in range(10):  # 10 s per 100 images: 10 img/s
        now[0] += 10.0
        log.advance(100, skipped=1)
    log.close()
    lines = _lines(out.getvalue())
    # start, then at 30 s, 60 s and 90 s since the previous line, then the close at 100 s
    assert [x["done"] for x in lines] == [0, 300, 600, 900, 1000]
    assert lines[1] == {
        "event": "build_progress", "stage": "embed", "done": 300, "total": 1000, "skipped": 3,
        "rate_per_s": 10.0, "elapsed_s": 30.0, "eta_s": 70,
    }  # fmt: skip
    assert lines[-1]["eta_s"] == 0 and lines[-1]["skipped"] == 10
