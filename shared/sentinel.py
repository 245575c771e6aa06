"""Where muster's Valkey is: one node, or the primary that a group of Sentinels names.

    redis://[user:password@]host:port/db                  one node (rediss:// with TLS)
    redis+sentinel://[user:password@]host:port,host:port/primary[/db]
                                                          ask these Sentinels for the primary called `primary`
                                                          (rediss+sentinel:// with TLS to the data nodes)

The credentials and the TLS choice are the data nodes'. Sentinels are asked without a password, as they are
usually set up (they hold no data and sit behind the same network policy), unless `?sentinel_auth=yes` says they
want the same credentials. After a failover every client asks the Sentinels again when it reconnects, so muster
follows the new primary without a restart: redis-py's Sentinel pool does so for the redis-py clients, and
`primary()` below for the hot path's own connection (shared/resp.py).

A primary that dies drops its connections, so clients reconnect by themselves. A primary demoted by a planned
failover (SENTINEL FAILOVER, a rolling restart) keeps them, and keeps taking writes that are lost, until the
Sentinels turn it into a replica, 8 to 20 s later. So each process also listens to the Sentinels' +switch-master
announcement (`on_switch`) and drops its connections to the old primary at once.
"""

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import parse_qs, quote, unquote, urlsplit

import hiredis

logger = logging.getLogger(__name__)

SCHEMES = ("redis", "rediss", "redis+sentinel", "rediss+sentinel")
DEFAULT_PORT = 6379
DEFAULT_SENTINEL_PORT = 26379


class NoPrimary(ConnectionError):
    """No Sentinel could name a primary that answers as one."""


@dataclass(frozen=True, slots=True)
class Address:
    host: str  # one node: its host; a Sentinel group: the first Sentinel's
    port: int
    db: int = 0
    username: str | None = None
    password: str | None = None
    tls: bool = False
    sentinels: tuple[tuple[str, int], ...] = ()  # empty: one node
    primary_name: str = ""
    sentinel_auth: bool = False

    @property
    def is_sentinel(self) -> bool:
        return bool(self.sentinels)

    def node_url(self, host: str, port: int) -> str:
        """A plain URL of one data node, with this address's credentials and database."""
        auth = ""
        if self.password is not None:
            auth = f"{quote(self.username or '', safe='')}:{quote(self.password, safe='')}@"
        elif self.username:
            auth = f"{quote(self.username, safe='')}@"
        scheme = "rediss" if self.tls else "redis"
        return f"{scheme}://{auth}{host}:{port}/{self.db}"


def parse(url: str) -> Address:
    """The address a URL names; ValueError (its message fit for the settings error) when it names none."""
    parts = urlsplit(url)
    if parts.scheme not in SCHEMES:
        raise ValueError(f"must start with {', '.join(s + '://' for s in SCHEMES)}")
    tls = parts.scheme.startswith("rediss")
    netloc = parts.netloc.rpartition("@")[2]
    if not netloc:
        raise ValueError("names no host")
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password is not None else None
    path = [p for p in parts.path.split("/") if p]
    if not parts.scheme.endswith("+sentinel"):
        host, port = _host_port(netloc, DEFAULT_PORT)
        return Address(host, port, _db(path[0] if path else "0"), username, password, tls)
    sentinels = tuple(_host_port(node, DEFAULT_SENTINEL_PORT) for node in netloc.split(","))
    if not path:
        raise ValueError("a Sentinel URL names the primary after the hosts: redis+sentinel://host:port/primary")
    if len(path) > 2:
        raise ValueError("a Sentinel URL has the form redis+sentinel://host:port,host:port/primary[/db]")
    query = parse_qs(parts.query)
    auth = query.get("sentinel_auth", ["no"])[-1].lower()
    if auth not in ("yes", "no"):
        raise ValueError("sentinel_auth must be yes or no")
    db = _db(path[1]) if len(path) == 2 else 0
    first = sentinels[0]
    return Address(first[0], first[1], db, username, password, tls, sentinels, path[0], auth == "yes")


def _host_port(node: str, default: int) -> tuple[str, int]:
    host, colon, port = node.rpartition(":") if not node.endswith("]") else (node, "", "")
    if not colon:
        host, port = node, ""
    host = host.strip("[]")
    if not host:
        raise ValueError(f"{node!r} names no host")
    if not port:
        return host, default
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{node!r}: the port must be a number from 1 to 65535")
    return host, int(port)


def _db(text: str) -> int:
    if not text.isdigit():
        raise ValueError(f"the database must be a number, not {text!r}")
    return int(text)


async def primary(address: Address, within: float) -> tuple[str, int]:
    """The primary's host and port, as the first Sentinel that knows it says, checked with ROLE on the node itself
    (right after a failover a Sentinel may still name the old primary for a moment)."""
    problems: list[str] = []
    for host, port in address.sentinels:
        try:
            async with asyncio.timeout(within):
                ask = ("SENTINEL", "GET-MASTER-ADDR-BY-NAME", address.primary_name)
                named = await _ask(address, host, port, ask, sentinel=True)
                if not named:
                    problems.append(f"{host}:{port} knows no primary {address.primary_name!r}")
                    continue
                candidate = (named[0].decode(), int(named[1]))
                role = await _ask(address, *candidate, ("ROLE",), sentinel=False)
        except (OSError, TimeoutError, hiredis.ProtocolError, ConnectionError) as exc:
            problems.append(f"{host}:{port}: {str(exc) or type(exc).__name__}")
            continue
        except hiredis.ReplyError as exc:
            problems.append(f"{host}:{port}: {exc}")
            continue
        if role and role[0] == b"master":
            return candidate
        problems.append(f"{candidate[0]}:{candidate[1]}, named by {host}:{port}, is not a primary (yet)")
    raise NoPrimary(f"no primary {address.primary_name!r}: {'; '.join(problems)}")


async def connect_to_primary(
    address: Address,
    within: float,
    connect: Callable[[tuple[str, int]], Awaitable[object]],
    drop: Callable[[], Awaitable[object]],
) -> tuple[str, int]:
    """`connect`s to the primary the Sentinels name, then asks them again: a failover announced while it connected
    found no connection of it to drop, and the old primary takes writes (and loses them) until the Sentinels demote
    it, seconds later. When the answer changed, `drop`s that connection and connects to the new primary. Returns
    the node connected to. Every client of a Sentinel group connects this way (shared/resp.py, shared/valkey.py)."""
    named = await primary(address, within)
    await connect(named)
    now = await primary(address, within)
    if now != named:
        await drop()
        await connect(now)
    return now


async def _ask(
    address: Address, host: str, port: int, command: tuple[str, ...], *, sentinel: bool
) -> list[bytes] | None:
    """One command on a short-lived connection to a Sentinel, or to a data node whose role is checked."""
    tls = address.tls and not sentinel
    reader, writer = await asyncio.open_connection(host, port, ssl=True if tls else None)
    try:
        commands: list[tuple[str, ...]] = []
        if address.password is not None and (address.sentinel_auth or not sentinel):
            user = (address.username,) if address.username else ()
            commands.append(("AUTH", *user, address.password))
        commands.append(command)
        writer.write(b"".join(hiredis.pack_command(c) for c in commands))  # type: ignore[arg-type]
        parser = hiredis.Reader()
        replies: list[object] = []
        while len(replies) < len(commands):
            data = await reader.read(65536)
            if not data:
                raise ConnectionError("connection closed")
            parser.feed(data)
            while (reply := parser.gets()) is not False:
                replies.append(reply)
        for reply in replies:
            if isinstance(reply, hiredis.ReplyError):
                raise reply
        answer = replies[-1]
        return answer if isinstance(answer, list) else None
    finally:
        writer.close()


Switched = Callable[[tuple[str, int]], object]  # called with the new primary's (host, port)
SWITCH_CHANNEL = "+switch-master"
LISTEN_BACKOFF_MAX = 2.0


class _Listener:
    """One subscription to +switch-master per Sentinel group and process, kept while anybody listens."""

    def __init__(self, address: Address) -> None:
        self.address = address
        self.callbacks: list[Switched] = []
        self.task: asyncio.Task[None] | None = None
        self.writer: asyncio.StreamWriter | None = None

    def add(self, callback: Switched) -> Callable[[], None]:
        self.callbacks.append(callback)
        loop = asyncio.get_running_loop()
        if self.task is None or self.task.done() or self.task.get_loop() is not loop:
            self.task = loop.create_task(self._listen())

        def remove() -> None:
            with contextlib.suppress(ValueError):
                self.callbacks.remove(callback)
            if not self.callbacks and self.task is not None:
                self.task.cancel()
                self.task = None
                if self.writer is not None:
                    self.writer.close()

        return remove

    async def _listen(self) -> None:
        failures = 0
        while True:
            for host, port in self.address.sentinels:
                try:
                    await self._follow(host, port)
                except (OSError, ConnectionError, hiredis.ProtocolError, hiredis.ReplyError) as exc:
                    failures += 1
                    if failures == 1:
                        logger.warning("listening to the sentinel at %s:%d failed: %s", host, port, exc)
                await asyncio.sleep(min(LISTEN_BACKOFF_MAX, 0.25 * failures))

    async def _follow(self, host: str, port: int) -> None:
        reader, writer = await asyncio.open_connection(host, port)
        self.writer = writer
        try:
            command: tuple[str, ...] = ("SUBSCRIBE", SWITCH_CHANNEL)
            if self.address.sentinel_auth and self.address.password is not None:
                user = (self.address.username,) if self.address.username else ()
                writer.write(hiredis.pack_command(("AUTH", *user, self.address.password)))
            writer.write(hiredis.pack_command(command))  # type: ignore[arg-type]
            parser = hiredis.Reader()
            while data := await reader.read(65536):
                parser.feed(data)
                while (message := parser.gets()) is not False:
                    if isinstance(message, hiredis.ReplyError):
                        raise message
                    self._message(message)
            raise ConnectionError("the sentinel closed the connection")
        finally:
            writer.close()
            self.writer = None

    def _message(self, message: object) -> None:
        # ["message", "+switch-master", "<name> <old ip> <old port> <new ip> <new port>"]
        if not (isinstance(message, list) and len(message) == 3 and message[0] == b"message"):
            return
        words = message[2].decode().split()
        if len(words) != 5 or words[0] != self.address.primary_name:
            return
        new = (words[3], int(words[4]))
        logger.warning("valkey failed over: %s:%s is the primary %r now", *new, words[0])
        for callback in list(self.callbacks):
            callback(new)


_listeners: dict[Address, _Listener] = {}


def on_switch(address: Address, callback: Switched) -> Callable[[], None]:
    """Calls `callback(new_primary)` whenever the Sentinels announce a failover of `address`'s primary; returns the
    function that stops it. Needs a running event loop."""
    listener = _listeners.get(address)
    if listener is None:
        listener = _listeners[address] = _Listener(address)
    return listener.add(callback)
