"""The worker: one FastStream batch reader per upstream server's call stream (consumer group), and one follow of
the broadcast streams (control, capabilities) and this worker's inbox.

`create_app(settings)` returns the service (shared/lifecycle.py): its lifespan builds the resources, starts the
broker, subscribes to the servers' queues and starts the worker's loops; at SIGTERM it drains (no new claims, the
calls it runs finish within drain_seconds, heartbeat and inbox kept up meanwhile) and closes everything.

The broker runs without a FastStream application on purpose: FastStream ends the application when a consumer
group is missing (as after Valkey lost its data), where the worker recreates the group and reads on (`_maintain`).
"""

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator
from typing import Any, cast

import orjson
from faststream import AckPolicy
from faststream.redis import RedisBroker, RedisSentinelBroker, StreamSub
from faststream.redis.message import RedisBatchStreamMessage
from faststream.redis.subscriber.usecases import stream_subscriber
from redis.asyncio import Redis
from redis.exceptions import RedisError

from services.worker.breaker import Breaker, State
from services.worker.config import WorkerIdentitySettings, WorkerSettings
from services.worker.dispatch import Dispatcher, Entries
from services.worker.execute import RetryPolicy
from services.worker.identity import Identity
from services.worker.janitor import Janitor
from services.worker.liveness import Heartbeat, Liveness
from services.worker.reclaim import Reclaimer
from services.worker.telemetry import Telemetry
from services.worker.upstream import Upstream
from shared import records, sentinel, streams
from shared.follow import Follow
from shared.health import Health, serve
from shared.instruments import WorkerInstruments
from shared.labels import LabelBounds
from shared.lifecycle import Background, Service
from shared.messages import (
    Answer,
    CancelCall,
    CapabilityChange,
    Fields,
    LoginChanged,
    ServerRecord,
    SessionEnded,
    decode,
    decode_control,
)
from shared.metrics import CIRCUIT_OPENINGS, CIRCUIT_STATE, UNSETTLED_OUTCOMES, Metrics, Samples
from shared.tracing import Tracing
from shared.valkey import Outbox, connect, ensure_group, follow_failovers, following_connection, plain_connection

logger = logging.getLogger(__name__)

# FastStream pauses a reader 5 s after a failed read: after a Valkey restart or failover the queues would stand
# still that long. A failed read costs little; a pause of half a second is enough.
stream_subscriber.CONSUME_ERROR_BACKOFF_SECONDS = 0.5  # type: ignore[attr-defined,assignment]

RESYNC_SECONDS = 30.0
LANE_CHECK_SECONDS = 0.5  # a look at the readers in memory; a stopped one is started again within this
START_BACKOFF_MAX = 2.0
CLOSE_SECONDS = 5.0  # after the drain: for the loops to end and the last outcomes to be written
_CONTROL = streams.CONTROL.encode()
_CAPABILITIES = streams.CAPABILITIES.encode()


async def _raw_batch(message: Any, original: Any) -> Any:
    # Entries are consumed as the bytes they were written as: FastStream's default batch parser would
    # JSON-decode and re-encode every body, which is most of its cost per message.
    return RedisBatchStreamMessage(raw_message=message, body=b"", consumer=None, group=None)  # type: ignore[arg-type]


async def _raw_decode(message: Any, original: Any) -> Any:
    raw = message.raw_message
    return list(zip(raw["message_ids"], raw["data"], strict=True))


class NotReady(Exception):
    pass


def _group_names(reply: Any) -> set[str]:
    if not isinstance(reply, list):
        return set()
    names = (g.get("name") for g in reply if isinstance(g, dict))
    return {n.decode() if isinstance(n, bytes) else str(n) for n in names}


class Worker:
    def __init__(
        self, settings: WorkerSettings, broker: RedisBroker, identity: WorkerIdentitySettings | None = None
    ) -> None:
        self.settings = settings
        self.broker = broker
        self.identity_settings = identity
        self.identity: Identity | None = None
        self.address = sentinel.parse(settings.valkey_url)
        self.servers: dict[str, Upstream] = {}
        self.loops = Background()  # heartbeat and broadcasts: they run until the drain is over
        self.claiming = Background()  # reclaim and the readers' upkeep: they stop when the drain begins
        self.draining = False
        self.heartbeat = Heartbeat(
            settings.valkey_url,
            settings.id,
            interval=settings.heartbeat_seconds,
            timeout=max(settings.valkey_timeout, settings.heartbeat_seconds),
            stall=settings.loop_stall_seconds,
            status=self._status,
        )
        self.metrics = Metrics("worker")
        self.health = Health(self.metrics.registry)
        self.health.check("valkey", self._valkey)
        self.health.check("consumer_groups", self._consumer_groups)
        self.health.check("draining", self._draining)
        self.health.check("heartbeat", self._heartbeat)
        self.health.check("outcomes", self._outcomes)
        self.health.check("readers", self._readers)
        # built by the lifespan
        self.client: Redis
        self.outbox: Outbox
        self.dispatcher: Dispatcher
        self.reclaimer: Reclaimer
        self.janitor: Janitor
        self.broadcasts: Follow

    @contextlib.asynccontextmanager
    async def lifespan(self) -> AsyncIterator["asyncio.Task[None]"]:
        s = self.settings
        self.client = connect(s.valkey_url, name=f"muster-worker-{s.id}", timeout=s.valkey_timeout)
        self.outbox = Outbox(s.valkey_url, name=f"muster-worker-{s.id}-out", timeout=s.valkey_timeout)
        bounds = LabelBounds()
        instruments = WorkerInstruments(self.metrics, bounds) if s.call_metrics else None
        self.tracing = Tracing.configured(s.tracing, "worker")
        self.telemetry = Telemetry(self.metrics, bounds, instruments, self.tracing)
        self.telemetry.sessions(self.servers.values)
        self._sample(bounds)
        liveness = Liveness.of(
            s.id,
            heartbeat=s.heartbeat_seconds,
            dead_after=s.dead_after_seconds,
            replica_dead_after=s.replica_dead_after_seconds,
        )
        self.dispatcher = Dispatcher(
            self.outbox,
            s.id,
            liveness=liveness,
            retry=RetryPolicy(s.retry_attempts, s.retry_backoff_seconds, s.retry_backoff_max_seconds),
            agent_sessions=s.agent_sessions,
            per_agent=s.upstream_sessions == "agent",
            held_streams=s.held_streams,
            answer_seconds=s.answer_seconds,
            telemetry=self.telemetry,
            retry_after=s.retry_after,
        )
        self.janitor = Janitor(
            self.outbox,
            self.dispatcher.bindings,
            self.dispatcher.agents,
            lambda: self.servers,
            interval=s.janitor_seconds,
        )
        self.reclaimer = Reclaimer(
            self.client,
            self.dispatcher,
            self.servers.values,
            liveness,
            worker_id=s.id,
            interval=s.reclaim_seconds,
            max_deliveries=s.max_deliveries,
        )
        self.broadcasts = Follow(self.client, [streams.CONTROL, streams.CAPABILITIES, streams.inbox(s.id)])
        if self.identity_settings is not None:
            self.identity = Identity.build(self.identity_settings)
            self.identity.on_token = self.telemetry.token  # muster_token_refreshes_total, _exchanges_total
        try:
            async with serve(self.health, s.metrics_host, s.metrics_port):  # readiness answers during the drain too
                work = asyncio.create_task(self._work())
                try:
                    yield work
                finally:
                    work.cancel()  # still waiting for Valkey to start, perhaps
                    await asyncio.gather(work, return_exceptions=True)
                    await self.stop()
        finally:
            await self.broker.stop()
            await self._close()

    async def _work(self) -> None:
        # The work itself is in the loops this starts; the worker runs until it is told to stop.
        await self._start_when_valkey_answers()
        await asyncio.Event().wait()

    async def _start_when_valkey_answers(self) -> None:
        # A worker started while Valkey is away (a restart, a failover) waits for it rather than exit.
        failures = 0
        while True:
            try:
                await self.broker.start()
                if self.address.is_sentinel:  # the broker's own client drops a demoted primary at once too
                    follow_failovers(self.address, cast(Redis, self.broker.config.broker_config.connection.client))
                await self.start()
                return
            except (RedisError, OSError) as exc:
                failures += 1
                if failures == 1:
                    logger.warning("valkey unreachable at start: %s; waiting for it", exc)
                await asyncio.sleep(min(START_BACKOFF_MAX, 0.25 * failures))

    async def _valkey(self) -> None:
        await self.client.ping()

    async def _consumer_groups(self) -> None:
        """Ready only while the group of every server this worker serves exists (Valkey may have lost them)."""
        names = list(self.servers)
        if not names:
            return
        pipe = self.client.pipeline(transaction=False)
        for name in names:
            pipe.xinfo_groups(streams.calls(name))
        replies = await pipe.execute(raise_on_error=False)
        missing = [n for n, r in zip(names, replies, strict=True) if streams.GROUP_WORKERS not in _group_names(r)]
        if missing:
            raise NotReady(f"no consumer group on the streams of {', '.join(missing)}")

    async def _draining(self) -> None:
        if self.draining:
            raise NotReady("shutting down: no new calls")

    async def start(self) -> None:
        """Once the broker runs: heartbeat, the servers' queues, the broadcasts, reclaim."""
        self.heartbeat.start()
        await self.broadcasts.start()
        await self.resync()
        for loop in (self._follow(), self._tick(), self.dispatcher.listeners.renew()):
            self.loops.spawn(loop)
        for loop in (self.reclaimer.run(), self._maintain(), self.janitor.run()):
            self.claiming.spawn(loop)
        logger.info("worker %s started with %d servers", self.settings.id, len(self.servers))

    def _sample(self, bounds: LabelBounds) -> None:
        """What the breakers and the outcomes waiting for Valkey look like, read at scrape time."""

        def circuits() -> Samples:
            return {(bounds.server(n), u.breaker.state.value): 1.0 for n, u in list(self.servers.items())}

        def openings() -> Samples:
            return {(bounds.server(n),): float(u.breaker.opened) for n, u in list(self.servers.items())}

        self.metrics.sample(CIRCUIT_STATE, circuits)
        self.metrics.sample(CIRCUIT_OPENINGS, openings)
        self.metrics.sample(UNSETTLED_OUTCOMES, lambda: {(): float(self.dispatcher.outcomes.unsettled)})

    async def _heartbeat(self) -> None:
        if self.heartbeat.failing:
            raise NotReady("valkey does not take the heartbeat")

    async def _outcomes(self) -> None:
        """Not ready while outcomes of calls that ran wait for Valkey to take them."""
        unsettled = self.dispatcher.outcomes.unsettled
        if unsettled:
            raise NotReady(f"{unsettled} outcomes wait for valkey")

    async def _readers(self) -> None:
        stopped = [u.name for u in self.servers.values() if not u.reading]
        if stopped:
            raise NotReady(f"not reading the queues of {', '.join(sorted(stopped))}")

    def _status(self) -> bytes:
        """What the heartbeat tells `muster status` about this worker (read from the heartbeat's thread)."""
        dispatcher = getattr(self, "dispatcher", None)
        unsettled = dispatcher.outcomes.unsettled if dispatcher is not None else 0
        running = len(dispatcher.running) if dispatcher is not None else 0
        opened = sorted(name for name, state in self.circuits().items() if state != State.CLOSED.value)
        return orjson.dumps({"running": running, "unsettled": unsettled, "circuits": opened})

    def circuits(self) -> dict[str, str]:
        """Each server's circuit breaker state in this worker: "closed", "open" or "half-open"."""
        return {name: upstream.breaker.state.value for name, upstream in list(self.servers.items())}

    async def _tick(self) -> None:
        # The heartbeat thread stops beating when the event loop stops ticking: its calls would not finish.
        while True:
            self.heartbeat.ticked()
            await asyncio.sleep(self.settings.heartbeat_seconds)

    def _circuit_changed(self, server: str, state: State) -> None:
        key = streams.circuits(server)
        if state is State.CLOSED:
            self.outbox.post(b"HDEL", key, self.settings.id)
        else:
            self.outbox.post(b"HSET", key, self.settings.id, state.value)
            self.outbox.post(b"EXPIRE", key, streams.BEAT_TTL)

    async def stop(self) -> None:
        """The drain: nothing new is claimed (readers and reclaim stop), the calls running here finish within
        drain_seconds while the heartbeat and the inbox (cancellations, relayed answers) keep going. What still
        runs after that is stopped with no outcome: it stays pending, and is taken over once the heartbeat says this
        worker stopped."""
        self.draining = True
        self.claiming.cancel()
        await self.claiming.wait(CLOSE_SECONDS)
        for upstream in list(self.servers.values()):
            async with upstream.reader_lock:
                await self._unsubscribe(upstream)
        running = len(self.dispatcher.background.tasks)
        if running:
            logger.info("draining: waiting up to %g s for %d calls", self.settings.drain_seconds, running)
        await self.dispatcher.background.wait(self.settings.drain_seconds)
        left = len(self.dispatcher.running)
        if left:
            logger.warning("drained: %d calls still running are left to be reclaimed by another worker", left)
            self.dispatcher.abandon()
            await self.dispatcher.background.wait(CLOSE_SECONDS)
        # outcomes of entries let go of without running (malformed, dead letters), written until Valkey has them
        await self.dispatcher.outcomes.background.wait(CLOSE_SECONDS)
        await self.dispatcher.listeners.close(CLOSE_SECONDS)  # the upstream GET streams held here: another takes them
        self.loops.cancel()
        await self.loops.wait(CLOSE_SECONDS)

    async def _close(self) -> None:
        try:
            async with asyncio.timeout(CLOSE_SECONDS):
                await self.outbox.drain()
        except (ConnectionError, OSError, TimeoutError) as exc:  # Valkey may be gone first at shutdown
            logger.warning("outcomes not written before stopping: %s", exc)
        await asyncio.gather(*(u.close() for u in self.servers.values()))
        for name, upstream in self.servers.items():
            if upstream.breaker.state is not State.CLOSED:
                self.outbox.post(b"HDEL", streams.circuits(name), self.settings.id)
        with contextlib.suppress(ConnectionError):
            await self.outbox.drain()
        if self.identity is not None:
            await self.identity.close()
        self.outbox.close()
        # The heartbeat stops last, and says so: calls still pending here are taken over at once.
        self.heartbeat.stop()
        try:
            pipe = self.client.pipeline(transaction=False)
            pipe.set(streams.worker_beat(self.settings.id), streams.BEAT_STOPPED, ex=streams.BEAT_TTL)
            pipe.delete(streams.worker_alive(self.settings.id))
            await pipe.execute()
        except (RedisError, OSError) as exc:  # Valkey may be gone first at shutdown: then it stands still
            logger.info("could not mark the heartbeat stopped: %s", exc)
        await self.client.aclose()
        self.tracing.shutdown()

    async def _follow(self) -> None:
        async for batch in self.broadcasts:
            for stream, entries in batch:
                for _, fields in entries:
                    try:
                        await self._broadcast(stream, fields)
                    except (RedisError, OSError, ValueError) as exc:  # ValueError: an entry that does not validate
                        logger.warning("handling an entry of %s failed: %s", stream.decode(), exc)

    async def _broadcast(self, stream: bytes, fields: Fields) -> None:
        if stream == _CONTROL:
            control = decode_control(fields)
            if isinstance(control, CancelCall):
                self.dispatcher.cancel(control.key.encode())
            elif isinstance(control, SessionEnded):
                self.dispatcher.session_ended(control.session.encode())  # its calls first, then its upstream sessions
                self.dispatcher.background.spawn(self.janitor.session_ended(control.session.encode()))
            elif isinstance(control, LoginChanged) and self.identity is not None:
                self.identity.login_changed(control.subject, control.server)
        elif stream == _CAPABILITIES:
            await self.resync(decode(fields, CapabilityChange).servers)
        else:
            await self.dispatcher.relays.answer(Answer.from_fields(fields))

    async def resync(self, names: list[str] | None = None) -> None:
        """Serve the servers as their records say: all of them, or the named ones."""
        loaded = await records.load(self.client, names)
        if names is None:
            for gone in set(self.servers) - set(loaded):
                loaded[gone] = None
        for name, record in loaded.items():
            if record is None:
                await self._remove(name)
            else:
                await self._add(record)
        self.telemetry.catalog_changed([u.record for u in self.servers.values()])

    async def _maintain(self) -> None:
        # Heals a missed capability event (the records in Valkey are the truth), and a lane whose reader stopped:
        # FastStream stops a reader for good when its consumer group is gone, as after Valkey lost its data.
        resync_at = asyncio.get_running_loop().time() + RESYNC_SECONDS
        while True:
            await asyncio.sleep(LANE_CHECK_SECONDS)
            try:
                for upstream in [u for u in self.servers.values() if not u.reading]:
                    await self._restart(upstream)
                if asyncio.get_running_loop().time() >= resync_at:
                    resync_at += RESYNC_SECONDS
                    await self.resync()
            except (RedisError, OSError) as exc:
                logger.warning("catalog resync failed: %s", exc)

    async def _restart(self, upstream: Upstream) -> None:
        async with upstream.reader_lock:
            if upstream.reading or upstream.removed or self.draining:  # started meanwhile, or not to be read
                return
            logger.warning(
                "the reader of %s stopped; recreating its consumer group and starting it again", upstream.name
            )
            await ensure_group(self.client, upstream.name)
            await self._unsubscribe(upstream)
            await self._subscribe(upstream)

    async def _add(self, record: ServerRecord) -> None:
        upstream = self.servers.get(record.name)
        if upstream is not None:
            if upstream.configure(record):
                self.dispatcher.listeners.drop(record.name)
            return
        s = self.settings
        breaker = Breaker(
            record.name,
            failures=s.breaker_failures,
            cooldown=s.breaker_cooldown_seconds,
            probe_timeout=s.breaker_probe_seconds,
            on_change=self._circuit_changed,
        )
        upstream = Upstream.of(record, s.server_concurrency, s.max_result_bytes, self.identity, breaker=breaker)
        self.servers[record.name] = upstream
        upstream.on_open = functools.partial(self.telemetry.initialized, record.name)
        self.reclaimer.adopt(upstream)  # what an earlier incarnation of this worker held, first
        async with upstream.reader_lock:
            if self.draining:
                return
            await self._subscribe(upstream)
        logger.info("consuming calls for %s", record.name)

    async def _remove(self, name: str) -> None:
        upstream = self.servers.pop(name, None)
        if upstream is not None:
            upstream.retire()
            self.dispatcher.listeners.drop(name)
            async with upstream.reader_lock:
                await self._unsubscribe(upstream)
            logger.info("stopped consuming calls for %s", name)

    async def _subscribe(self, upstream: Upstream) -> None:
        s = self.settings
        stream = StreamSub(
            upstream.lane.queue.stream.decode(),
            group=streams.GROUP_WORKERS,
            consumer=s.id,
            batch=True,
            max_records=s.batch,
            polling_interval=s.poll_ms,
        )
        subscriber = self.broker.subscriber(
            stream=stream, ack_policy=AckPolicy.MANUAL, parser=_raw_batch, decoder=_raw_decode, persistent=False
        )

        async def on_calls(entries: Entries) -> None:
            await self.dispatcher.take(upstream, entries)

        subscriber(on_calls)
        await subscriber.start()
        upstream.subscriber = subscriber

    @staticmethod
    async def _unsubscribe(upstream: Upstream) -> None:
        subscriber, upstream.subscriber = upstream.subscriber, None
        if subscriber is not None:
            await subscriber.stop()


def create_app(settings: WorkerSettings, identity: WorkerIdentitySettings | None = None) -> Service:
    """`identity`: with auth on, what the worker needs to call servers as each user."""
    address = sentinel.parse(settings.valkey_url)
    options: dict[str, Any] = {
        "logger": None,
        "client_name": f"muster-worker-{settings.id}",
        # every command bounded: longer than a read blocks for, so that a read that found nothing is no error
        "socket_timeout": settings.poll_ms / 1000 + 2 * settings.valkey_timeout,
        "socket_connect_timeout": settings.valkey_timeout,
    }
    if address.is_sentinel:
        broker: RedisBroker = RedisSentinelBroker(
            address.node_url("127.0.0.1", 6379),  # the Sentinels name the host; the URL carries credentials and db
            sentinels=address.sentinels,
            sentinel_master_name=address.primary_name,
            sentinel_kwargs=None if not address.sentinel_auth else {"password": address.password},
            connection_class=following_connection(address, settings.valkey_timeout),
            **options,
        )
    else:
        broker = RedisBroker(settings.valkey_url, connection_class=plain_connection(address), **options)
    worker = Worker(settings, broker, identity)
    return Service(worker.lifespan)
