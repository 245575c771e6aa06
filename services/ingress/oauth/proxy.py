"""/oauth/proxy/start and /oauth/proxy/callback: a user's login to a remote server's own authorization server,
and /.well-known/oauth-client.json, the client ID metadata document muster logs in with."""

import html

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from services.ingress.oauth.authority import Authority
from services.ingress.oauth.authorize import NO_STORE
from services.ingress.oauth.errors import OAuthError
from services.ingress.oauth.forms import need, parse
from shared.identity.errors import IdentityError


def _page(status: int, title: str, text: str) -> Response:
    body = f"<!doctype html><title>{html.escape(title)}</title><h1>{html.escape(title)}</h1><p>{html.escape(text)}</p>"
    return HTMLResponse(body, status, headers=NO_STORE)


async def client_document(a: Authority, request: Request) -> Response:
    return JSONResponse(a.servers.client_metadata(), headers={"Cache-Control": "max-age=300"})


async def start(a: Authority, request: Request) -> Response:
    try:
        params = parse(request.url.query)
        need(params, "state")
        url = await a.servers.start(params["state"])
    except (OAuthError, IdentityError) as exc:
        return _page(400, "Login link not usable", str(exc))
    return RedirectResponse(url, 302, headers=NO_STORE)


async def callback(a: Authority, request: Request) -> Response:
    try:
        params = parse(request.url.query)
        need(params, "state")
        if "error" in params or "code" not in params:
            said = params.get("error", "no code")[:64]  # an RFC 6749 error code, not a secret
            return _page(400, "Login not completed", f"the server's authorization server answered: {said}")
        login = await a.servers.finish(params["state"], params["code"], params.get("iss"))
    except (OAuthError, IdentityError) as exc:
        return _page(400, "Login failed", str(exc))
    if a.on_login is not None:
        await a.on_login(login.subject, login.server)
    return _page(200, "Logged in", f"muster can now call {login.server} as you. You can close this page.")
