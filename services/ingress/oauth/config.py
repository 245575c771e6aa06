"""The authorization server's settings, on top of what the worker shares (shared/identity/settings.py): the
registration token, client identification, muster's own tokens' lifetimes and scopes."""

from pathlib import Path
from typing import ClassVar

from pydantic import Field, SecretStr

from shared.identity.settings import IdentitySettings


class OAuthSettings(IdentitySettings):
    secrets: ClassVar[tuple[str, ...]] = (*IdentitySettings.secrets, "registration_token")

    registration_token: SecretStr | None = None
    registration_token_file: Path | None = None
    # What muster asks the upstream provider for; each required audience becomes Dex's cross-client scope.
    oidc_scopes: str = "openid profile email groups offline_access"
    oidc_required_audiences: list[str] = Field(default_factory=list)
    # Registration without the token: only for clients whose every redirect URI is trusted.
    oauth_trusted_redirect_uris: list[str] = Field(default_factory=list)
    oauth_trusted_schemes: list[str] = Field(default_factory=list)
    # SSO forwarding: upstream ID tokens with one of these audiences are accepted on /mcp.
    oauth_trusted_audiences: list[str] = Field(default_factory=list)
    oauth_scopes: list[str] = Field(default_factory=lambda: ["mcp"])  # what muster's tokens may carry
    oauth_required_scopes: list[str] = Field(default_factory=list)  # what /mcp demands (403 without)
    oauth_access_seconds: int = 1800
    oauth_refresh_seconds: int = 30 * 86400
    oauth_code_seconds: int = 60
    oauth_flow_seconds: int = 600  # from /oauth/authorize to the upstream's callback
    oauth_consent_days: int = 30
    # A validated token is trusted in-process this long (the bound on how late a revocation takes effect).
    oauth_cache_seconds: float = 15.0
    # Client ID metadata documents: size and time limits; private addresses only for tests; an extra CA bundle
    # (unset: the system's) for documents served by an internal CA.
    oauth_metadata_max_bytes: int = 5120
    oauth_metadata_timeout: float = 5.0
    oauth_metadata_allow_private: bool = False
    oauth_metadata_ca_file: Path | None = None

    @property
    def resource(self) -> str:
        """The protected resource muster's tokens are bound to (RFC 8707)."""
        return f"{self.issuer}/mcp"

    @property
    def upstream_scopes(self) -> str:
        extra = [f"audience:server:client_id:{a}" for a in self.oidc_required_audiences]
        return " ".join([*self.oidc_scopes.split(), *extra])
