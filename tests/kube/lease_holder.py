"""One leader-election candidate as a process, for the SIGKILL test: prints `leader <holder> <monotonic time>`
and `standby <holder> <time>` each time its leadership changes.

    python -m tests.kube.lease_holder --url http://127.0.0.1:N --holder NAME
"""

import argparse
import asyncio
import time

from kubernetes.aio import client

from services.discovery.lease_k8s import KubernetesLease


async def main(url: str, holder: str) -> None:
    async with client.ApiClient(client.Configuration(host=url)) as api:
        lease = KubernetesLease(api, "muster", "muster-discovery", holder)  # the production timings
        leading = False
        print(f"started {holder} {time.monotonic():.3f}", flush=True)
        while True:
            await lease.renew()
            if lease.is_leader != leading:
                leading = lease.is_leader
                print(f"{'leader' if leading else 'standby'} {holder} {time.monotonic():.3f}", flush=True)
            await asyncio.sleep(lease.retry_period)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--holder", required=True)
    args = parser.parse_args()
    asyncio.run(main(args.url, args.holder))
