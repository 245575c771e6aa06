"""Who a call is made for: the result of checking the bearer token on /mcp."""

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller.

    `family` names the muster login (the token family of one user at one client) whose upstream tokens the
    worker uses downstream; an SSO-forwarded upstream ID token has no family and carries `id_token` itself.
    """

    subject: str
    client_id: str
    scopes: frozenset[str]
    expires_at: float
    source: Literal["muster", "sso"]
    family: str | None = None
    email: str | None = None
    groups: tuple[str, ...] = ()
    id_token: str | None = None
