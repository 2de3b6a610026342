import t from 'tap';
import * as Y from 'yjs';
import { applyLocal, docVersion, encodeCreate, newDoc, singleClientVersion } from '../dist/yobject.js';
import { prng } from '../../../test/helpers/prng.js';


t.test('the hand encoder agrees with Yjs at its edges: float32-exact numbers, -0, the largest integers, astral characters, a create past its 4 KiB buffer', async (t) => {
  const cases: Record<string, string | number | boolean | (string | number)[]>[] = [
    { a: 1.5, b: 0.25, c: -2.75, d: 3.4028234663852886e38, e: 0.1 },
    { z: -0, y: 0, x: -1, w: 2 ** 31, v: -(2 ** 31), u: 2 ** 53 - 1, t: -(2 ** 53 - 1) },
    { s: 'emoji \u{1F600} and \u{10FFFF}', r: ['\u00e9', '\u0142', '\u4e2d'] },
    { big: 'x'.repeat(20_000), after: 'still here', list: Array.from({ length: 300 }, (_, i) => `item ${i} \u00fc`) },
  ];
  for (const [i, fields] of cases.entries()) {
    const doc = newDoc('per-x', 77);
    const real = applyLocal(doc, fields, { type: 'Person', deleted: false, created: 1234 });
    // twice: the second write reuses the buffer the first one grew
    for (const round of [1, 2]) {
      const mine = encodeCreate(77, fields, 'Person', 1234);
      t.equal(Buffer.compare(Buffer.from(real.update!), Buffer.from(mine.update)), 0, `case ${i}, round ${round}: the same bytes`);
    }
    const back = new Y.Doc();
    Y.applyUpdate(back, encodeCreate(77, fields, 'Person', 1234).update);
    t.same(back.getMap('f').toJSON(), fields, `case ${i} reads back`);
    if (i === 1) t.ok(Object.is(back.getMap('f').get('z'), -0), '-0 stays -0');
  }
});

t.test('a hand-encoded create is byte for byte what Yjs writes', async (t) => {
  const rnd = prng(11);
  const values = (): string | number | boolean | (string | number)[] => {
    const r = rnd();
    if (r < 0.3) return `v${Math.floor(rnd() * 1e6)} ünïcødé ${'x'.repeat(Math.floor(rnd() * 300))}`;
    if (r < 0.45) return Math.floor(rnd() * 2 ** 40) - 2 ** 39;
    if (r < 0.55) return rnd() * 1000;
    if (r < 0.65) return rnd() < 0.5;
    return Array.from({ length: 1 + Math.floor(rnd() * 4) }, (_, i) => (i % 2 ? i : `+27 0${i}`));
  };
  for (let i = 0; i < 300; i++) {
    const clientId = Math.floor(rnd() * 2 ** 32);
    const fields: Record<string, ReturnType<typeof values>> = {};
    const n = 1 + Math.floor(rnd() * 14);
    for (let k = 0; k < n; k++) fields[`field${Math.floor(rnd() * 30)}`] = values();
    const doc = newDoc('per-x', clientId);
    const created = Math.floor(rnd() * 2 ** 50);
    const real = applyLocal(doc, fields, { type: 'Person', deleted: false, created });
    const mine = encodeCreate(clientId, fields, 'Person', created);
    if (Buffer.compare(Buffer.from(real.update!), Buffer.from(mine.update)) !== 0) {
      t.fail(`case ${i}: bytes differ for ${JSON.stringify(fields)}`);
      return;
    }
    t.equal(singleClientVersion(clientId, mine.clock, fields as Record<string, string>), docVersion(doc));
    const back = new Y.Doc();
    Y.applyUpdate(back, mine.update);
    t.same(back.getMap('f').toJSON(), fields);
  }
});
