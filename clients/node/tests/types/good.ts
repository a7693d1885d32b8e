// The client used as documented: must type-check (tests/types.test.js).
import {
  Queue, LifoQueue, PriorityQueue, PriorityItem, WholeDeadLetter, PutOptions, LifoPutOptions, Item, Joined, Stats, DeadLetter, DeadItem, PeekedItem, DeathCause, Role, Persistence, BrokerError, BrokerUnreachable, KeyRefused, KeyMismatch,
  KeysRequired, KeyRequired, QueueEmpty, QueueShutDown, NotLeader, TimeoutError, ShardConflict, ServiceStats, BrokerStats, BrokerInfo,
  endpoints, version,
} from '../..';

export async function produce(): Promise<number> {
  const q = new Queue('localhost:5557', { queue: 'jobs', name: 'types', timeout: 2.5 });
  await q.put('text');
  await q.put(Buffer.from('bytes'), { lease: 30 });
  await q.put(new Uint8Array([1, 2, 3]));
  const seq: number = await q.send('later');
  await q.put('urgent', { priority: -5 });
  await q.put('soon', { delay: 1.5, priority: 2, lease: 30 });
  await q.put('at nine', { at: new Date('2030-01-01T09:00:00Z') });
  await q.send('at a second', { at: Date.now() / 1000 + 1 });
  const options: PutOptions = { lease: 10, delay: 0.25 };
  await q.put('with options', options);
  const stack = new LifoQueue('localhost', { queue: 'stack' });
  const lifoOptions: LifoPutOptions = { priority: 1, lease: 5 };
  await stack.put('top', lifoOptions);
  await stack.send('top too', { delay: 0 });
  const asQueue: Queue = stack;
  await asQueue.put('any queue');
  await stack.close();
  await q.flush();
  const onHeld = (queue: string) => console.log(`waiting for room in ${queue}`);
  q.on('held', onHeld).once('held', onHeld).off('held', onHeld);
  const settings: string = `${q.broker} ${q.queue} ${q.prefetch} ${q.credit} ${q.timeout} ${q.clientId} ${version}`;
  const held: string | null = q.held;
  const joined: Joined = await q.join({ timeout: 10, all: true });
  await q.close({ timeout: 5 });
  return seq + joined.count + joined.dead + (held ? 1 : 0) + settings.length;
}

export async function consume(signal: AbortSignal): Promise<string> {
  const q = new Queue('tcp://broker:5557', {
    queue: 'jobs', prefetch: 7, curveSecret: 'client.key_secret', serverKey: 'broker.key',
  });
  const old = new Queue('ipc:///run/asyncq', { credit: 8 });
  await old.close();
  const item: Item = await q.get({ signal });
  const id: string = item.id;
  const data: Buffer = item.data;
  const from: string = item.queue;
  const numbers: number = item.attempt + item.ageUs + item.leaseMs;
  await q.touch(item);
  await q.nack(item, 1.5, 'try again');
  const again = q.getNowait();
  q.taskDone(again);
  q.taskDone(id);
  q.taskDone();
  const stats: Stats = await q.stats();
  const queued: number | undefined = stats.queued;
  const state: 'open' | 'draining' | 'discarding' | undefined = stats.state;
  const size: number = await q.qsize();
  const nothing: boolean = await q.empty();
  const report: Stats = await q.shutdown({ immediate: true });
  const drained: string | undefined = (await q.shutdown()).state;
  const reopened: void = await q.reopen();
  const purged: number = await q.purge();
  const deleted: number = await q.delete();
  const roles: Role[] | null = q.roles;
  const persistence: Persistence | null = q.persistence;
  const replicated: boolean = persistence === 'replicated';
  const errors: readonly BrokerError[] = q.errors;
  await q.close();
  return `${item.toString()} ${data.length} ${numbers} ${queued} ${state} ${size} ${nothing} ${report.discarded} `
    + `${drained} ${roles} ${persistence} ${replicated} ${errors.length} ${from}`;
}

export async function deadLetters(q: Queue): Promise<string> {
  const dead: DeadLetter[] = await q.deadLetters();
  const lines = dead.map((letter) => {
    const id: string = letter.id;
    const died: Date | null = letter.died;
    const cause: DeathCause | string = letter.cause;
    const known: boolean = letter.cause === 'lease' || letter.cause === 'restart';
    const payload: Buffer = letter.payload;
    const cuts: boolean = letter.reasonCut || letter.payloadCut;
    return `${id} ${letter.attempts + letter.size} ${died ? died.toISOString() : 'unknown'} ${cause} ${known} `
      + `${letter.reason} ${payload.length} ${cuts}`;
  });
  const requeued: number = await q.requeueDead();
  const chosen: DeadItem[] = [dead[0], dead[1].id, 42n];
  const some: number = await q.requeueDead(chosen) + await q.requeueDead([]);
  const deleted: number = await q.deleteDead(dead.slice(0, 2));
  const purged: number = await q.purgeDead();
  return `${lines.join('\n')} ${requeued + purged + some + deleted}`;
}

export async function priorities(): Promise<string> {
  const pq = new PriorityQueue('localhost', { queue: 'ranked', prefetch: 3 });
  await pq.put('urgent', { priority: -1 });
  await pq.send('later', { priority: 5, delay: 1 });
  const first: PriorityItem = await pq.get();
  const rank: number = first.priority;
  const asItem: Item = first;
  const next: number = pq.getNowait().priority;
  const always: true = pq.priorities;
  const asQueue: Queue = pq;
  const q = new Queue('localhost', { priorities: true });
  const maybe: number | null = (await q.get()).priority;
  const asked: boolean = q.priorities;
  await q.close();
  await pq.close();
  return `${rank} ${asItem.id} ${next} ${always} ${asQueue.queue} ${maybe} ${asked}`;
}

export async function wholeDeadLetter(q: Queue): Promise<number> {
  const [listed] = await q.deadLetters();
  const whole: WholeDeadLetter = await q.deadLetter(listed);
  const asListed: DeadLetter = whole;
  const cut: false = whole.payloadCut;
  const byId: Buffer = (await q.deadLetter(listed.id)).payload;
  const byBigint: WholeDeadLetter = await q.deadLetter(42n);
  return whole.payload.length + byId.length + byBigint.size + asListed.size + (cut ? 1 : 0);
}

export async function peekAndPause(q: Queue): Promise<string> {
  const next: PeekedItem[] = await q.peek(5);
  const defaulted: PeekedItem[] = await q.peek();
  const shown = next.map((item) => {
    const id: string = item.id;
    const payload: Buffer = item.payload;
    return `${id} ${item.attempts + item.size + item.priority + item.ageMs} ${payload.length} ${item.payloadCut}`;
  });
  const paused: number | undefined = (await q.pause()).paused;
  const resumed: Stats = await q.resume();
  return `${shown.join('\n')} ${defaulted.length} ${paused} ${resumed.paused}`;
}

export function explain(error: unknown): string {
  if (error instanceof QueueShutDown) return `${error.code} ${error.name}`;
  if (error instanceof NotLeader) return `${error.name} ${error.leader ?? 'an election'}`;
  if (error instanceof BrokerError) return `${error.code} ${error.errorName} ${error.tag} ${error.subject} ${error.text}`;
  if (error instanceof KeyRefused || error instanceof KeyMismatch || error instanceof KeysRequired) return error.message;
  if (error instanceof KeyRequired) return error.message; // the deprecated name
  if (error instanceof BrokerUnreachable) return `${error.address} ${String(error.cause)}`;
  if (error instanceof BrokerUnreachable || error instanceof QueueEmpty || error instanceof TimeoutError) {
    return error.name;
  }
  const [pull, router]: [string, string] = endpoints('localhost');
  return `${pull} ${router}`;
}

export async function service(): Promise<string> {
  const q = new Queue('a:5557,b:5559', { queue: 'jobs' });
  await q.put('pinned', { key: 'customer-7' });
  await q.send('bytes', { key: Buffer.from([1, 2]), priority: 1 });
  await q.put('array', { key: new Uint8Array([3]), delay: 2 });
  const total: Stats = await q.stats();
  const plain: Stats = await q.stats({ brokers: false });
  const each: ServiceStats = await q.stats({ brokers: true });
  const first: BrokerStats = each.brokers[0];
  const either: Stats | ServiceStats = await q.stats({ brokers: Math.random() > 0.5 });
  const shard: number | null = first.shard;
  const known: readonly BrokerInfo[] = q.brokers;
  const up: boolean = known.every((broker) => broker.up && broker.address.length > 0);
  const wrong: readonly BrokerUnreachable[] = q.unreachable;
  q.on('unreachable', (error: BrokerUnreachable) => console.log(error.address)).off('held', () => {});
  let named = '';
  try {
    await q.join({ timeout: 1 });
  } catch (error) {
    if (error instanceof TimeoutError) named = `${error.outstanding} ${(error.unanswered || []).join(',')}`;
    if (error instanceof ShardConflict) named = `${error.shard} ${error.addresses[0]} ${error.addresses[1]}`;
  }
  await q.close();
  return `${'total' in either} ${total.queued} ${plain.puts} ${each.total.puts} ${first.address} ${first.stats.queued} ${shard} ${up} ${wrong.length} ${named}`;
}
