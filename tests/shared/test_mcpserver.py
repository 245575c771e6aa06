import pytest

from shared.mcpserver import InvalidResource, load_yaml, parse

GOOD = """
apiVersion: muster.giantswarm.io/v1alpha1
kind: MCPServer
metadata: {name: k8s-gazelle, namespace: muster}
spec:
  type: streamable-http
  url: https://mcp.gazelle.example/mcp
  toolPrefix: gazelle
  family: {name: kubernetes, instanceArg: management_cluster}
  auth:
    type: oauth
    forwardToken: true
    requiredAudiences: [dex-k8s-authenticator]
---
apiVersion: v1
kind: ConfigMap
metadata: {name: other}
"""


def test_a_go_muster_resource_parses_and_other_kinds_are_skipped() -> None:
    [document] = load_yaml(GOOD)
    server = parse(document)
    assert server.name == "k8s-gazelle"
    assert server.spec.tool_prefix == "gazelle" and server.spec.timeout == 30
    assert server.spec.family is not None and server.spec.family.instance_arg == "management_cluster"
    assert server.spec.auth is not None and server.spec.auth.forward_token


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        ({"type": "streamable-http"}, "url is required for type streamable-http"),
        ({"type": "stdio"}, "command is required for type stdio"),
        ({"type": "ftp", "url": "http://x"}, "spec.type"),
        ({"type": "sse", "url": "ftp://x"}, "spec.url"),
        ({"type": "sse", "url": "http://x", "timeout": 301}, "spec.timeout"),
        ({"type": "sse", "url": "http://x", "toolPrefix": "9x"}, "spec.toolPrefix"),
        ({"type": "sse", "url": "http://x", "bogus": 1}, "spec.bogus"),
        (
            {"type": "sse", "url": "http://x", "auth": {"authorizationServer": {"issuer": "https://i"}}},
            "authorizationServer requires type: oauth",
        ),
    ],
)
def test_an_invalid_resource_is_refused_with_the_reason(spec: dict[str, object], problem: str) -> None:
    document = {
        "apiVersion": "muster.giantswarm.io/v1alpha1",
        "kind": "MCPServer",
        "metadata": {"name": "s"},
        "spec": spec,
    }
    with pytest.raises(InvalidResource, match="MCPServer s:") as info:
        parse(document)
    assert problem in str(info.value)
