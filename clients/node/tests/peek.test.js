'use strict';
// peek(), pause() and resume() (PROTOCOL.md 4.14, broker 2.2) against the
// real broker, and the parser of a PEEK line.
const test = require('node:test');
const assert = require('node:assert');
const { Broker, withBroker } = require('./broker');
const { parsePeeked } = require('../protocol');
const { BrokerError } = require('..');

// Waits here are on conditions; one that never comes fails the test, not hangs it.
const LIMIT = { timeout: 60000 };

test('parser: the documented line, escapes undone, cuts and unknown fields', () => {
  assert.deepStrictEqual(parsePeeked('id=4294967299 attempts=0 size=6 priority=-1 age_ms=5 payload="urgent"'), {
    id: '4294967299', attempts: 0, size: 6, priority: -1, ageMs: 5, payload: Buffer.from('urgent'), payloadCut: false,
  });
  const line = String.raw`id=18446744073709551615 attempts=2 size=90 priority=2147483647 age_ms=1500 lease_ms=9 `
    + String.raw`payload="\"a\" \\ \x00\xff x=y"... later="z" flag`;
  assert.deepStrictEqual(parsePeeked(Buffer.from(line)), {
    id: '18446744073709551615', attempts: 2, size: 90, priority: 2147483647, ageMs: 1500,
    payload: Buffer.concat([Buffer.from('"a" \\ '), Buffer.from([0, 0xff]), Buffer.from(' x=y')]), payloadCut: true,
  });
  for (const bad of ['id=1 attempts=0 size=0 age_ms=1', 'id=1 attempts=0 size=0 priority=x age_ms=1']) {
    assert.throws(() => parsePeeked(bad), /not a PEEK line/);
  }
});

test('peek: what comes next, a priority item first, and nothing taken', LIMIT, () => withBroker(Broker.start(), async (broker, client) => {
  const q = client({ queue: 'peeked' });
  assert.deepStrictEqual(await q.peek(), []); // a queue the broker does not have
  const long = Buffer.concat([Buffer.from('a "long" \\ one'), Buffer.from([0, 0xff]), Buffer.alloc(100, 'x')]);
  await q.put('first');
  await q.put(long);
  await q.put('urgent', { priority: -1 });
  await q.put('later', { delay: 3600 }); // delayed: not next, not shown
  const peeked = await q.peek();
  assert.deepStrictEqual(peeked.map((item) => [item.payload, item.payloadCut, item.size, item.priority, item.attempts]), [
    [Buffer.from('urgent'), false, 6, -1, 0], [Buffer.from('first'), false, 5, 0, 0], [long.subarray(0, 64), true, long.length, 0, 0],
  ]);
  assert.ok(peeked.every((item) => item.ageMs >= 0 && item.ageMs < 60000 && /^\d+$/.test(item.id)));
  assert.deepStrictEqual((await q.peek(2)).map((item) => item.id), peeked.slice(0, 2).map((item) => item.id));
  const stats = await q.stats();
  assert.deepStrictEqual([stats.queued, stats.inflight, stats.delivered], [3, 0, 0]);
  const got = [await q.get(), await q.get(), await q.get()]; // in the order peek showed
  assert.deepStrictEqual(got.map((item) => item.id), peeked.map((item) => item.id));
  assert.deepStrictEqual(got[2].data, long);
  assert.deepStrictEqual(await q.peek(), []); // being processed: not shown
  for (const item of got) q.taskDone(item);
  await assert.rejects(q.peek(0), RangeError);
  await assert.rejects(q.peek(1025), RangeError);
  await assert.rejects(q.peek('3'), TypeError);
}));

test('pause stops deliveries, resume delivers', LIMIT, () => withBroker(Broker.start(), async (broker, client) => {
  const admin = client({ queue: 'paused' });
  const consumer = client({ queue: 'paused' });
  const paused = await admin.pause(); // before the queue has an item: it is made
  assert.deepStrictEqual([paused.queue, paused.paused], ['paused', 1]);
  await admin.put('held back');
  assert.strictEqual((await admin.stats()).paused, 1);
  // Paused: nothing comes (a negative check: a short wait).
  await assert.rejects(consumer.get({ signal: AbortSignal.timeout(300) }), (error) => error.name === 'TimeoutError');
  assert.deepStrictEqual((await consumer.peek()).map((item) => item.payload.toString()), ['held back']);
  const waiting = consumer.get();
  const resumed = await admin.resume();
  assert.deepStrictEqual([resumed.paused, resumed.queued + resumed.inflight], [0, 1]);
  const item = await waiting;
  assert.strictEqual(item.toString(), 'held back');
  consumer.taskDone(item);
  assert.strictEqual((await admin.join({ timeout: 10 })).dead, 0);
  assert.strictEqual((await admin.resume()).paused, 0); // not paused: as it is
}));

test('pause and resume need the admin role, peek consume or admin', LIMIT, () => withBroker(
  Broker.startCurve({ worker: 'produce,consume', producer: 'produce', admin: 'admin' }), async (broker, client) => {
    const as = (name) => client({ queue: 'guarded', curveSecret: broker.secretKey(name), serverKey: broker.publicKey() });
    const [worker, producer, admin] = [as('worker'), as('producer'), as('admin')];
    const refused = (error) => error instanceof BrokerError && error.code === 403 && error.text.length > 0;
    await worker.put('x');
    await assert.rejects(worker.pause(), refused);
    await assert.rejects(worker.resume(), refused);
    await assert.rejects(producer.pause(), refused);
    await assert.rejects(producer.peek(), refused);
    assert.strictEqual((await worker.stats()).paused, 0); // nothing changed
    assert.deepStrictEqual((await worker.peek()).map((item) => item.payload.toString()), ['x']);
    assert.deepStrictEqual((await admin.peek()).map((item) => item.payload.toString()), ['x']);
    assert.strictEqual((await admin.pause()).paused, 1);
    assert.strictEqual((await admin.resume()).paused, 0);
    worker.taskDone(await worker.get());
  },
));
