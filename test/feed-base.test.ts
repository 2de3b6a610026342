/**
 * Masters in this process, their stores prepared beforehand through the
 * store's API: a change held ahead of a gap with no feed entry can only be
 * set up that way.
 */
import t from 'tap';
import { Store, type RemoteChange } from '@meridian/store';
import { freePort } from './helpers/free-port.js';
import { crmSchema } from './helpers/schema.js';
import { tempDir } from './helpers/tmp.js';
import { until } from './helpers/wait.js';
import { startXmlNode } from './helpers/xml-node.js';

const SECRET = 'in-process-cluster-secret';
const entries = async (store: Store, after: number): Promise<RemoteChange[]> => (await store.readFeed(after, 10)).map(({ seq: _s, ...c }) => c as RemoteChange);

t.test('a master whose gap fills over a change it holds with no feed entry has the peers following its feed subscribe again, and one that lacks the change is repaired', async (t) => {
  const open = (nodeId: string, dir = tempDir(t)): Promise<Store> => Store.open({ dir, schema: crmSchema, nodeId });
  const [o, a] = [await open('o'), await open('a')];
  t.teardown(() => Promise.all([o.close(), a.close()]));
  const ids: string[] = [];
  for (let i = 0; i < 3; i++) ids.push((await o.create('Organisation', { name: `Org ${i}`, kind: 'vendor' })).id);
  const [e1, e2, e3] = await entries(o, 0);
  // a holds o#3 ahead of a gap, and has trimmed its feed entry
  await a.applyRemote([e1!, e3!]);
  await a.create('Organisation', { name: 'From a', kind: 'vendor' });
  const [own] = await entries(a, 2);
  await a.trimFeed(1);

  // b is a clone of a: o#3 is held there ahead with no feed entry at all; p holds o#1 and a's change
  const [bDir, pDir] = [tempDir(t), tempDir(t)];
  const b0 = await open('b', bDir);
  const snap = a.stateSnapshot();
  t.same(snap.ahead, [['o', 3]]);
  for await (const batch of snap.batches(10)) await b0.cloneStates(batch);
  await b0.cloneStates([], { peer: 'a', head: snap.head, vector: snap.vector, ahead: snap.ahead });
  await snap.close();
  await b0.close();
  const p0 = await open('p', pDir);
  await p0.applyRemote([e1!, own!]);
  await p0.close();

  const pPort = await freePort();
  const common = { clusterSecret: SECRET, heartbeat: 200, linkTimeout: 1000 };
  const p = await startXmlNode(t, { ...common, dir: pDir, nodeId: 'p', httpPort: pPort });
  const b = await startXmlNode(t, { ...common, dir: bDir, nodeId: 'b', peers: [`ws://127.0.0.1:${pPort}/sync`] });
  t.ok(await until(() => b.status().peers.some((s) => s.state === 'live'), 10_000), 'b and p are live');
  t.equal(await p.store.get(ids[2]!), undefined, "p lacks o#3: b's feed has no entry of it");

  // o#2 reaches p, and through p's feed b, whose gap fills: b's base passes o#3
  await p.store.applyRemote([e2!]);
  t.ok(await until(() => b.store.feedBase()['o'] === 3, 10_000), "b's base passes o#3");
  t.ok(await until(async () => (await p.store.get(ids[2]!)) !== undefined, 10_000), 'p subscribed to b again, was repaired by anti-entropy, and holds o#3');
  t.equal(p.store.versionVector()['o'], 3);
});
