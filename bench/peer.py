"""The peer gateway: the FastMCP proxy in front of one upstream, holding one connected upstream session that
every request reuses (its default opens a new upstream session per request, about 10x slower).

Runs under its own venv (.cache/peer, fastmcp pinned), not muster's:  python bench/peer.py UPSTREAM_URL PORT
"""

import asyncio
import sys

from fastmcp import Client
from fastmcp.server import create_proxy


async def main(upstream: str, port: int) -> None:
    async with Client(upstream) as client:
        proxy = create_proxy(client, name="peer")
        await proxy.run_async(transport="http", host="127.0.0.1", port=port, path="/mcp", log_level="warning")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
