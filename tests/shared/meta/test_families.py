import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import orjson
import pytest

from shared.catalog import Route
from shared.mcpserver import Family
from shared.messages import ServerState
from shared.meta.errors import InstanceRequired, InstanceUnavailable, ToolNotFound
from shared.meta.families import FamilyRoute, assemble, resolve

MC = Family(name="mc", instance_arg="management_cluster")
READ = {"readOnlyHint": True}


def k8s_tools(list_description: str = "List Kubernetes resources") -> list[dict[str, Any]]:
    return [
        {
            "name": "list",
            "description": list_description,
            "inputSchema": {
                "type": "object",
                "properties": {"resourceType": {"type": "string"}},
                "required": ["resourceType"],
            },
            "annotations": READ,
        },
        {
            "name": "delete",
            "description": "Delete a Kubernetes resource",
            "inputSchema": {"type": "object", "properties": {}},
        },
    ]


@dataclass(frozen=True)
class Entry:
    name: str
    prefix: str
    state: ServerState = "Connected"
    family: Family | None = None
    tools: Sequence[Mapping[str, Any]] = field(default_factory=k8s_tools)
    prompts: Sequence[Mapping[str, Any]] = ()
    exposed: bool = True
    safe_tools: Sequence[str] | None = None


GAZELLE = Entry("k8s-gazelle", "gazelle", family=MC)
GRAVELER = Entry("k8s-graveler", "graveler", family=MC)


def by_name(tools: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {t["name"]: t for t in tools}


def test_two_members_of_a_family_offer_each_tool_once_with_an_instance_selector() -> None:
    out = assemble([GRAVELER, GAZELLE])
    assert [t["name"] for t in out.tools] == ["x_mc_delete", "x_mc_list"]
    listing = by_name(out.tools)["x_mc_list"]
    assert listing["description"] == "List Kubernetes resources (available on servers: k8s-gazelle, k8s-graveler)"
    assert listing["inputSchema"] == {
        "type": "object",
        "properties": {
            "resourceType": {"type": "string"},
            "management_cluster": {
                "type": "string",
                "enum": ["k8s-gazelle", "k8s-graveler"],
                "description": "Target instance to execute this tool on. Available: k8s-gazelle, k8s-graveler",
            },
        },
        "required": ["resourceType", "management_cluster"],
    }
    assert listing["annotations"] == READ
    assert out.notes == []


def test_each_instance_value_reaches_its_own_member_without_the_selector() -> None:
    routes = assemble([GAZELLE, GRAVELER]).routes
    args = {"resourceType": "pods", "management_cluster": "k8s-graveler"}
    assert resolve(routes, "x_mc_list", args) == (Route("k8s-graveler", "list", True), {"resourceType": "pods"})
    route, forwarded = resolve(routes, "x_mc_delete", {"management_cluster": "k8s-gazelle"})
    assert route == Route("k8s-gazelle", "delete", False) and forwarded == {}
    assert args == {"resourceType": "pods", "management_cluster": "k8s-graveler"}  # the caller's dict is untouched


def test_a_family_call_without_or_with_an_unknown_instance_is_refused_in_go_s_words() -> None:
    routes = assemble([GAZELLE, GRAVELER]).routes
    with pytest.raises(InstanceRequired) as required:
        resolve(routes, "x_mc_list", {"resourceType": "pods"})
    assert required.value.message == (
        "tool x_mc_list is provided by a family on servers k8s-gazelle, k8s-graveler; "
        'the "management_cluster" parameter is required'
    )
    with pytest.raises(InstanceRequired):
        resolve(routes, "x_mc_list", {"management_cluster": 3})
    with pytest.raises(InstanceUnavailable) as unknown:
        resolve(routes, "x_mc_list", {"management_cluster": "k8s-nope"})
    assert (
        unknown.value.message
        == 'tool x_mc_list is not available on server "k8s-nope" (available: k8s-gazelle, k8s-graveler)'
    )
    with pytest.raises(ToolNotFound) as missing:
        resolve(routes, "x_gazelle_list", {})
    assert missing.value.message == "tool not found: x_gazelle_list"


def test_a_member_that_is_down_leaves_the_enum_and_the_names_stay() -> None:
    both = assemble([GAZELLE, GRAVELER])
    one = assemble([GAZELLE, replace(GRAVELER, state="Failed")])
    assert [t["name"] for t in one.tools] == [t["name"] for t in both.tools]
    schema = by_name(one.tools)["x_mc_list"]["inputSchema"]["properties"]["management_cluster"]
    assert schema["enum"] == ["k8s-gazelle"] and schema["description"].endswith("Available: k8s-gazelle")
    assert by_name(one.tools)["x_mc_list"]["description"].endswith("(available on servers: k8s-gazelle)")
    route = one.routes["x_mc_list"]
    assert isinstance(route, FamilyRoute) and list(route.members) == ["k8s-gazelle"]
    with pytest.raises(InstanceUnavailable):
        resolve(one.routes, "x_mc_list", {"management_cluster": "k8s-graveler"})
    # The listing changed, so a catalog revision built from it differs and list_changed goes out.
    assert orjson.dumps(one.tools) != orjson.dumps(both.tools)
    assert assemble([replace(GAZELLE, state="Connecting"), replace(GRAVELER, state="Failed")]).tools == []


def test_the_same_entries_give_the_same_names_and_routes_in_any_order_and_after_any_restart() -> None:
    first = assemble([GAZELLE, GRAVELER, Entry("github", "github", tools=[{"name": "search", "inputSchema": {}}])])
    second = assemble(
        copy.deepcopy([GRAVELER, Entry("github", "github", tools=[{"name": "search", "inputSchema": {}}]), GAZELLE])
    )
    assert orjson.dumps(first.tools) == orjson.dumps(second.tools)
    assert first.routes == second.routes


def test_a_tool_whose_descriptions_differ_falls_back_to_per_server_names() -> None:
    out = assemble([GAZELLE, replace(GRAVELER, tools=k8s_tools("List resources of the graveler cluster"))])
    assert [t["name"] for t in out.tools] == ["x_mc_delete", "x_gazelle_list", "x_graveler_list"]
    assert out.routes["x_graveler_list"] == Route("k8s-graveler", "list", True)
    assert "management_cluster" not in by_name(out.tools)["x_gazelle_list"]["inputSchema"]["properties"]
    assert out.notes == [
        "family mc tool list: descriptions differ between k8s-gazelle, k8s-graveler; per-server names for this tool"
    ]


def test_a_tool_that_already_has_the_instance_property_falls_back_to_per_server_names() -> None:
    colliding = k8s_tools()
    colliding[1] = {
        **colliding[1],
        "inputSchema": {"type": "object", "properties": {"management_cluster": {"type": "string"}}},
    }
    out = assemble([GAZELLE, replace(GRAVELER, tools=colliding)])
    assert [t["name"] for t in out.tools] == ["x_gazelle_delete", "x_graveler_delete", "x_mc_list"]
    assert "k8s-graveler already has a property management_cluster" in out.notes[0]


def test_members_that_disagree_on_the_instance_argument_split_the_whole_family_even_when_one_is_down() -> None:
    other = replace(GRAVELER, family=Family(name="mc", instance_arg="cluster"))
    out = assemble([GAZELLE, other])
    assert [t["name"] for t in out.tools] == [
        "x_gazelle_list",
        "x_gazelle_delete",
        "x_graveler_list",
        "x_graveler_delete",
    ]
    assert out.notes == ["family mc: members disagree on instanceArg (cluster, management_cluster); per-server names"]
    down = assemble([GAZELLE, replace(other, state="Failed")])
    assert [t["name"] for t in down.tools] == ["x_gazelle_list", "x_gazelle_delete"]


def test_a_family_of_one_still_requires_its_selector() -> None:
    out = assemble([GAZELLE])
    assert out.tools[1]["inputSchema"]["required"] == ["resourceType", "management_cluster"]
    with pytest.raises(InstanceRequired):
        resolve(out.routes, "x_mc_list", {"resourceType": "pods"})


def test_servers_without_a_family_come_first_and_keep_their_names() -> None:
    github = Entry(
        "github", "github", tools=[{"name": "github_search", "inputSchema": {}}, {"name": "list", "inputSchema": {}}]
    )
    out = assemble([GAZELLE, github, GRAVELER])
    assert [t["name"] for t in out.tools] == ["x_github_search", "x_github_list", "x_mc_delete", "x_mc_list"]
    assert out.routes["x_github_search"] == Route("github", "github_search", False)


def test_without_a_prefix_in_force_family_tools_keep_the_bare_tool_name() -> None:
    out = assemble([replace(GAZELLE, prefix=""), replace(GRAVELER, prefix="")])
    assert [t["name"] for t in out.tools] == ["delete", "list"]
    assert isinstance(out.routes["list"], FamilyRoute)


def test_the_upstream_definitions_are_not_changed() -> None:
    tools = k8s_tools()
    before = copy.deepcopy(tools)
    assemble([replace(GAZELLE, tools=tools), replace(GRAVELER, tools=tools)])
    assert tools == before


def test_an_existing_availability_trailer_is_replaced_not_stacked() -> None:
    tools = k8s_tools("List (available on servers: old)")
    out = assemble([replace(GAZELLE, tools=tools), replace(GRAVELER, tools=tools)])
    assert by_name(out.tools)["x_mc_list"]["description"] == "List (available on servers: k8s-gazelle, k8s-graveler)"


def test_safety_is_decided_per_member_and_by_the_server_s_override() -> None:
    out = assemble([GAZELLE, replace(GRAVELER, safe_tools=["delete"])])
    route = out.routes["x_mc_delete"]
    assert isinstance(route, FamilyRoute)
    assert route.members["k8s-gazelle"].safe is False and route.members["k8s-graveler"].safe is True
    listing = out.routes["x_mc_list"]
    assert isinstance(listing, FamilyRoute) and listing.members["k8s-graveler"].safe is False


def test_prompts_keep_per_server_names_and_unexposed_servers_offer_nothing() -> None:
    prompts = [{"name": "triage", "description": "Triage"}]
    out = assemble([replace(GAZELLE, prompts=prompts), replace(GRAVELER, prompts=prompts, exposed=False)])
    assert [p["name"] for p in out.prompts] == ["x_gazelle_triage"]
    assert out.prompt_routes == {"x_gazelle_triage": Route("k8s-gazelle", "triage", True)}
    assert list(by_name(out.tools)["x_mc_list"]["inputSchema"]["properties"]["management_cluster"]["enum"]) == [
        "k8s-gazelle"
    ]


def test_a_name_offered_twice_keeps_the_first_in_server_order() -> None:
    out = assemble(
        [
            Entry("b", "", tools=[{"name": "t", "inputSchema": {}}]),
            Entry("a", "", tools=[{"name": "t", "inputSchema": {}}]),
        ]
    )
    assert out.routes == {"t": Route("a", "t", False)}
    assert out.notes == ["tool t is offered twice; the first one in server order is kept"]
