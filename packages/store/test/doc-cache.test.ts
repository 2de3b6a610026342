import t, { type Test } from 'tap';
import { RecencyList } from '../dist/recency-list.js';
import { Store } from '../dist/index.js';
import { schema, tempDir } from './fixtures.js';

t.test('a recency list keeps items in the order they were last touched', async (t) => {
  const list = new RecencyList<string>();
  t.equal(list.oldest(), undefined);
  for (const k of ['a', 'b', 'c']) list.touch(k);
  t.equal(list.oldest(), 'a');
  list.touch('a');
  t.equal(list.oldest(), 'b', 'touching the oldest makes it the newest');
  list.touch('a');
  t.equal(list.size, 3, 'touching the newest again changes nothing');
  t.equal(list.delete('b'), true);
  t.equal(list.delete('b'), false, 'an absent item is not deleted twice');
  t.equal(list.oldest(), 'c');
  t.equal(list.delete('c'), true);
  t.equal(list.delete('a'), true);
  t.equal(list.size, 0);
  t.equal(list.oldest(), undefined);
  list.touch('d');
  t.equal(list.oldest(), 'd', 'an emptied list takes items again');
});

/** mulberry32: a small seeded generator, so a failing step can be replayed */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let x = Math.imul(a ^ (a >>> 15), 1 | a);
    x = (x + Math.imul(x ^ (x >>> 7), 61 | x)) ^ x;
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
}

t.test('a recency list agrees with an array model over random touches and deletes', async (t) => {
  const rand = prng(7);
  const list = new RecencyList<number>();
  let model: number[] = [];
  for (let i = 0; i < 20_000; i++) {
    const item = Math.floor(rand() * 50);
    if (rand() < 0.3) {
      if (list.delete(item) !== model.includes(item)) {
        t.fail(`step ${i}: delete(${item}) disagrees with the model`);
        return;
      }
      model = model.filter((x) => x !== item);
    } else if (rand() < 0.2 && model.length) {
      // drop the oldest, as the store's eviction does
      const oldest = list.oldest();
      if (oldest !== model[0]) {
        t.fail(`step ${i}: oldest ${oldest} but the model has ${model[0]}`);
        return;
      }
      list.delete(oldest!);
      model.shift();
    } else {
      list.touch(item);
      model = [...model.filter((x) => x !== item), item];
    }
    if (list.size !== model.length || list.oldest() !== model[0]) {
      t.fail(`step ${i}: size ${list.size} oldest ${list.oldest()}, model ${model.length} ${model[0]}`);
      return;
    }
  }
  t.pass('20,000 steps agree');
});

t.test('writes on objects whose doc was dropped while a change was on its way to disk lose nothing', async (t) => {
  // More objects than the store keeps docs for (1,024), each written twice
  // without waiting: the second write finds many first writes not yet on
  // disk and their docs dropped, and rebuilds from the latest state.
  const dir = tempDir(t);
  const store = await Store.open({ dir, schema });
  t.teardown(() => store.close()); // (closed again below: close is idempotent)
  const n = 1_500;
  const ids: string[] = [];
  for (let i = 0; i < n; i += 100) {
    const made = await Promise.all(Array.from({ length: Math.min(100, n - i) }, (_, k) => store.create('Org', { name: `org ${i + k}`, kind: 'customer' })));
    ids.push(...made.map((o) => o.id));
  }
  const first = ids.map((id, i) => store.update(id, { name: `renamed ${i}` }));
  const second = ids.map((id) => store.update(id, { kind: 'vendor' }));
  const third = ids.map((id, i) => store.update(id, { name: `final ${i}` }));
  await Promise.all([...first, ...second, ...third]);
  const seen = new Map<string, string>();
  let wrong = 0;
  for (const [i, id] of ids.entries()) {
    const o = (await store.get(id))!;
    if (o.fields.name !== `final ${i}` || o.fields.kind !== 'vendor') wrong++;
    seen.set(id, o.version);
  }
  t.equal(wrong, 0, 'every object holds all three writes');
  const h = (await store.history(ids[0]!))!;
  t.equal(h.versions.length, 4, 'and its history has the create and the three writes');
  t.equal(await changedByRestart(t, store, dir, seen), 0, 'the versions read back from disk are those the writes reported');
});

t.test('remote changes applied onto docs dropped while earlier ones were on their way to disk converge', async (t) => {
  // A catch-up: two staged frames, the second applied before the first is
  // on disk, over more objects than the store keeps docs for.
  const { a, b, dir, n, ids } = await twoNodesHolding(t, 1_500);
  const created = a.lastSeq;
  await Promise.all(ids.map((id, i) => a.update(id, { name: `renamed ${i}` })));
  await Promise.all(ids.map((id) => a.update(id, { kind: 'vendor' })));
  const changes = (await a.readFeed(created, 2 * n)).map(({ seq: _s, ...c }) => c);
  t.equal(changes.length, 2 * n);
  const first = await b.applyRemoteStaged(changes.slice(0, n));
  const second = await b.applyRemoteStaged(changes.slice(n));
  await Promise.all([first.durable, second.durable]);
  t.same([first.result.applied, second.result.applied], [n, n], 'every change applied');
  let differ = 0;
  for (const id of ids) {
    const x = (await a.get(id))!;
    const y = (await b.get(id))!;
    if (x.version !== y.version || JSON.stringify(x.fields) !== JSON.stringify(y.fields)) differ++;
  }
  t.equal(differ, 0, 'both nodes hold the same fields and versions');
  const theirs = new Map<string, string>();
  for (const id of ids) theirs.set(id, (await a.get(id))!.version);
  t.equal(await changedByRestart(t, b, dir, theirs), 0, 'and so does the receiver read back from disk');
});

t.test('peer states merged onto docs dropped while local writes were on their way to disk keep both', async (t) => {
  // Anti-entropy's path (cloneStates onto objects held here, so mergeState)
  // over more objects than the store keeps docs for, while this node's own
  // writes to the same objects are not yet on disk.
  const { a, b, dir, n, ids } = await twoNodesHolding(t, 1_500);
  await Promise.all(ids.map((id, i) => a.update(id, { name: `renamed ${i}` })));
  const states: { id: string; record: Uint8Array }[] = [];
  const snap = a.stateSnapshot();
  for await (const batch of snap.batches(500)) states.push(...batch.flatMap((s) => ('record' in s && !s.purged ? [s] : [])));
  await snap.close();
  t.equal(states.length, n);
  const local = ids.map((id) => b.update(id, { kind: 'vendor' })); // not awaited
  await b.cloneStates(states);
  await Promise.all(local);
  let wrong = 0;
  for (const [i, id] of ids.entries()) {
    const o = (await b.get(id))!;
    if (o.fields.name !== `renamed ${i}` || o.fields.kind !== 'vendor') wrong++;
  }
  t.equal(wrong, 0, 'every object holds the peer\'s rename and this node\'s write');
  const seen = new Map<string, string>();
  for (const id of ids) seen.set(id, (await b.get(id))!.version);
  t.equal(await changedByRestart(t, b, dir, seen), 0, 'and reads them back from disk after a restart');
});

/** Nodes a and b (b in `dir`) holding the same `n` Orgs, created on a and applied on b as remote changes. */
async function twoNodesHolding(t: Test, n: number): Promise<{ a: Store; b: Store; dir: string; n: number; ids: string[] }> {
  const a = await Store.open({ dir: tempDir(t), schema, nodeId: 'a' });
  t.teardown(() => a.close());
  const dir = tempDir(t);
  const b = await Store.open({ dir, schema, nodeId: 'b' });
  t.teardown(() => b.close());
  const ids: string[] = [];
  for (let i = 0; i < n; i += 100) {
    const made = await Promise.all(Array.from({ length: Math.min(100, n - i) }, (_, k) => a.create('Org', { name: `org ${i + k}`, kind: 'customer' })));
    ids.push(...made.map((o) => o.id));
  }
  await b.applyRemote((await a.readFeed(0, n)).map(({ seq: _s, ...c }) => c));
  return { a, b, dir, n, ids };
}

/** Closes `store`, opens its `dir` again, and counts the objects whose version there is not the one `expected` holds. */
async function changedByRestart(t: Test, store: Store, dir: string, expected: Map<string, string>): Promise<number> {
  await store.close();
  const again = await Store.open({ dir, schema });
  t.teardown(() => again.close());
  let differ = 0;
  for (const [id, version] of expected) if ((await again.get(id))?.version !== version) differ++;
  return differ;
}

t.test('objects whose doc is dropped or evicted weigh in the cache as objects without one', async (t) => {
  // 3,000 objects updated (an update keeps the object's doc; a create
  // builds none): the first 1,976 lose their docs to newer ones. The cache's
  // bytes must then be those of the same objects read without docs, plus
  // the docs still held. Then a small budget evicts slots that hold docs.
  const dir = tempDir(t);
  const store = await Store.open({ dir, schema });
  t.teardown(() => store.close());
  const ids: string[] = [];
  for (let i = 0; i < 3_000; i += 100) {
    const made = await Promise.all(Array.from({ length: 100 }, (_, k) => store.create('Org', { name: `org ${i + k}`, kind: 'customer' })));
    ids.push(...made.map((o) => o.id));
  }
  for (let i = 0; i < 3_000; i += 100) await Promise.all(ids.slice(i, i + 100).map((id) => store.update(id, { kind: 'reseller' })));
  const written = store.cacheStats();
  t.equal(written.objects, 3_000);
  t.equal(written.docs, 1_024, 'the most recently written keep their docs');
  // an object's state is about its create and its update together
  const longest = (await store.readFeed(0, 6_000)).reduce((m, e) => Math.max(m, e.update.length), 0) * 2;
  await store.close();

  const again = await Store.open({ dir, schema });
  t.teardown(() => again.close());
  for (const id of ids) await again.get(id);
  const read = again.cacheStats();
  t.equal(read.docs, 0);
  const extra = written.bytes - read.bytes;
  t.ok(extra > 0 && extra <= written.docs * 9 * longest, `only the held docs weigh more (${extra} bytes more for ${written.docs} docs of states up to ${longest} bytes)`);
  await again.close();

  const small = await Store.open({ dir, schema, cacheBytes: 200_000 });
  t.teardown(() => small.close());
  for (const id of ids.slice(0, 1_500)) await small.update(id, { kind: 'vendor' });
  const s = small.cacheStats();
  t.ok(s.docs <= s.objects, `no doc is kept for an object the cache let go (${s.docs} docs, ${s.objects} objects)`);
  t.ok(s.bytes <= 200_000, 'within the budget');
});
