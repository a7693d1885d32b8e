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

// The accepted forms of a broker address, for error messages.
const ADDRESS_FORMS = 'HOST[:PORT], tcp://HOST:PORT or ipc://PATH';

// A broker address as the user typed it, parsed: { address, host, port,
// pull, router } for TCP (host without brackets, port the PULL socket's),
// { address, path, pull, router } for IPC. pull and router are the ZeroMQ
// endpoints (PROTOCOL.md 2). Throws an Error naming the accepted forms.
function parseAddress(address) {
  const bad = (why) => new Error(`not a broker address: '${address}' (${why}): give ${ADDRESS_FORMS}`);
  if (typeof address !== 'string') throw new TypeError(`a broker address is a string: ${ADDRESS_FORMS}`);
  if (address.startsWith('ipc://')) {
    const path = address.slice('ipc://'.length);
    if (!path) throw bad('no path');
    return { address, path, pull: `${address}.pull`, router: `${address}.router` };
  }
  let rest = address;
  if (rest.startsWith('tcp://')) rest = rest.slice('tcp://'.length);
  else {
    const scheme = /^([A-Za-z][A-Za-z0-9+.-]*):\/\//.exec(rest);
    if (scheme) throw bad(`${scheme[1]}:// is not a transport of asyncq`);
  }
  if (/^[0-9A-Fa-f]*:[0-9A-Fa-f]*:/.test(rest)) throw bad('an IPv6 address goes in brackets: [::1]:5557');
  if (!rest || rest.startsWith(':')) throw bad('no host');
  const m = /^(\[[0-9A-Fa-f:.]+\]|[^:[\]/\s]+)(?::([^:]*))?$/.exec(rest);
  if (!m) throw bad('HOST is a name, an IPv4 address or an IPv6 address in brackets');
  let port = DEFAULT_PORT;
  if (m[2] !== undefined) {
    if (!/^\d{1,5}$/.test(m[2])) throw bad(`port '${m[2]}' is not a number`);
    port = Number(m[2]);
    // The ROUTER listens on PORT+1.
    if (!(port >= 1 && port <= 65534)) throw bad(`port ${port} is not 1 to 65534`);
  }
  const host = m[1].startsWith('[') ? m[1].slice(1, -1) : m[1];
  return { address, host, port, pull: `tcp://${m[1]}:${port}`, router: `tcp://${m[1]}:${port + 1}` };
}

// Several broker addresses, comma-separated ('a:5557,b:5559', PROTOCOL.md
// 4.15), each parsed: a list of at least one. Throws an Error naming the
// accepted forms for an element not valid, or an empty one.
function parseAddresses(addresses) {
  if (typeof addresses !== 'string') throw new TypeError(`a broker address is a string: ${ADDRESS_FORMS}`);
  if (!addresses.includes(',')) return [parseAddress(addresses)];
  return addresses.split(',').map((part) => {
    const address = part.trim();
    if (!address) {
      throw new Error(`not a list of broker addresses: '${addresses}' (an empty one): give ${ADDRESS_FORMS}, comma-separated`);
    }
    return parseAddress(address);
  });
}

// An address of a WELCOME's brokers list (4.15), parsed: HOST:PORT,
// tcp://HOST:PORT, ipc://PATH, or :PORT for the host this client reached
// the broker at (reached, parsed; null for an IPC one: no host). Throws an
// Error for one not valid.
function parseListed(entry, reached) {
  const port = /^:(\d{1,5})$/.exec(entry);
  if (!port) return parseAddress(entry);
  if (!reached || reached.host === undefined) {
    throw new Error(`the broker at '${reached ? reached.address : '?'}' lists '${entry}' (its own host), but was reached by IPC`);
  }
  const host = reached.host.includes(':') ? `[${reached.host}]` : reached.host;
  return parseAddress(`${host}${entry}`);
}

// WELCOME's service field (4.15), 'shard=K [replicas=A,B,C] brokers=A,B,...
// [groups=A|B|C,D|E|F]': { shard, brokers: [addresses as listed], replicas:
// [HOST:PORT of each replica of this shard, 4.16] } (brokers [] for a broker
// alone, replicas [] for one not replicated), and, only when the field has
// `groups` (some shard is a group of replicas, 4.16), groups: [[the
// addresses of each shard, in shard order: a group's replicas, or a broker
// alone's one]]; null when it is not one. Keys this client does not know are
// ignored.
function parseService(text) {
  const pairs = {};
  for (const word of String(text).split(' ')) {
    const eq = word.indexOf('=');
    if (eq > 0) pairs[word.slice(0, eq)] = word.slice(eq + 1);
  }
  if (!/^\d{1,3}$/.test(pairs.shard || '') || Number(pairs.shard) > SHARD_MAX) return null;
  const list = (key) => (pairs[key] ? pairs[key].split(',').filter((entry) => entry) : []);
  const service = { shard: Number(pairs.shard), brokers: list('brokers'), replicas: list('replicas') };
  if (pairs.groups) {
    service.groups = list('groups').map((entry) => entry.split('|').filter((address) => address))
      .filter((group) => group.length);
  }
  return service;
}

const SHARD_MAX = 255;

// The shard an item id names: its top 8 bits (4.15).
function shardOfId(id) {
  return Number(BigInt(id) >> 56n);
}

// FNV-1a, 32 bits, of bytes (a Buffer): a key's shard is this mod the
// number of shards (4.15).
function fnv1a32(bytes) {
  let hash = 0x811c9dc5;
  for (const byte of bytes) hash = Math.imul(hash ^ byte, 0x01000193) >>> 0;
  return hash >>> 0;
}

// The broker's [PULL, ROUTER] endpoints for HOST[:PORT], tcp://HOST:PORT or ipc://PATH.
function endpoints(address) {
  const parsed = parseAddress(address);
  return [parsed.pull, parsed.router];
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

// A PUTS items frame of `size` bytes whose entries carry options of their
// own (the options frame `each`, 4.1): each payload after a u8 length, that
// many bytes of its options (ASCII, '' for none) and its u32 length.
function encodePutsEach(payloads, options, size) {
  const frame = Buffer.allocUnsafe(size);
  let at = 0;
  for (let i = 0; i < payloads.length; i++) {
    const payload = payloads[i];
    const text = options[i];
    frame[at] = text.length;
    at += 1;
    if (text.length) at += frame.write(text, at, 'latin1');
    frame.writeUInt32BE(payload.length, at);
    payload.copy(frame, at + PUTS_ENTRY_HEADER);
    at += PUTS_ENTRY_HEADER + payload.length;
  }
  return frame;
}

// The deliveries of an ITEMS frame (4.4), or null unless it holds exactly
// count: { id, attempt, ageUs, leaseMs, data, priority }, priority from
// priorities (as decodePriorities gives them), else null.
function decodeItems(frame, count, priorities = null) {
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
      priority: priorities ? priorities[deliveries.length] : null,
    });
    at = end;
  }
  return deliveries.length === count && at === frame.length ? deliveries : null;
}

const PRIORITY_MIN = -2147483648; // a put's priority (4.1): an int32
const PRIORITY_MAX = 2147483647;

// ITEM's priority field (4.4), a Buffer: a signed decimal within int32, as
// a number; null when it is not one.
function parsePriority(frame) {
  const text = frame.toString('latin1');
  if (!/^-?\d{1,20}$/.test(text)) return null;
  const value = Number(text);
  return value >= PRIORITY_MIN && value <= PRIORITY_MAX ? value + 0 : null; // + 0: -0 is 0
}

// ITEMS' priorities frame (4.4): count big-endian int32 (two's complement),
// as numbers; null unless it holds exactly count.
function decodePriorities(frame, count) {
  if (frame.length !== count * 4) return null;
  const priorities = [];
  for (let at = 0; at < frame.length; at += 4) priorities.push(frame.readInt32BE(at));
  return priorities;
}

// The deliveries of an ITEM or ITEMS message (4.4), its fields after the
// command (Buffers): { queue, deliveries: [{ id, attempt, ageUs, leaseMs,
// data, priority }] }, priority null where the broker sent none (a consumer
// that did not ask, CREDIT 4.3); null for a message not as 4.4 says: ITEM
// of 6 fields, or 7 with the priority; ITEMS of 3, or 4 with the priorities.
function decodeDeliveries(command, fields) {
  if (command === 'ITEM') {
    if (fields.length !== 6 && fields.length !== 7) return null;
    const [queue, id, attempt, ageUs, leaseMs, data] = fields;
    const priority = fields.length === 7 ? parsePriority(fields[6]) : null;
    if (fields.length === 7 && priority === null) return null;
    return {
      queue: queue.toString(),
      deliveries: [{
        id: id.toString(),
        attempt: Number(attempt.toString()),
        ageUs: Number(ageUs.toString()),
        leaseMs: Number(leaseMs.toString()),
        data,
        priority,
      }],
    };
  }
  if (command === 'ITEMS') {
    if (fields.length !== 3 && fields.length !== 4) return null;
    const count = Number(fields[1].toString());
    const priorities = fields.length === 4 ? decodePriorities(fields[3], count) : null;
    if (fields.length === 4 && !priorities) return null;
    const deliveries = decodeItems(fields[2], count, priorities);
    return deliveries && { queue: fields[0].toString(), deliveries };
  }
  return null;
}

// A quoted value of a DEAD list (4.12) or PEEK (4.14) line at line[at] (a '"'): its bytes,
// `\"`, `\\` and `\xNN` unescaped, whether `...` follows it (the value was
// cut), and where the line goes on.
function unquote(line, at) {
  const bytes = [];
  let i = at + 1;
  while (i < line.length && line[i] !== 0x22) {
    if (line[i] === 0x5c && i + 1 < line.length) {
      const hex = line[i + 1] === 0x78 ? line.toString('latin1', i + 2, i + 4) : '';
      if (/^[0-9A-Fa-f]{2}$/.test(hex)) {
        bytes.push(parseInt(hex, 16));
        i += 4;
      } else {
        bytes.push(line[i + 1]); // \" and \\ (any other escaped byte as itself)
        i += 2;
      }
    } else {
      bytes.push(line[i]);
      i += 1;
    }
  }
  i += 1; // the closing quote
  const cut = line.toString('latin1', i, i + 3) === '...';
  return { bytes: Buffer.from(bytes), cut, end: cut ? i + 3 : i };
}

// Bytes cut by the broker, less a UTF-8 character the cut split.
function dropSplitCharacter(bytes) {
  let start = bytes.length - 1;
  while (start >= 0 && bytes.length - start < 4 && (bytes[start] & 0xc0) === 0x80) start -= 1;
  if (start < 0) return bytes;
  const lead = bytes[start];
  const length = lead >= 0xf0 ? 4 : lead >= 0xe0 ? 3 : lead >= 0xc0 ? 2 : 1;
  return bytes.length - start < length ? bytes.subarray(0, start) : bytes;
}

// A line of DEAD list (PROTOCOL.md 4.12), a Buffer or a string, as a dead
// letter: { id (decimal digits: ids exceed 2^53), attempts, size, died (a
// Date, null when unknown), cause, reason (UTF-8), reasonCut, payload (a
// Buffer: the item's first bytes), payloadCut }. Read as key=value pairs:
// keys it does not know (those of later brokers) are skipped.
function parseDeadLetter(text) {
  const { plain, quoted } = parsePairs(text);
  const number = (key) => (/^\d+$/.test(plain[key] || '') ? Number(plain[key]) : 0);
  const died = plain.died && plain.died !== 'unknown' ? new Date(plain.died) : null;
  const reason = quoted.reason || { bytes: Buffer.alloc(0), cut: false };
  const payload = quoted.payload || { bytes: Buffer.alloc(0), cut: false };
  return {
    id: plain.id || '',
    attempts: number('attempts'),
    size: number('size'),
    died: died && !Number.isNaN(died.getTime()) ? died : null,
    cause: plain.cause || 'unknown',
    reason: (reason.cut ? dropSplitCharacter(reason.bytes) : reason.bytes).toString('utf8'),
    reasonCut: reason.cut,
    payload: payload.bytes,
    payloadCut: payload.cut,
  };
}

// A line of PEEK (PROTOCOL.md 4.14), a Buffer or a string: { id (decimal
// digits), attempts, size, priority, ageMs, payload (a Buffer: the item's
// first 64 bytes, escapes undone), payloadCut }. Keys it does not know are
// skipped; throws an Error for a line without those numbers.
function parsePeeked(text) {
  const { plain, quoted } = parsePairs(text);
  const numbers = {};
  for (const key of ['id', 'attempts', 'size', 'priority', 'age_ms']) {
    if (!/^-?\d+$/.test(plain[key] || '')) throw new Error(`not a PEEK line: '${String(text).slice(0, 200)}'`);
    numbers[key] = Number(plain[key]);
  }
  const payload = quoted.payload || { bytes: Buffer.alloc(0), cut: false };
  return {
    id: plain.id,
    attempts: numbers.attempts,
    size: numbers.size,
    priority: numbers.priority,
    ageMs: numbers.age_ms,
    payload: payload.bytes,
    payloadCut: payload.cut,
  };
}

// A REPORT line of key=value pairs (DEAD list, PEEK): { plain: { key: the
// word, as UTF-8 }, quoted: { key: { bytes, cut } } }; words without '='
// are skipped.
function parsePairs(text) {
  const line = Buffer.isBuffer(text) ? text : Buffer.from(String(text));
  const plain = {};
  const quoted = {};
  let i = 0;
  while (i < line.length) {
    if (line[i] === 0x20) {
      i += 1;
      continue;
    }
    let eq = i;
    while (eq < line.length && line[eq] !== 0x3d && line[eq] !== 0x20) eq += 1;
    if (line[eq] !== 0x3d) { // a word without '=': skipped
      i = eq;
      continue;
    }
    const key = line.toString('latin1', i, eq);
    if (line[eq + 1] === 0x22) {
      const value = unquote(line, eq + 1);
      quoted[key] = value;
      i = value.end;
    } else {
      let end = eq + 1;
      while (end < line.length && line[end] !== 0x20) end += 1;
      plain[key] = line.toString('utf8', eq + 1, end);
      i = end;
    }
  }
  return { plain, quoted };
}

// A STATS line (PROTOCOL.md 4.8) as an object: numbers as numbers, but a
// queue's name stays a string even when it is all digits ("42").
function parseStats(line) {
  const stats = {};
  for (const pair of line.split(' ')) {
    const [key, value] = pair.split('=');
    stats[key] = key !== 'queue' && /^\d+$/.test(value) ? Number(value) : value;
  }
  return stats;
}

// An ERROR from the broker (PROTOCOL.md section 8): code and its name, the
// tag of the request it answers (empty for puts), its subject (a seq range,
// ids or a queue) and text, the broker's reason.
class BrokerError extends Error {
  constructor(code, name, tag = '', subject = '', text = '') {
    super(`${code} ${name}: ${text}${subject ? ` (${subject})` : ''}`);
    this.name = 'BrokerError';
    this.code = code;
    this.errorName = name;
    this.tag = tag;
    this.subject = subject;
    this.text = text;
  }

  static fromFields(fields) {
    const [code, name, tag, subject, text] = fields.map((f) => f.toString());
    const Class = ERROR_CLASSES[Number(code)] || BrokerError;
    return new Class(Number(code), name || '', tag || '', subject || '', text || '');
  }
}

// 421 NOT_LEADER (PROTOCOL.md 4.16): a replica that does not lead its group
// answered HELLO. leader: the leader's address as the group's --peers lists
// it ('HOST:PORT'), or null while an election is under way. The client
// follows it by itself: it is seen only as the cause of the
// BrokerUnreachable rejected with when no leader answered in time.
const NOT_LEADER = 421;
class NotLeader extends BrokerError {
  constructor(code = NOT_LEADER, name = 'NOT_LEADER', tag = '', subject = '', text = 'this replica does not lead its group') {
    super(code, name, tag, subject, text);
    this.name = 'NotLeader';
    this.leader = subject.trim() || null;
  }
}

// 503: the queue was shut down (Python 3.13's asyncio.QueueShutDown): get()
// once it is empty, put() at once.
class QueueShutDown extends BrokerError {
  constructor(code = 503, name = 'SHUT_DOWN', tag = '', subject = '', text = 'the queue is shut down') {
    super(code, name, tag, subject, text);
    this.name = 'QueueShutDown';
  }
}

// The errors with a class of their own, by code.
const ERROR_CLASSES = { 503: QueueShutDown, [NOT_LEADER]: NotLeader };

// No WELCOME: the address does not resolve, nothing listens there, or no
// answer in time. The subclasses say why, from the ZeroMQ handshake.
// address: the broker's address as given; cause: the system's error, if any.
class BrokerUnreachable extends Error {
  constructor(message, options = {}) {
    super(message, options.cause ? { cause: options.cause } : undefined);
    this.name = 'BrokerUnreachable';
    if (options.address !== undefined) this.address = options.address;
  }
}
// The broker does not allow this client's key.
class KeyRefused extends BrokerUnreachable {
  constructor(message, options) {
    super(message, options);
    this.name = 'KeyRefused';
  }
}
// The broker's key is not serverKey (or the broker uses no keys).
class KeyMismatch extends BrokerUnreachable {
  constructor(message, options) {
    super(message, options);
    this.name = 'KeyMismatch';
  }
}
// The broker speaks CURVE and this client has no keys.
class KeysRequired extends BrokerUnreachable {
  constructor(message, options) {
    super(message, options);
    this.name = 'KeysRequired';
  }
}
// getNowait() found no item delivered.
class QueueEmpty extends Error {
  constructor(message) {
    super(message);
    this.name = 'QueueEmpty';
  }
}
// join() or close() took longer than its timeout. A join over several
// brokers (PROTOCOL.md 4.15) says which did not answer in time
// (unanswered: their addresses) and how many items were still outstanding
// at those that did.
class TimeoutError extends Error {
  constructor(message, options = {}) {
    super(message);
    this.name = 'TimeoutError';
    if (options.unanswered !== undefined) this.unanswered = options.unanswered;
    if (options.outstanding !== undefined) this.outstanding = options.outstanding;
  }
}

// Two brokers say they are the same shard (PROTOCOL.md 4.15): their item
// ids would collide. addresses: both, as this client reached them.
class ShardConflict extends Error {
  constructor(shard, addresses) {
    super(`two brokers say they are shard ${shard}: '${addresses[0]}' and '${addresses[1]}': each broker of a service `
      + 'needs its own --shard (or one broker was given twice, under two names), else their item ids would collide');
    this.name = 'ShardConflict';
    this.shard = shard;
    this.addresses = addresses;
  }
}

module.exports = {
  SIGNATURE,
  ADDRESS_FORMS,
  WAIT_MAX_MS,
  LEASE_MAX_MS,
  IDS_MAX,
  PRIORITY_MIN,
  PRIORITY_MAX,
  PUTS_ENTRY_HEADER,
  SHARD_MAX,
  NOT_LEADER,
  parseAddress,
  parseAddresses,
  parseListed,
  parseService,
  shardOfId,
  fnv1a32,
  endpoints,
  message,
  parse,
  checkName,
  cutText,
  encodeIds,
  encodePuts,
  encodePutsEach,
  decodeItems,
  parsePriority,
  decodePriorities,
  decodeDeliveries,
  parseDeadLetter,
  parsePeeked,
  parseStats,
  BrokerError,
  BrokerUnreachable,
  KeyRefused,
  KeyMismatch,
  KeysRequired,
  KeyRequired: KeysRequired, // the name before 2.1.0
  QueueEmpty,
  QueueShutDown,
  NotLeader,
  TimeoutError,
  ShardConflict,
};
