"""muster as OAuth 2.1 authorization server in front of the upstream OIDC provider (Dex), and as resource server
for /mcp: an ASGI application of its own (`create_app`) that the ingress routes `/.well-known/...` and `/oauth/...`
to, and the check (`ResourceGuard.check`) it calls with each /mcp request's headers."""
