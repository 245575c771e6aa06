"""filter_tools and list_core_tools: filter, then rank when there is a query, then page, then project.

The response is the Go muster's FilterToolsResponse, field for field:

    {"filters": {pattern?, description_filter?, query?, labels?, case_sensitive, include_schema, limit, offset},
     "total_tools", "filtered_count" (the page size), "total" (all matches), "truncated",
     "tools": [{name, description | summary, score?, labels?, inputSchema?}]}
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from shared.meta import glob
from shared.meta._gojson import format_v, lower, marshal_indent, quote
from shared.meta.catalog import MetaCatalog, ToolCatalog
from shared.meta.definitions import DEFAULT_FILTER_LIMIT
from shared.meta.ranking import first_line, round_score

SUMMARY_MAX_RUNES = 120
NO_TOOLS = "No tools available to filter"


class InvalidArgument(ValueError):
    """An argument the Go muster refuses; the message is the isError text."""


@dataclass(frozen=True, slots=True)
class FilterOptions:
    pattern: str = ""
    description_filter: str = ""
    query: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    case_sensitive: bool = False
    include_schema: bool = False
    summarize: bool = True
    limit: int = DEFAULT_FILTER_LIMIT  # 0: no limit
    offset: int = 0

    @classmethod
    def from_arguments(cls, args: Mapping[str, Any]) -> "FilterOptions":
        """filter_tools' arguments as the Go handler reads them: wrong types are ignored, bad numbers refused."""
        include_schema = _bool(args.get("include_schema"), False)
        labels = args.get("labels")
        options = cls(
            pattern=_str(args.get("pattern")),
            description_filter=_str(args.get("description_filter")),
            query=_str(args.get("query")),
            labels={str(k): format_v(v) for k, v in labels.items()} if isinstance(labels, Mapping) else {},
            case_sensitive=_bool(args.get("case_sensitive"), False),
            include_schema=include_schema,
            summarize=not include_schema,  # asking for schemas asks for the full description too
            limit=_count(args, "limit", DEFAULT_FILTER_LIMIT, minimum=1),
            offset=_count(args, "offset", 0, minimum=0),
        )
        return options

    @classmethod
    def core(cls, args: Mapping[str, Any]) -> "FilterOptions":
        """list_core_tools: the core_* tools with full descriptions, schemas unless asked not to, and no limit."""
        return cls(pattern="core*", include_schema=_bool(args.get("include_schema"), True), summarize=False, limit=0)


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _bool(value: Any, default: bool) -> bool:
    return value if isinstance(value, bool) else default


def _count(args: Mapping[str, Any], key: str, default: int, minimum: int) -> int:
    if key not in args:
        return default
    value = args[key]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidArgument(f"{key} must be a number")
    number = int(value)  # Go truncates toward zero: 2.9 is 2, 0.5 is 0
    if number < minimum:
        raise InvalidArgument(f"{key} must be at least {minimum}")
    return number


def filter_tools(catalog: MetaCatalog, options: FilterOptions) -> tuple[str, bool]:
    """The text of the result and whether it is an error."""
    tools = catalog.tools
    visible: Sequence[int] = range(len(tools)) if catalog.visible is None else catalog.visible
    if not visible:
        return NO_TOOLS, False
    if options.pattern:
        try:
            glob.validate(options.pattern)
        except glob.BadPattern as exc:
            return f"Invalid pattern {quote(options.pattern)}: {exc}", True

    ordered = _ordered(catalog, visible, options)
    total = len(ordered)
    start = min(options.offset, total)
    end = start + options.limit if options.limit > 0 and start + options.limit < total else total
    entries = [_entry(tools, position, score, options) for position, score in ordered[start:end]]
    response = {
        "filters": _filters(options),
        "total_tools": len(visible),
        "filtered_count": len(entries),
        "total": total,
        "truncated": end < total,
        "tools": entries,
    }
    return marshal_indent(response), False


def _ordered(catalog: MetaCatalog, visible: Sequence[int], options: FilterOptions) -> list[tuple[int, float | None]]:
    """The positions of the visible tools that match every filter, with their scores when there is a query, best
    first; without a query in listing order and without scores."""
    tools = catalog.tools
    pattern = options.pattern if options.case_sensitive else lower(options.pattern)
    needle = options.description_filter if options.case_sensitive else lower(options.description_filter)
    names = tools.names if options.case_sensitive else tools.lower_names
    descriptions = tools.descriptions if options.case_sensitive else tools.lower_descriptions
    matched = [
        p
        for p in visible
        if (not pattern or glob.match(pattern, names[p]))
        and (not needle or needle in descriptions[p])
        and all(tools.labels[p].get(k) == v for k, v in options.labels.items())
    ]
    if not options.query:
        return [(p, None) for p in matched]
    everything = catalog.visible is None and len(matched) == len(tools)
    return [(p, s) for p, s in tools.index.rank(options.query, None if everything else matched)]


def _entry(tools: ToolCatalog, position: int, score: float | None, options: FilterOptions) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": tools.names[position]}
    if options.summarize:
        summary = first_line(tools.descriptions[position], SUMMARY_MAX_RUNES)
        if summary:
            entry["summary"] = summary
    elif tools.descriptions[position]:
        entry["description"] = tools.descriptions[position]
    if score is not None:
        entry["score"] = round_score(score)
    if tools.labels[position]:
        entry["labels"] = dict(sorted(tools.labels[position].items()))
    if options.include_schema:
        entry["inputSchema"] = tools.tools[position].get("inputSchema")
    return entry


def _filters(options: FilterOptions) -> dict[str, Any]:
    """The response's echo of the filters: the ones given, in Go's field order, then the settings always shown."""
    filters: dict[str, Any] = {}
    if options.pattern:
        filters["pattern"] = options.pattern
    if options.description_filter:
        filters["description_filter"] = options.description_filter
    if options.query:
        filters["query"] = options.query
    if options.labels:
        filters["labels"] = dict(sorted(options.labels.items()))
    return filters | {
        "case_sensitive": options.case_sensitive,
        "include_schema": options.include_schema,
        "limit": options.limit,
        "offset": options.offset,
    }
