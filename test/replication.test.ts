import t, { type Test } from 'tap';
import { cli, cliAsync, logLines, startNode, type RunningNode } from './helpers/node-process.js';
import { FaultProxy } from './helpers/fault-proxy.js';
import { tempDir } from './helpers/tmp.js';
import { sleep, until } from './helpers/wait.js';

const PW = 'test-admin-pw';
const SECRET = 'replication-test-secret';
const AUTH = `Basic ${Buffer.from(`admin:${PW}`).toString('base64')}`;

interface Writer {
  /** object id -> the last acknowledged value, and values tried after it */
  objects: Map<string, { acked: string | undefined; after: string[] }>;
  failures: number;
  writes: number;
}

/** Writes through one node's admin API until stopped; records what was acknowledged. */
function writeLoop(name: string, url: () => string, stop: { now: boolean }): { done: Promise<void>; w: Writer } {
  const w: Writer = { objects: new Map(), failures: 0, writes: 0 };
  const call = async (method: string, path: string, body: unknown): Promise<{ id: string } | undefined> => {
    try {
      const res = await fetch(`${url()}${path}`, {
        method,
        headers: { authorization: AUTH, 'content-type': 'application/json' },
        body: JSON.stringify(body),
        signal: AbortSignal.timeout(3000),
      });
      if (!res.ok) return undefined;
      return (await res.json()) as { id: string };
    } catch {
      return undefined;
    }
  };
  const done = (async () => {
    for (let i = 0; !stop.now; i++) {
      const ids = [...w.objects.keys()];
      const value = `${name}-${i}`;
      if (ids.length < 5 || i % 4 === 0) {
        const r = await call('POST', '/api/objects', { type: 'Organisation', fields: { name: value, kind: 'customer' } });
        if (r) w.objects.set(r.id, { acked: value, after: [] });
        else w.failures++;
      } else {
        const id = ids[i % ids.length]!;
        const o = w.objects.get(id)!;
        o.after.push(value);
        const r = await call('PATCH', `/api/objects/${id}`, { fields: { name: value } });
        if (r) o.after = [];
        if (r) o.acked = value;
        else w.failures++;
      }
      w.writes++;
      await sleep(5);
    }
  })();
  return { done, w };
}

t.test('three masters converge through partitions and a SIGKILL, losing no acknowledged write', async (t) => {
  const names = ['a', 'b', 'c'];
  const dirs = names.map(() => tempDir(t));
  // a ring of proxies: a dials b, b dials c, c dials a
  const proxies = await Promise.all(names.map(() => FaultProxy.start()));
  t.teardown(() => Promise.all(proxies.map((p) => p.close())));
  const toB = proxies[0]!;
  const toC = proxies[1]!;
  const toA = proxies[2]!;
  const dialing = [toB, toC, toA];
  const targetOf = [toA, toB, toC];
  const nodes: RunningNode[] = [];
  const start = async (i: number): Promise<RunningNode> => {
    const n = await startNode(t, [
      '--dir', dirs[i]!, '--node-id', names[i]!, '--admin-password', PW,
      '--cluster-secret', SECRET, '--peers', `ws://127.0.0.1:${dialing[i]!.port}/sync`,
      '--heartbeat', '300', '--link-timeout', '1500',
    ]);
    targetOf[i]!.setTarget(Number(new URL(n.url).port));
    return n;
  };
  for (let i = 0; i < 3; i++) nodes[i] = await start(i);

  const stop = { now: false };
  const loops = names.map((name, i) => writeLoop(name, () => nodes[i]!.url, stop));
  await sleep(1500);

  // cut a off from both others while everyone keeps writing, then heal
  // what a and c log from here on: the partition must show there
  const [logA, logC] = [nodes[0]!.output().length, nodes[2]!.output().length];
  toA.partition();
  toB.partition();
  await sleep(2000);
  toA.heal();
  toB.heal();
  await sleep(1000);

  // SIGKILL b mid-traffic and bring it back (on a new port, behind the same proxy)
  await nodes[1]!.kill9();
  await sleep(800);
  nodes[1] = await start(1);
  await sleep(1500);
  stop.now = true;
  await Promise.all(loops.map((l) => l.done));

  const urls = nodes.map((n) => n.url).join(',');
  // cliAsync: a blocking child would stall the in-process proxies' heartbeats
  let verify = await cliAsync(['verify', '--nodes', urls, '--json'], { MERIDIAN_PASSWORD: PW });
  for (let i = 0; i < 60 && verify.code !== 0; i++) {
    await sleep(500);
    verify = await cliAsync(['verify', '--nodes', urls, '--json'], { MERIDIAN_PASSWORD: PW });
  }
  t.equal(verify.code, 0, `meridian verify passes: ${verify.stdout}${verify.stderr}`);

  let acked = 0;
  let missing = 0;
  for (const { w } of loops) {
    t.ok(w.writes > 50, `writer made ${w.writes} writes (${w.failures} failed while its node was down or cut)`);
    for (const [id, o] of w.objects) {
      for (const n of nodes) {
        const res = await fetch(`${n.url}/api/objects/${id}`, { headers: { authorization: AUTH } });
        const body = res.ok ? ((await res.json()) as { fields: { name: string } }) : undefined;
        acked++;
        // the final value is the last acknowledged one, or a later write whose ack was lost
        if (!body || (body.fields.name !== o.acked && !o.after.includes(body.fields.name))) missing++;
      }
    }
  }
  t.equal(missing, 0, `every acknowledged write is present on every node (${acked} checks)`);

  // (polled: a session that a loaded machine's stall cut since is dialed again, and is live once caught up)
  let states: string[] = [];
  const allLive = async (): Promise<boolean> => {
    const r = await cliAsync(['status', '--json', '--node', nodes[0]!.url], { MERIDIAN_PASSWORD: PW });
    states = (JSON.parse(r.stdout) as { peers: { state: string }[] }).peers.map((p) => p.state);
    return states.length >= 1 && states.every((s) => s === 'live');
  };
  t.ok(await until(allLive, 20_000), `peers live after heal (${states.join(', ')})`);
  t.match(nodes[0]!.output().slice(logA), /"url":"ws:\/\/127\.0\.0\.1:\d+\/sync","peer":"b".*"msg":"replication link down; backing off"/, 'a logged losing b in the partition');
  t.match(nodes[2]!.output().slice(logC), /"url":"ws:\/\/127\.0\.0\.1:\d+\/sync","peer":"a".*"msg":"replication link down; backing off"/, 'c logged losing a in the partition');
});

t.test('a wrong cluster secret is refused, logged with the reason, and receives no data', async (t) => {
  const a = await startNode(t, ['--dir', tempDir(t), '--node-id', 'a', '--admin-password', PW, '--cluster-secret', SECRET]);
  const put = cli(['put', 'Organisation', 'name=Secret Ltd', 'kind=customer', '--node', a.url], { MERIDIAN_PASSWORD: PW });
  t.equal(put.code, 0, `a holds an object the intruder could be sent (${put.stderr})`);
  const intruder = await startNode(t, [
    '--dir', tempDir(t), '--node-id', 'x', '--admin-password', PW,
    '--cluster-secret', 'not-the-right-secret', '--peers', `${a.url.replace('http', 'ws')}/sync`,
  ]);
  // (between retries the dialer shows "connecting": poll rather than look once)
  let peers: { state: string; reason: string | null }[] = [];
  await until(() => {
    peers = JSON.parse(cli(['peers', '--json', '--node', intruder.url], { MERIDIAN_PASSWORD: PW }).stdout);
    return peers[0]?.state === 'refused';
  }, 10_000);
  t.match(peers[0], { state: 'refused', reason: /authentication failed/ });
  // (the log may still sit in a's pipe while this process was blocked in the CLI)
  const refusal = /"reason":"authentication failed: the peer does not hold this cluster's secret","msg":"replication peer refused"/;
  await until(() => refusal.test(a.output()), 5000);
  t.match(a.output(), refusal);
  // after more refused tries than one (retried after 250-500 ms, then 500-1000 ms; the refusal is logged once)
  await sleep(1500);
  const status = JSON.parse(cli(['status', '--json', '--node', intruder.url], { MERIDIAN_PASSWORD: PW }).stdout);
  t.equal(status.objects, 0, 'nothing reached the intruder');
});

/** Masters a and b, b dialing a through a fault proxy the test can partition. */
async function twoMastersThroughLink(t: Test): Promise<{ link: FaultProxy; a: RunningNode; b: RunningNode }> {
  const link = await FaultProxy.start();
  t.teardown(() => link.close());
  const common = ['--admin-password', PW, '--cluster-secret', SECRET, '--heartbeat', '300', '--link-timeout', '1500'];
  const a = await startNode(t, ['--dir', tempDir(t), '--node-id', 'a', ...common]);
  link.setTarget(Number(new URL(a.url).port));
  const b = await startNode(t, ['--dir', tempDir(t), '--node-id', 'b', ...common, '--peers', `ws://127.0.0.1:${link.port}/sync`]);
  return { link, a, b };
}

t.test('concurrent writes to one field on two masters: same value and same conflict everywhere; a write settles it', async (t) => {
  const { link, a, b } = await twoMastersThroughLink(t);
  const env = { MERIDIAN_PASSWORD: PW };
  const id = cli(['put', 'Organisation', 'org-shared', 'name=Shared', 'kind=customer', '--node', a.url], env).stdout.trim();
  // (polled through cliAsync: a blocking CLI process would stall the in-process proxy's heartbeats, and a loaded
  // machine gets few polls in a few seconds)
  await until(async () => (await cliAsync(['get', id, '--node', b.url], env)).code === 0, 20_000);

  link.partition();
  t.equal(cli(['put', 'Organisation', id, 'name=Shared East', '--node', a.url], env).code, 0);
  t.equal(cli(['put', 'Organisation', id, 'name=Shared West', 'l=Cape Town', '--node', b.url], env).code, 0);
  link.heal();
  const conflictsOn = async (url: string): Promise<{ field: string; values: { value: string }[]; winner: string; detected?: string }[]> =>
    JSON.parse((await cliAsync(['conflicts', '--json', '--node', url], env)).stdout);
  await until(async () => (await conflictsOn(a.url)).length === 1 && (await conflictsOn(b.url)).length === 1, 20_000);
  const [ca, cb] = [await conflictsOn(a.url), await conflictsOn(b.url)];
  const withoutTime = (cs: typeof ca): unknown => cs.map(({ detected: _d, ...rest }: { detected?: string }) => rest);
  t.same(withoutTime(ca), withoutTime(cb), 'both nodes record the same conflict (detection time is local)');
  t.equal(ca[0]!.field, 'name');
  t.same(ca[0]!.values.map((v) => v.value).sort(), ['Shared East', 'Shared West']);
  const human = cli(['conflicts', '--node', a.url], env).stdout.trim();
  t.match(human, /^Organisation org-shared field name: (kept: "Shared (East|West)" from [ab]; lost: "Shared (East|West)" from [ab]|lost: "Shared (East|West)" from [ab]; kept: "Shared (East|West)" from [ab])$/, `conflicts, for people: ${human}`);
  const [oa, ob] = [JSON.parse(cli(['get', id, '--json', '--node', a.url], env).stdout), JSON.parse(cli(['get', id, '--json', '--node', b.url], env).stdout)];
  t.same(oa.fields, ob.fields, 'same fields on both');
  t.equal(oa.version, ob.version, 'same version on both');
  t.equal(oa.fields.l, 'Cape Town', 'the other field merged without conflict');
  t.match(cli(['conflicts', '--node', a.url], env).stdout, /Organisation org-shared field name: (kept|lost): "Shared (East|West)" from [ab]; (kept|lost)/);

  t.equal(cli(['put', 'Organisation', id, 'name=Shared Global', '--node', a.url], env).code, 0);
  await until(async () => (await conflictsOn(b.url)).length === 0, 20_000);
  t.same(await conflictsOn(a.url), [], 'settled on the writer');
  t.same(await conflictsOn(b.url), [], 'settled on the other master too');
  t.equal(JSON.parse(cli(['conflicts', '--all', '--json', '--node', b.url], env).stdout).length, 1, 'kept in the history');
});

t.test('a uid taken on two partitioned masters: each reports it, and when one lets it go both find the other', async (t) => {
  const { link, a, b } = await twoMastersThroughLink(t);
  const env = { MERIDIAN_PASSWORD: PW };
  link.partition();
  const pa = cli(['put', 'Person', 'cn=Jo A', 'sn=A', 'uid=jo', '--node', a.url], env).stdout.trim();
  const pb = cli(['put', 'Person', 'cn=Jo B', 'sn=B', 'uid=JO', '--node', b.url], env).stdout.trim();
  link.heal();
  const open = async (url: string): Promise<{ objectId: string }[]> => JSON.parse((await cliAsync(['conflicts', '--json', '--node', url], env)).stdout);
  await until(async () => (await open(a.url)).length === 1 && (await open(b.url)).length === 1, 20_000);
  // each node found the value held first by its own object
  t.equal((await open(a.url))[0]!.objectId, pb);
  t.equal((await open(b.url))[0]!.objectId, pa);
  t.match(cli(['conflicts', '--node', a.url], env).stdout.trim(), new RegExp(`^Person ${pb} field uid: value "jo" is also held by ${pa}, which lookups find; arrived from b$`));
  const holder = (url: string): string[] => JSON.parse(cli(['list', 'Person', 'uid=jo', '--json', '--node', url], env).stdout).items.map((o: { id: string }) => o.id);
  t.same(holder(b.url), [pb]);

  t.equal(cli(['put', 'Person', pb, 'uid=jo-b', '--node', a.url], env).code, 0);
  await until(async () => (await open(b.url)).length === 0, 20_000);
  t.same(await open(a.url), []);
  t.same(holder(a.url), [pa]);
  t.same(holder(b.url), [pa], 'b now finds the object that still holds it');
  t.match(cli(['conflicts', '--all', '--node', a.url], env).stdout.trim(), new RegExp(`^Person ${pb} field uid: value "jo" was also held by ${pa}; arrived from b \\(settled [^)]+\\)$`), 'told in the past once settled');
});

t.test('a master behind the retained feed catches up by anti-entropy; a new master is cloned', async (t) => {
  const env = { MERIDIAN_PASSWORD: PW };
  const common = ['--admin-password', PW, '--cluster-secret', SECRET, '--heartbeat', '300', '--link-timeout', '1500'];
  const dirA = tempDir(t);
  const dirB = tempDir(t);
  let a = await startNode(t, ['--dir', dirA, '--node-id', 'a', ...common, '--feed-retention', '10']);
  const peerA = (): string => `${a.url.replace('http', 'ws')}/sync`;
  let b = await startNode(t, ['--dir', dirB, '--node-id', 'b', ...common, '--peers', peerA()]);
  const first = cli(['put', 'Organisation', 'name=Before', 'kind=customer', '--node', a.url], env).stdout.trim();
  t.ok(await until(() => cli(['get', first, '--node', b.url], env).code === 0), 'b has the first write');
  await b.stop();

  // 40 writes while b is away (through the admin API: 40 CLI processes took 10 s), then a restarts and trims its feed to 10 entries
  const ids: string[] = [];
  for (let i = 0; i < 40; i += 8) {
    const made = await Promise.all(
      Array.from({ length: 8 }, async (_, j) => {
        const res = await fetch(`${a.url}/api/objects`, { method: 'POST', headers: { authorization: AUTH, 'content-type': 'application/json' }, body: JSON.stringify({ type: 'Organisation', fields: { name: `While away ${i + j}`, kind: 'customer' } }) });
        if (res.status !== 201) throw new Error(`write ${i + j} answered ${res.status}: ${await res.text()}`);
        return ((await res.json()) as { id: string }).id;
      }),
    );
    ids.push(...made);
  }
  await a.stop();
  a = await startNode(t, ['--dir', dirA, '--node-id', 'a', ...common, '--feed-retention', '10']);
  const status = JSON.parse(cli(['status', '--json', '--node', a.url], env).stdout);
  t.ok(status.feed.firstSeq > 2, `a's feed starts at ${status.feed.firstSeq}, past b's checkpoint`);

  b = await startNode(t, ['--dir', dirB, '--node-id', 'b', ...common, '--peers', peerA()]);
  const verify = (): boolean => cli(['verify', '--nodes', `${a.url},${b.url}`], env).code === 0;
  t.ok(await until(verify), 'b caught up: verify passes');
  await sleep(300);
  t.match(b.output() + a.output(), /anti-entropy: digests compared/, 'by anti-entropy');
  t.equal(cli(['get', ids[0]!, '--node', b.url], env).code, 0, 'a write older than the retained feed reached b');

  // a brand-new node is cloned from a's stored objects, while a keeps taking writes
  const stop = { now: false };
  const writer = writeLoop('w', () => a.url, stop);
  await sleep(200);
  const c = await startNode(t, ['--dir', tempDir(t), '--node-id', 'c', ...common, '--peers', peerA()]);
  await sleep(1500);
  stop.now = true;
  await writer.done;
  t.ok(await until(() => cli(['verify', '--nodes', `${a.url},${c.url}`], env).code === 0), 'the new node holds the same objects');
  const cs = JSON.parse(cli(['status', '--json', '--node', c.url], env).stdout);
  t.equal(cs.objects, 41 + writer.w.objects.size, 'including those written during the clone');
  t.ok(cs.versionVector.a > 0 && cs.feed.lastSeq < cs.versionVector.a, 'it got most of them as states, not by replaying the feed');
  t.notMatch(c.output() + a.output(), /changes before the state snapshot ended/, 'changes right after the snapshot are accepted');
});

t.test('two masters dialing each other keep one session; a chain converges; a silent link is found by heartbeat', async (t) => {
  const env = { MERIDIAN_PASSWORD: PW };
  const common = ['--admin-password', PW, '--cluster-secret', SECRET, '--heartbeat', '200', '--link-timeout', '1000'];
  const toC = await FaultProxy.start();
  t.teardown(() => toC.close());
  // a <-> b dial each other (directly); b -> c through a proxy; a and c never connect
  const { freePort } = await import('./helpers/free-port.js');
  const [portA, portB] = [await freePort(), await freePort()];
  const a = await startNode(t, ['--dir', tempDir(t), '--node-id', 'a', ...common, '--http-port', String(portA), '--peers', `ws://127.0.0.1:${portB}/sync`]);
  const b = await startNode(t, ['--dir', tempDir(t), '--node-id', 'b', ...common, '--http-port', String(portB), '--peers', `ws://127.0.0.1:${portA}/sync,ws://127.0.0.1:${toC.port}/sync`]);
  const c = await startNode(t, ['--dir', tempDir(t), '--node-id', 'c', ...common]);
  toC.setTarget(Number(new URL(c.url).port));
  // cliAsync: this process hosts the proxy, whose heartbeats a blocking child would stall
  const peersOf = async (url: string): Promise<{ node: string | null; state: string; reason: string | null }[]> =>
    JSON.parse((await cliAsync(['peers', '--json', '--node', url], env)).stdout);

  const id = (await cliAsync(['put', 'Organisation', 'name=Chained', 'kind=customer', '--node', a.url], env)).stdout.trim();
  t.ok(await until(async () => (await cliAsync(['get', id, '--node', c.url], env)).code === 0), 'a write on a reaches c through b');
  const liveWith = async (url: string, node: string): Promise<number> => (await peersOf(url)).filter((p) => p.node === node && p.state === 'live').length;
  t.ok(await until(async () => (await liveWith(a.url, 'b')) === 1 && (await liveWith(b.url, 'a')) === 1), 'a and b are live with each other');
  await sleep(500);
  t.equal(await liveWith(a.url, 'b'), 1, 'one live session between a and b although both dial');
  t.notOk((await peersOf(a.url)).some((p) => p.node === 'c'), 'a never connected to c');
  t.match(a.output() + b.output(), /duplicate session/, 'the second session was closed as a duplicate');
  await sleep(1500);
  const duplicates = (a.output() + b.output()).split('duplicate session with this peer closed').length - 1;
  t.ok(duplicates <= 2, `the losing dialer waits instead of redialing (${duplicates} duplicate closes)`);

  // b -> c goes silent: no close, no reset; the heartbeat notices within the timeout
  toC.blackhole();
  const started = Date.now();
  t.ok(await until(async () => (await peersOf(b.url)).some((p) => p.node === 'c' && p.state !== 'live')), 'b sees c gone');
  // (timed by b's own log line: each poll above starts a CLI process, which a loaded machine makes slow)
  const noticed = logLines(b.output()).find((l) => l.msg === 'no heartbeat from peer; closing the link' && l.peer === 'c' && (l.time ?? 0) >= started);
  t.ok(noticed !== undefined && noticed.time! - started < 3000, `within ${noticed ? noticed.time! - started : '?'} ms (timeout 1000 ms)`);
  toC.heal();
  t.ok(await until(async () => (await liveWith(b.url, 'c')) === 1), 'and back once the link carries bytes again');
  // and the other way along the chain: a write on c reaches a, and all three hold the same
  const fromC = (await cliAsync(['put', 'Organisation', 'name=From C', 'kind=vendor', '--node', c.url], env)).stdout.trim();
  t.ok(await until(async () => (await cliAsync(['get', fromC, '--node', a.url], env)).code === 0), 'a write on c reaches a through b');
  const urls = [a.url, b.url, c.url].join(',');
  t.ok(await until(async () => (await cliAsync(['verify', '--nodes', urls], env)).code === 0), 'verify finds the three identical');
});
