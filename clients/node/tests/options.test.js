'use strict';
// Put options (PROTOCOL.md 4.1): priority, delay, at, and LifoQueue's front;
// their options frame, batching by options, and bad options refused.
const test = require('node:test');
const assert = require('node:assert');
const { performance } = require('perf_hooks');
const { Broker, withBroker, until } = require('./broker');
const { BrokerError, LifoQueue } = require('..');
const { putOptionsOf } = require('../queue');
const { Producer } = require('../producer');

// The entries of a PUTS items frame whose options frame is `each`, as
// [options, item] (as strings).
function eachEntries(frame) {
  const entries = [];
  let at = 0;
  while (at < frame.length) {
    const options = frame.toString('latin1', at + 1, at + 1 + frame[at]);
    at += 1 + frame[at];
    const end = at + 4 + frame.readUInt32BE(at);
    assert.ok(end <= frame.length, 'an entry past the frame');
    entries.push([options, frame.toString('utf8', at + 4, end)]);
    at = end;
  }
  return entries;
}

// Records the messages q sends on its PUSH socket, as [command, count,
// options frame] (null: no options frame), and for a PUTS with `each`
// its entries' options.
function spyPuts(q) {
  const sent = [];
  const pushSend = q.producer.pushSend.bind(q.producer);
  q.producer.pushSend = (frames) => {
    const [, command] = frames;
    const puts = command === 'PUTS';
    const options = frames[puts ? 8 : 7];
    assert.ok(frames.length <= (puts ? 9 : 8), `${frames.length} frames`);
    const record = [command, puts ? Number(frames[4]) : 1, options === undefined ? null : String(options)];
    if (record[2] === 'each') {
      const entries = eachEntries(frames[7]);
      assert.strictEqual(entries.length, record[1]);
      record.push(entries.map(([entry]) => entry));
    }
    sent.push(record);
    pushSend(frames);
  };
  return sent;
}

// Gets count items from q, acking each; resolves with their data as strings.
async function take(q, count) {
  const items = [];
  for (let i = 0; i < count; i++) {
    items.push(String(await q.get()));
    q.taskDone();
  }
  return items;
}

test('the options frame: as the protocol spells it, none without options', () => {
  assert.strictEqual(putOptionsOf({}, false), '');
  assert.strictEqual(putOptionsOf({ lease: 5, priority: 0, delay: 0 }, false), '');
  assert.strictEqual(putOptionsOf({}, true), 'front');
  assert.strictEqual(putOptionsOf({ priority: -2147483648, delay: 1.1 }, false), 'priority=-2147483648 delay-ms=1100');
  assert.strictEqual(putOptionsOf({ priority: 2147483647 }, true), 'priority=2147483647 front');
  assert.strictEqual(putOptionsOf({ delay: 0.0001 }, false), 'delay-ms=1'); // rounded up: not before
  assert.strictEqual(putOptionsOf({ delay: 2.0004 }, false), 'delay-ms=2001');
  assert.strictEqual(putOptionsOf({ at: new Date(1700000000123) }, false), 'at-ms=1700000000123');
  assert.strictEqual(putOptionsOf({ at: 1700000000.5 }, false), 'at-ms=1700000000500');
  assert.strictEqual(putOptionsOf({ at: 1700000000.0004 }, false), 'at-ms=1700000000001');
  assert.strictEqual(putOptionsOf({ at: 1700000000.123 }, false), 'at-ms=1700000000123');
  assert.strictEqual(putOptionsOf({ at: -5 }, false), 'at-ms=0'); // before 1970: past, at once
  assert.strictEqual(putOptionsOf({ delay: 0 }, true), 'front'); // no delay: a LifoQueue takes it
  assert.ok(putOptionsOf({ priority: -2147483648, at: new Date(8.64e15) }, false).length <= 128);
  assert.ok(putOptionsOf({ priority: -2147483648, delay: Number.MAX_SAFE_INTEGER / 1000 }, false).length <= 128);
});

test('priorities: lowest first, first in, first out within one; the puts of a tick in one PUTS, each with its options', () => withBroker(Broker.start(), async (broker, client) => {
  const q = client({ queue: 'priorities' });
  await q.stats();
  const sent = spyPuts(q);
  const puts = [
    ['five-1', 5], ['five-2', 5], ['zero-1', undefined], ['zero-2', 0], ['minus-1', -3], ['minus-2', -3],
    ['five-3', 5], ['zero-3', undefined], ['max', 2147483647], ['min', -2147483648], ['minus-3', -3],
  ];
  for (const [item, priority] of puts) await q.send(item, priority === undefined ? {} : { priority });
  await q.flush();
  assert.deepStrictEqual(sent, [['PUTS', puts.length, 'each', [
    'priority=5', 'priority=5', '', '', 'priority=-3', 'priority=-3',
    'priority=5', '', 'priority=2147483647', 'priority=-2147483648', 'priority=-3',
  ]]]);
  assert.strictEqual((await q.stats()).queued, puts.length);
  assert.deepStrictEqual(await take(q, puts.length), [
    'min', 'minus-1', 'minus-2', 'minus-3', 'zero-1', 'zero-2', 'zero-3', 'five-1', 'five-2', 'five-3', 'max',
  ]);
  // The last ack, and the credit withdrawn with it, confirmed (CREDITED)
  // first: a credit still free at the broker would take 'later' alone.
  await new Promise(setImmediate);
  await until(() => q.consumer.session.pending.size === 0);
  // put() awaited one at a time, as the application would.
  await q.put('later', { priority: 1 });
  await q.put('sooner', { priority: -1 });
  assert.deepStrictEqual(await take(q, 2), ['sooner', 'later']);
}));

test('a delayed put: delivered no sooner than its delay, after the puts due; a join waits for it', () => withBroker(Broker.start(), async (broker, client) => {
  const q = client({ queue: 'delayed' });
  const consumer = client({ queue: 'delayed' });
  await q.stats();
  const sent = spyPuts(q);
  const start = performance.now();
  await q.put('late', { delay: 1 });
  await q.put('now');
  assert.deepStrictEqual(sent, [['PUT', 1, 'delay-ms=1000'], ['PUT', 1, null]]);
  const stats = await q.stats();
  assert.strictEqual(stats.delayed + stats.queued, 2);
  if (performance.now() - start < 1000) assert.strictEqual(stats.delayed, 1); // not due yet
  let joined = false;
  const join = q.join({ timeout: 60 }).then((result) => {
    joined = true;
    return result;
  });
  await until(async () => (await q.stats()).joiners === 1); // joined with both outstanding
  assert.deepStrictEqual(await take(consumer, 1), ['now']);
  const item = await consumer.get(); // asked for before it is due
  const waited = performance.now() - start;
  assert.strictEqual(String(item), 'late');
  // The broker's clocks count whole milliseconds: "not before" to within one.
  assert.ok(waited >= 999, `delivered after ${waited} ms`);
  assert.strictEqual(joined, false); // the delayed item is outstanding
  consumer.taskDone(item);
  assert.deepStrictEqual(await join, { count: 2, dead: 0 });
  assert.strictEqual((await q.stats()).delayed, 0);
}));

test('at: a time past goes at once, one ahead waits for it', () => withBroker(Broker.start(), async (broker, client) => {
  const q = client({ queue: 'at' });
  const consumer = client({ queue: 'at' });
  const at = new Date(Date.now() + 700);
  await q.put('ahead', { at });
  await q.put('past', { at: new Date(Date.now() - 60000) });
  await q.put('epoch-seconds', { at: Date.now() / 1000 - 1 });
  await q.put('1970', { at: 0 });
  await q.put('far', { at: Date.now() / 1000 + 3600 }); // within the broker's --max-delay (30 days)
  const stats = await q.stats();
  assert.strictEqual(stats.delayed + stats.queued, 5);
  assert.ok(stats.delayed >= 1, JSON.stringify(stats)); // 'far', and 'ahead' unless it is due already
  // 'ahead', once due, is queued behind them: at the back, as if put then.
  assert.deepStrictEqual(await take(consumer, 3), ['past', 'epoch-seconds', '1970']);
  const ahead = await consumer.get();
  const now = Date.now();
  assert.strictEqual(String(ahead), 'ahead');
  // Both clocks count whole milliseconds: "not before" to within one.
  assert.ok(now >= at.getTime() - 1, `delivered ${at.getTime() - now} ms before its time`);
  consumer.taskDone(ahead);
  assert.strictEqual((await q.stats()).delayed, 1); // 'far', still waiting
}));

test('LifoQueue: last in, first out within a priority, ahead of the FIFO puts', () => withBroker(Broker.start(), async (broker, client) => {
  const fifo = client({ queue: 'stack' });
  const stack = client({ queue: 'stack' }, LifoQueue);
  assert.ok(stack instanceof LifoQueue);
  await fifo.put('back-1');
  await stack.stats();
  const sent = spyPuts(stack);
  for (const item of ['a', 'b', 'c']) await stack.send(item); // one PUTS: each to the front, in order
  await stack.flush();
  await stack.put('d');
  await stack.put('low', { priority: 1 });
  await stack.put('high', { priority: -1, delay: 0 });
  await fifo.put('back-2');
  assert.deepStrictEqual(sent, [
    ['PUTS', 3, 'front'], ['PUT', 1, 'front'], ['PUT', 1, 'priority=1 front'], ['PUT', 1, 'priority=-1 front'],
  ]);
  assert.deepStrictEqual(await take(fifo, 8), ['high', 'd', 'c', 'b', 'a', 'back-1', 'back-2', 'low']);
}));

// Puts bad, each of which must reject with Error and a message matching
// text, having sent nothing; then a valid put, which must go through.
async function refusedHere(q, bad) {
  await q.stats();
  const sent = spyPuts(q);
  const seq = q.producer.seq;
  for (const [options, Error, text] of bad) {
    await assert.rejects(q.put('bad', options), (error) => error instanceof Error && text.test(error.message),
      `${JSON.stringify(options)}: ${Error.name} ${text}`);
    await assert.rejects(q.send('bad', options), Error);
  }
  assert.deepStrictEqual(sent, []);
  assert.strictEqual(q.producer.seq, seq);
  await q.put('good', { priority: 3 });
  assert.deepStrictEqual(sent, [['PUT', 1, q instanceof LifoQueue ? 'priority=3 front' : 'priority=3']]);
  assert.deepStrictEqual(await take(q, 1), ['good']);
}

test('bad priorities are refused before sending', () => withBroker(Broker.start(), async (broker, client) => {
  const range = /-2147483648 to 2147483647/;
  await refusedHere(client({ queue: 'bad-priority' }), [
    [{ priority: 2147483648 }, RangeError, range],
    [{ priority: -2147483649 }, RangeError, range],
    [{ priority: 1.5 }, RangeError, range],
    [{ priority: NaN }, RangeError, range],
    [{ priority: '1' }, TypeError, /priority/],
    [{ priority: null }, TypeError, /priority/],
  ]);
}));

test('bad delays and times are refused before sending', () => withBroker(Broker.start(), async (broker, client) => {
  await refusedHere(client({ queue: 'bad-delay' }), [
    [{ delay: -1 }, RangeError, /delay/],
    [{ delay: -0.001 }, RangeError, /delay/],
    [{ delay: NaN }, RangeError, /delay/],
    [{ delay: Infinity }, RangeError, /delay/],
    [{ delay: '5' }, TypeError, /delay/],
    [{ delay: 1, at: new Date() }, TypeError, /delay.*at.*not both/],
    [{ delay: 0, at: 0 }, TypeError, /not both/],
    [{ at: '2030-01-01' }, TypeError, /at is a Date/],
    [{ at: new Date(NaN) }, RangeError, /at/],
    [{ at: NaN }, RangeError, /at/],
  ]);
}));

test('a LifoQueue refuses a delay or a time before sending', () => withBroker(Broker.start(), async (broker, client) => {
  await refusedHere(client({ queue: 'bad-stack' }, LifoQueue), [
    [{ delay: 1 }, RangeError, /LifoQueue.*delay/],
    [{ delay: 0.0001, priority: 2 }, RangeError, /LifoQueue/],
    [{ at: new Date() }, RangeError, /LifoQueue.*at/],
    [{ at: 0 }, RangeError, /LifoQueue/],
  ]);
}));

test("a delay over the broker's --max-delay: its 400, the put after it goes through", () => withBroker(Broker.start(['--max-delay', '60']), async (broker, client) => {
  const q = client({ queue: 'too-late' });
  const refused = (error) => error instanceof BrokerError && error.code === 400 && /delay/.test(error.text)
    && error.message.includes(error.text);
  await assert.rejects(q.put('an hour', { delay: 3600 }), refused);
  await assert.rejects(q.put('an hour on', { at: new Date(Date.now() + 3600 * 1000) }), (error) => error instanceof BrokerError
    && error.code === 400);
  q.send('batched', { delay: 3600 });
  q.send('batched too', { delay: 3600 });
  await assert.rejects(q.flush(), refused); // the PUTS, refused whole
  await q.put('in a minute', { delay: 59 });
  await q.put('now');
  const stats = await q.stats();
  assert.strictEqual(stats.delayed, 1);
  assert.strictEqual(stats.queued, 1);
  assert.deepStrictEqual(await take(q, 1), ['now']);
}));

// Puts of mixed options in one tick go as one PUTS with `each` (PROTOCOL.md
// 4.1); puts sharing their options as before, in its options frame.

test('puts sharing their options: one PUTS with them in its options frame, as before', () => withBroker(Broker.start(), async (broker, client) => {
  const q = client({ queue: 'shared' });
  await q.stats();
  const sent = spyPuts(q);
  for (let i = 0; i < 50; i++) q.send(`five-${i}`, { priority: 5 });
  await q.flush();
  for (let i = 0; i < 50; i++) q.send(`none-${i}`, { priority: 0 }); // priority 0: no options
  await q.flush();
  for (let i = 0; i < 3; i++) q.send(`later-${i}`, { delay: 0.05 });
  await q.flush();
  q.send('one', { priority: 2 }); // one put: PUT, its options in the options frame
  await q.flush();
  // Mixed options, then a lease change: a PUTS per lease, `each` in each.
  q.send('a', { priority: 1 });
  q.send('b');
  q.send('c', { priority: 1, lease: 30 });
  q.send('d', { lease: 30 });
  q.send('e', { lease: 30 });
  q.send('f', { priority: 1 });
  await q.flush();
  assert.deepStrictEqual(sent, [
    ['PUTS', 50, 'priority=5'], ['PUTS', 50, null], ['PUTS', 3, 'delay-ms=50'], ['PUT', 1, 'priority=2'],
    ['PUTS', 2, 'each', ['priority=1', '']], ['PUTS', 3, 'each', ['priority=1', '', '']], ['PUT', 1, 'priority=1'],
  ]);
  // Every one of the 110, the delayed ones whenever they are due (a slow
  // consumer may take them before the last priority-5 items).
  const got = await take(q, 110);
  assert.deepStrictEqual(got.slice(0, 50), Array.from({ length: 50 }, (_, i) => `none-${i}`));
  assert.deepStrictEqual(got.slice(50).filter((item) => ['b', 'd', 'e'].includes(item)), ['b', 'd', 'e']);
  assert.deepStrictEqual(got.filter((item) => item.startsWith('five-')), Array.from({ length: 50 }, (_, i) => `five-${i}`));
  assert.deepStrictEqual(got.filter((item) => item.startsWith('later-')).sort(), ['later-0', 'later-1', 'later-2']);
  assert.strictEqual(new Set(got).size, 110);
}));

test('random priorities in one tick: one PUTS with each, delivered by priority, first in, first out within one', () => withBroker(Broker.start(), async (broker, client) => {
  const q = client({ queue: 'random', prefetch: 100 });
  await q.stats();
  const sent = spyPuts(q);
  const puts = Array.from({ length: 500 }, (_, i) => [`item-${i}`, Math.floor(Math.random() * 10)]);
  puts[1][1] = (puts[0][1] + 1) % 10; // mixed, whatever the draw
  for (const [item, priority] of puts) q.send(item, { priority });
  await q.flush();
  assert.deepStrictEqual(sent, [['PUTS', 500, 'each', puts.map(([, p]) => (p ? `priority=${p}` : ''))]]);
  const order = puts.map((put, i) => [put, i]).sort(([a, i], [b, j]) => a[1] - b[1] || i - j).map(([[item]]) => item);
  assert.deepStrictEqual(await take(q, puts.length), order);
}));

test('delays that differ in one PUTS: each item not before its own time; those due at once first', () => withBroker(Broker.start(), async (broker, client) => {
  const q = client({ queue: 'delays' });
  const consumer = client({ queue: 'delays' });
  await q.stats();
  const sent = spyPuts(q);
  const start = Date.now();
  const at = new Date(start + 450);
  const puts = [
    ['d600-p1', { delay: 0.6, priority: 1 }], ['now-1', {}], ['d300', { delay: 0.3 }], ['at450', { at }],
    ['d150', { delay: 0.15 }], ['now-p-1', { priority: -1 }], ['now-2', {}],
  ];
  for (const [item, options] of puts) q.send(item, options);
  await q.flush();
  assert.deepStrictEqual(sent, [['PUTS', 7, 'each', [
    'priority=1 delay-ms=600', '', 'delay-ms=300', `at-ms=${at.getTime()}`, 'delay-ms=150', 'priority=-1', '',
  ]]]);
  assert.ok((await q.stats()).delayed >= 1);
  const due = { d150: 150, d300: 300, at450: 450, 'd600-p1': 600 };
  const got = [];
  for (let i = 0; i < puts.length; i++) {
    const item = String(await consumer.get());
    const now = Date.now();
    // Both clocks count whole milliseconds: "not before" to within one.
    if (due[item]) assert.ok(now - start >= due[item] - 1, `${item} delivered after ${now - start} ms`);
    got.push(item);
    consumer.taskDone();
  }
  // Each queued at the back of its priority when due: in the order of their
  // times, however late the gets.
  assert.deepStrictEqual(got, ['now-p-1', 'now-1', 'now-2', 'd150', 'd300', 'at450', 'd600-p1']);
}));

test('LifoQueue: priorities that differ in one PUTS, each to the front of its own', () => withBroker(Broker.start(), async (broker, client) => {
  const stack = client({ queue: 'stack-each' }, LifoQueue);
  await stack.stats();
  const sent = spyPuts(stack);
  for (const [item, priority] of [['a', 0], ['b', 1], ['c', 0], ['d', 1], ['e', -1]]) stack.send(item, { priority });
  await stack.flush();
  assert.deepStrictEqual(sent, [['PUTS', 5, 'each', ['front', 'priority=1 front', 'front', 'priority=1 front', 'priority=-1 front']]]);
  assert.deepStrictEqual(await take(stack, 5), ['e', 'c', 'a', 'd', 'b']);
}));

// max-item 1000: an entry of a 30-byte item is 34 bytes plain (29 fill a
// frame), 45 with priority=N (22 do).
test('a mixed batch over max-item or max-batch: split, seqs in order, each frame within max-item', () => withBroker(Broker.start(['--max-item', '1000', '--max-batch', '40']), async (broker, client) => {
  const q = client({ queue: 'split-each', prefetch: 100 });
  await q.stats();
  const frames = [];
  const pushSend = q.producer.pushSend.bind(q.producer);
  q.producer.pushSend = (message) => {
    frames.push(message);
    pushSend(message);
  };
  const item = (i) => `item-${String(i).padStart(25, '0')}`; // 30 bytes
  const puts = [];
  // 29 with no options fill a plain frame (986 bytes): the first with
  // options after them cannot join them with each (29 more bytes): they go
  // as they are.
  for (let i = 0; i < 29; i++) puts.push([item(puts.length), 0]);
  for (let i = 0; i < 100; i++) puts.push([item(puts.length), 1 + (i % 3)]);
  for (const [data, priority] of puts) q.send(data, { priority });
  await q.flush();
  // Then max-batch before max-item: 2-byte items, 40 to a PUTS.
  for (let i = 0; i < 50; i++) puts.push([`${i % 10}${i % 2}`, 4 + (i % 2)]);
  for (const [data, priority] of puts.slice(129)) q.send(data, { priority });
  await q.flush();

  const summary = frames.map((m) => [String(m[1]), Number(m[3]), m[1] === 'PUTS' ? Number(m[4]) : 1, m[1] === 'PUTS' ? m[8] && String(m[8]) : m[7] && String(m[7])]);
  assert.deepStrictEqual(summary, [
    ['PUTS', 1, 29, undefined], ['PUTS', 30, 22, 'each'], ['PUTS', 52, 22, 'each'], ['PUTS', 74, 22, 'each'],
    ['PUTS', 96, 22, 'each'], ['PUTS', 118, 12, 'each'], ['PUTS', 130, 40, 'each'], ['PUTS', 170, 10, 'each'],
  ]);
  const entries = [];
  for (const m of frames) {
    assert.ok(m[7].length <= 1000, `an items frame of ${m[7].length} bytes`);
    if (m[8] === undefined) {
      for (let at = 0; at < m[7].length; at += 4 + m[7].readUInt32BE(at)) {
        entries.push(['', m[7].toString('utf8', at + 4, at + 4 + m[7].readUInt32BE(at))]);
      }
    } else entries.push(...eachEntries(m[7]));
  }
  assert.deepStrictEqual(entries, puts.map(([data, p]) => [p ? `priority=${p}` : '', data]));
  assert.strictEqual(frames[1][7].length, 22 * 45);
  const order = puts.map((put, i) => [put, i]).sort(([a, i], [b, j]) => a[1] - b[1] || i - j).map(([[data]]) => data);
  assert.deepStrictEqual(await take(q, puts.length), order);
  assert.strictEqual((await q.stats()).puts, puts.length);
}));

// A producer with no session or socket: the batching alone, its messages kept.
function bareProducer(welcome) {
  const producer = Object.create(Producer.prototype);
  Object.assign(producer, {
    session: { clientId: 'bare', welcome: { maxBatch: 1000, window: 1000, windowBytes: 1 << 20, maxItem: 1 << 20, ...welcome } },
    seq: 0, confirmed: 0, unconfirmed: [], unconfirmedPuts: 0, unconfirmedBytes: 0, batch: null, waiting: [],
    syncing: null, closed: false, sent: [],
  });
  producer.pushSend = (frames) => producer.sent.push(frames);
  producer.startSync = () => {};
  return producer;
}

test('window-bytes counts the items frames as sent, options of each entry included', () => {
  const producer = bareProducer({ windowBytes: 1000, maxItem: 1000 });
  const put = (options, size = 30) => ({ queue: 'q', payload: Buffer.alloc(size, 'x'), leaseMs: 0, options });
  // 621 bytes unconfirmed, then 10 plain entries (340 bytes) in the batch.
  producer.add(put('', 617));
  producer.sendBatch();
  assert.strictEqual(producer.unconfirmedBytes, 617); // a PUT: its item
  producer.unconfirmedBytes = 621;
  for (let i = 0; i < 10; i++) producer.add(put(''));
  // One more like them: 995 bytes. One with options: each, 21 more (its
  // options and their length, and a length byte for each of the ten): 1016.
  assert.strictEqual(producer.fits(put('')), true);
  assert.strictEqual(producer.fits(put('priority=1')), false);
  assert.strictEqual(producer.fits({ ...put('priority=1'), queue: 'other' }), true); // another PUTS
  assert.strictEqual(producer.fits({ ...put('priority=1'), leaseMs: 5 }), true);
  producer.unconfirmedBytes = 600;
  assert.strictEqual(producer.fits(put('priority=1')), true);
  producer.add(put('priority=1'));
  assert.strictEqual(producer.batch.bytes, 10 * 35 + 45);
  // Each already: a put adds its entry, its options and their length.
  assert.strictEqual(producer.fits(put('priority=2')), false); // 600 + 395 + 45
  assert.strictEqual(producer.fits(put('')), false); // 600 + 395 + 35
  producer.unconfirmedBytes = 560;
  assert.strictEqual(producer.fits(put('priority=2')), true); // 1000
  assert.strictEqual(producer.fits(put('')), true);
  producer.sendBatch();
  const [, frames] = producer.sent;
  assert.strictEqual(String(frames[8]), 'each');
  assert.strictEqual(frames[7].length, 395);
  assert.deepStrictEqual(eachEntries(frames[7]).map(([options]) => options), [...Array(10).fill(''), 'priority=1']);
  assert.strictEqual(producer.unconfirmedBytes, 560 + 395);
  assert.deepStrictEqual(producer.unconfirmed.map((m) => m.bytes), [617, 395]);
});

test('a full queue holds puts of mixed priorities back: window-bytes kept, none refused', () => withBroker(Broker.start(['--maxsize', '5', '--window-bytes', String(1024 * 1024)]), async (broker, client) => {
  const q = client({ queue: 'full-each' });
  const consumer = client({ queue: 'full-each', prefetch: 10 });
  await q.stats();
  const sendMessage = q.producer.sendMessage.bind(q.producer);
  let most = 0;
  q.producer.sendMessage = (...args) => {
    sendMessage(...args);
    most = Math.max(most, q.producer.unconfirmedBytes);
  };
  const errors = [];
  q.producer.onError = (error) => errors.push(error);
  // 50 KB items: 20 fill window-bytes, with their priorities in each entry.
  const items = Array.from({ length: 100 }, (_, i) => `item-${i}`.padEnd(49990, '.'));
  const flushed = Promise.all(items.map((item, i) => q.send(item, { priority: i % 7 }))).then(() => q.flush());
  const got = (await take(consumer, 100));
  await flushed;
  assert.deepStrictEqual(errors, []);
  assert.ok(most <= 1024 * 1024, `${most} bytes unconfirmed`);
  assert.deepStrictEqual(got.sort(), items.sort());
  assert.strictEqual((await q.stats()).puts, 100);
}));
