import t from 'tap';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as Y from 'yjs';
import { Packr } from 'msgpackr';
import { Level } from 'level';
import { Store } from '../dist/index.js';
import { keys } from '../dist/keys.js';
import { openStore, schema, tempDir } from './fixtures.js';

t.test('HLC stays monotonic across restarts even when the wall clock goes back', async (t) => {
  const dir = tempDir(t);
  let wall = Date.now();
  const s1 = await Store.open({ dir, schema, now: () => wall });
  const a = await s1.create('Org', { name: 'A', kind: 'vendor' });
  const b = await s1.create('Org', { name: 'B', kind: 'vendor' });
  t.ok(b.hlc > a.hlc, 'later writes order later within one ms');
  const clientA = s1.clientId;
  await s1.close();

  wall -= 60 * 60 * 1000; // an hour back: NTP step, or a restored VM snapshot
  const s2 = await Store.open({ dir, schema, now: () => wall });
  const c = await s2.create('Org', { name: 'C', kind: 'vendor' });
  t.ok(c.hlc > b.hlc, 'the first write after restart orders after everything before it');
  t.not(s2.clientId, clientA, 'a fresh Yjs clientID at every start');
  t.equal(s2.nodeId, s1.nodeId, 'the node id is kept');
  t.equal(s2.lastSeq, 3, 'the feed position is recovered');
  t.same(s2.versionVector(), { [s2.nodeId]: 3 });
  const [, raw] = (await s2.raw('mclients').next()).value as [string, Buffer];
  const recorded = (new Packr({ useRecords: false }).unpack(raw) as { id: number }[]).map((c) => c.id);
  t.same(recorded, [clientA, s2.clientId], 'every start records its clientID, so none is drawn twice');
  // changes to objects made before and in this process carry its clientID
  // (Yjs swaps in a random one when loading a state that holds our own items)
  await s2.update(a.id, { name: 'A2' });
  await s2.update(c.id, { name: 'C2' });
  const entries = await s2.readFeed(3, 2);
  t.equal(entries.length, 2);
  for (const entry of entries) {
    const writers = new Set(Y.decodeUpdate(entry.update).structs.map((st) => st.id.client));
    t.same([...writers], [s2.clientId], 'changes carry the clientID recorded for this start');
  }
  await s2.close();
});

t.test('a data dir belongs to one node id', async (t) => {
  const dir = tempDir(t);
  const s = await Store.open({ dir, schema, nodeId: 'eu-1' });
  await s.close();
  await t.rejects(Store.open({ dir, schema, nodeId: 'us-1' }), { message: /belongs to node "eu-1", not "us-1"/ });
  const again = await Store.open({ dir, schema });
  t.equal(again.nodeId, 'eu-1');
  await again.close();
});

t.test('a data dir records its storage format, and one it cannot read is refused before any record is written', async (t) => {
  const dir = tempDir(t);
  const packr = new Packr({ useRecords: false, moreTypes: false, int64AsType: 'number' });
  const s = await Store.open({ dir, schema, nodeId: 'eu-1' });
  const org = await s.create('Org', { name: 'A', kind: 'vendor' });
  await s.close();
  const raw = async (): Promise<[string, Buffer][]> => {
    const db = new Level<string, Buffer>(dir, { keyEncoding: 'utf8', valueEncoding: 'buffer' });
    const all = await db.iterator().all();
    await db.close();
    return all;
  };
  const setFormat = async (value: unknown): Promise<void> => {
    const db = new Level<string, Buffer>(dir, { keyEncoding: 'utf8', valueEncoding: 'buffer' });
    if (value === undefined) await db.del('mformat');
    else await db.put('mformat', packr.pack(value));
    await db.close();
  };
  const format = async (): Promise<unknown> => {
    const v = new Map(await raw()).get('mformat');
    return v === undefined ? undefined : packr.unpack(v);
  };
  t.equal(await format(), 2, 'a new data dir is marked with the format this build writes');

  const advice = 'run a Meridian that reads it, or restore a backup taken before the upgrade into a new dir';
  for (const [bad, why] of [
    [3, 'storage format 3, written by a newer Meridian, and this one reads formats up to 2'],
    [2.5, 'an unknown storage format (2.5); this Meridian reads formats 1 to 2'],
    [0, 'an unknown storage format (0); this Meridian reads formats 1 to 2'],
    ['next', 'an unknown storage format ("next"); this Meridian reads formats 1 to 2'],
    [Buffer.from([0xd9, 0x05]), 'an unknown storage format (null); this Meridian reads formats 1 to 2'], // a str8 cut short: not MessagePack
  ] as const) {
    if (Buffer.isBuffer(bad)) {
      const db = new Level<string, Buffer>(dir, { keyEncoding: 'utf8', valueEncoding: 'buffer' });
      await db.put('mformat', bad);
      await db.close();
    } else await setFormat(bad);
    const before = await raw();
    const refused = await Store.open({ dir, schema }).then(() => undefined, (e: unknown) => e as { code: string; message: string });
    t.equal(refused?.code, 'bad-request', `format ${String(bad)} refused`);
    t.equal(refused?.message, `data dir ${dir} holds ${why}; ${advice}`);
    t.same(await raw(), before, `format ${String(bad)}: no record written, not even this start's clientID`);
  }

  // a data dir from before the marker
  await setFormat(undefined);
  const old = await Store.open({ dir, schema });
  t.equal((await old.get(org.id))?.fields.name, 'A', 'an unmarked data dir is read');
  await old.close();
  t.equal(await format(), 2, 'and marked');
});

t.test('a second open of the same dir is refused with a clear sentence', async (t) => {
  const dir = tempDir(t);
  const s = await Store.open({ dir, schema });
  t.teardown(() => s.close());
  await t.rejects(Store.open({ dir, schema }), { code: 'locked', message: `data dir ${dir} is in use by another Meridian process; stop it or choose another --dir` });
});

t.test("a dir that cannot be opened for another reason says that reason, though its path holds 'lock'", async (t) => {
  const dir = join(tempDir(t), 'clock-tower');
  const s = await Store.open({ dir, schema });
  await s.close();
  writeFileSync(join(dir, 'CURRENT'), 'MANIFEST-999999\n');
  await t.rejects(Store.open({ dir, schema }), { code: 'bad-request', message: new RegExp(`^cannot open the store in ${dir}: IO error: .*MANIFEST-999999: No such file or directory$`) });
});

t.test('a data dir whose versions follow an older formula is brought up to this one on open, once', async (t) => {
  const dir = tempDir(t);
  const s1 = await Store.open({ dir, schema });
  const org = await s1.create('Org', { name: 'A', kind: 'vendor' });
  const removed = await s1.create('Person', { cn: 'Bo', sn: 'Ng', telephoneNumber: ['+27 021'] });
  await s1.update(removed.id, { telephoneNumber: null });
  const gone = await s1.create('Org', { name: 'C', kind: 'vendor' });
  await s1.delete(gone.id);
  // more than one rewrite batch (1,000 records) of them
  const more = await Promise.all(Array.from({ length: 1100 }, (_, i) => s1.create('Org', { name: `M${i}`, kind: 'vendor' })));
  const ids = [org.id, removed.id, gone.id, ...more.map((o) => o.id)];
  const want = await Promise.all(ids.map(async (id) => (await s1.getUncached(id))!.version));
  t.equal(s1.versionsMigrated, 0, 'a new data dir has nothing to migrate');
  await s1.close();

  // what a build of the earlier formula left behind: other versions, no formula recorded
  const packr = new Packr({ useRecords: false, moreTypes: false, int64AsType: 'number' });
  const db = new Level<string, Buffer>(dir, { keyEncoding: 'utf8', valueEncoding: 'buffer' });
  for (const [i, id] of ids.entries()) {
    const rec = packr.unpack((await db.get(`o${id}`))!) as { v: string };
    rec.v = `old-formula-${i}`;
    await db.put(`o${id}`, packr.pack(rec));
  }
  await db.del('mversionFormula');
  await db.close();

  const s2 = await Store.open({ dir, schema });
  t.equal(s2.versionsMigrated, ids.length, 'every object was rewritten');
  t.same(await Promise.all(ids.map(async (id) => (await s2.getUncached(id))!.version)), want, 'to the versions this build computes for the same states');
  await s2.close();
  // a stale version put back now stays: the formula is recorded, so the next open does not scan
  const db2 = new Level<string, Buffer>(dir, { keyEncoding: 'utf8', valueEncoding: 'buffer' });
  const rec = packr.unpack((await db2.get(`o${org.id}`))!) as { v: string };
  rec.v = 'left-alone';
  await db2.put(`o${org.id}`, packr.pack(rec));
  await db2.close();
  const s3 = await Store.open({ dir, schema });
  t.equal(s3.versionsMigrated, 0, 'and only once');
  t.equal((await s3.getUncached(org.id))!.version, 'left-alone', 'no second scan');
  await s3.close();
});

t.test('the feed is read up to its durable head only: an entry LevelDB holds before its batch is done is not handed out', async (t) => {
  const store = await openStore(t);
  const o = await store.create('Org', { name: 'Acme', kind: 'customer' });
  const head = store.lastSeq;
  // as a batch written to LevelDB whose commit has not yet run its callbacks: the entry after the head
  const db = (store as unknown as { db: { get(k: string): Promise<Buffer | undefined>; put(k: string, v: Buffer): Promise<void> } }).db;
  await db.put(keys.feed(head + 1), (await db.get(keys.feed(head)))!);
  t.same(await store.readFeed(head), [], 'nothing past the head');
  // (read from disk: the in-memory tail of the feed, which holds durable entries only, is emptied)
  const tail = store as unknown as { recent: unknown[]; recentStart: number };
  t.ok(Array.isArray(tail.recent) && tail.recent.length > 0, 'the tail held the entry');
  Object.assign(tail, { recent: [], recentStart: 0 });
  t.same((await store.readFeed(head - 1)).map((e) => [e.seq, e.id]), [[head, o.id]], 'and up to it, all, from disk');
});

t.test("the feed tags of peers met are kept across a restart: a peer's dir made again is still told apart after this node's restart", async (t) => {
  const dir = tempDir(t);
  const s1 = await Store.open({ dir, schema, nodeId: 'p' });
  t.match(s1.feedTag, /^[0-9a-f]{8}$/);
  t.same(s1.claimFeeds({ a: '0123abcd' }, false), { taken: 1 }, 'a check alone takes nothing');
  t.same(s1.knownFeeds(), {});
  t.same(s1.claimFeeds({ a: '0123abcd' }, true), { taken: 1 });
  t.same(s1.claimFeeds({ b: '89abcdef', p: s1.feedTag }, true), { taken: 1 }, "this node's own id with its own tag passes, and is not recorded");
  t.same(s1.knownFeeds(), { a: '0123abcd', b: '89abcdef' });
  await s1.saveFeeds();
  await s1.close();
  const s2 = await Store.open({ dir, schema });
  t.same(s2.knownFeeds(), { a: '0123abcd', b: '89abcdef' });
  t.equal(s2.feedTag, s1.feedTag, 'and its own tag is the same');
  // two sessions checking at once: the second sees what the first took, before it is on disk
  t.same(s2.claimFeeds({ c: 'cccc0000', a: '0123abcd' }, true), { taken: 1 });
  t.same(s2.claimFeeds({ c: 'cccc1111' }, true), { node: 'c', known: 'cccc0000', shown: 'cccc1111' }, 'a tag taken a moment ago counts');
  t.same(s2.claimFeeds({ d: 'dddd0000', p: 'ffffffff' }, true), { node: 'p', known: s2.feedTag, shown: 'ffffffff' }, "its own id under another tag is refused");
  t.equal(s2.knownFeeds()['d'], undefined, 'and nothing of a refused claim is taken');
  await s2.saveFeeds();
  await s2.close();
});
