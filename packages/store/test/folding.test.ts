/**
 * How text is folded for uniqueness, indexes and lookups (foldText): NFKC
 * with case folded, as RFC 4518 prepares values for caseIgnoreMatch; and a
 * data dir whose entries were folded the old way (NFC, lower case) has
 * them rebuilt at its next open.
 */
import t from 'tap';
import { Level } from 'level';
import { checkIndexes, foldText, Store, ValidationError } from '../dist/index.js';
import { decode, encode } from '../dist/codec.js';
import { keys, SEP } from '../dist/keys.js';
import { openStore, schema, tempDir } from './fixtures.js';
import { prng } from '../../../test/helpers/prng.js';

t.test('foldText: case, compatibility forms and composition fold alike; ASCII is lower-cased', async (t) => {
  const same: [string, string][] = [
    ['Anna@Example.COM', 'anna@example.com'],
    ['ＡＮＮＡ', 'anna'],
    ['ﬁnance', 'FINANCE'],
    ['Straße', 'STRASSE'],
    ['ẞ', 'ss'],
    ['Mu\u0308ller', 'MÜLLER'],
    ['ᴬnna', 'anna'],
    ['㎒', 'mhz'],
    ['ΌΣΟΣ', 'όσος'],
  ];
  for (const [a, b] of same) t.equal(foldText(a), foldText(b), `${a} and ${b} fold alike (${foldText(a)})`);
  t.not(foldText('müller'), foldText('muller'), 'a letter with a diacritic is not the letter without');
  t.equal(foldText('Plain ASCII 0049'), 'plain ascii 0049');
});

t.test('foldText is stable: a folded value folds to itself (random strings across the planes)', async (t) => {
  const rnd = prng(Number(process.env['FOLD_SEED'] ?? 7));
  // letters of many scripts, compatibility characters, combining marks and the astral planes
  const ranges: [number, number][] = [[0x20, 0x7e], [0xa0, 0x24f], [0x370, 0x52f], [0x1d00, 0x1fff], [0x2100, 0x24ff], [0x3300, 0x33ff], [0xfb00, 0xfb4f], [0xff00, 0xffef], [0x300, 0x36f], [0x10400, 0x1044f], [0x1d400, 0x1d7ff]];
  const unstable: string[] = [];
  for (let i = 0; i < 20_000; i++) {
    let s = '';
    for (let n = 1 + Math.floor(rnd() * 6); n > 0; n--) {
      const [lo, hi] = ranges[Math.floor(rnd() * ranges.length)]!;
      s += String.fromCodePoint(lo + Math.floor(rnd() * (hi - lo + 1)));
    }
    const once = foldText(s);
    if (foldText(once) !== once) unstable.push(s);
  }
  t.same(unstable.slice(0, 5).map((s) => [...s].map((c) => c.codePointAt(0)!.toString(16))), [], 'every folded value is its own folding');
});

t.test('a unique value is taken in any case and compatibility form, and a lookup finds it so', async (t) => {
  const s = await openStore(t);
  const org = await s.create('Org', { name: 'Ａｃｍｅ', kind: 'customer' });
  const anna = await s.create('Person', { cn: 'Anna', sn: 'A', mail: ['finance@example.com'], uid: 'anna', org: org.id });
  for (const mail of ['ﬁnance@example.com', 'ＦＩＮＡＮＣＥ@example.com']) {
    await t.rejects(s.create('Person', { cn: 'Other', sn: 'O', mail: [mail] }), ValidationError, `${mail} is taken`);
  }
  t.same((await s.lookup('Person', 'mail', 'ﬁnance@EXAMPLE.com')).items.map((o) => o.id), [anna.id], 'a lookup in another form finds it');
  t.same((await s.lookup('Org', 'name', 'acme')).items.map((o) => o.id), [org.id], 'an indexed field too');
  t.same(await checkIndexes(s), []);
});

t.test('a data dir whose index entries were folded in NFC and lower case has them rebuilt at its next open', async (t) => {
  const dir = tempDir(t);
  const open = (): Promise<Store> => Store.open({ dir, schema, passwordCost: { N: 1024, r: 8, p: 1 } });
  let s = await open();
  const anna = await s.create('Person', { cn: 'ﬁona', sn: 'F', mail: ['ﬁona@example.com'] });
  await s.close();
  // as a build that folded in NFC wrote them: the ligature kept, and its layout's words
  const db = new Level<string, Buffer>(dir, { keyEncoding: 'utf8', valueEncoding: 'buffer' });
  const old = (v: string): string => v.normalize('NFC').toLowerCase();
  await db.batch([
    { type: 'del', key: keys.unique('Person', 'mail', 'fiona@example.com') },
    { type: 'put', key: keys.unique('Person', 'mail', old('ﬁona@example.com')), value: Buffer.from(anna.id) },
    { type: 'del', key: keys.field('Person', 'cn', 'fiona', anna.id) },
    { type: 'put', key: keys.field('Person', 'cn', old('ﬁona'), anna.id), value: Buffer.alloc(0) },
  ]);
  const layout = decode<Record<string, string>>((await db.get(keys.meta('indexLayout')))!);
  t.equal(layout[`Person${SEP}mail`], 'unique/nfkc-cf', 'this build records how it folds');
  layout[`Person${SEP}mail`] = 'unique';
  layout[`Person${SEP}cn`] = 'indexed';
  await db.put(keys.meta('indexLayout'), Buffer.from(encode(layout)));
  await db.close();
  s = await open();
  t.teardown(() => s.close());
  t.same(await checkIndexes(s), [], 'the entries are rebuilt as this build folds');
  t.same((await s.lookup('Person', 'mail', 'fiona@example.com')).items.map((o) => o.id), [anna.id]);
  t.same((await s.lookup('Person', 'cn', 'FIONA')).items.map((o) => o.id), [anna.id]);
  await t.rejects(s.create('Person', { cn: 'F', sn: 'F', mail: ['FIONA@example.com'] }), ValidationError, 'and the value is taken as it folds now');
});

t.test('values of a unique field that come to fold alike at the rebuild are kept as a recorded clash: the holder keeps the entry, the other waits for it', async (t) => {
  const [dirA, dirB] = [tempDir(t), tempDir(t)];
  const at = (dir: string, nodeId: string): Promise<Store> => Store.open({ dir, schema, nodeId, passwordCost: { N: 1024, r: 8, p: 1 } });
  const b = await at(dirB, 'b');
  const two = await b.create('Person', { cn: 'B', sn: 'B', mail: ['ﬁnance@example.com'] }, { id: 'per-2' });
  let a = await at(dirA, 'a');
  const one = await a.create('Person', { cn: 'A', sn: 'A', mail: ['finance@example.com'] }, { id: 'per-1' });
  await a.applyRemote((await b.readFeed(0, 10)).map(({ seq: _s, ...c }) => c));
  await b.close();
  t.equal((await a.conflicts({ open: true })).items.length, 1, 'this build records the clash as the change arrives');
  await a.close();
  // as a build that folded in NFC left the dir: two values, an entry each, no clash
  const db = new Level<string, Buffer>(dirA, { keyEncoding: 'utf8', valueEncoding: 'buffer' });
  const old = (v: string): string => v.normalize('NFC').toLowerCase();
  const conflictKeys = await db.keys({ gte: 'k', lt: 'k\uffff' }).all();
  await db.batch([
    ...conflictKeys.map((key) => ({ type: 'del' as const, key })),
    { type: 'put', key: keys.unique('Person', 'mail', old('finance@example.com')), value: Buffer.from(one.id) },
    { type: 'put', key: keys.unique('Person', 'mail', old('ﬁnance@example.com')), value: Buffer.from(two.id) },
  ]);
  const layout = decode<Record<string, string>>((await db.get(keys.meta('indexLayout')))!);
  layout[`Person${SEP}mail`] = 'unique';
  await db.put(keys.meta('indexLayout'), Buffer.from(encode(layout)));
  await db.close();
  a = await at(dirA, 'a');
  t.teardown(() => a.close());
  t.same(await checkIndexes(a), [], 'it opens, the entries rebuilt');
  const open = (await a.conflicts({ open: true })).items;
  t.same(open.map((c) => [c.objectId, c.field, c.winner]), [[two.id, 'mail', `unique:${one.id}`]], 'the clash is recorded on the object without the entry');
  t.same((await a.lookup('Person', 'mail', 'finance@example.com')).items.map((o) => o.id), [one.id], 'the least id holds the value');
  await a.update(one.id, { mail: ['other@example.com'] });
  t.same((await a.lookup('Person', 'mail', 'FINANCE@example.com')).items.map((o) => o.id), [two.id], 'and passes it on when it lets go');
  t.same(await checkIndexes(a), []);
});
