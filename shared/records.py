"""Server records in Valkey (streams.SERVERS, a hash of server name -> ServerRecord): discovery stores them, the
ingress and workers load them, and nothing else reads or writes that hash."""

from collections.abc import Iterable

from redis.asyncio import Redis

from shared import streams
from shared.messages import ServerRecord


async def load(client: Redis, names: Iterable[str] | None = None) -> dict[str, ServerRecord | None]:
    """Records by server name, of all servers or of `names`; None for a name that has none (the server is gone)."""
    if names is None:
        raw: dict[bytes, bytes] = await client.hgetall(streams.SERVERS)  # type: ignore[assignment]
        return {k.decode(): ServerRecord.model_validate_json(v) for k, v in raw.items()}
    keys = list(names)
    if not keys:
        return {}
    values = await client.hmget(streams.SERVERS, keys)
    return {
        k: ServerRecord.model_validate_json(v) if v is not None else None for k, v in zip(keys, values, strict=True)
    }


async def store(client: Redis, records: Iterable[ServerRecord], removed: Iterable[str] = ()) -> None:
    async with client.pipeline(transaction=True) as pipe:
        for record in records:
            pipe.hset(streams.SERVERS, record.name, record.model_dump_json(by_alias=True))
        for name in removed:
            pipe.hdel(streams.SERVERS, name)
        await pipe.execute()


async def count(client: Redis) -> int:
    return await client.hlen(streams.SERVERS)
