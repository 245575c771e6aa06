"""Probes adopt what was published before them, so that a restarted discovery changes nothing agents see."""

import asyncio
from pathlib import Path

import anyio
import pytest

from muster.stack import free_port
from services.discovery.config import DiscoverySettings
from services.discovery.probes import Probes
from shared.mcpserver import MCPServer, parse
from shared.messages import ServerRecord
from shared.valkey import Outbox

pytestmark = pytest.mark.anyio


def server(url: str) -> MCPServer:
    return parse(
        {
            "apiVersion": "muster.giantswarm.io/v1alpha1",
            "kind": "MCPServer",
            "metadata": {"name": "gazelle"},
            "spec": {"type": "streamable-http", "url": url, "family": {"name": "mc", "instanceArg": "cluster"}},
        }
    )


def published(spec_of: MCPServer) -> ServerRecord:
    return ServerRecord(
        name="gazelle",
        url=spec_of.spec.url or "",
        state="Connected",
        prefix="gazelle",
        exposed=False,  # as collisions left it: decided again after adoption
        error="collides",
        revision=7,
        tools=[{"name": "list", "inputSchema": {}}],
        spec=spec_of.spec,
    )


async def probes(tmp_path: Path, grace: float) -> Probes:
    settings = DiscoverySettings(servers=tmp_path, grace_seconds=grace, retry_max_seconds=0.2, list_timeout=1)
    return Probes(settings, Outbox("redis://127.0.0.1:1/0"))


async def test_a_new_probe_keeps_the_published_record_of_the_same_spec_through_its_grace(tmp_path: Path) -> None:
    down = server(f"http://127.0.0.1:{free_port()}/mcp")  # nothing listens: every listing fails
    p = await probes(tmp_path, grace=30)
    try:
        p.apply({"gazelle": down}, {"gazelle": published(down)})
        record = p.records()["gazelle"]
        assert record.state == "Connected" and record.tools == [{"name": "list", "inputSchema": {}}]
        assert record.exposed and record.family is not None and record.family.name == "mc"
        with anyio.fail_after(5):
            while p.probes["gazelle"].failures == 0:
                await asyncio.sleep(0.02)
        after = p.records()["gazelle"]
        assert after.state == "Connected" and after.error  # down, and within its grace: still listed
    finally:
        p.stop_all()


async def test_a_changed_spec_or_no_grace_does_not_keep_the_published_record(tmp_path: Path) -> None:
    down = server(f"http://127.0.0.1:{free_port()}/mcp")
    moved = server(f"http://127.0.0.1:{free_port()}/mcp")
    p = await probes(tmp_path, grace=0)
    try:
        p.apply({"gazelle": moved}, {"gazelle": published(down)})
        assert p.records()["gazelle"].state == "Connecting"
        p.stop_all()
        p.apply({"gazelle": down}, {"gazelle": published(down)})
        with anyio.fail_after(5):
            while p.probes["gazelle"].failures == 0:
                await asyncio.sleep(0.02)
        assert p.records()["gazelle"].state == "Failed"
    finally:
        p.stop_all()
