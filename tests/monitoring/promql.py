"""Metric names out of PromQL, conservatively: every identifier that is not a function, keyword, label name or
Grafana variable counts as a metric name, so that a name the parser is unsure of gets checked rather than missed.
"""

import re
from collections.abc import Iterable

KEYWORDS = frozenset(
    {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset", "atan2",
     "inf", "nan", "start", "end"}
)  # fmt: skip
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\[\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", re.IGNORECASE)
_GRAFANA_VARIABLE = re.compile(r"\$\{[^}]*\}|\$\w+")
_LABEL_VALUES = re.compile(r"\blabel_values\s*\(\s*([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(?:\{[^{}]*\})?\s*,\s*\w+\s*\)")
_NUMBER = re.compile(r"(?<![\w.])(?:0x[0-9a-fA-F]+|\d+(?:\.\d*)?(?:e[+-]?\d+)?|\.\d+)(?:ms|s|m|h|d|w|y)?(?![\w.])")
_IDENTIFIER = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")


def metric_names(expr: str) -> set[str]:
    """The metric names an expression (PromQL, or a Grafana variable query) selects."""
    text = _GRAFANA_VARIABLE.sub("5m", expr)
    text = _STRING.sub('""', text)
    # Grafana's label_values(metric, label): the second argument is a label name
    text = _LABEL_VALUES.sub(lambda m: m.group(1), text)
    previous = None
    while previous != text:  # nested matchers cannot occur, nested groupings and subqueries can
        previous = text
        text = _MATCHERS.sub(" ", text)
        text = _RANGE.sub(" ", text)
        text = _GROUPING.sub(" ", text)
    text = _NUMBER.sub(" ", text)
    names = set()
    for match in _IDENTIFIER.finditer(text):
        name = match.group(0)
        rest = text[match.end() :].lstrip()
        if rest.startswith("(") or name.lower() in KEYWORDS:
            continue  # a function or an aggregation, or an operator
        names.add(name)
    return names


def all_names(expressions: Iterable[str]) -> dict[str, set[str]]:
    """{metric name: the expressions that use it}."""
    found: dict[str, set[str]] = {}
    for expr in expressions:
        for name in metric_names(expr):
            found.setdefault(name, set()).add(expr)
    return found
