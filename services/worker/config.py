from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.identity.settings import IdentitySettings
from shared.lifecycle import instance_id
from shared.settings import ServiceSettings


class WorkerSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="MUSTER_WORKER_")
    shared_names: ClassVar[frozenset[str]] = ServiceSettings.shared_names | {"auth"}

    id: str = Field(default_factory=instance_id, min_length=1)  # the consumer name in every server's group
    # Calls one worker runs at once against one upstream server; further calls wait in that server's stream,
    # where they delay nobody else.
    server_concurrency: int = Field(64, gt=0)
    batch: int = Field(32, gt=0)  # entries fetched per read
    poll_ms: int = Field(1000, gt=0)  # how long one read blocks; also bounds how fast a stopping worker notices
    heartbeat_seconds: float = Field(1.0, gt=0)
    dead_after_seconds: float = Field(5.0, gt=0)  # a worker silent this long is dead: its calls are reclaimed
    reclaim_seconds: float = Field(2.0, gt=0)
    max_deliveries: int = Field(3, gt=0)  # a call delivered more often goes to the dead-letter stream
    # `muster up --auth`: oidc calls servers with each user's own credential (WorkerIdentitySettings); none, without.
    auth: Literal["none", "oidc"] = "none"
    retry_after: float = Field(5.0, gt=0)  # what a caller told -32004 should wait when the upstream says nothing
    # The most an upstream's answer may hold (a JSON body, or one event of a stream): past it the call gets -32008
    # and the worker reads no further, so its memory stays bounded whatever the upstream sends.
    max_result_bytes: int = Field(32 * 1024 * 1024, ge=1024)
    # After SIGTERM: how long the calls this worker runs may take to finish; it claims nothing new meanwhile, and
    # what is still running then is left to be reclaimed by another worker.
    drain_seconds: float = Field(20.0, ge=0)
    # "agent": an upstream that names its sessions gets one per agent session (what an agent does there stays its
    # own); "shared": one per worker, server and credential for every agent, as for sessionless upstreams.
    upstream_sessions: Literal["agent", "shared"] = "agent"
    # Agent sessions whose own upstream session one worker keeps at hand, per server (least recently used go;
    # a call of theirs reads the binding from Valkey again).
    agent_sessions: int = Field(10_000, gt=0)
    held_streams: int = Field(1_000, ge=0)  # upstream GET streams one worker holds open for agent sessions
    answer_seconds: float = Field(300.0, gt=0)  # how long an upstream's request outside a call waits for the agent
    janitor_seconds: float = Field(5.0, gt=0)  # how often expired agent sessions' upstream sessions are looked for
    # /healthz, /readyz and /metrics on a port of their own (0: off; the container image and k8s/ use 9090).
    metrics_host: str = "127.0.0.1"
    metrics_port: int = Field(0, ge=0, le=65535)


class WorkerIdentitySettings(IdentitySettings):
    """Read only with auth on: what the worker needs to call servers as each user."""

    # A tokenExchange server's clientCredentialsSecretRef, mounted as files: <folder>/<secret name>/<key>.
    secret_refs_dir: Path = Path("/etc/muster/secret-refs")
