import t from 'tap';
import * as Y from 'yjs';
import { applyLocal, docVersion, encodeCreate, newDoc, singleClientVersion } from '../dist/yobject.js';
import { prng } from '../../../test/helpers/prng.js';


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
