"""The rerank's token dtype: one vocabulary for settings (``RSIR_DTYPE``), the CLI (``--dtype``) and
the engine.

``auto`` is float16 on CUDA and float32 on the CPU. On the CPU bfloat16 is not the default even where
the CPU has AMX bfloat16 units: the rerank there spends most of its time in the float32 softmaxes,
norms and means that half precision needs for correct scores, not in the products, and BENCHMARKS.md
("Half precision on the CPU") measured no gain worth its coarser scores.
"""

from __future__ import annotations

from enum import StrEnum

import torch

from rsir.model.errors import InvalidInputError


class Precision(StrEnum):
    """How the rerank stores and multiplies tokens; reductions run in float32 whatever is chosen."""

    AUTO = "auto"
    FLOAT32 = "float32"
    FLOAT16 = "float16"
    BFLOAT16 = "bfloat16"


PRECISIONS: tuple[str, ...] = tuple(p.value for p in Precision)
_DTYPES = {
    Precision.FLOAT32: torch.float32,
    Precision.FLOAT16: torch.float16,
    Precision.BFLOAT16: torch.bfloat16,
}


def parse_precision(value: str | Precision) -> Precision:
    """``value`` as a :class:`Precision`; an error naming the accepted spellings otherwise."""
    try:
        return Precision(value)
    except ValueError:
        raise InvalidInputError(f"dtype must be one of {', '.join(PRECISIONS)}; got {value!r}") from None


def resolve_dtype(precision: Precision | str, device: torch.device) -> torch.dtype:
    """The torch dtype of ``precision`` on ``device`` (``auto``: float16 on CUDA, float32 elsewhere)."""
    precision = parse_precision(precision)
    if precision is Precision.AUTO:
        return torch.float16 if device.type == "cuda" else torch.float32
    return _DTYPES[precision]
