"""The dead-letter API (PROTOCOL.md 4.12, DEAD): dead_letters(),
requeue_dead() (all, or by id), delete_dead() and purge_dead(), against the real broker with
--max-attempts 1 (an item dies at its first failed delivery), and the
parser of a DEAD list line on crafted lines."""
import asyncio
import dataclasses
import datetime
import os
import unittest

from broker import AsyncCase, Broker, BrokerTestCase, Keys

import asyncq
from asyncq.protocol import parse_dead_letter

UTC = datetime.timezone.utc


def now_ms():
    """Now, cut to the millisecond as the broker writes `died`."""
    now = datetime.datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


class DeadLetters(BrokerTestCase):
    broker_flags = ("--max-attempts", "1")

    async def until_dead(self, q, count):
        """Waits (10 s at most) until the queue has count dead items; returns them."""
        async def poll():
            while len(letters := await q.dead_letters()) != count:
                await asyncio.sleep(0.01)
            return letters
        return await asyncio.wait_for(poll(), 10)

    async def test_an_empty_list(self):
        q = self.client()
        self.assertEqual(await q.dead_letters(), [])  # a queue the broker does not know
        await q.put(b"alive")
        item = await q.get()
        q.task_done(item)
        await q.join(timeout=10)
        self.assertEqual(await q.dead_letters(), [])
        self.assertEqual(await q.requeue_dead(), 0)
        self.assertEqual(await q.purge_dead(), 0)

    async def test_nacked_items_show_their_reason_and_payload_exact(self):
        q = self.client()
        reasons = ['exit 3: "quoted" \\ é', ""]
        payloads = [b'hello "world" \\ \x00\xff', b""]
        for payload in payloads:
            await q.put(payload)
        before = now_ms()
        items = []
        for reason in reasons:
            item = await q.get()
            items.append(item)
            await q.nack(item, reason=reason)
        letters = await q.dead_letters()
        after = datetime.datetime.now(UTC)
        self.assertEqual(len(letters), 2)
        for letter, item, payload, reason in zip(letters, items, payloads, reasons):
            self.assertIsInstance(letter, asyncq.DeadLetter)
            self.assertTrue(before <= letter.died <= after, (before, letter.died, after))
            self.assertEqual(letter.died.tzinfo, UTC)
            self.assertEqual(letter, asyncq.DeadLetter(
                id=item.id, attempts=1, size=len(payload), died=letter.died, cause="nack",
                reason=reason, reason_cut=False, payload=payload, payload_cut=False))
        self.assertEqual((await q.stats())["dead"], 2)

    async def test_a_long_reason_and_payload_are_cut(self):
        q = self.client()
        payload = bytes(range(100))
        await q.put(payload)
        await q.put(bytes(range(32)))            # exactly what is shown: not cut
        first = await q.get()
        await q.nack(first, reason="é" + "r" * 298)  # 300 bytes
        second = await q.get()
        await q.nack(second, reason="s" * 150)
        cut, whole = await q.dead_letters()
        self.assertEqual((cut.id, cut.size, cut.payload, cut.payload_cut),
                         (first.id, 100, payload[:32], True))
        self.assertEqual((cut.reason, cut.reason_cut), ("é" + "r" * 148, True))
        self.assertEqual((whole.id, whole.size, whole.payload, whole.payload_cut),
                         (second.id, 32, bytes(range(32)), False))
        self.assertEqual((whole.reason, whole.reason_cut), ("s" * 150, False))

    async def test_an_item_whose_lease_ran_out(self):
        q = self.client()
        await q.put(b"slow", lease=0.2)
        before = now_ms()
        item = await q.get()
        [letter] = await self.until_dead(q, 1)
        self.assertEqual((letter.id, letter.attempts, letter.cause, letter.reason,
                          letter.reason_cut, letter.payload, letter.payload_cut),
                         (item.id, 1, "lease", "", False, b"slow", False))
        self.assertTrue(before <= letter.died <= datetime.datetime.now(UTC))

    async def test_an_item_whose_consumer_session_ended(self):
        consumer, watcher = self.client(), self.client()
        await watcher.put(b"held")
        item = await consumer.get()
        await consumer.close()  # BYE: the item it held goes back, and dies
        [letter] = await self.until_dead(watcher, 1)
        self.assertEqual((letter.id, letter.attempts, letter.cause, letter.payload),
                         (item.id, 1, "session", b"held"))

    async def test_requeue_dead_puts_them_back(self):
        q = self.client()
        for payload in (b"one", b"two"):
            await q.put(payload)
        ids = []
        for _ in range(2):
            item = await q.get()
            ids.append(item.id)
            await q.nack(item, reason="failed")
        self.assertEqual([letter.id for letter in await q.dead_letters()], ids)
        self.assertEqual(await q.requeue_dead(), 2)
        self.assertEqual(await q.dead_letters(), [])
        again = [await q.get(), await q.get()]
        self.assertEqual(again, [b"one", b"two"])
        self.assertEqual([item.attempt for item in again], [1, 1])
        for item in again:
            q.task_done(item)
        self.assertEqual(await q.join(timeout=10), asyncq.Joined(0, 0))
        stats = await q.stats()
        self.assertEqual((stats["dead"], stats["queued"]), (0, 0))

    async def test_purge_dead_deletes_them(self):
        q = self.client()
        for payload in (b"a", b"b", b"c"):
            await q.put(payload)
            await q.nack(await q.get(), reason="no")
        self.assertEqual(len(await q.dead_letters()), 3)
        self.assertEqual(await q.purge_dead(), 3)
        self.assertEqual(await q.dead_letters(), [])
        self.assertEqual(await q.purge_dead(), 0)
        self.assertEqual(await q.requeue_dead(), 0)
        stats = await q.stats()
        self.assertEqual((stats["dead"], stats["queued"]), (0, 0))

    async def test_requeue_and_delete_by_id_all_or_none(self):
        q = self.client()
        for payload in (b"one", b"two", b"three"):
            await q.put(payload)
            await q.nack(await q.get(), reason="failed")
        one, two, three = await q.dead_letters()
        unknown = 2**64 - 1
        for call in (q.requeue_dead, q.delete_dead):
            with self.assertRaises(asyncq.BrokerError) as caught:
                await call([one, unknown, two.id])
            self.assertEqual((caught.exception.code, caught.exception.ids), (404, (unknown,)))
        self.assertEqual(await q.dead_letters(), [one, two, three])  # nothing changed
        self.assertEqual((await q.stats())["queued"], 0)
        self.assertEqual(await q.requeue_dead([two, two.id]), 1)  # named twice: once
        self.assertEqual(await q.delete_dead([three.id]), 1)
        self.assertEqual(await q.dead_letters(), [one])
        # Requeued already, and deleted: neither is a dead item any more.
        with self.assertRaises(asyncq.BrokerError) as caught:
            await q.delete_dead([one, two, three])
        self.assertEqual(sorted(caught.exception.ids), sorted([two.id, three.id]))
        self.assertEqual(await q.dead_letters(), [one])
        again = await q.get()
        self.assertEqual((again, again.id, again.attempt), (b"two", two.id, 1))
        q.task_done(again)
        self.assertEqual(await q.delete_dead([]), 0)  # none named: nothing
        self.assertEqual(await q.requeue_dead([]), 0)  # an empty choice: nothing
        with self.assertRaises(TypeError):
            await q.requeue_dead(one)  # one item, not a list of them
        self.assertEqual(await q.requeue_dead(), 1)  # no argument: all (one)
        stats = await q.stats()
        self.assertEqual((stats["dead"], stats["queued"] + stats["inflight"]), (0, 1))

    async def test_more_ids_than_one_request_takes_are_refused_before_sending(self):
        q = self.client()
        await q.put(b"x")
        await q.nack(await q.get())
        [letter] = await q.dead_letters()
        many = [letter.id] + [2**64 - 1 - n for n in range(60)]  # 20 digits each: > 1024 bytes
        for call in (q.requeue_dead, q.delete_dead):
            with self.assertRaisesRegex(ValueError, r"at most 1024"):
                await call(many)
            with self.assertRaises(TypeError):
                await call([str(letter.id)])
        self.assertEqual(await q.dead_letters(), [letter])
        fits = [letter.id] + [2**64 - 1 - n for n in range(47)]  # 8 + 48 * 21 - 1 bytes
        with self.assertRaises(asyncq.BrokerError) as caught:
            await q.delete_dead(fits)
        self.assertEqual(len(caught.exception.ids), 47)
        self.assertEqual(await q.delete_dead([letter]), 1)

    async def test_dead_letter_gives_one_whole_payload_however_large(self):
        q = self.client()
        large = os.urandom(1_000_000)  # more than one answer holds (785 664 bytes)
        for payload in (large, b"", b"small \x00\xff"):
            await q.put(payload)
        for _ in range(3):
            await q.nack(await asyncio.wait_for(q.get(), 10), reason="bad")
        letters = await self.until_dead(q, 3)
        for letter, payload in zip(letters, (large, b"", b"small \x00\xff")):
            whole = await q.dead_letter(letter)
            self.assertEqual(whole.payload, payload)
            self.assertFalse(whole.payload_cut)
            self.assertEqual(whole, dataclasses.replace(letter, payload=payload,
                                                        payload_cut=False))
        self.assertEqual((await q.dead_letter(letters[2].id)).payload, b"small \x00\xff")
        # An id that is not a dead item here: 404 naming it, nothing changed.
        unknown = max(letter.id for letter in letters) + 1000
        with self.assertRaisesRegex(asyncq.BrokerError, r"^404 ") as caught:
            await q.dead_letter(unknown)
        self.assertIn(str(unknown), str(caught.exception))
        with self.assertRaises(TypeError):
            await q.dead_letter("12")
        self.assertEqual(len(await q.dead_letters()), 3)
        self.assertEqual(await q.purge_dead(), 3)

    async def test_the_blocking_client_does_the_same(self):
        def run():
            with asyncq.BlockingQueue(self.broker.address, self.name) as q:
                q.put(b"x")
                item = q.get(timeout=10)
                q.nack(item, reason="blocked")
                [letter] = q.dead_letters()
                self.assertEqual((letter.id, letter.cause, letter.reason, letter.payload),
                                 (item.id, "nack", "blocked", b"x"))
                self.assertEqual(q.requeue_dead([letter]), 1)
                q.nack(q.get(timeout=10))
                [letter] = q.dead_letters()
                self.assertEqual(q.dead_letter(letter.id).payload, b"x")
                self.assertEqual(q.delete_dead([letter.id]), 1)
                q.put(b"y")
                q.nack(q.get(timeout=10))
                self.assertEqual(q.purge_dead(), 1)
                self.assertEqual(q.dead_letters(), [])
        await asyncio.to_thread(run)


class DeadLettersWithKeys(AsyncCase):
    @classmethod
    def setUpClass(cls):
        cls.keys = Keys()
        cls.worker = cls.keys.make("worker", "produce,consume", allow=True)
        cls.admin = cls.keys.make("admin", "produce,consume,admin", allow=True)
        cls.broker = Broker("--max-attempts", "1", *cls.keys.broker_flags())

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
            await worker.nack(await worker.get(), reason="bad")
            for call in (worker.dead_letters, worker.requeue_dead, worker.purge_dead):
                with self.assertRaisesRegex(asyncq.BrokerError, r"^403 FORBIDDEN: .+") as caught:
                    await call()
                self.assertEqual(caught.exception.code, 403)
            [letter] = await admin.dead_letters()
            for by_id in (worker.requeue_dead, worker.delete_dead):
                with self.assertRaisesRegex(asyncq.BrokerError, r"^403 FORBIDDEN: .+"):
                    await by_id([letter])
            self.assertEqual((letter.cause, letter.reason), ("nack", "bad"))
            self.assertEqual(await admin.purge_dead(), 1)
        finally:
            await worker.close()
            await admin.close()


class Parser(unittest.TestCase):
    def test_the_documented_line(self):
        line = (b'id=4294967296 attempts=2 size=13 died=2026-12-04T23:50:34.970Z cause=nack '
                b'reason="exit 3" payload="hello \\"world\\""')
        self.assertEqual(parse_dead_letter(line), asyncq.DeadLetter(
            id=4294967296, attempts=2, size=13,
            died=datetime.datetime(2026, 12, 4, 23, 50, 34, 970000, tzinfo=UTC), cause="nack",
            reason="exit 3", reason_cut=False, payload=b'hello "world"', payload_cut=False))

    def test_escapes_cuts_and_unknown_fields(self):
        line = (b'id=7 attempts=5 size=40 died=unknown cause=oom '
                b'reason="a \\"b\\" \\\\ \\xc3\\xa9 \\xff"... shard=3 '
                b'payload="\\x00\\x01 x=y"... note="spaces, = and \\"quotes\\"" flag'
                b' later=1')
        self.assertEqual(parse_dead_letter(line), asyncq.DeadLetter(
            id=7, attempts=5, size=40, died=None, cause="oom",
            reason='a "b" \\ é \ufffd', reason_cut=True, payload=b"\x00\x01 x=y",
            payload_cut=True))

    def test_only_the_numbers(self):
        letter = parse_dead_letter(b"id=1 attempts=0 size=0")
        self.assertEqual((letter.died, letter.cause, letter.reason, letter.payload),
                         (None, "unknown", "", b""))

    def test_a_line_without_id_is_an_error(self):
        for line in (b"attempts=1 size=2", b"id=x attempts=1 size=2", b'id=1 reason="open'):
            with self.assertRaises(ValueError):
                parse_dead_letter(line)

    def test_it_is_frozen(self):
        letter = parse_dead_letter(b"id=1 attempts=0 size=0")
        with self.assertRaises(AttributeError):
            letter.id = 2


if __name__ == "__main__":
    unittest.main()
