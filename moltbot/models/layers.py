"""How a model's files are cut into layers: byte ranges that follow tensor groups.

A file is the concatenation of its layers, so a version is rebuilt exactly from its blobs. GGUF and
safetensors files are cut after their header and then at every change of tensor group (a transformer
block, the embeddings, the head), with the padding between tensors going to the group before it; a
fine-tune that changes one block changes one layer (and the header only if a tensor's shape, type or
the metadata changed). Other files (config, tokenizer) are one layer each.
"""

from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass
from pathlib import Path

from moltbot.formats import MalformedModelError
from moltbot.formats.gguf import gguf_tensors

# blk.12.attn_q.weight (GGUF), model.layers.12.mlp... / encoder.layer.3... / transformer.h.7... (HF)
_GGUF_BLOCK = re.compile(r"^blk\.(\d+)\.")
_HF_BLOCK = re.compile(r"(?:^|\.)(?:layers|layer|h|blocks|block)\.(\d+)\.")
_SAFETENSORS_MAX_HEADER = 100 * 1024 * 1024
MAX_LAYER_BYTES = 512 * 1024 * 1024


@dataclass(slots=True, frozen=True)
class Range:
    """One layer: `size` bytes of the file `path` (relative to the model's root) from `offset`."""

    path: str
    offset: int
    size: int
    group: str


def plan(root: Path, files: list[str]) -> list[Range]:
    """The layers of a model whose files (relative paths, in order) lie under `root`."""
    ranges: list[Range] = []
    for name in files:
        path = root / name
        size = path.stat().st_size
        if name.endswith(".gguf"):
            ranges.extend(_cut(name, size, *_gguf_groups(path), "header"))
        elif name.endswith(".safetensors"):
            ranges.extend(_cut(name, size, *_safetensors_groups(path), "header"))
        else:
            ranges.extend(_split([Range(name, 0, size, "file")]))
    return ranges


def _cut(name: str, size: int, header_end: int, starts: list[tuple[int, str]], header: str) -> list[Range]:
    """Ranges for a file: [0, header_end) then one per run of tensors of the same group."""
    bounds: list[tuple[int, str]] = [(0, header)]
    for start, group in sorted(starts):
        absolute = header_end + start
        if bounds[-1][1] != group and absolute > bounds[-1][0]:
            bounds.append((absolute, group))
    ranges = []
    for index, (start, group) in enumerate(bounds):
        end = bounds[index + 1][0] if index + 1 < len(bounds) else size
        ranges.append(Range(name, start, end - start, group))
    return _split([r for r in ranges if r.size > 0] or [Range(name, 0, size, header)])


def _split(ranges: list[Range]) -> list[Range]:
    """Groups larger than MAX_LAYER_BYTES in pieces: bounded memory per layer (and per AES-GCM message)."""
    out = []
    for r in ranges:
        for index, start in enumerate(range(0, r.size, MAX_LAYER_BYTES)):
            group = r.group if index == 0 else f"{r.group}.{index}"
            out.append(Range(r.path, r.offset + start, min(MAX_LAYER_BYTES, r.size - start), group))
    return out


def _gguf_groups(path: Path) -> tuple[int, list[tuple[int, str]]]:
    data_start, tensors = gguf_tensors(path)
    return data_start, [(offset, _group(_GGUF_BLOCK, name)) for name, offset, _size in tensors]


def _safetensors_groups(path: Path) -> tuple[int, list[tuple[int, str]]]:
    with path.open("rb") as handle:
        raw = handle.read(8)
        if len(raw) != 8:
            raise MalformedModelError(f"{path.name}: not a safetensors file")
        (length,) = struct.unpack("<Q", raw)
        if length > _SAFETENSORS_MAX_HEADER:
            raise MalformedModelError(f"{path.name}: safetensors header too large")
        try:
            header = json.loads(handle.read(length))
        except ValueError as exc:
            raise MalformedModelError(f"{path.name}: safetensors header is not JSON") from exc
    if not isinstance(header, dict):
        raise MalformedModelError(f"{path.name}: safetensors header is not an object")
    data_size = path.stat().st_size - 8 - length
    starts = []
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)):
            raise MalformedModelError(f"{path.name}: tensor {name!r} has no data offsets")
        begin, end = offsets
        if not 0 <= begin <= end <= data_size:
            raise MalformedModelError(f"{path.name}: tensor {name!r} lies outside the file")
        starts.append((begin, _group(_HF_BLOCK, name)))
    return 8 + length, starts


def _group(pattern: re.Pattern[str], tensor: str) -> str:
    match = pattern.search(tensor)
    if match:
        return f"block.{int(match.group(1))}"
    # Outside the blocks: embeddings before them, norms and head after; each run is its own layer.
    return "embeddings" if "emb" in tensor else "head"
