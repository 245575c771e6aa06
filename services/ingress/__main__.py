import resource
import sys

from services.ingress.config import IngressSettings
from services.ingress.oauth.config import OAuthSettings
from services.ingress.serve import run
from shared import logs
from shared.settings import EXIT_USAGE, load

RESERVED_DESCRIPTORS = 512  # Valkey pools (256 + 64), logs, files, the health server: never given to clients
AUTO_MAX_CONNECTIONS = 65_536  # the bound when none is set, however high the limit (memory is the next bound)


def _more_descriptors() -> None:
    # Every connection is a descriptor; the soft limit is often 1,024 where the hard one allows far more.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard if hard != resource.RLIM_INFINITY else 65536, hard))


def _connection_bound(configured: int) -> int:
    """MUSTER_INGRESS_MAX_CONNECTIONS, or (0) what the open-file limit leaves; a bound above it is refused."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    room = max(soft - RESERVED_DESCRIPTORS, 64) if soft != resource.RLIM_INFINITY else 1 << 20
    if configured > room:
        print(
            f"muster: MUSTER_INGRESS_MAX_CONNECTIONS={configured}: more than the open-file limit allows ({soft}, "
            f"{RESERVED_DESCRIPTORS} kept for Valkey and files): raise `ulimit -n` or set at most {room}",
            file=sys.stderr,
        )
        raise SystemExit(EXIT_USAGE)
    return configured or min(room, AUTO_MAX_CONNECTIONS)


def main() -> None:
    settings = load(IngressSettings)
    logs.configure("ingress", settings.log_level, settings.log_json)
    _more_descriptors()
    settings = settings.model_copy(update={"max_connections": _connection_bound(settings.max_connections)})
    oauth = load(OAuthSettings) if settings.auth == "oidc" else None
    run(settings, oauth)


if __name__ == "__main__":
    main()
