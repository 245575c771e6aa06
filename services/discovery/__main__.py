from services.discovery.app import create_app
from services.discovery.config import DiscoverySettings
from services.discovery.kube import NoCluster
from shared import logs
from shared.lifecycle import freeze_heap
from shared.settings import load


def main() -> None:
    settings = load(DiscoverySettings)
    logs.configure("discovery", settings.log_level, settings.log_json)
    try:
        app = create_app(settings)
        freeze_heap()
        app.run()
    except NoCluster as exc:
        raise SystemExit(f"discovery: {exc}") from None


if __name__ == "__main__":
    main()
