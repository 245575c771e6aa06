"""One call at its upstream: the session it runs in, the request, and what each way of failing means for the
caller (retry later, outcome unknown, deadline exceeded). A call that is not safe to run twice is sent again
only where it certainly never reached the upstream."""

import asyncio
import logging

import orjson

from services.worker.relays import Relays
from services.worker.upstream import UnknownServer, Upstream
from shared import errors
from shared.http1 import ConnectFailed, ConnectionLost, HttpError, MalformedResponse, ResponseTooLarge, Timeout
from shared.lifecycle import Background
from shared.messages import Call, ReplyKind
from shared.upstream import SessionLost, StatusError, UpstreamFailure, UpstreamSession

logger = logging.getLogger(__name__)

Outcome = tuple[ReplyKind, bytes]
RETRY_AFTER = 5.0  # the default of WorkerSettings.retry_after
BUSY = (429, 502, 503, 504)


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
    def __init__(self, relays: Relays, background: Background, retry_after: float = RETRY_AFTER) -> None:
        self.relays = relays
        self.background = background
        self.retry_after = retry_after

    async def execute(self, upstream: Upstream, call: Call, deadline: float) -> Outcome:
        """The call's outcome at the upstream. Cancelled (by the caller), it tells the upstream so and re-raises."""
        for attempt in (1, 2, 3):
            try:
                session = await upstream.session(call, deadline)
            except OPEN_FAILURES as exc:
                return _not_opened(upstream.name, exc, self.retry_after)
            upstream_id = session.next_id()
            try:
                outcome = await session.request(
                    call.method, call.params, deadline, self.relays.on_message(call, session), request_id=upstream_id
                )
            except asyncio.CancelledError:
                self.cancel_upstream(session, upstream_id, "cancelled by the client")
                raise
            except ConnectFailed as exc:  # not sent, also when connecting timed out: safe to say "later"
                return _unavailable(upstream.name, exc, self.retry_after)
            except Timeout:
                self.cancel_upstream(session, upstream_id, "deadline exceeded")
                return ReplyKind.ERROR, errors.DeadlineExceeded(
                    f"{upstream.name} did not answer before the call's deadline"
                ).body()
            except REQUEST_FAILURES as exc:
                failed = _failed(upstream.name, call, attempt, exc, self.retry_after)
                if failed is None:
                    continue
                return failed
            return (ReplyKind.ERROR if outcome.error else ReplyKind.RESULT), outcome.body
        return ReplyKind.ERROR, errors.UpstreamUnavailable(
            f"{upstream.name} keeps rejecting new sessions", self.retry_after
        ).body()

    def cancel_upstream(self, session: UpstreamSession, upstream_id: int, reason: str) -> None:
        """Tells the upstream to stop a request, in the background: the caller's outcome does not wait for it."""
        params = orjson.dumps({"requestId": upstream_id, "reason": reason})
        self.background.spawn(_notify_cancelled(session, params))


async def _notify_cancelled(session: UpstreamSession, params: bytes) -> None:
    try:
        await session.notify(b"notifications/cancelled", params, asyncio.get_running_loop().time() + 5)
    except (HttpError, UpstreamFailure, OSError) as exc:  # the call has its outcome; this was a courtesy
        logger.info("telling the upstream about a cancellation failed: %s", exc)
