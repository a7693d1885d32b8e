"""asyncq.BlockingQueue: the same client for code without asyncio (threads,
scripts), like queue.Queue. It runs an asyncq.Queue on an event loop of its
own, in a background thread."""
from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from typing import Any, Coroutine, Dict, FrozenSet, Iterable, List, Optional, TypeVar, Union

import zmq.asyncio

from .consumer import Item
from .protocol import BrokerUnreachable, DeadLetter, PeekedItem
from .queue import Joined, Payload, Queue, Stats, When
from .service import Key

T = TypeVar("T")


class BlockingQueue:
    """q = asyncq.BlockingQueue("localhost:5557"); q.put(b"x"); item = q.get();
    q.task_done(); q.join(); q.close(). Every method blocks until done; get and
    join take a timeout in seconds (TimeoutError when it passes). Options,
    .roles, .persistence and .held are asyncq.Queue's. A bare task_done()
    acks the item the calling thread got (threads are this client's tasks)."""

    def __init__(self, broker: str = "localhost", queue: str = "default",
                 **options: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True,
                                        name="asyncq")
        self._thread.start()
        self._context = zmq.asyncio.Context()
        self._lock = threading.Lock()
        self._held: Dict[int, List[Item]] = {}  # thread ident -> items it got, not done

        async def make() -> Queue:
            return Queue(broker, queue, context=self._context, **options)

        self._queue = self._run(make())
        self.queue, self.broker = queue, broker

    def _run(self, coroutine: Coroutine[Any, Any, T], timeout: Optional[float] = None) -> T:
        future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise TimeoutError from None

    @property
    def roles(self) -> Optional[FrozenSet[str]]:
        return self._queue.roles

    @property
    def persistence(self) -> Optional[str]:
        return self._queue.persistence

    @property
    def held(self) -> Optional[str]:
        return self._queue.held

    @property
    def brokers(self) -> Dict[int, str]:
        """asyncq.Queue.brokers: the service's brokers by shard ({} before
        the first use)."""
        return self._queue.brokers

    @property
    def unreachable(self) -> Dict[str, BrokerUnreachable]:
        """asyncq.Queue.unreachable: addresses given that answered nothing."""
        return self._queue.unreachable

    def put(self, item: Payload, *, lease: Optional[float] = None,
            priority: Optional[int] = None, delay: Optional[float] = None,
            at: Optional[When] = None, key: Optional[Key] = None) -> None:
        """asyncq.Queue.put: priority, delay, at and key as there."""
        self._run(self._queue.put(item, lease=lease, priority=priority, delay=delay, at=at,
                                  key=key))

    def get(self, timeout: Optional[float] = None) -> Item:
        item = self._run(asyncio.wait_for(self._queue.get(), timeout))
        with self._lock:
            self._held.setdefault(threading.get_ident(), []).append(item)
        return item

    def _own_item(self, item: Union[Item, int, None]) -> Union[Item, int]:
        """The item a task_done() or nack() is about: the one given, or the
        one this thread got (ValueError when that is not exactly one)."""
        with self._lock:
            mine = self._held.get(threading.get_ident(), [])
            if item is None:
                if len(mine) != 1:
                    raise ValueError(
                        "task_done(): the calling thread got no item that is not done yet; "
                        "items got by other threads are acked with task_done(item)" if not mine
                        else f"task_done(): the calling thread holds {len(mine)} items; say "
                        "which one is done with task_done(item)")
                return mine.pop()
            item_id = item.id if isinstance(item, Item) else int(item)
            for held in self._held.values():
                for index, got in enumerate(held):
                    if got.id == item_id:
                        del held[index]
                        return got
            return item

    def task_done(self, item: Union[Item, int, None] = None) -> None:
        done = self._own_item(item)
        self._run(self._call(self._queue.task_done, done))

    def nack(self, item: Union[Item, int], delay: float = 0.0, reason: str = "") -> None:
        done = self._own_item(item)
        self._run(self._call(self._queue.nack, done, delay, reason))

    def touch(self, item: Union[Item, int]) -> None:
        self._run(self._call(self._queue.touch, item))

    @staticmethod
    async def _call(function: Any, *args: Any) -> None:
        function(*args)

    def join(self, timeout: Optional[float] = None, *, all: bool = False) -> Joined:
        return self._run(self._queue.join(timeout, all=all))

    def shutdown(self, immediate: bool = False) -> Stats:
        return self._run(self._queue.shutdown(immediate))

    def reopen(self) -> None:
        """asyncq.Queue.reopen: a shut-down queue takes puts again."""
        self._run(self._queue.reopen())

    def purge(self) -> int:
        """asyncq.Queue.purge: queued and delayed items discarded; how many."""
        return self._run(self._queue.purge())

    def delete(self) -> int:
        """asyncq.Queue.delete: the queue and all it holds; how many items."""
        return self._run(self._queue.delete())

    def stats(self) -> Stats:
        return self._run(self._queue.stats())

    def shard_stats(self) -> Dict[int, Stats]:
        """asyncq.Queue.shard_stats: each broker's stats, by shard."""
        return self._run(self._queue.shard_stats())

    def dead_letters(self) -> List[DeadLetter]:
        return self._run(self._queue.dead_letters())

    def dead_letter(self, item: Union[DeadLetter, int]) -> DeadLetter:
        """asyncq.Queue.dead_letter: one dead item, its whole payload."""
        return self._run(self._queue.dead_letter(item))

    def requeue_dead(self, items: Optional[Iterable[Union[DeadLetter, int]]] = None) -> int:
        """asyncq.Queue.requeue_dead: all, or the items given (all or none)."""
        return self._run(self._queue.requeue_dead(items))

    def delete_dead(self, items: Iterable[Union[DeadLetter, int]]) -> int:
        """asyncq.Queue.delete_dead: the dead items given (all or none)."""
        return self._run(self._queue.delete_dead(items))

    def peek(self, n: int = 10) -> List[PeekedItem]:
        """asyncq.Queue.peek: the next n items, left where they are."""
        return self._run(self._queue.peek(n))

    def pause(self) -> Stats:
        """asyncq.Queue.pause: deliveries stop, for every client."""
        return self._run(self._queue.pause())

    def resume(self) -> Stats:
        """asyncq.Queue.resume: deliveries go on."""
        return self._run(self._queue.resume())

    def purge_dead(self) -> int:
        return self._run(self._queue.purge_dead())

    def qsize(self) -> int:
        """The broker's count now (a round trip: this is the blocking client)."""
        queued = self.stats().get("queued", 0)
        return (queued if isinstance(queued, int) else 0) + self._run(self._waiting())

    async def _waiting(self) -> int:
        consumer = self._queue._consumer
        return consumer.waiting if consumer else 0

    def empty(self) -> bool:
        return self.qsize() == 0

    def close(self, timeout: Optional[float] = None) -> None:
        if self._thread.is_alive():
            try:
                self._run(self._queue.close(timeout))
            finally:
                self._loop.call_soon_threadsafe(self._loop.stop)
                self._thread.join()
                self._context.term()
                self._loop.close()

    def __enter__(self) -> "BlockingQueue":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
