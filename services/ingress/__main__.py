import resource
import sys

from services.ingress.config import IngressSettings, connection_bound, open_file_limit
from services.ingress.oauth.config import OAuthSettings
from services.ingress.serve import run
from shared import logs
from shared.settings import EXIT_USAGE, load


def _more_descriptors() -> None:
    # Every connection is a descriptor; the soft limit is often 1,024 where the hard one allows far more.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (open_file_limit(), hard))


def main() -> None:
    settings = load(IngressSettings)
    logs.configure("ingress", settings.log_level, settings.log_json)
    _more_descriptors()
    try:
        bound = connection_bound(settings.max_connections, open_file_limit())
    except ValueError as exc:
        print(f"muster: {exc}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE) from None
    settings = settings.model_copy(update={"max_connections": bound})
    oauth = load(OAuthSettings) if settings.auth == "oidc" else None
    run(settings, oauth)


if __name__ == "__main__":
    main()
