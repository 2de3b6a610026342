/**
 * Getting data back: a backup taken while writes go on restores to a
 * consistent store; a restored node rejoins its peers as a new incarnation
 * and converges without losing a write; history, revert and undelete
 * through the CLI replicate; a purge leaves none of the object's values in
 * any node's LevelDB.
 */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import t, { type Test } from 'tap';
import { pino } from 'pino';
import { MeridianNode, resolveConfig, type ConfigInput } from '@meridian/node';
import { checkIndexes, loadSchemaFile, Store } from '@meridian/store';
import { cliAsync, nodeCommand } from './helpers/node-process.js';
import { freePort } from './helpers/free-port.js';
import { tempDir } from './helpers/tmp.js';
import { until } from './helpers/wait.js';

const PW = 'rev-admin-pw';
const SECRET = 'rev-cluster-secret';
const AUTH = `Basic ${Buffer.from(`admin:${PW}`).toString('base64')}`;
const SCHEMA = fileURLToPath(new URL('../packages/node/schema/crm.yaml', import.meta.url));
const XSD = fileURLToPath(new URL('../docs/formats/meridian.xsd', import.meta.url));

async function start(t: Test, flags: ConfigInput, dir = tempDir(t)): Promise<MeridianNode> {
  const node = await MeridianNode.start(
    resolveConfig({ flags: { dir, httpPort: 0, adminPassword: PW, clusterSecret: SECRET, heartbeat: 200, linkTimeout: 1000, ...flags } }),
    pino({ level: 'silent' }),
  );
  let stopped = false;
  t.teardown(() => (stopped ? undefined : node.stop()));
  const stop = node.stop.bind(node);
  node.stop = async () => {
    stopped = true;
    await stop();
  };
  return node;
}

function cli(node: MeridianNode, ...args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return cliAsync([...args, '--node', node.url, '--password', PW]);
}

/** Creates and renames organisations through the store until stopped; returns the ids made. */
function writeLoop(node: MeridianNode, tag: string): { stop: () => Promise<string[]> } {
  let running = true;
  const ids: string[] = [];
  const done = (async () => {
    for (let i = 0; running; i++) {
      if (i % 3 === 2 && ids.length) await node.store.update(ids[i % ids.length]!, { name: `${tag}-renamed-${i}` }, { principal: 'admin' });
      else ids.push((await node.store.create('Organisation', { name: `${tag}-${i}`, kind: 'vendor' }, { principal: 'admin' })).id);
      if (i % 20 === 0) await new Promise((r) => setImmediate(r));
    }
  })();
  return {
    stop: async () => {
      running = false;
      await done;
      return ids;
    },
  };
}

async function digestOf(node: MeridianNode): Promise<string> {
  return JSON.stringify((await node.store.digest()).buckets);
}

t.test('a backup taken during writes restores to a consistent store: indexes agree, digest equals the source at its feed position', async (t) => {
  const a = await start(t, { nodeId: 'a' });
  for (let i = 0; i < 300; i++) await a.store.create('Person', { cn: `P ${i}`, sn: `S${i}`, mail: [`p${i}@example.com`], uid: `u${i}` }, { principal: 'admin' });
  const writes = writeLoop(a, 'during');
  await until(() => a.store.lastSeq > 400);
  const file = join(tempDir(t), 'a.mbak');
  const before = a.store.lastSeq;
  const b = await cli(a, 'backup', '--out', file);
  const after = a.store.lastSeq;
  await writes.stop();
  t.equal(b.code, 0, b.stderr);
  t.match(b.stdout, /^backed up .* to .*a\.mbak/);
  t.equal(b.stderr, '', 'no progress output when not on a terminal');
  t.ok(after > before, `writes went on during the backup (${before} -> ${after})`);

  const dir = join(tempDir(t), 'restored');
  const r = await cliAsync(['restore', '--in', file, '--dir', dir, '--json']);
  t.equal(r.code, 0, r.stderr);
  const info = JSON.parse(r.stdout) as { nodeId: string; incarnation: number; from: string; records: number };
  t.match(info, { nodeId: /^a\.1-[0-9a-f]{12}$/, incarnation: 1, from: 'a' });

  const schema = loadSchemaFile(SCHEMA);
  const restored = await Store.open({ dir, schema });
  t.teardown(() => restored.close());
  t.equal(restored.nodeId, info.nodeId, 'a new incarnation with its own node id');
  t.same(await checkIndexes(restored), [], 'indexes agree with the objects');
  const head = restored.lastSeq;
  t.ok(head >= before && head <= after, `the snapshot is one feed position of the source (${head})`);
  t.equal(restored.versionVector()['a'], head, 'its vector is the feed it holds');
  // the source as it was at that feed position: its feed up to there, applied to an empty store
  const witness = await Store.open({ dir: tempDir(t), schema, nodeId: 'w' });
  t.teardown(() => witness.close());
  for (let at = 0; at < head; ) {
    const entries = (await a.store.readFeed(at, 1000)).filter((e) => e.seq <= head);
    await witness.applyRemote(entries.map(({ seq: _s, ...c }) => c));
    at = entries.at(-1)!.seq;
  }
  t.same((await restored.digest()).buckets, (await witness.digest()).buckets, "digest equals the source's at the snapshot's feed position");
  t.equal((await restored.lookup('Person', 'uid', 'u299')).items.length, 1);

  const again = await cliAsync(['restore', '--in', file, '--dir', dir]);
  t.equal(again.code, 2, 'a directory in use is a usage error, as a backup file that exists is');
  t.match(again.stderr, /is not empty; restore into a new directory/);
  const onFile = await cliAsync(['restore', '--in', file, '--dir', file]);
  t.equal(onFile.code, 2);
  t.match(onFile.stderr, /a\.mbak is a file, not a directory; restore into a new directory/);
  const cut = join(tempDir(t), 'cut.mbak');
  writeFileSync(cut, readFileSync(file).subarray(0, 5000));
  const r2 = join(tempDir(t), 'r2');
  const bad = await cliAsync(['restore', '--in', cut, '--dir', r2]);
  t.equal(bad.code, 1);
  t.match(bad.stderr, /ends before its end record .*take the backup again/, 'a truncated backup is refused');
  t.notOk(existsSync(r2), 'and leaves no half-restored directory');
  const parent = join(tempDir(t), 'new-parent');
  t.equal((await cliAsync(['restore', '--in', cut, '--dir', join(parent, 'x', 'y')])).code, 1);
  t.notOk(existsSync(parent), 'nor the parent directories the restore made for it');
  for (const [nodeId, why, code] of [
    // known once the header is read: the backup names the original
    ['a', /needs an id of its own, not "a" again/, 1],
    // no id at all: a usage error, told before the backup is opened
    ['no spaces', /may hold only letters/, 2],
  ] as const) {
    const r3 = join(tempDir(t), 'r3');
    // from the truncated backup: the id is refused before the restore reads on to where it ends
    const refused = await cliAsync(['restore', '--in', cut, '--dir', r3, '--node-id', nodeId]);
    t.equal(refused.code, code);
    t.match(refused.stderr, why, `--node-id "${nodeId}" is refused before the restore reads the backup through`);
    t.notOk(existsSync(r3), 'leaving no directory');
  }

  // a backup never overwrites a file, and never takes over one a stopped backup left
  const taken = await cli(a, 'backup', '--out', file);
  t.equal(taken.code, 2);
  t.match(taken.stderr, /exists already; choose a new file/);
  const next = join(tempDir(t), 'next.mbak');
  writeFileSync(`${next}.partial`, 'left by a backup that was stopped');
  const stale = await cli(a, 'backup', '--out', next);
  t.equal(stale.code, 2);
  t.match(stale.stderr, /next\.mbak\.partial is left from a backup that did not finish.*delete it/);
  t.equal(readFileSync(`${next}.partial`, 'utf8'), 'left by a backup that was stopped', 'and leaves it as it was');
  t.notOk(existsSync(next));

  // a pipe is written to, not refused as a file that exists: a backup can go to gzip or ssh
  const fifo = join(tempDir(t), 'fifo');
  t.equal(spawnSync('mkfifo', [fifo]).status, 0, 'mkfifo');
  const copy = join(tempDir(t), 'through-fifo.mbak');
  const reader = spawn('bash', ['-c', `cat '${fifo}' > '${copy}'`], { stdio: 'ignore' });
  const readerDone = new Promise<void>((resolve) => reader.on('exit', () => resolve()));
  t.teardown(() => {
    if (reader.exitCode === null && reader.signalCode === null) reader.kill('SIGKILL');
  });
  const piped = await cli(a, 'backup', '--out', fifo);
  t.equal(piped.code, 0, piped.stderr);
  // (a backup that never opened the FIFO leaves cat waiting in open: it goes, rather than the test waiting for it)
  if (piped.code !== 0) reader.kill('SIGKILL');
  await readerDone;
  const fromPipe = await cliAsync(['restore', '--in', copy, '--dir', join(tempDir(t), 'r4'), '--json']);
  t.equal(fromPipe.code, 0, `what came through the pipe restores: ${fromPipe.stderr}`);
  // a file under /dev (a tmpfs) is a file like any other: never written over
  const shm = `/dev/shm/meridian-test-${process.pid}-${Date.now()}.mbak`;
  writeFileSync(shm, 'kept');
  t.teardown(() => rmSync(shm, { force: true }));
  const onShm = await cli(a, 'backup', '--out', shm);
  t.same([onShm.code, readFileSync(shm, 'utf8')], [2, 'kept'], `refused: ${onShm.stderr.trim()}`);
  // --out /dev/stdout, redirected and piped: what it says of the file goes to stderr, not into the file
  // (after the end record, or written over the header through the other descriptor, it never restored)
  for (const [how, to] of [['redirected', '>'], ['piped', '| cat >']] as const) {
    const copy = join(tempDir(t), `${how}.mbak`);
    const [cmd, argv] = nodeCommand(['backup', '--node', a.url, '--out', '/dev/stdout']);
    const quoted = [cmd, ...argv].map((w) => `'${w}'`).join(' ');
    const shell = spawn('bash', ['-c', `${quoted} ${to} '${copy}'`], { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, MERIDIAN_PASSWORD: PW } });
    let stderr = '';
    shell.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    // ('close', not 'exit': stderr is read whole only then)
    const code = await new Promise<number | null>((resolve) => shell.on('close', (c) => resolve(c)));
    t.equal(code, 0, stderr);
    t.match(stderr, /^backed up .* to \/dev\/stdout\n$/, `${how}: said on stderr`);
    const back = await cliAsync(['restore', '--in', copy, '--dir', join(tempDir(t), `r-${how}`), '--json']);
    t.equal(back.code, 0, `${how}: the file restores: ${back.stderr}`);
  }
});

t.test('a restored node rejoins as a new incarnation and converges with its peers, losing no write', async (t) => {
  const [pa, pb] = [await freePort(), await freePort()];
  const a = await start(t, { nodeId: 'a', httpPort: pa, peers: [`ws://127.0.0.1:${pb}/sync`] });
  const b = await start(t, { nodeId: 'b', httpPort: pb, peers: [`ws://127.0.0.1:${pa}/sync`] });
  const before: string[] = [];
  for (let i = 0; i < 50; i++) before.push((await (i % 2 ? a : b).store.create('Organisation', { name: `before-${i}`, kind: 'vendor' }, { principal: 'admin' })).id);
  const bClient = b.store.clientId;
  const file = join(tempDir(t), 'b.mbak');
  t.equal((await cli(b, 'backup', '--out', file)).code, 0);
  // b goes on after its backup; a has all of it before b is lost
  const late = await b.store.create('Organisation', { name: 'made-on-b-after-the-backup', kind: 'vendor' }, { principal: 'admin' });
  for (let i = 0; i < 20; i++) await a.store.create('Organisation', { name: `while-b-runs-${i}`, kind: 'vendor' }, { principal: 'admin' });
  t.ok(await until(() => b.store.covers(a.store.versionVector()) && a.store.covers(b.store.versionVector()), 10_000), 'a and b converged');
  await b.stop();
  for (let i = 0; i < 20; i++) await a.store.create('Organisation', { name: `while-b-is-down-${i}`, kind: 'vendor' }, { principal: 'admin' });
  // a purge the backup predates, with the feed trimmed past it: the restored node can learn of it only by anti-entropy
  await a.store.purge(before[7]!, { principal: 'admin' });
  await a.store.create('Organisation', { name: 'after-the-purge', kind: 'vendor' }, { principal: 'admin' });
  await a.store.trimFeed(1);

  const dir = join(tempDir(t), 'b-restored');
  t.equal((await cliAsync(['restore', '--in', file, '--dir', dir])).code, 0);
  const twice = join(tempDir(t), 'again');
  t.equal((await cliAsync(['restore', '--in', file, '--dir', twice])).code, 0);
  const [r1, r2] = await Promise.all([dir, twice].map(async (d) => {
    const s = await Store.open({ dir: d, schema: loadSchemaFile(SCHEMA) });
    const id = s.nodeId;
    await s.close();
    return id;
  }));
  t.not(r1, r2, 'the same backup restored twice makes two node ids');
  // on b's port, so a's configuration is unchanged
  const r = await start(t, { httpPort: pb, peers: [`ws://127.0.0.1:${pa}/sync`] }, dir);
  t.match(r.store.nodeId, /^b\.1-[0-9a-f]{12}$/);
  t.not(r.store.clientId, bClient, 'a fresh Yjs clientID');
  t.notOk((await r.store.raw('mclients').next()).done, 'and the clientIDs used before are still recorded, so none is drawn again');
  const mine = await r.store.create('Organisation', { name: 'made-on-the-restored-node', kind: 'vendor' }, { principal: 'admin' });
  t.same(r.store.versionVector()[r.store.nodeId], 1, 'its changes are a new origin, numbered from 1: no (origin, seq) pair of b is reused');
  t.ok(await until(async () => (await digestOf(r)) === (await digestOf(a)), 15_000), 'the restored node and its peer converge');
  t.ok(await r.store.get(late.id), "b's write made after the backup came back through a");
  t.ok(await a.store.get(mine.id), "the restored node's write reached a");
  t.equal(await r.store.get(before[7]!), undefined, 'the object purged after the backup is gone from the restored node');
  t.match(await r.store.purgedAt(before[7]!), { principal: 'admin', origin: 'a' }, 'which knows it was purged');
  t.equal(r.store.objectCounts()['Organisation'], a.store.objectCounts()['Organisation']);
  t.equal(a.store.objectCounts()['Organisation'], 50 + 1 + 20 + 20 + 1 + 1 - 1, 'no write lost (one purged)');
  t.same(await checkIndexes(r.store), []);
  const status = (await (await fetch(`${a.url}/status`, { headers: { authorization: AUTH } })).json()) as { peers: { node: string; state: string }[] };
  t.ok(status.peers.some((p) => p.node === r.store.nodeId && p.state === 'live'), 'a sees the new incarnation as a live peer');
});

t.test('history, revert and undelete through the CLI, replicated to the other master; refused when the old values break the schema', async (t) => {
  const [pa, pb] = [await freePort(), await freePort()];
  const a = await start(t, { nodeId: 'a', httpPort: pa, peers: [`ws://127.0.0.1:${pb}/sync`] });
  const b = await start(t, { nodeId: 'b', httpPort: pb, peers: [`ws://127.0.0.1:${pa}/sync`] });
  const org = (await cli(a, 'put', 'Organisation', 'name=Acme', 'kind=customer', '--json'));
  const orgId = (JSON.parse(org.stdout) as { id: string }).id;
  const made = await cli(a, 'put', 'Person', 'cn=Anna Smith', 'sn=Smith', 'mail=anna@acme.example', 'uid=anna', `organisation=${orgId}`, '--json');
  const id = (JSON.parse(made.stdout) as { id: string }).id;
  t.equal((await cli(a, 'put', 'Person', id, 'sn=Wrong', 'title=Oops', 'mail=wrong@acme.example')).code, 0);

  const h = await cli(a, 'history', id);
  t.equal(h.code, 0, h.stderr);
  t.match(h.stdout, /^a#2 +\S+Z +admin +create\n/);
  t.match(h.stdout, /a#3 +\S+Z +admin +update\n {4}mail: \["anna@acme.example"\] -> \["wrong@acme.example"\]\n {4}sn: "Smith" -> "Wrong"\n {4}title: \(none\) -> "Oops"/);
  const hj = JSON.parse((await cli(a, 'history', id, '--json')).stdout) as { complete: boolean; versions: { version: string; principal: string }[] };
  t.equal(hj.complete, true);
  t.same(hj.versions.map((v) => v.version), ['a#2', 'a#3']);

  const rev = await cli(a, 'revert', id, '--to', 'a#2');
  t.equal(rev.code, 0, rev.stderr);
  t.match(rev.stdout, new RegExp(`^reverted Person ${id} to a#2`));
  t.ok(
    await until(async () => {
      const o = await b.store.get(id);
      return o?.fields['sn'] === 'Smith' && o.fields['title'] === undefined && JSON.stringify(o.fields['mail']) === '["anna@acme.example"]';
    }, 10_000),
    'the revert is a new change that reached b',
  );
  const onB = JSON.parse((await cli(b, 'history', id, '--json')).stdout) as { versions: { version: string; kind: string }[] };
  t.same(onB.versions.map((v) => v.version), ['a#2', 'a#3', 'a#4'], 'b shows the revert as the newest version');

  const missing = await cli(a, 'revert', id, '--to', 'a#99');
  t.equal(missing.code, 1);
  t.match(missing.stderr, /has no version a#99 in this node's retained feed; "meridian history/);
  const nonsense = await cli(a, 'revert', id, '--to', 'nonsense');
  t.equal(nonsense.code, 2, 'a version that is no version name is a usage error, told without asking the node');
  t.match(nonsense.stderr, /--to must name a version as "meridian history .*" shows it, such as office-a#42/);

  // the old values would now break the schema: the organisation was deleted, the uid taken
  const org2 = JSON.parse((await cli(a, 'put', 'Organisation', 'name=Beta', 'kind=customer', '--json')).stdout) as { id: string };
  t.equal((await cli(a, 'put', 'Person', id, `organisation=${org2.id}`)).code, 0);
  t.equal((await cli(a, 'put', 'Person', id, `organisation=${orgId}`)).code, 0);
  t.equal((await cli(a, 'put', 'Person', id, `organisation=${org2.id}`)).code, 0);
  t.equal((await cli(a, 'delete', orgId)).code, 0);
  const refused = await cli(a, 'revert', id, '--to', 'a#7');
  t.equal(refused.code, 1);
  t.match(refused.stderr, new RegExp(`cannot revert Person ${id} to a#7: .*organisation.*refers to deleted object ${orgId}`), 'a reference to a deleted object is refused with the reason');

  t.equal((await cli(a, 'delete', id)).code, 0);
  t.ok(await until(async () => (await b.store.get(id))?.deleted === true, 10_000));
  const other = await cli(a, 'put', 'Person', 'cn=Other Anna', 'sn=Other', 'uid=anna', '--json');
  t.equal(other.code, 0, 'the deleted person freed its uid');
  const taken = await cli(a, 'undelete', id);
  t.equal(taken.code, 1);
  t.match(taken.stderr, /uid.*"anna" is already used by Person/, 'undelete is refused while its uid is taken');
  t.equal((await cli(a, 'delete', (JSON.parse(other.stdout) as { id: string }).id)).code, 0);
  const und = await cli(a, 'undelete', id);
  t.equal(und.code, 0, und.stderr);
  t.match(und.stdout, `undeleted Person ${id}`);
  t.ok(await until(async () => (await b.store.get(id))?.deleted === false, 10_000), 'the undelete replicates');
  t.equal((await b.store.lookup('Person', 'uid', 'anna')).items[0]?.id, id, 'with its indexes back');

  // XML: the same history, valid against the schema
  const xml = await fetch(`${b.url}/objects/Person/${id}/history`, { headers: { authorization: AUTH } });
  t.equal(xml.status, 200);
  const text = await xml.text();
  const file = join(tempDir(t), 'history.xml');
  writeFileSync(file, text);
  const lint = spawnSync('xmllint', ['--noout', '--schema', XSD, file], { encoding: 'utf8' });
  t.equal(lint.status, 0, `xmllint: ${lint.stderr}`);
  t.match(text, /<version name="a#3" seq="\d+" time="[^"]+" origin="a" principal="admin" kind="update">\n {4}<field name="mail">\n {6}<old>anna@acme.example<\/old>\n {6}<new>wrong@acme.example<\/new>/);
  t.equal((await fetch(`${b.url}/objects/Person/${id}/history`)).status, 401, 'signed in only');
  t.equal((await fetch(`${b.url}/objects/Person/per-none/history`, { headers: { authorization: AUTH } })).status, 404);
});

t.test('history past the feed retention says so plainly', async (t) => {
  const a = await start(t, { nodeId: 'a' });
  const o = await a.store.create('Organisation', { name: 'Old', kind: 'vendor' }, { principal: 'admin' });
  for (let i = 0; i < 10; i++) await a.store.create('Organisation', { name: `N${i}`, kind: 'vendor' });
  await a.store.update(o.id, { name: 'Newer' }, { principal: 'admin' });
  await a.store.trimFeed(2);
  const h = await cli(a, 'history', o.id);
  t.equal(h.code, 0);
  t.match(h.stdout, /update\n {4}name: "Old" -> "Newer"\n\(older changes of \S+ are past this node's feed retention.*the feed here starts at position 11/);
  const xml = await (await fetch(`${a.url}/objects/Organisation/${o.id}/history`, { headers: { authorization: AUTH } })).text();
  t.match(xml, /complete="false" first-seq="11">\n {2}<note>Changes before feed position 11 are past this node's feed retention/);
});

t.test('purge erases an object on every node: no field value left in any LevelDB', async (t) => {
  const [pa, pb] = [await freePort(), await freePort()];
  const dirs = [tempDir(t), tempDir(t)];
  const a = await start(t, { nodeId: 'a', httpPort: pa, peers: [`ws://127.0.0.1:${pb}/sync`] }, dirs[0]);
  const b = await start(t, { nodeId: 'b', httpPort: pb, peers: [`ws://127.0.0.1:${pa}/sync`] }, dirs[1]);
  const org = await a.store.create('Organisation', { name: 'Keepme Industries', kind: 'customer' }, { principal: 'admin' });
  const p = await a.store.create('Person', { cn: 'Xavier Forgetme', sn: 'Forgetme', mail: ['xavier.forgetme@private.example'], telephoneNumber: ['+41 79 555 12 34'], organisation: org.id }, { principal: 'admin' });
  t.ok(await until(async () => (await b.store.get(p.id)) !== undefined, 10_000));
  await b.store.update(p.id, { title: 'Chief Forgetting Officer' }, { principal: 'admin' });
  t.ok(await until(async () => (await a.store.get(p.id))?.fields['title'] !== undefined, 10_000));

  const no = await cli(a, 'purge', p.id);
  t.equal(no.code, 2);
  t.match(no.stderr, /cannot be undone; run it again with --yes/);
  const refused = await cli(a, 'purge', org.id, '--yes');
  t.equal(refused.code, 1);
  t.match(refused.stderr, new RegExp(`is referred to by Person ${p.id} \\(organisation\\); point those elsewhere or delete them before purging it`));
  const ok = await cli(a, 'purge', p.id, '--yes');
  t.equal(ok.code, 0, ok.stderr);
  t.match(ok.stdout, new RegExp(`^purged Person ${p.id} \\(2 feed entries redacted\\)`));
  t.ok(await until(async () => (await b.store.get(p.id)) === undefined, 10_000), 'the purge reached b');
  const log = JSON.parse((await cli(b, 'log', '--json')).stdout.trim().split('\n').at(-1)!) as { kind: string; principal: string; origin: string };
  t.match(log, { kind: 'purge', principal: 'admin', origin: 'a' }, 'logged in the feed as an operator action');
  const h = await cli(b, 'history', p.id);
  t.equal(h.code, 1);
  t.match(h.stderr, /was purged at \S+ by admin; it has no history any more/);

  const secrets = ['Xavier', 'Forgetme', 'xavier.forgetme', '555 12 34', 'Forgetting'];
  for (const [name, node] of [['a', a], ['b', b]] as const) {
    let text = '';
    for await (const [k, v] of node.store.raw('')) text += `${k}\n${v.toString('latin1')}\n`;
    t.ok(text.includes('Keepme'), `${name}: the scan sees other objects' values`);
    for (const s of secrets) t.notOk(text.includes(s), `${name}: no "${s}" in any key or value`);
  }
  await a.stop();
  await b.stop();
  for (const dir of dirs) {
    const files = readdirSync(dir).filter((f) => /\.(ldb|log|sst)$/.test(f));
    const raw = Buffer.concat(files.map((f) => readFileSync(join(dir, f))));
    t.ok(raw.includes(Buffer.from('Keepme')), `the file scan of ${dir.split('/').at(-1)} sees values that stay (the check can fail)`);
    t.notOk(secrets.some((s) => raw.includes(Buffer.from(s))), `nor in the LevelDB files of ${dir.split('/').at(-1)}`);
  }
});
