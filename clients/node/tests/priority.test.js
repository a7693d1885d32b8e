'use strict';
// Priorities on deliveries (PROTOCOL.md 4.3, 4.4): PriorityQueue, and
// Queue's priorities option, ask for them in every CREDIT (its 5th field,
// `priority`); the broker then sends each ITEM's priority as a 7th field
// and each ITEMS' priorities as a 4th frame. A plain Queue sends the 4
// fields of before and its items' priority is null. Both forms of each
// message decode; one not as 4.4 says is dropped whole.
const test = require('node:test');
const assert = require('node:assert');
const { Broker, withBroker } = require('./broker');
const { Queue, PriorityQueue, Item } = require('..');
const { Consumer } = require('../consumer');
const { Session } = require('../session');
const { decodeDeliveries, parseAddress } = require('../protocol');

// Waits here are on conditions; one that never comes fails the test, not hangs it.
const LIMIT = { timeout: 60000 };

// An ITEMS entry (4.4): id, attempt, age, lease, length, payload.
function entry(id, payload) {
  const head = Buffer.alloc(28);
  head.writeBigUInt64BE(BigInt(id), 0);
  head.writeUInt32BE(1, 8);
  head.writeBigUInt64BE(5n, 12);
  head.writeUInt32BE(1000, 20);
  head.writeUInt32BE(payload.length, 24);
  return Buffer.concat([head, Buffer.from(payload)]);
}

function int32s(...values) {
  const frame = Buffer.alloc(values.length * 4);
  values.forEach((value, i) => frame.writeInt32BE(value, i * 4));
  return frame;
}

const frames = (...fields) => fields.map((field) => (Buffer.isBuffer(field) ? field : Buffer.from(String(field))));

test('ITEM: 6 fields, no priority; 7 fields, a signed int32; anything else malformed', () => {
  const item = ['jobs', '18446744073709551615', '2', '7', '100', 'abc'];
  assert.deepStrictEqual(decodeDeliveries('ITEM', frames(...item)), {
    queue: 'jobs',
    deliveries: [{
      id: '18446744073709551615', attempt: 2, ageUs: 7, leaseMs: 100, data: Buffer.from('abc'), priority: null,
    }],
  });
  for (const [text, value] of [['0', 0], ['-1', -1], ['5', 5], ['-2147483648', -2147483648],
    ['2147483647', 2147483647], ['-0', 0], ['007', 7]]) {
    const decoded = decodeDeliveries('ITEM', frames(...item, text));
    assert.ok(Object.is(decoded.deliveries[0].priority, value), `${text}: ${decoded.deliveries[0].priority}`);
  }
  for (const bad of ['', '-', '+1', '1.5', ' 1', '2147483648', '-2147483649', '99999999999999999999', '0x10', 'one']) {
    assert.strictEqual(decodeDeliveries('ITEM', frames(...item, bad)), null, JSON.stringify(bad));
  }
  assert.strictEqual(decodeDeliveries('ITEM', frames(...item.slice(0, 5))), null);
  assert.strictEqual(decodeDeliveries('ITEM', frames(...item, '1', '2')), null);
});

test('ITEMS: 3 frames, no priorities; a 4th, count big-endian int32; anything else malformed', () => {
  const batch = Buffer.concat([entry(1, 'a'), entry(2, 'bb'), entry(3, '')]);
  const plain = decodeDeliveries('ITEMS', frames('jobs', '3', batch));
  assert.deepStrictEqual(plain.deliveries.map((d) => [d.id, d.data.toString(), d.priority]),
    [['1', 'a', null], ['2', 'bb', null], ['3', '', null]]);
  const ranked = decodeDeliveries('ITEMS', frames('jobs', '3', batch, int32s(-2147483648, -1, 2147483647)));
  assert.deepStrictEqual(ranked.deliveries.map((d) => [d.id, d.priority]),
    [['1', -2147483648], ['2', -1], ['3', 2147483647]]);
  assert.strictEqual(ranked.queue, 'jobs');
  // Two's complement, byte by byte.
  assert.deepStrictEqual(decodeDeliveries('ITEMS', frames('q', '1', entry(9, 'x'), Buffer.from('fffffffe', 'hex')))
    .deliveries[0].priority, -2);
  for (const bad of [int32s(1, 2), int32s(1, 2, 3, 4), Buffer.alloc(11), Buffer.alloc(13), Buffer.alloc(0)]) {
    assert.strictEqual(decodeDeliveries('ITEMS', frames('jobs', '3', batch, bad)), null, bad.toString('hex'));
  }
  assert.strictEqual(decodeDeliveries('ITEMS', frames('jobs', '3', batch, int32s(1, 2, 3), int32s(4))), null);
  assert.strictEqual(decodeDeliveries('ITEMS', frames('jobs', '3')), null);
  assert.strictEqual(decodeDeliveries('ITEMS', frames('jobs', '2', batch, int32s(1, 2))), null); // count and batch disagree
  assert.strictEqual(decodeDeliveries('CREDITED', frames('t', 'jobs', '1')), null);
});

test('a consumer drops a malformed ITEM or ITEMS whole, and takes the next', async () => {
  const consumer = new Consumer(parseAddress('127.0.0.1:9'), 'malformed-get', 'jobs', { priorities: true });
  try {
    const batch = Buffer.concat([entry(1, 'a'), entry(2, 'b')]);
    consumer.onMessage('ITEMS', frames('jobs', '2', batch, int32s(1))); // one priority for two items
    consumer.onMessage('ITEM', frames('jobs', '3', '1', '0', '1000', 'c', 'high')); // not a number
    consumer.onMessage('ITEM', frames('jobs', '4', '1', '0', '1000', 'd', '1', 'extra'));
    assert.strictEqual(consumer.delivered.length, 0);
    consumer.onMessage('ITEMS', frames('jobs', '2', batch, int32s(3, -4)));
    consumer.onMessage('ITEM', frames('jobs', '5', '1', '0', '1000', 'e', '-6'));
    consumer.onMessage('ITEM', frames('jobs', '6', '1', '0', '1000', 'f'));
    assert.ok(consumer.delivered.every((item) => item instanceof Item));
    assert.deepStrictEqual(consumer.delivered.map((item) => [item.id, item.toString(), item.priority]),
      [['1', 'a', 3], ['2', 'b', -4], ['5', 'e', -6], ['6', 'f', null]]);
  } finally {
    await consumer.close();
  }
});

test('priorities is a boolean; PriorityQueue always asks', () => {
  assert.throws(() => new Queue('localhost', { priorities: 'yes' }), TypeError);
  assert.throws(() => new Queue('localhost', { priorities: 1 }), TypeError);
  assert.strictEqual(new Queue('localhost').priorities, false);
  assert.strictEqual(new Queue('localhost', { priorities: true }).priorities, true);
  assert.strictEqual(new PriorityQueue('localhost').priorities, true);
  assert.strictEqual(new PriorityQueue('localhost', { priorities: false }).priorities, true);
  assert.ok(PriorityQueue.prototype instanceof Queue);
});

// Records, while body runs, the CREDITs sent and the ITEM and ITEMS
// received by every consumer: { credits: [{ session, fields }], deliveries:
// [{ consumer, command, fields }] }.
async function watching(body) {
  const seen = { credits: [], deliveries: [] };
  const { send } = Session.prototype;
  const { onMessage } = Consumer.prototype;
  Session.prototype.send = function spySend(message) {
    if (message[1] === 'CREDIT') seen.credits.push({ session: this, fields: message.slice(2).map(String) });
    return send.call(this, message);
  };
  Consumer.prototype.onMessage = function spyMessage(command, fields) {
    if (command === 'ITEM' || command === 'ITEMS') seen.deliveries.push({ consumer: this, command, fields });
    return onMessage.call(this, command, fields);
  };
  try {
    await body(seen);
  } finally {
    Session.prototype.send = send;
    Consumer.prototype.onMessage = onMessage;
  }
}

// A client whose consumer asks for one ITEM per item (CREDIT batch 0), not ITEMS.
const oneByOne = (Base) => class extends Base {
  consumerOptions() {
    return { ...super.consumerOptions(), batch: 0 };
  }
};

// Puts 5, -1, 3 and 0 (each confirmed: no consumer waits), then gets four
// items with q: [data, priority] in the order got.
async function putAndGet(producer, q) {
  for (const priority of [5, -1, 3, 0]) await producer.put(`p${priority}`, { priority });
  const got = [];
  for (let i = 0; i < 4; i++) {
    const item = await q.get();
    got.push([item.toString(), item.priority]);
    q.taskDone(item);
  }
  return got;
}

const RANKED = [['p-1', -1], ['p0', 0], ['p3', 3], ['p5', 5]];

test('PriorityQueue: lowest priority first, each item with its priority, by ITEMS', LIMIT, () => watching((seen) => withBroker(Broker.start(), async (broker, client) => {
  const producer = client({ queue: 'ranked' });
  const q = client({ queue: 'ranked' }, PriorityQueue);
  assert.deepStrictEqual(await putAndGet(producer, q), RANKED);
  const mine = seen.deliveries.filter((d) => d.consumer === q.consumer);
  assert.ok(mine.length > 0 && mine.every((d) => d.command === 'ITEMS' && d.fields.length === 4), JSON.stringify(mine.map((d) => [d.command, d.fields.length])));
  const credits = seen.credits.filter((c) => c.session === q.consumer.session);
  assert.ok(credits.length > 0);
  for (const { fields } of credits) {
    assert.strictEqual(fields.length, 5, fields.join(' '));
    assert.deepStrictEqual([fields[1], fields[4]], ['ranked', 'priority']);
    assert.notStrictEqual(fields[3], '0'); // a batch: ITEMS
  }
  assert.deepStrictEqual(await q.join({ timeout: 10 }), { count: 0, dead: 0 });
})));

test('PriorityQueue with prefetch: several items in one ITEMS, each with its priority', LIMIT, () => watching((seen) => withBroker(Broker.start(), async (broker, client) => {
  const producer = client({ queue: 'ranked-batch' });
  const q = client({ queue: 'ranked-batch', prefetch: 3 }, PriorityQueue);
  assert.deepStrictEqual(await putAndGet(producer, q), RANKED);
  const mine = seen.deliveries.filter((d) => d.consumer === q.consumer);
  // The first get() gave credit 4, and the four items were there: one ITEMS of 4.
  assert.deepStrictEqual(mine.map((d) => [d.command, d.fields.length, d.fields[1].toString()]), [['ITEMS', 4, '4']]);
  assert.strictEqual(mine[0].fields[3].length, 16);
})));

test('PriorityQueue, one ITEM per item: the 7th field', LIMIT, () => watching((seen) => withBroker(Broker.start(), async (broker, client) => {
  const producer = client({ queue: 'ranked-single' });
  const q = client({ queue: 'ranked-single', prefetch: 3 }, oneByOne(PriorityQueue));
  assert.deepStrictEqual(await putAndGet(producer, q), RANKED);
  const mine = seen.deliveries.filter((d) => d.consumer === q.consumer);
  assert.deepStrictEqual(mine.map((d) => [d.command, d.fields.length]), Array(4).fill(['ITEM', 7]));
  for (const { fields } of seen.credits.filter((c) => c.session === q.consumer.session)) {
    assert.deepStrictEqual([fields.length, fields[3], fields[4]], [5, '0', 'priority']);
  }
})));

test('the extreme priorities, by ITEM and by ITEMS', LIMIT, () => withBroker(Broker.start(), async (broker, client) => {
  const producer = client({ queue: 'extremes' });
  for (const Class of [PriorityQueue, oneByOne(PriorityQueue)]) {
    const q = client({ queue: 'extremes', prefetch: 2 }, Class);
    await producer.put('max', { priority: 2147483647 });
    await producer.put('zero');
    await producer.put('min', { priority: -2147483648 });
    const got = [];
    for (let i = 0; i < 3; i++) {
      const item = await q.get();
      got.push([item.toString(), item.priority]);
      q.taskDone(item);
    }
    assert.deepStrictEqual(got, [['min', -2147483648], ['zero', 0], ['max', 2147483647]], Class.name);
    await q.close();
  }
}));

test('Queue with priorities: true asks as PriorityQueue does', LIMIT, () => withBroker(Broker.start(), async (broker, client) => {
  const producer = client({ queue: 'opted-in' });
  const q = client({ queue: 'opted-in', priorities: true });
  assert.deepStrictEqual(await putAndGet(producer, q), RANKED);
}));

test('a plain Queue: CREDIT of 4 fields, and items without priority, by ITEMS and by ITEM', LIMIT, () => watching((seen) => withBroker(Broker.start(), async (broker, client) => {
  const producer = client({ queue: 'plain' });
  for (const Class of [Queue, oneByOne(Queue)]) {
    const q = client({ queue: 'plain', prefetch: 1 }, Class);
    const got = await putAndGet(producer, q);
    // The broker orders by priority all the same; the items do not say it.
    assert.deepStrictEqual(got, RANKED.map(([data]) => [data, null]), Class.name);
    const credits = seen.credits.filter((c) => c.session === q.consumer.session);
    assert.ok(credits.length > 0);
    for (const { fields } of credits) assert.strictEqual(fields.length, 4, fields.join(' '));
    const mine = seen.deliveries.filter((d) => d.consumer === q.consumer);
    const form = Class === Queue ? ['ITEMS', 3] : ['ITEM', 6];
    assert.ok(mine.length > 0 && mine.every((d) => d.command === form[0] && d.fields.length === form[1]),
      JSON.stringify(mine.map((d) => [d.command, d.fields.length])));
    await q.close();
  }
})));

test('after a reconnect, the CREDIT still asks for priorities', LIMIT, () => watching((seen) => withBroker(Broker.start(), async (broker, client) => {
  const producer = client({ queue: 'again' });
  const q = client({ queue: 'again' }, PriorityQueue);
  await producer.put('first', { priority: 2 });
  const first = await q.get();
  assert.strictEqual(first.priority, 2);
  q.taskDone(first);
  await q.join({ timeout: 10 }); // the ack is in
  const sent = seen.credits.filter((c) => c.session === q.consumer.session).length;
  // A second HELLO: a fresh session, as after a broker restart; the
  // consumer sends its CREDIT again.
  assert.strictEqual(await q.consumer.session.hello(5000), true);
  await producer.put('second', { priority: -7 });
  const second = await q.get();
  assert.deepStrictEqual([second.toString(), second.priority], ['second', -7]);
  q.taskDone(second);
  const credits = seen.credits.filter((c) => c.session === q.consumer.session);
  assert.ok(credits.length > sent);
  for (const { fields } of credits) assert.strictEqual(fields[4], 'priority');
})));
