"""Progress of a long build as structured log lines, for logs without a terminal (``kubectl logs``).

The progress bar is for a person at a terminal; without one (a Job, a RayJob, ``nohup``) the builder
writes a JSON line every ``every_s`` seconds instead, plus one when it starts and one when it ends::

    {"event": "build_progress", "stage": "embed", "done": 2048, "total": 100000, "skipped": 3,
     "rate_per_s": 41.7, "elapsed_s": 49.1, "eta_s": 2349}

``done`` counts images processed (embedded or skipped); ``rate_per_s`` and ``eta_s`` are from this run
alone (shards committed by an earlier run are not in ``total``); ``eta_s`` is null until a rate exists.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from typing import TextIO

from rsir.index_builder.config import BuildConfig


class ProgressLog:
    def __init__(
        self,
        total: int,
        every_s: float,
        stage: str = "embed",
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total, self.every_s, self.stage = total, every_s, stage
        self.stream = stream if stream is not None else sys.stderr
        self.clock = clock
        self.done = self.skipped = 0
        self.start = self.last = clock()
        self.emit()

    def advance(self, n: int, skipped: int = 0) -> None:
        """``n`` more images processed, ``skipped`` of them left out."""
        self.done += n
        self.skipped += skipped
        if self.clock() - self.last >= self.every_s:
            self.emit()

    def close(self) -> None:
        self.emit()

    def emit(self) -> None:
        now = self.clock()
        self.last = now
        elapsed = now - self.start
        rate = self.done / elapsed if elapsed > 0 and self.done else None
        eta = round((self.total - self.done) / rate) if rate else None
        line = {
            "event": "build_progress",
            "stage": self.stage,
            "done": self.done,
            "total": self.total,
            "skipped": self.skipped,
            "rate_per_s": round(rate, 2) if rate else None,
            "elapsed_s": round(elapsed, 1),
            "eta_s": eta,
        }
        self.stream.write(json.dumps(line) + "\n")
        self.stream.flush()


def progress_log(config: BuildConfig, total: int) -> ProgressLog | None:
    if config.progress or config.progress_log_s is None:
        return None
    return ProgressLog(total, config.progress_log_s)
