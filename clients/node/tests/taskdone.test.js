'use strict';
// A bare taskDone() acks the item the calling async context got from get(),
// whatever the concurrency; where that cannot be known it throws, and it
// never acks another context's item.
const test = require('node:test');
const assert = require('node:assert');
const { Broker, withBroker, until } = require('./broker');

// Waits here are on conditions; one that never comes fails the test, not hangs it.
const LIMIT = { timeout: 60000 };

// A promise and its resolve, to order workers by conditions, not by time.
function signal() {
  let resolve;
  const promise = new Promise((r) => {
    resolve = r;
  });
  return { promise, resolve };
}

// The ids q's consumer sends in ACKs, as they go out.
function spyAcks(q) {
  const acked = [];
  const send = q.consumer.session.send.bind(q.consumer.session);
  q.consumer.session.send = (frames) => {
    if (frames[1] === 'ACK') {
      for (let at = 0; at < frames[3].length; at += 8) acked.push(frames[3].readBigUInt64BE(at).toString());
    }
    return send(frames);
  };
  return acked;
}

async function putAll(q, items) {
  for (const item of items) await q.send(item);
  await q.flush();
}

// A worker: gets an item, says so (got), waits for its turn (go), then
// acks with a bare taskDone() and says which item it held.
async function worker(q, got, go) {
  const item = await q.get();
  got.resolve(item);
  await go.promise;
  q.taskDone();
  return item;
}

test('two workers that finish in the opposite order to their gets each ack their own', LIMIT, () => withBroker(Broker.start(), async (broker, client) => {
  const q = client({ queue: 'reverse' });
  await putAll(q, ['first', 'second']);
  const [gotA, gotB, goA, goB] = [signal(), signal(), signal(), signal()];
  const a = worker(q, gotA, goA);
  const itemA = await gotA.promise; // A got the older item
  const b = worker(q, gotB, goB);
  const itemB = await gotB.promise;
  assert.deepStrictEqual([itemA.toString(), itemB.toString()], ['first', 'second']);
  const acked = spyAcks(q);
  goB.resolve(); // B finishes first
  await b;
  assert.deepStrictEqual([...q.consumer.taken.keys()], [itemA.id]); // A's item is still held
  goA.resolve();
  await a;
  await new Promise(setImmediate);
  assert.deepStrictEqual(acked, [itemB.id, itemA.id]);
  assert.deepStrictEqual(await q.join({ timeout: 10 }), { count: 0, dead: 0 });
}));

test('workers started side by side by Promise.all: each acks its own, the parent none', LIMIT, () => withBroker(Broker.start(), async (broker, client) => {
  const q = client({ queue: 'siblings' });
  await putAll(q, ['one', 'two', 'three']);
  const got = [signal(), signal()];
  const go = [signal(), signal()];
  const acked = [];
  const both = Promise.all([worker(q, got[0], go[0]), worker(q, got[1], go[1])]);
  const items = await Promise.all(got.map((g) => g.promise));
  // The parent, in its own continuation, got nothing: whatever the workers'
  // get() calls did in the synchronous part they ran in its context.
  assert.throws(() => q.taskDone(), /this async context got no item/);
  // Nor does a callback it starts now, nor a sibling started after the gets.
  await new Promise((resolve) => {
    setImmediate(() => {
      assert.throws(() => q.taskDone(), /this async context got no item/);
      resolve();
    });
  });
  await (async () => assert.throws(() => q.taskDone(), /this async context got no item/))();
  assert.strictEqual(q.consumer.taken.size, 2);
  const spied = spyAcks(q);
  go[1].resolve(); // the second finishes first
  await new Promise(setImmediate);
  await new Promise(setImmediate);
  acked.push(...spied.splice(0));
  go[0].resolve();
  const done = await both;
  await new Promise(setImmediate);
  acked.push(...spied);
  assert.deepStrictEqual(done.map((item) => item.id), items.map((item) => item.id));
  assert.deepStrictEqual(acked, [items[1].id, items[0].id]);
  // A third item, got by the parent itself, is the parent's to ack.
  const third = await q.get();
  q.taskDone();
  assert.strictEqual(q.consumer.taken.has(third.id), false);
  assert.deepStrictEqual(await q.join({ timeout: 10 }), { count: 0, dead: 0 });
}));

test('a context holding two items must say which', LIMIT, () => withBroker(Broker.start(), async (broker, client) => {
  const q = client({ queue: 'two-held' });
  await putAll(q, ['a', 'b', 'c']);
  const a = await q.get();
  const b = await q.get();
  assert.throws(() => q.taskDone(), /this async context holds 2 items from get\(\): say which, taskDone\(item\)/);
  assert.strictEqual(q.consumer.taken.size, 2); // nothing acked
  q.taskDone(a);
  q.taskDone(); // b: the one left in this context
  assert.strictEqual(q.consumer.taken.has(b.id), false);
  // Code the context goes on to (an async helper) acks what it got.
  const helper = async () => {
    await new Promise(setImmediate);
    q.taskDone();
  };
  const c = await q.get();
  await helper();
  assert.strictEqual(q.consumer.taken.has(c.id), false);
  assert.throws(() => q.taskDone(), /called too many times/);
  assert.deepStrictEqual(await q.join({ timeout: 10 }), { count: 0, dead: 0 });
}));

test('taskDone(item) works from any context, by item or id', LIMIT, () => withBroker(Broker.start(), async (broker, client) => {
  const q = client({ queue: 'explicit', prefetch: 1 });
  await putAll(q, ['x', 'y', 'z']);
  const got = signal();
  const go = signal();
  const held = (async () => {
    const item = await q.get();
    got.resolve(item);
    await go.promise;
  })();
  const x = await got.promise;
  q.taskDone(x); // the parent acks the worker's item, named
  go.resolve();
  await held;
  const y = await q.get();
  await until(() => q.consumer.delivered.length === 1); // z, sent ahead (prefetch 1)
  const z = q.getNowait(); // got outside any get()
  q.taskDone(z.id);
  q.taskDone(y);
  assert.throws(() => q.taskDone(y), /no item \d+ is held/);
  assert.strictEqual(q.consumer.taken.size, 0);
  assert.deepStrictEqual(await q.join({ timeout: 10 }), { count: 0, dead: 0 });
}));
