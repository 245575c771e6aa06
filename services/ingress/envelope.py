"""The per-request protocol (2026-07-28): no initialize and no session; every request carries its own envelope
in `params._meta`, mirrored in routing headers. The SDK's own ladder checks it, so muster and the SDK agree
on what a valid request is."""

from typing import Any

from mcp.shared.inbound import ERROR_CODE_HTTP_STATUS, InboundLadderRejection, classify_inbound_request
from mcp_types import LOG_LEVEL_META_KEY

from services.ingress.callers import NO_LOGS, Envelope
from services.ingress.http import Head
from shared import errors
from shared.protocol import MODERN_VERSIONS

# The rejections the SDK's ladder makes, as muster's errors.
_REJECTIONS: dict[int, type[errors.RequestError]] = {
    e.code: e for e in (errors.HeaderMismatch, errors.UnsupportedProtocolVersion, errors.InvalidParams)
}


def is_modern(head: Head, method: str) -> bool:
    return method == "server/discover" or (
        head.protocol is not None and head.protocol.decode("latin-1") in MODERN_VERSIONS
    )


def open_envelope(head: Head, message: dict[str, Any], principal: str) -> Envelope:
    """The caller a request's envelope describes; the error the SDK would answer with when it describes none."""
    verdict = classify_inbound_request(message, headers=head.text_headers(), supported_modern_versions=MODERN_VERSIONS)
    if isinstance(verdict, InboundLadderRejection):
        rejection = _REJECTIONS.get(verdict.code, errors.InvalidRequest)
        data = verdict.data if isinstance(verdict.data, dict) else None
        raise rejection(verdict.message, data, status=ERROR_CODE_HTTP_STATUS.get(verdict.code, 400))
    meta = message["params"]["_meta"]
    capabilities = verdict.client_capabilities if isinstance(verdict.client_capabilities, dict) else {}
    level = meta.get(LOG_LEVEL_META_KEY)
    return Envelope(verdict.protocol_version, capabilities, principal, level if isinstance(level, str) else NO_LOGS)
