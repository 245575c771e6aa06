"""Connects to one upstream server and lists what it offers, keeping every definition as the server sent it."""

import asyncio
from typing import Any

import orjson

from shared.http1 import Pool
from shared.mcpserver import MCPServer
from shared.messages import ServerRecord
from shared.upstream import UpstreamSession, wire_headers

MAX_PAGES = 100


class ListingFailed(Exception):
    pass


async def _list_all(session: UpstreamSession, method: bytes, key: str, deadline: float) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor = None
    for _ in range(MAX_PAGES):
        params = orjson.dumps({"cursor": cursor} if cursor else {})
        outcome = await session.request(method, params, deadline)
        if outcome.error:
            raise ListingFailed(f"{method.decode()} failed: {outcome.body.decode('utf-8', 'replace')}")
        result = orjson.loads(outcome.body)
        items.extend(i for i in result.get(key, []) if isinstance(i, dict))
        cursor = result.get("nextCursor")
        if not cursor:
            return items
    raise ListingFailed(f"{method.decode()} returned more than {MAX_PAGES} pages")


async def list_server(server: MCPServer, limit: float) -> ServerRecord:
    """A Connected catalog entry for the server, or an exception saying why there is none."""
    spec = server.spec
    assert spec.url is not None, "support.unsupported() keeps servers without a URL from being listed"
    pool = Pool(spec.url, connect_timeout=min(limit, spec.timeout))
    session = UpstreamSession(pool, wire_headers(spec.headers))
    deadline = asyncio.get_running_loop().time() + limit
    try:
        await session.ensure_open(deadline)
        init = session.initialize_result or {}
        caps = init.get("capabilities") or {}
        tools = await _list_all(session, b"tools/list", "tools", deadline) if "tools" in caps else []
        resources, templates, prompts = [], [], []
        if "resources" in caps:
            resources = await _list_all(session, b"resources/list", "resources", deadline)
            templates = await _list_all(session, b"resources/templates/list", "resourceTemplates", deadline)
        if "prompts" in caps:
            prompts = await _list_all(session, b"prompts/list", "prompts", deadline)
    finally:
        await session.close()
        pool.close()
    return ServerRecord(
        name=server.name,
        url=spec.url,
        state="Connected",
        protocol_version=session.protocol.decode(),
        server_info=init.get("serverInfo") or {},
        capabilities=caps,
        tools=tools,
        resources=resources,
        resource_templates=templates,
        prompts=prompts,
        headers=spec.headers or {},
        timeout=float(spec.timeout),
        spec=spec,
    )
