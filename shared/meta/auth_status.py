"""The `auth://status` resource: per server, what the calling session must do before it can use it.

    {"servers": [{"name", "status", "issuer"?, "scope"?, "auth_tool"?, "error"?,
                  "token_forwarding_enabled"?, "token_exchange_enabled"?, "sso_attempt_failed"?}]}

The status follows the Go muster's determineSessionAuthStatus; reading it changes nothing. Servers are listed by
name (the Go muster lists them in map order).
"""

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from shared.meta._gojson import marshal

URI = "auth://status"
MIME_TYPE = "application/json"
# mcp.NewResource(uri, name): the Go muster passes this sentence as the resource's name.
RESOURCE = {
    "uri": URI,
    "name": "Authentication status for all MCP servers. Provides information about which servers require "
    "authentication and their OAuth issuer URLs for SSO detection.",
}

Status = Literal[
    "connected", "auth_required", "reauth_required", "sso_pending", "disconnected", "error", "unreachable", "failed"
]


@dataclass(frozen=True, slots=True)
class ServerAuth:
    """What is known of one server, for the calling session (session fields are ignored without a session)."""

    name: str
    connected: bool  # infrastructure: reachable and listed
    unreachable: bool = False  # infrastructure: failed repeatedly
    requires_auth: bool = False  # spec.auth.type oauth: a session needs its own token
    issuer: str = ""  # the authorization server, once known
    scope: str = ""
    token_forwarding: bool = False
    token_exchange: bool = False
    authenticated: bool = False  # the session holds a token for it
    sso_failed: bool = False
    sso_pending: bool = False
    error: str = ""

    @property
    def sso(self) -> bool:
        return self.token_forwarding or self.token_exchange


def status_of(server: ServerAuth, session: bool) -> Status:
    if not session:
        if server.requires_auth:
            return "auth_required"
        return "connected" if server.connected else "disconnected"
    if server.unreachable:
        return "unreachable"
    if server.authenticated:
        return "connected"
    if server.requires_auth and server.issuer:
        if server.sso and server.sso_failed:
            return "reauth_required"
        if server.sso and server.sso_pending:
            return "sso_pending"
        return "auth_required"
    return "connected" if server.connected else "disconnected"


def entry(server: ServerAuth, session: bool) -> dict[str, Any]:
    status = status_of(server, session)
    out: dict[str, Any] = {"name": server.name, "status": status}
    if server.issuer and status in ("auth_required", "reauth_required"):
        out["issuer"] = server.issuer
        if server.scope:
            out["scope"] = server.scope
        if status == "reauth_required" or not server.sso:
            out["auth_tool"] = "core_auth_login"
    if server.error:
        out["error"] = server.error
    if server.token_forwarding:
        out["token_forwarding_enabled"] = True
    if server.token_exchange:
        out["token_exchange_enabled"] = True
    if session and server.sso and server.sso_failed:
        out["sso_attempt_failed"] = True
    return out


def contents(servers: Iterable[ServerAuth], session: bool) -> dict[str, Any]:
    """The resources/read result of auth://status."""
    body = {"servers": [entry(s, session) for s in sorted(servers, key=lambda s: s.name)]}
    return {"contents": [{"uri": URI, "mimeType": MIME_TYPE, "text": marshal(body)}]}
