"""The test Kubernetes API server (tests/kube/apiserver.py) as a process on 127.0.0.1, and a handle on it."""

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml
from kubernetes.aio import watch

from muster.stack import free_port

ROOT = Path(__file__).resolve().parents[2]
MCPSERVERS = ("muster.giantswarm.io", "v1alpha1", "mcpservers")


@dataclass
class FakeApi:
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def faults(self, **spec: Any) -> dict[str, Any]:
        response = httpx.post(f"{self.url}/_fake/faults", json=spec)
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def reset(self) -> None:
        httpx.post(f"{self.url}/_fake/reset").raise_for_status()

    def clear_faults(self) -> None:
        httpx.delete(f"{self.url}/_fake/faults").raise_for_status()

    def stats(self) -> dict[str, Any]:
        response = httpx.get(f"{self.url}/_fake/stats")
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def reset_counts(self) -> None:
        httpx.delete(f"{self.url}/_fake/stats").raise_for_status()

    def count(self, verb: str, path_contains: str = "") -> int:
        return sum(
            n for key, n in self.stats()["requests"].items() if key.startswith(f"{verb} ") and path_contains in key
        )

    async def wait_watches(self, at_least: int = 1, within: float = 10.0) -> None:
        """Waits (without blocking the event loop the watching code runs on) for the client to be watching."""
        deadline = time.monotonic() + within
        while self.stats()["watches"] < at_least:
            if time.monotonic() > deadline:
                raise AssertionError(f"fewer than {at_least} open watches after {within} s")
            await asyncio.sleep(0.02)

    def kubeconfig(self, directory: Path, namespace: str = "muster") -> Path:
        path = directory / f"kubeconfig-{self.port}"
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "test", "cluster": {"server": self.url}}],
            "users": [{"name": "test", "user": {"token": "test-token"}}],
            "contexts": [{"name": "test", "context": {"cluster": "test", "user": "test", "namespace": namespace}}],
            "current-context": "test",
        }
        path.write_text(yaml.safe_dump(config))
        return path

    # Plain HTTP for arranging a test; the code under test uses the official client.
    def create(self, obj: dict[str, Any], namespace: str = "muster") -> dict[str, Any]:
        return self._call("POST", _path(obj, namespace), obj)

    def replace(self, obj: dict[str, Any], namespace: str = "muster") -> dict[str, Any]:
        return self._call("PUT", _path(obj, namespace, obj["metadata"]["name"]), obj)

    def get(self, name: str, namespace: str = "muster") -> dict[str, Any]:
        return self._call("GET", _path(mcpserver(name, ""), namespace, name))

    def patch_spec(self, name: str, spec: dict[str, Any], namespace: str = "muster") -> dict[str, Any]:
        path = _path(mcpserver(name, ""), namespace, name)
        return self._call("PATCH", path, {"spec": spec}, "application/merge-patch+json")

    def lease(self, name: str = "muster-discovery", namespace: str = "muster") -> dict[str, Any] | None:
        response = httpx.get(f"{self.url}/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/{name}")
        if response.status_code == 404:
            return None
        response.raise_for_status()
        lease: dict[str, Any] = response.json()
        return lease

    def delete(self, name: str, namespace: str = "muster") -> dict[str, Any]:
        return self._call("DELETE", _path(mcpserver(name, ""), namespace, name))

    def _call(self, method: str, path: str, body: Any = None, content_type: str = "application/json") -> dict[str, Any]:
        response = httpx.request(
            method, f"{self.url}{path}", json=body, headers={"Content-Type": content_type} if body else {}
        )
        response.raise_for_status()
        answer: dict[str, Any] = response.json()
        return answer


def _path(obj: dict[str, Any], namespace: str, name: str | None = None) -> str:
    api_version = obj["apiVersion"]
    plural = {"MCPServer": "mcpservers", "Lease": "leases", "Secret": "secrets"}[obj["kind"]]
    base = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
    return f"{base}/namespaces/{namespace}/{plural}" + (f"/{name}" if name else "")


def mcpserver(name: str, url: str = "http://127.0.0.1:9/mcp", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "muster.giantswarm.io/v1alpha1",
        "kind": "MCPServer",
        "metadata": {"name": name},
        "spec": {"type": "streamable-http", "url": url, **spec},
    }


@asynccontextmanager
async def watching(
    list_call: Callable[..., Any], *args: Any, **kwargs: Any
) -> AsyncIterator[AsyncIterator[dict[str, Any]]]:
    """The asyncio client's watch of `list_call(*args, **kwargs)`, closed on the way out.

    The client marks itself typed but leaves `Watch` unannotated; the ignores stay here, not in every test.
    """
    w = watch.Watch()  # type: ignore[no-untyped-call]
    try:
        yield w.stream(list_call, *args, **kwargs)  # type: ignore[no-untyped-call]
    finally:
        await w.close()  # type: ignore[no-untyped-call]


@contextmanager
def running_apiserver() -> Iterator[FakeApi]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.kube.apiserver", "--port", str(port)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the test API server exited with {process.returncode}")
            try:
                httpx.get(f"http://127.0.0.1:{port}/_fake/stats", timeout=1).raise_for_status()
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield FakeApi(port)
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
