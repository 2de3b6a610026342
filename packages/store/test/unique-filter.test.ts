import t, { type Test } from 'tap';
import { Store } from '../dist/index.js';
import { KeyFilter } from '../dist/key-filter.js';
import { schema, tempDir } from './fixtures.js';
import { prng } from '../../../test/helpers/prng.js';

/** The store's filter, read from outside: these tests check what it holds against the disk. */
function filterOf(s: Store): KeyFilter | undefined {
  return (s as unknown as { uniqueFilter: KeyFilter | undefined }).uniqueFilter;
}

/** The store's filter once no build is under way. */
async function built(s: Store): Promise<KeyFilter> {
  const building = (): boolean => (s as unknown as { filling: KeyFilter | undefined }).filling !== undefined;
  for (let i = 0; i < 1000 && (!filterOf(s) || building()); i++) await new Promise((r) => setTimeout(r, 5));
  const f = filterOf(s);
  if (!f || building()) throw new Error('the unique-key filter was not built within 5 s');
  return f;
}

/** Every unique-index key on disk must pass the filter: a miss would let a second object take a taken value. */
async function checkCovers(t: Test, s: Store, what: string): Promise<void> {
  const f = await built(s);
  let keys = 0;
  let missed = 0;
  for await (const [k] of s.raw('u')) {
    keys++;
    if (!f.mayHold(k)) missed++;
  }
  t.ok(keys > 0, `${what}: there are unique keys to check`);
  t.equal(missed, 0, `${what}: the filter holds all ${keys} unique keys on disk`);
}

/** Puts a filter of the test's choosing in the store's place, to drive its rebuilds. */
function setFilter(s: Store, f: KeyFilter): void {
  Object.assign(s, { uniqueFilter: f });
}

/**
 * Empties the store's cache of claims, so that the next claim of a value
 * asks the filter (and the disk) again, and records the unique keys read.
 */
function forgetClaims(s: Store): string[] {
  (s as unknown as { claims: { clear(): void } }).claims.clear();
  const db = (s as unknown as { db: { getSync: (key: string) => unknown } }).db;
  const read: string[] = [];
  const getSync = db.getSync.bind(db);
  db.getSync = (key: string) => {
    if (key.startsWith('u')) read.push(key);
    return getSync(key);
  };
  return read;
}

const person = (i: number, tag: string): Record<string, unknown> => ({ cn: `P ${i}`, sn: tag, uid: `${tag}-${i}`, mail: [`${tag}-${i}@x.test`, `${tag}.${i}@y.test`] });

/** Creates persons 0..count-1 of `tag` with `writers` concurrent writers. */
async function writePersons(s: Store, count: number, tag: string, writers = 64): Promise<void> {
  let next = 0;
  await Promise.all(Array.from({ length: writers }, async () => {
    while (next < count) await s.create('Person', person(next++, tag));
  }));
}

/** A data dir holding `count` persons of `tag`, its store closed: the next open builds its filter from disk. */
async function dirWithPersons(t: Test, count: number, tag: string): Promise<string> {
  const dir = tempDir(t);
  const s = await Store.open({ dir, schema });
  await writePersons(s, count, tag);
  await s.close();
  return dir;
}

function taken(t: Test, write: Promise<unknown>, what: string): Promise<void> {
  return t.rejects(write, { code: 'validation', rule: 'unique' }, what);
}

t.test('a Bloom filter never misses a key it was given, and rarely claims one it was not', async (t) => {
  const rnd = prng(5);
  const key = (): string => `uPerson\0mail\0${Math.floor(rnd() * 2 ** 48).toString(36)}@\u00e9x.test`;
  const f = new KeyFilter(50_000);
  const added = Array.from({ length: 50_000 }, key);
  for (const k of added) f.add(k);
  t.equal(added.filter((k) => !f.mayHold(k)).length, 0, 'no key added is missed');
  t.notOk(f.full, 'at capacity, not past it');
  let hits = 0;
  for (let i = 0; i < 100_000; i++) if (f.mayHold(`other ${key()}`)) hits++;
  t.ok(hits < 200, `false positives at capacity stay under 0.2% (${hits} of 100,000)`);
  f.add('one more');
  t.ok(f.full, 'past capacity it says so, for its owner to build a larger one');
});

t.test('unique values stored before a restart stay taken, read through the filter built from disk', async (t) => {
  const s2 = await Store.open({ dir: await dirWithPersons(t, 2000, 'before'), schema });
  t.teardown(() => s2.close());
  // at once, while the filter may still be building: claims are read from disk then
  await taken(t, s2.create('Person', { cn: 'X', sn: 'Y', uid: 'BEFORE-7' }), 'taken while the filter builds');
  await checkCovers(t, s2, 'after a restart');
  for (const i of [0, 999, 1999]) {
    await taken(t, s2.create('Person', { cn: 'X', sn: 'Y', mail: [`before.${i}@Y.TEST`] }), `mail of person ${i} still taken`);
    await taken(t, s2.create('Person', { cn: 'X', sn: 'Y', uid: `before-${i}` }), `uid of person ${i} still taken`);
  }
  const free = await s2.create('Person', { cn: 'X', sn: 'Y', uid: 'before-2000', mail: ['before-2000@x.test'] });
  t.ok(free.id, 'a value never taken is free');
});

t.test('keys written while the filter builds, and while it is rebuilt larger, are all in it', async (t) => {
  const s2 = await Store.open({ dir: await dirWithPersons(t, 3000, 'old'), schema });
  t.teardown(() => s2.close());
  // 64 writers from the first moment, so batches land before, during and after the build's snapshot
  await writePersons(s2, 1500, 'during');
  await checkCovers(t, s2, 'writes during the first build');

  // a filter far too small fills at once and is rebuilt from disk, four times larger whenever the keys there overfill it, under writes
  setFilter(s2, new KeyFilter(16));
  await writePersons(s2, 1500, 'regrow');
  const f = await built(s2);
  t.ok(f.capacity > 16 && f.capacity >= f.count, `rebuilt with room for every key (capacity ${f.capacity})`);
  await checkCovers(t, s2, 'writes during the rebuilds');
  await taken(t, s2.create('Person', { cn: 'X', sn: 'Y', uid: 'during-1499' }), 'a value written during the build is taken');
  await taken(t, s2.create('Person', { cn: 'X', sn: 'Y', uid: 'regrow-3' }), 'and one written during a rebuild');
});

t.test('a value freed by an update is free again although the filter still holds it', async (t) => {
  const s = await Store.open({ dir: tempDir(t), schema });
  t.teardown(() => s.close());
  const a = await s.create('Person', { cn: 'A', sn: 'A', uid: 'moving' });
  const f = await built(s);
  await s.update(a.id, { uid: 'moved' });
  t.ok(f.mayHold('uPerson\0uid\0moving'), 'the filter still holds the freed value');
  const read = forgetClaims(s);
  const b = await s.create('Person', { cn: 'B', sn: 'B', uid: 'moving' });
  t.same(read, ['uPerson\0uid\0moving'], 'the claim was read from disk, as the filter holds it');
  t.equal((await s.lookup('Person', 'uid', 'moving')).items[0]?.id, b.id, 'a false positive costs a read, not a refusal');
});

t.test('a filter filled by values written and freed again is rebuilt at the size the keys on disk need, not larger', async (t) => {
  const s = await Store.open({ dir: tempDir(t), schema });
  t.teardown(() => s.close());
  const a = await s.create('Person', { cn: 'A', sn: 'A', uid: 'uid-0' });
  await built(s);
  setFilter(s, new KeyFilter(64));
  // each update writes a new unique key and deletes the last: 300 keys written, one on disk
  for (let i = 1; i <= 300; i++) await s.update(a.id, { uid: `uid-${i}` });
  const f = await built(s);
  t.equal(f.capacity, 64, 'rebuilt at the same size, again and again');
  await checkCovers(t, s, 'after the churn');
  await taken(t, s.create('Person', { cn: 'B', sn: 'B', uid: 'UID-300' }), 'the value held now is taken');
  const read = forgetClaims(s);
  t.ok(await s.create('Person', { cn: 'B', sn: 'B', uid: 'uid-299' }), 'one freed is free');
  t.ok(read.length <= 1 && read.every((k) => k === 'uPerson\0uid\0uid-299'), 'asked of the filter (and read only if it holds it), not answered from a cached claim');
});

t.test('closing the store while its filter is being built ends the build quietly', async (t) => {
  const s2 = await Store.open({ dir: await dirWithPersons(t, 2000, 'c'), schema });
  await s2.close();
  await new Promise((r) => setTimeout(r, 50));
  t.equal(filterOf(s2), undefined, 'no build ends after the close by installing a filter in a closed store');
});

t.test('a rebuild that starts in the middle of a batch still gets that batch\'s keys', async (t) => {
  const s = await Store.open({ dir: tempDir(t), schema });
  t.teardown(() => s.close());
  const a = await s.create('Person', { cn: 'A', sn: 'A', uid: 'first' });
  await built(s);
  // one key short of full: the next unique key written fills it, and the rebuild starts while its batch is being built
  const f = new KeyFilter(64);
  for (let i = 0; i < 64; i++) f.add(`filler ${i}`);
  setFilter(s, f);
  await s.update(a.id, { uid: 'trigger' });
  t.not(await built(s), f, 'the full filter was replaced');
  await checkCovers(t, s, 'after a rebuild begun inside a batch');
  await taken(t, s.create('Person', { cn: 'B', sn: 'B', uid: 'trigger' }), 'the value that filled it is taken');
});

t.test('a new value is claimed without reading LevelDB once the filter is built', async (t) => {
  const s = await Store.open({ dir: await dirWithPersons(t, 200, 'r'), schema });
  t.teardown(() => s.close());
  await built(s);
  const db = (s as unknown as { db: { getSync: (key: string) => unknown } }).db;
  const read: string[] = [];
  const getSync = db.getSync.bind(db);
  db.getSync = (key: string) => {
    read.push(key);
    return getSync(key);
  };
  await s.create('Person', { cn: 'N', sn: 'N', uid: 'r-new', mail: ['r-new@x.test', 'r.new@y.test'] });
  t.same(read.filter((k) => k.startsWith('u')), [], 'no unique key was read for three new values');
  await taken(t, s.create('Person', { cn: 'N', sn: 'N', uid: 'r-5' }), 'a value taken before the open is read, and refused');
  t.ok(read.includes('uPerson\0uid\0r-5'), 'by a read, since the filter holds it');
});
