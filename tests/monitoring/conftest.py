import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.monitoring import promtool as installer

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "k8s" / "monitoring"
HERE = Path(__file__).resolve().parent


def prometheus_rule() -> dict[str, Any]:
    rule: dict[str, Any] = yaml.safe_load((MONITORING / "prometheusrule.yaml").read_text())
    return rule


def alerts() -> list[dict[str, Any]]:
    return [r for group in prometheus_rule()["spec"]["groups"] for r in group["rules"] if "alert" in r]


def unit_tests() -> list[Path]:
    return sorted(HERE.glob("*.yaml"))


@pytest.fixture(scope="session")
def promtool() -> Path:
    """promtool from Debian's prometheus package (tests/monitoring/promtool.py); CI fails without it."""
    try:
        return installer.ensure()
    except installer.Unavailable as exc:
        if installer.in_ci():
            pytest.fail(f"promtool is required in CI: {exc}")
        pytest.skip(f"promtool cannot be installed here: {exc}")


@pytest.fixture
def rules_dir(tmp_path: Path) -> Iterator[Path]:
    """The PrometheusRule's groups as a plain rule file, beside copies of the unit tests that load it."""
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(prometheus_rule()["spec"], sort_keys=False))
    for test in unit_tests():
        shutil.copy(test, tmp_path / test.name)
    yield tmp_path
