"""The settings read the names PRODUCT.md fixes, each secret also from a file."""

import base64
import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from services.ingress.oauth.config import OAuthSettings

KEY = base64.b64encode(os.urandom(32)).decode()


def test_the_fixed_names_configure_the_authorization_server(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MUSTER_OIDC_ISSUER", "https://dex.example")
    monkeypatch.setenv("MUSTER_OIDC_CLIENT_ID", "muster")
    monkeypatch.setenv("MUSTER_OIDC_CLIENT_SECRET", "s3cret")
    monkeypatch.setenv("MUSTER_REGISTRATION_TOKEN", "reg")
    monkeypatch.setenv("MUSTER_ENCRYPTION_KEY", f"{KEY},{KEY[::-1]}")
    monkeypatch.setenv("MUSTER_PUBLIC_URL", "https://muster.example/")
    s = OAuthSettings()
    assert (s.issuer, s.resource) == ("https://muster.example", "https://muster.example/mcp")
    assert s.oidc_client_secret is not None and s.oidc_client_secret.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(s) and "reg" not in str(s.registration_token)


def test_each_secret_can_come_from_a_mounted_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name, value in (("oidc_client_secret", "from-file"), ("registration_token", "tok"), ("encryption_key", KEY)):
        (tmp_path / name).write_text(value + "\n")
        monkeypatch.setenv(f"MUSTER_{name.upper()}_FILE", str(tmp_path / name))
    monkeypatch.setenv("MUSTER_OIDC_ISSUER", "https://dex.example")
    monkeypatch.setenv("MUSTER_OIDC_CLIENT_ID", "muster")
    s = OAuthSettings()
    assert s.oidc_client_secret is not None and s.oidc_client_secret.get_secret_value() == "from-file"
    assert s.encryption_key is not None and s.encryption_key.get_secret_value() == KEY


def test_auth_without_an_encryption_key_does_not_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MUSTER_OIDC_ISSUER", "https://dex.example")
    monkeypatch.setenv("MUSTER_OIDC_CLIENT_ID", "muster")
    monkeypatch.delenv("MUSTER_ENCRYPTION_KEY", raising=False)
    with pytest.raises(ValidationError, match="MUSTER_ENCRYPTION_KEY"):
        OAuthSettings()


def test_the_upstream_scopes_ask_for_each_required_audience() -> None:
    s = OAuthSettings(
        oidc_issuer="https://dex",
        oidc_client_id="m",
        encryption_key=KEY,
        oidc_required_audiences=["dex-k8s-authenticator"],
    )
    assert s.upstream_scopes.split()[-1] == "audience:server:client_id:dex-k8s-authenticator"
