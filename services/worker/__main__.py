from services.worker.app import create_app
from services.worker.config import WorkerSettings
from shared import logs
from shared.settings import load


def main() -> None:
    settings = load(WorkerSettings)
    logs.configure("worker", settings.log_level, settings.log_json)
    create_app(settings).run()


if __name__ == "__main__":
    main()
