import orjson

from shared.catalog import Catalog
from shared.messages import ServerRecord

READ = {"readOnlyHint": True}


def entry(name: str, prefix: str, **kw: object) -> ServerRecord:
    return ServerRecord(name=name, url=f"http://{name}/mcp", state="Connected", prefix=prefix, **kw)


def test_tools_route_back_to_their_server_and_upstream_name() -> None:
    catalog = Catalog(
        [
            entry("a", "a", tools=[{"name": "get", "inputSchema": {"type": "object"}, "annotations": READ}]),
            entry("b", "b", tools=[{"name": "delete", "inputSchema": {"type": "object"}}]),
        ]
    )
    assert catalog.tools["x_a_get"].server == "a" and catalog.tools["x_a_get"].name == "get"
    assert catalog.tools["x_a_get"].safe and not catalog.tools["x_b_delete"].safe
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
    assert not catalog.tools["t"].safe and catalog.tools["u"].safe
