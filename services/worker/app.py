"""The worker as a FastStream application: one batch subscriber per upstream server's call stream, plus the
broadcast streams (control, capabilities) and this worker's own inbox."""

import asyncio
import logging
from typing import Any

from faststream import AckPolicy, FastStream
from faststream.redis import RedisBroker, StreamSub
from faststream.redis.message import RedisBatchStreamMessage
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from services.worker.config import WorkerSettings
from services.worker.dispatch import Dispatcher, Lane
from services.worker.reclaim import Reclaimer
from services.worker.upstream import Upstreams
from shared import catalog, streams
from shared.messages import Answer, CapabilityChange, Control, ServerCatalog
from shared.valkey import Outbox

logger = logging.getLogger(__name__)

RESYNC_SECONDS = 30.0
LANE_CHECK_SECONDS = 2.0


async def _raw_batch(message: Any, original: Any) -> Any:
    # Entries are consumed as the bytes they were written as: FastStream's default batch parser would
    # JSON-decode and re-encode every body, which is most of its cost per message.
    return RedisBatchStreamMessage(raw_message=message, body=b"", consumer=None, group=None)  # type: ignore[arg-type]


async def _raw_decode(message: Any, original: Any) -> Any:
    raw = message.raw_message
    return list(zip(raw["message_ids"], raw["data"], strict=True))


class Worker:
    def __init__(self, settings: WorkerSettings, broker: RedisBroker) -> None:
        self.settings = settings
        self.broker = broker
        self.lanes: dict[str, Lane] = {}
        self.subscribers: dict[str, Any] = {}
        self.upstreams = Upstreams()
        self._tasks: list[asyncio.Task[None]] = []
        self.client: Redis
        self.outbox: Outbox
        self.dispatcher: Dispatcher
        self.reclaimer: Reclaimer

    async def start(self) -> None:
        s = self.settings
        self.client = await self.broker.connect()
        self.outbox = Outbox(s.valkey_url, name=f"muster-worker-{s.id}-out")
        self.dispatcher = Dispatcher(self.outbox, self.upstreams, s.id)
        self.reclaimer = Reclaimer(
            self.client,
            self.dispatcher,
            lambda: list(self.lanes.values()),
            worker_id=s.id,
            heartbeat=s.heartbeat_seconds,
            dead_after=s.dead_after_seconds,
            interval=s.reclaim_seconds,
            max_deliveries=s.max_deliveries,
        )
        await self.reclaimer.beat()
        await self._subscribe_broadcasts()
        await self.resync()
        self._tasks = [
            asyncio.create_task(self.reclaimer.run_heartbeat()),
            asyncio.create_task(self.reclaimer.run()),
            asyncio.create_task(self._resync_forever()),
        ]
        logger.info("worker %s started with %d servers", s.id, len(self.lanes))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for sub in self.subscribers.values():
            await sub.stop()
        try:
            await self.dispatcher.drain(5.0)
        except (ConnectionError, OSError) as exc:  # Valkey may be gone first at shutdown
            logger.warning("outcomes not written before stopping: %s", exc)
        await self.upstreams.close()
        self.outbox.close()
        try:
            await self.client.delete(streams.worker_alive(self.settings.id))
        except Exception as exc:  # Valkey may already be gone at shutdown
            logger.info("could not clear the heartbeat: %s", exc)

    async def _subscribe_broadcasts(self) -> None:
        poll = self.settings.poll_ms

        async def on_control(control: Control) -> None:
            if control.kind == "cancel":
                self.dispatcher.cancel(control.key.encode())

        async def on_capabilities(change: CapabilityChange) -> None:
            await self.resync(change.servers)

        async def on_inbox(entries: list[tuple[bytes, dict[bytes, bytes]]]) -> None:
            for _, fields in entries:
                await self.dispatcher.answer(Answer.from_fields(fields))

        for stream, handler in ((streams.CONTROL, on_control), (streams.CAPABILITIES, on_capabilities)):
            sub = self.broker.subscriber(stream=StreamSub(stream, last_id="$", polling_interval=poll), persistent=False)
            sub(handler)
            await sub.start()
            self.subscribers[stream] = sub
        inbox = streams.inbox(self.settings.id)
        inbox_sub = self.broker.subscriber(
            stream=StreamSub(inbox, last_id="$", batch=True, max_records=64, polling_interval=poll),
            parser=_raw_batch,
            decoder=_raw_decode,
            persistent=False,
        )
        inbox_sub(on_inbox)
        await inbox_sub.start()
        self.subscribers[inbox] = inbox_sub

    async def resync(self, names: list[str] | None = None) -> None:
        entries = await catalog.load(self.client, names)
        if names is None:
            for gone in set(self.lanes) - set(entries):
                entries[gone] = None
        for name, entry in entries.items():
            if entry is None:
                await self._remove(name)
            else:
                await self._add(entry)

    async def _resync_forever(self) -> None:
        # Heals a missed capability event (the catalog in Valkey is the truth), and a lane whose reader stopped:
        # FastStream stops a reader for good when its consumer group is gone, as after Valkey lost its data.
        resync_at = asyncio.get_running_loop().time() + RESYNC_SECONDS
        while True:
            await asyncio.sleep(LANE_CHECK_SECONDS)
            try:
                for name in [n for n, sub in self.subscribers.items() if n in self.lanes and not sub.running]:
                    await self._restart(name)
                if asyncio.get_running_loop().time() >= resync_at:
                    resync_at += RESYNC_SECONDS
                    await self.resync()
            except Exception as exc:
                logger.warning("catalog resync failed: %s", exc)

    async def _restart(self, name: str) -> None:
        logger.warning("the reader of %s stopped; recreating its consumer group and starting it again", name)
        try:
            await self.client.xgroup_create(streams.calls(name), streams.GROUP_WORKERS, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        entry = self.upstreams.servers.get(name)
        await self._remove(name)
        if entry is not None:
            await self._add(entry)

    async def _add(self, entry: ServerCatalog) -> None:
        self.upstreams.configure(entry)
        if entry.name in self.lanes:
            return
        s = self.settings
        lane = self.lanes[entry.name] = Lane.of(entry.name, s.server_concurrency)
        stream = StreamSub(
            lane.stream.decode(),
            group=streams.GROUP_WORKERS,
            consumer=s.id,
            batch=True,
            max_records=s.batch,
            polling_interval=s.poll_ms,
        )
        sub = self.broker.subscriber(
            stream=stream, ack_policy=AckPolicy.MANUAL, parser=_raw_batch, decoder=_raw_decode, persistent=False
        )
        sub(self._lane_handler(lane))
        await sub.start()
        self.subscribers[entry.name] = sub
        logger.info("consuming calls for %s", entry.name)

    def _lane_handler(self, lane: Lane) -> Any:
        async def on_calls(entries: list[tuple[bytes, dict[bytes, bytes]]]) -> None:
            await self.dispatcher.take(lane, entries)

        return on_calls

    async def _remove(self, name: str) -> None:
        sub = self.subscribers.pop(name, None)
        self.lanes.pop(name, None)
        self.upstreams.remove(name)
        if sub is not None:
            await sub.stop()
            logger.info("stopped consuming calls for %s", name)


def create_app(settings: WorkerSettings) -> FastStream:
    broker = RedisBroker(
        settings.valkey_url,
        logger=None,  # type: ignore[arg-type]
        client_name=f"muster-worker-{settings.id}",
    )
    app = FastStream(broker, logger=logger)
    worker = Worker(settings, broker)
    app.after_startup(worker.start)
    app.on_shutdown(worker.stop)
    return app
