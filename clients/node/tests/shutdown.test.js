'use strict';
// Queue.shutdown (PROTOCOL.md 4.11): every get() waiting, and every later
// one, rejects with QueueShutDown once the queue is shut down and empty.
const test = require('node:test');
const assert = require('node:assert');
const { Broker, withBroker, until } = require('./broker');
const { BrokerError, QueueShutDown } = require('..');

// Waits here are on conditions; one that never comes fails the test, not hangs it.
const LIMIT = { timeout: 60000 };

const shutDown = (e) => e instanceof QueueShutDown && e instanceof BrokerError && e.code === 503
  && e.name === 'QueueShutDown' && /503 SHUT_DOWN/.test(e.message);

test('shutdown wakes every get() waiting, and refuses every later one', LIMIT, () => withBroker(Broker.start(), async (broker, client) => {
  const q = client({ queue: 'wake' });
  const getters = Promise.allSettled([q.get(), q.get(), q.get(), q.get()]);
  await until(() => q.consumer && q.consumer.getters.length === 4);
  const admin = client({ queue: 'wake' });
  const report = await admin.shutdown();
  assert.strictEqual(report.queue, 'wake');
  assert.notStrictEqual(report.state, 'open');
  const results = await getters;
  for (const result of results) {
    assert.strictEqual(result.status, 'rejected');
    assert.ok(shutDown(result.reason), result.reason);
  }
  await assert.rejects(q.get(), shutDown);
  assert.throws(() => q.getNowait(), shutDown);
  await assert.rejects(admin.put('late'), shutDown);
  await assert.rejects(client({ queue: 'wake' }).get(), shutDown); // a consumer that comes later
}));

test('shutdown drains: items queued are still got, then get() rejects', LIMIT, () => withBroker(Broker.start(), async (broker, client) => {
  const q = client({ queue: 'drain' });
  await q.put('one');
  await q.put('two');
  const report = await q.shutdown();
  assert.deepStrictEqual([report.queued, report.state], [2, 'draining']);
  const waiting = [q.get(), q.get(), q.get()];
  const last = assert.rejects(waiting[2], shutDown); // once the queue is empty
  const first = await waiting[0];
  const second = await waiting[1];
  assert.deepStrictEqual([first.toString(), second.toString()], ['one', 'two']);
  q.taskDone(first);
  q.taskDone(second);
  await last;
  assert.deepStrictEqual(await q.join({ timeout: 10 }), { count: 0, dead: 0 });
}));

test('shutdown immediate discards what is queued', LIMIT, () => withBroker(Broker.start(), async (broker, client) => {
  const q = client({ queue: 'now' });
  for (let i = 0; i < 3; i++) await q.put(`item-${i}`);
  const report = await q.shutdown({ immediate: true });
  assert.strictEqual(report.discarded, 3);
  assert.strictEqual(report.queued, 0);
  await assert.rejects(q.get(), shutDown);
  await assert.rejects(q.join({ timeout: 10 }), shutDown);
}));
