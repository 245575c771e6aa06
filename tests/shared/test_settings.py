import re

import pytest
from pydantic import ValidationError

from services.discovery.config import DiscoverySettings
from services.ingress.config import IngressSettings
from services.worker.config import WorkerSettings


def test_a_service_reads_its_own_name_before_the_shared_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MUSTER_VALKEY_URL", "redis://shared:6379/0")
    monkeypatch.setenv("MUSTER_PORT", "9000")
    assert IngressSettings().valkey_url == "redis://shared:6379/0" and IngressSettings().port == 9000
    monkeypatch.setenv("MUSTER_INGRESS_PORT", "9001")
    monkeypatch.setenv("MUSTER_WORKER_VALKEY_URL", "redis://own:6379/0")
    assert IngressSettings().port == 9001
    assert WorkerSettings().valkey_url == "redis://own:6379/0"


def test_only_the_names_services_share_fall_back_to_the_unprefixed_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MUSTER_ID", "not-for-the-worker")
    monkeypatch.setenv("MUSTER_BATCH", "7")
    monkeypatch.setenv("MUSTER_SERVERS", "/srv/mcp")
    monkeypatch.setenv("MUSTER_WORKER_ID", "worker-1")
    assert WorkerSettings().id == "worker-1" and WorkerSettings().batch == 32
    assert str(DiscoverySettings().servers) == "/srv/mcp"


def test_settings_are_checked_when_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MUSTER_LOG_LEVEL", "debug")
    assert DiscoverySettings().log_level == "DEBUG"
    with pytest.raises(ValidationError, match=re.escape("must start with redis://, rediss://, redis+sentinel://")):
        WorkerSettings(valkey_url="http://127.0.0.1:6379")
    with pytest.raises(ValidationError):
        IngressSettings(port=0)
    with pytest.raises(ValidationError):
        IngressSettings.model_validate({"allowed_host": ["*"]})  # a misspelt setting is an error, not ignored
