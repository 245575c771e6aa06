"""The authorization server's settings. The names PRODUCT.md fixes (MUSTER_OIDC_*, MUSTER_REGISTRATION_TOKEN,
MUSTER_ENCRYPTION_KEY, MUSTER_PUBLIC_URL) map onto the seed's secrets; each secret can also come from a file
(`..._FILE`, a mounted Kubernetes secret)."""

from pathlib import Path

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

SECRETS = ("oidc_client_secret", "registration_token", "encryption_key")


class OAuthSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MUSTER_", extra="ignore")

    public_url: str = "http://127.0.0.1:8090"  # what clients reach muster at; the issuer and the resource's base
    valkey_url: str = "redis://127.0.0.1:6379/0"
    oidc_issuer: str
    oidc_client_id: str
    oidc_client_secret: SecretStr | None = None
    oidc_client_secret_file: Path | None = None
    registration_token: SecretStr | None = None
    registration_token_file: Path | None = None
    encryption_key: SecretStr | None = None  # base64 of 32 bytes; several comma-separated, the first encrypts
    encryption_key_file: Path | None = None
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
    oauth_upstream_refresh_margin: float = 300.0
    # Client ID metadata documents: size and time limits; private addresses only for tests.
    oauth_metadata_max_bytes: int = 5120
    oauth_metadata_timeout: float = 5.0
    oauth_metadata_allow_private: bool = False
    # Per-server OAuth: muster's client at remote authorization servers; unset, its client ID metadata document.
    oauth_proxy_client_id: str | None = None
    # The upstream provider on a private address is normal (an in-cluster Dex); this only names the CA bundle.
    oidc_ca_file: Path | None = None

    @model_validator(mode="after")
    def _read_secret_files(self) -> "OAuthSettings":
        for name in SECRETS:
            path: Path | None = getattr(self, f"{name}_file")
            if getattr(self, name) is None and path is not None:
                setattr(self, name, SecretStr(path.read_text().strip()))
        if self.encryption_key is None:
            raise ValueError("MUSTER_ENCRYPTION_KEY (or MUSTER_ENCRYPTION_KEY_FILE) is needed with auth on")
        return self

    @property
    def issuer(self) -> str:
        return self.public_url.rstrip("/")

    @property
    def resource(self) -> str:
        """The protected resource muster's tokens are bound to (RFC 8707)."""
        return f"{self.issuer}/mcp"

    @property
    def upstream_scopes(self) -> str:
        extra = [f"audience:server:client_id:{a}" for a in self.oidc_required_audiences]
        return " ".join([*self.oidc_scopes.split(), *extra])
