"""The Go muster's agent-facing surface, as pure logic over one catalog revision: meta-tools, families, core tools.

definitions.py  the 11 meta-tools as tools/list shows them in meta mode
handlers.py     run(name, arguments, catalog, backend): a meta-tool's result
catalog.py      ToolCatalog (built once per revision: names, labels, rank index), MetaCatalog (what a call reads)
filtering.py    filter_tools / list_core_tools: glob, substring, labels, BM25F, paging, projection
ranking.py      tokenizer and RankIndex (BM25F)
glob.py         Go's filepath.Match
content.py      how results are wrapped, and where binary data goes
families.py     assemble(entries): exposed tools and prompts with family collapsing, and their routes
core.py         core_mcpserver_list/get, core_auth_login/logout
auth_status.py  the auth://status resource
errors.py       RouteError (name or instance leads nowhere), CallFailed (routed, not answered)
"""
