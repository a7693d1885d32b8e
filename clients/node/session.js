'use strict';
// One DEALER and the session it holds with the broker (PROTOCOL.md 4.2):
// HELLO, replies and errors matched to requests by tag, heartbeats answered,
// and saying HELLO again when the broker restarts or falls silent.
const { createLink, probe } = require('./link');
const {
  message, parse, parseService, BrokerError, BrokerUnreachable, KeyRefused, KeyMismatch, KeysRequired,
} = require('./protocol');

const REPLIES = new Set(['CREDITED', 'SYNCED', 'JOINED', 'TIMEOUT', 'REPORT']);

// The number a tag ends with: tags count up, so it tells when a request was sent.
const tagNumber = (tag) => Number(/\d*$/.exec(tag)[0] || -1);

class Session {
  // broker: the broker's address, parsed (protocol.parseAddress);
  // options.helloSeq(): the seq HELLO carries (4.2); options.curve: CURVE
  // socket options, or null; options.reached(): whether the broker has
  // answered this client before (then open() waits for it as a reconnect does).
  // Every HELLO asks for the service (its 4th field, PROTOCOL.md 4.15),
  // unless the broker refused that field (400: a broker before 2.2); then
  // this session says HELLO without it from then on (legacy).
  constructor(broker, clientId, options = {}) {
    this.broker = broker;
    this.clientId = clientId;
    this.helloSeq = options.helloSeq || (() => 0);
    this.curve = options.curve || null;
    this.reached = options.reached || (() => false);
    this.legacy = false; // the broker refused HELLO's service field: before 2.2
    this.welcome = null; // WELCOME's fields, once one came; welcome.service: { shard, brokers } or null
    this.heartbeat = 1000;
    this.generation = 0; // WELCOMEs received: a request sent in an older one is stale
    this.helloTag = -1; // number of the tag of the HELLO the latest WELCOME answered
    this.tags = 0;
    this.pending = new Map(); // tag -> { build, resolve, reject }
    this.helloWaiter = null;
    this.handshakeFailure = null; // why ZeroMQ could not connect: 'auth', a protocol error code, 'other'
    this.connectError = null; // the system's error when nothing listens there
    this.onMessage = () => {};
    this.onReconnect = null;
    this.onWelcome = null; // after each WELCOME, the first included
    this.onDown = null; // when the broker falls silent or drops the session: saying HELLO again
    this.onFailure = null; // (kind): a handshake failed, or nothing listens ('connect')
    this.closed = false;
    this.rehello = null;
    this.lastHeard = Date.now(); // when the broker last sent anything
    this.watchdog = null;
    this.link = this.newLink();
  }

  // The broker's ROUTER endpoint.
  get endpoint() {
    return this.broker.router;
  }

  newLink() {
    return createLink('DEALER', this.broker, {
      curve: this.curve,
      onMessage: (frames) => this.receive(frames),
      onFailure: (kind, error) => this.handshakeFailed(kind, error),
    });
  }

  nextTag(kind) {
    this.tags += 1;
    return `${kind}${this.tags}`;
  }

  // Sends a message; one lost (the link was replaced or closed) is covered
  // by sending again after HELLO.
  send(frames) {
    return this.link.send(frames);
  }

  // A fresh link, so that unanswered HELLOs do not pile up (and one that a
  // broker took in as it died is not waited for).
  replaceLink() {
    const old = this.link;
    this.link = this.newLink();
    old.close();
  }

  // Says HELLO until the broker answers (WELCOME), again every second or
  // so on a fresh link: one said to a broker that then died (restarted) is
  // never answered. Rejects with why after timeoutMs, or at once when the
  // handshake failed for good, unless the broker has answered this client
  // before (reached()): then it is restarting, and open() waits for it, as
  // a session already open would (reconnect()), until closed.
  async open(timeoutMs) {
    const deadline = Date.now() + timeoutMs;
    // libzmq retries quietly where nothing listens: without a WELCOME in
    // 100 ms, one plain connection asks the system why.
    const probing = setTimeout(() => {
      if (this.generation || this.closed) return;
      probe(this.broker).then((error) => {
        if (error && !this.generation && !this.closed) this.handshakeFailed('connect', error);
      });
    }, 100);
    probing.unref();
    this.watch();
    try {
      for (;;) {
        const left = deadline - Date.now();
        if (left <= 0 && !this.reached()) throw this.unreachable();
        const wait = this.reached() ? this.retryMs() : Math.min(left, this.retryMs());
        if (await this.hello(wait, true)) return;
        if (this.closed) throw new Error('queue client is closed');
        if (this.failedForGood() && !this.reached()) throw this.unreachable();
        this.replaceLink();
      }
    } catch (error) {
      clearTimeout(probing);
      await this.close(false);
      throw error;
    }
  }

  // How long one HELLO is given before it is said again.
  retryMs() {
    return Math.max(1000, this.heartbeat);
  }

  // A ZAP refusal, a mechanism mismatch or nothing listening will not
  // change by waiting.
  failedForGood() {
    return Boolean(this.connectError || (this.handshakeFailure && this.handshakeFailure !== 'other'));
  }

  // Every heartbeat interval: a broker silent for three of them restarted
  // or went away (4.9), and is greeted again.
  watch() {
    this.watchdog = setTimeout(() => {
      if (this.closed) return;
      if (this.generation && !this.rehello && Date.now() - this.lastHeard > 3 * this.heartbeat) this.reconnect();
      this.watch();
    }, this.heartbeat);
    this.watchdog.unref();
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
      if (this.helloWaiter) this.helloWaiter.resolve(false); // not answered: superseded
      this.helloWaiter = {
        tag, failFast, withService: !this.legacy, resolve: settle(resolve), reject: settle(reject),
      };
      this.sendHello();
    });
  }

  // HELLO for the waiter, with the service field unless the broker is
  // older than 2.2.
  sendHello() {
    const fields = [this.helloWaiter.tag, this.clientId, this.helloSeq()];
    if (this.helloWaiter.withService) fields.push('service');
    this.send(message('HELLO', ...fields));
  }

  handshakeFailed(kind, error) {
    if (kind === 'connect') {
      this.connectError = error;
    } else if (kind !== 'other' || !this.handshakeFailure) {
      // 'other' (the connection broke during the handshake) says least.
      this.handshakeFailure = kind;
    }
    // A ZAP refusal, a mechanism mismatch or nothing listening will not
    // change by waiting (but a broker that answered before is restarting).
    if (kind !== 'other' && this.helloWaiter && this.helloWaiter.failFast && !this.reached()) {
      this.helloWaiter.resolve(false);
    }
    if (this.onFailure) this.onFailure(kind);
  }

  // Why HELLO got no answer (PROTOCOL.md 7). A broken handshake ('other')
  // is also how a broker without keys turns away other hosts.
  unreachable() {
    const failure = this.handshakeFailure;
    const { address } = this.broker;
    const where = `the broker at '${address}'`;
    const options = { address };
    const mechanism = failure === 'ERR_ZMTP_MECHANISM_MISMATCH'; // one side uses CURVE, the other not
    if (failure === 'auth') return new KeyRefused(`${where} refused this client's key`, options);
    if (mechanism && !this.curve) {
      return new KeysRequired(`${where} requires keys: give curveSecret and serverKey `
        + '(or ASYNCQ_CURVE_SECRET and ASYNCQ_SERVER_KEY)', options);
    }
    if (mechanism) return new KeyMismatch(`${where} uses no keys (CURVE)`, options);
    if (failure && !this.curve) {
      return new KeysRequired(`${where} broke off the handshake: it requires keys, `
        + 'or it has none and takes connections only from its own host', options);
    }
    if (failure) {
      return new KeyMismatch(`${where} failed the CURVE handshake: its key does not match serverKey, or it uses no keys`,
        options);
    }
    const error = this.connectError;
    if (error) {
      const why = error.code === 'ECONNREFUSED' || error.code === 'ENOENT' ? ' (is the broker running?)' : '';
      const socket = this.broker.path !== undefined ? `${this.broker.path}.router` : `port ${this.broker.port + 1}`;
      return new BrokerUnreachable(`cannot connect to ${where} (its ROUTER socket, ${socket}): ${error.message}${why}`,
        { ...options, cause: error });
    }
    return new BrokerUnreachable(`no answer from ${where}`, options);
  }

  // Says HELLO again (until the broker answers, or this session is
  // closed); the WELCOME restores the owner's state (rejoined()).
  reconnect() {
    if (!this.rehello && !this.closed) {
      if (this.onDown) this.onDown();
      this.rehello = (async () => {
        while (!this.closed && !(await this.helloAgain())) {
          if (!this.closed) this.replaceLink(); // never a link made after close()
        }
      })().finally(() => {
        this.rehello = null;
      });
    }
    return this.rehello || Promise.resolve();
  }

  // A WELCOME to a HELLO said again, as it is read: the owner restores its
  // state (drops the old session's deliveries) before any message of the
  // new session is read, then the requests sent before that HELLO (to a
  // broker that has no session for them) go again, after what the owner
  // sent anew.
  rejoined() {
    const stale = [...this.pending].filter(([tag]) => tagNumber(tag) < this.helloTag);
    if (this.onReconnect) this.onReconnect();
    for (const [, entry] of stale) this.send(entry.build());
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
      if (this.closed) throw new Error('queue client is closed');
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

  receive(frames) {
    this.lastHeard = Date.now();
    const parsed = parse(frames);
    if (parsed) this.dispatch(parsed.command, parsed.fields);
  }

  dispatch(command, fields) {
    const tag = fields.length ? fields[0].toString() : '';
    if (command === 'HEARTBEAT') {
      // Answered as it is read: the broker learns that we read what it sends (4.9).
      this.send(message('HEARTBEAT', ...fields));
    } else if (command === 'WELCOME') {
      if (this.helloWaiter && tag === this.helloWaiter.tag && (fields.length === 9 || fields.length === 10)) {
        this.welcomed(fields);
      }
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
      // The service (4.15): this broker's shard and every broker's address;
      // null from a broker before 2.2 (shard 0, alone).
      service: fields.length === 10 ? parseService(fields[9]) : null,
    };
    this.heartbeat = Math.max(this.welcome.heartbeatMs, 10);
    this.lastHeard = Date.now();
    this.generation += 1;
    this.helloTag = tagNumber(this.helloWaiter.tag);
    this.helloWaiter.resolve(true);
    if (this.generation > 1) this.rejoined();
    if (this.onWelcome) this.onWelcome(this.welcome);
  }

  onError(error, fields) {
    if (this.helloWaiter && error.tag === this.helloWaiter.tag && error.code === 400 && this.helloWaiter.withService) {
      // A broker before 2.2 takes no 4th field: HELLO again without it,
      // for the same waiter; the broker is then shard 0, alone (4.15).
      this.legacy = true;
      this.helloWaiter.withService = false;
      this.helloWaiter.tag = this.nextTag('hello');
      this.sendHello();
    } else if (this.helloWaiter && error.tag === this.helloWaiter.tag) {
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
    clearTimeout(this.watchdog);
    if (this.helloWaiter) this.helloWaiter.resolve(false); // an open() or reconnect() ends now
    for (const entry of this.pending.values()) entry.reject(new Error('queue client is closed'));
    if (bye && this.generation) {
      // Items this session holds go back to the queue at once.
      this.send(message('BYE', this.nextTag('bye')));
      await this.link.close(1000);
    } else {
      await this.link.close(0);
    }
  }
}

module.exports = { Session };
