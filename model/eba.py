"""EBA, eliminate before align (ALGORITHMS.md §4), training only.

A queue of the last 200,000 positive-pair similarities; once active (from epoch 4, 0-based), pairs
whose similarity falls below the queue's 1st percentile stop being anchors of the loss (likely
mismatched pairs) but stay in the batch as negatives for everyone else.
"""

from __future__ import annotations

import torch

QUEUE_SIZE = 200_000
PERCENTILE = 1.0


class EBAFilter:
    def __init__(self, size: int = QUEUE_SIZE, percentile: float = PERCENTILE) -> None:
        self.queue = torch.empty(size)
        self.filled = 0
        self.head = 0
        self.percentile = percentile

    def anchors(self, positive_sims: torch.Tensor, active: bool) -> torch.Tensor | None:
        """Push a batch's ``[B]`` positive similarities; when active, return the ``[B]`` anchor mask."""
        mask = None
        if active and self.filled > 0:
            threshold = torch.quantile(self.queue[: self.filled], self.percentile / 100.0)
            mask = positive_sims.detach().cpu() >= threshold
        self._push(positive_sims.detach().float().cpu())
        return None if mask is None else mask.to(positive_sims.device)

    def _push(self, values: torch.Tensor) -> None:
        size = self.queue.numel()
        for value in values[-size:]:
            self.queue[self.head] = value
            self.head = (self.head + 1) % size
            self.filled = min(self.filled + 1, size)

    def state_dict(self) -> dict[str, object]:
        return {"queue": self.queue[: self.filled].clone(), "head": self.head, "filled": self.filled}

    def load_state_dict(self, state: dict[str, object]) -> None:
        queue = state["queue"]
        assert isinstance(queue, torch.Tensor)
        self.filled = int(state["filled"])  # type: ignore[call-overload]
        self.head = int(state["head"])  # type: ignore[call-overload]
        self.queue[: self.filled] = queue
