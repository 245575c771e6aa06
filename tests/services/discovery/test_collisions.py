from typing import Any

from services.discovery.collisions import resolve_collisions
from shared.mcpserver import Family, MCPServerSpec
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


def member(name: str, prefix: str, tools: list[str], family: str = "mc", instance_arg: str = "cluster") -> ServerRecord:
    spec = MCPServerSpec(
        type="streamable-http", url=f"http://{name}/mcp", family=Family(name=family, instance_arg=instance_arg)
    )
    return entry(name, prefix, tools, spec=spec)


def test_members_of_one_family_share_their_tool_names_without_a_prefix() -> None:
    result = resolve_collisions({"a": member("a", "", ["get", "list"]), "b": member("b", "", ["list"])})
    assert result["a"].exposed and result["b"].exposed


def test_a_family_tool_name_still_collides_with_another_server_s_name() -> None:
    result = resolve_collisions({"a": member("a", "", ["list"]), "b": entry("b", "", ["list"])})
    assert result["a"].exposed and not result["b"].exposed
    assert "collides with family 'mc'" in (result["b"].error or "")
    other = resolve_collisions({"a": member("a", "", ["list"]), "b": member("b", "", ["list"], family="other")})
    assert not other["b"].exposed


def test_members_that_disagree_on_the_instance_argument_keep_per_server_names_and_collide_as_servers() -> None:
    records = {"a": member("a", "", ["list"]), "b": member("b", "", ["list"], instance_arg="management_cluster")}
    result = resolve_collisions(records)
    assert not result["b"].exposed and "collides with server 'a'" in (result["b"].error or "")
    prefixed = {"a": member("a", "a", ["list"]), "b": member("b", "b", ["list"], instance_arg="management_cluster")}
    assert all(r.exposed for r in resolve_collisions(prefixed).values())
