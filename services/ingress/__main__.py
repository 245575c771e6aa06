import resource

import uvicorn

from services.ingress.app import create_app
from services.ingress.config import IngressSettings
from services.ingress.guard import Limits, guarded
from shared import logs


def _more_descriptors() -> None:
    # Every connection is a descriptor; the soft limit is often 1,024 where the hard one allows far more.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard if hard != resource.RLIM_INFINITY else 65536, hard))


def main() -> None:
    settings = IngressSettings()
    logs.configure("ingress", settings.log_level, settings.log_json)
    _more_descriptors()
    limits = Limits(
        idle_timeout=settings.idle_timeout,
        header_timeout=settings.header_timeout,
        body_timeout=settings.body_timeout,
        write_timeout=settings.write_timeout,
        max_head_bytes=settings.max_head_bytes,
        max_connections=settings.max_connections,
    )
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http=guarded(limits),  # httptools, with bounds on every connection (guard.py)
        lifespan="on",
        access_log=settings.access_log,
        log_config=None,
        timeout_graceful_shutdown=10,
        timeout_keep_alive=max(1, round(settings.idle_timeout)),
        proxy_headers=False,  # the ingress reads no client address; the middleware costs on every request
        server_header=False,
        backlog=4096,
    )


if __name__ == "__main__":
    main()
