from shared.naming import expose, prefix_for


def test_always_prefixes_with_the_tool_prefix_or_else_the_server_name() -> None:
    assert prefix_for("k8s-gazelle", "gazelle", "always", 1) == "gazelle"
    assert prefix_for("k8s-gazelle", None, "always", 1) == "k8s-gazelle"


def test_conditional_prefixes_only_when_more_than_one_server_is_configured() -> None:
    assert prefix_for("a", None, "conditional", 1) == ""
    assert prefix_for("a", None, "conditional", 2) == "a"


def test_never_keeps_names() -> None:
    assert prefix_for("a", "x", "never", 5) == ""


def test_exposed_names_follow_the_go_muster_rule_without_doubling_the_prefix() -> None:
    assert expose("kubernetes", "get_pods") == "x_kubernetes_get_pods"
    assert expose("kubernetes", "kubernetes_get") == "x_kubernetes_get"
    assert expose("", "get") == "get"
