import t from 'tap';
import type { ClonedState, Store } from '../dist/index.js';
import { encode } from '../dist/codec.js';
import { openStore, tempDir } from './fixtures.js';

/** Every state `from` holds, as a clone or a repair would send them. */
async function statesOf(from: Store): Promise<ClonedState[]> {
  const snap = from.stateSnapshot();
  const states: ClonedState[] = [];
  try {
    for await (const frame of snap.batches(100)) states.push(...frame);
  } finally {
    await snap.close();
  }
  return states;
}

async function ship(from: Store, to: Store): Promise<void> {
  const entries = await from.readFeed(0, 10_000);
  await to.applyRemote(entries.map(({ seq: _seq, ...c }) => c));
}

t.test('statesEpoch counts the batches that stored objects without feed entries, on disk and across a restart', async (t) => {
  const dir = tempDir(t);
  const a = await openStore(t, { nodeId: 'a' });
  let b = await openStore(t, { nodeId: 'b', dir });
  const tag = b.feedTag;
  t.match(tag, /^[0-9a-f]{8}$/);
  t.not(a.feedTag, tag, "another node's feed has another tag");
  t.equal(b.statesEpoch, 0);

  const p = await a.create('Person', { cn: 'Anna', sn: 'A' });
  await a.create('Org', { name: 'Acme', kind: 'vendor' });
  await b.create('Org', { name: 'Local', kind: 'vendor' });
  const seq = b.lastSeq;
  await b.cloneStates(await statesOf(a));
  t.ok(b.statesEpoch > 0, 'objects new here, stored from states');
  t.equal(b.lastSeq, seq, 'with no feed entry');

  const after = b.statesEpoch;
  await b.cloneStates(await statesOf(a));
  t.equal(b.statesEpoch, after, 'states that change nothing leave it');

  await a.update(p.id, { sn: 'Changed' });
  await b.cloneStates(await statesOf(a));
  t.ok(b.statesEpoch > after, 'a merge that changed an object held here');
  t.equal((await b.get(p.id))?.fields['sn'], 'Changed');

  const merged = b.statesEpoch;
  await b.close();
  b = await openStore(t, { nodeId: 'b', dir });
  t.equal(b.statesEpoch, merged, 'kept across a restart');
  t.equal(b.feedTag, tag, 'as is the feed tag');
});

t.test("an erase by a peer's purge marker naming a change applied here already (no feed entry) grows it too", async (t) => {
  const a = await openStore(t, { nodeId: 'a' });
  const b = await openStore(t, { nodeId: 'b' });
  const p = await a.create('Person', { cn: 'Gone', sn: 'G' });
  await ship(a, b);
  const [before, seq] = [b.statesEpoch, b.lastSeq];
  // a marker that names a#1, which b applied when the object was made: its feed entry would repeat that change's
  const marker = { h: a.hlc, p: 'admin', o: 'a', n: 1, t: 'Person', r: 1 };
  await b.cloneStates([{ id: p.id, record: encode(marker), purged: true }]);
  t.equal(await b.get(p.id), undefined, 'erased');
  t.equal(b.lastSeq, seq, 'with no feed entry');
  t.ok(b.statesEpoch > before, 'the epoch grew');
});

t.test('a data dir made again under the same node id has another feed tag', async (t) => {
  const first = await openStore(t, { nodeId: 'n' });
  const again = await openStore(t, { nodeId: 'n' });
  t.not(first.feedTag, again.feedTag);
});

t.test('a frame of many merges raises the epoch once, when the whole frame is on disk', async (t) => {
  const a = await openStore(t, { nodeId: 'a' });
  const b = await openStore(t, { nodeId: 'b' });
  const ids: string[] = [];
  for (let i = 0; i < 20; i++) ids.push((await a.create('Org', { name: `O${i}`, kind: 'vendor' })).id);
  await ship(a, b);
  for (const id of ids) await a.update(id, { name: `${id} changed` });
  const before = b.statesEpoch;
  const seen: number[] = [];
  const off = b.onStates(() => seen.push(b.statesEpoch));
  const { durable } = await b.cloneStatesStaged(await statesOf(a));
  t.equal(b.statesEpoch, before, 'not counted while the frame is on its way to disk');
  await durable;
  off();
  t.equal(b.statesEpoch, before + 1, 'one number for the frame');
  t.same(seen, [before + 1], 'counted by the time its listeners hear of it');
  for (const id of ids) t.equal((await b.get(id))?.fields['name'], `${id} changed`);
});

t.test('a data dir from before feed ids that was cloned starts at epoch 1: since=0 must not pass there', async (t) => {
  const dir = tempDir(t);
  const a = await openStore(t, { nodeId: 'a' });
  await a.create('Org', { name: 'Acme', kind: 'vendor' });
  let b = await openStore(t, { nodeId: 'b', dir });
  const snap = a.stateSnapshot();
  for await (const frame of snap.batches(100)) await b.cloneStates(frame);
  await b.cloneStates([], { peer: 'a', head: snap.head, vector: snap.vector });
  await snap.close();
  await b.close();
  // as an older build left it: no feed id, no epoch
  const { Level } = await import('level');
  const db = new Level<string, Buffer>(dir, { keyEncoding: 'utf8', valueEncoding: 'buffer' });
  await db.batch([
    { type: 'del', key: 'mfeedId' },
    { type: 'del', key: 'mstatesEpoch' },
  ]);
  t.ok(await db.get('mfeedBase'), 'the clone left its feed base');
  await db.close();
  b = await openStore(t, { nodeId: 'b', dir });
  t.equal(b.statesEpoch, 1);
  await b.close();
  b = await openStore(t, { nodeId: 'b', dir });
  t.equal(b.statesEpoch, 1, 'once: the next open keeps it');
});

t.test("a migration of versions raises it, once: every ETag a cache holds changes with it", async (t) => {
  const dir = tempDir(t);
  let a = await openStore(t, { nodeId: 'a', dir });
  await a.create('Org', { name: 'Acme', kind: 'vendor' });
  const before = a.statesEpoch;
  await a.close();
  // as a build of an older version formula left it
  const { Level } = await import('level');
  const db = new Level<string, Buffer>(dir, { keyEncoding: 'utf8', valueEncoding: 'buffer' });
  await db.del('mversionFormula');
  await db.close();
  a = await openStore(t, { nodeId: 'a', dir });
  t.equal(a.statesEpoch, before + 1, 'raised by the migration');
  await a.close();
  a = await openStore(t, { nodeId: 'a', dir });
  t.equal(a.statesEpoch, before + 1, 'once: the next open keeps it');
});
