import uvicorn

from services.ingress.app import create_app
from services.ingress.config import IngressSettings
from services.ingress.oauth.config import OAuthSettings
from shared import logs


def main() -> None:
    settings = IngressSettings()
    logs.configure("ingress", settings.log_level, settings.log_json)
    oauth = OAuthSettings() if settings.auth == "oidc" else None
    uvicorn.run(
        create_app(settings, oauth),
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=settings.access_log,
        log_config=None,
        timeout_graceful_shutdown=10,
        proxy_headers=False,  # the ingress reads no client address; the middleware costs on every request
        server_header=False,
        backlog=4096,
    )


if __name__ == "__main__":
    main()
