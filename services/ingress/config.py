import resource
from typing import ClassVar, Literal

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from shared.lifecycle import instance_id
from shared.settings import ServiceSettings

LOOPBACK_HOSTS = ["127.0.0.1", "127.0.0.1:*", "localhost", "localhost:*", "[::1]", "[::1]:*"]
LOOPBACK_ORIGINS = [
    "http://127.0.0.1:*",
    "http://localhost:*",
    "http://[::1]:*",
    "https://127.0.0.1:*",
    "https://localhost:*",
    "https://[::1]:*",
]


class IngressSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="MUSTER_INGRESS_")
    shared_names: ClassVar[frozenset[str]] = ServiceSettings.shared_names | {"port", "expose", "auth", "log_hash_key"}

    host: str = "127.0.0.1"
    port: int = Field(8090, ge=1, le=65535)
    replica_id: str = Field(default_factory=instance_id, min_length=1)
    path: str = Field("/mcp", pattern=r"^/")
    # `muster up --expose`: the aggregated tool list, or muster's 11 meta-tools (services/ingress/meta.py).
    expose: Literal["direct", "meta"] = "direct"
    # DNS-rebinding protection: Host and Origin values that are let in ("*" lets every value in).
    allowed_hosts: list[str] = Field(default_factory=lambda: list(LOOPBACK_HOSTS))
    allowed_origins: list[str] = Field(default_factory=lambda: list(LOOPBACK_ORIGINS))
    max_body_bytes: int = Field(4 * 1024 * 1024, gt=0)
    call_timeout: float = Field(120.0, gt=0)  # seconds from acceptance to outcome, for calls that set no shorter one
    queue_limit: int = Field(10_000, gt=0)  # accepted, unfinished calls per upstream server, across all replicas
    max_pending: int = Field(20_000, gt=0)  # calls one replica waits for at once
    # calls one replica waits for at once to one server: a quarter of the replica's room, so that up to three
    # servers that hang leave room for the others
    max_pending_per_server: int = Field(5_000, gt=0)
    # Calls one principal (the signed-in user; without sign-in, the agent session) may have in a server's queue
    # or running; beyond it they wait in the principal's own overflow, so that one agent's burst cannot starve
    # another's call. Small on purpose: another principal's call runs beside this many of a flood's at the
    # upstream, which shares its time among them (with 128, the workers' total concurrency, a quiet agent's calls
    # took 290 ms at p50 during a 5,000-call flood, with 8: 24 ms, the flood no slower; docs/benchmarks).
    # One principal's throughput to one server is at most fair_share / the upstream's latency.
    fair_share: int = Field(8, gt=0)
    # Seconds between this replica's heartbeats in Valkey: workers judge the replica alive while its beat
    # advances, and `muster status` counts it while its status key (renewed with each beat) has not expired.
    heartbeat_seconds: float = Field(1.0, gt=0)
    retry_after: float = Field(1.0, ge=0)  # what a caller told "queue full" should wait
    session_ttl: int = Field(24 * 3600, gt=0)  # seconds an unused session lives
    max_sessions: int = Field(100_000, gt=0)  # sessions kept at once, across all replicas; beyond, -32003
    max_session_bytes: int = Field(64 * 1024, gt=0)  # a session's capabilities and clientInfo, as the client sent them
    # seconds a finished event stream (or a call's input_required continuation) stays resumable from Valkey
    resume_seconds: float = Field(60.0, gt=0)
    # Bounds on connections (services/ingress/guard.py): a request head must be complete within header_timeout of
    # its first byte and within max_head_bytes, its body within body_timeout of the head; a connection with no
    # request in progress is closed after idle_timeout; a response the client does not read for write_timeout is
    # abandoned; beyond max_connections a new connection closes the longest-idle one (or is refused). 0: as many
    # as the open-file limit allows less 512, at most 65,536 (a burst of 10,000 agents each on a connection of its
    # own is served); more than it allows is refused at start.
    header_timeout: float = Field(10.0, gt=0)
    body_timeout: float = Field(30.0, gt=0)
    # Longer than clients keep an idle pooled connection (httpx, so the Python SDK: 5 s; Node's undici 4 s; Go 90 s):
    # a server that closes an idle connection first races the client's next request on it, which then fails with
    # no response (a clean-clone run saw it with httpx against 5 s).
    idle_timeout: float = Field(120.0, gt=0)
    write_timeout: float = Field(30.0, gt=0)
    max_head_bytes: int = Field(64 * 1024, ge=1024)
    max_connections: int = Field(0, ge=0)
    session_recheck: float = Field(10.0, ge=0)  # seconds a replica trusts its cached copy of a session
    keepalive_seconds: float = Field(15.0, gt=0)  # comment lines on idle event streams, so proxies keep them open
    access_log: bool = False
    # `muster up --auth`: oidc makes muster an OAuth authorization server in front of an OIDC provider and checks a
    # bearer token on every /mcp request (OAuthSettings: MUSTER_OIDC_*, MUSTER_ENCRYPTION_KEY, ...); none: no sign-in.
    auth: Literal["none", "oidc"] = "none"
    # How long a server of the user's own credential, as listed for one user, is reused before it is listed again.
    listing_seconds: float = Field(300.0, gt=0)
    # After SIGTERM: how long calls in flight may take to finish (new calls are refused with -32006 meanwhile);
    # what is still unanswered then gets an error it can act on. Within the pod's termination grace period.
    drain_seconds: float = Field(20.0, ge=0)
    # The key of the principal's hash in the per-call log line (at least 16 bytes). Unset: one random key kept in
    # Valkey, shared by every replica, so that one user hashes alike everywhere.
    log_hash_key: SecretStr | None = None


RESERVED_DESCRIPTORS = 512  # Valkey pools (256 + 64), logs, files, the health server: never given to clients
AUTO_MAX_CONNECTIONS = 65_536  # the bound when none is set, however high the limit (memory is the next bound)


def open_file_limit() -> int:
    """The open-file limit the ingress runs with: it raises its soft limit to the hard one at start."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return hard if hard != resource.RLIM_INFINITY else 65_536


def connection_bound(configured: int, open_files: int) -> int:
    """MUSTER_INGRESS_MAX_CONNECTIONS, or (0) what `open_files` leaves for clients; a ValueError naming the setting
    when it asks for more than that."""
    room = max(open_files - RESERVED_DESCRIPTORS, 64)
    if configured > room:
        raise ValueError(
            f"MUSTER_INGRESS_MAX_CONNECTIONS={configured}: more than the open-file limit allows ({open_files}, "
            f"{RESERVED_DESCRIPTORS} kept for Valkey and files): raise `ulimit -n` or set at most {room}"
        )
    return configured or min(room, AUTO_MAX_CONNECTIONS)
