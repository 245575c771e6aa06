"""What muster issues: authorization codes, token families, opaque access and refresh tokens.

Opaque, as the Go muster's are, rather than signed JWTs: a family revoked (logout, refresh-token reuse, a
replayed code) stops its access tokens within the in-process cache bound (`oauth_cache_seconds`), with no
deny-list and no signing key to keep and rotate; a client learns nothing from the token. The price of opacity is
one Valkey round trip the first time a replica sees a token (it reads the token's record and its family's
liveness in one pipeline); after that, ResourceGuard answers from memory.

A token is `<family id>.<random>`: the family id is not secret (it names a login, not a credential) and lets that
one round trip check the family too. Valkey holds only the SHA-256 of a token or code, never the value.

Refresh tokens rotate: each use returns a new one, and the family's current-token marker moves by compare-and-set.
An older refresh token of the family presented again is reuse (OAuth 2.1 §4.3.1): the whole family is revoked.
"""

import logging
import secrets
import time
from collections.abc import Awaitable, Callable

from pydantic import BaseModel
from redis.asyncio import Redis

from services.ingress.oauth.errors import invalid_grant
from shared.identity import keys
from shared.identity.store import SealedStore

# KEYS: family-current marker. ARGV: presented digest, new digest, ttl ms. 1 = rotated, 0 = not current.
logger = logging.getLogger(__name__)

ROTATE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1
"""


class Family(BaseModel):
    """One login of one user at one client."""

    subject: str
    client_id: str
    scopes: list[str]
    resource: str
    email: str | None = None
    groups: list[str] = []
    created: float


class CodeGrant(BaseModel):
    family: str
    client_id: str
    redirect_uri: str
    challenge: str
    resource: str
    scopes: list[str]


class AccessRecord(BaseModel):
    family: str
    subject: str
    client_id: str
    scopes: list[str]
    resource: str
    expires_at: float
    email: str | None = None
    groups: list[str] = []


class RefreshRecord(BaseModel):
    family: str
    client_id: str


class Issued(BaseModel):
    access_token: str
    refresh_token: str
    expires_in: int
    scope: str


def family_of(token: str) -> str | None:
    head, dot, _ = token.partition(".")
    return head if dot and head else None


class Grants:
    def __init__(
        self,
        valkey: Redis,
        sealed: SealedStore,
        *,
        access_seconds: int,
        refresh_seconds: int,
        code_seconds: int,
        on_revoke: Callable[[str], Awaitable[None]] | None = None,
    ) -> None:
        self.on_revoke = on_revoke  # told the family id before a family's records go (to end the upstream login)
        self.valkey = valkey
        self.sealed = sealed
        self.access_seconds = access_seconds
        self.refresh_seconds = refresh_seconds
        self.code_seconds = code_seconds
        self._rotate = valkey.register_script(ROTATE)

    async def new_family(self, family: Family) -> str:
        family_id = secrets.token_urlsafe(16).replace(".", "_")
        await self.sealed.put(keys.family(family_id), family, self.refresh_seconds)
        return family_id

    async def family(self, family_id: str) -> Family | None:
        return await self.sealed.get(keys.family(family_id), Family)

    async def new_code(self, grant: CodeGrant) -> str:
        code = secrets.token_urlsafe(32)
        await self.sealed.put(keys.code(code), grant, self.code_seconds)
        return code

    async def redeem(self, code: str) -> CodeGrant:
        """A code works once. A second use revokes what the first one issued (RFC 6749 §4.1.2)."""
        grant = await self.sealed.take(keys.code(code), CodeGrant)
        if grant is None:
            family = await self.valkey.get(keys.used_code(code))
            if family is not None:
                await self.revoke_family(family.decode() if isinstance(family, bytes) else family)
                logger.warning("an authorization code was used twice: the login it gave is revoked")
            raise invalid_grant("the authorization code is invalid, expired or already used")
        await self.valkey.set(keys.used_code(code), grant.family, ex=max(self.code_seconds, 600))
        return grant

    async def issue(self, family_id: str, family: Family, scopes: list[str], refresh: str | None = None) -> Issued:
        access = f"{family_id}.{secrets.token_urlsafe(32)}"
        refresh = refresh or f"{family_id}.{secrets.token_urlsafe(32)}"
        record = AccessRecord(
            family=family_id,
            subject=family.subject,
            client_id=family.client_id,
            scopes=scopes,
            resource=family.resource,
            expires_at=time.time() + self.access_seconds,
            email=family.email,
            groups=family.groups,
        )
        ttl = self.refresh_seconds * 1000
        async with self.valkey.pipeline(transaction=True) as pipe:
            pipe.set(keys.access(access), self.sealed.seal(keys.access(access), record), ex=self.access_seconds)
            pipe.set(
                keys.refresh(refresh),
                self.sealed.seal(keys.refresh(refresh), RefreshRecord(family=family_id, client_id=family.client_id)),
                px=ttl,
            )
            pipe.set(keys.family_current(family_id), keys.digest(refresh), px=ttl)
            pipe.pexpire(keys.family(family_id), ttl)
            await pipe.execute()
        return Issued(
            access_token=access, refresh_token=refresh, expires_in=self.access_seconds, scope=" ".join(scopes)
        )

    async def rotate(self, refresh_token: str, client_id: str) -> tuple[str, Family, str]:
        """Checks a refresh token and moves the family on to a new one; returns the family id, the family and the
        new refresh token, which `issue` then writes. Reuse revokes the family."""
        record = await self.sealed.get(keys.refresh(refresh_token), RefreshRecord)
        if record is None:
            raise invalid_grant("the refresh token is invalid or expired")
        if record.client_id != client_id:
            raise invalid_grant("the refresh token was issued to another client")
        family = await self.family(record.family)
        if family is None:
            raise invalid_grant("the refresh token's login was revoked")
        successor = f"{record.family}.{secrets.token_urlsafe(32)}"
        rotated = await self._rotate(
            keys=[keys.family_current(record.family)],
            args=[keys.digest(refresh_token), keys.digest(successor), self.refresh_seconds * 1000],
        )
        if not rotated:
            await self.revoke_family(record.family)
            logger.warning(
                "a refresh token was used twice: the login of %s at client %s is revoked", family.subject, client_id
            )
            raise invalid_grant("the refresh token was already used; the login is revoked")
        return record.family, family, successor

    async def access(self, token: str) -> AccessRecord | None:
        """The record of a live access token of a live family, in one round trip; None otherwise."""
        family_id = family_of(token)
        if family_id is None:
            return None
        async with self.valkey.pipeline(transaction=False) as pipe:
            pipe.get(keys.access(token))
            pipe.exists(keys.family_current(family_id))
            sealed, alive = await pipe.execute()
        if sealed is None or not alive:
            return None
        record = self.sealed.unseal(keys.access(token), sealed, AccessRecord)
        if record is None or record.family != family_id or record.expires_at <= time.time():
            return None
        return record

    async def revoke_token(self, token: str, client_id: str) -> str | None:
        """RFC 7009: a refresh token revokes its family; an access token itself. Returns a revoked family id."""
        refresh = await self.sealed.get(keys.refresh(token), RefreshRecord)
        if refresh is not None and refresh.client_id == client_id:
            await self.revoke_family(refresh.family)
            return refresh.family
        access = await self.access(token)
        if access is not None and access.client_id == client_id:
            await self.sealed.delete(keys.access(token))
        return None

    async def revoke_family(self, family_id: str) -> None:
        if self.on_revoke is not None:
            try:
                await self.on_revoke(family_id)
            except Exception:  # the local revocation must happen whatever the upstream says
                logger.exception("ending the upstream login of a revoked family failed")
        await self.sealed.delete(keys.family(family_id), keys.family_current(family_id), keys.upstream(family_id))
