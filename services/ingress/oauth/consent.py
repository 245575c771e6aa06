"""The consent screen: a user approves each client before muster sends them to the upstream provider with muster's
own client credentials (the MCP spec's rule for proxies with a static upstream client: without it, a malicious
registered client rides on an earlier approval of muster at the provider).

Approvals live in the browser, in a cookie sealed with the encryption keyring (so they rotate with it). A flow in
progress is bound to the browser that started it by a second cookie, checked at the consent POST and at the
upstream callback: a consent form or callback cannot be replayed into another browser.
"""

import base64
import html
import secrets
import time

import orjson

from shared.identity import keys
from shared.identity.errors import Unsealable
from shared.identity.sealing import Keyring

CONSENT_COOKIE = "muster_consent"
FLOW_COOKIE = "muster_flow"
_CONTEXT = b"muster-consent-cookie"


def approved(keyring: Keyring, cookie: str | None) -> set[str]:
    if not cookie:
        return set()
    try:
        value = orjson.loads(keyring.open(base64.urlsafe_b64decode(cookie + "=" * (-len(cookie) % 4)), _CONTEXT))
    except (Unsealable, ValueError):
        return set()
    if not isinstance(value, dict) or value.get("exp", 0) < time.time():
        return set()
    return {c for c in value.get("clients", []) if isinstance(c, str)}


def approval_cookie(keyring: Keyring, clients: set[str], days: int, secure: bool) -> str:
    value = {"clients": sorted(clients)[-50:], "exp": time.time() + days * 86400}
    sealed = base64.urlsafe_b64encode(keyring.seal(orjson.dumps(value), _CONTEXT)).rstrip(b"=").decode()
    return _cookie(CONSENT_COOKIE, sealed, days * 86400, secure)


def flow_binding() -> tuple[str, str]:
    """A random browser binding and its digest (what the flow's record keeps)."""
    value = secrets.token_urlsafe(24)
    return value, keys.digest(value)


def flow_cookie(value: str, seconds: int, secure: bool) -> str:
    return _cookie(FLOW_COOKIE, value, seconds, secure)


def _cookie(name: str, value: str, seconds: int, secure: bool) -> str:
    flags = "; Secure" if secure else ""
    return f"{name}={value}; Path=/oauth; Max-Age={seconds}; HttpOnly; SameSite=Lax{flags}"


def page(request_id: str, client_name: str, client_id: str, redirect_uri: str, scopes: list[str]) -> str:
    e = html.escape
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>Allow access to muster?</title></head>
<body>
<h1>Allow {e(client_name)} to use muster as you?</h1>
<p>Client <code>{e(client_id)}</code> will receive access to muster's MCP endpoint with the scopes
<code>{e(" ".join(scopes))}</code> and will be sent back to <code>{e(redirect_uri)}</code>.</p>
<p>Only approve a client you started yourself.</p>
<form method="post" action="/oauth/consent">
<input type="hidden" name="request" value="{e(request_id)}">
<button name="decision" value="approve">Approve</button>
<button name="decision" value="deny">Deny</button>
</form>
</body></html>
"""
