"""The official MCP conformance suite, run against an upstream directly and through muster in prefix mode
`never`, in one test: muster must pass every scenario the upstream passes on its own."""

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from muster.stack import free_port
from tests.conformance import tools
from tests.conftest import Muster, make_muster, tool_names

pytestmark = pytest.mark.slow

SUMMARY = re.compile(r"^([✓✗]) (\S+): (\d+) passed, (\d+) failed$", re.MULTILINE)


@pytest.fixture(scope="module", autouse=True)
def npm_tools() -> None:
    tools.ensure()


def run_suite(url: str, out: Path) -> dict[str, bool]:
    """Scenario -> passed (no check failed), from the suite's summary."""
    done = subprocess.run(
        [str(tools.NODE), str(tools.CONFORMANCE), "server", "--url", url, "--suite", "all", "-o", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    results = {name: mark == "✓" for mark, name, _, _ in SUMMARY.findall(done.stdout)}
    assert len(results) >= 30, done.stdout[-2000:] + done.stderr[-2000:]
    return results


@pytest.fixture(params=["fixture", "server-everything"])
def upstream(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Muster, str]]:
    for m in make_muster(tmp_path):
        if request.param == "fixture":
            url = m.fixture_server().url
        else:
            port = free_port()
            command = [str(tools.NODE), "--require", str(tools.LOOPBACK), str(tools.EVERYTHING), "streamableHttp"]
            m.stack.start("server-everything", command, {"PORT": str(port)}, quiet=True)
            m.stack.wait_tcp(port, "server-everything")
            url = f"http://127.0.0.1:{port}/mcp"
            m.register("everything", url)
        m.discovery(prefix_mode="never")
        m.worker()
        m.ingress()
        m.wait_tools(set(tool_names(url)), timeout=20)  # an upstream may offer more to muster, which declares more
        yield m, url


def test_muster_passes_every_scenario_the_upstream_passes_directly(
    upstream: tuple[Muster, str], tmp_path: Path
) -> None:
    m, url = upstream
    direct = run_suite(url, tmp_path / "direct")
    through = run_suite(m.url(), tmp_path / "muster")
    table = "\n".join(
        f"{name:34} direct {'pass' if ok else 'FAIL'}   muster {'pass' if through.get(name) else 'FAIL'}"
        for name, ok in sorted(direct.items())
    )
    print(f"\nconformance through muster, upstream {url}\n{table}")
    lost = sorted(name for name, ok in direct.items() if ok and not through.get(name))
    assert lost == [], f"scenarios the upstream passes but muster fails: {lost}"
    if "fixture" in m.standins:
        assert all(direct.values()) and len(direct) == 32, "the Python fixture server must pass the whole suite"
