from pathlib import Path

import pytest

from muster.cli import VALKEY_URL_FILE, parser, show_status, valkey_url
from muster.stack import free_port


def test_status_reads_the_valkey_named_or_the_one_muster_up_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MUSTER_VALKEY_URL", raising=False)
    args = parser().parse_args(["status", "--data", str(tmp_path)])
    assert valkey_url(args) == "redis://127.0.0.1:6379/0"
    (tmp_path / VALKEY_URL_FILE).write_text("redis://127.0.0.1:4711/0\n")
    assert valkey_url(args) == "redis://127.0.0.1:4711/0"
    monkeypatch.setenv("MUSTER_VALKEY_URL", "redis://valkey:6379/0")
    assert valkey_url(parser().parse_args(["status", "--data", str(tmp_path)])) == "redis://valkey:6379/0"
    named = parser().parse_args(["status", "--valkey-url", "redis://other:1/0", "--json"])
    assert valkey_url(named) == "redis://other:1/0" and named.json


def test_status_says_when_it_cannot_read_valkey(capsys: pytest.CaptureFixture[str]) -> None:
    args = parser().parse_args(["status", "--valkey-url", f"redis://:hunter2@127.0.0.1:{free_port()}/0"])
    assert show_status(args) == 1
    err = capsys.readouterr().err
    assert "cannot read redis://:***@127.0.0.1" in err and "hunter2" not in err
