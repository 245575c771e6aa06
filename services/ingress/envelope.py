"""The per-request protocol (2026-07-28): no initialize and no session; every request carries its own envelope
in `params._meta`, mirrored in routing headers. The SDK's own ladder checks it, so muster and the SDK agree
on what a valid request is."""

from typing import Any

from mcp.shared.inbound import ERROR_CODE_HTTP_STATUS, InboundLadderRejection, classify_inbound_request
from mcp_types import LOG_LEVEL_META_KEY

from services.ingress.callers import NO_LOGS, Envelope
from services.ingress.http import Head
from services.ingress.routing import BadRequest
from shared.protocol import MODERN_VERSIONS


def is_modern(head: Head, method: str) -> bool:
    return method == "server/discover" or (
        head.protocol is not None and head.protocol.decode("latin-1") in MODERN_VERSIONS
    )


def open_envelope(head: Head, message: dict[str, Any], principal: str) -> Envelope:
    """The caller a request's envelope describes, or BadRequest with the status the SDK would send."""
    verdict = classify_inbound_request(message, headers=head.text_headers(), supported_modern_versions=MODERN_VERSIONS)
    if isinstance(verdict, InboundLadderRejection):
        raise BadRequest(
            verdict.code, verdict.message, verdict.data, status=ERROR_CODE_HTTP_STATUS.get(verdict.code, 400)
        )
    meta = message["params"]["_meta"]
    capabilities = verdict.client_capabilities if isinstance(verdict.client_capabilities, dict) else {}
    level = meta.get(LOG_LEVEL_META_KEY)
    return Envelope(verdict.protocol_version, capabilities, principal, level if isinstance(level, str) else NO_LOGS)
