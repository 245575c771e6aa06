import uvloop

from services.worker.app import create_app
from services.worker.config import WorkerSettings
from shared import logs


def main() -> None:
    settings = WorkerSettings()
    logs.configure("worker", settings.log_level, settings.log_json)
    uvloop.run(create_app(settings).run())


if __name__ == "__main__":
    main()
