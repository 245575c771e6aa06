# One image for every muster service; the command picks it (muster/container.py):
#   docker run muster:0.1.0 ingress | worker | discovery | demo --cluster NAME --port N --host 0.0.0.0
# The base is pinned to an exact release; its wheels (hiredis, uvloop, httptools, orjson) need no compiler.
FROM python:3.11.14-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY shared shared
COPY services services
COPY muster muster
COPY demo demo
RUN python -m venv /opt/muster && /opt/muster/bin/pip install --no-compile .

FROM python:3.11.14-slim-bookworm
RUN groupadd --system --gid 10001 muster && useradd --system --uid 10001 --gid 10001 --no-create-home muster
COPY --from=build /opt/muster /opt/muster
ENV PATH=/opt/muster/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
# Worker and discovery serve /metrics, /healthz and /readyz on 9090 in a container (0, off, elsewhere).
ENV MUSTER_WORKER_METRICS_HOST=0.0.0.0 MUSTER_WORKER_METRICS_PORT=9090 \
    MUSTER_DISCOVERY_METRICS_HOST=0.0.0.0 MUSTER_DISCOVERY_METRICS_PORT=9090
# Non-root, and nothing to write outside /tmp: the pods run with a read-only root filesystem.
USER 10001:10001
WORKDIR /tmp
EXPOSE 8090 9090
ENTRYPOINT ["python", "-m", "muster.container"]
CMD ["ingress"]
