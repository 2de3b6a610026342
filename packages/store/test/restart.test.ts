import t from 'tap';
import { Store } from '../dist/index.js';
import { schema, tempDir } from './fixtures.js';

t.test('HLC stays monotonic across restarts even when the wall clock goes back', async (t) => {
  const dir = tempDir(t);
  let wall = Date.now();
  const s1 = await Store.open({ dir, schema, now: () => wall });
  const a = await s1.create('Org', { name: 'A', kind: 'vendor' });
  const b = await s1.create('Org', { name: 'B', kind: 'vendor' });
  t.ok(b.hlc > a.hlc, 'later writes order later within one ms');
  const clientA = s1.clientId;
  await s1.close();

  wall -= 60 * 60 * 1000; // an hour back: NTP step, or a restored VM snapshot
  const s2 = await Store.open({ dir, schema, now: () => wall });
  const c = await s2.create('Org', { name: 'C', kind: 'vendor' });
  t.ok(c.hlc > b.hlc, 'the first write after restart orders after everything before it');
  t.not(s2.clientId, clientA, 'a fresh Yjs clientID at every start');
  t.equal(s2.nodeId, s1.nodeId, 'the node id is kept');
  t.equal(s2.lastSeq, 3, 'the feed position is recovered');
  t.same(s2.versionVector(), { [s2.nodeId]: 3 });
  const clients = (await s2.raw('mclients').next()).value;
  t.ok(clients, 'clientIDs are recorded');
  await s2.close();
});

t.test('a data dir belongs to one node id', async (t) => {
  const dir = tempDir(t);
  const s = await Store.open({ dir, schema, nodeId: 'eu-1' });
  await s.close();
  await t.rejects(Store.open({ dir, schema, nodeId: 'us-1' }), { message: /belongs to node "eu-1", not "us-1"/ });
  const again = await Store.open({ dir, schema });
  t.equal(again.nodeId, 'eu-1');
  await again.close();
});

t.test('a second open of the same dir is refused with a clear sentence', async (t) => {
  const dir = tempDir(t);
  const s = await Store.open({ dir, schema });
  t.teardown(() => s.close());
  await t.rejects(Store.open({ dir, schema }), { code: 'locked', message: `data dir ${dir} is in use by another Meridian process; stop it or choose another --dir` });
});
