// withSeq: a record's local seq set by splicing its bytes must give the very
// bytes that encoding the record anew gives, and must never misread bytes it
// was not meant for.
import t from 'tap';
import { prng } from '../../../test/helpers/prng.js';
import { decode, encode, withSeq, type ObjectRecord } from '../dist/codec.js';

const SEQS = [0, 1, 127, 128, 255, 256, 65_535, 65_536, 2 ** 32 - 1, 2 ** 32, 2 ** 40 + 3, Number.MAX_SAFE_INTEGER];

function randomRecord(r: () => number): ObjectRecord {
  const pick = <T>(xs: T[]): T => xs[Math.floor(r() * xs.length)]!;
  const text = (): string => Array.from({ length: Math.floor(r() * (r() < 0.1 ? 400 : 20)) }, () => pick(['a', 's', 'ä', 'ás', '\u00a1', '€', '𝄞', ' ', '0'])).join('');
  const f: ObjectRecord['f'] = {};
  const fields = Math.floor(r() * (r() < 0.1 ? 40 : 12));
  for (let i = 0; i < fields; i++) {
    // a field may itself be called "s": only the record's own key counts
    const name = pick(['s', 'cn', 'mail', `f${i}`, 'x'.repeat(40)]);
    f[name] = pick([() => text(), () => Array.from({ length: Math.floor(r() * 20) }, text), () => Math.floor(r() * 2 ** 40) - 2 ** 20, () => r() < 0.5, () => r() * 1e6])();
  }
  const rec: ObjectRecord = { t: pick(['Person', 'Org', 's']), f, d: r() < 0.2, h: Math.floor(r() * 2 ** 52), s: pick(SEQS), v: text(), y: Uint8Array.from({ length: Math.floor(r() * (r() < 0.1 ? 70_000 : 300)) }, () => Math.floor(r() * 256)) };
  if (r() < 0.5) rec.c = Math.floor(r() * 2 ** 52);
  return rec;
}

t.test('the spliced record is byte for byte the record encoded with the new seq', async (t) => {
  const r = prng(20261123);
  let differ = 0;
  const runs = 3_000;
  for (let i = 0; i < runs; i++) {
    const rec = randomRecord(r);
    const seq = SEQS[Math.floor(r() * SEQS.length)]!;
    const spliced = withSeq(encode(rec), seq);
    if (!spliced || Buffer.compare(Buffer.from(spliced), encode({ ...rec, s: seq })) !== 0) differ++;
  }
  t.equal(differ, 0, `${runs} random records`);
});

t.test('key order does not matter, and a record without its own `s` is left to the caller', async (t) => {
  const rec = randomRecord(prng(7));
  const { s: _s, ...rest } = rec;
  const reordered = encode({ y: rec.y, s: 5, ...rest });
  t.same(decode(withSeq(reordered, 300)!), { ...rec, y: Buffer.from(rec.y!), s: 300 }); // bin decodes as a Buffer
  t.equal(withSeq(encode({ ...rest, f: { s: 1 } }), 9), undefined, "a field called s is not the record's seq");
  t.equal(withSeq(encode(['s', 1]), 9), undefined, 'not a map');
  // two keys "s" (only a hand-made record has them): decoding keeps the last, so splicing the first would be wrong
  const twice = Buffer.concat([Uint8Array.of(0x82, 0xa1, 0x73, 0x01, 0xa1, 0x73, 0x02)]);
  t.equal(withSeq(twice, 9), undefined, 'a record with s twice');
  t.equal(withSeq(Buffer.concat([encode({ s: 1 }), Uint8Array.of(0xc0)]), 9), undefined, 'bytes after the record');
  let deep: unknown = 1;
  for (let i = 0; i < 40; i++) deep = [deep];
  t.equal(withSeq(encode({ f: { x: deep }, s: 1 }), 9), undefined, 'values nested deeper than a record holds');
  t.same(decode(withSeq(encode({ f: { x: [[['a']]] }, s: 1 }), 9)!), { f: { x: [[['a']]] }, s: 9 }, 'but a little nesting is fine');
  t.equal(withSeq(new Uint8Array(), 9), undefined, 'no bytes');
});

t.test('truncated and mutated records give undefined or a record that decodes, never a throw', async (t) => {
  const r = prng(99);
  let bad = 0;
  for (let i = 0; i < 5_000; i++) {
    const bytes = new Uint8Array(encode(randomRecord(r)));
    const mutated = r() < 0.5 ? bytes.subarray(0, Math.floor(r() * bytes.length)) : bytes.map((b) => (r() < 0.02 ? Math.floor(r() * 256) : b));
    try {
      const out = withSeq(mutated, 42);
      // what it returns is the input with `s` replaced: it must decode wherever the input did
      if (out) {
        let inputDecodes = true;
        try {
          decode(mutated);
        } catch {
          inputDecodes = false;
        }
        if (inputDecodes && (decode<ObjectRecord>(out) as { s?: unknown }).s !== 42) bad++;
      }
    } catch {
      bad++;
    }
  }
  t.equal(bad, 0, '5,000 damaged records');
});
