'use strict';
// The Node.js client against the real C broker and the C programs.
const test = require('node:test');
const assert = require('node:assert');
const { Broker } = require('./broker');
const { Queue } = require('..');

// Every client here is closed by its test, so the process should end by
// itself. Twice in CI (not reproduced here, 30 runs alone and loaded) it
// did not, after every test had passed, and the runner waited for it until
// ctest's time-out, so no later test file ran. If it is still alive 5 s
// after the last test, it says what holds it and ends; the last test above
// checks, in a process of its own, that closed clients let a process exit.
test.after(() => {
  setTimeout(() => {
    const held = process._getActiveHandles().map((handle) => handle.constructor.name);
    console.error(`interop.test.js: still running 5 s after its tests, held by: ${held.join(', ')}`);
    process.exit(process.exitCode || 0);
  }, 5000).unref();
});

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
    // SIGTERM ends each, whenever it comes (not only during a wait).
    const gone = consumers.map((c) => (c.exitCode !== null || c.signalCode !== null
      ? null : new Promise((resolve) => c.once('exit', resolve))));
    for (const c of consumers) c.kill();
    await Promise.all(gone);
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

// A stand-in for a broker that takes in one HELLO and dies before it
// answers: a ROUTER on the broker's ROUTER port (its second) that reads a
// message and closes.
async function swallowHello(address) {
  const zmq = require('zeromq'); // eslint-disable-line global-require
  const port = Number(/:(\d+)$/.exec(address)[1]) + 1;
  const router = new zmq.Router({ linger: 0 });
  await router.bind(`tcp://127.0.0.1:${port}`);
  const swallowed = (async () => {
    const frames = await router.receive();
    router.close();
    // libzmq lets the port go a moment later: the broker binds it then.
    while (!(await portFree(port))) await new Promise((resolve) => setTimeout(resolve, 10));
    return frames.slice(1).map(String).find((frame) => frame === 'HELLO');
  })();
  return { swallowed };
}

function portFree(port) {
  return new Promise((resolve) => {
    const server = require('net').createServer(); // eslint-disable-line global-require
    server.once('error', () => resolve(false));
    server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)));
  });
}

// As in the restart test when the broker is killed just after it read the
// HELLO of the consumer's session, which a get() was opening.
test('a get() whose HELLO a dying broker took in says it again to the broker that comes back', { timeout: 60000 }, async () => {
  let broker = await Broker.start();
  const address = broker.address;
  const consumer = new Queue(address, { queue: 'lost-hello' });
  const producer = new Queue(address, { queue: 'lost-hello' });
  try {
    await consumer.stats(); // its producer's session: this client has reached the broker
    await broker.stop();
    broker = null;
    const stand = await swallowHello(address);
    const got = consumer.get();
    assert.strictEqual(await stand.swallowed, 'HELLO');
    broker = await Broker.start([], address);
    await producer.put('after');
    assert.strictEqual((await got).toString(), 'after');
    consumer.taskDone();
  } finally {
    await producer.close();
    await consumer.close();
    if (broker) await broker.stop();
  }
});

test('a get() that opens while the broker it reached restarts waits for it, past the timeout', { timeout: 60000 }, async () => {
  let broker = await Broker.start();
  const address = broker.address;
  const consumer = new Queue(address, { queue: 'down', timeout: 1 });
  const producer = new Queue(address, { queue: 'down' });
  try {
    await consumer.stats(); // this client has reached the broker
    await broker.stop();
    const got = consumer.get();
    let settled = false;
    got.then(() => { settled = true; }, () => { settled = true; });
    await new Promise((resolve) => setTimeout(resolve, 1500));
    assert.strictEqual(settled, false); // neither refused (nothing listens) nor timed out
    broker = await Broker.start([], address);
    await producer.put('back');
    assert.strictEqual((await got).toString(), 'back');
    consumer.taskDone();
  } finally {
    await producer.close();
    await consumer.close({ timeout: 1 }).catch(() => {});
    await broker.stop();
  }
});

test('close() ends a get() waiting for a broker that restarts', { timeout: 60000 }, async () => {
  const broker = await Broker.start();
  const q = new Queue(broker.address, { queue: 'closing' });
  await q.stats();
  await broker.stop();
  const got = q.get();
  await new Promise((resolve) => setTimeout(resolve, 300));
  const started = Date.now();
  await q.close({ timeout: 1 });
  await assert.rejects(got, /queue client is closed/);
  assert.ok(Date.now() - started < 1500, `close took ${Date.now() - started} ms`);
});

// A script's process must end by itself once its clients are closed: no
// socket or timer left behind.
function exitsAlone(script) {
  const { spawn } = require('child_process'); // eslint-disable-line global-require
  const child = spawn(process.execPath, ['-e', script], { cwd: __dirname, stdio: ['ignore', 'inherit', 'inherit'] });
  return new Promise((resolve) => {
    const timer = setTimeout(() => { child.kill('SIGKILL'); resolve('still running after 15 s'); }, 15000);
    child.once('exit', (code, signal) => { clearTimeout(timer); resolve(signal || code); });
  });
}

test('a client closed while it says HELLO again (its broker fell silent) lets the process exit', { timeout: 60000 }, async () => {
  const outcome = await exitsAlone(`
    const { Broker } = require('./broker');
    const { Queue } = require('..');
    (async () => {
      const broker = await Broker.start(['--heartbeat-ms', '100']);
      const q = new Queue(broker.address, { queue: 'silent' });
      const c = new Queue(broker.address, { queue: 'silent' });
      await q.stats();
      const got = c.get().catch(() => {});
      while (!c.consumer) await new Promise((resolve) => setTimeout(resolve, 10));
      broker.process.kill('SIGSTOP'); // silent: the clients say HELLO again
      while (!q.producer.session.rehello || !c.consumer.session.rehello) await new Promise((resolve) => setTimeout(resolve, 10));
      await Promise.all([q.close(), c.close()]);
      await got;
      await broker.stop();
    })().catch((error) => { console.error(error); process.exitCode = 1; });
  `);
  assert.strictEqual(outcome, 0);
});
