import t from 'tap';
import { checkIndexes } from '../dist/index.js';
import { openStore } from './fixtures.js';

t.test('a delete leaves a tombstone that keeps id and history and leaves every index', async (t) => {
  const s = await openStore(t);
  const org = await s.create('Org', { name: 'Acme', kind: 'customer' });
  const p = await s.create('Person', { cn: 'Anna', sn: 'A', mail: 'anna@x.com', uid: 'anna', org: org.id });
  const d = await s.delete(p.id);
  t.equal(d.deleted, true);
  t.same(d.fields, p.fields, 'the tombstone keeps the last fields');
  t.not(d.version, p.version);
  const got = await s.get(p.id);
  t.equal(got?.deleted, true, 'get still finds it, marked deleted');
  t.same((await s.list('Person')).items, [], 'lists leave it out');
  t.same((await s.lookup('Person', 'org', org.id)).items, [], 'reference lookups leave it out');
  t.same((await s.lookup('Person', 'mail', 'anna@x.com')).items, []);
  const feed = await s.readFeed(0, 10);
  t.same(feed.map((e) => [e.kind, e.id]), [['create', org.id], ['create', p.id], ['delete', p.id]], 'history is in the feed');
  t.same(s.objectCounts(), { Org: 1, Person: 0 });

  // the uid and mail are free again, so undelete must check them
  const q = await s.create('Person', { cn: 'New Anna', sn: 'A', uid: 'ANNA' });
  await t.rejects(s.undelete(p.id), { rule: 'unique', field: 'uid', message: new RegExp(`already used by Person ${q.id}`) });
  await s.delete(q.id);
  const back = await s.undelete(p.id);
  t.equal(back.deleted, false);
  t.equal((await s.lookup('Person', 'uid', 'anna')).items[0]?.id, p.id);
  t.same(await checkIndexes(s), []);
});

t.test('a write that changes nothing makes no feed entry', async (t) => {
  const s = await openStore(t);
  const o = await s.create('Org', { name: 'Acme', kind: 'customer' });
  const seq = s.lastSeq;
  const same = await s.update(o.id, { name: 'Acme' });
  t.equal(same.version, o.version);
  t.equal(s.lastSeq, seq);
});

t.test('an undelete is refused when the schema changed since the delete and the old values no longer pass it', async (t) => {
  const { parseSchema } = await import('../dist/index.js');
  const { SCHEMA_TEXT, tempDir } = await import('./fixtures.js');
  const dir = tempDir(t);
  const s = await openStore(t, { dir });
  const r = await s.create('Org', { name: 'Old Reseller', kind: 'reseller' });
  const v = await s.create('Org', { name: 'Vendor', kind: 'vendor' });
  await s.delete(r.id);
  await s.delete(v.id);
  await s.close();
  // resellers dropped from the enum, and a new required field
  const changed = parseSchema(SCHEMA_TEXT.replace('values: [vendor, reseller, customer]', 'values: [vendor, customer]').replace('      name: { type: string, required: true, index: true }\n', '      name: { type: string, required: true, index: true }\n      vat: { type: string }\n'), 'changed');
  const again = await openStore(t, { dir, schema: changed });
  await t.rejects(again.undelete(r.id), { rule: 'enum', field: 'kind' }, 'a value the schema no longer allows');
  t.equal((await again.get(r.id))?.deleted, true, 'still deleted');
  t.equal((await again.undelete(v.id)).deleted, false, 'an object whose values still pass comes back');
  const required = parseSchema(SCHEMA_TEXT.replace('      name: { type: string, required: true, index: true }\n', '      name: { type: string, required: true, index: true }\n      vat: { type: string, required: true }\n'), 'required');
  await again.delete(v.id);
  await again.close();
  const third = await openStore(t, { dir, schema: required });
  await t.rejects(third.undelete(v.id), { rule: 'required', field: 'vat' }, 'a field now required and missing');
});
