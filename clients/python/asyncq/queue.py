"""asyncq.Queue: asyncio.Queue's API over an asyncq broker."""
import asyncio
import collections
import os
import time

import zmq
import zmq.asyncio

from .consumer import Consumer, QueueEmpty
from .producer import Producer
from .protocol import (WAIT_MAX_MS, BrokerError, BrokerUnreachable, check_name, endpoints,
                       message, parse)
from .security import HandshakeWatch, apply_keys, load_keys
from .session import Session

Joined = collections.namedtuple("Joined", "count dead")

LEASE_MAX_MS = 2**31 - 1  # the broker's limit for a put's lease


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

    With CURVE (PROTOCOL.md 7), curve_secret is the path of this client's
    secret certificate (`asyncq keygen` writes NAME.key_secret) and
    server_key the broker's public certificate, or its Z85 key; they default
    to ASYNCQ_CURVE_SECRET and ASYNCQ_SERVER_KEY. After the first use,
    .roles and .persistence say what the broker allows this client and what
    its confirms promise; .held names the full queue a put waits for.
    """

    def __init__(self, broker="localhost", queue="default", *, credit=1, name="py",
                 timeout=5.0, context=None, curve_secret=None, server_key=None):
        check_name(queue)
        check_name(name, "client")
        if credit < 1:
            raise ValueError("credit must be at least 1")
        self.broker, self.queue, self.credit, self.timeout = broker, queue, credit, timeout
        self._name = name
        self._push_endpoint, self._router_endpoint = endpoints(broker)
        self._keys = load_keys(curve_secret, server_key)
        self._context = context or zmq.asyncio.Context.instance()
        self._client_id = f"{name}-{os.urandom(6).hex()}"
        self._lock = asyncio.Lock()
        self._closed = False
        self._control = None        # Session for puts' SYNCs, joins and stats
        self._producer = None
        self._consumer = None       # with a Session of its own
        self._cancelled_put = None  # (payload, seq) of a put cancelled before confirmed

    def _welcome(self):
        for session in (self._control, self._consumer and self._consumer.session):
            if session and session.welcome:
                return session.welcome
        return None

    @property
    def roles(self):
        """What the broker lets this client do (a frozenset of "produce",
        "consume", "admin"); None before the client has connected."""
        welcome = self._welcome()
        return welcome and welcome.roles

    @property
    def persistence(self):
        """What a confirm means on this broker ("memory", "always",
        "interval" or "never", PROTOCOL.md 6); None before connecting."""
        welcome = self._welcome()
        return welcome and welcome.persistence

    @property
    def held(self):
        """The name of the full queue the broker holds this client's puts
        for (they wait for room), or None: why a put() or flush() waits."""
        return self._producer and self._producer.held

    @property
    def reconnects(self):
        """Times this client said HELLO again (the broker restarted, lost
        its session or fell silent)."""
        sessions = (self._control, self._consumer and self._consumer.session)
        return sum(session.reconnects for session in sessions if session)

    async def _session(self, client_id, hello_seq=lambda: 0):
        session = Session(self._context, self._router_endpoint, client_id, self._keys,
                          hello_seq)
        await session.open(self.timeout)
        return session

    def _check_open(self):
        if self._closed:
            raise RuntimeError("queue client is closed")

    # -- putting -----------------------------------------------------------

    def _hello_seq(self):
        return self._producer.confirmed + 1 if self._producer else 1

    async def _open_producer(self):
        """The control session and its Producer. Its HELLO names the oldest
        unconfirmed seq: it is the producer's session (4.2)."""
        async with self._lock:
            self._check_open()
            if self._producer is None:
                self._control = await self._session(self._client_id, self._hello_seq)
                self._producer = Producer(self._control, self._context, self._push_endpoint,
                                          self._keys)
        return self._producer

    async def put(self, item, *, lease=None):
        """Puts item (bytes, or str as UTF-8) and returns once the broker
        holds it. lease: seconds each delivery may take before the item is
        delivered again (default: the queue's). Waits while the queue is full
        (the broker's maxsize; .held says so). Raises QueueShutDown if the
        queue was shut down, BrokerError if the broker refused it.

        Cancelling a waiting put does not take the item back (the broker
        already has it, or will): a put of the same item right after a
        cancelled one waits for it instead of putting it twice."""
        payload = _payload(item)
        cancelled, self._cancelled_put = self._cancelled_put, None
        if cancelled and cancelled[0] == payload:
            seq = cancelled[1]  # a retry of a cancelled put: it was sent already
        else:
            if cancelled:
                self._producer.claim(cancelled[1])
            seq = await self._send(payload, lease)
            self._producer.watch(seq)
        producer = self._producer
        try:
            await producer.confirm(seq)
        except asyncio.CancelledError:
            # The put was sent and cannot be taken back: the broker will hold
            # it. If the caller retries with the same item next, the retry
            # waits for this put instead of sending a copy.
            if producer.confirmed < seq:
                self._cancelled_put = (payload, seq)
            else:
                producer.claim(seq)
            raise
        except BaseException:
            producer.claim(seq)
            raise
        error = producer.claim(seq)
        if error:
            raise error

    async def send(self, item, *, lease=None):
        """Sends item without waiting for the broker to confirm it (the bulk
        form of put); returns its seq. Items sent in one event-loop tick go
        out together, at its end. flush() (or join(), close()) waits for
        the confirmations. Waits only when the broker's window of
        unconfirmed puts is full."""
        if self._cancelled_put:
            self._producer.claim(self._cancelled_put[1])
            self._cancelled_put = None
        return await self._send(_payload(item), lease)

    async def _send(self, payload, lease):
        producer = await self._open_producer()
        max_item = self._control.welcome.max_item
        if len(payload) > max_item:
            raise ValueError(f"item of {len(payload)} bytes is larger than the broker's "
                             f"limit of {max_item}")
        if lease is not None and not 0 < lease * 1000 <= LEASE_MAX_MS:
            raise ValueError(f"lease is more than 0 and at most {LEASE_MAX_MS // 1000} seconds")
        lease_ms = 0 if lease is None else max(1, int(lease * 1000))
        await producer.make_room(len(payload))
        return producer.add(self.queue, payload, lease_ms)

    async def flush(self):
        """Waits until the broker has confirmed every put sent. Raises the
        BrokerError of a put made with send() that the broker refused since
        the last flush (put() raises its own)."""
        if self._producer is None:
            return
        await self._producer.confirm(self._producer.seq)
        refusals = self._producer.refusals
        if refusals:
            error = refusals.popleft()
            refusals.clear()
            raise error

    # -- getting -----------------------------------------------------------

    async def _open_consumer(self):
        async with self._lock:
            self._check_open()
            if self._consumer is None:
                session = await self._session(self._client_id + "-get")
                consumer = Consumer(session, self.queue, self.credit)
                try:
                    await consumer.start()
                except BaseException:
                    await session.close()
                    raise
                self._consumer = consumer
        return self._consumer

    def get_nowait(self):
        """An item already delivered to this client (its credit lets the
        broker send ahead), else raises asyncq.QueueEmpty. Delivery starts
        with the first get()."""
        if self._consumer is None:
            raise QueueEmpty
        return self._consumer.get_nowait()

    async def get(self):
        """Waits for an item and returns it (an Item: bytes with .id and
        .attempt). Cancelling a waiting get() loses nothing: an item that
        arrives is kept for the next get(). Raises QueueShutDown once the
        queue is shut down and empty."""
        consumer = await self._open_consumer()
        return await consumer.get()

    def task_done(self, item=None):
        """Acks an item got from get(): the given one (an Item or its id), or
        the oldest one held. Raises ValueError if this client holds no such
        item (called more times than get()). Acks made in one event-loop
        tick go to the broker together, at its end."""
        if self._consumer is None:
            raise ValueError("task_done() called too many times")
        self._consumer.task_done(item)

    def _held_consumer(self):
        if self._consumer is None:
            raise ValueError("this client holds no item")
        return self._consumer

    async def touch(self, item):
        """Gives a held item a fresh lease."""
        self._held_consumer().touch(item)

    async def nack(self, item, delay=0.0, reason=""):
        """Gives a held item back, to be delivered again after delay seconds
        (at most a day); reason (text) goes to the broker's log."""
        self._held_consumer().nack(item, delay, reason)

    @property
    def errors(self):
        """The broker's latest ERRORs about this client's acks, touches and
        nacks (404, 408 with .ids), for inspection."""
        return self._consumer.errors if self._consumer else collections.deque()

    # -- joining and watching ----------------------------------------------

    def _send_acks(self):
        """Acks made in this tick go out now, before a JOIN or STATS that
        should see them (they would go at the end of the tick)."""
        if self._consumer is not None:
            self._consumer.flush_acks()

    async def join(self, timeout=None, *, all=False):
        """Waits until every item the broker accepted on the queue before the
        join (this client's puts included) has been acked or dead-lettered;
        with all=True, until nothing at all is outstanding (asyncio's join).
        Returns Joined(count, dead). Raises TimeoutError after timeout
        seconds (at most a day), QueueShutDown if the queue was shut down
        with immediate."""
        if timeout is not None and not 0 <= timeout * 1000 <= WAIT_MAX_MS:
            raise ValueError(f"join(): timeout is 0 to {WAIT_MAX_MS // 1000} seconds")
        producer = await self._open_producer()
        await producer.confirm(producer.seq)
        self._send_acks()
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout

        def build(tag):
            ms = 0 if deadline is None else max(1, int((deadline - loop.time()) * 1000))
            return message(b"JOIN", tag, self.queue, ms, b"all" if all else b"before")

        command, fields = await self._control.request(b"join", build)
        if command == b"TIMEOUT":
            raise TimeoutError(f"join timed out: {int(fields[2])} items still outstanding")
        return Joined(int(fields[2]), int(fields[3]))

    async def stats(self):
        """The queue's numbers (PROTOCOL.md 4.8) as a dict of ints and strings."""
        await self._open_producer()
        self._send_acks()
        _, fields = await self._control.request(
            b"stats", lambda tag: message(b"STATS", tag, self.queue))
        return parse_stats(fields[1]) if len(fields) > 1 else {}

    def qsize(self):
        """Items waiting for delivery (asyncio's qsize()). A request to the
        broker: blocks for one round trip; use await stats() to avoid that."""
        return blocking_stats(self._router_endpoint, self.queue, self.timeout, self._keys,
                              f"{self._name}-{os.urandom(6).hex()}").get("queued", 0)

    def empty(self):
        return self.qsize() == 0

    async def close(self, timeout=None):
        """Waits for every put to be confirmed (at most timeout seconds, then
        raises TimeoutError: those puts may be lost), then ends both sessions:
        items delivered to this client and not acked go back to the queue."""
        if self._closed:
            return
        try:
            if self._producer is not None and self._producer.unconfirmed:
                await asyncio.wait_for(self._producer.confirm(self._producer.seq), timeout)
        finally:
            self._closed = True
            if self._consumer is not None:
                await self._consumer.close()
            if self._producer is not None:
                self._producer.close()
                await self._control.close()

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


def blocking_stats(router_endpoint, queue, timeout, keys, client_id):
    """STATS over a short-lived blocking DEALER (for qsize()). STATS needs a
    session (PROTOCOL.md 2): HELLO first, BYE after."""
    socket = zmq.Context.instance().socket(zmq.DEALER)
    apply_keys(socket, keys)
    watch = HandshakeWatch(socket)
    deadline = time.monotonic() + timeout
    try:
        socket.connect(router_endpoint)
        socket.send_multipart(message(b"HELLO", b"hello", client_id, 0))
        if _blocking_reply(socket, b"hello", deadline) is None:
            raise watch.failure(keys) or BrokerUnreachable(
                f"no answer from the broker at {router_endpoint}")
        socket.send_multipart(message(b"STATS", b"stats", queue))
        reply = _blocking_reply(socket, b"stats", deadline)
        socket.send_multipart(message(b"BYE", b"bye"))
        if reply is None:
            raise TimeoutError("no answer from the broker")
        return parse_stats(reply[1]) if len(reply) > 1 else {}
    finally:
        watch.close()
        socket.close(linger=1000)  # the BYE still goes; close() does not wait


def _blocking_reply(socket, tag, deadline):
    """The fields of the reply tagged tag, or None at the deadline. Answers
    HEARTBEATs meanwhile; raises BrokerError for an ERROR about tag."""
    while socket.poll(max(0, int((deadline - time.monotonic()) * 1000))):
        parsed = parse(socket.recv_multipart())
        if parsed is None:
            continue
        command, fields = parsed
        if command == b"HEARTBEAT" and fields:
            socket.send_multipart(message(b"HEARTBEAT", fields[0]))
        elif command == b"ERROR" and len(fields) > 2 and fields[2] == tag:
            raise BrokerError.from_fields(fields)
        elif fields and fields[0] == tag and command != b"ERROR":
            return fields
    return None
