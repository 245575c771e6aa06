"""One call at its upstream: the session it runs in (the agent session's own, or a shared one: agents.py), the
request, and what each way of failing means for the caller (retry later, outcome unknown, deadline exceeded). A
failed request is sent again, after a jittered backoff and within the call's deadline, only where that is safe:
the call is read-only or idempotent, or it certainly never reached the upstream. Every attempt tells the
server's circuit breaker how it went. A 401 (the call did not run) gets one more attempt with the refused
credential set aside (refreshed or exchanged again), then the caller's AuthRequired."""

import asyncio
import logging
import random
from dataclasses import dataclass

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


@dataclass(frozen=True, slots=True)
class Failed:
    """One attempt that failed: what the caller gets if there is no other, and whether there may be one."""

    outcome: "Outcome"
    again: bool  # the request certainly did not reach the upstream, or the call is safe to repeat
    at_once: bool = False  # a stale session or pooled connection, not a sick upstream: no backoff


class Unauthorized(Exception):
    """The upstream answered 401 to what was sent with `sent` as Authorization: the call did not run."""

    def __init__(self, sent: bytes | None) -> None:
        super().__init__("the upstream answered 401")
        self.sent = sent


class NotOpened(Exception):
    """No session could be had for the call: `outcome` is its answer, or the failed attempt."""

    def __init__(self, outcome: "Outcome | Failed") -> None:
        super().__init__("no upstream session")
        self.outcome = outcome


def _unauthorized(exc: Exception) -> bool:
    return isinstance(exc, StatusError) and exc.status == 401


def _unavailable(server: str, exc: object, fallback: float, retry_after: float | None = None) -> Outcome:
    """`retry_after`: what the upstream asked for; `fallback` (from settings) when it asked for nothing."""
    return ReplyKind.ERROR, errors.UpstreamUnavailable(f"{server}: {exc}", retry_after or fallback).body()


def _down(exc: Exception) -> bool:
    """Whether a failure says the upstream is down, as its circuit breaker counts."""
    if isinstance(exc, ConnectionLost):
        return exc.received or not exc.reused  # not the race of a pooled connection the server just closed
    if isinstance(exc, StatusError):
        return exc.status >= 500
    return isinstance(exc, (ConnectFailed, Timeout))


def _not_opened(server: str, exc: Exception, fallback: float) -> Failed:
    """No session to send the call in: the call itself was not sent, so it may go again, or the caller may."""
    if isinstance(exc, Timeout) and not isinstance(exc, ConnectFailed):  # the deadline passed while opening
        return Failed(
            (ReplyKind.ERROR, errors.DeadlineExceeded(f"{server} did not open a session before the deadline").body()),
            again=False,
        )
    if isinstance(exc, ResponseTooLarge):
        return Failed(_too_large(server, exc), again=False)
    retry_after = exc.retry_after if isinstance(exc, StatusError) else None
    again = not isinstance(exc, UnknownServer) and not (isinstance(exc, StatusError) and exc.status < 500)
    return Failed(_unavailable(server, exc, fallback, retry_after), again=again)


def _too_large(server: str, exc: ResponseTooLarge) -> Outcome:
    return ReplyKind.ERROR, errors.ResultTooLarge(
        f"{server} answered with more than muster carries ({exc.value} bytes, {exc.limit}); the call may have run",
        {"limit": exc.value},
    ).body()


def _failed(server: str, call: Call, exc: Exception, fallback: float) -> Failed:
    """What a failed request means for its caller, and whether it may be sent again."""
    if isinstance(exc, SessionLost):  # the upstream refused the session, not the call: open a new one
        body = errors.UpstreamUnavailable(f"{server} keeps rejecting new sessions", fallback).body()
        return Failed((ReplyKind.ERROR, body), again=True, at_once=True)
    if isinstance(exc, ConnectFailed):  # not sent: safe to say "later", and to try again
        return Failed(_unavailable(server, exc, fallback), again=True)
    if isinstance(exc, ConnectionLost):
        stale = exc.reused and not exc.received
        if not exc.sent or call.safe:
            return Failed(_unavailable(server, exc, fallback), again=True, at_once=stale)
        body = errors.OutcomeUnknown(f"the connection to {server} broke during the call; it may have run").body()
        return Failed((ReplyKind.ERROR, body), again=False)
    if isinstance(exc, StatusError):
        if exc.status in BUSY:
            return Failed(_unavailable(server, exc, fallback, exc.retry_after), again=call.safe and exc.status != 429)
        body = errors.UpstreamUnavailable(
            f"{server}: {exc}", exc.retry_after or fallback, {"status": exc.status}
        ).body()
        return Failed((ReplyKind.ERROR, body), again=call.safe and exc.status >= 500)
    if isinstance(exc, ResponseTooLarge):
        return Failed(_too_large(server, exc), again=False)
    body = errors.InternalError(f"{server} answered with something that is not a response: {exc}").body()
    return Failed((ReplyKind.ERROR, body), again=False)


# MalformedResponse, ResponseTooLarge: it answered, but not usably.
OPEN_FAILURES = (
    ConnectFailed, ConnectionLost, StatusError, UpstreamFailure, UnknownServer, Timeout, MalformedResponse,
    ResponseTooLarge,
)  # fmt: skip
# UpstreamFailure: SessionLost, StatusError too
REQUEST_FAILURES = (ConnectionLost, ConnectFailed, UpstreamFailure, MalformedResponse, ResponseTooLarge)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Attempts per call, and the jittered exponential backoff between them."""

    attempts: int = 3
    backoff: float = 0.1
    max_backoff: float = 2.0

    def delay(self, attempt: int) -> float:
        base: float = min(self.max_backoff, self.backoff * 2 ** (attempt - 1))
        return base * random.uniform(0.5, 1.5)


class Executor:
    def __init__(
        self,
        relays: Relays,
        background: Background,
        agents: AgentSessions,
        telemetry: Telemetry | None = None,
        retry_after: float = RETRY_AFTER,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.relays = relays
        self.retry_after = retry_after
        self.background = background
        self.agents = agents
        self.telemetry = telemetry if telemetry is not None else Telemetry.detached()
        self.retry = retry or RetryPolicy()
        self.retries = 0

    async def execute(self, upstream: Upstream, call: Call, deadline: float, clock: CallClock | None = None) -> Outcome:
        """The call's outcome at the upstream, sent again where that is safe, with backoff, within its deadline.
        Cancelled (by the caller), it tells the upstream so and re-raises."""
        running: list[Bound] = []  # the agent's upstream session the call is recorded as running in
        attempt = 0
        refreshed = False  # a 401 was answered by setting the credential aside once
        try:
            while True:
                wait = upstream.breaker.admit()
                if wait is not None:
                    why = "not sent: its circuit is open after repeated failures"
                    return _unavailable(upstream.name, why, self.retry_after, max(0.1, round(wait, 1)))
                attempt += 1
                try:
                    result = await self._attempt(upstream, call, deadline, clock, running)
                except IdentityError as exc:
                    return ReplyKind.ERROR, refusal(upstream.name, exc)
                except Unauthorized as exc:
                    if refreshed or not self._set_aside(upstream, call, exc.sent):
                        return ReplyKind.ERROR, await self._refused(upstream, call)
                    refreshed = True
                    continue
                if not isinstance(result, Failed):
                    return result
                delay = self._again(upstream, call, result, attempt, deadline)
                if delay is None:
                    return result.outcome
                if delay:
                    await asyncio.sleep(delay)
        finally:
            for bound in running:
                self.agents.bindings.finished(bound, call)

    async def _attempt(
        self, upstream: Upstream, call: Call, deadline: float, clock: CallClock | None, running: list[Bound]
    ) -> Outcome | Failed:
        """One attempt: the session the call runs in, then its request (or notification) there."""
        try:
            session, bound = await self._session(upstream, call, deadline)
        except NotOpened as exc:
            return exc.outcome
        if call.method.startswith(b"notifications/"):
            return await self._notify(upstream.name, call, session, bound is not None, deadline)
        if bound is not None and not running and self._watched(upstream, call):
            running.append(bound)  # where the upstream's requests on its GET stream find this call
            self.agents.bindings.running(upstream.name, bound, call, asyncio.get_running_loop().time())
        return await self._request(upstream, call, session, deadline, clock)

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
                upstream.breaker.succeeded()  # it answered
                raise Unauthorized(authorization) from exc
            if not isinstance(exc, UnknownServer):
                self.telemetry.connect_error(upstream.name, exc)
            if _down(exc):
                upstream.breaker.failed(exc)
            raise NotOpened(_not_opened(upstream.name, exc, self.retry_after)) from exc

    def _again(self, upstream: Upstream, call: Call, failed: Failed, attempt: int, deadline: float) -> float | None:
        """How long to wait before sending the call again; None: it is not sent again."""
        limit = max(self.retry.attempts, 3) if failed.at_once else self.retry.attempts
        delay = 0.0 if failed.at_once else self.retry.delay(attempt)
        if not failed.again or attempt >= limit or asyncio.get_running_loop().time() + delay >= deadline:
            return None
        self.retries += 1
        logger.info(
            "call %s to %s failed (attempt %d of %d); sending it again in %.2f s",
            call.call_id.decode(),
            upstream.name,
            attempt,
            limit,
            delay,
        )
        return delay

    @staticmethod
    def _watched(upstream: Upstream, call: Call) -> bool:
        """Whether a request the upstream sends outside the call could be about it: not where the upstream has no
        GET stream to send it on, nor for a call nobody waits for."""
        return upstream.streams_after <= asyncio.get_running_loop().time() and call.method not in UNWATCHED

    async def _request(
        self, upstream: Upstream, call: Call, session: UpstreamSession, deadline: float, clock: CallClock | None
    ) -> Outcome | Failed:
        """One attempt, told to the server's circuit breaker."""
        server, breaker = upstream.name, upstream.breaker
        upstream_id = session.next_id()
        try:
            answered = await self._send(server, call, session, upstream_id, deadline, clock)
        except asyncio.CancelledError:
            self.cancel_upstream(session, upstream_id, "cancelled by the client")
            raise
        except ConnectFailed as exc:  # not sent, also when connecting timed out
            breaker.failed(exc)
            return _failed(server, call, exc, self.retry_after)
        except Timeout as exc:
            breaker.failed(exc)
            self.cancel_upstream(session, upstream_id, "deadline exceeded")
            body = errors.DeadlineExceeded(f"{server} did not answer before the call's deadline").body()
            return ReplyKind.ERROR, body
        except REQUEST_FAILURES as exc:
            if _unauthorized(exc):
                breaker.succeeded()  # it answered
                raise Unauthorized(session.authorization) from exc
            if _down(exc):
                breaker.failed(exc)
            return _failed(server, call, exc, self.retry_after)
        breaker.succeeded()
        return (ReplyKind.ERROR if answered.error else ReplyKind.RESULT), answered.body

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
    ) -> Outcome | Failed:
        """An agent's notification for its upstream sessions (roots/list_changed): sent in the agent session's own
        session; a shared session is nobody's to tell."""
        if not own:
            return ReplyKind.RESULT, b"{}"
        try:
            await session.notify(call.method, call.params, deadline)
        except SessionLost as exc:  # the upstream refused the session: tell the new one
            return _failed(server, call, exc, self.retry_after)
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
