"""Who sees which servers. Every caller sees the servers that serve everybody; each user also sees the servers that
are called with the user's own credential (shared/identity/modes.py `personal`), as they are listed for that user,
and only once the user can call them: a server of per-server logins appears after the user's login to it, and is
auth-required (with the URL to log in at) for everybody else.

A user's listing of such a server is made through the queue like any call (tools/list, resources/list, ... with
the user's login), so the worker's credentials, refresh and errors apply to it unchanged. It is kept in Valkey
for `listing_seconds` (any replica reuses it) and in this process with the catalog built from it, so that a
request of a user whose view is built costs a dict lookup. Without auth, or without personal servers, every
caller gets the shared catalog as it is.
"""

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError

from services.ingress.calls import Calls
from services.ingress.current import CurrentCatalog
from shared import errors
from shared.catalog import Catalog
from shared.identity import keys
from shared.identity.errors import IdentityError
from shared.identity.modes import mode_of, personal
from shared.identity.server_oauth import ServerOAuth
from shared.lifecycle import Background
from shared.messages import Call, CallReply, ReplyKind, ServerRecord
from shared.meta.auth_status import ServerAuth
from shared.naming import MUSTER_PREFIX

logger = logging.getLogger(__name__)

LISTS = (
    ("tools/list", "tools", "tools"),
    ("resources/list", "resources", "resources"),
    ("resources/templates/list", "resourceTemplates", "resources"),
    ("prompts/list", "prompts", "prompts"),
)
MAX_PAGES = 20
MAX_USERS = 10_000


class Unlisted(Exception):
    """The server cannot be listed for this user now; `login_url` when a login of theirs would change that."""

    def __init__(self, message: str, login_url: str | None = None) -> None:
        super().__init__(message)
        self.login_url = login_url


@dataclass(frozen=True, slots=True)
class Listing:
    """One personal server as listed for one user, or why it is not (record None)."""

    record: ServerRecord | None
    until: float  # monotonic
    login_url: str | None = None
    error: str | None = None


@dataclass(slots=True)
class View:
    """What one user sees, and what it was built from."""

    base: Catalog  # the shared catalog this view extends; a new one means the records changed
    listings: dict[str, Listing]
    catalog: Catalog
    until: float  # the first listing expires: listed again in the background
    invalid: bool = False  # a login changed what the user may call: built again before the next request


@dataclass(frozen=True, slots=True)
class Split:
    base: Catalog  # what a caller without listings sees
    shared: tuple[ServerRecord, ...]  # its records: every server, the personal ones as not listed
    personal: tuple[ServerRecord, ...]


class Visibility:
    def __init__(
        self,
        current: CurrentCatalog,
        calls: Calls,
        valkey: Redis,
        replica: str,
        *,
        servers: ServerOAuth | None = None,
        listing_seconds: float = 300.0,
        unlisted_seconds: float = 30.0,
        list_timeout: float = 10.0,
    ) -> None:
        self.current = current
        self.calls = calls
        self.valkey = valkey
        self.replica = replica.encode()
        self.servers = servers
        self.listing_seconds = listing_seconds
        self.unlisted_seconds = unlisted_seconds
        self.list_timeout = list_timeout
        self.views: OrderedDict[str, View] = OrderedDict()
        self.locks: dict[str, asyncio.Lock] = {}
        self.background = Background()
        self.refreshing: set[str] = set()  # owners whose expired listings are being listed again
        self._split: tuple[Catalog, Split] | None = None

    def split(self) -> Split:
        """The servers that serve everybody and the personal ones, once per catalog change."""
        current = self.current.catalog
        if self._split is not None and self._split[0] is current:
            return self._split[1]
        records = self.current.records.values()
        mine = tuple(r for r in records if personal(r))
        shared = (*(r for r in records if not personal(r)), *map(_unlisted, mine))
        # The shared catalog already shows no tools of servers that list nothing; rebuilt only when a personal
        # server would show some (a per-server-login server that lists without a login).
        base = Catalog(shared) if any(r.state == "Connected" for r in mine) else current
        split = Split(base, shared, mine)
        self._split = (current, split)
        return split

    async def catalog(self, owner: str, login: bytes) -> Catalog:
        """The catalog `owner` sees; `login` is the caller's login that personal servers are listed with."""
        split = self.split()
        if not split.personal or not login:
            return split.base
        view = self.views.get(owner)
        if view is not None and view.base is split.base and not view.invalid:
            if view.until <= time.monotonic() and owner not in self.refreshing:
                # an expired listing is listed again behind the caller's back: no request waits for it
                self.refreshing.add(owner)
                self.background.spawn(self._rebuild(owner, login, split))
            return view.catalog
        async with self._lock(owner):
            view = self.views.get(owner)
            if view is None or view.base is not split.base or view.invalid:
                view = await self._build(owner, login, split, view)
        return view.catalog

    async def _rebuild(self, owner: str, login: bytes, split: Split) -> None:
        try:
            async with self._lock(owner):
                view = self.views.get(owner)
                if view is not None and view.base is split.base and view.until <= time.monotonic():
                    await self._build(owner, login, split, view)
        except (RedisError, OSError) as exc:  # the next request tries again
            logger.warning("listing servers again for a user failed: %s", exc)
        finally:
            self.refreshing.discard(owner)

    def login_changed(self, subject: str, server: str) -> None:
        """The user logged in to a server of their own: their next request lists it again, before it is served."""
        view = self.views.get(subject)
        if view is not None:
            view.listings.pop(server, None)
            view.invalid = True

    async def relist(self, subject: str, server: str) -> None:
        """The user's login to a server of their own changed: the listing stored for them goes, and their next
        request here lists the server again (the other replicas hear of it on the control stream)."""
        await self.valkey.delete(keys.listing(subject, server))
        self.login_changed(subject, server)

    async def listed(self, owner: str, login: bytes, server: str) -> bool:
        """Whether the user's view lists `server` (built with `login` first if it is out of date)."""
        await self.catalog(owner, login)
        view = self.views.get(owner)
        listing = view.listings.get(server) if view is not None else None
        return listing is not None and listing.record is not None

    async def explain(self, owner: str, login: bytes, method: str, params: Any) -> errors.AuthRequired | None:
        """Why a name a user called is unknown, when it belongs to a personal server the user cannot call yet."""
        if method not in ("tools/call", "prompts/get") or not isinstance(params, dict) or not login:
            return None
        name = params.get("name")
        view = self.views.get(owner)
        if not isinstance(name, str) or view is None:
            return None
        for record in self.split().personal:
            listing = view.listings.get(record.name)
            if listing is None or listing.record is not None or not record.prefix:
                continue
            if name.startswith(f"{MUSTER_PREFIX}_{record.prefix}_"):
                url = listing.login_url or await self.login_url(owner, record.name)
                why = listing.error or f"{record.name} is not available to you yet"
                if url is not None:
                    why = f"{record.name} needs you to log in to it first: open {url}"
                return errors.AuthRequired(why, record.name, url)
        return None

    async def login_url(self, owner: str, server: str) -> str | None:
        """Where `owner` logs in to a per-server-OAuth server (core_auth_login); None for other servers."""
        record = self.current.records.get(server)
        if record is None or self.servers is None or mode_of(record) != "oauth":
            return None
        try:
            return await self.servers.login_url(owner, server, record.url)
        except IdentityError as exc:
            logger.warning("no login URL for %s: %s", server, exc)
            return None

    async def signed_in(self, owner: str, server: str) -> bool:
        """The user holds a token of their own for a per-server-OAuth server (whichever replica they logged in at)."""
        return self.servers is not None and await self.servers.store.server(owner, server) is not None

    async def logout(self, owner: str, server: str) -> None:
        """The user's own token for a per-server-OAuth server goes, and with it their listing of it (at once on this
        replica: the agent's next request may come before the news on the control stream)."""
        if self.servers is not None:
            await self.servers.store.drop_server(owner, server)
            self.servers.cache.entries.pop((owner, server), None)
        await self.relist(owner, server)

    async def auth_status(self, owner: str, login: bytes = b"") -> list[ServerAuth]:
        """auth://status for one caller: per server, whether it can be called and what the caller must do (from
        the caller's view, which serving the request built; `login` builds it if not)."""
        if login:
            await self.catalog(owner, login)
        view = self.views.get(owner)
        return [await self._server_auth(record, view) for record in self.current.records.values()]

    async def _server_auth(self, record: ServerRecord, view: View | None) -> ServerAuth:
        mode = mode_of(record)
        listing = view.listings.get(record.name) if view is not None and personal(record) else None
        issuer = ""
        if mode == "oauth" and self.servers is not None:
            try:
                issuer = (await self.servers.discover(record.url)).metadata.issuer
            except IdentityError as exc:
                logger.info("no authorization server found for %s: %s", record.name, exc)
        listed = listing is not None and listing.record is not None
        return ServerAuth(
            name=record.name,
            connected=record.state == "Connected" or listed,
            unreachable=record.state in ("Failed", "Disconnected") and mode != "oauth",
            requires_auth=mode == "oauth",
            issuer=issuer,
            token_forwarding=mode == "forward",
            token_exchange=mode == "exchange",
            authenticated=listed,
            sso_failed=mode in ("forward", "exchange") and listing is not None and not listed,
            error=_error(record, listing),
        )

    def _lock(self, owner: str) -> asyncio.Lock:
        lock = self.locks.get(owner)
        if lock is None:
            if len(self.locks) >= MAX_USERS:
                self.locks = {k: v for k, v in self.locks.items() if v.locked()}
            lock = self.locks[owner] = asyncio.Lock()
        return lock

    async def _build(self, owner: str, login: bytes, split: Split, old: View | None) -> View:
        now = time.monotonic()
        listings = {
            r.name: old.listings[r.name]
            for r in split.personal
            if old is not None and r.name in old.listings and old.listings[r.name].until > now
        }
        missing = [r for r in split.personal if r.name not in listings]
        if missing:
            listings.update(await self._stored(owner, missing, now))
            unlisted = [r for r in missing if r.name not in listings]
            fresh = await asyncio.gather(*(self._list(owner, login, r) for r in unlisted))
            listings.update(zip((r.name for r in unlisted), fresh, strict=True))
        view = View(split.base, listings, self._combine(split, listings), min(v.until for v in listings.values()))
        self.views[owner] = view
        self.views.move_to_end(owner)
        if len(self.views) > MAX_USERS:
            self.views.popitem(last=False)
        return view

    @staticmethod
    def _combine(split: Split, listings: dict[str, Listing]) -> Catalog:
        """The shared servers, and the user's listings under the names discovery gave their servers (a server not
        listed for the user stays in the catalog, without tools, for auth://status and the core tools)."""
        listed = {}
        for record in split.personal:
            listing = listings.get(record.name)
            if listing is not None and listing.record is not None:
                update = {"prefix": record.prefix, "exposed": record.exposed, "safe_tools": record.safe_tools}
                listed[record.name] = listing.record.model_copy(update=update)
        return Catalog([listed.get(r.name, r) for r in split.shared])

    async def _stored(self, owner: str, records: list[ServerRecord], now: float) -> dict[str, Listing]:
        """Listings another replica (or this one, earlier) made for this user."""
        found = await self.valkey.mget([keys.listing(owner, r.name) for r in records])
        return {
            r.name: Listing(ServerRecord.model_validate_json(raw), now + self.listing_seconds)
            for r, raw in zip(records, found, strict=True)
            if raw is not None
        }

    async def _list(self, owner: str, login: bytes, record: ServerRecord) -> Listing:
        """Tools first: a user who cannot call the server (no login yet) costs one request, not four."""
        (tools_method, tools_key, _), rest = LISTS[0], LISTS[1:]
        try:
            async with asyncio.timeout(self.list_timeout):
                first = await self._pages(owner, login, record.name, tools_method, tools_key)
                listed: list[Any] = [first]
                listed += await asyncio.gather(
                    *(self._pages(owner, login, record.name, method, key) for method, key, _ in rest),
                    return_exceptions=True,
                )
        except TimeoutError:
            return self._unlisted(Unlisted(f"{record.name} did not list its tools within {self.list_timeout:.0f} s"))
        except Unlisted as exc:
            return self._unlisted(exc)
        failures = [r for r in listed if isinstance(r, BaseException)]
        for failure in failures:
            if not isinstance(failure, Unlisted):
                raise failure
        if failures:
            assert isinstance(failures[0], Unlisted)
            return self._unlisted(failures[0])
        items = [r for r in listed if not isinstance(r, BaseException)]
        capabilities: dict[str, Any] = {
            kind: {} for (_, _, kind), found in zip(LISTS, items, strict=True) if found is not None
        }
        tools, resources, templates, prompts = (found or [] for found in items)
        listing = ServerRecord(
            name=record.name,
            url=record.url,
            state="Connected",
            capabilities=capabilities,
            tools=tools,
            resources=resources,
            resource_templates=templates,
            prompts=prompts,
            headers=record.headers,
            timeout=record.timeout,
            spec=record.spec,
            source=record.source,
        )
        await self.valkey.set(
            keys.listing(owner, record.name),
            listing.model_dump_json(by_alias=True),
            px=int(self.listing_seconds * 1000),
        )
        logger.info("listed %s for a user: %d tools", record.name, len(tools))
        return Listing(listing, time.monotonic() + self.listing_seconds)

    def _unlisted(self, why: Unlisted) -> Listing:
        return Listing(None, time.monotonic() + self.unlisted_seconds, why.login_url, str(why))

    async def _pages(self, owner: str, login: bytes, server: str, method: str, key: str) -> list[dict[str, Any]] | None:
        """Every page of one list method for this user; None when the server does not offer it."""
        items: list[dict[str, Any]] = []
        cursor = None
        for _ in range(MAX_PAGES):
            params = orjson.dumps({"cursor": cursor} if cursor else {})
            reply = await self._ask(owner, login, server, method, params)
            body = orjson.loads(reply.body)
            if reply.kind is ReplyKind.ERROR:
                if body.get("code") == errors.METHOD_NOT_FOUND:
                    return None
                data = body.get("data") if isinstance(body.get("data"), dict) else {}
                raise Unlisted(str(body.get("message", "the server refused the listing")), data.get("loginUrl"))
            items.extend(i for i in _items(body.get(key)) if isinstance(i, dict))
            cursor = body.get("nextCursor")
            if not cursor:
                return items
        return items

    async def _ask(self, owner: str, login: bytes, server: str, method: str, params: bytes) -> CallReply:
        """One request through the queue as this user, answered like any call."""
        call_id = self.calls.new_call_id()
        call = Call(
            call_id=call_id,
            replica=self.replica,
            session=b"",
            principal=owner.encode(),
            server=server.encode(),
            method=method.encode(),
            params=params,
            deadline_ms=int((time.time() + self.list_timeout) * 1000),
            safe=True,
            key=b"~" + self.replica + b"/" + call_id,
            login=login,
        )
        try:
            pending = await self.calls.submit(call)
        except errors.RetryLater as exc:
            raise Unlisted(exc.message) from None
        try:
            while True:
                reply = await pending.next()
                if reply.final:
                    return reply
        finally:
            self.calls.done(call_id)


def _unlisted(record: ServerRecord) -> ServerRecord:
    """A personal server as a caller sees it before it is listed for them: there, but with nothing to call."""
    return record if record.state != "Connected" else record.model_copy(update={"state": "Auth Required"})


def _error(record: ServerRecord, listing: Listing | None) -> str:
    """What went wrong for this user: their listing's failure (not a missing login: the status says that), or the
    server's own failure; discovery's 401 of a server of the users' own credentials is no error."""
    if listing is not None:
        return (listing.error or "") if listing.record is None and listing.login_url is None else ""
    return "" if record.state == "Auth Required" else record.error or ""


def _items(value: object) -> Iterable[object]:
    return value if isinstance(value, list) else ()
