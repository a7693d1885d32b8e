'use strict';
// Starts the real C programs for the tests: the broker on a free port of
// 127.0.0.1, producers and consumers. Binaries come from ASYNCQ_BIN_DIR (set
// by ctest), else build/bin at the top of the repository.
const { spawn, execFile } = require('child_process');
const fs = require('fs');
const net = require('net');
const os = require('os');
const path = require('path');
const readline = require('readline');
const { Queue } = require('..');

const BIN_DIR = process.env.ASYNCQ_BIN_DIR || path.join(__dirname, '..', '..', '..', 'build', 'bin');
const program = (name) => path.join(BIN_DIR, name);

// Brokers running: killed if this process ends before a test stops them
// (a test hung and the runner was stopped).
const running = new Set();
const killRunning = () => running.forEach((child) => child.kill('SIGKILL'));
process.on('exit', killRunning);
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.once(signal, () => {
    killRunning();
    process.exit(128 + os.constants.signals[signal]);
  });
}

function execProgram(name, args, env) {
  return new Promise((resolve, reject) => {
    execFile(program(name), args, { env: { ...process.env, ...env }, timeout: 60000 },
      (error, stdout, stderr) => (error ? reject(new Error(`${name}: ${error.message} ${stderr}`)) : resolve(stdout)));
  });
}

class Broker {
  static start(flags = [], bind = 'tcp://127.0.0.1:0') {
    const broker = new Broker();
    broker.env = {}; // for the programs run against it
    broker.keys = null;
    broker.flags = flags;
    broker.process = spawn(program('asyncq-broker'), ['--bind', bind, ...flags], { stdio: ['ignore', 'pipe', 'ignore'] });
    running.add(broker.process);
    broker.process.once('exit', () => running.delete(broker.process));
    return new Promise((resolve, reject) => {
      const lines = readline.createInterface({ input: broker.process.stdout });
      lines.once('line', (line) => {
        if (line.startsWith('READY ')) {
          broker.address = line.split(' ')[1];
          resolve(broker);
        } else {
          broker.stop().then(() => reject(new Error(`broker did not start: ${line}`)));
        }
      });
      broker.process.once('exit', (code) => reject(new Error(`broker exited ${code}`)));
    });
  }

  // A broker that speaks CURVE (PROTOCOL.md 7), with certificates made in a
  // temporary directory: its own, one allowed in for each of clients (name
  // -> roles), and one not allowed for each of strangers. The programs run
  // against it use the first client's.
  static async startCurve(clients = { client: 'produce,consume,admin' }, strangers = []) {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'asyncq-keys-'));
    const keygen = (name, roles) => execProgram('asyncq', ['keygen', name, '--dir', dir, ...(roles ? ['--role', roles] : [])]);
    try {
      fs.mkdirSync(path.join(dir, 'clients'));
      await keygen('broker');
      for (const [name, roles] of Object.entries(clients)) {
        await keygen(name, roles);
        fs.copyFileSync(path.join(dir, `${name}.key`), path.join(dir, 'clients', `${name}.key`));
      }
      for (const name of strangers) await keygen(name);
      const broker = await Broker.start(['--curve-secret', path.join(dir, 'broker.key_secret'),
        '--clients', path.join(dir, 'clients')]);
      broker.keys = dir;
      broker.env = { ASYNCQ_CURVE_SECRET: broker.secretKey(Object.keys(clients)[0]), ASYNCQ_SERVER_KEY: broker.publicKey() };
      return broker;
    } catch (error) {
      fs.rmSync(dir, { recursive: true, force: true });
      throw error;
    }
  }

  secretKey(name) {
    return path.join(this.keys, `${name}.key_secret`);
  }

  publicKey(name = 'broker') {
    return path.join(this.keys, `${name}.key`);
  }

  // Runs one of the programs against this broker; resolves with its stdout.
  run(name, ...args) {
    return execProgram(name, args, { ASYNCQ_BROKER: this.address, ...this.env });
  }

  spawn(name, ...args) {
    return spawn(program(name), args, { env: { ...process.env, ASYNCQ_BROKER: this.address, ...this.env }, stdio: 'ignore' });
  }

  // A broker started again as this one was, at its address (after stop()).
  restart() {
    return Broker.start(this.flags, this.address);
  }

  stop() {
    if (this.keys) fs.rmSync(this.keys, { recursive: true, force: true });
    return new Promise((resolve) => {
      if (this.process.exitCode !== null || this.process.signalCode !== null) return resolve();
      this.process.once('exit', resolve);
      this.process.kill('SIGKILL');
    });
  }
}

// Runs body(broker, client) against the broker started (a promise); the
// Queues client(options) makes (client(options, LifoQueue): of that class)
// are closed after it, and the broker stopped, however body ends. A failure
// to close fails the test too.
async function withBroker(started, body) {
  const broker = await started;
  const clients = [];
  const client = (options, Class = Queue) => {
    const q = new Class(broker.address, options);
    clients.push(q);
    return q;
  };
  let failure = null;
  try {
    await body(broker, client);
  } catch (error) {
    failure = error;
  }
  const closed = await Promise.allSettled(clients.map((q) => q.close({ timeout: 10 })));
  await broker.stop();
  const closeFailure = closed.find((result) => result.status === 'rejected');
  if (failure || closeFailure) throw failure || closeFailure.reason;
}

// Whether port of 127.0.0.1 is free now.
function portFree(port) {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.once('error', () => resolve(false));
    server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)));
  });
}

// Ports for brokers that must be told each other's port before they start
// (--service): count pairs (PORT, PORT+1), free now, below the ephemeral
// range (32768 and up on Linux), where the brokers of the other tests,
// bound to port 0, never land. Picked from this process's id, so that
// runs side by side do not pick the same.
let nextPort = 20000 + ((process.pid * 7919) % 5000) * 2;
// count runs of `width` ports in a row, each free now.
async function freeRuns(count, width) {
  const ports = [];
  while (ports.length < count) {
    if (nextPort > 31990) nextPort = 20000;
    const port = nextPort;
    nextPort += width;
    let free = true;
    for (let i = 0; i < width && free; i++) free = await portFree(port + i);
    if (free) ports.push(port);
  }
  return ports;
}
const freePairs = (count) => freeRuns(count, 2);

// Ports for replicas (PROTOCOL.md 4.16): count of them, PORT each with
// PORT, PORT+1 and PORT+2 (the replicas' own) free now; drawn as
// freePairs() draws its pairs.
const freeTriples = (count) => freeRuns(count, 3);

// A service of count brokers on 127.0.0.1 (PROTOCOL.md 4.15): shard K at
// ports[K], each with --shard K and --service listing them all as :PORT
// (options.service false: none), and flags besides (options.flags, an
// array for all, or a function of K and the ports). With options.durable, each keeps its
// data in a directory of its own, removed by stop(). Resolves with {
// brokers, ports, address(K), stop() }.
async function startService(count, options = {}) {
  // A port found free may be taken before the broker binds it (tests run
  // side by side): its broker exits 3 (cannot listen), and the service is
  // started again on other ports.
  for (let attempt = 1; ; attempt++) {
    try {
      return await startServiceOnce(count, options);
    } catch (error) {
      if (attempt === 5 || error.message !== 'broker exited 3') throw error;
    }
  }
}

async function startServiceOnce(count, options) {
  const ports = await freePairs(count);
  const list = ports.map((port) => `:${port}`).join(',');
  const flagsOf = typeof options.flags === 'function' ? options.flags : () => options.flags || [];
  const dirs = [];
  const brokers = [];
  const service = {
    brokers,
    ports,
    address: (k) => `127.0.0.1:${ports[k]}`,
    async stop() {
      await Promise.all(brokers.map((broker) => {
        if (broker.process.signalCode === null && broker.process.exitCode === null) broker.process.kill('SIGCONT');
        return broker.stop();
      }));
      for (const dir of dirs) fs.rmSync(dir, { recursive: true, force: true });
    },
  };
  try {
    for (let k = 0; k < count; k++) {
      const flags = [...(options.service === false ? [] : ['--shard', String(k), '--service', list]), ...flagsOf(k, ports)];
      if (options.durable) {
        const dir = fs.mkdtempSync(path.join(os.tmpdir(), `asyncq-shard-${k}-`));
        dirs.push(dir);
        flags.push('--data-dir', dir, '--fsync', 'never');
      }
      brokers.push(await Broker.start(flags, `tcp://127.0.0.1:${ports[k]}`));
    }
  } catch (error) {
    await service.stop();
    throw error;
  }
  return service;
}

// Runs body(service, client) against the service started (a promise), as
// withBroker does: client(options, Class, address) makes a Queue given
// address (default: shard 0's alone), closed after body.
async function withService(started, body) {
  const service = await started;
  const clients = [];
  const client = (options, Class = Queue, address = service.address(0)) => {
    const q = new Class(address, options);
    clients.push(q);
    return q;
  };
  let failure = null;
  try {
    await body(service, client);
  } catch (error) {
    failure = error;
  }
  const closed = await Promise.allSettled(clients.map((q) => q.close({ timeout: 10 })));
  await service.stop();
  const closeFailure = closed.find((result) => result.status === 'rejected');
  if (failure || closeFailure) throw failure || closeFailure.reason;
}

// Resolves once condition() (which may return a promise) holds, looking every 10 ms.
async function until(condition) {
  while (!(await condition())) await new Promise((resolve) => setTimeout(resolve, 10));
}

module.exports = {
  Broker, withBroker, until, freePairs, freeTriples, startService, withService, program,
};
