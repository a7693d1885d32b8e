'use strict';
// asyncq/1 wire protocol (docs/PROTOCOL.md): addresses, messages, errors.

const SIGNATURE = 'asyncq/1';
const DEFAULT_PORT = 5557;
const NAME_RE = /^[A-Za-z0-9._:-]{1,64}$/;

// The broker's [PULL, ROUTER] endpoints for HOST[:PORT], tcp://HOST:PORT or ipc://PATH.
function endpoints(address) {
  if (address.startsWith('ipc://')) return [`${address}.pull`, `${address}.router`];
  if (address.startsWith('tcp://')) address = address.slice('tcp://'.length);
  let host = address;
  let port = DEFAULT_PORT;
  const m = /^(\[[^\]]+\]|[^:]+)(?::(\d+))?$/.exec(address);
  if (m) {
    host = m[1];
    if (m[2] !== undefined) port = Number(m[2]);
  }
  if (!m || !host || !(port > 0 && port < 65535)) throw new Error(`not a broker address: ${address}`);
  return [`tcp://${host}:${port}`, `tcp://${host}:${port + 1}`];
}

function message(command, ...fields) {
  return [SIGNATURE, command, ...fields.map((f) => (typeof f === 'number' ? String(f) : f))];
}

function parse(frames) {
  if (frames.length < 2 || frames[0].toString() !== SIGNATURE) return null;
  return { command: frames[1].toString(), fields: frames.slice(2) };
}

function checkName(name, what = 'queue') {
  if (!NAME_RE.test(name)) throw new Error(`${what} name '${name}' is not valid: 1 to 64 of A-Z a-z 0-9 . _ : -`);
  return name;
}

// An ERROR from the broker (PROTOCOL.md section 6).
class BrokerError extends Error {
  constructor(code, name, subject, text) {
    super(`${code} ${name}: ${text}`);
    this.code = code;
    this.name = code === 503 ? 'QueueShutDown' : 'BrokerError';
    this.errorName = name;
    this.subject = subject;
    this.text = text;
  }

  static fromFields(fields) {
    const [code, name, subject, text] = fields.map((f) => f.toString());
    return new BrokerError(Number(code), name || '', subject || '', text || '');
  }
}

class BrokerUnreachable extends Error {}
class QueueEmpty extends Error {
  constructor(message) {
    super(message);
    this.name = 'QueueEmpty';
  }
}
class TimeoutError extends Error {
  constructor(message) {
    super(message);
    this.name = 'TimeoutError';
  }
}

module.exports = {
  SIGNATURE, endpoints, message, parse, checkName, BrokerError, BrokerUnreachable, QueueEmpty, TimeoutError,
};
