/**
 * Operating a cluster: /metrics scraped and parsed while a peer is cut off
 * and after it heals, /readyz while a node catches up, each replication
 * state change logged once, and the CLI's lag and log commands.
 */
import { readFileSync } from 'node:fs';
import { spawn } from 'node:child_process';
import { Writable } from 'node:stream';
import t, { type Test } from 'tap';
import { pino } from 'pino';
import { MeridianNode, resolveConfig, type ConfigInput } from '@meridian/node';
import { DUPLICATE_SESSION, type PeerStatus } from '@meridian/sync';
import { cliAsync } from './helpers/node-process.js';
import { FaultProxy } from './helpers/fault-proxy.js';
import { freePort } from './helpers/free-port.js';
import { tempDir } from './helpers/tmp.js';
import { until } from './helpers/wait.js';

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
  const sink = new Writable({
    write(chunk: Buffer, _e, done) {
      for (const line of chunk.toString().split('\n')) if (line) logs.push(JSON.parse(line) as LogLine);
      done();
    },
  });
  const node = await MeridianNode.start(resolveConfig({ flags: { dir, httpPort: 0, adminPassword: PW, clusterSecret: SECRET, heartbeat: 200, linkTimeout: 1000, ...flags } }), pino({ level: 'info' }, sink));
  t.teardown(() => node.stop());
  return { node, logs };
}

/** Masters a and b, a dialing b through a fault proxy the test can cut; resolves once they are connected. */
async function proxiedPair(t: Test): Promise<{ a: Awaited<ReturnType<typeof start>>; b: Awaited<ReturnType<typeof start>>; proxy: FaultProxy }> {
  const proxy = await FaultProxy.start();
  t.teardown(() => proxy.close());
  const b = await start(t, { nodeId: 'b' });
  proxy.setTarget(Number(new URL(b.node.url).port));
  const a = await start(t, { nodeId: 'a', peers: [`ws://127.0.0.1:${proxy.port}/sync`] });
  t.ok(await until(() => a.node.replicator!.status()[0]?.state === 'live'), 'a and b are connected');
  return { a, b, proxy };
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

t.test('/metrics: writes, feed, sessions, per-peer lag rising while cut off and back to zero after heal, request counts', async (t) => {
  const { a, b, proxy } = await proxiedPair(t);
  for (let i = 0; i < 5; i++) await a.node.store.create('Organisation', { name: `M${i}`, kind: 'vendor' });
  const m1 = await scrape(a.node);
  t.equal(m1.get('meridian_writes_total{kind="create"}'), 5, 'writes are counted by kind');
  t.equal(m1.get('meridian_feed_position'), 5);
  t.equal(m1.get('meridian_sessions'), 1);
  t.equal(m1.get('meridian_peer_up{peer="b"}'), 1);
  t.equal(m1.get('meridian_read_only'), 0);
  t.equal(m1.get('meridian_objects{type="Organisation"}'), 5);
  t.ok(await until(async () => (await scrape(b.node)).get('meridian_applied_total{origin="a"}') === 5), 'b counts what it applied from a');

  proxy.partition();
  t.ok(await until(() => a.node.replicator!.status()[0]?.state !== 'live', 3000), 'a sees b gone');
  for (let i = 0; i < 20; i++) await a.node.store.create('Organisation', { name: `P${i}`, kind: 'vendor' });
  const cut = await scrape(a.node);
  t.equal(cut.get('meridian_peer_behind_entries{peer="b"}'), 20, 'b is 20 changes behind a while cut off');
  t.equal(cut.get('meridian_peer_up{peer="b"}'), 0);
  t.equal(cut.get('meridian_sessions'), 0);
  proxy.heal();
  t.ok(await until(async () => (await scrape(a.node)).get('meridian_peer_behind_entries{peer="b"}') === 0, 10_000), 'and back to 0 after heal');
  t.ok(await until(async () => (await scrape(b.node)).get('meridian_peer_lag_entries{peer="a"}') === 0), "b's lag on a's changes is 0");
  t.equal((await scrape(b.node)).get('meridian_peer_behind_entries{peer="a"}'), 0, "a holds all of b's feed: b's feed is a's changes, which a need not be sent back");

  await fetch(`${a.node.url}/api/objects?type=Organisation&limit=1`, { headers: { authorization: AUTH } });
  await fetch(`${a.node.url}/objects/Organisation?limit=1`, { headers: { authorization: AUTH } });
  await fetch(`${a.node.url}/objects/Organisation?limit=1`);
  const m2 = await scrape(a.node);
  t.equal(m2.get('meridian_http_requests_total{surface="admin",method="GET",status="200"}'), 1, 'admin API requests by status');
  t.equal(m2.get('meridian_http_requests_total{surface="xml",method="GET",status="200"}'), 1, 'XML requests by status');
  t.equal(m2.get('meridian_http_requests_total{surface="xml",method="GET",status="401"}'), 1);
  t.ok((m2.get('meridian_http_request_duration_seconds_count{surface="xml"}') ?? 0) >= 2, 'and their latency');
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
    lagEntries: 0, lagSeconds: 0, lastContact: new Date().toISOString(), bytesIn: 10, bytesOut: 10, acked: 0, peerBehind: 0, synced: false,
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

t.test('each replication state change is logged once, not per entry', async (t) => {
  const { a, b, proxy } = await proxiedPair(t);
  for (let i = 0; i < 200; i++) await a.node.store.create('Organisation', { name: `L${i}`, kind: 'vendor' });
  proxy.partition();
  t.ok(await until(() => a.logs.some((l) => l.msg === 'replication link down; backing off'), 3000));
  proxy.heal();
  t.ok(await until(() => a.logs.filter((l) => l.msg === 'replication session open').length === 2, 10_000), 'reconnected');
  const count = (logs: LogLine[], msg: string): number => logs.filter((l) => l.msg === msg).length;
  t.equal(count(a.logs, 'replication session open'), 2, 'open: once per session');
  t.ok(await until(() => count(a.logs, 'replication caught up') === 2 && count(b.logs, 'replication caught up') === 2), 'caught up: once per session, on both sides');
  t.equal(count(a.logs, 'replication link down; backing off'), 1, 'down: once');
  t.equal(count(b.logs, 'replication link closed'), 1, 'the other side logs the close once');
  t.ok(a.logs.length + b.logs.length < 40, `a handful of lines for 200 changes and a partition (${a.logs.length + b.logs.length})`);
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
  const bad = await cliAsync(['log', '--since', 'x'], env);
  t.equal(bad.code, 2);
  t.equal(bad.stderr.trim(), 'meridian: --since must be a feed position: a whole number, 0 for the start');
});

t.test('progress shows on a terminal and nowhere else: verify, export and backup', async (t) => {
  const a = await start(t, { nodeId: 'a', sample: true, sampleSize: 200 });
  const env = { MERIDIAN_PASSWORD: PW };
  const verifyArgs = ['verify', '--nodes', `${a.node.url},${a.node.url}`];
  const piped = await cliAsync(verifyArgs, env);
  t.equal(piped.code, 0, piped.stderr);
  t.equal(piped.stderr, '', 'piped: no progress');
  // script(1) gives the CLI a terminal
  const bin = new URL('../bin/meridian', import.meta.url).pathname;
  const onTty = (args: string[]): Promise<{ code: number | null; out: string }> =>
    new Promise((resolve) => {
      const p = spawn('script', ['-qec', `env -u NODE_OPTIONS MERIDIAN_PASSWORD=${PW} ${process.execPath} ${bin} ${args.join(' ')}`, '/dev/null']);
      let out = '';
      p.stdout.on('data', (d: Buffer) => (out += d.toString()));
      p.on('close', (code) => resolve({ code, out }));
    });
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

t.test('meridian peers and conflicts, for people and as JSON', async (t) => {
  const [pa, pb] = [await freePort(), await freePort()];
  const a = await start(t, { nodeId: 'a', httpPort: pa, peers: [`ws://127.0.0.1:${pb}/sync`] });
  await start(t, { nodeId: 'b', httpPort: pb, peers: [`ws://127.0.0.1:${pa}/sync`] });
  t.ok(await until(() => a.node.replicator!.status().some((p) => p.node === 'b' && p.state === 'live'), 10_000));
  const env = { MERIDIAN_PASSWORD: PW, MERIDIAN_NODE: a.node.url };
  const peers = await cliAsync(['peers'], env);
  t.equal(peers.code, 0, peers.stderr);
  const [header, row, more] = peers.stdout.trimEnd().split('\n');
  t.match(header, /^peer\s+url\s+state\s+lag\s+last contact\s+bytes$/);
  t.equal(more, undefined, 'one row: the two dials are one session');
  t.match(row, new RegExp(`^b\\s+ws://127\\.0\\.0\\.1:${pb}/sync\\s+live\\s+0 entries / 0\\.0 s\\s+\\d{4}-\\d\\d-\\d\\dT\\S+Z\\s+\\d+ in / \\d+ out$`));
  const json = await cliAsync(['peers', '--json'], env);
  t.match(JSON.parse(json.stdout), [{ node: 'b', url: `ws://127.0.0.1:${pb}/sync`, role: 'master', direction: 'outbound', state: 'live', lagEntries: 0, synced: true }]);
  const none = await cliAsync(['conflicts'], env);
  t.equal(none.stdout.trim(), 'no open conflicts');
  t.same(JSON.parse((await cliAsync(['conflicts', '--json'], env)).stdout), []);
});
