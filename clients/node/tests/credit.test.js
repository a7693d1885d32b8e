'use strict';
// Credit follows the getters (asyncio semantics): the broker may send a
// consumer as many items as it holds, plus its get() calls waiting, plus
// prefetch (default 0); CREDIT goes out only when that number changes.
const test = require('node:test');
const assert = require('node:assert');
const { Broker, withBroker, until } = require('./broker');

// Waits here are on conditions; one that never comes fails the test, not hangs it.
const LIMIT = { timeout: 60000 };

// Resolves once condition() holds, or rejects with what after seconds:
// the condition may never come when credit is short.
async function within(seconds, what, condition) {
  const deadline = Date.now() + seconds * 1000;
  await until(async () => (await condition()) || Date.now() > deadline);
  if (!(await condition())) throw new assert.AssertionError({ message: `not within ${seconds} s: ${what}` });
}

// The credits q's consumer sends, with the number of items got at the time.
function spyCredits(q, gotCount) {
  const sent = [];
  const send = q.consumer.session.send.bind(q.consumer.session);
  q.consumer.session.send = (frames) => {
    if (frames[1] === 'CREDIT') sent.push({ credit: Number(frames[4]), got: gotCount() });
    return send(frames);
  };
  return sent;
}

async function putAll(q, count) {
  for (let i = 0; i < count; i++) await q.send(`item-${i}`);
  await q.flush();
}

test('4 concurrent workers on one Queue run 4 items at a time, by default', LIMIT, () => withBroker(Broker.start(), async (broker, client) => {
  const q = client({ queue: 'four' });
  const admin = client({ queue: 'four' });
  await putAll(admin, 12);
  let active = 0;
  let most = 0;
  let rounds = 0;
  const worker = async () => {
    for (let i = 0; i < 3; i++) {
      const item = await q.get();
      active += 1;
      most = Math.max(most, active);
      if (i === 0) {
        // Every worker holds its first item at once: each get() asked the
        // broker for one.
        await within(20, 'all 4 workers holding an item', () => active === 4 || rounds > 0);
        if (rounds === 0) assert.strictEqual((await admin.stats()).inflight, 4);
        rounds += 1;
      }
      await new Promise(setImmediate);
      active -= 1;
      q.taskDone(item);
    }
  };
  await Promise.all([worker(), worker(), worker(), worker()]);
  assert.strictEqual(most, 4);
  assert.deepStrictEqual(await q.join({ timeout: 10 }), { count: 0, dead: 0 });
}));

test('a single worker never holds more than one item at the broker; none once it stops', LIMIT, () => withBroker(Broker.start(), async (broker, client) => {
  const q = client({ queue: 'one' });
  const admin = client({ queue: 'one' });
  await putAll(admin, 5);
  for (let i = 0; i < 5; i++) {
    const item = await q.get();
    const stats = await admin.stats();
    assert.deepStrictEqual([stats.inflight, stats.queued], [1, 4 - i]);
    q.taskDone(item);
  }
  // No get() waiting and nothing held: credit 0, in force once CREDITED comes.
  await within(20, 'credit 0 in force', () => q.consumer.credit === 0 && q.consumer.session.pending.size === 0);
  await admin.put('not asked for');
  const stats = await admin.stats();
  assert.deepStrictEqual([stats.inflight, stats.queued], [0, 1]);
  assert.strictEqual((await q.get()).toString(), 'not asked for');
  q.taskDone();
}));

test('a steady pool of workers sends no CREDIT', LIMIT, () => withBroker(Broker.start(), async (broker, client) => {
  const q = client({ queue: 'steady' });
  const total = 60;
  await putAll(client({ queue: 'steady' }), total);
  let got = 0;
  await q.consumerSession();
  const credits = spyCredits(q, () => got);
  const worker = async () => {
    while (got < total) {
      got += 1; // counted as asked for: no worker waits for an item that is not there
      const item = await q.get();
      await new Promise(setImmediate); // work that spans a turn
      q.taskDone(item);
    }
  };
  await Promise.all([worker(), worker(), worker(), worker()]);
  // Credit 4 as the workers start, 0 as the last ones stop, none in between.
  const between = credits.filter((c) => c.got > 4 && c.got < total);
  assert.deepStrictEqual(between, [], JSON.stringify(credits));
  assert.ok(credits.some((c) => c.credit === 4), JSON.stringify(credits));
}));

test('prefetch sends items ahead; the deprecated credit is prefetch + 1', LIMIT, () => withBroker(Broker.start(), async (broker, client) => {
  for (const [name, options] of [['prefetch', { prefetch: 2 }], ['credit', { credit: 3 }]]) {
    const q = client({ queue: name, ...options });
    assert.deepStrictEqual([q.prefetch, q.credit], [2, 3]);
    const admin = client({ queue: name });
    await putAll(admin, 5);
    const item = await q.get();
    // The item held, and two sent ahead.
    await within(20, 'three items in flight', async () => (await admin.stats()).inflight === 3);
    q.taskDone(item);
    for (let i = 0; i < 4; i++) {
      await q.get();
      q.taskDone();
    }
    assert.deepStrictEqual(await q.join({ timeout: 10 }), { count: 0, dead: 0 });
  }
  assert.throws(() => client({ prefetch: -1 }), RangeError);
  assert.throws(() => client({ credit: 0 }), RangeError);
}));
