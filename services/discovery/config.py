from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.naming import PrefixMode
from shared.settings import ServiceSettings


class DiscoverySettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="MUSTER_DISCOVERY_")
    shared_names: ClassVar[frozenset[str]] = ServiceSettings.shared_names | {"servers", "prefix_mode"}

    servers: Path = Path("demo/servers")  # the folder of MCPServer YAML files
    prefix_mode: PrefixMode = "always"
    poll_seconds: float = Field(0.25, gt=0)  # how often the folder is checked for changes
    refresh_seconds: float = Field(30.0, gt=0)  # how often each server is listed again (and so health-checked)
    retry_max_seconds: float = Field(30.0, gt=0)  # backoff cap for a server that cannot be reached
    grace_seconds: float = Field(30.0, ge=0)  # a failing server keeps its tools this long, so agents see no flap
    list_timeout: float = Field(10.0, gt=0)
    leader_ttl_seconds: float = Field(10.0, gt=0)
    source: Literal["folder", "kubernetes"] = "folder"
    # Health, readiness and metrics on a port of its own (0: off).
    metrics_host: str = "127.0.0.1"
    metrics_port: int = Field(0, ge=0, le=65535)

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
    # A server's status is written at most this often: a flapping server never causes a write storm.
    status_min_interval_seconds: float = Field(1.0, ge=0)
