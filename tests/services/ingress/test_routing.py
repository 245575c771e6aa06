"""Routing reads the few fields it needs and forwards every other byte of the params as the client sent them."""

import orjson
import pytest

from services.ingress.routing import route
from shared import errors
from shared.catalog import Catalog
from shared.mcpserver import Family, MCPServerSpec
from shared.messages import ServerRecord
from shared.rawjson import Document

READ = {"readOnlyHint": True}
MC = Family(name="mc", instance_arg="management_cluster")


def member(name: str, prefix: str) -> ServerRecord:
    spec = MCPServerSpec(type="streamable-http", url=f"http://{name}/mcp", family=MC)
    tools = [{"name": "list", "inputSchema": {"type": "object"}, "annotations": READ}]
    return ServerRecord(name=name, url=f"http://{name}/mcp", state="Connected", prefix=prefix, spec=spec, tools=tools)


FAMILY = Catalog([member("k8s-graveler", "graveler"), member("k8s-gazelle", "gazelle")])


def test_a_family_tool_goes_to_its_member_without_the_instance_argument_and_every_other_byte_kept() -> None:
    sent = (
        b'{"name":"x_mc_list","arguments":{"big":1180591620717411303424,  "management_cluster":"k8s-gazelle",'
        b'"f":-0.0,"s":"\\u00e9"},"_meta":{"progressToken":7}}'
    )
    target = route(FAMILY, "tools/call", Document.parse(sent))
    assert (target.server, target.name, target.safe) == ("k8s-gazelle", "list", True)
    assert target.params == (  # the whitespace the client put between members stays too
        b'{"name":"list","arguments":{"big":1180591620717411303424,  "f":-0.0,"s":"\\u00e9"},'
        b'"_meta":{"progressToken":7}}'
    )


def test_a_family_tool_without_its_instance_argument_is_invalid_params() -> None:
    for sent in (b'{"name":"x_mc_list","arguments":{}}', b'{"name":"x_mc_list","arguments":null}'):
        with pytest.raises(errors.InvalidParams) as raised:
            route(FAMILY, "tools/call", Document.parse(sent))
        assert "management_cluster" in raised.value.message


def test_a_family_member_that_is_not_there_is_invalid_params() -> None:
    sent = orjson.dumps({"name": "x_mc_list", "arguments": {"management_cluster": "k8s-nowhere"}})
    with pytest.raises(errors.InvalidParams):
        route(FAMILY, "tools/call", Document.parse(sent))
