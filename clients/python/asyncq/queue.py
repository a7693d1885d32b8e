"""asyncq.Queue: asyncio.Queue's API over an asyncq broker, or over a
service of several brokers (shards, PROTOCOL.md 4.15)."""
from __future__ import annotations

import asyncio
import base64
import collections
import dataclasses
import datetime
import heapq
import os
import warnings
from typing import (Any, Awaitable, Callable, Coroutine, Deque, Dict, FrozenSet, Iterable,
                    List, NamedTuple, Optional, Tuple, TypeVar, Union)

import zmq
import zmq.asyncio

from .consumer import Consumer, Item, QueueEmpty, current_task
from .producer import Producer, Producers
from .protocol import (NUMBER_MAX, PEEK_MAX, TEXT_MAX, WAIT_MAX_MS, BrokerError,
                       BrokerUnreachable, DeadLetter, Fields, Frames, PeekedItem, Welcome,
                       check_name, message, parse_dead_letter, parse_peeked, put_options,
                       shard_of)
from .protocol import Stats as Stats, parse_stats as parse_stats  # (were defined here)
from .security import load_keys
from .service import Key, Service
from .session import Session


class Joined(NamedTuple):
    """A join's answer. count: the items that were outstanding (put and not
    yet acked or dead-lettered) on the queue when the broker received the
    join, and that the join therefore waited for; dead: of those, how many
    were dead-lettered (gave up after --max-attempts) instead of acked.
    With several brokers, each one's, summed."""
    count: int  # type: ignore[assignment]  # (shadows tuple.count, as it always has)
    dead: int


Payload = Union[bytes, bytearray, memoryview, str]
When = Union[datetime.datetime, float]  # a datetime, or seconds since 1970
LEASE_MAX_MS = 2**31 - 1  # the broker's limit for a put's lease
# Keys of a STATS line that count the same things at every broker (a client
# consumes or joins at each): the service's is the most any says, not the sum.
MOST_KEYS = frozenset(("consumers", "joiners", "lease_ms", "paused"))


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

    A service of several brokers (shards, PROTOCOL.md 4.15) is one Queue
    too: broker is one address of it, or several separated by commas
    ("a:5557,b:5559"), and a host name that resolves to several addresses
    means each of them. On first use the client asks each broker which
    shard it is and which brokers make up its service, and connects to
    every one (.brokers: shard -> address). Puts spread: each batch (the
    puts of one event-loop tick) goes to the next broker in turn that is up
    and not holding puts for a full queue; put(item, key=K) goes to the
    shard of its key instead (fnv1a32(K) mod the number of shards), in
    order with the other puts of that key. get() takes from every broker,
    the credit of the waiting get() calls shared among them: N coroutines
    still hold at most N items in all. join() waits for every broker;
    stats() sums them (shard_stats() gives each one's); shutdown, reopen,
    purge, delete, pause, resume, peek and the dead letters act on every
    broker; a dead item's id names its broker (its top 8 bits). FIFO and
    priorities hold per shard: two puts without a key may be got in either
    order. An address given that answers nothing and that no broker lists
    is logged and left out (.unreachable names it, with why); the others
    are served. Two brokers saying the same shard raise ShardConflict.

    A shard may be a group of replicas (broker 2.3, PROTOCOL.md 4.16):
    give any of its addresses, or all. A replica that does not lead
    answers HELLO with 421 and the client goes to the leader it names (or,
    during an election, tries the next replica a moment later); the
    addresses of one group are one shard, .brokers naming its leader.
    When the leader falls silent (its connection lost: at once; else after
    three heartbeats) or stops leading, the client says HELLO to the
    replicas in turn, from the next, until one leads, then carries on as
    after a broker restart: unconfirmed puts are sent again (the group
    keeps each put once), credit and joins asked again. .persistence is
    then "replicated". Every shard of a service may be such a group
    (broker 2.4, its `groups`): given any address of the service, the client
    finds each shard at its leader, asking the replicas of its group in
    turn (a group's first replica down is passed over, and a group none
    of whose replicas answers yet is looked for at each in the
    background).

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
        self._keys = load_keys(curve_secret, server_key)
        self._context = context or zmq.asyncio.Context.instance()
        self._service = Service(broker, self._context, self._keys, timeout)
        self._client_id = f"{name}-{os.urandom(6).hex()}"
        self._lock = asyncio.Lock()
        self._closed = False
        self._producers: Optional[Producers] = None  # with their sessions: SYNCs, joins, stats
        self._consumer: Optional[Consumer] = None  # with sessions of its own
        self._consumer_opening: Optional["asyncio.Task[Consumer]"] = None
        # (payload, options, key, producer, seq) of a cancelled put not confirmed
        self._cancelled_put: Optional[Tuple[bytes, bytes, Optional[bytes], Producer, int]] = None
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

    @property
    def _producer(self) -> Optional[Producer]:
        """The producer of the first broker (the only one, with one broker)."""
        return self._producers.first if self._producers else None

    def _sessions(self) -> List[Session]:
        sessions = [producer.session for producer in self._producers.all()] \
            if self._producers else []
        if self._consumer is not None:
            sessions += [feed.session for feed in self._consumer.feeds.values()]
        return sessions

    def _welcome(self) -> Optional[Welcome]:
        for session in self._sessions():
            if session.welcome:
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
        "interval", "never", or "replicated" for a group of replicas,
        PROTOCOL.md 6); None before connecting."""
        welcome = self._welcome()
        return welcome.persistence if welcome else None

    @property
    def held(self) -> Optional[str]:
        """The name of the full queue the broker holds this client's puts
        for (they wait for room), or None: why a put() or flush() waits."""
        return self._producers.held if self._producers else None

    @property
    def reconnects(self) -> int:
        """Times this client said HELLO again (a broker restarted, lost
        its session or fell silent)."""
        return sum(session.reconnects for session in self._sessions())

    @property
    def brokers(self) -> Dict[int, str]:
        """The brokers of the service, by shard number, at the addresses
        this client reaches them at ({0: the address} for one broker); {}
        before the first use."""
        return {shard: broker.address for shard, broker in sorted(self._service.brokers.items())}

    @property
    def unreachable(self) -> Dict[str, BrokerUnreachable]:
        """Addresses given (in a list of several) that answered nothing at
        the first use and that no broker of the service lists, with why: the
        client serves the others without them."""
        return dict(self._service.unreachable)

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("queue client is closed")

    # -- putting -----------------------------------------------------------

    async def _open_producers(self) -> Producers:
        """A session with every broker, each with its Producer: its HELLO
        names the oldest unconfirmed seq (4.2)."""
        if self._producers is not None and not self._closed:
            return self._producers
        async with self._lock:
            self._check_open()
            if self._producers is None:
                sessions = await self._service.open(self._client_id, lambda: 1)
                self._producers = Producers(sessions, self._context, self._keys,
                                            self._open_shard)
                self._producers.on_taken_over = self._producer_taken_over
        return self._producers

    async def _open_shard(self, shard: int) -> Session:
        """A producer's session with one broker, anew: its id was taken over."""
        self._check_open()
        session = self._service.session(self._service.brokers[shard], self._client_id,
                                        lambda: 1)
        await session.open(self.timeout)
        return session

    def _producer_taken_over(self, producer: Producer) -> None:
        """Another session took this client's producer id at a broker (409,
        PROTOCOL.md 4.2): the puts not confirmed there have failed (each
        put() waiting raises the 409), and the next put for that broker
        starts a producer of a new id."""
        self._client_id = f"{self._name}-{os.urandom(6).hex()}"
        task = asyncio.ensure_future(producer.session.close(bye=False))
        task.add_done_callback(_ignore)

    async def put(self, item: Payload, *, lease: Optional[float] = None,
                  priority: Optional[int] = None, delay: Optional[float] = None,
                  at: Optional[When] = None, key: Optional[Key] = None) -> None:
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
        key (bytes, or str as UTF-8; not sent): with several brokers, the
        put goes to the shard fnv1a32(key) mod the number of shards
        (PROTOCOL.md 4.15), waiting for that broker while it is down, so
        that the items of one key keep their order; without a key, puts
        spread over the brokers. One broker takes every put, key or not.
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
        key_bytes = None if key is None else _key(key)
        cancelled, self._cancelled_put = self._cancelled_put, None
        if cancelled and cancelled[:3] == (payload, options, key_bytes):
            producer, seq = cancelled[3], cancelled[4]  # a retry: it was sent already
        else:
            if cancelled:
                cancelled[3].claim(cancelled[4])
            producer, seq = await self._send(payload, lease, options, key_bytes, gather=False)
        producer.watch(seq)
        try:
            await producer.confirm(seq)
        except asyncio.CancelledError:
            # The put was sent and cannot be taken back: the broker will hold
            # it. If the caller retries with the same item next, the retry
            # waits for this put instead of sending a copy.
            if producer.confirmed < seq:
                self._cancelled_put = (payload, options, key_bytes, producer, seq)
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
                   at: Optional[When] = None, key: Optional[Key] = None) -> int:
        """Sends item without waiting for the broker to confirm it (the bulk
        form of put, with put's options, key included); returns its seq (at
        its broker). Items sent in one event-loop tick go out together, at
        its end (consecutive ones of one lease in one message, whatever
        their options: items of differing priorities or delays each carry
        their own), to one broker of a service. The broker takes or refuses
        a message whole: a delay over its --max-delay refuses the items sent
        with it too. flush() (or join(), close()) waits for the
        confirmations. Waits only when the broker's window of unconfirmed
        puts is full."""
        payload = _payload(item)
        options = self._plain if priority is None and delay is None and at is None else \
            put_options(priority, delay, at, self._front)
        key_bytes = None if key is None else _key(key)
        if self._cancelled_put:
            self._cancelled_put[3].claim(self._cancelled_put[4])
            self._cancelled_put = None
        return (await self._send(payload, lease, options, key_bytes))[1]

    async def _send(self, payload: bytes, lease: Optional[float], options: bytes,
                    key: Optional[bytes], gather: bool = True) -> Tuple[Producer, int]:
        producers = self._producers  # open, but for a put's first (no coroutine made)
        if producers is None or self._closed:
            producers = await self._open_producers()
        producer = producers.only
        if producer is None:
            if key is not None and len(producers.shards) > 1:
                producer = await producers.for_shard(self._service.shard_for(key))
            else:
                producer = producers.pick_now() or await producers.pick()
        welcome = producer._session.welcome
        assert welcome is not None
        max_item = welcome.max_item
        if len(payload) > max_item:
            raise ValueError(f"item of {len(payload)} bytes is larger than the broker's "
                             f"limit of {max_item}")
        if lease is not None and not 0 < lease * 1000 <= LEASE_MAX_MS:
            raise ValueError(f"lease is more than 0 and at most {LEASE_MAX_MS // 1000} seconds")
        lease_ms = 0 if lease is None else max(1, int(lease * 1000))
        if not producer.has_room(len(payload)):
            await producer.make_room(len(payload))
        return producer, producer.add(self.queue, payload, lease_ms, gather, options)

    async def flush(self) -> None:
        """Waits until the brokers have confirmed every put sent. Raises the
        BrokerError of a put made with send() that a broker refused since
        the last flush (put() raises its own)."""
        if self._producers is None:
            return
        await self._producers.confirm_all()
        error = self._producers.refusal()
        if error:
            raise error

    # -- getting -----------------------------------------------------------

    async def _open_consumer(self, getting: bool = False) -> Consumer:
        """The consumer, opened by the first get(). A get() cancelled while
        it opens does not undo the opening (its CREDIT may have reached the
        broker, which counts this client as a consumer from then on): it
        goes on, for the next get()."""
        if self._consumer is not None and not self._closed:
            return self._consumer
        self._check_open()
        opening = self._consumer_opening
        if opening is None or opening.done():
            opening = self._consumer_opening = asyncio.ensure_future(
                self._start_consumer(getting))
            opening.add_done_callback(_ignore)  # raised in the get()s awaiting it, if any
        return await asyncio.shield(opening)

    async def _start_consumer(self, getting: bool) -> Consumer:
        async with self._lock:
            self._check_open()
            if self._consumer is None:
                sessions = await self._service.open(self._client_id + "-get")
                consumer = Consumer(sessions, self.queue, self.prefetch, self._priorities)
                try:
                    await consumer.start(getting)
                except BaseException:
                    await asyncio.gather(*(session.close() for session in sessions.values()))
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
        queue is shut down and empty, or deleted (at every broker of a
        service), in every get() waiting and every later one while that
        lasts: a get() made after it asks the broker again (one round
        trip), and waits for items as usual once the queue is reopened (by
        any client) or, after a delete, made anew by a put. The item is
        held for the task that calls get() (also when asyncio.wait_for() or
        create_task() runs the wait): that task's bare task_done() acks
        it."""
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
        event-loop tick go to the broker together, at its end (each to the
        broker the item came from)."""
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

    async def _request_sessions(self) -> Dict[int, Session]:
        """The session, for each broker, for a JOIN, STATS or SHUTDOWN: the
        consumer's, when this client consumes, so that it reaches the
        broker after the acks sent before it (two connections keep no order
        between them); else the producer's, whose puts join() has had
        confirmed first."""
        producers = await self._open_producers()
        sessions = {producer.shard: producer.session for producer in await producers.every()}
        self._send_acks()
        consumer = self._consumer
        if consumer is not None and not self._closed:
            for shard, feed in consumer.feeds.items():
                if feed.session.welcome is not None:
                    sessions[shard] = feed.session
        return sessions

    def _named(self, shards: Iterable[int]) -> str:
        return ", ".join(f"shard {shard} at {self._service.brokers[shard].address}"
                         for shard in sorted(shards))

    async def _ask(self, kind: bytes, build: Callable[[bytes], Frames],
                   shards: Optional[Iterable[int]] = None) -> Dict[int, Fields]:
        """Sends build(tag) to every broker (or those of shards) and returns
        each one's reply fields, by shard. Raises the first BrokerError; with
        several brokers, BrokerUnreachable naming those that did not answer
        within the client's timeout (one broker is waited for, as ever)."""
        sessions = await self._request_sessions()
        chosen = sorted(sessions) if shards is None else sorted(set(shards))
        if len(sessions) == 1:
            (session,) = sessions.values()
            return {shard: (await session.request(kind, build))[1] for shard in chosen}
        replies, silent = await _each({
            shard: sessions[shard].request(kind, build) for shard in chosen}, self.timeout)
        if silent:
            raise BrokerUnreachable(f"no answer within {self.timeout:g} s from the broker of "
                                    f"{self._named(silent)}")
        return {shard: fields for shard, (_, fields) in replies.items()}

    async def join(self, timeout: Optional[float] = None, *, all: bool = False) -> Joined:
        """Waits until every item the broker accepted on the queue before the
        join (this client's puts included) has been acked or dead-lettered;
        with all=True, until nothing at all is outstanding (asyncio's join).
        Returns Joined(count, dead): count is how many items were
        outstanding when the broker received the join (what it waited
        for), dead how many of those were dead-lettered instead of acked.
        Raises TimeoutError after timeout seconds (at most a day),
        QueueShutDown if the queue was shut down with immediate. With
        several brokers, it joins at each (every put confirmed before the
        join is covered, on whichever shard) and sums their answers; one
        that cannot be reached keeps it waiting, and a TimeoutError names
        the brokers that had not answered or still had items."""
        if timeout is not None and not 0 <= timeout * 1000 <= WAIT_MAX_MS:
            raise ValueError(f"join(): timeout is 0 to {WAIT_MAX_MS // 1000} seconds")
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        producers = await self._open_producers()
        every = await producers.every()
        if len(every) == 1:
            await every[0].confirm(every[0].seq)
        else:
            await self._confirmed_by(every, deadline)
        sessions = await self._request_sessions()

        def build(tag: bytes) -> Frames:
            ms = 0 if deadline is None else max(1, int((deadline - loop.time()) * 1000))
            return message(b"JOIN", tag, self.queue, ms, b"all" if all else b"before")

        if len(sessions) == 1:
            (session,) = sessions.values()
            command, fields = await session.request(b"join", build)
            if command == b"TIMEOUT":
                raise TimeoutError(f"join timed out: {int(fields[2])} items still outstanding")
            return Joined(int(fields[2]), int(fields[3]))
        # A broker that is up answers TIMEOUT itself: one that has not
        # answered a heartbeat or so later cannot be reached.
        grace = max(1.0, max(session.heartbeat for session in sessions.values()))
        answers, silent = await _each(
            {shard: session.request(b"join", build) for shard, session in sessions.items()},
            None if deadline is None else deadline - loop.time() + grace)
        late = {shard: int(fields[2]) for shard, (command, fields) in answers.items()
                if command == b"TIMEOUT"}
        if silent or late:
            why = [f"{count} items still outstanding at {self._named([shard])}"
                   for shard, count in sorted(late.items())]
            if silent:
                why.append(f"no answer from the broker of {self._named(silent)}")
            raise TimeoutError(f"join timed out: {'; '.join(why)}")
        return Joined(sum(int(fields[2]) for _, fields in answers.values()),
                      sum(int(fields[3]) for _, fields in answers.values()))

    async def _confirmed_by(self, producers: List[Producer], deadline: Optional[float]) -> None:
        """Every producer's puts confirmed (a join covers them), by deadline:
        else TimeoutError naming the brokers that have not confirmed."""
        timeout = None if deadline is None else \
            max(0.0, deadline - asyncio.get_running_loop().time())
        _, silent = await _each({producer.shard: producer.confirm(producer.seq)
                                 for producer in producers}, timeout)
        if silent:
            raise TimeoutError(f"join timed out: puts not confirmed by the broker of "
                               f"{self._named(silent)}")

    async def stats(self) -> Stats:
        """The queue's numbers (PROTOCOL.md 4.8) as a dict of ints and
        strings; empty when the broker does not know the queue. With several
        brokers, the whole service's: each count summed over the brokers
        (consumers, joiners, lease_ms and paused: the most any says, as a
        client consumes and joins at each), and a text that differs among
        them (state) as their values, sorted, joined by commas;
        shard_stats() gives each broker's."""
        return _merge_stats(list((await self.shard_stats()).values()))

    async def shard_stats(self) -> Dict[int, Stats]:
        """Each broker's stats of the queue (as stats() for one broker), by
        shard number: {0: stats} with one broker. A broker that does not
        know the queue is not in it."""
        replies = await self._ask(b"stats", lambda tag: message(b"STATS", tag, self.queue))
        each = {shard: parse_stats(fields[1]) for shard, fields in replies.items()
                if len(fields) > 1}
        queued = _merge_stats(list(each.values())).get("queued", 0)
        self._queued = queued if isinstance(queued, int) else 0
        return each

    async def shutdown(self, immediate: bool = False) -> Stats:
        """Shuts the queue down (Python 3.13's Queue.shutdown, PROTOCOL.md
        4.11), for every client: later puts raise QueueShutDown; consumers
        get what is left, then every get() raises QueueShutDown; joins
        complete once the rest is done. immediate=True discards the queued
        items (a waiting join then raises QueueShutDown). reopen() undoes
        it. Needs the admin role on a broker with keys. Returns the queue's
        stats after it (every broker's, merged as stats() does)."""
        mode = b"immediate" if immediate else b"drain"
        return await self._report_stats(
            b"shutdown", lambda tag: message(b"SHUTDOWN", tag, self.queue, mode))

    async def _report_stats(self, kind: bytes, build: Callable[[bytes], Frames]) -> Stats:
        replies = await self._ask(kind, build)
        return _merge_stats([parse_stats(fields[1]) for fields in replies.values()
                             if len(fields) > 1])

    async def _lifecycle(self, command: bytes) -> Dict[int, List[bytes]]:
        """REOPEN, PURGE or DELETE (PROTOCOL.md 4.13) at every broker: each
        REPORT's lines, none when a broker does not have the queue."""
        replies = await self._ask(command.lower(), lambda tag: message(command, tag, self.queue))
        return {shard: fields[1:] for shard, fields in replies.items()}

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
        reports = await self._lifecycle(b"REOPEN")
        if any(reports.values()) and self._consumer is not None:
            # The notice is out of date where the queue is: CREDIT again.
            self._consumer.resume(shard for shard, lines in reports.items() if lines)

    async def purge(self) -> int:
        """Discards the queue's queued and delayed items (counted in its
        `discarded`); items being processed stay with their consumers, and
        the queue stays open. Waiting joins count the discarded items as
        done. Returns how many were discarded (0 for a queue the broker
        does not have). Needs the admin role on a broker with keys."""
        return sum(_count(lines, "purged", empty=0)
                   for lines in (await self._lifecycle(b"PURGE")).values())

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
        return sum(_count(lines, "deleted", empty=0)
                   for lines in (await self._lifecycle(b"DELETE")).values())

    async def _dead(self, action: bytes, shards: Optional[Iterable[int]] = None
                    ) -> Dict[int, List[bytes]]:
        replies = await self._ask(
            b"dead", lambda tag: message(b"DEAD", tag, self.queue, action), shards)
        return {shard: fields[1:] for shard, fields in replies.items()}

    def _shard(self, item_id: int) -> int:
        """The broker a dead item's id names (its top 8 bits, 4.15); with one
        broker, that one."""
        brokers = self._service.brokers
        if len(brokers) <= 1:
            return next(iter(brokers), 0)
        shard = shard_of(item_id)
        if shard not in brokers:
            raise ValueError(f"item id {item_id} names shard {shard}, which no broker of this "
                             f"service is (shards {', '.join(map(str, sorted(brokers)))})")
        return shard

    async def dead_letters(self) -> List[DeadLetter]:
        """The queue's dead items (those that used up the broker's
        --max-attempts), oldest death first, as DeadLetter objects: id,
        attempts, size, died, cause, reason and the payload's start. The
        broker shows at most 1024 (each broker of a service: every one's
        are listed, each id naming its broker). Needs the admin role on a
        broker with keys."""
        lists = await self._dead(b"list")
        letters = [[parse_dead_letter(line) for line in lines if line]
                   for _, lines in sorted(lists.items())]
        if len(letters) == 1:
            return letters[0]
        return list(heapq.merge(*letters, key=lambda letter: (
            letter.died.timestamp() if letter.died else float("-inf"))))

    async def dead_letter(self, item: Union[DeadLetter, int]) -> DeadLetter:
        """One dead item whole (a DeadLetter or its id): as dead_letters()
        shows it, with its whole payload (payload_cut False), however large
        (the broker sends 785 664 bytes an answer, PROTOCOL.md 4.12). A 404
        BrokerError if it is not a dead item of this queue. Needs the admin
        role with keys; broker 2.2."""
        item_id = _dead_id(item)
        await self._open_producers()
        shard = self._shard(item_id)
        payload = bytearray()
        while True:
            lines = (await self._dead(b"show %d %d" % (item_id, len(payload)), [shard]))[shard]
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

    async def _dead_by_id(self, verb: bytes, key: str,
                          items: Iterable[Union[DeadLetter, int]]) -> int:
        """DEAD requeue or delete of these items, at the broker each id names
        (all or none at each; with one broker, all or none)."""
        chosen = _dead_items(items)
        if not chosen:
            return 0
        await self._open_producers()
        by_shard: Dict[int, List[Union[DeadLetter, int]]] = {}
        for item in chosen:
            by_shard.setdefault(self._shard(_dead_id(item)), []).append(item)
        actions = {shard: _dead_action(verb, tuple(group)) for shard, group in by_shard.items()}
        total = 0
        for shard, action in sorted(actions.items()):
            total += _count((await self._dead(action, [shard]))[shard], key)
        return total

    async def requeue_dead(
            self, items: Optional[Iterable[Union[DeadLetter, int]]] = None) -> int:
        """Puts dead items back at the end of the queue, their attempts
        reset to 0; returns how many. Without an argument (None), every
        dead item (at every broker). With items (a list or other iterable
        of DeadLetter objects, as dead_letters() gives, or their ids; an
        empty one is nothing: 0), those only, all or none (broker 2.2; with
        several brokers, all or none at each, the ids of each going to the
        broker they name): if one is not a dead item of this queue
        (requeued or deleted already, an id of another queue), a 404
        BrokerError names every such id in .ids and nothing changes. The
        ids go in one request, of at most 1024 bytes (`requeue ` and the
        ids in decimal, a space between them: about 50 ids of the broker's
        20-digit size, more of shorter ones); more raise ValueError,
        nothing sent: pass them in parts, each all or none. An id named
        twice counts once. Needs the admin role with keys."""
        if items is None:
            return sum(_count(lines, "requeued")
                       for lines in (await self._dead(b"requeue")).values())
        return await self._dead_by_id(b"requeue", "requeued", items)

    async def delete_dead(self, items: Iterable[Union[DeadLetter, int]]) -> int:
        """Deletes the given dead items (an iterable of DeadLetter objects
        or ids) of the queue, all or none, as requeue_dead(items) does (the
        same 404 and ValueError, the same limit of about 50 ids in one
        call); returns how many; an empty one is nothing: 0 (purge_dead()
        deletes them all). Needs the admin role with keys."""
        return await self._dead_by_id(b"delete", "deleted", items)

    async def purge_dead(self) -> int:
        """Deletes every dead item of the queue (at every broker); returns
        how many. Needs the admin role with keys."""
        return sum(_count(lines, "purged") for lines in (await self._dead(b"purge")).values())

    async def peek(self, n: int = 10) -> List[PeekedItem]:
        """The next n items (1 to 1024) the queue would deliver, in that
        order, left where they are (PROTOCOL.md 4.14): PeekedItem objects
        with id, attempts, size, priority, age (seconds) and the payload's
        first 64 bytes. Fewer when it holds fewer; delayed items and those
        being processed are not shown; [] for a queue the broker does not
        have. With several brokers, the next n the service would deliver:
        each broker's next n, merged lowest priority, then oldest, first
        (each id names its broker). Needs the consume or admin role with
        keys; broker 2.2."""
        if isinstance(n, bool) or not isinstance(n, int):
            raise TypeError(f"peek(): n is an int, not {type(n).__name__}")
        if not 1 <= n <= PEEK_MAX:
            raise ValueError(f"peek(): n is 1 to {PEEK_MAX}, not {n}")
        replies = await self._ask(b"peek", lambda tag: message(b"PEEK", tag, self.queue, n))
        peeked = [[parse_peeked(line) for line in fields[1:] if line]
                  for _, fields in sorted(replies.items())]
        if len(peeked) == 1:
            return peeked[0]
        return list(heapq.merge(*peeked, key=lambda item: (item.priority, -item.age)))[:n]

    async def _pause(self, command: bytes) -> Stats:
        return await self._report_stats(command.lower(),
                                        lambda tag: message(command, tag, self.queue))

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
        raises TimeoutError: those puts may be lost), then ends the
        sessions: items delivered to this client and not acked go back to
        the queue."""
        if self._closed:
            return
        try:
            if self._producers is not None and self._producers.unconfirmed:
                await asyncio.wait_for(self._producers.confirm_all(), timeout)
        finally:
            self._closed = True
            if self._refresh is not None and not self._refresh.done():
                self._refresh.cancel()
            opening = self._consumer_opening
            if opening is not None and not opening.done():
                opening.cancel()  # its sessions are closed as it ends
                await asyncio.gather(opening, return_exceptions=True)
            if self._consumer is not None:
                await self._consumer.close()
            if self._producers is not None:
                await asyncio.gather(*(session.close() for session in self._producers.close()))

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
                  delay: Optional[float] = None, at: Optional[When] = None,
                  key: Optional[Key] = None) -> None:
        """put((priority, item)) or put(item, priority=P), with Queue.put's
        options and errors."""
        payload, priority = _prioritised(item, priority)
        await super().put(payload, lease=lease, priority=priority, delay=delay, at=at, key=key)

    async def send(self, item: Union[Payload, Tuple[int, Payload]], *,
                   lease: Optional[float] = None, priority: Optional[int] = None,
                   delay: Optional[float] = None, at: Optional[When] = None,
                   key: Optional[Key] = None) -> int:
        """send((priority, item)), as put() takes it; Queue.send otherwise."""
        payload, priority = _prioritised(item, priority)
        return await super().send(payload, lease=lease, priority=priority, delay=delay, at=at,
                                  key=key)

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


def _key(key: Optional[Key]) -> Optional[bytes]:
    """A put's key as bytes (a str as UTF-8); TypeError for another type."""
    if key is None or isinstance(key, bytes):
        return key
    if isinstance(key, str):
        return key.encode()
    if isinstance(key, (bytearray, memoryview)):
        return bytes(key)
    raise TypeError(f"a put's key is bytes or str, not {type(key).__name__}")


def _merge_stats(each: List[Stats]) -> Stats:
    """Several brokers' stats lines of a queue as the service's: counts
    summed, MOST_KEYS the most any says, a text that differs the values
    sorted and joined by commas."""
    if len(each) == 1:
        return each[0]
    merged: Stats = {}
    for stats in each:
        for key, value in stats.items():
            old = merged.get(key)
            if old is None:
                merged[key] = value
            elif isinstance(old, int) and isinstance(value, int):
                merged[key] = max(old, value) if key in MOST_KEYS else old + value
            elif old != value:
                merged[key] = ",".join(sorted(set(str(old).split(",")) | {str(value)}))
    return merged


T = TypeVar("T")


async def _each(requests: Dict[int, Awaitable[T]],
                timeout: Optional[float]) -> Tuple[Dict[int, T], List[int]]:
    """Runs the requests (one per shard) at once, for at most timeout
    seconds (None: until all are done): their results by shard, and the
    shards whose request had not finished (then cancelled). Raises the
    first error, by shard, of those that finished."""
    tasks = {shard: asyncio.ensure_future(request) for shard, request in requests.items()}
    try:
        done, pending = await asyncio.wait(tasks.values(), timeout=timeout)
    finally:
        for task in tasks.values():
            if not task.done():
                task.cancel()
                task.add_done_callback(_ignore)
    errors = [task.exception() for _, task in sorted(tasks.items()) if task in done]
    for error in errors:
        if error is not None:
            raise error
    return ({shard: task.result() for shard, task in tasks.items() if task in done},
            sorted(shard for shard, task in tasks.items() if task in pending))


def _done() -> "asyncio.Future[None]":
    future: "asyncio.Future[None]" = asyncio.get_running_loop().create_future()
    future.set_result(None)
    return future


def _ignore(task: "asyncio.Future[Any]") -> None:
    if not task.cancelled():
        task.exception()  # a failed background task: the next one tries again


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
