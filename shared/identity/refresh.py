"""Single-flight refresh across every process: one refresh per token set at the provider, however many callers.

A caller that finds its tokens expiring takes a Valkey lock (SET NX PX with a random holder id). The holder reads
the tokens again (another holder may just have refreshed them), asks the provider, stores what it answered, and
only then lets go: the old refresh token is replaced after the provider has answered, never before, so a crash
or a timeout in between leaves the old one usable. The others wait for the lock to go and read the stored result.
A refresh token the provider refuses (invalid_grant) drops the stored tokens: every waiter then gets
ReauthRequired, a clear "sign in again", instead of trying the dead token once more.
"""

import asyncio
import logging
import secrets
import time
from collections.abc import Awaitable, Callable

from redis.asyncio import Redis

from shared.identity import keys
from shared.identity.errors import IdentityError, ProviderUnavailable, ReauthRequired
from shared.identity.store import SealedStore, Tokens

logger = logging.getLogger(__name__)

Renew = Callable[[Tokens], Awaitable[Tokens]]

# KEYS: lock. ARGV: holder id. Deletes the lock only if this holder still has it.
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class Refresher:
    """Keeps the tokens at a key fresh; `margin` seconds before expiry counts as expired."""

    def __init__(
        self,
        valkey: Redis,
        store: SealedStore,
        *,
        margin: float = 60.0,
        lock_seconds: float = 30.0,
        poll_seconds: float = 0.02,
    ) -> None:
        self.valkey = valkey
        self.store = store
        self.margin = margin
        self.lock_seconds = lock_seconds
        self.poll_seconds = poll_seconds
        self._release = valkey.register_script(RELEASE)
        # Told each refresh's outcome at the provider: "ok", "rejected" (sign in again) or "error" (metrics).
        self.observe: Callable[[str], None] = lambda outcome: None

    async def fresh(
        self, key: str, renew: Renew, ttl: Callable[[Tokens], float], rejected: str | None = None
    ) -> Tokens:
        """The tokens at `key`, refreshed with `renew` first if they expire within the margin, or if `rejected` (a
        token a server just refused) is still what is stored.

        ReauthRequired when there are none or the provider refused the refresh token; ProviderUnavailable when the
        provider cannot be asked now (the stored tokens stay as they are).
        """
        deadline = time.monotonic() + self.lock_seconds * 2
        while True:
            tokens = await self._stored(key)
            if self._usable(tokens, rejected):
                return tokens
            holder = secrets.token_hex(16)
            lock = keys.lock(key)
            if await self.valkey.set(lock, holder, px=int(self.lock_seconds * 1000), nx=True):
                try:
                    return await self._refresh(key, renew, ttl, rejected)
                finally:
                    await self._release(keys=[lock], args=[holder])
            while await self.valkey.exists(lock):
                if time.monotonic() > deadline:
                    raise ProviderUnavailable("a refresh in another process did not finish in time")
                await asyncio.sleep(self.poll_seconds)

    async def _stored(self, key: str) -> Tokens:
        tokens = await self.store.get(key, Tokens)
        if tokens is None:
            raise ReauthRequired("no tokens stored; sign in again")
        return tokens

    def _usable(self, tokens: Tokens, rejected: str | None) -> bool:
        """Whether the tokens serve as they are; False: refresh them first; ReauthRequired: they cannot be."""
        refused = rejected is not None and rejected in (tokens.id_token, tokens.access_token)
        if tokens.refresh_token is not None:
            return not refused and not tokens.expiring(self.margin)
        # Without a refresh token (a forwarded ID token) there is nothing to refresh: usable until it expires.
        if refused:
            raise ReauthRequired("the server refused the token, and there is no refresh token; sign in again")
        if tokens.expiring(0):
            raise ReauthRequired("the token expired, and there is no refresh token; sign in again")
        return True

    async def _refresh(self, key: str, renew: Renew, ttl: Callable[[Tokens], float], rejected: str | None) -> Tokens:
        tokens = await self._stored(key)
        if self._usable(tokens, rejected):
            return tokens  # another holder refreshed them between our read and our lock
        try:
            fresh = await renew(tokens)
        except ReauthRequired:
            self.observe("rejected")
            await self.store.delete(key)
            logger.info("a refresh token was refused; the user must sign in again")
            raise
        except IdentityError:
            self.observe("error")
            raise
        self.observe("ok")
        await self.store.put(key, fresh, ttl(fresh))
        return fresh
