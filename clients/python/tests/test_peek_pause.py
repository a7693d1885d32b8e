"""peek(), pause() and resume() (PROTOCOL.md 4.14, broker 2.2) against the
real broker, and the parser of a PEEK line on crafted lines."""
import asyncio
import unittest

from broker import AsyncCase, Broker, BrokerTestCase, Keys

import asyncq
from asyncq.protocol import parse_peeked


class PeekPause(BrokerTestCase):

    async def test_peek_shows_what_comes_next_and_takes_nothing(self):
        q = self.client()
        self.assertEqual(await q.peek(), [])  # a queue the broker does not have
        long = b'a "long" \\ one\x00\xff' + b"x" * 100
        await q.put(b"first")
        await q.put(long)
        await q.put(b"urgent", priority=-1)
        await q.put(b"later", delay=3600)  # delayed: not next, not shown
        peeked = await q.peek()
        self.assertTrue(all(isinstance(item, asyncq.PeekedItem) for item in peeked))
        self.assertEqual([(item.payload, item.payload_cut, item.size, item.priority,
                           item.attempts) for item in peeked],
                         [(b"urgent", False, 6, -1, 0), (b"first", False, 5, 0, 0),
                          (long[:64], True, len(long), 0, 0)])
        self.assertTrue(all(0 <= item.age < 60 for item in peeked))
        self.assertEqual([item.payload for item in await q.peek(2)], [b"urgent", b"first"])
        self.assertEqual([item.id for item in await q.peek(1)], [peeked[0].id])
        stats = await q.stats()
        self.assertEqual((stats["queued"], stats["inflight"], stats["delivered"]), (3, 0, 0))
        got = [await q.get() for _ in range(3)]  # in the order peek showed, the same ids
        self.assertEqual([(item.id, bytes(item)) for item in got],
                         [(item.id, payload) for item, payload in
                          zip(peeked, (b"urgent", b"first", long))])
        self.assertEqual(await q.peek(), [])  # in flight: not shown
        for item in got:
            q.task_done(item)
        for n in (0, 1025):
            with self.assertRaises(ValueError):
                await q.peek(n)
        with self.assertRaises(TypeError):
            await q.peek("3")

    async def test_pause_stops_deliveries_and_resume_delivers(self):
        admin, consumer = self.client(), self.client()
        stats = await admin.pause()  # before the queue has any item: it is made
        self.assertEqual((stats["queue"], stats["paused"]), (self.name, 1))
        await admin.put(b"held back")
        self.assertEqual((await admin.stats())["paused"], 1)
        with self.assertRaises(asyncio.TimeoutError):
            await asyncio.wait_for(consumer.get(), 0.3)  # paused: nothing comes
        self.assertEqual([item.payload for item in await consumer.peek()], [b"held back"])
        waiting = asyncio.ensure_future(consumer.get())
        stats = await admin.resume()
        self.assertEqual((stats["paused"], stats["queued"] + stats["inflight"]), (0, 1))
        item = await asyncio.wait_for(waiting, 10)
        self.assertEqual(item, b"held back")
        consumer.task_done(item)
        self.assertEqual((await admin.join(timeout=10)).dead, 0)
        self.assertEqual((await admin.resume())["paused"], 0)  # not paused: as it is

    async def test_the_blocking_client_does_the_same(self):
        def run():
            with asyncq.BlockingQueue(self.broker.address, self.name) as q:
                self.assertEqual(q.pause()["paused"], 1)
                q.put(b"x", priority=5)
                q.put(b"y", priority=-5)
                self.assertEqual([item.payload for item in q.peek()], [b"y", b"x"])
                with self.assertRaises(TimeoutError):
                    q.get(timeout=0.2)
                self.assertEqual(q.resume()["paused"], 0)
                self.assertEqual(q.get(timeout=10), b"y")
                q.task_done()
        await asyncio.to_thread(run)


class PauseWithKeys(AsyncCase):
    @classmethod
    def setUpClass(cls):
        cls.keys = Keys()
        cls.worker = cls.keys.make("worker", "produce,consume", allow=True)
        cls.producer = cls.keys.make("producer", "produce", allow=True)
        cls.admin = cls.keys.make("admin", "admin", allow=True)
        cls.broker = Broker(*cls.keys.broker_flags())

    @classmethod
    def tearDownClass(cls):
        cls.broker.stop()
        cls.keys.remove()

    def client(self, secret):
        return asyncq.Queue(self.broker.address, "keyed", curve_secret=secret,
                            server_key=self.keys.public("broker"))

    async def test_pause_needs_admin_and_peek_consume_or_admin(self):
        worker, producer, admin = (self.client(self.worker), self.client(self.producer),
                                   self.client(self.admin))
        try:
            await worker.put(b"x")
            for call in (worker.pause, worker.resume, producer.pause, producer.peek):
                with self.assertRaisesRegex(asyncq.BrokerError, r"^403 FORBIDDEN: .+") as caught:
                    await call()
                self.assertEqual(caught.exception.code, 403)
            self.assertEqual((await worker.stats()).get("paused"), 0)  # nothing changed
            self.assertEqual([item.payload for item in await worker.peek()], [b"x"])
            self.assertEqual([item.payload for item in await admin.peek()], [b"x"])
            self.assertEqual((await admin.pause())["paused"], 1)
            self.assertEqual((await admin.resume())["paused"], 0)
            item = await worker.get()
            worker.task_done(item)
        finally:
            for client in (worker, producer, admin):
                await client.close()


class Parser(unittest.TestCase):
    def test_the_documented_line(self):
        line = b'id=4294967299 attempts=0 size=6 priority=-1 age_ms=5 payload="urgent"'
        self.assertEqual(parse_peeked(line), asyncq.PeekedItem(
            id=4294967299, attempts=0, size=6, priority=-1, age=0.005, payload=b"urgent",
            payload_cut=False))

    def test_escapes_cuts_and_unknown_fields(self):
        line = (b'id=7 attempts=2 size=90 priority=2147483647 age_ms=1500 lease_ms=10 '
                b'payload="\\"a\\" \\\\ \\x00\\xff x=y"... later="z" flag')
        self.assertEqual(parse_peeked(line), asyncq.PeekedItem(
            id=7, attempts=2, size=90, priority=2**31 - 1, age=1.5,
            payload=b'"a" \\ \x00\xff x=y', payload_cut=True))

    def test_a_line_without_its_numbers_is_an_error(self):
        for line in (b"id=1 attempts=0 size=0 age_ms=1",
                     b"id=1 attempts=0 size=0 priority=x age_ms=1",
                     b'id=1 attempts=0 size=0 priority=0 age_ms=1 payload="open'):
            with self.assertRaises(ValueError):
                parse_peeked(line)


if __name__ == "__main__":
    unittest.main()
