"""The protocol facts muster states once: the MCP versions it speaks, from the `mcp` package's own registry, and
its own name and version, as it introduces itself to clients and to upstream servers."""

from importlib.metadata import version
from typing import Final

from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS, LATEST_HANDSHAKE_VERSION, MODERN_PROTOCOL_VERSIONS

MUSTER_VERSION: Final = version("muster")

# Newest first, the order in which they are offered.
HANDSHAKE_VERSIONS: Final = tuple(reversed(HANDSHAKE_PROTOCOL_VERSIONS))  # initialize, then a session
MODERN_VERSIONS: Final = tuple(reversed(MODERN_PROTOCOL_VERSIONS))  # an envelope on every request, no session
LATEST_HANDSHAKE: Final = LATEST_HANDSHAKE_VERSION

# Which client capability each server->client request needs: a client that did not declare it is not asked.
REQUIRES: Final = {"sampling/createMessage": "sampling", "elicitation/create": "elicitation", "roots/list": "roots"}
