"""Workers: consume calls from the per-server streams and execute them at the upstream MCP servers."""
