// An object no change has touched since its create is stored without its
// Yjs state (ObjectRecord.y): the writer's clientID `w` and the record's
// fields, type and creation time rebuild it. Every path that needs the
// state must get the very bytes the create wrote, on this node, after a
// restart, on a peer that applied the create, and on a clone.
import t from 'tap';
import * as Y from 'yjs';
import { decode, encode, type ObjectRecord } from '../dist/codec.js';
import { docVersion, encodeCreate, recordState } from '../dist/yobject.js';
import { Store, checkIndexes, type ClonedState } from '../dist/index.js';
import { openStore, schema, tempDir } from './fixtures.js';

async function stored(store: Store, id: string): Promise<{ rec: ObjectRecord; bytes: number }> {
  for await (const [k, v] of store.raw('o')) if (k === `o${id}`) return { rec: decode<ObjectRecord>(v), bytes: v.length };
  throw new Error(`no record of ${id}`);
}

/** The object's version computed from scratch by Yjs from its state. */
function versionOfState(state: Uint8Array): string {
  const doc = new Y.Doc();
  Y.applyUpdate(doc, state);
  return docVersion(doc);
}

t.test("a create is stored without its state, and the state rebuilt is the create's update", async (t) => {
  const a = await openStore(t, { nodeId: 'a' });
  const org = await a.create('Org', { name: 'Acme', kind: 'customer' });
  const p = await a.create('Person', { cn: 'Anna Müller', sn: 'Müller', mail: ['anna@example.com', 'a.m@example.com'], org: org.id }, { principal: 'admin' });
  const { rec, bytes } = await stored(a, p.id);
  t.equal(rec.y, undefined, 'no state in the record');
  t.equal(rec.w, a.clientId, "the writer's clientID instead");
  const create = (await a.readFeed(0)).find((e) => e.id === p.id)!;
  t.same(Buffer.from(recordState(rec)), Buffer.from(create.update), "the state rebuilt is the feed's create update, byte for byte");
  t.same(Buffer.from((await a.objectState(p.id))!), Buffer.from(create.update), 'and what objectState answers');
  t.equal(versionOfState(recordState(rec)), p.version, 'whose version is the one reported');
  t.ok(bytes < 300, `the record takes ${bytes} bytes`);
});

t.test('the first change writes the state, built on the rebuilt create, also after a restart', async (t) => {
  const dir = tempDir(t);
  let a = await Store.open({ dir, schema, nodeId: 'a' });
  const org = await a.create('Org', { name: 'Acme', kind: 'customer' });
  const writer = a.clientId;
  await a.close();
  // a new process draws a new clientID: the record must keep naming the old one
  a = await Store.open({ dir, schema, nodeId: 'a' });
  t.teardown(() => a.close());
  t.not(a.clientId, writer);
  const updated = await a.update(org.id, { name: 'Acme Global' });
  const { rec } = await stored(a, org.id);
  t.ok(rec.y instanceof Uint8Array, 'the record holds its state now');
  const doc = new Y.Doc();
  Y.applyUpdate(doc, rec.y!);
  t.equal(doc.getMap('f').get('name'), 'Acme Global');
  t.equal(doc.getMap('m').get('type'), 'Org', "the create's items are in it");
  t.ok(Y.decodeStateVector(Y.encodeStateVector(doc)).get(writer), "under the create's writer");
  t.equal(versionOfState(rec.y!), updated.version, 'and the version follows from it');
  t.same((await a.history(org.id)).versions.map((v) => v.kind), ['create', 'update'], 'the history holds both');
});

t.test('a peer stores a create it receives the same way, and both converge after changes on either side', async (t) => {
  const a = await openStore(t, { nodeId: 'a' });
  const b = await openStore(t, { nodeId: 'b' });
  const org = await a.create('Org', { name: 'Acme', kind: 'customer' });
  const p = await a.create('Person', { cn: 'Bo', sn: 'B', mail: 'bo@example.com', org: org.id });
  await b.applyRemote((await a.readFeed(0)).map(({ seq: _s, ...c }) => c));
  const onB = await stored(b, p.id);
  t.equal(onB.rec.y, undefined, 'the peer leaves the state out too');
  t.equal(onB.rec.w, a.clientId, "naming the origin's writer");
  t.same(Buffer.from((await b.objectState(p.id))!), Buffer.from((await a.objectState(p.id))!), 'the same state on both');

  await b.update(p.id, { cn: 'Bo B' });
  await a.update(org.id, { kind: 'reseller' });
  const seenA = a.lastSeq;
  await a.applyRemote((await b.readFeed(0)).filter((e) => e.origin === 'b').map(({ seq: _s, ...c }) => c));
  await b.applyRemote((await a.readFeed(0)).filter((e) => e.origin === 'a' && e.seq <= seenA).map(({ seq: _s, ...c }) => c));
  for (const id of [p.id, org.id]) {
    const [x, y] = [await a.get(id), await b.get(id)];
    t.same(x?.fields, y?.fields, `${id}: the same fields`);
    t.equal(x?.version, y?.version, `${id}: the same version`);
  }
  t.same(await checkIndexes(b), []);
});

t.test('a clone receives records without state, stores them so, and changes them later', async (t) => {
  const a = await openStore(t, { nodeId: 'a' });
  const org = await a.create('Org', { name: 'Acme', kind: 'customer' });
  const p = await a.create('Person', { cn: 'Cy', sn: 'C', mail: 'cy@example.com', org: org.id });
  const snap = a.stateSnapshot();
  const frames: ClonedState[][] = [];
  for await (const f of snap.batches(10)) frames.push(f);
  const { head, vector } = snap;
  await snap.close();
  const sent = frames.flat().map((s) => ('record' in s ? decode<ObjectRecord>(s.record) : undefined));
  t.equal(sent.length, 2);
  t.ok(sent.every((r) => r && r.y === undefined && typeof r.w === 'number'), 'the records cross without their state');

  const b = await openStore(t, { nodeId: 'b' });
  for (const f of frames) await b.cloneStates(f);
  await b.cloneStates([], { peer: 'a', head, vector });
  t.equal((await stored(b, p.id)).rec.y, undefined, 'and are stored so');
  t.same(Buffer.from((await b.objectState(p.id))!), Buffer.from((await a.objectState(p.id))!), 'the same state on both');
  const changed = await b.update(p.id, { telephoneNumber: ['+27 021 555'] });
  await a.applyRemote((await b.readFeed(0)).filter((e) => e.origin === 'b').map(({ seq: _s, ...c }) => c));
  t.equal((await a.get(p.id))?.version, changed.version, 'a change made on the clone converges on the origin');
  const [da, db] = [await a.digest(), await b.digest()];
  t.same([da.objects, da.buckets, da.at.vector], [db.objects, db.buckets, db.at.vector], 'the digests agree, and so do the changes they cover');
});

t.test('a cloned record without a state that recordState could not rebuild is refused, and nothing of its frame is stored', async (t) => {
  const b = await openStore(t, { nodeId: 'b' });
  const good = { t: 'Org', f: { name: 'X', kind: 'customer' }, d: false, h: 5, s: 1, v: 'v', c: 5, w: 42 };
  const bad: [string, Record<string, unknown>][] = [
    ['neither a state nor a writer', { ...good, w: undefined }],
    ['no creation time', { ...good, c: undefined }],
    ['a writer that is no whole number', { ...good, w: 1.5 }],
    ['a negative writer', { ...good, w: -1 }],
    ['a writer as text', { ...good, w: '42' }],
    ['a state that is no bin', { ...good, y: 'state' }],
    ['a tombstone without its state', { ...good, d: true }],
    ['a field holding a map', { ...good, f: { name: { a: 1 }, kind: 'customer' } }],
    ['a field holding null', { ...good, f: { name: null, kind: 'customer' } }],
    ['a field holding a map in a list', { ...good, f: { name: ['a', { b: 1 }], kind: 'customer' } }],
    ['a field holding NaN', { ...good, f: { name: NaN, kind: 'customer' } }],
    // (stored, it made every digest of the store throw, and leak an iterator each time)
    ['no version', { ...good, v: undefined }],
    ['a version that is no string', { ...good, v: 7 }],
    ['a version of 65 characters', { ...good, v: 'x'.repeat(65) }],
  ];
  for (const [what, rec] of bad) {
    const fine = encode({ ...good, f: { name: 'Fine', kind: 'customer' } });
    await t.rejects(b.cloneStates([{ id: 'org-fine', record: fine }, { id: 'org-x', record: encode(rec) }]), /cloned object org-x is not an object record/, what);
    t.equal(await b.get('org-x'), undefined, `${what}: not stored`);
    t.equal(await b.get('org-fine'), undefined, `${what}: nor the frame's other record`);
  }
  t.ok((await b.digest()).objects === 0, 'and the store still has a digest');
  // the same record with a writer is taken, and its state rebuilt
  await b.cloneStates([{ id: 'org-x', record: encode(good) }]);
  t.equal((await b.get('org-x'))?.fields['name'], 'X');
  const doc = new Y.Doc();
  Y.applyUpdate(doc, (await b.objectState('org-x'))!);
  t.equal(doc.getMap('f').get('name'), 'X', 'rebuilt from the writer and the fields');
});

t.test('-0 is written as 0, and a peer\'s create holding -0 keeps its state, which MessagePack could not give back', async (t) => {
  const dir = tempDir(t);
  let a = await Store.open({ dir, schema, nodeId: 'a' });
  const org = await a.create('Org', { name: 'Acme', kind: 'customer' });
  const lic = await a.create('License', { customer: org.id, seats: 3, ratio: -0, validFrom: '2026-01-01' });
  t.ok(Object.is(lic.fields['ratio'], 0), 'the schema writes -0 as 0');
  // a create made by a peer before its schema did so: its state holds -0
  const made = encodeCreate(424_242, { customer: org.id, seats: 3, ratio: -0, validFrom: '2026-01-01' }, 'License', 5).update;
  await a.applyRemote([{ origin: 'old', originSeq: 1, id: 'lic-old', type: 'License', kind: 'create', update: made, hlc: 5, principal: 'admin', fields: ['customer', 'seats', 'ratio', 'validFrom'] }]);
  await a.close();
  a = await Store.open({ dir, schema, nodeId: 'a' });
  t.teardown(() => a.close());
  t.equal((await stored(a, lic.id)).rec.y, undefined, 'the local create is stored without its state');
  t.ok((await stored(a, 'lic-old')).rec.y instanceof Uint8Array, "the peer's keeps its state");
  t.same(Buffer.from((await a.objectState('lic-old'))!), Buffer.from(made), "which is the peer's create, -0 and all, after a restart");
});

t.test('a state merged that brings nothing new leaves the record as it is, without its state', async (t) => {
  const a = await openStore(t, { nodeId: 'a' });
  await a.create('Org', { name: 'Acme', kind: 'customer' });
  const snap = a.stateSnapshot();
  const frames: ClonedState[][] = [];
  for await (const f of snap.batches(10)) frames.push(f);
  await snap.close();
  const b = await openStore(t, { nodeId: 'b' });
  for (const f of frames) await b.cloneStates(f);
  const id = frames[0]![0]!.id;
  const before = await stored(b, id);
  for (const f of frames) await b.cloneStates(f); // the same records again: merged
  const after = await stored(b, id);
  t.equal(after.rec.y, undefined, 'still without its state');
  t.equal(after.bytes, before.bytes, 'and not written again');
  t.equal(after.rec.s, before.rec.s);
});

t.test('anti-entropy sends nothing for an unchanged create the peer holds at its version', async (t) => {
  const a = await openStore(t, { nodeId: 'a' });
  const org = await a.create('Org', { name: 'Acme', kind: 'customer' });
  const all = new Set(Array.from({ length: 256 }, (_, i) => i));
  const { held } = await a.heldStates({ buckets: all, bits: 8, limit: 10 });
  t.same(Y.decodeStateVector(held[0]!.sv), Y.decodeStateVector(Y.encodeStateVectorFromUpdate((await a.objectState(org.id))!)), "the state vector given without a rebuild is the state's");
  const page = { buckets: all, bits: 8, have: new Map([[org.id, { id: org.id, sv: held[0]!.sv, version: held[0]!.version }]]) };
  const answer = a.stateSnapshot();
  const sent = [];
  for await (const batch of answer.batches(10, page)) sent.push(...batch);
  await answer.close();
  t.same(sent, [], 'nothing');
  // a peer holding less (an empty state vector, another version) gets the whole create as a diff
  const behind = { ...page, have: new Map([[org.id, { id: org.id, sv: Y.encodeStateVector(new Y.Doc()), version: 'other' }]]) };
  const again = a.stateSnapshot();
  const diffs = [];
  for await (const batch of again.batches(10, behind)) diffs.push(...batch);
  await again.close();
  t.equal(diffs.length, 1);
  t.same(Buffer.from((diffs[0] as { diff: Uint8Array }).diff), Buffer.from(Y.diffUpdate((await a.objectState(org.id))!, Y.encodeStateVector(new Y.Doc()))));
});
