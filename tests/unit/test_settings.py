from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from moltbot.resources import Resources
from moltbot.settings import CONFIG_ENV, ProfileName, Settings, choose_profile, resolve

GIB = 1 << 30


def resources(memory_gib: float, cores: int = 4, gpus: int = 0) -> Resources:
    return Resources(cores, cores * 2, int(memory_gib * GIB), 100 * GIB, gpus)


@pytest.mark.parametrize(
    ("res", "expected"),
    [
        (resources(2), ProfileName.MINIMAL),
        (resources(3.9), ProfileName.MINIMAL),
        (resources(8, cores=1), ProfileName.MINIMAL),
        (resources(8), ProfileName.STANDARD),
        (resources(24, cores=2), ProfileName.STANDARD),
        (resources(64, cores=16), ProfileName.PRO),
        (resources(64, cores=4, gpus=1), ProfileName.PRO),
    ],
)
def test_profile_follows_resources(res: Resources, expected: ProfileName) -> None:
    assert choose_profile(res).name is expected


def test_minimal_profile_is_small() -> None:
    runtime = resolve(Settings(data_dir=Path("data")), resources(2))
    assert runtime.context_size * runtime.parallel <= 8192  # KV cells: about 150 MB for Gemma 3 270M
    assert runtime.max_queue <= 8


def test_settings_override_the_profile(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOLTBOT_CONTEXT_SIZE", "1024")
    monkeypatch.setenv("MOLTBOT_THREADS", "3")
    runtime = resolve(Settings(), resources(8))
    assert runtime.profile.name is ProfileName.STANDARD
    assert (runtime.context_size, runtime.threads) == (1024, 3)


def test_threads_default_to_physical_cores() -> None:
    assert resolve(Settings(), resources(8, cores=6)).threads == 6


def test_explicit_profile_wins() -> None:
    assert resolve(Settings(profile=ProfileName.PRO), resources(2)).profile.name is ProfileName.PRO


def test_gpu_layers_auto() -> None:
    assert resolve(Settings(), resources(8, gpus=1)).gpu_layers == -1
    assert resolve(Settings(), resources(8)).gpu_layers == 0


def test_toml_file_and_env_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "moltbot.toml"
    config.write_text('port = 9000\nhost = "127.0.0.2"\n')
    monkeypatch.setenv(CONFIG_ENV, str(config))
    monkeypatch.setenv("MOLTBOT_PORT", "9100")
    settings = Settings()
    assert settings.host == "127.0.0.2"
    assert settings.port == 9100


def test_unknown_key_in_toml_is_rejected(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "moltbot.toml"
    config.write_text("prot = 9000\n")
    monkeypatch.setenv(CONFIG_ENV, str(config))
    with pytest.raises(ValidationError, match="prot"):
        Settings()


@pytest.mark.parametrize(("name", "value"), [("port", "70000"), ("threads", "0"), ("log_level", "loud")])
def test_invalid_values_raise(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(f"MOLTBOT_{name.upper()}", value)
    with pytest.raises(ValidationError):
        Settings()


def test_describe_has_effective_values() -> None:
    described = resolve(Settings(), resources(2)).describe()
    assert described["profile"] == "minimal"
    assert described["context_size"] == 2048


@pytest.mark.parametrize(
    ("memory_gib", "expected"),
    [
        (2, ("qwen2.5-coder-0.5b-instruct",)),
        (6, ("qwen2.5-coder-1.5b-instruct",)),
        (16, ("qwen2.5-coder-1.5b-instruct", "qwen2.5-coder-0.5b-instruct")),
    ],
)
def test_the_chat_models_fit_the_memory(memory_gib: int, expected: tuple[str, ...]) -> None:
    runtime = resolve(Settings(data_dir=Path("data")), resources(memory_gib))
    assert runtime.chat_models == expected and runtime.default_model == expected[0]
    assert runtime.wanted(expected[0], bundled=True) and runtime.wanted("all-minilm-l6-v2", bundled=True)
    assert runtime.wanted("my-own-model", bundled=False) and not runtime.wanted("gemma-3-270m", bundled=True)
    chosen = resolve(Settings(data_dir=Path("data"), models=["gemma-3-270m"]), resources(memory_gib))
    assert chosen.default_model == "gemma-3-270m" and not chosen.wanted("my-own-model", bundled=False)
    # Summaries: the smallest bundled chat model, the chosen default, or the one configured.
    assert runtime.summary_model == expected[-1] and chosen.summary_model == "gemma-3-270m"
    configured = Settings(data_dir=Path("data"), document_model="qwen2.5-coder-1.5b-instruct")
    assert resolve(configured, resources(memory_gib)).summary_model == "qwen2.5-coder-1.5b-instruct"


def test_the_voice_profile_is_small_and_loads_no_embedder() -> None:
    runtime = resolve(Settings(profile=ProfileName.VOICE), resources(4, cores=4))
    assert runtime.profile.name is ProfileName.VOICE and runtime.threads == 4  # threads from the cores
    assert runtime.chat_models == ("qwen2.5-coder-0.5b-instruct",) and runtime.voice_model == runtime.chat_models[0]
    assert runtime.parallel * runtime.context_size <= 4096
    assert not runtime.wanted("all-minilm-l6-v2", bundled=True)
    assert resolve(Settings(), resources(4)).wanted("all-minilm-l6-v2", bundled=True)
    assert choose_profile(resources(2)).name is not ProfileName.VOICE  # only when asked for


def test_the_speech_model_is_one_that_ships(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().speech_model == "whisper-tiny.en"
    monkeypatch.setenv("MOLTBOT_SPEECH_MODEL", "whisper-base")
    assert Settings().speech_model == "whisper-base"
    monkeypatch.setenv("MOLTBOT_SPEECH_MODEL", "whisper-large")
    with pytest.raises(ValidationError):
        Settings()
