"""What muster honours of an MCPServer's spec, and why it will not serve a server that asks for more.

A server whose spec asks for something muster does not do is never connected: it is marked Failed, its status and
the log say which field and why, and it offers no tools; quietly serving it some other way would be worse. What
muster does not do is a transport other than streamable-http. Every other field is honoured, `spec.auth` by the
workers (each call with its user's own credential, services/worker/identity.py), except `autoStart` and
`description`, which only describe: muster connects every remote server it is given (it starts no processes), and
lists what the server itself says of its tools.
"""

from shared.mcpserver import MCPServer

TRANSPORTS = {
    "stdio": "spec.type stdio: muster runs no server processes, and workers on other machines could not reach one; "
    "serve it over streamable-http",
    "sse": "spec.type sse: the legacy SSE transport is not supported; use streamable-http",
}


def unsupported(server: MCPServer) -> str | None:
    """Why muster cannot serve this server as its spec asks, naming the field; None when it can."""
    return TRANSPORTS.get(server.spec.type)
