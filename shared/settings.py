"""What every service's settings share, and how they are read: from the environment, once, in the service's
`config.py` (shared/ itself reads no environment).

A field of a service reads `MUSTER_<SERVICE>_<NAME>`; the fields a class names in `shared_names` also read
`MUSTER_<NAME>`, so that what several services take alike (the Valkey URL, the log format, `muster up`'s
options) is said once. The service's own name wins.

`load(SettingsClass)` is how a service's `__main__` reads them: a value that does not validate ends the process
with one line per problem that names the variable (`MUSTER_INGRESS_PORT='70000': ...`), never a traceback.
"""

import os
import re
import sys
from typing import Any, ClassVar, Literal, TypeVar
from urllib.parse import urlsplit, urlunsplit

from pydantic import ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from shared import sentinel

PREFIX = "MUSTER_"
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
SECRET_WORDS = ("password", "secret", "token", "key")  # a setting named so never has its value repeated
EXIT_USAGE = 2


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
    def _valkey_address(cls, url: str) -> str:
        sentinel.parse(url)  # raises ValueError, with what is wrong
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


S = TypeVar("S", bound=BaseSettings)


def load(settings_cls: type[S], **values: Any) -> S:
    """`settings_cls` read from the environment (and `values`); exits with one line per invalid value."""
    try:
        return settings_cls(**values)
    except (ValidationError, SettingsError) as exc:
        for line in problems(settings_cls, exc):
            print(f"muster: {line}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE) from None


def problems(settings_cls: type[BaseSettings], exc: ValidationError | SettingsError) -> list[str]:
    """One line per invalid value, naming the environment variable it came from."""
    if isinstance(exc, SettingsError):  # a list or mapping setting that is not JSON
        found = re.search(r'field "([^"]+)"', str(exc))
        name, raw = variable(settings_cls, found.group(1) if found else "")
        return [f'{name}={shown(name, raw or "")}: not valid JSON (a list is written as ["a", "b"])']
    lines = []
    for error in exc.errors(include_url=False):
        field = str(error["loc"][0]) if error["loc"] else ""
        if not field:  # a check of the whole (one setting needs another): its message names the variables
            lines.append(_message(error))
            continue
        name, raw = variable(settings_cls, field)
        what = f"{name}={shown(field, raw)}" if raw is not None else (name or "settings")
        lines.append(f"{what}: {_message(error)}")
    return lines


def variable(settings_cls: type[BaseSettings], field: str) -> tuple[str, str | None]:
    """The variable a field was read from (its service's name first, as the settings read them) and its value."""
    own = f"{settings_cls.model_config.get('env_prefix', PREFIX)}{field}".upper()
    names = [own]
    if field in getattr(settings_cls, "shared_names", frozenset()):
        names.append(f"{PREFIX}{field}".upper())
    environ = {k.upper(): v for k, v in os.environ.items()}
    for name in names:
        if name in environ:
            return name, environ[name]
    return own, None


def shown(field: str, raw: str) -> str:
    """A value as an error message may repeat it: never a secret, never a URL's password."""
    if any(word in SECRET_WORDS for word in field.lower().split("_")):
        return "(withheld)"
    parts = urlsplit(raw)
    if "://" in raw and parts.password is not None:
        host = parts.netloc.rpartition("@")[2]
        raw = urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))
    return repr(raw)


def _message(error: Any) -> str:
    message = str(error["msg"])
    return message.removeprefix("Value error, ")
