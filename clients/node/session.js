'use strict';
// One DEALER and the session it holds with the broker (PROTOCOL.md 4.2):
// HELLO, replies and errors matched to requests by tag, heartbeats answered,
// and saying HELLO again when the broker restarts or falls silent.
const zmq = require('zeromq');
const {
  message, parse, BrokerError, BrokerUnreachable, KeyRefused, KeyMismatch, KeyRequired,
} = require('./protocol');

const REPLIES = new Set(['CREDITED', 'SYNCED', 'JOINED', 'TIMEOUT', 'REPORT']);

// The number a tag ends with: tags count up, so it tells when a request was sent.
const tagNumber = (tag) => Number(/\d*$/.exec(tag)[0] || -1);

class Session {
  // options.helloSeq(): the seq HELLO carries (4.2); options.curve: CURVE
  // socket options, or null.
  constructor(endpoint, clientId, options = {}) {
    this.endpoint = endpoint;
    this.clientId = clientId;
    this.helloSeq = options.helloSeq || (() => 0);
    this.curve = options.curve || null;
    this.welcome = null; // WELCOME's fields, once one came
    this.heartbeat = 1000;
    this.generation = 0; // WELCOMEs received: a request sent in an older one is stale
    this.helloTag = -1; // number of the tag of the HELLO the latest WELCOME answered
    this.tags = 0;
    this.pending = new Map(); // tag -> { build, resolve, reject }
    this.helloWaiter = null;
    this.handshakeFailure = null; // why ZeroMQ could not connect: 'auth', a protocol error code, 'other'
    this.onMessage = () => {};
    this.onReconnect = null;
    this.closed = false;
    this.rehello = null;
    this.socket = this.newSocket();
  }

  newSocket() {
    const socket = new zmq.Dealer({ linger: 0, ...this.curve });
    // ZeroMQ tells why a handshake failed (a refused key, a wrong server
    // key, a broker that wants keys) only in socket events.
    socket.events.on('handshake:error:auth', () => this.handshakeFailed('auth'));
    socket.events.on('handshake:error:protocol', (event) => this.handshakeFailed(event.error.code || 'protocol'));
    socket.events.on('handshake:error:other', () => this.handshakeFailed('other'));
    socket.connect(this.endpoint);
    this.sending = Promise.resolve(); // sends still to go on this socket
    return socket;
  }

  nextTag(kind) {
    this.tags += 1;
    return `${kind}${this.tags}`;
  }

  // zeromq sockets take one send at a time: sends are chained. A send that
  // fails (the socket was replaced or closed) is covered by resending
  // after HELLO.
  send(frames) {
    const socket = this.socket;
    this.sending = this.sending.then(() => socket.send(frames)).catch(() => {});
    return this.sending;
  }

  async open(timeoutMs) {
    this.read().catch((error) => {
      if (!this.closed) console.error(`asyncq: ${this.clientId}: ${error.message}`);
    });
    try {
      if (await this.hello(timeoutMs, true)) return;
      throw this.unreachable();
    } catch (error) {
      await this.close(false);
      throw error;
    }
  }

  // Resolves true on WELCOME, false after timeoutMs (or, if failFast, once
  // the handshake has failed for good); rejects with the BrokerError that
  // answered.
  hello(timeoutMs, failFast = false) {
    const tag = this.nextTag('hello');
    return new Promise((resolve, reject) => {
      const settle = (callback) => (value) => {
        clearTimeout(timer);
        this.helloWaiter = null;
        callback(value);
      };
      const timer = setTimeout(settle(resolve), timeoutMs, false);
      this.helloWaiter = { tag, failFast, resolve: settle(resolve), reject: settle(reject) };
      this.send(message('HELLO', tag, this.clientId, this.helloSeq()));
    });
  }

  handshakeFailed(kind) {
    // 'other' (the connection broke during the handshake) says least.
    if (kind !== 'other' || !this.handshakeFailure) this.handshakeFailure = kind;
    // A ZAP refusal or a mechanism mismatch will not change by retrying.
    if (kind !== 'other' && this.helloWaiter && this.helloWaiter.failFast) this.helloWaiter.resolve(false);
  }

  // Why HELLO got no answer (PROTOCOL.md 7). A broken handshake ('other')
  // is also how a broker without keys turns away other hosts.
  unreachable() {
    const failure = this.handshakeFailure;
    const where = `the broker at ${this.endpoint}`;
    const mechanism = failure === 'ERR_ZMTP_MECHANISM_MISMATCH'; // one side uses CURVE, the other not
    if (failure === 'auth') return new KeyRefused(`${where} refused this client's key`);
    if (mechanism && !this.curve) {
      return new KeyRequired(`${where} requires keys: give curveSecret and serverKey `
        + '(or ASYNCQ_CURVE_SECRET and ASYNCQ_SERVER_KEY)');
    }
    if (mechanism) return new KeyMismatch(`${where} uses no keys (CURVE)`);
    if (failure && !this.curve) {
      return new KeyRequired(`${where} broke off the handshake: it requires keys, `
        + 'or it has none and takes connections only from its own host');
    }
    if (failure) {
      return new KeyMismatch(`${where} failed the CURVE handshake: its key does not match serverKey, or it uses no keys`);
    }
    return new BrokerUnreachable(`no answer from ${where}`);
  }

  // Says HELLO again (until the broker answers), then lets the owner restore
  // its state and sends every request still waiting again.
  reconnect() {
    if (!this.rehello) {
      this.rehello = (async () => {
        while (!this.closed && !(await this.helloAgain())) {
          // A fresh socket, so that unanswered HELLOs do not pile up.
          const old = this.socket;
          this.socket = this.newSocket();
          old.close();
        }
        if (this.closed) return;
        const waiting = [...this.pending.values()]; // not what onReconnect asks anew
        if (this.onReconnect) this.onReconnect();
        for (const entry of waiting) this.send(entry.build());
      })().finally(() => {
        this.rehello = null;
      });
    }
    return this.rehello;
  }

  async helloAgain() {
    try {
      return await this.hello(Math.max(1000, this.heartbeat));
    } catch (error) {
      // Refused (a client id held by another key): retried, not in a tight loop.
      console.error(`asyncq: ${this.clientId}: ${error.message}`);
      await new Promise((resolve) => setTimeout(resolve, Math.max(1000, this.heartbeat)));
      return false;
    }
  }

  // Sends build(tag) and resolves with the reply with that tag, { command,
  // fields }; rejects with the BrokerError about it. Sent again after a
  // reconnect, so build must give the request as it should be then.
  async request(kind, build) {
    const tag = this.nextTag(kind);
    for (;;) {
      const generation = this.generation;
      try {
        return await new Promise((resolve, reject) => {
          this.pending.set(tag, { build: () => build(tag), resolve, reject });
          this.send(build(tag));
        });
      } catch (error) {
        if (!(error instanceof BrokerError) || error.code !== 412) throw error;
        // The broker has no session for us; unless we said HELLO since this
        // was sent (then it is stale), say HELLO again. Then send it again.
        if (generation === this.generation) await this.reconnect();
      } finally {
        this.pending.delete(tag);
      }
    }
  }

  // Settles the request with this tag; false if none waits for it.
  settle(tag, outcome, value) {
    const entry = this.pending.get(tag);
    if (!entry) return false;
    this.pending.delete(tag);
    entry[outcome](value);
    return true;
  }

  async read() {
    while (!this.closed) {
      const socket = this.socket;
      socket.receiveTimeout = 3 * this.heartbeat;
      let frames;
      try {
        frames = await socket.receive();
      } catch (error) {
        if (this.closed) return;
        if (error.code === 'EAGAIN' && socket === this.socket) {
          if (this.generation && !this.rehello) this.reconnect(); // silent for three heartbeats
          continue;
        }
        if (socket !== this.socket || socket.closed) continue; // replaced
        throw error;
      }
      const parsed = parse(frames);
      if (parsed) this.dispatch(parsed.command, parsed.fields);
    }
  }

  dispatch(command, fields) {
    const tag = fields.length ? fields[0].toString() : '';
    if (command === 'HEARTBEAT') {
      // Answered as it is read: the broker learns that we read what it sends (4.9).
      this.send(message('HEARTBEAT', ...fields));
    } else if (command === 'WELCOME') {
      if (this.helloWaiter && tag === this.helloWaiter.tag && fields.length === 9) this.welcomed(fields);
    } else if (REPLIES.has(command)) {
      this.settle(tag, 'resolve', { command, fields });
    } else if (command === 'ERROR') {
      this.onError(BrokerError.fromFields(fields), fields);
    } else {
      this.onMessage(command, fields);
    }
  }

  welcomed(fields) {
    const [, brokerId, maxItem, heartbeatMs, maxBatch, window, windowBytes, roles, persistence] = fields.map(String);
    this.welcome = {
      brokerId,
      maxItem: Number(maxItem),
      heartbeatMs: Number(heartbeatMs),
      maxBatch: Math.max(Number(maxBatch), 1),
      window: Math.max(Number(window), 1),
      windowBytes: Number(windowBytes),
      roles: roles ? roles.split(',') : [],
      persistence,
    };
    this.heartbeat = Math.max(this.welcome.heartbeatMs, 10);
    this.generation += 1;
    this.helloTag = tagNumber(this.helloWaiter.tag);
    this.helloWaiter.resolve(true);
  }

  onError(error, fields) {
    if (this.helloWaiter && error.tag === this.helloWaiter.tag) {
      this.helloWaiter.reject(error);
    } else if (!this.settle(error.tag, 'reject', error)) {
      if (error.code !== 412) this.onMessage('ERROR', fields);
      // About a message sent without a session (the broker restarted, or
      // dropped us); one sent before our latest HELLO is stale.
      else if (this.generation && !this.rehello && tagNumber(error.tag) > this.helloTag) this.reconnect();
    }
  }

  async close(bye = true) {
    if (this.closed) return;
    this.closed = true;
    for (const entry of this.pending.values()) entry.reject(new Error('queue client is closed'));
    if (bye && this.generation) {
      // Items this session holds go back to the queue at once.
      this.socket.linger = 1000;
      await this.send(message('BYE', this.nextTag('bye')));
    }
    this.socket.close();
  }
}

module.exports = { Session };
