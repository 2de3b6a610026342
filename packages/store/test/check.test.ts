import t from 'tap';
import { checkStore } from '../dist/index.js';
import { openStore } from './fixtures.js';

t.test('checkStore reads one moment: writes going on meanwhile show as no disagreement', async (t) => {
  const s = await openStore(t, { nodeId: 'a' });
  const org = await s.create('Org', { name: 'Acme', kind: 'vendor' });
  let writing = true;
  const writer = (async () => {
    for (let i = 0; writing; i++) {
      const p = await s.create('Person', { cn: `P${i}`, sn: 'S', mail: [`p${i}@x.com`], org: org.id });
      if (i % 3 === 0) await s.update(p.id, { mail: [`q${i}@x.com`] });
      if (i % 5 === 0) await s.delete(p.id);
    }
  })();
  const reports = [];
  for (let n = 0; n < 30; n++) reports.push(await checkStore(s));
  writing = false;
  await writer;
  t.same(reports.flatMap((r) => r.problems), [], `no problems in ${reports.length} checks during writes`);
  t.ok(reports[reports.length - 1]!.objects > reports[0]!.objects, `objects grew while it checked (${reports[0]!.objects} to ${reports[reports.length - 1]!.objects})`);
});
