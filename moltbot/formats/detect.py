"""Which kind of HuggingFace directory a path is, from its files and config.json alone."""

from __future__ import annotations

import json
from pathlib import Path

# Weight files that are Python pickles: loading one can run arbitrary code, so they are never read.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
BERT_MODEL_TYPES = frozenset({"bert"})


def is_bert_dir(path: Path) -> bool:
    """Whether `path` is a HuggingFace directory of a BERT encoder in safetensors."""
    config = path / "config.json"
    if not (config.is_file() and (path / "model.safetensors").is_file() and (path / "tokenizer.json").is_file()):
        return False
    try:
        return json.loads(config.read_text()).get("model_type") in BERT_MODEL_TYPES
    except (OSError, ValueError, AttributeError):
        return False


def is_causal_lm_dir(path: Path) -> bool:
    """Whether `path` is a HuggingFace directory of a causal LM (`*ForCausalLM`) with safetensors weights."""
    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, ValueError):
        return False
    architectures = config.get("architectures") if isinstance(config, dict) else None
    if not isinstance(architectures, list):
        return False
    causal = any(isinstance(name, str) and name.endswith("ForCausalLM") for name in architectures)
    return causal and any(path.glob("*.safetensors"))
