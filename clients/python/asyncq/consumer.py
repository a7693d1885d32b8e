"""The get side of a Queue (PROTOCOL.md 4.3 to 4.5): credit, deliveries one
by one or in ITEMS batches, and acks made in one event-loop tick sent as
one ACK at its end."""
import asyncio
import collections
import logging

from .protocol import (IDS_MAX, WAIT_MAX_MS, BrokerError, QueueShutDown, cut_text, message,
                       pack_ids, unpack_items)

log = logging.getLogger("asyncq")

ID_TAGS = (b"ack", b"touch", b"nack")  # requests whose ERRORs name ids
WAKE = object()  # put in the delivered queue to wake a waiting get()


class QueueEmpty(asyncio.QueueEmpty):
    """get_nowait() found no item delivered to this client."""


class Item(bytes):
    """A delivered item: its payload (a bytes object) with the delivery's
    broker-given .id, .attempt (1 on first delivery), .queue and .lease_ms."""

    def __new__(cls, payload, queue, item_id, attempt, lease_ms):
        self = super().__new__(cls, payload)
        self.queue, self.id, self.attempt, self.lease_ms = queue, item_id, attempt, lease_ms
        return self


class Consumer:
    def __init__(self, session, queue, credit):
        self.session = session
        self.queue, self.credit = queue, credit
        self._delivered = asyncio.Queue()           # Items not yet got
        self.held = collections.OrderedDict()       # id -> Item got, not task_done
        self._acks = []
        self._ack_handle = None
        self._withdrawn = False
        self.errors = collections.deque(maxlen=100)  # ERRORs about acks, for inspection
        session.on_message = self._on_message
        session.on_reconnect = self._on_reconnect

    async def start(self):
        """CREDIT, and CREDITED awaited: once get() waits, the broker counts
        this consumer, and a CREDIT it refuses (403, 409, 429) raises."""
        await self.session.request(b"credit", self._credit)

    def _credit(self, tag):
        batch = min(self.credit, self.session.welcome.max_batch)
        return message(b"CREDIT", tag, self.queue, self.credit, batch)

    def _on_reconnect(self):
        """Items not yet got are the broker's to deliver again, and acks
        not yet sent would name them in a session that is gone."""
        while not self._delivered.empty():
            self._delivered.get_nowait()
        self._acks.clear()
        self._withdrawn = False
        self.session.send(self._credit(self.session.tag(b"credit")))

    def _recredit(self):
        """After the broker withdrew the credit (3 leases expired in a row,
        4.5), a get() shows this consumer reads again: CREDIT once more."""
        if self._withdrawn:
            self._withdrawn = False
            self.session.send(self._credit(self.session.tag(b"credit")))

    def _on_message(self, command, fields):
        if command == b"ITEMS" and len(fields) == 3 and fields[1].isdigit():
            self._on_items(fields[0].decode(), int(fields[1]), fields[2])
        elif command == b"ITEM" and len(fields) == 6:
            queue, item_id, attempt, _, lease_ms, payload = fields
            self._delivered.put_nowait(
                Item(payload, queue.decode(), int(item_id), int(attempt), int(lease_ms)))
        elif command == b"ERROR":
            self._on_error(BrokerError.from_fields(fields))

    def _on_items(self, queue, count, frame):
        try:
            deliveries = unpack_items(count, frame)
        except ValueError as error:
            log.warning("%s: ITEMS not as asyncq/2 says: %s", self.session.client_id, error)
            return
        for item_id, attempt, _, lease_ms, payload in deliveries:
            self._delivered.put_nowait(Item(payload, queue, item_id, attempt, lease_ms))

    def _on_error(self, error):
        about_queue = error.subject == self.queue.encode()
        if about_queue and isinstance(error, QueueShutDown):
            self._delivered.put_nowait(error)  # get() raises it once the rest is got
        elif about_queue and error.code == 408 and not error.tag.startswith(ID_TAGS):
            log.warning("%s: %s", self.session.client_id, error)
            self._withdrawn = True
            self._delivered.put_nowait(WAKE)
        else:
            self.errors.append(error)
            log.warning("%s: %s", self.session.client_id, error)

    def _take(self, item):
        if isinstance(item, QueueShutDown):
            self._delivered.put_nowait(item)  # every later get() raises it too
            raise item
        self.held[item.id] = item
        return item

    def get_nowait(self):
        while True:
            self._recredit()
            try:
                item = self._delivered.get_nowait()
            except asyncio.QueueEmpty:
                raise QueueEmpty from None
            if item is not WAKE:
                return self._take(item)

    async def get(self):
        while True:
            self._recredit()
            item = await self._delivered.get()
            if item is not WAKE:
                return self._take(item)

    def task_done(self, item):
        if item is None:
            if not self.held:
                raise ValueError("task_done() called too many times")
            item_id, _ = self.held.popitem(last=False)
        else:
            item_id = item.id if isinstance(item, Item) else int(item)
            if self.held.pop(item_id, None) is None:
                raise ValueError(f"task_done(): no item {item_id} is held by this client")
        self._acks.append(item_id)
        if len(self._acks) >= IDS_MAX:
            self.flush_acks()
        elif self._ack_handle is None:
            self._ack_handle = asyncio.get_running_loop().call_soon(self.flush_acks)

    def flush_acks(self):
        """Sends the acks made so far, as one ACK."""
        if self._ack_handle is not None:
            self._ack_handle.cancel()
            self._ack_handle = None
        if self._acks:
            ids, self._acks = self._acks, []
            self.session.send(message(b"ACK", self.session.tag(b"ack"), pack_ids(ids)))

    def touch(self, item):
        self.flush_acks()  # in order: an item acked before is not touched
        self.session.send(message(b"TOUCH", self.session.tag(b"touch"), pack_ids([item.id])))

    def nack(self, item, delay, reason):
        delay_ms = int(delay * 1000)
        if not 0 <= delay_ms <= WAIT_MAX_MS:
            raise ValueError(f"nack(): delay is 0 to {WAIT_MAX_MS // 1000} seconds")
        if self.held.pop(item.id, None) is None:
            raise ValueError(f"nack(): no item {item.id} is held by this client")
        self.flush_acks()
        self.session.send(message(b"NACK", self.session.tag(b"nack"), delay_ms, cut_text(reason),
                                  pack_ids([item.id])))

    async def close(self):
        self.flush_acks()  # before BYE, which gives back every item still held
        await self.session.close()
