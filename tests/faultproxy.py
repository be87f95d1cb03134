"""A TCP fault proxy for tests: put it between the server and PostgreSQL, then break the path.

``FaultProxy(("127.0.0.1", 5432))`` listens on 127.0.0.1 (an ephemeral port) and forwards
both ways, in an asyncio loop on a thread of its own. The test switches it at run time:

- ``pass_()``: forward at once (again); what a black hole or a delay held back goes first,
  in order, as TCP retransmission delivers it when a partition heals.
- ``refuse()``: stop listening, so new connections are refused; open ones carry on.
- ``black_hole()``: accept and keep connections, forward nothing.
- ``delay(seconds)``: forward each chunk that many seconds after it arrived.
- ``cut()``: close every open connection, both sides, now.

It is bounded: at most ``max_connections`` at once (more are closed on accept) and it stops by
itself after ``lifetime`` seconds, closing everything, should a test forget ``stop()``.
"""

from __future__ import annotations

import asyncio
import threading
import time

from sqlalchemy.engine import make_url

CHUNK = 65536


def upstream_of(url: str) -> tuple[str, int]:
    """The (host, port) a database URL connects to."""
    parsed = make_url(url)
    return parsed.host or "127.0.0.1", parsed.port or 5432


def through(proxy: "FaultProxy", url: str) -> str:
    """``url`` rewritten to connect through ``proxy``."""
    return make_url(url).set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)


class FaultProxy:
    def __init__(self, upstream: tuple[str, int], *, lifetime: float = 300, max_connections: int = 64):
        self.upstream = upstream
        self.lifetime = lifetime
        self.max_connections = max_connections
        self.port = 0
        self._delay = 0.0
        self._loop = asyncio.new_event_loop()
        self._flowing: asyncio.Event | None = None  # cleared while black-holed
        self._changed: asyncio.Event | None = None  # set when the delay changes, wakes waiting pumps
        self._server: asyncio.AbstractServer | None = None
        self._connections: set[asyncio.StreamWriter] = set()
        self._thread = threading.Thread(target=self._run, name="fault-proxy", daemon=True)

    # -- control, from the test's thread ----------------------------------------------------------

    def start(self) -> "FaultProxy":
        self._thread.start()
        self._call(self._listen)
        return self

    def stop(self) -> None:
        if self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def pass_(self) -> None:
        self._call(self._set, listening=True, flowing=True, delay=0.0)

    def refuse(self) -> None:
        self._call(self._set, listening=False, flowing=True, delay=0.0)

    def black_hole(self) -> None:
        self._call(self._set, listening=True, flowing=False, delay=0.0)

    def delay(self, seconds: float) -> None:
        self._call(self._set, listening=True, flowing=True, delay=seconds)

    def cut(self) -> None:
        self._call(self._cut)

    @property
    def connections(self) -> int:
        return len(self._connections) // 2

    def __enter__(self) -> "FaultProxy":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _call(self, function, *args, **kwargs):
        async def call():
            return await function(*args, **kwargs)

        return asyncio.run_coroutine_threadsafe(call(), self._loop).result(10)

    # -- the loop's thread ----------------------------------------------------------------------

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._changed = asyncio.Event()
        self._loop.call_later(self.lifetime, self._loop.stop)
        try:
            self._loop.run_forever()
        finally:
            if self._server is not None:
                self._server.close()
            for writer in self._connections:
                writer.transport.abort()
            tasks = asyncio.all_tasks(self._loop)
            for task in tasks:
                task.cancel()
            self._loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            self._loop.close()

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _set(self, *, listening: bool, flowing: bool, delay: float) -> None:
        if listening and self._server is None:
            await self._listen()
        elif not listening and self._server is not None:
            self._server.close()  # the listening socket only: open connections carry on
            self._server = None
        self._delay = delay
        self._changed.set()
        self._changed = asyncio.Event()
        (self._flowing.set if flowing else self._flowing.clear)()

    async def _cut(self) -> None:
        for writer in list(self._connections):
            writer.transport.abort()
        self._connections.clear()

    async def _accept(self, client_reader, client_writer) -> None:
        if self.connections >= self.max_connections:
            client_writer.transport.abort()
            return
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            client_writer.transport.abort()
            return
        pair = {client_writer, upstream_writer}
        self._connections |= pair
        try:
            await asyncio.gather(self._pump(client_reader, upstream_writer),
                                 self._pump(upstream_reader, client_writer), return_exceptions=True)
        except asyncio.CancelledError:
            pass  # the proxy stops
        finally:
            for writer in pair:
                writer.transport.abort()
            self._connections -= pair

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Copy one direction; each chunk waits for the path to flow and for its delay."""
        queue: asyncio.Queue = asyncio.Queue()

        async def read():
            try:
                while data := await reader.read(CHUNK):
                    queue.put_nowait((time.monotonic(), data))
            finally:
                queue.put_nowait((time.monotonic(), b""))  # end of stream (or a reset), in order

        reading = asyncio.ensure_future(read())
        try:
            while True:
                arrived, data = await queue.get()
                await self._release(arrived)
                if not data:
                    if writer.can_write_eof():
                        writer.write_eof()
                    break
                writer.write(data)
                await writer.drain()
        finally:
            reading.cancel()

    async def _release(self, arrived: float) -> None:
        """Wait until the path flows and ``arrived`` + the delay (as it is now) has passed."""
        while True:
            await self._flowing.wait()
            remaining = arrived + self._delay - time.monotonic()
            if remaining <= 0 and self._flowing.is_set():
                return
            changed = self._changed
            try:
                await asyncio.wait_for(changed.wait(), timeout=max(remaining, 0.01))
            except asyncio.TimeoutError:
                pass
