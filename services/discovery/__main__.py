from services.discovery.app import create_app
from services.discovery.config import DiscoverySettings
from shared import logs
from shared.settings import load


def main() -> None:
    settings = load(DiscoverySettings)
    logs.configure("discovery", settings.log_level, settings.log_json)
    create_app(settings).run()


if __name__ == "__main__":
    main()
