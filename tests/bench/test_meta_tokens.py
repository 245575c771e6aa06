"""The meta-mode measurement runs, finds the task's tool every way, and docs/meta-tools.md shows its current table."""

import orjson
import pytest

from bench import meta_tokens
from shared.meta.catalog import MetaCatalog, ToolCatalog
from shared.meta.families import assemble
from shared.meta.handlers import run
from tests.conftest import ROOT


@pytest.mark.anyio
async def test_the_table_in_the_docs_is_what_the_measurement_gives_now() -> None:
    table = await meta_tokens.report()
    doc = (ROOT / "docs" / "meta-tools.md").read_text()
    start, end = doc.index(meta_tokens.DOC_START) + len(meta_tokens.DOC_START), doc.index(meta_tokens.DOC_END)
    assert doc[start:end] == table, "run: python -m bench.meta_tokens --docs docs/meta-tools.md"


@pytest.mark.anyio
async def test_the_table_in_the_readme_is_what_the_measurement_gives_now() -> None:
    table = await meta_tokens.readme_table()
    readme = (ROOT / "README.md").read_text()
    start = readme.index(meta_tokens.README_START) + len(meta_tokens.README_START)
    end = readme.index(meta_tokens.DOC_END, start)
    assert readme[start:end] == table, "run: python -m bench.meta_tokens --readme README.md"


@pytest.mark.anyio
async def test_every_mode_runs_the_task_on_the_cluster_it_names() -> None:
    rows = await meta_tokens.measure_all(meta_tokens.QUERIES[0])
    assert len(rows) == 12 and all("never" not in r.found for r in rows)
    meta_lists = {r.definitions.wire for r in rows if r.mode.startswith("meta")}
    assert len(meta_lists) == 1  # the 11 meta-tools, whatever the catalogue
    synthetic = {r.mode: r for r in rows if r.catalogue.startswith("synthetic")}
    assert synthetic["direct, per-server names"].definitions.wire > 4 * synthetic["direct, families"].definitions.wire


@pytest.mark.anyio
async def test_call_tool_carries_the_same_upstream_answer_as_the_direct_call() -> None:
    exposure = assemble(meta_tokens.DEMO.servers(families=True))
    backend = meta_tokens._Backend(exposure.routes)
    arguments = {"resourceType": "pods", "namespace": "org-acme", "management_cluster": "k8s-graveler"}
    direct = await backend.call_tool("x_mc_list", dict(arguments), None)
    wrapped = await run(
        "call_tool", {"name": "x_mc_list", "arguments": arguments}, MetaCatalog(ToolCatalog(exposure.tools)), backend
    )
    envelope = orjson.loads(wrapped["content"][0]["text"])
    assert envelope["content"][0]["text"] == direct["content"][0]["text"]
    assert "CrashLoopBackOff" in direct["content"][0]["text"]  # graveler's crash-looping pod, not gazelle's pods
