"""asyncq.Queue: asyncio.Queue's API over an asyncq broker."""
from __future__ import annotations

import asyncio
import base64
import collections
import dataclasses
import datetime
import os
import socket as stdsocket
import warnings
from typing import (Any, Coroutine, Deque, FrozenSet, Iterable, List, NamedTuple, Optional,
                    Tuple, Union)

import zmq
import zmq.asyncio

from .consumer import Consumer, Item, QueueEmpty, current_task
from .producer import Producer
from .protocol import (NUMBER_MAX, PEEK_MAX, TEXT_MAX, WAIT_MAX_MS, BrokerError,
                       BrokerUnreachable, DeadLetter, PeekedItem, Welcome, check_name, endpoints,
                       message, parse_dead_letter, parse_peeked, put_options)
from .protocol import Stats as Stats, parse_stats as parse_stats  # (were defined here)
from .security import load_keys
from .session import Session


class Joined(NamedTuple):
    """A join's answer. count: the items that were outstanding (put and not
    yet acked or dead-lettered) on the queue when the broker received the
    join, and that the join therefore waited for; dead: of those, how many
    were dead-lettered (gave up after --max-attempts) instead of acked."""
    count: int  # type: ignore[assignment]  # (shadows tuple.count, as it always has)
    dead: int


Payload = Union[bytes, bytearray, memoryview, str]
When = Union[datetime.datetime, float]  # a datetime, or seconds since 1970
LEASE_MAX_MS = 2**31 - 1  # the broker's limit for a put's lease

class Queue:
    """A queue on an asyncq broker, used like asyncio.Queue:

        q = asyncq.Queue("localhost:5557", "default")
        await q.put(b"item")          # returns once the broker holds it
        item = await q.get()          # an Item (bytes) with .id and .attempt
        q.task_done()                 # acks the item this task got
        await q.join()                # every item put before now is acked
        await q.close()

    put, get, join, stats, peek, pause, resume, shutdown, reopen, purge,
    delete, dead_letters, requeue_dead, delete_dead, purge_dead and close
    are coroutines. Several coroutines
    may share one Queue: each get() that waits asks the broker for one
    item, so N coroutines hold at most N items (prefetch: that many more
    sent ahead), and a bare task_done() acks the item the calling task got
    (task_done(item) names it, from anywhere). The client says HELLO on
    first use; it connects with one DEALER for putting and joining and one
    for consuming (PROTOCOL.md 2), and reconnects by itself if the broker
    restarts (unconfirmed puts are sent again, 4.2).

    With CURVE (PROTOCOL.md 7), curve_secret is the path of this client's
    secret certificate (`asyncq keygen` writes NAME.key_secret) and
    server_key the broker's public certificate, or its Z85 key; they default
    to ASYNCQ_CURVE_SECRET and ASYNCQ_SERVER_KEY. After the first use,
    .roles and .persistence say what the broker allows this client and what
    its confirms promise; .held names the full queue a put waits for.
    priorities=True: every Item got carries its put's .priority (broker
    2.2; PriorityQueue's get() returns it with the item). Every time is in
    seconds.
    """

    _front = False  # every put goes to the front of its priority (LifoQueue)
    _priorities = False  # deliveries carry their priority (PriorityQueue)

    def __init__(self, broker: str = "localhost", queue: str = "default", *,
                 prefetch: int = 0, name: str = "py", timeout: float = 5.0,
                 context: Optional[zmq.Context[Any]] = None, curve_secret: Optional[str] = None,
                 server_key: Optional[str] = None, credit: Optional[int] = None,
                 priorities: bool = False) -> None:
        check_name(queue)
        check_name(name, "client")
        if credit is not None:
            warnings.warn("Queue(credit=N) is Queue(prefetch=N - 1): the credit now follows "
                          "the get() calls waiting", DeprecationWarning, stacklevel=2)
            if credit < 1:
                raise ValueError("credit must be at least 1")
            prefetch = credit - 1
        if not isinstance(prefetch, int) or prefetch < 0:
            raise ValueError(f"prefetch is a number of items, 0 or more, not {prefetch!r}")
        self.broker, self.queue, self.timeout = broker, queue, timeout
        self._prefetch = prefetch
        self._priorities = priorities or self._priorities
        self._name = name
        self._push_endpoint, self._router_endpoint = endpoints(broker)
        self._keys = load_keys(curve_secret, server_key)
        self._context = context or zmq.asyncio.Context.instance()
        self._client_id = f"{name}-{os.urandom(6).hex()}"
        self._lock = asyncio.Lock()
        self._closed = False
        self._resolved = False
        self._control: Optional[Session] = None  # for puts' SYNCs, joins, stats
        self._producer: Optional[Producer] = None
        self._consumer: Optional[Consumer] = None  # with a Session of its own
        # (payload, options, seq) of a cancelled put not confirmed
        self._cancelled_put: Optional[tuple[bytes, bytes, int]] = None
        self._queued: Optional[int] = None  # the broker's latest `queued`, for qsize()
        self._refresh: Optional["asyncio.Task[Stats]"] = None
        self._plain = b"front" if self._front else b""  # the options of a put without any

    @property
    def prefetch(self) -> int:
        """Items the broker may send this client beyond what its waiting
        get() calls need; may be changed at any time."""
        return self._prefetch

    @prefetch.setter
    def prefetch(self, prefetch: int) -> None:
        if not isinstance(prefetch, int) or prefetch < 0:
            raise ValueError(f"prefetch is a number of items, 0 or more, not {prefetch!r}")
        self._prefetch = prefetch
        if self._consumer is not None:
            self._consumer.prefetch = prefetch
            self._consumer.flush()

    @property
    def credit(self) -> int:
        """Deprecated: prefetch + 1."""
        return self.prefetch + 1

    def _welcome(self) -> Optional[Welcome]:
        for session in (self._control, self._consumer and self._consumer.session):
            if session and session.welcome:
                return session.welcome
        return None

    @property
    def roles(self) -> Optional[FrozenSet[str]]:
        """What the broker lets this client do (a frozenset of "produce",
        "consume", "admin"); None before the client has connected."""
        welcome = self._welcome()
        return welcome.roles if welcome else None

    @property
    def persistence(self) -> Optional[str]:
        """What a confirm means on this broker ("memory", "always",
        "interval" or "never", PROTOCOL.md 6); None before connecting."""
        welcome = self._welcome()
        return welcome.persistence if welcome else None

    @property
    def held(self) -> Optional[str]:
        """The name of the full queue the broker holds this client's puts
        for (they wait for room), or None: why a put() or flush() waits."""
        return self._producer.held if self._producer else None

    @property
    def reconnects(self) -> int:
        """Times this client said HELLO again (the broker restarted, lost
        its session or fell silent)."""
        sessions = (self._control, self._consumer and self._consumer.session)
        return sum(session.reconnects for session in sessions if session)

    async def _resolve(self) -> None:
        """A host name that does not resolve is said at once, with why."""
        if self._resolved or not self._router_endpoint.startswith("tcp://"):
            return
        host, _, port = self._router_endpoint[len("tcp://"):].rpartition(":")
        try:
            await asyncio.get_running_loop().getaddrinfo(host.strip("[]"), int(port),
                                                         type=stdsocket.SOCK_STREAM)
        except stdsocket.gaierror as error:
            raise BrokerUnreachable(f"cannot reach the broker at {self.broker}: host "
                                    f"{host!r} does not resolve ({error.strerror})") from None
        self._resolved = True

    async def _session(self, client_id: str, hello_seq: Any = lambda: 0) -> Session:
        await self._resolve()
        session = Session(self._context, self._router_endpoint, client_id, self._keys,
                          hello_seq, address=self.broker)
        await session.open(self.timeout)
        return session

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("queue client is closed")

    # -- putting -----------------------------------------------------------

    def _hello_seq(self) -> int:
        return self._producer.confirmed + 1 if self._producer else 1

    async def _open_producer(self) -> Producer:
        """The control session and its Producer. Its HELLO names the oldest
        unconfirmed seq: it is the producer's session (4.2)."""
        if self._producer is not None and not self._closed:
            return self._producer
        async with self._lock:
            self._check_open()
            if self._producer is None:
                self._control = await self._session(self._client_id, self._hello_seq)
                self._producer = Producer(self._control, self._context, self._push_endpoint,
                                          self._keys)
                self._producer.on_taken_over = self._producer_taken_over
        return self._producer

    def _producer_taken_over(self) -> None:
        """Another session took this client's producer id (409, PROTOCOL.md
        4.2): the puts not confirmed have failed (each put() waiting raises
        the 409), and the next put starts a producer of a new id."""
        producer, control = self._producer, self._control
        self._producer = self._control = None
        self._client_id = f"{self._name}-{os.urandom(6).hex()}"
        if producer is not None:
            producer.close()
        if control is not None:
            task = asyncio.ensure_future(control.close(bye=False))
            task.add_done_callback(_ignore)

    async def put(self, item: Payload, *, lease: Optional[float] = None,
                  priority: Optional[int] = None, delay: Optional[float] = None,
                  at: Optional[When] = None) -> None:
        """Puts item (bytes, bytearray, memoryview, or str as UTF-8) and
        returns once the broker holds it. lease: seconds each delivery may
        take before the item is delivered again (default: the queue's).
        priority: an int from -2**31 to 2**31 - 1 (default 0); the queue
        delivers its lowest priority first, first in, first out within one.
        delay: seconds (rounded up to a millisecond) before the item may be
        delivered, counted from when the broker accepts it; or at: when it
        may be, a datetime.datetime (naive: local time) or seconds since
        1970, on the broker's clock (a time past: at once). A delayed item
        counts for join() and the queue's maxsize while it waits. The broker
        refuses a delay over its --max-delay (30 days by default) with a
        400 BrokerError naming it.
        Waits while the queue is full (the broker's maxsize; .held says so).
        Raises QueueShutDown if the queue was shut down, BrokerError if the
        broker refused it, TypeError for an item or an option of another
        type, ValueError for an item larger than the broker's limit (its
        WELCOME says it), a priority out of range, a negative delay, or
        delay and at together; nothing is sent then.

        Cancelling a waiting put does not take the item back (the broker
        already has it, or will): a put of the same item right after a
        cancelled one waits for it instead of putting it twice."""
        payload = _payload(item)
        options = self._plain if priority is None and delay is None and at is None else \
            put_options(priority, delay, at, self._front)
        cancelled, self._cancelled_put = self._cancelled_put, None
        if cancelled and cancelled[0] == payload and cancelled[1] == options:
            seq = cancelled[2]  # a retry of a cancelled put: it was sent already
        else:
            if cancelled and self._producer:
                self._producer.claim(cancelled[2])
            seq = await self._send(payload, lease, options, gather=False)
        producer = self._producer
        assert producer is not None
        producer.watch(seq)
        try:
            await producer.confirm(seq)
        except asyncio.CancelledError:
            # The put was sent and cannot be taken back: the broker will hold
            # it. If the caller retries with the same item next, the retry
            # waits for this put instead of sending a copy.
            if producer.confirmed < seq:
                self._cancelled_put = (payload, options, seq)
            else:
                producer.claim(seq)
            raise
        except BaseException:
            producer.claim(seq)
            raise
        error = producer.claim(seq)
        if error:
            raise error

    async def send(self, item: Payload, *, lease: Optional[float] = None,
                   priority: Optional[int] = None, delay: Optional[float] = None,
                   at: Optional[When] = None) -> int:
        """Sends item without waiting for the broker to confirm it (the bulk
        form of put, with put's options); returns its seq. Items sent in
        one event-loop tick go out together, at its end (consecutive ones
        of one lease in one message, whatever their options: items of
        differing priorities or delays each carry their own). The broker
        takes or refuses a message whole: a delay over its --max-delay
        refuses the items sent with it too. flush() (or join(), close())
        waits for the confirmations. Waits only when the broker's window
        of unconfirmed puts is full."""
        payload = _payload(item)
        options = self._plain if priority is None and delay is None and at is None else \
            put_options(priority, delay, at, self._front)
        if self._cancelled_put and self._producer:
            self._producer.claim(self._cancelled_put[2])
            self._cancelled_put = None
        return await self._send(payload, lease, options)

    async def _send(self, payload: bytes, lease: Optional[float], options: bytes,
                    gather: bool = True) -> int:
        producer = self._producer  # open, but for a put's first (no coroutine made)
        if producer is None or self._closed:
            producer = await self._open_producer()
        assert self._control is not None and self._control.welcome is not None
        max_item = self._control.welcome.max_item
        if len(payload) > max_item:
            raise ValueError(f"item of {len(payload)} bytes is larger than the broker's "
                             f"limit of {max_item}")
        if lease is not None and not 0 < lease * 1000 <= LEASE_MAX_MS:
            raise ValueError(f"lease is more than 0 and at most {LEASE_MAX_MS // 1000} seconds")
        lease_ms = 0 if lease is None else max(1, int(lease * 1000))
        if not producer.has_room(len(payload)):
            await producer.make_room(len(payload))
        return producer.add(self.queue, payload, lease_ms, gather, options)

    async def flush(self) -> None:
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

    async def _open_consumer(self, getting: bool = False) -> Consumer:
        if self._consumer is not None and not self._closed:
            return self._consumer
        async with self._lock:
            self._check_open()
            if self._consumer is None:
                session = await self._session(self._client_id + "-get")
                consumer = Consumer(session, self.queue, self.prefetch, self._priorities)
                try:
                    await consumer.start(getting)
                except BaseException:
                    await session.close()
                    raise
                self._consumer = consumer
        return self._consumer

    def get_nowait(self) -> Item:
        """An item already delivered to this client (prefetch lets the
        broker send ahead), else raises asyncq.QueueEmpty. Delivery starts
        with the first get()."""
        if self._consumer is None:
            raise QueueEmpty
        return self._consumer.get_nowait()

    def get(self) -> Coroutine[Any, Any, Item]:
        """Waits for an item and returns it (an Item: bytes with .id and
        .attempt). While it waits, the broker may send this client one more
        item. Cancelling a waiting get() loses nothing: an item that
        arrives is kept for the next get(). Raises QueueShutDown once the
        queue is shut down and empty, or deleted, in every get() waiting
        and every later one while that lasts: a get() made after it asks
        the broker again (one round trip), and waits for items as usual
        once the queue is reopened (by any client) or, after a delete, made
        anew by a put. The item is held for the task that calls get() (also
        when asyncio.wait_for() or create_task() runs the wait): that task's
        bare task_done() acks it."""
        return self._get(current_task())

    async def _get(self, owner: Optional["asyncio.Task[object]"]) -> Item:
        consumer = await self._open_consumer(getting=True)
        return await consumer.get(owner)

    def task_done(self, item: Union[Item, int, None] = None) -> None:
        """Acks an item got from get(): the given one (an Item or its id,
        from any task), or, without an argument, the one item that the
        calling asyncio task got and has not acked. Raises ValueError,
        naming task_done(item), when that task holds no such item or
        several; it never acks another task's item. Acks made in one
        event-loop tick go to the broker together, at its end."""
        if self._consumer is None:
            raise ValueError("task_done() called too many times: this client holds no item")
        self._consumer.task_done(item)

    def _held_consumer(self) -> Consumer:
        if self._consumer is None:
            raise ValueError("this client holds no item")
        return self._consumer

    def touch(self, item: Union[Item, int]) -> "asyncio.Future[None]":
        """Gives a held item a fresh lease (sent at once; returns a done
        future, so `await q.touch(item)` works too)."""
        self._held_consumer().touch(item)
        return _done()

    def nack(self, item: Union[Item, int], delay: float = 0.0,
             reason: str = "") -> "asyncio.Future[None]":
        """Gives a held item back, to be delivered again after delay seconds
        (at most a day); reason (text) goes to the broker's log. Sent at
        once; returns a done future, so `await q.nack(...)` works too."""
        self._held_consumer().nack(item, delay, reason)
        return _done()

    @property
    def errors(self) -> Deque[BrokerError]:
        """The broker's latest ERRORs about this client's acks, touches and
        nacks (404, 408 with .ids), for inspection."""
        return self._consumer.errors if self._consumer else collections.deque()

    # -- joining, watching, shutting down ----------------------------------

    def _send_acks(self) -> None:
        """Acks made in this tick go out now, before a JOIN or STATS that
        should see them (they would go at the end of the tick)."""
        if self._consumer is not None:
            self._consumer.flush()

    async def _control_session(self) -> Session:
        """The session for a JOIN, STATS or SHUTDOWN: the consumer's, when
        this client consumes, so that it reaches the broker after the acks
        sent before it (two connections keep no order between them); else
        the producer's, whose puts join() has had confirmed first."""
        await self._open_producer()
        assert self._control is not None
        self._send_acks()
        consumer = self._consumer
        if consumer is not None and consumer.session.welcome is not None and not self._closed:
            return consumer.session
        return self._control

    async def join(self, timeout: Optional[float] = None, *, all: bool = False) -> Joined:
        """Waits until every item the broker accepted on the queue before the
        join (this client's puts included) has been acked or dead-lettered;
        with all=True, until nothing at all is outstanding (asyncio's join).
        Returns Joined(count, dead): count is how many items were
        outstanding when the broker received the join (what it waited
        for), dead how many of those were dead-lettered instead of acked.
        Raises TimeoutError after timeout seconds (at most a day),
        QueueShutDown if the queue was shut down with immediate."""
        if timeout is not None and not 0 <= timeout * 1000 <= WAIT_MAX_MS:
            raise ValueError(f"join(): timeout is 0 to {WAIT_MAX_MS // 1000} seconds")
        producer = await self._open_producer()
        await producer.confirm(producer.seq)
        control = await self._control_session()
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout

        def build(tag: bytes) -> list[bytes]:
            ms = 0 if deadline is None else max(1, int((deadline - loop.time()) * 1000))
            return message(b"JOIN", tag, self.queue, ms, b"all" if all else b"before")

        command, fields = await control.request(b"join", build)
        if command == b"TIMEOUT":
            raise TimeoutError(f"join timed out: {int(fields[2])} items still outstanding")
        return Joined(int(fields[2]), int(fields[3]))

    async def stats(self) -> Stats:
        """The queue's numbers (PROTOCOL.md 4.8) as a dict of ints and
        strings; empty when the broker does not know the queue."""
        control = await self._control_session()
        _, fields = await control.request(b"stats", lambda tag: message(b"STATS", tag, self.queue))
        stats = parse_stats(fields[1]) if len(fields) > 1 else {}
        queued = stats.get("queued", 0)
        self._queued = queued if isinstance(queued, int) else 0
        return stats

    async def shutdown(self, immediate: bool = False) -> Stats:
        """Shuts the queue down (Python 3.13's Queue.shutdown, PROTOCOL.md
        4.11), for every client: later puts raise QueueShutDown; consumers
        get what is left, then every get() raises QueueShutDown; joins
        complete once the rest is done. immediate=True discards the queued
        items (a waiting join then raises QueueShutDown). reopen() undoes
        it. Needs the admin role on a broker with keys. Returns the queue's
        stats after it."""
        control = await self._control_session()
        mode = b"immediate" if immediate else b"drain"
        _, fields = await control.request(
            b"shutdown", lambda tag: message(b"SHUTDOWN", tag, self.queue, mode))
        return parse_stats(fields[1]) if len(fields) > 1 else {}

    async def _lifecycle(self, command: bytes) -> List[bytes]:
        """REOPEN, PURGE or DELETE (PROTOCOL.md 4.13): the REPORT's lines,
        none when the broker does not have the queue."""
        control = await self._control_session()
        _, fields = await control.request(
            command.lower(), lambda tag: message(command, tag, self.queue))
        return fields[1:]

    async def reopen(self) -> None:
        """Opens the queue again after shutdown() (PROTOCOL.md 4.13), for
        every client: puts are taken again, and consumers' get() calls wait
        for items instead of raising QueueShutDown. This client's next
        get() consumes again at once; another client's, once it asks the
        broker again (each get() after a QueueShutDown does), or at once if
        the broker still had credit of it. An open queue is left as it is.
        A queue the broker does not have (never used, deleted, or
        forgotten once idle) is not made: nothing happens, and no error.
        Needs the admin role on a broker with keys (else a 403
        BrokerError); raises QueueShutDown (503) while the broker is
        stopping (a signal), and BrokerError (400) from a broker before
        2.2."""
        if await self._lifecycle(b"REOPEN") and self._consumer is not None:
            self._consumer.resume()  # the notice is out of date: CREDIT again

    async def purge(self) -> int:
        """Discards the queue's queued and delayed items (counted in its
        `discarded`); items being processed stay with their consumers, and
        the queue stays open. Waiting joins count the discarded items as
        done. Returns how many were discarded (0 for a queue the broker
        does not have). Needs the admin role on a broker with keys."""
        return _count(await self._lifecycle(b"PURGE"), "purged", empty=0)

    async def delete(self) -> int:
        """Deletes the queue: every item it holds (queued, delayed, being
        processed: their task_done() is then answered 404, and dead) is
        discarded, waiting joins and puts held for room raise
        QueueShutDown, and so does every get() waiting, of every client,
        as after a shutdown. The broker then forgets the queue: a later
        put (or a get() of a client that was not told) makes a new, empty,
        open one, which a client told of the delete consumes from again
        on its next get(). Returns how many items were discarded (0 for a
        queue the broker does not have, and nothing happens). Needs the
        admin role on a broker with keys."""
        return _count(await self._lifecycle(b"DELETE"), "deleted", empty=0)

    async def _dead(self, action: bytes) -> List[bytes]:
        control = await self._control_session()
        _, fields = await control.request(
            b"dead", lambda tag: message(b"DEAD", tag, self.queue, action))
        return fields[1:]

    async def dead_letters(self) -> List[DeadLetter]:
        """The queue's dead items (those that used up the broker's
        --max-attempts), oldest death first, as DeadLetter objects: id,
        attempts, size, died, cause, reason and the payload's start. The
        broker shows at most 1024. Needs the admin role on a broker with
        keys."""
        return [parse_dead_letter(line) for line in await self._dead(b"list") if line]

    async def dead_letter(self, item: Union[DeadLetter, int]) -> DeadLetter:
        """One dead item whole (a DeadLetter or its id): as dead_letters()
        shows it, with its whole payload (payload_cut False), however large
        (the broker sends 785 664 bytes an answer, PROTOCOL.md 4.12). A 404
        BrokerError if it is not a dead item of this queue. Needs the admin
        role with keys; broker 2.2."""
        item_id = _dead_id(item)
        payload = bytearray()
        while True:
            lines = await self._dead(b"show %d %d" % (item_id, len(payload)))
            try:
                letter = parse_dead_letter(lines[0])
                got = b"".join(base64.b64decode(line, validate=True) for line in lines[1:])
            except (IndexError, ValueError) as error:
                raise BrokerError(400, "MALFORMED", text=f"DEAD show answered not as PROTOCOL.md "
                                  f"4.12 says: {error}") from None
            payload += got
            if len(payload) >= letter.size or not got:
                break
        if len(payload) != letter.size:
            raise BrokerError(400, "MALFORMED", text=f"DEAD show gave {len(payload)} bytes of an "
                              f"item of {letter.size}")
        return dataclasses.replace(letter, payload=bytes(payload), payload_cut=False)

    async def requeue_dead(
            self, items: Optional[Iterable[Union[DeadLetter, int]]] = None) -> int:
        """Puts dead items back at the end of the queue, their attempts
        reset to 0; returns how many. Without an argument (None), every
        dead item. With items (a list or other iterable of DeadLetter
        objects, as dead_letters() gives, or their ids; an empty one is
        nothing: 0), those only, all or none (broker 2.2): if one is not a
        dead item of this queue (requeued or deleted already, an id of
        another queue), a 404 BrokerError names every such id in .ids and
        nothing changes. The ids go in one request, of at most 1024 bytes
        (`requeue ` and the ids in decimal, a space between them: about
        50 ids of the broker's 20-digit size, more of shorter ones); more
        raise ValueError, nothing sent: pass them in parts, each all or
        none. An id named twice counts once. Needs the admin role with
        keys."""
        if items is None:
            return _count(await self._dead(b"requeue"), "requeued")
        chosen = _dead_items(items)
        if not chosen:
            return 0
        return _count(await self._dead(_dead_action(b"requeue", chosen)), "requeued")

    async def delete_dead(self, items: Iterable[Union[DeadLetter, int]]) -> int:
        """Deletes the given dead items (an iterable of DeadLetter objects
        or ids) of the queue, all or none, as requeue_dead(items) does (the
        same 404 and ValueError, the same limit of about 50 ids in one
        call); returns how many; an empty one is nothing: 0 (purge_dead()
        deletes them all). Needs the admin role with keys."""
        chosen = _dead_items(items)
        if not chosen:
            return 0
        return _count(await self._dead(_dead_action(b"delete", chosen)), "deleted")

    async def purge_dead(self) -> int:
        """Deletes every dead item of the queue; returns how many. Needs the
        admin role with keys."""
        return _count(await self._dead(b"purge"), "purged")

    async def peek(self, n: int = 10) -> List[PeekedItem]:
        """The next n items (1 to 1024) the queue would deliver, in that
        order, left where they are (PROTOCOL.md 4.14): PeekedItem objects
        with id, attempts, size, priority, age (seconds) and the payload's
        first 64 bytes. Fewer when it holds fewer; delayed items and those
        being processed are not shown; [] for a queue the broker does not
        have. Needs the consume or admin role with keys; broker 2.2."""
        if isinstance(n, bool) or not isinstance(n, int):
            raise TypeError(f"peek(): n is an int, not {type(n).__name__}")
        if not 1 <= n <= PEEK_MAX:
            raise ValueError(f"peek(): n is 1 to {PEEK_MAX}, not {n}")
        control = await self._control_session()
        _, fields = await control.request(
            b"peek", lambda tag: message(b"PEEK", tag, self.queue, n))
        return [parse_peeked(line) for line in fields[1:] if line]

    async def _pause(self, command: bytes) -> Stats:
        control = await self._control_session()
        _, fields = await control.request(
            command.lower(), lambda tag: message(command, tag, self.queue))
        return parse_stats(fields[1]) if len(fields) > 1 else {}

    async def pause(self) -> Stats:
        """Pauses the queue's deliveries, for every client (PROTOCOL.md
        4.14): puts are taken as usual, nothing is delivered (get() calls
        wait), items being processed stay with their consumers, and joins
        wait, until resume(). A queue the broker does not have is made, so
        that it can be paused before its first put; a durable broker keeps
        the pause across restarts. Returns the queue's stats after it
        (stats["paused"] is 1). Needs the admin role with keys; broker 2.2."""
        return await self._pause(b"PAUSE")

    async def resume(self) -> Stats:
        """Delivers again after pause(); returns the queue's stats after it
        (stats["paused"] is 0). A queue not paused is left as it is. Needs
        the admin role with keys; broker 2.2."""
        return await self._pause(b"RESUME")

    def qsize(self) -> int:
        """Items waiting for delivery (asyncio's qsize()), without waiting:
        those delivered to this client and not yet got, plus the broker's
        count as of its latest answer. Each call asks the broker again in
        the background (one request at a time), so a value is at most one
        round trip old when qsize() is called repeatedly; before the first
        answer it counts only this client's. `(await q.stats())["queued"]`
        is the broker's count now."""
        waiting = self._consumer.waiting if self._consumer else 0
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return waiting + (self._queued or 0)
        if not self._closed and (self._refresh is None or self._refresh.done()):
            self._refresh = asyncio.ensure_future(self.stats())
            self._refresh.add_done_callback(_ignore)
        return waiting + (self._queued or 0)

    def empty(self) -> bool:
        """qsize() == 0, with qsize()'s freshness."""
        return self.qsize() == 0

    async def close(self, timeout: Optional[float] = None) -> None:
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
            if self._refresh is not None and not self._refresh.done():
                self._refresh.cancel()
            if self._consumer is not None:
                await self._consumer.close()
            if self._producer is not None and self._control is not None:
                self._producer.close()
                await self._control.close()

    async def __aenter__(self) -> "Queue":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class LifoQueue(Queue):
    """A Queue whose puts go to the front of the queue (asyncio.LifoQueue):
    get() returns the newest item first, within its priority (put's
    priority still orders). Its puts take no delay or at (ValueError): the
    broker puts no delayed item at the front. Other clients of the same
    queue put as they do: a plain Queue's puts go to the back."""

    _front = True


class PriorityQueue(Queue):
    """A Queue used as asyncio.PriorityQueue is: put((priority, item)) and
    get() returns (priority, item), lowest priority first, first in, first
    out within one (the broker orders: every client of the queue sees the
    same order). priority is an int from -2**31 to 2**31 - 1; put(item,
    priority=P) is the same as put((P, item)), and a bare put(item) puts
    it at priority 0. task_done() takes the pair too. The item got is an
    Item, whose .priority is the same number. Needs broker 2.2."""

    _priorities = True

    async def put(self, item: Union[Payload, Tuple[int, Payload]], *,
                  lease: Optional[float] = None, priority: Optional[int] = None,
                  delay: Optional[float] = None, at: Optional[When] = None) -> None:
        """put((priority, item)) or put(item, priority=P), with Queue.put's
        options and errors."""
        payload, priority = _prioritised(item, priority)
        await super().put(payload, lease=lease, priority=priority, delay=delay, at=at)

    async def send(self, item: Union[Payload, Tuple[int, Payload]], *,
                   lease: Optional[float] = None, priority: Optional[int] = None,
                   delay: Optional[float] = None, at: Optional[When] = None) -> int:
        """send((priority, item)), as put() takes it; Queue.send otherwise."""
        payload, priority = _prioritised(item, priority)
        return await super().send(payload, lease=lease, priority=priority, delay=delay, at=at)

    def get(self) -> Coroutine[Any, Any, Tuple[int, Item]]:  # type: ignore[override]
        """(priority, item) of the next item: Queue.get() otherwise."""
        return self._get_pair(current_task())

    async def _get_pair(self, owner: Optional["asyncio.Task[object]"]) -> Tuple[int, Item]:
        return _pair(await self._get(owner))

    def get_nowait(self) -> Tuple[int, Item]:  # type: ignore[override]
        return _pair(super().get_nowait())

    def task_done(self, item: Union[Item, int, Tuple[int, Item], None] = None) -> None:
        """Queue.task_done(), which also takes the (priority, item) pair."""
        if isinstance(item, tuple):
            item = item[1]
        super().task_done(item)


def _prioritised(item: Union[Payload, Tuple[int, Payload]],
                 priority: Optional[int]) -> Tuple[Payload, int]:
    """A PriorityQueue's put: the payload and its priority."""
    if isinstance(item, tuple):
        if len(item) != 2 or isinstance(item[0], bool) or not isinstance(item[0], int):
            raise TypeError("a PriorityQueue takes (priority, item): an int, then bytes or str")
        if priority is not None:
            raise TypeError("priority given twice: in the (priority, item) pair and as priority=")
        return item[1], item[0]
    return item, 0 if priority is None else priority


def _pair(item: Item) -> Tuple[int, Item]:
    return (0 if item.priority is None else item.priority), item


def _payload(item: Payload) -> bytes:
    """An item as the bytes put on the wire: str as UTF-8."""
    if isinstance(item, str):
        return item.encode()
    if isinstance(item, (bytes, bytearray, memoryview)):
        return bytes(item)
    raise TypeError(f"an item is bytes, bytearray, memoryview or str, not "
                    f"{type(item).__name__} (serialise it first, e.g. json.dumps(item))")


def _done() -> "asyncio.Future[None]":
    future: "asyncio.Future[None]" = asyncio.get_running_loop().create_future()
    future.set_result(None)
    return future


def _ignore(task: "asyncio.Future[Any]") -> None:
    if not task.cancelled():
        task.exception()  # a failed background refresh: the next one tries again


DEAD_ACTION_MAX = TEXT_MAX  # bytes of DEAD's action frame: "requeue ID..." or "delete ID..."


def _dead_items(items: Iterable[Union[DeadLetter, int]]) -> tuple[Union[DeadLetter, int], ...]:
    """The items of requeue_dead/delete_dead, as a tuple; a lone DeadLetter
    or id (not a collection of them) is a TypeError naming the form."""
    if isinstance(items, (DeadLetter, int, str, bytes)):
        raise TypeError("requeue_dead and delete_dead take a list of DeadLetters or ids, "
                        f"not one {type(items).__name__}: [item]")
    return tuple(items)


def _dead_id(item: Union[DeadLetter, int]) -> int:
    """The id of a dead item given as a DeadLetter or an id: TypeError or
    ValueError for anything else."""
    item_id = item.id if isinstance(item, DeadLetter) else item
    if isinstance(item_id, bool) or not isinstance(item_id, int):
        raise TypeError(f"a dead item is a DeadLetter or its id (an int), not "
                        f"{type(item).__name__}")
    if not 0 <= item_id <= NUMBER_MAX:
        raise ValueError(f"not an item id: {item_id}")
    return item_id


def _dead_action(verb: bytes, items: tuple[Union[DeadLetter, int], ...]) -> bytes:
    """DEAD's action frame for requeue or delete of these items (each once,
    in order). Raises TypeError or ValueError, nothing sent, for an item
    that is not a DeadLetter or an id, or more than fit in one frame: the
    broker takes them all or none, so they are not split."""
    ids = {_dead_id(item): None for item in items}
    action = verb + b" " + b" ".join(str(item_id).encode() for item_id in ids)
    if len(action) > DEAD_ACTION_MAX:
        raise ValueError(
            f"{len(ids)} ids do not fit in one DEAD request ({len(action)} bytes; the broker "
            f"takes at most {DEAD_ACTION_MAX}: {verb.decode()!r}, a space and the ids in "
            f"decimal, a space between them, about 50 ids): nothing was sent; pass them in "
            f"parts (each part is all or none)")
    return action


def _count(lines: List[bytes], key: str, empty: Optional[int] = None) -> int:
    """N of the REPORT line `key=N` that answers DEAD requeue or purge,
    PURGE or DELETE; empty when there is no line (a queue the broker does
    not have), if not None."""
    if not lines and empty is not None:
        return empty
    value = parse_stats(lines[0]).get(key) if lines else None
    if not isinstance(value, int):
        raise ValueError(f"the broker answered {lines[:1]!r}, not {key}=N")
    return value
