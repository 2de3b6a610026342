import t from 'tap';
import { checkIndexes, isMeridianError, ValidationError, type StoredObject } from '../dist/index.js';
import { openStore, tempDir } from './fixtures.js';
import { prng } from '../../../test/helpers/prng.js';


t.test('indexes agree with the objects after random create/update/delete sequences', async (t) => {
  const seeds = process.env['INDEX_SEED'] ? [Number(process.env['INDEX_SEED'])] : [1, 2, 3, 4, 5];
  for (const seed of seeds) {
    const s = await openStore(t);
    const rnd = prng(seed);
    const pick = <T>(xs: T[]): T => xs[Math.floor(rnd() * xs.length)]!;
    const names = ['Anna', 'anna', 'Bob', 'Chen', 'Dlamini', 'Eve'];
    const orgs: string[] = [];
    const persons: string[] = [];
    for (let i = 0; i < 3; i++) orgs.push((await s.create('Org', { name: pick(names), kind: 'customer' })).id);
    // Concurrent bursts on purpose: writes to the same objects and the same
    // unique values interleave inside one group commit.
    const made: Record<string, number> = {};
    const refusals = new Set<string>();
    for (let round = 0; round < 40; round++) {
      const ops = Array.from({ length: 8 }, (): [string, Promise<unknown>] => {
        const r = rnd();
        const mail = `${pick(names)}@${pick(['x.com', 'Y.com'])}`;
        if (r < 0.4 || persons.length === 0) {
          return ['create', s.create('Person', { cn: pick(names), sn: 'S', mail: [mail], uid: pick(names) + Math.floor(rnd() * 4), org: pick(orgs) }).then((o) => persons.push(o.id))];
        }
        const id = pick(persons);
        if (r < 0.75) return ['update', s.update(id, { cn: pick(names), mail: rnd() < 0.5 ? [mail] : null, org: rnd() < 0.3 ? null : pick(orgs) })];
        if (r < 0.85) return ['replace', s.replace(id, { cn: pick(names), sn: 'T' })];
        if (r < 0.95) return ['delete', s.delete(id)];
        return ['undelete', s.undelete(id)];
      });
      // validation refusals (taken mail, deleted objects) are part of the game; anything else is a failure
      const settled = await Promise.allSettled(ops.map(([, p]) => p));
      settled.forEach((r, n) => {
        const kind = ops[n]![0];
        if (r.status === 'fulfilled') made[kind] = (made[kind] ?? 0) + 1;
        else refusals.add(`${kind}: ${r.reason instanceof ValidationError ? `rule ${r.reason.rule}` : isMeridianError(r.reason) ? r.reason.code : String(r.reason)}`);
      });
    }
    // (each kind of write must have happened often enough for the checks below to mean something)
    const least: Record<string, number> = { create: 20, update: 20, replace: 5, delete: 5, undelete: 1 };
    for (const [kind, n] of Object.entries(least)) t.ok((made[kind] ?? 0) >= n, `seed ${seed}: ${made[kind] ?? 0} ${kind}s made (at least ${n})`);
    const expected = new Set(['create: rule unique', 'update: rule unique', 'update: not-found', 'replace: not-found', 'delete: not-found', 'undelete: rule unique', 'undelete: exists']);
    t.same([...refusals].filter((r) => !expected.has(r)), [], `seed ${seed}: refused only for taken values and the object's state (${[...refusals].join('; ')})`);
    const problems = await checkIndexes(s);
    t.same(problems, [], `seed ${seed}: indexes consistent (replay with INDEX_SEED=${seed})`);

    // every lookup answer matches a scan of the objects
    const all: StoredObject[] = [];
    for (let next: string | undefined, first = true; first || next; first = false) {
      const page = await s.scan({ after: next, limit: 7 });
      all.push(...page.items);
      next = page.next;
    }
    for (const name of names) {
      const want = all.filter((o) => !o.deleted && o.type === 'Person' && String(o.fields['cn']).toLowerCase() === name.toLowerCase()).map((o) => o.id).sort();
      const got = (await s.lookup('Person', 'cn', name, { limit: 1000 })).items.map((o) => o.id).sort();
      t.same(got, want, `seed ${seed}: lookup cn=${name}`);
    }
    for (const org of orgs) {
      const want = all.filter((o) => !o.deleted && o.fields['org'] === org).length;
      t.equal((await s.lookup('Person', 'org', org, { limit: 1000 })).items.length, want, `seed ${seed}: persons of ${org}`);
    }
    const live = all.filter((o) => !o.deleted && o.type === 'Person').length;
    t.equal(s.objectCounts()['Person'] ?? 0, live, `seed ${seed}: live count`);
  }
});

t.test('paged list and lookup return every object exactly once', async (t) => {
  const s = await openStore(t);
  const ids = new Set<string>();
  await Promise.all(Array.from({ length: 57 }, (_, i) => s.create('Person', { cn: i % 2 ? 'Odd' : 'even', sn: 'S' }).then((o) => ids.add(o.id))));
  const seen: string[] = [];
  let after: string | undefined;
  do {
    const page = await s.list('Person', { limit: 10, after });
    seen.push(...page.items.map((o) => o.id));
    after = page.next;
  } while (after);
  t.equal(seen.length, 57);
  t.same(new Set(seen), ids);
  const odd: string[] = [];
  after = undefined;
  do {
    const page = await s.lookup('Person', 'cn', 'ODD', { limit: 4, after });
    odd.push(...page.items.map((o) => o.id));
    after = page.next;
  } while (after);
  t.equal(odd.length, 28);
  await t.rejects(s.lookup('Person', 'sn', 'S'), { rule: 'not-indexed', message: /is not indexed; list by one of cn, mail, uid, org/ });
});

t.test('a page read partly from the object cache and partly from disk: every live object once, in id order, as it is now', async (t) => {
  const dir = tempDir(t);
  const s = await openStore(t, { dir });
  const ids = (await Promise.all(Array.from({ length: 40 }, (_, i) => s.create('Person', { cn: `P${i}`, sn: 'S' })))).map((o) => o.id).sort();
  const gone = new Set(ids.filter((_, i) => i % 5 === 0));
  for (const id of gone) await s.delete(id);
  await s.close();
  // reopened: nothing cached; then some objects cached (one of them changed), the rest only on disk
  const r = await openStore(t, { dir });
  const live = ids.filter((id) => !gone.has(id));
  for (const id of live.filter((_, i) => i % 3 === 0)) await r.get(id);
  await r.update(live[4]!, { cn: 'Changed' });
  await r.get([...gone][1]!);
  const cached = r.cacheStats().objects;
  const seen: { id: string; cn: unknown }[] = [];
  let after: string | undefined;
  do {
    const page = await r.list('Person', { limit: 7, after });
    seen.push(...page.items.map((o) => ({ id: o.id, cn: o.fields['cn'] })));
    after = page.next;
  } while (after);
  t.same(
    seen.map((o) => o.id),
    live,
    'no deleted object, none twice, in id order across pages',
  );
  t.equal(r.cacheStats().objects, cached, 'what the pages read from disk was not cached');
  t.equal(seen.find((o) => o.id === live[4])?.cn, 'Changed', 'a changed object as it is now');
  t.same(seen.map((o) => o.cn), await Promise.all(live.map(async (id) => (await r.get(id))!.fields['cn'])), 'each as get() has it');
});

t.test('getUncached: as get() has it, from the cache or from disk, without caching what it read', async (t) => {
  const dir = tempDir(t);
  const s = await openStore(t, { dir });
  const a = await s.create('Person', { cn: 'A', sn: 'S' });
  const b = await s.create('Person', { cn: 'B', sn: 'S' });
  const c = await s.create('Person', { cn: 'C', sn: 'S' });
  await s.delete(c.id);
  await s.close();
  const r = await openStore(t, { dir });
  await r.update(a.id, { cn: 'A2' });
  const cached = r.cacheStats().objects;
  t.same(await r.getUncached(a.id), await r.get(a.id), 'a cached object, as it is now');
  const fromDisk = await r.getUncached(b.id);
  t.equal(r.cacheStats().objects, cached, 'read from disk, not cached');
  t.same(fromDisk, await r.get(b.id), 'as get() reads it');
  t.equal((await r.getUncached(c.id))?.deleted, true, 'a tombstone, as get() gives it');
  t.equal(await r.getUncached('no-such-object'), undefined);
  t.equal(await r.getUncached('../bad id'), undefined);
});

t.test('getUncached shows a remote change once applied, before its batch is on disk, as get() does', async (t) => {
  const x = await openStore(t, { nodeId: 'x' });
  const r = await openStore(t, { nodeId: 'r' });
  const p = await x.create('Person', { cn: 'Before', sn: 'S' });
  await x.update(p.id, { cn: 'After' });
  const feed = (await x.readFeed(0, 10)).map(({ seq: _seq, ...c }) => c);
  await r.applyRemote(feed.slice(0, 1));
  t.equal((await r.getUncached(p.id))?.fields['cn'], 'Before');
  const { durable } = await r.applyRemoteStaged(feed.slice(1));
  let onDisk = false;
  void durable.then(() => (onDisk = true));
  const seen = await r.getUncached(p.id);
  t.notOk(onDisk, 'the batch is not on disk yet (what is on disk still says Before)');
  t.equal(seen?.fields['cn'], 'After', 'readable at once, from the cached object, not the disk');
  t.same(seen, await r.get(p.id));
  await durable;
});

t.test('a lookup takes the value as a write of it is stored: 05 and 5.0 find the integer 5, true the boolean', async (t) => {
  const { parseSchema } = await import('../dist/index.js');
  const s = await openStore(t, {
    schema: parseSchema(
      `
name: n
types:
  Box:
    idPrefix: box
    fields:
      n: { type: integer, index: true }
      x: { type: number, index: true }
      ok: { type: boolean, index: true }
      code: { type: integer, unique: true }
`,
      'n',
    ),
  });
  const box = await s.create('Box', { n: '05', x: '2.50', ok: 'true', code: '0042' });
  t.same([box.fields['n'], box.fields['x'], box.fields['ok'], box.fields['code']], [5, 2.5, true, 42], 'stored converted');
  for (const [field, value] of [['n', '05'], ['n', '5.0'], ['n', ' 5'], ['x', '2.5'], ['x', '2.50'], ['ok', 'true'], ['ok', 'TRUE'], ['code', '042']] as const) {
    t.same((await s.lookup('Box', field, value)).items.map((o) => o.id), [box.id], `${field}=${JSON.stringify(value)} finds it`);
  }
  for (const [field, value] of [['n', 'abc'], ['n', '6'], ['ok', 'yes'], ['code', 'x']] as const) {
    t.same((await s.lookup('Box', field, value)).items, [], `${field}=${JSON.stringify(value)} finds nothing`);
  }
});
