"""The per-item token store: ``[N, T, d]`` token arrays on disk, memory-mapped when read.

Two codecs: ``fp16`` (half the bytes of fp32, exact enough for the rerank) and ``int8`` with one fp16
scale per token vector (a quarter of fp32; ``x ~= q * scale``, ``scale = max|x| / 127``). Reading
gives an object that gathers rows as float32 with numpy fancy indexing, so the engine does not care
which codec is behind it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from rsir.index.atomic import save_npy
from rsir.model.errors import InvalidInputError

Codec = Literal["fp16", "int8"]
CODECS: tuple[str, ...] = ("fp16", "int8")


def quantize_int8(tokens: NDArray[np.floating]) -> tuple[NDArray[np.int8], NDArray[np.float16]]:
    """``[..., d]`` floats -> (int8 codes ``[..., d]``, fp16 scales ``[...]``); zero vectors get scale 0."""
    x = np.asarray(tokens, dtype=np.float32)
    peak = np.abs(x).max(axis=-1)
    scale = (peak / 127.0).astype(np.float16)
    safe = np.where(scale > 0, scale.astype(np.float32), 1.0)
    codes = np.clip(np.rint(x / safe[..., None]), -127, 127).astype(np.int8)
    return codes, scale


def dequantize_int8(codes: NDArray[np.int8], scale: NDArray[np.float16]) -> NDArray[np.float32]:
    out: NDArray[np.float32] = codes.astype(np.float32) * scale.astype(np.float32)[..., None]
    return out


class Int8Tokens:
    """Read view over int8 codes + scales that dequantises whatever rows are indexed."""

    def __init__(self, codes: NDArray[np.int8], scale: NDArray[np.float16]) -> None:
        if codes.shape[:-1] != scale.shape:
            raise InvalidInputError(f"int8 codes {codes.shape} and scales {scale.shape} disagree")
        self.codes, self.scale = codes, scale
        self.shape = codes.shape
        self.dtype = np.dtype(np.float32)

    def __len__(self) -> int:
        return int(self.shape[0])

    def __getitem__(self, index: Any) -> NDArray[np.float32]:
        return dequantize_int8(np.asarray(self.codes[index]), np.asarray(self.scale[index]))


def write_tokens(folder: Path, name: str, tokens: NDArray[np.floating], codec: Codec = "fp16") -> None:
    """Write ``tokens [N,T,d]`` as ``{name}.fp16.npy`` or ``{name}.int8.npy`` + ``{name}.scale.npy``."""
    if codec not in CODECS:
        raise InvalidInputError(f"token codec must be one of {CODECS}, got {codec!r}")
    if codec == "fp16":
        save_npy(folder / f"{name}.fp16.npy", np.asarray(tokens, dtype=np.float16))
        return
    codes, scale = quantize_int8(tokens)
    save_npy(folder / f"{name}.int8.npy", codes)
    save_npy(folder / f"{name}.scale.npy", scale)


def open_tokens(folder: Path, name: str, codec: Codec) -> NDArray[np.float16] | Int8Tokens:
    """Memory-map what :func:`write_tokens` wrote; rows are read from disk only when indexed."""
    if codec == "fp16":
        array: NDArray[np.float16] = np.load(folder / f"{name}.fp16.npy", mmap_mode="r")
        return array
    if codec == "int8":
        return Int8Tokens(
            np.load(folder / f"{name}.int8.npy", mmap_mode="r"),
            np.load(folder / f"{name}.scale.npy", mmap_mode="r"),
        )
    raise InvalidInputError(f"token codec must be one of {CODECS}, got {codec!r}")


def _read_header(fh: Any, path: Path) -> tuple[tuple[int, ...], np.dtype[Any]]:
    version = np.lib.format.read_magic(fh)
    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, fortran, dtype = read(fh)
    if fortran:
        raise InvalidInputError(f"{path} is Fortran-ordered; rsir writes C order")
    return tuple(shape), dtype


def npy_shape(path: Path) -> tuple[int, ...]:
    """The shape an ``.npy`` file declares (its header only is read)."""
    with path.open("rb") as fh:
        return _read_header(fh, path)[0]


def read_rows(path: Path, start: int, stop: int) -> NDArray[Any]:
    """Rows ``start:stop`` of an ``.npy`` file, read with one seek (not mapped: see NpyAppender)."""
    with path.open("rb") as fh:
        shape, dtype = _read_header(fh, path)
        stop = min(stop, shape[0]) if shape else 0
        row_items = int(np.prod(shape[1:], dtype=np.int64))
        fh.seek(fh.tell() + start * row_items * dtype.itemsize)
        count = max(0, stop - start) * row_items
        data = np.fromfile(fh, dtype=dtype, count=count)
    out: NDArray[Any] = data.reshape((max(0, stop - start), *shape[1:]))
    return out


class NpyAppender:
    """Writes an ``.npy`` file of known shape by appending row chunks in order.

    Plain file writes, not a memory map: the written pages stay in the kernel's cache instead of
    this process's resident set, so assembling a large index does not grow the builder's RSS.
    """

    def __init__(self, path: Path, dtype: type[np.generic], shape: tuple[int, ...]) -> None:
        self.path, self.dtype, self.shape = path, np.dtype(dtype), shape
        self.rows = 0
        self.fh = path.open("wb")
        header = {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False, "shape": shape}
        np.lib.format.write_array_header_2_0(self.fh, header)

    def append(self, chunk: NDArray[Any]) -> None:
        """Rows in order; a chunk narrower on axis 1 than the file is zero-padded (ragged tokens)."""
        chunk = np.asarray(chunk, dtype=self.dtype)
        if chunk.ndim >= 2 and chunk.shape[1] < self.shape[1]:
            pad = [(0, 0), (0, self.shape[1] - chunk.shape[1])] + [(0, 0)] * (chunk.ndim - 2)
            chunk = np.pad(chunk, pad)
        if chunk.shape[1:] != self.shape[1:]:
            raise InvalidInputError(
                f"{self.path.name}: rows of shape {chunk.shape[1:]}, expected {self.shape[1:]}"
            )
        self.fh.write(np.ascontiguousarray(chunk).tobytes())
        self.rows += chunk.shape[0]

    def close(self) -> None:
        self.fh.close()
        if self.rows != self.shape[0]:
            raise InvalidInputError(f"{self.path.name}: {self.rows} rows written, {self.shape[0]} declared")


class TokenWriter:
    """Streams ``[N,T,d]`` tokens, in row order, into the files :func:`open_tokens` reads."""

    def __init__(self, folder: Path, name: str, shape: tuple[int, int, int], codec: Codec) -> None:
        if codec not in CODECS:
            raise InvalidInputError(f"token codec must be one of {CODECS}, got {codec!r}")
        if codec == "fp16":
            self.values = NpyAppender(folder / f"{name}.fp16.npy", np.float16, shape)
            self.scale: NpyAppender | None = None
        else:
            self.values = NpyAppender(folder / f"{name}.int8.npy", np.int8, shape)
            self.scale = NpyAppender(folder / f"{name}.scale.npy", np.float16, shape[:2])

    def append(self, tokens: NDArray[np.floating]) -> None:
        if self.scale is None:
            self.values.append(tokens)
            return
        self.append_int8(*quantize_int8(tokens))

    def append_int8(self, codes: NDArray[np.int8], scale: NDArray[np.float16]) -> None:
        """Rows already in the int8 codec (:func:`quantize_int8`'s output), written as they are."""
        if self.scale is None:
            raise InvalidInputError(f"{self.values.path.name}: int8 codes given to an fp16 token store")
        if codes.dtype != np.int8 or codes.shape[:-1] != scale.shape:
            raise InvalidInputError(
                f"int8 codes {codes.dtype} {codes.shape} and scales {scale.shape} disagree"
            )
        self.values.append(codes)
        self.scale.append(scale)

    def close(self) -> None:
        self.values.close()
        if self.scale is not None:
            self.scale.close()
