"""/oauth/token (code and refresh grants), /oauth/revoke (RFC 7009) and /oauth/register (RFC 7591)."""

import base64
import binascii
import secrets
from urllib.parse import unquote

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from services.ingress.oauth.authority import Authority
from services.ingress.oauth.authorize import NO_STORE
from services.ingress.oauth.clients import Client
from services.ingress.oauth.errors import OAuthError, invalid_client, invalid_grant, invalid_request
from services.ingress.oauth.forms import need, parse
from shared.identity.oidc import challenge_of

FORM = "application/x-www-form-urlencoded"
MAX_FORM_BYTES = 16 * 1024


def answer(exc: OAuthError) -> Response:
    headers = dict(NO_STORE)
    if exc.status == 401 and exc.error == "invalid_client":
        headers["WWW-Authenticate"] = 'Basic realm="muster"'
    elif exc.status == 401:
        headers["WWW-Authenticate"] = f'Bearer error="{exc.error}"'
    return JSONResponse(exc.body(), exc.status, headers=headers)


async def _form(request: Request) -> dict[str, str]:
    if request.headers.get("content-type", "").split(";")[0].strip() != FORM:
        raise invalid_request(f"the body must be {FORM}")
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        raise invalid_request("the body is too large")
    return parse(body)


async def _authenticate(a: Authority, request: Request, form: dict[str, str]) -> Client:
    """RFC 6749 §2.3: Basic or form credentials for a confidential client, client_id alone for a public one."""
    header = request.headers.get("authorization", "")
    client_id, secret = form.get("client_id"), form.get("client_secret")
    if header[:6].lower() == "basic ":
        try:
            user, _, password = base64.b64decode(header[6:], validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            raise invalid_client("the Basic credentials do not decode") from None
        if client_id is not None and client_id != unquote(user):
            raise invalid_request("two different client ids")
        client_id, secret = unquote(user), unquote(password)
    if client_id is None:
        raise invalid_client("client authentication is missing")
    client = await a.clients.get(client_id)
    if client is None:
        raise invalid_client("unknown client")
    if client.token_endpoint_auth_method != "none" and (secret is None or not client.secret_matches(secret)):
        raise invalid_client("client authentication failed")
    return client


async def token(a: Authority, request: Request) -> Response:
    try:
        form = await _form(request)
        client = await _authenticate(a, request, form)
        need(form, "grant_type")
        if form["grant_type"] == "authorization_code":
            issued = await _code(a, client, form)
        elif form["grant_type"] == "refresh_token":
            issued = await _refresh(a, client, form)
        else:
            raise OAuthError("unsupported_grant_type", "muster grants authorization_code and refresh_token")
    except OAuthError as exc:
        return answer(exc)
    return JSONResponse(issued, headers=NO_STORE)


def _resource(a: Authority, form: dict[str, str], granted: str) -> None:
    if "resource" in form and form["resource"].rstrip("/") != granted.rstrip("/"):
        raise OAuthError("invalid_target", "the resource is not the one the grant was made for")


async def _code(a: Authority, client: Client, form: dict[str, str]) -> dict[str, object]:
    need(form, "code", "redirect_uri", "code_verifier")
    grant = await a.grants.redeem(form["code"])
    if grant.client_id != client.client_id:
        await a.grants.revoke_family(grant.family)
        raise invalid_grant("the code was issued to another client")
    if grant.redirect_uri != form["redirect_uri"]:
        await a.grants.revoke_family(grant.family)
        raise invalid_grant("redirect_uri differs from the authorization request's")
    if not secrets.compare_digest(challenge_of(form["code_verifier"]), grant.challenge):
        await a.grants.revoke_family(grant.family)
        raise invalid_grant("the code_verifier does not match the code_challenge")
    _resource(a, form, grant.resource)
    family = await a.grants.family(grant.family)
    if family is None:
        raise invalid_grant("the login behind this code was revoked")
    issued = await a.grants.issue(grant.family, family, grant.scopes)
    return {**issued.model_dump(), "token_type": "Bearer"}


async def _refresh(a: Authority, client: Client, form: dict[str, str]) -> dict[str, object]:
    need(form, "refresh_token")
    family_id, family, successor = await a.grants.rotate(form["refresh_token"], client.client_id)
    _resource(a, form, family.resource)
    scopes = family.scopes
    if "scope" in form:
        asked = form["scope"].split()
        if not set(asked) <= set(family.scopes):
            raise OAuthError("invalid_scope", "a refresh cannot widen the grant")
        scopes = asked
    issued = await a.grants.issue(family_id, family, scopes, successor)
    return {**issued.model_dump(), "token_type": "Bearer"}


async def revoke(a: Authority, request: Request) -> Response:
    """RFC 7009: 200 whether or not the token was valid; only the client it was issued to can revoke it."""
    try:
        form = await _form(request)
        client = await _authenticate(a, request, form)
        need(form, "token")
    except OAuthError as exc:
        return answer(exc)
    await a.grants.revoke_token(form["token"], client.client_id)
    a.guard.forget(form["token"])
    return Response(status_code=200, headers=NO_STORE)


async def register(a: Authority, request: Request) -> Response:
    header = request.headers.get("authorization", "")
    bearer = header[7:].strip() if header[:7].lower() == "bearer " else None
    body = await request.body()
    try:
        if len(body) > MAX_FORM_BYTES:
            raise OAuthError("invalid_client_metadata", "the metadata is too large")
        registered = await a.clients.register(body, bearer)
    except OAuthError as exc:
        return answer(exc)
    return JSONResponse(registered, 201, headers=NO_STORE)
