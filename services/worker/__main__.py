import uvloop

from services.worker.app import create_app
from services.worker.config import WorkerIdentitySettings, WorkerSettings
from shared import logs


def main() -> None:
    settings = WorkerSettings()
    logs.configure("worker", settings.log_level, settings.log_json)
    identity = WorkerIdentitySettings() if settings.auth == "oidc" else None
    uvloop.run(create_app(settings, identity).run())


if __name__ == "__main__":
    main()
