from services.ingress.config import IngressSettings
from services.ingress.oauth.config import OAuthSettings
from services.ingress.serve import run
from shared import logs
from shared.settings import load


def main() -> None:
    settings = load(IngressSettings)
    logs.configure("ingress", settings.log_level, settings.log_json)
    oauth = load(OAuthSettings) if settings.auth == "oidc" else None
    run(settings, oauth)


if __name__ == "__main__":
    main()
