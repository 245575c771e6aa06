"""python -m demo.kubernetes --cluster NAME --port PORT: one stand-in management cluster on 127.0.0.1."""

import argparse
import json
import logging

import uvicorn

from demo.kubernetes.app import StandIn
from demo.kubernetes.auth import BearerCheck


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cluster", default="gazelle")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8101)
    parser.add_argument("--capi", action="store_true", help="federation mode: cluster argument and capi_* tools")
    parser.add_argument("--destructive", action="store_true", help="register delete and scale")
    parser.add_argument("--policy", help="JSON file: subject or group -> RBAC rules")
    parser.add_argument("--workload-clusters", default="", help="comma-separated workload cluster names")
    parser.add_argument("--oidc-issuer", help="validate bearer tokens: JWTs of this issuer (off by default)")
    parser.add_argument("--oidc-audience", action="append", default=[], help="an accepted audience (repeatable)")
    parser.add_argument(
        "--oauth-server", help="an OAuth-protected server of this authorization server: 401 with PRM, tokens for /mcp"
    )
    args = parser.parse_args()
    base = f"http://{args.host}:{args.port}"
    auth = None
    if args.oauth_server:
        auth = BearerCheck(args.oauth_server, [f"{base}/mcp"], base, protected=True)
    elif args.oidc_issuer:
        auth = BearerCheck(args.oidc_issuer, args.oidc_audience, base, protected=False)
    policy = json.load(open(args.policy)) if args.policy else None  # noqa: SIM115
    app = StandIn(
        args.cluster,
        capi_mode=args.capi,
        destructive=args.destructive,
        policy=policy,
        workload_clusters=[w for w in args.workload_clusters.split(",") if w],
        auth=auth,
    )
    logging.basicConfig(level=logging.WARNING)
    # At SIGTERM, requests still open (a tool made to hang) get 2 s: uvicorn's default waits for them for ever, and
    # whoever stops the stand-in then waits for its own bound before SIGKILL (a test's stack: 10 s).
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_level="warning",
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=2,
    )


if __name__ == "__main__":
    main()
