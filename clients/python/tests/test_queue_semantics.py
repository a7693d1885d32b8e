"""CPython's Lib/test/test_asyncio/test_queues.py, the behaviours that make
sense over a network, against the real C broker."""
import asyncio
import time
import unittest

from broker import BrokerTestCase

import asyncq


class QueueSemantics(BrokerTestCase):
    async def until_stat(self, key, value):
        """Waits until the broker's stats of this test's queue show key=value."""
        watcher = self.client()
        deadline = time.monotonic() + 10
        while (stats := await watcher.stats()).get(key) != value:
            self.assertLess(time.monotonic(), deadline, f"{key} never became {value}: {stats}")
            await asyncio.sleep(0.01)


class Basics(QueueSemantics):
    async def test_fifo_order_with_one_consumer(self):
        q = self.client()
        for i in range(20):
            await q.put(str(i))
        got = []
        for _ in range(20):
            got.append(int(await q.get()))
            q.task_done()
        self.assertEqual(got, list(range(20)))

    async def test_get_nowait_takes_only_what_was_delivered(self):
        q = self.client(prefetch=1)
        with self.assertRaises(asyncq.QueueEmpty):
            q.get_nowait()
        await q.put(b"one")
        await q.put(b"two")
        self.assertEqual(await q.get(), b"one")
        await self.until_stat("inflight", 2)  # "two" was sent ahead to q
        while True:
            try:
                item = q.get_nowait()
                break
            except asyncq.QueueEmpty:
                await asyncio.sleep(0.01)  # on its way from the broker
        self.assertEqual(item, b"two")
        q.task_done(item)
        q.task_done()  # "one" is the only item this task still holds
        with self.assertRaises(asyncq.QueueEmpty):
            q.get_nowait()

    async def test_task_done_called_too_many_times_raises(self):
        q = self.client()
        with self.assertRaises(ValueError):
            q.task_done()
        await q.put(b"x")
        await q.get()
        q.task_done()
        with self.assertRaises(ValueError):
            q.task_done()

    async def test_task_done_names_the_item(self):
        q = self.client(prefetch=1)
        await q.put(b"a")
        await q.put(b"b")
        a, b = await q.get(), await q.get()
        q.task_done(b)
        with self.assertRaises(ValueError):
            q.task_done(b)
        with self.assertRaises(TimeoutError):
            await q.join(timeout=0.2)  # a is still held
        q.task_done(a)
        self.assertEqual((await q.join(timeout=10)).dead, 0)
        self.assertEqual((await q.stats())["acked"], 2)

    async def test_join_with_no_items_returns_at_once_twice(self):
        q = self.client()
        self.assertEqual(await q.join(timeout=5), asyncq.Joined(0, 0))
        self.assertEqual(await q.join(timeout=5), asyncq.Joined(0, 0))
        self.assertEqual(q.qsize(), 0)
        self.assertTrue(q.empty())

    async def test_join_waits_for_task_done(self):
        producer, consumer = self.client(), self.client()
        for i in range(3):
            await producer.put(str(i))
        done = []

        async def worker():
            for _ in range(3):
                item = await consumer.get()
                await asyncio.sleep(0.01)  # the work
                done.append(item)
                consumer.task_done()

        task = asyncio.create_task(worker())
        await producer.join(timeout=30)
        self.assertEqual(len(done), 3)  # join answered only after every task_done
        await task

    async def test_join_returns_when_two_workers_finish_100_items(self):
        producer = self.client()
        workers = [self.client(prefetch=3) for _ in range(2)]
        for i in range(100):
            await producer.send(str(i))
        done = []

        async def work(q):
            while True:
                item = await q.get()
                done.append(item)
                q.task_done(item)

        tasks = [asyncio.create_task(work(q)) for q in workers]
        joined = await producer.join(timeout=30)
        self.assertEqual(len(done), 100)
        self.assertEqual(sorted(int(x) for x in done), list(range(100)))  # each exactly once
        self.assertEqual(joined.dead, 0)
        for task in tasks:
            task.cancel()

    async def test_get_waits_for_put(self):
        q = self.client()
        getter = asyncio.create_task(q.get())
        await self.until_stat("consumers", 1)  # its CREDIT reached the broker
        self.assertFalse(getter.done())
        await self.client().put(b"late")
        self.assertEqual(await asyncio.wait_for(getter, 10), b"late")
        q.task_done()

    async def test_cancelled_get_loses_no_item(self):
        q = self.client()
        getter = asyncio.create_task(q.get())
        await self.until_stat("consumers", 1)  # the get() is waiting
        getter.cancel()
        with self.assertRaises(asyncio.CancelledError):
            await getter
        await self.client().put(b"kept")
        self.assertEqual(await asyncio.wait_for(q.get(), 10), b"kept")
        q.task_done()
        self.assertEqual(await q.join(timeout=10), asyncq.Joined(0, 0))

    async def test_a_get_cancelled_while_the_consumer_opens_keeps_it(self):
        q = self.client(prefetch=1)
        getter = asyncio.create_task(q.get())
        await asyncio.sleep(0)  # one turn: the get() has begun opening the consumer
        getter.cancel()
        with self.assertRaises(asyncio.CancelledError):
            await getter
        await self.until_stat("consumers", 1)  # the opening went on
        await self.client().put(b"sent ahead")
        await self.until_stat("inflight", 1)  # to q, on its prefetch
        self.assertEqual(await asyncio.wait_for(q.get(), 10), b"sent ahead")
        q.task_done()
        self.assertEqual(await q.join(timeout=10), asyncq.Joined(0, 0))

    async def test_items_of_a_closed_client_go_to_another(self):
        first = asyncq.Queue(self.broker.address, self.name, prefetch=1)
        getter = asyncio.create_task(first.get())
        await self.until_stat("consumers", 1)
        getter.cancel()
        await self.client().put(b"held")
        # The item reaches first (its prefetch) but no get() takes it.
        await self.until_stat("inflight", 1)
        await first.close()
        second = self.client()
        item = await asyncio.wait_for(second.get(), 10)
        self.assertEqual((item, item.attempt), (b"held", 2))
        second.task_done()

    async def test_shutdown_then_get_raises(self):
        q = self.client()
        await q.put(b"last")
        self.broker.run("asyncq", "shutdown", "-q", self.name)
        self.assertEqual(await q.get(), b"last")
        q.task_done()
        with self.assertRaises(asyncq.QueueShutDown):
            await asyncio.wait_for(q.get(), 10)
        with self.assertRaises(asyncq.QueueShutDown):
            await q.put(b"refused")


class Maxsize(QueueSemantics):
    broker_flags = ("--maxsize", "1")

    async def until_held(self, q):
        """Waits until the broker said it holds q's puts for this test's
        queue (HELD), which it does only once the queue is full."""
        while q.held is None:
            await asyncio.sleep(0.01)
        self.assertEqual(q.held, self.name)

    async def test_maxsize_makes_put_wait(self):
        q = self.client()
        await q.put(b"first")
        self.assertIsNone(q.held)
        putter = asyncio.create_task(q.put(b"second"))
        await self.until_held(q)
        # The broker holds the put back (its puts counter stays at 1), so
        # put() has not returned.
        self.assertEqual((await self.client().stats())["puts"], 1)
        self.assertFalse(putter.done())
        self.assertEqual(await q.get(), b"first")
        await asyncio.wait_for(putter, 10)  # room again: the put is accepted
        self.assertIsNone(q.held)
        q.task_done()
        self.assertEqual(await q.get(), b"second")
        q.task_done()
        await q.join(timeout=10)

    async def test_blocked_putters_resume_in_order(self):
        q = self.client()
        await q.put(b"0")
        putters = [asyncio.create_task(q.put(str(i))) for i in range(1, 4)]
        got = []
        for _ in range(4):
            got.append(await q.get())
            q.task_done()
        await asyncio.gather(*putters)
        self.assertEqual(got, [b"0", b"1", b"2", b"3"])

    async def test_cancelled_and_retried_put_lands_once(self):
        q = self.client()
        await q.put(b"a")
        with self.assertRaises(asyncio.TimeoutError):
            await asyncio.wait_for(q.put(b"b"), 0.2)  # the queue is full
        retry = asyncio.create_task(q.put(b"b"))
        self.assertEqual(await q.get(), b"a")
        q.task_done()
        await asyncio.wait_for(retry, 10)
        self.assertEqual(await q.get(), b"b")
        q.task_done()
        await q.join(timeout=10)
        self.assertEqual((await q.stats())["puts"], 2)  # not 3

    async def test_shutdown_wakes_a_blocked_putter(self):
        q = self.client()
        await q.put(b"x")
        putter = asyncio.create_task(q.put(b"y"))
        await self.until_held(q)
        self.broker.run("asyncq", "shutdown", "-q", self.name)
        with self.assertRaises(asyncq.QueueShutDown):
            await asyncio.wait_for(putter, 10)
        self.assertEqual(await q.get(), b"x")  # what was queued drains
        q.task_done()
        with self.assertRaises(asyncq.QueueShutDown):
            await asyncio.wait_for(q.get(), 10)


if __name__ == "__main__":
    unittest.main()
