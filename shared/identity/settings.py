"""What the ingress and the worker both need to know about identity, under the names PRODUCT.md fixes
(MUSTER_OIDC_*, MUSTER_ENCRYPTION_KEY, MUSTER_PUBLIC_URL; each secret also as `..._FILE`, a mounted Kubernetes
secret). A base class, as shared/settings.py is: each service's config.py subclasses it and reads it once."""

from pathlib import Path
from typing import ClassVar

from pydantic import SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class IdentitySettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MUSTER_", extra="ignore")
    secrets: ClassVar[tuple[str, ...]] = ("oidc_client_secret", "encryption_key")

    public_url: str = "http://127.0.0.1:8090"  # what clients reach muster at; the issuer and the resource's base
    valkey_url: str = "redis://127.0.0.1:6379/0"
    oidc_issuer: str
    oidc_client_id: str
    oidc_client_secret: SecretStr | None = None
    oidc_client_secret_file: Path | None = None
    encryption_key: SecretStr | None = None  # base64 of 32 bytes; several comma-separated, the first encrypts
    encryption_key_file: Path | None = None
    # The upstream provider on a private address is normal (an in-cluster Dex); this only names the CA bundle.
    oidc_ca_file: Path | None = None
    # How long before they expire the users' upstream tokens are refreshed (proactively, single-flight).
    oauth_upstream_refresh_margin: float = 300.0
    # Per-server OAuth: muster's client at remote authorization servers; unset, its client ID metadata document.
    oauth_proxy_client_id: str | None = None

    @model_validator(mode="after")
    def _read_secret_files(self) -> "IdentitySettings":
        for name in self.secrets:
            path: Path | None = getattr(self, f"{name}_file")
            if getattr(self, name) is None and path is not None:
                setattr(self, name, SecretStr(path.read_text().strip()))
        if self.encryption_key is None:
            raise ValueError("MUSTER_ENCRYPTION_KEY (or MUSTER_ENCRYPTION_KEY_FILE) is needed with auth on")
        return self

    @property
    def issuer(self) -> str:
        """muster's own issuer (as authorization server) and the base of its login URLs."""
        return self.public_url.rstrip("/")

    @property
    def client_secret(self) -> str | None:
        return self.oidc_client_secret.get_secret_value() if self.oidc_client_secret else None

    @property
    def key(self) -> str:
        assert self.encryption_key is not None  # the validator guarantees it
        return self.encryption_key.get_secret_value()
