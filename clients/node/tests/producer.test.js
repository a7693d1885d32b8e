'use strict';
// Puts in version 2: PUTS batches, the window, HELD, refusals by seq range.
const test = require('node:test');
const assert = require('node:assert');
const { once } = require('events');
const { Broker, withBroker } = require('./broker');
const { BrokerError } = require('..');

// Records the messages q sends on its PUSH socket, as [command, count, lease-ms].
function spyPuts(q) {
  const sent = [];
  const pushSend = q.producer.pushSend.bind(q.producer);
  q.producer.pushSend = (frames) => {
    const [, command] = frames;
    sent.push(command === 'PUTS' ? [command, Number(frames[4]), Number(frames[6])] : [command, 1, Number(frames[5])]);
    pushSend(frames);
  };
  return sent;
}

// Gets count items from q, acking each; resolves with them.
async function take(q, count) {
  const items = [];
  for (let i = 0; i < count; i++) {
    items.push(await q.get());
    q.taskDone();
  }
  return items;
}

test('a burst of send() goes out as one PUTS, confirmed and received in order', () => withBroker(Broker.start(), async (broker, client) => {
  const q = client({ queue: 'burst', credit: 100 });
  await q.stats(); // a stats-only client opens no PUSH socket
  assert.strictEqual(q.producer.push, null);
  const sent = spyPuts(q);
  const items = Array.from({ length: 1000 }, (_, i) => `item-${i}`);
  for (const item of items) await q.send(item);
  await q.flush();
  assert.deepStrictEqual(sent, [['PUTS', 1000, 0]]);
  assert.strictEqual((await q.stats()).puts, 1000);
  assert.deepStrictEqual((await take(q, 1000)).map(String), items);
  assert.strictEqual((await q.join({ timeout: 10 })).dead, 0);
  assert.strictEqual((await q.stats()).acked, 1000);
}));

test('a single put is sent at once, as PUT', () => withBroker(Broker.start(), async (broker, client) => {
  const q = client({ queue: 'single' });
  await q.stats();
  const sent = spyPuts(q);
  await q.send('alone');
  assert.deepStrictEqual(sent, []); // gathering the puts of this tick
  await new Promise(setImmediate);
  assert.deepStrictEqual(sent, [['PUT', 1, 0]]);
  await q.flush();
  assert.strictEqual((await q.get()).toString(), 'alone');
  q.taskDone();
}));

test('batches end at max-batch, max-item and a lease change; large items go alone', () => withBroker(Broker.start(['--max-batch', '100']), async (broker, client) => {
  const q = client({ queue: 'split', credit: 200 });
  await q.stats();
  const sent = spyPuts(q);
  const small = Array.from({ length: 250 }, (_, i) => `small-${i}`);
  const big = Buffer.alloc(100 * 1024, 'b'); // 64 KiB or more: alone
  const large = Array.from({ length: 20 }, (_, i) => Buffer.alloc(60000, i)); // 17 fill 1 MiB
  const sends = [
    ...small.map((item) => q.send(item)),
    q.send(big),
    ...large.map((item) => q.send(item)),
    q.send('leased-1', { lease: 10 }), q.send('leased-2', { lease: 10 }),
  ];
  await assert.rejects(q.send(Buffer.alloc(1024 * 1024 + 1)), RangeError); // over max-item: never sent
  await Promise.all(sends);
  await q.flush();
  assert.deepStrictEqual(sent, [
    ['PUTS', 100, 0], ['PUTS', 100, 0], ['PUTS', 50, 0], ['PUT', 1, 0],
    ['PUTS', 17, 0], ['PUTS', 3, 0], ['PUTS', 2, 10000],
  ]);
  const got = await take(q, 273);
  assert.deepStrictEqual(got.map((item) => item.data), [...small.map(Buffer.from), big, ...large,
    Buffer.from('leased-1'), Buffer.from('leased-2')]);
  assert.deepStrictEqual(got.slice(-3).map((item) => item.leaseMs), [60000, 10000, 10000]);
}));

// The window in puts, then in bytes (its least, 1 MiB: about 20 items of 50 KB).
for (const [limit, size] of [['window', 100], ['window-bytes', 50000]]) {
  const flags = limit === 'window' ? ['--window', '20'] : ['--window-bytes', String(1024 * 1024)];
  test(`a full queue holds puts back: HELD is surfaced, the ${limit} kept`, () => withBroker(Broker.start(['--maxsize', '5', ...flags]), async (broker, client) => {
    const q = client({ queue: 'full' });
    const consumer = client({ queue: 'full', credit: 10 });
    const held = once(q, 'held');
    const items = Array.from({ length: 100 }, (_, i) => `item-${i}`.padEnd(size, '.'));
    // Far more than the window: the client keeps no more unconfirmed, or
    // the broker would refuse the rest (429).
    const flushed = Promise.all(items.map((item) => q.send(item))).then(() => q.flush());
    assert.deepStrictEqual(await held, ['full']);
    assert.strictEqual(q.held, 'full');
    assert.deepStrictEqual((await take(consumer, 100)).map(String), items);
    await flushed;
    assert.strictEqual(q.held, null);
    assert.strictEqual((await q.stats()).puts, 100);
  }));
}

test('refused puts: put() and flush() report them, a PUTS refused whole', () => withBroker(Broker.start(), async (broker, client) => {
  await broker.run('asyncq', 'shutdown', '-q', 'closed');
  const q = client({ queue: 'closed' });
  await q.stats();
  const refused = (e) => e instanceof BrokerError && e.name === 'QueueShutDown' && e.code === 503
    && e.tag === '' && e.subject === '1-10';
  const put = q.put('mine'); // seq 1, in one PUTS with the nine sends
  for (let i = 0; i < 9; i++) q.send(`sent-${i}`);
  await assert.rejects(put, refused);
  await assert.rejects(q.flush(), refused); // the sends, which put() does not report
  await q.flush(); // each refusal reported once
}));

test('puts lost on the way are sent again (LOST), each enqueued once', { timeout: 20000 }, () => withBroker(Broker.start(['--heartbeat-ms', '50']), async (broker, client) => {
  const q = client({ queue: 'lost', credit: 20 });
  await q.stats();
  const pushSend = q.producer.pushSend.bind(q.producer);
  let messages = 0;
  q.producer.pushSend = (frames) => {
    messages += 1;
    if (messages > 1) pushSend(frames); // the first never leaves: a connection broke
  };
  const items = Array.from({ length: 20 }, (_, i) => `item-${i}`);
  for (const item of items.slice(0, 10)) await q.send(item);
  await new Promise(setImmediate);
  for (const item of items.slice(10)) await q.send(item);
  await q.flush();
  assert.ok(messages >= 4, `${messages} messages`); // both batches sent again
  assert.deepStrictEqual((await take(q, 20)).map(String), items);
  assert.strictEqual((await q.stats()).puts, 20);
}));
