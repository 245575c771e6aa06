from services.worker.app import create_app
from services.worker.config import WorkerIdentitySettings, WorkerSettings
from shared import logs
from shared.lifecycle import freeze_heap
from shared.settings import load


def main() -> None:
    settings = load(WorkerSettings)
    logs.configure("worker", settings.log_level, settings.log_json)
    identity = load(WorkerIdentitySettings) if settings.auth == "oidc" else None
    app = create_app(settings, identity)
    freeze_heap()
    app.run()


if __name__ == "__main__":
    main()
