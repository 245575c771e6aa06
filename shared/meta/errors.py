"""Why a tool call through the catalog or a meta-tool cannot be answered by the upstream.

    MetaError                    the message is what the agent reads (in Go muster's words)
    ├── RouteError               the name or the instance argument does not lead to a server: do not retry as is
    │   ├── ToolNotFound         no tool of that name in this catalog revision
    │   ├── InstanceRequired     a family tool called without its instance argument
    │   └── InstanceUnavailable  the instance named is not a member of the family that is up
    └── CallFailed               the call was routed but could not run or be answered (raised by the backend);
                                 call_tool shows it as "Tool execution failed: <message>"

Messages never carry tokens or headers: they name tools, servers and instances only.
"""

from collections.abc import Iterable

from shared.meta._gojson import quote


class MetaError(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class RouteError(MetaError):
    pass


class ToolNotFound(RouteError):
    def __init__(self, name: str) -> None:
        super().__init__(f"tool not found: {name}")
        self.name = name


class InstanceRequired(RouteError):
    def __init__(self, name: str, instance_arg: str, members: Iterable[str]) -> None:
        super().__init__(
            f"tool {name} is provided by a family on servers {', '.join(sorted(members))}; "
            f"the {quote(instance_arg)} parameter is required"
        )


class InstanceUnavailable(RouteError):
    def __init__(self, name: str, instance: str, members: Iterable[str]) -> None:
        super().__init__(
            f"tool {name} is not available on server {quote(instance)} (available: {', '.join(sorted(members))})"
        )


class CallFailed(MetaError):
    pass
