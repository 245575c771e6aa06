import json
from typing import Any

from mcp.types import CallToolResult, Tool

from shared.mcpserver import MCPServer
from shared.meta import core
from shared.meta.core import AuthTarget, ServerStatus


def server(name: str, **spec: Any) -> MCPServer:
    return MCPServer.model_validate(
        {
            "apiVersion": "muster.giantswarm.io/v1alpha1",
            "kind": "MCPServer",
            "metadata": {"name": name},
            "spec": {"type": "streamable-http", "url": f"https://{name}.example.com/mcp", **spec},
        }
    )


SERVERS = [
    ServerStatus(
        server(
            "k8s-gazelle",
            toolPrefix="gazelle",
            family={"name": "mc", "instanceArg": "management_cluster"},
            headers={"Authorization": "Bearer s3cr3t-token"},
            auth={"type": "oauth", "forwardToken": True},
        ),
        "Connected",
    ),
    ServerStatus(server("k8s-graveler"), "Failed", "dial tcp: x509: certificate signed by unknown authority"),
    ServerStatus(server("github"), "Connecting"),
]


def body(result: dict[str, Any]) -> Any:
    CallToolResult.model_validate(result)
    return json.loads(result["content"][0]["text"])


def test_the_core_tools_are_defined_as_in_the_go_muster() -> None:
    by_name = {t["name"]: t for t in core.CORE_TOOLS}
    assert list(by_name) == ["core_mcpserver_list", "core_mcpserver_get", "core_auth_login", "core_auth_logout"]
    for tool in core.CORE_TOOLS:
        Tool.model_validate(tool)
    assert by_name["core_auth_login"]["inputSchema"] == {
        "type": "object",
        "properties": {"server": {"type": "string", "description": "Name of the MCP server to authenticate to"}},
        "required": ["server"],
    }
    assert by_name["core_mcpserver_get"]["inputSchema"]["required"] == ["name"]


def test_mcpserver_list_hides_failed_servers_and_never_shows_header_values() -> None:
    result = core.mcpserver_list(SERVERS, {}, "filesystem")
    listing = body(result)
    assert list(listing) == ["hiddenFailed", "hint", "mcpServers", "mode", "total"]
    assert listing["hiddenFailed"] == 1 and listing["total"] == 2 and listing["mode"] == "filesystem"
    assert listing["hint"] == "(1 failed servers hidden, use --all to show, --verbose for details)"
    gazelle = listing["mcpServers"][1]
    assert gazelle == {
        "name": "k8s-gazelle",
        "type": "streamable-http",
        "url": "https://k8s-gazelle.example.com/mcp",
        "headers": {"Authorization": "[redacted]"},
        "auth": {"type": "oauth", "forwardToken": True},
        "timeout": 30,
        "toolPrefix": "gazelle",
        "family": {"name": "mc", "instanceArg": "management_cluster"},
        "state": "Connected",
    }
    assert listing["mcpServers"][0]["statusMessage"] == "Starting..."
    assert "s3cr3t" not in result["content"][0]["text"]


def test_mcpserver_list_shows_failed_servers_with_a_hint_and_their_error_only_when_verbose() -> None:
    every = body(core.mcpserver_list(SERVERS, {"showAll": True}, "kubernetes"))
    assert every["total"] == 3 and "hiddenFailed" not in every
    graveler = next(s for s in every["mcpServers"] if s["name"] == "k8s-graveler")
    assert graveler["statusMessage"] == "Certificate error - verify TLS configuration" and "error" not in graveler
    verbose = body(core.mcpserver_list(SERVERS, {"showAll": True, "verbose": True}, "kubernetes"))
    assert next(s for s in verbose["mcpServers"] if s["name"] == "k8s-graveler")["error"].startswith("dial tcp")


def test_mcpserver_get_finds_one_server_or_says_it_does_not_exist() -> None:
    assert body(core.mcpserver_get(SERVERS, {"name": "github"}))["name"] == "github"
    missing = core.mcpserver_get(SERVERS, {"name": "nope"})
    assert missing["isError"] is True
    assert missing["content"][0]["text"] == "Failed to get MCP server: MCP server nope not found"
    assert core.mcpserver_get(SERVERS, {})["content"][0]["text"] == "name argument is required"


def test_status_messages_explain_failures() -> None:
    assert core.status_message("Failed", "HTTP 401 Unauthorized", "github") == (
        "Authentication required - run: muster auth login --server github"
    )
    assert core.status_message("Failed", "", "github") == "Server failed to start"
    assert core.status_message("Failed", "boom", "github") == "Server failed to start"
    assert core.status_message("Connected", "x509", "github") == ""


OAUTH = AuthTarget("github", requires_auth=True, sso=False, connected=True, authenticated=False)


def text(result: dict[str, Any] | None) -> str:
    assert result is not None
    CallToolResult.model_validate(result)
    return str(result["content"][0]["text"])


def test_login_needs_a_server_argument_and_a_session_before_anything_else() -> None:
    assert text(core.login_precheck({}, True, OAUTH, True)) == core.MISSING_SERVER
    assert text(core.login_precheck({"server": "github"}, False, OAUTH, True)) == core.MISSING_SESSION
    assert text(core.login_precheck({"server": "nope"}, True, None, True)) == (
        "Server 'nope' not found. Use list_tools to see available servers."
    )


def test_login_answers_servers_that_need_no_sign_in() -> None:
    open_server = AuthTarget("docs", requires_auth=False, sso=False, connected=True, authenticated=False)
    assert text(core.login_precheck({"server": "docs"}, True, open_server, True)) == (
        "Server 'docs' is already authenticated and connected."
    )
    done = AuthTarget("github", requires_auth=True, sso=False, connected=True, authenticated=True)
    assert (
        text(core.login_precheck({"server": "github"}, True, done, True)) == "Server 'github' is already authenticated."
    )
    sso = AuthTarget("k8s", requires_auth=True, sso=True, connected=True, authenticated=False)
    assert text(core.login_precheck({"server": "k8s"}, True, sso, True)).startswith("Server 'k8s' uses SSO")
    assert text(core.login_precheck({"server": "github"}, True, OAUTH, False)).startswith("OAuth is not configured.")
    assert core.login_precheck({"server": "github"}, True, OAUTH, True) is None


def test_a_login_challenge_carries_the_url_as_text_and_structured_content() -> None:
    result = core.login_challenge("github", "Authentication required", "https://muster.example.com/oauth/authorize?x=1")
    assert result["structuredContent"] == {"authUrl": "https://muster.example.com/oauth/authorize?x=1"}
    assert "Server: github\nStatus: Authentication required" in text(result)
    assert text(core.login_connected("github", 12, 1, 0)).startswith("Successfully connected to 'github'!")


def test_logout_refuses_without_a_session_and_for_sso_servers() -> None:
    assert text(core.logout_precheck({"server": "github"}, False, OAUTH)) == core.MISSING_SESSION
    assert text(core.logout_precheck({"server": "nope"}, True, None)) == "Server 'nope' not found."
    sso = AuthTarget("k8s", requires_auth=True, sso=True, connected=True, authenticated=True)
    assert text(core.logout_precheck({"server": "k8s"}, True, sso)).startswith("Server 'k8s' uses SSO")
    assert core.logout_precheck({"server": "github"}, True, OAUTH) is None
    assert text(core.logout_done("github")).startswith("Successfully logged out from 'github'.")
