/**
 * Anti-entropy between two real stores, through two SyncSessions wired
 * back to back in memory (every frame encoded and decoded as on the wire):
 * what crosses is the digest, pages of state vectors, and then only Yjs
 * diffs of the objects that differ, whole records of those the subscriber
 * lacks, and purge markers.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { decode } from 'msgpackr';
import * as Y from 'yjs';
import { Store, type ClonedState, type RemoteChange } from '@meridian/store';
import { encodeFrame, type Frame } from '../dist/index.js';
import { replicate } from './wired-sessions.js';
import { thingSchema } from './thing-schema.js';
import { until } from '../../../test/helpers/wait.js';

/** Stores on fresh temp dirs, closed and removed when `t` ends. */
async function stores<N extends string[]>(t: Test, ...nodeIds: N): Promise<{ [K in keyof N]: Store }> {
  const out: Store[] = [];
  for (const nodeId of nodeIds) {
    const dir = mkdtempSync(join(tmpdir(), 'meridian-ae-'));
    const store = await Store.open({ dir, schema: thingSchema, nodeId });
    t.teardown(async () => {
      await store.close();
      rmSync(dir, { recursive: true, force: true });
    });
    out.push(store);
  }
  return out as { [K in keyof N]: Store };
}

t.test('anti-entropy sends diffs against the subscriber\'s state vectors, records it lacks, markers, and nothing else', async (t) => {
  const [a, b] = await stores(t, 'a', 'b');
  const ids: string[] = [];
  for (let i = 0; i < 300; i++) ids.push((await a.create('Thing', { a: `a-${i}`, b: `b-${i}`.repeat(20), c: i })).id);

  // b is cloned from a (its checkpoint for a is then a's head)
  const snap = a.stateSnapshot();
  for await (const batch of snap.batches(50)) await b.cloneStates(batch);
  await b.cloneStates([], { peer: 'a', head: snap.head, vector: snap.vector });
  await snap.close();

  // a moves on, and trims its feed past b's position: b can only be repaired by anti-entropy
  const updated = ids.slice(0, 5);
  for (const id of updated) await a.update(id, { c: 1000 });
  const cleared = ids[5]!;
  await a.update(cleared, { b: null }); // a removal only: the state vector stays, the delete set grows
  const created = [(await a.create('Thing', { a: 'new-1' })).id, (await a.create('Thing', { a: 'new-2' })).id];
  const purged = ids[6]!;
  await a.purge(purged);
  await a.trimFeed(1);
  t.ok(b.firstSeq() >= 1 && a.firstSeq() > (await b.checkpoint('a')) + 1, 'b\'s position is older than a\'s retained feed');
  // and b has a change of its own, which a catches up on from b's feed
  const mine = (await b.create('Thing', { a: 'from-b' })).id;

  const told: string[] = [];
  b.onStates((ids) => told.push(...ids));
  const { x: sender, y: receiver } = await replicate(a, b, 4);
  t.equal(sender.closed ?? receiver.closed, undefined, 'neither session closed');

  const needs = receiver.sent.filter((f): f is Extract<Frame, { t: 'need' }> => f.t === 'need');
  t.ok(needs.length >= 2, `the receiver's holdings went in ${needs.length} pages of at most 4`);
  t.equal(needs[0]!.after, undefined, 'the first page starts at the start');
  t.equal(needs.at(-1)!.upTo, undefined, 'the last page runs to the end');
  for (let i = 1; i < needs.length; i++) t.equal(needs[i]!.after, needs[i - 1]!.upTo, `page ${i + 1} starts where page ${i} ended`);
  t.ok(needs.every((p) => p.have.length <= 4 && p.have.every((h) => h.s.length > 0 && h.v.length > 0)), 'each held object goes with its state vector and version');

  const items = sender.sent.flatMap((f) => (f.t === 'states' ? f.objects : []));
  const diffs = items.filter((o) => 'u' in o);
  const records = items.filter((o) => 'r' in o && !o.p);
  const markers = items.filter((o) => 'r' in o && o.p);
  t.same(diffs.map((o) => o.i).sort(), [...updated, cleared].sort(), 'the objects b holds at another version go as diffs');
  t.same(records.map((o) => o.i).sort(), [...created].sort(), 'the objects b lacks go as whole records');
  t.same(markers.map((o) => o.i), [purged], 'the purge goes as its marker');
  const stored = new Map<string, number>();
  const full = a.stateSnapshot();
  for await (const batch of full.batches(1000)) for (const s of batch) if ('record' in s) stored.set(s.id, s.record.length);
  await full.close();
  for (const d of diffs) {
    if ('u' in d) t.ok(d.u.length < stored.get(d.i)! / 2, `the diff of ${d.i} (${d.u.length} bytes) is less than half its record (${stored.get(d.i)} bytes)`);
  }
  t.equal(sender.sent.filter((f) => f.t === 'states' && f.page).length, needs.length - 1, 'each page but the last is answered with a page end');

  t.same((await a.digest(8)).buckets, (await b.digest(8)).buckets, 'both hold the same objects at the same versions');
  t.equal((await b.get(updated[0]!))?.fields['c'], 1000);
  t.equal((await b.get(cleared))?.fields['b'], undefined, 'the removed field is gone on b too');
  t.equal(await b.get(purged), undefined, 'the purged object is gone on b');
  t.ok([...updated, cleared, ...created].every((id) => told.includes(id)), 'state listeners (the LDAP index) hear of every object merged from a diff or stored whole');

  // a diff from a peer whose clock runs an hour ahead: later writes here are stamped after it
  const ahead = (Date.now() + 3_600_000) * 1000;
  await (await b.cloneStatesStaged([{ id: updated[1]!, diff: Y.encodeStateAsUpdate(new Y.Doc()), hlc: ahead }])).durable;
  const later = await b.update(updated[1]!, { a: 'later' });
  t.ok(later.hlc > ahead, 'a write after the merge is stamped after the diff\'s HLC');
  t.equal((await a.get(mine))?.fields['a'], 'from-b', 'and a has b\'s own write');
});

t.test('a diff of an object the receiver does not hold is refused and stores nothing', async (t) => {
  const [a, b] = await stores(t, 'a', 'b');
  const thing = await a.create('Thing', { a: 'x' });
  await a.update(thing.id, { c: 2 });
  // what a would send b had b held the object at its first version
  const page = { buckets: new Set(Array.from({ length: 256 }, (_, i) => i)), bits: 8, have: new Map([[thing.id, { id: thing.id, sv: new Uint8Array([0]), version: 'old' }]]) };
  const snap = a.stateSnapshot();
  const sent = [];
  for await (const batch of snap.batches(10, page)) sent.push(...batch);
  await snap.close();
  t.equal(sent.length, 1);
  t.ok('diff' in sent[0]!, 'a sends a diff');
  // in one frame with a record b lacks, which is stored all the same
  const other = await a.create('Thing', { a: 'other' });
  const whole = a.stateSnapshot();
  for await (const batch of whole.batches(10)) sent.push(...batch.filter((s) => s.id === other.id));
  await whole.close();
  const told: string[] = [];
  b.onStates((ids) => told.push(...ids));
  const { durable } = await b.cloneStatesStaged(sent);
  await t.rejects(durable, { message: `a peer sent a diff of ${thing.id}, which this node does not hold` });
  t.equal(await b.get(thing.id), undefined, 'nothing of it is stored');
  t.equal((await b.get(other.id))?.fields['a'], 'other', 'the record beside it is');
  t.ok(told.includes(other.id), 'and the state listeners hear of it');
});

t.test('an object holding an update Yjs keeps pending goes as a diff although its version and state vector match the peer\'s', async (t) => {
  const [a, b] = await stores(t, 'a', 'b');
  const thing = await a.create('Thing', { a: 'x' });
  const recordOf = async (store: Store): Promise<{ y: Uint8Array; v: string }> => {
    const snap = store.stateSnapshot();
    try {
      // the record may leave out its state (a create no change has touched): the store rebuilds it
      for await (const batch of snap.batches(10)) for (const s of batch) if (s.id === thing.id && 'record' in s) return { y: (await store.objectState(thing.id))!, v: (decode(s.record) as { v: string }).v };
    } finally {
      await snap.close();
    }
    throw new Error('not stored');
  };
  // b is cloned from a
  const snap = a.stateSnapshot();
  for await (const batch of snap.batches(10)) await b.cloneStates(batch);
  await b.cloneStates([], { peer: 'a', head: snap.head, vector: snap.vector });
  await snap.close();
  // a third node writes twice; a receives only the second write, which waits in Yjs for the first
  const writer = new Y.Doc();
  Y.applyUpdate(writer, (await recordOf(a)).y);
  writer.clientID = 7777;
  const updates: Uint8Array[] = [];
  writer.on('update', (u: Uint8Array) => updates.push(u));
  writer.getMap('f').set('c', 1);
  writer.getMap('f').set('c', 2);
  const change = (n: number): RemoteChange => ({ origin: 'z', originSeq: n, id: thing.id, type: 'Thing', kind: 'update', update: updates[n - 1]!, hlc: Date.now() * 1000, principal: 'admin', fields: ['c'] });
  await a.applyRemote([change(2)]);
  const [ra, rb] = [await recordOf(a), await recordOf(b)];
  t.equal(ra.v, rb.v, 'a\'s version does not show the pending update');
  t.same(Y.decodeStateVector(Y.encodeStateVectorFromUpdate(ra.y)), Y.decodeStateVector(Y.encodeStateVectorFromUpdate(rb.y)), 'nor does its state vector');

  const all = new Set(Array.from({ length: 256 }, (_, i) => i));
  const page = { buckets: all, bits: 8, have: new Map([[thing.id, { id: thing.id, sv: Y.encodeStateVectorFromUpdate(rb.y), version: rb.v }]]) };
  const answer = a.stateSnapshot();
  const sent = [];
  for await (const batch of answer.batches(10, page)) sent.push(...batch);
  await answer.close();
  t.equal(sent.length, 1, 'yet a sends b a diff');
  t.ok(sent.every((x) => 'diff' in x));
  await (await b.cloneStatesStaged(sent)).durable;
  // the first write arrives at both: both now integrate the second
  await a.applyRemote([change(1)]);
  await b.applyRemote([change(1)]);
  t.equal((await a.get(thing.id))?.fields['c'], 2);
  t.equal((await b.get(thing.id))?.fields['c'], 2, 'b holds the second write too');
  t.equal((await b.get(thing.id))?.version, (await a.get(thing.id))?.version);
});

t.test('a change its sender holds ahead of a gap reaches a clone as a feed entry too, after a restart of the sender as well: the clone\'s vector passes it, and a node served from the clone\'s feed gets it', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'meridian-ae-'));
  let a = await Store.open({ dir, schema: thingSchema, nodeId: 'a' });
  t.teardown(async () => {
    await a.close();
    rmSync(dir, { recursive: true, force: true });
  });
  const [o, b, p] = await stores(t, 'o', 'b', 'p');
  const ids: string[] = [];
  for (let i = 0; i < 3; i++) ids.push((await o.create('Thing', { a: `t-${i}` })).id);
  const [e1, e2, e3] = (await o.readFeed(0, 10)).map(({ seq: _s, ...c }) => c as RemoteChange);
  // a got o's first and third changes (the second came to its other peer first, say)
  await a.applyRemote([e1!, e3!]);
  t.same(a.versionVector(), { o: 1 }, 'a holds o#3 ahead of the gap');
  await a.close();
  a = await Store.open({ dir, schema: thingSchema });
  t.ok(a.versionVector()['o'] === 1 && (await a.get(ids[2]!)) !== undefined, 'after a restart too');

  // b is cloned from a: the snapshot's records hold o#3, its vector does not, so the cursor starts before it
  const snap = a.stateSnapshot();
  t.equal(snap.head, 1, "b's cursor starts before o#3's feed entry");
  for await (const batch of snap.batches(10)) await b.cloneStates(batch);
  await b.cloneStates([], { peer: 'a', head: snap.head, vector: snap.vector });
  await snap.close();
  // the gap on a fills
  await a.applyRemote([e2!]);
  t.same(a.versionVector(), { o: 3 }, "a's entry moves on over what it held ahead, known after the restart");

  const ab = await replicate(a, b, 50);
  t.equal(ab.x.closed ?? ab.y.closed, undefined);
  t.equal(b.versionVector()['o'], 3, "b's vector passes o#3, which it got first in a's records");

  // p held o#1 alone, and has only b to learn from: b's feed must hold o#3 for it
  await p.applyRemote([e1!]);
  const bp = await replicate(b, p, 50);
  t.equal(bp.x.closed ?? bp.y.closed, undefined);
  t.equal((await p.get(ids[2]!))?.fields['a'], 't-2', 'p got o#3 from b');
  t.equal(p.versionVector()['o'], 3);

  // what a held ahead is on disk one key a change, gone once the gap filled
  const aheadKeys = async (store: Store): Promise<string[]> => {
    const snap = store.backupSnapshot();
    const found: string[] = [];
    try {
      for await (const batch of snap.batches) for (const [k] of batch) if (k.startsWith('a')) found.push(k);
    } finally {
      await snap.close();
    }
    return found;
  };
  t.same(await aheadKeys(a), [], "a's record of o#3 held ahead went with the change that filled the gap");
  const q = (await stores(t, 'q'))[0];
  const more: RemoteChange[] = [];
  for (let i = 0; i < 5; i++) await o.create('Thing', { a: `m-${i}` });
  for (const { seq: _s, ...c } of await o.readFeed(3, 10)) more.push(c as RemoteChange);
  // q holds o#1 to o#3, then o#5 to o#8 ahead of a gap at o#4
  await q.applyRemote([e1!, e2!, e3!]);
  for (const c of more.slice(1)) await q.applyRemote([c]);
  t.equal((await aheadKeys(q)).length, 4, 'one key for each change held ahead');
  await q.applyRemote([more[0]!]);
  t.same(await aheadKeys(q), [], 'none once the gap filled');
  t.equal(q.versionVector()['o'], 8);
});

t.test('an object whose record no frame could carry reaches a node repaired by anti-entropy, in parts, whole', async (t) => {
  const { parseSchema } = await import('@meridian/store');
  const schema = parseSchema(`
types:
  Big:
    idPrefix: big
    fields:
${[1, 2, 3, 4, 5].map((n) => `      t${n}: { type: string, multi: true }`).join('\n')}
`);
  const open = async (nodeId: string): Promise<Store> => {
    const dir = mkdtempSync(join(tmpdir(), 'meridian-ae-big-'));
    const store = await Store.open({ dir, schema, nodeId });
    t.teardown(async () => {
      await store.close();
      rmSync(dir, { recursive: true, force: true });
    });
    return store;
  };
  const [a, b] = [await open('a'), await open('b')];
  // five fields of 3.4 MB, one change each (under the 4 MiB a change may hold): a record of about 34 MB (values and state)
  const values = (n: number): string[] => Array.from({ length: 850 }, (_, i) => `${n}-${i}-`.padEnd(4000, String.fromCharCode(97 + ((n + i) % 26))));
  const { id } = await a.create('Big', { t1: values(1) });
  for (const n of [2, 3, 4, 5]) await a.update(id, { [`t${n}`]: values(n) });
  await a.trimFeed(1); // b can only be repaired by anti-entropy, which sends the whole record
  const { x: sender, y: receiver } = await replicate(a, b, 4);
  t.equal(sender.closed ?? receiver.closed, undefined, 'neither session closed');
  const sizes = sender.sent.filter((f) => f.t === 'states').map((f) => encodeFrame(f).length);
  t.ok(Math.max(...sizes) < 5 * 1024 * 1024, `every states frame under 5 MiB, the peer's limit 16 (largest ${Math.max(...sizes)})`);
  t.ok(sender.sent.some((f) => f.t === 'states' && f.objects.some((o) => o.m)), 'the record went in parts');
  const got = await b.get(id);
  for (const n of [1, 2, 3, 4, 5]) t.same(got?.fields[`t${n}`], values(n), `t${n} whole`);
  t.equal(got?.version, (await a.get(id))?.version, 'the same version on both');
});

t.test("anti-entropy carries the idempotency records of keyed writes whose changes the subscriber lacked, and only those", async (t) => {
  const [a, b] = await stores(t, 'a', 'b');
  const first = await a.create('Thing', { a: 'one' }, { idempotencyKey: 'fwd/laptop/k1' });
  const snap = a.stateSnapshot();
  const keyed: ClonedState[] = [];
  for await (const batch of snap.batches(50)) {
    // (idempotency records go with a run's last states, as a session hands them over)
    for (const s of batch) if ('key' in s) keyed.push(s);
    await b.cloneStates(batch.filter((s) => !('key' in s)));
    t.equal(await b.idempotent('fwd/laptop/k1'), undefined, 'no record before the run ends');
  }
  await b.cloneStates(keyed, { peer: 'a', head: snap.head, vector: snap.vector });
  await snap.close();
  t.match(await b.idempotent('fwd/laptop/k1'), { id: first.id, origin: 'a', originSeq: 1 }, 'the clone brought the first');

  const second = await a.create('Thing', { a: 'two' }, { idempotencyKey: 'fwd/laptop/k2' });
  await a.create('Thing', { a: 'three' });
  await a.trimFeed(1); // b is repaired by anti-entropy, which brings the change inside the object's state
  const { x: sender, y: receiver } = await replicate(a, b, 4);
  t.equal(sender.closed ?? receiver.closed, undefined, 'neither session closed');
  const sent = sender.sent.flatMap((f) => (f.t === 'states' ? (f.keys ?? []).map((k) => k.q) : []));
  t.same(sent, ['fwd/laptop/k2'], 'the record of the change b lacked, not that of one its vector covers');
  t.match(await b.idempotent('fwd/laptop/k2'), { id: second.id, origin: 'a', originSeq: 2 }, 'a resend reaching b is answered from it');
});

t.test('a resend that reaches a node while an anti-entropy run brings its record waits for the run, and is answered from the record', async (t) => {
  const [a, b] = await stores(t, 'a', 'b');
  const keyed = await a.create('Thing', { a: 'keyed' }, { idempotencyKey: 'fwd/laptop/k1' });
  for (let i = 0; i < 30; i++) await a.create('Thing', { a: `more ${i}` });
  await a.trimFeed(1); // b is repaired by anti-entropy, in pages of 4 objects: the record goes with the first
  let resend: Promise<unknown> | undefined;
  let doneBefore = false;
  const { x: sender, y: receiver } = await replicate(a, b, 4, {
    delivered: (f, to) => {
      if (to !== b || f.t !== 'states') return;
      if (f.done && !resend) doneBefore = true;
      // the client sends the write again to b, as if a's answer had been lost, while the run goes on
      if (f.keys?.length && !f.done) resend = b.idempotent('fwd/laptop/k1');
    },
  });
  t.equal(sender.closed ?? receiver.closed, undefined, 'neither session closed');
  t.ok(resend, 'the record came in a states frame before the last');
  t.notOk(doneBefore, 'and the resend was looked up before the run ended');
  t.match(await resend, { id: keyed.id, origin: 'a', originSeq: 1 }, 'the resend is answered from the record the run brought, not made again');
});

t.test("a clone sends the idempotency records before the objects: a resend reaching the new node right after its object's state waits for the run too", async (t) => {
  const [a, b] = await stores(t, 'a', 'b');
  const keyed = await a.create('Thing', { a: 'keyed' }, { idempotencyKey: 'fwd/laptop/k1' });
  for (let i = 0; i < 30; i++) await a.create('Thing', { a: `more ${i}` });
  let resend: Promise<unknown> | undefined;
  let keysFrame = -1;
  let objectFrame = -1;
  let frames = 0;
  const { x: sender, y: receiver } = await replicate(a, b, 4, {
    yEmpty: true,
    delivered: (f, to) => {
      if (to !== b || f.t !== 'states') return;
      frames++;
      if (f.keys?.length) keysFrame = frames;
      // the first moment b holds the keyed object's state: a resend now must not be made again
      if (f.objects.some((o) => o.i === keyed.id) && !f.done) {
        objectFrame = frames;
        resend = b.idempotent('fwd/laptop/k1');
      }
    },
  });
  t.equal(sender.closed ?? receiver.closed, undefined, 'neither session closed');
  t.ok(b.versionVector()['a'] === a.lastSeq, 'b was cloned');
  t.ok(keysFrame > 0 && keysFrame <= objectFrame, `the records came no later than the object (frames ${keysFrame} and ${objectFrame} of ${frames})`);
  t.match(await resend, { id: keyed.id, origin: 'a', originSeq: 1 }, 'the resend is answered from the record');
});

/**
 * Stores a and b for the cut-short tests: b waits only 200 ms for a key a run brings (the tests are of
 * what is waited for, not for how long), and crashB restarts b keeping only what is on disk.
 */
async function keyedPair(t: Test): Promise<{ a: Store; b: Store; crashB: () => Promise<Store> }> {
  const dirA = mkdtempSync(join(tmpdir(), 'meridian-ae-'));
  const dirB = mkdtempSync(join(tmpdir(), 'meridian-ae-'));
  const a = await Store.open({ dir: dirA, schema: thingSchema, nodeId: 'a' });
  const openB = (): Promise<Store> => Store.open({ dir: dirB, schema: thingSchema, nodeId: 'b', idempotencyWaitMs: 200 });
  let b = await openB();
  t.teardown(async () => {
    await a.close();
    await b.close();
    rmSync(dirA, { recursive: true, force: true });
    rmSync(dirB, { recursive: true, force: true });
  });
  const crashB = async (): Promise<Store> => {
    await b.crash();
    return (b = await openB());
  };
  return { a, b, crashB };
}

t.test('a run cut short after the state of a keyed write came leaves its record: a resend is answered from it, then and after a restart, not made again', async (t) => {
  const { a, b: first, crashB } = await keyedPair(t);
  let b = first;
  // (ids that put one keyed object first in key order and the other last)
  const keyed = await a.create('Thing', { a: 'keyed' }, { idempotencyKey: 'fwd/laptop/k1', id: '0-keyed-first' });
  for (let i = 0; i < 30; i++) await a.create('Thing', { a: `more ${i}` });
  const later = await a.create('Thing', { a: 'keyed later' }, { idempotencyKey: 'fwd/laptop/k2', id: 'zz-keyed-last' });
  // a clone that drops once the keyed object's state is in, before its last frame
  await replicate(a, b, 4, { yEmpty: true, cut: (f, to) => to === b && f.t === 'states' && f.objects.some((o) => o.i === keyed.id) });
  // (the frame's states are readable once on disk, which the cut does not wait for)
  t.ok(await until(async () => (await b.get(keyed.id)) !== undefined, 5000), "b holds the object's state, with the keyed change in it");
  t.equal(b.versionVector()['a'], undefined, 'but not the run: its vector never moved');
  // (the record is stored with that frame's states)
  let answer: unknown;
  // (its store may still be under way when the cut returns: a lookup of a key on its way waits, or answers busy)
  await until(async () => (answer = await b.idempotent('fwd/laptop/k1').catch(() => undefined)) !== undefined, 10_000);
  t.match(answer, { id: keyed.id, origin: 'a', originSeq: 1 }, 'a resend after the drop is answered from the record');
  t.equal(await b.get(later.id), undefined, 'an object the run had not reached is not here');
  await t.rejects(b.idempotent('fwd/laptop/k2'), { code: 'busy' }, 'and its key is still waited for: a resend of it is answered busy');
  t.equal(await b.idempotent('fwd/laptop/other'), undefined, 'a key the run did not bring is answered at once');
  // a restart keeps what is on disk, and forgets the waits
  b = await crashB();
  t.match(await b.idempotent('fwd/laptop/k1'), { id: keyed.id, origin: 'a', originSeq: 1 }, 'after a restart too (it was made again: no record, and no wait left)');
});

t.test('an anti-entropy run stores at once the records of writes to objects in buckets that do not differ: the subscriber holds their states already', async (t) => {
  const { a, b } = await keyedPair(t);
  // (last in key order: no page of the run reaches it before the cut below)
  const keyed = await a.create('Thing', { a: 'keyed' }, { idempotencyKey: 'fwd/laptop/k1', id: 'zz-keyed-last' });
  for (let i = 0; i < 10; i++) await a.create('Thing', { a: `more ${i}` });
  // b holds, as states (no feed entries, no records), every object of the keyed one's bucket, and nothing else
  const { bucketOf } = await import('@meridian/store');
  const bucket = bucketOf(keyed.id, 8);
  const snap = a.stateSnapshot();
  for await (const batch of snap.batches(50)) await b.cloneStates(batch.filter((s) => 'id' in s && !('diff' in s) && bucketOf(s.id, 8) === bucket));
  await snap.close();
  t.ok(await b.get(keyed.id));
  await a.trimFeed(1); // b lacks a's changes and a's feed is trimmed: anti-entropy
  // dropped right after the frame with the records, before any object
  await replicate(a, b, 4, { cut: (f, to) => to === b && f.t === 'states' && f.keys !== undefined });
  let answer: unknown;
  // (its store may still be under way when the cut returns: a lookup of a key on its way waits, or answers busy)
  await until(async () => (answer = await b.idempotent('fwd/laptop/k1').catch(() => undefined)) !== undefined, 10_000);
  t.match(answer, { id: keyed.id, origin: 'a', originSeq: 1 }, "stored with the records' frame: the keyed object's bucket was equal");
});

t.test('an anti-entropy run that finds no bucket differing still sends the records of changes the subscriber lacks, which it stores', async (t) => {
  const { a, b } = await keyedPair(t);
  const keyed = await a.create('Thing', { a: 'keyed' }, { idempotencyKey: 'fwd/laptop/k1' });
  for (let i = 0; i < 5; i++) await a.create('Thing', { a: `more ${i}` });
  // b holds every state (as a run cut short after its last states would leave it), no record, and a vector without a's changes
  const snap = a.stateSnapshot();
  for await (const batch of snap.batches(50)) await b.cloneStates(batch.filter((s) => !('key' in s)));
  await snap.close();
  t.equal(await b.idempotent('fwd/laptop/k1'), undefined, 'b has no record');
  await a.trimFeed(1);
  const { x: sender, y: receiver } = await replicate(a, b, 4);
  t.equal(sender.closed ?? receiver.closed, undefined, 'neither session closed');
  t.same(sender.sent.flatMap((f) => (f.t === 'states' ? f.objects.map((o) => o.i) : [])), [], 'no object was sent: every bucket was equal');
  t.match(await b.idempotent('fwd/laptop/k1'), { id: keyed.id, origin: 'a', originSeq: 1 }, 'the record was, and b stored it');
});

t.test('a run cut short before the state of a keyed write came stores no record of it: the key is waited for, then the write is not known here', async (t) => {
  const { a, b: first, crashB } = await keyedPair(t);
  let b = first;
  const keyed = await a.create('Thing', { a: 'keyed' }, { idempotencyKey: 'fwd/laptop/k1' });
  for (let i = 0; i < 30; i++) await a.create('Thing', { a: `more ${i}` });
  // dropped right after the frame with the records, before any object
  await replicate(a, b, 4, { yEmpty: true, cut: (f, to) => to === b && f.t === 'states' && f.keys !== undefined });
  t.equal(await b.get(keyed.id), undefined, 'the object did not come');
  await t.rejects(b.idempotent('fwd/laptop/k1'), { code: 'busy' }, 'a resend is answered busy while a reconnect may bring the run again');
  b = await crashB();
  t.equal(await b.idempotent('fwd/laptop/k1'), undefined, 'no record was stored ahead of its object (a resend would have been answered with an object b lacks)');
});

t.test('a change its sender holds ahead of a gap, whose feed entry the sender trimmed, reaches a clone over the wire as held ahead: the clone\'s vector passes it once the gap fills', async (t) => {
  const [o, a, b] = await stores(t, 'o', 'a', 'b');
  const ids: string[] = [];
  for (let i = 0; i < 3; i++) ids.push((await o.create('Thing', { a: `t-${i}` })).id);
  const [e1, e2, e3] = (await o.readFeed(0, 10)).map(({ seq: _s, ...c }) => c as RemoteChange);
  await a.applyRemote([e1!, e3!]);
  await a.create('Thing', { a: 'after' });
  await a.trimFeed(1);
  t.ok(a.firstSeq() > 2, "o#3's feed entry on a is trimmed");
  const ab = await replicate(a, b, 50, { yEmpty: true });
  t.equal(ab.x.closed ?? ab.y.closed, undefined);
  const done = ab.x.sent.find((f) => f.t === 'states' && f.done) as { ahead?: unknown } | undefined;
  t.same(done?.ahead, [['o', 3]], "the last states frame names o#3");
  t.equal(b.versionVector()['o'], 1, 'b holds o up to 1');
  t.equal((await b.get(ids[2]!))?.fields['a'], 't-2', "and o#3's object, from a's records");
  await b.applyRemote([e2!]);
  t.equal(b.versionVector()['o'], 3, "once o#2 is in, b's entry moves on over o#3, held ahead");
});

t.test("a change held ahead with no feed entry (a clone's ahead list) raises the feed base once the gap fills, on disk, and peers following the feed are told: one whose vector stops below it is repaired, not left without it", async (t) => {
  const [o, a, p] = await stores(t, 'o', 'a', 'p');
  const bDir = mkdtempSync(join(tmpdir(), 'meridian-ae-'));
  let b = await Store.open({ dir: bDir, schema: thingSchema, nodeId: 'b' });
  t.teardown(async () => {
    await b.close();
    rmSync(bDir, { recursive: true, force: true });
  });
  const ids: string[] = [];
  for (let i = 0; i < 3; i++) ids.push((await o.create('Thing', { a: `t-${i}` })).id);
  const [e1, e2, e3] = (await o.readFeed(0, 10)).map(({ seq: _s, ...c }) => c as RemoteChange);
  await a.applyRemote([e1!, e3!]);
  await a.create('Thing', { a: 'after' });
  const [own] = (await a.readFeed(2, 1)).map(({ seq: _s, ...c }) => c as RemoteChange);
  await a.trimFeed(1);
  await replicate(a, b, 50, { yEmpty: true });
  t.same(b.feedBase(), { o: 1, a: 1 }, 'b holds o#3 ahead, without a feed entry, and its base below it');
  // p follows b's feed while the gap lasts: nothing in it carries o#3
  await p.applyRemote([e1!, own!]);
  await replicate(b, p, 50);
  t.equal(await p.get(ids[2]!), undefined, 'p lacks o#3');

  let told = 0;
  b.onFeedBaseRaised(() => told++);
  await b.applyRemote([e2!]);
  t.same([b.versionVector()['o'], b.feedBase()['o']], [3, 3], "the gap filled on b: its vector passes o#3, and so does its base");
  t.equal(told, 1, 'once that batch was on disk, peers following the feed were told to subscribe again');
  await b.close();
  b = await Store.open({ dir: bDir, schema: thingSchema });
  t.equal(b.feedBase()['o'], 3, 'the raised base is on disk');

  // p gets o#2 from elsewhere, and subscribes to b again: its vector stops below b's base
  await p.applyRemote([e2!]);
  const bp = await replicate(b, p, 50);
  t.equal(bp.x.closed ?? bp.y.closed, undefined);
  t.ok(bp.x.sent.some((f) => f.t === 'digest'), 'p was sent to anti-entropy');
  t.equal((await p.get(ids[2]!))?.fields['a'], 't-2', 'and has o#3');
  t.equal(p.versionVector()['o'], 3);
});
