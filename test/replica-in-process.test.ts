/**
 * A master and a replica in this process, so that a test can hold the
 * replica's store where a separate process would not let it.
 */
import t from 'tap';
import { freePort } from './helpers/free-port.js';
import { ADMIN, startXmlNode } from './helpers/xml-node.js';
import { until } from './helpers/wait.js';

t.test("a replica turns read-only when its master's connection closes, while that link's apply is still running", async (t) => {
  const port = await freePort();
  const master = await startXmlNode(t, { httpPort: port, clusterSecret: 'in-process-cluster-secret', heartbeat: 200, linkTimeout: 1000 });
  const res = await fetch(`${master.url}/api/replicas`, { method: 'POST', headers: { authorization: ADMIN, 'content-type': 'application/json' }, body: JSON.stringify({ name: 'r1' }) });
  const { credential } = (await res.json()) as { credential: string };
  const replica = await startXmlNode(t, { role: 'replica', masters: [`ws://127.0.0.1:${port}/sync`], replicaCredential: credential, heartbeat: 200, linkTimeout: 1000 });
  t.ok(await until(() => replica.status().mode === 'read-write', 10_000), 'writable with its master');

  // the next apply on the replica waits until the test lets it go: the link's queue is busy
  let release!: () => void;
  const held = new Promise<void>((r) => (release = r));
  let holding = false;
  const apply = replica.store.applyRemoteStaged.bind(replica.store);
  replica.store.applyRemoteStaged = async (...args) => {
    holding = true;
    await held;
    return apply(...args);
  };
  t.teardown(() => release());
  await master.store.create('Organisation', { name: 'Held', kind: 'vendor' });
  t.ok(await until(() => holding, 5000), "the replica's apply of it is held");

  await master.stop();
  t.ok(await until(() => replica.status().mode === 'read-only', 2000), 'read-only at once, though the apply still runs');
  t.match(replica.status().modeReason ?? '', /it lost master/);
  t.notOk(
    replica.status().peers.some((p) => p.state === 'live' || p.state === 'catching-up'),
    `and status shows no session with it meanwhile (${JSON.stringify(replica.status().peers.map((p) => p.state))})`,
  );
  const refused = await fetch(`${replica.url}/api/objects`, { method: 'POST', headers: { authorization: ADMIN, 'content-type': 'application/json' }, body: JSON.stringify({ type: 'Organisation', fields: { name: 'After', kind: 'vendor' } }) });
  t.equal(refused.status, 503, 'a write is refused as read-only, not sent to the closed link');
  release();
});

t.test('a master cloned after credentials were issued knows them (they came as states, with no feed entry)', async (t) => {
  const SECRET = 'in-process-cluster-secret';
  const [p1, p2] = [await freePort(), await freePort()];
  const m1 = await startXmlNode(t, { httpPort: p1, clusterSecret: SECRET, heartbeat: 200, linkTimeout: 1000 });
  const res = await fetch(`${m1.url}/api/replicas`, { method: 'POST', headers: { authorization: ADMIN, 'content-type': 'application/json' }, body: JSON.stringify({ name: 'laptop' }) });
  const { credential } = (await res.json()) as { credential: string };
  // m2 is new: it clones m1's objects, the credential among them
  const m2 = await startXmlNode(t, { httpPort: p2, clusterSecret: SECRET, heartbeat: 200, linkTimeout: 1000, peers: [`ws://127.0.0.1:${p1}/sync`] });
  t.ok(await until(async () => (await m2.store.get('replica.laptop')) !== undefined, 10_000), 'm2 cloned the credential');
  const replica = await startXmlNode(t, { role: 'replica', masters: [`ws://127.0.0.1:${p2}/sync`], replicaCredential: credential, heartbeat: 200, linkTimeout: 1000 });
  t.ok(await until(() => replica.status().mode === 'read-write', 10_000), `a replica issued before m2 joined is let in by m2 (${replica.status().modeReason ?? ''})`);
});
