#!/usr/bin/env node
// bench/node_puts.mjs: awaited puts per second of asyncq's Node.js client
// (`await q.put(x)` in a loop, each resolved once the broker has confirmed
// the item: SYNCED, PROTOCOL.md 4.7) against awaited XADDs per second of
// node-redis (`await client.xAdd(...)` in a loop) on a Redis of its own, in
// one run on this machine. Also, for comparison, awaited stats() calls: a
// bare request-reply with the broker; and the floor under any Node.js client
// of libzmq: awaited round trips of a bare zeromq.js Dealer (nothing of
// asyncq) to a libzmq echo that does no work (zmq_proxy of a ROUTER onto
// itself, in C, started with python3-zmq). They take turns, run by run; each figure is the median (and range) of RUNS runs. A
// benchmark: it asserts nothing.
//
//   npm ci --prefix clients/node          # zeromq, and redis (a devDependency)
//   node bench/node_puts.mjs              # about 20 s on 2 cores
//   ITEMS=5000 RUNS=1 node bench/node_puts.mjs
//
// Settings (environment): BIN (the broker; default build-rel/bin, then
// build/bin, or ASYNCQ_BIN_DIR), ITEMS (awaited puts per run, 20000), SIZE
// (bytes per item, 64), RUNS (3), REDIS_SERVER (redis-server). Both servers
// are started here on free loopback ports, in memory (no --data-dir, Redis
// without persistence), and stopped at the end.
import { spawn } from 'node:child_process';
import { createRequire } from 'node:module';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';

const ROOT = path.join(path.dirname(fileURLToPath(import.meta.url)), '..');
const require = createRequire(path.join(ROOT, 'clients', 'node', 'package.json'));
const { Queue } = require('./index.js');

const ITEMS = Number(process.env.ITEMS || 20000);
const SIZE = Number(process.env.SIZE || 64);
const RUNS = Number(process.env.RUNS || 3);
const REDIS_SERVER = process.env.REDIS_SERVER || 'redis-server';

function binDir() {
  if (process.env.BIN) return process.env.BIN;
  if (process.env.ASYNCQ_BIN_DIR) return process.env.ASYNCQ_BIN_DIR;
  const release = path.join(ROOT, 'build-rel', 'bin');
  return fs.existsSync(path.join(release, 'asyncq-broker')) ? release : path.join(ROOT, 'build', 'bin');
}

const ECHO = `
import zmq
socket = zmq.Context().socket(zmq.ROUTER)
socket.bind("tcp://127.0.0.1:0")
print(socket.getsockopt_string(zmq.LAST_ENDPOINT), flush=True)
zmq.proxy(socket, socket)  # in libzmq: each message back to its sender
`;

const children = new Set();
process.on('exit', () => children.forEach((child) => child.kill('SIGKILL')));

// The broker on a free port of 127.0.0.1; resolves with its address.
function startBroker() {
  const program = path.join(binDir(), 'asyncq-broker');
  const child = spawn(program, ['--bind', 'tcp://127.0.0.1:0'], { stdio: ['ignore', 'pipe', 'ignore'] });
  children.add(child);
  return new Promise((resolve, reject) => {
    child.once('error', reject);
    child.once('exit', (code) => reject(new Error(`${program} exited ${code}`)));
    readline.createInterface({ input: child.stdout }).once('line', (line) => {
      if (line.startsWith('READY ')) resolve(line.split(' ')[1]);
      else reject(new Error(`broker did not start: ${line}`));
    });
  });
}

// The libzmq echo; resolves with its endpoint.
function startEcho() {
  const child = spawn(process.env.PYTHON || '/usr/bin/python3', ['-c', ECHO],
    { stdio: ['ignore', 'pipe', 'inherit'] });
  children.add(child);
  return new Promise((resolve, reject) => {
    child.once('error', reject);
    child.once('exit', (code) => reject(new Error(`the libzmq echo exited ${code}`)));
    readline.createInterface({ input: child.stdout }).once('line', resolve);
  });
}

function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

// A redis-server of our own, without persistence; resolves with a connected client.
async function startRedis() {
  const { createClient } = require('redis');
  const port = await freePort();
  const child = spawn(REDIS_SERVER, ['--port', String(port), '--bind', '127.0.0.1', '--save', '',
    '--appendonly', 'no'], { stdio: ['ignore', 'pipe', 'inherit'] });
  children.add(child);
  await new Promise((resolve, reject) => {
    child.once('error', reject);
    child.once('exit', (code) => reject(new Error(`${REDIS_SERVER} exited ${code}`)));
    readline.createInterface({ input: child.stdout }).on('line', (line) => {
      if (/Ready to accept connections/.test(line)) resolve();
    });
  });
  const client = createClient({ socket: { host: '127.0.0.1', port } });
  await client.connect();
  return client;
}

const payload = Buffer.alloc(SIZE, 'x');

async function asyncqRun(address, run) {
  const q = new Queue(address, { queue: `bench-${run}` });
  await q.put(payload); // sessions open, PUSH connected
  const start = process.hrtime.bigint();
  for (let i = 0; i < ITEMS; i++) await q.put(payload);
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  await q.close();
  return ITEMS / seconds;
}

// The floor under an awaited put: a bare request-reply with the broker
// (STATS), awaited in a loop.
async function statsRun(address, run) {
  const q = new Queue(address, { queue: `bench-stats-${run}` });
  await q.stats();
  const start = process.hrtime.bigint();
  for (let i = 0; i < ITEMS; i++) await q.stats();
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  await q.close();
  return ITEMS / seconds;
}

// The floor: a bare zeromq.js Dealer, each send awaited with its echo.
async function floorRun(endpoint) {
  const { Dealer } = require('zeromq');
  const socket = new Dealer({ linger: 0 });
  socket.connect(endpoint);
  await socket.send(payload);
  await socket.receive();
  const start = process.hrtime.bigint();
  for (let i = 0; i < ITEMS; i++) {
    await socket.send(payload);
    await socket.receive();
  }
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  socket.close();
  return ITEMS / seconds;
}

async function redisRun(client, run) {
  const key = `bench-${run}`;
  await client.xAdd(key, '*', { d: payload });
  const start = process.hrtime.bigint();
  for (let i = 0; i < ITEMS; i++) await client.xAdd(key, '*', { d: payload });
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  await client.del(key);
  return ITEMS / seconds;
}

const median = (values) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)];
const show = (values) => {
  const sorted = [...values].sort((a, b) => a - b);
  const round = (v) => Math.round(v).toLocaleString('en').replace(/,/g, ' ');
  return `${round(median(sorted))} (${round(sorted[0])}-${round(sorted[sorted.length - 1])})`;
};

const address = await startBroker();
const redis = await startRedis();
const echo = await startEcho();
const results = { asyncq: [], stats: [], redis: [], floor: [] };
for (let run = 0; run < RUNS; run++) {
  results.asyncq.push(await asyncqRun(address, run));
  results.redis.push(await redisRun(redis, run));
  results.stats.push(await statsRun(address, run));
  results.floor.push(await floorRun(echo));
}
await redis.quit();
const ratio = (a) => (median(a) / median(results.redis)).toFixed(2);
console.log(`awaited puts/s, ${ITEMS} items of ${SIZE} bytes, median (range) of ${RUNS} runs, node ${process.version}`);
console.log(`asyncq put (SYNCED)                ${show(results.asyncq)}   / Redis ${ratio(results.asyncq)}`);
console.log(`asyncq stats() round trips        ${show(results.stats)}   / Redis ${ratio(results.stats)}`);
console.log(`node-redis XADD                    ${show(results.redis)}`);
console.log(`zeromq.js round trips (floor)      ${show(results.floor)}   / Redis ${ratio(results.floor)}`);
process.exit(0);
