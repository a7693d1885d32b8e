'use strict';
// A queue's life (PROTOCOL.md 4.13): reopen() after a shutdown, purge() and
// delete(), against the real broker; consumers told the queue was shut down
// or deleted consume again once it is open; a queue the broker does not
// have; 403 without the admin role; 503 for reopen() while the broker stops.
const test = require('node:test');
const assert = require('node:assert');
const { Broker, withBroker, until } = require('./broker');
const { BrokerError, QueueShutDown } = require('..');

// Waits here are on conditions; one that never comes fails the test, not hangs it.
const LIMIT = { timeout: 60000 };
const HOUR = 3600;

const shutDown = (e) => e instanceof QueueShutDown && e instanceof BrokerError && e.code === 503
  && /503 SHUT_DOWN/.test(e.message);

// Resolves with q's stats once condition(stats) holds.
async function statsWhen(q, condition) {
  let stats;
  await until(async () => condition(stats = await q.stats()));
  return stats;
}

test('reopen by the client told the queue was shut down: it puts and gets again', LIMIT, () => withBroker(Broker.start(), async (broker, client) => {
  const q = client({ queue: 'mine' });
  const waiting = assert.rejects(q.get(), shutDown); // handled from now on
  await statsWhen(q, (s) => s.consumers === 1);
  assert.strictEqual((await q.shutdown()).state, 'draining');
  await waiting;
  await assert.rejects(q.put('refused'), shutDown);
  await assert.rejects(q.get(), shutDown); // asked again: still shut down
  assert.strictEqual(await q.reopen(), undefined);
  assert.strictEqual((await q.stats()).state, 'open');
  await q.put('again');
  const item = await q.get();
  assert.strictEqual(item.toString(), 'again');
  q.taskDone(item);
  assert.deepStrictEqual(await q.join({ timeout: 10 }), { count: 0, dead: 0 }); // its ack went first
}));

test('reopen by another client: a told consumer gets what the broker sends on the credit it kept', LIMIT, () => withBroker(Broker.start(), async (broker, client) => {
  const worker = client({ queue: 'kept' });
  const admin = client({ queue: 'kept' });
  const waiting = Promise.allSettled([worker.get(), worker.get()]);
  await until(() => worker.consumer && worker.consumer.credit === 2);
  await worker.stats(); // on the consumer's session: after its CREDIT of 2
  await statsWhen(admin, (s) => s.consumers === 1);
  await admin.shutdown({ immediate: true });
  for (const result of await waiting) assert.ok(shutDown(result.reason), result.reason);
  await admin.reopen();
  await admin.put('one');
  await admin.put('two');
  const got = [await worker.get(), await worker.get()];
  assert.deepStrictEqual(got.map(String).sort(), ['one', 'two']);
  for (const item of got) worker.taskDone(item);
  assert.deepStrictEqual(await worker.join({ timeout: 10 }), { count: 0, dead: 0 });
}));

test('a told consumer asks again on its next get(): open, so it waits', LIMIT, () => withBroker(Broker.start(), async (broker, client) => {
  const worker = client({ queue: 'ask' });
  const admin = client({ queue: 'ask' });
  const waiting = assert.rejects(worker.get(), shutDown);
  await statsWhen(admin, (s) => s.consumers === 1);
  await admin.shutdown();
  await waiting;
  await admin.reopen();
  let settled = false;
  const late = worker.get().finally(() => { settled = true; });
  await statsWhen(admin, (s) => s.state === 'open');
  await until(() => worker.consumer.shutDown === null); // it asked, and resumed
  assert.strictEqual(settled, false);
  await admin.put('after');
  const item = await late;
  assert.strictEqual(item.toString(), 'after');
  worker.taskDone(item);
}));

test('reopen of an open queue changes nothing', LIMIT, () => withBroker(Broker.start(), async (broker, client) => {
  const q = client({ queue: 'open' });
  await q.put('kept');
  await q.reopen();
  const stats = await q.stats();
  assert.deepStrictEqual([stats.state, stats.queued], ['open', 1]);
}));

test('purge discards queued and delayed items; joins count them done; the queue stays open', LIMIT, () => withBroker(Broker.start(), async (broker, client) => {
  const q = client({ queue: 'purged' });
  const admin = client({ queue: 'purged' });
  await q.put('taken');
  const taken = await q.get(); // in flight: it stays
  for (let i = 0; i < 3; i++) await admin.put(`queued-${i}`);
  await admin.put('delayed', { delay: HOUR });
  await admin.put('at', { at: new Date(Date.now() + HOUR * 1000) });
  let joined = null;
  const join = admin.join().then((result) => { joined = result; return result; });
  await statsWhen(admin, (s) => s.joiners === 1);
  assert.strictEqual(await admin.purge(), 5);
  const stats = await admin.stats();
  assert.deepStrictEqual([stats.queued, stats.delayed, stats.inflight, stats.discarded, stats.state], [0, 0, 1, 5, 'open']);
  assert.strictEqual(joined, null); // the item in flight is still outstanding
  q.taskDone(taken);
  assert.deepStrictEqual(await join, { count: 6, dead: 0 });
  assert.deepStrictEqual(await admin.join({ timeout: 10 }), { count: 0, dead: 0 });
  assert.strictEqual(await admin.purge(), 0);
  await admin.put('still open');
  assert.strictEqual((await q.get()).toString(), 'still open');
  q.taskDone();
}));

test('delete discards everything, tells consumers and joins; a put makes the queue anew', LIMIT, () => withBroker(Broker.start(['--max-attempts', '1']), async (broker, client) => {
  const worker = client({ queue: 'doomed' });
  const admin = client({ queue: 'doomed' });
  await admin.put('dies');
  await worker.nack(await worker.get(), 0, 'bad');
  await statsWhen(admin, (s) => s.dead === 1);
  await admin.put('in flight');
  const held = await worker.get();
  await admin.put('delayed', { delay: HOUR });
  const waiting = assert.rejects(worker.get(), shutDown); // waits: nothing is ready
  const join = assert.rejects(admin.join(), shutDown);
  await statsWhen(admin, (s) => s.joiners === 1 && s.inflight === 1 && s.consumers === 1);
  await until(() => worker.consumer.getters.length === 1);
  assert.strictEqual(await admin.delete(), 3); // dead, in flight, delayed
  await waiting;
  await join;
  worker.taskDone(held); // discarded: the broker answers 404
  // Neither the ack nor the credit it changes makes the queue anew (STATS
  // on the worker's session comes after them).
  assert.deepStrictEqual(await worker.stats(), {});
  await assert.rejects(worker.get(), shutDown); // asked again: no queue
  assert.deepStrictEqual(await admin.stats(), {});
  assert.deepStrictEqual(await admin.deadLetters(), []);
  await admin.put('fresh');
  const stats = await admin.stats();
  assert.deepStrictEqual([stats.queued, stats.puts, stats.state, stats.consumers, stats.discarded], [1, 1, 'open', 0, 0]);
  // The told worker consumes from the new queue on its next get().
  assert.strictEqual((await worker.get()).toString(), 'fresh');
  worker.taskDone();
  assert.deepStrictEqual(await worker.join({ timeout: 10 }), { count: 0, dead: 0 });
  assert.deepStrictEqual(worker.errors.map((error) => error.code), [404]);
}));

test('delete by the consuming client, then its put and get', LIMIT, () => withBroker(Broker.start(), async (broker, client) => {
  const q = client({ queue: 'own' });
  const waiting = assert.rejects(q.get(), shutDown);
  await statsWhen(q, (s) => s.consumers === 1);
  assert.strictEqual(await q.delete(), 0);
  await waiting;
  await q.put('anew');
  assert.strictEqual((await q.get()).toString(), 'anew');
  q.taskDone();
  assert.deepStrictEqual(await q.join({ timeout: 10 }), { count: 0, dead: 0 });
}));

test('a queue the broker does not have: nothing happens, nothing is made', LIMIT, () => withBroker(Broker.start(), async (broker, client) => {
  const q = client({ queue: 'never' });
  assert.strictEqual(await q.reopen(), undefined);
  assert.strictEqual(await q.purge(), 0);
  assert.strictEqual(await q.delete(), 0);
  assert.deepStrictEqual(await q.stats(), {});
}));

test('without the admin role: each rejects with a 403 BrokerError; the admin\'s then succeed', LIMIT, () => withBroker(
  Broker.startCurve({ admin: 'produce,consume,admin', worker: 'produce,consume' }), async (broker, client) => {
    const keys = (name) => ({ queue: 'guarded', curveSecret: broker.secretKey(name), serverKey: broker.publicKey() });
    const worker = client(keys('worker'));
    const admin = client(keys('admin'));
    const refused = (error) => error instanceof BrokerError && error.code === 403 && error.text.length > 0;
    await worker.put('x');
    await assert.rejects(worker.reopen(), refused);
    await assert.rejects(worker.purge(), refused);
    await assert.rejects(worker.delete(), refused);
    assert.strictEqual((await worker.stats()).queued, 1); // nothing changed
    await worker.put('y'); // the session goes on
    assert.strictEqual(await admin.purge(), 2);
    await admin.shutdown();
    await admin.reopen();
    await worker.put('z');
    assert.strictEqual(await admin.delete(), 1);
  },
));

test('reopen while the broker stops rejects with 503', LIMIT, () => withBroker(Broker.start(['--drain-ms', '60000']), async (broker, client) => {
  const q = client({ queue: 'stopping' });
  await q.put('keeps it draining');
  broker.process.kill('SIGTERM');
  // Until the broker refuses puts: it is stopping.
  for (;;) {
    try {
      await q.put('before the signal');
    } catch (error) {
      assert.ok(shutDown(error), error);
      break;
    }
  }
  await assert.rejects(q.reopen(), (error) => shutDown(error) && error.subject === 'stopping');
}));

test('the ES module has the same API', async () => {
  const esm = await import('../index.mjs');
  for (const method of ['reopen', 'purge', 'delete']) {
    assert.strictEqual(typeof esm.Queue.prototype[method], 'function', method);
  }
});
