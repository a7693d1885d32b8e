'use strict';
// A connection to one of the broker's two sockets (PROTOCOL.md 2), through
// zeromq.js (libzmq): a DEALER to its ROUTER, or a PUSH to its PULL.
//   send(frames)      queues a message (frames: strings, numbers, Buffers);
//   close(lingerMs)   resolves once closed, after at most lingerMs of
//                     sending what is queued;
// and takes, as options, onMessage(frames) (a DEALER's messages),
// onFailure(kind): why a handshake failed: 'auth' (the broker refused us),
// a ZMTP error code ('ERR_ZMTP_MECHANISM_MISMATCH': one side uses CURVE, the
// other not) or 'other'; onLost(): the connection was lost (the broker's
// process died, say); and onRefused(): a connection failed before any was
// made (nothing listens there). libzmq connects again by itself, keeping
// what is queued but not sent.
const net = require('net');

const RESOLVED = Promise.resolve();

let zmq = null; // zeromq.js, loaded when a link needs it

class ZeromqLink {
  // curve: zeromq.js's CURVE socket options, or null.
  constructor(type, endpoint, options = {}) {
    if (!zmq) zmq = require('zeromq'); // eslint-disable-line global-require
    this.onMessage = options.onMessage || null;
    const onFailure = options.onFailure || (() => {});
    // An IPv6 address ([::1]:5557, or one a host name resolved to) needs
    // ZMQ_IPV6: without it, libzmq never connects there.
    const ipv6 = endpoint.startsWith('tcp://[');
    const socket = new (type === 'DEALER' ? zmq.Dealer : zmq.Push)({ linger: 0, ...(ipv6 ? { ipv6 } : {}), ...options.curve });
    // ZeroMQ tells why a handshake failed (a refused key, a wrong server
    // key, a broker that wants keys) only in socket events.
    socket.events.on('handshake:error:auth', () => onFailure('auth'));
    socket.events.on('handshake:error:protocol', (event) => onFailure(event.error.code || 'protocol'));
    socket.events.on('handshake:error:other', () => onFailure('other'));
    if (options.onLost) socket.events.on('disconnect', () => options.onLost());
    if (options.onRefused) {
      let connected = false;
      socket.events.on('connect', () => { connected = true; });
      socket.events.on('connect:retry', () => {
        if (!connected) options.onRefused();
      });
    }
    socket.connect(endpoint);
    this.socket = socket;
    this.sending = RESOLVED; // zeromq sockets take one send at a time: sends are chained
    this.closed = false;
    if (this.onMessage) {
      this.read().catch((error) => {
        if (!this.closed) console.error(`asyncq: ${endpoint}: ${error.message}`);
      });
    }
  }

  async read() {
    while (!this.closed) {
      let frames;
      try {
        frames = await this.socket.receive();
      } catch (error) {
        if (this.closed || this.socket.closed) return;
        throw error;
      }
      this.onMessage(frames);
    }
  }

  // A send that fails (the socket was closed) is covered by the session's
  // sending again after HELLO.
  send(frames) {
    const socket = this.socket;
    this.sending = this.sending.then(() => socket.send(frames)).catch(() => {});
    return this.sending;
  }

  async close(lingerMs = 0) {
    if (this.closed) return;
    this.closed = true;
    this.socket.linger = lingerMs;
    // A send on a DEALER left with no peer (its handshake failed: libzmq
    // does not retry, PROTOCOL.md 7) never ends: wait for it lingerMs at
    // most; closing the socket ends it.
    let timer;
    await Promise.race([this.sending, new Promise((resolve) => { timer = setTimeout(resolve, lingerMs); })]);
    clearTimeout(timer);
    this.socket.close();
  }
}

// A link of type ('DEALER' or 'PUSH') to the broker at address (as
// protocol.parseAddress gives it). options: curve, onMessage, onFailure,
// onLost, onRefused.
function createLink(type, address, options = {}) {
  return new ZeromqLink(type, type === 'PUSH' ? address.pull : address.router, options);
}

// net.connect's options for the broker socket a link of type connects to.
function target(type, address) {
  if (address.path !== undefined) return { path: `${address.path}.${type === 'PUSH' ? 'pull' : 'router'}` };
  return { host: address.host, port: type === 'PUSH' ? address.port : address.port + 1 };
}

// Resolves with the system's error if nothing listens at the broker's
// ROUTER (connection refused, no such socket), else null: what a ZeroMQ
// socket, which retries quietly, does not tell.
function probe(address) {
  return new Promise((resolve) => {
    const socket = net.connect(target('DEALER', address));
    socket.once('connect', () => {
      socket.destroy();
      resolve(null);
    });
    socket.once('error', (error) => {
      socket.destroy();
      resolve(error);
    });
  });
}

module.exports = { createLink, probe };
