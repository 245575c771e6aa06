"""One call at its upstream: the session it runs in (the agent session's own, or a shared one: agents.py), the
request, and what each way of failing means for the caller (retry later, outcome unknown, deadline exceeded). A
call that is not safe to run twice is sent again only where it certainly never reached the upstream."""

import asyncio
import logging

import orjson
from redis.exceptions import RedisError

from services.worker.agents import AgentSessions
from services.worker.identity import refusal
from services.worker.relays import Relays
from services.worker.telemetry import CallClock, Telemetry
from services.worker.upstream import Bound, ForeignSession, UnknownServer, Upstream
from shared import errors
from shared.http1 import ConnectFailed, ConnectionLost, HttpError, MalformedResponse, ResponseTooLarge, Timeout
from shared.identity.errors import IdentityError
from shared.lifecycle import Background
from shared.messages import Call, ReplyKind
from shared.resp import ConnectionClosed
from shared.upstream import Outcome as Answered
from shared.upstream import SessionLost, StatusError, UpstreamFailure, UpstreamSession

logger = logging.getLogger(__name__)

Outcome = tuple[ReplyKind, bytes]
RETRY_AFTER = 5.0  # the default of WorkerSettings.retry_after
BUSY = (429, 502, 503, 504)
# Calls that nobody's request from the upstream can be about: they are not recorded as running.
UNWATCHED = frozenset({b"logging/setLevel"})


class Unauthorized(Exception):
    """The upstream answered 401 to what was sent with `sent` as Authorization: the call did not run."""

    def __init__(self, sent: bytes | None) -> None:
        super().__init__("the upstream answered 401")
        self.sent = sent


class NotOpened(Exception):
    """No session could be had for the call: `outcome` is its answer."""

    def __init__(self, outcome: "Outcome") -> None:
        super().__init__("no upstream session")
        self.outcome = outcome


def _unauthorized(exc: Exception) -> bool:
    return isinstance(exc, StatusError) and exc.status == 401


def _unavailable(server: str, exc: Exception, fallback: float, retry_after: float | None = None) -> Outcome:
    """`retry_after`: what the upstream asked for; `fallback` (from settings) when it asked for nothing."""
    return ReplyKind.ERROR, errors.UpstreamUnavailable(f"{server}: {exc}", retry_after or fallback).body()


def _not_opened(server: str, exc: Exception, fallback: float) -> Outcome:
    """No session to send the call in: the call itself was not sent, so it is safe to say "later"."""
    if isinstance(exc, Timeout) and not isinstance(exc, ConnectFailed):  # a connect timeout: unavailable
        return ReplyKind.ERROR, errors.DeadlineExceeded(f"{server} did not open a session before the deadline").body()
    if isinstance(exc, ResponseTooLarge):
        return _too_large(server, exc)
    return _unavailable(server, exc, fallback, exc.retry_after if isinstance(exc, StatusError) else None)


def _too_large(server: str, exc: ResponseTooLarge) -> Outcome:
    return ReplyKind.ERROR, errors.ResultTooLarge(
        f"{server} answered with more than muster carries ({exc.value} bytes, {exc.limit}); the call may have run",
        {"limit": exc.value},
    ).body()


def _failed(server: str, call: Call, attempt: int, exc: Exception, fallback: float) -> Outcome | None:
    """What a failed request means for its caller; None: send it again."""
    if isinstance(exc, SessionLost):
        return None  # the upstream refused the session, not the call: open a new one and send again
    if isinstance(exc, ConnectionLost):
        if not exc.sent or (call.safe and attempt == 1):  # not sent, or safe to send again: once more
            return None
        if call.safe:
            return _unavailable(server, exc, fallback)
        return ReplyKind.ERROR, errors.OutcomeUnknown(
            f"the connection to {server} broke during the call; it may have run"
        ).body()
    if isinstance(exc, StatusError):
        if exc.status in BUSY:
            return _unavailable(server, exc, fallback, exc.retry_after)
        return ReplyKind.ERROR, errors.UpstreamUnavailable(
            f"{server}: {exc}", exc.retry_after or fallback, {"status": exc.status}
        ).body()
    if isinstance(exc, ConnectFailed):  # not sent: safe to say "later"
        return _unavailable(server, exc, fallback)
    if isinstance(exc, ResponseTooLarge):
        return _too_large(server, exc)
    return ReplyKind.ERROR, errors.InternalError(
        f"{server} answered with something that is not a response: {exc}"
    ).body()


# MalformedResponse, ResponseTooLarge: it answered, but not usably.
OPEN_FAILURES = (
    ConnectFailed, ConnectionLost, StatusError, UpstreamFailure, UnknownServer, Timeout, MalformedResponse,
    ResponseTooLarge,
)  # fmt: skip
# UpstreamFailure: SessionLost, StatusError too
REQUEST_FAILURES = (ConnectionLost, ConnectFailed, UpstreamFailure, MalformedResponse, ResponseTooLarge)


class Executor:
    def __init__(
        self,
        relays: Relays,
        background: Background,
        agents: AgentSessions,
        telemetry: Telemetry | None = None,
        retry_after: float = RETRY_AFTER,
    ) -> None:
        self.relays = relays
        self.retry_after = retry_after
        self.background = background
        self.agents = agents
        self.telemetry = telemetry if telemetry is not None else Telemetry.detached()

    async def execute(self, upstream: Upstream, call: Call, deadline: float, clock: CallClock | None = None) -> Outcome:
        """The call's outcome at the upstream. Cancelled (by the caller), it tells the upstream so and re-raises.

        A 401 (the call did not run) gets one more attempt with the refused credential set aside (refreshed or
        exchanged again), then the caller's AuthRequired; a transport failure is never taken for an auth failure.
        """
        running: Bound | None = None
        refreshed = False
        try:
            for attempt in (1, 2, 3):
                try:
                    session, bound = await self._session(upstream, call, deadline)
                    if call.method.startswith(b"notifications/"):
                        outcome = await self._notify(upstream.name, call, session, bound is not None, deadline)
                    else:
                        if bound is not None and running is None and self._watched(upstream, call):
                            running = bound  # where the upstream's requests on its GET stream find this call
                            self.agents.bindings.running(upstream.name, bound, call, asyncio.get_running_loop().time())
                        outcome = await self._request(upstream.name, call, session, attempt, deadline, clock)
                except NotOpened as exc:
                    return exc.outcome
                except IdentityError as exc:
                    return ReplyKind.ERROR, refusal(upstream.name, exc)
                except Unauthorized as exc:
                    if refreshed or not self._set_aside(upstream, call, exc.sent):
                        return ReplyKind.ERROR, await self._refused(upstream, call)
                    refreshed = True
                    continue
                if outcome is not None:
                    return outcome
        finally:
            if running is not None:
                self.agents.bindings.finished(running, call)
        return ReplyKind.ERROR, errors.UpstreamUnavailable(
            f"{upstream.name} keeps rejecting new sessions", self.retry_after
        ).body()

    async def _session(self, upstream: Upstream, call: Call, deadline: float) -> tuple[UpstreamSession, Bound | None]:
        """The open session the call runs in, carrying its user's credential, and its binding when it is the agent
        session's own. NotOpened: the call's outcome without one; Unauthorized: a 401 to the handshake."""
        authorization = await upstream.authorization(call)
        try:
            return await self.agents.session(upstream, call, deadline, authorization)
        except ForeignSession as exc:
            raise NotOpened((ReplyKind.ERROR, errors.InvalidRequest(str(exc)).body())) from exc
        except (RedisError, ConnectionClosed) as exc:  # its binding could not be read or written
            body = errors.ServiceUnavailable(f"muster cannot reach Valkey: {exc}", 1).body()
            raise NotOpened((ReplyKind.ERROR, body)) from exc
        except OPEN_FAILURES as exc:
            if _unauthorized(exc):
                raise Unauthorized(authorization) from exc
            if not isinstance(exc, UnknownServer):
                self.telemetry.connect_error(upstream.name, exc)
            raise NotOpened(_not_opened(upstream.name, exc, self.retry_after)) from exc

    @staticmethod
    def _watched(upstream: Upstream, call: Call) -> bool:
        """Whether a request the upstream sends outside the call could be about it: not where the upstream has no
        GET stream to send it on, nor for a call nobody waits for."""
        return upstream.streams_after <= asyncio.get_running_loop().time() and call.method not in UNWATCHED

    async def _request(
        self, server: str, call: Call, session: UpstreamSession, attempt: int, deadline: float, clock: CallClock | None
    ) -> Outcome | None:
        """One attempt; None: send it again, in a new session."""
        upstream_id = session.next_id()
        try:
            outcome = await self._send(server, call, session, upstream_id, deadline, clock)
        except asyncio.CancelledError:
            self.cancel_upstream(session, upstream_id, "cancelled by the client")
            raise
        except ConnectFailed as exc:  # not sent, also when connecting timed out: safe to say "later"
            return _unavailable(server, exc, self.retry_after)
        except Timeout:
            self.cancel_upstream(session, upstream_id, "deadline exceeded")
            return ReplyKind.ERROR, errors.DeadlineExceeded(
                f"{server} did not answer before the call's deadline"
            ).body()
        except REQUEST_FAILURES as exc:
            if _unauthorized(exc):
                raise Unauthorized(session.authorization) from exc
            return _failed(server, call, attempt, exc, self.retry_after)
        return (ReplyKind.ERROR if outcome.error else ReplyKind.RESULT), outcome.body

    async def _send(
        self,
        server: str,
        call: Call,
        session: UpstreamSession,
        upstream_id: int,
        deadline: float,
        clock: CallClock | None,
    ) -> Answered:
        """One request of the call, timed and counted (telemetry.py), with the call's traceparent."""
        request = self.telemetry.request(server, call, session.protocol, clock)
        try:
            answered = await session.request(
                call.method,
                call.params,
                deadline,
                self.relays.on_message(call, session),
                request_id=upstream_id,
                headers=request.headers,
            )
        except BaseException as exc:
            request.failed(exc)
            raise
        request.answered(answered)
        return answered

    async def _notify(
        self, server: str, call: Call, session: UpstreamSession, own: bool, deadline: float
    ) -> Outcome | None:
        """An agent's notification for its upstream sessions (roots/list_changed): sent in the agent session's own
        session; a shared session is nobody's to tell."""
        if not own:
            return ReplyKind.RESULT, b"{}"
        try:
            await session.notify(call.method, call.params, deadline)
        except SessionLost:
            return None
        except (*REQUEST_FAILURES, Timeout) as exc:
            return _unavailable(server, exc, self.retry_after)
        return ReplyKind.RESULT, b"{}"

    @staticmethod
    def _set_aside(upstream: Upstream, call: Call, sent: bytes | None) -> bool:
        """After a 401: sets the refused credential aside; False when there is none to replace."""
        if upstream.identity is None or sent is None:
            return False
        upstream.identity.reject(upstream.record, call, sent)
        return True

    @staticmethod
    async def _refused(upstream: Upstream, call: Call) -> bytes:
        if upstream.identity is None:
            message = f"{upstream.name} asks for a login, and muster runs without sign-in"
            return errors.AuthRequired(message, upstream.name).body()
        return await upstream.identity.refused(upstream.record, call)

    def cancel_upstream(self, session: UpstreamSession, upstream_id: int, reason: str) -> None:
        """Tells the upstream to stop a request, in the background: the caller's outcome does not wait for it."""
        params = orjson.dumps({"requestId": upstream_id, "reason": reason})
        self.background.spawn(_notify_cancelled(session, params))


async def _notify_cancelled(session: UpstreamSession, params: bytes) -> None:
    try:
        await session.notify(b"notifications/cancelled", params, asyncio.get_running_loop().time() + 5)
    except (HttpError, UpstreamFailure, OSError) as exc:  # the call has its outcome; this was a courtesy
        logger.info("telling the upstream about a cancellation failed: %s", exc)
