from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from gguf import GGUFWriter

from moltbot.formats import MalformedModelError
from moltbot.formats.gguf import validate_gguf


@pytest.fixture
def good_gguf(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.gguf"
    writer = GGUFWriter(str(path), "llama")
    writer.add_string("general.name", "tiny")
    writer.add_array("tokenizer.ggml.tokens", ["a", "b", "c"])
    writer.add_tensor("w1", np.ones((4, 32), dtype=np.float32))
    writer.add_tensor("w2", np.zeros((8,), dtype=np.float16))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_accepts_a_well_formed_file(good_gguf: Path) -> None:
    validate_gguf(good_gguf)


@pytest.mark.parametrize("keep", [0, 3, 8, 24, 100])
def test_refuses_truncated_headers(good_gguf: Path, keep: int) -> None:
    good_gguf.write_bytes(good_gguf.read_bytes()[:keep])
    with pytest.raises(MalformedModelError):
        validate_gguf(good_gguf)


def test_refuses_tensor_past_the_end(good_gguf: Path) -> None:
    good_gguf.write_bytes(good_gguf.read_bytes()[:-40])  # into the last tensor, past its padding
    with pytest.raises(MalformedModelError, match="outside the file"):
        validate_gguf(good_gguf)


def test_refuses_bad_magic_and_version(good_gguf: Path) -> None:
    data = bytearray(good_gguf.read_bytes())
    good_gguf.write_bytes(b"GGML" + data[4:])
    with pytest.raises(MalformedModelError, match="magic"):
        validate_gguf(good_gguf)
    data[4:8] = (99).to_bytes(4, "little")
    good_gguf.write_bytes(bytes(data))
    with pytest.raises(MalformedModelError, match="version"):
        validate_gguf(good_gguf)


def test_refuses_huge_string_length(good_gguf: Path) -> None:
    data = bytearray(good_gguf.read_bytes())
    # The first key's length field follows the 24-byte header.
    data[24:32] = (2**62).to_bytes(8, "little")
    good_gguf.write_bytes(bytes(data))
    with pytest.raises(MalformedModelError):
        validate_gguf(good_gguf)


def test_refuses_missing_file(tmp_path: Path) -> None:
    with pytest.raises(MalformedModelError):
        validate_gguf(tmp_path / "absent.gguf")
