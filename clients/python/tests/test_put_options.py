"""Put options (PROTOCOL.md 4.1): priority, delay, at and LifoQueue's front,
against the real C broker. Times are checked as "not before": the broker
counts a delay in whole milliseconds of its wall clock, so an item may come
up to a millisecond before its delay has passed since the put was sent
(SLACK); never a "within N ms" check, which a loaded machine would fail."""
import asyncio
import datetime
import random
import struct
import time
import unittest
from unittest import mock

import zmq
import zmq.asyncio

from broker import AsyncCase, Broker, BrokerTestCase

import asyncq

SLACK = 0.002  # seconds: the broker's millisecond clock, and float rounding


class OptionsTest(BrokerTestCase):

    async def get_all(self, q, count):
        got = []
        for _ in range(count):
            got.append(bytes(await asyncio.wait_for(q.get(), 10)))
            q.task_done()
        return got

    def record(self, q):
        """Records the messages q's producer sends (its PUSH socket is
        open: q has put once)."""
        push, sent = q._producer._push, []
        send = push.send

        def recording(frames):
            sent.append(list(frames))
            return send(frames)

        patcher = mock.patch.object(push, "send", recording)
        patcher.start()
        self.addCleanup(patcher.stop)
        return sent


def unpack_each(frame):
    """The (options, payload) entries of a PUTS items frame sent with the
    options frame `each` (PROTOCOL.md 4.1); fails on a frame that is not one."""
    entries, at = [], 0
    while at < len(frame):
        options = frame[at + 1:at + 1 + frame[at]]
        at += 1 + frame[at]
        (length,) = struct.unpack_from(">I", frame, at)
        at += 4
        entries.append((options, frame[at:at + length]))
        at += length
    assert at == len(frame), "entries run past the frame"
    return entries


def unpack_plain(frame):
    """The payloads of a PUTS items frame without `each`."""
    payloads, at = [], 0
    while at < len(frame):
        (length,) = struct.unpack_from(">I", frame, at)
        payloads.append(frame[at + 4:at + 4 + length])
        at += 4 + length
    assert at == len(frame), "entries run past the frame"
    return payloads


def puts_of(sent):
    """Each message sent as (command, first seq, count, options frame or
    None, [(options, payload)]): a put's options as they reach the broker."""
    shapes = []
    for frames in sent:
        if frames[1] == b"PUT":
            options = frames[7] if len(frames) == 8 else None
            shapes.append((b"PUT", int(frames[3]), 1, options, [(options or b"", frames[6])]))
            continue
        assert frames[1] == b"PUTS" and len(frames) in (8, 9), frames[:2]
        options = frames[8] if len(frames) == 9 else None
        count = int(frames[4])
        if options == b"each":
            entries = unpack_each(frames[7])
        else:
            entries = [(options or b"", payload) for payload in unpack_plain(frames[7])]
        assert len(entries) == count, (count, entries)
        shapes.append((b"PUTS", int(frames[3]), count, options, entries))
    return shapes


class PriorityQueueTest(OptionsTest):
    """asyncq.PriorityQueue as asyncio.PriorityQueue: put((priority, item)),
    get() -> (priority, item), lowest first, FIFO within one."""

    async def test_pairs_in_and_out_lowest_first(self):
        q = self.client(asyncq.PriorityQueue)
        await q.put((5, b"five"))
        await q.put((-1, "minus one"))
        await q.put(b"three", priority=3)
        await q.put(b"zero")  # no priority: 0
        await q.put((-1, b"minus one again"))
        await q.put((2**31 - 1, b"max"))
        await q.put((-2**31, b"min"))
        got = []
        for _ in range(7):
            pair = await asyncio.wait_for(q.get(), 10)
            priority, item = pair
            self.assertIsInstance(item, asyncq.Item)
            self.assertEqual(item.priority, priority)
            got.append((priority, bytes(item)))
            q.task_done(pair)  # the pair, as asyncio code hands it back
        self.assertEqual(got, [(-2**31, b"min"), (-1, b"minus one"), (-1, b"minus one again"),
                               (0, b"zero"), (3, b"three"), (5, b"five"), (2**31 - 1, b"max")])
        self.assertEqual(await q.join(timeout=10), asyncq.Joined(0, 0))

    async def test_batches_carry_every_items_priority(self):
        """With prefetch the broker sends ITEMS of many items, with a
        priorities frame; each item gets its own."""
        producer = self.client()
        plan = [random.Random(3).randint(-3, 3) for _ in range(200)]
        for i, priority in enumerate(plan):
            await producer.send(str(i), priority=priority)
        await producer.flush()
        q = self.client(asyncq.PriorityQueue, prefetch=63)
        got = [await asyncio.wait_for(q.get(), 10) for _ in range(200)]
        for priority, item in got:
            self.assertEqual(priority, plan[int(item)])
            q.task_done(item)
        self.assertEqual([priority for priority, _ in got], sorted(plan))
        self.assertEqual(await q.join(timeout=10), asyncq.Joined(0, 0))

    async def test_get_nowait_and_a_plain_queue(self):
        q = self.client(asyncq.PriorityQueue, prefetch=4)
        with self.assertRaises(asyncq.QueueEmpty):
            q.get_nowait()
        await q.put((2, b"b"))
        await q.put((1, b"a"))
        first = await asyncio.wait_for(q.get(), 10)
        self.assertEqual(first, (1, b"a"))
        q.task_done()
        # A plain Queue's items say nothing of priorities unless asked.
        plain = self.client()
        await plain.put(b"c", priority=7)
        await q.close()
        self.clients.remove(q)
        items = [await asyncio.wait_for(plain.get(), 10) for _ in range(2)]
        self.assertEqual([(bytes(item), item.priority) for item in items],
                         [(b"b", None), (b"c", None)])
        asked = self.client(priorities=True)
        await asked.put(b"d", priority=-4)
        item = await asyncio.wait_for(asked.get(), 10)
        self.assertEqual((bytes(item), item.priority), (b"d", -4))

    async def test_bad_pairs_are_refused_before_sending(self):
        q = self.client(asyncq.PriorityQueue)
        for bad in [(1, 2, b"x"), ("1", b"x"), (True, b"x"), (1.5, b"x")]:
            with self.assertRaises(TypeError):
                await q.put(bad)
        with self.assertRaisesRegex(TypeError, "twice"):
            await q.put((1, b"x"), priority=2)
        with self.assertRaises(ValueError):
            await q.put((2**31, b"x"))
        await q.put((1, b"ok"))
        self.assertEqual(await asyncio.wait_for(q.get(), 10), (1, b"ok"))
        q.task_done()


class RawDeliveries(AsyncCase):
    """CREDIT's `with priority` on the wire (PROTOCOL.md 4.3, 4.4): ITEM
    gets a 7th field, ITEMS a 4th frame, only when asked; another word is
    refused with 400."""

    async def asyncSetUp(self):
        await super().asyncSetUp()
        self.broker = Broker()
        self.socket = zmq.asyncio.Context.instance().socket(zmq.DEALER)
        self.socket.connect(asyncq.endpoints(self.broker.address)[1])
        await self.socket.send_multipart([b"asyncq/2", b"HELLO", b"h", b"raw", b"1"])
        self.assertEqual((await self.recv())[1], b"WELCOME")
        q = asyncq.Queue(self.broker.address, "raw")
        for priority in (3, -7):
            await q.put(b"p%d" % priority, priority=priority)
        await q.close()

    async def asyncTearDown(self):
        self.socket.close(linger=0)
        self.broker.stop()

    async def recv(self):
        while True:
            frames = await asyncio.wait_for(self.socket.recv_multipart(), 10)
            if frames[1] != b"HEARTBEAT":
                return frames

    async def test_item_carries_the_priority_when_asked(self):
        await self.socket.send_multipart(
            [b"asyncq/2", b"CREDIT", b"c", b"raw", b"1", b"0", b"colour"])
        error = await self.recv()
        self.assertEqual(error[1:3], [b"ERROR", b"400"])
        await self.socket.send_multipart(
            [b"asyncq/2", b"CREDIT", b"c", b"raw", b"1", b"0", b"priority"])
        self.assertEqual((await self.recv())[1], b"CREDITED")
        item = await self.recv()
        self.assertEqual((item[1], len(item), item[7], item[8]), (b"ITEM", 9, b"p-7", b"-7"))
        # Asked no more (the credit still used up): the next ITEM has 6 fields.
        await self.socket.send_multipart([b"asyncq/2", b"CREDIT", b"c", b"raw", b"1", b"0"])
        self.assertEqual((await self.recv())[1], b"CREDITED")
        await self.socket.send_multipart([b"asyncq/2", b"ACK", b"a", struct.pack(">Q", int(item[3]))])
        item = await self.recv()
        self.assertEqual((item[1], len(item), item[7]), (b"ITEM", 8, b"p3"))

    async def test_items_carry_a_priorities_frame_when_asked(self):
        await self.socket.send_multipart(
            [b"asyncq/2", b"CREDIT", b"c", b"raw", b"2", b"2", b"priority"])
        self.assertEqual((await self.recv())[1], b"CREDITED")
        frames = await self.recv()
        count = int(frames[3])
        while count < 2:  # the broker may send them one by one
            more = await self.recv()
            frames[5] += more[5]
            frames[4] += more[4]
            count += int(more[3])
        self.assertEqual((frames[1], len(frames)), (b"ITEMS", 6))
        self.assertEqual(struct.unpack(">2i", frames[5]), (-7, 3))


class Priority(OptionsTest):
    async def test_lowest_priority_first_and_fifo_within_one(self):
        q = self.client()
        puts = [(5, "a"), (0, "b"), (-3, "c"), (5, "d"), (None, "e"), (-3, "f"),
                (2**31 - 1, "g"), (-2**31, "h"), (0, "i")]
        for priority, item in puts:
            await q.put(item, priority=priority)
        self.assertEqual(await self.get_all(q, len(puts)),
                         [b"h", b"c", b"f", b"b", b"e", b"i", b"a", b"d", b"g"])
        self.assertEqual(await q.join(timeout=10), asyncq.Joined(0, 0))

    async def test_a_burst_of_mixed_priorities_goes_in_one_puts_with_each(self):
        q = self.client()
        await q.put(b"first")  # the PUSH socket is open
        sent = self.record(q)
        plan = [None, None, 1, 1, 1, None, 0, -1, -1]  # 0 is None: no option
        for i, priority in enumerate(plan):
            await q.send(str(i), priority=priority)
        await asyncio.wait_for(q.flush(), 10)
        # One PUTS, the options frame `each`, every entry with its own
        # options (none for priority 0), seqs and order as made.
        want = [(b"priority=%d" % p if p else b"", str(i).encode()) for i, p in enumerate(plan)]
        self.assertEqual(puts_of(sent), [(b"PUTS", 2, 9, b"each", want)])
        got = await self.get_all(q, 10)
        self.assertEqual(got, [b"7", b"8", b"first", b"0", b"1", b"5", b"6", b"2", b"3", b"4"])

    async def test_random_priorities_come_out_lowest_first_fifo_within_one(self):
        q = self.client()
        await q.put(b"first")
        sent = self.record(q)
        rng = random.Random(7)
        plan = [rng.choice([None, -5, 0, 1, 2, 3, 2**31 - 1, -2**31]) for _ in range(300)]
        for i, priority in enumerate(plan):
            await q.send(str(i), priority=priority)
        await asyncio.wait_for(q.flush(), 10)
        self.assertEqual([(command, first, count, options)
                          for command, first, count, options, _ in puts_of(sent)],
                         [(b"PUTS", 2, 300, b"each")])
        # Put order: "first", then the plan; the lowest priority first,
        # in put order within one (a stable sort).
        puts = [(b"first", 0)] + [(str(i).encode(), p or 0) for i, p in enumerate(plan)]
        want = [item for item, _ in sorted(puts, key=lambda put: put[1])]
        self.assertEqual(await self.get_all(q, 301), want)
        self.assertEqual(await q.join(timeout=10), asyncq.Joined(0, 0))

    async def test_a_plain_put_sends_no_options_frame(self):
        q = self.client()
        await q.put(b"first")
        sent = self.record(q)
        await q.put(b"plain")
        await q.put(b"zero", priority=0, delay=0)
        self.assertEqual([frames[1:2] + frames[-1:] for frames in sent],
                         [[b"PUT", b"plain"], [b"PUT", b"zero"]])
        self.assertEqual(await self.get_all(q, 3), [b"first", b"plain", b"zero"])


class Each(OptionsTest):
    """Puts of one tick whose options differ go as one PUTS with `each`
    (4.1); puts that share their options go as before."""

    async def test_equal_options_go_as_before(self):
        q = self.client()
        await q.put(b"first")
        sent = self.record(q)
        for i in range(3):
            await q.send(b"plain%d" % i)
        await asyncio.sleep(0)  # the end of the tick sends them
        for i in range(3):
            await q.send(b"one%d" % i, priority=1)
        await asyncio.sleep(0)
        await q.put(b"alone", priority=2)
        await q.send(b"lone", at=0)  # past: at once
        await q.flush()
        # No options frame without options, the shared ones once in it, the
        # items frame as ever: u32 length, payload.
        self.assertEqual([(frames[1], len(frames), frames[-1]) for frames in sent], [
            (b"PUTS", 8, b"".join(struct.pack(">I", 6) + b"plain%d" % i for i in range(3))),
            (b"PUTS", 9, b"priority=1"), (b"PUT", 8, b"priority=2"), (b"PUT", 8, b"at-ms=0")])
        self.assertEqual(sent[1][7], b"".join(struct.pack(">I", 4) + b"one%d" % i
                                              for i in range(3)))
        self.assertEqual(await self.get_all(q, 9), [b"first", b"plain0", b"plain1", b"plain2",
                                                    b"lone", b"one0", b"one1", b"one2", b"alone"])
        lifo = self.client(asyncq.LifoQueue)
        await lifo.put(b"first")
        sent = self.record(lifo)
        for i in range(3):
            await lifo.send(str(i))
        await lifo.flush()
        self.assertEqual(puts_of(sent), [(b"PUTS", 2, 3, b"front",
                                          [(b"front", b"0"), (b"front", b"1"), (b"front", b"2")])])
        self.assertEqual(await self.get_all(lifo, 4), [b"2", b"1", b"0", b"first"])

    async def test_a_put_joins_the_puts_sent_in_its_tick_and_a_lease_splits_them(self):
        q = self.client()
        await q.put(b"first")
        sent = self.record(q)
        await q.send(b"a", priority=3)
        await q.send(b"b")
        await q.put(b"c", priority=1)  # sends the batch, itself in it
        await q.send(b"d", priority=2)
        await q.send(b"e", priority=1, lease=30)  # another lease: another PUTS
        await q.send(b"f", lease=30)
        await q.send(b"g", priority=1, lease=30)
        await q.flush()
        self.assertEqual(puts_of(sent), [
            (b"PUTS", 2, 3, b"each", [(b"priority=3", b"a"), (b"", b"b"), (b"priority=1", b"c")]),
            (b"PUT", 5, 1, b"priority=2", [(b"priority=2", b"d")]),
            (b"PUTS", 6, 3, b"each", [(b"priority=1", b"e"), (b"", b"f"), (b"priority=1", b"g")])])
        self.assertEqual(await self.get_all(q, 8),
                         [b"first", b"b", b"f", b"c", b"e", b"g", b"d", b"a"])

    async def test_the_window_counts_the_items_frame_as_sent(self):
        q = self.client()
        await q.put(b"first")
        sent = self.record(q)
        producer = q._producer
        plan = [None, 7, -1, None, 7, 12345]
        for i, priority in enumerate(plan):
            await q.send(b"x" * i, priority=priority)
        # Counted as the batch would go now: u8, options, u32, payload each.
        frame = sum(1 + len(b"priority=%d" % p if p else b"") + 4 + i for i, p in enumerate(plan))
        self.assertEqual(producer._unconfirmed_bytes, frame)
        await asyncio.sleep(0)
        self.assertEqual((len(sent), len(sent[0][7])), (1, frame))
        self.assertEqual(producer._sent[-1].size, frame)
        await q.flush()
        self.assertEqual((producer.unconfirmed, producer._unconfirmed_bytes), (0, 0))
        await q.send(b"abc", priority=4)
        await q.send(b"de", priority=4)
        self.assertEqual(producer._unconfirmed_bytes, 4 + 3 + 4 + 2)  # options once, not counted
        await q.flush()
        self.assertEqual((producer.unconfirmed, producer._unconfirmed_bytes), (0, 0))

    async def test_mixed_delays_in_one_puts_are_each_waited_for(self):
        q = self.client()
        await q.put(b"first")
        self.assertEqual(await self.get_all(q, 1), [b"first"])
        sent = self.record(q)
        started, wall = time.monotonic(), time.time()
        await q.send(b"0.6", delay=0.6)
        await q.send(b"now")
        await q.send(b"0.2", delay=0.2)
        await q.send(b"at 0.4", at=wall + 0.4)
        await q.send(b"0.8", delay=0.8, priority=5)
        await q.flush()
        stats = await q.stats()
        if time.monotonic() - started < 0.2 - SLACK:  # (surely: a loaded machine may be slow)
            self.assertEqual((stats["delayed"], stats["outstanding"]), (4, 5))
        self.assertEqual([(command, count, options)
                          for command, _, count, options, _ in puts_of(sent)],
                         [(b"PUTS", 5, b"each")])
        options = [options for options, _ in puts_of(sent)[0][4]]
        self.assertRegex(options.pop(3), rb"^at-ms=\d{13}$")
        self.assertEqual(options, [b"delay-ms=600", b"", b"delay-ms=200",
                                   b"priority=5 delay-ms=800"])
        got = []
        for _ in range(5):
            got.append((bytes(await asyncio.wait_for(q.get(), 10)), time.monotonic(),
                        time.time()))
            q.task_done()
        self.assertEqual([item for item, _, _ in got], [b"now", b"0.2", b"at 0.4", b"0.6", b"0.8"])
        for item, at, at_wall in got[1:]:
            if item == b"at 0.4":
                self.assertGreaterEqual(at_wall, wall + 0.4 - SLACK, item)
            else:
                self.assertGreaterEqual(at - started, float(item) - SLACK, item)
        self.assertEqual(await q.join(timeout=10), asyncq.Joined(0, 0))

    async def test_lifo_queue_mixed_priorities_in_one_puts(self):
        lifo = self.client(asyncq.LifoQueue)
        await lifo.put(b"first")
        sent = self.record(lifo)
        plan = [None, 1, None, -1, 1, None]
        for i, priority in enumerate(plan):
            await lifo.send(str(i), priority=priority)
        await lifo.flush()
        self.assertEqual(puts_of(sent), [(b"PUTS", 2, 6, b"each", [
            (b"priority=%d front" % p if p else b"front", str(i).encode())
            for i, p in enumerate(plan)])])
        self.assertEqual(await self.get_all(lifo, 7),
                         [b"3", b"5", b"2", b"0", b"first", b"4", b"1"])


class EachMaxItem(OptionsTest):
    broker_flags = ("--max-item", "1000")

    async def test_an_each_batch_holds_at_most_max_item_bytes_with_its_options(self):
        q = self.client()
        await q.put(b"first")
        sent = self.record(q)
        # u8 + options + u32 + payload each: 1 + 0 + 4 + 480 and
        # 1 + 10 + 4 + 500 ("priority=1") make exactly 1000.
        await q.send(b"a" * 480)
        await q.send(b"b" * 500, priority=1)
        await asyncio.sleep(0)
        # One byte more does not fit: the second put starts a PUTS of its
        # own (a PUT when alone), in order.
        await q.send(b"c" * 480)
        await q.send(b"d" * 501, priority=1)
        await asyncio.sleep(0)
        # Equal options: 4 + 496 twice is exactly 1000, no options counted.
        await q.send(b"e" * 496, priority=2)
        await q.send(b"f" * 496, priority=2)
        await q.flush()
        shapes = puts_of(sent)
        self.assertEqual([(command, first, count, options)
                          for command, first, count, options, _ in shapes],
                         [(b"PUTS", 2, 2, b"each"), (b"PUT", 4, 1, None),
                          (b"PUT", 5, 1, b"priority=1"), (b"PUTS", 6, 2, b"priority=2")])
        self.assertEqual([len(frames[7]) for frames in sent if frames[1] == b"PUTS"], [1000, 1000])
        self.assertEqual((await q.stats())["puts"], 7)

    async def test_a_mixed_burst_splits_at_max_item_in_order(self):
        q = self.client()
        await q.put(b"first")
        sent = self.record(q)
        rng = random.Random(3)
        plan = [(rng.choice([None, 1, 22, -333]), rng.randrange(0, 200)) for _ in range(200)]
        # Nine plain items fill a batch (9 * 104 = 936 bytes); a tenth of
        # other options would pass 1000 as `each`: the nine go as they are.
        plan = [(None, 100)] * 9 + [(5, 100)] + plan
        for i, (priority, size) in enumerate(plan):
            await q.send(b"%d." % i + b"x" * size, priority=priority)
        await q.flush()
        shapes = puts_of(sent)
        self.assertEqual(shapes[0][:4], (b"PUTS", 2, 9, None))
        self.assertGreater(len(shapes), 10)
        seq = 2
        entries = []
        for (command, first, count, options, got), frames in zip(shapes, sent):
            self.assertEqual(first, seq)  # the seqs follow each other, no gap
            seq += count
            entries += got
            if command == b"PUTS":
                self.assertLessEqual(len(frames[7]), 1000)
            if options == b"each":
                self.assertGreater(len({options for options, _ in got}), 1)
        self.assertEqual(entries, [(b"priority=%d" % p if p else b"", b"%d." % i + b"x" * size)
                                   for i, (p, size) in enumerate(plan)])
        # Each split took as much as fitted: the next entry would not have.
        for (_, _, _, options, got), frames, following in zip(shapes, sent, shapes[1:]):
            if options == b"each":
                head, payload = following[4][0]
                self.assertGreater(len(frames[7]) + 1 + len(head) + 4 + len(payload), 1000)
        puts = [(b"first", 0)] + [(b"%d." % i + b"x" * size, p or 0)
                                  for i, (p, size) in enumerate(plan)]
        want = [item for item, _ in sorted(puts, key=lambda put: put[1])]
        self.assertEqual(await self.get_all(q, len(puts)), want)


class EachMaxBatch(OptionsTest):
    broker_flags = ("--max-batch", "4")

    async def test_an_each_batch_holds_at_most_max_batch_items(self):
        q = self.client()
        await q.put(b"first")
        sent = self.record(q)
        plan = [1, 2, 3, 4, 5, 5, 5, 5, 6, None]
        for i, priority in enumerate(plan):
            await q.send(str(i), priority=priority)
        await q.flush()
        self.assertEqual([(command, first, count, options)
                          for command, first, count, options, _ in puts_of(sent)],
                         [(b"PUTS", 2, 4, b"each"), (b"PUTS", 6, 4, b"priority=5"),
                          (b"PUTS", 10, 2, b"each")])
        self.assertEqual(await self.get_all(q, 11),
                         [b"first", b"9"] + [str(i).encode() for i in range(9)])


class EachWindow(OptionsTest):
    # The broker holds at most 1000 bytes of items frames of a producer for
    # a full queue and refuses more (429): the client counts `each` bytes.
    broker_flags = ("--maxsize", "2", "--max-item", "1000", "--window-bytes", "1000")

    async def test_held_each_batches_stay_within_window_bytes(self):
        producer = self.client()
        rng = random.Random(5)
        plan = [rng.choice([None, 1, 2, 3, -4]) for _ in range(120)]

        async def send_all():
            for i, priority in enumerate(plan):
                await producer.send(b"%03d" % i + b"x" * 47, priority=priority)
            await producer.flush()  # raises if a put was refused

        sender = asyncio.create_task(send_all())
        while producer.held is None and not sender.done():
            await asyncio.sleep(0.01)
        self.assertFalse(sender.done())  # it waits: the queue is full
        consumer = self.client()
        got = []
        for _ in range(len(plan)):
            got.append(int(bytes(await asyncio.wait_for(consumer.get(), 10))[:3]))
            consumer.task_done()
        await asyncio.wait_for(sender, 10)
        self.assertEqual(sorted(got), list(range(len(plan))))
        self.assertEqual((await producer.stats())["puts"], len(plan))


class Delay(OptionsTest):
    async def test_a_delayed_put_comes_after_its_delay_and_join_waits_for_it(self):
        q = self.client()
        started = time.monotonic()
        await q.put(b"later", delay=1.0)
        await q.put(b"now")
        stats = await q.stats()
        if time.monotonic() - started < 1.0 - SLACK:  # (surely: a loaded machine may be slow)
            self.assertEqual((stats["delayed"], stats["queued"]), (1, 1))
        # No consumer yet: the join cannot end, the delayed item outstanding.
        with self.assertRaises(TimeoutError):
            await q.join(timeout=0.1)

        async def worker():
            while True:
                item = await q.get()
                got.append((bytes(item), time.monotonic()))
                q.task_done()

        got = []
        task = asyncio.create_task(worker())
        joined = await asyncio.wait_for(q.join(), 30)
        joined_at = time.monotonic()
        task.cancel()
        # "now", put after "later", came first; the join ended once "later"
        # was done. (Its count may miss "now", done before the JOIN came.)
        self.assertEqual([item for item, _ in got], [b"now", b"later"])
        self.assertGreaterEqual(got[1][1] - started, 1.0 - SLACK)
        self.assertGreaterEqual(joined_at, got[1][1])
        self.assertGreaterEqual(joined.count, 1)
        self.assertEqual(joined.dead, 0)
        self.assertEqual((await q.stats())["delayed"], 0)

    async def test_put_returns_before_the_delay(self):
        q = self.client()
        getter = asyncio.create_task(self.client().get())
        await q.put(b"x", delay=30)
        # The broker confirms a delayed put at once; no consumer has it.
        self.assertFalse(getter.done())
        self.assertEqual((await q.stats())["delayed"], 1)
        self.assertFalse(getter.done())
        getter.cancel()

    async def test_delayed_puts_come_in_the_order_of_their_times(self):
        q = self.client()
        started = time.monotonic()
        await q.send(b"0.6", delay=0.6)
        await q.send(b"0.3", delay=0.3)
        await q.send(b"0.0001", delay=0.0001)  # rounded up to 1 ms: still a delay
        await q.flush()
        got = []
        for _ in range(3):
            got.append((bytes(await asyncio.wait_for(q.get(), 10)), time.monotonic()))
            q.task_done()
        self.assertEqual([item for item, _ in got], [b"0.0001", b"0.3", b"0.6"])
        for item, at in got:
            self.assertGreaterEqual(at - started, float(item) - SLACK, item)


class At(OptionsTest):
    async def test_a_time_past_is_delivered_at_once(self):
        q = self.client()
        past = time.time() - 3600
        naive = datetime.datetime.now() - datetime.timedelta(hours=1)  # local time
        aware = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=400)
        await q.put(b"seconds", at=past)
        await q.put(b"naive", at=naive)
        await q.put(b"aware", at=aware)
        await q.put(b"1970", at=0)
        await q.put(b"plain")
        self.assertEqual((await q.stats())["delayed"], 0)
        # In the order put: none was delayed behind the plain put.
        self.assertEqual(await self.get_all(q, 5),
                         [b"seconds", b"naive", b"aware", b"1970", b"plain"])

    async def test_a_time_ahead_is_waited_for(self):
        q = self.client()
        aware = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=1.2)
        seconds = time.time() + 0.4
        naive = datetime.datetime.now() + datetime.timedelta(seconds=0.8)  # local time
        await q.send(b"aware", at=aware)
        await q.send(b"seconds", at=seconds)
        await q.send(b"naive", at=naive)
        await q.flush()
        got = []
        for _ in range(3):
            got.append((bytes(await asyncio.wait_for(q.get(), 10)), time.time()))
            q.task_done()
        self.assertEqual([item for item, _ in got], [b"seconds", b"naive", b"aware"])
        times = {b"aware": aware.timestamp(), b"seconds": seconds, b"naive": naive.timestamp()}
        for item, when in got:
            self.assertGreaterEqual(when, times[item] - SLACK, item)
        await asyncio.wait_for(q.join(), 10)


class Lifo(OptionsTest):
    async def test_lifo_queue_gets_the_newest_first(self):
        lifo = self.client(asyncq.LifoQueue)
        self.assertIsInstance(lifo, asyncq.Queue)
        for item in (b"a", b"b", b"c"):
            await lifo.put(item)
        for item in (b"x", b"y", b"z"):  # one PUTS, each item to the front in turn
            await lifo.send(item)
        await lifo.flush()
        await lifo.put(b"low", priority=1)
        await lifo.put(b"high", priority=-1)
        await lifo.put(b"low2", priority=1)
        await self.client().put(b"back")  # a plain Queue's put goes to the back
        self.assertEqual(await self.get_all(lifo, 10),
                         [b"high", b"z", b"y", b"x", b"c", b"b", b"a", b"back", b"low2", b"low"])
        self.assertEqual(await lifo.join(timeout=10), asyncq.Joined(0, 0))

    async def test_lifo_queue_takes_no_delay(self):
        lifo = self.client(asyncq.LifoQueue)
        await lifo.put(b"first")
        for options in ({"delay": 1}, {"delay": 0.0001}, {"at": time.time() - 10},
                        {"at": datetime.datetime.now()}, {"priority": 1, "delay": 5}):
            with self.assertRaisesRegex(ValueError, "LifoQueue.*delay", msg=options):
                await lifo.put(b"bad", **options)
            with self.assertRaises(ValueError, msg=options):
                await lifo.send(b"bad", **options)
        await lifo.put(b"zero", delay=0)  # no delay at all
        await lifo.put(b"last")
        self.assertEqual(await self.get_all(lifo, 3), [b"last", b"zero", b"first"])
        self.assertEqual((await lifo.stats())["puts"], 3)


class BadInput(OptionsTest):
    async def assert_refused_here(self, q, error, pattern, **options):
        """put() and send() raise error at once, sending nothing."""
        seq = q._producer.seq
        with self.assertRaisesRegex(error, pattern):
            await q.put(b"bad", **options)
        with self.assertRaisesRegex(error, pattern):
            await q.send(b"bad", **options)
        self.assertEqual(q._producer.seq, seq)

    async def test_options_not_valid_raise_before_anything_is_sent(self):
        q = self.client()
        await q.put(b"first")
        cases = [
            (ValueError, r"delay is 0 or more seconds", {"delay": -1}),
            (ValueError, r"delay is 0 or more seconds", {"delay": -0.001}),
            (ValueError, r"finite", {"delay": float("nan")}),
            (ValueError, r"finite", {"delay": float("inf")}),
            (ValueError, r"-2147483648 to 2147483647", {"priority": 2**31}),
            (ValueError, r"-2147483648 to 2147483647", {"priority": -2**31 - 1}),
            (ValueError, r"delay or at, not both", {"delay": 1, "at": time.time()}),
            (ValueError, r"delay or at, not both", {"delay": 0, "at": datetime.datetime.now()}),
            (TypeError, r"priority is an int, not bool", {"priority": True}),
            (TypeError, r"priority is an int, not float", {"priority": 1.0}),
            (TypeError, r"priority is an int, not str", {"priority": "1"}),
            (TypeError, r"delay is seconds", {"delay": "1"}),
            (TypeError, r"delay is seconds", {"delay": datetime.timedelta(seconds=1)}),
            (TypeError, r"at is a datetime.datetime", {"at": "tomorrow"}),
            (TypeError, r"at is a datetime.datetime", {"at": datetime.date.today()}),
        ]
        for error, pattern, options in cases:
            with self.subTest(**{key: repr(value) for key, value in options.items()}):
                await self.assert_refused_here(q, error, pattern, **options)
        await q.put(b"last", priority=-1)  # a valid put still goes
        self.assertEqual((await q.stats())["puts"], 2)
        self.assertEqual(await self.get_all(q, 2), [b"last", b"first"])

    async def test_a_bad_option_before_the_first_put_opens_nothing(self):
        q = self.client()
        with self.assertRaises(ValueError):
            await q.put(b"bad", priority=2**40)
        self.assertIsNone(q._producer)
        await q.put(b"good", priority=2**31 - 1)
        self.assertEqual(await self.get_all(q, 1), [b"good"])


class MaxDelay(OptionsTest):
    broker_flags = ("--max-delay", "60")

    async def test_a_delay_over_the_brokers_maximum_is_refused_with_its_text(self):
        q = self.client()
        await q.put(b"first")
        with self.assertRaises(asyncq.BrokerError) as caught:
            await q.put(b"too late", delay=3600)
        self.assertEqual(caught.exception.code, 400)
        self.assertIn("delay-ms", str(caught.exception))
        self.assertIn("--max-delay", str(caught.exception))
        with self.assertRaises(asyncq.BrokerError) as caught:
            await q.put(b"too late", at=time.time() + 3600)
        self.assertEqual(caught.exception.code, 400)
        self.assertIn("at-ms", str(caught.exception))
        # send(): flush() raises it.
        await q.send(b"too late", delay=3600)
        with self.assertRaisesRegex(asyncq.BrokerError, "delay-ms.*--max-delay"):
            await q.flush()
        await q.put(b"in time", delay=0.05)  # within the maximum: still taken
        await q.put(b"last")
        self.assertEqual(sorted(await self.get_all(q, 3)), [b"first", b"in time", b"last"])
        self.assertEqual((await q.stats())["puts"], 3)
        self.assertEqual(await q.join(timeout=10), asyncq.Joined(0, 0))

    async def test_a_delay_over_the_maximum_refuses_the_puts_of_its_puts(self):
        q = self.client()
        await q.put(b"first")
        # One PUTS with `each`: the broker refuses it whole (README).
        await q.send(b"a")
        await q.send(b"too late", delay=3600)
        await q.send(b"c", priority=-1)
        with self.assertRaisesRegex(asyncq.BrokerError, "delay-ms.*--max-delay") as caught:
            await q.flush()
        self.assertEqual(caught.exception.subject, b"2-4")
        await q.put(b"last", priority=1)
        self.assertEqual((await q.stats())["puts"], 2)
        self.assertEqual(await self.get_all(q, 2), [b"first", b"last"])


class Blocking(unittest.TestCase):
    def setUp(self):
        self.broker = Broker()
        self.addCleanup(self.broker.stop)

    def test_blocking_queue_puts_with_options(self):
        q = asyncq.BlockingQueue(self.broker.address, "blocking-options")
        self.addCleanup(q.close, 10)
        with self.assertRaises(ValueError):
            q.put(b"bad", delay=-1)
        started = time.monotonic()
        q.put(b"delayed", delay=0.3, priority=2)  # last, however slow the gets
        q.put(b"low", priority=1)
        q.put(b"high", priority=-1, at=time.time() - 1)
        got = []
        for _ in range(3):
            got.append(bytes(q.get(timeout=10)))
            q.task_done()
        self.assertEqual(got, [b"high", b"low", b"delayed"])
        self.assertGreaterEqual(time.monotonic() - started, 0.3 - SLACK)


if __name__ == "__main__":
    unittest.main()
