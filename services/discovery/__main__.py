from services.discovery.app import serve
from services.discovery.config import DiscoverySettings
from shared import lifecycle, logs


def main() -> None:
    settings = DiscoverySettings()
    logs.configure("discovery", settings.log_level, settings.log_json)
    lifecycle.run(serve(settings))


if __name__ == "__main__":
    main()
