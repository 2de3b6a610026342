import t from 'tap';
import * as Y from 'yjs';
import { Packr } from 'msgpackr';
import { clientSpace, drawClientId, firstClient } from '../dist/client-ids.js';
import { applyLocal, docVersion, encodeCreate, newDoc, singleClientVersion } from '../dist/yobject.js';
import { encode } from '../dist/codec.js';
import { join } from 'node:path';
import { encodeBackup, restoreBackup, Store } from '../dist/index.js';
import { openStore, schema, tempDir } from './fixtures.js';

const LOW = 2 ** 32;
const TOP = 2 ** 21 - 1;

t.test('a node id names one space of 2^21 - 1, never 0, the same at every start', async (t) => {
  const spaces = new Set<number>();
  for (let i = 0; i < 2000; i++) {
    const s = clientSpace(`node-${i}`);
    if (!Number.isInteger(s) || s < 1 || s > TOP) t.fail(`space ${s} of node-${i} is out of range`);
    spaces.add(s);
    if (clientSpace(`node-${i}`) !== s) t.fail(`node-${i} changed space`);
  }
  // 2,000 draws from 2^21 spaces: a collision or two is the birthday bound, hundreds a broken hash
  t.ok(spaces.size >= 1990, `2,000 node ids spread over ${spaces.size} spaces`);
});

t.test('a drawn clientID lies in its node\'s space, is a safe integer, and is none of those used', async (t) => {
  for (const node of ['eu-1', 'us-east', 'a', 'x'.repeat(64)]) {
    const id = drawClientId(node, new Set());
    t.equal(Math.floor(id / LOW), clientSpace(node), `${node}: the high bits are its space`);
    t.ok(Number.isSafeInteger(id), `${node}: ${id} is exact as a double`);
  }
  const drawn: number[] = [];
  class ThreeTaken extends Set<number> {
    override has(id: number): boolean {
      drawn.push(id);
      return drawn.length <= 3;
    }
  }
  const id = drawClientId('eu-1', new ThreeTaken());
  t.equal(drawn.length, 4, 'it draws again while the draw is taken');
  t.equal(id, drawn[3], 'and keeps the first free one');
});

t.test('firstClient reads the writer of an update, and nothing from what it cannot read', async (t) => {
  const big = TOP * LOW + LOW - 1; // the largest clientID there is: 2^53 - 1
  t.equal(big, Number.MAX_SAFE_INTEGER);
  const { update } = encodeCreate(big, { cn: 'Anna' }, 'Person', 1);
  t.equal(firstClient(update), big, 'the hand encoder\'s update');
  const doc = newDoc('per-1', 7 * LOW + 12345);
  const local = applyLocal(doc, { cn: 'Anna', sn: 'A' }, { type: 'Person', deleted: false, created: 1 }).update!;
  t.equal(firstClient(local), 7 * LOW + 12345, 'a Yjs update');
  const removal = applyLocal(doc, { cn: null }, { type: 'Person', deleted: false, created: 1 }).update!;
  t.equal(Y.decodeUpdate(removal).structs.length, 1, 'a removal adds one item: its mark in the settled map');
  t.equal(firstClient(removal), 7 * LOW + 12345, 'which names the writer');
  // an update of deletions only, as plain Yjs makes for a removal
  const plain = new Y.Doc();
  plain.getMap('f').set('cn', 'Anna');
  let deletion: Uint8Array | undefined;
  plain.on('update', (u: Uint8Array) => void (deletion = u));
  plain.getMap('f').delete('cn');
  t.equal(Y.decodeUpdate(deletion!).structs.length, 0);
  t.equal(firstClient(deletion!), undefined, 'an update that adds no item names no writer');
  t.equal(firstClient(new Uint8Array()), undefined, 'empty');
  t.equal(firstClient(update.subarray(0, 3)), undefined, 'cut inside the client');
  t.equal(firstClient(new Uint8Array(20).fill(0xff)), undefined, 'a varint longer than any safe integer');
});

t.test('Yjs integrates clientIDs past 32 bits as it does smaller ones', async (t) => {
  const big = TOP * LOW + LOW - 1;
  const fields = { cn: 'Anna', mail: ['a@x.com', 'b@x.com'], n: 2 ** 40 };
  const real = applyLocal(newDoc('per-x', big), fields, { type: 'Person', deleted: false, created: 5 });
  const mine = encodeCreate(big, fields, 'Person', 5);
  t.same(Buffer.from(mine.update), Buffer.from(real.update!), 'the hand encoder writes what Yjs writes');
  const back = new Y.Doc();
  Y.applyUpdate(back, mine.update);
  t.same(back.getMap('f').toJSON(), fields);
  t.equal(singleClientVersion(big, mine.clock), docVersion(back));

  // the same concurrent overwrite, applied in both orders, keeps the same value on both sides
  const ids = [3 * LOW + 9, 3 * LOW + 10, TOP * LOW + 1, 17];
  for (const [i, x] of ids.entries()) {
    for (const y of ids.slice(i + 1)) {
      const base = new Y.Doc();
      Y.applyUpdate(base, mine.update);
      const one = new Y.Doc();
      const two = new Y.Doc();
      Y.applyUpdate(one, Y.encodeStateAsUpdate(base));
      Y.applyUpdate(two, Y.encodeStateAsUpdate(base));
      one.clientID = x;
      two.clientID = y;
      one.getMap('f').set('cn', 'by x');
      two.getMap('f').set('cn', 'by y');
      const u1 = Y.encodeStateAsUpdate(one);
      const u2 = Y.encodeStateAsUpdate(two);
      Y.applyUpdate(one, u2);
      Y.applyUpdate(two, u1);
      t.equal(one.getMap('f').get('cn'), two.getMap('f').get('cn'), `${x} against ${y}: converged`);
      t.equal(one.getMap('f').get('cn'), x > y ? 'by x' : 'by y', 'the higher clientID wins, as with 32 bits');
      t.equal(docVersion(one), docVersion(two), 'with one version');
    }
  }
});

t.test('a store writes with a clientID of its space, and refuses a peer\'s change made with one it drew', async (t) => {
  const a = await openStore(t, { nodeId: 'a' });
  const b = await openStore(t, { nodeId: 'b' });
  t.equal(Math.floor(a.clientId / LOW), clientSpace('a'), 'a writes in its space');
  t.equal(Math.floor(b.clientId / LOW), clientSpace('b'));

  const org = await b.create('Org', { name: 'Acme', kind: 'customer' });
  const [entry] = await b.readFeed(0, 1);
  const { seq: _seq, ...fromB } = entry!;
  t.equal(firstClient(fromB.update), b.clientId, 'b\'s change carries b\'s clientID');

  // the same change as if b had drawn a's clientID
  const stolen = { ...fromB, update: encodeCreate(a.clientId, { name: 'Acme', kind: 'customer' }, 'Org', 1).update };
  await t.rejects(
    a.applyRemote([stolen], { checkpoint: { peer: 'b', seq: 1 } }),
    { message: `change b:1 to ${org.id} carries Yjs client id ${a.clientId}, which a drew itself; every link that brings it stops there until one of the two nodes is rebuilt (docs/operations.md, "A Yjs client id used twice")` },
  );
  t.equal(await a.get(org.id), undefined, 'nothing of it is stored');
  t.same(a.versionVector(), {}, 'nor counted as received');
  t.equal(await a.checkpoint('b'), 0, 'and the checkpoint stays');

  t.same(await a.applyRemote([fromB], { checkpoint: { peer: 'b', seq: 1 } }), { applied: 1, skipped: 0, conflicts: 0 }, 'b\'s own change applies');
  t.same((await a.get(org.id))?.fields, { name: 'Acme', kind: 'customer' });
});

t.test('items of a clientID a store drew are refused anywhere in a change, and in a peer\'s state', async (t) => {
  const a = await openStore(t, { nodeId: 'a' });
  const refusal = (what: string): RegExp => new RegExp(`^${what} carries Yjs client id ${a.clientId}, which a drew itself; `);

  // a change whose first client is another's, with a's items behind it (Yjs writes higher clients first)
  const inner = newDoc('org-mixed', a.clientId);
  applyLocal(inner, { name: 'Mixed', kind: 'customer' }, { type: 'Org', deleted: false, created: 1 });
  const outer = new Y.Doc();
  Y.applyUpdate(outer, Y.encodeStateAsUpdate(inner));
  outer.clientID = Number.MAX_SAFE_INTEGER;
  outer.getMap('f').set('name', 'Mixed 2');
  const update = Y.encodeStateAsUpdate(outer);
  t.equal(firstClient(update), Number.MAX_SAFE_INTEGER, 'a\'s clientID is not the first');
  const change = { origin: 'b', originSeq: 1, id: 'org-mixed', type: 'Org', update, hlc: 1, principal: 'system', fields: ['name', 'kind'], kind: 'create' as const };
  await t.rejects(a.applyRemote([change]), { message: refusal('change b:1 to org-mixed') });
  t.equal(await a.get('org-mixed'), undefined, 'nothing of it is stored');
  t.same(a.versionVector(), {});

  // a's own object, and a peer's state of it holding items of a's clientID that a never wrote
  const o = await a.create('Org', { name: 'Acme', kind: 'customer' });
  const doc = new Y.Doc();
  Y.applyUpdate(doc, (await a.readFeed(0, 10)).find((e) => e.id === o.id)!.update); // a create's update is the whole state
  doc.clientID = a.clientId;
  doc.getMap('f').set('name', 'Acme by another');
  const rec = { t: 'Org', f: { name: 'Acme by another', kind: 'customer' }, d: false, h: o.hlc + 1, s: 1, v: docVersion(doc), y: Y.encodeStateAsUpdate(doc) };
  await t.rejects(a.cloneStates([{ id: o.id, record: encode(rec) }]), { message: refusal(`a peer's state of ${o.id}`) });
  t.equal((await a.get(o.id))?.fields['name'], 'Acme', 'the object is as a wrote it');
  await a.update(o.id, { kind: 'reseller' });
  t.same((await a.get(o.id))?.fields, { name: 'Acme', kind: 'reseller' }, 'and a writes on from its own state, not the refused one');
});

t.test('a peer\'s state may bring back items of an earlier clientID of this node, which a disk rolled back has lost', async (t) => {
  const dir = tempDir(t);
  const first = await Store.open({ dir, schema, nodeId: 'a' });
  const o = await first.create('Org', { name: 'Acme', kind: 'customer' });
  const state = (await first.readFeed(0, 1))[0]!.update;
  const before = first.clientId;
  await first.close();
  // what a peer holds of the write made before the rollback: more items of a's earlier clientID
  const doc = new Y.Doc();
  Y.applyUpdate(doc, state);
  doc.clientID = before;
  doc.getMap('f').set('name', 'Acme, written before the rollback');
  const a = await openStore(t, { dir });
  t.not(a.clientId, before);
  const rec = { t: 'Org', f: { name: 'Acme, written before the rollback', kind: 'customer' }, d: false, h: o.hlc + 1, s: 1, v: docVersion(doc), y: Y.encodeStateAsUpdate(doc) };
  await a.cloneStates([{ id: o.id, record: encode(rec) }]);
  t.equal((await a.get(o.id))?.fields['name'], 'Acme, written before the rollback', 'merged, not refused');
});

t.test('a writer is attributed to its change\'s origin, also when its items wait in Yjs for another origin\'s change', async (t) => {
  const a = await openStore(t, { nodeId: 'a' });
  const b = await openStore(t, { nodeId: 'b' });
  const c = await openStore(t, { nodeId: 'c' });
  const o = await a.create('Org', { name: 'Acme', kind: 'customer' });
  const feed = async (s: typeof a) => (await s.readFeed(0)).map(({ seq: _seq, ...e }) => e);
  const [fromA] = await feed(a);
  await b.applyRemote([fromA!]);
  await b.update(o.id, { name: 'Acme B' });
  const fromB = (await feed(b)).find((e) => e.origin === 'b')!;
  await c.applyRemote([fromB]); // b's items build on a's, which c lacks: Yjs keeps them pending
  await c.applyRemote([fromA!]); // and integrates them with a's
  t.equal((await c.get(o.id))?.fields['name'], 'Acme B');
  await c.update(o.id, { kind: 'reseller' }); // a batch that writes the attribution, if it was not yet
  const [, raw] = (await c.raw('mclientNodes').next()).value as [string, Buffer];
  const nodes = new Packr({ useRecords: false }).unpack(raw) as Record<string, string>;
  t.equal(nodes[String(b.clientId)], 'b', 'b\'s clientID is b\'s');
  t.equal(nodes[String(a.clientId)], 'a');
});

t.test('a restored incarnation applies what its original wrote with a clientID they share the record of', async (t) => {
  const a = await openStore(t, { nodeId: 'a' });
  const snap = a.backupSnapshot();
  const dir = join(tempDir(t), 'restored');
  const restored = await restoreBackup(dir, encodeBackup(snap.header, snap.batches));
  await snap.close();
  // the original goes on writing after the backup, with the clientID the backup recorded
  const o = await a.create('Org', { name: 'Acme', kind: 'customer' });
  const [entry] = await a.readFeed(0, 1);
  const { seq: _seq, ...fromA } = entry!;
  const r = await openStore(t, { dir });
  t.equal(r.nodeId, restored.nodeId);
  t.not(r.clientId, a.clientId, 'the incarnation draws its own');
  t.same(await r.applyRemote([fromA]), { applied: 1, skipped: 0, conflicts: 0 }, 'a\'s clientID stays a\'s, not the incarnation\'s');
  t.same((await r.get(o.id))?.fields, { name: 'Acme', kind: 'customer' });
});

t.test("a peer's change written with an earlier clientID of this node is refused as well", async (t) => {
  // only the update's first client shows it: this process's own clientID is another, and is not in the update
  const dir = tempDir(t);
  const first = await Store.open({ dir, schema, nodeId: 'a' });
  const earlier = first.clientId;
  await first.close();
  const a = await Store.open({ dir, schema, nodeId: 'a' });
  t.teardown(() => a.close());
  t.not(a.clientId, earlier, 'a restart draws anew');
  const doc = newDoc('org-old', earlier);
  applyLocal(doc, { name: 'Old', kind: 'customer' }, { type: 'Org', deleted: false, created: 1 });
  const change = { origin: 'b', originSeq: 1, id: 'org-old', type: 'Org', update: Y.encodeStateAsUpdate(doc), hlc: 1, principal: 'system', fields: ['name', 'kind'], kind: 'create' as const };
  await t.rejects(a.applyRemote([change]), { message: new RegExp(`^change b:1 to org-old carries Yjs client id ${earlier}, which a drew itself; `) });
  t.equal(await a.get('org-old'), undefined, 'nothing of it is stored');
  t.same(a.versionVector(), {});
  // the same change as this node's own, sent back by a peer after this node's disk lost it: taken
  await a.applyRemote([{ ...change, origin: 'a' }]);
  t.equal((await a.get('org-old'))?.fields['name'], 'Old', "this node's own lost change is taken back");
});
