"""What every service's settings share, and how they are read: from the environment, once, in the service's
`config.py` (shared/ itself reads no environment).

A field of a service reads `MUSTER_<SERVICE>_<NAME>`; the fields a class names in `shared_names` also read
`MUSTER_<NAME>`, so that what several services take alike (the Valkey URL, the log format, `muster up`'s
options) is said once. The service's own name wins.
"""

from typing import Any, ClassVar, Literal
from urllib.parse import urlsplit

from pydantic import field_validator
from pydantic_settings import BaseSettings, EnvSettingsSource, PydanticBaseSettingsSource, SettingsConfigDict

PREFIX = "MUSTER_"
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
VALKEY_SCHEMES = ("redis", "rediss")


class _SharedNames(EnvSettingsSource):
    """`MUSTER_<NAME>`, for the fields a settings class shares with the other services."""

    def __call__(self) -> dict[str, Any]:
        shared: frozenset[str] = getattr(self.settings_cls, "shared_names", frozenset())
        return {name: value for name, value in super().__call__().items() if name in shared}


class ServiceSettings(BaseSettings):
    """The base of `IngressSettings`, `WorkerSettings` and `DiscoverySettings`; each sets its own env_prefix."""

    model_config = SettingsConfigDict(env_prefix=PREFIX, extra="forbid")
    shared_names: ClassVar[frozenset[str]] = frozenset(
        {"valkey_url", "log_level", "log_json", "call_metrics", "call_log", "tracing"}
    )

    valkey_url: str = "redis://127.0.0.1:6379/0"
    log_level: LogLevel = "INFO"
    log_json: bool = True  # one JSON object per line; text for a person at a terminal
    # The per-call counters and histograms, and the one log line per call (at the ingress). Both stay on in
    # production; turning them off is how `make bench` measures what they cost.
    call_metrics: bool = True
    call_log: bool = True
    # OpenTelemetry spans of every call, exported over OTLP (OTEL_EXPORTER_OTLP_* say where): needs the
    # `tracing` extra. Off costs nothing on the per-call path.
    tracing: Literal["off", "otlp"] = "off"

    @field_validator("valkey_url")
    @classmethod
    def _valkey_scheme(cls, url: str) -> str:
        if urlsplit(url).scheme not in VALKEY_SCHEMES:
            raise ValueError(f"must start with {' or '.join(s + '://' for s in VALKEY_SCHEMES)}")
        return url

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, level: Any) -> Any:
        return level.upper() if isinstance(level, str) else level

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # No .env file and no secrets folder: the environment (a Deployment, `muster up`) says everything.
        return init_settings, env_settings, _SharedNames(settings_cls, env_prefix=PREFIX)
