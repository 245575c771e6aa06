import json

import pytest
from mcp.types import ReadResourceResult, Resource

from shared.meta import auth_status
from shared.meta.auth_status import ServerAuth, status_of

ISSUER = "https://dex.example.com"


def test_the_resource_is_listed_as_the_go_muster_lists_it() -> None:
    Resource.model_validate(auth_status.RESOURCE)
    assert auth_status.RESOURCE["uri"] == "auth://status"


def test_the_status_document_lists_servers_by_name_in_the_go_shape() -> None:
    servers = [
        ServerAuth(
            "k8s-graveler", connected=True, requires_auth=True, issuer=ISSUER, token_forwarding=True, sso_failed=True
        ),
        ServerAuth("github", connected=True, requires_auth=True, issuer="https://github.com", scope="repo"),
        ServerAuth("docs", connected=True),
    ]
    result = auth_status.contents(servers, session=True)
    ReadResourceResult.model_validate(result)
    (content,) = result["contents"]
    assert content["uri"] == "auth://status" and content["mimeType"] == "application/json"
    assert json.loads(content["text"]) == {
        "servers": [
            {"name": "docs", "status": "connected"},
            {
                "name": "github",
                "status": "auth_required",
                "issuer": "https://github.com",
                "scope": "repo",
                "auth_tool": "core_auth_login",
            },
            {
                "name": "k8s-graveler",
                "status": "reauth_required",
                "issuer": ISSUER,
                "auth_tool": "core_auth_login",
                "token_forwarding_enabled": True,
                "sso_attempt_failed": True,
            },
        ]
    }
    assert content["text"].startswith('{"servers":[{"name":"docs","status":"connected"},{"name":"github"')


@pytest.mark.parametrize(
    ("server", "session", "status"),
    [
        (ServerAuth("a", connected=True), False, "connected"),
        (ServerAuth("a", connected=False), False, "disconnected"),
        (ServerAuth("a", connected=True, requires_auth=True), False, "auth_required"),
        (ServerAuth("a", connected=True, unreachable=True, authenticated=True), True, "unreachable"),
        (ServerAuth("a", connected=True, requires_auth=True, issuer=ISSUER, authenticated=True), True, "connected"),
        (ServerAuth("a", connected=True, requires_auth=True, issuer=ISSUER), True, "auth_required"),
        (
            ServerAuth("a", connected=True, requires_auth=True, issuer=ISSUER, token_exchange=True, sso_pending=True),
            True,
            "sso_pending",
        ),
        (
            ServerAuth("a", connected=True, requires_auth=True, issuer=ISSUER, token_exchange=True, sso_failed=True),
            True,
            "reauth_required",
        ),
        (ServerAuth("a", connected=True, requires_auth=True, issuer=ISSUER, sso_failed=True), True, "auth_required"),
        (ServerAuth("a", connected=False, requires_auth=True), True, "disconnected"),
    ],
)
def test_status_follows_the_go_muster_s_rules(server: ServerAuth, session: bool, status: str) -> None:
    assert status_of(server, session) == status


def test_sso_servers_that_need_a_login_name_no_auth_tool() -> None:
    pending = ServerAuth("k8s", connected=True, requires_auth=True, issuer=ISSUER, token_exchange=True)
    entry = auth_status.entry(pending, session=True)
    assert entry == {"name": "k8s", "status": "auth_required", "issuer": ISSUER, "token_exchange_enabled": True}
