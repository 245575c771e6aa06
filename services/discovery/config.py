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

    # source kubernetes: MCPServer resources, leader election on a Lease, status written back.
    namespace: str = ""  # where MCPServers are watched; empty: every namespace
    kubeconfig: Path | None = None  # unset: the pod's service account, else KUBECONFIG or ~/.kube/config
    kube_context: str | None = None
    watch_timeout_seconds: int = 240  # one watch request's length; it is resumed from where it ended
    watch_backoff_max_seconds: float = 30.0
    lease_name: str = "muster-discovery"
    lease_namespace: str = "muster"
    # A standby takes over at most lease_duration + 2 x retry_period after the leader's last renewal (14 s); the
    # leader stops acting renew_deadline after its last successful renewal began, before anyone could take over.
    lease_duration_seconds: float = 10.0
    lease_renew_deadline_seconds: float = 7.0
    lease_retry_period_seconds: float = 2.0
