'use strict';
// Dead letters (PROTOCOL.md 4.12): deadLetters(), deadLetter(id) (DEAD
// show), requeueDead() (all, or by id), deleteDead() and purgeDead()
// against the real broker, and the parser of a DEAD list line.
const crypto = require('crypto');
const test = require('node:test');
const assert = require('node:assert');
const { Broker, withBroker, until } = require('./broker');
const { parseDeadLetter } = require('../protocol');
const { BrokerError, Queue } = require('..');

// Waits here are on conditions; one that never comes fails the test, not hangs it.
const LIMIT = { timeout: 60000 };
// Every item dies at its first attempt taken back.
const oneAttempt = () => Broker.start(['--max-attempts', '1']);

// Gets an item and nacks it with reason: with one attempt, it dies.
async function nackOne(q, reason) {
  const item = await q.get();
  await q.nack(item, 0, reason);
  return item;
}

test('parser: a crafted line, escapes unquoted, an unknown field skipped', () => {
  const line = String.raw`id=18446744073709551615 attempts=2 size=13 died=2026-12-04T23:50:34.970Z cause=nack `
    + String.raw`reason="exit \"3\" \\ \xc3\xa9" payload="hello \"world\"\x00\xff" colour=blue note="a \" b"... `
    + 'later';
  assert.deepStrictEqual(parseDeadLetter(line), {
    id: '18446744073709551615',
    attempts: 2,
    size: 13,
    died: new Date(Date.UTC(2026, 11, 4, 23, 50, 34, 970)),
    cause: 'nack',
    reason: 'exit "3" \\ é',
    reasonCut: false,
    payload: Buffer.concat([Buffer.from('hello "world"'), Buffer.from([0, 0xff])]),
    payloadCut: false,
  });
  // As the broker sends it (a Buffer), the same.
  assert.deepStrictEqual(parseDeadLetter(Buffer.from(line)), parseDeadLetter(line));
});

test('parser: died unknown, an unknown cause as given, cut values', () => {
  const letter = parseDeadLetter(String.raw`id=7 attempts=5 size=40 died=unknown cause=evicted reason="ab\xc3"... `
    + String.raw`payload="\x01\x02"... extra="x"`);
  assert.strictEqual(letter.died, null);
  assert.strictEqual(letter.cause, 'evicted');
  // The cut split 'é': the half character is left out.
  assert.deepStrictEqual([letter.reason, letter.reasonCut], ['ab', true]);
  assert.deepStrictEqual([letter.payload, letter.payloadCut], [Buffer.from([1, 2]), true]);
});

test('an empty dead-letter list, and nothing to requeue or purge', LIMIT, () => withBroker(Broker.start(), async (broker, client) => {
  const q = client({ queue: 'none-dead' });
  assert.deepStrictEqual(await q.deadLetters(), []); // a queue the broker does not know
  await q.put('alive');
  assert.deepStrictEqual(await q.deadLetters(), []);
  assert.strictEqual(await q.requeueDead(), 0);
  assert.strictEqual(await q.purgeDead(), 0);
}));

test('an item nacked: every field exact, the reason unescaped', LIMIT, () => withBroker(oneAttempt(), async (broker, client) => {
  const q = client({ queue: 'nacked' });
  const reason = 'bad "input" \\ café';
  await q.put('hello "world"');
  const before = Date.now();
  const item = await nackOne(q, reason);
  let dead;
  await until(async () => (dead = await q.deadLetters()).length === 1);
  const after = Date.now();
  const [letter] = dead;
  assert.ok(letter.died instanceof Date && letter.died.getTime() >= before && letter.died.getTime() <= after,
    `${letter.died} not within ${before}..${after}`);
  assert.deepStrictEqual({ ...letter, died: null }, {
    id: item.id,
    attempts: 1,
    size: 13,
    died: null,
    cause: 'nack',
    reason,
    reasonCut: false,
    payload: Buffer.from('hello "world"'),
    payloadCut: false,
  });
  assert.strictEqual(typeof letter.id, typeof item.id);
  assert.strictEqual((await q.stats()).dead, 1);
}));

test('a long reason and a binary payload: cut, the bytes exact', LIMIT, () => withBroker(oneAttempt(), async (broker, client) => {
  const q = client({ queue: 'cut' });
  const payload = Buffer.from(Array.from({ length: 100 }, (_, i) => (i * 37 + 0x22) % 256)); // '"', '\', 0, 0xff...
  assert.ok(payload.includes(0x22) && payload.includes(0x5c) && payload.includes(0) && payload.includes(0xff));
  const reason = `a${'é'.repeat(149)}b`; // 300 bytes: the 150 shown end in half an 'é'
  assert.strictEqual(Buffer.byteLength(reason), 300);
  await q.put(payload);
  const item = await nackOne(q, reason);
  let dead;
  await until(async () => (dead = await q.deadLetters()).length === 1);
  const [letter] = dead;
  assert.strictEqual(letter.id, item.id);
  assert.strictEqual(letter.size, 100);
  assert.deepStrictEqual([letter.payload, letter.payloadCut], [payload.subarray(0, 32), true]);
  assert.deepStrictEqual([letter.reason, letter.reasonCut], [`a${'é'.repeat(74)}`, true]);

  const ascii = 'r'.repeat(300);
  await q.put('short');
  await nackOne(q, ascii);
  await until(async () => (dead = await q.deadLetters()).length === 2);
  assert.deepStrictEqual([dead[1].reason, dead[1].reasonCut], ['r'.repeat(150), true]);
  assert.deepStrictEqual([dead[1].payload, dead[1].payloadCut], [Buffer.from('short'), false]);
}));

test('an item whose lease ran out', LIMIT, () => withBroker(oneAttempt(), async (broker, client) => {
  const q = client({ queue: 'leased' });
  await q.put('slow', { lease: 0.2 });
  const before = Date.now();
  const item = await q.get(); // never acked
  let dead;
  await until(async () => (dead = await q.deadLetters()).length === 1);
  const [letter] = dead;
  assert.deepStrictEqual([letter.id, letter.cause, letter.reason, letter.reasonCut, letter.attempts],
    [item.id, 'lease', '', false, 1]);
  assert.deepStrictEqual(letter.payload, Buffer.from('slow'));
  assert.ok(letter.died.getTime() >= before + 200 && letter.died.getTime() <= Date.now(), String(letter.died));
}));

test("an item held when its consumer's session ended", LIMIT, () => withBroker(oneAttempt(), async (broker, client) => {
  const worker = client({ queue: 'orphan' });
  const admin = client({ queue: 'orphan' });
  await admin.put('held');
  const item = await worker.get();
  await worker.close(); // BYE: the item it holds is taken back, and dies
  let dead;
  await until(async () => (dead = await admin.deadLetters()).length === 1);
  assert.deepStrictEqual([dead[0].id, dead[0].cause, dead[0].attempts], [item.id, 'session', 1]);
  assert.deepStrictEqual(dead[0].payload, Buffer.from('held'));
}));

test('requeueDead: the count, and the items come back, oldest death first', LIMIT, () => withBroker(oneAttempt(), async (broker, client) => {
  const q = client({ queue: 'again' });
  const ids = [];
  for (const data of ['one', 'two', 'three']) {
    await q.put(data);
    ids.push((await nackOne(q, `no ${data}`)).id);
  }
  let dead;
  await until(async () => (dead = await q.deadLetters()).length === 3);
  assert.deepStrictEqual(dead.map((letter) => letter.id), ids);
  assert.deepStrictEqual(dead.map((letter) => letter.reason), ['no one', 'no two', 'no three']);
  assert.strictEqual(await q.requeueDead(), 3);
  assert.deepStrictEqual(await q.deadLetters(), []);
  const back = [];
  for (let i = 0; i < 3; i++) {
    const item = await q.get();
    back.push([item.id, item.toString(), item.attempt]);
    q.taskDone(item);
  }
  assert.deepStrictEqual(back, [[ids[0], 'one', 1], [ids[1], 'two', 1], [ids[2], 'three', 1]]);
  assert.deepStrictEqual(await q.join({ timeout: 10 }), { count: 0, dead: 0 });
  assert.strictEqual(await q.requeueDead(), 0);
}));

test('purgeDead: the count, and they are gone', LIMIT, () => withBroker(oneAttempt(), async (broker, client) => {
  const q = client({ queue: 'gone' });
  await q.put('a');
  await q.put('b');
  await nackOne(q, 'x');
  await nackOne(q, 'y');
  await until(async () => (await q.deadLetters()).length === 2);
  assert.strictEqual(await q.purgeDead(), 2);
  assert.deepStrictEqual(await q.deadLetters(), []);
  assert.strictEqual((await q.stats()).dead, 0);
  assert.strictEqual(await q.purgeDead(), 0);
}));

test('requeueDead(items) and deleteDead(items): those only, all or none', LIMIT, () => withBroker(oneAttempt(), async (broker, client) => {
  const q = client({ queue: 'by-id' });
  for (const payload of ['one', 'two', 'three']) await q.put(payload);
  for (const reason of ['a', 'b', 'c']) await nackOne(q, reason);
  await until(async () => (await q.deadLetters()).length === 3);
  const [one, two, three] = await q.deadLetters();
  const unknown = '18446744073709551615';
  const notDead = (ids) => (error) => error instanceof BrokerError && error.code === 404
    && error.subject.split(' ').sort().join(' ') === [...ids].sort().join(' ');
  await assert.rejects(q.requeueDead([one, unknown, two.id]), notDead([unknown]));
  await assert.rejects(q.deleteDead([one, BigInt(unknown)]), notDead([unknown]));
  assert.deepStrictEqual(await q.deadLetters(), [one, two, three]); // nothing changed
  assert.strictEqual((await q.stats()).queued, 0);
  assert.strictEqual(await q.requeueDead([two, two.id]), 1); // named twice: once
  assert.strictEqual(await q.deleteDead([BigInt(three.id)]), 1);
  assert.deepStrictEqual(await q.deadLetters(), [one]);
  // Requeued, and deleted: neither is a dead item now.
  await assert.rejects(q.deleteDead([one, two, three]), notDead([two.id, three.id]));
  assert.deepStrictEqual(await q.deadLetters(), [one]);
  const again = await q.get();
  assert.deepStrictEqual([again.toString(), again.id, again.attempt], ['two', two.id, 1]);
  q.taskDone(again);
  assert.strictEqual(await q.requeueDead([]), 0); // none named: nothing
  assert.strictEqual(await q.deleteDead([]), 0);
  assert.deepStrictEqual(await q.deadLetters(), [one]);
  assert.strictEqual(await q.requeueDead(), 1); // no argument: all
  const stats = await q.stats();
  // queued, or sent to this client (whose credit may not have come down yet)
  assert.deepStrictEqual([stats.dead, stats.queued + stats.inflight], [0, 1]);
}));

test('requeueDead(items) and deleteDead(items): more ids than one request takes, refused before sending', LIMIT, () => withBroker(oneAttempt(), async (broker, client) => {
  const q = client({ queue: 'many' });
  await q.put('x');
  await nackOne(q, 'x');
  await until(async () => (await q.deadLetters()).length === 1);
  const [letter] = await q.deadLetters();
  const far = (n) => ((1n << 64n) - 1n - BigInt(n)).toString(); // 20 digits
  const many = [letter, ...Array.from({ length: 60 }, (_, n) => far(n))];
  for (const call of [(items) => q.requeueDead(items), (items) => q.deleteDead(items)]) {
    await assert.rejects(call(many), (error) => error instanceof RangeError && /at most 1024/.test(error.message));
    await assert.rejects(call([Number(1)]), TypeError);
    await assert.rejects(call(['12x']), TypeError);
  }
  await assert.rejects(q.deleteDead(), TypeError);
  assert.deepStrictEqual(await q.deadLetters(), [letter]);
  const fits = [letter, ...Array.from({ length: 47 }, (_, n) => far(n))]; // 7 + 48 * 21 bytes
  await assert.rejects(q.deleteDead(fits), (error) => error.code === 404 && error.subject.split(' ').length === 47);
  assert.strictEqual(await q.deleteDead([letter]), 1);
}));

// Records the DEAD actions q sends.
function spyDead(q) {
  const actions = [];
  const dead = q.dead.bind(q);
  q.dead = (action) => {
    actions.push(action);
    return dead(action);
  };
  return actions;
}

test('deadLetter(id): a 1,000,000-byte binary item whole, in two answers', LIMIT, () => withBroker(oneAttempt(), async (broker, client) => {
  const q = client({ queue: 'whole' });
  const payload = crypto.randomBytes(1000000);
  payload.fill(0, 0, 300); // zeros, every byte value, '"' and '\' at the start
  for (let i = 0; i < 256; i++) payload[300 + i] = i;
  await q.put(payload);
  const item = await nackOne(q, 'too big to handle');
  let dead;
  await until(async () => (dead = await q.deadLetters()).length === 1);
  const [listed] = dead;
  assert.deepStrictEqual([listed.size, listed.payloadCut], [1000000, true]);
  const actions = spyDead(q);
  const whole = await q.deadLetter(item.id);
  // 785 664 bytes (1023 lines of 768) in the first answer, the rest in the second.
  assert.deepStrictEqual(actions, [`show ${item.id}`, `show ${item.id} 785664`]);
  assert.strictEqual(whole.payload.length, payload.length);
  assert.ok(whole.payload.equals(payload), 'the payload differs');
  assert.deepStrictEqual({ ...whole, payload: null }, { ...listed, payload: null, payloadCut: false });
  // Given as the dead letter, or as a bigint: the same.
  assert.deepStrictEqual(await q.deadLetter(listed), whole);
  assert.deepStrictEqual(await q.deadLetter(BigInt(item.id)), whole);
  assert.deepStrictEqual(await q.deadLetters(), dead); // still dead, unchanged
}));

test('deadLetter(id): small items, an empty one, in one answer', LIMIT, () => withBroker(oneAttempt(), async (broker, client) => {
  const q = client({ queue: 'small' });
  const payloads = [Buffer.from('hello "world"'), Buffer.alloc(0), crypto.randomBytes(768), crypto.randomBytes(769)];
  for (const payload of payloads) await q.put(payload);
  for (let i = 0; i < payloads.length; i++) await nackOne(q, `no ${i}`);
  let dead;
  await until(async () => (dead = await q.deadLetters()).length === payloads.length);
  const actions = spyDead(q);
  for (let i = 0; i < payloads.length; i++) {
    const whole = await q.deadLetter(dead[i]);
    assert.deepStrictEqual(whole, { ...dead[i], payload: payloads[i], payloadCut: false });
    assert.strictEqual(whole.reason, `no ${i}`);
  }
  assert.deepStrictEqual(actions, dead.map((letter) => `show ${letter.id}`));
}));

test('deadLetter(id): an id not dead in this queue rejects with the 404; another item before sending', LIMIT, () => withBroker(oneAttempt(), async (broker, client) => {
  const q = client({ queue: 'missing' });
  const unknown = '18446744073709551615';
  const notDead = (id) => (error) => error instanceof BrokerError && error.code === 404 && error.subject === id;
  await assert.rejects(q.deadLetter(unknown), notDead(unknown)); // a queue the broker does not know
  await q.put('alive');
  const alive = await q.get(); // in flight, not dead
  await assert.rejects(q.deadLetter(alive.id), notDead(alive.id));
  await q.nack(alive, 0, 'now dead');
  await until(async () => (await q.deadLetters()).length === 1);
  assert.strictEqual((await q.deadLetter(alive.id)).payload.toString(), 'alive');
  const other = client({ queue: 'missing-other' });
  await assert.rejects(other.deadLetter(alive.id), notDead(alive.id)); // dead, but in another queue
  const actions = spyDead(q);
  await assert.rejects(q.deadLetter(), TypeError);
  await assert.rejects(q.deadLetter(7), TypeError);
  await assert.rejects(q.deadLetter('12x'), TypeError);
  await assert.rejects(q.deadLetter(-1n), RangeError);
  await assert.rejects(q.deadLetter(1n << 64n), RangeError);
  assert.deepStrictEqual(actions, []);
}));

// A Queue whose DEAD requests are answered with the lines answer(action)
// gives: deadLetter()'s reading of the answers, without a broker.
function answering(answer) {
  const q = new Queue('localhost', { queue: 'crafted' });
  const actions = [];
  q.dead = async (action) => {
    actions.push(action);
    return answer(action).map((line) => Buffer.from(line));
  };
  return { q, actions };
}

test('deadLetter(id): answers read line by line; one not as 4.12 says rejects', async () => {
  const payload = crypto.randomBytes(2000);
  const line = (size) => `id=5 attempts=1 size=${size} died=unknown cause=nack reason="r" payload="x"...`;
  const base64 = (bytes) => bytes.toString('base64').match(/.{1,1024}/g);
  // A broker that answers 768 bytes at a time: asked until it has size bytes.
  const { q, actions } = answering((action) => {
    const from = Number(action.split(' ')[2] || 0);
    return [line(2000), ...base64(payload.subarray(from, from + 768))];
  });
  const whole = await q.deadLetter('5');
  assert.ok(whole.payload.equals(payload));
  assert.deepStrictEqual(actions, ['show 5', 'show 5 768', 'show 5 1536']);
  assert.deepStrictEqual([whole.size, whole.reason, whole.payloadCut, whole.died], [2000, 'r', false, null]);

  const rejects = async (answer, pattern) => {
    await assert.rejects(answering(answer).q.deadLetter('5'), (error) => !(error instanceof BrokerError) && pattern.test(error.message));
  };
  await rejects(() => [], /no line/);
  await rejects(() => [line(3), 'YWJj', 'not base64!'], /not in base64/);
  await rejects(() => [line(3), 'YWJ'], /not in base64/); // not padded
  // Nothing more comes after the first answer: asked once more, then rejected.
  const { q: short, actions: asked } = answering((action) => (action === 'show 5' ? [line(5), 'YWJj'] : [line(5)]));
  await assert.rejects(short.deadLetter('5'), /gave 3 bytes of an item of 5/);
  assert.deepStrictEqual(asked, ['show 5', 'show 5 3']);
  await rejects(() => [line(5), 'YWJj'], /gave 6 bytes of an item of 5/); // more than size
  await rejects(() => [line(2), 'YWJj'], /gave 3 bytes of an item of 2/);
});

test('without the admin role: each rejects with a 403 BrokerError', LIMIT, () => withBroker(
  Broker.startCurve({ worker: 'produce,consume' }), async (broker, client) => {
    const q = client({ queue: 'guarded', curveSecret: broker.secretKey('worker'), serverKey: broker.publicKey() });
    const refused = (error) => error instanceof BrokerError && error.code === 403 && typeof error.text === 'string'
      && error.text.length > 0;
    await assert.rejects(q.deadLetters(), refused);
    await assert.rejects(q.requeueDead(), refused);
    await assert.rejects(q.purgeDead(), refused);
    await assert.rejects(q.requeueDead(['1']), refused);
    await assert.rejects(q.deleteDead(['1']), refused);
    await assert.rejects(q.deadLetter('1'), refused);
  },
));

test('the ES module has the same API', async () => {
  const esm = await import('../index.mjs');
  for (const method of ['deadLetters', 'deadLetter', 'requeueDead', 'deleteDead', 'purgeDead', 'peek', 'pause', 'resume']) {
    assert.strictEqual(typeof esm.Queue.prototype[method], 'function', method);
  }
});
