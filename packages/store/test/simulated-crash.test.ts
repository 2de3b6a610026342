// Store.crash, which the replication simulation uses: a crash keeps what
// reached LevelDB and loses what was still queued for it.
import t from 'tap';
import { Store } from '../dist/index.js';
import { schema, tempDir } from './fixtures.js';

t.test("a simulated crash loses the writes not yet handed to LevelDB, and only those", async (t) => {
  const dir = tempDir(t);
  const s = await Store.open({ dir, schema });
  // many writes at once: the first batch goes to LevelDB, the rest queue behind it
  const writes = Array.from({ length: 2000 }, (_, i) => s.create('Org', { name: `org ${i}`, kind: 'customer' }));
  const settled = Promise.allSettled(writes);
  await writes[0]; // (before any write reached the group commit, a crash would lose them all)
  const lost = await s.crash();
  const results = await settled;
  const refused = results.filter((r) => r.status === 'rejected');
  const acked = results.flatMap((r) => (r.status === 'fulfilled' ? [r.value.id] : []));
  t.ok(lost > 0, `batches were lost (${lost})`);
  t.ok(refused.length > 0 && acked.length > 0, `some writes were acknowledged (${acked.length}), the rest refused (${refused.length})`);
  t.match((refused[0] as PromiseRejectedResult).reason, { message: /the store crashed/ });
  const again = await Store.open({ dir, schema });
  t.teardown(() => again.close());
  let missing = 0;
  for (const id of acked) if (!(await again.get(id))) missing++;
  t.equal(missing, 0, 'every acknowledged write is on disk');
  t.equal(again.objectCounts()['Org'] ?? 0, acked.length, 'and nothing that was refused');
});
