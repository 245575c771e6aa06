"""Who a call is made for: the result of checking the bearer token on /mcp."""

import hashlib
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

    @classmethod
    def of_call(cls, subject: str, family: str | None) -> "Principal":
        """The principal as a worker knows it from a call: who, and whose login's upstream tokens (what else /mcp
        checked stays at the ingress)."""
        return cls(
            subject=subject, client_id="", scopes=frozenset(), expires_at=float("inf"), source="muster", family=family
        )


def sso_family(id_token: str) -> str:
    """The login a forwarded upstream ID token stands for: its tokens are kept under this name like a muster
    login's, so that workers find them without the token ever travelling through a stream."""
    return "sso-" + hashlib.sha256(id_token.encode()).hexdigest()[:32]
