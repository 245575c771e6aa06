"""What an agent tells muster outside any call that its own upstream sessions must hear: the logging level it set
(for the upstream sessions it has; a new one gets it as it opens) and that its roots changed (for every server,
each of which may want to ask for them again). Each goes through the server's queue as a call nobody waits for,
so that it reaches the agent session's own upstream session whichever worker reads it.
"""

import asyncio
import logging
import time

import orjson

from services.ingress.callers import Session
from services.ingress.calls import Calls
from shared import errors, streams
from shared.catalog import Catalog
from shared.messages import Call
from shared.valkey import Outbox

logger = logging.getLogger(__name__)

ROOTS_CHANGED = b"notifications/roots/list_changed"


class Notices:
    def __init__(self, calls: Calls, outbox: Outbox, replica: str, call_timeout: float) -> None:
        self.calls = calls
        self.outbox = outbox
        self.replica = replica.encode()
        self.call_timeout = call_timeout

    async def level(self, session: Session, level: str, catalog: Catalog) -> None:
        """The agent's log level, for the upstream sessions it has at servers that log."""
        bound = await self.outbox.send(b"HKEYS", streams.upstream_sessions(session.id))
        servers = [s.decode() for s in bound or ()]
        params = orjson.dumps({"level": level})
        await self._send(session, [s for s in servers if _logs(catalog, s)], b"logging/setLevel", params)

    async def roots_changed(self, session: Session, catalog: Catalog) -> None:
        """The agent's roots changed: every server hears it, in the agent session's own upstream session."""
        servers = [r.name for r in catalog.servers.values() if r.exposed and r.state == "Connected"]
        await self._send(session, servers, ROOTS_CHANGED, b"{}")

    async def _send(self, session: Session, servers: list[str], method: bytes, params: bytes) -> None:
        await asyncio.gather(*(self._enqueue(session, server, method, params) for server in servers))

    async def _enqueue(self, session: Session, server: str, method: bytes, params: bytes) -> None:
        call_id = self.calls.new_call_id()
        call = Call(
            call_id=call_id,
            replica=self.replica,
            session=session.session_id,
            principal=session.principal.encode(),
            server=server.encode(),
            method=method,
            params=params,
            deadline_ms=int((time.time() + self.call_timeout) * 1000),
            safe=True,
            key=b"~" + self.replica + b"/" + call_id,
        )
        try:
            await self.calls.submit(call)
        except errors.RetryLater as exc:  # best effort: a full queue has more pressing calls to run
            logger.warning("%s not passed on to %s: %s", method.decode(), server, exc.message)
        finally:
            self.calls.done(call_id)  # nobody waits for its outcome


def _logs(catalog: Catalog, server: str) -> bool:
    record = catalog.servers.get(server)
    return record is not None and "logging" in record.capabilities
