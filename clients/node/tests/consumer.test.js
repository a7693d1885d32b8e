'use strict';
// Consumers in version 2: CREDITED, ITEMS, acks in one frame, credit
// withdrawn, TOUCH and NACK; heartbeats answered.
const test = require('node:test');
const assert = require('node:assert');
const { Broker, withBroker, until } = require('./broker');
const { BrokerError } = require('..');
const { encodeIds, decodeItems, cutText } = require('../protocol');

const delay = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

test('ids above 2^53 and ITEMS frames decode exactly', () => {
  const id = '18446744073709551615'; // 2^64 - 1
  assert.strictEqual(encodeIds([id, '1']).toString('hex'), 'ffffffffffffffff0000000000000001');
  const entry = Buffer.alloc(28 + 3);
  entry.write('ffffffffffffffff00000002000000000000000700000064' + '00000003', 'hex');
  entry.write('abc', 28);
  assert.deepStrictEqual(decodeItems(entry, 1),
    [{ id, attempt: 2, ageUs: 7, leaseMs: 100, data: Buffer.from('abc'), priority: null }]);
  assert.strictEqual(decodeItems(entry, 2), null); // count and frame disagree
  assert.strictEqual(decodeItems(entry.subarray(0, 30), 1), null);
  const reason = cutText(`a${'é'.repeat(600)}`); // 1201 bytes: byte 1024 is inside an é
  assert.strictEqual(reason.toString(), `a${'é'.repeat(511)}`);
});

test('ITEMS: deliveries in batches, acks of one tick in one ACK', () => withBroker(Broker.start(), async (broker, client) => {
  const producer = client({ queue: 'batches' });
  const items = Array.from({ length: 200 }, (_, i) => `item-${i}`);
  for (const item of items) await producer.send(item);
  await producer.flush();
  const q = client({ queue: 'batches', credit: 50 });
  const got = [await q.get()];
  // Sent ahead in the same ITEMS as the first: here already.
  while (got.length < 50) got.push(q.getNowait());
  const acks = [];
  const send = q.consumer.session.send.bind(q.consumer.session);
  q.consumer.session.send = (frames) => {
    if (frames[1] === 'ACK') acks.push(frames[3]);
    return send(frames);
  };
  for (const item of got) q.taskDone(item);
  await new Promise(setImmediate);
  assert.deepStrictEqual(acks, [encodeIds(got.map((item) => item.id))]);
  while (got.length < 200) {
    got.push(await q.get());
    q.taskDone();
  }
  assert.deepStrictEqual(got.map(String), items);
  for (const item of got) {
    assert.match(item.id, /^\d+$/);
    assert.deepStrictEqual([item.attempt, item.leaseMs, item.queue], [1, 60000, 'batches']);
    assert.ok(item.ageUs >= 0);
  }
  await producer.join({ timeout: 10 });
  assert.strictEqual((await producer.stats()).acked, 200);
}));

test('get() waits for CREDITED: credit in force, or refused', () => withBroker(Broker.start(['--max-credit', '100']), async (broker, client) => {
  const q = client({ queue: 'credited' });
  await q.consumerSession();
  assert.strictEqual((await q.stats()).consumers, 1); // no need to wait: CREDITED came
  const greedy = client({ queue: 'credited', credit: 101 });
  await assert.rejects(greedy.get(), (e) => e instanceof BrokerError && e.code === 429);
}));

test('credit withdrawn after expired leases comes back with the next get()', { timeout: 20000 }, () => withBroker(Broker.start(['--lease-ms', '100', '--max-expired', '1']), async (broker, client) => {
  const q = client({ queue: 'withdrawn' });
  await q.put('slow');
  const first = await q.get();
  await until(() => q.errors.some((e) => e.code === 408 && e.subject === 'withdrawn'));
  const again = await q.get(); // sends CREDIT again, or nothing would come
  assert.deepStrictEqual([again.toString(), again.id, again.attempt], ['slow', first.id, 2]);
  q.taskDone(again);
  assert.deepStrictEqual(await q.join({ timeout: 10 }), { count: 0, dead: 0 });
}));

test('touch keeps an item, nack gives it back', () => withBroker(Broker.start(['--lease-ms', '1000']), async (broker, client) => {
  const q = client({ queue: 'leases' });
  await q.put('long job');
  const item = await q.get();
  for (let i = 0; i < 6; i++) {
    await delay(200);
    await q.touch(item);
  }
  const stats = await q.stats(); // longer than the lease after the delivery
  assert.deepStrictEqual([stats.expired, stats.inflight], [0, 1]);
  await assert.rejects(q.nack(item, 86401), RangeError);
  await q.nack(item, 0.05, 'try again later');
  const again = await q.get();
  assert.deepStrictEqual([again.id, again.attempt], [item.id, 2]);
  q.taskDone(again);
  assert.rejects(q.touch(again), /no item/);
  assert.deepStrictEqual(await q.join({ timeout: 10 }), { count: 0, dead: 0 });
}));

test('close() ends a get() still waiting', () => withBroker(Broker.start(), async (broker, client) => {
  const q = client({ queue: 'closing' });
  const getter = q.get();
  await q.consumerSession();
  await q.close();
  await assert.rejects(getter, /closed/);
}));

test('heartbeats answered: a client idle for many intervals keeps its sessions', () => withBroker(Broker.start(['--heartbeat-ms', '50', '--max-pending', '4096']), async (broker, client) => {
  const q = client({ queue: 'idle' });
  const getter = q.get();
  await q.stats();
  // Thirty replies of about 280 bytes, one per interval: a client that did
  // not answer HEARTBEAT would pass --max-pending and lose its session.
  for (let i = 0; i < 30; i++) {
    await q.stats();
    await delay(50);
  }
  await q.put('late');
  assert.strictEqual((await getter).toString(), 'late');
  q.taskDone();
  assert.deepStrictEqual([q.producer.session.generation, q.consumer.session.generation], [1, 1]); // one HELLO each
}));
