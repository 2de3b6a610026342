import t from 'tap';
import * as Y from 'yjs';
import { applyLocal, docFromState, docVersion, encodeCreate, fieldsTouched, holdsItemsOf, lastItemId, newDoc, parseItemId, singleClientVersion } from '../dist/yobject.js';
import { prng } from '../../../test/helpers/prng.js';


t.test('the hand encoder agrees with Yjs at its edges: float32-exact numbers, -0, the largest integers, astral characters, a create past its 4 KiB buffer', async (t) => {
  const cases: Record<string, string | number | boolean | (string | number)[]>[] = [
    { a: 1.5, b: 0.25, c: -2.75, d: 3.4028234663852886e38, e: 0.1 },
    { z: -0, y: 0, x: -1, w: 2 ** 31, v: -(2 ** 31), u: 2 ** 53 - 1, t: -(2 ** 53 - 1) },
    { s: 'emoji \u{1F600} and \u{10FFFF}', r: ['\u00e9', '\u0142', '\u4e2d'] },
    { big: 'x'.repeat(20_000), after: 'still here', list: Array.from({ length: 300 }, (_, i) => `item ${i} \u00fc`) },
  ];
  for (const [i, fields] of cases.entries()) {
    const doc = newDoc('per-x', 77);
    const real = applyLocal(doc, fields, { type: 'Person', deleted: false, created: 1234 });
    // twice: the second write reuses the buffer the first one grew
    for (const round of [1, 2]) {
      const mine = encodeCreate(77, fields, 'Person', 1234);
      t.equal(Buffer.compare(Buffer.from(real.update!), Buffer.from(mine.update)), 0, `case ${i}, round ${round}: the same bytes`);
    }
    const back = new Y.Doc();
    Y.applyUpdate(back, encodeCreate(77, fields, 'Person', 1234).update);
    t.same(back.getMap('f').toJSON(), fields, `case ${i} reads back`);
    if (i === 1) t.ok(Object.is(back.getMap('f').get('z'), -0), '-0 stays -0');
  }
});

t.test('a hand-encoded create is byte for byte what Yjs writes', async (t) => {
  const rnd = prng(11);
  const values = (): string | number | boolean | (string | number)[] => {
    const r = rnd();
    if (r < 0.3) return `v${Math.floor(rnd() * 1e6)} ünïcødé ${'x'.repeat(Math.floor(rnd() * 300))}`;
    if (r < 0.45) return Math.floor(rnd() * 2 ** 40) - 2 ** 39;
    if (r < 0.55) return rnd() * 1000;
    if (r < 0.65) return rnd() < 0.5;
    return Array.from({ length: 1 + Math.floor(rnd() * 4) }, (_, i) => (i % 2 ? i : `+27 0${i}`));
  };
  for (let i = 0; i < 300; i++) {
    const clientId = Math.floor(rnd() * 2 ** 32);
    const fields: Record<string, ReturnType<typeof values>> = {};
    const n = 1 + Math.floor(rnd() * 14);
    for (let k = 0; k < n; k++) fields[`field${Math.floor(rnd() * 30)}`] = values();
    const doc = newDoc('per-x', clientId);
    const created = Math.floor(rnd() * 2 ** 50);
    const real = applyLocal(doc, fields, { type: 'Person', deleted: false, created });
    const mine = encodeCreate(clientId, fields, 'Person', created);
    if (Buffer.compare(Buffer.from(real.update!), Buffer.from(mine.update)) !== 0) {
      t.fail(`case ${i}: bytes differ for ${JSON.stringify(fields)}`);
      return;
    }
    t.equal(singleClientVersion(clientId, mine.clock), docVersion(doc));
    const back = new Y.Doc();
    Y.applyUpdate(back, mine.update);
    t.same(back.getMap('f').toJSON(), fields);
  }
});

t.test('a version does not depend on the order a node first saw its clients in', async (t) => {
  // two clients write and overwrite one field each, concurrently: both the state vector and the delete set name both
  const p = newDoc('per-o', 101);
  applyLocal(p, { cn: 'A' }, {});
  applyLocal(p, { cn: 'A2' }, {});
  const q = newDoc('per-o', 202);
  applyLocal(q, { sn: 'B' }, {});
  applyLocal(q, { sn: 'B2' }, {});
  const x = new Y.Doc();
  Y.applyUpdate(x, Y.encodeStateAsUpdate(p));
  Y.applyUpdate(x, Y.encodeStateAsUpdate(q));
  const y = new Y.Doc();
  Y.applyUpdate(y, Y.encodeStateAsUpdate(q));
  Y.applyUpdate(y, Y.encodeStateAsUpdate(p));
  t.same([[...Y.snapshot(x).sv.keys()], [...Y.snapshot(y).sv.keys()]], [[101, 202], [202, 101]], 'the two nodes list the clients in opposite orders');
  t.same([[...Y.snapshot(x).ds.clients.keys()], [...Y.snapshot(y).ds.clients.keys()]], [[101, 202], [202, 101]], 'in the delete set too');
  t.equal(docVersion(x), docVersion(y), 'and agree on the version');
});

t.test('a version names the merged state: equal however it was reached, different whenever content or history differs', async (t) => {
  const a = newDoc('per-v', 101);
  applyLocal(a, { cn: 'Ann', sn: 'Lee', mail: ['ann@x.test'] }, { type: 'Person', deleted: false, created: 1 });
  const created = docVersion(a);
  t.equal(docVersion(rebuilt(a)), created, 'a doc loaded from the stored state has the same version');

  // two nodes edit concurrently, then exchange their changes in opposite orders
  const b = newDoc('per-v', 202);
  Y.applyUpdate(b, Y.encodeStateAsUpdate(a));
  b.clientID = 202;
  const ua = applyLocal(a, { sn: 'Leigh' }, {}).update!;
  const ub = applyLocal(b, { title: 'CTO', mail: null }, {}).update!;
  t.not(docVersion(a), docVersion(b), 'diverged states differ');
  const c = newDoc('per-v', 303);
  Y.applyUpdate(c, Y.encodeStateAsUpdate(rebuiltDoc(created)));
  Y.applyUpdate(c, ub);
  Y.applyUpdate(c, ua);
  Y.applyUpdate(a, ub);
  Y.applyUpdate(b, ua);
  t.equal(docVersion(a), docVersion(b), 'converged after exchanging');
  t.equal(docVersion(c), docVersion(a), 'a third node that got the changes in the other order agrees');
  t.equal(docVersion(rebuilt(c)), docVersion(a), 'and so does its stored state, loaded again');

  // A Yjs removal adds no item (applyLocal's adds its mark in the settled map, which a state
  // of another implementation, or of an older build, need not have): only the delete set
  // tells the states apart.
  const before = docVersion(a);
  const svBefore = Buffer.from(Y.encodeStateVector(a)).toString('hex');
  a.getMap('f').delete('title');
  t.equal(Buffer.from(Y.encodeStateVector(a)).toString('hex'), svBefore, 'the removal left the state vector as it was');
  t.not(docVersion(a), before, 'but the version changed');
  t.equal(docVersion(rebuilt(a)), docVersion(a), 'and a node that loads that state agrees');

  // a delete and an undelete each make a new version, never an old one again
  const seen = new Set([created, before, docVersion(a)]);
  applyLocal(a, {}, { deleted: true });
  t.notOk(seen.has(docVersion(a)), 'deleting makes a new version');
  seen.add(docVersion(a));
  applyLocal(a, {}, { deleted: false });
  t.notOk(seen.has(docVersion(a)), 'undeleting makes another');

  function rebuiltDoc(version: string): Y.Doc {
    // the first state of `a`, rebuilt from a fresh create: checks the fixture, not the formula
    const d = newDoc('per-v', 101);
    applyLocal(d, { cn: 'Ann', sn: 'Lee', mail: ['ann@x.test'] }, { type: 'Person', deleted: false, created: 1 });
    t.equal(docVersion(d), version, 'the same create gives the same version');
    return d;
  }
});

function rebuilt(doc: Y.Doc): Y.Doc {
  const d = new Y.Doc({ guid: doc.guid, gc: true });
  Y.applyUpdate(d, Y.encodeStateAsUpdate(doc));
  return d;
}

t.test('the worked example of docs/protocol.md: a second implementation must compute these versions', async (t) => {
  const d = newDoc('thg-0123456789ab', 42);
  d.transact(() => {
    d.getMap('f').set('name', 'Ada');
    d.getMap('m').set('type', 'Thing');
  });
  t.equal(docVersion(d), 'X36ZMrXTMSmUHuim', 'created');
  d.transact(() => d.getMap('m').set('deleted', true));
  t.equal(docVersion(d), 'pXvEIm5vk_xoVvLv', 'deleted');
  d.transact(() => d.getMap('f').delete('name'));
  t.equal(docVersion(d), 'ZxLzIqnFVFJ5K-np', 'a field removed: the delete set alone changed');
});

t.test('holdsItemsOf sees items Yjs keeps pending behind a gap, which a state vector does not show', async (t) => {
  // one client's three writes, u0 u1 u2; the sender holds u0 and u2 (u2 pending: u1 is missing), the receiver u0
  const writer = new Y.Doc();
  writer.clientID = 1;
  const updates: Uint8Array[] = [];
  writer.on('update', (u: Uint8Array) => updates.push(u));
  for (const v of ['x', 'y', 'z']) writer.getMap('f').set(v, v);
  const sender = new Y.Doc();
  Y.applyUpdate(sender, updates[0]!);
  Y.applyUpdate(sender, updates[2]!);
  const receiver = new Y.Doc();
  Y.applyUpdate(receiver, updates[0]!);
  const stored = Y.encodeStateAsUpdate(sender);
  const theirs = Y.encodeStateVector(receiver);
  t.same(Y.decodeStateVector(Y.encodeStateVectorFromUpdate(stored)), Y.decodeStateVector(theirs), 'the state vectors are equal');
  t.equal(docVersion(sender), docVersion(receiver), 'and so are the versions');
  t.notOk(holdsItemsOf(theirs, stored), 'yet the receiver lacks the pending item');
  t.ok(holdsItemsOf(Y.encodeStateVector(writer), stored), 'a peer with every write holds all of it');
  t.ok(holdsItemsOf(theirs, Y.encodeStateAsUpdate(receiver)), 'and a state holds its own items');
  t.notOk(holdsItemsOf(Y.encodeStateVector(new Y.Doc()), stored), 'an empty state vector holds nothing');
});

t.test('a settle mark that arrives on its own counts as a change to the field of the item it names; one naming an item not here is passed over', async (t) => {
  const writer = newDoc('org-x', 11);
  applyLocal(writer, { name: 'Acme' }, { type: 'Organisation', deleted: false, created: 1 });
  const receiver = docFromState('org-x', Y.encodeStateAsUpdate(writer), 22);
  const touched = (mark: (settled: Y.Map<unknown>) => void): Set<string> => {
    const before = Y.encodeStateVector(receiver);
    writer.transact(() => mark(writer.getMap('s')));
    const into = new Set<string>();
    const onAfter = (tr: Y.Transaction): void => fieldsTouched(tr, receiver, into);
    receiver.on('afterTransaction', onAfter);
    Y.applyUpdate(receiver, Y.encodeStateAsUpdate(writer, before), 'remote');
    receiver.off('afterTransaction', onAfter);
    return into;
  };
  const item = (writer.getMap('f') as unknown as { _map: Map<string, Y.Item> })._map.get('name')!;
  t.same([...touched((s) => s.set(lastItemId(item), 1))], ['name'], 'the mark of the name item touches name');
  t.same([...touched((s) => s.set('999999:0', 1))], [], 'a mark of an item not held here touches nothing, and does not throw');
  t.same(parseItemId('5:7'), { client: 5, clock: 7 });
  for (const bad of ['5:', ':7', '5', '5:-1', 'x:1', '5:1.5']) t.equal(parseItemId(bad), undefined, `"${bad}" names no item`);
});
