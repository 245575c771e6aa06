"""muster's authorization server in a small test ASGI app on 127.0.0.1 (uvicorn in a thread), in front of a real
oidc-provider and a real valkey-server: the AS routes, and /mcp guarded by ResourceGuard in front of a tiny MCP
server whose `whoami` tool says who called. A browser is an httpx client with cookies that follows the flow."""

import asyncio
import base64
import contextlib
import os
import re
import secrets
import threading
import time
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import mcp_types as types
import uvicorn
from mcp.server import Server, ServerRequestContext
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings

from muster.stack import Stack, free_port
from services.ingress.oauth.app import PATHS, attach, create_app
from services.ingress.oauth.authority import Authority, build
from services.ingress.oauth.config import OAuthSettings
from services.ingress.oauth.resource import Denial
from shared.identity.oidc import Pkce
from shared.identity.principal import Principal
from tests.oidc import (
    EXCHANGE,
    K8S_CLIENT,
    K8S_SECRET,
    MUSTER_CLIENT,
    MUSTER_SECRET,
    OidcProvider,
    client,
    code_of,
    sign_in,
)

REGISTRATION_TOKEN = "registration-token-for-tests"
CALLER: ContextVar[Principal] = ContextVar("caller")


def new_key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


def start_valkey(folder: Path) -> tuple[Stack, str]:
    stack = Stack(folder, log=lambda _: None)
    return stack, stack.valkey(free_port())


def provider_for(public_url: str, **env: str) -> OidcProvider:
    """Dex: muster's confidential client (redirecting to muster's callback) and a second audience client."""
    return OidcProvider(
        [
            client(MUSTER_CLIENT, [f"{public_url}/oauth/callback"], MUSTER_SECRET),
            client(
                K8S_CLIENT,
                ["http://127.0.0.1:1/callback"],
                K8S_SECRET,
                grant_types=("authorization_code", "refresh_token", EXCHANGE),
            ),
        ],
        env=env,
    ).start()


def settings_for(public_url: str, issuer: str, valkey_url: str, **extra: Any) -> OAuthSettings:
    values: dict[str, Any] = {
        "public_url": public_url,
        "valkey_url": valkey_url,
        "oidc_issuer": issuer,
        "oidc_client_id": MUSTER_CLIENT,
        "oidc_client_secret": MUSTER_SECRET,
        "registration_token": REGISTRATION_TOKEN,
        "encryption_key": new_key(),
        "oauth_trusted_audiences": [K8S_CLIENT],
        **extra,
    }
    return OAuthSettings.model_validate(values)


def _mcp_server() -> StreamableHTTPSessionManager:
    async def list_tools(ctx: ServerRequestContext[Any], params: Any) -> types.ListToolsResult:
        return types.ListToolsResult(
            tools=[types.Tool(name="whoami", input_schema={"type": "object", "properties": {}})]
        )

    async def call_tool(ctx: ServerRequestContext[Any], params: types.CallToolRequestParams) -> types.CallToolResult:
        who = CALLER.get()
        return types.CallToolResult(content=[types.TextContent(type="text", text=f"{who.subject} {who.email}")])

    server: Server[Any] = Server("protected", on_list_tools=list_tools, on_call_tool=call_tool)
    return StreamableHTTPSessionManager(
        server,
        stateless=True,
        json_response=True,
        security_settings=TransportSecuritySettings(enable_dns_rebinding_protection=False),
    )


class ProtectedApp:
    """The authorization server's routes, and /mcp (an MCP server) and /whoami (JSON) behind the resource check."""

    def __init__(self, settings: OAuthSettings) -> None:
        self.settings = settings
        self.oauth = create_app(settings)
        self.manager = _mcp_server()
        self.authority: Authority | None = None
        self.ready = threading.Event()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        path = scope["path"]
        if path.startswith(PATHS):
            await self.oauth(scope, receive, send)
            return
        assert self.authority is not None
        outcome = await self.authority.guard.check(scope["headers"])
        if isinstance(outcome, Denial):
            await send({"type": "http.response.start", "status": outcome.status, "headers": outcome.headers})
            await send({"type": "http.response.body", "body": outcome.body})
            return
        if path == "/whoami":
            body = (
                f'{{"subject": "{outcome.subject}", "email": "{outcome.email}", "source": "{outcome.source}", '
                f'"family": "{outcome.family}"}}'
            ).encode()
            await send(
                {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]}
            )
            await send({"type": "http.response.body", "body": body})
            return
        token = CALLER.set(outcome)
        try:
            await self.manager.handle_request(scope, receive, send)
        finally:
            CALLER.reset(token)

    async def _lifespan(self, receive: Any, send: Any) -> None:
        await receive()
        async with contextlib.AsyncExitStack() as stack:
            self.authority = await build(self.settings)
            stack.push_async_callback(self.authority.close)
            attach(self.oauth, self.authority)
            await stack.enter_async_context(self.manager.run())
            await send({"type": "lifespan.startup.complete"})
            self.ready.set()
            await receive()
        await send({"type": "lifespan.shutdown.complete"})


@contextlib.contextmanager
def serve(settings: OAuthSettings) -> Iterator[ProtectedApp]:
    """Runs the app on the port of `settings.public_url` until the block ends."""
    app = ProtectedApp(settings)
    port = int(settings.public_url.rsplit(":", 1)[1])
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on", access_log=False)
    )
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True)
    thread.start()
    try:
        if not app.ready.wait(30):
            raise RuntimeError("the test app did not start")
        deadline = time.monotonic() + 10
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        yield app
    finally:
        server.should_exit = True
        thread.join(15)


@dataclass
class Browser:
    """A user agent: cookies, no automatic redirects, and the steps of a login."""

    base: str
    http: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=15))

    def __enter__(self) -> "Browser":
        return self

    def __exit__(self, *_: object) -> None:
        self.http.close()

    def authorize(self, **params: str) -> httpx.Response:
        return self.http.get(f"{self.base}/oauth/authorize", params=params)

    def approve(self, consent_page: httpx.Response, decision: str = "approve") -> httpx.Response:
        request_id = re.search(r'name="request" value="([^"]+)"', consent_page.text)
        assert request_id is not None, consent_page.text[:300]
        return self.http.post(f"{self.base}/oauth/consent", data={"request": request_id.group(1), "decision": decision})

    def through_provider(self, to_provider: httpx.Response, login: str) -> httpx.Response:
        """From muster's redirect to the provider, through the login page, back into muster's callback;
        returns muster's redirect to the client."""
        assert to_provider.status_code == 302, to_provider.text[:300]
        back = sign_in(self.http, to_provider.headers["location"], login)
        return self.http.get(back.headers["location"])


def register(base: str, redirect_uri: str, token: str | None = REGISTRATION_TOKEN, **meta: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.post(
        f"{base}/oauth/register",
        json={"redirect_uris": [redirect_uri], "client_name": "test client", **meta},
        headers=headers,
        timeout=10,
    )


def login(
    base: str, client_id: str, redirect_uri: str, user: str, browser: Browser | None = None, **extra: str
) -> dict[str, Any]:
    """The whole authorization-code flow as a client and its user's browser do it; returns the token response."""
    if browser is None:
        with Browser(base) as own:
            return login(base, client_id, redirect_uri, user, own, **extra)
    pkce = Pkce()
    state = secrets.token_urlsafe(8)
    first = browser.authorize(
        response_type="code",
        client_id=client_id,
        redirect_uri=redirect_uri,
        state=state,
        code_challenge=pkce.challenge,
        code_challenge_method="S256",
        resource=f"{base}/mcp",
        **extra,
    )
    to_provider = browser.approve(first) if first.status_code == 200 else first
    back = browser.through_provider(to_provider, user)
    answer = code_of(back)
    assert answer.get("state") == state and answer.get("iss") == base, answer
    response = httpx.post(
        f"{base}/oauth/token",
        data={
            "grant_type": "authorization_code",
            "code": answer["code"],
            "redirect_uri": redirect_uri,
            "client_id": client_id,
            "code_verifier": pkce.verifier,
        },
        timeout=10,
    )
    assert response.status_code == 200, response.text
    tokens: dict[str, Any] = response.json()
    tokens["code"] = answer["code"]
    tokens["verifier"] = pkce.verifier
    return tokens
