"""Every Valkey key identity writes, in one place (the wire contract's rule: no key literal anywhere else).

Secrets never appear in a key: tokens and codes are named by their SHA-256, users and servers by name.
Every value under these keys is sealed (shared/identity/sealing.py) with the key itself as associated data,
except the locks and the family's current-refresh marker, which hold random ids and hashes, and the per-user
listings of servers, which hold tool definitions.
"""

import hashlib

PREFIX = "muster:oauth:"


def digest(secret: str) -> str:
    """The name of a token or code in a key; a 256-bit random value needs no salt."""
    return hashlib.sha256(secret.encode()).hexdigest()


def upstream(family: str) -> str:
    """The user's upstream (Dex) tokens of one login: ID, access, refresh, expiry."""
    return f"{PREFIX}upstream:{family}"


def server_token(subject: str, server: str) -> str:
    """A user's tokens for one remote server that muster logged in to as that user's OAuth client."""
    return f"{PREFIX}server:{subject}:{server}"


def state(nonce: str) -> str:
    """A flow in progress (authorization request, per-server login); consumed once with GETDEL."""
    return f"{PREFIX}state:{nonce}"


def lock(key: str) -> str:
    """The single-flight refresh lock of the tokens stored at `key`."""
    return f"{PREFIX}lock:{key.removeprefix(PREFIX)}"


def client(client_id: str) -> str:
    return f"{PREFIX}client:{digest(client_id)}"


def code(value: str) -> str:
    return f"{PREFIX}code:{digest(value)}"


def used_code(value: str) -> str:
    """A redeemed code, kept for its lifetime so that a replay revokes what it issued (RFC 6749 §4.1.2)."""
    return f"{PREFIX}code-used:{digest(value)}"


def family(family_id: str) -> str:
    """One login of one user at one client: the grant that its access and refresh tokens belong to."""
    return f"{PREFIX}family:{family_id}"


def family_current(family_id: str) -> str:
    """The digest of the family's one valid refresh token; an older one presented means reuse."""
    return f"{PREFIX}family-current:{family_id}"


def refresh(token: str) -> str:
    return f"{PREFIX}refresh:{digest(token)}"


def access(token: str) -> str:
    return f"{PREFIX}access:{digest(token)}"


def listing(subject: str, server: str) -> str:
    """What a server of the user's own credential lists for that user (a ServerRecord's JSON, not sealed: it
    names tools, not secrets); the ingress keeps it a few minutes so that every replica can reuse it."""
    return f"{PREFIX}listing:{server}:{digest(subject)}"
