"""python -m demo.kubernetes --cluster NAME --port PORT: one stand-in management cluster on 127.0.0.1."""

import argparse
import json
import logging

import uvicorn

from demo.kubernetes.app import StandIn


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cluster", default="gazelle")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8101)
    parser.add_argument("--capi", action="store_true", help="federation mode: cluster argument and capi_* tools")
    parser.add_argument("--destructive", action="store_true", help="register delete and scale")
    parser.add_argument("--policy", help="JSON file: subject or group -> RBAC rules")
    parser.add_argument("--workload-clusters", default="", help="comma-separated workload cluster names")
    args = parser.parse_args()
    policy = json.load(open(args.policy)) if args.policy else None  # noqa: SIM115
    app = StandIn(
        args.cluster,
        capi_mode=args.capi,
        destructive=args.destructive,
        policy=policy,
        workload_clusters=[w for w in args.workload_clusters.split(",") if w],
    )
    logging.basicConfig(level=logging.WARNING)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False, lifespan="on")


if __name__ == "__main__":
    main()
