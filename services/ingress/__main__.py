import resource

from services.ingress.config import IngressSettings
from services.ingress.oauth.config import OAuthSettings
from services.ingress.serve import run
from shared import logs
from shared.settings import load


def _more_descriptors() -> None:
    # Every connection is a descriptor; the soft limit is often 1,024 where the hard one allows far more.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard if hard != resource.RLIM_INFINITY else 65536, hard))


def main() -> None:
    settings = load(IngressSettings)
    logs.configure("ingress", settings.log_level, settings.log_json)
    _more_descriptors()
    oauth = load(OAuthSettings) if settings.auth == "oidc" else None
    run(settings, oauth)


if __name__ == "__main__":
    main()
