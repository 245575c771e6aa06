"""The ingress: MCP Streamable HTTP in front, Valkey streams behind."""
