"""One validated settings object: environment (MOLTBOT_*), an optional TOML file, profiles."""

from __future__ import annotations

import enum
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from moltbot.resources import Resources

CONFIG_ENV = "MOLTBOT_CONFIG"
_GIB = 1 << 30


class ProfileName(enum.StrEnum):
    AUTO = "auto"
    MINIMAL = "minimal"
    STANDARD = "standard"
    PRO = "pro"
    VOICE = "voice"


@dataclass(slots=True, frozen=True)
class Profile:
    """Defaults sized for a class of machine; any setting overrides them."""

    name: ProfileName
    chat_models: tuple[str, ...]  # bundled chat models loaded by default, the default one first
    context_size: int  # per sequence
    batch_size: int  # tokens per engine step
    parallel: int  # sequences decoded together, each with its own KV region of context_size
    max_queue: int  # requests waiting beyond those running
    embedding_batch: int
    kv_cache_bytes: int  # host-memory tier for KV states of conversations not in a slot
    kv_disk_bytes: int  # disk tier (encrypted files in the data directory), also kept across restarts
    embeddings: bool = True  # the bundled embedder is loaded


# The chat models by profile: the 1.5B instruct model where memory allows (with the 0.5B beside it), the
# 0.5B alone on a 2 GB machine (its file is 0.5 GB against 1.1 GB; see the README for measured memory).
_BOTH = ("qwen2.5-coder-1.5b-instruct", "qwen2.5-coder-0.5b-instruct")
_SMALL = ("qwen2.5-coder-0.5b-instruct",)
EMBEDDING_MODEL = "all-minilm-l6-v2"
PROFILES: dict[ProfileName, Profile] = {
    ProfileName.MINIMAL: Profile(ProfileName.MINIMAL, _SMALL, 2048, 256, 4, 8, 8, 256 << 20, 1 << 30),
    ProfileName.STANDARD: Profile(ProfileName.STANDARD, _BOTH, 4096, 512, 12, 32, 32, 2 << 30, 8 << 30),
    ProfileName.PRO: Profile(ProfileName.PRO, _BOTH, 8192, 1024, 32, 64, 64, 8 << 30, 32 << 30),
    # A voice assistant on a small device (a Raspberry Pi 4B): the 0.5B answers two conversations at a
    # time beside Whisper and Piper, no embedder; never chosen by `auto`.
    ProfileName.VOICE: Profile(ProfileName.VOICE, _SMALL, 2048, 128, 2, 4, 8, 128 << 20, 1 << 30, embeddings=False),
}


def choose_profile(resources: Resources) -> Profile:
    """Pick a profile from what the machine offers: minimal fits in 2 GB of RAM."""
    if resources.memory_bytes < 4 * _GIB or resources.physical_cores < 2:
        return PROFILES[ProfileName.MINIMAL]
    if resources.memory_bytes >= 32 * _GIB and (resources.gpu_count > 0 or resources.physical_cores >= 8):
        return PROFILES[ProfileName.PRO]
    return PROFILES[ProfileName.STANDARD]


def _default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "moltbot"


class Settings(BaseSettings):
    """Everything configurable; `None` means "from the profile" or "detected"."""

    model_config = SettingsConfigDict(env_prefix="MOLTBOT_", extra="forbid", validate_default=True)

    data_dir: Path = Field(default_factory=_default_data_dir)
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    profile: ProfileName = ProfileName.AUTO
    threads: int | None = Field(default=None, ge=1, le=512)
    context_size: int | None = Field(default=None, ge=256, le=1 << 20)
    batch_size: int | None = Field(default=None, ge=16, le=8192)
    parallel: int | None = Field(default=None, ge=1, le=256)
    kv_cache_bytes: int | None = Field(default=None, ge=0)
    kv_disk_bytes: int | None = Field(default=None, ge=0)  # default: the profile's, at most 10% of free disk
    max_queue: int | None = Field(default=None, ge=1, le=10_000)
    gpu_layers: int | None = Field(default=None, ge=-1)
    # A cached prefix gives exactly the tokens of computing it again (temperature 0, the same batch): the
    # previous answer's tokens are read again with the next turn, and the CPU's repacked weights are off.
    exact_cache: bool = True
    model_path: Path | None = None
    # The models the server loads (ids in the store), the default chat model first. Unset: the profile's
    # chat models, the embedding model, and every model of the store that did not ship with Moltbot.
    models: list[str] | None = Field(default=None, max_length=64)
    bundled_models: bool = True
    model_versions_kept: int = Field(default=3, ge=1, le=100)  # per model; the active one is never removed
    # OCI registries for `moltbot models push/pull`: basic or token auth, TLS against the system CAs or
    # this bundle; plain HTTP only for the registries named here ("host:port,…", or "1" for any).
    registry_username: str = ""
    registry_password: SecretStr = SecretStr("")
    registry_ca_file: Path | None = None
    registry_insecure: str = ""
    # TLS 1.3 only, on by default; plain HTTP (tls = false) only on a loopback address.
    tls: bool = True
    tls_cert_file: Path | None = None  # with tls_key_file: the operator's certificate instead of the local CA's
    tls_key_file: Path | None = None
    tls_names: list[str] = Field(default_factory=list, max_length=64)  # more names for the local certificate
    # PostgreSQL (postgresql+psycopg://user:password@host/db) instead of SQLite in the data directory.
    database_url: str | None = None
    # Encryption at rest: the key-encryption key's file (created 0600 on first start).
    kek_file: Path | None = None  # default: <data_dir>/secrets/kek; put it outside the data dir if you wish
    # Strict offline mode: outbound connections only to loopback, the webhooks' hosts and these hosts/networks.
    offline: bool = True
    offline_allow: list[str] = Field(default_factory=list, max_length=256)
    trusted_proxies: list[str] = Field(default_factory=list, max_length=64)  # whose X-Forwarded-For is believed
    cors_origins: list[str] = Field(default_factory=list, max_length=64)  # CORS is off unless origins are named
    log_level: str = "info"
    log_format: Literal["json", "text"] = "json"
    access_log: bool = True
    # Monitoring: HTTP metrics and the built-in alert evaluator (engine and resource metrics are always there).
    monitor: bool = True
    monitor_interval_s: float = Field(default=15.0, ge=0.05, le=3600)
    alert_rules: Path | None = None  # YAML merged over the shipped rules by alert name
    alert_webhooks: list[str] = Field(default_factory=list, max_length=16)  # Alertmanager webhook payload
    metrics_port: int | None = Field(default=None, ge=1, le=65535)  # /metrics without a key, on 127.0.0.1 only
    # Limits on what a client controls.
    max_body_bytes: int = Field(default=1 << 20, ge=1024)
    max_header_bytes: int = Field(default=16 << 10, ge=1024)
    max_json_depth: int = Field(default=64, ge=4, le=512)
    max_messages: int = Field(default=256, ge=1)
    max_stop: int = Field(default=4, ge=0)
    max_stop_chars: int = Field(default=256, ge=1)
    max_tokens_limit: int = Field(default=4096, ge=1)
    max_n: int = Field(default=4, ge=1, le=64)
    max_embedding_inputs: int = Field(default=256, ge=1)
    request_timeout_s: float = Field(default=300.0, gt=0)
    # Documents (POST /v1/documents): the upload's own body limit, pages, OCR and the worker's limits.
    document_max_bytes: int = Field(default=64 << 20, ge=1024, le=1 << 31)
    document_max_pages: int = Field(default=1000, ge=1, le=100_000)
    ocr_languages: str = Field(default="eng", pattern=r"^[a-z_]{2,16}(\+[a-z_]{2,16}){0,3}$")
    ocr_dpi: int = Field(default=300, ge=72, le=600)
    document_worker_memory_bytes: int = Field(default=1536 << 20, ge=256 << 20)
    document_page_timeout_s: float = Field(default=180.0, gt=0, le=3600)
    document_model: str | None = Field(default=None, max_length=200)  # summaries, questions: see summary_model
    document_summaries: bool = True
    document_embedding_model: str | None = Field(default=None, max_length=200)  # retrieval; default all-MiniLM
    audio_max_bytes: int = Field(default=25 << 20, ge=1024, le=1 << 30)  # an uploaded recording
    audio_max_seconds: float = Field(default=1800.0, gt=0, le=6 * 3600)
    speech_max_input_chars: int = Field(default=4096, ge=1, le=100_000)
    voice_model: str | None = Field(default=None, max_length=200)  # live voice answers; see Runtime.voice_model
    # The speech-to-text model a request that names none gets (and the live loop's): whisper-base for
    # speakers of other languages than English (multilingual, about 3 times the work of tiny.en).
    speech_model: Literal["whisper-tiny.en", "whisper-base", "pocketsphinx-en-us"] = "whisper-tiny.en"
    realtime_max_sessions: int = Field(default=8, ge=1, le=1024)
    realtime_idle_s: float = Field(default=120.0, gt=0, le=3600)
    realtime_max_seconds: float = Field(default=3600.0, gt=0, le=24 * 3600)
    # A live client that has not taken an event for this long (its buffers full) is disconnected.
    realtime_send_timeout_s: float = Field(default=10.0, gt=0, le=600)
    # Per API key (0 turns one off), and failed authentications per client address.
    rate_limit_rpm: int = Field(default=1200, ge=0)
    rate_limit_tpm: int = Field(default=200_000, ge=0)
    rate_limit_concurrent: int = Field(default=32, ge=0)
    auth_failures_per_minute: int = Field(default=30, ge=0)
    queue_timeout_s: float = Field(default=60.0, gt=0)
    # On SIGTERM: how long requests in flight may go on before they are cut (default: the request time
    # limit, so any reply the server would finish, a full max_tokens stream included, finishes).
    shutdown_drain_s: float | None = Field(default=None, ge=0, le=86_400)

    @property
    def drain_seconds(self) -> float:
        return self.request_timeout_s if self.shutdown_drain_s is None else self.shutdown_drain_s

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        level = value.lower()
        if level not in {"debug", "info", "warning", "error"}:
            raise ValueError("log_level must be debug, info, warning or error")
        return level

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, values: list[str]) -> list[str]:
        for value in values:
            try:
                ipaddress.ip_network(value.strip(), strict=False)
            except ValueError:
                raise ValueError(f"{value!r} is not an IP address or network") from None
        return values

    @field_validator("database_url")
    @classmethod
    def _database(cls, url: str | None) -> str | None:
        if url is None:
            return None
        try:
            parsed = make_url(url)
        except ArgumentError:
            raise ValueError("database_url is not a database URL") from None
        if parsed.get_backend_name() not in {"postgresql", "sqlite"}:
            raise ValueError("database_url must name PostgreSQL (postgresql+psycopg://…) or SQLite")
        if parsed.get_backend_name() == "postgresql" and parsed.get_driver_name() != "psycopg":
            parsed = parsed.set(drivername="postgresql+psycopg")
        return parsed.render_as_string(hide_password=False)

    @field_validator("alert_webhooks")
    @classmethod
    def _webhook_urls(cls, urls: list[str]) -> list[str]:
        for url in urls:
            parsed = urlsplit(url)
            if parsed.scheme not in {"http", "https"} or not parsed.hostname:
                raise ValueError("alert webhooks must be http:// or https:// URLs")
        return urls

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = os.environ.get(CONFIG_ENV)
        if config_file:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=Path(config_file)))
        return tuple(sources)

    @model_validator(mode="after")
    def _tls_pair(self) -> Settings:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("tls_cert_file and tls_key_file go together")
        return self

    @property
    def tls_dir(self) -> Path:
        return self.data_dir / "tls"

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"

    @property
    def model_keys_dir(self) -> Path:
        return self.data_dir / "secrets" / "model-keys"

    @property
    def registry_insecure_hosts(self) -> tuple[str, ...]:
        value = self.registry_insecure.strip()
        if value.lower() in {"1", "true", "yes", "*"}:
            return ("*",)
        if value.lower() in {"", "0", "false", "no"}:
            return ()
        return tuple(h.strip() for h in value.split(",") if h.strip())

    @property
    def kv_dir(self) -> Path:
        return self.data_dir / "kv"

    @property
    def kek_path(self) -> Path:
        return self.kek_file or self.data_dir / "secrets" / "kek"

    @property
    def database_path(self) -> Path:
        return self.data_dir / "moltbot.db"


@dataclass(slots=True, frozen=True)
class Runtime:
    """Settings with every profile-driven value resolved for this machine."""

    settings: Settings
    resources: Resources
    profile: Profile
    threads: int
    context_size: int
    batch_size: int
    parallel: int
    max_queue: int
    kv_cache_bytes: int
    kv_disk_bytes: int
    gpu_layers: int
    chat_models: tuple[str, ...] = ()  # the bundled chat models loaded by default, the default first

    @property
    def default_model(self) -> str:
        """The chat model a request that names none gets (the CLI, sessions, the applications)."""
        chosen = self.settings.models
        return chosen[0] if chosen else self.chat_models[0]

    @property
    def fast_model(self) -> str:
        """The default chat model when the models are chosen, else the smallest bundled chat model (the
        0.5B): what answers where time counts more than depth."""
        chosen = self.settings.models
        return chosen[0] if chosen else self.chat_models[-1]

    @property
    def voice_model(self) -> str:
        """The instruct model of a live voice conversation: MOLTBOT_VOICE_MODEL, else the fast model (its
        first clause comes sooner, and a spoken answer is short)."""
        return self.settings.voice_model or self.fast_model

    @property
    def summary_model(self) -> str:
        """The instruct model that summarizes documents: MOLTBOT_DOCUMENT_MODEL, else the fast model (the
        summary is the stage that sets a paper's time, and the 1.5B reads about three times slower)."""
        return self.settings.document_model or self.fast_model

    def wanted(self, model_id: str, *, bundled: bool) -> bool:
        """Whether the server loads `model_id` of the store at start."""
        if self.settings.models is not None:
            return model_id in self.settings.models
        embedder = model_id == EMBEDDING_MODEL and self.profile.embeddings
        return model_id in self.chat_models or embedder or not bundled

    def describe(self) -> dict[str, Any]:
        """The effective settings, safe to log: webhook URLs (which may carry a token) show only their host."""
        values = self.settings.model_dump(mode="json")
        values["alert_webhooks"] = [_redacted(url) for url in self.settings.alert_webhooks]
        if self.settings.database_url:
            values["database_url"] = make_url(self.settings.database_url).render_as_string(hide_password=True)
        values.update(
            profile=self.profile.name.value,
            threads=self.threads,
            context_size=self.context_size,
            batch_size=self.batch_size,
            parallel=self.parallel,
            max_queue=self.max_queue,
            kv_cache_bytes=self.kv_cache_bytes,
            kv_disk_bytes=self.kv_disk_bytes,
            gpu_layers=self.gpu_layers,
        )
        return values


def _redacted(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}{f':{parts.port}' if parts.port else ''}/..."


# Both Qwen models with the standard profile's KV cache were measured at 3.7 GiB resident: under this much
# memory the standard profile loads the 1.5B alone.
_BOTH_CHAT_MODELS_BYTES = 8 * _GIB


def _chat_models(profile: Profile, resources: Resources) -> tuple[str, ...]:
    if len(profile.chat_models) > 1 and resources.memory_bytes < _BOTH_CHAT_MODELS_BYTES:
        return profile.chat_models[:1]
    return profile.chat_models


def resolve(settings: Settings, resources: Resources) -> Runtime:
    """Fill in every `None` setting from the chosen profile and the detected resources."""
    auto = settings.profile is ProfileName.AUTO
    profile = choose_profile(resources) if auto else PROFILES[settings.profile]
    gpu_layers = settings.gpu_layers
    if gpu_layers is None:
        gpu_layers = -1 if resources.gpu_count > 0 else 0
    return Runtime(
        settings=settings,
        resources=resources,
        profile=profile,
        threads=settings.threads or resources.physical_cores,
        context_size=settings.context_size or profile.context_size,
        # Room for every slot's decode token and two prompt pieces (the engine's exact mode needs it).
        batch_size=max(settings.batch_size or profile.batch_size, (settings.parallel or profile.parallel) + 16),
        parallel=settings.parallel or profile.parallel,
        kv_cache_bytes=profile.kv_cache_bytes if settings.kv_cache_bytes is None else settings.kv_cache_bytes,
        kv_disk_bytes=(
            min(profile.kv_disk_bytes, resources.disk_free_bytes // 10)
            if settings.kv_disk_bytes is None
            else settings.kv_disk_bytes
        ),
        max_queue=settings.max_queue or profile.max_queue,
        gpu_layers=gpu_layers,
        chat_models=_chat_models(profile, resources),
    )
