"""The stand-in says what mcp-kubernetes says."""

import json

import pytest
from jsonschema import Draft202012Validator

from demo.kubernetes.objects import build
from demo.kubernetes.tools import (
    DEMO_POLICY,
    READ,
    Handlers,
    Identity,
    Policy,
    ToolError,
    definitions,
    validation_error,
)

TOOLS = {t["name"]: t for t in definitions(capi_mode=False, destructive=False)}


def test_the_default_deployment_registers_six_sorted_read_tools_with_mcp_go_annotations() -> None:
    assert list(TOOLS) == ["api_resources", "cluster_health", "describe", "get", "list", "logs"]
    for tool in TOOLS.values():
        assert tool["annotations"] == READ
        assert tool["inputSchema"]["additionalProperties"] is False
    assert "cluster" not in TOOLS["get"]["inputSchema"]["properties"]
    assert "cluster" in {t["name"]: t for t in definitions(True, True)}["get"]["inputSchema"]["properties"]


@pytest.mark.parametrize(
    ("tool", "arguments", "message"),
    [
        ("get", {"resourceType": "pods"}, "<root>: missing property 'name'"),
        ("list", {"resourceType": "pods", "foo": 1}, "<root>: additional properties 'foo' not allowed"),
        ("logs", {"namespace": "a", "podName": "b", "tailLines": 0}, "/tailLines: must be >= 1 but found 0"),
        ("list", {"resourceType": 5}, "/resourceType: got number, want string"),
    ],
)
def test_arguments_that_fail_the_schema_get_mcp_go_messages(
    tool: str, arguments: dict[str, object], message: str
) -> None:
    assert validation_error(Draft202012Validator(TOOLS[tool]["inputSchema"]), arguments) == message


def test_an_rbac_denial_reads_like_the_kubernetes_api() -> None:
    handlers = Handlers(build("gazelle"), Policy(DEMO_POLICY))
    with pytest.raises(ToolError) as info:
        handlers.call("list", {"resourceType": "secrets", "namespace": "giantswarm"}, Identity())
    assert str(info.value) == (
        'Failed to list resources: failed to list secrets: secrets is forbidden: User "system:anonymous" cannot list '
        'resource "secrets" in API group "" in the namespace "giantswarm"'
    )


def test_list_pages_with_limit_and_continue() -> None:
    handlers = Handlers(build("gazelle"), Policy(DEMO_POLICY))
    first = json.loads(handlers.call("list", {"resourceType": "pods", "allNamespaces": True, "limit": 5}, Identity()))
    assert len(first["items"]) == 5 and first["continue"] == "5"
    rest = json.loads(
        handlers.call(
            "list", {"resourceType": "pods", "allNamespaces": True, "continue": "5", "limit": 100}, Identity()
        )
    )
    assert len(rest["items"]) == first["totalItems"] - 5 and "continue" not in rest


def test_a_missing_object_is_not_found_in_kubernetes_words() -> None:
    handlers = Handlers(build("gazelle"), Policy(DEMO_POLICY))
    with pytest.raises(ToolError, match=r'Failed to get resource: failed to get pods "x": pods "x" not found'):
        handlers.call("get", {"resourceType": "pods", "name": "x"}, Identity())
