"""The per-request protocol (2026-07-28): no initialize and no session; every request carries its own envelope
in `params._meta`, mirrored in routing headers. The SDK's own ladder checks it, so muster and the SDK agree
on what a valid request is."""

from typing import Any

from mcp.shared.inbound import ERROR_CODE_HTTP_STATUS, InboundLadderRejection, classify_inbound_request
from mcp_types import LOG_LEVEL_META_KEY

from services.ingress.http import Head
from services.ingress.routing import BadRequest
from services.ingress.sessions import Session

MODERN_VERSIONS = ("2026-07-28",)
RESERVED = "io.modelcontextprotocol/"
# A per-request client that did not opt in to log messages gets none (2026-07-28, SEP-2577).
NO_LOGS = "off"


def is_modern(head: Head, method: str) -> bool:
    return method == "server/discover" or (
        head.protocol is not None and head.protocol.decode("latin-1") in MODERN_VERSIONS
    )


def open_envelope(head: Head, message: dict[str, Any], principal: str) -> Session:
    """A session-like context for one request, or BadRequest with the status the SDK would send."""
    verdict = classify_inbound_request(message, headers=head.text_headers(), supported_modern_versions=MODERN_VERSIONS)
    if isinstance(verdict, InboundLadderRejection):
        raise BadRequest(
            verdict.code, verdict.message, verdict.data, status=ERROR_CODE_HTTP_STATUS.get(verdict.code, 400)
        )
    meta = message["params"]["_meta"]
    capabilities = verdict.client_capabilities if isinstance(verdict.client_capabilities, dict) else {}
    level = meta.get(LOG_LEVEL_META_KEY)
    return Session("", verdict.protocol_version, capabilities, principal, level if isinstance(level, str) else NO_LOGS)


def strip(params: Any) -> Any:
    """The params without the envelope, for an upstream that speaks a handshake-era protocol."""
    if not isinstance(params, dict) or not isinstance(params.get("_meta"), dict):
        return params
    meta = {k: v for k, v in params["_meta"].items() if not k.startswith(RESERVED)}
    rest = {k: v for k, v in params.items() if k != "_meta"}
    return {**rest, "_meta": meta} if meta else rest
