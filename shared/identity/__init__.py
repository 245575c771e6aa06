"""Identity: sealed token storage in Valkey, the upstream OIDC client, single-flight refresh, and the credentials
the worker sends to remote servers on a user's behalf (forwardToken, tokenExchange, per-server OAuth)."""
