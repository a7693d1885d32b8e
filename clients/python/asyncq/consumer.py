"""The get side of a Queue (PROTOCOL.md 4.3 to 4.5): credit that follows the
getters, deliveries one by one or in ITEMS batches, acks made in one
event-loop tick sent as one ACK at its end, and each item got remembered
with the asyncio task that got it, so that a bare task_done() acks that
task's item and no other."""
from __future__ import annotations

import asyncio
import collections
import logging
from typing import Deque, Dict, List, Optional, Union

from .protocol import (IDS_MAX, WAIT_MAX_MS, BrokerError, Fields, Frames, QueueShutDown,
                       cut_text, message, pack_ids, parse_priority, parse_stats, unpack_items,
                       unpack_priorities)
from .session import Session

log = logging.getLogger("asyncq")

ID_TAGS = (b"ack", b"touch", b"nack")  # requests whose ERRORs name ids


class QueueEmpty(asyncio.QueueEmpty):
    """get_nowait() found no item delivered to this client."""


class Item(bytes):
    """A delivered item: its payload (a bytes object) with the delivery's
    broker-given .id, .attempt (1 on first delivery), .queue and .lease_ms,
    and .priority: the put's, for a queue that asks for it
    (PriorityQueue, or Queue(priorities=True)); None otherwise."""

    queue: str
    id: int
    attempt: int
    lease_ms: int
    priority: Optional[int]
    session: int  # the client's session it came in (its ids are that session's)

    def __new__(cls, payload: Union[bytes, memoryview], queue: str, item_id: int, attempt: int,
                lease_ms: int, session: int = 0, priority: Optional[int] = None) -> "Item":
        self = super().__new__(cls, payload)
        self.queue, self.id, self.attempt, self.lease_ms = queue, item_id, attempt, lease_ms
        self.session, self.priority = session, priority
        return self


Delivered = Union[Item, QueueShutDown]


def current_task() -> Optional["asyncio.Task[object]"]:
    """The asyncio task running now, or None outside one."""
    try:
        return asyncio.current_task()
    except RuntimeError:
        return None


class Consumer:
    """The broker's credit for this consumer is, at the end of every tick
    that changed it: the items held (got, not yet task_done or nacked), plus
    the get() calls waiting, plus prefetch. N coroutines that get() hold at
    most N items, as with asyncio.Queue; prefetch lets the broker send that
    many more ahead. A steady pool of workers sends no CREDIT at all."""

    def __init__(self, session: Session, queue: str, prefetch: int,
                 priorities: bool = False) -> None:
        self.session = session
        self.queue, self.prefetch = queue, prefetch
        self.priorities = priorities  # CREDIT asks for them (`with priority`, 4.3)
        self._loop = asyncio.get_running_loop()
        self._delivered: Deque[Delivered] = collections.deque()  # not yet got
        self._getters: Deque["asyncio.Future[None]"] = collections.deque()  # get()s waiting
        # Items got and not done: those of this session by id, those of a
        # session gone (the broker took them back; ids may be reused) apart,
        # and all of them by the task that called get().
        self.held: Dict[int, Item] = {}
        self._stale: List[Item] = []
        self._by_task: Dict[Optional["asyncio.Task[object]"], List[Item]] = {}
        self._owner: Dict[int, Optional["asyncio.Task[object]"]] = {}  # id(Item) -> task
        self._credit: Optional[int] = None          # as last sent; None: to send
        # The broker said the queue is shut down and empty, or deleted (a
        # QueueShutDown is in _delivered): no CREDIT is sent until a get()
        # or reopen() finds it open again, as a CREDIT would make a deleted
        # queue anew.
        self._told = False
        self._acks: List[int] = []                  # ids of this session's items done
        self._acks_session = 0                      # the session they are of
        self._end_of_tick: Optional[asyncio.Handle] = None
        self.errors: Deque[BrokerError] = collections.deque(maxlen=100)  # about acks
        session.on_message = self._on_message
        session.on_reconnect = self._on_reconnect

    # -- credit -------------------------------------------------------------

    def wanted_credit(self) -> int:
        """Items held (those from a session gone do not count at the
        broker), get()s waiting, and prefetch."""
        waiting = sum(1 for getter in self._getters if not getter.done())
        return len(self.held) + waiting + self.prefetch

    def _credit_message(self, tag: bytes, credit: int) -> Frames:
        assert self.session.welcome is not None
        batch = max(1, min(credit, self.session.welcome.max_batch))
        if self.priorities:
            return message(b"CREDIT", tag, self.queue, credit, batch, b"priority")
        return message(b"CREDIT", tag, self.queue, credit, batch)

    async def start(self, getting: bool) -> None:
        """The first CREDIT, and CREDITED awaited: the broker counts this
        consumer from then on, and a CREDIT it refuses (403, 409, 429)
        raises. getting: a get() is about to wait, and counts."""
        credit = max(1, self.wanted_credit() + getting)
        await self.session.request(b"credit", lambda tag: self._credit_message(tag, credit))
        self._credit = credit
        self._soon()

    def _update_credit(self) -> None:
        if self._told:
            return  # the broker keeps the credit it had (4.13)
        credit = self.wanted_credit()
        if credit != self._credit:
            self._credit = credit
            self.session.send(self._credit_message(self.session.tag(b"credit"), credit))

    def _soon(self) -> None:
        """Acks and the credit go out at the end of this tick."""
        if self._end_of_tick is None:
            self._end_of_tick = self._loop.call_soon(self.flush)

    def flush(self) -> None:
        """Sends the acks made so far as one ACK, then the credit if it
        changed."""
        if self._end_of_tick is not None:
            self._end_of_tick.cancel()
            self._end_of_tick = None
        if self._acks and self._acks_session == self.session.reconnects:
            ids, self._acks = self._acks, []
            self.session.send(message(b"ACK", self.session.tag(b"ack"), pack_ids(ids)))
        self._acks.clear()  # those of a session gone would name other items
        if self._credit is not None:
            self._update_credit()

    def _on_reconnect(self) -> None:
        """Items of the session gone, got or not, are the broker's to
        deliver again: they are acked by nobody (their ids may name other
        items now), and the credit is said again. Items the new session
        sent already (a CREDIT may have gone before this runs) stay."""
        now = self.session.reconnects
        self._delivered = collections.deque(
            item for item in self._delivered
            if isinstance(item, QueueShutDown) or item.session == now)
        for item in [item for item in self.held.values() if item.session != now]:
            del self.held[item.id]
            self._stale.append(item)
        self._credit = None
        self._update_credit()

    # -- deliveries ---------------------------------------------------------

    def _on_message(self, command: bytes, fields: Fields) -> None:
        if command == b"ITEMS" and len(fields) in (3, 4) and fields[1].isdigit():
            self._on_items(fields[0].decode(), int(fields[1]), fields[2],
                           fields[3] if len(fields) == 4 else None)
        elif command == b"ITEM" and len(fields) in (6, 7):
            queue, item_id, attempt, _, lease_ms, payload = fields[:6]
            try:
                priority = parse_priority(fields[6]) if len(fields) == 7 else None
            except ValueError as error:
                log.warning("%s: ITEM not as asyncq/2 says: %s", self.session.client_id, error)
                return
            self._deliver(Item(payload, queue.decode(), int(item_id), int(attempt),
                               int(lease_ms), self.session.reconnects, priority))
        elif command == b"ERROR":
            self._on_error(BrokerError.from_fields(fields))

    def _on_items(self, queue: str, count: int, frame: bytes,
                  priorities_frame: Optional[bytes]) -> None:
        try:
            deliveries = unpack_items(count, frame)
            priorities: List[Optional[int]] = (
                [None] * count if priorities_frame is None
                else unpack_priorities(count, priorities_frame))
        except ValueError as error:
            log.warning("%s: ITEMS not as asyncq/2 says: %s", self.session.client_id, error)
            return
        for (item_id, attempt, _, lease_ms, payload), priority in zip(deliveries, priorities):
            self._deliver(Item(payload, queue, item_id, attempt, lease_ms,
                               self.session.reconnects, priority))

    def _deliver(self, item: Delivered) -> None:
        if isinstance(item, QueueShutDown):
            self._told = True
        elif self._told:
            # Items after the broker said the queue was shut down and
            # empty: it was reopened (REOPEN, 4.13) and sent them on the
            # credit it kept. The notice is out of date.
            self._forget_notice()
            self._soon()
        self._delivered.append(item)
        self._wake()

    def _forget_notice(self) -> None:
        self._told = False
        self._delivered = collections.deque(
            item for item in self._delivered if not isinstance(item, QueueShutDown))

    def resume(self) -> None:
        """The queue takes puts again (reopened, or made anew after a
        DELETE): the notice that it was shut down is forgotten and the
        credit said again (a consumer told sends CREDIT again, PROTOCOL.md
        4.13), so that get() waits for items again."""
        if not self._told:
            return
        self._forget_notice()
        self._credit = -1  # sent again at the end of this tick
        self._soon()

    async def ask_again(self) -> None:
        """For a get() made after the broker said the queue was shut down
        and empty (or deleted): asks the broker (STATS, which makes no
        queue) whether that still holds. Raises the notice if the queue is
        still shut down with nothing left, or does not exist; else
        resume(), and the get() waits as usual (a CREDIT to a queue still
        shut down is answered with the notice again)."""
        _, fields = await self.session.request(
            b"stats", lambda tag: message(b"STATS", tag, self.queue))
        stats = parse_stats(fields[1]) if len(fields) > 1 else {}
        if stats and (stats.get("state") == "open" or stats.get("outstanding") != 0):
            self.resume()
        elif self._delivered and isinstance(self._delivered[0], QueueShutDown):
            raise self._delivered[0]
        # Else the notice went meanwhile (a reopen() of this client, or
        # items came): the get() goes on.

    def _wake(self, every: bool = False) -> None:
        """Wakes the oldest waiting get() (every one, for a shutdown)."""
        while self._getters:
            getter = self._getters.popleft()
            if not getter.done():
                getter.set_result(None)
                if not every:
                    return

    def _on_error(self, error: BrokerError) -> None:
        about_queue = error.subject == self.queue.encode()
        if about_queue and isinstance(error, QueueShutDown):
            self._deliver(error)  # every get() raises it once the rest is got
            self._wake(every=True)
        elif about_queue and error.code == 408 and not error.tag.startswith(ID_TAGS):
            # The broker withdrew the credit (3 leases expired in a row,
            # 4.5): the next get() says it again.
            log.warning("%s: %s", self.session.client_id, error)
            self._credit = -1
            self._wake(every=True)
        else:
            self.errors.append(error)
            log.warning("%s: %s", self.session.client_id, error)

    # -- getting and acking -------------------------------------------------

    def _take(self, task: Optional["asyncio.Task[object]"]) -> Item:
        item = self._delivered[0]
        if isinstance(item, QueueShutDown):
            raise item  # and stays: a later get() asks the broker again
        self._delivered.popleft()
        earlier = self.held.get(item.id)
        if earlier is not None:
            # Delivered again (its lease ran out): the earlier delivery can
            # no longer be acked, and is no task's any more.
            self._forget(earlier)
        self.held[item.id] = item
        self._owner[id(item)] = task
        self._by_task.setdefault(task, []).append(item)
        self._soon()
        return item

    def get_nowait(self) -> Item:
        if not self._delivered:
            raise QueueEmpty
        return self._take(current_task())

    async def get(self, owner: Optional["asyncio.Task[object]"]) -> Item:
        """The next item, held for owner: the task that called get() (not
        one that asyncio.wait_for() or create_task() made to run it)."""
        if self._delivered and isinstance(self._delivered[0], QueueShutDown):
            await self.ask_again()  # raises the notice while it holds
        while not self._delivered:
            getter = self._loop.create_future()
            self._getters.append(getter)
            self._soon()  # one more getter waits: credit
            try:
                await getter
            except asyncio.CancelledError:
                getter.cancel()
                self._soon()
                if self._delivered and self._getters:
                    self._wake()  # the item it was woken for is the next getter's
                raise
        return self._take(owner)

    def _find(self, item: Union[Item, int], what: str) -> Item:
        """The held item that item (an Item, or an id of this session's)
        names; ValueError if this client holds no such item."""
        if isinstance(item, Item):
            if self.held.get(item.id) is item or any(old is item for old in self._stale):
                return item
        else:
            found = self.held.get(int(item))
            if found is not None:
                return found
        item_id = item.id if isinstance(item, Item) else int(item)
        raise ValueError(f"{what}(): no item {item_id} is held by this client")

    def _forget(self, item: Item) -> None:
        """Takes a held item off the task that got it (found by identity:
        two items may hold equal bytes)."""
        task = self._owner.pop(id(item))
        mine = self._by_task[task]
        del mine[next(index for index, held in enumerate(mine) if held is item)]
        if not mine:
            del self._by_task[task]

    def _release(self, item: Item) -> bool:
        """Forgets a held item; True if it is this session's (to ack or nack),
        False if its session is gone (the broker delivers it again)."""
        self._forget(item)
        self._soon()
        if self.held.get(item.id) is item:
            del self.held[item.id]
            return True
        self._stale = [old for old in self._stale if old is not item]
        return False

    def own_item(self) -> Item:
        """The one item the calling task holds, for a bare task_done();
        raises ValueError when that is not exactly one."""
        if not self.held and not self._stale:
            raise ValueError("task_done() called too many times: this client holds no item")
        mine = self._by_task.get(current_task(), [])
        if len(mine) == 1:
            return mine[0]
        if not mine:
            raise ValueError("task_done(): the calling task got no item that is not done yet; "
                             "items got by other tasks are acked with task_done(item)")
        raise ValueError(f"task_done(): the calling task holds {len(mine)} items; say which "
                         "one is done with task_done(item)")

    def task_done(self, item: Union[Item, int, None]) -> None:
        done = self.own_item() if item is None else self._find(item, "task_done")
        if not self._release(done):
            return  # its session is gone: the broker delivers it again
        if self._acks_session != done.session:
            self._acks, self._acks_session = [], done.session
        self._acks.append(done.id)
        if len(self._acks) >= IDS_MAX:
            self.flush()

    def touch(self, item: Union[Item, int]) -> None:
        held = self._find(item, "touch")
        if self.held.get(held.id) is not held:
            return  # its session is gone: no lease to renew
        self.flush()  # in order: an item acked before is not touched
        self.session.send(message(b"TOUCH", self.session.tag(b"touch"), pack_ids([held.id])))

    def nack(self, item: Union[Item, int], delay: float, reason: str) -> None:
        delay_ms = int(delay * 1000)
        if not 0 <= delay_ms <= WAIT_MAX_MS:
            raise ValueError(f"nack(): delay is 0 to {WAIT_MAX_MS // 1000} seconds")
        held = self._find(item, "nack")
        if not self._release(held):
            return  # its session is gone: the broker delivers it again
        self.flush()
        self.session.send(message(b"NACK", self.session.tag(b"nack"), delay_ms, cut_text(reason),
                                  pack_ids([held.id])))

    @property
    def waiting(self) -> int:
        """Items delivered to this client and not yet got."""
        return sum(1 for item in self._delivered if isinstance(item, Item))

    async def close(self) -> None:
        self.flush()  # acks before BYE, which gives back every item still held
        if self._end_of_tick is not None:
            self._end_of_tick.cancel()
        await self.session.close()
