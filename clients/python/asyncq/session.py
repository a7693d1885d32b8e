"""One DEALER and the session it holds with the broker (PROTOCOL.md 4.2):
HELLO, replies matched to requests by tag, heartbeats, and saying HELLO again
when the broker restarts or falls silent."""
import asyncio
import logging

import zmq

from .protocol import BrokerError, BrokerUnreachable, message, parse

log = logging.getLogger("asyncq")


class Session:
    def __init__(self, context, endpoint, client_id, hello_seq=lambda: 0):
        self._context = context
        self._endpoint = endpoint
        self.client_id = client_id
        self._hello_seq = hello_seq
        self.socket = self._new_socket()
        self.max_item = 0
        self.heartbeat = 1.0
        self.generation = 0  # WELCOMEs received: a request sent in an older one is stale
        self._welcomed_at = 0.0
        self._pending = {}  # tag -> [build frames, future, generation sent in]
        self._welcome = None
        self._reader = None
        self._rehello = None
        self._closed = False
        # Set by the owner: called with (command, fields) for messages that are
        # not replies to a request (ITEM, ERRORs about puts or acks...), and
        # awaited after every HELLO but the first.
        self.on_message = lambda command, fields: None
        self.on_reconnect = None

    def _new_socket(self):
        socket = self._context.socket(zmq.DEALER)
        socket.connect(self._endpoint)
        return socket

    async def open(self, timeout):
        self._reader = asyncio.ensure_future(self._read())
        if not await self._hello(timeout):
            await self.close(bye=False)
            raise BrokerUnreachable(f"no answer from the broker at {self._endpoint}")

    async def _hello(self, timeout):
        loop = asyncio.get_running_loop()
        self._welcome = loop.create_future()
        await self.socket.send_multipart(
            message(b"HELLO", self.client_id, 0, self._hello_seq()))
        try:
            await asyncio.wait_for(asyncio.shield(self._welcome), timeout)
            return True
        except asyncio.TimeoutError:
            return False

    def reconnect(self):
        """Says HELLO again (until the broker answers), then lets the owner
        restore its state and sends every request still waiting again."""
        if not self._rehello_running():
            self._rehello = asyncio.ensure_future(self._reconnect())
        return self._rehello

    async def _reconnect(self):
        log.info("%s: saying HELLO again", self.client_id)
        while not self._closed and not await self._hello(max(1.0, self.heartbeat)):
            # A fresh socket, so that unanswered HELLOs do not pile up and all
            # reach a broker that comes back.
            old, self.socket = self.socket, self._new_socket()
            old.close(linger=0)
        if self._closed:
            return
        if self.on_reconnect:
            await self.on_reconnect()
        for build, _, _ in list(self._pending.values()):
            await self.socket.send_multipart(build())

    async def send(self, frames):
        await self.socket.send_multipart(frames)

    async def request(self, tag, build):
        """Sends build() and returns the reply with this tag as (command,
        fields); raises BrokerError for an ERROR about it. Sent again after a
        reconnect, so build() must give the request as it should be then."""
        loop = asyncio.get_running_loop()
        while True:
            entry = [build, loop.create_future(), self.generation]
            self._pending[tag] = entry
            try:
                await self.socket.send_multipart(build())
                return await entry[1]
            except BrokerError as error:
                if error.code != 412:
                    raise
                if entry[2] == self.generation:  # not stale: the session is gone
                    await self.reconnect()
            finally:
                self._pending.pop(tag, None)

    async def _read(self):
        while not self._closed:
            socket = self.socket
            try:
                ready = await socket.poll(int(3 * self.heartbeat * 1000))
                if not ready:
                    if self.generation:
                        self.reconnect()  # silent for three heartbeats
                    continue
                frames = await socket.recv_multipart()
            except zmq.ZMQError:
                if socket is self.socket and not self._closed:
                    raise
                continue  # the socket was replaced or closed
            parsed = parse(frames)
            if parsed:
                self._dispatch(*parsed)

    def _dispatch(self, command, fields):
        if command == b"WELCOME":
            if len(fields) == 3:
                self.max_item = int(fields[1])
                self.heartbeat = max(int(fields[2]), 10) / 1000.0
            self.generation += 1
            self._welcomed_at = asyncio.get_running_loop().time()
            if self._welcome and not self._welcome.done():
                self._welcome.set_result(True)
        elif command == b"HEARTBEAT":
            pass
        elif command in (b"SYNCED", b"JOINED", b"TIMEOUT", b"REPORT") and fields:
            entry = self._pending.get(fields[0])
            if entry and not entry[1].done():
                entry[1].set_result((command, fields))
        elif command == b"ERROR":
            error = BrokerError.from_fields(fields)
            entry = self._pending.get(error.subject) if error.subject else None
            if entry and not entry[1].done():
                entry[1].set_exception(error)
            elif error.code == 412:
                # About a message sent without a session (the broker restarted).
                # One sent just before our latest HELLO is stale: ignore it.
                loop = asyncio.get_running_loop()
                if (self.generation and not self._rehello_running()
                        and loop.time() - self._welcomed_at > self.heartbeat):
                    self.reconnect()
            else:
                self.on_message(command, fields)
        else:
            self.on_message(command, fields)

    def _rehello_running(self):
        return self._rehello is not None and not self._rehello.done()

    async def close(self, bye=True):
        if self._closed:
            return
        self._closed = True
        for task in (self._rehello, self._reader):
            if task and not task.done():
                task.cancel()
                try:
                    await task
                except (asyncio.CancelledError, Exception):
                    pass
        if bye and self.generation:
            # Items this session holds go back to the queue at once.
            await self.socket.send_multipart(message(b"BYE"))
            self.socket.close(linger=1000)
        else:
            self.socket.close(linger=0)
