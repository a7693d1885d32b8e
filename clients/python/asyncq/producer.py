"""The put side of a Queue (PROTOCOL.md 4.1, 4.7, 4.10). Puts made in one
event-loop tick go out together, as one PUTS, at the end of the tick: a
burst costs few messages and a single put waits for nothing. Puts of
differing options (priorities, delays) share a PUTS too, with `each`: every
entry carries its own options. Every message is kept until the broker
confirms it (SYNCED) and sent again, with the same seqs, when the broker
lost it; the broker keeps each put once. At most the broker's window of
puts is left unconfirmed.

The PUSH socket is a plain one written with NOBLOCK (what it has no room
for waits in order), and a SYNC is sent in the same tick as the puts it
confirms: an awaited put costs one round trip and no task."""
from __future__ import annotations

import asyncio
import collections
import logging
import random
from typing import Any, Awaitable, Callable, Deque, Dict, List, NamedTuple, Optional, Set, Tuple

import zmq

from .protocol import (EACH, PUTS_ENTRY, BrokerError, Fields, Frames, Welcome, message,
                       pack_puts, pack_puts_each, seq_range, wake_all)
from .security import Keys, apply_keys
from .session import Session
from .sockets import Reader, plain_socket, send_now

log = logging.getLogger("asyncq")

ALONE_BYTES = 64 * 1024  # an item this large goes alone, as a PUT


class Sent(NamedTuple):
    first: int
    last: int
    frames: Frames
    size: int  # as has_room counts


class Push:
    """The PUSH socket: sends at once, or in order once it has room."""

    def __init__(self, context: zmq.Context[Any], endpoint: str, keys: Optional[Keys]) -> None:
        self.endpoint = endpoint
        self.socket = plain_socket(context, zmq.PUSH, endpoint)
        apply_keys(self.socket, keys)
        self.socket.connect(endpoint)
        self._waiting: Deque[Frames] = collections.deque()
        self._reader = Reader(self.socket, self._flush)
        self._retry: Optional[asyncio.TimerHandle] = None

    def send(self, frames: Frames) -> None:
        if not self._waiting:
            try:
                send_now(self.socket, frames)
                return
            except zmq.Again:
                pass
        self._waiting.append(frames)
        self._flush()

    def _flush(self) -> None:
        while self._waiting:
            try:
                send_now(self.socket, self._waiting[0])
            except zmq.Again:
                # No room (the broker is away, or slow): the descriptor
                # signals when there is; tried again a little later anyway.
                if self._retry is None or self._retry.cancelled():
                    self._retry = asyncio.get_running_loop().call_later(0.05, self._again)
                return
            self._waiting.popleft()

    def _again(self) -> None:
        self._retry = None
        self._flush()

    def close(self) -> None:
        if self._retry is not None:
            self._retry.cancel()
        self._reader.close()
        self.socket.close(linger=0)  # only confirmed puts are promised


class Producer:
    def __init__(self, session: Session, context: zmq.Context[Any], keys: Optional[Keys],
                 shard: int = 0) -> None:
        self._session = session
        self.shard = shard
        self._context, self._keys = context, keys
        self._push: Optional[Push] = None
        self.seq = 0          # the last seq given to a put, sent or gathered
        self.confirmed = 0    # every seq up to this one is confirmed
        self.held: Optional[str] = None  # the full queue the broker holds our puts for (HELD)
        self.unconfirmed = 0  # puts sent or gathered, not confirmed
        self._unconfirmed_bytes = 0
        self._sent: Deque[Sent] = collections.deque()  # not confirmed, oldest first
        self._batch: List[bytes] = []                  # payloads gathered for the next message
        self._batch_key: Tuple[str, int, bytes] = ("", 0, b"")  # their (queue, lease_ms, options)
        self._batch_size = 0                           # bytes of their PUTS items frame
        # Options of each of them once they differ (the batch goes with
        # `each`), else None: all are the key's. _batch_extra: the bytes
        # `each` adds to the items frame then, a u8 and the options an entry.
        self._batch_options: Optional[List[bytes]] = None
        self._batch_extra = 0
        self._flush_handle: Optional[asyncio.Handle] = None
        self._syncing = False                          # a SYNC is in flight
        self._waiters: List["asyncio.Future[None]"] = []  # confirm()s waiting for it
        self.taken_over: Optional[BrokerError] = None  # the 409 that ended this producer id
        self.on_taken_over: Callable[[], None] = lambda: None
        self._watched: Set[int] = set()                # seqs a put() waits for
        self._refused: Dict[int, BrokerError] = {}     # seq -> BrokerError, for those put()s
        self.refusals: Deque[BrokerError] = collections.deque(maxlen=100)  # about other puts
        session.on_message = self._on_message
        session.on_reconnect = self._on_reconnect
        # Its HELLO names the oldest seq not confirmed: it is this producer's
        # session (4.2).
        session.hello_seq = lambda: self.confirmed + 1

    @property
    def session(self) -> Session:
        return self._session

    @property
    def gathering(self) -> bool:
        """Puts are gathered for a batch sent at the end of this tick."""
        return bool(self._batch)

    @property
    def _welcome(self) -> Welcome:
        assert self._session.welcome is not None  # the session is open
        return self._session.welcome

    def _push_socket(self) -> Push:
        """The PUSH socket, connected at the first put: a client that only
        joins or reads stats opens none (the broker closes connections that
        neither put nor say HELLO, 9.2). It goes to the PULL socket of the
        broker the session is with: a group's leader (4.16), wherever that
        is now."""
        if self._push is None:
            self._push = Push(self._context, self._session.push_endpoint, self._keys)
        return self._push

    def has_room(self, size: int) -> bool:
        """Whether one more put of size bytes stays within the window. Bytes
        count as in a PUTS items frame, length prefix included: at least
        what the broker counts."""
        welcome = self._welcome
        return not self.unconfirmed or (
            self.unconfirmed < welcome.window
            and self._unconfirmed_bytes + PUTS_ENTRY.size + size <= welcome.window_bytes)

    async def make_room(self, size: int) -> None:
        """Waits for confirmations until one more put of size bytes fits in
        the window: the broker holds at most that much of a producer for a
        full queue (4.10), and more would be refused."""
        while not self.has_room(size):
            await self.confirm(self._sent[0].last if self._sent else self.seq)

    def add(self, queue: str, payload: bytes, lease_ms: int, gather: bool = True,
            options: bytes = b"") -> int:
        """Gives the put its seq and sends it: alone, or in the batch sent at
        the end of this tick (now, without gather). Returns the seq. The
        caller made room. A batch holds consecutive puts of equal queue and
        lease, so puts keep the order they were made in. options (an
        options frame, 4.1): when a batch's are all equal they go once, in
        the options frame; when they differ the batch goes with `each`,
        every entry carrying its own."""
        max_item = self._welcome.max_item
        entry = PUTS_ENTRY.size + len(payload)
        alone = len(payload) >= ALONE_BYTES or entry > max_item
        key = (queue, lease_ms, options)
        if self._batch and (alone or self._batch_key != key or self._batch_options is not None
                            or self._batch_size + entry > max_item):
            if alone or not self._mix(queue, lease_ms, options, entry, max_item):
                self.flush()
        self.seq += 1
        self.unconfirmed += 1
        self._unconfirmed_bytes += entry
        if alone:
            frames = message(b"PUT", self._session.client_id, self.seq, queue, lease_ms, payload)
            if options:
                frames.append(options)
            self._send(Sent(self.seq, self.seq, frames, entry))
            return self.seq
        if not self._batch:
            self._batch_key = key
            if gather:
                self._flush_handle = asyncio.get_running_loop().call_soon(self.flush)
        self._batch.append(payload)
        self._batch_size += entry
        if not gather or len(self._batch) >= self._welcome.max_batch:
            self.flush()
        return self.seq

    def _mix(self, queue: str, lease_ms: int, options: bytes, entry: int,
             max_item: int) -> bool:
        """Whether a put that does not simply join the batch (other options,
        or a batch of mixed options already, or one full as it is) joins it
        as an `each` batch, every entry with its options; if so, counts its
        options in (the caller appends the put). Not for another queue or
        lease, nor when the batch's items frame would pass max-item or the
        producer's unconfirmed bytes window-bytes (has_room counted entry
        alone for this put): the put then starts a batch of its own."""
        batch_queue, batch_lease, batch_options = self._batch_key
        if batch_queue != queue or batch_lease != lease_ms:
            return False
        # What `each` adds: a u8 and the options an entry, the first time
        # for the puts gathered before too.
        extra = self._batch_extra + 1 + len(options)
        if self._batch_options is None:
            extra += len(self._batch) * (1 + len(batch_options))
        if (self._batch_size + entry + extra > max_item or self._unconfirmed_bytes + entry
                + extra - self._batch_extra > self._welcome.window_bytes):
            return False
        if self._batch_options is None:
            self._batch_options = [batch_options] * len(self._batch)
        self._batch_options.append(options)
        self._unconfirmed_bytes += extra - self._batch_extra  # add() counts entry
        self._batch_extra = extra
        return True

    def flush(self) -> None:
        """Sends the gathered puts: one as a PUT, more as one PUTS (with
        `each` when their options differ)."""
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        if not self._batch:
            return
        (queue, lease_ms, options), payloads, size = self._batch_key, self._batch, self._batch_size
        self._batch, self._batch_size = [], 0
        first, client_id = self.seq - len(payloads) + 1, self._session.client_id
        if len(payloads) == 1:
            frames = message(b"PUT", client_id, first, queue, lease_ms, payloads[0])
        elif self._batch_options is None:
            frames = message(b"PUTS", client_id, first, len(payloads), queue, lease_ms,
                             pack_puts(payloads))
        else:
            frames = message(b"PUTS", client_id, first, len(payloads), queue, lease_ms,
                             pack_puts_each(self._batch_options, payloads))
            options, size = EACH, size + self._batch_extra
            self._batch_options, self._batch_extra = None, 0
        if options:
            frames.append(options)  # absent when none: a broker before 2.2 takes the put
        self._send(Sent(first, self.seq, frames, size))

    def _send(self, sent: Sent) -> None:
        self._sent.append(sent)
        self._push_socket().send(sent.frames)
        # Half the window in use: ask for a confirmation now, so that the
        # window rarely fills and put() rarely waits for one.
        welcome = self._welcome
        if (self.unconfirmed >= welcome.window // 2
                or self._unconfirmed_bytes >= welcome.window_bytes // 2):
            self._start_sync()

    def _on_reconnect(self) -> None:
        """After a new HELLO (the broker restarted, or a new leader of its
        group answered, 4.16): the unconfirmed puts again. With none, the
        PUSH socket is closed, to be opened at the next put: its new
        connection would sit silent, and a broker closes such connections
        again and again (9.2). One connected to where the broker no longer
        is (a replica that no longer leads, which drops puts) is replaced:
        what it had not sent goes again with the rest."""
        if self._push is not None and (not self._sent
                                       or self._push.endpoint != self._session.push_endpoint):
            self._push.close()
            self._push = None
        self._resend()

    def _resend(self) -> None:
        """Every unconfirmed message again, oldest first, each with its seqs:
        the broker takes them in order and drops those it has (4.1)."""
        for sent in self._sent:
            self._push_socket().send(sent.frames)

    async def confirm(self, seq: int) -> None:
        """Returns once the broker has confirmed every put up to seq."""
        if self._batch and seq > self.seq - len(self._batch):
            self.flush()
        while self.confirmed < seq and (self._sent or self._syncing):
            waiter: "asyncio.Future[None]" = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            self._start_sync()
            await waiter  # the SYNC's answer: confirmed up to its seq, or its error

    def _start_sync(self) -> None:
        """One SYNC at a time, for the last put sent."""
        if not self._syncing and self._sent:
            self._syncing = True
            self._sync(self._sent[-1].last)
        elif not self._syncing:
            self._wake(None)  # nothing left to confirm

    def _sync(self, seq: int) -> None:
        client_id = self._session.client_id
        self._session.call(b"sync", lambda tag: message(b"SYNC", tag, client_id, seq),
                           lambda reply, error: self._synced(seq, error))

    def _synced(self, seq: int, error: Optional[BaseException]) -> None:
        if isinstance(error, BrokerError) and error.code == 410:
            # Puts were lost on the way: all again, then the SYNC again,
            # which waits for them at the broker (4.7).
            log.info("%s: the broker lost puts; sending them again", self._session.client_id)
            self._resend()
            self._sync(seq)
            return
        self._syncing = False
        if isinstance(error, BrokerError) and error.code == 409:
            # Another session took this producer id (4.2): which of the puts
            # not confirmed the broker holds can no longer be known. They
            # all fail, none is sent again under this id, and the owner
            # starts a producer of a new id for the next put.
            self._sent.clear()
            self.unconfirmed, self._unconfirmed_bytes = 0, 0
            self.taken_over = error
        elif error is None:
            self._confirm_to(seq)
        # A SYNC that failed with nobody waiting (one started early) is
        # asked again by the next confirm().
        self._wake(error)
        if self.taken_over is not None:
            self.on_taken_over()

    def _wake(self, error: Optional[BaseException]) -> None:
        waiters, self._waiters = self._waiters, []
        wake_all(waiters, error)

    def _confirm_to(self, seq: int) -> None:
        self.confirmed = max(self.confirmed, seq)
        self.held = None
        while self._sent and self._sent[0].last <= seq:
            sent = self._sent.popleft()
            self.unconfirmed -= sent.last - sent.first + 1
            self._unconfirmed_bytes -= sent.size

    def watch(self, seq: int) -> None:
        """A put() will wait for seq: an ERROR refusing it is kept for it."""
        self._watched.add(seq)

    def claim(self, seq: int) -> Optional[BrokerError]:
        """Stops watching seq; returns the BrokerError refusing it, if any."""
        self._watched.discard(seq)
        return self._refused.pop(seq, None)

    def _on_message(self, command: bytes, fields: Fields) -> None:
        if command == b"HELD" and len(fields) == 4:
            self.held = fields[3].decode()
            log.info("%s: puts from seq %s on held: queue %s is full", self._session.client_id,
                     fields[2].decode(), self.held)
        elif command == b"ERROR":
            error = BrokerError.from_fields(fields)
            puts = None if error.tag else seq_range(error.subject)
            if puts:
                self._refuse(*puts, error)
            else:
                log.warning("%s: %s", self._session.client_id, error)

    def _refuse(self, first: int, last: int, error: BrokerError) -> None:
        """Puts first..last were received and refused (4.1)."""
        watched = [seq for seq in self._watched if first <= seq <= last]
        for seq in watched:
            self._refused[seq] = error
        if len(watched) < last - first + 1:
            self.refusals.append(error)

    def close(self) -> None:
        if self._flush_handle is not None:
            self._flush_handle.cancel()
        for waiter in self._waiters:
            waiter.cancel()
        if self._push is not None:
            self._push.close()


Open = Callable[[int], Awaitable[Session]]


class Producers:
    """A Producer for every broker of the service (PROTOCOL.md 4.15), by
    shard. Each batch (the puts of one tick, or up to max-batch) goes to the
    next broker in turn that is up and not holding this client's puts; a
    put with a key goes to its shard, and waits for it while it is down.
    Puts not confirmed stay with their broker, sent again when it is back,
    never sent to another. With one broker, it is the one Producer."""

    def __init__(self, sessions: Dict[int, Session], context: zmq.Context[Any],
                 keys: Optional[Keys], open_shard: Open) -> None:
        self._context, self._keys, self._open_shard = context, keys, open_shard
        self.shards = sorted(sessions)
        self._single = len(self.shards) == 1
        self.by_shard: Dict[int, Producer] = {}
        self.only: Optional[Producer] = None  # the producer, with one broker (a put's fast path)
        for shard, session in sessions.items():
            self._add(shard, session)
        self._turn = random.randrange(1 << 16)  # where a short-lived client starts: any shard
        self._current: Optional[Producer] = None  # the one gathering this tick's batch
        self._reopening: Dict[int, "asyncio.Future[Producer]"] = {}
        self.on_taken_over: Callable[[Producer], None] = lambda producer: None

    def _add(self, shard: int, session: Session) -> Producer:
        producer = Producer(session, self._context, self._keys, shard)
        producer.on_taken_over = lambda: self._taken_over(producer)
        self.by_shard[shard] = producer
        if self._single:
            self.only = producer
        return producer

    @property
    def first(self) -> Optional[Producer]:
        """The producer of the lowest shard: the only one, with one broker."""
        return self.by_shard[min(self.by_shard)] if self.by_shard else None

    def all(self) -> List[Producer]:
        return [self.by_shard[shard] for shard in sorted(self.by_shard)]

    def _taken_over(self, producer: Producer) -> None:
        """Another session took this producer's id (409, 4.2): its puts not
        confirmed have failed; the next put for its shard opens a producer
        of a new id."""
        if self.by_shard.get(producer.shard) is producer:
            del self.by_shard[producer.shard]
        if self.only is producer:
            self.only = None
        if self._current is producer:
            self._current = None
        producer.close()
        self.on_taken_over(producer)

    async def get(self, shard: int) -> Producer:
        """The producer of a shard, opened anew if its id was taken over."""
        producer = self.by_shard.get(shard)
        if producer is not None:
            return producer
        reopening = self._reopening.get(shard)
        if reopening is None:
            reopening = self._reopening[shard] = asyncio.ensure_future(self._reopen(shard))
        return await asyncio.shield(reopening)

    async def _reopen(self, shard: int) -> Producer:
        try:
            return self._add(shard, await self._open_shard(shard))
        finally:
            del self._reopening[shard]

    async def every(self) -> List[Producer]:
        """Every shard's producer (those taken over opened anew)."""
        return [await self.get(shard) for shard in self.shards]

    def pick_now(self) -> Optional[Producer]:
        """The producer for a put without a key: the one gathering this
        tick's batch, else the next in turn that is up and not held (up and
        held when every one is held); None when none is up (or one is being
        opened anew). With one broker, that one, up or not: its puts wait
        for it, as they always did."""
        if self._single:
            return self.by_shard.get(self.shards[0])
        current = self._current
        if (current is not None and current._batch and current.session.up
                and self.by_shard.get(current.shard) is current):
            return current
        if len(self.by_shard) != len(self.shards):
            return None
        producers = self.all()
        count = len(producers)
        turn = [producers[(self._turn + i) % count] for i in range(count)]
        up = [producer for producer in turn if producer.session.up]
        chosen = next((producer for producer in up if producer.held is None),
                      up[0] if up else None)
        if chosen is not None:
            self._turn = (producers.index(chosen) + 1) % count
            self._current = chosen
        return chosen

    async def pick(self) -> Producer:
        """pick_now(), waiting while no broker is up."""
        while True:
            producers = await self.every()
            chosen = self.pick_now()
            if chosen is not None:
                return chosen
            waiters = [producer.session.when_up() for producer in producers]
            try:
                await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waiters:
                    waiter.cancel()

    async def for_shard(self, shard: int) -> Producer:
        """The producer of a shard (a put with a key), once it is up."""
        producer = await self.get(shard)
        while not producer.session.up:
            await producer.session.when_up()
            producer = await self.get(shard)
        return producer

    @property
    def held(self) -> Optional[str]:
        return next((producer.held for producer in self.all() if producer.held), None)

    @property
    def unconfirmed(self) -> int:
        return sum(producer.unconfirmed for producer in self.by_shard.values())

    async def confirm_all(self) -> None:
        """Returns once every broker has confirmed every put sent to it."""
        await asyncio.gather(*(producer.confirm(producer.seq) for producer in self.all()))

    def refusal(self) -> Optional[BrokerError]:
        """The first BrokerError about puts sent with send() since the last
        call, from any broker; forgets the others."""
        first: Optional[BrokerError] = None
        for producer in self.all():
            if producer.refusals and first is None:
                first = producer.refusals.popleft()
            producer.refusals.clear()
        return first

    def close(self) -> List[Session]:
        """Closes every producer; returns their sessions, to be closed."""
        for producer in self.by_shard.values():
            producer.close()
        return [producer.session for producer in self.all()]
