'use strict';
// One DEALER and the session it holds with the broker (PROTOCOL.md 4.2):
// HELLO, replies matched to requests by tag, heartbeats, and saying HELLO
// again when the broker restarts or falls silent.
const zmq = require('zeromq');
const { message, parse, BrokerError, BrokerUnreachable } = require('./protocol');

const REPLIES = new Set(['SYNCED', 'JOINED', 'TIMEOUT', 'REPORT']);

class Session {
  constructor(endpoint, clientId, helloSeq = () => 0) {
    this.endpoint = endpoint;
    this.clientId = clientId;
    this.helloSeq = helloSeq;
    this.maxItem = 0;
    this.heartbeat = 1000;
    this.generation = 0; // WELCOMEs received: a request sent in an older one is stale
    this.welcomedAt = 0;
    this.pending = new Map(); // tag -> { build, resolve, reject, generation }
    this.onMessage = () => {};
    this.onReconnect = null;
    this.closed = false;
    this.rehello = null;
    this.welcome = null;
    this.socket = this.newSocket();
  }

  newSocket() {
    const socket = new zmq.Dealer({ linger: 0 });
    socket.connect(this.endpoint);
    this.sending = Promise.resolve(); // sends still to go on this socket
    return socket;
  }

  // zeromq sockets take one send at a time: sends are chained.
  send(frames) {
    const socket = this.socket;
    this.sending = this.sending.then(() => socket.send(frames)).catch(() => {});
    return this.sending;
  }

  async open(timeoutMs) {
    this.read().catch((error) => {
      if (!this.closed) console.error(`asyncq: ${this.clientId}: ${error.message}`);
    });
    if (!(await this.hello(timeoutMs))) {
      await this.close(false);
      throw new BrokerUnreachable(`no answer from the broker at ${this.endpoint}`);
    }
  }

  hello(timeoutMs) {
    return new Promise((resolve) => {
      const timer = setTimeout(() => resolve(false), timeoutMs);
      this.welcome = () => {
        clearTimeout(timer);
        resolve(true);
      };
      this.send(message('HELLO', this.clientId, 0, this.helloSeq()));
    });
  }

  // Says HELLO again (until the broker answers), then lets the owner restore
  // its state and sends every request still waiting again.
  reconnect() {
    if (!this.rehello) {
      this.rehello = (async () => {
        while (!this.closed && !(await this.hello(Math.max(1000, this.heartbeat)))) {
          // A fresh socket, so that unanswered HELLOs do not pile up.
          const old = this.socket;
          this.socket = this.newSocket();
          old.close();
        }
        if (this.closed) return;
        if (this.onReconnect) await this.onReconnect();
        for (const entry of this.pending.values()) this.send(entry.build());
      })().finally(() => {
        this.rehello = null;
      });
    }
    return this.rehello;
  }

  // Sends build() and resolves with the reply with this tag, { command,
  // fields }; rejects with BrokerError for an ERROR about it. Sent again
  // after a reconnect, so build() must give the request as it should be then.
  async request(tag, build) {
    for (;;) {
      const generation = this.generation;
      try {
        return await new Promise((resolve, reject) => {
          this.pending.set(tag, { build, resolve, reject, generation });
          this.send(build());
        });
      } catch (error) {
        if (!(error instanceof BrokerError) || error.code !== 412) throw error;
        if (generation === this.generation) await this.reconnect();
      } finally {
        this.pending.delete(tag);
      }
    }
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
    if (command === 'WELCOME') {
      if (fields.length === 3) {
        this.maxItem = Number(fields[1].toString());
        this.heartbeat = Math.max(Number(fields[2].toString()), 10);
      }
      this.generation += 1;
      this.welcomedAt = Date.now();
      if (this.welcome) this.welcome();
    } else if (command === 'HEARTBEAT') {
      // nothing: hearing from the broker is enough
    } else if (REPLIES.has(command) && fields.length) {
      const entry = this.pending.get(fields[0].toString());
      if (entry) entry.resolve({ command, fields });
    } else if (command === 'ERROR') {
      const error = BrokerError.fromFields(fields);
      const entry = error.subject ? this.pending.get(error.subject) : undefined;
      if (entry) {
        entry.reject(error);
      } else if (error.code === 412) {
        // About a message sent without a session (the broker restarted); one
        // sent just before our latest HELLO is stale: ignore it.
        if (this.generation && !this.rehello && Date.now() - this.welcomedAt > this.heartbeat) this.reconnect();
      } else {
        this.onMessage(command, fields);
      }
    } else {
      this.onMessage(command, fields);
    }
  }

  async close(bye = true) {
    if (this.closed) return;
    this.closed = true;
    if (bye && this.generation) {
      // Items this session holds go back to the queue at once.
      this.socket.linger = 1000;
      await this.send(message('BYE'));
    }
    this.socket.close();
  }
}

module.exports = { Session };
