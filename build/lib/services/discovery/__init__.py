"""Discovery: turns MCPServer resources into the catalog the ingress and workers read."""
