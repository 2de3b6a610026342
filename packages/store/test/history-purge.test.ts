import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { checkIndexes, type Store } from '../dist/index.js';
import { openStore, ship, tempDir } from './fixtures.js';

/** Every raw key and value of the store, as text, for looking for what must be gone. */
async function rawText(s: Store): Promise<string> {
  let text = '';
  for await (const [k, v] of s.raw('')) text += `${k}\n${v.toString('latin1')}\n`;
  return text;
}

t.test('history: each change with its principal, origin and old and new values, oldest first', async (t) => {
  const s = await openStore(t, { nodeId: 'a' });
  const p = await s.create('Person', { cn: 'Anna', sn: 'Smith', mail: ['anna@x.com'], password: 'pw-one' }, { principal: 'admin' });
  await s.update(p.id, { sn: 'Jones', mail: ['anna@x.com', 'aj@x.com'], password: 'pw-two' }, { principal: 'Person:x via xml' });
  await s.update(p.id, { telephoneNumber: ['+27 021'] }, { principal: 'Person:x via ldap' });
  await s.delete(p.id, { principal: 'admin' });
  const h = (await s.history(p.id))!;
  t.equal(h.truncated, false, 'the whole history is in the feed');
  t.same(h.versions.map((v) => [v.version, v.kind, v.principal, v.origin]), [
    ['a#1', 'create', 'admin', 'a'],
    ['a#2', 'update', 'Person:x via xml', 'a'],
    ['a#3', 'update', 'Person:x via ldap', 'a'],
    ['a#4', 'delete', 'admin', 'a'],
  ]);
  t.same(h.versions[1]!.changes, [
    { field: 'mail', old: ['anna@x.com'], new: ['anna@x.com', 'aj@x.com'] },
    { field: 'password', secret: true },
    { field: 'sn', old: 'Smith', new: 'Jones' },
  ]);
  t.same(h.versions[2]!.changes, [{ field: 'telephoneNumber', old: undefined, new: ['+27 021'] }], 'a field set for the first time has no old value');
  t.equal(h.versions[3]!.deleted, true);
  t.notOk(JSON.stringify(h).includes('scrypt'), 'no password hash in history');
  t.same(h.versions[1]!.fields, { cn: 'Anna', sn: 'Jones', mail: ['anna@x.com', 'aj@x.com'] }, 'each version holds the whole object (passwords left out)');
});

t.test('a change that found no object keeps only its name in history; the fields come from its feed entry, here and on a peer', async (t) => {
  const a = await openStore(t, { nodeId: 'a' });
  const b = await openStore(t, { nodeId: 'b' });
  const c = await openStore(t, { nodeId: 'c' });
  const fields = { cn: 'Anna', sn: 'Smith', mail: ['anna@x.com', 'a.smith@x.com'], password: 'pw-one', telephoneNumber: ['0049', '+27 021'] };
  const p = await a.create('Person', fields, { principal: 'admin' });
  // the create's record names the change and nothing of the object
  let raw: Record<string, unknown> | undefined;
  for await (const [k, v] of a.raw('h')) if (k.startsWith(`h${p.id}`)) raw = (await import('../dist/codec.js')).decode<Record<string, unknown>>(v);
  t.same(Object.keys(raw!).sort(), ['d', 'h', 'k', 'n', 'o', 'p'], 'no fields, changes or old values stored for a create');
  const expected = {
    version: 'a#1',
    kind: 'create',
    principal: 'admin',
    deleted: false,
    fields: { cn: 'Anna', sn: 'Smith', mail: ['anna@x.com', 'a.smith@x.com'], telephoneNumber: ['0049', '+27 021'] },
    changes: [
      { field: 'cn', old: undefined, new: 'Anna' },
      { field: 'mail', old: undefined, new: ['anna@x.com', 'a.smith@x.com'] },
      { field: 'password', secret: true },
      { field: 'sn', old: undefined, new: 'Smith' },
      { field: 'telephoneNumber', old: undefined, new: ['0049', '+27 021'] },
    ],
  };
  await a.update(p.id, { sn: 'Jones' }, { principal: 'admin' });
  t.match((await a.history(p.id))!.versions, [expected, { version: 'a#2', changes: [{ field: 'sn', old: 'Smith', new: 'Jones' }] }], 'here');
  await ship(a, b);
  t.match((await b.history(p.id))!.versions, [expected, { version: 'a#2' }], 'on a peer that applied the create');
  t.notOk(JSON.stringify(await b.history(p.id)).includes('scrypt'), 'no password hash in history');
  // c gets a's update before a's create (relayed out of order): the update found no object there
  const entries = await a.readFeed(0, 10);
  await c.applyRemote([entries[1]!].map(({ seq: _seq, ...x }) => x));
  const early = (await c.history(p.id))!.versions;
  t.same(early.map((v) => [v.version, v.kind, v.fields, v.changes]), [['a#2', 'update', {}, []]], 'an update that found no object shows nothing: Yjs holds it until the create it builds on comes');
  await c.applyRemote([entries[0]!].map(({ seq: _seq, ...x }) => x));
  const later = (await c.history(p.id))!.versions;
  t.equal(later.length, 2);
  t.match(later[1], { version: 'a#1', kind: 'create', fields: { cn: 'Anna', sn: 'Jones' } }, 'the create, applied onto it, is recorded in full as it landed');
  t.same(later[1]!.changes.map((x) => x.field), ['cn', 'mail', 'password', 'sn', 'telephoneNumber'], 'with what it changed here, the held update included');
});

t.test('history of remote changes shows what they did here; trimming the feed trims history and says so', async (t) => {
  const a = await openStore(t, { nodeId: 'a' });
  const b = await openStore(t, { nodeId: 'b' });
  const o = await a.create('Org', { name: 'Acme', kind: 'vendor' }, { principal: 'admin' });
  await a.update(o.id, { name: 'Acme Ltd' }, { principal: 'admin' });
  await ship(a, b);
  const hb = (await b.history(o.id))!;
  t.same(hb.versions.map((v) => v.version), ['a#1', 'a#2'], 'the same versions, named the same, on the other node');
  t.same(hb.versions[1]!.changes, [{ field: 'name', old: 'Acme', new: 'Acme Ltd' }]);
  for (let i = 0; i < 5; i++) await a.create('Org', { name: `O${i}`, kind: 'vendor' });
  await a.update(o.id, { name: 'Acme Group' });
  t.equal(await a.trimFeed(3), 5, 'five entries trimmed');
  const ha = (await a.history(o.id))!;
  t.equal(ha.truncated, true, 'the create is past the retention');
  t.same(ha.versions.map((v) => v.version), ['a#8']);
  let left = 0;
  for await (const [k] of a.raw('h')) if (k.startsWith(`h${o.id}`)) left++;
  t.equal(left, 1, 'history records of trimmed entries are gone with them');
});

t.test('purge: refused while referenced; then no field value is left in the LevelDB, here or on a peer', async (t) => {
  const dirA = tempDir(t);
  const a = await openStore(t, { nodeId: 'a', dir: dirA });
  const b = await openStore(t, { nodeId: 'b' });
  const org = await a.create('Org', { name: 'Zyxwvut Holdings', kind: 'customer' });
  const p = await a.create('Person', { cn: 'Quentin Quarantine', sn: 'Quarantine', mail: ['quentin.q@secret.example'], uid: 'qqsecret', telephoneNumber: ['+99 555 0199'], org: org.id });
  await a.update(p.id, { sn: 'Quarantined-Twice' });
  await ship(a, b);
  // a conflict record on b holds values too
  await b.update(p.id, { cn: 'Quentin Concurrent' });
  await a.update(p.id, { cn: 'Quentin Other' });
  await ship(b, a, 0);
  await ship(a, b, 0);
  t.ok((await a.conflicts()).items.length > 0, 'a conflict was recorded (it holds both values)');

  await t.rejects(a.purge(org.id), { code: 'exists', message: new RegExp(`Org ${org.id} is referred to by Person ${p.id} \\(org\\)`) }, 'a referenced object is not purged');
  const r = await a.purge(p.id, { principal: 'admin' });
  t.equal(r.erased, 4, 'all four of its feed entries here (create, two updates, the concurrent one from b) redacted');
  t.equal(await a.get(p.id), undefined, 'gone');
  const purgedAt = { hlc: (await a.readFeed(a.lastSeq - 1, 1))[0]!.hlc, principal: 'admin', origin: 'a', known: true };
  t.same(await a.purgedAt(p.id), purgedAt);
  t.equal((await a.lookup('Person', 'mail', 'quentin.q@secret.example')).items.length, 0);
  t.same(await checkIndexes(a), [], 'indexes agree');
  const last = (await a.readFeed(a.lastSeq - 1, 1))[0]!;
  t.match(last, { kind: 'purge', id: p.id, principal: 'admin', fields: [] });
  t.equal(last.update.length, 0);

  await ship(a, b, 0);
  t.equal(await b.get(p.id), undefined, 'the purge replicates');
  t.same(await b.purgedAt(p.id), purgedAt);
  // a node that never held it receives the redacted create first, and the purge last
  const c = await openStore(t, { nodeId: 'c' });
  const feed = (await a.readFeed(0, 100)).filter((e) => e.id === p.id).map(({ seq: _seq, ...e }) => e);
  await c.applyRemote(feed.slice(0, 1));
  t.match(await c.purgedAt(p.id), { origin: 'a', known: false }, 'before the purge arrives: purged, by whom not yet known');
  await c.applyRemote(feed.slice(1));
  t.same(await c.purgedAt(p.id), purgedAt, 'then it names the purge, not the redacted create it received first');
  t.same(await checkIndexes(b), []);
  for (const [name, s] of [['a', a], ['b', b]] as const) {
    const text = await rawText(s);
    for (const secret of ['Quentin', 'Quarantine', 'quentin.q@secret', 'qqsecret', '555 0199']) {
      t.notOk(text.includes(secret), `${name}: no "${secret}" in any key or value`);
    }
    t.ok(text.includes('Zyxwvut'), `${name}: the scan does see other objects' values (the check can fail)`);
  }
  t.same(a.versionVector(), b.versionVector(), 'redacted entries still count as applied: vectors agree');

  await t.rejects(a.create('Person', { cn: 'X', sn: 'Y' }, { id: p.id }), { code: 'exists', message: /was purged; a purged object's id is never used again/ });
  await t.rejects(a.update(p.id, { cn: 'Z' }), { code: 'not-found', message: `${p.id} was purged` });
  await t.rejects(a.purge(p.id), { message: /purged already/ });

  // LevelDB's files: compaction runs in the background after a purge; close to let it finish
  await a.close();
  const files = readdirSync(dirA).filter((f) => /\.(ldb|log|sst)$/.test(f));
  const bytes = Buffer.concat(files.map((f) => readFileSync(join(dirA, f))));
  t.ok(bytes.includes(Buffer.from('Zyxwvut')), 'the files do hold other values (the check can fail)');
  t.notOk(bytes.includes(Buffer.from('qqsecret')), 'not even the files on disk hold the purged values');
});

t.test('a change to a purged object made concurrently elsewhere is recorded redacted and never brings it back', async (t) => {
  const a = await openStore(t, { nodeId: 'a' });
  const b = await openStore(t, { nodeId: 'b' });
  const c = await openStore(t, { nodeId: 'c' });
  const p = await a.create('Person', { cn: 'Ruth', sn: 'R' });
  await ship(a, b);
  await ship(a, c);
  await b.update(p.id, { sn: 'Concurrent-Edit' }); // b has not heard of the purge yet
  await a.purge(p.id);
  await ship(b, a, 0);
  t.equal(await a.get(p.id), undefined, 'the late change does not bring it back');
  const relayed = (await a.readFeed(0, 100)).filter((e) => e.origin === 'b');
  t.same(relayed.map((e) => [e.kind, e.update.length]), [['redacted', 0]], 'a relays it as a redaction');
  // c hears of everything only through a: b's change arrives as a redaction
  await ship(a, c, 0);
  t.equal(await c.get(p.id), undefined);
  t.same(c.versionVector(), { a: 2, b: 1 }, "c counts b's change as applied, so it is never asked for again");
  t.notOk((await rawText(c)).includes('Concurrent-Edit'));
  await ship(a, b, 0);
  t.equal(await b.get(p.id), undefined, 'b erases it, its own change too');
  t.notOk((await rawText(b)).includes('Concurrent-Edit'));
});

t.test('races: a remote change waiting behind a purge, and a write referring to the object being purged', async (t) => {
  const a = await openStore(t, { nodeId: 'a' });
  const b = await openStore(t, { nodeId: 'b' });
  const p = await a.create('Person', { cn: 'Race', sn: 'R' });
  await ship(a, b);
  await b.update(p.id, { sn: 'Late' });
  const late = (await b.readFeed(1, 10)).map(({ seq: _s, ...c }) => c);
  await Promise.all([a.purge(p.id), a.applyRemote(late)]);
  const feed = await a.readFeed(0, 100);
  const purgeSeq = feed.find((e) => e.origin === 'a' && e.kind === 'purge')!.seq;
  t.match(feed.find((e) => e.origin === 'b'), { kind: 'redacted', update: new Uint8Array(0) }, "b's change is recorded redacted");
  t.ok(feed.find((e) => e.origin === 'b')!.seq > purgeSeq, 'after the purge: it waited behind it (the race this covers)');
  t.equal(await a.get(p.id), undefined, 'the change that waited behind the purge does not bring the object back');
  t.same(await checkIndexes(a), []);

  const org = await a.create('Org', { name: 'Target', kind: 'vendor' });
  const [purged, made] = await Promise.allSettled([a.purge(org.id), a.create('Person', { cn: 'Ref', sn: 'R', org: org.id })]);
  t.ok(
    (purged.status === 'fulfilled' && made.status === 'rejected') || (purged.status === 'rejected' && made.status === 'fulfilled'),
    'either the purge or the write referring to it wins, never both',
  );
  if (made.status === 'fulfilled') t.equal((await a.get(made.value.id))?.fields['org'], org.id);
  if (made.status === 'fulfilled') t.ok(await a.get(org.id), 'the referred object is still there');

  // a write that finds its target mid-purge (marked, its earlier writes being synced) is refused
  const doomed = await a.create('Org', { name: 'Doomed', kind: 'vendor' });
  const purging = a.purge(doomed.id);
  await new Promise((r) => setImmediate(r));
  await t.rejects(a.create('Person', { cn: 'Late', sn: 'L', org: doomed.id }), { rule: 'reference', message: /which is being purged/ });
  t.same(await purging, { erased: 1 }, 'and the purge goes on');
});

/** Streams `from`'s state snapshot into `to` as a clone (all of it) or as anti-entropy (only the buckets that differ) does. */
async function streamStates(from: Store, to: Store, buckets?: Set<number>): Promise<void> {
  const snap = from.stateSnapshot();
  try {
    // (as a first and only page from a peer that listed none of its holdings: whole records)
    for await (const batch of snap.batches(2, buckets && { buckets, bits: 8, have: new Map() })) await to.cloneStates(batch);
    if (!buckets) await to.cloneStates([], { peer: from.nodeId, head: snap.head, vector: snap.vector });
  } finally {
    await snap.close();
  }
}

/** The digest buckets in which two stores differ (what anti-entropy would stream). */
async function differing(x: Store, y: Store): Promise<Set<number>> {
  const [dx, dy] = [await x.digest(8), await y.digest(8)];
  return new Set(dx.buckets.flatMap((b, i) => (b.hash === dy.buckets[i]!.hash ? [] : [i])));
}

t.test('a clone taken after a purge carries its marker: a late change from a third node does not bring the object back', async (t) => {
  const a = await openStore(t, { nodeId: 'a' });
  const b = await openStore(t, { nodeId: 'b' });
  const c = await openStore(t, { nodeId: 'c' });
  const p = await a.create('Person', { cn: 'Ruth', sn: 'R' });
  await a.create('Person', { cn: 'Kept', sn: 'K' });
  await ship(a, b);
  await b.update(p.id, { sn: 'Concurrent-Edit' }); // b has not heard of the purge yet
  await a.purge(p.id, { principal: 'admin' });
  await streamStates(a, c);
  t.match(await c.purgedAt(p.id), { principal: 'admin', origin: 'a' }, 'the clone knows who purged it');
  const [dc, da] = [await c.digest(8), await a.digest(8)];
  t.same([dc.objects, dc.buckets], [da.objects, da.buckets], 'the clone equals its source, purge marker included');
  t.same(dc.at.vector, da.at.vector, 'and says it holds the same changes');
  await ship(b, c, 0);
  t.equal(await c.get(p.id), undefined, "b's late change does not bring it back");
  t.notOk((await rawText(c)).includes('Concurrent-Edit'), 'and leaves no value of it on disk');
  t.equal((await c.list('Person')).items.length, 1);
  t.same(await checkIndexes(c), []);
});

t.test('anti-entropy carries purge markers: a node past the feed retention erases the object, and digests then agree', async (t) => {
  const a = await openStore(t, { nodeId: 'a' });
  const c = await openStore(t, { nodeId: 'c' });
  const d = await openStore(t, { nodeId: 'd' });
  const p = await a.create('Person', { cn: 'Gone', sn: 'Forgotten', mail: ['gone@x.com'] });
  await ship(a, c);
  await a.purge(p.id);
  for (let i = 0; i < 3; i++) await a.create('Org', { name: `O${i}`, kind: 'vendor' });
  await a.trimFeed(10); // c can no longer catch up from the feed
  // d never held the object: its digest still differs where the marker is, so anti-entropy reaches it
  await streamStates(a, d, await differing(a, d));
  t.ok(await d.purgedAt(p.id), 'a node that never held the object gets the marker');
  const before = await differing(a, c);
  await streamStates(a, c, before);
  t.equal(await c.get(p.id), undefined, 'the object is erased where it was still held');
  t.notOk((await rawText(c)).includes('Forgotten'), 'no field value left');
  t.same(await checkIndexes(c), []);
  t.same((await c.readFeed(0, 100)).filter((e) => e.id === p.id).map((e) => [e.kind, e.origin, e.originSeq, e.update.length]), [
    ['redacted', 'a', 1, 0],
    ['purge', 'a', 2, 0],
  ], "the purge is in c's feed for its own peers (a#2), and the create c had redacted");
  t.same(await differing(a, c), new Set(), 'the digests agree afterwards');
  const uid = await c.create('Person', { cn: 'New', sn: 'N', mail: ['gone@x.com'] });
  t.ok(uid.id, "the purged object's mail is free again");
});

t.test('a purge racing a feed trim never writes a redacted entry back below the trim', async (t) => {
  const leaks: string[] = [];
  for (let delay = 0; delay < 12; delay++) {
    const a = await openStore(t, { nodeId: 'a' });
    const p = await a.create('Person', { cn: 'Trim', sn: 'T' });
    for (let i = 0; i < 5; i++) await a.update(p.id, { sn: `T${i}` });
    for (let i = 0; i < 5; i++) await a.create('Org', { name: `O${i}`, kind: 'vendor' });
    const trim = (async () => {
      for (let i = 0; i < delay; i++) await new Promise((r) => setImmediate(r));
      await a.trimFeed(1);
    })();
    await Promise.all([a.purge(p.id), trim]);
    let held = 0;
    for await (const _ of a.raw('f')) held++;
    const retained = a.lastSeq - a.firstSeq() + 1;
    if (held !== retained) leaks.push(`delay ${delay}: ${held} feed keys for ${retained} retained entries`);
  }
  t.same(leaks, [], 'no feed entry below the trim');
});

t.test('a marker learnt from a redacted change only still erases the object where it is held, and gives way to the purge itself', async (t) => {
  const a = await openStore(t, { nodeId: 'a' });
  const c = await openStore(t, { nodeId: 'c' });
  const d = await openStore(t, { nodeId: 'd' });
  const p = await a.create('Person', { cn: 'Half', sn: 'Heard', mail: ['half@x.com'] });
  await ship(a, d);
  await a.purge(p.id, { principal: 'admin' });
  // c has heard only of the redacted create, not the purge after it
  const [create] = (await a.readFeed(0, 10)).map(({ seq: _seq, ...e }) => e);
  await c.applyRemote([create!]);
  t.match(await c.purgedAt(p.id), { known: false });
  // d applied that very create, so the marker names a change d holds already
  const before = d.lastSeq;
  const told: string[] = [];
  d.onStates((ids) => told.push(...ids));
  await streamStates(c, d, await differing(c, d));
  t.equal(await d.get(p.id), undefined, 'd erases the object all the same');
  t.ok(told.includes(p.id), "and tells onStates listeners (the LDAP gateway's entry cache) of it, as no feed entry will");
  t.notOk((await rawText(d)).includes('Heard'), 'no value of it left on d');
  t.equal(d.lastSeq, before, 'with no feed entry of its own: the change the marker names is in its feed already (now redacted)');
  t.same(await checkIndexes(d), []);
  // the digest tells a provisional marker from the purge's: anti-entropy brings c the purge's
  t.not((await differing(a, c)).size, 0);
  await streamStates(a, c, await differing(a, c));
  t.match(await c.purgedAt(p.id), { principal: 'admin', origin: 'a', known: true }, 'the purge itself now named');
  t.equal((await differing(a, c)).size, 0, 'and the digests agree');
});

t.test('a trim started while another runs waits for it: the two delete each entry once and the trimmed start only moves up', async (t) => {
  const a = await openStore(t, { nodeId: 'a' });
  // more than one trim batch (10,000 entries), as a trim that outlasts the node's one-minute schedule has
  for (let i = 0; i < 12_000; i += 500) await Promise.all(Array.from({ length: 500 }, (_, j) => a.create('Org', { name: `O${i + j}`, kind: 'vendor' })));
  const firsts: number[] = [];
  let watching = true;
  const watch = (async () => {
    while (watching) {
      firsts.push(a.firstSeq());
      await new Promise((r) => setImmediate(r));
    }
  })();
  const [one, two] = await Promise.all([a.trimFeed(10), a.trimFeed(10)]);
  watching = false;
  await watch;
  t.equal(one + two, 12_000 - 10, 'every entry deleted once (two overlapping runs both deleted the whole range)');
  t.equal(a.firstSeq(), 12_000 - 10 + 1);
  t.ok(firsts.every((f, i) => i === 0 || f >= firsts[i - 1]!), 'the trimmed start never moved back');
  t.equal((await a.readFeed(0, 100)).length, 10);
});

t.test('historyVersion finds a version older than the newest 10,000 that history() shows', async (t) => {
  const s = await openStore(t);
  const o = await s.create('Org', { name: 'v0', kind: 'customer' });
  for (let i = 1; i <= 10_005; i += 500) {
    await Promise.all(Array.from({ length: Math.min(500, 10_006 - i) }, (_, j) => s.update(o.id, { name: `v${i + j}` })));
  }
  const h = await s.history(o.id);
  const first = `${s.nodeId}#1`;
  t.equal(h?.versions.length, 10_000, 'history shows the newest 10,000');
  t.notOk(h?.versions.some((v) => v.version === first), 'not the create');
  const v = await s.historyVersion(o.id, first);
  t.equal(v?.kind, 'create', 'historyVersion finds it');
  t.equal(v?.fields['name'], 'v0', 'with its fields');
  t.equal(await s.historyVersion(o.id, `${s.nodeId}#999999`), undefined, 'and nothing for a version there is not');
});

t.test('a digest is of one moment: a purge landing while it is read is in it whole or not at all, and its position says which', async (t) => {
  const a = await openStore(t, { nodeId: 'a' });
  const b = await openStore(t, { nodeId: 'b' });
  // enough objects that the object scan takes a while (it used to be followed by a live read of the purge markers)
  const ids: string[] = [];
  for (let i = 0; i < 20_000; i += 500) {
    ids.push(...(await Promise.all(Array.from({ length: 500 }, (_, j) => a.create('Org', { name: `Org ${i + j}`, kind: 'vendor' })))).map((o) => o.id));
  }
  const before = await a.digest();
  t.same(before.at, { head: 20_000, vector: { a: 20_000 }, ahead: [] }, 'the position: every change of a, and its feed head');
  const reading = a.digest();
  await a.purge(ids[7]!, { principal: 'admin' });
  const after = await a.digest();
  const during = await reading;
  t.notSame(after.buckets, before.buckets, 'the purge changed the digest');
  t.same(during, before, 'the digest begun before the purge is the one before it, position included (not its object gone and its marker there)');
  t.same(after.at, { head: 20_001, vector: { a: 20_001 }, ahead: [] });

  for (let since = 0; since < a.lastSeq; since += 10_000) await ship(a, b, since);
  const onB = await b.digest();
  t.same([onB.buckets, onB.at.vector], [after.buckets, after.at.vector], 'a peer that applied every change: the same buckets and vector');
  const content = await a.contentDigest();
  t.same(content.at, after.at, 'the content digest says its position too');
});

t.test("a purge whose compaction a crash cut short owes it on disk, and the next open runs it: the values leave LevelDB's files", async (t) => {
  const dir = tempDir(t);
  // (a file a compaction removes between the listing and its read holds nothing any more)
  const read = (f: string): Buffer => {
    try {
      return readFileSync(join(dir, f));
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return Buffer.alloc(0);
      throw e;
    }
  };
  const filesHold = (text: string): boolean => {
    const files = readdirSync(dir).filter((f) => /\.(ldb|log|sst)$/.test(f));
    return files.some((f) => read(f).includes(Buffer.from(text)));
  };
  const a = await openStore(t, { nodeId: 'a', dir });
  for (let i = 0; i < 200; i += 50) await Promise.all(Array.from({ length: 50 }, (_, k) => a.create('Person', { cn: `Zyxwvut ${i + k}`, sn: 'Other' })));
  const p = await a.create('Person', { cn: 'Quentin', sn: 'Qqsecret', mail: ['quentin.q@secret'] });
  await a.update(p.id, { cn: 'Qqtitle' });
  await a.purge(p.id);
  // (at once: compactAway has begun, at most, its first pass)
  await a.crash();
  t.ok(filesHold('Qqsecret'), 'after the crash the files still hold the purged values');
  const again = await openStore(t, { nodeId: 'a', dir });
  let gone = false;
  for (const end = Date.now() + 10_000; !(gone = !filesHold('Qqsecret') && !filesHold('Qqtitle')) && Date.now() < end; ) await new Promise((r) => setTimeout(r, 50));
  t.ok(gone, 'the next open ran the compaction the purge owed');
  t.ok(filesHold('Zyxwvut'), 'the files do hold other values (the check can fail)');
  t.equal(await again.get(p.id), undefined);
  // once run, nothing is owed: a further open runs none
  for (const end = Date.now() + 5_000; (again as unknown as { compactOwed: Map<string, unknown> }).compactOwed.size > 0 && Date.now() < end; ) await new Promise((r) => setTimeout(r, 50));
  await again.close();
  const third = await openStore(t, { nodeId: 'a', dir });
  t.equal((third as unknown as { compactOwed: Map<string, unknown> }).compactOwed.size, 0, 'nothing owed after it ran');
});

t.test('a purge takes with it every record of a unique value held twice that names the object, on every node, settled ones too', async (t) => {
  const a = await openStore(t, { nodeId: 'a' });
  const b = await openStore(t, { nodeId: 'b' });
  // apart, each master gives a person the uid jo; together, each holds a record of the clash
  const p1 = await a.create('Person', { cn: 'One', sn: 'O', uid: 'jo' });
  const p2 = await b.create('Person', { cn: 'Two', sn: 'T', uid: 'jo' });
  const [fromA, fromB] = [await ship(a, b), await ship(b, a)];
  for (const s of [a, b]) t.equal((await s.conflicts({})).items.length, 1, `${s.nodeId} holds a record of the clash`);
  // and a clash of a value that reads "unique:<id>" of an object purged with it, which is no record of that object
  const other = await a.create('Person', { cn: 'Other', sn: 'O' });
  const q1 = await a.create('Person', { cn: 'Q1', sn: 'Q', uid: `unique:${other.id}` });
  const q2 = await b.create('Person', { cn: 'Q2', sn: 'Q', uid: `unique:${other.id}` });
  await ship(a, b, fromA);
  await ship(b, a, fromB);
  for (const s of [a, b]) t.equal((await s.conflicts({ open: true })).items.length, 2, `${s.nodeId}: two clashes open`);
  const before = a.lastSeq;
  await a.purge(p1.id);
  await a.purge(other.id);
  await ship(a, b, before);
  for (const s of [a, b]) {
    t.same((await s.conflicts({ open: true })).items.map((r) => r.objectId).sort(), [q1.id, q2.id].filter((id) => id !== (s === a ? q1.id : q2.id)), `${s.nodeId}: the clash of the value that reads unique:<id> stays open`);
  }
  for (const s of [a, b]) {
    const all = (await s.conflicts({})).items;
    t.same(all.filter((r) => r.objectId === p1.id || r.values.some((v) => v.item === `unique:${p1.id}`)), [], `${s.nodeId}: no record names the purged object`);
    t.equal((await s.lookup('Person', 'uid', 'jo')).items[0]?.id, p2.id, `${s.nodeId}: the other holds the value`);
    t.same(await checkIndexes(s), [], `${s.nodeId}: indexes agree with the objects`);
  }
});
