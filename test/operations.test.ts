/**
 * Operating a cluster: /metrics scraped and parsed while a peer is cut off
 * and after it heals, /readyz while a node catches up, each replication
 * state change logged once, and the CLI's lag and log commands.
 */
import { cpSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import t, { type Test } from 'tap';
import { pino } from 'pino';
import { MeridianNode, resolveConfig, type ConfigInput } from '@meridian/node';
import { DUPLICATE_SESSION, type PeerStatus } from '@meridian/sync';
import { cliAsync, cliOnTty, logSink } from './helpers/node-process.js';
import { makeCerts } from './helpers/certs.js';
import { FaultProxy } from './helpers/fault-proxy.js';
import { freePort } from './helpers/free-port.js';
import { tempDir } from './helpers/tmp.js';
import { sleep, until } from './helpers/wait.js';

const PW = 'ops-admin-pw';
const SECRET = 'ops-test-cluster-secret';
const AUTH = `Basic ${Buffer.from(`admin:${PW}`).toString('base64')}`;

interface LogLine {
  msg: string;
  level: number;
  [k: string]: unknown;
}

async function start(t: Test, flags: ConfigInput, dir = tempDir(t)): Promise<{ node: MeridianNode; logs: LogLine[] }> {
  const logs: LogLine[] = [];
  // debug: the tests count the retries that are not logged at info
  const node = await MeridianNode.start(resolveConfig({ flags: { dir, httpPort: 0, adminPassword: PW, clusterSecret: SECRET, heartbeat: 200, linkTimeout: 1000, ...flags } }), pino({ level: 'debug' }, logSink(logs)));
  t.teardown(() => node.stop());
  return { node, logs };
}

/**
 * Masters a and b, a dialing b through a fault proxy the test can cut
 * (throttled towards b from the start, if `towardsB` bytes a second are
 * given); resolves once they are connected.
 */
async function proxiedPair(t: Test, towardsB?: number): Promise<{ a: Awaited<ReturnType<typeof start>>; b: Awaited<ReturnType<typeof start>>; proxy: FaultProxy }> {
  const proxy = await FaultProxy.start();
  t.teardown(() => proxy.close());
  const b = await start(t, { nodeId: 'b' });
  if (towardsB !== undefined) proxy.throttle(towardsB, true);
  proxy.setTarget(Number(new URL(b.node.url).port));
  const a = await start(t, { nodeId: 'a', peers: [`ws://127.0.0.1:${proxy.port}/sync`] });
  t.ok(await until(() => a.node.replicator!.status()[0]?.state === 'live'), 'a and b are connected');
  return { a, b, proxy };
}

/** A Release of about 2 MB of values that do not compress: a frame of its own, uncompressed. */
async function largeRelease(store: MeridianNode['store']): Promise<string> {
  const product = await store.create('Product', { name: 'Big' });
  const { randomBytes } = await import('node:crypto');
  const components = Array.from({ length: 500 }, () => randomBytes(3000).toString('base64url'));
  return (await store.create('Release', { product: product.id, version: '1.0', components })).id;
}

/** Log lines with this message, at this level (any level when not given). */
function count(logs: LogLine[], msg: string, level?: number): number {
  return logs.filter((l) => l.msg === msg && (level === undefined || l.level === level)).length;
}

/** Prometheus text format: metric{labels} value, as a map from "name{labels}" to the value. */
async function scrape(node: MeridianNode): Promise<Map<string, number>> {
  const res = await fetch(`${node.url}/metrics`);
  const text = await res.text();
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const m = /^([a-z_]+)(\{[^}]*\})? (-?[0-9.e+]+|NaN)$/.exec(line);
    if (!m) throw new Error(`not Prometheus text: ${line}`);
    out.set(`${m[1]}${m[2] ?? ''}`, Number(m[3]));
  }
  return out;
}

t.test('/metrics: writes, feed, sessions, per-peer lag rising while cut off and back to zero after heal, conflicts, request counts', async (t) => {
  const { a, b, proxy } = await proxiedPair(t);
  const first = await a.node.store.create('Organisation', { name: 'M0', kind: 'vendor' });
  for (let i = 1; i < 5; i++) await a.node.store.create('Organisation', { name: `M${i}`, kind: 'vendor' });
  const m1 = await scrape(a.node);
  t.equal(m1.get('meridian_writes_total{kind="create"}'), 5, 'writes are counted by kind');
  t.equal(m1.get('meridian_feed_position'), 5);
  t.equal(m1.get('meridian_sessions'), 1);
  t.equal(m1.get('meridian_peer_up{peer="b"}'), 1);
  t.equal(m1.get('meridian_read_only'), 0);
  t.equal(m1.get('meridian_objects{type="Organisation"}'), 5);
  t.ok(await until(async () => (await scrape(b.node)).get('meridian_applied_total{origin="a"}') === 5), 'b counts what it applied from a');
  t.ok(await until(async () => (await scrape(a.node)).get('meridian_peer_behind_seconds{peer="b"}') === 0), 'once b has acknowledged them it lacks nothing of a');
  t.ok(m1.get('meridian_peer_bytes_in{peer="b"}')! > 0 && m1.get('meridian_peer_bytes_out{peer="b"}')! > 0, 'bytes in and out are counted');
  t.equal(m1.get('meridian_conflicts_open'), 0);

  proxy.partition();
  t.ok(await until(() => a.node.replicator!.status()[0]?.state !== 'live', 3000), 'a sees b gone');
  for (let i = 0; i < 19; i++) await a.node.store.create('Organisation', { name: `P${i}`, kind: 'vendor' });
  // the same field written on both sides of the partition: a conflict once it heals
  await a.node.store.update(first.id, { name: 'M0 as a has it' });
  await b.node.store.update(first.id, { name: 'M0 as b has it' });
  const cut = await scrape(a.node);
  t.equal(cut.get('meridian_peer_behind_entries{peer="b"}'), 20, 'b is 20 changes behind a while cut off');
  const since = cut.get('meridian_peer_behind_seconds{peer="b"}')!;
  t.ok(await until(async () => (await scrape(a.node)).get('meridian_peer_behind_seconds{peer="b"}')! >= since + 1, 3000), `and for longer as time goes by (from ${since} s)`);
  t.equal(cut.get('meridian_peer_up{peer="b"}'), 0);
  t.equal(cut.get('meridian_sessions'), 0);
  proxy.heal();
  t.ok(await until(async () => (await scrape(a.node)).get('meridian_peer_behind_entries{peer="b"}') === 0, 10_000), 'and back to 0 after heal');
  t.equal((await scrape(a.node)).get('meridian_peer_behind_seconds{peer="b"}'), 0, 'in seconds too');
  t.ok(await until(async () => (await scrape(a.node)).get('meridian_conflicts_open') === 1 && (await scrape(b.node)).get('meridian_conflicts_open') === 1), 'the conflict is counted on both nodes');
  t.ok(await until(async () => (await scrape(b.node)).get('meridian_peer_lag_entries{peer="a"}') === 0), "b's lag on a's changes is 0");
  t.equal((await scrape(b.node)).get('meridian_peer_behind_entries{peer="a"}'), 0, "a holds all of b's feed: b's feed is a's changes, which a need not be sent back");

  await fetch(`${a.node.url}/api/objects?type=Organisation&limit=1`, { headers: { authorization: AUTH } });
  await fetch(`${a.node.url}/objects/Organisation?limit=1`, { headers: { authorization: AUTH } });
  await fetch(`${a.node.url}/objects/Organisation?limit=1`);
  // (a path fetch, or a URL, would normalise: a raw request)
  const { request } = await import('node:http');
  const refused = await new Promise<number>((resolve, reject) =>
    request({ host: '127.0.0.1', port: new URL(a.node.url).port, path: '/api/%2e%2e/status', headers: { authorization: AUTH } }, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    })
      .on('error', reject)
      .end(),
  );
  t.equal(refused, 400);
  const m2 = await scrape(a.node);
  t.equal(m2.get('meridian_http_requests_total{surface="admin",method="GET",status="400"}'), 1, 'a target refused as not in normal form is counted too');
  t.equal(m2.get('meridian_http_requests_total{surface="admin",method="GET",status="200"}'), 1, 'admin API requests by status');
  t.equal(m2.get('meridian_http_requests_total{surface="xml",method="GET",status="200"}'), 1, 'XML requests by status');
  t.equal(m2.get('meridian_http_requests_total{surface="xml",method="GET",status="401"}'), 1);
  t.ok((m2.get('meridian_http_request_duration_seconds_count{surface="xml"}') ?? 0) >= 2, 'and their latency');
  t.equal(m2.get('meridian_http_request_duration_seconds_count{surface="admin"}'), 2, 'admin latency too (the refused one included)');
});

t.test('/readyz is 503 while a node catches up and 200 once it has', async (t) => {
  const [pa, pb] = [await freePort(), await freePort()];
  const a = await start(t, { nodeId: 'a', httpPort: pa, peers: [`ws://127.0.0.1:${pb}/sync`], readyLag: 10 });
  t.ok(await until(async () => (await fetch(`${a.node.url}/readyz`)).status === 200, 3000), 'a master whose peer cannot be reached is ready once it has tried: it takes writes');
  for (let i = 0; i < 3000; i += 100) await Promise.all(Array.from({ length: 100 }, (_, j) => a.node.store.create('Organisation', { name: `R${i + j}`, kind: 'vendor' })));
  const bdir = tempDir(t);
  const b = await start(t, { nodeId: 'b', httpPort: pb, peers: [`ws://127.0.0.1:${pa}/sync`], readyLag: 10 }, bdir);
  const seen: number[] = [];
  const reasons = new Set<string>();
  const readyWhileBehind: number[] = [];
  await until(async () => {
    const r = await fetch(`${b.node.url}/readyz`);
    seen.push(r.status);
    const body = (await r.json()) as { ready: boolean; reason: string | null };
    if (body.reason) reasons.add(body.reason.replace(/\d+/g, 'N'));
    // measured after the answer: b only moves closer, so this bounds how far behind it was when it said ready
    const behind = (a.node.store.versionVector()['a'] ?? 0) - (b.node.store.versionVector()['a'] ?? 0);
    if (r.status === 200 && behind > 10) readyWhileBehind.push(behind);
    return r.status === 200 && b.node.store.covers(a.node.store.versionVector());
  }, 20_000);
  t.same(readyWhileBehind, [], 'never ready while more than --ready-lag (10) changes behind');
  t.equal(seen[0], 503, `not ready at first: ${[...reasons].join(' | ')}`);
  t.equal(seen.at(-1), 200, 'ready once caught up');
  t.ok(b.node.store.covers(a.node.store.versionVector()), 'and it had every change');
});

t.test('/readyz waits while a dialer closed as a duplicate waits for the peer\'s own session', async (t) => {
  const a = await start(t, { nodeId: 'a', peers: [`ws://127.0.0.1:${await freePort()}/sync`] });
  const replicator = a.node.replicator!;
  // the gap CI caught: this node's dial reached b and lost the duplicate rule to b's dial, which has not opened yet
  const parked: PeerStatus = {
    node: 'b', url: 'ws://b/sync', role: 'master', direction: 'outbound', state: 'backing-off', reason: DUPLICATE_SESSION,
    lagEntries: 0, lagSeconds: 0, lastContact: new Date().toISOString(), bytesIn: 10, bytesOut: 10, acked: 0, peerBehind: 0, peerBehindSeconds: 0, synced: false,
  };
  replicator.status = () => [parked];
  const r = await fetch(`${a.node.url}/readyz`);
  const body = (await r.json()) as { ready: boolean; reason: string };
  t.equal(r.status, 503, 'not ready: how far behind b this node is is unknown');
  t.match(body.reason, /waiting to hear how far behind b/);
  replicator.status = () => [{ ...parked, state: 'backing-off', reason: 'connect ECONNREFUSED 127.0.0.1:1' }];
  t.equal((await fetch(`${a.node.url}/readyz`)).status, 200, 'an unreachable peer does not hold readiness back');
  replicator.status = () => [{ ...parked, state: 'live', reason: null, synced: true, lagEntries: 3 }];
  t.equal((await fetch(`${a.node.url}/readyz`)).status, 200, 'and once b\'s session says where b is, lag within --ready-lag is ready');
});

t.test('each replication state change is logged once, not per entry nor per retry', async (t) => {
  const { a, b, proxy } = await proxiedPair(t);
  for (let i = 0; i < 200; i++) await a.node.store.create('Organisation', { name: `L${i}`, kind: 'vendor' });
  proxy.partition();
  // at info (30) by default; the retries repeat the line at debug (20)
  // a partition long enough for a to retry several times
  t.ok(await until(() => count(a.logs, 'replication link down; backing off', 20) >= 2, 10_000), 'a retried at least twice');
  proxy.heal();
  t.ok(await until(() => count(a.logs, 'replication session open') === 2, 15_000), 'reconnected');
  t.equal(count(a.logs, 'replication session open', 30), 2, 'open: once per session');
  t.ok(await until(() => count(a.logs, 'replication caught up', 30) === 2 && count(b.logs, 'replication caught up', 30) === 2), 'caught up: once per session, on both sides');
  t.equal(count(a.logs, 'replication link down; backing off', 30), 1, 'down: once at info for the whole outage, the retries at debug');
  const retries = a.logs.filter((l) => l.msg === 'replication link down; backing off' && l.level === 20);
  t.ok(retries.length >= 2 && retries.every((l) => (l as LogLine & { repeat?: boolean }).repeat === true), 'each retry\'s line is marked "repeat": true, as docs/operations.md says');
  t.notOk(a.logs.some((l) => l.msg === 'replication link down; backing off' && l.level === 30 && 'repeat' in l), 'the first is not');
  t.equal(count(b.logs, 'replication link closed', 30), 1, 'the other side logs the close once');
  const info = (logs: LogLine[]): number => logs.filter((l) => l.level >= 30).length;
  t.ok(info(a.logs) + info(b.logs) < 40, `a handful of lines at info for 200 changes and a partition (${info(a.logs) + info(b.logs)})`);

  // the next outage is logged again: once
  proxy.partition();
  t.ok(await until(() => count(a.logs, 'replication link down; backing off', 30) === 2, 5000), 'a second outage is a new state change');
  proxy.heal();
  t.ok(await until(() => count(a.logs, 'replication session open', 30) === 3, 15_000));
});

t.test('a dialer redials an unreachable peer after jittered, doubling delays', async (t) => {
  const a = await start(t, { nodeId: 'a', peers: [`ws://127.0.0.1:${await freePort()}/sync`] });
  const downs = (): LogLine[] => a.logs.filter((l) => l.msg === 'replication link down; backing off');
  t.ok(await until(() => downs().length >= 5, 10_000), 'five attempts failed');
  const lines = downs().slice(0, 5);
  for (const [k, l] of lines.entries()) {
    // (backoffDelay with the node's defaults: base 250 ms, doubling, the upper half of each step drawn)
    const exp = 250 * 2 ** k;
    const wait = Number(l['retryInMs']);
    t.ok(wait >= exp / 2 && wait <= exp, `attempt ${k + 1}: waits ${wait} ms, within ${exp / 2}-${exp}`);
    const nextAt = lines[k + 1]?.['time'];
    if (typeof nextAt === 'number') t.ok(nextAt - Number(l['time']) >= wait - 5, `and dials again only after it (${nextAt - Number(l['time'])} ms later)`);
  }
});

t.test('a refused peer is logged once on each side, however often it retries', async (t) => {
  const a = await start(t, { nodeId: 'a' });
  const x = await start(t, { nodeId: 'x', clusterSecret: 'not-the-cluster-secret', peers: [`${a.node.url.replace('http', 'ws')}/sync`] });
  // each retry repeats the refusal at debug (20)
  t.ok(await until(() => count(x.logs, 'replication peer refused', 20) >= 2 && count(a.logs, 'replication peer refused', 20) >= 2, 15_000), 'x was refused at least three times');
  const refusal = (logs: LogLine[]): LogLine[] => logs.filter((l) => l.msg === 'replication peer refused' && l.level > 20);
  t.equal(refusal(x.logs).length, 1, 'the dialer logs the refusal once');
  t.equal(refusal(x.logs)[0]?.level, 40, 'as a warning');
  t.match(refusal(x.logs)[0], { reason: /authentication failed/ }, 'with the reason');
  t.equal(refusal(a.logs).length, 1, 'the refusing side logs it once for that address and reason');
  t.match(refusal(a.logs)[0], { from: '127.0.0.1', reason: /authentication failed: the peer does not hold this cluster's secret/ });
  t.equal(count(x.logs, 'replication link down; backing off', 30), 1, 'and backing off, once');
  t.equal(count(a.logs, 'replication link closed') + count(a.logs, 'replication session closed'), 0, 'no close line per attempt');
  // (while it dials again it shows connecting)
  t.ok(await until(() => x.node.replicator!.status()[0]?.state === 'refused', 5000), 'status shows it refused between retries');
  t.match(x.node.replicator!.status()[0]?.reason, /^peer closed the session: authentication failed/, 'and why (only the accepting side checks a dialer\'s proof)');
});

t.test('a replica that reaches none of its masters logs turning to the next one once, not at every retry', async (t) => {
  const masters = [`ws://127.0.0.1:${await freePort()}/sync`, `ws://127.0.0.1:${await freePort()}/sync`];
  const r = await start(t, { nodeId: 'r', role: 'replica', masters, replicaCredential: `laptop-1:0123456789abcdef:${'k'.repeat(43)}`, clusterSecret: undefined });
  t.ok(await until(() => count(r.logs, 'replica: trying the next master', 20) >= 3, 10_000), 'it went round its masters several times');
  t.equal(count(r.logs, 'replica: trying the next master', 30), 1, 'logged at info once');
  t.equal((await scrape(r.node)).get('meridian_read_only'), 1, 'read-only meanwhile');
});

t.test("a replica's wait between rounds of its masters starts again from the shortest once a session opened, though it ended before going live", async (t) => {
  const m = await start(t, { nodeId: 'm' });
  // about 5 s to catch up at 400 KB/s: the session is lost while it still catches up
  await largeRelease(m.node.store);
  const issued = await fetch(`${m.node.url}/api/replicas`, { method: 'POST', headers: { authorization: AUTH, 'content-type': 'application/json' }, body: JSON.stringify({ name: 'laptop-9' }) });
  const { credential } = (await issued.json()) as { credential: string };
  const proxy = await FaultProxy.start();
  t.teardown(() => proxy.close());
  proxy.setTarget(Number(new URL(m.node.url).port));
  proxy.throttle(400_000);
  proxy.partition();
  const r = await start(t, { nodeId: 'r', role: 'replica', masters: [`ws://127.0.0.1:${proxy.port}/sync`], replicaCredential: credential, clusterSecret: undefined });
  // failed rounds of its one master: 125-250 ms, 250-500, 500-1000, 1000-2000 between dials
  t.ok(await until(() => proxy.dials.length >= 5, 10_000), 'it dialed through several failed rounds');
  const reached = proxy.dials[4]! - proxy.dials[3]!;
  t.ok(reached >= 900, `the rounds' wait had grown to ${Math.round(reached)} ms`);
  proxy.heal();
  t.ok(await until(() => r.node.replicator!.status()[0]?.state === 'catching-up', 10_000), 'and reached its master once it was back');
  await sleep(300);
  t.not(r.node.replicator!.status()[0]?.state, 'live', 'still catching up');
  const before = proxy.dials.length;
  proxy.partition();
  // the session lost: one dial at once, refused, a whole round; the wait after it is the first step's again
  t.ok(await until(() => proxy.dials.length >= before + 2, 10_000), 'it dials again at once, and again after a round');
  const gap = proxy.dials[before + 1]! - proxy.dials[before]!;
  t.ok(gap < 2000, `the wait after the first failed round was ${Math.round(gap)} ms (125-250 ms and the event loop's delay), not the 2-5 s the earlier rounds had reached`);
});

t.test("a user and password in a peer's URL are not shown by /status or /metrics, which asks no password, nor logged", async (t) => {
  const port = await freePort();
  const a = await start(t, { nodeId: 'a', peers: [`ws://ops:hunter2@127.0.0.1:${port}/sync`] });
  t.equal(a.node.replicator!.status()[0]?.url, `ws://127.0.0.1:${port}/sync`);
  const metrics = await (await fetch(`${a.node.url}/metrics`)).text();
  t.match(metrics, `ws://127.0.0.1:${port}/sync`, 'the peer is on /metrics');
  t.notMatch(metrics, /hunter2|ops@/, 'without its user or password');
  // (nothing listens on the port: the dial fails, and the link down is logged with its URL)
  t.ok(await until(() => a.logs.some((l) => JSON.stringify(l).includes(`127.0.0.1:${port}/sync`)), 10_000), 'the peer is in the log');
  t.notMatch(JSON.stringify(a.logs), /hunter2|ops@/, 'without its user or password');
});

t.test('meridian lag and meridian log against a running node', async (t) => {
  const a = await start(t, { nodeId: 'a' });
  for (let i = 0; i < 3; i++) await a.node.store.create('Organisation', { name: `G${i}`, kind: 'vendor' }, { principal: 'admin' });
  const env = { MERIDIAN_PASSWORD: PW, MERIDIAN_NODE: a.node.url };
  const lag = await cliAsync(['lag'], env);
  t.equal(lag.code, 0, lag.stderr);
  t.match(lag.stdout, /^a \(read-write\) at \d{4}-/);
  t.match(lag.stdout, /no peers configured/);
  const lagJson = await cliAsync(['lag', '--json'], env);
  t.match(JSON.parse(lagJson.stdout), { nodeId: 'a', mode: 'read-write', peers: [] });
  const log = await cliAsync(['log', '--since', '0'], env);
  t.equal(log.code, 0, log.stderr);
  const lines = log.stdout.trimEnd().split('\n');
  t.equal(lines.length, 3);
  t.match(lines[0], /^ {5}1 {2}\d{4}-\d\d-\d\dT[\d:.]+Z {2}a#1 {2}admin {2}create Organisation org-[0-9a-z]{12} {2}name, kind$/);
  const json = await cliAsync(['log', '--since', '2', '--json'], env);
  t.match(JSON.parse(json.stdout.trim()), { seq: 3, origin: 'a', originSeq: 3, kind: 'create', type: 'Organisation', principal: 'admin', fields: ['name', 'kind'] });
  // Number() takes each of these ("" as 0: a script's unset $SEQ dumped the whole feed)
  for (const since of ['x', '', ' 5', '1e3', '0x10', '-1']) {
    const bad = await cliAsync(['log', '--since', since], env);
    t.equal(bad.code, 2, `--since "${since}" is a usage error`);
    t.equal(bad.stderr.trim(), 'meridian: --since must be a feed position: a whole number, 0 for the start');
  }
});

t.test('meridian status, lag and lag --watch with a peer cut off and back, for people and as JSON', async (t) => {
  const { a, proxy } = await proxiedPair(t);
  const env = { MERIDIAN_PASSWORD: PW, MERIDIAN_NODE: a.node.url };
  proxy.partition();
  t.ok(await until(() => a.node.replicator!.status()[0]?.state !== 'live', 3000));
  for (let i = 0; i < 3; i++) await a.node.store.create('Organisation', { name: `S${i}`, kind: 'vendor' });
  await new Promise((r) => setTimeout(r, 1100));

  const status = await cliAsync(['status'], env);
  t.equal(status.code, 0, status.stderr);
  const lines = status.stdout.trimEnd().split('\n');
  t.equal(lines[0], 'node      a (master)');
  t.match(lines[1], /^mode {6}read-write since \d{4}-\d\d-\d\dT[\d:.]+Z$/);
  t.match(status.stdout, /^objects {3}3 \(Organisation 3\)$/m, 'objects, by type');
  t.match(status.stdout, /^feed {6}seq 3, last change \d{4}-\d\d-\d\dT[\d:.]+Z$/m, 'feed position');
  t.match(status.stdout, /^conflicts 0 open$/m, 'conflicts');
  t.match(lines.at(-1), /^ {2}b: (backing-off|connecting) \(.+\), lag 0 entries \/ 0\.0 s, behind 3 entries \/ [1-9]\d*\.\d s, last contact \d{4}-\d\d-\d\dT[\d:.]+Z$/, `the peer, its state and why, both lags and last contact: ${lines.at(-1)}`);

  const json = JSON.parse((await cliAsync(['status', '--json'], env)).stdout) as Record<string, unknown> & { peers: Record<string, unknown>[] };
  t.same(Object.keys(json).sort(), ['cache', 'conflicts', 'feed', 'master', 'mode', 'modeReason', 'modeSince', 'nodeId', 'objects', 'objectsByType', 'peers', 'role', 'schema', 'startedAt', 'uptimeSeconds', 'version', 'versionVector'], 'the keys docs/operations.md documents, no more and no fewer');
  t.same(Object.keys(json.peers[0]!).sort(), ['acked', 'bytesIn', 'bytesOut', 'direction', 'lagEntries', 'lagSeconds', 'lastContact', 'node', 'peerBehind', 'peerBehindSeconds', 'reason', 'role', 'state', 'synced', 'url'], 'and for each peer');
  t.match(json, { nodeId: 'a', role: 'master', mode: 'read-write', modeReason: null, master: null, objects: 3, feed: { lastSeq: 3 }, conflicts: { open: 0 }, versionVector: { a: 3 } });
  t.match(json.peers[0], { node: 'b', direction: 'outbound', peerBehind: 3, lagEntries: 0, synced: false, reason: String });
  t.ok((json.peers[0]!['peerBehindSeconds'] as number) >= 1, 'b has lacked a change for a second or more');

  const lag = await cliAsync(['lag'], env);
  const [, header, row] = lag.stdout.trimEnd().split('\n');
  t.match(header, /^peer\s+state\s+lag \(entries\)\s+lag \(s\)\s+peer behind \(entries\)\s+peer behind \(s\)\s+last contact$/);
  t.match(row, /^b\s+(backing-off|connecting)\s+0\s+0\.0\s+3\s+[1-9]\d*\.\d\s+\d{4}-/, `a row for b: ${row}`);

  proxy.heal();
  t.ok(await until(() => a.node.replicator!.status()[0]?.state === 'live' && a.node.replicator!.status()[0]?.peerBehind === 0, 10_000), 'healed');
  t.match((await cliAsync(['lag'], env)).stdout, /^b\s+live\s+0\s+0\.0\s+0\s+0\.0\s+\d{4}-/m, 'back to zero after heal');
  t.match(JSON.parse((await cliAsync(['lag', '--json'], env)).stdout), { nodeId: 'a', mode: 'read-write', peers: [{ node: 'b', state: 'live', lagEntries: 0, lagSeconds: 0, peerBehind: 0, peerBehindSeconds: 0 }] });

  // --watch: redrawn in place on a terminal, one table after another when piped
  const tty = await cliOnTty(['lag', '--watch'], env, { interruptAfter: 4000 });
  const drawnAt = [...tty.out.matchAll(/a \(read-write\) at (\S+)/g)].map((m) => Date.parse(m[1]!));
  t.ok(drawnAt.length >= 2, `on a terminal it redraws (${drawnAt.length} tables in 4 s)`);
  const gaps = drawnAt.slice(1).map((at, i) => at - drawnAt[i]!);
  t.ok(gaps.every((g) => g >= 900 && g < 1900), `every second (${gaps.join(', ')} ms apart)`);
  t.match(tty.out, /\x1b\[3A\x1b\[J[^]*a \(read-write\) at /, 'each time moving up over the last table (3 lines) and clearing it first');
  const piped = await cliAsync(['lag', '--watch'], env, { interruptAfter: 4000 });
  t.ok(piped.stdout.split('a (read-write) at ').length - 1 >= 2, 'piped, it prints each table in turn');
  t.notMatch(piped.stdout, /\x1b\[/, 'with no terminal codes');
});

t.test('meridian log: the last 20 changes by default, and --follow prints new ones as they come', async (t) => {
  const a = await start(t, { nodeId: 'a' });
  for (let i = 0; i < 25; i++) await a.node.store.create('Organisation', { name: `F${i}`, kind: 'vendor' }, { principal: 'admin' });
  const env = { MERIDIAN_PASSWORD: PW, MERIDIAN_NODE: a.node.url };
  const last = (await cliAsync(['log'], env)).stdout.trimEnd().split('\n');
  t.equal(last.length, 20, 'twenty lines');
  t.match(last[0], /^ {5}6 {2}/, 'from seq 6');
  t.match(last[19], /^ {4}25 {2}/, 'to the last, seq 25');
  // (the change is made once the backlog is out, so only a follow that goes on reading prints it)
  let later: Promise<{ id: string }> | undefined;
  const made = (): void => void (later = a.node.store.create('Organisation', { name: 'Later', kind: 'customer' }, { principal: 'admin' }));
  const following = cliAsync(['log', '--follow', '--since', '24', '--json'], env, { whenPrinted: [/"seq":25,[^\n]*\n/, made], interruptOn: /"seq":26,[^\n]*\n/, interruptAfter: 15_000 });
  const followed = (await following).stdout.trimEnd().split('\n').map((l) => JSON.parse(l) as { seq: number; id: string; kind: string });
  t.same(followed.map((e) => e.seq), [25, 26], 'what was there after --since, then the change made while it ran');
  t.ok(later, 'made after the backlog was printed');
  t.match(followed[1], { id: (await later!).id, kind: 'create', type: 'Organisation', principal: 'admin', origin: 'a' });
});

t.test('a peer that comes back on a new connection before this side noticed its old one die is let in at once, not refused as a duplicate', async (t) => {
  const proxy = await FaultProxy.start();
  t.teardown(() => proxy.close());
  // b would notice the dead connection only after 30 s; a gives up on it after 800 ms and dials again
  const b = await start(t, { nodeId: 'b', linkTimeout: 30_000 });
  proxy.setTarget(Number(new URL(b.node.url).port));
  const a = await start(t, { nodeId: 'a', peers: [`ws://127.0.0.1:${proxy.port}/sync`], linkTimeout: 800 });
  t.ok(await until(() => a.node.replicator!.status()[0]?.state === 'live'), 'a and b are connected');
  proxy.freeze();
  const frozenAt = Date.now();
  const o = await a.node.store.create('Organisation', { name: 'After the freeze', kind: 'vendor' });
  t.ok(await until(async () => (await b.node.store.get(o.id)) !== undefined, 8000), `the write reached b over a's new connection in ${Date.now() - frozenAt} ms (the old one stays open on b for 30 s)`);
  t.ok(count(b.logs, 'older session with this peer closed: replaced by its newer one') >= 1, 'b closed its old connection as replaced by the newer one');
});

t.test('a dialer whose connection was reset on its side only gets back in within seconds, not after the backoff cap', async (t) => {
  // b hears from the old connection until it goes quiet; a's backoff cap is the default 30 s
  const { a, b, proxy } = await proxiedPair(t);
  proxy.resetClients();
  const resetAt = Date.now();
  const o = await a.node.store.create('Organisation', { name: 'After the reset', kind: 'vendor' });
  t.ok(await until(async () => (await b.node.store.get(o.id)) !== undefined, 10_000), `the write reached b over a's new connection in ${Date.now() - resetAt} ms`);
  t.ok(count(b.logs, 'second session dialed this way closed; the first is still heard from') + count(b.logs, 'older session with this peer closed: replaced by its newer one') >= 1, 'b took the new connection once the old one went quiet');
});

t.test('a slow link carrying a frame that takes longer than the link timeout is not declared dead mid-frame', async (t) => {
  const proxy = await FaultProxy.start();
  t.teardown(() => proxy.close());
  const b = await start(t, { nodeId: 'b' });
  const big = await largeRelease(b.node.store);
  // about 5 s for that frame at 400 KB/s; a's link timeout is 1 s, its heartbeat 200 ms
  proxy.throttle(400_000);
  proxy.setTarget(Number(new URL(b.node.url).port));
  const started = Date.now();
  const a = await start(t, { nodeId: 'a', peers: [`ws://127.0.0.1:${proxy.port}/sync`] });
  t.ok(await until(async () => (await a.node.store.get(big)) !== undefined, 20_000), `a cloned the large object over the slow link in ${Date.now() - started} ms`);
  t.equal(count(a.logs, 'no heartbeat from peer; closing the link'), 0, 'without declaring the link dead while the frame arrived');
});

t.test('over wss:// too, the bytes of a slow frame count as hearing from the peer', async (t) => {
  // the dialer's listener is on the TLS socket that ws reads from, as the plain tests have it on a TCP socket
  const certs = makeCerts(tempDir(t));
  const proxy = await FaultProxy.start();
  t.teardown(() => proxy.close());
  const b = await start(t, { nodeId: 'b', tlsCert: certs.cert, tlsKey: certs.key });
  t.match(b.node.url, /^https:/);
  const big = await largeRelease(b.node.store);
  proxy.throttle(400_000);
  proxy.setTarget(Number(new URL(b.node.url).port));
  const started = Date.now();
  const a = await start(t, { nodeId: 'a', tlsCa: certs.ca, peers: [`wss://127.0.0.1:${proxy.port}/sync`] });
  t.ok(await until(async () => (await a.node.store.get(big)) !== undefined, 20_000), `a cloned the large object over the slow TLS link in ${Date.now() - started} ms`);
  t.equal(count(a.logs, 'no heartbeat from peer; closing the link'), 0, 'without declaring the link dead while the frame arrived');
});

t.test('the accepting side hears a slow frame arriving too', async (t) => {
  // a dials b through a link slow towards b, and writes a large object: it reaches b in a frame of its own, on b's accepted side
  const { a, b } = await proxiedPair(t, 400_000);
  const started = Date.now();
  const big = await largeRelease(a.node.store);
  t.ok(await until(async () => (await b.node.store.get(big)) !== undefined, 20_000), `b got the large object over the slow link in ${Date.now() - started} ms`);
  t.equal(count(b.logs, 'no heartbeat from peer; closing the link'), 0, 'without declaring the link dead while the frame arrived');
});

t.test('a node whose data dir was put back from a copy under its own id is refused by its peers, and refuses them, instead of writing what no peer will take', async (t) => {
  const b = await start(t, { nodeId: 'b' });
  const dir = tempDir(t);
  const peers = [`${b.node.url.replace('http', 'ws')}/sync`];
  let a = await start(t, { nodeId: 'a', peers }, dir);
  const first = await a.node.store.create('Organisation', { name: 'Before the copy', kind: 'vendor' });
  t.ok(await until(async () => (await b.node.store.get(first.id)) !== undefined));
  await a.node.stop();
  const copy = `${dir}.copy`;
  cpSync(dir, copy, { recursive: true });
  t.teardown(() => rmSync(copy, { recursive: true, force: true }));
  a = await start(t, { nodeId: 'a', peers }, dir);
  const second = await a.node.store.create('Organisation', { name: 'After the copy', kind: 'vendor' });
  t.ok(await until(async () => (await b.node.store.get(second.id)) !== undefined), 'b holds a change of a that the copy lacks');
  await a.node.stop();
  rmSync(dir, { recursive: true });
  renameSync(copy, dir);
  a = await start(t, { nodeId: 'a', peers }, dir);
  const older = /data dir is older than (the changes it made|what it sent)/;
  t.ok(await until(() => a.node.replicator!.status()[0]?.state === 'refused'), 'a does not replicate with b');
  t.match(a.node.replicator!.status()[0]!.reason, older);
  const refused = (): LogLine[] => b.logs.filter((l) => l.msg === 'replication peer refused' && older.test(String(l['reason'])));
  t.ok(await until(() => refused().length > 0), 'and b logs why it refuses a');
  t.match(String(refused()[0]!['reason']), /^a holds its own changes only up to 1, and b holds them up to 2: a's data dir is older|^b holds changes of a up to 2, and a itself only up to 1: a's data dir is older|^b holds a position 2 in the feed of a, whose feed ends at 1: a's data dir is older/);
  t.equal(await b.node.store.get(second.id).then((o) => o?.fields['name']), 'After the copy', 'b keeps what a wrote after the copy');

  // An emptied dir under the old id is refused too: its feed would start again below b's position in the old one,
  // and its changes would be numbered as a's old ones. Here it writes more than a had made before it meets b: no
  // count shows the dir is new, its feed tag does.
  await a.node.stop();
  const emptied = tempDir(t);
  a = await start(t, { nodeId: 'a' }, emptied);
  const remade: string[] = [];
  for (let i = 0; i < 3; i++) remade.push((await a.node.store.create('Organisation', { name: `Remade ${i}`, kind: 'vendor' })).id);
  await a.node.stop();
  a = await start(t, { nodeId: 'a', peers }, emptied);
  const notTheOne = /^(peer closed the session: )?a's data dir is not the one this node replicated with \(its feed is [0-9a-f]{8}, was [0-9a-f]{8}\): .*start a on an empty --dir under a new --node-id/;
  t.ok(await until(() => a.node.replicator!.status()[0]?.state === 'refused'), 'a, emptied, under its old id is refused');
  t.match(a.node.replicator!.status()[0]!.reason, notTheOne);
  t.ok(await until(() => b.logs.some((l) => l.msg === 'replication peer refused' && notTheOne.test(String(l['reason'])))), 'b logs why');
  t.same((await a.node.store.list('Organisation')).items.map((o) => o.id).sort(), [...remade].sort(), 'a has taken nothing from b');
  for (const id of remade) t.equal(await b.node.store.get(id), undefined, "and b nothing from a's new dir");
  // the fix the refusal names: an empty dir under a new id clones, and what it writes reaches b
  await a.node.stop();
  const a2 = await start(t, { nodeId: 'a2', peers });
  t.ok(await until(async () => (await a2.node.store.get(second.id)) !== undefined), 'a2 clones all a wrote');
  const third = await a2.node.store.create('Organisation', { name: 'After the clone', kind: 'vendor' });
  t.ok(await until(async () => (await b.node.store.get(third.id)) !== undefined), 'and what it writes reaches b');
});

t.test('a relay that made no change of its own, emptied and started under its old id, is refused: its peers hold positions in its old feed', async (t) => {
  // c - a - b: a relays c's changes to b, and makes none
  const b = await start(t, { nodeId: 'b' });
  const aPort = await freePort();
  const toB = [`${b.node.url.replace('http', 'ws')}/sync`];
  let a = await start(t, { nodeId: 'a', httpPort: aPort, peers: toB });
  const c = await start(t, { nodeId: 'c', peers: [`ws://127.0.0.1:${aPort}/sync`] });
  t.ok(await until(() => a.node.replicator!.status()[0]?.state === 'live' && c.node.replicator!.status()[0]?.state === 'live'), 'the chain is live');
  for (let i = 0; i < 3; i++) await c.node.store.create('Organisation', { name: `From c ${i}`, kind: 'vendor' });
  t.ok(await until(async () => (await b.node.store.checkpoint('a')) >= 3), "b's position in a's feed passed c's changes");
  await a.node.stop();
  a = await start(t, { nodeId: 'a', httpPort: aPort, peers: toB });
  t.ok(await until(() => a.node.replicator!.status()[0]?.state === 'refused', 10_000), 'a, emptied under its old id, is refused by b');
  t.match(a.node.replicator!.status()[0]!.reason, /a's data dir is not the one this node replicated with/);
});

t.test('a node that never met a data dir made again under an old id refuses it too: its peers told it the old dir\'s feed tag', async (t) => {
  const b = await start(t, { nodeId: 'b' });
  const toB = [`${b.node.url.replace('http', 'ws')}/sync`];
  let a = await start(t, { nodeId: 'a', peers: toB });
  const old = await a.node.store.create('Organisation', { name: 'Old a', kind: 'vendor' });
  t.ok(await until(async () => (await b.node.store.get(old.id)) !== undefined), 'b has a change of the old a');
  await a.node.stop();
  // c joins later: it clones from b, and never meets the old a
  const cPort = await freePort();
  const c = await start(t, { nodeId: 'c', httpPort: cPort, peers: toB });
  t.ok(await until(async () => (await c.node.store.get(old.id)) !== undefined), 'c cloned it from b');
  t.match(c.node.store.knownFeeds()['a'], /^[0-9a-f]{8}$/, "and learned the old a's feed tag from b");
  // a on a new dir under its old id writes more than the old one made, then meets c alone
  const remadeDir = tempDir(t);
  a = await start(t, { nodeId: 'a' }, remadeDir);
  const made: string[] = [];
  for (let i = 0; i < 3; i++) made.push((await a.node.store.create('Organisation', { name: `Remade ${i}`, kind: 'vendor' })).id);
  await a.node.stop();
  a = await start(t, { nodeId: 'a', peers: [`ws://127.0.0.1:${cPort}/sync`] }, remadeDir);
  t.ok(await until(() => a.node.replicator!.status()[0]?.state === 'refused'), 'c refuses the remade a');
  t.match(a.node.replicator!.status()[0]!.reason, /a's data dir is not the one this node replicated with \(its feed is [0-9a-f]{8}, was [0-9a-f]{8}\)/);
  for (const id of made) t.equal(await c.node.store.get(id), undefined, 'and took none of its changes');
});

t.test("a node lost in its first clone comes back on a new dir under its old id once one node forgets the old dir's feed: the word reaches that node's peers", async (t) => {
  const env = { MERIDIAN_PASSWORD: PW };
  const b = await start(t, { nodeId: 'b' });
  const toB = [`${b.node.url.replace('http', 'ws')}/sync`];
  let a = await start(t, { nodeId: 'a', peers: toB });
  const oldTag = a.node.store.feedTag;
  t.ok(await until(() => b.node.store.knownFeeds()['a'] === oldTag), "b took a's tag as a cloned it");
  const busy = await cliAsync(['forget-feed', 'a', '--node', b.node.url], env);
  t.same([busy.code, busy.stderr], [1, "meridian: a is connected to this node now, on the data dir whose feed this would forget; forget a dir's feed only once the dir is gone\n"], 'not while the dir runs');
  await a.node.stop();
  // as if the old a had relayed changes to b: b holds a position in its feed, past the new dir's first entries
  await b.node.store.applyRemote([], { checkpoint: { peer: 'a', seq: 5 } });
  // c joins later, and learns the old tag from b
  const c = await start(t, { nodeId: 'c', peers: toB });
  t.ok(await until(() => c.node.store.knownFeeds()['a'] === oldTag), 'c learned the old tag from b');

  // a's dir is lost: a new one under the old id is refused
  const remade = tempDir(t);
  a = await start(t, { nodeId: 'a', peers: toB }, remade);
  t.ok(await until(() => a.node.replicator!.status()[0]?.state === 'refused'), 'the new dir is refused');
  t.match(a.node.replicator!.status()[0]!.reason, /or, if no node holds a change its old dir made, run "meridian forget-feed a" on a node that refuses it \(its peers are told\)$/);
  await a.node.stop();
  const wordAt = Date.now();
  const forgot = await cliAsync(['forget-feed', 'a', '--node', b.node.url], env);
  t.same([forgot.code, forgot.stdout], [0, `forgot a's feed ${oldTag}\n`], forgot.stderr);
  t.ok(await until(() => c.node.store.forgottenFeeds()['a']?.[0] === oldTag), 'c was told, as its session with b opened again');
  t.equal(c.node.store.knownFeeds()['a'], undefined, 'and no longer knows the old tag');

  a = await start(t, { nodeId: 'a', peers: toB }, remade);
  t.ok(await until(() => a.node.replicator!.status()[0]?.state === 'live'), 'the new dir replicates');
  t.equal(b.node.store.knownFeeds()['a'], a.node.store.feedTag, 'b took its tag');
  const made = await a.node.store.create('Organisation', { name: 'Made by the new a', kind: 'vendor' });
  t.ok(await until(async () => (await c.node.store.get(made.id)) !== undefined), 'what it writes reaches c through b');
  const refusals = b.logs.filter((l) => l.msg === 'replication peer refused');
  t.ok(refusals.length > 0 && refusals.every((l) => /a's data dir is not the one this node replicated with/.test(String(l['reason']))), `and b refused nothing but the new dir (${refusals.length})`);
  t.ok(refusals.every((l) => Number(l['time']) < wordAt), 'and that only before the word');
  await a.node.stop();
  const holding = await cliAsync(['forget-feed', 'a', '--node', b.node.url], env);
  t.same([holding.code, holding.stderr], [1, `meridian: this node holds 1 change made by a in its feed ${a.node.store.feedTag}, which a new dir under that id would pass its own off as; start a under a new --node-id instead\n`], 'nor is a feed whose changes are held');
});

t.test('meridian verify says identical, or names the ranges that differ', async (t) => {
  const a = await start(t, { nodeId: 'a' });
  const b = await start(t, { nodeId: 'b' });
  const env = { MERIDIAN_PASSWORD: PW };
  const same = await cliAsync(['verify', '--nodes', `${a.node.url},${b.node.url}`], env);
  t.equal(same.code, 0, same.stderr);
  t.match(same.stdout, new RegExp(`^a \\(${a.node.url}\\): 0 objects\nb \\(${b.node.url}\\): 0 objects\nidentical: every id range has the same digest on every node\n$`));
  const o = await a.node.store.create('Organisation', { name: 'Only on a', kind: 'vendor' });
  const differ = await cliAsync(['verify', '--nodes', `${a.node.url},${b.node.url}`], env);
  t.equal(differ.code, 1, 'exit 1 when they differ');
  t.match(differ.stdout, /^a \(.*\): 1 objects$/m);
  t.match(differ.stdout, /^NOT CONVERGED in 1 of 16 id ranges \(ranges by the first hex digit of sha1\(id\)\):\nid range [0-9a-f]: a 1, b 0$/m, 'the range, with each node\'s count there');
  t.match(differ.stdout, /^replication has not finished: the nodes do not hold the same changes yet\nb lacks 1 change from a \(it holds a up to 0, another node up to 1\)\nverify again once writes have stopped and every peer is live, or wait for it with --wait SECONDS$/m, 'not called divergence: b lacks a change of a');
  const json = JSON.parse((await cliAsync(['verify', '--nodes', `${a.node.url},${b.node.url}`, '--json'], env)).stdout);
  const bucket = (await import('node:crypto')).createHash('sha1').update(o.id).digest('hex')[0];
  t.same(
    json,
    { identical: false, buckets: 16, nodes: [{ url: a.node.url, nodeId: 'a', objects: 1 }, { url: b.node.url, nodeId: 'b', objects: 0 }], differing: [{ bucket, counts: { a: 1, b: 0 } }], lacking: [{ nodeId: 'b', origin: 'a', missing: 1, holds: 0, newest: 1 }], rounds: 1 },
    'and as JSON',
  );
  // nothing links them, so waiting does not help: it digests again until its time is up, then says the same
  const waited = await cliAsync(['verify', '--nodes', `${a.node.url},${b.node.url}`, '--wait', '2.5', '--json'], env);
  t.equal(waited.code, 1);
  const w = JSON.parse(waited.stdout);
  t.ok(w.rounds >= 2, `--wait digested again (${w.rounds} rounds)`);
  t.same([w.lacking, typeof w.waited], [json.lacking, 'number']);
  const text = await cliAsync(['verify', '--nodes', `${a.node.url},${b.node.url}`, '--wait', '0.5'], env);
  t.match(text.stdout, /\nstill so after waiting \d+ s \(\d+ rounds?\)\n$/, 'and says so, instead of suggesting --wait');
  const bad = await cliAsync(['verify', '--nodes', `${a.node.url},${b.node.url}`, '--wait', 'soon'], env);
  t.same([bad.code, bad.stderr], [2, 'meridian: --wait takes a number of seconds, not "soon"\n']);
});

t.test('meridian verify without --nodes compares --node with the peers it dials', async (t) => {
  const b = await start(t, { nodeId: 'b' });
  const a = await start(t, { nodeId: 'a', peers: [`${b.node.url.replace('http', 'ws')}/sync`] });
  const env = { MERIDIAN_PASSWORD: PW };
  await a.node.store.create('Organisation', { name: 'Made on a', kind: 'vendor' });
  // (b may not have the change yet: --wait digests again until both hold the same changes)
  const r = await cliAsync(['verify', '--node', a.node.url, '--wait', '10'], env);
  t.equal(r.code, 0, r.stderr);
  t.match(r.stdout, new RegExp(`^a \\(${a.node.url}\\): 1 objects\nb \\(${b.node.url}\\): 1 objects\nidentical`), 'a, then b at the HTTP address of the sync URL a dials');
  const alone = await cliAsync(['verify', '--node', b.node.url], env);
  t.equal(alone.code, 1, 'a node that dials nobody has nothing to be compared with');
  t.equal(alone.stderr, `meridian: ${b.node.url} dials no peers to compare it with; name the nodes with --nodes URL,URL\n`);
});

t.test('progress shows on a terminal and nowhere else: verify, export and backup', async (t) => {
  const a = await start(t, { nodeId: 'a', sample: true, sampleSize: 200 });
  const env = { MERIDIAN_PASSWORD: PW };
  // one node by two of its addresses is refused as the same node
  const same = await cliAsync(['verify', '--nodes', `${a.node.url},${a.node.url.replace('127.0.0.1', '[::ffff:127.0.0.1]')}`], env);
  t.same([same.code, same.stderr], [2, `meridian: ${a.node.url} and ${a.node.url.replace('127.0.0.1', '[::ffff:127.0.0.1]')} are the same node (a); name each node once\n`]);
  // a second node, cloned from the first: the same digests
  const b = await start(t, { nodeId: 'b', peers: [`${a.node.url.replace('http', 'ws')}/sync`] });
  t.ok(await until(() => b.node.replicator!.status()[0]?.state === 'live' && b.node.store.objectCounts()['Person'] === a.node.store.objectCounts()['Person']), 'b has cloned a');
  const verifyArgs = ['verify', '--nodes', `${a.node.url},${b.node.url}`, '--wait', '10'];
  const piped = await cliAsync(verifyArgs, env);
  t.equal(piped.code, 0, piped.stderr);
  t.equal(piped.stderr, '', 'piped: no progress');
  const onTty = (args: string[]): ReturnType<typeof cliOnTty> => cliOnTty(args, env);
  const verify = await onTty(verifyArgs);
  t.equal(verify.code, 0);
  t.match(verify.out, /verifying: \[\.{30}\] 0% 0\/2 nodes digested/, 'on a terminal: a progress line from the start');
  t.match(verify.out, /verifying: \[#{30}\] 100% 2\/2 nodes digested/, 'and one for each node that answers, to the last');
  t.match(verify.out, /\r\x1b\[2K/, 'drawn in place and cleared');
  const json = await cliAsync([...verifyArgs, '--json'], env);
  t.equal(json.stderr, '', '--json: no progress');

  const dir = tempDir(t);
  const exported = await onTty(['export', '--node', a.node.url, '--out', `${dir}/all.xml`]);
  t.equal(exported.code, 0);
  t.match(exported.out, /exporting: \d+ objects, [\d.]+ (B|KiB|MiB)/, 'export: a progress line on a terminal');
  const exportedCount = /\r\x1b\[2Kexported (\d+) objects/.exec(exported.out);
  t.ok(exportedCount, 'the progress line is cleared before the result is printed');
  t.equal(Number(exportedCount?.[1]), (readFileSync(`${dir}/all.xml`, 'utf8').match(/<object /g) ?? []).length, 'and the count is of the objects written');
  const pipedExport = await cliAsync(['export', '--node', a.node.url, '--out', `${dir}/again.xml`], env);
  t.equal(pipedExport.stderr, '', 'export piped: no progress');
  const backup = await onTty(['backup', '--node', a.node.url, '--out', `${dir}/a.mbak`]);
  t.equal(backup.code, 0);
  t.match(backup.out, /backing up: \[[#.]{30}\] \d+% \d+ records, [\d.]+ (B|KiB|MiB)/, 'backup: a progress bar on a terminal');
  t.match(backup.out, /\r\x1b\[2Kbacked up /, 'cleared when done, before the result is printed');
});

t.test('a peer that dialed us and went away is shown behind by what it lacks, on the side whose own dial lost', async (t) => {
  const [pa, pb] = [await freePort(), await freePort()];
  const a = await start(t, { nodeId: 'a', httpPort: pa, peers: [`ws://127.0.0.1:${pb}/sync`] });
  const b = await start(t, { nodeId: 'b', httpPort: pb, peers: [`ws://127.0.0.1:${pa}/sync`] });
  // of the two dials, a's carries the session (the smaller id's): b's own dialer was closed as a duplicate
  const bSeesA = (): PeerStatus | undefined => b.node.replicator!.status().find((p) => p.node === 'a');
  t.ok(await until(() => bSeesA()?.state === 'live', 10_000));
  for (let i = 0; i < 10; i++) await b.node.store.create('Organisation', { name: `D${i}`, kind: 'vendor' });
  t.ok(await until(() => bSeesA()?.peerBehind === 0 && a.node.store.covers(b.node.store.versionVector()), 5000), 'a holds all ten');
  // time enough that counting from b's start, or from the changes a holds, would show
  await sleep(2000);
  await a.node.stop();
  t.ok(await until(() => bSeesA()?.state !== 'live', 5000), 'b sees a gone');
  for (let i = 0; i < 3; i++) await b.node.store.create('Organisation', { name: `E${i}`, kind: 'vendor' });
  const p = bSeesA()!;
  t.equal(p.peerBehind, 3, 'a lacks the three made since, not all thirteen');
  t.ok(p.peerBehindSeconds < 1.5, `for as long as they exist (${p.peerBehindSeconds} s), not since b started nor since the ten`);
});

t.test('meridian peers and conflicts, for people and as JSON', async (t) => {
  const [pa, pb] = [await freePort(), await freePort()];
  const a = await start(t, { nodeId: 'a', httpPort: pa, peers: [`ws://127.0.0.1:${pb}/sync`] });
  await start(t, { nodeId: 'b', httpPort: pb, peers: [`ws://127.0.0.1:${pa}/sync`] });
  t.ok(await until(() => a.node.replicator!.status().some((p) => p.node === 'b' && p.state === 'live'), 10_000));
  const env = { MERIDIAN_PASSWORD: PW, MERIDIAN_NODE: a.node.url };
  const peers = await cliAsync(['peers'], env);
  t.equal(peers.code, 0, peers.stderr);
  const [header, row, more] = peers.stdout.trimEnd().split('\n');
  t.match(header, /^peer\s+url\s+state\s+lag\s+behind\s+last contact\s+bytes$/);
  t.equal(more, undefined, 'one row: the two dials are one session');
  t.match(row, new RegExp(`^b\\s+ws://127\\.0\\.0\\.1:${pb}/sync\\s+live\\s+0 entries / 0\\.0 s\\s+0 entries / 0\\.0 s\\s+\\d{4}-\\d\\d-\\d\\dT\\S+Z\\s+\\d+ in / \\d+ out$`));
  const json = await cliAsync(['peers', '--json'], env);
  t.match(JSON.parse(json.stdout), [{ node: 'b', url: `ws://127.0.0.1:${pb}/sync`, role: 'master', direction: 'outbound', state: 'live', lagEntries: 0, synced: true }]);
  const none = await cliAsync(['conflicts'], env);
  t.equal(none.stdout.trim(), 'no open conflicts');
  t.same(JSON.parse((await cliAsync(['conflicts', '--json'], env)).stdout), []);
});

t.test('status, peers and lag print a node older than this CLI, which leaves out open conflicts and how far behind its peers are', async (t) => {
  // what a node before peerBehind and conflicts answers on /status
  const older = {
    nodeId: 'old', role: 'master', mode: 'read-write', version: '0.1.0', uptimeSeconds: 5, objects: 2, objectsByType: {}, feed: { lastSeq: 4 }, versionVector: { old: 4 },
    peers: [{ node: 'b', url: 'ws://b/sync', role: 'master', direction: 'outbound', state: 'live', reason: null, lastContact: new Date().toISOString(), bytesIn: 1, bytesOut: 1, lagEntries: 3, lagSeconds: 1.5 }],
  };
  const server = createServer((req, res) => {
    res.writeHead(req.url === '/status' ? 200 : 404, { 'content-type': 'application/json' });
    res.end(JSON.stringify(req.url === '/status' ? older : { error: 'not found' }));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => server.close());
  const env = { MERIDIAN_PASSWORD: PW, MERIDIAN_NODE: `http://127.0.0.1:${(server.address() as AddressInfo).port}` };
  const status = await cliAsync(['status'], env);
  t.equal(status.code, 0, status.stderr);
  t.match(status.stdout, /conflicts 0 open/);
  t.match(status.stdout, /b: live, lag 3 entries \/ 1\.5 s, behind 0 entries \/ 0\.0 s/);
  const peers = await cliAsync(['peers'], env);
  t.equal(peers.code, 0, peers.stderr);
  t.match(peers.stdout, /3 entries \/ 1\.5 s\s+0 entries \/ 0\.0 s/);
  const lag = await cliAsync(['lag'], env);
  t.equal(lag.code, 0, lag.stderr);
  t.match(lag.stdout, /\nb\s+live\s+3\s+1\.5\s+0\s+0\.0\s/);
  t.match(JSON.parse((await cliAsync(['lag', '--json'], env)).stdout), { peers: [{ node: 'b', lagEntries: 3, lagSeconds: 1.5, peerBehind: 0, peerBehindSeconds: 0 }] });
});
