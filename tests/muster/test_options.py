"""Every option and environment variable is validated at the edge: a bad value is one line that names it, exit
status 2, no traceback, and nothing started."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from muster.cli import main
from tests.conftest import ROOT

SECRET = "hunter2-do-not-print"
# `--auth oidc` with everything it needs; each case below takes one away
SIGN_IN = {
    "MUSTER_OIDC_ISSUER": "https://dex.example.com",
    "MUSTER_OIDC_CLIENT_ID": "muster",
    "MUSTER_OIDC_CLIENT_SECRET": SECRET,
    "MUSTER_ENCRYPTION_KEY": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
}


def _without(name: str) -> dict[str, str]:
    return {k: v for k, v in SIGN_IN.items() if k != name}


# (arguments, environment, what the one line must say)
BAD = [
    (["--port", "70000"], {}, "--port 70000: must be a port number from 1 to 65535"),
    (["--port", "http"], {}, "--port http: must be a port number from 1 to 65535"),
    (["--workers", "0"], {}, "--workers 0: must be a whole number from 1 to 64"),
    (["--workers", "many"], {}, "--workers many: must be a whole number from 1 to 64"),
    (["--prefix-mode", "sometimes"], {}, "--prefix-mode sometimes: must be one of always, conditional, never"),
    (["--expose", "all"], {}, "--expose all: must be one of direct, meta"),
    (["--servers", "/nowhere/at/all"], {}, "--servers /nowhere/at/all: is not a folder"),
    (["--valkey", "http://127.0.0.1:6379"], {}, "--valkey http://127.0.0.1:6379: must start with redis://"),
    (["--valkey", "redis+sentinel://127.0.0.1:26379"], {}, "names the primary after the hosts"),
    (["--valkey-port", "-1"], {}, "--valkey-port -1: must be a port number from 1 to 65535, or 0 for a free one"),
    (["--demo-port", "65535"], {}, "--demo-port 65535: must be a whole number from 1 to 65534"),
    (["--bogus"], {}, "unrecognized arguments: --bogus"),
    (["--auth", "sso"], {}, "--auth sso: must be one of none, oidc"),
    (["--auth", "oidc"], _without("MUSTER_OIDC_ISSUER"), "MUSTER_OIDC_ISSUER: Field required"),
    (["--auth", "oidc"], _without("MUSTER_ENCRYPTION_KEY"), "MUSTER_ENCRYPTION_KEY (or MUSTER_ENCRYPTION_KEY_FILE)"),
    ([], {**_without("MUSTER_OIDC_CLIENT_ID"), "MUSTER_AUTH": "oidc"}, "MUSTER_OIDC_CLIENT_ID: Field required"),
    ([], {"MUSTER_PORT": "abc"}, "MUSTER_PORT='abc': must be a port number from 1 to 65535"),
    ([], {"MUSTER_WORKERS": "-3"}, "MUSTER_WORKERS='-3': must be a whole number from 1 to 64"),
    ([], {"MUSTER_LOG_JSON": "perhaps"}, "MUSTER_LOG_JSON='perhaps': must be true or false"),
    ([], {"MUSTER_PREFIX_MODE": "Always"}, "MUSTER_PREFIX_MODE='Always': must be one of always, conditional, never"),
    ([], {"MUSTER_VALKEY_URL": f"redis://:{SECRET}@127.0.0.1:99999/0"}, "the port must be a number from 1 to 65535"),
    ([], {"MUSTER_INGRESS_QUEUE_LIMIT": "0"}, "MUSTER_INGRESS_QUEUE_LIMIT='0': Input should be greater than 0"),
    ([], {"MUSTER_INGRESS_DRAIN_SECONDS": "soon"}, "MUSTER_INGRESS_DRAIN_SECONDS='soon': Input should be a valid"),
    ([], {"MUSTER_WORKER_SERVER_CONCURRENCY": "lots"}, "MUSTER_WORKER_SERVER_CONCURRENCY='lots': Input should be"),
    ([], {"MUSTER_DISCOVERY_POLL_SECONDS": "0"}, "MUSTER_DISCOVERY_POLL_SECONDS='0': Input should be greater than 0"),
    ([], {"MUSTER_LOG_LEVEL": "loud"}, "MUSTER_LOG_LEVEL='loud': Input should be 'DEBUG', 'INFO'"),
    ([], {"MUSTER_INGRESS_ALLOWED_HOSTS": "[oops"}, "MUSTER_INGRESS_ALLOWED_HOSTS='[oops': not valid JSON"),
    ([], {"MUSTER_OIDC_NONSENSE": "x", "MUSTER_WORKER_BATCH": "0"}, "MUSTER_WORKER_BATCH='0': Input should be"),
]


@pytest.fixture
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("MUSTER_"):
            monkeypatch.delenv(name)


@pytest.mark.parametrize(("argv", "env", "expected"), BAD, ids=[" ".join(a) or next(iter(e)) for a, e, _ in BAD])
def test_a_bad_option_or_variable_is_one_line_that_names_it(
    argv: list[str],
    env: dict[str, str],
    expected: str,
    clean_environment: None,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit) as exited:
        main(["up", "--data", str(tmp_path / "data"), *argv])
    assert exited.value.code == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1, err
    assert expected in err
    assert SECRET not in err
    assert not (tmp_path / "data").exists(), "nothing is started (or created) before every value was checked"


SERVICES = [
    ("services.ingress", {"MUSTER_INGRESS_PORT": "70000"}, "MUSTER_INGRESS_PORT='70000': Input should be less than"),
    (
        "services.ingress",
        {"MUSTER_INGRESS_MAX_CONNECTIONS": str(1 << 30)},
        f"MUSTER_INGRESS_MAX_CONNECTIONS={1 << 30}: more than the open-file limit allows",
    ),
    ("services.worker", {"MUSTER_WORKER_HEARTBEAT_SECONDS": "-1"}, "MUSTER_WORKER_HEARTBEAT_SECONDS='-1': Input"),
    ("services.discovery", {"MUSTER_VALKEY_URL": f"http://u:{SECRET}@h"}, "MUSTER_VALKEY_URL='http://u:***@h': must"),
    ("muster", {"MUSTER_WORKERS": "0"}, "muster up: MUSTER_WORKERS='0': must be a whole number from 1 to 64"),
    ("muster", {"MUSTER_PORTS": "9000"}, "muster up: MUSTER_PORTS='9000': expected LOW-HIGH"),
    (
        "muster",
        {"MUSTER_INGRESS_MAX_CONNECTIONS": str(1 << 30)},
        f"muster up: MUSTER_INGRESS_MAX_CONNECTIONS={1 << 30}: more than the open-file limit allows",
    ),
]


def run(module: str, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MUSTER_")}
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        env={**clean, **env, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(("module", "env", "expected"), SERVICES, ids=[f"{m} {next(iter(e))}" for m, e, _ in SERVICES])
def test_a_service_started_with_a_bad_variable_says_so_in_one_line_without_a_traceback(
    module: str, env: dict[str, str], expected: str
) -> None:
    done = run(module, *(["up"] if module == "muster" else []), env=env)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and expected in done.stderr, done.stderr
    assert "Traceback" not in done.stderr and SECRET not in done.stderr


def test_a_taken_port_is_an_error_at_start_not_a_second_stack_that_seems_to_serve(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = run("muster", "up", "--port", str(port), "--data", str(tmp_path), env={})
    assert done.returncode == 2
    expected = f"muster up: --port {port}: 127.0.0.1:{port} is already in use (is another muster up running?)\n"
    assert done.stderr == expected
    assert "serving" not in done.stderr
