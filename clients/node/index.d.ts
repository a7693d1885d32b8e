// Types of the asyncq Node.js client (index.js, and index.mjs as an ES
// module): asyncio.Queue's producer/consumer pattern over an asyncq broker.
// Every time (timeout, lease, delay) is in seconds.
/// <reference types="node" />
import { EventEmitter } from 'events';

/** What a client may do, from its key's certificate (PROTOCOL.md 7). */
export type Role = 'produce' | 'consume' | 'admin';

/** What a confirmed put survives (PROTOCOL.md 6): 'replicated' for a group of replicas (4.16). */
export type Persistence = 'memory' | 'always' | 'interval' | 'never' | 'replicated';

/** An item to put: bytes as they are, a string as UTF-8. */
export type Payload = Buffer | Uint8Array | string;

export interface QueueOptions {
  /** Queue name, 1 to 64 of A-Z a-z 0-9 . _ : - (default 'default'). */
  queue?: string;
  /**
   * Items the broker may send ahead of the get() calls (default 0). The
   * credit at the broker is the items held (got, not yet taskDone or nack)
   * plus the get() calls waiting plus prefetch: N concurrent getters hold at
   * most N items, as with asyncio.Queue.
   */
  prefetch?: number;
  /** @deprecated Use prefetch: credit N is prefetch N - 1. */
  credit?: number;
  /** Start of this client's id, as the queue name's alphabet (default 'node'). */
  name?: string;
  /** Seconds to wait for the broker to answer this client's first HELLO (default 5;
   * milliseconds before 2.1.0). Once the broker has answered, a session that opens or
   * reconnects waits for it as long as it takes (a broker restarting), until close().
   * With a service of several brokers, a broker that others list and that does not
   * answer in this time is down for now: the client goes on with the others and keeps
   * saying HELLO to it. */
  timeout?: number;
  /** This client's secret certificate file, as `asyncq keygen` writes it (default: $ASYNCQ_CURVE_SECRET). */
  curveSecret?: string;
  /** The broker's public certificate file, or its 40-character Z85 key (default: $ASYNCQ_SERVER_KEY). */
  serverKey?: string;
  /**
   * Every item got carries its put's priority (Item.priority; broker 2.2):
   * the consumer asks for it in every CREDIT (default false: Item.priority is
   * null). PriorityQueue sets it. Another type than boolean is a TypeError.
   */
  priorities?: boolean;
}

interface PutOptionsBase {
  /** Seconds each delivery of the item may take before it is delivered again (default: the queue's). */
  lease?: number;
  /**
   * With a service of several brokers (shards, PROTOCOL.md 4.15): the put goes
   * to shard fnv1a32(key) mod the number of shards (FNV-1a, 32 bits, of the
   * key's bytes; a string as UTF-8), waiting for that broker if it has not
   * answered yet, so that the items of one key keep their order. Not sent.
   * Without a key, each batch (a tick's puts) goes to the next broker in turn,
   * and two puts may be delivered in either order. Another type is a TypeError.
   */
  key?: string | Buffer | Uint8Array;
  /**
   * An integer from -2147483648 to 2147483647 (default 0): the queue's lowest
   * priority is delivered first, first in, first out within a priority. Another
   * type is a TypeError, a fraction or a number out of range a RangeError.
   */
  priority?: number;
}

/** Options of a put: its lease, its priority, and a delay or a time (not both). */
export type PutOptions = PutOptionsBase & (
  | {
    /** Seconds (0 or more) before the item may be delivered, from when the broker accepts it (at most its --max-delay). */
    delay?: number;
    at?: undefined;
  }
  | {
    delay?: undefined;
    /** A time (a Date, or seconds since the epoch) before which the item is not delivered, on the broker's clock; at once if past. */
    at?: Date | number;
  }
);

/** Options of a LifoQueue's put: no delay, no time (the broker puts no delayed item at the front). */
export interface LifoPutOptions extends PutOptionsBase {
  /** Only 0 (no delay) is taken: any other throws a RangeError. */
  delay?: 0;
}

export interface GetOptions {
  /** Cancels the wait; an item that arrives later is kept for the next get(). */
  signal?: AbortSignal;
}

export interface JoinOptions {
  /** Seconds to wait, then reject with TimeoutError (at most 86400). */
  timeout?: number;
  /** Wait until nothing at all is outstanding, items put after the join included. */
  all?: boolean;
}

export interface ShutdownOptions {
  /** Discard the queued items, and reject joins, rather than let them drain. */
  immediate?: boolean;
}

export interface CloseOptions {
  /** Seconds to wait for puts to be confirmed, then reject with TimeoutError. */
  timeout?: number;
}

export interface Joined {
  /** Items outstanding when the join reached the broker. */
  count: number;
  /** Of those, how many were dead-lettered instead of acked. */
  dead: number;
}

/** A queue's numbers (PROTOCOL.md 4.8); empty if the broker does not know the queue. */
export interface Stats {
  queue?: string;
  queued?: number;
  inflight?: number;
  delayed?: number;
  held?: number;
  acked?: number;
  dead?: number;
  consumers?: number;
  joiners?: number;
  outstanding?: number;
  puts?: number;
  delivered?: number;
  redelivered?: number;
  expired?: number;
  maxsize?: number;
  lease_ms?: number;
  state?: 'open' | 'draining' | 'discarding';
  discarded?: number;
  /** 1 while the queue's deliveries are paused (pause(); broker 2.2), else 0. */
  paused?: number;
  /** Keys of later brokers. */
  [key: string]: string | number | undefined;
}

/** One broker's own numbers of the queue, as stats({ brokers: true }) gives them. */
export interface BrokerStats {
  /** The broker's address: as given, or as another broker lists it (:PORT on the host that broker was reached at). */
  address: string;
  /** Its shard (PROTOCOL.md 4.15): 0 to 255; 0 for a broker before 2.2. */
  shard: number | null;
  /** Its STATS line; empty if it does not know the queue. */
  stats: Stats;
}

/** stats({ brokers: true }): the whole service's numbers and each broker's. */
export interface ServiceStats {
  /** What stats() gives: counts summed over the brokers. */
  total: Stats;
  /** Each broker's, in the order the client found them. */
  brokers: BrokerStats[];
}

/** A broker of the service, as the client knows it (Queue.brokers). */
export interface BrokerInfo {
  /** As given, or as another broker lists it; for a group of replicas (PROTOCOL.md 4.16), its leader's, as --peers lists it. */
  readonly address: string;
  /** The shard it said it is; null until it answers. */
  readonly shard: number | null;
  /** Whether the client's session with it is up now. */
  readonly up: boolean;
}

/** Why an item was dead-lettered (PROTOCOL.md 4.12); a later broker may give another value. */
export type DeathCause = 'lease' | 'nack' | 'session' | 'restart' | 'unknown';

/** An item on its queue's dead-letter list (PROTOCOL.md 4.12). */
export interface DeadLetter {
  /** The broker's id, as decimal digits (as Item.id): ids exceed 2^53. */
  id: string;
  /** Deliveries it had. */
  attempts: number;
  /** Bytes of its payload. */
  size: number;
  /** When it died; null for an item dead-lettered by a broker before 2.2. */
  died: Date | null;
  cause: DeathCause | (string & {});
  /** The reason its last consumer gave with nack() (UTF-8; '' if none): at most 150 bytes of it, less a character the cut split. */
  reason: string;
  /** Whether reason is cut. */
  reasonCut: boolean;
  /** The start of its payload: at most 32 bytes. */
  payload: Buffer;
  /** Whether payload is only the start. */
  payloadCut: boolean;
}

/** One dead item whole, as deadLetter() gives it: a dead letter with its whole payload. */
export interface WholeDeadLetter extends DeadLetter {
  /** Its whole payload, byte for byte (size bytes). */
  payload: Buffer;
  payloadCut: false;
}

/** A dead item named to deadLetter(), requeueDead() or deleteDead(): a dead letter, or its id (decimal digits, or a bigint). */
export type DeadItem = DeadLetter | string | bigint;

/** An item the queue would deliver next, as peek() shows it (PROTOCOL.md 4.14), left where it is. */
export interface PeekedItem {
  /** The broker's id, as decimal digits (as Item.id): ids exceed 2^53. */
  id: string;
  /** Deliveries it had (a nacked or expired item comes back with its attempts). */
  attempts: number;
  /** Bytes of its payload. */
  size: number;
  /** The put's priority: the lowest is delivered first. */
  priority: number;
  /** Milliseconds since the broker accepted the put. */
  ageMs: number;
  /** The start of its payload (escapes undone): at most 64 bytes. */
  payload: Buffer;
  /** Whether payload is only the start. */
  payloadCut: boolean;
}

/** A delivered item. */
export class Item {
  private constructor();
  readonly queue: string;
  /** The broker's id, as decimal digits: ids exceed 2^53. */
  readonly id: string;
  /** 1 on the first delivery. */
  readonly attempt: number;
  /** Microseconds since the broker accepted the put. */
  readonly ageUs: number;
  /** This delivery's lease: ack or touch within it. */
  readonly leaseMs: number;
  readonly data: Buffer;
  /**
   * The put's priority (lowest delivered first), for a client that asked for
   * it (PriorityQueue, or a Queue with priorities: true; broker 2.2); else null.
   */
  readonly priority: number | null;
  /** The data as UTF-8. */
  toString(): string;
}

/**
 * A queue on an asyncq broker, used like asyncio.Queue. Emits 'held' with
 * the queue's name when the broker holds this client's puts back for a full
 * queue, and 'unreachable' with a BrokerUnreachable for an address given
 * where no broker answered and that no broker of the service lists (the
 * client goes on with the others).
 *
 * A service of several brokers (shards, PROTOCOL.md 4.15; asyncq-broker
 * --shards, or --shard and --service) is one queue: given one of its
 * addresses, or several, the client finds every broker (HELLO asks for the
 * service); each batch of puts goes to the next broker in turn (a put with
 * a key to its shard), get() takes from all with the credit shared out so
 * that N getters still hold at most N items, acks go to the broker that
 * delivered, and join(), stats() and the other requests ask every broker.
 * A broker before 2.2 is a service of one. One broker's address alone
 * works as before.
 */
export class Queue extends EventEmitter {
  /**
   * broker: HOST[:PORT], tcp://HOST:PORT or ipc://PATH (default 'localhost'), or
   * several, comma-separated; a host name that resolves to several addresses
   * stands for each of them. Throws an Error for another form.
   */
  constructor(broker?: string, options?: QueueOptions);
  /** The broker's address, as given (one, or several comma-separated). */
  readonly broker: string;
  readonly queue: string;
  readonly prefetch: number;
  /** @deprecated prefetch + 1. */
  readonly credit: number;
  /** Seconds. */
  readonly timeout: number;
  /** Whether every item got carries its put's priority (priorities: true, or a PriorityQueue). */
  readonly priorities: boolean;
  readonly clientId: string;
  /** The latest errors about no request of this client (acks of items it does not hold...). */
  readonly errors: readonly BrokerError[];
  /** What this client may do, once a session is open. */
  readonly roles: Role[] | null;
  readonly persistence: Persistence | null;
  /** The full queue a broker holds this client's puts back for, until they are in. */
  readonly held: string | null;
  /** The brokers of the service, once the client has found them (its first request); [] before. */
  readonly brokers: readonly BrokerInfo[];
  /** Why each address given was not used: no broker answered there, and no broker of the service lists it. */
  readonly unreachable: readonly BrokerUnreachable[];

  /**
   * Resolves once the broker has confirmed the item (SYNCED); waits while the
   * queue is full. Rejects with a TypeError for another type than Payload,
   * QueueShutDown if the queue is shut down, a BrokerError if the broker refused it
   * (a delay over its --max-delay: 400), a TypeError or a RangeError for options
   * not valid (nothing sent).
   */
  put(item: Payload, options?: PutOptions): Promise<void>;
  /** Sends the item without waiting for the broker to confirm it; resolves with its seq (at the broker it went to). */
  send(item: Payload, options?: PutOptions): Promise<number>;
  /** Resolves once every put sent is confirmed, by every broker; rejects with a BrokerError for one refused. */
  flush(): Promise<void>;
  /**
   * The next item. The async context that awaits it (and the code it goes on
   * to) is the one a bare taskDone() acks it for. Rejects with QueueShutDown
   * once the queue is shut down and empty, or deleted: every get() waiting
   * then, and every later one while that lasts. A get() made after it asks
   * the broker again (one round trip) and waits for items as usual once the
   * queue is reopened (by any client) or, after a delete, made anew by a put.
   */
  get(options?: GetOptions): Promise<Item>;
  /** An item already delivered to this client (prefetch), else throws QueueEmpty (QueueShutDown once shut down and empty). Ack it with taskDone(item). */
  getNowait(): Item;
  /**
   * Acks the given item (or id), from any context. Without one, acks the item
   * that the calling async context got from get(); throws if that context
   * holds no such item, or several: it never acks another context's item.
   */
  taskDone(item?: Item | string): void;
  /** A fresh lease for a held item. */
  touch(item: Item | string): Promise<void>;
  /** Gives a held item back, to be delivered again after delay seconds (at most 86400). */
  nack(item: Item | string, delay?: number, reason?: string): Promise<void>;
  /**
   * Resolves once every item put before it is acked or dead-lettered. With
   * several brokers, each is asked (once this client's puts there are
   * confirmed) and the counts are summed; a broker that cannot be reached
   * keeps it waiting. With a timeout, rejects with a TimeoutError whose
   * outstanding sums what the brokers that answered still wait for, and
   * whose unanswered names the brokers that did not answer in time.
   */
  join(options?: JoinOptions): Promise<Joined>;
  /**
   * The queue's numbers; with several brokers, summed (state 'open' only if
   * open at every broker, else 'discarding' if so at one, else 'draining';
   * lease_ms and paused the largest). Waits for a broker that is down.
   */
  stats(options?: { brokers?: false }): Promise<Stats>;
  /** The summed numbers (total) and each broker's own. */
  stats(options: { brokers: true }): Promise<ServiceStats>;
  stats(options: { brokers?: boolean }): Promise<Stats | ServiceStats>;
  /** Items waiting for delivery at the broker (not those delivered and not yet acked, nor delayed ones), asked of it. */
  qsize(): Promise<number>;
  /** Whether no item waits for delivery (qsize() is 0), asked of the broker. */
  empty(): Promise<boolean>;
  /**
   * Shuts the queue down until reopen(): puts are refused, get() rejects with
   * QueueShutDown once it is empty (at once with immediate, which discards
   * what is queued). Needs the admin role on a broker with keys (else a 403
   * BrokerError). Resolves with the queue's numbers after it.
   */
  shutdown(options?: ShutdownOptions): Promise<Stats>;
  /**
   * Opens a shut-down queue again, for every client (broker 2.2): puts are
   * taken, get() waits for items again. This client's next get() consumes at
   * once; another client's once its next get() asks the broker (each get()
   * after a QueueShutDown does). An open queue is left as it is; a queue the
   * broker does not have is not made (nothing happens, no error). Needs the
   * admin role on a broker with keys (else a 403 BrokerError); rejects with
   * QueueShutDown (503) while the broker is stopping.
   */
  reopen(): Promise<void>;
  /**
   * Discards the queued and delayed items (items being processed stay; the
   * queue stays open; waiting joins count them as done); resolves with how
   * many (0 for a queue the broker does not have). Needs the admin role on a
   * broker with keys (else a 403 BrokerError).
   */
  purge(): Promise<number>;
  /**
   * Deletes the queue and every item it holds (queued, delayed, being
   * processed, dead): waiting joins, held puts and every client's waiting
   * get() reject with QueueShutDown. A later put makes a new, empty queue,
   * which a client told of the delete consumes from again on its next get().
   * Resolves with how many items were discarded (0 for a queue the broker
   * does not have: nothing happens). Needs the admin role on a broker with
   * keys (else a 403 BrokerError).
   */
  delete(): Promise<number>;
  /**
   * The queue's dead letters, oldest death first (at most 1024 of each
   * broker). Needs the admin role on a broker with keys (else a 403
   * BrokerError), as do requeueDead() and purgeDead(). Each letter's id names
   * its broker (its top 8 bits are the shard): deadLetter(), requeueDead(items)
   * and deleteDead() go to that broker.
   */
  deadLetters(): Promise<DeadLetter[]>;
  /**
   * One dead item whole (a dead letter or its id): as deadLetters() shows it,
   * with its whole payload (payloadCut false), however large (asked in parts
   * of at most 785 664 bytes). Rejects with a 404 BrokerError if it is not a
   * dead item of this queue, a TypeError or RangeError for another item
   * (nothing sent). Needs the admin role on a broker with keys; broker 2.2.
   */
  deadLetter(item: DeadItem): Promise<WholeDeadLetter>;
  /**
   * Moves dead items back to the end of the queue, their attempts reset;
   * resolves with how many. Without items, every dead item; with items,
   * those only, all or none at each broker (broker 2.2): one that is not a
   * dead item of the queue rejects with a 404 BrokerError naming every such
   * id of its broker (subject), and nothing changes there; [] resolves with
   * 0. At most 1024 bytes of ids in one call (about 50): more reject with a
   * RangeError, nothing sent.
   */
  requeueDead(items?: readonly DeadItem[]): Promise<number>;
  /** Deletes the given dead items, all or none, as requeueDead(items); resolves with how many. */
  deleteDead(items: readonly DeadItem[]): Promise<number>;
  /** Deletes every dead item; resolves with how many. */
  purgeDead(): Promise<number>;
  /**
   * The next n items (1 to 1024, default 10) the queue would deliver, in that
   * order, left where they are (broker 2.2); delayed items and those being
   * processed are not shown. With several brokers: each one's next n, the
   * lowest priority then the oldest first, n of them (the order holds at each
   * broker, not across them). Needs the consume or admin role on a broker with
   * keys. Rejects with a TypeError or RangeError for another n.
   */
  peek(n?: number): Promise<PeekedItem[]>;
  /**
   * Pauses the queue's deliveries, for every client, until resume(): puts are
   * taken, get() waits, joins wait. Makes a queue the broker does not have.
   * Resolves with the queue's numbers after it (paused: 1). Needs the admin
   * role on a broker with keys (else a 403 BrokerError); broker 2.2.
   */
  pause(): Promise<Stats>;
  /** Delivers again after pause(); resolves with the queue's numbers (paused: 0). Needs the admin role, as pause(). */
  resume(): Promise<Stats>;
  /** Waits for puts to be confirmed, then ends the sessions; items not acked go back to the queue. */
  close(options?: CloseOptions): Promise<void>;

  on(event: 'held', listener: (queue: string) => void): this;
  once(event: 'held', listener: (queue: string) => void): this;
  off(event: 'held', listener: (queue: string) => void): this;
  on(event: 'unreachable', listener: (error: BrokerUnreachable) => void): this;
  once(event: 'unreachable', listener: (error: BrokerUnreachable) => void): this;
  off(event: 'unreachable', listener: (error: BrokerUnreachable) => void): this;
}

/**
 * A Queue whose puts come out last in, first out (asyncio's LifoQueue):
 * each goes to the front of its priority. A put with a delay or at rejects
 * with a RangeError, nothing sent.
 */
export class LifoQueue extends Queue {
  put(item: Payload, options?: LifoPutOptions): Promise<void>;
  send(item: Payload, options?: LifoPutOptions): Promise<number>;
}

/**
 * A Queue whose consumer asks for priorities (priorities: true): every item
 * got carries its put's priority, lowest delivered first, first in, first
 * out within one. put(item, { priority }) as Queue's. Needs broker 2.2 (an
 * older one refuses its CREDIT: get() rejects with a 400 BrokerError).
 */
export class PriorityQueue extends Queue {
  readonly priorities: true;
  get(options?: GetOptions): Promise<PriorityItem>;
  getNowait(): PriorityItem;
}

/** An item got from a PriorityQueue: its priority is always there. */
export interface PriorityItem extends Item {
  readonly priority: number;
}

/** An ERROR from the broker (PROTOCOL.md 8); its message shows the code, its name and the broker's reason. */
export class BrokerError extends Error {
  constructor(code: number, name: string, tag?: string, subject?: string, text?: string);
  /** 'BrokerError', or the subclass's name. */
  readonly name: string;
  /** 400, 403, 404, 405, 406, 408, 409, 410, 412, 413, 421, 429, 500, 503, 507... */
  readonly code: number;
  /** The code's name: MALFORMED, FORBIDDEN, SHUT_DOWN, STORAGE... */
  readonly errorName: string;
  /** The tag of the request it answers; empty for puts. */
  readonly tag: string;
  /** What it is about: a seq range ("7-70"), item ids, a queue. */
  readonly subject: string;
  /** The broker's reason. */
  readonly text: string;
}
/** 503: the queue is shut down (Python 3.13's asyncio.QueueShutDown). */
export class QueueShutDown extends BrokerError {
  constructor(code?: number, name?: string, tag?: string, subject?: string, text?: string);
  readonly name: 'QueueShutDown';
}
/**
 * 421 NOT_LEADER (PROTOCOL.md 4.16): a replica that does not lead its group
 * answered HELLO. The client follows it to the leader by itself: it is seen
 * only as the cause of the BrokerUnreachable rejected with when no leader
 * answered in time.
 */
export class NotLeader extends BrokerError {
  constructor(code?: number, name?: string, tag?: string, subject?: string, text?: string);
  readonly name: 'NotLeader';
  /** The leader's address as the group's --peers lists it ('HOST:PORT'); null during an election. */
  readonly leader: string | null;
}

/** No WELCOME: the host does not resolve, nothing listens, or no answer in time; cause is the system's error. */
export class BrokerUnreachable extends Error {
  constructor(message: string, options?: { address?: string; cause?: unknown });
  /** The broker's address, as given. */
  readonly address?: string;
}
/** The broker does not allow this client's key. */
export class KeyRefused extends BrokerUnreachable {}
/** The broker's key is not serverKey, or the broker uses no keys. */
export class KeyMismatch extends BrokerUnreachable {}
/** The broker requires keys and this client has none. */
export class KeysRequired extends BrokerUnreachable {}
/** @deprecated The name of KeysRequired before 2.1.0. */
export const KeyRequired: typeof KeysRequired;
/** @deprecated The name of KeysRequired before 2.1.0. */
export type KeyRequired = KeysRequired;
/** getNowait() found no item delivered. */
export class QueueEmpty extends Error {}
/** join() or close() took longer than its timeout. */
export class TimeoutError extends Error {
  constructor(message: string, options?: { outstanding?: number; unanswered?: string[] });
  /** join(): the items the brokers that answered still waited for. */
  readonly outstanding?: number;
  /** join(): the brokers that did not answer in time (their addresses); [] if all did. */
  readonly unanswered?: string[];
}
/** Two brokers say they are the same shard (PROTOCOL.md 4.15): their item ids would collide; the client does not use them. */
export class ShardConflict extends Error {
  constructor(shard: number, addresses: [string, string]);
  readonly name: 'ShardConflict';
  readonly shard: number;
  /** Both brokers' addresses. */
  readonly addresses: [string, string];
}

/** The client's version: the asyncq project's. */
export const version: string;

/** The broker's PULL and ROUTER endpoints for an address. */
export function endpoints(address: string): [pull: string, router: string];
