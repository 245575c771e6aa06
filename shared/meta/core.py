"""The core tools that make sense for this muster: core_mcpserver_list / core_mcpserver_get (reads of the MCPServer
resources with their state) and core_auth_login / core_auth_logout (per-session sign-in to servers with
`spec.auth.type: oauth`). Definitions and texts follow the Go muster (`internal/mcpserver/api_adapter.go`,
`internal/aggregator/auth_tools.go`); results are the Go muster's compact JSON or plain text.

Two things are not copied: the listing never shows header or env values (the Go muster prints them, and a
header is where a static bearer token lives), and the mutation tools (create/update/delete) are not offered at
all: the Go muster runs them for anyone. Login and logout change only the caller's own session and answer
`errMissingSession` without one, so nothing changes without an authenticated caller.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from shared.mcpserver import MCPServer
from shared.meta._gojson import marshal
from shared.meta.content import text_result
from shared.meta.definitions import Arg, tool

MCPSERVER_LIST = "core_mcpserver_list"
MCPSERVER_GET = "core_mcpserver_get"
AUTH_LOGIN = "core_auth_login"
AUTH_LOGOUT = "core_auth_logout"

MISSING_SESSION = "Error: authentication context missing — no active session"
MISSING_SERVER = "Error: 'server' argument is required and must be a string"
REDACTED = "[redacted]"


def _server_arg_tool(name: str, description: str, arg_description: str) -> dict[str, Any]:
    # Built by hand in the Go muster (not through convertToMCPSchema), hence no empty defaults.
    schema = {
        "type": "object",
        "properties": {"server": {"type": "string", "description": arg_description}},
        "required": ["server"],
    }
    return {"name": name, "description": description, "inputSchema": schema}


CORE_TOOLS: list[dict[str, Any]] = [
    tool(
        MCPSERVER_LIST,
        "List all MCP server definitions with their status. By default, unreachable servers are hidden.",
        Arg("showAll", "boolean", "Show all servers including unreachable ones (default: false)"),
        Arg("verbose", "boolean", "Show detailed error information for failed/unreachable servers (default: false)"),
    ),
    tool(
        MCPSERVER_GET,
        "Get detailed information about a specific MCP server definition",
        Arg("name", "string", "Name of the MCP server to retrieve", required=True),
    ),
    _server_arg_tool(
        AUTH_LOGIN, "Authenticate to an OAuth-protected MCP server", "Name of the MCP server to authenticate to"
    ),
    _server_arg_tool(
        AUTH_LOGOUT, "Log out from an OAuth-protected MCP server", "Name of the MCP server to log out from"
    ),
]


@dataclass(frozen=True, slots=True)
class ServerStatus:
    """One MCPServer and what discovery knows of it."""

    server: MCPServer
    state: str  # ServerCatalog.state
    error: str = ""


def server_info(status: ServerStatus, verbose: bool = True) -> dict[str, Any]:
    """api.MCPServerInfo in field order, empty fields left out, secrets' values never shown."""
    spec = status.server.spec
    info: dict[str, Any] = {"name": status.server.name, "type": spec.type}
    optional: list[tuple[str, Any]] = [
        ("description", spec.description),
        ("autoStart", spec.auto_start),
        ("command", spec.command),
        ("args", spec.args),
        ("url", spec.url),
        ("env", dict.fromkeys(sorted(spec.env), REDACTED) if spec.env else None),
        ("headers", dict.fromkeys(sorted(spec.headers), REDACTED) if spec.headers else None),
        ("auth", _auth(spec.auth.model_dump(by_alias=True)) if spec.auth else None),
        ("timeout", spec.timeout),
        ("toolPrefix", spec.tool_prefix),
        ("family", {"name": spec.family.name, "instanceArg": spec.family.instance_arg} if spec.family else None),
        ("error", status.error if verbose else ""),
        ("state", status.state),
        ("statusMessage", status_message(status.state, status.error, status.server.name)),
    ]
    info.update((k, v) for k, v in optional if v)
    return info


def _auth(value: Any) -> Any:
    # Go's omitempty: false, "", empty lists and absent objects are left out, at every level.
    if isinstance(value, Mapping):
        kept = {k: _auth(v) for k, v in value.items()}
        return {k: v for k, v in kept.items() if v not in (None, False, "", [], {})}
    return value


def status_message(state: str, error: str, name: str) -> str:
    """generateStatusMessage: a short hint for a server that is starting or failed."""
    if state in ("Starting", "Connecting"):
        return "Starting..."
    if state != "Failed":
        return ""
    lowered = error.lower()
    hints = [
        (("certificate", "x509"), "Certificate error - verify TLS configuration"),
        (("tls handshake",), "TLS error - check server certificate and TLS configuration"),
        (("command not found", "executable file not found"), "Command not found - check the executable path"),
        (("permission denied",), "Permission denied - check file permissions"),
        (("401", "unauthorized"), f"Authentication required - run: muster auth login --server {name}"),
        (("403", "forbidden"), "Access forbidden - check server permissions and credentials"),
        (("connection reset", "econnreset"), "Connection was reset by server - check server logs"),
        (("protocol", "unsupported"), "Protocol error - check server type configuration"),
        (("json", "parse"), "Invalid response from server - check server compatibility"),
    ]
    if error:
        for needles, hint in hints:
            if any(n in lowered for n in needles):
                return hint
    return "Server failed to start"


def mcpserver_list(
    servers: Sequence[ServerStatus], args: Mapping[str, Any], mode: Literal["kubernetes", "filesystem"]
) -> dict[str, Any]:
    show_all = args.get("showAll") is True
    verbose = args.get("verbose") is True
    shown = [s for s in sorted(servers, key=lambda s: s.server.name) if show_all or s.state != "Failed"]
    hidden = sum(1 for s in servers if s.state == "Failed") if not show_all else 0
    result: dict[str, Any] = {}
    if hidden:
        result["hiddenFailed"] = hidden
        result["hint"] = f"({hidden} failed servers hidden, use --all to show, --verbose for details)"
    result |= {"mcpServers": [server_info(s, verbose) for s in shown], "mode": mode, "total": len(shown)}
    return text_result(marshal(result))


def mcpserver_get(servers: Sequence[ServerStatus], args: Mapping[str, Any]) -> dict[str, Any]:
    name = args.get("name")
    if not isinstance(name, str):
        return text_result("name argument is required", True)
    found = next((s for s in servers if s.server.name == name), None)
    if found is None:
        return text_result(f"Failed to get MCP server: MCP server {name} not found", True)
    return text_result(marshal(server_info(found)))


@dataclass(frozen=True, slots=True)
class AuthTarget:
    """What the identity work knows about one server for the calling session."""

    name: str
    requires_auth: bool  # spec.auth.type oauth without SSO, or SSO: the session needs its own token
    sso: bool  # forwardToken or tokenExchange: muster signs the user in itself
    connected: bool  # reachable at infrastructure level
    authenticated: bool  # the session holds a working token for it


def login_precheck(
    args: Mapping[str, Any], session: bool, target: AuthTarget | None, oauth_enabled: bool
) -> dict[str, Any] | None:
    """core_auth_login's answer when no sign-in is needed or possible; None when a sign-in should start."""
    refused = _refused(args, session, target, "Use list_tools to see available servers.")
    if refused is not None or target is None:
        return refused
    server = target.name
    if not target.requires_auth:
        if target.connected:
            return text_result(f"Server '{server}' is already authenticated and connected.")
        return text_result(f"Server '{server}' does not require authentication.")
    if target.authenticated:
        return already_authenticated(server)
    if not oauth_enabled:
        return text_result(
            f"OAuth is not configured. Server '{server}' requires authentication but OAuth proxy is not enabled. "
            "Enable OAuth proxy in the configuration to authenticate to remote MCP servers.",
            True,
        )
    if target.sso:
        return text_result(
            f"Server '{server}' uses SSO and is connected automatically.\n\n"
            "Manual login via core_auth_login is not supported for SSO servers.\n"
            "SSO connections are established when your session starts. "
            "If the server is not connected, check your SSO configuration or re-authenticate to muster.",
            True,
        )
    return None


def already_authenticated(server: str) -> dict[str, Any]:
    return text_result(f"Server '{server}' is already authenticated.")


def _refused(args: Mapping[str, Any], session: bool, target: AuthTarget | None, hint: str) -> dict[str, Any] | None:
    """What login and logout both refuse first: no server named, no session, a server nobody knows."""
    server = args.get("server")
    if not isinstance(server, str) or not server:
        return text_result(MISSING_SERVER, True)
    if not session:
        return text_result(MISSING_SESSION, True)
    if target is None:
        return text_result(f"Server '{server}' not found. {hint}".rstrip(), True)
    return None


def login_challenge(server: str, status: str, auth_url: str) -> dict[str, Any]:
    """The sign-in link, as text for the agent and as structuredContent.authUrl for clients that open it."""
    result = text_result(
        f"Authentication Required\n\nServer: {server}\nStatus: {status}\n\n"
        f"Please sign in to connect to this server:\n\n{auth_url}\n\n"
        "After signing in, run this tool again to complete the connection."
    )
    result["structuredContent"] = {"authUrl": auth_url}
    return result


def login_connected(server: str, tools: int, resources: int, prompts: int) -> dict[str, Any]:
    return text_result(
        f"Successfully connected to '{server}'!\n\nAvailable capabilities:\n- Tools: {tools}\n"
        f"- Resources: {resources}\n- Prompts: {prompts}\n\nYou can now use the tools from this server."
    )


def logout_precheck(args: Mapping[str, Any], session: bool, target: AuthTarget | None) -> dict[str, Any] | None:
    """core_auth_logout's answer when there is nothing to do; None when the session's token should go."""
    refused = _refused(args, session, target, "")
    if refused is not None or target is None:
        return refused
    server = target.name
    if target.sso:
        return text_result(
            f"Server '{server}' uses SSO and is managed automatically.\n\n"
            "Manual logout via core_auth_logout is not supported for SSO servers.\n"
            "To disconnect, re-authenticate to muster or contact your administrator.",
            True,
        )
    return None


def logout_done(server: str) -> dict[str, Any]:
    return text_result(
        f"Successfully logged out from '{server}'.\n\n"
        f"The server's tools are now hidden. Use core_auth_login with server='{server}' to re-authenticate."
    )
