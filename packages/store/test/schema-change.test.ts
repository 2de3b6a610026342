import t from 'tap';
import { Level } from 'level';
import { checkIndexes, parseSchema, Store } from '../dist/index.js';
import { decode, encode } from '../dist/codec.js';
import { keys, SEP } from '../dist/keys.js';
import { SCHEMA_TEXT, tempDir } from './fixtures.js';

const variant = (from: string, to: string): ReturnType<typeof parseSchema> => {
  if (!SCHEMA_TEXT.includes(from)) throw new Error(`the test schema has no ${from}`);
  return parseSchema(SCHEMA_TEXT.replace(from, to), 'test schema, changed');
};
const open = (dir: string, schema: ReturnType<typeof parseSchema>): Promise<Store> => Store.open({ dir, schema, passwordCost: { N: 1024, r: 8, p: 1 } });

t.test('a field the schema starts or stops indexing, or makes unique, is indexed as the schema now says at the next open', async (t) => {
  const dir = tempDir(t);
  const original = parseSchema(SCHEMA_TEXT, 'test schema');
  const a = await open(dir, original);
  await a.create('Person', { cn: 'Ann', sn: 'Lee', uid: 'ann', telephoneNumber: ['+1 555'] }, { id: 'per-a' });
  await a.create('Person', { cn: 'Bob', sn: 'Lee', uid: 'bob' }, { id: 'per-b' });
  // a value past U+FFFF: its keys sort after a key range's '\uffff' bound, which the rebuild must not use
  await a.create('Person', { cn: '\u{1F600} Zed', sn: 'Other', uid: '\u{1F98A}' }, { id: 'per-z' });
  await a.close();

  // sn indexed, cn no longer indexed, uid no longer unique
  const changed = parseSchema(
    SCHEMA_TEXT.replace("sn: { type: string, required: true }", "sn: { type: string, required: true, index: true }")
      .replace("cn: { type: string, required: true, index: true }", "cn: { type: string, required: true }")
      .replace("uid: { type: string, unique: true }", "uid: { type: string }"),
    'test schema, changed',
  );
  const b = await open(dir, changed);
  t.same((await b.lookup('Person', 'sn', 'lee')).items.map((o) => o.id), ['per-a', 'per-b'], 'a field made indexed finds the objects written before');
  t.same((await b.lookup('Person', 'sn', 'other')).items.map((o) => o.id), ['per-z']);
  t.same(await checkIndexes(b), [], 'no entries left of cn, nor of uid as unique');
  await b.create('Person', { cn: 'Ann Two', sn: 'Other', uid: 'ann' }, { id: 'per-c' });
  t.equal((await b.get('per-c'))?.fields['uid'], 'ann', 'a value no longer unique is not blocked by its former holder');
  await b.close();

  // uid unique again: two objects hold "ann" now, which the open refuses, naming them, and writes nothing
  await t.rejects(open(dir, original), /the schema makes Person\.uid unique, but per-a and per-c both hold "ann"; start with the schema as it was/);
  const c = await open(dir, changed);
  await c.update('per-c', { uid: 'ann2' });
  await c.close();
  const d = await open(dir, original);
  t.same(await checkIndexes(d), [], 'then it opens, its indexes whole');
  await t.rejects(d.create('Person', { cn: 'X', sn: 'Y', uid: 'ANN' }), /already used by Person per-a/, 'and the value made unique is held');
  t.same((await d.lookup('Person', 'cn', 'ann two')).items.map((o) => o.id), ['per-c'], 'cn indexed again, for objects written while it was not');
  await d.close();
});

t.test('an index rebuild cut short is finished by the next open, whatever schema it has', async (t) => {
  const dir = tempDir(t);
  const original = parseSchema(SCHEMA_TEXT, 'test schema');
  const a = await open(dir, original);
  await a.create('Person', { cn: 'Ann', sn: 'Lee', uid: 'ann' }, { id: 'per-a' });
  await a.close();
  // what a rebuild for sn indexed leaves when killed after a batch: its layout pending, some entries written
  const db = new Level<string, Buffer>(dir, { keyEncoding: 'utf8', valueEncoding: 'buffer' });
  await db.put(keys.meta('indexPending'), encode([`Person${SEP}sn`]));
  await db.put(keys.field('Person', 'sn', 'lee', 'per-a'), Buffer.alloc(0));
  await db.close();
  // the schema put back as it was: the half-built entries go
  const b = await open(dir, original);
  t.same(await checkIndexes(b), [], 'no entry of sn is left');
  await b.close();
  const raw = new Level<string, Buffer>(dir, { keyEncoding: 'utf8', valueEncoding: 'buffer' });
  t.equal(await raw.get(keys.meta('indexPending')), undefined, 'and nothing is pending any more');
  await raw.close();
});

t.test('a rebuild larger than one batch is written in several and comes out whole', async (t) => {
  const dir = tempDir(t);
  const original = parseSchema(SCHEMA_TEXT, 'test schema');
  const a = await open(dir, original);
  const n = 12_000; // more entries than a rebuild batch holds, both deleted (cn) and written (sn)
  for (let i = 0; i < n; i += 500) {
    await Promise.all(Array.from({ length: 500 }, (_, j) => a.create('Person', { cn: `Person ${i + j}`, sn: `S${(i + j) % 7}` }, { id: `per-${i + j}` })));
  }
  await a.close();
  const changed = parseSchema(
    SCHEMA_TEXT.replace('sn: { type: string, required: true }', 'sn: { type: string, required: true, index: true }').replace('cn: { type: string, required: true, index: true }', 'cn: { type: string, required: true }'),
    'test schema, changed',
  );
  const b = await open(dir, changed);
  t.same(await checkIndexes(b), [], 'every entry as the schema says');
  t.equal((await b.lookup('Person', 'sn', 's3', { limit: 10_000 })).items.length, Math.ceil((n - 3) / 7), 'the new index finds every object');
  await b.close();
});

t.test('a rebuild cut short over a field unique throughout keeps a value held twice with the holder the clash records name', async (t) => {
  const schema = parseSchema(SCHEMA_TEXT, 'test schema');
  const [dirA, dirB] = [tempDir(t), tempDir(t)];
  const b = await Store.open({ dir: dirB, schema, nodeId: 'b', passwordCost: { N: 1024, r: 8, p: 1 } });
  await b.create('Person', { cn: 'B', sn: 'B', uid: 'JO' }, { id: 'per-a' });
  let a = await Store.open({ dir: dirA, schema, nodeId: 'a', passwordCost: { N: 1024, r: 8, p: 1 } });
  await a.create('Person', { cn: 'A', sn: 'A', uid: 'jo' }, { id: 'per-z' });
  // b's Person arrives on a while a holds the value: a keeps per-z as the holder and records the clash on per-a (the least id)
  await a.applyRemote((await b.readFeed(0, 10)).map(({ seq: _seq, ...c }) => c));
  await b.close();
  t.equal((await a.lookup('Person', 'uid', 'jo')).items[0]?.id, 'per-z');
  await a.close();
  const db = new Level<string, Buffer>(dirA, { keyEncoding: 'utf8', valueEncoding: 'buffer' });
  await db.put(keys.meta('indexPending'), encode([`Person${SEP}uid`]));
  await db.close();
  a = await Store.open({ dir: dirA, schema, nodeId: 'a', passwordCost: { N: 1024, r: 8, p: 1 } });
  t.teardown(() => a.close());
  t.equal((await a.lookup('Person', 'uid', 'jo')).items[0]?.id, 'per-z', 'the open rebuilt uid, refusing nothing, and per-z holds it still');
  t.same(await checkIndexes(a), [], 'its indexes agree with its clash records');
});

t.test('objects of a type the schema lacked when they arrived are listed and counted once a schema with the type is opened', async (t) => {
  // a master already on a schema with Note sends Notes to one still on the schema without it
  const withNote = variant('  License:\n', '  Note:\n    idPrefix: note\n    fields:\n      text: { type: string }\n  License:\n');
  const without = parseSchema(SCHEMA_TEXT, 'test schema');
  const a = await open(tempDir(t), withNote);
  t.teardown(() => a.close());
  await a.create('Note', { text: 'one' }, { id: 'note-1' });
  await a.create('Note', { text: 'two' }, { id: 'note-2' });
  const dir = tempDir(t);
  const b = await open(dir, without);
  await b.applyRemote((await a.readFeed(0)).map(({ seq: _seq, ...c }) => c));
  t.same(b.objectCounts(), {}, 'not counted while the schema lacks the type');
  t.same(await checkIndexes(b), [], 'nor taken by a check for objects of an unknown type: the store noted the type as kept untyped');
  await b.close();

  const told: { fields: string[]; types: string[] }[] = [];
  const b2 = await Store.open({ dir, schema: withNote, passwordCost: { N: 1024, r: 8, p: 1 }, onReindex: (what) => void told.push(what) });
  t.same(told, [{ fields: [], types: ['Note'] }], 'the open said it would read the objects to index Note, before it did');
  t.same((await b2.list('Note')).items.map((o) => o.id), ['note-1', 'note-2'], 'listed once the schema has the type');
  t.same(b2.objectCounts(), { Note: 2 }, 'and counted');
  t.same(await checkIndexes(b2), [], 'the indexes agree with the objects');
  await b2.delete('note-2');
  t.same(b2.objectCounts(), { Note: 1 }, 'a delete counts down from there, not below zero');
  await b2.close();

  // the type leaves the schema and comes back: its index and count follow
  const b3 = await open(dir, without);
  t.same(b3.objectCounts(), {}, 'a type the schema no longer has is not counted');
  t.same(await checkIndexes(b3), [], 'and its objects are no problem to a check');
  await b3.close();
  const b4 = await open(dir, withNote);
  t.same((await b4.list('Note')).items.map((o) => o.id), ['note-1'], 'back in the schema: listed again');
  t.same(b4.objectCounts(), { Note: 1 });
  t.same(await checkIndexes(b4), []);
  await b4.close();

  // the same for a node that clones such objects
  const snap = a.stateSnapshot();
  const states = [];
  for await (const batch of snap.batches()) states.push(...batch.filter((s) => !('key' in s)));
  const { head, vector } = snap;
  await snap.close();
  const cloneDir = tempDir(t);
  const c = await open(cloneDir, without);
  await c.cloneStates(states, { peer: 'a', head, vector });
  t.same(c.objectCounts(), {}, 'cloned while the schema lacks the type: not counted');
  await c.close();
  const c2 = await open(cloneDir, withNote);
  t.same((await c2.list('Note')).items.map((o) => o.id), ['note-1', 'note-2'], 'a clone of them is listed once the schema has the type');
  t.same(c2.objectCounts(), { Note: 2 });
  await c2.close();
});

t.test('a count of a type the schema no longer has, left by a build from before types were in the index layout, is dropped', async (t) => {
  const withNote = variant('  License:\n', '  Note:\n    idPrefix: note\n    fields:\n      text: { type: string }\n  License:\n');
  const dir = tempDir(t);
  const a = await open(dir, withNote);
  await a.create('Note', { text: 'one' }, { id: 'note-1' });
  await a.create('Org', { name: 'Acme', kind: 'customer' }, { id: 'org-1' });
  await a.close();
  // what such a build left: a layout of indexed fields only, and its counts
  const db = new Level<string, Buffer>(dir, { keyEncoding: 'utf8', valueEncoding: 'buffer' });
  const layout = decode<Record<string, string>>((await db.get(keys.meta('indexLayout')))!);
  for (const k of Object.keys(layout)) if (k.endsWith(SEP)) delete layout[k];
  await db.put(keys.meta('indexLayout'), encode(layout));
  await db.close();
  const b = await open(dir, parseSchema(SCHEMA_TEXT, 'test schema'));
  t.same(b.objectCounts(), { Org: 1 }, 'Note, which the schema lacks, is no longer counted');
  await b.close();
  const c = await open(dir, withNote);
  t.same(c.objectCounts(), { Org: 1, Note: 1 }, 'and is counted again once the schema has it');
  t.same((await c.list('Note')).items.map((o) => o.id), ['note-1']);
  t.same(await checkIndexes(c), []);
  await c.close();
});

t.test('a data dir from a build before the index layout was kept has every index rebuilt once; a new one, nothing', async (t) => {
  const schema = parseSchema(SCHEMA_TEXT, 'test schema');
  const dir = tempDir(t);
  const a = await open(dir, schema);
  await a.create('Org', { name: 'Acme', kind: 'customer' }, { id: 'org-1' });
  await a.create('Org', { name: 'Bolt', kind: 'vendor' }, { id: 'org-2' });
  await a.create('Person', { cn: 'Ada', sn: 'Lovelace', mail: ['ada@example.com'], uid: 'ada', org: 'org-1' }, { id: 'per-1' });
  await a.close();
  // what such a build could leave: no layout, an object of a type then unknown with no type entry or count, a field then not indexed
  const db = new Level<string, Buffer>(dir, { keyEncoding: 'utf8', valueEncoding: 'buffer' });
  await db.del(keys.meta('indexLayout'));
  await db.del(keys.type('Org', 'org-2'));
  await db.put(keys.meta('counts'), encode({ Org: 1, Person: 1 }));
  for await (const k of db.keys({ gte: `xPerson${SEP}cn${SEP}`, lt: `xPerson${SEP}cn${SEP}\uffff` })) await db.del(k);
  await db.close();
  const told: { fields: string[]; types: string[] }[] = [];
  const b = await Store.open({ dir, schema, passwordCost: { N: 1024, r: 8, p: 1 }, onReindex: (what) => void told.push(what) });
  t.equal(told.length, 1, 'one rebuild');
  t.ok(told[0]!.types.includes('Org') && told[0]!.fields.includes('Person.cn'), 'of every type and indexed field');
  t.same((await b.list('Org')).items.map((o) => o.id), ['org-1', 'org-2'], 'the object the type index lacked is listed');
  t.same(b.objectCounts(), { Org: 2, Person: 1 }, 'and counted');
  t.same((await b.lookup('Person', 'cn', 'Ada')).items.map((o) => o.id), ['per-1'], 'a field index the build did not keep is there');
  t.same(await checkIndexes(b), []);
  await b.close();
  const again: unknown[] = [];
  const c = await Store.open({ dir, schema, passwordCost: { N: 1024, r: 8, p: 1 }, onReindex: (what) => void again.push(what) });
  t.same(again, [], 'once: the layout is kept from then on');
  await c.close();
  const fresh: unknown[] = [];
  const d = await Store.open({ dir: tempDir(t), schema, passwordCost: { N: 1024, r: 8, p: 1 }, onReindex: (what) => void fresh.push(what) });
  t.same(fresh, [], 'a new data dir has nothing to rebuild');
  await d.close();
});

t.test('a type added to the schema with no objects of it stored is added without reading the objects', async (t) => {
  const withNote = variant('  License:\n', '  Note:\n    idPrefix: note\n    fields:\n      text: { type: string }\n  License:\n');
  const dir = tempDir(t);
  const a = await open(dir, parseSchema(SCHEMA_TEXT, 'test schema'));
  await a.create('Org', { name: 'Acme', kind: 'customer' }, { id: 'org-1' });
  await a.close();
  // an object record no index knows of: a scan of the objects at open would index it
  const db = new Level<string, Buffer>(dir, { keyEncoding: 'utf8', valueEncoding: 'buffer' });
  const org = decode<Record<string, unknown>>((await db.get(keys.object('org-1')))!);
  await db.put(keys.object('note-x'), encode({ ...org, t: 'Note', f: { text: 'x' } }));
  await db.close();
  const told: unknown[] = [];
  const b = await Store.open({ dir, schema: withNote, passwordCost: { N: 1024, r: 8, p: 1 }, onReindex: (what) => void told.push(what) });
  t.same(told, [], 'no rebuild was announced');
  t.same((await b.list('Note')).items, [], 'not indexed: the objects were not read, as none of the type arrived while it was unknown');
  t.same(b.objectCounts(), { Org: 1 });
  await b.close();
});

t.test('a rebuild that reads many objects reports its progress every 10,000 objects read, of any type, with about how many there are', async (t) => {
  const plain = variant('  License:\n', '  Note:\n    idPrefix: note\n    fields:\n      text: { type: string }\n  License:\n');
  const indexed = variant('  License:\n', '  Note:\n    idPrefix: note\n    fields:\n      text: { type: string, index: true }\n  License:\n');
  const dir = tempDir(t);
  const a = await open(dir, plain);
  for (let i = 0; i < 25_000; i += 500) {
    await Promise.all(Array.from({ length: 500 }, (_, j) => a.create('Note', { text: `note ${i + j}` })));
  }
  // objects of a type not rebuilt are read too, and counted in the progress
  for (let i = 0; i < 6_000; i += 500) {
    await Promise.all(Array.from({ length: 500 }, (_, j) => a.create('Org', { name: `org ${i + j}`, kind: 'customer' })));
  }
  await a.close();
  const progress: { read: number; about: number }[] = [];
  const told: unknown[] = [];
  const b = await Store.open({ dir, schema: indexed, passwordCost: { N: 1024, r: 8, p: 1 }, onReindex: (what) => void told.push(what), onReindexProgress: (p) => void progress.push(p) });
  t.teardown(() => b.close());
  t.same(told, [{ fields: ['Note.text'], types: [] }], 'the rebuild was announced');
  t.same(progress, [{ read: 10_000, about: 31_000 }, { read: 20_000, about: 31_000 }, { read: 30_000, about: 31_000 }], 'and reported as it read every object, of both types');
  t.equal((await b.lookup('Note', 'text', 'note 24999')).items.length, 1, 'and the field is indexed');
});

t.test('a field that became a password since a change is left out of that version\'s fields, so a revert to it cannot bring the old value back', async (t) => {
  const plain = variant('  License:\n', '  Note:\n    idPrefix: note\n    fields:\n      text: { type: string }\n      pin: { type: string }\n  License:\n');
  const secret = variant('  License:\n', '  Note:\n    idPrefix: note\n    fields:\n      text: { type: string }\n      pin: { type: password }\n  License:\n');
  const dir = tempDir(t);
  const a = await open(dir, plain);
  const n = await a.create('Note', { text: 'one', pin: 'old-pin-value' });
  await a.update(n.id, { text: 'two' });
  t.equal((await a.history(n.id))?.versions[0]?.fields['pin'], 'old-pin-value', 'a plain field is in the history');
  await a.close();
  const b = await open(dir, secret);
  t.teardown(() => b.close());
  const h = await b.history(n.id);
  t.equal(h?.versions.length, 2);
  for (const v of h!.versions) t.notOk('pin' in v.fields, `version ${v.version} holds no value of what is a password now`);
  t.same(h!.versions[0]!.changes.find((c) => c.field === 'pin'), { field: 'pin', secret: true }, 'its change is shown as a secret');
});

t.test('a field the schema lacks (a newer schema added it, or this one dropped it): a replace keeps it and, the same again, writes nothing; a replace naming it removes it; an undelete brings the object back with it', async (t) => {
  const dir = tempDir(t);
  const a = await open(dir, parseSchema(SCHEMA_TEXT, 'test schema'));
  await a.create('Person', { cn: 'Ann', sn: 'Lee', telephoneNumber: ['+1 555'] }, { id: 'per-a' });
  await a.create('Person', { cn: 'Bob', sn: 'Lee', telephoneNumber: ['+1 556'] }, { id: 'per-b' });
  await a.delete('per-b');
  await a.close();
  const b = await open(dir, variant('      telephoneNumber: { type: string, multi: true }\n', ''));
  t.teardown(() => b.close());
  const first = await b.replace('per-a', { cn: 'Ann', sn: 'Leigh' });
  // (during a rolling upgrade it is a field masters on the newer schema hold, which writers here cannot name)
  t.same(first.fields, { cn: 'Ann', sn: 'Leigh', telephoneNumber: ['+1 555'] }, 'the replace keeps the field it cannot name');
  const seq = b.lastSeq;
  await b.replace('per-a', { cn: 'Ann', sn: 'Leigh' });
  await b.replace('per-a', { cn: 'Ann', sn: 'Leigh' });
  t.equal(b.lastSeq, seq, 'the same replace again changes nothing and writes nothing (it wrote an empty change each time)');
  const removed = await b.replace('per-a', { cn: 'Ann', sn: 'Leigh', telephoneNumber: null });
  t.same(removed.fields, { cn: 'Ann', sn: 'Leigh' }, 'one naming it, to remove it, does');
  const back = await b.undelete('per-b');
  t.same([back.deleted, back.fields['telephoneNumber']], [false, ['+1 556']], 'the deleted object comes back, with the field the schema dropped');
  const cleaned = await b.update('per-b', { telephoneNumber: null });
  t.equal(cleaned.fields['telephoneNumber'], undefined, 'which a write may then remove');
});

/** Targets T, and holders H whose unique field `key` is of the kind given. */
const keysSchema = (kind: string): ReturnType<typeof parseSchema> =>
  parseSchema(
    `
name: keys
types:
  T:
    idPrefix: tgt
    fields:
      name: { type: string }
  H:
    idPrefix: hld
    fields:
      key: { ${kind}, unique: true }
`,
    'keys',
  );

t.test('a unique field that changes between reference and text is reindexed with the folding of its new kind', async (t) => {
  const dir = tempDir(t);
  const asRef = keysSchema('type: ref, to: T');
  const asText = keysSchema('type: string');
  const a = await open(dir, asRef);
  await a.create('T', { name: 'target' }, { id: 'tgt-Abc' });
  await a.create('H', { key: 'tgt-Abc' }, { id: 'hld-1' });
  await a.close();
  const b = await open(dir, asText);
  t.same(await checkIndexes(b), [], 'the index is rebuilt with text folding');
  t.same((await b.lookup('H', 'key', 'tgt-Abc')).items.map((o) => o.id), ['hld-1'], 'and finds the holder');
  await t.rejects(b.create('H', { key: 'tgt-abc' }), { rule: 'unique' }, 'the value in another case is taken, as text values are');
  await b.close();
  const c = await open(dir, asRef);
  t.same(await checkIndexes(c), [], 'and back again as a reference');
  t.same((await c.lookup('H', 'key', 'tgt-Abc')).items.map((o) => o.id), ['hld-1']);
  await c.close();
});

t.test("a data dir from before 'unique-ref', whose unique reference field holds a value twice through replication, opens", async (t) => {
  const schema = keysSchema('type: ref, to: T');
  const at = (dir: string, nodeId: string): Promise<Store> => Store.open({ dir, schema, nodeId, passwordCost: { N: 1024, r: 8, p: 1 } });
  const [dirA, dirB] = [tempDir(t), tempDir(t)];
  const b = await at(dirB, 'b');
  await b.create('T', { name: 'x' }, { id: 'tgt-1' });
  await b.create('H', { key: 'tgt-1' }, { id: 'hld-a' });
  let a = await at(dirA, 'a');
  await a.applyRemote((await b.readFeed(0, 1)).map(({ seq: _s, ...c }) => c));
  // each master gives the value to an object of its own: a clash, recorded on a
  await a.create('H', { key: 'tgt-1' }, { id: 'hld-z' });
  await a.applyRemote((await b.readFeed(1, 10)).map(({ seq: _s, ...c }) => c));
  await b.close();
  t.same(await checkIndexes(a), [], 'a holds the clash as the write path leaves it');
  await a.close();
  // the layout a build before 'unique-ref' wrote
  const db = new Level<string, Buffer>(dirA, { keyEncoding: 'utf8', valueEncoding: 'buffer' });
  const layout = decode<Record<string, string>>((await db.get(keys.meta('indexLayout')))!);
  layout[`H${SEP}key`] = 'unique';
  await db.put(keys.meta('indexLayout'), Buffer.from(encode(layout)));
  await db.close();
  a = await at(dirA, 'a');
  t.teardown(() => a.close());
  t.same(await checkIndexes(a), [], 'it opens, the field rebuilt once, the clash kept');
  t.equal((await a.lookup('H', 'key', 'tgt-1')).items[0]?.id, 'hld-z', 'with the holder it had');
});
