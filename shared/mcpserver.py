"""The MCPServer resource (muster.giantswarm.io/v1alpha1), as the Go muster's CRD defines it.

The same model reads Kubernetes objects and the YAML files of a local folder.
"""

from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

GROUP = "muster.giantswarm.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "MCPServer"
PLURAL = "mcpservers"

_NAME = r"^[a-zA-Z][a-zA-Z0-9_-]*$"


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, populate_by_name=True, extra="forbid")


class Family(_Model):
    name: str = Field(pattern=_NAME)
    instance_arg: str = Field(alias="instanceArg", pattern=r"^[a-zA-Z][a-zA-Z0-9_]*$")


class SecretRef(_Model):
    name: str
    namespace: str | None = None
    client_id_key: str = Field("client-id", alias="clientIdKey")
    client_secret_key: str = Field("client-secret", alias="clientSecretKey")


class TokenExchange(_Model):
    enabled: bool = False
    dex_token_endpoint: str | None = Field(None, alias="dexTokenEndpoint")
    expected_issuer: str | None = Field(None, alias="expectedIssuer")
    connector_id: str | None = Field(None, alias="connectorId", pattern=_NAME)
    scopes: str = "openid profile email groups"
    client_credentials_secret_ref: SecretRef | None = Field(None, alias="clientCredentialsSecretRef")


class AuthorizationServer(_Model):
    issuer: str
    scopes: str | None = None


class Auth(_Model):
    type: Literal["oauth", "none"] = "none"
    forward_token: bool = Field(False, alias="forwardToken")
    required_audiences: list[str] = Field(default_factory=list, alias="requiredAudiences")
    token_exchange: TokenExchange | None = Field(None, alias="tokenExchange")
    authorization_server: AuthorizationServer | None = Field(None, alias="authorizationServer")

    @model_validator(mode="after")
    def _authorization_server_rules(self) -> "Auth":
        if self.authorization_server is not None:
            if self.type != "oauth":
                raise ValueError("authorizationServer requires type: oauth")
            if self.forward_token or (self.token_exchange is not None and self.token_exchange.enabled):
                raise ValueError("authorizationServer cannot be combined with forwardToken or tokenExchange")
        return self


class MCPServerSpec(_Model):
    type: Literal["stdio", "streamable-http", "sse"]
    tool_prefix: str | None = Field(None, alias="toolPrefix", pattern=_NAME)
    family: Family | None = None
    description: str | None = Field(None, max_length=500)
    auto_start: bool = Field(False, alias="autoStart")
    command: str | None = None
    args: list[str] | None = None
    url: str | None = Field(None, pattern=r"^https?://")
    env: dict[str, str] | None = None
    headers: dict[str, str] | None = None
    timeout: int = Field(30, ge=1, le=300)
    auth: Auth | None = None

    @model_validator(mode="after")
    def _by_type(self) -> "MCPServerSpec":
        if self.type == "stdio":
            if not self.command:
                raise ValueError("command is required for type stdio")
            if self.headers:
                raise ValueError("headers are only allowed for streamable-http and sse")
        else:
            if not self.url:
                raise ValueError(f"url is required for type {self.type}")
            if self.args:
                raise ValueError("args are only allowed for type stdio")
        return self


class Metadata(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")
    name: str = Field(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=253)
    namespace: str | None = None
    resource_version: str | None = Field(None, alias="resourceVersion")
    generation: int | None = None


class MCPServer(BaseModel):
    model_config = ConfigDict(frozen=True, populate_by_name=True, extra="ignore")
    api_version: Literal["muster.giantswarm.io/v1alpha1"] = Field(alias="apiVersion")
    kind: Literal["MCPServer"]
    metadata: Metadata
    spec: MCPServerSpec

    @property
    def name(self) -> str:
        return self.metadata.name


class InvalidResource(ValueError):
    pass


def parse(document: dict[str, Any]) -> MCPServer:
    """The MCPServer of a document; InvalidResource names the resource and each field that is wrong."""
    try:
        return MCPServer.model_validate(document)
    except ValidationError as exc:
        metadata = document.get("metadata") if isinstance(document, dict) else None
        name = metadata.get("name", "?") if isinstance(metadata, dict) else "?"
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise InvalidResource(f"MCPServer {name}: {problems}") from exc


def load_yaml(text: str) -> list[dict[str, Any]]:
    """The MCPServer documents of one YAML file; documents of other kinds are skipped. Text that is not YAML is
    an InvalidResource that says where it stops being YAML."""
    try:
        documents = [d for d in yaml.safe_load_all(text) if d]
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        raise InvalidResource(f"not valid YAML: {where}{getattr(exc, 'problem', None) or exc}") from exc
    return [d for d in documents if isinstance(d, dict) and d.get("kind") == KIND]
