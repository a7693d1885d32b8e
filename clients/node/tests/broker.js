'use strict';
// Starts the real C programs for the tests: the broker on a free port of
// 127.0.0.1, producers and consumers. Binaries come from ASYNCQ_BIN_DIR (set
// by ctest), else build/bin at the top of the repository.
const { spawn, execFile } = require('child_process');
const fs = require('fs');
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

// Resolves once condition() (which may return a promise) holds, looking every 10 ms.
async function until(condition) {
  while (!(await condition())) await new Promise((resolve) => setTimeout(resolve, 10));
}

module.exports = { Broker, withBroker, until };
