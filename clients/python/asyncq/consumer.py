"""The get side of a Queue (PROTOCOL.md 4.3 to 4.5, and 4.15 for a service of
several brokers): credit that follows the getters, deliveries one by one or
in ITEMS batches, acks made in one event-loop tick sent as one ACK at its
end, and each item got remembered with the asyncio task that got it, so
that a bare task_done() acks that task's item and no other.

With several brokers (shards), the consumer has a session (a Feed) with
each, and shares its one credit among them: the sum it grants never
exceeds what its getters want. Credit a broker has no items for moves to
one that says it has (READY): lowered at the first, and once that broker
confirms (CREDITED, after any item it sent before), raised at the other by
what is still wanted."""
from __future__ import annotations

import asyncio
import collections
import logging
from typing import Deque, Dict, Iterable, List, Optional, Tuple, Union

from .protocol import (IDS_MAX, WAIT_MAX_MS, BrokerError, Fields, Frames, QueueShutDown,
                       cut_text, message, pack_ids, parse_priority, parse_stats, unpack_items,
                       unpack_priorities)
from .session import Session

log = logging.getLogger("asyncq")

ID_TAGS = (b"ack", b"touch", b"nack")  # requests whose ERRORs name ids
DELETED = "queue deleted"  # the text of the 503 that tells a consumer of a DELETE (4.13)


class QueueEmpty(asyncio.QueueEmpty):
    """get_nowait() found no item delivered to this client."""


class Item(bytes):
    """A delivered item: its payload (a bytes object) with the delivery's
    broker-given .id, .attempt (1 on first delivery), .queue and .lease_ms,
    .priority: the put's, for a queue that asks for it (PriorityQueue, or
    Queue(priorities=True)), None otherwise; and .shard: the number of the
    broker it came from (PROTOCOL.md 4.15; 0 with one broker), which its
    task_done(), touch() and nack() go to."""

    queue: str
    id: int
    attempt: int
    lease_ms: int
    priority: Optional[int]
    session: int  # the client's session it came in (its ids are that session's)
    shard: int

    def __new__(cls, payload: Union[bytes, memoryview], queue: str, item_id: int, attempt: int,
                lease_ms: int, session: int = 0, priority: Optional[int] = None,
                shard: int = 0) -> "Item":
        self = super().__new__(cls, payload)
        self.queue, self.id, self.attempt, self.lease_ms = queue, item_id, attempt, lease_ms
        self.session, self.priority, self.shard = session, priority, shard
        return self


Delivered = Union[Item, QueueShutDown]


def current_task() -> Optional["asyncio.Task[object]"]:
    """The asyncio task running now, or None outside one."""
    try:
        return asyncio.current_task()
    except RuntimeError:
        return None


class Feed:
    """The consumer's session with one broker: the credit it was granted,
    the items it sent not yet acked, acks to send it, and what it said."""

    def __init__(self, owner: "Consumer", session: Session, shard: int) -> None:
        self.owner, self.session, self.shard = owner, session, shard
        # The credit as last sent in this session; None: none sent yet (or
        # a new session: one to send); -1: to send again.
        self.credit: Optional[int] = None
        self.confirmed = 0   # the credit the broker's latest CREDITED said
        self.asked: Deque[Tuple[bytes, int]] = collections.deque()  # CREDITs not yet answered
        self.out = 0         # items of this session delivered, not acked or nacked
        self.ready: Optional[int] = None  # when it said READY, until its credit is raised
        self.delivered_at = 0             # when it last delivered (the consumer's count)
        # The broker said the queue is shut down and empty, or deleted (its
        # credit then is 0 and a CREDIT would make the queue anew).
        self.told: Optional[QueueShutDown] = None
        self.deleted = False
        self.acks: List[int] = []  # ids of this session's items done
        self.acks_session = 0      # the session they are of
        session.on_message = self._on_message
        session.on_reconnect = self._on_reconnect
        session.on_reset = self._on_reset
        session.on_down = owner.soon

    @property
    def bound(self) -> int:
        """The most credit the broker may be using: the credit it confirmed,
        or one sent and not yet answered, whichever is more."""
        return max(self.confirmed, max((credit for _, credit in self.asked), default=0))

    def credit_message(self, tag: bytes, credit: int) -> Frames:
        assert self.session.welcome is not None
        batch = max(1, min(credit, self.session.welcome.max_batch))
        words = [b"priority"] if self.owner.priorities else []
        if self.owner.sharded:
            words.append(b"ready")  # READY when it has items and this session no credit (4.15)
        if words:
            return message(b"CREDIT", tag, self.owner.queue, credit, batch, b" ".join(words))
        return message(b"CREDIT", tag, self.owner.queue, credit, batch)

    def send_credit(self, credit: int) -> None:
        tag = self.session.tag(b"credit")
        self.asked.append((tag, credit))
        self.credit = credit
        self.session.send(self.credit_message(tag, credit))

    def send_acks(self) -> None:
        if self.acks and self.acks_session == self.session.reconnects:
            ids, self.acks = self.acks, []
            self.session.send(message(b"ACK", self.session.tag(b"ack"), pack_ids(ids)))
        self.acks.clear()  # those of a session gone would name other items

    def _answered(self, tag: bytes) -> bool:
        """Forgets the CREDITs sent up to the one with tag (answered in
        order); whether it was one."""
        if all(asked != tag for asked, _ in self.asked):
            return False
        while self.asked.popleft()[0] != tag:
            pass
        return True

    def _on_reset(self) -> None:
        """The DEALER was replaced: nothing of the session lost can come, and
        its credit is no more (the next session's first CREDIT says it)."""
        self.confirmed, self.credit, self.ready = 0, None, None
        self.asked.clear()
        self.owner.soon()

    def _on_reconnect(self) -> None:
        """A new session: items of the one gone, got or not, are the
        broker's to deliver again, and the credit is said again."""
        self.confirmed, self.ready, self.credit = 0, None, None
        self.asked.clear()
        self.owner.session_gone(self)

    def _on_message(self, command: bytes, fields: Fields) -> None:
        owner = self.owner
        if command == b"ITEMS" and len(fields) in (3, 4) and fields[1].isdigit():
            owner.on_items(self, fields[0].decode(), int(fields[1]), fields[2],
                           fields[3] if len(fields) == 4 else None)
        elif command == b"ITEM" and len(fields) in (6, 7):
            queue, item_id, attempt, _, lease_ms, payload = fields[:6]
            try:
                priority = parse_priority(fields[6]) if len(fields) == 7 else None
            except ValueError as error:
                log.warning("%s: ITEM not as asyncq/2 says: %s", self.session.client_id, error)
                return
            owner.deliver(self, Item(payload, queue.decode(), int(item_id), int(attempt),
                                     int(lease_ms), self.session.reconnects, priority, self.shard))
        elif command == b"CREDITED" and len(fields) == 3 and fields[2].isdigit():
            if self._answered(fields[0]):
                self.confirmed = int(fields[2])
                if owner.sharded:
                    owner.soon()
        elif command == b"READY" and fields and fields[0] == owner.queue.encode():
            if owner.sharded and self.ready is None and not self.deleted:
                if self.told is not None:
                    owner.reopened(self)  # items ready: the queue was reopened there
                self.ready = owner.tick()
                owner.soon()
        elif command == b"ERROR":
            refusal = BrokerError.from_fields(fields)
            if (refusal.tag and self._answered(refusal.tag)
                    and not isinstance(refusal, QueueShutDown)):
                owner.soon()  # a CREDIT refused: the broker keeps the credit it had
            owner.on_error(self, refusal)


class Consumer:
    """The broker's credit for this consumer is, at the end of every tick
    that changed it: the items held (got, not yet task_done or nacked), plus
    the get() calls waiting, plus prefetch. N coroutines that get() hold at
    most N items, as with asyncio.Queue; prefetch lets the broker send that
    many more ahead. A steady pool of workers sends no CREDIT at all. With
    several brokers, that credit is shared among them (the module's
    docstring)."""

    def __init__(self, sessions: Union[Session, Dict[int, Session]], queue: str,
                 prefetch: int, priorities: bool = False) -> None:
        if isinstance(sessions, Session):
            sessions = {0: sessions}
        self.queue, self.prefetch = queue, prefetch
        self.priorities = priorities  # CREDIT asks for them (`with priority`, 4.3)
        self.sharded = len(sessions) > 1
        self._loop = asyncio.get_running_loop()
        self._delivered: Deque[Delivered] = collections.deque()  # not yet got
        self._getters: Deque["asyncio.Future[None]"] = collections.deque()  # get()s waiting
        # Items got and not done: those of a live session by id (ids are
        # unique in a service: their top 8 bits are the shard), those of a
        # session gone (the broker took them back; ids may be reused)
        # apart, and all of them by the task that called get().
        self.held: Dict[int, Item] = {}
        self._stale: List[Item] = []
        self._by_task: Dict[Optional["asyncio.Task[object]"], List[Item]] = {}
        self._owner: Dict[int, Optional["asyncio.Task[object]"]] = {}  # id(Item) -> task
        self.started = False  # the first CREDIT was confirmed (start())
        # Every broker said the queue is shut down and empty, or deleted (a
        # QueueShutDown is in _delivered): no CREDIT is sent to them until a
        # get() or reopen() finds it open again, as a CREDIT would make a
        # deleted queue anew.
        self._told = False
        self._end_of_tick: Optional[asyncio.Handle] = None
        self._clock = 0  # counts deliveries and READYs, to order them
        self._turn = 0   # where spreading credit starts next
        self.errors: Deque[BrokerError] = collections.deque(maxlen=100)  # about acks
        self.feeds: Dict[int, Feed] = {}
        for shard in sorted(sessions):
            self.feeds[shard] = Feed(self, sessions[shard], shard)

    @property
    def session(self) -> Session:
        """The session of the first broker (the only one, with one broker)."""
        return next(iter(self.feeds.values())).session

    def tick(self) -> int:
        self._clock += 1
        return self._clock

    # -- credit -------------------------------------------------------------

    def wanted_credit(self) -> int:
        """Items held (those from a session gone do not count at the
        broker), get()s waiting, and prefetch."""
        waiting = sum(1 for getter in self._getters if not getter.done())
        return len(self.held) + waiting + self.prefetch

    async def start(self, getting: bool) -> None:
        """The first CREDIT, and CREDITED awaited: the broker counts this
        consumer from then on, and a CREDIT it refuses (403, 409, 429)
        raises. getting: a get() is about to wait, and counts. With several
        brokers, each that is up is sent its first CREDIT, the credit
        spread among them; one that is down, once it is up."""
        credit = max(1, self.wanted_credit() + getting)
        if self.sharded:
            up = [feed for feed in self.feeds.values() if feed.session.up]
            shares = dict(self._spread(credit, up))
        else:
            up = [self.session_feed]
            shares = {up[0]: credit}
        for feed in up:
            feed.credit = feed.confirmed = shares.get(feed, 0)

        async def first(feed: Feed) -> None:
            await feed.session.request(
                b"credit", lambda tag: feed.credit_message(tag, shares.get(feed, 0)))

        results = await asyncio.gather(*(first(feed) for feed in up), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        self.started = True
        self.soon()

    def _update_one(self, feed: Feed) -> None:
        """One broker: its credit is what is wanted, sent when that changes."""
        if feed.told is not None:
            return  # the broker keeps the credit it had (4.13)
        credit = self.wanted_credit()
        if credit != feed.credit:
            feed.send_credit(credit)

    def _spread(self, amount: int, feeds: List[Feed]) -> List[Tuple[Feed, int]]:
        """amount shared evenly among feeds, the remainder to the first from
        where the last spread stopped."""
        if not feeds or amount <= 0:
            return []
        start = self._turn % len(feeds)
        order = feeds[start:] + feeds[:start]
        base, extra = divmod(amount, len(feeds))
        self._turn += max(extra, 1)
        return [(feed, base + (index < extra)) for index, feed in enumerate(order)
                if base or index < extra]

    def _share_credit(self) -> None:
        """Several brokers: sets each one's credit so that the credit in force
        at all of them (what each may still use until it confirms a lower
        one) never passes what is wanted, and moves credit a broker has no
        items for to one that said READY (PROTOCOL.md 4.15)."""
        feeds = list(self.feeds.values())
        wanted = self.wanted_credit()
        ask: Dict[Feed, int] = {
            feed: 0 if feed.credit is None else feed.confirmed if feed.credit < 0 else feed.credit
            for feed in feeds}
        sendable = [feed for feed in feeds if feed.session.up and not feed.deleted]
        usable = [feed for feed in sendable if feed.told is None]
        for feed in feeds:
            if feed.ready is not None and feed.credit is not None and feed.credit > feed.out:
                # It has room now: had it items ready, it would send them.
                feed.ready = None
        for feed in sendable:
            if feed.told is not None:
                # Shut down and empty there: its credit is of more use at
                # the others, one of which may not have been told yet (a
                # broker tells a consumer it holds no credit of at its next
                # CREDIT only).
                ask[feed] = min(ask[feed], feed.out)
        # 1. More asked than wanted: free credit taken back, from the
        # brokers idle longest first.
        excess = sum(max(feed.out, ask[feed]) for feed in feeds) - wanted
        for feed in sorted(sendable, key=lambda feed: (feed.ready is not None, feed.delivered_at)):
            if excess <= 0:
                break
            cut = min(ask[feed] - feed.out, excess)
            if cut > 0:
                ask[feed] -= cut
                excess -= cut
        # 2. Credit that waits at a broker with nothing to send (it would have
        # sent) while another has items for it: taken back.
        ready = sorted((feed for feed in usable if feed.ready is not None),
                       key=lambda feed: feed.ready or 0)
        if ready:
            for feed in sendable:
                if feed.ready is None and ask[feed] > feed.out:
                    ask[feed] = feed.out
        # 3. What is still wanted: to the brokers that said READY, else to
        # where credit is already, else spread.
        deficit = wanted - sum(max(feed.out, ask[feed]) for feed in feeds)
        if deficit > 0 and usable:
            if ready:
                targets = ready
            else:
                homes = sorted((feed for feed in usable if max(feed.bound, ask[feed]) > feed.out),
                               key=lambda feed: feed.out - max(feed.bound, ask[feed]))
                targets = homes[:1] or usable
            # First what a broker may use already (a lower credit sent and
            # not yet in force): that costs nothing.
            for feed in targets:
                room = min(feed.bound - max(feed.out, ask[feed]), deficit)
                if room > 0:
                    ask[feed] = max(feed.out, ask[feed]) + room
                    deficit -= room
                    feed.ready = None
            # Then what the other brokers have confirmed they no longer use.
            available = wanted - sum(max(feed.out, feed.bound, ask[feed]) for feed in feeds)
            for feed, share in self._spread(min(deficit, available), targets):
                ask[feed] = max(feed.out, ask[feed]) + share
                feed.ready = None
        for feed in sendable:
            if feed.credit is None or feed.credit < 0:
                if feed.told is None:
                    feed.send_credit(ask[feed])  # a first CREDIT, or one said again
            elif ask[feed] != feed.credit and (feed.told is None or ask[feed] < feed.credit):
                feed.send_credit(ask[feed])  # a shut-down queue's credit is only lowered

    def soon(self) -> None:
        """Acks and the credit go out at the end of this tick."""
        if self._end_of_tick is None:
            self._end_of_tick = self._loop.call_soon(self.flush)

    def flush(self) -> None:
        """Sends the acks made so far as one ACK a broker, then the credit if
        it changed."""
        if self._end_of_tick is not None:
            self._end_of_tick.cancel()
            self._end_of_tick = None
        for feed in self.feeds.values():
            feed.send_acks()
        if not self.sharded:
            feed = self.session_feed
            if feed.credit is not None:
                self._update_one(feed)
        elif self.started:
            self._share_credit()

    @property
    def session_feed(self) -> Feed:
        return next(iter(self.feeds.values()))

    def session_gone(self, feed: Feed) -> None:
        """After a new HELLO to a broker: its items of the session gone,
        got or not, are its to deliver again: they are acked by nobody
        (their ids may name other items now), and the credit is said again.
        Items the new session sent already (a CREDIT may have gone before
        this runs) stay."""
        now = feed.session.reconnects
        self._delivered = collections.deque(
            item for item in self._delivered
            if isinstance(item, QueueShutDown) or item.shard != feed.shard or item.session == now)
        for item in [item for item in self.held.values()
                     if item.shard == feed.shard and item.session != now]:
            del self.held[item.id]
            self._stale.append(item)
        feed.out = sum(1 for item in self._delivered
                       if isinstance(item, Item) and item.shard == feed.shard)
        feed.out += sum(1 for item in self.held.values() if item.shard == feed.shard)
        if not self.sharded:
            self._update_one(feed)
        else:
            self.soon()

    # -- deliveries ---------------------------------------------------------

    def on_items(self, feed: Feed, queue: str, count: int, frame: bytes,
                 priorities_frame: Optional[bytes]) -> None:
        try:
            deliveries = unpack_items(count, frame)
            priorities: List[Optional[int]] = (
                [None] * count if priorities_frame is None
                else unpack_priorities(count, priorities_frame))
        except ValueError as error:
            log.warning("%s: ITEMS not as asyncq/2 says: %s", feed.session.client_id, error)
            return
        session = feed.session.reconnects
        for (item_id, attempt, _, lease_ms, payload), priority in zip(deliveries, priorities):
            self.deliver(feed, Item(payload, queue, item_id, attempt, lease_ms, session,
                                    priority, feed.shard))

    def deliver(self, feed: Feed, item: Item) -> None:
        feed.out += 1
        feed.delivered_at = self.tick()
        if feed.told is not None:
            # Items after the broker said the queue was shut down and
            # empty: it was reopened (REOPEN, 4.13) and sent them on the
            # credit it kept.
            feed.told, feed.deleted = None, False
        if self._told:
            # The notice is out of date.
            self._forget_notice()
            self.soon()
        self._delivered.append(item)
        self._wake()

    def reopened(self, feed: Feed) -> None:
        """A broker that said the queue was shut down and empty has items
        for it again (reopened there): the notice is out of date."""
        feed.told = None
        if self._told:
            self._forget_notice()
        self.soon()

    def _forget_notice(self) -> None:
        self._told = False
        self._delivered = collections.deque(
            item for item in self._delivered if not isinstance(item, QueueShutDown))

    def resume(self, shards: Optional[Iterable[int]] = None) -> None:
        """The queue takes puts again (reopened, or made anew after a
        DELETE), at every broker or those of shards: the notice that it was
        shut down is forgotten and the credit said again (a consumer told
        sends CREDIT again, PROTOCOL.md 4.13), so that get() waits for
        items again."""
        chosen = self.feeds.values() if shards is None else \
            [self.feeds[shard] for shard in shards if shard in self.feeds]
        told = [feed for feed in chosen if feed.told is not None]
        if not told and not self._told:
            return
        for feed in told:
            self._resume_feed(feed)
        self._forget_notice()
        self.soon()

    def _resume_feed(self, feed: Feed) -> None:
        feed.told, feed.deleted = None, False
        feed.credit = -1  # sent again at the end of this tick

    async def ask_again(self) -> None:
        """For a get() made after the brokers said the queue was shut down
        and empty (or deleted): asks them (STATS, which makes no queue)
        whether that still holds. Raises the notice if the queue is still
        shut down with nothing left, or does not exist, everywhere; else
        resumes (the brokers where it is open again), and the get() waits
        as usual (a CREDIT to a queue still shut down is answered with the
        notice again)."""
        asked = [feed for feed in self.feeds.values()
                 if feed.told is not None and (feed.session.up or not self.sharded)]

        async def stats(feed: Feed) -> bool:
            _, fields = await feed.session.request(
                b"stats", lambda tag: message(b"STATS", tag, self.queue))
            stats = parse_stats(fields[1]) if len(fields) > 1 else {}
            return bool(stats) and (stats.get("state") == "open" or stats.get("outstanding") != 0)

        opened = await asyncio.gather(*(stats(feed) for feed in asked))
        if any(opened):
            for feed, open_ in zip(asked, opened):
                if open_ and feed.told is not None:
                    self._resume_feed(feed)
            self._forget_notice()
            self.soon()
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

    def on_error(self, feed: Feed, error: BrokerError) -> None:
        about_queue = error.subject == self.queue.encode()
        if about_queue and isinstance(error, QueueShutDown):
            if feed.told is not None:
                return  # said again (to a CREDIT that lowered the credit)
            feed.told, feed.ready = error, None
            if error.text == DELETED:
                # The broker let go of this consumer: its credit is 0.
                feed.deleted, feed.confirmed, feed.credit = True, 0, 0
                feed.asked.clear()
            if all(other.told is not None for other in self.feeds.values()):
                # Every broker said it: every get() raises it once the rest
                # is got.
                self._told = True
                self._delivered.append(error)
                self._wake(every=True)
            else:
                self.soon()
        elif about_queue and error.code == 408 and not error.tag.startswith(ID_TAGS):
            # The broker withdrew the credit (3 leases expired in a row,
            # 4.5): the next get() says it again.
            log.warning("%s: %s", feed.session.client_id, error)
            feed.credit, feed.confirmed = -1, 0
            feed.asked.clear()
            self._wake(every=True)
        else:
            self.errors.append(error)
            log.warning("%s: %s", feed.session.client_id, error)

    # -- getting and acking -------------------------------------------------

    def _take(self, task: Optional["asyncio.Task[object]"]) -> Item:
        item = self._delivered[0]
        if isinstance(item, QueueShutDown):
            raise item  # and stays: a later get() asks the broker again
        self._delivered.popleft()
        earlier = self.held.get(item.id)
        if earlier is not None:
            # Delivered again (its lease ran out): the earlier delivery can
            # no longer be acked, and is no task's any more; the broker
            # counts the item once.
            self._forget(earlier)
            self.feeds[earlier.shard].out -= 1
        self.held[item.id] = item
        self._owner[id(item)] = task
        self._by_task.setdefault(task, []).append(item)
        self.soon()
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
            self.soon()  # one more getter waits: credit
            try:
                await getter
            except asyncio.CancelledError:
                getter.cancel()
                self.soon()
                if self._delivered and self._getters:
                    self._wake()  # the item it was woken for is the next getter's
                raise
        return self._take(owner)

    def _find(self, item: Union[Item, int], what: str) -> Item:
        """The held item that item (an Item, or an id) names; ValueError if
        this client holds no such item."""
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
        """Forgets a held item; True if it is of a live session (to ack or
        nack), False if its session is gone (the broker delivers it again)."""
        self._forget(item)
        self.soon()
        if self.held.get(item.id) is item:
            del self.held[item.id]
            self.feeds[item.shard].out -= 1
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
        feed = self.feeds[done.shard]
        if feed.acks_session != done.session:
            feed.acks, feed.acks_session = [], done.session
        feed.acks.append(done.id)
        if len(feed.acks) >= IDS_MAX:
            self.flush()

    def touch(self, item: Union[Item, int]) -> None:
        held = self._find(item, "touch")
        if self.held.get(held.id) is not held:
            return  # its session is gone: no lease to renew
        self.flush()  # in order: an item acked before is not touched
        session = self.feeds[held.shard].session
        session.send(message(b"TOUCH", session.tag(b"touch"), pack_ids([held.id])))

    def nack(self, item: Union[Item, int], delay: float, reason: str) -> None:
        delay_ms = int(delay * 1000)
        if not 0 <= delay_ms <= WAIT_MAX_MS:
            raise ValueError(f"nack(): delay is 0 to {WAIT_MAX_MS // 1000} seconds")
        held = self._find(item, "nack")
        if not self._release(held):
            return  # its session is gone: the broker delivers it again
        self.flush()
        session = self.feeds[held.shard].session
        session.send(message(b"NACK", session.tag(b"nack"), delay_ms, cut_text(reason),
                             pack_ids([held.id])))

    @property
    def waiting(self) -> int:
        """Items delivered to this client and not yet got."""
        return sum(1 for item in self._delivered if isinstance(item, Item))

    async def close(self) -> None:
        self.flush()  # acks before BYE, which gives back every item still held
        if self._end_of_tick is not None:
            self._end_of_tick.cancel()
        await asyncio.gather(*(feed.session.close() for feed in self.feeds.values()))
