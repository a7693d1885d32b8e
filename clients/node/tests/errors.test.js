'use strict';
// Errors say what a user needs: the address as typed, the cause at once
// (a name that does not resolve, nothing listening), the accepted forms and
// types, and the broker's code and reason for each refusal.
const test = require('node:test');
const assert = require('node:assert');
const net = require('net');
const os = require('os');
const path = require('path');
const { Broker, withBroker } = require('./broker');
const { Queue, BrokerError, BrokerUnreachable } = require('..');

// Waits here are on conditions; one that never comes fails the test, not hangs it.
const LIMIT = { timeout: 60000 };

const FORMS = /HOST\[:PORT\], tcp:\/\/HOST:PORT or ipc:\/\/PATH/;

// A port of 127.0.0.1 where nothing listens now.
function freePort() {
  return new Promise((resolve) => {
    const server = net.createServer().listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

// Runs body(q) on a Queue for address, closing it after.
async function withQueue(address, options, body) {
  const q = new Queue(address, options);
  try {
    return await body(q);
  } finally {
    await q.close();
  }
}

// Whether error is BrokerUnreachable about address, as typed, and not the ZeroMQ endpoint.
function aboutAddress(error, address) {
  return error instanceof BrokerUnreachable && error.address === address
    && error.message.includes(`'${address}'`) && !error.message.includes('tcp://127');
}

test('a malformed address is refused at once, naming the accepted forms', () => {
  for (const address of [':notaport', 'http://x', 'localhost:99999', 'host:port', 'tcp://', '::1', 'a b', 42]) {
    assert.throws(() => new Queue(address), (e) => FORMS.test(e.message)
      && (typeof address !== 'string' || e.message.includes(`'${address}'`)), String(address));
  }
  for (const address of ['localhost', 'localhost:5557', 'tcp://127.0.0.1:5557', '[::1]:5557', 'ipc:///tmp/asyncq']) {
    assert.doesNotThrow(() => new Queue(address), address);
  }
});

// Each case below would wait out the 60-second timeout (past the test's)
// if the cause were not seen at once.
{
  test('nothing listening at the port is said at once, with the cause', { timeout: 30000 }, async () => {
    const router = await freePort();
    const address = `127.0.0.1:${router - 1}`; // the ROUTER listens on PORT+1
    await withQueue(address, { timeout: 60 }, async (q) => {
      await assert.rejects(q.put('x'), (e) => aboutAddress(e, address) && e.cause && e.cause.code === 'ECONNREFUSED'
        && /ECONNREFUSED/.test(e.message) && /is the broker running\?/.test(e.message));
    });
    const ipc = `ipc://${path.join(os.tmpdir(), `asyncq-none-${process.pid}`)}`;
    await withQueue(ipc, { timeout: 60 }, async (q) => {
      await assert.rejects(q.get(), (e) => aboutAddress(e, ipc) && e.cause && e.cause.code === 'ENOENT');
    });
  });
}

test('a host name that does not resolve is said at once, with the cause', { timeout: 30000 }, async () => {
  const address = 'no-such-host.invalid:5557';
  await withQueue(address, { timeout: 60 }, async (q) => {
    await assert.rejects(q.stats(), (e) => aboutAddress(e, address) && /cannot resolve 'no-such-host.invalid'/.test(e.message)
      && e.cause && /ENOTFOUND|EAI_AGAIN/.test(e.cause.code));
  });
});

test('timeout is in seconds: a listener that never answers HELLO', { timeout: 30000 }, async () => {
  const silent = net.createServer((socket) => socket.on('error', () => {}));
  await new Promise((resolve) => {
    silent.listen(0, '127.0.0.1', resolve);
  });
  const address = `127.0.0.1:${silent.address().port - 1}`;
  try {
    await withQueue(address, { timeout: 0.5 }, async (q) => {
      assert.strictEqual(q.timeout, 0.5);
      const start = Date.now();
      await assert.rejects(q.stats(), (e) => aboutAddress(e, address) && /no answer from the broker/.test(e.message));
      assert.ok(Date.now() - start >= 450, `gave up after ${Date.now() - start} ms`);
    });
  } finally {
    silent.close();
  }
  assert.throws(() => new Queue('localhost', { timeout: -1 }), /seconds/);
});

test('put() takes a Buffer, a Uint8Array or a string, and nothing else', { timeout: 30000 }, async () => {
  // Refused before any connection: nothing listens at this address.
  await withQueue(`127.0.0.1:${(await freePort()) - 1}`, { timeout: 60 }, async (q) => {
    for (const item of [{ job: 1 }, 42, null, undefined, [1, 2], true]) {
      await assert.rejects(q.put(item), (e) => e instanceof TypeError
        && /a Buffer, a Uint8Array or a string/.test(e.message), String(item));
      await assert.rejects(q.send(item), TypeError);
    }
  });
});

test('refusals show the broker\'s code and reason', LIMIT, () => withBroker(Broker.start(['--max-credit', '10']), async (broker, client) => {
  const greedy = client({ queue: 'refusals', prefetch: 10 });
  await assert.rejects(greedy.get(), (e) => e instanceof BrokerError && e.code === 429
    && /^429 LIMIT: \S/.test(e.message));
  const q = client({ queue: 'refusals' });
  await q.put(Buffer.from([0, 1, 2]));
  await q.put(new Uint8Array([3, 4]));
  await q.shutdown();
  await assert.rejects(q.put('refused'), (e) => e instanceof BrokerError && e.code === 503
    && /^503 SHUT_DOWN: .+ \(\d+\)$/.test(e.message) && e.text && e.errorName === 'SHUT_DOWN');
  assert.deepStrictEqual((await q.get()).data, Buffer.from([0, 1, 2]));
  q.taskDone();
  assert.deepStrictEqual((await q.get()).data, Buffer.from([3, 4]));
  q.taskDone();
}));
