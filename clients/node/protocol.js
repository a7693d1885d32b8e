'use strict';
// asyncq/2 wire protocol (docs/PROTOCOL.md): addresses, messages, the binary
// batches and id lists, errors.

const SIGNATURE = 'asyncq/2';
const DEFAULT_PORT = 5557;
const NAME_RE = /^[A-Za-z0-9._:-]{1,64}$/;
const WAIT_MAX_MS = 86400000; // longest NACK delay and JOIN time-out (9.1)
const LEASE_MAX_MS = 2147483647; // longest lease a put may ask for: the broker refuses more (400)
const IDS_MAX = 1024; // ids in one ACK, TOUCH or NACK
const TEXT_MAX = 1024; // bytes of a text field
const PUTS_ENTRY_HEADER = 4; // u32 length before each item of a PUTS
const ITEMS_ENTRY_HEADER = 28; // id, attempt, age, lease, length before each item of an ITEMS

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
  if (typeof name !== 'string' || !NAME_RE.test(name)) {
    throw new Error(`${what} name '${name}' is not valid: 1 to 64 of A-Z a-z 0-9 . _ : -`);
  }
  return name;
}

// Text cut to the protocol's limit without splitting a character.
function cutText(text) {
  const bytes = Buffer.from(String(text));
  if (bytes.length <= TEXT_MAX) return bytes;
  let end = TEXT_MAX;
  while ((bytes[end] & 0xc0) === 0x80) end -= 1; // a continuation byte: back to its character's start
  return bytes.subarray(0, end);
}

// Item ids (decimal strings: they exceed 2^53) as one frame of u64s (4.5).
function encodeIds(ids) {
  const frame = Buffer.allocUnsafe(ids.length * 8);
  ids.forEach((id, i) => frame.writeBigUInt64BE(BigInt(id), i * 8));
  return frame;
}

// A PUTS items frame of `size` bytes: each payload after its u32 length (4.1).
function encodePuts(payloads, size) {
  const frame = Buffer.allocUnsafe(size);
  let at = 0;
  for (const payload of payloads) {
    frame.writeUInt32BE(payload.length, at);
    payload.copy(frame, at + PUTS_ENTRY_HEADER);
    at += PUTS_ENTRY_HEADER + payload.length;
  }
  return frame;
}

// The deliveries of an ITEMS frame (4.4), or null unless it holds exactly count.
function decodeItems(frame, count) {
  const deliveries = [];
  let at = 0;
  while (deliveries.length < count && at + ITEMS_ENTRY_HEADER <= frame.length) {
    const start = at + ITEMS_ENTRY_HEADER;
    const end = start + frame.readUInt32BE(at + 24);
    if (end > frame.length) return null;
    deliveries.push({
      id: frame.readBigUInt64BE(at).toString(),
      attempt: frame.readUInt32BE(at + 8),
      ageUs: Number(frame.readBigUInt64BE(at + 12)),
      leaseMs: frame.readUInt32BE(at + 20),
      data: frame.subarray(start, end),
    });
    at = end;
  }
  return deliveries.length === count && at === frame.length ? deliveries : null;
}

// An ERROR from the broker (PROTOCOL.md section 8). tag names the request it
// is about (empty for puts); subject is a seq range, ids or a queue.
class BrokerError extends Error {
  constructor(code, name, tag, subject, text) {
    super(`${code} ${name}: ${text}`);
    this.code = code;
    this.name = code === 503 ? 'QueueShutDown' : 'BrokerError';
    this.errorName = name;
    this.tag = tag;
    this.subject = subject;
    this.text = text;
  }

  static fromFields(fields) {
    const [code, name, tag, subject, text] = fields.map((f) => f.toString());
    return new BrokerError(Number(code), name || '', tag || '', subject || '', text || '');
  }
}

// No WELCOME in time. The subclasses say why, from the ZeroMQ handshake.
class BrokerUnreachable extends Error {
  constructor(message) {
    super(message);
    this.name = 'BrokerUnreachable';
  }
}
// The broker does not allow this client's key.
class KeyRefused extends BrokerUnreachable {
  constructor(message) {
    super(message);
    this.name = 'KeyRefused';
  }
}
// The broker's key is not serverKey (or the broker uses no keys).
class KeyMismatch extends BrokerUnreachable {
  constructor(message) {
    super(message);
    this.name = 'KeyMismatch';
  }
}
// The broker speaks CURVE and this client has no keys.
class KeyRequired extends BrokerUnreachable {
  constructor(message) {
    super(message);
    this.name = 'KeyRequired';
  }
}
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
  SIGNATURE,
  WAIT_MAX_MS,
  LEASE_MAX_MS,
  IDS_MAX,
  PUTS_ENTRY_HEADER,
  endpoints,
  message,
  parse,
  checkName,
  cutText,
  encodeIds,
  encodePuts,
  decodeItems,
  BrokerError,
  BrokerUnreachable,
  KeyRefused,
  KeyMismatch,
  KeyRequired,
  QueueEmpty,
  TimeoutError,
};
