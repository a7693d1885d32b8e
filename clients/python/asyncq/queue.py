"""asyncq.Queue: asyncio.Queue's API over an asyncq broker."""
import asyncio
import collections
import itertools
import logging
import os

import zmq
import zmq.asyncio

from .protocol import BrokerError, QueueShutDown, check_name, endpoints, message
from .session import Session

log = logging.getLogger("asyncq")

Joined = collections.namedtuple("Joined", "count dead")


class QueueEmpty(asyncio.QueueEmpty):
    """get_nowait() found no item delivered to this client."""


class Item(bytes):
    """A delivered item: its payload (a bytes object) with the delivery's
    broker-given .id, .attempt (1 on first delivery), .queue and .lease_ms."""

    def __new__(cls, payload, queue, item_id, attempt, lease_ms):
        self = super().__new__(cls, payload)
        self.queue, self.id, self.attempt, self.lease_ms = queue, item_id, attempt, lease_ms
        return self


class Queue:
    """A queue on an asyncq broker, used like asyncio.Queue:

        q = asyncq.Queue("localhost:5557", "default")
        await q.put(b"item")          # returns once the broker holds it
        item = await q.get()          # an Item (bytes) with .id and .attempt
        q.task_done()                 # acks the item got (or task_done(item))
        await q.join()                # every item put before now is acked
        await q.close()

    put, join, stats and close are coroutines; get is one too. The client
    says HELLO on first use; it connects with one DEALER for putting and
    joining and one for consuming (PROTOCOL.md 2), and reconnects by itself
    if the broker restarts (unconfirmed puts are sent again, 4.2).
    """

    def __init__(self, broker="localhost", queue="default", *, credit=1, name="py",
                 timeout=5.0, context=None):
        check_name(queue)
        check_name(name, "client")
        if credit < 1:
            raise ValueError("credit must be at least 1")
        self.broker, self.queue, self.credit, self.timeout = broker, queue, credit, timeout
        self._push_endpoint, self._router_endpoint = endpoints(broker)
        self._context = context or zmq.asyncio.Context.instance()
        self._client_id = f"{name}-{os.urandom(6).hex()}"
        self._tags = itertools.count(1)
        self._lock = asyncio.Lock()
        self._closed = False
        # Producer (and joiner) side.
        self._control = None
        self._push = None
        self._seq = 0            # last seq sent
        self._confirmed = 0      # every seq up to this one is confirmed
        self._unconfirmed = collections.OrderedDict()  # seq -> PUT frames
        self._refused = {}       # seq -> BrokerError
        self._syncing = None
        self._cancelled_put = None  # (payload, seq) of a put cancelled before confirmed
        # Consumer side.
        self._consumer = None
        self._delivered = asyncio.Queue()              # Items not yet got
        self._held = collections.OrderedDict()         # id -> Item got, not task_done
        self.errors = collections.deque(maxlen=100)    # ERRORs about acks, for inspection

    # -- putting -----------------------------------------------------------

    async def _producer(self):
        async with self._lock:
            if self._closed:
                raise RuntimeError("queue client is closed")
            if self._control is None:
                session = Session(self._context, self._router_endpoint, self._client_id,
                                  hello_seq=lambda: self._confirmed + 1)
                session.on_message = self._on_control_message
                session.on_reconnect = self._resend
                await session.open(self.timeout)
                self._push = self._context.socket(zmq.PUSH)
                self._push.connect(self._push_endpoint)
                self._control = session
        return self._control

    async def put(self, item, *, lease=None):
        """Puts item (bytes, or str as UTF-8) and returns once the broker
        holds it. lease: seconds each delivery may take before the item is
        delivered again (default: the queue's). Waits while the queue is full
        (the broker's maxsize). Raises QueueShutDown if the queue was shut
        down, BrokerError if the broker refused it.

        Cancelling a waiting put does not take the item back (the broker
        already has it, or will): a put of the same item right after a
        cancelled one waits for it instead of putting it twice."""
        payload = _payload(item)
        cancelled, self._cancelled_put = self._cancelled_put, None
        if cancelled and cancelled[0] == payload:
            seq = cancelled[1]  # a retry of a cancelled put: it was sent already
        else:
            seq = await self.send(payload, lease=lease)
        try:
            await self._confirm(seq)
        except asyncio.CancelledError:
            # The put was sent and cannot be taken back: the broker will hold
            # it. If the caller retries with the same item next, the retry
            # waits for this put instead of sending a copy.
            if self._confirmed < seq:
                self._cancelled_put = (payload, seq)
            raise
        error = self._refused.pop(seq, None)
        if error:
            raise error

    async def send(self, item, *, lease=None):
        """Sends item without waiting for the broker to confirm it (the bulk
        form of put); returns its seq. flush() (or join(), close()) waits for
        the confirmations. A full queue makes flush() wait."""
        session = await self._producer()
        self._cancelled_put = None
        payload = _payload(item)
        if len(payload) > session.max_item:
            raise ValueError(f"item of {len(payload)} bytes is larger than the broker's "
                             f"limit of {session.max_item}")
        lease_ms = 0 if lease is None else max(1, int(lease * 1000))
        self._seq += 1
        frames = message(b"PUT", self.queue, self._client_id, self._seq, lease_ms, payload)
        self._unconfirmed[self._seq] = frames
        await self._push.send_multipart(frames)
        return self._seq

    async def flush(self):
        """Waits until the broker has confirmed every put sent."""
        await self._confirm(self._seq)

    async def _confirm(self, seq):
        while self._confirmed < seq:
            if self._syncing is None or self._syncing.done():
                self._syncing = asyncio.ensure_future(self._sync(self._seq))
            await asyncio.shield(self._syncing)

    async def _sync(self, seq):
        tag = f"sync-{seq}".encode()
        while True:
            try:
                await self._control.request(
                    tag, lambda: message(b"SYNC", tag, self._client_id, seq))
                break
            except BrokerError as error:
                if error.code != 410:
                    raise
                await self._resend()  # puts were lost on the way (4.1)
        self._confirmed = max(self._confirmed, seq)
        while self._unconfirmed and next(iter(self._unconfirmed)) <= seq:
            self._unconfirmed.popitem(last=False)

    async def _resend(self):
        for frames in list(self._unconfirmed.values()):
            await self._push.send_multipart(frames)

    def _on_control_message(self, command, fields):
        if command == b"ERROR":
            error = BrokerError.from_fields(fields)
            if error.subject.isdigit():  # about the put with that seq
                self._refused[int(error.subject)] = error
            else:
                log.warning("%s: %s", self._client_id, error)

    # -- getting -----------------------------------------------------------

    async def _consumer_session(self):
        async with self._lock:
            if self._closed:
                raise RuntimeError("queue client is closed")
            if self._consumer is None:
                session = Session(self._context, self._router_endpoint,
                                  self._client_id + "-get")
                session.on_message = self._on_consumer_message
                session.on_reconnect = self._announce_credit
                await session.open(self.timeout)
                self._consumer = session
                await self._announce_credit()
        return self._consumer

    async def _announce_credit(self):
        # After a reconnect, items not yet got are the broker's to deliver again.
        while not self._delivered.empty():
            self._delivered.get_nowait()
        await self._consumer.send(message(b"CREDIT", self.queue, self.credit))

    def _on_consumer_message(self, command, fields):
        if command == b"ITEM" and len(fields) == 6:
            queue, item_id, attempt, _, lease_ms, payload = fields
            self._delivered.put_nowait(
                Item(payload, queue.decode(), int(item_id), int(attempt), int(lease_ms)))
        elif command == b"ERROR":
            error = BrokerError.from_fields(fields)
            if isinstance(error, QueueShutDown) and error.subject == self.queue.encode():
                self._delivered.put_nowait(error)  # get() raises it once the rest is got
            else:
                self.errors.append(error)
                log.warning("%s: %s", self._client_id, error)

    def get_nowait(self):
        """An item already delivered to this client (its credit lets the
        broker send ahead), else raises asyncq.QueueEmpty. Delivery starts
        with the first get()."""
        if self._consumer is None or self._delivered.empty():
            raise QueueEmpty
        item = self._delivered.get_nowait()
        if isinstance(item, QueueShutDown):
            self._delivered.put_nowait(item)
            raise item
        self._held[item.id] = item
        return item

    async def get(self):
        """Waits for an item and returns it (an Item: bytes with .id and
        .attempt). Cancelling a waiting get() loses nothing: an item that
        arrives is kept for the next get(). Raises QueueShutDown once the
        queue is shut down and empty."""
        await self._consumer_session()
        item = await self._delivered.get()
        if isinstance(item, QueueShutDown):
            self._delivered.put_nowait(item)
            raise item
        self._held[item.id] = item
        return item

    def task_done(self, item=None):
        """Acks an item got from get(): the given one (an Item or its id), or
        the oldest one held. Raises ValueError if this client holds no such
        item (called more times than get())."""
        if item is None:
            if not self._held:
                raise ValueError("task_done() called too many times")
            item_id, _ = self._held.popitem(last=False)
        else:
            item_id = item.id if isinstance(item, Item) else int(item)
            if self._held.pop(item_id, None) is None:
                raise ValueError(f"task_done(): no item {item_id} is held by this client")
        self._consumer.socket.send_multipart(message(b"ACK", item_id), copy=True)

    async def touch(self, item):
        """Gives a held item a fresh lease."""
        await self._consumer.send(message(b"TOUCH", item.id))

    async def nack(self, item, delay=0.0, reason=""):
        """Gives a held item back, to be delivered again after delay seconds."""
        if self._held.pop(item.id, None) is None:
            raise ValueError(f"nack(): no item {item.id} is held by this client")
        await self._consumer.send(message(b"NACK", int(delay * 1000), reason, item.id))

    # -- joining and watching ----------------------------------------------

    async def join(self, timeout=None, *, all=False):
        """Waits until every item the broker accepted on the queue before the
        join (this client's puts included) has been acked or dead-lettered;
        with all=True, until nothing at all is outstanding (asyncio's join).
        Returns Joined(count, dead). Raises TimeoutError after timeout
        seconds, QueueShutDown if the queue was shut down with immediate."""
        session = await self._producer()
        await self.flush()
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        tag = f"join-{next(self._tags)}".encode()

        def build():
            ms = 0 if deadline is None else max(1, int((deadline - loop.time()) * 1000))
            return message(b"JOIN", tag, self.queue, ms, b"all" if all else b"before")

        command, fields = await session.request(tag, build)
        if command == b"TIMEOUT":
            raise TimeoutError(f"join timed out: {int(fields[2])} items still outstanding")
        return Joined(int(fields[2]), int(fields[3]))

    async def stats(self):
        """The queue's numbers (PROTOCOL.md 4.8) as a dict of ints and strings."""
        session = await self._producer()
        tag = f"stats-{next(self._tags)}".encode()
        _, fields = await session.request(tag, lambda: message(b"STATS", tag, self.queue))
        return parse_stats(fields[1]) if len(fields) > 1 else {}

    def qsize(self):
        """Items waiting for delivery (asyncio's qsize()). A request to the
        broker: blocks for one round trip; use await stats() to avoid that."""
        return blocking_stats(self._router_endpoint, self.queue, self.timeout).get("queued", 0)

    def empty(self):
        return self.qsize() == 0

    async def close(self, timeout=None):
        """Waits for every put to be confirmed (at most timeout seconds, then
        raises TimeoutError: those puts may be lost), then ends both sessions:
        items delivered to this client and not acked go back to the queue."""
        if self._closed:
            return
        try:
            if self._control is not None and self._seq > self._confirmed:
                await asyncio.wait_for(self.flush(), timeout)
        finally:
            self._closed = True
            for session in (self._consumer, self._control):
                if session:
                    await session.close()
            if self._push is not None:
                self._push.close(linger=0)

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        await self.close()


def _payload(item):
    """An item as the bytes put on the wire: str as UTF-8."""
    return item.encode() if isinstance(item, str) else bytes(item)


def parse_stats(line):
    values = {}
    for pair in line.decode().split():
        key, _, value = pair.partition("=")
        values[key] = int(value) if value.isdigit() else value
    return values


def blocking_stats(router_endpoint, queue, timeout):
    """STATS over a short-lived blocking socket (for qsize()); STATS needs no
    session (PROTOCOL.md 4.8)."""
    socket = zmq.Context.instance().socket(zmq.DEALER)
    socket.linger = 0
    try:
        socket.connect(router_endpoint)
        socket.send_multipart(message(b"STATS", b"qsize", queue))
        while socket.poll(int(timeout * 1000)):
            frames = socket.recv_multipart()
            if frames[1:3] == [b"REPORT", b"qsize"]:
                return parse_stats(frames[3]) if len(frames) > 3 else {}
            if frames[1] == b"ERROR":
                raise BrokerError.from_fields(frames[2:])
        raise TimeoutError("no answer from the broker")
    finally:
        socket.close()
