"""What muster honours of an MCPServer's spec, and why it will not serve a server that asks for more.

A server whose spec asks for something muster does not do is never connected: it is marked Failed, its status and
the log say which field and why, and it offers no tools. Quietly serving it some other way would be worse (a
server meant to be called as each user, called anonymously). The fields not named here are honoured, except
`autoStart` and `description`, which only describe: muster connects every remote server it is given (it starts
no processes), and lists what the server itself says of its tools.
"""

from shared.mcpserver import MCPServer

TRANSPORTS = {
    "stdio": "spec.type stdio: muster runs no server processes, and workers on other machines could not reach one; "
    "serve it over streamable-http",
    "sse": "spec.type sse: the legacy SSE transport is not supported; use streamable-http",
}

# Downstream credentials arrive with identity (issue 8); until then a server that needs one is refused, never
# called without it.
_NOT_YET = "is not supported yet (issue 8): the server would be called without the user's credentials"


def unsupported(server: MCPServer) -> str | None:
    """Why muster cannot serve this server as its spec asks, naming the field; None when it can."""
    spec = server.spec
    if spec.type in TRANSPORTS:
        return TRANSPORTS[spec.type]
    auth = spec.auth
    if auth is None:
        return None
    if auth.type == "oauth":
        return f"spec.auth.type oauth (a per-server login) {_NOT_YET}"
    if auth.forward_token:
        return f"spec.auth.forwardToken {_NOT_YET}"
    if auth.token_exchange is not None and auth.token_exchange.enabled:
        return f"spec.auth.tokenExchange {_NOT_YET}"
    if auth.required_audiences:
        return f"spec.auth.requiredAudiences {_NOT_YET}"
    return None
