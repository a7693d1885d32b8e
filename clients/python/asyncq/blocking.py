"""asyncq.BlockingQueue: the same client for code without asyncio (threads,
scripts), like queue.Queue. It runs an asyncq.Queue on an event loop of its
own, in a background thread."""
import asyncio
import threading

import zmq.asyncio

from .queue import Queue


class BlockingQueue:
    """q = asyncq.BlockingQueue("localhost:5557"); q.put(b"x"); item = q.get();
    q.task_done(); q.join(); q.close(). Every method blocks until done; get and
    join take a timeout in seconds (TimeoutError when it passes). Options,
    .roles, .persistence and .held are asyncq.Queue's."""

    def __init__(self, broker="localhost", queue="default", **options):
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True,
                                        name="asyncq")
        self._thread.start()
        self._context = zmq.asyncio.Context()

        async def make():
            return Queue(broker, queue, context=self._context, **options)

        self._queue = self._run(make())
        self.queue, self.broker = queue, broker

    def _run(self, coroutine, timeout=None):
        future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        try:
            return future.result(timeout)
        except TimeoutError:
            future.cancel()
            raise

    @property
    def roles(self):
        return self._queue.roles

    @property
    def persistence(self):
        return self._queue.persistence

    @property
    def held(self):
        return self._queue.held

    def put(self, item, *, lease=None):
        self._run(self._queue.put(item, lease=lease))

    def get(self, timeout=None):
        return self._run(asyncio.wait_for(self._queue.get(), timeout))

    def task_done(self, item=None):
        self._run(self._task_done(item))

    async def _task_done(self, item):
        self._queue.task_done(item)

    def join(self, timeout=None, *, all=False):
        return self._run(self._queue.join(timeout, all=all))

    def stats(self):
        return self._run(self._queue.stats())

    def qsize(self):
        return self._queue.qsize()

    def empty(self):
        return self.qsize() == 0

    def close(self, timeout=None):
        if self._thread.is_alive():
            try:
                self._run(self._queue.close(timeout))
            finally:
                self._loop.call_soon_threadsafe(self._loop.stop)
                self._thread.join()
                self._context.term()
                self._loop.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
