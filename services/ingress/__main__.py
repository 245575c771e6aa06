from services.ingress.config import IngressSettings
from services.ingress.serve import run
from shared import logs
from shared.settings import load


def main() -> None:
    settings = load(IngressSettings)
    logs.configure("ingress", settings.log_level, settings.log_json)
    run(settings)


if __name__ == "__main__":
    main()
