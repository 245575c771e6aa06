"""The authorization server as an ASGI application: `create_app(settings)`; the ingress routes `/.well-known/...`
and `/oauth/...` to it and calls `authority.guard.check` for /mcp."""

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from services.ingress.oauth import authorize, endpoints, metadata, proxy
from services.ingress.oauth.authority import Authority, build
from services.ingress.oauth.config import OAuthSettings

Handler = Callable[[Authority, Request], Awaitable[Response]]

PATHS = ("/.well-known/", "/oauth/")


class OAuthApp(Starlette):
    authority: Authority


def create_app(settings: OAuthSettings) -> OAuthApp:
    """The application; its lifespan builds the Authority (a mounting app may instead call `attach`)."""

    def bind(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            return await handler(app.authority, request)

        return endpoint

    def document(make: Callable[[], object]) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            return JSONResponse(make(), headers={"Cache-Control": "max-age=300"})

        return endpoint

    s = settings
    routes = [
        Route("/.well-known/oauth-authorization-server", document(lambda: metadata.authorization_server(s))),
        Route("/.well-known/openid-configuration", document(lambda: metadata.authorization_server(s))),
        Route("/.well-known/oauth-protected-resource", document(lambda: metadata.protected_resource(s, s.issuer))),
        Route(
            "/.well-known/oauth-protected-resource/mcp", document(lambda: metadata.protected_resource(s, s.resource))
        ),
        Route("/.well-known/oauth-client.json", bind(proxy.client_document)),
        Route("/oauth/register", bind(endpoints.register), methods=["POST"]),
        Route("/oauth/authorize", bind(authorize.authorize), methods=["GET"]),
        Route("/oauth/consent", bind(authorize.decide), methods=["POST"]),
        Route("/oauth/callback", bind(authorize.callback), methods=["GET"]),
        Route("/oauth/token", bind(endpoints.token), methods=["POST"]),
        Route("/oauth/revoke", bind(endpoints.revoke), methods=["POST"]),
        Route("/oauth/proxy/start", bind(proxy.start), methods=["GET"]),
        Route("/oauth/proxy/callback", bind(proxy.callback), methods=["GET"]),
    ]

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        if getattr(app, "authority", None) is not None:
            yield  # attached by the mounting application, which owns it
            return
        app.authority = await build(settings)
        try:
            yield
        finally:
            await app.authority.close()

    app = OAuthApp(routes=routes, lifespan=lifespan)
    return app


def attach(app: OAuthApp, authority: Authority) -> None:
    """For an application that mounts this one and runs the lifespan itself (the ingress)."""
    app.authority = authority
