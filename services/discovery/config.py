from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.naming import PrefixMode


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MUSTER_DISCOVERY_")

    valkey_url: str = Field(
        "redis://127.0.0.1:6379/0", validation_alias=AliasChoices("MUSTER_DISCOVERY_VALKEY_URL", "MUSTER_VALKEY_URL")
    )
    source: Literal["folder", "kubernetes"] = "folder"
    servers_dir: Path = Field(
        Path("demo/servers"), validation_alias=AliasChoices("MUSTER_DISCOVERY_SERVERS_DIR", "MUSTER_SERVERS")
    )
    prefix_mode: PrefixMode = Field(
        "always", validation_alias=AliasChoices("MUSTER_DISCOVERY_PREFIX_MODE", "MUSTER_PREFIX_MODE")
    )
    poll_seconds: float = 0.25  # how often the folder is checked for changes
    refresh_seconds: float = 30.0  # how often each server is listed again (and so health-checked)
    retry_max_seconds: float = 30.0  # backoff cap for a server that cannot be reached
    grace_seconds: float = 30.0  # a server that fails keeps its tools this long, so a flap is not seen by agents
    list_timeout: float = 10.0
    leader_ttl_seconds: float = 10.0
    metrics_host: str = "127.0.0.1"
    metrics_port: int | None = None
    log_level: str = "INFO"
    log_json: bool = True
