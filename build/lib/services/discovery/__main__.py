from services.discovery.app import serve
from services.discovery.config import Settings
from shared import lifecycle, logs


def main() -> None:
    settings = Settings()
    logs.configure("discovery", settings.log_level, settings.log_json)
    lifecycle.run(serve(settings))


if __name__ == "__main__":
    main()
