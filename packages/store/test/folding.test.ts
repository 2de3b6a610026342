/**
 * How text is folded for uniqueness, indexes and lookups (foldText): NFKC
 * with case folded, as RFC 4518 prepares values for caseIgnoreMatch; and a
 * data dir whose entries were folded the old way (NFC, lower case) has
 * them rebuilt at its next open.
 */
import t, { type Test } from 'tap';
import { Level } from 'level';
import { checkIndexes, foldLookup, foldText, Store } from '../dist/index.js';
import { decode, encode } from '../dist/codec.js';
import { keys, SEP } from '../dist/keys.js';
import { uniqueClash } from '../dist/conflicts.js';
import { openStore, schema, tempDir } from './fixtures.js';

const integerField = schema.types.get('License')!.fields.get('seats')!;
const booleanField = schema.types.get('License')!.fields.get('active')!;
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
    ['an\u200bna', 'ANNA'],
    ['an\u00adna\ufeff', 'anna'],
  ];
  for (const [a, b] of same) t.equal(foldText(a), foldText(b), `${a} and ${b} fold alike (${foldText(a)})`);
  t.not(foldText('müller'), foldText('muller'), 'a letter with a diacritic is not the letter without');
  t.equal(foldText('Plain ASCII 0049'), 'plain ascii 0049');
});

t.test('foldText is stable: a folded value folds to itself (random strings across the planes)', async (t) => {
  const rnd = prng(Number(process.env['FOLD_SEED'] ?? 7));
  // letters of many scripts, compatibility characters, combining marks and the astral planes
  const ranges: [number, number][] = [[0x20, 0x7e], [0xa0, 0x24f], [0x370, 0x52f], [0x1d00, 0x1fff], [0x2000, 0x206f], [0x2100, 0x24ff], [0x3300, 0x33ff], [0xfb00, 0xfb4f], [0xff00, 0xffef], [0x300, 0x36f], [0x10400, 0x1044f], [0x1d400, 0x1d7ff]];
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
    await t.rejects(s.create('Person', { cn: 'Other', sn: 'O', mail: [mail] }), { field: 'mail', rule: 'unique', message: /is already used by/ }, `${mail} is taken`);
  }
  t.same((await s.lookup('Person', 'mail', 'ﬁnance@EXAMPLE.com')).items.map((o) => o.id), [anna.id], 'a lookup in another form finds it');
  t.same((await s.lookup('Org', 'name', 'acme')).items.map((o) => o.id), [org.id], 'an indexed field too');
  t.equal(foldLookup(integerField, '５'), foldLookup(integerField, '5'), 'a full-width number is the number');
  t.equal(foldLookup(booleanField, 'ＴＲＵＥ'), 'true', 'and a full-width boolean the boolean');
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
  await t.rejects(s.create('Person', { cn: 'F', sn: 'F', mail: ['FIONA@example.com'] }), { field: 'mail', rule: 'unique', message: /is already used by/ }, 'and the value is taken as it folds now');
});

/** Persons made on nodes: id, mail, the node that makes it. */
type Made = [id: string, mail: string, node: string][];

/**
 * Node a's dir holding the Persons `made` (id, mail, the node that makes it), each other node's
 * replicated to a; then left as a build that folded in NFC would have left it: the mail entries
 * as that folding made them (`owners`: folded value to holder), clash records only of values
 * that folding found alike (`clashes`: the records' objects), and the old layout's word (or, with
 * `layoutKept` false, no layout at all, as builds before the layout was kept left a dir).
 */
async function oldDir(t: Test, made: Made, owners: Record<string, string>, clashes: [objectId: string, value: string, holder: string][], layoutKept = true): Promise<Store> {
  const dirs = new Map<string, string>();
  const at = (node: string): Promise<Store> => {
    if (!dirs.has(node)) dirs.set(node, tempDir(t));
    return Store.open({ dir: dirs.get(node)!, schema, nodeId: node, passwordCost: { N: 1024, r: 8, p: 1 } });
  };
  const a = await at('a');
  for (const node of new Set(made.map(([, , n]) => n))) {
    const s = node === 'a' ? a : await at(node);
    for (const [id, mail, n] of made) if (n === node) await s.create('Person', { cn: id, sn: 'S', mail: [mail] }, { id });
    if (s !== a) {
      await a.applyRemote((await s.readFeed(0, 100)).map(({ seq: _s, ...c }) => c));
      await s.close();
    }
  }
  await a.close();
  const db = new Level<string, Buffer>(dirs.get('a')!, { keyEncoding: 'utf8', valueEncoding: 'buffer' });
  const conflictKeys = await db.keys({ gte: 'k', lt: 'k\uffff' }).all();
  const entryKeys = await db.keys(keys.indexRange('u', 'Person', 'mail')).all();
  await db.batch([
    ...[...conflictKeys, ...entryKeys].map((key) => ({ type: 'del' as const, key })),
    ...Object.entries(owners).map(([value, id]) => ({ type: 'put' as const, key: keys.unique('Person', 'mail', value), value: Buffer.from(id) })),
    ...clashes.map(([objectId, value, holder]) => {
      const c = uniqueClash(objectId, 'Person', 'mail', value, holder, undefined, 1);
      return { type: 'put' as const, key: c.key, value: Buffer.from(encode(c.rec)) };
    }),
  ]);
  if (layoutKept) {
    const layout = decode<Record<string, string>>((await db.get(keys.meta('indexLayout')))!);
    layout[`Person${SEP}mail`] = 'unique';
    await db.put(keys.meta('indexLayout'), Buffer.from(encode(layout)));
  } else {
    await db.del(keys.meta('indexLayout'));
  }
  await db.close();
  const opened = await at('a');
  t.teardown(() => opened.close());
  return opened;
}

const openClashes = async (s: Store): Promise<[string, string, string][]> => (await s.conflicts({ open: true })).items.map((c) => [c.objectId, String(c.values[0]!.value), c.winner]);
const holderOf = async (s: Store, mail: string): Promise<string[]> => (await s.lookup('Person', 'mail', mail)).items.map((o) => o.id);

t.test('values that come to fold alike at the rebuild are kept as a recorded clash, the entry left with the object it named: a look-alike does not take the mail its holder signs in with', async (t) => {
  // (the look-alike has the lesser id: the least id is not what decides)
  const s = await oldDir(t, [['per-9', 'finance@example.com', 'a'], ['per-2', 'ﬁnance@example.com', 'b']], { 'finance@example.com': 'per-9', 'ﬁnance@example.com': 'per-2' }, []);
  t.same(await checkIndexes(s), [], 'it opens, the entries rebuilt');
  t.same(await openClashes(s), [['per-2', 'finance@example.com', 'unique:per-9']], 'the clash is recorded on the look-alike');
  t.same(await holderOf(s, 'finance@example.com'), ['per-9'], 'the holder keeps its mail');
  await s.update('per-9', { mail: ['other@example.com'] });
  t.same(await holderOf(s, 'FINANCE@example.com'), ['per-2'], 'and passes it on when it lets go');
  t.same(await checkIndexes(s), []);
});

/**
 * An old dir (see oldDir) opened: its indexes agree with its objects, the clash records `open` are
 * open (each of the value as it folds now), `value` finds `holder`, and with `records`, that many
 * records are kept in all (none left settled beside its refolded one).
 */
async function rebuilt(
  t: Test,
  old: { made: Made; owners: Record<string, string>; clashes: [string, string, string][]; layoutKept?: boolean },
  want: { open: [string, string, string][]; value: string; holder: string; records?: number },
): Promise<void> {
  const s = await oldDir(t, old.made, old.owners, old.clashes, old.layoutKept);
  t.same(await checkIndexes(s), [], 'it opens, the entries rebuilt');
  t.same((await openClashes(s)).sort(), want.open, 'the open records, each of the value as it folds now and naming the holder');
  t.same(await holderOf(s, want.value), [want.holder], 'the holder keeps the value');
  if (want.records !== undefined) t.equal((await s.conflicts()).items.length, want.records, 'no record as the old folding named it is left beside its new one');
}

t.test('a clash recorded before the rebuild, of a value the rebuild folds otherwise, is recorded again under the value as it folds now, and the holder stays', async (t) => {
  // both hold Straße; the entry and the record name it as NFC and lower case did (straße)
  await rebuilt(
    t,
    { made: [['per-8', 'Straße@example.com', 'a'], ['per-3', 'Straße@example.com', 'b']], owners: { 'straße@example.com': 'per-8' }, clashes: [['per-3', 'straße@example.com', 'per-8']] },
    { open: [['per-3', 'strasse@example.com', 'unique:per-8']], value: 'STRASSE@example.com', holder: 'per-8', records: 1 },
  );
});

t.test('of three holders, one with a record of the clash, the entry stays with the object it named', async (t) => {
  await rebuilt(
    t,
    { made: [['per-2', 'finance@example.com', 'a'], ['per-1', 'finance@example.com', 'c'], ['per-3', 'ﬁnance@example.com', 'b']], owners: { 'finance@example.com': 'per-2', 'ﬁnance@example.com': 'per-3' }, clashes: [['per-1', 'finance@example.com', 'per-2']] },
    { open: [['per-1', 'finance@example.com', 'unique:per-2'], ['per-3', 'finance@example.com', 'unique:per-2']], value: 'finance@example.com', holder: 'per-2' },
  );
});

t.test('a record that named an object the rebuild does not leave the entry with is made again naming the holder', async (t) => {
  // per-5 and per-3 both hold Straße, per-3's record naming per-5; per-7 holds STRASSE, whose entry the new folding keeps
  await rebuilt(
    t,
    { made: [['per-5', 'Straße@example.com', 'a'], ['per-3', 'Straße@example.com', 'b'], ['per-7', 'STRASSE@example.com', 'c']], owners: { 'straße@example.com': 'per-5', 'strasse@example.com': 'per-7' }, clashes: [['per-3', 'straße@example.com', 'per-5']] },
    { open: [['per-3', 'strasse@example.com', 'unique:per-7'], ['per-5', 'strasse@example.com', 'unique:per-7']], value: 'strasse@example.com', holder: 'per-7', records: 2 },
  );
});

t.test('a dir from before the index layout was kept has its clash records refolded too', async (t) => {
  await rebuilt(
    t,
    { made: [['per-8', 'Straße@example.com', 'a'], ['per-3', 'Straße@example.com', 'b']], owners: { 'straße@example.com': 'per-8' }, clashes: [['per-3', 'straße@example.com', 'per-8']], layoutKept: false },
    { open: [['per-3', 'strasse@example.com', 'unique:per-8']], value: 'STRASSE@example.com', holder: 'per-8', records: 1 },
  );
});
