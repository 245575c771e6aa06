"""Sealed values in Valkey with TTLs: what the identity code keeps, encrypted under the keyring."""

import logging
import time
from typing import TypeVar

import orjson
from pydantic import BaseModel, ConfigDict
from redis.asyncio import Redis

from shared.identity import keys
from shared.identity.errors import Unsealable
from shared.identity.sealing import Keyring

M = TypeVar("M", bound=BaseModel)

logger = logging.getLogger(__name__)


class Tokens(BaseModel):
    """What a token endpoint gave muster for one user: upstream (Dex) tokens or a remote server's tokens.

    Times are Unix seconds. `issuer` is the authorization server that issued them and refreshes them.
    """

    model_config = ConfigDict(frozen=True)

    issuer: str
    access_token: str
    expires_at: float
    refresh_token: str | None = None
    id_token: str | None = None
    id_expires_at: float | None = None
    scope: str | None = None
    token_endpoint: str | None = None
    resource: str | None = None
    obtained_at: float = 0.0  # when the provider issued them (0: not known)

    @property
    def valid_until(self) -> float:
        """When the first of the tokens a caller may send expires."""
        if self.id_expires_at is None:
            return self.expires_at
        return min(self.expires_at, self.id_expires_at)

    def refresh_at(self, margin: float) -> float:
        """When to refresh: `margin` before they expire, but never earlier than half their life (tokens that live
        shorter than the margin would otherwise be refreshed on every use)."""
        if self.obtained_at:
            margin = min(margin, (self.valid_until - self.obtained_at) / 2)
        return self.valid_until - margin

    def expiring(self, margin: float, now: float | None = None) -> bool:
        return self.refresh_at(margin) <= (time.time() if now is None else now)


class SealedStore:
    """Pydantic models stored sealed, each bound to its key."""

    def __init__(self, valkey: Redis, keyring: Keyring) -> None:
        self.valkey = valkey
        self.keyring = keyring

    def seal(self, key: str, value: BaseModel) -> bytes:
        return self.keyring.seal(orjson.dumps(value.model_dump(mode="json")), key.encode())

    def unseal(self, key: str, sealed: bytes | str, model: type[M]) -> M | None:
        """The value, or None when it does not open (its key was retired, or it was tampered with or moved): to
        the caller that is a value that is not there, and the user signs in again."""
        if isinstance(sealed, str):
            raise TypeError("the Valkey client must return bytes (decode_responses=False)")
        try:
            return model.model_validate_json(self.keyring.open(sealed, key.encode()))
        except Unsealable as exc:
            logger.warning("a stored %s value does not open: %s", model.__name__, exc)
            return None

    async def put(self, key: str, value: BaseModel, ttl: float) -> None:
        await self.valkey.set(key, self.seal(key, value), px=max(1, int(ttl * 1000)))

    async def add(self, key: str, value: BaseModel, ttl: float) -> bool:
        """Stores only if the key is free; says whether it did."""
        return bool(await self.valkey.set(key, self.seal(key, value), px=max(1, int(ttl * 1000)), nx=True))

    async def get(self, key: str, model: type[M]) -> M | None:
        sealed = await self.valkey.get(key)
        return None if sealed is None else self.unseal(key, sealed, model)

    async def take(self, key: str, model: type[M]) -> M | None:
        """Reads and deletes in one step (GETDEL): of two concurrent takers, one gets the value."""
        sealed = await self.valkey.getdel(key)
        return None if sealed is None else self.unseal(key, sealed, model)

    async def delete(self, *names: str) -> None:
        if names:
            await self.valkey.delete(*names)


class TokenStore:
    """The users' tokens: upstream tokens per login (family), per-server tokens per (user, server), and the state of
    flows in progress."""

    def __init__(self, store: SealedStore) -> None:
        self.store = store

    async def upstream(self, family: str) -> Tokens | None:
        return await self.store.get(keys.upstream(family), Tokens)

    async def put_upstream(self, family: str, tokens: Tokens, ttl: float) -> None:
        await self.store.put(keys.upstream(family), tokens, ttl)

    async def server(self, subject: str, server: str) -> Tokens | None:
        return await self.store.get(keys.server_token(subject, server), Tokens)

    async def put_server(self, subject: str, server: str, tokens: Tokens, ttl: float) -> None:
        await self.store.put(keys.server_token(subject, server), tokens, ttl)

    async def drop_server(self, subject: str, server: str) -> None:
        await self.store.delete(keys.server_token(subject, server))

    async def put_state(self, nonce: str, value: BaseModel, ttl: float) -> None:
        await self.store.put(keys.state(nonce), value, ttl)

    async def peek_state(self, nonce: str, model: type[M]) -> M | None:
        return await self.store.get(keys.state(nonce), model)

    async def take_state(self, nonce: str, model: type[M]) -> M | None:
        """A state is good for one use: the first taker gets it, a replay gets None."""
        return await self.store.take(keys.state(nonce), model)
