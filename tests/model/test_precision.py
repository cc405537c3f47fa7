"""The dtype vocabulary: each spelling to its torch dtype, ``auto`` by device, bad spellings refused."""

from __future__ import annotations

import pytest
import torch

from rsir.model.errors import InvalidInputError
from rsir.model.precision import PRECISIONS, Precision, parse_precision, resolve_dtype

CPU, CUDA = torch.device("cpu"), torch.device("cuda", 0)  # a device object needs no GPU


def test_auto_is_float16_on_cuda_and_float32_on_the_cpu() -> None:
    assert resolve_dtype(Precision.AUTO, CUDA) == torch.float16
    assert resolve_dtype(Precision.AUTO, CPU) == torch.float32
    assert resolve_dtype("auto", torch.device("cuda")) == torch.float16


@pytest.mark.parametrize(
    ("name", "dtype"), [("float32", torch.float32), ("float16", torch.float16), ("bfloat16", torch.bfloat16)]
)
def test_explicit_dtypes_hold_on_every_device(name: str, dtype: torch.dtype) -> None:
    assert resolve_dtype(name, CPU) == resolve_dtype(Precision(name), CUDA) == dtype


def test_bad_spellings_are_refused_with_the_choices() -> None:
    assert PRECISIONS == ("auto", "float32", "float16", "bfloat16")
    for bad in ("fp16", "half", "Float32", ""):
        with pytest.raises(InvalidInputError, match="auto, float32, float16, bfloat16"):
            parse_precision(bad)
