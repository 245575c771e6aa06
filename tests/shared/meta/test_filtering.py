import json
from pathlib import Path
from typing import Any

from shared.meta.catalog import LABELS_KEY, MetaCatalog, ToolCatalog
from shared.meta.filtering import FilterOptions, filter_tools

DATA = Path(__file__).resolve().parents[2] / "data"
TOOLS = json.loads((DATA / "tools_200.json").read_text())
CATALOG = ToolCatalog(TOOLS)


def page(args: dict[str, Any], catalog: MetaCatalog | None = None) -> dict[str, Any]:
    text, is_error = filter_tools(catalog or MetaCatalog(CATALOG), FilterOptions.from_arguments(args))
    assert not is_error, text
    body: dict[str, Any] = json.loads(text)
    return body


def names(body: dict[str, Any]) -> list[str]:
    return [t["name"] for t in body["tools"]]


def test_without_arguments_the_first_five_tools_come_in_catalog_order() -> None:
    body = page({})
    assert names(body) == [t["name"] for t in TOOLS[:5]]
    assert (body["total_tools"], body["total"], body["filtered_count"], body["truncated"]) == (200, 200, 5, True)
    assert body["filters"] == {"case_sensitive": False, "include_schema": False, "limit": 5, "offset": 0}


def test_pattern_is_a_case_insensitive_glob_unless_asked_otherwise() -> None:
    assert names(page({"pattern": "X_GRAFANA_*DASHBOARD*", "limit": 10})) == [
        "x_grafana_searchDashboards",
        "x_grafana_getDashboardByUid",
        "x_grafana_updateDashboard",
    ]
    assert page({"pattern": "X_GRAFANA_*", "case_sensitive": True})["total"] == 0
    assert page({"pattern": "x_grafana_*Dashboard*", "case_sensitive": True})["total"] == 3
    assert page({"pattern": "x_grafana_*dashboard*", "case_sensitive": True})["total"] == 0
    classes = names(page({"pattern": "x_[gh]*_list*", "limit": 50}))
    assert len(classes) == 12 and "x_helm_list_releases" in classes and "x_grafana_listFolders" in classes
    assert all(n[2] in "gh" for n in classes)


def test_description_filter_is_a_substring_match() -> None:
    body = page({"description_filter": "ON CALL", "limit": 50})
    assert names(body) == ["x_pagerduty_list_oncalls"]
    assert names(page({"description_filter": "On-Call"})) == ["x_backstage_get_owner"]
    assert page({"description_filter": "ON CALL", "case_sensitive": True})["total"] == 0


def test_pages_are_cut_by_offset_and_limit_and_say_whether_more_follow() -> None:
    everything = names(page({"pattern": "x_helm_*", "limit": 100}))
    assert len(everything) == 10
    second = page({"pattern": "x_helm_*", "limit": 4, "offset": 4})
    assert names(second) == everything[4:8] and second["truncated"] is True and second["filtered_count"] == 4
    last = page({"pattern": "x_helm_*", "limit": 4, "offset": 8})
    assert names(last) == everything[8:] and last["truncated"] is False
    beyond = page({"pattern": "x_helm_*", "offset": 50})
    assert beyond["tools"] == [] and beyond["total"] == 10 and beyond["truncated"] is False
    assert page({"limit": 2.9})["filters"]["limit"] == 2


def test_a_query_ranks_the_filtered_tools_and_adds_scores() -> None:
    body = page({"query": "rollback release", "limit": 3})
    assert [(t["name"], t["score"]) for t in body["tools"]] == [
        ("x_helm_rollback_release", 12.8424),
        ("x_argocd_rollback_application", 7.4145),
        ("x_helm_uninstall_release", 5.4594),
    ]
    assert body["total"] == 11 and body["filters"]["query"] == "rollback release"
    # Among the helm tools alone the same query is scored over 10 candidates.
    helm = page({"query": "rollback release", "pattern": "x_helm_*", "limit": 1})
    assert helm["tools"][0]["name"] == "x_helm_rollback_release" and helm["tools"][0]["score"] != 12.8424


def test_include_schema_returns_full_descriptions_and_schemas() -> None:
    body = page({"pattern": "x_prometheus_query", "include_schema": True})
    tool = TOOLS[[t["name"] for t in TOOLS].index("x_prometheus_query")]
    assert body["tools"] == [
        {"name": tool["name"], "description": tool["description"], "inputSchema": tool["inputSchema"]}
    ]
    summary = page({"pattern": "x_prometheus_query"})["tools"][0]
    assert summary == {"name": "x_prometheus_query", "summary": "Execute an instant PromQL query against Prometheus."}


def test_summaries_are_the_first_line_capped_at_120_runes() -> None:
    long = {"name": "t", "description": "ü" * 200 + "\nsecond", "inputSchema": {}}
    body = page({}, MetaCatalog(ToolCatalog([long])))
    assert body["tools"][0]["summary"] == "ü" * 120 + "..."


def test_labels_must_all_match_and_are_read_from_meta() -> None:
    tools: list[dict[str, Any]] = [
        {"name": "workflow_deploy", "description": "Deploy", "_meta": {LABELS_KEY: {"team": "platform", "tier": 1}}},
        {"name": "workflow_audit", "description": "Audit", "_meta": {LABELS_KEY: {"team": "security"}}},
        {"name": "x_plain", "description": "Plain"},
    ]
    catalog = MetaCatalog(ToolCatalog(tools))
    body = page({"labels": {"team": "platform", "tier": 1}}, catalog)
    assert body["tools"] == [
        {"name": "workflow_deploy", "summary": "Deploy", "labels": {"team": "platform", "tier": "1"}}
    ]
    assert body["filters"]["labels"] == {"team": "platform", "tier": "1"}
    assert page({"labels": {"team": "nobody"}}, catalog)["total"] == 0
    assert page({"labels": {}}, catalog)["total"] == 3 and "labels" not in page({"labels": {}}, catalog)["filters"]


def test_arguments_of_the_wrong_type_are_ignored_as_go_ignores_them() -> None:
    body = page({"pattern": 7, "query": ["x"], "case_sensitive": "yes", "include_schema": 1, "labels": "a=b"})
    assert body["total"] == 200 and body["filters"] == {
        "case_sensitive": False,
        "include_schema": False,
        "limit": 5,
        "offset": 0,
    }


def test_a_session_sees_and_ranks_only_its_visible_tools() -> None:
    visible = [i for i, t in enumerate(TOOLS) if not t["name"].startswith("x_helm_")]
    body = page({"query": "rollback release", "limit": 3}, MetaCatalog(CATALOG, visible=visible))
    assert body["total_tools"] == 190
    assert names(body)[0] == "x_argocd_rollback_application"
