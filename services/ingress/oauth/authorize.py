"""/oauth/authorize, /oauth/consent and /oauth/callback: the browser's way through muster to the upstream provider
and back to the client, with a code bound to the client, its redirect URI, its PKCE challenge and muster's /mcp."""

import secrets
import time
from urllib.parse import urlencode

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from services.ingress.oauth import consent
from services.ingress.oauth.authority import Authority
from services.ingress.oauth.clients import Client
from services.ingress.oauth.errors import OAuthError, Redirectable, invalid_request
from services.ingress.oauth.forms import need, parse
from services.ingress.oauth.grants import CodeGrant, Family
from shared.identity import keys
from shared.identity.errors import IdentityError
from shared.identity.oidc import Pkce
from shared.identity.store import Tokens

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


class AuthRequest(BaseModel):
    """A flow from /oauth/authorize to the upstream's callback, sealed in Valkey under its state nonce."""

    client_id: str
    client_name: str
    redirect_uri: str
    state: str | None
    challenge: str
    resource: str
    scopes: list[str]
    binding: str  # digest of the browser's flow cookie
    nonce: str
    verifier: str


def error_page(exc: OAuthError) -> Response:
    return JSONResponse(exc.body(), exc.status, headers=NO_STORE)


def redirect(uri: str, params: dict[str, str | None]) -> Response:
    query = urlencode({k: v for k, v in params.items() if v is not None})
    return RedirectResponse(f"{uri}{'&' if '?' in uri else '?'}{query}", 302, headers=NO_STORE)


def redirect_error(a: Authority, uri: str, exc: OAuthError, state: str | None) -> Response:
    return redirect(
        uri, {"error": exc.error, "error_description": exc.description, "state": state, "iss": a.settings.issuer}
    )


async def _client(a: Authority, params: dict[str, str]) -> tuple[Client, str]:
    """The client and its redirect URI; until both are known good, errors go to the browser, not the URI."""
    need(params, "client_id", "redirect_uri")
    client = await a.clients.get(params["client_id"])
    if client is None:
        raise OAuthError("invalid_client", "unknown client_id")
    if not client.redirect_allowed(params["redirect_uri"]):
        raise invalid_request("redirect_uri is not registered for this client")
    return client, params["redirect_uri"]


def _check(a: Authority, params: dict[str, str]) -> tuple[str, list[str]]:
    if params.get("response_type") != "code":
        raise Redirectable("unsupported_response_type", "only response_type=code is supported")
    need(params, "code_challenge", error=Redirectable)
    if params.get("code_challenge_method") != "S256":
        raise Redirectable("invalid_request", "code_challenge_method must be S256")
    resource = params.get("resource", a.settings.resource)
    if resource.rstrip("/") not in (a.settings.resource, a.settings.issuer):
        raise Redirectable("invalid_target", "muster issues tokens for its own /mcp resource only")
    supported = a.settings.oauth_scopes
    scopes = params["scope"].split() if "scope" in params else list(supported)
    if not set(scopes) <= set(supported):
        raise Redirectable("invalid_scope", f"muster's scopes are: {' '.join(supported)}")
    return resource, scopes


async def authorize(a: Authority, request: Request) -> Response:
    raw = request.url.query
    try:
        params = parse(raw)
    except OAuthError as exc:
        return error_page(exc)  # which of the repeated values is the redirect URI is unknowable
    try:
        client, redirect_uri = await _client(a, params)
    except OAuthError as exc:
        return error_page(exc)
    try:
        resource, scopes = _check(a, params)
    except OAuthError as exc:
        return redirect_error(a, redirect_uri, exc, params.get("state"))
    binding, digest = consent.flow_binding()
    pending = AuthRequest(
        client_id=client.client_id,
        client_name=client.client_name or client.client_id,
        redirect_uri=redirect_uri,
        state=params.get("state"),
        challenge=params["code_challenge"],
        resource=resource,
        scopes=scopes,
        binding=digest,
        nonce=secrets.token_urlsafe(16),
        verifier=Pkce().verifier,
    )
    request_id = secrets.token_urlsafe(32)
    await a.tokens.put_state(request_id, pending, a.settings.oauth_flow_seconds)
    if client.client_id in consent.approved(a.keyring, request.cookies.get(consent.CONSENT_COOKIE)):
        response = _upstream(a, request_id, pending)
    else:
        response = HTMLResponse(
            consent.page(request_id, pending.client_name, client.client_id, redirect_uri, scopes),
            headers={**NO_STORE, "X-Frame-Options": "DENY", "Content-Security-Policy": "frame-ancestors 'none'"},
        )
    response.headers.append("set-cookie", consent.flow_cookie(binding, a.settings.oauth_flow_seconds, a.secure_cookies))
    return response


def _upstream(a: Authority, request_id: str, pending: AuthRequest) -> Response:
    url = a.upstream.authorization_url(
        redirect_uri=f"{a.settings.issuer}/oauth/callback",
        scope=a.settings.upstream_scopes,
        state=request_id,
        nonce=pending.nonce,
        code_challenge=Pkce(pending.verifier).challenge,
    )
    return RedirectResponse(url, 302, headers=NO_STORE)


def _bound(request: Request, pending: AuthRequest) -> bool:
    cookie = request.cookies.get(consent.FLOW_COOKIE)
    return cookie is not None and secrets.compare_digest(keys.digest(cookie), pending.binding)


async def decide(a: Authority, request: Request) -> Response:
    """POST /oauth/consent: the user's answer on the consent screen."""
    try:
        form = parse(await request.body())
        need(form, "request", "decision")
    except OAuthError as exc:
        return error_page(exc)
    pending = await a.tokens.peek_state(form["request"], AuthRequest)
    if pending is None or not _bound(request, pending):
        return error_page(invalid_request("this authorization request has expired or belongs to another browser"))
    if form["decision"] != "approve":
        await a.tokens.take_state(form["request"], AuthRequest)
        denied = OAuthError("access_denied", "the user did not approve the client")
        return redirect_error(a, pending.redirect_uri, denied, pending.state)
    response = _upstream(a, form["request"], pending)
    clients = consent.approved(a.keyring, request.cookies.get(consent.CONSENT_COOKIE)) | {pending.client_id}
    response.headers.append(
        "set-cookie", consent.approval_cookie(a.keyring, clients, a.settings.oauth_consent_days, a.secure_cookies)
    )
    return response


async def callback(a: Authority, request: Request) -> Response:
    """GET /oauth/callback: the upstream provider's answer; muster keeps the user's upstream tokens (sealed) and
    sends the client its code, with muster's `iss` (RFC 9207)."""
    try:
        params = parse(request.url.query)
        need(params, "state")
    except OAuthError as exc:
        return error_page(exc)
    pending = await a.tokens.take_state(params["state"], AuthRequest)
    if pending is None or not _bound(request, pending):
        return error_page(invalid_request("this login has expired, was completed, or belongs to another browser"))
    if "iss" in params and params["iss"] != a.upstream.meta.issuer:
        return error_page(invalid_request("the answer came from another issuer than muster's provider"))
    if "error" in params or "code" not in params:
        denied = OAuthError("access_denied", "the sign-in at the identity provider did not succeed")
        return redirect_error(a, pending.redirect_uri, denied, pending.state)
    try:
        tokens = a.upstream.tokens(
            await a.upstream.token(
                grant_type="authorization_code",
                code=params["code"],
                redirect_uri=f"{a.settings.issuer}/oauth/callback",
                code_verifier=pending.verifier,
            )
        )
        if tokens.id_token is None:
            raise OAuthError("server_error", "the identity provider returned no ID token")
        claims = await a.upstream.verify_id_token(tokens.id_token, nonce=pending.nonce)
    except IdentityError as exc:
        failed = OAuthError("server_error", f"the identity provider's answer was not usable: {type(exc).__name__}")
        return redirect_error(a, pending.redirect_uri, failed, pending.state)
    code = await _complete(a, pending, tokens, claims)
    return redirect(pending.redirect_uri, {"code": code, "state": pending.state, "iss": a.settings.issuer})


async def _complete(a: Authority, pending: AuthRequest, tokens: Tokens, claims: dict[str, object]) -> str:
    groups = claims.get("groups")
    email = claims.get("email")
    family = Family(
        subject=str(claims["sub"]),
        client_id=pending.client_id,
        scopes=pending.scopes,
        resource=pending.resource,
        email=email if isinstance(email, str) else None,
        groups=[str(g) for g in groups] if isinstance(groups, list) else [],
        created=time.time(),
    )
    family_id = await a.grants.new_family(family)
    await a.tokens.put_upstream(family_id, tokens, a.settings.oauth_refresh_seconds)
    return await a.grants.new_code(
        CodeGrant(
            family=family_id,
            client_id=pending.client_id,
            redirect_uri=pending.redirect_uri,
            challenge=pending.challenge,
            resource=pending.resource,
            scopes=pending.scopes,
        )
    )
