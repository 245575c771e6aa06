import orjson

from shared.catalog import CatalogView
from shared.messages import ServerCatalog

READ = {"readOnlyHint": True}


def entry(name: str, prefix: str, **kw: object) -> ServerCatalog:
    return ServerCatalog(name=name, url=f"http://{name}/mcp", state="Connected", prefix=prefix, **kw)  # type: ignore[arg-type]


def test_tools_route_back_to_their_server_and_upstream_name() -> None:
    view = CatalogView(
        [
            entry("a", "a", tools=[{"name": "get", "inputSchema": {"type": "object"}, "annotations": READ}]),
            entry("b", "b", tools=[{"name": "delete", "inputSchema": {"type": "object"}}]),
        ]
    )
    assert view.tools["x_a_get"].server == "a" and view.tools["x_a_get"].name == "get"
    assert view.tools["x_a_get"].safe and not view.tools["x_b_delete"].safe
    assert [t["name"] for t in orjson.loads(view.tools_json)] == ["x_a_get", "x_b_delete"]


def test_a_listing_keeps_every_field_the_upstream_sent() -> None:
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "$defs": {"a": {"type": "string"}},
        "additionalProperties": False,
    }
    tool = {"name": "t", "inputSchema": schema, "_meta": {"k": 1}, "x-vendor": True}
    view = CatalogView([entry("a", "", tools=[tool])])
    assert orjson.loads(view.tools_json) == [tool]


def test_servers_that_are_not_exposed_or_not_connected_offer_nothing() -> None:
    view = CatalogView(
        [
            entry("a", "", tools=[{"name": "t", "inputSchema": {}}], exposed=False),
            ServerCatalog(name="b", url="http://b", state="Failed", tools=[{"name": "u", "inputSchema": {}}]),
        ]
    )
    assert view.tools == {} and view.tools_json == b"[]"


def test_resources_route_by_exact_uri_then_by_template() -> None:
    view = CatalogView(
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
    assert view.resource_server("test://static") == "a"
    assert view.resource_server("test://template/123/data") == "a"
    assert view.resource_server("test://template/1/2/data") is None
    assert view.resource_server("k8s://b") == "b"
    assert view.template_server("test://template/{id}/data") == "a"


def test_a_declared_list_of_safe_tools_overrides_the_annotations() -> None:
    view = CatalogView(
        [
            entry(
                "a",
                "",
                tools=[{"name": "t", "inputSchema": {}, "annotations": READ}, {"name": "u", "inputSchema": {}}],
                safe_tools=["u"],
            )
        ]
    )
    assert not view.tools["t"].safe and view.tools["u"].safe
