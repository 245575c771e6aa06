from datetime import UTC, datetime

import pytest

from services.discovery.status import MAX_ERROR, ServerStatus, render, sanitize
from shared.messages import ServerState

NOW = datetime(2026, 11, 2, 9, 30, tzinfo=UTC)


def conditions(state: ServerState, **kw: object) -> dict[str, tuple[str, str]]:
    status = render(ServerStatus(namespace="n", name="a", state=state, **kw), None, NOW)
    return {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}


@pytest.mark.parametrize(
    ("state", "ready", "handshake", "login"),
    [
        ("Connected", ("True", "Connected"), ("True", "Initialized"), ("False", "NotRequired")),
        ("Auth Required", ("False", "LoginRequired"), ("False", "Unauthorized"), ("True", "Unauthorized")),
        ("Connecting", ("False", "Connecting"), ("Unknown", "Connecting"), ("Unknown", "Connecting")),
        ("Failed", ("False", "Failed"), ("False", "HandshakeFailed"), ("Unknown", "HandshakeFailed")),
        ("Disconnected", ("False", "Unreachable"), ("False", "HandshakeFailed"), ("Unknown", "HandshakeFailed")),
    ],
)
def test_each_state_sets_the_three_conditions(
    state: ServerState, ready: tuple[str, str], handshake: tuple[str, str], login: tuple[str, str]
) -> None:
    assert conditions(state) == {"Ready": ready, "HandshakeSucceeded": handshake, "LoginRequired": login}


def test_a_connected_server_whose_names_collide_is_not_ready() -> None:
    assert conditions("Connected", exposed=False, last_error="collides")["Ready"] == ("False", "NotExposed")


def test_credentials_never_reach_a_status_and_long_errors_are_cut() -> None:
    message = sanitize(
        "401 from https://x/token?code=abc123&state=1: Authorization: Bearer s3cr3t.t0ken "
        "id_token=eyJhbGciOi.eyJzdWIiOi.c2lnbmF0dXJl password=hunter2"
    )
    for secret in ("abc123", "s3cr3t", "eyJhbGciOi", "hunter2"):
        assert secret not in message
    assert "Bearer [redacted]" in message
    assert len(sanitize("x" * 5000)) == MAX_ERROR


def test_optional_fields_are_left_out_rather_than_written_empty() -> None:
    status = render(ServerStatus(namespace="n", name="a", state="Connecting"), None, NOW)
    assert set(status) == {"state", "consecutiveFailures", "toolCount", "conditions"}


def test_a_connected_period_keeps_the_start_an_earlier_leader_wrote_and_a_new_period_gets_its_own() -> None:
    earlier = render(ServerStatus(namespace="n", name="a", state="Connected", last_connected=NOW), None, NOW)
    later = datetime(2026, 11, 2, 10, 0, tzinfo=UTC)
    again = ServerStatus(namespace="n", name="a", state="Connected", last_connected=later)
    assert render(again, earlier, later)["lastConnected"] == "2026-11-02T09:30:00Z"
    down = render(ServerStatus(namespace="n", name="a", state="Disconnected", last_connected=NOW), earlier, later)
    assert down["lastConnected"] == "2026-11-02T09:30:00Z"
    assert render(again, down, later)["lastConnected"] == "2026-11-02T10:00:00Z"
