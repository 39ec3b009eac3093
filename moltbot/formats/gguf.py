"""Validate a GGUF file before llama.cpp reads it: header, metadata, and every tensor inside the file.

A bounded walk over the memory-mapped file (the gguf package's full reader takes seconds on a
262k-token vocabulary); type sizes come from the gguf package's tables.
"""

from __future__ import annotations

import mmap
import struct
from pathlib import Path

from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFValueType

from moltbot.formats import MalformedModelError

_MAGIC = b"GGUF"
_VERSIONS = (2, 3)
_MAX_DIMS = 8
_ALIGNMENT_KEY = "general.alignment"
_SCALAR_SIZES = {
    GGUFValueType.UINT8: 1,
    GGUFValueType.INT8: 1,
    GGUFValueType.UINT16: 2,
    GGUFValueType.INT16: 2,
    GGUFValueType.UINT32: 4,
    GGUFValueType.INT32: 4,
    GGUFValueType.FLOAT32: 4,
    GGUFValueType.BOOL: 1,
    GGUFValueType.UINT64: 8,
    GGUFValueType.INT64: 8,
    GGUFValueType.FLOAT64: 8,
}


class _MalformedError(Exception):
    pass


class _Cursor:
    """Reads little-endian values from a buffer, never past its end."""

    def __init__(self, data: mmap.mmap) -> None:
        self._data = data
        self.pos = 0

    def take(self, size: int) -> bytes:
        if size < 0 or self.pos + size > len(self._data):
            raise _MalformedError("read past the end of the file")
        chunk = self._data[self.pos : self.pos + size]
        self.pos += size
        return chunk

    def u32(self) -> int:
        return int(struct.unpack("<I", self.take(4))[0])

    def u64(self) -> int:
        return int(struct.unpack("<Q", self.take(8))[0])

    def string(self) -> str:
        return self.take(self.u64()).decode("utf-8", errors="replace")

    def skip_value(self, kind: int) -> int | None:
        """Skip one metadata value; return it when it is an unsigned integer (for alignment)."""
        value_type = _value_type(kind)
        if value_type is GGUFValueType.STRING:
            self.take(self.u64())
            return None
        if value_type is GGUFValueType.ARRAY:
            item_type, count = self.u32(), self.u64()
            if _value_type(item_type) in _SCALAR_SIZES:
                self.take(count * _SCALAR_SIZES[_value_type(item_type)])
            else:
                for _ in range(count):
                    self.skip_value(item_type)
            return None
        raw = self.take(_SCALAR_SIZES[value_type])
        return int.from_bytes(raw, "little") if value_type in (GGUFValueType.UINT32, GGUFValueType.UINT64) else None


def _value_type(kind: int) -> GGUFValueType:
    try:
        return GGUFValueType(kind)
    except ValueError:
        raise _MalformedError(f"unknown metadata type {kind}") from None


def _tensor_bytes(dims: list[int], kind: int) -> int:
    try:
        block, type_size = GGML_QUANT_SIZES[GGMLQuantizationType(kind)]
    except (ValueError, KeyError):
        raise _MalformedError(f"unknown tensor type {kind}") from None
    elements = 1
    for dim in dims:
        elements *= dim
    if dims and dims[0] % block:
        raise _MalformedError("tensor row is not a whole number of blocks")
    return elements // block * type_size


def _walk(data: mmap.mmap) -> tuple[int, list[tuple[str, int, int]]]:
    """The start of the tensor data and every tensor's (name, offset from it, size); raises unless all
    lie inside the file."""
    cursor = _Cursor(data)
    if cursor.take(4) != _MAGIC:
        raise _MalformedError("not a GGUF file (bad magic)")
    version = cursor.u32()
    if version not in _VERSIONS:
        raise _MalformedError(f"unsupported GGUF version {version}")
    n_tensors, n_kv = cursor.u64(), cursor.u64()
    if n_tensors == 0 or n_tensors > len(data) or n_kv > len(data):
        raise _MalformedError("implausible tensor or metadata count")
    alignment = 32
    for _ in range(n_kv):
        key = cursor.string()
        value = cursor.skip_value(cursor.u32())
        if key == _ALIGNMENT_KEY and value:
            alignment = value
    tensors = []
    for _ in range(n_tensors):
        name = cursor.string()
        n_dims = cursor.u32()
        if not 0 < n_dims <= _MAX_DIMS:
            raise _MalformedError(f"tensor {name!r} has {n_dims} dimensions")
        dims = [cursor.u64() for _ in range(n_dims)]
        kind, offset = cursor.u32(), cursor.u64()
        tensors.append((name, offset, _tensor_bytes(dims, kind)))
    data_start = -(-cursor.pos // alignment) * alignment
    for name, offset, size in tensors:
        if data_start + offset + size > len(data):
            raise _MalformedError(f"tensor {name!r} lies outside the file")
    return data_start, tensors


def validate_gguf(path: Path) -> None:
    """Raise MalformedModelError unless `path` is a well-formed GGUF whose tensors lie inside the file."""
    gguf_tensors(path)


def gguf_tensors(path: Path) -> tuple[int, list[tuple[str, int, int]]]:
    """Validate `path` as validate_gguf does; return where the tensor data starts and each tensor's
    name, offset (from that start) and size."""
    try:
        with path.open("rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
            return _walk(data)
    except _MalformedError as exc:
        raise MalformedModelError(f"{path.name}: malformed GGUF: {exc}") from exc
    except (OSError, ValueError) as exc:  # unreadable, or empty (mmap of 0 bytes)
        raise MalformedModelError(f"{path.name}: cannot be read as GGUF") from exc
