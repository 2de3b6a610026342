// Conflicts of concurrent writes are a function of an object's state (its
// field's open heads), so every node that holds the same state records the
// same open conflict: whatever order changes came in, with three or more
// writers, after a restart, and on a node cloned by states.
import t, { type Test } from 'tap';
import { Store, type FeedEntry } from '../dist/index.js';
import { openStore, schema, tempDir } from './fixtures.js';

type Conflict = Awaited<ReturnType<Store['conflicts']>>['items'][number];

/** Delivers these feed entries to `to`, as a session would. */
async function deliver(to: Store, entries: FeedEntry[]): Promise<void> {
  await to.applyRemote(entries.map(({ seq: _seq, ...c }) => c));
}

/** `from`'s own changes to `id` after `since`: only what it wrote, not what it relayed. */
async function own(from: Store, since = 0): Promise<FeedEntry[]> {
  return (await from.readFeed(since, 10_000)).filter((e) => e.origin === from.nodeId);
}

/** What must be equal on every node: the open conflicts without the local detection time. */
async function openConflicts(s: Store): Promise<Omit<Conflict, 'detected' | 'settled'>[]> {
  return (await s.conflicts({ open: true })).items.map(({ detected: _d, settled: _s, ...r }) => r);
}

/** An Org made on `a` and delivered to the others: the value every later write is made over. */
async function sharedOrg(a: Store, ...others: Store[]): Promise<{ o: { id: string }; base: FeedEntry[] }> {
  const o = await a.create('Org', { name: 'Acme', kind: 'customer' });
  const base = await own(a);
  for (const s of others) await deliver(s, base);
  return { o, base };
}

async function three(t: Test): Promise<[Store, Store, Store]> {
  return [await openStore(t, { nodeId: 'a' }), await openStore(t, { nodeId: 'b' }), await openStore(t, { nodeId: 'c' })];
}

t.test('three concurrent writes to one field: one conflict with the three values, the same on every node, whatever the order', async (t) => {
  const [a, b, c] = await three(t);
  const { o, base } = await sharedOrg(a, b, c);
  await a.update(o.id, { name: 'Acme A' });
  await b.update(o.id, { name: 'Acme B' });
  await c.update(o.id, { name: 'Acme C' });
  const [wa, wb, wc] = [await own(a, base.at(-1)!.seq), await own(b, 1), await own(c, 1)];
  // each node hears the other two in another order
  await deliver(a, wb);
  await deliver(a, wc);
  await deliver(b, wc);
  await deliver(b, wa);
  await deliver(c, wa);
  await deliver(c, wb);
  const [oa, ob, oc] = [await a.get(o.id), await b.get(o.id), await c.get(o.id)];
  t.equal(ob?.version, oa?.version);
  t.equal(oc?.version, oa?.version, 'converged');
  const [ca, cb, cc] = [await openConflicts(a), await openConflicts(b), await openConflicts(c)];
  t.equal(ca.length, 1, 'one conflict for the field, not one per pair of writes');
  t.same(cb, ca, 'b records what a records');
  t.same(cc, ca, 'c records what a records');
  const rec = ca[0]!;
  t.same(rec.values.map((v) => [v.node, v.value]).sort(), [['a', 'Acme A'], ['b', 'Acme B'], ['c', 'Acme C']], 'every write with its node and value');
  t.equal(rec.values.find((v) => v.item === rec.winner)?.value, oa?.fields['name'], 'the winner is the value shown');
  t.equal(a.openConflictCount(), 1);
  for (const s of [a, b, c]) {
    const state = Buffer.from((await s.objectState(o.id))!);
    t.ok(['Acme A', 'Acme B', 'Acme C'].every((v) => state.includes(v)), `${s.nodeId}'s state keeps the values that lost while the conflict is open`);
  }

  // a write made after seeing all three settles it, on every node
  await b.update(o.id, { name: 'Acme United' });
  const settle = await own(b, wb.at(-1)!.seq);
  await deliver(a, settle);
  await deliver(c, settle);
  for (const s of [a, b, c]) {
    t.same(await openConflicts(s), [], `settled on ${s.nodeId}`);
    t.equal(s.openConflictCount(), 0);
    const all = (await s.conflicts()).items;
    t.ok(all.length > 0 && all.every((r) => r.settled !== undefined), `${s.nodeId} keeps the record, marked settled`);
    const state = Buffer.from((await s.objectState(o.id))!);
    t.ok(['Acme A', 'Acme B', 'Acme C'].every((v) => !state.includes(v)), `${s.nodeId}'s state drops them once settled, before any reload`);
  }
  t.equal((await c.get(o.id))?.fields['name'], 'Acme United');
});

t.test('a write over one of two concurrent writes keeps the conflict, with the later write in it, on every node', async (t) => {
  const [a, b, c] = await three(t);
  const { o, base } = await sharedOrg(a, b, c);
  await a.update(o.id, { name: 'Levante' }); // X
  const x = await own(a, base.at(-1)!.seq);
  await deliver(b, x);
  await b.update(o.id, { name: 'East, corrected' }); // Y, written over X by a node that had not seen Z
  const y = await own(b, 1);
  await c.update(o.id, { name: 'West' }); // Z, concurrent with both
  const z = await own(c, 1);
  // c hears X first and records X against Z; Y then takes X's place
  await deliver(c, x);
  t.same((await openConflicts(c))[0]?.values.map((v) => v.value).sort(), ['Levante', 'West']);
  await deliver(c, y);
  await deliver(a, z);
  await deliver(a, y);
  await deliver(b, z);
  const [ca, cb, cc] = [await openConflicts(a), await openConflicts(b), await openConflicts(c)];
  t.equal(ca.length, 1);
  t.same(ca[0]?.values.map((v) => v.value).sort(), ['East, corrected', 'West'], 'X was written over: not a head any more');
  t.same(cb, ca);
  t.same(cc, ca, 'c, which recorded X against Z on the way, ends with the same open conflict');
  const cAll = (await c.conflicts()).items;
  t.equal(cAll.length, 2, 'c keeps the superseded record');
  t.ok(cAll.some((r) => r.settled !== undefined && r.values.some((v) => v.value === 'Levante')), 'marked settled');
  for (const s of [a, b, c]) t.notOk(Buffer.from((await s.objectState(o.id))!).includes('Levante'), `${s.nodeId}'s state no longer holds X, which was written over`);
});

t.test('a write made without seeing a conflict does not settle it: the conflict is then with that write', async (t) => {
  const [a, b, c] = await three(t);
  const { o, base } = await sharedOrg(a, b, c);
  await a.update(o.id, { name: 'East' });
  await b.update(o.id, { name: 'West' });
  const [x, v] = [await own(a, base.at(-1)!.seq), await own(b, 1)];
  await deliver(c, v); // c has seen West only
  await c.update(o.id, { name: 'Central' });
  const w = await own(c, 1);
  for (const [to, ...parts] of [[a, v, w], [b, x, w], [c, x]] as const) for (const p of parts) await deliver(to, p);
  const [ca, cb, cc] = [await openConflicts(a), await openConflicts(b), await openConflicts(c)];
  t.equal(ca.length, 1);
  t.same(ca[0]?.values.map((v) => v.value).sort(), ['Central', 'East'], 'West was written over; East was never seen by its writer');
  t.same(cb, ca);
  t.same(cc, ca);
});

t.test('a removal is never one side of a conflict: made without seeing a concurrent write, or made to settle one', async (t) => {
  const [a, b, c] = await three(t);
  const p = await a.create('Person', { cn: 'Anna', sn: 'A', telephoneNumber: ['+27 021 1'] });
  const base = await own(a);
  await deliver(b, base);
  await deliver(c, base);
  await a.update(p.id, { telephoneNumber: ['+27 021 2'] });
  await b.update(p.id, { telephoneNumber: ['+27 021 3'] });
  await b.update(p.id, { telephoneNumber: null }); // b removes its own value, not having seen a's
  const [x, v] = [await own(a, base.at(-1)!.seq), await own(b, 1)];
  await deliver(a, v);
  await deliver(b, x);
  await deliver(c, v); // c hears the removal before a's write
  await deliver(c, x);
  const shown = (await a.get(p.id))?.fields['telephoneNumber'];
  for (const s of [b, c]) t.same((await s.get(p.id))?.fields['telephoneNumber'], shown, `${s.nodeId} shows what a shows`);
  for (const s of [a, b, c]) t.same(await openConflicts(s), [], `none on ${s.nodeId}`);
  for (const s of [a, b, c]) {
    // a held b's value as one that lost to its own when the removal came, which deleted nothing new there
    t.notOk(Buffer.from((await s.objectState(p.id))!).includes('+27 021 3'), `the removed value is not kept in ${s.nodeId}'s state`);
  }

  // two values in conflict, and a removal made after seeing both: settled, and neither value kept
  await a.update(p.id, { telephoneNumber: ['+27 021 4'] });
  await b.update(p.id, { telephoneNumber: ['+27 021 5'] });
  const [x2, v2] = [await own(a, x.at(-1)!.seq), await own(b, v.at(-1)!.seq)];
  for (const [to, w] of [[a, v2], [b, x2], [c, x2], [c, v2]] as const) await deliver(to, w);
  t.equal((await openConflicts(c)).length, 1);
  await c.update(p.id, { telephoneNumber: null });
  const r = await own(c, 1);
  await deliver(a, r);
  await deliver(b, r);
  for (const s of [a, b, c]) {
    t.same(await openConflicts(s), [], `settled on ${s.nodeId}`);
    const st = Buffer.from((await s.objectState(p.id))!);
    t.ok(!st.includes('+27 021 4') && !st.includes('+27 021 5'), `${s.nodeId} keeps neither value`);
  }
});

t.test('two writes that lost only to a removal ordered after them are no conflict: the field shows nothing, and no record names a winner it does not show', async (t) => {
  const nodes = await three(t);
  const p = await nodes[0].create('Person', { cn: 'P', sn: 'p', uid: 'u0' });
  const base = await own(nodes[0]);
  for (const s of nodes.slice(1)) await deliver(s, base);
  // the node whose clientID is highest: Yjs orders its item last among concurrent ones
  const [w, x, y] = [...nodes].sort((m, n) => n.clientId - m.clientId) as [Store, Store, Store];
  await w.update(p.id, { uid: 'w1' });
  await w.update(p.id, { uid: null });
  await x.update(p.id, { uid: 'xx' });
  await y.update(p.id, { uid: 'yy' });
  const writes = await Promise.all(nodes.map((s) => own(s, s === nodes[0] ? base.at(-1)!.seq : 0)));
  for (const [i, to] of nodes.entries()) for (const [j, from] of writes.entries()) if (i !== j) await deliver(to, from);
  for (const s of nodes) {
    t.equal((await s.get(p.id))?.fields['uid'], undefined, `${s.nodeId} shows no uid`);
    t.same(await openConflicts(s), [], `and lists no conflict (it listed xx and yy, "kept" one of them)`);
  }
  // a write settles what is left, everywhere
  await x.update(p.id, { uid: 'settled' });
  const last = await own(x, writes[nodes.indexOf(x)]!.at(-1)!.seq);
  for (const s of nodes) if (s !== x) await deliver(s, last);
  for (const s of nodes) {
    t.equal((await s.get(p.id))?.fields['uid'], 'settled');
    t.same(await openConflicts(s), []);
  }
});

t.test('a value left a lone head by a concurrent removal is settled by the next write, on the writer as everywhere, whichever clientID wins', async (t) => {
  for (const order of ['a, b', 'b, a'] as const) {
    const [a, b, c] = await three(t);
    const [first, second] = order === 'a, b' ? [a, b] : [b, a];
    const p = await a.create('Person', { cn: 'Anna', sn: 'A', telephoneNumber: ['+27 021 1'] });
    const base = await own(a);
    await deliver(b, base);
    await deliver(c, base);
    const [fSince, sSince] = [first.lastSeq, second.lastSeq];
    await first.update(p.id, { telephoneNumber: ['+27 021 2'] });
    await second.update(p.id, { telephoneNumber: ['+27 021 3'] });
    await second.update(p.id, { telephoneNumber: null }); // removes its own value, not having seen first's
    const [x, v] = [await own(first, fSince), await own(second, sSince)];
    await deliver(first, v);
    await deliver(second, x);
    await deliver(c, x);
    await deliver(c, v);
    const cSince = c.lastSeq;
    await c.update(p.id, { telephoneNumber: ['+27 021 5'] }); // made having seen everything
    const w = await own(c, cSince);
    await deliver(a, w);
    await deliver(b, w);
    for (const s of [a, b, c]) {
      t.same(await openConflicts(s), [], `${order}: none on ${s.nodeId}`);
      t.same((await s.get(p.id))?.fields['telephoneNumber'], ['+27 021 5'], `${order}: ${s.nodeId} shows the last write`);
      t.notOk(Buffer.from((await s.objectState(p.id))!).includes('+27 021 2'), `${order}: ${s.nodeId}'s state no longer keeps the value the write settled`);
    }
  }
});

t.test('a removal with nothing concurrent, and writes over one another, record nothing', async (t) => {
  const [a, b] = [await openStore(t, { nodeId: 'a' }), await openStore(t, { nodeId: 'b' })];
  const p = await a.create('Person', { cn: 'Anna', sn: 'A', telephoneNumber: ['1'] });
  await deliver(b, await own(a));
  await b.update(p.id, { telephoneNumber: ['2'] });
  await deliver(a, await own(b));
  await a.update(p.id, { telephoneNumber: null });
  await deliver(b, await own(a, 1));
  await b.update(p.id, { telephoneNumber: ['3'] });
  await deliver(a, await own(b, 1));
  t.same(await openConflicts(a), []);
  t.same(await openConflicts(b), []);
  t.same((await a.conflicts()).items, [], 'not even a settled one');
});

t.test('the values of a conflict stay in the state: a restart, and a further concurrent write, still show them', async (t) => {
  const dir = tempDir(t);
  let a = await Store.open({ dir, schema, nodeId: 'a', passwordCost: { N: 1024, r: 8, p: 1 } });
  t.teardown(() => a.close());
  const [b, c] = [await openStore(t, { nodeId: 'b' }), await openStore(t, { nodeId: 'c' })];
  const { o, base } = await sharedOrg(a, b, c);
  await a.update(o.id, { name: 'East' });
  await b.update(o.id, { name: 'West' });
  await c.update(o.id, { name: 'North' });
  await deliver(a, await own(b, 1));
  t.equal((await openConflicts(a)).length, 1);
  await a.close();
  a = await Store.open({ dir, schema, nodeId: 'a', passwordCost: { N: 1024, r: 8, p: 1 } });
  t.equal(a.openConflictCount(), 1, 'the open conflict is known after a restart');
  // the losing value is read back from the reloaded state, not from the record
  await deliver(a, await own(c, 1));
  const ca = await openConflicts(a);
  t.same(ca[0]?.values.map((v) => v.value).sort(), ['East', 'North', 'West']);
  t.equal((await a.conflicts()).items.filter((r) => r.settled !== undefined).length, 1, 'the two-write record is superseded');
});

t.test('a node cloned by states records the open conflicts of the states it receives', async (t) => {
  const [a, b, c] = await three(t);
  const o = await a.create('Org', { name: 'Acme', kind: 'customer' });
  const quiet = await a.create('Org', { name: 'Quiet', kind: 'vendor' });
  await deliver(b, await own(a));
  await a.update(o.id, { name: 'East' });
  await b.update(o.id, { name: 'West' });
  await deliver(a, await own(b));
  t.equal((await openConflicts(a)).length, 1);
  await a.update(o.id, { kind: 'reseller' }); // a later write of another field: the record still says a conflict is open
  const snap = a.stateSnapshot();
  for await (const frame of snap.batches(100)) await c.cloneStates(frame);
  await c.cloneStates([], { peer: 'a', head: snap.head, vector: snap.vector });
  await snap.close();
  t.equal((await c.get(o.id))?.version, (await a.get(o.id))?.version, 'converged');
  t.equal((await c.get(quiet.id))?.version, (await a.get(quiet.id))?.version);
  t.same(await openConflicts(c), await openConflicts(a), 'the clone lists the same open conflict, values and winner');
  // and a write on the clone, which has seen both, settles it everywhere
  await c.update(o.id, { name: 'Acme' });
  const w = await own(c);
  await deliver(a, w);
  await deliver(b, await own(a));
  await deliver(b, w);
  for (const s of [a, b, c]) t.same(await openConflicts(s), [], `settled on ${s.nodeId}`);
});

t.test('one id created concurrently as two types: the type Yjs keeps is the one indexed and counted, on both nodes, and the other leaves no index entry', async (t) => {
  const { checkIndexes } = await import('../dist/index.js');
  const told: Record<string, { id: string; was: string; is: string }[]> = { a: [], b: [] };
  const a = await openStore(t, { nodeId: 'a', onTypeChange: (c) => told['a']!.push(c) });
  const b = await openStore(t, { nodeId: 'b', onTypeChange: (c) => told['b']!.push(c) });
  // (an id a client chose, as an LDAP add or a keyed create on two masters may)
  await a.create('Org', { name: 'Shared', kind: 'vendor' }, { id: 'shared-1' });
  await b.create('Person', { cn: 'Flip', sn: 'Flop', uid: 'flip', mail: ['flip@example.org'] }, { id: 'shared-1' });
  await deliver(b, await own(a));
  await deliver(a, await own(b));
  const [onA, onB] = [await a.get('shared-1'), await b.get('shared-1')];
  t.equal(onA?.type, onB?.type, `one type on both (${onA?.type})`);
  t.same(await checkIndexes(a), [], "a's indexes agree with its objects");
  t.same(await checkIndexes(b), [], "b's too: the type it lost leaves no type, field or unique entry");
  const kept = onA!.type;
  const lost = kept === 'Org' ? 'Person' : 'Org';
  const loser = kept === 'Org' ? 'b' : 'a';
  t.same(told[loser], [{ id: 'shared-1', was: lost, is: kept }], 'the node whose type lost is told, once');
  t.same(told[loser === 'a' ? 'b' : 'a'], [], 'the other is not: its object never changed type');
  const live = (s: Store): Record<string, number> => Object.fromEntries(Object.entries(s.objectCounts()).filter(([, n]) => n !== 0));
  for (const s of [a, b]) t.same(live(s), { [kept]: 1 }, `${s.nodeId} counts the object once, as ${kept}, and no type below zero`);
  // the value the lost type held is free again on the node that made it
  if (kept === 'Org') t.ok(await b.create('Person', { cn: 'New', sn: 'N', uid: 'flip' }), 'its uid can be taken');
  // the lost type's fields stay in the object; a write may remove them, not set them
  const defined = Object.keys(onA!.fields).filter((f) => schema.types.get(kept)!.fields.has(f));
  const stray = Object.keys(onA!.fields).filter((f) => !defined.includes(f));
  t.ok(stray.length > 0, `the object holds the other type's fields too (${stray.join(', ')})`);
  await t.rejects(a.update('shared-1', { [stray[0]!]: 'again' }), { message: new RegExp(`field "${stray[0]}" is not a field of ${kept}`) }, 'setting one is refused');
  const cleaned = await a.update('shared-1', Object.fromEntries(stray.map((f) => [f, null])));
  t.same(Object.keys(cleaned.fields).sort(), defined.sort(), 'removing them is a write like any other');
  await t.rejects(a.create('Org', { name: 'New', kind: 'vendor', cn: null }), { message: /new Org: field "cn" is not a field of Org/ }, 'a create names no such field, even to leave it out');
  await a.delete('shared-1');
  await deliver(b, await own(a, a.lastSeq - 2));
  for (const s of [a, b]) t.same(Object.values(s.objectCounts()).filter((n) => n < 0), [], `${s.nodeId}: no count below zero after a delete`);
});

t.test('one id created as two types, merged as states (anti-entropy) rather than applied as changes: the same', async (t) => {
  const { checkIndexes } = await import('../dist/index.js');
  const a = await openStore(t, { nodeId: 'a' });
  const b = await openStore(t, { nodeId: 'b' });
  await a.create('Org', { name: 'Shared', kind: 'vendor' }, { id: 'shared-2' });
  await b.create('Person', { cn: 'Flip', sn: 'Flop', uid: 'flip2', mail: ['flip2@example.org'] }, { id: 'shared-2' });
  // each merges the other's whole state, as an anti-entropy run's diff
  const [fromA, fromB] = [(await a.objectState('shared-2'))!, (await b.objectState('shared-2'))!];
  await (await b.cloneStatesStaged([{ id: 'shared-2', diff: fromA, hlc: 1 }])).durable;
  await (await a.cloneStatesStaged([{ id: 'shared-2', diff: fromB, hlc: 1 }])).durable;
  const [onA, onB] = [await a.get('shared-2'), await b.get('shared-2')];
  t.equal(onA?.type, onB?.type, `one type on both (${onA?.type})`);
  t.same(await checkIndexes(a), []);
  t.same(await checkIndexes(b), [], 'no entry of the type that lost');
  const live = (s: Store): Record<string, number> => Object.fromEntries(Object.entries(s.objectCounts()).filter(([, n]) => n !== 0));
  for (const s of [a, b]) t.same(live(s), { [onA!.type]: 1 }, `${s.nodeId} counts it once`);
});
