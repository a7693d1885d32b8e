'use strict';
// CPython's Lib/test/test_asyncio/test_queues.py, the behaviours that make
// sense over a network, against the real C broker.
const test = require('node:test');
const assert = require('node:assert');
const { Broker } = require('./broker');
const { Queue, BrokerError, QueueEmpty, TimeoutError } = require('..');

let names = 0;
// Whether promise settles within 200 ms: to check that something waits.
const settlesSoon = (promise) => Promise.race([promise.then(() => true, () => true),
  new Promise((r) => setTimeout(() => r(false), 200))]);
// Waits until the broker's stats of q's queue show key=value.
async function untilStat(q, key, value) {
  while ((await q.stats())[key] !== value) await new Promise((r) => setTimeout(r, 10));
}

test('queue semantics', async (t) => {
  const broker = await Broker.start();
  const clients = [];
  const client = (name, options = {}) => {
    const q = new Queue(broker.address, { queue: name, ...options });
    clients.push(q);
    return q;
  };
  t.after(async () => {
    for (const q of clients) await q.close({ timeout: 10 });
    await broker.stop();
  });

  await t.test('FIFO order with one consumer', async () => {
    const q = client(`fifo-${++names}`);
    for (let i = 0; i < 20; i++) await q.put(String(i));
    const got = [];
    for (let i = 0; i < 20; i++) {
      got.push(Number((await q.get()).toString()));
      q.taskDone();
    }
    assert.deepStrictEqual(got, [...Array(20).keys()]);
  });

  await t.test('stats: numbers as numbers, a queue named with digits as a string', async () => {
    const q = client(`${4200 + ++names}`);
    await q.put('x');
    const stats = await q.stats();
    assert.strictEqual(stats.queue, q.queue);
    assert.strictEqual(stats.queued, 1);
    assert.strictEqual(stats.state, 'open');
  });

  await t.test('getNowait takes only what was delivered', async () => {
    const name = `nowait-${++names}`;
    const q = client(name, { credit: 2 });
    assert.throws(() => q.getNowait(), QueueEmpty);
    await q.put('one');
    await q.put('two');
    assert.strictEqual((await q.get()).toString(), 'one');
    await untilStat(q, 'inflight', 2); // "two" was sent ahead to q
    let item;
    while (!item) {
      try {
        item = q.getNowait();
      } catch (error) {
        if (!(error instanceof QueueEmpty)) throw error;
        await new Promise((r) => setTimeout(r, 10)); // on its way from the broker
      }
    }
    assert.strictEqual(item.toString(), 'two');
    q.taskDone(); // "one": got from get() in this async context
    assert.throws(() => q.taskDone(), /got no item from get\(\)/); // "two" came from getNowait()
    q.taskDone(item);
    assert.throws(() => q.getNowait(), QueueEmpty);
  });

  await t.test('taskDone called too many times throws', async () => {
    const q = client(`done-${++names}`);
    await q.put('x');
    assert.throws(() => q.taskDone(), /too many times/);
    await q.get();
    q.taskDone();
    assert.throws(() => q.taskDone(), /too many times/);
  });

  await t.test('join with no items resolves at once', async () => {
    const q = client(`empty-${++names}`);
    assert.deepStrictEqual(await q.join({ timeout: 5 }), { count: 0, dead: 0 });
    assert.strictEqual(await q.qsize(), 0);
  });

  await t.test('join waits for taskDone', async () => {
    const name = `wait-${++names}`;
    const producer = client(name);
    const consumer = client(name);
    for (let i = 0; i < 3; i++) await producer.put(String(i));
    const done = [];
    const worker = (async () => {
      for (let i = 0; i < 3; i++) {
        const item = await consumer.get();
        done.push(item);
        consumer.taskDone(item);
      }
    })();
    await producer.join({ timeout: 30 });
    assert.strictEqual(done.length, 3); // join answered only after every taskDone
    await worker;
    const q = client(name);
    await q.put('held');
    const item = await consumer.get();
    await assert.rejects(q.join({ timeout: 0.2 }), TimeoutError);
    consumer.taskDone(item);
  });

  await t.test('get waits for a put', async () => {
    const name = `get-${++names}`;
    const q = client(name);
    const getter = q.get();
    await untilStat(client(name), 'consumers', 1); // its CREDIT reached the broker
    assert.strictEqual(await settlesSoon(getter), false);
    await client(name).put('late');
    assert.strictEqual((await getter).toString(), 'late');
    q.taskDone();
  });

  await t.test('an aborted get loses no item', async () => {
    const name = `abort-${++names}`;
    const q = client(name);
    const controller = new AbortController();
    const getter = q.get({ signal: controller.signal });
    await untilStat(client(name), 'consumers', 1); // the get() is waiting
    controller.abort();
    await assert.rejects(getter);
    await client(name).put('kept');
    assert.strictEqual((await q.get()).toString(), 'kept');
    q.taskDone();
    assert.deepStrictEqual(await q.join({ timeout: 10 }), { count: 0, dead: 0 });
  });

  await t.test('shutdown: get rejects once the queue is empty', async () => {
    const name = `shut-${++names}`;
    const q = client(name);
    await q.put('last');
    await broker.run('asyncq', 'shutdown', '-q', name);
    assert.strictEqual((await q.get()).toString(), 'last');
    q.taskDone();
    await assert.rejects(q.get(), (e) => e instanceof BrokerError && e.name === 'QueueShutDown');
    await assert.rejects(q.put('refused'), (e) => e instanceof BrokerError && e.code === 503);
  });
});

test('maxsize makes put wait', async () => {
  const broker = await Broker.start(['--maxsize', '1']);
  const q = new Queue(broker.address, { queue: 'maxsize' });
  try {
    await q.put('first');
    const putter = q.put('second');
    assert.strictEqual(await settlesSoon(putter), false); // the queue is full
    assert.strictEqual((await q.stats()).puts, 1); // the broker holds the put back
    assert.strictEqual((await q.get()).toString(), 'first');
    await putter; // room again: the put is accepted
    q.taskDone();
    assert.strictEqual((await q.get()).toString(), 'second');
    q.taskDone();
    await q.join({ timeout: 10 });
  } finally {
    await q.close();
    await broker.stop();
  }
});
