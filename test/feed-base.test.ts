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
import { sleep, until } from './helpers/wait.js';
import type { MeridianNode } from '@meridian/node';
import type { LogLine } from './helpers/node-process.js';
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
  const p0 = await open('p', pDir);
  await p0.applyRemote([e1!, own!]);
  await p0.close();
  // q holds all of o's changes, and b has followed q's feed to its head already (as a run's end records it):
  // q's feed does not bring b o#2
  const qDir = tempDir(t);
  const q0 = await open('q', qDir);
  await q0.applyRemote([e1!, own!, e2!, e3!]);
  await b0.cloneStates([], { peer: 'q', head: q0.lastSeq, vector: {} });
  await q0.close();
  await b0.close();

  const [pPort, qPort] = [await freePort(), await freePort()];
  // (no link here is meant to die: a short link timeout let a stalled process drop one, and the counts of
  // sessions opened below would be off by it)
  const common = { clusterSecret: SECRET, heartbeat: 1000, linkTimeout: 10_000 };
  const p = await startXmlNode(t, { ...common, dir: pDir, nodeId: 'p', httpPort: pPort });
  const q = await startXmlNode(t, { ...common, dir: qDir, nodeId: 'q', httpPort: qPort });
  // b's log says which of its sessions opened again
  const logs: LogLine[] = [];
  const b = await startXmlNode(t, { ...common, dir: bDir, nodeId: 'b', peers: [`ws://127.0.0.1:${pPort}/sync`, `ws://127.0.0.1:${qPort}/sync`] }, {}, logs, 'info');
  const opened = (peer: string): number => logs.filter((l) => l.msg === 'replication session open' && l.peer === peer).length;
  const live = (n: MeridianNode, peer: string): boolean => n.status().peers.some((s) => s.node === peer && s.state === 'live');
  // (b shows q catching up until its gap fills: q holds what b lacks)
  t.ok(await until(() => live(b, 'p') && live(p, 'b') && live(q, 'b'), 10_000), 'b, p and q are live');
  // (q's sub reached b before q was live on b's empty feed; a moment more for the frames to settle)
  await sleep(300);
  t.equal(await p.store.get(ids[2]!), undefined, "p lacks o#3: b's feed has no entry of it");

  // o#2 reaches p, and through p's feed b, whose gap fills: b's base passes o#3
  await p.store.applyRemote([e2!]);
  t.ok(await until(() => b.store.feedBase()['o'] === 3, 10_000), "b's base passes o#3");
  // (the run's states are readable before its last frame moves the vector)
  t.ok(await until(async () => (await p.store.get(ids[2]!)) !== undefined && p.store.versionVector()['o'] === 3, 10_000), 'p subscribed to b again, was repaired by anti-entropy, and holds o#3');
  t.equal(p.store.versionVector()['o'], 3);
  t.equal(opened('p'), 2, "b's session with p was closed for it, and opened again");
  t.equal(opened('q'), 1, 'the one with q, which held o#3, was left open');
});

t.test("a node that knows the feed tags of hundreds of node ids still gets through the handshake: its auth carries them, and the peer learns them", async (t) => {
  const port = await freePort();
  const common = { clusterSecret: SECRET, heartbeat: 200, linkTimeout: 1000 };
  const a = await startXmlNode(t, { ...common, nodeId: 'a', httpPort: port });
  const many = Object.fromEntries(Array.from({ length: 600 }, (_, i) => [`restored-node-${i}.1-0123456789ab`, (i * 2654435761 >>> 0).toString(16).padStart(8, '0')]));
  a.store.claimFeeds(many, true);
  await a.store.saveFeeds();
  const b = await startXmlNode(t, { ...common, nodeId: 'b', peers: [`ws://127.0.0.1:${port}/sync`] });
  t.ok(await until(() => b.status().peers.some((s) => s.state === 'live'), 10_000), `live, with ${Object.keys(many).length} tags in a's auth`);
  t.equal(b.store.knownFeeds()['restored-node-599.1-0123456789ab'], many['restored-node-599.1-0123456789ab'], 'b learned them');
});
