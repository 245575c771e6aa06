from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.lifecycle import instance_id


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MUSTER_WORKER_")

    valkey_url: str = Field(
        "redis://127.0.0.1:6379/0", validation_alias=AliasChoices("MUSTER_WORKER_VALKEY_URL", "MUSTER_VALKEY_URL")
    )
    worker_id: str = Field(default_factory=instance_id)
    # Calls one worker runs at once against one upstream server; further calls wait in that server's stream,
    # where they delay nobody else.
    server_concurrency: int = 64
    batch: int = 32  # entries fetched per read
    poll_ms: int = 1000  # how long one read blocks; also bounds how fast a stopping worker notices
    heartbeat_seconds: float = 1.0
    dead_after_seconds: float = 5.0  # a worker silent this long is dead: its calls are reclaimed
    reclaim_seconds: float = 2.0
    max_deliveries: int = 3  # a call delivered more often goes to the dead-letter stream
    metrics_host: str = "127.0.0.1"
    metrics_port: int | None = None
    log_level: str = "INFO"
    log_json: bool = True
