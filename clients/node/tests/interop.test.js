'use strict';
// The Node.js client against the real C broker and the C programs.
const test = require('node:test');
const assert = require('node:assert');
const { Broker } = require('./broker');
const { Queue } = require('..');

test('put from Node, consume in C', async () => {
  const broker = await Broker.start();
  const q = new Queue(broker.address, { queue: 'node2c' });
  try {
    const sent = Array.from({ length: 50 }, (_, i) => `item-${i}`);
    for (const item of sent) await q.put(item);
    const out = await broker.run('asyncq-consumer', '-q', 'node2c', '--count', '50', '--max-sleep', '0', '--credit', '8');
    const got = [...out.matchAll(/got element <([^>]*)>/g)].map((m) => m[1]);
    assert.deepStrictEqual(got.sort(), sent.sort());
    assert.deepStrictEqual(await q.join({ timeout: 10 }), { count: 0, dead: 0 });
    const stats = await q.stats();
    assert.deepStrictEqual([stats.puts, stats.acked, stats.outstanding], [50, 50, 0]);
  } finally {
    await q.close();
    await broker.stop();
  }
});

test('put from C, consume in Node, in order', async () => {
  const broker = await Broker.start();
  const q = new Queue(broker.address, { queue: 'c2node', credit: 4 });
  try {
    const out = await broker.run('asyncq-producer', '-q', 'c2node', '--count', '30', '--max-sleep', '0');
    const sent = [...out.matchAll(/added <([^>]*)>/g)].map((m) => m[1]);
    assert.strictEqual(sent.length, 30);
    const got = [];
    for (let i = 0; i < 30; i++) {
      const item = await q.get();
      assert.strictEqual(item.attempt, 1);
      got.push(item.toString());
      q.taskDone(item);
    }
    assert.deepStrictEqual(got, sent);
    assert.deepStrictEqual(await q.join({ timeout: 10 }), { count: 0, dead: 0 });
  } finally {
    await q.close();
    await broker.stop();
  }
});

test('bulk both ways: PUTS from Node to a C consumer, ITEMS from a C producer to Node', async () => {
  const broker = await Broker.start();
  const producer = new Queue(broker.address, { queue: 'bulk' });
  const consumer = new Queue(broker.address, { queue: 'bulk', credit: 64 });
  try {
    const sent = Array.from({ length: 1000 }, (_, i) => `node-${i}`);
    for (const item of sent) await producer.send(item);
    await producer.flush();
    const out = await broker.run('asyncq-consumer', '-q', 'bulk', '--count', '1000', '--max-sleep', '0', '--credit', '64');
    assert.deepStrictEqual([...out.matchAll(/got element <([^>]*)>/g)].map((m) => m[1]), sent);
    const produced = await broker.run('asyncq-producer', '-q', 'bulk', '--count', '1000', '--max-sleep', '0');
    const items = [...produced.matchAll(/added <([^>]*)>/g)].map((m) => m[1]);
    assert.strictEqual(items.length, 1000);
    const got = [];
    while (got.length < 1000) {
      got.push((await consumer.get()).toString());
      consumer.taskDone();
    }
    assert.deepStrictEqual(got, items);
    await producer.join({ timeout: 10 });
    const stats = await producer.stats();
    assert.deepStrictEqual([stats.puts, stats.acked, stats.outstanding], [2000, 2000, 0]);
  } finally {
    await producer.close();
    await consumer.close();
    await broker.stop();
  }
});

test('join from Node while C consumers ack', async () => {
  const broker = await Broker.start();
  const q = new Queue(broker.address, { queue: 'joinc' });
  const consumers = [];
  try {
    for (let i = 0; i < 40; i++) await q.put(`job-${i}`);
    for (let i = 0; i < 2; i++) consumers.push(broker.spawn('asyncq-consumer', '-q', 'joinc', '--max-sleep', '0.05'));
    const joined = await q.join({ timeout: 60 });
    const stats = await q.stats();
    assert.deepStrictEqual([stats.acked, stats.outstanding], [40, 0]); // not one earlier
    assert.strictEqual(joined.dead, 0);
  } finally {
    for (const c of consumers) c.kill();
    await q.close();
    await broker.stop();
  }
});

test('clients carry on after a broker restart', async () => {
  let broker = await Broker.start(['--heartbeat-ms', '200']);
  const address = broker.address;
  const producer = new Queue(address, { queue: 'restart' });
  const consumer = new Queue(address, { queue: 'restart', credit: 4 });
  try {
    const first = consumer.get();
    for (let i = 0; i < 100; i++) await producer.send(String(i));
    // Killed before any put was confirmed: they are all sent again.
    await broker.stop();
    broker = await Broker.start(['--heartbeat-ms', '200'], address);
    await producer.flush();
    const got = new Set([(await first).toString()]);
    consumer.taskDone();
    while (got.size < 100) {
      got.add((await consumer.get()).toString());
      consumer.taskDone();
    }
    await producer.join({ timeout: 30 });
    const stats = await producer.stats();
    assert.deepStrictEqual([stats.puts, stats.acked], [100, 100]); // each put enqueued once
  } finally {
    await producer.close();
    await consumer.close();
    await broker.stop();
  }
});
