/**
 * Idempotency keys travel with the change they made: a write sent again to
 * another master (a replica failing over after its answer was lost) is
 * answered from the record there, not made twice.
 */
import t from 'tap';
import { freePort } from './helpers/free-port.js';
import { until } from './helpers/wait.js';
import { ADMIN, startXmlNode } from './helpers/xml-node.js';

t.test('a keyed write made on one master is answered from its key on another, once the change has reached it', async (t) => {
  const [pa, pb] = [await freePort(), await freePort()];
  const secret = 'idempotency-test-secret';
  const a = await startXmlNode(t, { nodeId: 'a', httpPort: pa, clusterSecret: secret, peers: [`ws://127.0.0.1:${pb}/sync`] });
  const b = await startXmlNode(t, { nodeId: 'b', httpPort: pb, clusterSecret: secret, peers: [`ws://127.0.0.1:${pa}/sync`] });
  const post = (url: string) =>
    fetch(`${url}/api/objects`, {
      method: 'POST',
      headers: { authorization: ADMIN, 'content-type': 'application/json', 'idempotency-key': 'order-42' },
      body: JSON.stringify({ type: 'Organisation', fields: { name: 'Once Only', kind: 'customer' } }),
    }).then(async (r) => ({ status: r.status, body: (await r.json()) as { id: string } }));
  const first = await post(a.url);
  t.equal(first.status, 201);
  t.ok(await until(() => b.store.covers(a.store.versionVector())), 'the change reached b');
  const record = await b.store.idempotent('api/admin/order-42');
  t.match(record, { id: first.body.id, origin: 'a', originSeq: 1 }, 'b recorded the key with the change it applied');
  const again = await post(b.url);
  t.equal(again.status, 201);
  t.equal(again.body.id, first.body.id, 'b answers with the object a made');
  t.equal(b.store.lastSeq, 1, 'and makes nothing');
  const feed = await a.store.readFeed(0, 10);
  t.equal(feed[0]?.idempotencyKey, 'api/admin/order-42', 'the key is in the feed entry');
});

// (the run is stood in for by expectIdempotency, as the sync driver calls it: that a real run does so is
// packages/sync/test/anti-entropy.test.ts's; this is how the node answers then)
t.test("a keyed write whose record another master's run is still bringing is answered 503 busy with Retry-After, on the admin API and the XML gateway, and makes nothing", async (t) => {
  const node = await startXmlNode(t, { nodeId: 'a' });
  const end = node.store.expectIdempotency(['api/admin/order-7', 'api/admin/xml-7']);
  // the run ends without the records (cut short): the wait ends, and the key's write may have been made or not
  setTimeout(end, 100);
  const seq = node.store.lastSeq;
  const [api, xml] = await Promise.all([
    fetch(`${node.url}/api/objects`, {
      method: 'POST',
      headers: { authorization: ADMIN, 'content-type': 'application/json', 'idempotency-key': 'order-7' },
      body: JSON.stringify({ type: 'Organisation', fields: { name: 'Maybe Twice', kind: 'customer' } }),
    }),
    fetch(`${node.url}/objects/Organisation`, {
      method: 'POST',
      headers: { authorization: ADMIN, 'content-type': 'application/xml', 'idempotency-key': 'xml-7' },
      body: '<object type="Organisation"><field name="name">Maybe Twice</field><field name="kind">customer</field></object>',
    }),
  ]);
  t.equal(api.status, 503);
  t.equal(api.headers.get('retry-after'), '1');
  t.match(await api.json(), { error: { code: 'busy', message: 'the first copy of this write was made on another master, and its record is still on its way here; send the write again in a few seconds' } });
  t.equal(xml.status, 503);
  t.equal(xml.headers.get('retry-after'), '1');
  t.match(await xml.text(), /<error code="busy">the first copy of this write was made on another master/);
  t.equal(node.store.lastSeq, seq, 'nothing was made');
});
