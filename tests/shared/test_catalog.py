from typing import Any

import orjson

from shared.catalog import Catalog, FamilyRoute, Route
from shared.mcpserver import Family, MCPServerSpec
from shared.messages import ServerRecord
from shared.meta import auth_status
from shared.meta.core import CORE_TOOLS

READ = {"readOnlyHint": True}
MC = Family(name="mc", instance_arg="management_cluster")


def entry(name: str, prefix: str, **kw: Any) -> ServerRecord:
    return ServerRecord(name=name, url=f"http://{name}/mcp", state="Connected", prefix=prefix, **kw)


def member(name: str, prefix: str, **kw: Any) -> ServerRecord:
    spec = MCPServerSpec(type="streamable-http", url=f"http://{name}/mcp", family=MC)
    tools = [{"name": "list", "description": "List resources", "inputSchema": {"type": "object"}, "annotations": READ}]
    return entry(name, prefix, spec=spec, tools=tools, **kw)


def route(catalog: Catalog, name: str) -> Route:
    found = catalog.tools[name]
    assert isinstance(found, Route)
    return found


def test_tools_route_back_to_their_server_and_upstream_name() -> None:
    catalog = Catalog(
        [
            entry("a", "a", tools=[{"name": "get", "inputSchema": {"type": "object"}, "annotations": READ}]),
            entry("b", "b", tools=[{"name": "delete", "inputSchema": {"type": "object"}}]),
        ]
    )
    assert route(catalog, "x_a_get").server == "a" and route(catalog, "x_a_get").name == "get"
    assert route(catalog, "x_a_get").safe and not route(catalog, "x_b_delete").safe
    assert [t["name"] for t in orjson.loads(catalog.tools_json)] == ["x_a_get", "x_b_delete"]


def test_a_listing_keeps_every_field_the_upstream_sent() -> None:
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "$defs": {"a": {"type": "string"}},
        "additionalProperties": False,
    }
    tool = {"name": "t", "inputSchema": schema, "_meta": {"k": 1}, "x-vendor": True}
    catalog = Catalog([entry("a", "", tools=[tool])])
    assert orjson.loads(catalog.tools_json) == [tool]


def test_servers_that_are_not_exposed_or_not_connected_offer_nothing() -> None:
    catalog = Catalog(
        [
            entry("a", "", tools=[{"name": "t", "inputSchema": {}}], exposed=False),
            ServerRecord(name="b", url="http://b", state="Failed", tools=[{"name": "u", "inputSchema": {}}]),
        ]
    )
    assert catalog.tools == {} and catalog.tools_json == b"[]"


def test_resources_route_by_exact_uri_then_by_template() -> None:
    catalog = Catalog(
        [
            entry(
                "a",
                "",
                resources=[{"uri": "test://static", "name": "s"}],
                resource_templates=[{"uriTemplate": "test://template/{id}/data", "name": "t"}],
            ),
            entry("b", "", resources=[{"uri": "k8s://b", "name": "b"}]),
        ]
    )
    assert catalog.resource_server("test://static") == "a"
    assert catalog.resource_server("test://template/123/data") == "a"
    assert catalog.resource_server("test://template/1/2/data") is None
    assert catalog.resource_server("k8s://b") == "b"
    assert catalog.template_server("test://template/{id}/data") == "a"


def test_a_declared_list_of_safe_tools_overrides_the_annotations() -> None:
    catalog = Catalog(
        [
            entry(
                "a",
                "",
                tools=[{"name": "t", "inputSchema": {}, "annotations": READ}, {"name": "u", "inputSchema": {}}],
                safe_tools=["u"],
            )
        ]
    )
    assert not route(catalog, "t").safe and route(catalog, "u").safe


def test_members_of_a_family_are_one_tool_that_routes_by_the_instance_argument() -> None:
    catalog = Catalog([member("k8s-graveler", "graveler"), member("k8s-gazelle", "gazelle")])
    family = catalog.tools["x_mc_list"]
    assert isinstance(family, FamilyRoute) and list(family.members) == ["k8s-gazelle", "k8s-graveler"]
    chosen, arguments = family.resolve("x_mc_list", {"management_cluster": "k8s-graveler", "namespace": "a"})
    assert chosen == Route("k8s-graveler", "list", True) and arguments == {"namespace": "a"}
    listed = orjson.loads(catalog.tools_json)
    assert [t["name"] for t in listed] == ["x_mc_list"]
    assert listed[0]["inputSchema"]["properties"]["management_cluster"]["enum"] == ["k8s-gazelle", "k8s-graveler"]


def test_a_member_that_is_down_leaves_the_enum_and_the_name_stays() -> None:
    down = member("k8s-gazelle", "gazelle").model_copy(update={"state": "Failed", "tools": []})
    catalog = Catalog([down, member("k8s-graveler", "graveler")])
    listed = orjson.loads(catalog.tools_json)
    assert [t["name"] for t in listed] == ["x_mc_list"]
    assert listed[0]["inputSchema"]["properties"]["management_cluster"]["enum"] == ["k8s-graveler"]


def test_auth_status_is_listed_first_and_an_upstream_cannot_take_its_uri() -> None:
    catalog = Catalog(
        [entry("a", "", resources=[{"uri": auth_status.URI, "name": "x"}, {"uri": "k8s://a", "name": "a"}])]
    )
    assert orjson.loads(catalog.resources_json) == [auth_status.RESOURCE, {"uri": "k8s://a", "name": "a"}]
    assert catalog.resource_server(auth_status.URI) is None


def test_the_meta_tools_index_is_built_once_per_revision_with_the_core_tools() -> None:
    catalog = Catalog([member("k8s-gazelle", "gazelle"), entry("b", "b", tools=[{"name": "get", "inputSchema": {}}])])
    index = catalog.tool_catalog
    assert catalog.tool_catalog is index
    assert index.names == ["x_b_get", "x_mc_list", *(t["name"] for t in CORE_TOOLS)]
    assert catalog.tool_servers[:2] == [frozenset({"b"}), frozenset({"k8s-gazelle"})]
    assert catalog.tool_servers[2:] == [frozenset()] * len(CORE_TOOLS)
    assert Catalog(catalog.servers.values()).tool_catalog is not index
