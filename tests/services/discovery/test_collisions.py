from typing import Any

from services.discovery.collisions import resolve_collisions
from shared.messages import ServerRecord


def entry(name: str, prefix: str, tools: list[str], prompts: list[str] = (), **kw: Any) -> ServerRecord:  # type: ignore[assignment]
    return ServerRecord(
        name=name,
        url=f"http://{name}/mcp",
        state="Connected",
        prefix=prefix,
        tools=[{"name": t, "inputSchema": {}} for t in tools],
        prompts=[{"name": p} for p in prompts],
        **kw,
    )


def test_without_prefixes_the_second_server_with_a_clashing_name_is_not_exposed_at_all() -> None:
    result = resolve_collisions({"a": entry("a", "", ["get", "list"]), "b": entry("b", "", ["list", "logs"])})
    assert result["a"].exposed and result["a"].error is None
    assert not result["b"].exposed
    assert result["b"].error == (
        "tool name 'list' collides with server 'a'; the server is not exposed "
        "(set spec.toolPrefix or use prefix mode always)"
    )


def test_prefixes_keep_servers_apart_and_a_shared_tool_prefix_does_not() -> None:
    apart = resolve_collisions({"a": entry("a", "a", ["get"]), "b": entry("b", "b", ["get"])})
    assert apart["a"].exposed and apart["b"].exposed
    shared = resolve_collisions({"a": entry("a", "k8s", ["get"]), "b": entry("b", "k8s", ["get"])})
    assert shared["a"].exposed and not shared["b"].exposed


def test_prompts_collide_like_tools_and_failed_servers_take_no_names() -> None:
    result = resolve_collisions({"a": entry("a", "", [], ["review"]), "b": entry("b", "", [], ["review"])})
    assert not result["b"].exposed and "prompt name 'review'" in (result["b"].error or "")
    failed = ServerRecord(name="a", url="http://a", state="Failed", tools=[{"name": "get", "inputSchema": {}}])
    result = resolve_collisions({"a": failed, "b": entry("b", "", ["get"])})
    assert result["b"].exposed


def test_a_server_that_lists_one_name_twice_is_not_exposed() -> None:
    result = resolve_collisions({"a": entry("a", "", ["get", "get"])})
    assert not result["a"].exposed and "collides with server 'a'" in (result["a"].error or "")
