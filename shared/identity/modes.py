"""Which credential a server is called with, from its record: the ingress decides who sees it by this, the worker
what it sends.

    none       no user credential (spec.headers may carry a static one): every caller shares the server
    forward    forwardToken: the user's upstream (Dex) ID token
    exchange   tokenExchange: RFC 8693 at the server's Dex, the user's ID token in, an ID token for it out
    oauth      the user's own token at the server's authorization server, after a login of their own

Precedence as in the Go muster: exchange > forward > per-server OAuth > none. A server that answered discovery's
listing with 401 and names no mode is a per-server OAuth server (the Go muster's "401 at connect").
"""

from typing import Literal

from shared.messages import ServerRecord

Mode = Literal["none", "forward", "exchange", "oauth"]


def mode_of(record: ServerRecord) -> Mode:
    auth = record.auth
    if auth is not None:
        exchange = auth.token_exchange
        if exchange is not None and exchange.enabled and exchange.dex_token_endpoint and exchange.connector_id:
            return "exchange"
        if auth.forward_token:
            return "forward"
        if auth.type == "oauth":
            return "oauth"
    return "oauth" if record.state == "Auth Required" else "none"


def personal(record: ServerRecord) -> bool:
    """Each user sees this server as it is listed for them, and only once they can call it: a server of
    per-server logins always, a server of the user's forwarded or exchanged token when it lists nothing without
    one (with a listing of its own, every user sees that one and calls it with their own token)."""
    mode = mode_of(record)
    return mode == "oauth" or (mode != "none" and record.state != "Connected")
