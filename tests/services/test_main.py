"""Every service's entry point installs the JSON log lines with the redaction guard before anything runs."""

import importlib
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from shared import logs
from shared.logs import JsonFormatter, Redactor


@pytest.fixture
def root_logger() -> Iterator[logging.Logger]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield root
    root.handlers[:] = handlers
    root.setLevel(level)


class NotRun:
    def run(self, *args: Any) -> None:
        pass


@pytest.mark.parametrize("service", ["ingress", "worker", "discovery"])
def test_each_service_logs_json_lines_through_the_guard(
    service: str, root_logger: logging.Logger, monkeypatch: pytest.MonkeyPatch
) -> None:
    main = importlib.import_module(f"services.{service}.__main__")
    monkeypatch.setenv("MUSTER_LOG_JSON", "true")
    for name in ("_fast", "_text"):  # what logs.configure sets, put back afterwards
        monkeypatch.setattr(logs, name, getattr(logs, name))
    if service == "ingress":
        monkeypatch.setattr(main, "run", lambda settings, oauth=None: None)
    else:
        monkeypatch.setattr(main, "create_app", lambda settings, identity=None: NotRun())
    main.main()
    (handler,) = root_logger.handlers
    assert any(isinstance(f, Redactor) for f in handler.filters)
    assert isinstance(handler.formatter, JsonFormatter) and handler.formatter.service == service
