/**
 * Idempotency keys travel with the change they made: a write sent again to
 * another master (a replica failing over after its answer was lost) is
 * answered from the record there, not made twice.
 */
import t from 'tap';
import { Store } from '@meridian/store';
import type { WriteFrame } from '@meridian/sync';
import { AdminAuth } from '../packages/node/dist/admin-auth.js';
import { ForwardedWrites } from '../packages/node/dist/forwarding.js';
import { Principals } from '../packages/node/dist/principals.js';
import { crmSchema, TEST_COST } from './helpers/schema.js';
import { tempDir } from './helpers/tmp.js';
import { freePort } from './helpers/free-port.js';
import { until } from './helpers/wait.js';
import { ADMIN, basic, call, PERSON_PW, seed, startXmlNode } from './helpers/xml-node.js';

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
  // (b shows a peer's change before its own fsync; lastSeq is what is on its disk)
  t.ok(await until(() => b.store.covers(a.store.versionVector()) && b.store.lastSeq === 1), 'the change reached b');
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
  const keys = ['api/admin/order-7', 'api/admin/xml-7'];
  const end = node.store.expectIdempotency(keys);
  // The run ends without the records (cut short) once both writes wait for them: the wait ends, and the key's
  // write may have been made or not. (idempotent() is waiting when its call returns; at a fixed 100 ms, a write
  // slowed by a loaded machine came after the end, and was made.)
  const store = node.store;
  const idempotent = store.idempotent.bind(store);
  const asked = new Set<string>();
  store.idempotent = (key) => {
    const answer = idempotent(key);
    asked.add(key);
    if (keys.every((k) => asked.has(k))) setImmediate(end);
    return answer;
  };
  const seq = node.store.lastSeq;
  const sent = performance.now();
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
  // (else the answers are the wait's own end, 5 s on, and the run cut short is not what ended it)
  t.same([...asked].sort(), [...keys].sort(), 'both writes looked for their records, and the run ended once they did');
  t.ok(performance.now() - sent < 4000, 'answered when the run ended, not when the wait gave up');
});

t.test("a forwarded write that changed its signer's own password, sent again with the old one, is answered from its first copy's record", async (t) => {
  const store = await Store.open({ dir: tempDir(t), schema: crmSchema, passwordCost: TEST_COST });
  t.teardown(() => store.close());
  const org = await store.create('Organisation', { name: 'Acme', kind: 'customer' });
  const person = await store.create('Person', { cn: 'Ada', sn: 'Lovelace', uid: 'ada', organisation: org.id, roles: ['customer-contact'], password: 'old-password-1' });
  const writes = new ForwardedWrites(store, new Principals(store, await AdminAuth.init(store, 'admin-pw')));
  const frame: WriteFrame = { t: 'write', key: 'pw-1', op: 'update', id: person.id, fields: { password: 'new-password-2' }, user: 'ada', password: 'old-password-1', via: 'ldap' };
  const first = await writes.handle(frame, 'laptop-1', 'laptop-1');
  t.match(first, { ok: true, id: person.id }, 'the change is made');
  const madeAt = store.lastSeq;
  // its answer was lost: the replica sends the frame it kept, with the password the change replaced
  const again = await writes.handle(frame, 'laptop-1', 'laptop-1');
  t.same(again, first, 'answered as the first copy was, not refused as a wrong password');
  t.equal(store.lastSeq, madeAt, 'and made once');
  // the new password in the fields signs in only to be answered from a record: a copy never made is refused
  const unmade = await writes.handle({ ...frame, key: 'pw-2', fields: { password: 'new-password-2', title: 'Countess' } }, 'laptop-1', 'laptop-1');
  t.match(unmade, { ok: false, code: 'unauthorized' });
  t.equal((await store.get(person.id))!.fields['title'], undefined);
  // nor for a write of another's entry: bob (staff) set ada's password to his own under a key, made; its
  // copy signed with a wrong password and his password in the fields signs in as bob, not as ada's entry's owner
  await store.create('Person', { cn: 'Bob', sn: 'B', uid: 'bob', organisation: org.id, roles: ['staff'], password: 'bobs-password' });
  const bobs = { ...frame, key: 'pw-3', user: 'bob', password: 'bobs-password', fields: { password: 'bobs-password' } };
  t.match(await writes.handle(bobs, 'laptop-1', 'laptop-1'), { ok: true }, "bob's write is made");
  t.match(await writes.handle({ ...bobs, password: 'wrong' }, 'laptop-1', 'laptop-1'), { ok: false, code: 'unauthorized' }, 'and a copy with a wrong password is refused');
});

t.test("a forwarded write that changed the name its signer signs in with, sent again under the old name, is answered from its first copy's record", async (t) => {
  const store = await Store.open({ dir: tempDir(t), schema: crmSchema, passwordCost: TEST_COST });
  t.teardown(() => store.close());
  const org = await store.create('Organisation', { name: 'Acme', kind: 'customer' });
  const person = await store.create('Person', { cn: 'Ada', sn: 'Lovelace', uid: 'ada', mail: ['ada@old.example'], organisation: org.id, roles: ['customer-contact'], password: 'old-password-1' });
  const writes = new ForwardedWrites(store, new Principals(store, await AdminAuth.init(store, 'admin-pw')));
  const cases: [string, WriteFrame][] = [
    ['the mail signed in with', { t: 'write', key: 'mail-1', op: 'update', id: person.id, fields: { mail: ['ada@new.example'] }, user: 'ada@old.example', password: 'old-password-1', via: 'xml' }],
    // (a person may not change their uid: the mail again, after the first case, with the password)
    ['the mail, and the password with it', { t: 'write', key: 'mail-2', op: 'update', id: person.id, fields: { mail: ['ada@newer.example'], password: 'new-password-2' }, user: 'ada@new.example', password: 'old-password-1', via: 'ldap' }],
  ];
  for (const [what, frame] of cases) {
    const first = await writes.handle(frame, 'laptop-1', 'laptop-1');
    t.match(first, { ok: true, id: person.id }, `${what}: made`);
    const madeAt = store.lastSeq;
    // its answer was lost: the replica sends the frame it kept, whose name is no one's now
    t.same(await writes.handle(frame, 'laptop-1', 'laptop-1'), first, `${what}: the copy sent again is answered as the first was, not refused as a wrong password`);
    t.equal(store.lastSeq, madeAt, `${what}: and made once`);
    // (the password a copy sets signs it in as the one it carries does: both guessed)
    const guessed = 'password' in frame.fields! ? { ...frame.fields, password: 'another guess' } : frame.fields;
    t.match(await writes.handle({ ...frame, password: 'a guess', fields: guessed }, 'laptop-1', 'laptop-1'), { ok: false, code: 'unauthorized' }, `${what}: a copy with a wrong password is refused`);
    t.match(await writes.handle({ ...frame, key: `${frame.key}-unmade`, fields: { title: 'Countess' } }, 'laptop-1', 'laptop-1'), { ok: false, code: 'unauthorized' }, `${what}: a write never made under the old name is refused`);
  }
  t.equal((await store.get(person.id))!.fields['title'], undefined);
  // a record still on its way with a peer's run of states: busy (the replica sends it again shortly), not 401
  const { MeridianError } = await import('@meridian/store');
  const idempotent = store.idempotent.bind(store);
  store.idempotent = async () => {
    throw new MeridianError('busy', 'the record of this key is still arriving; send the write again shortly');
  };
  t.match(await writes.handle(cases[0]![1], 'laptop-1', 'laptop-1'), { ok: false, code: 'busy' });
  store.idempotent = idempotent;
});

t.test("a forwarded write whose session ended before it was made is not made: the replica sends it again elsewhere, and a master that ran again after a stop read it late", async (t) => {
  const store = await Store.open({ dir: tempDir(t), schema: crmSchema, passwordCost: TEST_COST });
  t.teardown(() => store.close());
  const org = await store.create('Organisation', { name: 'Acme', kind: 'customer' });
  const writes = new ForwardedWrites(store, new Principals(store, await AdminAuth.init(store, 'admin-pw')));
  const frame: WriteFrame = { t: 'write', key: 'late-1', op: 'update', id: org.id, fields: { name: 'Value 1' }, user: 'admin', password: 'admin-pw', via: 'xml' };
  const before = store.lastSeq;
  const late = await writes.handle(frame, 'laptop-1', 'laptop-1', () => false);
  t.match(late, { ok: false, code: 'busy' });
  t.match((late as { message: string }).message, /the session it came by ended first; the replica sends it again/);
  t.equal(store.lastSeq, before, 'nothing made');
  t.equal((await store.get(org.id))!.fields['name'], 'Acme');
  // the copy the replica sends on a live session is made, once
  t.match(await writes.handle(frame, 'laptop-1', 'laptop-1', () => true), { ok: true, id: org.id });
  t.match(await writes.handle(frame, 'laptop-1', 'laptop-1', () => false), { ok: true, id: org.id }, 'and a late copy after it is answered from its record (nothing is made either way)');
  t.equal(store.lastSeq, before + 1);
  // a copy sent again on a new session while the first, whose session has ended, still runs: not given the
  // first's answer (busy, nothing made) but judged afresh once it is done, and made
  let alive = true;
  const again: WriteFrame = { ...frame, key: 'late-2', fields: { name: 'Value 2' } };
  const dead = writes.handle(again, 'laptop-1', 'laptop-1', () => alive);
  alive = false;
  const resent = writes.handle(again, 'laptop-1', 'laptop-1', () => true);
  t.match(await dead, { ok: false, code: 'busy' }, 'the copy of the ended session is not made');
  t.match(await resent, { ok: true, id: org.id }, 'the one sent again is');
  t.equal((await store.get(org.id))!.fields['name'], 'Value 2');
  t.equal(store.lastSeq, before + 2, 'once');
});

t.test('a key sent again with another write is refused, and a write answered from its key shows its object only to a user who may read it now', async (t) => {
  const node = await startXmlNode(t, { nodeId: 'a' });
  await seed(node);
  const radmin = basic('radmin', PERSON_PW);
  const post = (type: string, body: string, key: string, auth = radmin) =>
    call(node, 'POST', `/objects/${type}`, { auth, body, headers: { 'content-type': 'application/xml', 'idempotency-key': key } });
  const personXml = '<object type="Person"><field name="cn">Key Person</field><field name="sn">Person</field><field name="organisation">org-c1</field></object>';
  const hostXml = '<object type="Host"><field name="customer">org-c1</field><field name="hostname">k.c1.example</field></object>';
  const made = await post('Person', personXml, 'k-1');
  t.equal(made.status, 201, 'the reseller admin creates a person of its customer');
  const id = /id="([^"]+)"/.exec(made.text)![1]!;
  t.equal((await post('Person', personXml, 'k-1')).status, 201, 'the same create sent again is answered with it');
  const other = await post('Host', hostXml, 'k-1');
  t.equal(other.status, 400, 'a create of another type under the key is refused');
  t.match(other.text, /this Idempotency-Key was used for another write; send a new key with a new request/);
  t.notMatch(other.text, new RegExp(id), 'and shows nothing of what the key made');
  // a PUT /me under a key, then a create the same user may make under it: refused, not answered with the person
  const me = await call(node, 'PUT', '/me', { auth: radmin, body: '<object type="Person"><field name="cn">Reseller Admin</field><field name="sn">radmin</field></object>', headers: { 'content-type': 'application/xml', 'if-match': '*', 'idempotency-key': 'k-2' } });
  t.equal(me.status, 200, me.text);
  const meAgain = await post('Host', hostXml, 'k-2');
  t.equal(meAgain.status, 400, 'a create under the key of a PUT /me is refused');
  t.notMatch(meAgain.text, /per-radmin|Reseller Admin/, 'and shows nothing of the person');
  t.equal((await node.store.list('Host')).items.filter((o) => o.fields['hostname'] === 'k.c1.example').length, 0, 'nor makes the host');
  // the customer moves to another reseller: the person the key made leaves what the reseller admin may read
  await node.store.create('Organisation', { name: 'Reseller S', kind: 'reseller' }, { principal: 'test', id: 'org-s' });
  await node.store.create('Organisation', { name: 'Customer Three', kind: 'customer', reseller: 'org-r' }, { principal: 'test', id: 'org-c3' });
  await node.store.update('org-c1', { reseller: 'org-s' }, { principal: 'test' });
  t.equal((await call(node, 'GET', `/objects/Person/${id}`, { auth: radmin })).status, 404, 'the reseller admin may no longer read it');
  // a create of a Person the reseller admin may make, under the key that made the one it may no longer read
  const late = await post('Person', personXml.replace('org-c1', 'org-c3'), 'k-1');
  t.equal(late.status, 201, 'is answered as made, as it was');
  t.equal(late.text, '', 'but with no body: nothing of that person');
  t.equal(late.headers.get('etag'), null);
  t.equal((await node.store.list('Person')).items.filter((o) => o.fields['cn'] === 'Key Person').length, 1, 'nothing was made twice');
});

t.test('a forwarded write under a key its user first used for another write is refused by the master', async (t) => {
  const store = await Store.open({ dir: tempDir(t), schema: crmSchema, passwordCost: TEST_COST });
  t.teardown(() => store.close());
  const org = await store.create('Organisation', { name: 'Acme', kind: 'customer' });
  const writes = new ForwardedWrites(store, new Principals(store, await AdminAuth.init(store, 'admin-pw')));
  const admin = { user: 'admin', password: 'admin-pw', via: 'xml' as const };
  const first = await writes.handle({ t: 'write', key: 'k-9', op: 'update', id: org.id, fields: { street: 'Main 1' }, ...admin }, 'laptop-1', 'laptop-1');
  t.match(first, { ok: true, id: org.id });
  const again = await writes.handle({ t: 'write', key: 'k-9', op: 'update', id: org.id, fields: { street: 'Main 1' }, ...admin }, 'laptop-1', 'laptop-1');
  t.same(again, first, 'the same write sent again is answered from its record');
  const other = await writes.handle({ t: 'write', key: 'k-9', op: 'create', type: 'Organisation', id: 'org-other', fields: { name: 'Other', kind: 'customer' }, ...admin }, 'laptop-1', 'laptop-1');
  t.match(other, { ok: false, code: 'bad-request', message: /^this Idempotency-Key was used for another write/ }, 'a create under it is refused, not answered with the organisation updated');
  t.equal(await store.get('org-other'), undefined);
});
