"""The discovery documents, at the Go muster's paths: RFC 8414 (also served as OIDC discovery) and RFC 9728 for
muster's root and its /mcp."""

from typing import Any

from services.ingress.oauth.config import OAuthSettings


def authorization_server(s: OAuthSettings) -> dict[str, Any]:
    base = s.issuer
    methods = ["none", "client_secret_basic", "client_secret_post"]
    return {
        "issuer": base,
        "authorization_endpoint": f"{base}/oauth/authorize",
        "token_endpoint": f"{base}/oauth/token",
        "registration_endpoint": f"{base}/oauth/register",
        "revocation_endpoint": f"{base}/oauth/revoke",
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token"],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": methods,
        "revocation_endpoint_auth_methods_supported": methods,
        "scopes_supported": s.oauth_scopes,
        "authorization_response_iss_parameter_supported": True,
        "client_id_metadata_document_supported": True,
    }


def protected_resource(s: OAuthSettings, resource: str) -> dict[str, Any]:
    return {
        "resource": resource,
        "authorization_servers": [s.issuer],
        "scopes_supported": s.oauth_scopes,
        "bearer_methods_supported": ["header"],
        "resource_name": "muster",
    }
