"""Request parameters, each at most once (RFC 6749 §3.1: "parameters MUST NOT be included more than once")."""

from urllib.parse import parse_qsl

from services.ingress.oauth.errors import OAuthError, invalid_request


def parse(raw: str | bytes) -> dict[str, str]:
    """Form or query parameters; a repeated one is invalid_request, an empty one counts as absent."""
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    params: dict[str, str] = {}
    for name, value in parse_qsl(text, keep_blank_values=True):
        if name in params:
            raise invalid_request(f"parameter {name!r} is given more than once")
        if value:
            params[name] = value
    return params


def need(params: dict[str, str], *names: str, error: type[OAuthError] = OAuthError) -> None:
    for name in names:
        if name not in params:
            raise error("invalid_request", f"parameter {name!r} is missing")
