'use strict';
// Starts the real C programs for the tests: the broker on a free port of
// 127.0.0.1, producers and consumers. Binaries come from ASYNCQ_BIN_DIR (set
// by ctest), else build/bin at the top of the repository.
const { spawn, execFile } = require('child_process');
const path = require('path');
const readline = require('readline');

const BIN_DIR = process.env.ASYNCQ_BIN_DIR || path.join(__dirname, '..', '..', '..', 'build', 'bin');
const program = (name) => path.join(BIN_DIR, name);

class Broker {
  static start(flags = [], bind = 'tcp://127.0.0.1:0') {
    const broker = new Broker();
    broker.process = spawn(program('asyncq-broker'), ['--bind', bind, ...flags], { stdio: ['ignore', 'pipe', 'ignore'] });
    return new Promise((resolve, reject) => {
      const lines = readline.createInterface({ input: broker.process.stdout });
      lines.once('line', (line) => {
        if (!line.startsWith('READY ')) return reject(new Error(`broker did not start: ${line}`));
        broker.address = line.split(' ')[1];
        resolve(broker);
      });
      broker.process.once('exit', (code) => reject(new Error(`broker exited ${code}`)));
    });
  }

  // Runs one of the programs against this broker; resolves with its stdout.
  run(name, ...args) {
    return new Promise((resolve, reject) => {
      execFile(program(name), args, { env: { ...process.env, ASYNCQ_BROKER: this.address }, timeout: 60000 },
        (error, stdout, stderr) => (error ? reject(new Error(`${name}: ${error.message} ${stderr}`)) : resolve(stdout)));
    });
  }

  spawn(name, ...args) {
    return spawn(program(name), args, { env: { ...process.env, ASYNCQ_BROKER: this.address }, stdio: 'ignore' });
  }

  stop() {
    return new Promise((resolve) => {
      if (this.process.exitCode !== null || this.process.signalCode !== null) return resolve();
      this.process.once('exit', resolve);
      this.process.kill('SIGKILL');
    });
  }
}

module.exports = { Broker };
