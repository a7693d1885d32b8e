'use strict';
// Put options (PROTOCOL.md 4.1): priority, delay, at, and LifoQueue's front;
// their options frame, batching by options, and bad options refused.
const test = require('node:test');
const assert = require('node:assert');
const { performance } = require('perf_hooks');
const { Broker, withBroker, until } = require('./broker');
const { BrokerError, LifoQueue } = require('..');
const { putOptionsOf } = require('../queue');

// Records the messages q sends on its PUSH socket, as [command, count,
// options frame] (null: no options frame).
function spyPuts(q) {
  const sent = [];
  const pushSend = q.producer.pushSend.bind(q.producer);
  q.producer.pushSend = (frames) => {
    const [, command] = frames;
    const puts = command === 'PUTS';
    const options = frames[puts ? 8 : 7];
    assert.ok(frames.length <= (puts ? 9 : 8), `${frames.length} frames`);
    sent.push([command, puts ? Number(frames[4]) : 1, options === undefined ? null : String(options)]);
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

test('priorities: lowest first, first in, first out within one; a batch per run of equal options', () => withBroker(Broker.start(), async (broker, client) => {
  const q = client({ queue: 'priorities' });
  await q.stats();
  const sent = spyPuts(q);
  const puts = [
    ['five-1', 5], ['five-2', 5], ['zero-1', undefined], ['zero-2', 0], ['minus-1', -3], ['minus-2', -3],
    ['five-3', 5], ['zero-3', undefined], ['max', 2147483647], ['min', -2147483648], ['minus-3', -3],
  ];
  for (const [item, priority] of puts) await q.send(item, priority === undefined ? {} : { priority });
  await q.flush();
  assert.deepStrictEqual(sent, [
    ['PUTS', 2, 'priority=5'], ['PUTS', 2, null], ['PUTS', 2, 'priority=-3'], ['PUT', 1, 'priority=5'],
    ['PUT', 1, null], ['PUT', 1, 'priority=2147483647'], ['PUT', 1, 'priority=-2147483648'], ['PUT', 1, 'priority=-3'],
  ]);
  assert.strictEqual((await q.stats()).queued, puts.length);
  assert.deepStrictEqual(await take(q, puts.length), [
    'min', 'minus-1', 'minus-2', 'minus-3', 'zero-1', 'zero-2', 'zero-3', 'five-1', 'five-2', 'five-3', 'max',
  ]);
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
