import t from 'tap';
import { checkIndexes, parseSchema, Store } from '../dist/index.js';
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
