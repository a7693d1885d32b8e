"""A queue's life (PROTOCOL.md 4.13): reopen() after a shutdown, purge()
and delete(), against the real broker; consumers told the queue was shut
down or deleted consume again once it is open; a queue the broker does not
have; 403 without the admin role; 503 for reopen() while the broker stops."""
import asyncio
import signal
import time
import unittest

from broker import AsyncCase, Broker, BrokerTestCase, Keys

import asyncq

WAIT = 10  # seconds: a condition that never comes fails the test, not hangs it


class Lifecycle(BrokerTestCase):
    broker_flags = ("--max-attempts", "1")  # a nacked item dies

    async def until_stats(self, q, condition):
        """Waits until condition(stats) holds; returns those stats."""
        deadline = time.monotonic() + WAIT
        while not condition(stats := await q.stats()):
            if time.monotonic() > deadline:
                raise AssertionError(f"stats never matched: {stats}")
            await asyncio.sleep(0.01)
        return stats

    async def waiting_get(self, q, admin, consumers=1):
        """A get() of q, once the broker counts q as a consumer."""
        getter = asyncio.ensure_future(q.get())
        await self.until_stats(admin, lambda s: s.get("consumers") == consumers)
        return getter

    async def test_reopen_by_the_client_told_it_was_shut_down(self):
        q = self.client()
        getter = await self.waiting_get(q, q)
        self.assertEqual((await q.shutdown())["state"], "draining")
        with self.assertRaises(asyncq.QueueShutDown):
            await asyncio.wait_for(getter, WAIT)
        with self.assertRaises(asyncq.QueueShutDown):
            await q.put(b"refused")
        with self.assertRaises(asyncq.QueueShutDown):
            await asyncio.wait_for(q.get(), WAIT)  # asked again: still shut down
        self.assertIsNone(await q.reopen())
        self.assertEqual((await q.stats())["state"], "open")
        await q.put(b"again")
        self.assertEqual(await asyncio.wait_for(q.get(), WAIT), b"again")
        q.task_done()
        self.assertEqual(await q.join(timeout=WAIT), (0, 0))  # its ack went first

    async def test_reopen_by_another_client_lets_a_told_consumer_consume_again(self):
        worker, admin = self.client(), self.client()
        getters = [asyncio.ensure_future(worker.get()) for _ in range(2)]
        await self.until_stats(admin, lambda s: s.get("consumers") == 1)
        await admin.shutdown(immediate=True)
        for getter in getters:
            with self.assertRaises(asyncq.QueueShutDown):
                await asyncio.wait_for(getter, WAIT)
        await admin.reopen()
        await admin.put(b"one")
        await admin.put(b"two")
        # The broker kept the worker's credit (two get()s were waiting):
        # both go to it; its get()s hand them out, the notice out of date.
        got = [await asyncio.wait_for(worker.get(), WAIT) for _ in range(2)]
        self.assertEqual(sorted(got), [b"one", b"two"])
        for item in got:
            worker.task_done(item)
        self.assertEqual(await worker.join(timeout=WAIT), (0, 0))

    async def test_a_told_consumer_asks_again_on_its_next_get(self):
        worker, admin = self.client(), self.client()
        getter = await self.waiting_get(worker, admin)
        await admin.shutdown()
        with self.assertRaises(asyncq.QueueShutDown):
            await asyncio.wait_for(getter, WAIT)
        await admin.reopen()
        late = asyncio.ensure_future(worker.get())  # asks: open, so it waits
        await self.until_stats(admin, lambda s: s["state"] == "open")
        self.assertFalse(late.done())
        await admin.put(b"after")
        self.assertEqual(await asyncio.wait_for(late, WAIT), b"after")
        worker.task_done()

    async def test_reopen_of_an_open_queue_changes_nothing(self):
        q = self.client()
        await q.put(b"kept")
        await q.reopen()
        stats = await q.stats()
        self.assertEqual((stats["state"], stats["queued"]), ("open", 1))

    async def test_purge_discards_queued_and_delayed_items_and_joins_count_them(self):
        q, admin = self.client(), self.client()
        await q.put(b"taken")
        taken = await asyncio.wait_for(q.get(), WAIT)       # in flight: stays
        for i in range(3):
            await admin.put(f"queued-{i}")
        await admin.put(b"delayed", delay=3600)
        await admin.put(b"at", at=time.time() + 3600)
        join = asyncio.ensure_future(admin.join())
        await self.until_stats(admin, lambda s: s["joiners"] == 1)
        self.assertEqual(await admin.purge(), 5)
        stats = await admin.stats()
        self.assertEqual((stats["queued"], stats["delayed"], stats["inflight"],
                          stats["discarded"], stats["state"]), (0, 0, 1, 5, "open"))
        self.assertFalse(join.done())  # the item in flight is still outstanding
        q.task_done(taken)
        self.assertEqual(await asyncio.wait_for(join, WAIT), (6, 0))
        self.assertEqual(await admin.join(timeout=WAIT), (0, 0))
        self.assertEqual(await admin.purge(), 0)
        await admin.put(b"still open")
        self.assertEqual(await asyncio.wait_for(q.get(), WAIT), b"still open")
        q.task_done()

    async def test_delete_discards_everything_and_tells_consumers_and_joins(self):
        worker, admin = self.client(), self.client()
        await admin.put(b"dies")
        await worker.nack(await asyncio.wait_for(worker.get(), WAIT), reason="bad")
        await self.until_stats(admin, lambda s: s["dead"] == 1)
        await admin.put(b"in flight")
        held = await asyncio.wait_for(worker.get(), WAIT)
        await admin.put(b"delayed", delay=3600)
        getter = asyncio.ensure_future(worker.get())  # waits: nothing is ready
        join = asyncio.ensure_future(admin.join())
        await self.until_stats(admin, lambda s: s["joiners"] == 1 and s["inflight"] == 1)
        self.assertEqual(await admin.delete(), 3)  # dead, in flight, delayed
        with self.assertRaisesRegex(asyncq.QueueShutDown, "^503 SHUT_DOWN"):
            await asyncio.wait_for(getter, WAIT)
        with self.assertRaises(asyncq.QueueShutDown):
            await asyncio.wait_for(join, WAIT)
        worker.task_done(held)  # discarded: the broker answers 404
        # Neither the ack nor the credit it changes makes the queue anew
        # (STATS on the worker's session comes after them).
        self.assertEqual(await worker.stats(), {})
        with self.assertRaises(asyncq.QueueShutDown):
            await asyncio.wait_for(worker.get(), WAIT)  # asked again: none
        self.assertEqual(await admin.stats(), {})
        self.assertEqual(await admin.dead_letters(), [])
        # A put makes a new, empty, open queue.
        await admin.put(b"fresh")
        stats = await admin.stats()
        self.assertEqual((stats["queued"], stats["puts"], stats["state"], stats["consumers"],
                          stats["discarded"]), (1, 1, "open", 0, 0))
        # The told worker consumes from it on its next get().
        self.assertEqual(await asyncio.wait_for(worker.get(), WAIT), b"fresh")
        worker.task_done()
        self.assertEqual(await worker.join(timeout=WAIT), (0, 0))
        self.assertEqual([error.code for error in worker.errors], [404])

    async def test_delete_by_the_consuming_client_then_a_put_and_get(self):
        q = self.client()
        getter = await self.waiting_get(q, q)
        self.assertEqual(await q.delete(), 0)
        with self.assertRaises(asyncq.QueueShutDown):
            await asyncio.wait_for(getter, WAIT)
        await q.put(b"anew")
        self.assertEqual(await asyncio.wait_for(q.get(), WAIT), b"anew")
        q.task_done()
        self.assertEqual(await q.join(timeout=WAIT), (0, 0))

    async def test_a_queue_the_broker_does_not_have(self):
        q = self.client()
        self.assertIsNone(await q.reopen())
        self.assertEqual(await q.purge(), 0)
        self.assertEqual(await q.delete(), 0)
        self.assertEqual(await q.stats(), {})  # nothing was made

    async def test_the_blocking_client_does_the_same(self):
        def run():
            with asyncq.BlockingQueue(self.broker.address, self.name) as q:
                self.assertEqual((q.purge(), q.delete()), (0, 0))
                self.assertIsNone(q.reopen())
                q.put(b"a")
                q.put(b"b", delay=3600)
                self.assertEqual(q.purge(), 2)
                q.shutdown()
                with self.assertRaises(asyncq.QueueShutDown):
                    q.get(timeout=WAIT)
                q.reopen()
                q.put(b"c")
                self.assertEqual(q.get(timeout=WAIT), b"c")
                q.task_done()
                q.put(b"d")
                self.assertEqual(q.delete(), 1)
                self.assertEqual(q.stats(), {})
        await asyncio.to_thread(run)


class LifecycleWithKeys(AsyncCase):
    @classmethod
    def setUpClass(cls):
        cls.keys = Keys()
        cls.worker = cls.keys.make("worker", "produce,consume", allow=True)
        cls.admin = cls.keys.make("admin", "produce,consume,admin", allow=True)
        cls.broker = Broker(*cls.keys.broker_flags())

    @classmethod
    def tearDownClass(cls):
        cls.broker.stop()
        cls.keys.remove()

    async def test_without_the_admin_role_each_raises_403(self):
        options = dict(server_key=self.keys.public("broker"))
        worker = asyncq.Queue(self.broker.address, "keyed", curve_secret=self.worker, **options)
        admin = asyncq.Queue(self.broker.address, "keyed", curve_secret=self.admin, **options)
        try:
            await worker.put(b"x")
            for call in (worker.reopen, worker.purge, worker.delete):
                with self.assertRaisesRegex(asyncq.BrokerError, r"^403 FORBIDDEN: .+") as caught:
                    await call()
                self.assertEqual(caught.exception.code, 403)
            self.assertEqual((await worker.stats())["queued"], 1)  # nothing changed
            await worker.put(b"y")  # the session goes on
            self.assertEqual(await admin.purge(), 2)
            await admin.shutdown()
            await admin.reopen()
            await worker.put(b"z")
            self.assertEqual(await admin.delete(), 1)
        finally:
            await worker.close()
            await admin.close()


class ReopenWhileStopping(AsyncCase):
    async def test_reopen_while_the_broker_stops_raises_503(self):
        broker = Broker("--drain-ms", "60000")
        q = asyncq.Queue(broker.address, "stopping")
        try:
            await q.put(b"keeps it draining")
            broker.process.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + WAIT
            while True:  # until the broker refuses puts: it is stopping
                try:
                    await q.put(b"before the signal")
                except asyncq.QueueShutDown:
                    break
                self.assertLess(time.monotonic(), deadline)
            with self.assertRaisesRegex(asyncq.QueueShutDown, "^503 SHUT_DOWN") as caught:
                await q.reopen()
            self.assertEqual(caught.exception.code, 503)
        finally:
            broker.stop()
            await q.close(timeout=1)


if __name__ == "__main__":
    unittest.main()
