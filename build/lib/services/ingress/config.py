from typing import Literal

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.lifecycle import instance_id

LOOPBACK_HOSTS = ["127.0.0.1", "127.0.0.1:*", "localhost", "localhost:*", "[::1]", "[::1]:*"]
LOOPBACK_ORIGINS = [
    "http://127.0.0.1:*",
    "http://localhost:*",
    "http://[::1]:*",
    "https://127.0.0.1:*",
    "https://localhost:*",
    "https://[::1]:*",
]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MUSTER_INGRESS_")

    valkey_url: str = Field(
        "redis://127.0.0.1:6379/0", validation_alias=AliasChoices("MUSTER_INGRESS_VALKEY_URL", "MUSTER_VALKEY_URL")
    )
    host: str = "127.0.0.1"
    port: int = Field(8090, validation_alias=AliasChoices("MUSTER_INGRESS_PORT", "MUSTER_PORT"))
    replica_id: str = Field(default_factory=instance_id)
    path: str = "/mcp"
    expose: Literal["direct", "meta"] = Field(
        "direct", validation_alias=AliasChoices("MUSTER_INGRESS_EXPOSE", "MUSTER_EXPOSE")
    )
    # DNS-rebinding protection: Host and Origin values that are let in ("*" lets every value in).
    allowed_hosts: list[str] = Field(default_factory=lambda: list(LOOPBACK_HOSTS))
    allowed_origins: list[str] = Field(default_factory=lambda: list(LOOPBACK_ORIGINS))
    max_body_bytes: int = 4 * 1024 * 1024
    call_timeout: float = 120.0  # seconds from acceptance to outcome, for calls that set no shorter one
    queue_limit: int = 10_000  # accepted, unfinished calls per upstream server, across all replicas
    max_pending: int = 20_000  # calls one replica waits for at once
    retry_after: float = 1.0  # what a caller told "queue full" should wait
    session_ttl: int = 24 * 3600  # seconds an unused session lives
    session_recheck: float = 10.0  # seconds a replica trusts its cached copy of a session
    keepalive_seconds: float = 15.0  # comment lines on idle event streams, so that proxies keep them open
    log_level: str = "INFO"
    log_json: bool = True
    access_log: bool = False
