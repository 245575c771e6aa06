"""The per-call instrumentation: what the ingress and the worker record for each call, at a dict lookup each.

Label children are resolved once per combination of label values and cached; a call then costs one lookup, one
counter increment and a histogram observation or two (tests/shared/test_instruments.py measures it: a few
microseconds). Values outside the catalog are bounded on the way in (shared.labels) and never cached under their
raw form, so a stream of made-up names cannot grow the cache.

When the catalog changes, `catalog_changed` bounds labels by the new catalog, empties the caches and removes the
series of servers and tools that left it.
"""

from abc import ABC, abstractmethod
from collections.abc import Iterable
from typing import Final

from prometheus_client import Counter, Histogram

from shared import labels
from shared.labels import CREDENTIAL_OUTCOMES, CatalogEntry, LabelBounds
from shared.metrics import (
    CALL_DURATION,
    CALLS,
    CLIENT_OPERATION,
    DEAD_LETTERS,
    QUEUE_WAIT,
    REDELIVERIES,
    SERVER_OPERATION,
    TOKEN_EXCHANGES,
    TOKEN_REFRESHES,
    Metrics,
)

TOOLS_CALL: Final = "tools/call"
PROMPTS_GET: Final = "prompts/get"

_RoutedKey = tuple[str, str, str, str, str, int | None, bool]
_AnsweredKey = tuple[str, str, str, int | None, bool]


def _targets(method: str, name: str) -> tuple[str, str]:
    """(gen_ai_tool_name, gen_ai_prompt_name): the convention sets each only for its own kind of request."""
    if method == TOOLS_CALL:
        return name, ""
    if method == PROMPTS_GET:
        return "", name
    return "", ""


class _Tracked(ABC):
    def __init__(self, metrics: Metrics, bounds: LabelBounds) -> None:
        self.metrics = metrics
        self.bounds = bounds

    def catalog_changed(self, entries: Iterable[CatalogEntry]) -> None:
        self.bounds.update(entries)
        self._clear()
        b = self.bounds
        self.metrics.forget("server", lambda v: v in b.servers or v in ("", labels.OTHER))
        for label in ("tool", "gen_ai_tool_name"):
            self.metrics.forget(label, lambda v: v in b.tools or v in ("", labels.OTHER))
        self.metrics.forget("gen_ai_prompt_name", lambda v: v in b.prompts or v in ("", labels.OTHER))
        for server in b.servers:
            self._warm(server)

    @abstractmethod
    def _clear(self) -> None: ...

    def _warm(self, server: str) -> None:  # noqa: B027  (a role with no such counters keeps this)
        """Creates a server's counters at zero, so that the first event after a restart counts as an increase."""


class IngressInstruments(_Tracked):
    """What the ingress records: every request it answers (the OTel server histogram) and every routed call."""

    def __init__(self, metrics: Metrics, bounds: LabelBounds) -> None:
        super().__init__(metrics, bounds)
        self._calls = metrics.counter(CALLS)
        self._duration = metrics.histogram(CALL_DURATION)
        self._operation = metrics.histogram(SERVER_OPERATION)
        self._routed: dict[_RoutedKey, tuple[Counter, Histogram, Histogram]] = {}
        self._answered: dict[_AnsweredKey, Histogram] = {}

    def routed(
        self,
        server: str,
        tool: str,
        exposed: str,
        method: str,
        protocol: str,
        code: int | None,
        is_error: bool,
        seconds: float,
    ) -> None:
        """A call that went to an upstream server (or was refused on its way there) got its outcome.

        `tool` is the upstream's name of the tool ("" for other methods), `exposed` the name the agent used
        (tool or prompt); `code` the JSON-RPC error code of the outcome, None for a result; `is_error` whether
        that result had isError set.
        """
        key = (server, tool, exposed, method, protocol, code, is_error)
        children = self._routed.get(key)
        if children is None:
            children = self._resolve_routed(key)
        calls, duration, operation = children
        calls.inc()
        duration.observe(seconds)
        operation.observe(seconds)

    def answered(
        self, method: str, protocol: str, code: int | None, seconds: float, *, name: str = "", is_error: bool = False
    ) -> None:
        """A request the ingress answered itself: initialize, the lists, ping, or one refused before routing."""
        key = (method, name, protocol, code, is_error)
        child = self._answered.get(key)
        if child is None:
            child = self._resolve_answered(key)
        child.observe(seconds)

    def _resolve_routed(self, key: _RoutedKey) -> tuple[Counter, Histogram, Histogram]:
        server, tool, exposed, method, protocol, code, is_error = key
        b = self.bounds
        outcome, error_type = labels.classify(code, is_error)
        tool = tool if method == TOOLS_CALL else ""
        bounded = (b.server(server), b.tool(tool), b.method(method), b.protocol(protocol), error_type)
        tool_name, prompt_name = _targets(method, exposed)
        target = (b.tool(tool_name), b.prompt(prompt_name))
        children = (
            self._calls.labels(bounded[0], bounded[1], bounded[2], outcome),
            self._duration.labels(bounded[0], bounded[2], outcome),
            self._operation.labels(bounded[2], target[0], target[1], error_type, bounded[3]),
        )
        if labels.OTHER not in (*bounded, *target):
            self._routed[key] = children
        return children

    def _resolve_answered(self, key: _AnsweredKey) -> Histogram:
        method, name, protocol, code, is_error = key
        b = self.bounds
        _, error_type = labels.classify(code, is_error)
        tool_name, prompt_name = _targets(method, name)
        values = (b.method(method), b.tool(tool_name), b.prompt(prompt_name), error_type, b.protocol(protocol))
        child = self._operation.labels(*values)
        if labels.OTHER not in values:
            self._answered[key] = child
        return child

    def _clear(self) -> None:
        self._routed.clear()
        self._answered.clear()


class WorkerInstruments(_Tracked):
    """What the worker records per call: its wait in the queue and its time at the upstream."""

    def __init__(self, metrics: Metrics, bounds: LabelBounds) -> None:
        super().__init__(metrics, bounds)
        self._wait = metrics.histogram(QUEUE_WAIT)
        self._client = metrics.histogram(CLIENT_OPERATION)
        self._waits: dict[str, Histogram] = {}
        self._upstream: dict[tuple[str, str, str, str, str], Histogram] = {}

    def taken(self, server: str, waited: float) -> None:
        """A worker took a call from its stream after it waited `waited` seconds there."""
        child = self._waits.get(server)
        if child is None:
            bounded = self.bounds.server(server)
            child = self._wait.labels(bounded)
            if bounded != labels.OTHER:
                self._waits[server] = child
        child.observe(waited)

    def upstream(self, server: str, method: str, tool: str, protocol: str, error_type: str, seconds: float) -> None:
        """The upstream answered a request (or failed to) after `seconds`.

        `error_type` is "" for a result, labels.classify's for a JSON-RPC error or isError, or the
        labels.connect_error_class of a failure to reach it.
        """
        key = (server, method, tool, protocol, error_type)
        child = self._upstream.get(key)
        if child is None:
            b = self.bounds
            tool_name, prompt_name = _targets(method, tool)
            values = (
                b.server(server),
                b.method(method),
                b.tool(tool_name),
                b.prompt(prompt_name),
                b.error_type(error_type),
                b.protocol(protocol),
            )
            child = self._client.labels(*values)
            if labels.OTHER not in values:
                self._upstream[key] = child
        child.observe(seconds)

    def _warm(self, server: str) -> None:
        m = self.metrics
        m.counter(DEAD_LETTERS).labels(server)
        m.counter(REDELIVERIES).labels(server)
        for outcome in CREDENTIAL_OUTCOMES:
            m.counter(TOKEN_REFRESHES).labels(server, outcome)
            m.counter(TOKEN_EXCHANGES).labels(server, outcome)

    def _clear(self) -> None:
        self._waits.clear()
        self._upstream.clear()
