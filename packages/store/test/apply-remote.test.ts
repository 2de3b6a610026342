import t, { type Test } from 'tap';
import { checkIndexes, type ClonedState, type Store } from '../dist/index.js';
import { Level } from 'level';
import { decode, encode } from '../dist/codec.js';
import { openStore, ship, tempDir } from './fixtures.js';

async function pair(t: Test): Promise<[Store, Store]> {
  return [await openStore(t, { nodeId: 'a' }), await openStore(t, { nodeId: 'b' })];
}

/** Nodes a, b and c, each with a Person of its own taking the uid given for it while they are apart. */
async function threeHolders(t: Test, uids: [string, string, string]) {
  const [a, b] = await pair(t);
  const c = await openStore(t, { nodeId: 'c' });
  const [pa, pb, pc] = [await a.create('Person', { cn: 'A', sn: 'A', uid: uids[0] }), await b.create('Person', { cn: 'B', sn: 'B', uid: uids[1] }), await c.create('Person', { cn: 'C', sn: 'C', uid: uids[2] })];
  return { a, b, c, pa, pb, pc };
}

t.test('remote changes converge, keep their origin, and apply once', async (t) => {
  const [a, b] = await pair(t);
  const org = await a.create('Org', { name: 'Acme', kind: 'customer' });
  const p = await a.create('Person', { cn: 'Anna', sn: 'A', mail: 'anna@x.com', org: org.id }, { principal: 'admin' });
  await ship(a, b);
  const onB = await b.get(p.id);
  t.same(onB?.fields, p.fields);
  t.equal(onB?.version, p.version, 'same state, same version on both nodes');
  t.same(b.versionVector(), { a: 2 });
  t.equal(await b.checkpoint('a'), 2);
  const feed = await b.readFeed(0);
  t.same(feed.map((e) => [e.origin, e.originSeq, e.principal]), [['a', 1, 'system'], ['a', 2, 'admin']]);
  const again = await b.applyRemote((await a.readFeed(0)).map(({ seq: _s, ...c }) => c));
  t.same(again, { applied: 0, skipped: 2, conflicts: 0 }, 'already covered by the version vector');
  t.equal((await b.lookup('Person', 'mail', 'ANNA@x.com')).items[0]?.id, p.id, 'indexes follow remote changes');
  t.same(await checkIndexes(b), []);
});

t.test('concurrent writes to one field converge and both nodes record the same conflict', async (t) => {
  const [a, b] = await pair(t);
  const o = await a.create('Org', { name: 'Acme', kind: 'customer' });
  let sa = await ship(a, b);
  await a.update(o.id, { name: 'Acme East' });
  await b.update(o.id, { name: 'Acme West' });
  await b.update(o.id, { kind: 'reseller' }); // a different field: no conflict
  const sb = await ship(b, a);
  sa = await ship(a, b, sa);
  const [oa, ob] = [await a.get(o.id), await b.get(o.id)];
  t.same(oa?.fields, ob?.fields, 'same fields');
  t.equal(oa?.version, ob?.version, 'same version');
  t.equal(oa?.fields['kind'], 'reseller');
  const [ca, cb] = [(await a.conflicts()).items, (await b.conflicts()).items];
  t.equal(ca.length, 1);
  t.same(ca.map(({ detected: _d, key: _k, ...r }) => r), cb.map(({ detected: _d, key: _k, ...r }) => r), 'the same record on both');
  const c = ca[0]!;
  t.equal(c.field, 'name');
  t.same(c.values.map((v) => v.value).sort(), ['Acme East', 'Acme West']);
  t.same(new Set(c.values.map((v) => v.node)), new Set(['a', 'b']), 'each value names its node');
  const winner = c.values.find((v) => v.item === c.winner)!;
  t.equal(oa?.fields['name'], winner.value, 'the recorded winner is the value kept');

  // writing the field again settles it, and the settlement replicates
  await b.update(o.id, { name: 'Acme Global' });
  await ship(b, a, sb);
  t.same((await a.conflicts({ open: true })).items, []);
  t.same((await b.conflicts({ open: true })).items, []);
  t.equal((await a.conflicts()).items[0]?.settled !== undefined, true, 'kept, marked settled');
  void sa;
});

t.test('a unique value taken on both sides while partitioned is kept and reported', async (t) => {
  const [a, b] = await pair(t);
  const pa = await a.create('Person', { cn: 'A', sn: 'A', uid: 'jo' });
  const pb = await b.create('Person', { cn: 'B', sn: 'B', uid: 'JO' });
  const result = await a.applyRemote((await b.readFeed(0, 10)).map(({ seq: _seq, ...c }) => c));
  t.equal(result.conflicts, 1, 'the apply reports the conflict it made');
  t.equal((await a.get(pb.id))?.fields['uid'], 'JO', 'the remote object is stored as it is');
  const c = (await a.conflicts()).items;
  t.equal(c.length, 1);
  t.match(c[0], { field: 'uid', winner: `unique:${pa.id}` });
  t.equal(a.openConflictCount(), 1, 'counted as open at once, not only after a restart');
  t.equal((await a.lookup('Person', 'uid', 'jo')).items[0]?.id, pa.id, 'the first holder keeps the index entry');

  // a write of the field settles it
  await a.update(pb.id, { uid: 'jo-b' });
  t.same((await a.conflicts({ open: true })).items, [], 'settled by the local write');
  t.equal(a.openConflictCount(), 0);
  t.equal((await a.conflicts()).items[0]?.settled !== undefined, true, 'kept, marked settled');
});

t.test('when the holder of a unique value lets it go, the other holder takes its index entry on every node', async (t) => {
  // each node keeps its own object as the first holder, and records the clash on the other's
  const dirB = tempDir(t);
  const a = await openStore(t, { nodeId: 'a' });
  let b = await openStore(t, { nodeId: 'b', dir: dirB });
  const pa = await a.create('Person', { cn: 'A', sn: 'A', uid: 'jo' });
  const pb = await b.create('Person', { cn: 'B', sn: 'B', uid: 'JO' });
  let sa = await ship(a, b);
  let sb = await ship(b, a);
  const holder = async (s: Store): Promise<string | undefined> => (await s.lookup('Person', 'uid', 'jo')).items[0]?.id;
  t.equal(await holder(a), pa.id);
  t.equal(await holder(b), pb.id);
  t.match((await b.conflicts({ open: true })).items, [{ objectId: pa.id, winner: `unique:${pb.id}` }]);
  t.same(await checkIndexes(a), [], 'a clash recorded is consistent');
  t.same(await checkIndexes(b), []);

  // a write that keeps the value (case folded) is no way out of the clash
  await a.update(pb.id, { uid: 'Jo' });
  t.equal(a.openConflictCount(), 1, 'still held twice, still open');
  sa = await ship(a, b, sa);
  t.equal(b.openConflictCount(), 1);

  // a renames pb: on a the clash record on pb is settled; on b pb held the entry, which pa now takes
  // (after a restart, which finds the waiting holder in the open records)
  await b.close();
  b = await openStore(t, { nodeId: 'b', dir: dirB });
  await a.update(pb.id, { uid: 'jo-b' });
  sa = await ship(a, b, sa);
  t.equal(await holder(b), pa.id, 'the value is found on b again');
  t.equal(await holder(a), pa.id, 'the same object on both nodes');
  t.equal((await b.lookup('Person', 'uid', 'jo-b')).items[0]?.id, pb.id);
  t.equal(b.openConflictCount(), 0, "b's record of the clash is settled");
  t.equal(a.openConflictCount(), 0);
  t.same(await checkIndexes(a), []);
  t.same(await checkIndexes(b), []);

  // the entry moves on a delete too, and back on a write that takes up the value again it is refused
  const qa = await a.create('Person', { cn: 'Q', sn: 'A', mail: ['q@x.com'] });
  const qb = await b.create('Person', { cn: 'Q', sn: 'B', mail: ['other@x.com', 'Q@X.com'] });
  sa = await ship(a, b, sa);
  sb = await ship(b, a, sb);
  t.equal((await b.lookup('Person', 'mail', 'q@x.com')).items[0]?.id, qb.id);
  await b.delete(qb.id);
  t.equal((await b.lookup('Person', 'mail', 'q@x.com')).items[0]?.id, qa.id, 'a local delete hands the entry over');
  t.equal(b.openConflictCount(), 0);
  await t.rejects(b.undelete(qb.id), /value "q@x.com" is already used by Person/, 'taking the value up again is refused');
  sb = await ship(b, a, sb);
  t.same(await checkIndexes(a), []);
  t.same(await checkIndexes(b), []);
  void sa;
  void sb;
});

t.test('of three holders of a unique value, the entry passes to the least id, and the last takes it after', async (t) => {
  const { a, b, c, pa, pb, pc } = await threeHolders(t, ['sam', 'sam', 'sam']);
  await ship(b, a);
  const result = await a.applyRemote((await c.readFeed(0, 10)).map(({ seq: _seq, ...ch }) => ch));
  t.equal(result.conflicts, 1);
  t.equal(a.openConflictCount(), 2);
  t.same(await checkIndexes(a), []);
  const [first, second] = [pb.id, pc.id].sort() as [string, string];
  await a.purge(pa.id);
  t.equal((await a.lookup('Person', 'uid', 'sam')).items[0]?.id, first, 'a purge hands the entry to the least id waiting');
  t.match((await a.conflicts({ open: true })).items, [{ objectId: second, winner: `unique:${first}` }], 'the other holder still waits, its record naming the new holder');
  t.same(await checkIndexes(a), []);
  await a.update(first, { uid: 'sam-1' });
  t.equal((await a.lookup('Person', 'uid', 'sam')).items[0]?.id, second, 'then the last holder takes it');
  t.equal(a.openConflictCount(), 0);
  t.same(await checkIndexes(a), []);
});

t.test('a purge of a waiting holder while the holder lets the value go leaves no conflict record of the purged object', async (t) => {
  const { a, b, c, pa, pb, pc } = await threeHolders(t, ['sam', 'sam', 'sam']);
  await ship(b, a);
  await a.applyRemote((await c.readFeed(0, 10)).map(({ seq: _seq, ...ch }) => ch));
  // pa holds the entry; of the two waiting, the purged one sorts last, so the value passes to the other
  const [next, purged] = [pb.id, pc.id].sort() as [string, string];
  // The holder lets the value go just after the purge has read the purged object's records from the
  // disk: its record is then written anew naming the next holder, where that read did not see it.
  const db = (a as unknown as { db: { keys(range: { gte: string; lt: string }): AsyncIterable<string> } }).db;
  const keysOf = db.keys.bind(db);
  let released = false;
  db.keys = (range) => {
    const read = keysOf(range);
    if (!range.gte.startsWith(`k${purged}`)) return read;
    return (async function* () {
      yield* read;
      await a.update(pa.id, { uid: 'sam-a' });
      released = true;
    })();
  };
  await a.purge(purged);
  t.ok(released, "the value was let go between the purge's read of the records and its batch");
  const left: string[] = [];
  for await (const [k] of a.raw(`k${purged}\u0000`)) left.push(k);
  t.same(left, [], 'no record of the purged object is left');
  t.same((await a.conflicts({ open: true })).items.filter((r) => r.objectId === purged), [], 'nor listed open');
  t.same((await a.lookup('Person', 'uid', 'sam')).items.map((o) => o.id), [next], 'the value passed to the other holder');
  t.same(await checkIndexes(a), []);
});

t.test('an object holding two values of a multi-valued field that one other object holds too has a record of each', async (t) => {
  const dirA = tempDir(t);
  let a = await openStore(t, { nodeId: 'a', dir: dirA });
  const b = await openStore(t, { nodeId: 'b' });
  const y = await a.create('Person', { cn: 'Y', sn: 'Y', mail: ['p@x.com', 'q@x.com'] });
  const x = await b.create('Person', { cn: 'X', sn: 'X', mail: ['P@x.com', 'Q@x.com', 'r@x.com'] });
  await ship(b, a);
  t.equal(a.openConflictCount(), 2, 'one record per value');
  t.same(await checkIndexes(a), []);
  await a.close();
  a = await openStore(t, { nodeId: 'a', dir: dirA });
  await a.update(x.id, { mail: ['Q@x.com', 'r@x.com'] });
  t.equal(a.openConflictCount(), 1, 'letting go of one value settles its record only');
  await a.update(y.id, { mail: ['q@x.com', 's@x.com'] });
  t.equal((await a.lookup('Person', 'mail', 'p@x.com')).items.length, 0, 'a value no one holds any more is free');
  await a.update(y.id, { mail: ['s@x.com'] });
  t.equal((await a.lookup('Person', 'mail', 'q@x.com')).items[0]?.id, x.id, 'the value still held passes to its holder');
  t.equal(a.openConflictCount(), 0);
  t.same(await checkIndexes(a), []);
});

t.test('records of unique values held twice left by an older build are brought in line at open', async (t) => {
  // Older builds left a record open on a holder they deleted, and deleted an entry
  // while another object still held the value. Both states are made here by hand.
  const [a, b] = await pair(t);
  const pa = await a.create('Person', { cn: 'A', sn: 'A', uid: 'lee', mail: ['lee@x.com'] });
  const pb = await b.create('Person', { cn: 'B', sn: 'B', uid: 'LEE' });
  const pc = await b.create('Person', { cn: 'C', sn: 'C', mail: ['LEE@x.com'] });
  await ship(b, a);
  await a.delete(pb.id); // settles pb's record of uid lee
  await a.update(pa.id, { mail: ['al@x.com'] }); // pc takes lee@x.com, its record settled
  const dir = a.dir;
  const records: [string, Buffer][] = [];
  for await (const kv of a.raw('k')) records.push(kv);
  await a.close();
  const db = new Level<string, Buffer>(dir, { keyEncoding: 'utf8', valueEncoding: 'buffer' });
  for (const [k, v] of records) {
    const { settled: _s, ...rec } = decode<Record<string, unknown>>(v);
    await db.put(k, encode(rec)); // open again, as an older build left them
  }
  await db.del('uPerson\u0000mail\u0000lee@x.com');
  await db.close();
  const again = await openStore(t, { dir, nodeId: 'a' });
  t.equal(again.openConflictCount(), 0, 'the record on the deleted holder is settled, and that of the holder given the entry');
  t.equal((await again.lookup('Person', 'mail', 'lee@x.com')).items[0]?.id, pc.id, 'the entry is given to the holder left');
  t.same(await checkIndexes(again), []);
  await again.update(pa.id, { uid: 'al' });
  t.equal((await again.lookup('Person', 'uid', 'lee')).items.length, 0, 'not passed to the deleted object');
  t.same(await checkIndexes(again), []);
});

t.test('a purged holder waiting for a unique value is never given its entry', async (t) => {
  const stores = [await openStore(t, { nodeId: 'a' }), await openStore(t, { nodeId: 'b' }), await openStore(t, { nodeId: 'c' })];
  const [a, b, c] = stores as [Store, Store, Store];
  const pa = await a.create('Person', { cn: 'A', sn: 'A', uid: 'max' });
  const pb = await b.create('Person', { cn: 'B', sn: 'B', uid: 'max' });
  const pc = await c.create('Person', { cn: 'C', sn: 'C', uid: 'max' });
  await ship(b, a);
  await ship(c, a);
  const [first, second] = [pb.id, pc.id].sort() as [string, string];
  await a.purge(first);
  await a.update(pa.id, { uid: 'max-a' });
  t.equal((await a.lookup('Person', 'uid', 'max')).items[0]?.id, second, 'the holder left takes it');
  t.equal(a.openConflictCount(), 0);
  t.same(await checkIndexes(a), []);
});

t.test('of three holders brought in line at open, the least takes the missing entry and the other names it', async (t) => {
  const { a, b, c, pa, pb, pc } = await threeHolders(t, ['ann', 'ANN', 'Ann']);
  await ship(b, a);
  await ship(c, a);
  const before: [string, Buffer][] = [];
  for await (const kv of a.raw('k')) before.push(kv);
  await a.update(pa.id, { uid: 'ann-a' }); // as an older build did: the entry deleted, both records left open
  const dir = a.dir;
  await a.close();
  const db = new Level<string, Buffer>(dir, { keyEncoding: 'utf8', valueEncoding: 'buffer' });
  for await (const k of db.keys({ gte: 'k', lt: 'l' })) await db.del(k);
  for (const [k, v] of before) await db.put(k, v);
  await db.del('uPerson\u0000uid\u0000ann');
  await db.close();
  const again = await openStore(t, { dir, nodeId: 'a' });
  const [first, second] = [pb.id, pc.id].sort() as [string, string];
  t.equal((await again.lookup('Person', 'uid', 'ann')).items[0]?.id, first);
  t.match((await again.conflicts({ open: true })).items, [{ objectId: second, winner: `unique:${first}` }], 'the other record names the new holder');
  t.same(await checkIndexes(again), []);
});

t.test('a unique value that arrives in a state (a clone, anti-entropy) is recorded as held twice, as a change is', async (t) => {
  const [a, b] = await pair(t);
  const pa = await a.create('Person', { cn: 'A', sn: 'A', uid: 'kim' });
  const pb = await b.create('Person', { cn: 'B', sn: 'B', uid: 'kim-b' });
  await ship(b, a);
  t.equal(a.openConflictCount(), 0);
  await b.update(pb.id, { uid: 'Kim' }); // not shipped: a state brings it
  const snap = b.stateSnapshot();
  const states: ClonedState[] = [];
  for await (const f of snap.batches(100)) states.push(...f);
  await snap.close();
  await a.cloneStates(states); // pb is held here: merged
  t.equal((await a.lookup('Person', 'uid', 'kim')).items[0]?.id, pa.id);
  t.match((await a.conflicts({ open: true })).items, [{ objectId: pb.id, winner: `unique:${pa.id}` }], 'the merge recorded the clash');
  t.same(await checkIndexes(a), []);

  // a node cloned while it holds the value already records it for the cloned object (not merged: new here)
  const c = await openStore(t, { nodeId: 'c' });
  const pc = await c.create('Person', { cn: 'C', sn: 'C', uid: 'kim' });
  await c.cloneStates(states);
  t.equal((await c.lookup('Person', 'uid', 'kim')).items[0]?.id, pc.id);
  t.match((await c.conflicts({ open: true })).items, [{ objectId: pb.id, winner: `unique:${pc.id}` }]);
  t.same(await checkIndexes(c), []);
  await c.delete(pc.id);
  t.equal((await c.lookup('Person', 'uid', 'kim')).items[0]?.id, pb.id, 'and hands it over when its holder lets go');
  t.equal(c.openConflictCount(), 0);
  t.same(await checkIndexes(c), []);
});

t.test('a remote delete and a local update merge into a tombstone with the update', async (t) => {
  const [a, b] = await pair(t);
  const o = await a.create('Org', { name: 'Acme', kind: 'customer' });
  await ship(a, b);
  await a.delete(o.id);
  await b.update(o.id, { name: 'Acme 2' });
  await ship(a, b, 1);
  await ship(b, a, 1);
  const [oa, ob] = [await a.get(o.id), await b.get(o.id)];
  t.equal(oa?.deleted, true);
  t.same(oa, { ...ob, seq: oa?.seq, hlc: oa?.hlc, modified: oa?.modified }, 'same on both');
  t.same(a.objectCounts(), b.objectCounts());
});

t.test('the batches of successive staged applies reach the disk in the order they were applied', async (t) => {
  // replication acks each frame once its batch is durable, and an ack vouches for every frame before it
  const [a, b] = await pair(t);
  for (let i = 0; i < 30; i++) await a.create('Org', { name: `O${i}`, kind: 'vendor' });
  const feed = (await a.readFeed(0, 100)).map(({ seq: _s, ...c }) => c);
  const settled: number[] = [];
  const durables: Promise<void>[] = [];
  const frames = [feed.slice(0, 10), feed.slice(10, 20), feed.slice(0, 10), feed.slice(20, 30)];
  for (const [i, changes] of frames.entries()) {
    // the third frame repeats the first: all skipped, only its checkpoint is written
    const { durable } = await b.applyRemoteStaged(changes, { checkpoint: { peer: 'a', seq: 10 * (i + 1) } });
    durables.push(durable.then(() => void settled.push(i)));
  }
  await Promise.all(durables);
  t.same(settled, [0, 1, 2, 3], 'in apply order, the all-skipped frame included');
  t.equal(await b.checkpoint('a'), 40);
});

t.test('a node cloned by states names the writers in a conflict as the nodes that saw the writes arrive', async (t) => {
  // the clone brings a's write inside a state, never as a change of a's: only a's clientID space tells its writer
  const [a, b] = await pair(t);
  const c = await openStore(t, { nodeId: 'c' });
  const o = await a.create('Org', { name: 'Acme', kind: 'customer' });
  await ship(a, b);
  await a.update(o.id, { name: 'Acme East' });
  await b.update(o.id, { name: 'Acme West' });
  const snap = a.stateSnapshot();
  for await (const frame of snap.batches(100)) await c.cloneStates(frame);
  await c.cloneStates([], { peer: 'a', head: snap.head, vector: snap.vector });
  await snap.close();
  await ship(b, a);
  await ship(b, c);
  const [oa, oc] = [await a.get(o.id), await c.get(o.id)];
  t.equal(oc?.version, oa?.version, 'converged');
  const strip = (items: Awaited<ReturnType<Store['conflicts']>>['items']) => items.map(({ detected: _d, key: _k, ...r }) => r);
  const [ca, cc] = [strip((await a.conflicts()).items), strip((await c.conflicts()).items)];
  t.equal(cc.length, 1, 'the clone detects the conflict');
  t.same(cc, ca, 'the same record as on a');
  t.same(new Set(cc[0]?.values.map((v) => v.node)), new Set(['a', 'b']), 'each value names its node');
});

t.test('readUntil reads again as soon as a change shows, and gives up after its time', async (t) => {
  const [a, b] = await pair(t);
  const o = await a.create('Org', { name: 'Acme', kind: 'customer' });
  let reads = 0;
  const probe = async () => {
    reads++;
    return b.get(o.id);
  };
  const started = performance.now();
  const waiting = b.readUntil(probe, (x) => x !== undefined, 10_000);
  await new Promise((r) => setTimeout(r, 50));
  t.equal(reads, 1, 'no polling while nothing changes');
  await ship(a, b);
  const got = await waiting;
  t.equal(got?.id, o.id, 'resolves with what the probe read last');
  t.ok(performance.now() - started < 2000, 'woken by the change, not by the time limit');
  t.ok(reads <= 3, `read again on the change (${reads} reads)`);

  const t0 = performance.now();
  const never = await b.readUntil(() => b.get('nothing-here'), (x) => x !== undefined, 150);
  t.equal(never, undefined, 'the last answer once the time is up');
  t.ok(performance.now() - t0 >= 140, 'waited its time');

  // a state stored without a feed entry (a clone, a merge) wakes it too
  const c = await openStore(t, { nodeId: 'c' });
  const t1 = performance.now();
  const cloned = c.readUntil(() => c.get(o.id), (x) => x !== undefined, 10_000);
  const snap = a.stateSnapshot();
  for await (const batch of snap.batches(10)) await c.cloneStates(batch);
  await snap.close();
  t.equal((await cloned)?.id, o.id);
  t.ok(performance.now() - t1 < 2000, 'woken by the cloned state');
});

t.test("a peer's change stamped at the largest HLC a frame takes does not carry this node's clock past a day ahead", async (t) => {
  const [a, b] = await pair(t);
  await a.create('Org', { name: 'Late', kind: 'customer' });
  const [entry] = await a.readFeed(0, 1);
  const { seq: _seq, ...change } = entry!;
  // 2^53 - 1 passes every frame check; the next tick would be 2^53, which no peer takes
  await b.applyRemote([{ ...change, hlc: 2 ** 53 - 1 }]);
  const made = await b.create('Org', { name: 'Mine', kind: 'vendor' });
  t.ok(Number.isSafeInteger(made.hlc), 'a safe integer');
  t.ok(made.hlc <= (Date.now() + 24 * 3600 * 1000 + 1000) * 1000, `at most a day ahead of the wall clock (${made.hlc})`);
});
