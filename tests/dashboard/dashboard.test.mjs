// The broker's dashboard in Debian's headless Chromium, against the real broker with live
// traffic: queue rows with numbers the test knows, numbers that move between polls, a
// consumer row, dead letters, and Requeue behind the token (a wrong one refused); then the
// dead letters view (causes and payloads), one dead item viewed whole (its text, and its
// bytes downloaded), requeued alone and deleted alone (from its row, its confirm dismissed
// then accepted, and from the View dialog), and Purge dead; and the queue buttons: Purge,
// Reopen of a shut-down queue, Delete (its confirm dismissed, then accepted). Then the whole
// service's page (asyncq-broker --shards 3 --metrics PORT): the shards added up, a row per
// shard, a stopped shard shown down and then up again; and a group of three replicas: each
// page says the replica's role, the term, the commit index (and on the leader, the lag).
//
// Usage: node dashboard.test.mjs BIN_DIR ARTIFACT_DIR
// Exit codes: 0 passed, 1 failed, 77 skipped (no Chromium or no node_modules).
import { spawn, execFileSync } from 'node:child_process';
import { createInterface } from 'node:readline';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

const CHROMIUM = process.env.ASYNCQ_CHROMIUM || '/usr/bin/chromium';
const DEADLINE_MS = 120000; // the whole run; ctest's TIMEOUT is later, so cleanup still runs
const STEP_MS = 15000;      // one condition

if (process.argv.length !== 4) {
  console.error('usage: node dashboard.test.mjs BIN_DIR ARTIFACT_DIR');
  process.exit(2);
}
const binDir = resolve(process.argv[2]);
const artifactDir = resolve(process.argv[3]);

if (!existsSync(CHROMIUM)) {
  console.log(`SKIPPED: no Chromium at ${CHROMIUM} (apt-get install chromium)`);
  process.exit(77);
}
let chromium;
try {
  ({ chromium } = await import('playwright-core'));
} catch {
  console.log('SKIPPED: no playwright-core (npm ci --prefix tests/dashboard)');
  process.exit(77);
}

const children = [];
const work = mkdtempSync(join(tmpdir(), 'asyncq-dashboard-'));
let browser = null;
let page = null;

// setpriv's parent-death signal kills a child even if this process is killed outright
// (say by ctest's timeout), when no cleanup of ours can run.
const setpriv = ['/usr/bin/setpriv', '/bin/setpriv'].find(existsSync);

function start(name, args, { onLine } = {}) {
  const program = join(binDir, name);
  const [file, argv] = setpriv ? [setpriv, ['--pdeathsig', 'KILL', '--', program, ...args]]
                               : [program, args];
  // Each child leads its own process group, so the commands a consumer runs go with it.
  const child = spawn(file, argv, { stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  child.label = `${name} ${args.join(' ')}`;
  child.log = [];
  child.exited = new Promise((res) => child.on('exit', (code, signal) => res({ code, signal })));
  child.on('error', (e) => child.log.push(`spawn failed: ${e.message}`));
  for (const stream of [child.stdout, child.stderr]) {
    createInterface({ input: stream }).on('line', (line) => {
      if (child.log.length < 200) child.log.push(line);
      if (onLine && stream === child.stdout) onLine(line);
    });
  }
  children.push(child);
  return child;
}

async function stop(child, signal = 'SIGTERM') {
  if (child.exitCode !== null || child.signalCode !== null) return;
  try { process.kill(-child.pid, signal); } catch { /* already gone */ }
  const gone = await Promise.race([child.exited, delay(5000).then(() => null)]);
  if (!gone) {
    try { process.kill(-child.pid, 'SIGKILL'); } catch { /* already gone */ }
    await child.exited;
  }
}

async function cleanup() {
  if (browser) await browser.close().catch(() => {});
  browser = null;
  await Promise.all(children.map((c) => stop(c)));
  rmSync(work, { recursive: true, force: true });
}

function delay(ms) { return new Promise((res) => setTimeout(res, ms)); }

// Polls `probe` until it returns something truthy; fails with `what` at the deadline.
async function until(what, probe, ms = STEP_MS) {
  const end = Date.now() + ms;
  let last;
  for (;;) {
    try { last = await probe(); } catch (e) { last = e; }
    if (last && !(last instanceof Error)) return last;
    if (Date.now() > end)
      throw new Error(`timed out waiting for ${what}` + (last instanceof Error ? `: ${last.message}` : ''));
    await delay(100);
  }
}

// Runs a program to its end; its output.
async function run(name, args) {
  const child = start(name, args);
  const { code, signal } = await child.exited;
  if (code !== 0) throw new Error(`${child.label}: exit ${code ?? signal}\n${child.log.join('\n')}`);
  return child.log.join('\n');
}

// The first of `count` TCP ports in a row free on 127.0.0.1, drawn below the kernel's
// range for port 0 (the service's port and its shards' are fixed).
function portFree(port) {
  return new Promise((res) => {
    const server = createServer();
    server.once('error', () => res(false));
    server.listen(port, '127.0.0.1', () => server.close(() => res(true)));
  });
}
async function freePorts(count) {
  for (let attempt = 0; attempt < 1000; attempt++) {
    const base = 10000 + Math.floor(Math.random() * (32768 - 10000 - count));
    let n = 0;
    while (n < count && await portFree(base + n)) n++;
    if (n === count) return base;
  }
  throw new Error(`no ${count} free ports in a row`);
}

// The pid of shard K of the service bound in `dir` (from its command line).
function shardPid(dir, shard) {
  for (const name of readdirSync('/proc')) {
    let args;
    try { args = readFileSync(`/proc/${name}/cmdline`, 'utf8').split('\0'); } catch { continue; }
    const at = args.indexOf('--shard');
    if (at >= 0 && args[at + 1] === String(shard) && args.some((a) => a.includes(dir)))
      return Number(name);
  }
  return 0;
}

const verified = [];
function ok(text) {
  verified.push(text);
  console.log('ok: ' + text);
}

async function main() {
  rmSync(join(artifactDir, 'dashboard-failure.png'), { force: true }); // a past run's
  const token = randomBytes(16).toString('hex');
  const tokenFile = join(work, 'token');
  writeFileSync(tokenFile, token + '\n', { mode: 0o600 });

  const lines = {};
  const broker = start('asyncq-broker', ['--bind', 'tcp://127.0.0.1:0', '--metrics', '127.0.0.1:0',
    '--metrics-token-file', tokenFile, '--max-attempts', '2', '--drain-ms', '0',
    // Small batches, so the producer's puts arrive as a stream rather than 1024 at a time.
    '--max-batch', '4'], {
    onLine: (line) => {
      const [word, value] = line.split(' ');
      if (word === 'READY' || word === 'METRICS') lines[word] = value;
    },
  });
  await until('the broker\'s READY and METRICS lines', () => {
    if (broker.exitCode !== null) throw new Error(`broker exited\n${broker.log.join('\n')}`);
    return lines.READY && lines.METRICS;
  });
  const address = lines.READY, http = lines.METRICS.replace(/\/$/, '');
  ok(`broker ready at ${address}, HTTP at ${http}`);

  const stats = async () => {
    const r = await fetch(http + '/stats.json', { cache: 'no-store' });
    if (!r.ok) throw new Error(`/stats.json: HTTP ${r.status}`);
    return r.json();
  };
  const queue = async (name) => (await stats()).queues.find((q) => q.name === name);

  // Known numbers: 1234 items that nobody takes, and 4 that every delivery fails.
  await run('asyncq-producer', ['-b', address, '-q', 'idle', '--count', '1234', '--max-sleep', '0', '--quiet']);
  await run('asyncq', ['put', '-b', address, '-q', 'poison', 'p1', 'p2', 'p3', 'p4']);
  const poisonWorker = start('asyncq-consumer', ['-b', address, '-q', 'poison', '-n', 'poison-worker',
    '--exec', 'exit 1', '--quiet']);
  // Live traffic that keeps going while the page watches.
  start('asyncq-producer', ['-b', address, '-q', 'jobs', '-n', 'feeder', '--count', '1000000',
    '--max-sleep', '0.04', '--quiet']);
  start('asyncq-consumer', ['-b', address, '-q', 'jobs', '-n', 'worker-1', '--credit', '4',
    '--max-sleep', '0.04', '--quiet']);

  await until('4 dead letters in poison (--max-attempts 2)', async () => (await queue('poison'))?.dead === 4);
  // Stopped, so requeued items stay queued instead of failing into the dead letters again.
  await stop(poisonWorker);
  await until('poison without consumers', async () => (await queue('poison'))?.consumers === 0);
  ok('4 items of poison dead-lettered after 2 failed deliveries each');

  const unauth = await fetch(http + '/api/requeue?queue=poison', { method: 'POST' });
  const wrong = await fetch(http + '/api/requeue?queue=poison',
    { method: 'POST', headers: { Authorization: 'Bearer not-the-token' } });
  if (unauth.status !== 401 || wrong.status !== 401)
    throw new Error(`requeue without/with a wrong token: ${unauth.status}/${wrong.status}, not 401`);
  ok('POST /api/requeue without a token and with a wrong one: 401');

  browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
  page = await browser.newPage({ viewport: { width: 1280, height: 1000 }, locale: 'en-US' });
  const pageErrors = [];
  page.on('pageerror', (e) => pageErrors.push(e.message));
  await page.goto(http + '/');

  const field = (row, name) => page.locator(`${row} td[data-field="${name}"]`);
  const value = async (row, name) => Number(await field(row, name).getAttribute('data-value'));
  const expectText = async (locator, text, what) => {
    await locator.filter({ hasText: text }).first().waitFor({ timeout: STEP_MS })
      .catch(() => { throw new Error(`${what}: expected ${text}`); });
  };

  const idle = '#queues tr[data-queue="idle"]';
  await expectText(field(idle, 'queued'), /^1,234$/, 'idle queued');
  for (const [name, want] of [['in_flight', '0'], ['dead', '0'], ['consumers', '0']])
    await expectText(field(idle, name), new RegExp(`^${want}$`), `idle ${name}`);
  ok('row idle: queued 1,234 (thousands separator), in flight 0, dead 0, consumers 0');

  const poison = '#queues tr[data-queue="poison"]';
  await expectText(field(poison, 'dead'), /^4$/, 'poison dead');
  await expectText(field(poison, 'queued'), /^0$/, 'poison queued');
  ok('row poison: dead 4, queued 0');

  const jobs = '#queues tr[data-queue="jobs"]';
  await expectText(field(jobs, 'consumers'), /^1$/, 'jobs consumers');
  await until('an acks/s rate for jobs', async () => (await value(jobs, 'acks_per_s')) > 0);
  const before = { acks: await value(jobs, 'acks_total'), uptime: await page.locator('#broker dd[data-field="uptime"]').textContent() };
  await until('jobs acks to move on the page', async () => (await value(jobs, 'acks_total')) > before.acks);
  await until('the broker\'s uptime to move on the page',
    async () => (await page.locator('#broker dd[data-field="uptime"]').textContent()) !== before.uptime);
  ok(`row jobs: 1 consumer, acks/s ${(await value(jobs, 'acks_per_s')).toFixed(1)}, acked moved from ${before.acks} to ${await value(jobs, 'acks_total')}`);

  const consumer = page.locator('#consumers tr[data-consumer-queue="jobs"]');
  await consumer.first().waitFor({ timeout: STEP_MS });
  const client = await consumer.first().getAttribute('data-consumer');
  const credit = await consumer.first().locator('td[data-field="credit"]').getAttribute('data-value');
  ok(`consumer row: client ${client} on jobs, credit ${credit}`);

  await page.click(jobs);
  await expectText(page.locator('#chart-title'), 'queue jobs', 'chart title after selecting jobs');
  // Ten polls of history, so the chart (and the screenshot) shows lines, not a dot.
  await until('10 samples in the chart of jobs',
    async () => Number(await page.locator('#chart').getAttribute('data-samples')) >= 10, 20000);
  const drawn = await page.evaluate(() => {
    const c = document.querySelector('#chart');
    const px = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    let n = 0;
    for (let i = 3; i < px.length; i += 4) if (px[i]) n++;
    return n;
  });
  if (!drawn) throw new Error('the chart is blank');
  ok('chart shows queue jobs when its row is clicked, with 10 polls of history drawn');

  const dead = page.locator('div[data-dead-queue="poison"]');
  await until('4 dead items listed', async () => (await dead.locator('tbody tr[data-item]').count()) === 4);
  ok('dead letters of poison listed: 4 items with ids, attempts, size');

  mkdirSync(artifactDir, { recursive: true });
  await page.screenshot({ path: join(artifactDir, 'dashboard.png'), fullPage: true });
  ok(`screenshot ${join(artifactDir, 'dashboard.png')}`);

  // Requeue: the page has no token yet, so the broker's 401 opens the dialog.
  await dead.locator('button.requeue').click();
  const dialog = page.locator('#token-dialog');
  await dialog.waitFor({ state: 'visible', timeout: STEP_MS });
  await page.fill('#token-input', 'not-the-token');
  await page.click('#token-ok');
  await expectText(page.locator('#token-error'), 'refused', 'the dialog after a wrong token');
  await dialog.waitFor({ state: 'visible', timeout: STEP_MS });
  if ((await queue('poison')).dead !== 4) throw new Error('a wrong token requeued items');
  ok('Requeue asked for the token in a dialog; a wrong token was refused, nothing requeued');

  await page.fill('#token-input', token);
  await page.press('#token-input', 'Enter');
  await expectText(page.locator('#message'), 'requeued 4', 'the requeue result');
  await dialog.waitFor({ state: 'hidden', timeout: STEP_MS });
  const after = await queue('poison');
  if (after.dead !== 0 || after.queued !== 4)
    throw new Error(`after requeue /stats.json says poison dead ${after.dead}, queued ${after.queued}`);
  const cli = execFileSync(join(binDir, 'asyncq'), ['stats', '-b', address, '-q', 'poison'], { encoding: 'utf8' });
  if (!/\bqueued=4\b/.test(cli) || !/\bdead=0\b/.test(cli)) throw new Error(`asyncq stats after requeue: ${cli}`);
  await expectText(field(poison, 'queued'), /^4$/, 'poison queued after requeue');
  await expectText(field(poison, 'dead'), /^0$/, 'poison dead after requeue');
  await dead.waitFor({ state: 'detached', timeout: STEP_MS });
  const kept = await page.evaluate(() => sessionStorage.getItem('asyncq-dashboard-token'));
  if (kept !== token) throw new Error('the token was not kept in sessionStorage');
  ok('with the right token: "requeued 4"; /stats.json, asyncq stats and the row say queued 4, dead 0; token kept in sessionStorage');

  // The dead letters view: the poison items fail again (their attempts were reset), with one
  // more whose payload is longer than the table's 64 bytes and has bytes shown escaped; a
  // click on the dead count shows why each died and its payload, from /api/dead.
  const LONG = 'line one\nline "two" café \\ \x01 end ' + 'x'.repeat(80);
  await run('asyncq', ['put', '-b', address, '-q', 'poison', LONG]);
  const poisonAgain = start('asyncq-consumer', ['-b', address, '-q', 'poison', '-n', 'poison-worker-2',
    '--exec', 'exit 1', '--quiet']);
  await until('5 dead letters in poison again', async () => (await queue('poison'))?.dead === 5);
  await stop(poisonAgain);
  await expectText(field(poison, 'dead'), /^5$/, 'poison dead again');
  await field(poison, 'dead').locator('button.dead-link').click();
  const details = dead.locator('table.detail');
  await details.waitFor({ state: 'visible', timeout: STEP_MS });
  await until('5 dead items with their causes', async () => (await details.locator('tbody tr[data-dead-id]').count()) === 5);
  const rows = await details.locator('tbody tr[data-dead-id]').evaluateAll((trs) => trs.map((tr) => {
    const f = (name) => tr.querySelector(`td[data-field="${name}"]`).textContent;
    return { id: tr.dataset.deadId, cause: f('cause'), reason: f('reason'), payload: f('payload'), died: f('died') };
  }));
  for (const r of rows)
    if (r.cause !== 'nack' || !/^exit 1\b/.test(r.reason) || r.died === 'unknown' || !/^\d+$/.test(r.id))
      throw new Error(`a dead item's row: ${JSON.stringify(r)}`);
  // The payload as the broker escapes it: \\ for a backslash, \n \r \t, \xNN for another
  // control byte.
  const escaped = (text) => text.replace(/\\/g, '\\\\').replace(/\n/g, '\\n')
    .replace(/\r/g, '\\r').replace(/\t/g, '\\t')
    .replace(/[\x00-\x08\x0b-\x1f\x7f]/g, (c) => '\\x' + c.charCodeAt(0).toString(16).padStart(2, '0'));
  const longPreview = escaped(Buffer.from(LONG).subarray(0, 64).toString()) + '…';
  const byPayload = Object.fromEntries(rows.map((r) => [r.payload, r.id]));
  if (Object.keys(byPayload).sort().join(' ') !== ['p1', 'p2', 'p3', 'p4', longPreview].sort().join(' '))
    throw new Error(`dead payloads: ${rows.map((r) => r.payload).join(' ')}`);
  if (!(await dead.locator('table.summary').isHidden())) throw new Error('the summary table is still shown');
  await page.screenshot({ path: join(artifactDir, 'dashboard-dead-letters.png'), fullPage: true });
  ok(`dead letters view of poison: 5 items, cause nack, reason "${rows[0].reason}", payloads p1-p4 and a long one cut at 64 bytes (no token asked again)`);

  // View: the long item whole, in a dialog; its bytes downloaded as they are.
  const row = (id) => details.locator(`tbody tr[data-dead-id="${id}"]`);
  const longId = byPayload[longPreview];
  await row(longId).locator('button.view').click();
  const itemDialog = page.locator('#item-dialog');
  await itemDialog.waitFor({ state: 'visible', timeout: STEP_MS });
  const payloadText = await page.locator('#item-payload').textContent();
  if (payloadText !== escaped(LONG)) throw new Error(`View shows the payload ${JSON.stringify(payloadText)}`);
  const itemField = (name) => page.locator(`#item-fields dd[data-field="${name}"]`).textContent();
  const size = Buffer.byteLength(LONG);
  if ((await itemField('id')) !== longId || (await itemField('cause')) !== 'nack'
      || (await itemField('size')) !== `${size} B` || !/^exit 1\b/.test(await itemField('reason')))
    throw new Error(`View's fields: id ${await itemField('id')}, cause ${await itemField('cause')}, size ${await itemField('size')}`);
  await expectText(page.locator('#item-title'), `Dead item ${longId} of poison`, 'the View dialog title');
  await page.screenshot({ path: join(artifactDir, 'dashboard-dead-item.png'), fullPage: true });
  const [download] = await Promise.all([page.waitForEvent('download', { timeout: STEP_MS }),
    page.click('#item-download')]);
  const saved = readFileSync(await download.path());
  if (download.suggestedFilename() !== `poison-${longId}.bin` || !saved.equals(Buffer.from(LONG)))
    throw new Error(`the download: ${download.suggestedFilename()}, ${saved.length} bytes ${JSON.stringify(saved.toString())}`);
  await page.click('#item-close');
  await itemDialog.waitFor({ state: 'hidden', timeout: STEP_MS });
  if ((await queue('poison')).dead !== 5) throw new Error('View changed the dead letters');
  ok(`View of item ${longId}: its ${size} bytes whole as text (escaped), id, cause, size and reason; the download is the bytes as they are (${download.suggestedFilename()})`);

  // Requeue one dead item from its row: only it leaves the dead letters, queued again.
  await row(byPayload.p1).locator('button.requeue-item').click();
  await expectText(page.locator('#message'), `requeued dead item ${byPayload.p1} of poison`, 'the requeue of one item');
  let now = await queue('poison');
  if (now.dead !== 4 || now.queued !== 1)
    throw new Error(`after the requeue of one item poison dead ${now.dead}, queued ${now.queued}`);
  await row(byPayload.p1).waitFor({ state: 'detached', timeout: STEP_MS });
  if ((await details.locator('tbody tr[data-dead-id]').count()) !== 4) throw new Error('other rows went with it');
  ok(`Requeue on the row of item ${byPayload.p1} (p1): poison dead 4, queued 1, its row gone, the others kept`);

  // Delete one dead item from its row: dismissed, nothing happens; accepted, it goes.
  let asked = null;
  page.once('dialog', (d) => { asked = d.message(); d.dismiss(); });
  await row(byPayload.p2).locator('button.delete-item').click();
  await until('the confirm of the delete of one item', () => asked);
  await delay(300);
  if ((await queue('poison')).dead !== 4) throw new Error('a dismissed Delete deleted');
  if (!asked.includes(byPayload.p2) || !asked.includes('poison')) throw new Error(`delete asked: ${asked}`);
  page.once('dialog', (d) => { asked = d.message(); d.accept(); });
  await row(byPayload.p2).locator('button.delete-item').click();
  await expectText(page.locator('#message'), `deleted dead item ${byPayload.p2} of poison`, 'the delete of one item');
  now = await queue('poison');
  if (now.dead !== 3 || now.queued !== 1)
    throw new Error(`after the delete of one item poison dead ${now.dead}, queued ${now.queued}`);
  await row(byPayload.p2).waitFor({ state: 'detached', timeout: STEP_MS });
  ok(`Delete on the row of item ${byPayload.p2} (p2) asked "${asked}" (dismissed: nothing deleted; accepted: dead 3, its row gone)`);

  // From the View dialog: Delete, confirmed, closes it and deletes that item.
  await row(byPayload.p3).locator('button.view').click();
  await itemDialog.waitFor({ state: 'visible', timeout: STEP_MS });
  if ((await page.locator('#item-payload').textContent()) !== 'p3') throw new Error('View of p3 shows another payload');
  page.once('dialog', (d) => { asked = d.message(); d.accept(); });
  await page.click('#item-delete');
  await itemDialog.waitFor({ state: 'hidden', timeout: STEP_MS });
  await expectText(page.locator('#message'), `deleted dead item ${byPayload.p3} of poison`, 'the delete from View');
  now = await queue('poison');
  if (now.dead !== 2 || now.queued !== 1) throw new Error(`after the delete from View poison dead ${now.dead}`);
  await row(byPayload.p3).waitFor({ state: 'detached', timeout: STEP_MS });
  ok(`Delete in the View dialog of item ${byPayload.p3} (p3): dialog closed, poison dead 2`);

  // Purge dead, confirmed: the two left.
  page.once('dialog', (d) => { asked = d.message(); d.accept(); });
  await dead.locator('button.purge-dead').click();
  await expectText(page.locator('#message'), 'purged 2 dead items of poison', 'the purge-dead result');
  if (!/\b2 dead items of poison\b/.test(asked || '')) throw new Error(`purge dead asked: ${asked}`);
  await until('poison dead 0', async () => (await queue('poison')).dead === 0);
  await dead.waitFor({ state: 'detached', timeout: STEP_MS });
  ok(`Purge dead asked "${asked}"; poison dead 0, its dead letters gone from the page`);

  // Purge: the 1234 queued items of idle, after a confirm naming the queue and the count.
  const button = (row, action) => page.locator(`${row} td[data-field="actions"] button[data-action="${action}"]`);
  if (!(await button(idle, 'reopen').isHidden())) throw new Error('Reopen shown for an open queue');
  page.once('dialog', (d) => { asked = d.message(); d.accept(); });
  await button(idle, 'purge').click();
  await expectText(page.locator('#message'), 'purged 1,234 items of idle', 'the purge result');
  if (!/idle/.test(asked) || !/1,234/.test(asked)) throw new Error(`purge asked: ${asked}`);
  const purged = await queue('idle');
  if (purged.queued !== 0 || purged.discarded_total !== 1234 || purged.state !== 'open')
    throw new Error(`after purge idle: ${JSON.stringify(purged)}`);
  await expectText(field(idle, 'queued'), /^0$/, 'idle queued after purge');
  ok(`Purge asked "${asked}"; idle queued 0, 1234 discarded, still open`);

  // Reopen: shown once idle is shut down, and it takes puts again.
  await run('asyncq', ['shutdown', '-b', address, '-q', 'idle']);
  await expectText(field(idle, 'state'), /^draining$/, 'idle state after shutdown');
  await button(idle, 'reopen').waitFor({ state: 'visible', timeout: STEP_MS });
  await button(idle, 'reopen').click();
  await expectText(page.locator('#message'), 'reopened idle (was draining)', 'the reopen result');
  if ((await queue('idle')).state !== 'open') throw new Error('idle not open after Reopen');
  await expectText(field(idle, 'state'), /^open$/, 'idle state after reopen');
  await button(idle, 'reopen').waitFor({ state: 'hidden', timeout: STEP_MS });
  await run('asyncq', ['put', '-b', address, '-q', 'idle', 'again']);
  await until('idle queued 1 after a put', async () => (await queue('idle')).queued === 1);
  ok('Reopen shown for the shut-down queue idle: open again, a put taken, the button hidden');

  // Delete: dismissed, nothing happens; accepted, the queue goes.
  await run('asyncq', ['put', '-b', address, '-q', 'scratch', 's1', 's2', 's3']);
  const scratch = '#queues tr[data-queue="scratch"]';
  await expectText(field(scratch, 'queued'), /^3$/, 'scratch queued');
  page.once('dialog', (d) => { asked = d.message(); d.dismiss(); });
  await button(scratch, 'delete').click();
  await until('the delete confirm', () => asked && asked.includes('scratch'));
  await delay(300);
  if ((await queue('scratch'))?.queued !== 3) throw new Error('a dismissed Delete deleted');
  asked = null;
  page.once('dialog', (d) => { asked = d.message(); d.accept(); });
  await button(scratch, 'delete').click();
  await expectText(page.locator('#message'), 'deleted scratch and the 3 items it held', 'the delete result');
  if (!/scratch/.test(asked) || !/\b3 items\b/.test(asked)) throw new Error(`delete asked: ${asked}`);
  if (await queue('scratch')) throw new Error('scratch still in /stats.json after Delete');
  await page.locator(scratch).waitFor({ state: 'detached', timeout: STEP_MS });
  ok(`Delete asked "${asked}" (dismissed: nothing deleted; accepted: scratch gone from /stats.json and the page)`);

  // The broker gone: the page says so instead of showing old numbers as live. The clients
  // go first, so none is left retrying a broker that is not there.
  await Promise.all(children.filter((c) => c !== broker).map((c) => stop(c)));
  await stop(broker);
  await page.locator('#status.down').waitFor({ timeout: STEP_MS });
  await page.locator('#banner').waitFor({ state: 'visible', timeout: STEP_MS });
  await page.screenshot({ path: join(artifactDir, 'dashboard-unreachable.png'), fullPage: true });
  ok(`broker stopped: the page shows "${await page.locator('#status').textContent()}"`);

  // The whole service on its supervisor's port, the shards each on the next ports.
  const port = await freePorts(4);
  const bind = `ipc://${work}/service`;
  let ready = 0;
  const service = start('asyncq-broker', ['--shards', '3', '--bind', bind, '--metrics',
    `127.0.0.1:${port}`, '--metrics-token-file', tokenFile, '--drain-ms', '0'],
  { onLine: (line) => { if (line.startsWith('READY ')) ready++; } });
  await until('the service\'s 3 shards READY', () => {
    if (service.exitCode !== null) throw new Error(`service exited\n${service.log.join('\n')}`);
    return ready === 3;
  });
  for (let i = 0; i < 3; i++) // three producers: each starts at a shard of its own or not
    await run('asyncq-producer', ['-b', bind, '-q', 'spread', '--count', '100', '--max-sleep', '0', '--quiet']);
  await page.goto(`http://127.0.0.1:${port}/`);
  const spread = '#queues tr[data-queue="spread"]';
  await expectText(field(spread, 'queued'), /^300$/, 'spread queued, the shards added up');
  await expectText(page.locator('#kind'), /^service$/, 'the header');
  await expectText(page.locator('#broker dd[data-field="shards"]'), /^3 of 3 up$/, 'shards up');
  const shardRow = (k) => `#shards tr[data-shard="${k}"]`;
  let total = 0;
  for (let k = 0; k < 3; k++) {
    await expectText(field(shardRow(k), 'state'), /^up$/, `shard ${k}'s state`);
    total += await value(shardRow(k), 'queued');
  }
  if (total !== 300) throw new Error(`the shards' rows hold ${total} queued, not 300`);
  ok('the service\'s page: spread queued 300 over 3 shard rows, each up');
  const stopped = shardPid(`${work}/service`, 1);
  if (!stopped) throw new Error('no pid for shard 1');
  process.kill(stopped, 'SIGSTOP');
  try {
    await expectText(field(shardRow(1), 'state'), /^down: /, 'a stopped shard\'s state');
    await expectText(page.locator('#broker dd[data-field="shards"]'), /^2 of 3 up$/, 'shards up');
    await page.screenshot({ path: join(artifactDir, 'dashboard-service.png'), fullPage: true });
  } finally {
    process.kill(stopped, 'SIGCONT');
  }
  await expectText(field(shardRow(1), 'state'), /^up$/, 'shard 1 back');
  ok('shard 1 stopped: its row says down (the others answer on), and up once it runs again');
  await stop(service);

  // A group of three replicas (--peers), each with its own page: the leader's says so,
  // with the term, the commit index and each replica's lag; a follower's names the leader.
  const base = await freePorts(12);
  const peers = [0, 1, 2].map((i) => `127.0.0.1:${base + 4 * i}`).join(',');
  const replicas = [0, 1, 2].map((i) => start('asyncq-broker', ['--bind', `127.0.0.1:${base + 4 * i}`,
    '--peers', peers, '--node-id', String(i + 1), '--data-dir', join(work, `replica-${i + 1}`),
    '--metrics', `127.0.0.1:${base + 4 * i + 3}`]));
  const roleOf = async (i) => {
    try {
      const r = await fetch(`http://127.0.0.1:${base + 4 * i + 3}/stats.json`);
      return (await r.json()).broker.replica.role;
    } catch { return null; }
  };
  let leader = -1;
  await until('a leader of the group', async () => {
    for (const r of replicas) if (r.exitCode !== null) throw new Error(`a replica exited\n${r.log.join('\n')}`);
    for (let i = 0; i < 3; i++) if (await roleOf(i) === 'leader') leader = i;
    return leader >= 0;
  });
  await run('asyncq', ['put', '-b', peers, '-q', 'replicated', 'one', 'two']);
  await page.goto(`http://127.0.0.1:${base + 4 * leader + 3}/`);
  const replicaField = page.locator('#broker dd[data-field="replica"]');
  await expectText(replicaField, new RegExp(`^${leader + 1}, leader · term \\d+ · commit \\d+ · lag `),
    'the leader\'s replica field');
  await expectText(field('#queues tr[data-queue="replicated"]', 'queued'), /^2$/, 'replicated queued');
  const follower = (leader + 1) % 3;
  await page.goto(`http://127.0.0.1:${base + 4 * follower + 3}/`);
  await expectText(replicaField, new RegExp(`^${follower + 1}, follower of leader ${leader + 1} · term `),
    'a follower\'s replica field');
  await page.screenshot({ path: join(artifactDir, 'dashboard-replica.png'), fullPage: true });
  ok(`a group of 3: each page says its replica's role; a follower's: "${await replicaField.textContent()}"`);
  await Promise.all(replicas.map((r) => stop(r)));

  if (pageErrors.length) throw new Error('errors in the page: ' + pageErrors.join('; '));
  ok('no script errors in the page');
}

let status = 0;
const began = Date.now();
const onSignal = async (signal) => {
  console.error(`FAILED: ${signal}`);
  await cleanup();
  process.exit(1);
};
process.on('SIGINT', onSignal);
process.on('SIGTERM', onSignal);
try {
  let timer;
  const deadline = new Promise((_, rej) => {
    timer = setTimeout(() => rej(new Error(`the whole run took more than ${DEADLINE_MS} ms`)), DEADLINE_MS);
  });
  await Promise.race([main(), deadline]).finally(() => clearTimeout(timer));
  console.log(`PASSED: ${verified.length} checks in ${((Date.now() - began) / 1000).toFixed(1)} s`);
} catch (e) {
  status = 1;
  console.error('FAILED: ' + (e.stack || e.message));
  if (page) {
    mkdirSync(artifactDir, { recursive: true });
    await page.screenshot({ path: join(artifactDir, 'dashboard-failure.png'), fullPage: true })
      .then(() => console.error(`screenshot ${join(artifactDir, 'dashboard-failure.png')}`), () => {});
  }
  for (const c of children) if (c.log.length) console.error(`--- ${c.label}\n${c.log.slice(-30).join('\n')}`);
} finally {
  await cleanup();
}
process.exit(status);
