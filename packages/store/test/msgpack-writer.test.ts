// The store's own MessagePack writer must write exactly msgpackr's bytes
// (with codec.ts's options) for every value it takes, leave every other
// value to msgpackr, and never let one encoded value overwrite another.
import t from 'tap';
import { prng } from '../../../test/helpers/prng.js';
import { Packr } from 'msgpackr';
import { packValue } from '../dist/msgpack-writer.js';
import { decode, encode } from '../dist/codec.js';

const packr = new Packr({ useRecords: false, moreTypes: false, int64AsType: 'number' });

// every boundary of every integer form, both signs, and numbers that are no 32-bit integer
const NUMBERS = [
  0, -0, 1, 0x1f, 0x20, 0x7f, 0x80, 0xff, 0x100, 0xffff, 0x10000, 2 ** 31 - 1, 2 ** 31, 2 ** 32 - 1, 2 ** 32, 2 ** 53 - 1,
  -1, -0x1f, -0x20, -0x21, -0x7f, -0x80, -0x81, -0x8000, -0x8001, -(2 ** 31), -(2 ** 31) - 1, -(2 ** 53),
  0.5, -1.25, 1e300, Number.MIN_VALUE, NaN, Infinity, -Infinity, 1763800000000 * 65536 + 17,
];
// one-, two-, three- and four-byte characters, and halves of surrogate pairs
const CHARS = ['a', 'Z', '0', ' ', 'ü', 'ß', 'é', '€', '中', '😀', '\ud800', '\udc00', '\u0000', '\u007f', '\u0080', '\u07ff', '\u0800', '\uffff'];
// lengths either side of every string header boundary, in characters; bytes cross them too when characters are wide
const LENGTHS = [0, 1, 10, 0x1f, 0x20, 0x21, 0x3f, 0x40, 0x41, 0xff, 0x100, 0x101, 0x5555, 0xffff, 0x10000, 0x10001];

function randomString(r: () => number): string {
  // the long ones seldom, so that a run stays short
  const n = LENGTHS[Math.floor(r() * (r() < 0.1 ? LENGTHS.length : 10))]!;
  const ascii = r() < 0.5;
  let s = '';
  for (let i = 0; i < n; i++) s += ascii ? String.fromCharCode(0x20 + Math.floor(r() * 95)) : CHARS[Math.floor(r() * CHARS.length)]!;
  return s;
}

function randomBytes(r: () => number): Uint8Array {
  const n = [0, 1, 0xff, 0x100, 0xffff, 0x10000, 70_000][Math.floor(r() * (r() < 0.1 ? 7 : 4))]!;
  const b = r() < 0.5 ? new Uint8Array(n) : Buffer.alloc(n);
  for (let i = 0; i < n; i += 97) b[i] = i & 0xff;
  return b;
}

function randomValue(r: () => number, depth: number): unknown {
  const kind = Math.floor(r() * (depth > 1 ? 6 : 9));
  switch (kind) {
    case 0:
      return NUMBERS[Math.floor(r() * NUMBERS.length)];
    case 1:
      return randomString(r);
    case 2:
      return r() < 0.5;
    case 3:
      return null;
    case 4:
      return undefined;
    case 5:
      return randomBytes(r);
    case 6:
    case 7: {
      const o: Record<string, unknown> = {};
      const n = [0, 1, 5, 15, 16, 17][Math.floor(r() * 6)]!;
      for (let i = 0; i < n; i++) o[r() < 0.2 ? String(i) : randomString(r).slice(0, 40)] = randomValue(r, depth + 1);
      return o;
    }
    default: {
      const n = [0, 1, 15, 16, 17, 300][Math.floor(r() * (depth === 0 ? 6 : 5))]!;
      return Array.from({ length: n }, () => randomValue(r, depth + 1));
    }
  }
}

t.test('random values: the same bytes as msgpackr', async (t) => {
  const r = prng(20261123);
  let compared = 0;
  for (let i = 0; i < 1500; i++) {
    const v = randomValue(r, 0);
    const mine = packValue(v);
    if (mine === undefined) {
      t.fail(`the writer refused a value it should take: ${JSON.stringify(v)?.slice(0, 200)}`);
      continue;
    }
    const theirs = packr.pack(v);
    if (!mine.equals(theirs)) {
      t.fail(`bytes differ for value ${i}: ${mine.length} against msgpackr's ${theirs.length}`);
      break;
    }
    compared++;
  }
  t.equal(compared, 1500, 'every value written as msgpackr writes it');
});

t.test('every number and every string length alone', async (t) => {
  for (const n of NUMBERS) t.ok(packValue(n)!.equals(packr.pack(n)), `number ${Object.is(n, -0) ? '-0' : n}`);
  for (const len of LENGTHS) {
    for (const c of CHARS) {
      const s = c.repeat(len);
      t.ok(packValue(s)!.equals(packr.pack(s)), `${len} x U+${c.charCodeAt(0).toString(16)}`);
    }
  }
  // arrays and maps either side of their header boundaries (random values stay far below the top ones)
  for (const n of [0xf, 0x10, 0xffff, 0x10000]) {
    const a = Array.from({ length: n }, (_, i) => i & 0x7f);
    t.ok(packValue(a)!.equals(packr.pack(a)), `array of ${n}`);
  }
  for (const n of [0xf, 0x10, 0xffff]) {
    const o = Object.fromEntries(Array.from({ length: n }, (_, i) => [`k${i}`, i & 1]));
    t.ok(packValue(o)!.equals(packr.pack(o)), `map of ${n}`);
  }
  const big = Object.fromEntries(Array.from({ length: 0x10000 }, (_, i) => [`k${i}`, 1]));
  t.equal(packValue(big), undefined, 'a map past 16 bits is left to msgpackr');
  t.throws(() => encode(big), /too large/, 'which refuses it, as it always did with these options');
});

t.test('a stored record, with the fields of a Person, written as msgpackr writes it', async (t) => {
  const y = new Uint8Array(420).map((_, i) => i * 7);
  const record = {
    t: 'Person',
    f: { cn: 'Anna Müller', sn: 'Müller', mail: ['anna@example.com', 'a.m@example.com'], postalCode: '0049', roles: ['staff'], seats: 5 },
    d: false,
    h: 1763800000000 * 65536 + 12,
    s: 123_456,
    v: 'abcdefghijklmnop',
    y,
    c: 1763800000000 * 65536,
  };
  const bytes = encode(record);
  t.ok(bytes.equals(packr.pack(record)));
  t.same(decode(bytes), { ...record, y: Buffer.from(y) });
});

t.test('values of other types are left to msgpackr, and the writer carries on unharmed', async (t) => {
  class Point {
    x = 1;
  }
  const others: unknown[] = [new Map([['a', 1]]), new Set([1]), new Date(0), Object.create(null), new Point(), 10n, () => 1, Symbol('s'), new Uint16Array(2), [1, new Map()], { a: { b: new Date(0) } }];
  for (const v of others) t.equal(packValue(v), undefined, Object.prototype.toString.call(v));
  // a refused value leaves nothing behind: what follows starts where it would have without it
  const x = packValue('x')!;
  t.equal(packValue(new Map([['half', 'written']])), undefined);
  const after = { a: 'still', b: [1, 2, 3] };
  const next = packValue(after)!;
  t.ok(next.equals(packr.pack(after)), 'the next value holds its own bytes');
  t.equal(next.buffer, x.buffer, 'on the same slab');
  t.equal(next.byteOffset, (x.byteOffset + x.length + 7) & ~7, 'right after the value before the refused one');
  // codec's encode hands them to msgpackr, which writes them as it always did
  const m = new Map([['k', 'v']]);
  t.ok(encode(m).equals(packr.pack(m)));
});

t.test('one encoded value is never overwritten by the ones after it', async (t) => {
  const r = prng(7);
  const kept: [Buffer, Buffer][] = [];
  for (let i = 0; i < 3000; i++) {
    // small values fill slabs; now and then one larger than a slab moves the value being written
    const v = i % 500 === 0 ? { big: new Uint8Array(40_000 + i), s: 'x'.repeat(5000) } : { i, s: randomString(r).slice(0, 200), b: new Uint8Array(i % 300) };
    kept.push([packValue(v)!, packr.pack(v)]);
  }
  let same = 0;
  for (const [mine, theirs] of kept) if (mine.equals(theirs)) same++;
  t.equal(same, kept.length, 'every earlier value still holds its own bytes');
});

t.test('a getter that encodes while a value is being written gets its own bytes, and so does the value', async (t) => {
  const inner = { i: 'inner', n: [1, 2, 3] };
  let innerBytes: Buffer | undefined;
  const outer = { a: 'before', b: 0, c: 'after' };
  Object.defineProperty(outer, 'b', {
    enumerable: true,
    get: () => {
      innerBytes = encode(inner);
      return 7;
    },
  });
  const bytes = encode(outer);
  t.ok(innerBytes!.equals(packr.pack(inner)), 'the inner value');
  t.same(decode(bytes), { a: 'before', b: 7, c: 'after' }, 'the outer value');
});
