"""Who sees which servers, against a real valkey-server: the test plays the worker, answering the listings the
ingress sends through the queue as each user, as a worker with the user's credential would."""

import asyncio
import contextlib
import dataclasses
import os
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import httpx
import orjson
import pytest
from redis.asyncio import Redis

from services.ingress.callers import Session
from services.ingress.calls import Calls
from services.ingress.current import CurrentCatalog
from services.ingress.get_streams import GetStreams
from services.ingress.identity_auth import IdentityAuth
from services.ingress.visibility import Visibility
from shared import errors, streams
from shared.catalog import Route
from shared.identity import keys
from shared.identity.refresh import Refresher
from shared.identity.sealing import Keyring
from shared.identity.server_oauth import ServerOAuth
from shared.identity.store import SealedStore, Tokens, TokenStore
from shared.mcpserver import Auth, MCPServerSpec
from shared.messages import Call, CallReply, ReplyKind, ServerRecord
from shared.meta.core import AuthTarget
from shared.valkey import Outbox, connect

pytestmark = pytest.mark.anyio

REPLICA = "replica-1"
TOOL = {"name": "list", "inputSchema": {"type": "object"}}
Answer = Callable[[Call], tuple[ReplyKind, bytes]]


def record(name: str, auth: Auth | None = None, state: str = "Connected", tools: bool = True) -> ServerRecord:
    url = f"http://127.0.0.1:1/{name}"
    spec = MCPServerSpec(type="streamable-http", url=url, auth=auth)
    return ServerRecord.model_validate(
        {"name": name, "url": url, "state": state, "prefix": name, "spec": spec, "tools": [TOOL] if tools else []}
    )


OPEN = record("open")
SSO = record("sso", Auth(forward_token=True), "Auth Required", tools=False)
OAUTH = record("oauth", Auth(type="oauth"), "Auth Required", tools=False)


def lists_for_users(call: Call) -> tuple[ReplyKind, bytes]:
    """A server that lists one tool for alice, refuses bob, and offers nothing but tools."""
    if call.principal == b"bob":
        url = "http://muster/oauth/proxy/start?state=s"
        return ReplyKind.ERROR, errors.AuthRequired("log in first", call.server.decode(), url).body()
    if call.method == b"tools/list":
        return ReplyKind.RESULT, orjson.dumps({"tools": [TOOL]})
    return ReplyKind.ERROR, errors.MethodNotFound("Method not found").body()


@contextlib.asynccontextmanager
async def world(
    valkey: Redis, valkey_url: str, records: list[ServerRecord], answer: Answer = lists_for_users
) -> AsyncIterator[tuple[Visibility, list[Call]]]:
    outbox = Outbox(valkey_url)
    follows = connect(valkey_url, name="test-replies")  # the replica's reply stream, on a connection of its own
    calls = Calls(
        follows, outbox, REPLICA, GetStreams(), queue_limit=100, max_pending=100, retry_after=1.0, fair_share=8
    )
    current = CurrentCatalog()
    current.update({r.name: r for r in records})
    seen: list[Call] = []
    own = connect(valkey_url, name="test-worker")  # a worker's connection of its own, as a worker has
    stop = asyncio.Event()

    async def worker() -> None:
        queues = {streams.queue(r.name).stream: b"0-0" for r in records}
        while not stop.is_set():
            found: Any = await own.xread(queues, block=50)  # type: ignore[arg-type]
            for stream, entries in found or []:
                for entry_id, fields in entries:
                    queues[stream] = entry_id
                    call = Call.from_fields(fields)
                    seen.append(call)
                    kind, body = answer(call)
                    outbox.reply(call.replica, CallReply(call.call_id, kind, body))

    replies, working = asyncio.create_task(calls.read_replies()), asyncio.create_task(worker())
    try:
        yield Visibility(current, calls, valkey, REPLICA, list_timeout=2.0), seen
    finally:
        stop.set()  # the worker ends after its current read
        await working
        replies.cancel()
        await follows.aclose()  # a blocking read cancelled in flight can hang redis-py until its socket closes
        await asyncio.gather(replies, return_exceptions=True)
        outbox.close()
        await own.aclose()


def names(catalog: Any) -> set[str]:
    return set(catalog.tools)


async def test_without_personal_servers_every_caller_gets_the_shared_catalog(valkey: Redis, valkey_url: str) -> None:
    async with world(valkey, valkey_url, [OPEN]) as (visibility, seen):
        assert await visibility.catalog("alice", b"family-a") is visibility.current.catalog
        assert await visibility.catalog("anonymous", b"") is visibility.current.catalog
    assert seen == []


async def test_a_server_of_the_users_own_credential_is_listed_as_that_user(valkey: Redis, valkey_url: str) -> None:
    async with world(valkey, valkey_url, [OPEN, SSO, OAUTH]) as (visibility, seen):
        alice = await visibility.catalog("alice", b"family-a")
        bob = await visibility.catalog("bob", b"family-b")
        nobody = await visibility.catalog("anonymous", b"")
        assert names(alice) == {"x_open_list", "x_sso_list", "x_oauth_list"}
        assert names(bob) == names(nobody) == {"x_open_list"}
        route = alice.tools["x_sso_list"]
        assert isinstance(route, Route) and route.server == "sso"
        assert {(c.principal, c.login) for c in seen} == {(b"alice", b"family-a"), (b"bob", b"family-b")}
        assert all(c.safe and c.session == b"" for c in seen)
        again = await visibility.catalog("alice", b"family-a")
        assert again is alice  # built once: the next request is a lookup
    assert await valkey.exists(keys.listing("alice", "sso")) and not await valkey.exists(keys.listing("bob", "sso"))


async def test_another_replica_reuses_a_users_listing_from_valkey(valkey: Redis, valkey_url: str) -> None:
    async with world(valkey, valkey_url, [SSO]) as (first, seen):
        await first.catalog("alice", b"family-a")
        listed = len(seen)
        second = Visibility(first.current, first.calls, valkey, "replica-2")
        assert names(await second.catalog("alice", b"family-a")) == {"x_sso_list"}
        assert len(seen) == listed


async def test_an_unknown_tool_of_a_server_the_user_must_log_in_to_says_where(valkey: Redis, valkey_url: str) -> None:
    async with world(valkey, valkey_url, [OAUTH]) as (visibility, _):
        await visibility.catalog("bob", b"family-b")
        why = await visibility.explain("bob", b"family-b", "tools/call", {"name": "x_oauth_list"})
        assert why is not None and why.code == errors.AUTH_REQUIRED
        assert why.data == {"server": "oauth", "loginUrl": "http://muster/oauth/proxy/start?state=s"}
        assert await visibility.explain("bob", b"family-b", "tools/call", {"name": "x_other_list"}) is None


async def test_a_login_lists_the_server_again_for_that_user(valkey: Redis, valkey_url: str) -> None:
    logged_in: set[bytes] = set()

    def answer(call: Call) -> tuple[ReplyKind, bytes]:
        if call.principal not in logged_in:
            return ReplyKind.ERROR, errors.AuthRequired("log in first", "oauth", "http://muster/login").body()
        return lists_for_users(call)

    async with world(valkey, valkey_url, [OAUTH], answer) as (visibility, _):
        assert names(await visibility.catalog("carl", b"family-c")) == set()
        logged_in.add(b"carl")
        assert names(await visibility.catalog("carl", b"family-c")) == set()  # the failed listing is remembered
        visibility.login_changed("carl", "oauth")
        assert names(await visibility.catalog("carl", b"family-c")) == {"x_oauth_list"}


async def test_auth_status_tells_each_user_what_they_can_call(valkey: Redis, valkey_url: str) -> None:
    async with world(valkey, valkey_url, [OPEN, SSO, OAUTH]) as (visibility, _):
        alice = {s.name: s for s in await visibility.auth_status("alice", b"family-a")}
        bob = {s.name: s for s in await visibility.auth_status("bob", b"family-b")}
    assert alice["open"].connected and not alice["open"].requires_auth
    assert alice["sso"].token_forwarding and alice["sso"].authenticated and alice["sso"].connected
    assert alice["oauth"].requires_auth and alice["oauth"].authenticated
    assert bob["oauth"].requires_auth and not bob["oauth"].authenticated and not bob["oauth"].connected
    assert bob["sso"].sso_failed and not bob["sso"].connected


async def test_an_expired_listing_is_served_while_it_is_listed_again(valkey: Redis, valkey_url: str) -> None:
    async with world(valkey, valkey_url, [SSO]) as (visibility, seen):
        first = await visibility.catalog("alice", b"family-a")
        listed = len(seen)
        await valkey.delete(keys.listing("alice", "sso"))  # so that the next listing asks the server again
        view = visibility.views["alice"]
        view.listings["sso"] = dataclasses.replace(view.listings["sso"], until=0.0)  # the listing's time is up
        view.until = 0.0
        assert await visibility.catalog("alice", b"family-a") is first  # no request waits for the new listing
        with anyio.fail_after(5):
            while visibility.views["alice"].catalog is first:
                await asyncio.sleep(0.01)
        assert len(seen) > listed and names(visibility.views["alice"].catalog) == {"x_sso_list"}


async def test_a_login_through_another_replica_counts_before_its_news_arrives(valkey: Redis, valkey_url: str) -> None:
    """The agent is told to run core_auth_login again once signed in; the browser's callback may have been served by
    another replica, whose news on the control stream has not reached this one when the agent asks."""
    logged_in: set[bytes] = set()

    def answer(call: Call) -> tuple[ReplyKind, bytes]:
        if call.principal not in logged_in:
            return ReplyKind.ERROR, errors.AuthRequired("log in first", "oauth", "http://muster/login").body()
        return lists_for_users(call)

    async with world(valkey, valkey_url, [OAUTH], answer) as (visibility, _), httpx.AsyncClient() as http:
        sealed = SealedStore(valkey, Keyring([os.urandom(32)]))
        store = TokenStore(sealed)
        visibility.servers = ServerOAuth(http, store, Refresher(valkey, sealed), public_url="http://muster")
        auth, carl = IdentityAuth(visibility, Outbox(valkey_url)), Session("s1", "2025-11-25", {}, "carl")
        target = AuthTarget("oauth", requires_auth=True, sso=False, connected=False, authenticated=False)
        catalog = await visibility.catalog("carl", b"family-c")
        assert names(catalog) == set()
        # the other replica's callback: the token stored, the server now lists for carl; no LoginChanged here
        await store.put_server("carl", "oauth", Tokens(issuer="x", access_token="t", expires_at=time.time() + 60), 60)
        logged_in.add(b"carl")
        answered = await auth.login(carl, catalog, target, b"family-c")
        assert answered["content"][0]["text"] == "Server 'oauth' is already authenticated."
        assert names(await visibility.catalog("carl", b"family-c")) == {"x_oauth_list"}
        await auth.logout(carl, catalog, "oauth")  # at once on this replica, before its own news comes back
        assert names(await visibility.catalog("carl", b"family-c")) == set()
        assert await store.server("carl", "oauth") is None
        auth.outbox.close()
