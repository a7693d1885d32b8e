'use strict';
// Several brokers as one service (PROTOCOL.md 4.15): three real brokers,
// each a shard (--shard K, --service listing them all), on ports of their
// own; the client is given one of them and finds the others. Puts spread,
// or follow their key; gets gather with credit that moves (READY) and
// never adds up to more than asked; join, stats and the rest ask every
// broker; a broker down, killed or stopped, is waited for or named.
const test = require('node:test');
const assert = require('node:assert');
const { once } = require('events');
const zmq = require('zeromq');
const {
  startService, withService, until, freePairs,
} = require('./broker');
const {
  Queue, PriorityQueue, BrokerUnreachable, QueueShutDown, ShardConflict, TimeoutError,
} = require('..');

// Waits here are on conditions; one that never comes fails the test, not hangs it.
const LIMIT = { timeout: 60000 };

const delay = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// The shard an item id names (its top 8 bits), computed here on its own.
const shardOf = (id) => Number(BigInt(id) >> 56n);

// FNV-1a, 32 bits, as PROTOCOL.md 4.15 says, written out here.
function fnv1a(text) {
  let hash = 2166136261;
  for (const byte of Buffer.from(text)) {
    hash = (hash ^ byte) >>> 0;
    hash = Number((BigInt(hash) * 16777619n) % (1n << 32n));
  }
  return hash;
}

// Each broker's stats of q's queue, in shard order.
async function perShard(q) {
  const { brokers } = await q.stats({ brokers: true });
  return [...brokers].sort((a, b) => a.shard - b.shard).map((entry) => entry.stats);
}

// count puts from q in ticks of perTick (each tick's go together, to the
// next broker in turn), confirmed.
async function putInTicks(q, count, perTick, name = (i) => `item-${i}`) {
  await q.stats(); // the service found: puts made before go out together, once it is
  for (let i = 0; i < count;) {
    for (let j = 0; j < perTick && i < count; j++, i++) q.send(name(i));
    await new Promise(setImmediate);
  }
  await q.flush();
}

// Gets count items from q, acking each: [data, shard] in the order got.
async function take(q, count) {
  const got = [];
  for (let i = 0; i < count; i++) {
    const item = await q.get();
    got.push([item.toString(), shardOf(item.id)]);
    q.taskDone(item);
  }
  return got;
}

test('a client given one address finds every broker; each tick\'s puts go to the next', LIMIT, () => withService(startService(3), async (service, client) => {
  const q = client({ queue: 'spread' });
  await q.stats();
  assert.deepStrictEqual(q.brokers.map(({ shard, up }) => [shard, up]), [[0, true], [1, true], [2, true]]);
  assert.deepStrictEqual(q.brokers.map(({ address }) => Number(address.split(':').pop())).sort(), [...service.ports].sort());
  // Another client, given the last broker's address, finds the same service.
  const other = client({ queue: 'spread' }, Queue, service.address(2));
  await other.stats();
  assert.deepStrictEqual(other.brokers.map(({ shard }) => shard).sort(), [0, 1, 2]);
  // Three ticks of 10 puts: one PUTS to each broker in turn.
  await putInTicks(q, 30, 10);
  const stats = await perShard(q);
  assert.deepStrictEqual(stats.map((s) => s.puts), [10, 10, 10]);
  const { total, brokers } = await q.stats({ brokers: true });
  assert.deepStrictEqual([total.puts, total.queued, total.outstanding, total.state, total.lease_ms], [30, 30, 30, 'open', 60000]);
  assert.strictEqual(brokers.length, 3);
  assert.strictEqual(await q.qsize(), 30);
  // put() awaited one at a time: each its own tick, spread too.
  for (let i = 0; i < 6; i++) await q.put(`one-${i}`);
  assert.deepStrictEqual((await perShard(q)).map((s) => s.puts), [12, 12, 12]);
  const got = await take(other, 36);
  assert.deepStrictEqual(new Set(got.map(([, shard]) => shard)), new Set([0, 1, 2]));
  assert.deepStrictEqual(await other.join({ timeout: 10 }), { count: 0, dead: 0 }); // after its acks
  assert.strictEqual(await q.empty(), true);
}));

test('a broker holding this client\'s puts (HELD, a full queue) gets none of its next batches', LIMIT, () => withService(startService(3, { flags: (k) => (k === 0 ? ['--maxsize', '1'] : []) }), async (service, client) => {
  const q = client({ queue: 'full' });
  await putInTicks(q, 3, 1); // one at each broker: shard 0 is full
  const held = once(q, 'held');
  for (let i = 0; i < 3; i++) {
    q.send(`more-${i}`); // the first to shard 0, held there
    await new Promise(setImmediate);
  }
  const flushed = q.flush(); // its SYNC is answered HELD
  assert.deepStrictEqual(await held, ['full']);
  assert.strictEqual(q.held, 'full');
  for (let i = 0; i < 6; i++) {
    q.send(`after-${i}`);
    await new Promise(setImmediate);
  }
  let stats;
  await until(async () => (stats = await perShard(q)).reduce((sum, each) => sum + each.puts, 0) === 11);
  assert.deepStrictEqual(stats.map((s) => s.puts), [1, 5, 5]); // shard 0: its first; its second held, and no more
  assert.strictEqual(stats[0].held, 1);
  const got = await take(client({ queue: 'full' }), 12);
  await flushed;
  assert.strictEqual(got.length, 12);
  assert.strictEqual(q.held, null);
  assert.deepStrictEqual((await perShard(q)).map((s) => s.puts), [2, 5, 5]);
}));

test('one get() at a time, prefetch 0: never more than one item held at all the brokers, yet every shard\'s items come', LIMIT, () => withService(startService(3), async (service, client) => {
  const producer = client({ queue: 'credit' });
  await putInTicks(producer, 12, 4); // 4 items at each broker
  assert.deepStrictEqual((await perShard(producer)).map((s) => s.queued), [4, 4, 4]);
  const q = client({ queue: 'credit', prefetch: 0 });
  const shards = new Set();
  for (let i = 0; i < 12; i++) {
    const item = await q.get();
    shards.add(shardOf(item.id));
    await delay(20); // a credit granted twice would have brought a second item by now
    const stats = await perShard(producer);
    const inflight = stats.reduce((sum, s) => sum + s.inflight, 0);
    assert.strictEqual(inflight, 1, `after get ${i}: ${stats.map((s) => s.inflight)} in flight`);
    assert.strictEqual(q.consumer.delivered.length, 0);
    q.taskDone(item);
  }
  assert.deepStrictEqual([...shards].sort(), [0, 1, 2]); // the credit moved to each broker
  assert.deepStrictEqual(await q.join({ timeout: 10 }), { count: 0, dead: 0 });
  const stats = await perShard(producer);
  assert.deepStrictEqual(stats.map((s) => [s.inflight, s.queued, s.acked]), [[0, 0, 4], [0, 0, 4], [0, 0, 4]]);
}));

test('workers with prefetch: the credit shared out never adds up to more than asked for', LIMIT, () => withService(startService(3), async (service, client) => {
  const producer = client({ queue: 'pool' });
  await putInTicks(producer, 60, 5);
  const q = client({ queue: 'pool', prefetch: 2 });
  let most = 0;
  let claimed = 0;
  const got = [];
  const worker = async () => {
    while (claimed < 60) {
      claimed += 1; // counted as asked for: no worker waits for an item that is not there
      const item = await q.get();
      got.push(shardOf(item.id));
      // Held, waiting and sent ahead: at most 3 workers + prefetch 2.
      const sent = q.consumer.lanes.reduce((sum, lane) => sum + Math.max(lane.credit || 0, lane.inForce), 0);
      most = Math.max(most, sent);
      await delay(1);
      q.taskDone(item);
    }
  };
  await Promise.all([worker(), worker(), worker()]);
  assert.ok(most <= 5, `credit at the brokers added up to ${most}`);
  assert.strictEqual(got.length, 60);
  assert.deepStrictEqual(new Set(got), new Set([0, 1, 2]));
  assert.deepStrictEqual(await q.join({ timeout: 10 }), { count: 0, dead: 0 }); // after its acks
}));

test('join covers every shard: counts summed, times out with what is outstanding', LIMIT, () => withService(startService(3), async (service, client) => {
  const producer = client({ queue: 'joined' });
  await putInTicks(producer, 9, 3); // 3 at each broker
  const q = client({ queue: 'joined', prefetch: 8 });
  const items = [];
  for (let i = 0; i < 9; i++) items.push(await q.get());
  const joining = producer.join({ timeout: 20 });
  await assert.rejects(q.join({ timeout: 0.3 }), (e) => e instanceof TimeoutError
    && e.outstanding === 9 && e.unanswered.length === 0 && /9 items still outstanding \(3 at '.*', 3 at '.*', 3 at '.*'\)$/.test(e.message));
  for (const item of items.slice(0, 8)) q.taskDone(item);
  // q's join: after its acks, at each broker.
  await assert.rejects(q.join({ timeout: 0.3 }), (e) => e instanceof TimeoutError && e.outstanding === 1);
  q.taskDone(items[8]);
  assert.deepStrictEqual(await joining, { count: 9, dead: 0 }); // 3 at each, when the join came
  assert.deepStrictEqual(await producer.join({ timeout: 10 }), { count: 0, dead: 0 });
}));

test('a join with one broker stopped (SIGSTOP) times out naming it; after SIGCONT it completes', LIMIT, () => withService(startService(3), async (service, client) => {
  const q = client({ queue: 'stopped' });
  await putInTicks(q, 6, 2);
  assert.deepStrictEqual((await take(q, 6)).length, 6);
  service.brokers[1].process.kill('SIGSTOP');
  try {
    const started = Date.now();
    await assert.rejects(q.join({ timeout: 1 }), (e) => e instanceof TimeoutError
      && e.unanswered.length === 1 && e.unanswered[0].endsWith(`:${service.ports[1]}`)
      && e.message.includes(`:${service.ports[1]}'`) && !e.message.includes(`:${service.ports[0]}'`));
    assert.ok(Date.now() - started < 3000, `timed out after ${Date.now() - started} ms`);
  } finally {
    service.brokers[1].process.kill('SIGCONT');
  }
  assert.deepStrictEqual(await q.join({ timeout: 20 }), { count: 0, dead: 0 });
}));

test('a key pins its puts to one shard, fnv1a32(key) mod 3, in order', LIMIT, () => withService(startService(3), async (service, client) => {
  const q = client({ queue: 'keyed' });
  const keys = ['customer-7', 'customer-8', 'z'];
  const expected = Object.fromEntries(keys.map((key) => [key, fnv1a(key) % 3]));
  const sends = [];
  for (let i = 0; i < 10; i++) {
    for (const key of keys) sends.push(q.send(`${key}/${i}`, { key }));
    sends.push(q.send(`loose/${i}`)); // no key: anywhere
    if (i % 3 === 0) await new Promise(setImmediate);
  }
  await q.put('as bytes', { key: Buffer.from('customer-7') }); // a Buffer key: the same bytes, the same shard
  await Promise.all(sends);
  await q.flush();
  const got = await take(q, 41);
  for (const key of keys) {
    const mine = got.filter(([data]) => data.startsWith(`${key}/`));
    assert.deepStrictEqual(new Set(mine.map(([, shard]) => shard)), new Set([expected[key]]), key);
    assert.deepStrictEqual(mine.map(([data]) => data), Array.from({ length: 10 }, (_, i) => `${key}/${i}`), key);
  }
  assert.strictEqual(got.find(([data]) => data === 'as bytes')[1], expected['customer-7']);
  await assert.rejects(q.put('x', { key: 42 }), TypeError);
  assert.deepStrictEqual(await q.join({ timeout: 10 }), { count: 0, dead: 0 });
}));

test('a put with a key waits for its shard while that broker is down', LIMIT, () => withService(startService(3), async (service, client) => {
  const q = client({ queue: 'waits' });
  await q.stats();
  // A key of each shard, found with the client's own hash.
  const keyOf = (shard) => {
    for (let i = 0; ; i++) if (fnv1a(`k${i}`) % 3 === shard) return `k${i}`;
  };
  const down = service.brokers[2];
  await down.stop();
  const waiting = q.put('for shard 2', { key: keyOf(2) });
  let settled = false;
  waiting.then(() => { settled = true; }, () => { settled = true; });
  await q.put('for shard 0', { key: keyOf(0) }); // others go on
  await delay(500);
  assert.strictEqual(settled, false);
  service.brokers[2] = await down.restart();
  await waiting;
  const got = await take(q, 2);
  assert.deepStrictEqual(got.sort(), [['for shard 0', 0], ['for shard 2', 2]]);
  assert.deepStrictEqual(await q.join({ timeout: 10 }), { count: 0, dead: 0 });
}));

test('a broker killed mid-run and restarted on its port: every confirmed put delivered, join exact', { timeout: 120000 }, () => withService(
  startService(3, { durable: true, flags: ['--heartbeat-ms', '200'] }),
  async (service, client) => {
    const producer = client({ queue: 'crash' });
    const q = client({ queue: 'crash', prefetch: 4 });
    const confirmed = new Set();
    const got = new Set();
    let stop = false;
    let next = 0;
    const put = async () => {
      while (!stop) {
        const data = `item-${next++}`;
        await producer.put(data);
        confirmed.add(data);
      }
    };
    const consume = async () => {
      for (;;) {
        const item = await q.get();
        got.add(item.toString());
        q.taskDone(item);
      }
    };
    const consuming = consume().catch(() => {}); // ends with close()
    const putting = Promise.all([put(), put(), put(), put()]);
    await until(() => confirmed.size >= 200);
    service.brokers[1].process.kill('SIGKILL');
    await once(service.brokers[1].process, 'exit');
    // A put() sent to it before the client saw it fall silent waits for
    // it; once seen, puts go to the other two.
    await until(() => !producer.brokers[1].up);
    for (let i = 0; i < 10; i++) await producer.put(`while down ${i}`);
    for (let i = 0; i < 10; i++) confirmed.add(`while down ${i}`);
    service.brokers[1] = await service.brokers[1].restart();
    const restarted = confirmed.size;
    await until(() => confirmed.size >= restarted + 200);
    stop = true;
    await putting;
    await producer.flush();
    // Every put confirmed before the join was asked is covered by it: once
    // it answers, every one has been acked.
    const joined = await producer.join({ timeout: 30 });
    for (const data of confirmed) assert.ok(got.has(data), `${data} confirmed, never delivered (joined ${JSON.stringify(joined)})`);
    const stats = await perShard(producer);
    assert.ok(stats.every((s) => s.puts > 0), JSON.stringify(stats.map((s) => s.puts)));
    assert.deepStrictEqual(stats.map((s) => s.outstanding), [0, 0, 0]);
    await q.close();
    await consuming;
  },
));

test('two brokers that say the same shard are refused, naming both; each alone is served', LIMIT, async () => {
  // Both started with --shard 1, listing each other: found through one.
  await withService(startService(2, { service: false, flags: (k, ports) => ['--shard', '1', '--service', ports.map((p) => `:${p}`).join(',')] }), async (service, client) => {
    const q = client({ queue: 'twins' });
    await assert.rejects(q.put('x'), (e) => e instanceof ShardConflict && e.shard === 1
      && e.message.includes(`'${service.address(0)}'`) && e.message.includes(`:${service.ports[1]}'`)
      && /--shard/.test(e.message));
  });
  // Both without --shard (0), given together: the same.
  await withService(startService(2, { service: false }), async (service, client) => {
    const q = client({ queue: 'twins' }, Queue, `${service.address(0)},${service.address(1)}`);
    await assert.rejects(q.put('x'), (e) => e instanceof ShardConflict && e.shard === 0
      && e.message.includes(`'${service.address(0)}'`) && e.message.includes(`'${service.address(1)}'`));
    await assert.rejects(q.get(), ShardConflict);
    const alone = client({ queue: 'twins' }, Queue, service.address(1));
    await alone.put('fine', { key: 'any' });
    assert.deepStrictEqual(await take(alone, 1), [['fine', 0]]);
  });
});

test('an address given where no broker is: named, while the service is served', LIMIT, async () => {
  const [wrong, wrong2] = await freePairs(2); // nothing listens there
  // Only wrong addresses: the open fails, naming each.
  const none = new Queue(`127.0.0.1:${wrong},127.0.0.1:${wrong2}`, { queue: 'wrong' });
  try {
    await assert.rejects(none.stats(), (e) => e instanceof BrokerUnreachable && e.message.includes(`'127.0.0.1:${wrong}'`)
      && e.message.includes(`'127.0.0.1:${wrong2}'`));
  } finally {
    await none.close();
  }
  await withService(startService(3), async (service, client) => {
    const given = `${service.address(0)},127.0.0.1:${wrong},no-such-host.invalid:5557`;
    const q = client({ queue: 'wrong', timeout: 10 }, Queue, given);
    const told = [];
    q.on('unreachable', (error) => told.push(error));
    await putInTicks(q, 6, 2);
    assert.strictEqual(told.length, 2, told.map(String).join('; '));
    const [refused, unresolved] = [told.find((e) => e.address === `127.0.0.1:${wrong}`), told.find((e) => /no-such-host/.test(e.address))];
    assert.ok(refused instanceof BrokerUnreachable && refused.message.includes(`'127.0.0.1:${wrong}'`)
      && /ECONNREFUSED/.test(refused.message), String(refused));
    assert.ok(unresolved instanceof BrokerUnreachable && /cannot resolve 'no-such-host.invalid'/.test(unresolved.message));
    assert.deepStrictEqual(q.unreachable, told);
    assert.deepStrictEqual(q.brokers.map(({ shard }) => shard), [0, 1, 2]);
    assert.strictEqual((await take(q, 6)).length, 6);
    assert.deepStrictEqual(await q.join({ timeout: 10 }), { count: 0, dead: 0 });
  });
});

test('get() rejects with QueueShutDown once every broker is shut down and empty', LIMIT, () => withService(startService(3), async (service, client) => {
  const producer = client({ queue: 'ending' });
  await putInTicks(producer, 3, 1); // one at each broker
  const q = client({ queue: 'ending' });
  const report = await producer.shutdown(); // drain, at every broker
  assert.deepStrictEqual([report.queue, report.state, report.queued], ['ending', 'draining', 3]);
  // Each shard's item still comes; then the queue is empty everywhere.
  assert.deepStrictEqual((await take(q, 3)).map(([, shard]) => shard).sort(), [0, 1, 2]);
  await assert.rejects(q.get(), QueueShutDown);
  await assert.rejects(producer.put('refused'), QueueShutDown);
  await producer.reopen();
  await producer.put('again');
  assert.deepStrictEqual((await take(q, 1)).map(([data]) => data), ['again']);
}));

test('dead letters of every shard; requeue, show and delete by id go to the broker the id names', LIMIT, () => withService(startService(3, { flags: ['--max-attempts', '1'] }), async (service, client) => {
  const q = client({ queue: 'dead' });
  await putInTicks(q, 6, 2, (i) => `dead-${i}`);
  for (let i = 0; i < 6; i++) await q.nack(await q.get(), 0, `no ${i}`);
  let dead;
  await until(async () => (dead = await q.deadLetters()).length === 6);
  assert.deepStrictEqual(new Set(dead.map((letter) => shardOf(letter.id))), new Set([0, 1, 2]));
  for (const letter of dead) {
    const whole = await q.deadLetter(letter.id);
    assert.ok(/^dead-\d$/.test(whole.payload.toString()), whole.payload.toString());
  }
  const [first, second, ...rest] = dead;
  assert.strictEqual(await q.requeueDead([first, second.id]), 2);
  assert.strictEqual(await q.deleteDead([rest[0]]), 1);
  assert.strictEqual(await q.purgeDead(), 3);
  assert.deepStrictEqual(await q.deadLetters(), []);
  assert.strictEqual((await take(q, 2)).length, 2);
  assert.deepStrictEqual(await q.join({ timeout: 10 }), { count: 0, dead: 0 });
}));

test('peek, pause, resume, purge and delete ask every broker', LIMIT, () => withService(startService(3), async (service, client) => {
  const q = client({ queue: 'admin' });
  await q.pause();
  await putInTicks(q, 6, 2);
  for (let i = 0; i < 3; i++) await q.put(`urgent-${i}`, { priority: -1 });
  const peeked = await q.peek(5);
  assert.strictEqual(peeked.length, 5);
  assert.deepStrictEqual(peeked.slice(0, 3).map((p) => p.priority), [-1, -1, -1]); // the lowest first, across shards
  assert.deepStrictEqual(new Set((await q.peek(100)).map((p) => shardOf(p.id))), new Set([0, 1, 2]));
  assert.strictEqual((await q.stats()).paused, 1);
  assert.strictEqual((await q.resume()).paused, 0);
  const p = client({ queue: 'admin' }, PriorityQueue);
  assert.strictEqual((await p.get()).priority, -1);
  p.taskDone();
  await p.close(); // what it may have been sent meanwhile goes back: purge sees it
  assert.strictEqual(await q.purge(), 8);
  await q.put('left');
  assert.strictEqual(await q.delete(), 1);
  assert.deepStrictEqual(await q.stats(), {});
  await q.put('after'); // a new queue
  assert.strictEqual((await q.stats()).puts, 1);
  assert.deepStrictEqual((await take(q, 1)).map(([data]) => data), ['after']);
}));

// A stand-in for a broker before 2.2: a ROUTER that refuses HELLO's 4th
// field (400, as such a broker does) and answers a HELLO of 3 with a
// WELCOME of 9 fields, and STATS with one line.
test('a broker before 2.2 refuses HELLO with service: HELLO again without it, shard 0 alone', LIMIT, async () => {
  const [port] = await freePairs(1);
  const router = new zmq.Router({ linger: 0 });
  await router.bind(`tcp://127.0.0.1:${port + 1}`);
  const hellos = [];
  const serving = (async () => {
    for await (const [peer, , command, tag, ...rest] of router) {
      const reply = (...fields) => router.send([peer, 'asyncq/2', ...fields]);
      if (String(command) === 'HELLO') {
        hellos.push(rest.map(String));
        if (rest.length > 2) await reply('ERROR', '400', 'MALFORMED', tag, '', 'HELLO has 3 fields');
        else await reply('WELCOME', tag, 'old-broker', '1048576', '1000', '1024', '4096', '8388608', 'produce,consume,admin', 'memory');
      } else if (String(command) === 'STATS') {
        await reply('REPORT', tag, 'queue=old queued=2 inflight=0 state=open');
      }
    }
  })();
  const q = new Queue(`127.0.0.1:${port}`, { queue: 'old' });
  try {
    assert.deepStrictEqual(await q.stats(), { queue: 'old', queued: 2, inflight: 0, state: 'open' });
    assert.deepStrictEqual(q.brokers, [{ address: `127.0.0.1:${port}`, shard: 0, up: true }]);
    assert.strictEqual(q.producer.session.legacy, true);
    assert.deepStrictEqual(hellos, [[q.clientId, '1', 'service'], [q.clientId, '1']]);
    assert.strictEqual((await q.stats()).queued, 2);
  } finally {
    await q.close();
    router.close();
    await serving.catch(() => {});
  }
});

test('WELCOME\'s service field and FNV-1a, as PROTOCOL.md 4.15 gives them', () => {
  const { parseService, parseListed, parseAddress, parseAddresses, fnv1a32 } = require('../protocol'); // eslint-disable-line global-require
  assert.deepStrictEqual(parseService('shard=1 brokers=:5557,:5559,:5561'), { shard: 1, brokers: [':5557', ':5559', ':5561'], replicas: [] });
  assert.deepStrictEqual(parseService('shard=0 brokers='), { shard: 0, brokers: [], replicas: [] });
  assert.deepStrictEqual(parseService('brokers=:1 shard=255 later=1'), { shard: 255, brokers: [':1'], replicas: [] });
  for (const bad of ['', 'shard=256', 'shard=-1 brokers=', 'shard=x']) assert.strictEqual(parseService(bad), null, bad);
  const reached = parseAddress('tcp://10.0.0.7:5557');
  assert.strictEqual(parseListed(':5559', reached).router, 'tcp://10.0.0.7:5560');
  assert.strictEqual(parseListed(':5559', parseAddress('[::1]:5557')).router, 'tcp://[::1]:5560');
  assert.strictEqual(parseListed('other:6000', reached).router, 'tcp://other:6001');
  assert.strictEqual(parseListed('ipc:///run/aq-1', reached).router, 'ipc:///run/aq-1.router');
  assert.throws(() => parseListed(':5559', parseAddress('ipc:///run/aq')), /IPC/);
  assert.deepStrictEqual(parseAddresses('a:1, b:2,tcp://c:3').map((a) => a.router), ['tcp://a:2', 'tcp://b:3', 'tcp://c:4']);
  assert.throws(() => parseAddresses('a:1,,b:2'), /an empty one/);
  assert.throws(() => new Queue('a:1,b:notaport'), /port 'notaport'/);
  // Test vectors of FNV-1a 32 (the empty string is the offset basis).
  assert.deepStrictEqual([fnv1a32(Buffer.from('')), fnv1a32(Buffer.from('a')), fnv1a32(Buffer.from('foobar'))],
    [0x811c9dc5, 0xe40c292c, 0xbf9cf968]);
  for (const key of ['customer-7', 'é', 'z'.repeat(300)]) assert.strictEqual(fnv1a32(Buffer.from(key)), fnv1a(key), key);
  assert.doesNotThrow(() => new Queue('a:5557, b:5559,ipc:///run/aq'));
});

test('a broker alone (2.2, no --service): one session each side, CREDIT without ready', LIMIT, () => withService(startService(1, { service: false }), async (service, client) => {
  const q = client({ queue: 'single' });
  await q.put('one', { key: 'any key: the one shard' });
  const consumer = await q.consumerSession();
  assert.deepStrictEqual(q.brokers, [{ address: service.address(0), shard: 0, up: true }]);
  assert.deepStrictEqual(q.producer.session.welcome.service, { shard: 0, brokers: [], replicas: [] });
  assert.strictEqual(consumer.sharing, false);
  assert.strictEqual(consumer.lanes.length, 1);
  const credits = [];
  const send = consumer.session.send.bind(consumer.session);
  consumer.session.send = (frames) => {
    if (frames[1] === 'CREDIT') credits.push(frames.slice(2).map(String));
    return send(frames);
  };
  q.taskDone(await q.get());
  assert.deepStrictEqual(await q.join({ timeout: 10 }), { count: 0, dead: 0 });
  assert.ok(credits.length > 0 && credits.every((fields) => fields.length === 4), JSON.stringify(credits));
}));
