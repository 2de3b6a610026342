/**
 * The XML gateway over real HTTP (Node's fetch, and curl as a real client):
 * objects with ETags and preconditions, lists, the website's /me flow,
 * every access rule, bad input, export/import validated by xmllint, and
 * the changes feed carrying a write made on another master.
 */
import { createHash } from 'node:crypto';
import { spawn, spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { DEFAULT_SCHEMA } from '@meridian/node';
import type { Worker } from 'node:worker_threads';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import t, { type Test } from 'tap';
import * as Y from 'yjs';
import { freePort } from './helpers/free-port.js';
import { tempDir } from './helpers/tmp.js';
import { sleep, until } from './helpers/wait.js';
import { ADMIN, basic, call, etagOf, fieldValues, idsIn, PERSON_PW, seed, startXmlNode } from './helpers/xml-node.js';

const XSD = fileURLToPath(new URL('../docs/formats/meridian.xsd', import.meta.url));
const person = (uid: string): string => basic(uid, PERSON_PW);
/** a position of a node's changes feed, as its answers give them out */
const at = (node: { store: { feedTag: string; statesEpoch: number } }, seq: number): string => `${node.store.feedTag}-${node.store.statesEpoch}-${seq}`;

const orgXml = (fields: Record<string, string | string[]>, attrs = ''): string =>
  `<?xml version="1.0"?>\n<object type="Organisation"${attrs}>\n${Object.entries(fields)
    .flatMap(([k, v]) => (Array.isArray(v) ? v : [v]).map((x) => `  <field name="${k}">${x}</field>`))
    .join('\n')}\n</object>\n`;

function xmllint(t: Test, text: string, what: string): void {
  const file = join(tempDir(t), 'doc.xml');
  writeFileSync(file, text);
  const r = spawnSync('xmllint', ['--noout', '--schema', XSD, file], { encoding: 'utf8' });
  t.equal(r.status, 0, `${what} validates against meridian.xsd: ${r.stderr.trim()}`);
}

t.test('objects: GET with ETag and 304, PUT with If-Match (428, 412), POST, PUT to create, DELETE; values round-trip as stored', async (t) => {
  const node = await startXmlNode(t);
  await seed(node);
  const got = await call(node, 'GET', '/objects/Organisation/org-c1');
  t.equal(got.status, 200);
  t.equal(got.headers.get('content-type'), 'application/xml; charset=utf-8');
  const v1 = etagOf(got);
  t.match(got.headers.get('etag'), /^"[^"]+"$/, 'a strong ETag');
  t.same(fieldValues(got.text, 'postalCode'), ['0049'], 'a postcode with a leading zero stays as stored');
  xmllint(t, got.text, 'an object');
  t.equal((await call(node, 'GET', '/objects/Organisation/org-c1', { headers: { 'if-none-match': `"${v1}"` } })).status, 304, 'If-None-Match with the ETag: 304');
  const head = await call(node, 'HEAD', '/objects/Organisation/org-c1');
  t.equal(head.status, 200);
  t.equal(head.text, '');
  t.equal(etagOf(head), v1);

  const body = orgXml({ name: 'Customer One', kind: 'customer', reseller: 'org-r', postalCode: '0049', telephoneNumber: ['+27 021 555', '  spaced  '], description: 'a &amp; &lt;b&gt; "q"' });
  const noMatch = await call(node, 'PUT', '/objects/Organisation/org-c1', { body });
  t.equal(noMatch.status, 428, 'PUT of an existing object without If-Match');
  t.match(noMatch.text, /send If-Match with its ETag/);
  const put = await call(node, 'PUT', '/objects/Organisation/org-c1', { body, headers: { 'if-match': `"${v1}"` } });
  t.equal(put.status, 200, put.text);
  const v2 = etagOf(put);
  t.not(v2, v1);
  const stale = await call(node, 'PUT', '/objects/Organisation/org-c1', { body, headers: { 'if-match': `"${v1}"` } });
  t.equal(stale.status, 412, 'a stale If-Match');
  t.match(stale.text, /<error code="precondition-failed">Organisation org-c1 changed since you read it/);
  const after = await call(node, 'GET', '/objects/Organisation/org-c1');
  t.same(fieldValues(after.text, 'telephoneNumber'), ['+27 021 555', '  spaced  '], 'phone numbers and spaces unchanged, multi-valued in order');
  t.same(fieldValues(after.text, 'description'), ['a & <b> "q"']);
  const stored = await node.store.get('org-c1');
  t.equal(stored?.fields['description'], 'a & <b> "q"', 'stored as the text, not the markup');
  // PUT is the full representation: a field left out is removed
  const put2 = await call(node, 'PUT', '/objects/Organisation/org-c1', { body: orgXml({ name: 'Customer One', kind: 'customer', reseller: 'org-r' }), headers: { 'if-match': `"${v2}"` } });
  t.equal(put2.status, 200);
  t.same(fieldValues(put2.text, 'postalCode'), [], 'postalCode left out: removed');

  const created = await call(node, 'POST', '/objects/Organisation', { body: orgXml({ name: 'New Co', kind: 'customer' }) });
  t.equal(created.status, 201);
  const loc = created.headers.get('location')!;
  t.match(loc, /^\/objects\/Organisation\/org-[0-9a-z]{12}$/);
  t.equal((await call(node, 'GET', loc)).status, 200, 'Location names the new object');
  t.equal((await call(node, 'POST', '/objects/Organisation', { body: orgXml({ name: 'X', kind: 'customer' }, ' id="chosen"') })).status, 400, 'POST with an id');
  const keyed = { 'idempotency-key': 'create-once-1' };
  const first = await call(node, 'POST', '/objects/Organisation', { body: orgXml({ name: 'Keyed', kind: 'customer' }), headers: keyed });
  const second = await call(node, 'POST', '/objects/Organisation', { body: orgXml({ name: 'Keyed', kind: 'customer' }), headers: keyed });
  t.equal(second.status, 201);
  t.equal(second.headers.get('location'), first.headers.get('location'), 'a POST sent again with its Idempotency-Key is answered with the first object');
  const other = await call(node, 'POST', '/objects/Organisation', { auth: basic('staff1', PERSON_PW), body: orgXml({ name: 'Keyed', kind: 'customer' }), headers: keyed });
  t.equal(other.status, 201, 'another user with the same key makes its own write');
  t.not(other.headers.get('location'), first.headers.get('location'), 'another user\'s same key is another write');

  const noStar = await call(node, 'PUT', '/objects/Organisation/org-chosen', { body: orgXml({ name: 'Chosen', kind: 'vendor' }) });
  t.equal(noStar.status, 428, 'PUT of a new id without If-None-Match: *');
  const star = await call(node, 'PUT', '/objects/Organisation/org-chosen', { body: orgXml({ name: 'Chosen', kind: 'vendor' }), headers: { 'if-none-match': '*' } });
  t.equal(star.status, 201);
  const again = await call(node, 'PUT', '/objects/Organisation/org-chosen', { body: orgXml({ name: 'Chosen', kind: 'vendor' }), headers: { 'if-none-match': '*' } });
  t.equal(again.status, 412, 'If-None-Match: * on an existing object: a create that lost, a failed precondition');
  t.match(again.text, /exists; If-None-Match: \* only creates/);
  const lost = await call(node, 'PUT', '/objects/Organisation/org-never', { body: orgXml({ name: 'Never', kind: 'vendor' }), headers: { 'if-match': '"abc"' } });
  t.equal(lost.status, 412, 'If-Match on an id that does not exist fails');
  t.match(lost.text, /does not exist, so it cannot match If-Match/);
  t.equal((await call(node, 'PUT', '/objects/Organisation/org-never', { body: orgXml({ name: 'Never', kind: 'vendor' }), headers: { 'if-match': '*' } })).status, 412, 'If-Match: * too');
  t.equal((await call(node, 'GET', '/objects/Organisation/org-never')).status, 404, 'and nothing was made');

  t.equal((await call(node, 'DELETE', '/objects/Organisation/org-chosen')).status, 428, 'DELETE without If-Match');
  t.equal((await call(node, 'DELETE', '/objects/Organisation/org-chosen', { headers: { 'if-match': '"nope"' } })).status, 412);
  const del = await call(node, 'DELETE', '/objects/Organisation/org-chosen', { headers: { 'if-match': `"${etagOf(star)}"` } });
  t.equal(del.status, 204);
  t.equal((await call(node, 'GET', '/objects/Organisation/org-chosen')).status, 404, 'gone after DELETE');
  t.equal((await call(node, 'GET', '/objects/Person/org-c1')).status, 404, 'an id under the wrong type is not found');
});

/** Runs a command without blocking this process (the node under test lives in it). */
function run(cmd: string, args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const p = spawn(cmd, args);
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    p.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

t.test('curl as a real client: GET, then PUT back what it got with If-Match', async (t) => {
  const node = await startXmlNode(t);
  await seed(node);
  const dir = tempDir(t);
  const file = join(dir, 'o.xml');
  const get = await run('curl', ['-s', '--max-time', '10', '-D', '-', '-o', file, '-u', 'admin:xml-admin-pw', `${node.url}/objects/Organisation/org-c2`]);
  t.equal(get.code, 0);
  const etag = /etag: ("[^"]+")/i.exec(get.stdout)![1]!;
  const put = (match: string) => run('curl', ['-s', '--max-time', '10', '-w', '%{http_code}', '-o', '/dev/null', '-X', 'PUT', '-u', 'admin:xml-admin-pw', '-H', 'Content-Type: application/xml', '-H', `If-Match: ${match}`, '--data-binary', `@${file}`, `${node.url}/objects/Organisation/org-c2`]);
  t.equal((await put(etag)).stdout, '200', 'what GET returned is a valid PUT body');
  t.equal((await put('"old"')).stdout, '412', 'and the same with a stale ETag is refused');
});

t.test('lists: indexed filters, q, limit and an opaque cursor', async (t) => {
  const node = await startXmlNode(t);
  await seed(node);
  for (let i = 0; i < 25; i++) await node.store.create('Host', { customer: 'org-c2', hostname: `web${i}.c2.example`, os: i % 2 ? 'linux' : 'BSD' });
  const byCustomer = await call(node, 'GET', '/objects/Host?customer=org-c2&limit=10');
  t.equal(idsIn(byCustomer.text).length, 10);
  const next = /next="([^"]+)"/.exec(byCustomer.text)![1]!;
  const all = new Set(idsIn(byCustomer.text));
  let cursor: string | undefined = next;
  while (cursor) {
    const page = await call(node, 'GET', `/objects/Host?customer=org-c2&limit=10&cursor=${cursor}`);
    for (const id of idsIn(page.text)) all.add(id);
    cursor = /next="([^"]+)"/.exec(page.text)?.[1];
  }
  t.equal(all.size, 25, 'paging with the cursor reaches every host of the customer once');
  // sealed: a list that scans objects its caller may not read resumes after one of them, whose id it must not tell
  t.notMatch(Buffer.from(next, 'base64url').toString('latin1'), /hst-/, 'the cursor does not show the id it resumes after');
  const forged = Buffer.from(idsIn(byCustomer.text).at(-1)!, 'utf8').toString('base64url');
  t.equal((await call(node, 'GET', `/objects/Host?customer=org-c2&limit=10&cursor=${forged}`)).status, 400, 'an id in the clear is not a cursor');
  const bytes = Buffer.from(next, 'base64url');
  bytes[bytes.length - 20] ^= 1;
  const tampered = bytes.toString('base64url');
  t.equal((await call(node, 'GET', `/objects/Host?customer=org-c2&limit=10&cursor=${tampered}`)).status, 400, 'nor a changed one');
  const q = await call(node, 'GET', '/objects/Host?q=BSD');
  t.equal(idsIn(q.text).length, 13, 'q matches case-insensitively in any field');
  t.equal(idsIn((await call(node, 'GET', `/objects/Host?q=${encodeURIComponent('ｂｓｄ')}`)).text).length, 13, 'and in full-width letters, folded as the indexes fold');
  const both = await call(node, 'GET', '/objects/Host?customer=org-c2&os=linux');
  t.equal(idsIn(both.text).length, 12, 'a further equality filter on an unindexed field');
  xmllint(t, both.text, 'a list');
  // seats is not indexed: the gateway checks it on each object, folding the filter as a write stores it
  t.same(idsIn((await call(node, 'GET', '/objects/License?customer=org-c1&seats=010')).text), ['lic-c1'], 'seats=010 finds the integer 10');
  t.same(idsIn((await call(node, 'GET', '/objects/License?customer=org-c1&seats=11')).text), [], 'and seats=11 does not');
  t.same(idsIn((await call(node, 'GET', `/objects/License?customer=org-c1&seats=${encodeURIComponent('１０')}`)).text), ['lic-c1'], 'full-width digits find it too, as an LDAP filter does');
  t.same(idsIn((await call(node, 'GET', '/objects/License?customer=org-c1&seats=ten')).text), [], 'a value no write could store matches nothing');
  const bad = await call(node, 'GET', '/objects/Host?os=linux');
  t.equal(bad.status, 400, 'filters need one indexed field');
  t.match(bad.text, /filter by at least one indexed field of Host/);
  t.equal((await call(node, 'GET', '/objects/Host?nope=1')).status, 400);
  t.equal((await call(node, 'GET', '/objects/Host?cursor=%%%')).status, 400);
  t.equal((await call(node, 'GET', '/objects/Nope')).status, 404);
});

// (that a decoy check costs what a wrong password does is the store's test: validation.test.ts)
t.test('a sign-in for a name that is no one, for a person with no password, or against an {SSHA} hash spends one decoy password check', async (t) => {
  const node = await startXmlNode(t);
  await seed(node);
  await node.store.create('Person', { cn: 'No Password', sn: 'np', uid: 'nopw', organisation: 'org-c1' }, { id: 'per-nopw' });
  let decoys = 0;
  const decoy = node.store.decoyPasswordCheck.bind(node.store);
  node.store.decoyPasswordCheck = async (pw: string) => {
    decoys++;
    return decoy(pw);
  };
  const tried = async (user: string): Promise<number> => {
    const before = decoys;
    t.equal((await call(node, 'GET', '/me', { auth: basic(user, 'a guess') })).status, 401, user);
    return decoys - before;
  };
  t.equal(await tried('nobody-at-all'), 1, 'no one: one decoy check, the time of a wrong password');
  t.equal(await tried('nopw'), 1, 'a person with no password: one decoy check');
  t.equal(await tried('contact1'), 0, 'a wrong password for someone: their own hash is checked');
  // an {SSHA} hash imported from OpenLDAP is one SHA-1: a decoy as well, so it is no quicker to refuse
  const salt = Buffer.from('salt1234');
  const ssha = `{SSHA}${Buffer.concat([createHash('sha1').update('right').update(salt).digest(), salt]).toString('base64')}`;
  await node.store.create('Person', { cn: 'Imported', sn: 'imp', uid: 'imported', organisation: 'org-c1', password: ssha }, { id: 'per-imported' });
  t.equal(await tried('imported'), 1, 'a wrong password against an {SSHA} hash: one decoy check besides');
});

t.test('the website flow: a customer contact signs in, reads /me, edits their entry and changes their password', async (t) => {
  const node = await startXmlNode(t);
  await seed(node);
  t.equal((await call(node, 'GET', '/me', { auth: null })).status, 401, 'no credentials');
  t.equal((await call(node, 'GET', '/me', { auth: basic('contact1', 'wrong') })).status, 401, 'a wrong password');
  t.equal((await call(node, 'GET', '/me', { auth: basic('contact1', '') })).status, 401, 'an empty password never authenticates');
  const me = await call(node, 'GET', '/me', { auth: person('contact1') });
  t.equal(me.status, 200);
  t.same(idsIn(me.text), ['per-c1', 'org-c1', 'lic-c1'], 'the person, their organisation and its licenses; no hosts, no colleagues');
  t.notMatch(me.text, /password/, 'the password hash is never sent');
  xmllint(t, me.text, '/me');
  t.equal((await call(node, 'GET', '/me', { auth: person('contact1@example.com') })).status, 200, 'signing in with the mail address');

  const mine = await call(node, 'GET', '/objects/Person/per-c1', { auth: person('contact1') });
  const edited = mine.text.replace('+27 021 555 0100', '+27 021 555 0199');
  const put = await call(node, 'PUT', '/me', { auth: person('contact1'), body: edited, headers: { 'if-match': `"${etagOf(mine)}"` } });
  t.equal(put.status, 200, put.text);
  t.same(fieldValues(put.text, 'telephoneNumber'), ['+27 021 555 0199']);
  const roles = put.text.replace('<field name="roles">customer-contact</field>', '<field name="roles">staff</field>');
  const escalate = await call(node, 'PUT', '/me', { auth: person('contact1'), body: roles, headers: { 'if-match': `"${etagOf(put)}"` } });
  t.equal(escalate.status, 403, 'a person cannot give themselves a role');
  t.match(escalate.text, /you may not change "roles" of your own entry/);
  const noMatch = await call(node, 'PUT', '/me', { auth: person('contact1'), body: edited });
  t.equal(noMatch.status, 428);
  const taken = await call(node, 'PUT', '/me', { auth: person('contact1'), body: put.text.replace('contact1@example.com', 'staff1@example.com'), headers: { 'if-match': `"${etagOf(put)}"` } });
  t.equal(taken.status, 422, 'a mail address someone else holds is refused');
  t.match(taken.text, /field "mail" value "staff1@example\.com" is already used by another Person</);
  t.notMatch(taken.text, /per-staff/, 'without naming whose it is, which the person may not see');

  const withPassword = put.text.replace('</object>', '  <field name="password">new-secret-9</field>\n</object>');
  const pw = await call(node, 'PUT', '/me', { auth: person('contact1'), body: withPassword, headers: { 'if-match': `"${etagOf(put)}"` } });
  t.equal(pw.status, 200, pw.text);
  t.equal((await call(node, 'GET', '/me', { auth: person('contact1') })).status, 401, 'the old password no longer works');
  t.equal((await call(node, 'GET', '/me', { auth: basic('contact1', 'new-secret-9') })).status, 200, 'the new one does');
  t.match(String((await node.store.get('per-c1'))?.fields['password']), /^\$scrypt\$/, 'stored as a salted slow hash');
  t.equal((await call(node, 'GET', '/me')).status, 404, 'the admin has no /me');
});

t.test('a sign-in remembered for a credential is the one the person record it was checked against says, not a later one', async (t) => {
  const node = await startXmlNode(t);
  await seed(node);
  const store = node.store;
  const staff = basic('staff1', PERSON_PW);
  const lookup = store.lookup.bind(store);
  let demoted = false;
  // the person is demoted just after the sign-in read them, while their password is being checked
  store.lookup = (async (...args: Parameters<typeof store.lookup>) => {
    const found = await lookup(...args);
    if (!demoted && found.items[0]?.id === 'per-staff') {
      demoted = true;
      await store.update('per-staff', { roles: ['technical-contact'] });
    }
    return found;
  }) as typeof store.lookup;
  t.teardown(() => {
    store.lookup = lookup;
  });
  t.equal((await call(node, 'GET', '/objects/Organisation/org-c2', { auth: staff })).status, 200, 'the request signed in as staff was, when it was checked');
  t.ok(demoted);
  t.equal((await call(node, 'GET', '/objects/Organisation/org-c2', { auth: staff })).status, 404, 'the next one is not: the demotion is seen');
});

t.test("history as a reseller admin reads it: no versions from while the object was another customer's, and not the values it held then", async (t) => {
  const node = await startXmlNode(t);
  await seed(node);
  const s = node.store;
  // per-c2 is a contact of customer two (direct: the reseller does not reach it) and changes there
  await s.update('per-c2', { telephoneNumber: ['+27 021 555 0999'], title: 'Buyer at Two' }, { principal: 'test' });
  await s.update('per-c2', { telephoneNumber: ['+27 021 555 0111'] }, { principal: 'test' });
  // then staff move it to customer one, which the reseller reaches, with a new title, and it changes again
  await s.update('per-c2', { organisation: 'org-c1', title: 'Buyer at One' }, { principal: 'test' });
  await s.update('per-c2', { title: 'Lead buyer' }, { principal: 'test' });
  const staff = await call(node, 'GET', '/objects/Person/per-c2/history', { auth: person('staff1') });
  t.equal(staff.status, 200);
  t.equal((staff.text.match(/<version /g) ?? []).length, 5, 'staff see all five versions');
  t.match(staff.text, /complete="true"/);
  const radmin = await call(node, 'GET', '/objects/Person/per-c2/history', { auth: person('radmin') });
  t.equal(radmin.status, 200, radmin.text);
  xmllint(t, radmin.text, 'the reseller admin\'s history');
  t.equal((radmin.text.match(/<version /g) ?? []).length, 2, 'the reseller admin sees the move and what came after');
  t.match(radmin.text, /complete="false"/);
  t.match(radmin.text, /<note>Versions from while the object was outside what you may read are left out/);
  // (what it held when it came, the reseller read from then on: only what it held before, and changed before, stays hidden)
  for (const before of ['org-c2', '+27 021 555 0999', 'Buyer at Two']) t.notOk(radmin.text.includes(before), `nothing of its time at customer two: ${before}`);
  t.match(radmin.text, /<field name="organisation">\s*<new>org-c1<\/new>\s*<\/field>/, 'the move shows where it went, not where it came from');
  t.match(radmin.text, /<field name="title">\s*<old>Buyer at One<\/old>\s*<new>Lead buyer<\/new>/, 'and the change after it whole');
  // the person's own history is their own
  const own = await call(node, 'GET', '/objects/Person/per-c2/history', { auth: person('contact2') });
  t.equal((own.text.match(/<version /g) ?? []).length, 5, 'the person sees all of their own');
});

t.test("history after a reseller takes a customer over: neither the customer's nor its contacts' versions from before", async (t) => {
  const node = await startXmlNode(t);
  await seed(node);
  const s = node.store;
  // customer two buys direct, and it and its contact change meanwhile
  await s.update('org-c2', { telephoneNumber: ['+27 021 555 0777'] }, { principal: 'test' });
  await s.update('org-c2', { telephoneNumber: ['+27 021 555 0778'] }, { principal: 'test' });
  await s.update('per-c2', { title: 'Buyer when direct' }, { principal: 'test' });
  await s.update('per-c2', { title: 'Head buyer' }, { principal: 'test' });
  // then reseller R takes it over (staff set its reseller), and both change again
  await s.update('org-c2', { reseller: 'org-r' }, { principal: 'test' });
  await s.update('org-c2', { telephoneNumber: ['+27 021 555 0779'] }, { principal: 'test' });
  await s.update('per-c2', { title: 'Buyer through R' }, { principal: 'test' });
  const radmin = { auth: person('radmin') };
  const org = await call(node, 'GET', '/objects/Organisation/org-c2/history', radmin);
  t.equal(org.status, 200, 'the reseller admin reads the customer now');
  xmllint(t, org.text, "the taken-over customer's history");
  t.equal((org.text.match(/<version /g) ?? []).length, 2, 'the takeover and the change after it');
  t.notOk(org.text.includes('0777'), 'not a phone number from before');
  t.match(org.text, /<field name="reseller">\s*<new>org-r<\/new>\s*<\/field>/, 'the takeover shows only what it set');
  t.match(org.text, /complete="false"/);
  const contact = await call(node, 'GET', '/objects/Person/per-c2/history', radmin);
  t.equal(contact.status, 200);
  t.notOk(contact.text.includes('Buyer when direct'), "nor its contact's versions from before, though the contact itself did not move");
  t.equal((contact.text.match(/<version /g) ?? []).length, 1, 'only the change since the takeover');
  t.match(contact.text, /<old>Head buyer<\/old>\s*<new>Buyer through R<\/new>/, 'whole, with what the contact held when it came');
  const staff = await call(node, 'GET', '/objects/Person/per-c2/history', { auth: person('staff1') });
  t.equal((staff.text.match(/<version /g) ?? []).length, 4, 'staff see every version');
});

t.test('access rules: staff, reseller admin, customer contact; 404 for what one may not see, 403 for what one may only see', async (t) => {
  const node = await startXmlNode(t);
  await seed(node);
  const as = (uid: string) => ({ auth: person(uid) });
  // staff: everything
  for (const path of ['/objects/Organisation/org-c2', '/objects/Product/prd-office', '/objects/Host/hst-c1', '/objects/Person/per-radmin']) {
    t.equal((await call(node, 'GET', path, as('staff1'))).status, 200, `staff reads ${path}`);
  }
  const staffEdit = await call(node, 'GET', '/objects/Organisation/org-c2', as('staff1'));
  t.equal((await call(node, 'PUT', '/objects/Organisation/org-c2', { ...as('staff1'), body: staffEdit.text.replace('Customer Two', 'Customer 2'), headers: { 'if-match': `"${etagOf(staffEdit)}"` } })).status, 200, 'staff edits');

  // reseller admin: the reseller's customers and what belongs to them
  for (const path of ['/objects/Organisation/org-c1', '/objects/Person/per-c1', '/objects/Person/per-c1b', '/objects/Host/hst-c1', '/objects/License/lic-c1']) {
    t.equal((await call(node, 'GET', path, as('radmin'))).status, 200, `the reseller admin reads ${path}`);
  }
  for (const path of ['/objects/Organisation/org-c2', '/objects/License/lic-c2', '/objects/Person/per-c2', '/objects/Person/per-staff', '/objects/Organisation/org-vendor', '/objects/Product/prd-office']) {
    t.equal((await call(node, 'GET', path, as('radmin'))).status, 404, `the reseller admin does not see ${path}`);
  }
  const customers = await call(node, 'GET', '/objects/Organisation', as('radmin'));
  t.same(idsIn(customers.text), ['org-c1'], 'lists hold only what the principal may read');
  const c1b = await call(node, 'GET', '/objects/Person/per-c1b', as('radmin'));
  t.equal((await call(node, 'PUT', '/objects/Person/per-c1b', { ...as('radmin'), body: c1b.text.replace('Person colleague1', 'Colleague One'), headers: { 'if-match': `"${etagOf(c1b)}"` } })).status, 200, 'the reseller admin edits a customer contact');
  const moved = await call(node, 'GET', '/objects/Person/per-c1b', as('radmin'));
  t.equal((await call(node, 'PUT', '/objects/Person/per-c1b', { ...as('radmin'), body: moved.text.replace('org-c1', 'org-c2'), headers: { 'if-match': `"${etagOf(moved)}"` } })).status, 403, 'but cannot move it to a customer outside its scope');
  const c1 = await call(node, 'GET', '/objects/Organisation/org-c1', as('radmin'));
  const c1put = (body: string): Promise<Reply> => call(node, 'PUT', '/objects/Organisation/org-c1', { ...as('radmin'), body, headers: { 'if-match': `"${etagOf(c1)}"` } });
  t.equal((await c1put(c1.text.replace(/<field name="reseller">org-r<\/field>/, ''))).status, 403, 'nor take its reseller out of a customer, which would move the customer out of its reach');
  t.equal((await c1put(c1.text.replace('>org-r<', '>org-vendor<'))).status, 403, 'nor give it another reseller');
  t.equal((await node.store.get('org-c1'))?.fields['reseller'], 'org-r', 'the customer is still the reseller\'s');
  t.equal((await c1put(c1.text.replace('Customer One', 'Customer 1'))).status, 200, 'it edits the customer otherwise');
  const newPerson = '<object type="Person"><field name="cn">N</field><field name="sn">N</field><field name="organisation">org-c2</field></object>';
  t.equal((await call(node, 'POST', '/objects/Person', { ...as('radmin'), body: newPerson })).status, 403, 'nor create one there');
  t.equal((await call(node, 'POST', '/objects/Person', { ...as('radmin'), body: newPerson.replace('org-c2', 'org-c1') })).status, 201, 'it may create one at its customer');
  // roles: no more than its own reach, so never staff (who sees everything)
  const withRoles = (uid: string, roles: string[]): string =>
    `<object type="Person"><field name="cn">${uid}</field><field name="sn">N</field><field name="organisation">org-c1</field><field name="uid">${uid}</field><field name="password">${PERSON_PW}</field>${roles.map((r) => `<field name="roles">${r}</field>`).join('')}</object>`;
  const asStaff = await call(node, 'POST', '/objects/Person', { ...as('radmin'), body: withRoles('evil', ['customer-contact', 'staff']) });
  t.equal(asStaff.status, 403, 'the reseller admin may not make anyone staff');
  t.match(asStaff.text, /<error code="forbidden">you may not give the role "staff"/);
  t.equal((await call(node, 'GET', '/objects/Product/prd-office', as('evil'))).status, 401, 'and no such login was made');
  t.equal((await call(node, 'POST', '/objects/Person', { ...as('radmin'), body: withRoles('helper', ['customer-contact']) })).status, 201, 'it may give a role that sees less than its own');
  t.equal((await call(node, 'GET', '/objects/License/lic-c1', as('helper'))).status, 200, 'which then works');
  const promote = await call(node, 'GET', '/objects/Person/per-c1b', as('radmin'));
  const promoted = promote.text.replace('</object>', '  <field name="roles">staff</field>\n</object>');
  t.equal((await call(node, 'PUT', '/objects/Person/per-c1b', { ...as('radmin'), body: promoted, headers: { 'if-match': `"${etagOf(promote)}"` } })).status, 403, 'nor add staff to an existing contact');
  t.equal((await call(node, 'GET', '/objects/Product/prd-office', as('staff1'))).status, 200, 'staff, who hold the role, still read everything');
  // nor set an existing person's password, which would let it sign in as them
  const taken = await call(node, 'GET', '/objects/Person/per-c1b', as('radmin'));
  const withPassword = taken.text.replace('</object>', '  <field name="password">taken-over-1</field>\n</object>');
  const setPw = await call(node, 'PUT', '/objects/Person/per-c1b', { ...as('radmin'), body: withPassword, headers: { 'if-match': `"${etagOf(taken)}"` } });
  t.equal(setPw.status, 403, "the reseller admin may not set a contact's password");
  t.match(setPw.text, /you may not set the password of Person per-c1b/);
  t.equal((await call(node, 'GET', '/me', { auth: basic('colleague1', 'taken-over-1') })).status, 401, 'and no one signs in with it');
  t.equal((await call(node, 'PUT', '/objects/Person/per-c1b', { ...as('staff1'), body: withPassword, headers: { 'if-match': `"${etagOf(taken)}"` } })).status, 200, 'staff may');
  t.equal((await call(node, 'GET', '/export', as('radmin'))).status, 403, 'export is for the admin and staff');
  // writing over an object it cannot see is "not found", never "exists"
  const hidden = withRoles('other', []).replace('org-c1', 'org-c2');
  t.equal((await call(node, 'PUT', '/objects/Person/per-c2', { ...as('radmin'), body: hidden, headers: { 'if-none-match': '*' } })).status, 403, 'a create over an id it cannot see: refused as every create with a chosen id by a role that does not see everything is, not 412');
  t.equal((await call(node, 'PUT', '/objects/Person/per-c2', { ...as('radmin'), body: hidden, headers: { 'if-match': '*' } })).status, 404, 'a replace of it: 404');
  // and it edits each type its role writes at its customer
  for (const [path, field, value] of [['/objects/Organisation/org-c1', 'description', 'edited by the reseller'], ['/objects/Host/hst-c1', 'os', 'Plan 9'], ['/objects/License/lic-c1', 'modules', 'reporting']] as const) {
    const cur = await call(node, 'GET', path, as('radmin'));
    const edited = cur.text.replace('</object>', `  <field name="${field}">${value}</field>\n</object>`);
    const put = await call(node, 'PUT', path, { ...as('radmin'), body: edited, headers: { 'if-match': `"${etagOf(cur)}"` } });
    t.equal(put.status, 200, `the reseller admin edits ${path}: ${put.text.slice(0, 200)}`);
  }

  // references: to another tenant's object, refused as to a missing one, whichever id; the catalogue (a release) may be named
  await node.store.create('Host', { customer: 'org-c2', hostname: 'db.c2.example' }, { id: 'hst-c2' });
  await node.store.create('Host', { customer: 'org-c2', hostname: 'gone.c2.example' }, { id: 'hst-c2-gone' });
  await node.store.delete('hst-c2-gone');
  const license = (host: string) =>
    `<object type="License"><field name="customer">org-c1</field><field name="release">rel-office-1</field><field name="validFrom">2026-02-01</field><field name="seats">1</field><field name="host">${host}</field></object>`;
  // and the same whatever else is wrong with the request (the store checks values before references)
  for (const [what, body] of [
    ['', (host: string) => license(host)],
    [' and no seats', (host: string) => license(host).replace('<field name="seats">1</field>', '<field name="seats">-1</field>')],
    [' and no validFrom', (host: string) => license(host).replace('<field name="validFrom">2026-02-01</field>', '')],
  ] as const) {
    const refusals = [];
    for (const host of ['hst-c2', 'hst-c2-gone', 'hst-none', 'per-c2']) {
      const r = await call(node, 'POST', '/objects/License', { ...as('radmin'), body: body(host) });
      t.equal(r.status, 422, `a license on ${host}${what}: 422`);
      refusals.push(r.text.replace(host, 'HOST'));
    }
    t.equal(new Set(refusals).size, 1, `one answer for another tenant's host, a deleted one, none and a person${what}: ${refusals[0]}`);
    t.match(refusals[0], /field "host" refers to missing object HOST/);
  }
  t.equal((await call(node, 'POST', '/objects/License', { ...as('radmin'), body: license('hst-c1') })).status, 201, 'a license on its customer\'s host, of a release of the catalogue, is made');

  // a full page of a list has a next only if more it may read match: not because others it may not read do
  await node.store.create('Person', { cn: 'Smith A', sn: 'Smithers', organisation: 'org-c1' }, { id: 'per-smith-a' });
  await node.store.create('Person', { cn: 'Smith B', sn: 'Smithers', organisation: 'org-c2' }, { id: 'per-smith-b' });
  const smiths = await call(node, 'GET', '/objects/Person?sn=smithers&limit=1', as('radmin'));
  t.same(idsIn(smiths.text), ['per-smith-a']);
  t.notMatch(smiths.text, /next="/, 'no next page: the other Smithers is not the reseller admin\'s');
  await node.store.create('Person', { cn: 'Smith C', sn: 'Smithers', organisation: 'org-c1' }, { id: 'per-smith-c' });
  const two = await call(node, 'GET', '/objects/Person?sn=smithers&limit=1', as('radmin'));
  const cursor = /next="([^"]+)"/.exec(two.text)?.[1];
  t.ok(cursor, 'a next page once another it may read matches');
  const second = await call(node, 'GET', `/objects/Person?sn=smithers&limit=1&cursor=${cursor}`, as('radmin'));
  t.same(idsIn(second.text), ['per-smith-c'], 'which holds it');
  t.notMatch(second.text, /next="/);

  // customer contact: own entry, own organisation, own licenses; changes only to their own entry
  for (const path of ['/objects/Person/per-c1', '/objects/Organisation/org-c1', '/objects/License/lic-c1']) {
    t.equal((await call(node, 'GET', path, as('contact1'))).status, 200, `the contact reads ${path}`);
  }
  for (const path of ['/objects/Host/hst-c1', '/objects/Person/per-c1b', '/objects/License/lic-c2', '/objects/Organisation/org-c2', '/objects/Organisation/org-r']) {
    t.equal((await call(node, 'GET', path, as('contact1'))).status, 404, `the contact does not see ${path}`);
  }
  const org = await call(node, 'GET', '/objects/Organisation/org-c1', as('contact1'));
  const orgPut = await call(node, 'PUT', '/objects/Organisation/org-c1', { ...as('contact1'), body: org.text.replace('Customer One', 'Mine Now'), headers: { 'if-match': `"${etagOf(org)}"` } });
  t.equal(orgPut.status, 403, 'the contact may read their organisation but not change it');
  t.match(orgPut.text, /<error code="forbidden">you may not change Organisation org-c1<\/error>/);
  const lic = await call(node, 'GET', '/objects/License/lic-c1', as('contact1'));
  t.equal((await call(node, 'DELETE', '/objects/License/lic-c1', { ...as('contact1'), headers: { 'if-match': `"${etagOf(lic)}"` } })).status, 403, 'nor delete a license');
  t.equal((await call(node, 'DELETE', '/objects/Host/hst-c1', { ...as('contact1'), headers: { 'if-match': '"x"' } })).status, 404, 'what they cannot see, they cannot delete: 404');
  t.equal((await call(node, 'GET', '/changes?since=0&timeout=0', as('contact1'))).status, 403, 'the changes feed is for the admin and staff');
  t.equal((await call(node, 'GET', '/objects/MeridianReplica', as('staff1'))).status, 404, 'built-in types are not served');
});

t.test('bad input: a clear 4xx and nothing stored', async (t) => {
  const node = await startXmlNode(t, { maxBody: 4096 });
  await seed(node);
  const seq = node.store.lastSeq;
  const post = (body: string, headers: Record<string, string> = {}) => call(node, 'POST', '/objects/Organisation', { body, headers });
  const cases: [string, Promise<{ status: number; text: string }>, number, RegExp][] = [
    ['a DOCTYPE', post('<?xml version="1.0"?><!DOCTYPE object [<!ENTITY x "y">]><object type="Organisation"><field name="name">&x;</field></object>'), 400, /line 1, column 22: DOCTYPE and entity declarations are not accepted/],
    ['an external entity', post('<!DOCTYPE object SYSTEM "file:///etc/passwd"><object type="Organisation"/>'), 400, /DOCTYPE and entity declarations are not accepted/],
    ['an undeclared entity', post('<object type="Organisation"><field name="name">&bomb;</field></object>'), 400, /"&amp;" must start one of/],
    ['malformed XML', post('<object type="Organisation">\n  <field name="name">A</field>\n  <field name="kind">customer\n</object>'), 400, /malformed XML at line 4, column \d+: /],
    ['an empty body', post(''), 400, /^[^\n]*the body is empty; send an XML document whose root is &lt;object&gt;/m],
    ['text and no element', post('just words'), 400, /malformed XML at line 1(, column \d+)?: [^<]*<\/error>/],
    ['two roots', post('<object type="Organisation"/><object type="Organisation"/>'), 400, /one root element &lt;object&gt;/],
    ['a body over the limit', post(`<object type="Organisation"><field name="name">${'x'.repeat(5000)}</field></object>`), 413, /larger than the limit of 4096 bytes/],
    ['JSON', post('{"type":"Organisation"}', { 'content-type': 'application/json' }), 415, /send the body as application\/xml/],
    ['an unknown field', post('<object type="Organisation"><field name="name">A</field><field name="kind">customer</field><field name="color">red</field></object>'), 422, /field "color" is not a field of Organisation/],
    ['a schema violation', post('<object type="Organisation"><field name="name">A</field><field name="kind">martian</field></object>'), 422, /field "kind" must be one of vendor, reseller, customer/],
    ['a missing required field', post('<object type="Organisation"><field name="name">A</field></object>'), 422, /field "kind" is required/],
    ['an element name for a field', post('<object type="Organisation"><name>A</name></object>'), 400, /unexpected element &lt;name&gt; in &lt;object&gt;/],
    ['another type in the body', post('<object type="Person"><field name="cn">A</field></object>'), 409, /the body is a Person but the URL names Organisation/],
    ['not UTF-8', post('<object type="Organisation"><field name="name">\u00ff</field></object>', { 'content-type': 'application/xml; charset=latin1' }), 415, /send the body as UTF-8/],
  ];
  for (const [name, reply, status, message] of cases) {
    const r = await reply;
    t.equal(r.status, status, `${name}: ${status}`);
    t.match(r.text, message, `${name}: ${r.text.trim().split('\n').at(-1)}`);
  }
  const field = await post('<object type="Organisation"><field name="name">A</field><field name="kind">martian</field></object>');
  t.match(field.text, /<error code="validation" field="kind">/, 'the error names the field');
  t.equal(node.store.lastSeq, seq, 'nothing was stored');
  // the charset parameter by its name, not "charset=" inside another parameter's value
  for (const [i, type] of ['application/xml; profile="charset=latin1"; Charset="UTF-8"', 'application/xml; profile="a;charset=latin1"'].entries()) {
    const params = await post(`<object type="Organisation"><field name="name">Params ${i}</field><field name="kind">vendor</field></object>`, { 'content-type': type });
    t.equal(params.status, 201, `${type}: ${params.text}`);
  }
  t.equal((await post('<object type="Organisation"/>', { 'content-type': 'application/xml; profile=a;charset=latin1' })).status, 415, 'an unquoted value ends at ";": charset=latin1 is the charset');
});

t.test('export, validated by xmllint, imported into an empty node gives the same content digest; import reports per object', async (t) => {
  const a = await startXmlNode(t, { sample: true, sampleSize: 60 });
  const exported = await call(a, 'GET', '/export');
  t.equal(exported.status, 200);
  xmllint(t, exported.text, 'the export');
  const n = idsIn(exported.text).length;
  t.equal(n, Object.values(a.store.objectCounts()).reduce((x, y) => x + y, 0) - (a.store.objectCounts()['MeridianReplica'] ?? 0), 'every object');

  const b = await startXmlNode(t);
  const dry = await call(b, 'POST', '/import?dry-run=1', { body: exported.text });
  t.equal(dry.status, 200);
  t.match(dry.text, new RegExp(`<import dryRun="true" objects="${n}" created="${n}" updated="0" unchanged="0" rejected="0">`));
  t.equal(b.store.lastSeq, 0, 'a dry run writes nothing');
  const imported = await call(b, 'POST', '/import', { body: exported.text });
  t.equal(imported.status, 200);
  t.match(imported.text, new RegExp(`created="${n}" updated="0" unchanged="0" rejected="0"`));
  xmllint(t, imported.text, 'the import report');
  t.same([...new Set((await b.store.readFeed(0, 10_000)).map((e) => e.principal))], ['admin via import'], 'every change an import makes records its principal as an import');
  const digest = async (node: typeof a) => JSON.stringify((await node.store.contentDigest()).buckets);
  t.equal(await digest(b), await digest(a), 'the same content digest');
  const again = await call(b, 'POST', '/import', { body: exported.text });
  t.match(again.text, new RegExp(`created="0" updated="0" unchanged="${n}" rejected="0"`), 'importing again changes nothing');

  // out of order, with a bad object and an update
  const doc = `<?xml version="1.0"?>
<objects>
  <object type="Person" id="per-late"><field name="cn">Late</field><field name="sn">L</field><field name="organisation">org-later</field></object>
  <object type="Organisation" id="org-later"><field name="name">Later Ltd</field><field name="kind">customer</field></object>
  <object type="Organisation" id="org-bad"><field name="name">Bad</field><field name="kind">martian</field></object>
  <object type="Organisation" id="org-vendor"><field name="name">Renamed Vendor</field><field name="kind">vendor</field></object>
</objects>`;
  const mixed = await call(b, 'POST', '/import', { body: doc });
  t.match(mixed.text, /created="2" updated="1" unchanged="0" rejected="1"/, mixed.text);
  t.match(mixed.text, /<result line="3" type="Person" id="per-late" status="created"\/>/, 'a reference to an object later in the document is resolved at the end');
  t.match(mixed.text, /<result line="5" type="Organisation" id="org-bad" status="rejected" field="kind">new Organisation: field "kind" must be one of/);
  const broken = await call(b, 'POST', '/import', { body: '<objects><object type="Organisation" id="org-z1"><field name="name">Z</field><field name="kind">vendor</field></object>\n<object type="Organisation"><field name="name">' });
  t.equal(broken.status, 400);
  t.match(broken.text, /line 2, column 1: an &lt;object&gt; is not closed before the document ends; the 1 objects before it were applied/);
  t.equal((await call(b, 'POST', '/import', { body: '<!DOCTYPE objects [<!ENTITY a "b">]><objects/>' })).status, 400);
});

t.test('an import makes a chain of references given in any order: each link after the one it refers to', async (t) => {
  const node = await startXmlNode(t);
  const org = (id: string, reseller?: string) =>
    `<object type="Organisation" id="${id}"><field name="name">${id}</field><field name="kind">reseller</field>${reseller ? `<field name="reseller">${reseller}</field>` : ''}</object>`;
  // each refers to the next, the last to one at the end: all but the end are deferred, and the
  // retry round, in document order, would try org-x1 before org-x2 was there
  const doc = `<objects>\n${org('org-x1', 'org-x2')}\n${org('org-x2', 'org-x3')}\n${org('org-x3', 'org-x4')}\n${org('org-x4', 'org-end')}\n${org('org-end')}\n</objects>`;
  const dry = await call(node, 'POST', '/import?dry-run=1', { body: doc });
  t.match(dry.text, /created="5" updated="0" unchanged="0" rejected="0"/, `the dry run says so too: ${dry.text}`);
  const r = await call(node, 'POST', '/import', { body: doc });
  t.match(r.text, /created="5" updated="0" unchanged="0" rejected="0"/, r.text);
  t.equal((await node.store.get('org-x1'))?.fields['reseller'], 'org-x2');
  // a cycle cannot be made whatever the order: each is refused for the other, and the import ends
  const cycle = `<objects>\n${org('org-c1', 'org-c2')}\n${org('org-c2', 'org-c1')}\n</objects>`;
  const c = await call(node, 'POST', '/import', { body: cycle });
  t.match(c.text, /created="0" updated="0" unchanged="0" rejected="2"/, c.text);
});

t.test('an import that only sets a password stores it, in the report and the dry run as an update; one giving the stored hash again is unchanged', async (t) => {
  const node = await startXmlNode(t);
  await seed(node);
  const person = await node.store.create('Person', { cn: 'No Password', sn: 'Yet', uid: 'nopw', organisation: 'org-c1', roles: ['customer-contact'] }, { principal: 'test', id: 'per-nopw' });
  const exported = await call(node, 'GET', `/objects/Person/${person.id}`);
  const withPassword = (pw: string): string => `<objects>${exported.text.replace(/^<\?xml[^>]*\?>\s*/, '').replace('</object>', `<field name="password">${pw}</field></object>`)}</objects>`;
  const dry = await call(node, 'POST', '/import?dry-run=1', { body: withPassword('first-password-1') });
  t.match(dry.text, /updated="1" unchanged="0"/, `the dry run reports the password as a change: ${dry.text}`);
  const r = await call(node, 'POST', '/import', { body: withPassword('first-password-1') });
  t.match(r.text, /updated="1" unchanged="0" rejected="0"/, r.text);
  t.equal((await call(node, 'GET', '/me', { auth: basic('nopw', 'first-password-1') })).status, 200, 'the person signs in with the imported password');
  const hash = String((await node.store.get(person.id))!.fields['password']);
  t.match(hash, /^\$scrypt\$/);
  const again = await call(node, 'POST', '/import', { body: withPassword(hash) });
  t.match(again.text, /updated="0" unchanged="1"/, 'the stored hash given again changes nothing');
  const left = await call(node, 'POST', '/import', { body: `<objects>${exported.text.replace(/^<\?xml[^>]*\?>\s*/, '')}</objects>` });
  t.match(left.text, /updated="0" unchanged="1"/, 'nor does leaving the password out');
  t.equal((await call(node, 'GET', '/me', { auth: basic('nopw', 'first-password-1') })).status, 200, 'which keeps it');
});

t.test('an import whose object names itself as well as another (a single reference given twice) ends, with that object refused', async (t) => {
  const node = await startXmlNode(t);
  const doc =
    '<objects>\n<object type="Organisation" id="org-r"><field name="name">R</field><field name="kind">reseller</field></object>\n' +
    '<object type="Organisation" id="org-x"><field name="name">X</field><field name="kind">customer</field><field name="reseller">org-r</field><field name="reseller">org-x</field></object>\n</objects>';
  for (const path of ['/import', '/import?dry-run=1']) {
    // (it used to wait for its own write, for good: the request never ended)
    const r = await Promise.race([call(node, 'POST', path, { body: doc }), new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`${path} did not end within 10 s`)), 10_000))]);
    t.equal(r.status, 200, path);
    t.match(r.text, /rejected="1"/, r.text);
    t.match(r.text, /line="3" type="Organisation" id="org-x" status="rejected"/);
  }
});

t.test('copies of one id held back behind the first, and an object referring to them, apply in order after the reference', async (t) => {
  const node = await startXmlNode(t);
  const n = 300;
  // the first copy refers to org-rr, which comes last: it is held back, and every copy after it with it
  const copies = Array.from({ length: n }, (_, i) => `<object type="Organisation" id="org-a"><field name="name">n${i}</field><field name="kind">reseller</field>${i === 0 ? '<field name="reseller">org-rr</field>' : ''}</object>`);
  const doc =
    `<objects>\n${copies.join('\n')}\n` +
    '<object type="Organisation" id="org-b"><field name="name">B</field><field name="kind">customer</field><field name="reseller">org-a</field></object>\n' +
    '<object type="Organisation" id="org-rr"><field name="name">R</field><field name="kind">reseller</field></object>\n</objects>';
  const r = await call(node, 'POST', '/import', { body: doc });
  t.match(r.text, new RegExp(`created="3" updated="${n - 1}" unchanged="0" rejected="0"`), r.text.slice(0, 400));
  t.equal((await node.store.get('org-a'))?.fields['name'], `n${n - 1}`, 'the last copy holds');
  t.equal((await node.store.get('org-b'))?.fields['reseller'], 'org-a', 'the object referring to them is made');
});

t.test('copies of one id in a document apply in document order, the first held back for a reference or not, in a dry run as in the import', async (t) => {
  const node = await startXmlNode(t);
  const doc =
    '<objects>\n<object type="Organisation" id="org-a"><field name="name">Old</field><field name="kind">customer</field><field name="reseller">org-rr</field></object>\n' +
    '<object type="Organisation" id="org-a"><field name="name">New</field><field name="kind">customer</field></object>\n' +
    '<object type="Organisation" id="org-rr"><field name="name">R</field><field name="kind">reseller</field></object>\n</objects>';
  const dry = await call(node, 'POST', '/import?dry-run=1', { body: doc });
  t.match(dry.text, /<result line="2" type="Organisation" id="org-a" status="created"\/>\n  <result line="3" type="Organisation" id="org-a" status="updated"\/>/, `the dry run judges the second copy against the first: ${dry.text}`);
  const r = await call(node, 'POST', '/import', { body: doc });
  t.match(r.text, /<result line="2" type="Organisation" id="org-a" status="created"\/>\n  <result line="3" type="Organisation" id="org-a" status="updated"\/>/, r.text);
  t.equal((await node.store.get('org-a'))?.fields['name'], 'New', 'the later copy holds (the held-back first one was applied over it at the end)');
  t.equal((await node.store.get('org-a'))?.fields['reseller'], undefined);
  const kept = await call(node, 'POST', '/import?dry-run=1', { body: '<objects>\n<object type="Organisation" id="replica.laptop"><field name="name">X</field><field name="kind">vendor</field></object>\n</objects>' });
  t.match(kept.text, /status="rejected">object ids beginning with "replica\." are kept for replica credentials/, 'a dry run refuses the ids the import refuses');
  const same = '<objects>\n<object type="Organisation" id="org-s"><field name="name">S</field><field name="kind">vendor</field></object>\n<object type="Organisation" id="org-s"><field name="name">S</field><field name="kind">vendor</field></object>\n</objects>';
  t.match((await call(node, 'POST', '/import?dry-run=1', { body: same })).text, /created="1" updated="0" unchanged="1"/, 'an identical second copy: unchanged, as the import would say');
});

t.test('a dry run refuses references and taken values as the import does, in the same words: missing, deleted, of another type, breaking the field\'s where', async (t) => {
  const node = await startXmlNode(t);
  await seed(node);
  await node.store.create('Organisation', { name: 'Gone', kind: 'reseller' }, { id: 'org-gone' });
  await node.store.delete('org-gone');
  const org = (id: string, reseller: string): string => `<object type="Organisation" id="${id}"><field name="name">${id}</field><field name="kind">customer</field><field name="reseller">${reseller}</field></object>`;
  const doc = `<objects>\n${org('org-x', 'org-none')}\n${org('org-y', 'org-c1')}\n${org('org-z', 'org-gone')}\n${org('org-w', 'per-c1')}\n${org('org-ok', 'org-r')}\n<object type="Person" id="per-dup"><field name="cn">D</field><field name="sn">D</field><field name="uid">CONTACT1</field><field name="organisation">org-c1</field></object>\n</objects>`;
  const results = (text: string): string[] => text.split('\n').filter((l) => l.includes('<result '));
  const dry = await call(node, 'POST', '/import?dry-run=1', { body: doc });
  const real = await call(node, 'POST', '/import', { body: doc });
  t.equal(results(dry.text).length, 6, dry.text);
  t.same(results(dry.text), results(real.text), 'the same result for each object, refusals in the same words');
  t.match(real.text, /refers to missing object org-none/);
  t.match(real.text, /must refer to an Organisation whose kind is reseller, but org-c1 has kind customer/);
  t.match(real.text, /refers to deleted object org-gone/);
  t.match(real.text, /must refer to an Organisation, but per-c1 is a Person/);
  t.match(real.text, /new Person: field "uid" value "contact1" is already used by Person per-c1/);
});

t.test('a malformed object on a line it shares with others is reported at its column in the document, not in the object', async (t) => {
  const node = await startXmlNode(t);
  const good = (i: number) => `<object type="Organisation" id="org-l${i}"><field name="name">L${i}</field><field name="kind">vendor</field></object>`;
  const doc = `<objects>${good(1)}${good(2)}<object type="Organisation" id="org-bad"><field name="name">x</fieldx></object></objects>`;
  const r = await call(node, 'POST', '/import', { body: doc });
  t.equal(r.status, 400, r.text);
  t.match(r.text, new RegExp(`malformed XML at line 1, column ${doc.indexOf('</fieldx') + 1}:`), r.text);
  const lines = `<objects>\n${good(4)}\n${good(5)}\n<object type="Organisation" id="org-bad2">\n<field name="name">x</fieldx></object>\n</objects>`;
  const l = await call(node, 'POST', '/import', { body: lines });
  t.match(l.text, /malformed XML at line 5, column \d+: Expected closing tag 'field' \(opened in line 5, col 1\)/, `the line a tag was opened on is the document's too: ${l.text}`);
  const unclosed = `<objects>${good(3)}<object type="Organisation" id="org-open"`;
  const u = await call(node, 'POST', '/import', { body: unclosed });
  t.equal(u.status, 400, u.text);
});

t.test('an import of more rejections than a report lists counts the rest in unlisted, and the report stays valid', async (t) => {
  const node = await startXmlNode(t);
  const n = 100_050;
  const doc = `<objects>\n${'<object type="Nope"/>\n'.repeat(n)}</objects>`;
  const r = await call(node, 'POST', '/import', { body: doc });
  t.equal(r.status, 200);
  t.match(r.text, new RegExp(`objects="${n}" created="0" updated="0" unchanged="0" rejected="${n}" listed="rejected" unlisted="50">`), r.text.slice(0, 300));
  t.equal(r.text.match(/<result /g)?.length, 100_000, 'the first 100,000 listed');
  xmllint(t, r.text, 'the report');
});

t.test('an import report echoing characters XML does not allow is still XML', async (t) => {
  const node = await startXmlNode(t);
  // fast-xml-parser lets C0 controls and U+FFFE through in attribute values; the id is refused and echoed
  const doc = `<objects>\n<object type="Organisation" id="org-\u0001\uFFFE"><field name="name">N</field><field name="kind">vendor</field></object>\n</objects>`;
  const r = await call(node, 'POST', '/import', { body: doc });
  t.equal(r.status, 200);
  t.match(r.text, /rejected="1"/, r.text);
  const file = join(tempDir(t), 'report.xml');
  writeFileSync(file, r.text);
  const lint = spawnSync('xmllint', ['--noout', file], { encoding: 'utf8' });
  t.equal(lint.status, 0, `the report is well-formed XML: ${lint.stderr.trim()}`);
  t.match(r.text, /id="org-\uFFFD\uFFFD"/, 'each such character shown as U+FFFD');
});

t.test('an object whose reference to its own type is removed while an export runs is exported all the same', async (t) => {
  const node = await startXmlNode(t);
  await seed(node);
  const store = node.store;
  const list = store.list.bind(store);
  let firstPages = 0;
  // the first page of the second pass over Organisations is read just after org-c1 lost its reseller:
  // the first pass left it out (it had one), and the second would too (it has none now)
  store.list = (async (type: string, opts: { after?: string } = {}) => {
    if (type === 'Organisation' && opts.after === undefined && ++firstPages === 2) await store.update('org-c1', { reseller: null });
    return list(type, opts);
  }) as typeof store.list;
  t.teardown(() => {
    store.list = list;
  });
  const exported = await call(node, 'GET', '/export?type=Organisation');
  t.equal(firstPages, 2, 'two passes');
  t.ok(idsIn(exported.text).includes('org-c1'), 'org-c1 is in the export');
  t.equal(idsIn(exported.text).filter((id) => id === 'org-r').length, 1, 'an object nobody changed comes once');

  // the same by a merged state (anti-entropy), which keeps the record's feed seq
  await store.create('Organisation', { name: 'Customer Three', kind: 'customer', reseller: 'org-r' }, { id: 'org-c3' });
  const peer = new Y.Doc();
  Y.applyUpdate(peer, (await store.objectState('org-c3'))!);
  peer.clientID = 424242;
  let diff: Uint8Array | undefined;
  peer.on('update', (u: Uint8Array) => (diff = u));
  peer.getMap('f').delete('reseller');
  firstPages = 0;
  store.list = (async (type: string, opts: { after?: string } = {}) => {
    if (type === 'Organisation' && opts.after === undefined && ++firstPages === 2) await (await store.cloneStatesStaged([{ id: 'org-c3', diff: diff!, hlc: store.hlc + 1 }])).durable;
    return list(type, opts);
  }) as typeof store.list;
  const again = await call(node, 'GET', '/export?type=Organisation');
  t.equal((await store.get('org-c3'))?.fields['reseller'], undefined, 'the merge took the reseller away');
  t.ok(idsIn(again.text).includes('org-c3'), 'org-c3 is in the export');
});

t.test('the changes feed carries a write made on another master: long poll, Server-Sent Events, resume', async (t) => {
  const [pa, pb] = [await freePort(), await freePort()];
  const secret = 'xml-test-cluster-secret';
  const a = await startXmlNode(t, { httpPort: pa, clusterSecret: secret, peers: [`ws://127.0.0.1:${pb}/sync`], heartbeat: 200, linkTimeout: 2000 });
  const b = await startXmlNode(t, { httpPort: pb, clusterSecret: secret, peers: [`ws://127.0.0.1:${pa}/sync`], heartbeat: 200, linkTimeout: 2000 });
  await seed(a);
  // (b shows a peer's changes before its own fsync, and lastSeq is what is on its disk: it must have stopped
  // moving, for three polls in a row, 300 ms, longer than any fsync)
  let since = -1;
  let still = 0;
  t.ok(
    await until(() => {
      const was = since;
      since = b.store.lastSeq;
      still = b.store.covers(a.store.versionVector()) && since === was ? still + 1 : 0;
      return still >= 3;
    }),
    'b has a\'s data',
  );

  // a long poll on b, answered by a write on a
  const poll = call(b, 'GET', `/changes?since=${at(b, since)}&timeout=10`);
  const org = await call(a, 'GET', '/objects/Organisation/org-c2');
  const put = await call(a, 'PUT', '/objects/Organisation/org-c2', { body: org.text.replace('Customer Two', 'Customer Deux'), headers: { 'if-match': `"${etagOf(org)}"` } });
  t.equal(put.status, 200);
  const answered = await poll;
  t.equal(answered.status, 200);
  t.match(answered.text, new RegExp(`<change seq="${since + 1}" id="org-c2" type="Organisation" kind="update" version="${etagOf(put)}" time="`), 'the invalidation names the object and its new version');
  xmllint(t, answered.text, 'a changes document');
  t.ok(await until(async () => etagOf(await call(b, 'GET', '/objects/Organisation/org-c2')) === etagOf(put)), 'the ETag is the same on both masters once they converge');

  // SSE: events as they happen, resumable with Last-Event-ID
  const ctrl = new AbortController();
  const res = await fetch(`${b.url}/changes`, { headers: { authorization: ADMIN, accept: 'text/event-stream', 'last-event-id': at(b, since + 1) }, signal: ctrl.signal });
  t.equal(res.headers.get('content-type'), 'text/event-stream; charset=utf-8');
  t.equal(res.headers.get('x-accel-buffering'), 'no', 'a proxy such as nginx is told not to hold events back');
  const reader = res.body!.getReader();
  const lic = await call(a, 'GET', '/objects/License/lic-c2');
  await call(a, 'PUT', '/objects/License/lic-c2', { body: lic.text.replace('<field name="seats">5</field>', '<field name="seats">6</field>'), headers: { 'if-match': `"${etagOf(lic)}"` } });
  let text = '';
  const deadline = Date.now() + 10_000;
  while (!/id: [\w-]+\nevent: change\ndata: <change [^\n]*id="lic-c2"/.test(text) && Date.now() < deadline) {
    const { value, done } = await reader.read();
    if (done) break;
    text += new TextDecoder().decode(value);
  }
  ctrl.abort();
  t.match(text, new RegExp(`id: ${at(b, since + 2)}\nevent: change\ndata: <change seq="${since + 2}" id="lic-c2" type="License" kind="update"`), 'the event arrives, after the one already seen');
  t.match(text, new RegExp(`^: meridian changes feed\nid: ${at(b, since + 1)}\n\n`), 'the stream starts where Last-Event-ID says');
  t.notMatch(text, new RegExp(`id: ${at(b, since + 1)}\nevent:`), 'resumed after Last-Event-ID');
  t.equal((await call(b, 'GET', '/changes?since=-1')).status, 400);
});

t.test('on a replica: reads are local, a person\'s write goes through the master, read-only answers 503 with Retry-After', async (t) => {
  const port = await freePort();
  const master = await startXmlNode(t, { httpPort: port, clusterSecret: 'xml-replica-cluster-secret', heartbeat: 200, linkTimeout: 1000 });
  await seed(master);
  const res = await fetch(`${master.url}/api/replicas`, { method: 'POST', headers: { authorization: ADMIN, 'content-type': 'application/json' }, body: JSON.stringify({ name: 'cache-1' }) });
  const { credential } = (await res.json()) as { credential: string };
  const replica = await startXmlNode(t, { role: 'replica', masters: [`ws://127.0.0.1:${port}/sync`], replicaCredential: credential, heartbeat: 200, linkTimeout: 1000 });
  t.ok(await until(() => replica.store.covers(master.store.versionVector()) && replica.status().mode === 'read-write', 10_000), 'the replica cloned the master');

  const mine = await call(replica, 'GET', '/me', { auth: person('contact1') });
  t.equal(mine.status, 200, 'a person signs in on the replica (their hash replicated)');
  const entry = await call(replica, 'GET', '/objects/Person/per-c1', { auth: person('contact1') });
  const put = await call(replica, 'PUT', '/me', { auth: person('contact1'), body: entry.text.replace('+27 021 555 0100', '+27 021 555 0111'), headers: { 'if-match': `"${etagOf(entry)}"` } });
  t.equal(put.status, 200, put.text);
  t.same(fieldValues(put.text, 'telephoneNumber'), ['+27 021 555 0111'], 'the answer shows the write');
  t.same(fieldValues((await call(replica, 'GET', '/objects/Person/per-c1', { auth: person('contact1') })).text, 'telephoneNumber'), ['+27 021 555 0111'], 'readable on the replica at once');
  t.equal((await master.store.get('per-c1'))?.fields['telephoneNumber']?.toString(), '+27 021 555 0111', 'made on the master');
  t.match((await master.store.readFeed(master.store.lastSeq - 1, 1))[0]?.principal, /^Person:per-c1 via xml$/, 'recorded as made by the person, through XML (on the master, for a write forwarded by a replica)');
  const org = await call(replica, 'GET', '/objects/Organisation/org-c1', { auth: person('contact1') });
  t.equal((await call(replica, 'PUT', '/objects/Organisation/org-c1', { auth: person('contact1'), body: org.text, headers: { 'if-match': `"${etagOf(org)}"` } })).status, 403, 'access rules apply on the replica too');

  await master.stop();
  t.ok(await until(() => replica.status().mode === 'read-only', 5000), 'read-only once the master is gone');
  const refused = await call(replica, 'POST', '/objects/Organisation', { body: orgXml({ name: 'While Away', kind: 'customer' }) });
  t.equal(refused.status, 503);
  t.equal(refused.headers.get('retry-after'), '5');
  t.match(refused.text, /<error code="read-only">this replica is read-only since .*: it lost master .*; writes resume when a master is reachable<\/error>/);
  t.equal((await call(replica, 'GET', '/objects/Organisation/org-c1')).status, 200, 'reads go on');
});

t.test('review fixes: CDATA may hold "&", 405 says Allow, an import ignores Idempotency-Key, shape errors name the line, 410 is "gone"', async (t) => {
  const node = await startXmlNode(t, { feedRetention: 0 });
  await seed(node);
  const cdata = await call(node, 'POST', '/objects/Organisation', { body: '<object type="Organisation"><field name="name"><![CDATA[A & B <C>]]></field><field name="kind">vendor</field></object>' });
  t.equal(cdata.status, 201, cdata.text);
  t.same(fieldValues(cdata.text, 'name'), ['A & B <C>']);
  const patch = await call(node, 'PATCH', '/objects/Organisation/org-c1');
  t.equal(patch.status, 405);
  t.equal(patch.headers.get('allow'), 'GET, HEAD, PUT, DELETE');
  const doc = '<objects>' + Array.from({ length: 30 }, (_, i) => `<object type="Organisation" id="org-k${i}"><field name="name">K${i}</field><field name="kind">vendor</field></object>`).join('') + '</objects>';
  const imported = await call(node, 'POST', '/import', { body: doc, headers: { 'idempotency-key': 'one-key' } });
  t.match(imported.text, /created="30"/);
  for (let i = 0; i < 30; i++) t.equal((await node.store.get(`org-k${i}`))?.fields['name'], `K${i}`, `org-k${i} was written`);
  const shape = await call(node, 'POST', '/import', { body: '<objects>\n<object type="Organisation" colour="red"/>\n</objects>' });
  t.equal(shape.status, 400);
  t.match(shape.text, /the &lt;object&gt; at line 2: unknown attribute colour on &lt;object&gt;/);
  await node.store.trimFeed(1);
  const gone = await call(node, 'GET', '/changes?since=0&timeout=0');
  t.equal(gone.status, 410);
  t.match(gone.text, /<error code="gone">changes up to \d+ are no longer kept here/);
});

t.test('/changes trimmed past between its check and its read answers 410, not the entries after the gap as if they came next', async (t) => {
  const node = await startXmlNode(t);
  // more than the store keeps in memory (4096 entries), so the read goes to disk, where the trim took them
  for (let i = 0; i < 4200; i += 500) await Promise.all(Array.from({ length: 500 }, (_, j) => node.store.create('Organisation', { name: `T${i + j}`, kind: 'vendor' })));
  const read = node.store.readFeed.bind(node.store);
  let trimOnce = true;
  node.store.readFeed = async (after, limit) => {
    if (trimOnce) {
      trimOnce = false;
      await node.store.trimFeed(2); // (the check of firstSeq is behind this read by now)
    }
    return read(after, limit);
  };
  const r = await call(node, 'GET', `/changes?since=${at(node, 1)}&timeout=0`);
  t.equal(r.status, 410, r.text);
  t.match(r.text, /changes up to 4498 are no longer kept here/);
});

t.test('a long poll answers a change made durable while it read the feed, not at its timeout', async (t) => {
  const node = await startXmlNode(t);
  await seed(node);
  const store = node.store;
  const since = store.lastSeq;
  const read = store.readFeed.bind(store);
  let first = true;
  // the write lands between the poll's read of the feed and its subscription
  store.readFeed = async (after, limit) => {
    const entries = await read(after, limit);
    if (first) {
      first = false;
      // (and its subscribers are told before the read returns)
      await new Promise<void>((resolve) => {
        const unsubscribe = store.subscribe(() => {
          unsubscribe();
          resolve();
        });
        void store.create('Organisation', { name: 'Meanwhile', kind: 'vendor' }, { principal: 'test', id: 'org-meanwhile' });
      });
    }
    return entries;
  };
  const started = Date.now();
  const poll = await call(node, 'GET', `/changes?since=${at(node, since)}&timeout=10`);
  t.equal(poll.status, 200);
  t.match(poll.text, /<change seq="\d+" id="org-meanwhile" type="Organisation" kind="create"/, 'the change is in the answer');
  t.ok(Date.now() - started < 5000, `answered in ${Date.now() - started} ms (timeout 10 s)`);
});

t.test('a changes request whose client left before the handler began ends at once, SSE and long poll', async (t) => {
  const { changesFeed } = await import('../packages/xml/dist/changes.js');
  const node = await startXmlNode(t);
  const { EventEmitter } = await import('node:events');
  // a response whose client went away while the request was being signed in: its 'close' has fired already
  const gone = (): ServerResponseLike => Object.assign(new EventEmitter(), { destroyed: true, headersSent: false, writeHead: () => undefined, write: () => false, end: () => undefined });
  type ServerResponseLike = InstanceType<typeof EventEmitter> & { destroyed: boolean };
  for (const [what, accept, query] of [['SSE', 'text/event-stream', 'since=0'], ['long poll', 'application/xml', `since=${at(node, node.store.lastSeq)}&timeout=20`]] as const) {
    const req = { headers: { accept } };
    const ended = changesFeed(node.store, req as never, gone() as never, new URL(`http://node/changes?${query}`)).then(() => 'ended');
    t.equal(await Promise.race([ended, sleep(2000).then(() => 'still waiting')]), 'ended', `${what}: no subscription left waiting for a close that came before`);
  }
});

t.test('an import parsed in groups: a bad object deep in the document is reported by its own line, with exactly the objects before it applied', async (t) => {
  const node = await startXmlNode(t, { feedRetention: 0 });
  await seed(node);
  const org = (p: string, i: number): string => `<object type="Organisation" id="org-${p}${i}"><field name="name">${p.toUpperCase()}${i}</field><field name="kind">vendor</field></object>\n`;
  const many = (p: string, n: number): string => Array.from({ length: n }, (_, i) => org(p, i)).join('');
  const exists = async (id: string): Promise<boolean> => (await node.store.get(id)) !== undefined;

  // (private state, read to prove the path taken: the gateway's parser, and how many groups its worker was asked for)
  const gateway = (node as unknown as { xml: { parser?: { worker?: Worker | null; nextId: number } } }).xml;
  const small = await call(node, 'POST', '/import', { body: `<objects>\n${many('k', 64)}</objects>` });
  t.match(small.text, /created="64"/);
  t.equal(gateway.parser?.worker, undefined, 'an import of two groups (64 objects) is parsed on the event loop: no parser thread started');

  // one object per line after "<objects>\n": object k (0-based) is on line k + 2
  const badTag = `<objects>\n${many('g', 70)}<object type="Organisation" id="org-gbad"><field name="name">X</fieldx></object>\n${many('h', 10)}</objects>`;
  const r1 = await call(node, 'POST', '/import', { body: badTag });
  t.equal(r1.status, 400, r1.text);
  t.match(r1.text, /malformed XML at line 72, column \d+: .*; the 70 objects before it were applied/);
  t.ok(await exists('org-g0') && await exists('org-g69'), 'the objects before the bad one are in');
  t.notOk(await exists('org-gbad'), 'the bad object is not stored');
  t.notOk(await exists('org-h0'), 'nothing after the bad object is applied');

  const badShape = `<objects>\n${many('s', 45)}<object type="Organisation" id="org-sbad" colour="red"/>\n${many('t', 5)}</objects>`;
  const r2 = await call(node, 'POST', '/import', { body: badShape });
  t.equal(r2.status, 400, r2.text);
  t.match(r2.text, /the &lt;object&gt; at line 47: unknown attribute colour on &lt;object&gt;; it takes type, id and version; the 45 objects before it were applied/);
  t.ok(await exists('org-s44'));
  t.notOk(await exists('org-t0'));

  // an object holding another: the splitter ends the outer one at the inner one's end tag
  const nested = `<objects>\n${many('n', 40)}<object type="Organisation" id="org-nout"><object type="Organisation" id="org-nin"></object></object>\n</objects>`;
  const r3 = await call(node, 'POST', '/import', { body: nested });
  t.equal(r3.status, 400, r3.text);
  t.match(r3.text, /malformed XML at line 42, column \d+: .*; the 40 objects before it were applied/);
  t.notOk(await exists('org-nout'));
  t.notOk(await exists('org-nin'));

  const cut = `<objects>\n${many('c', 45)}<object type="Organisation" id="org-ccut"><field name="name">`;
  const r4 = await call(node, 'POST', '/import', { body: cut });
  t.equal(r4.status, 400, r4.text);
  t.match(r4.text, /line 47, column 1: an &lt;object&gt; is not closed before the document ends; the 45 objects before it were applied/);
  t.ok(await exists('org-c44'), 'whole objects read before the document broke off are applied');

  const whole = `<objects>\n${many('w', 100)}</objects>`;
  const r5 = await call(node, 'POST', '/import', { body: whole });
  t.match(r5.text, /created="100" updated="0" unchanged="0" rejected="0"/);
  t.match(r5.text, /<result line="101" type="Organisation" id="org-w99" status="created"\/>/, 'lines are those of the document');

  // past the first two groups the parsing runs on a worker thread, four groups ahead of the writes
  const askedBefore = gateway.parser?.nextId ?? 0;
  const deep = `<objects>\n${many('d', 250)}<object type="Organisation" id="org-dbad"><field name="name">X</fieldx></object>\n${many('e', 300)}</objects>`;
  const r6 = await call(node, 'POST', '/import', { body: deep });
  t.equal(r6.status, 400, r6.text);
  t.match(r6.text, /malformed XML at line 252, column \d+: .*; the 250 objects before it were applied/);
  t.ok(await exists('org-d0') && await exists('org-d249'), 'every object before the bad one is in');
  t.notOk(await exists('org-dbad'));
  for (const e of [0, 50, 299]) t.notOk(await exists(`org-e${e}`), `nothing after it, though parsed ahead (org-e${e})`);
  t.ok(gateway.parser!.nextId > askedBefore, 'groups of this import past the second went to the worker thread');
  const worker = gateway.parser!.worker!;
  t.ok(worker.threadId > 0, 'which is still up between imports');

  // a bad object in a group parsed ahead, then the document breaks off: the bad object, earlier, is the error
  const both = `<objects>\n${many('b', 200)}<object type="Organisation" id="org-bbad" colour="red"/>\n${many('a', 40)}<object type="Organisation" id="org-acut"><field name="name">`;
  const r7 = await call(node, 'POST', '/import', { body: both });
  t.equal(r7.status, 400, r7.text);
  t.match(r7.text, /the &lt;object&gt; at line 202: unknown attribute colour on &lt;object&gt;; it takes type, id and version; the 200 objects before it were applied/);
  t.ok(await exists('org-b199'));
  t.notOk(await exists('org-a0'), 'nothing after the bad object');

  await node.stop();
  t.ok(await until(() => worker.threadId === -1, 5000), 'stopping the node ends the parser thread');
});

t.test('second review: PUT tells a principal nothing of ids it cannot read; preconditions on every method; gaps in the changes feed are said', async (t) => {
  const node = await startXmlNode(t);
  await seed(node);
  const as = (uid: string) => ({ auth: person(uid) });
  await node.store.create('Host', { customer: 'org-c2', hostname: 'gone.c2.example' }, { principal: 'test', id: 'hst-gone' });
  await node.store.delete('hst-gone', { principal: 'test' });
  const host = (hostname: string): string => `<object type="Host"><field name="customer">org-c1</field><field name="hostname">${hostname}</field></object>`;
  // the reseller admin writes hosts at its customer org-c1, but cannot read org-c2's (hst-gone, deleted) nor
  // Person per-c2 (another type); hst-none is no object at all: every answer is the same
  await node.store.create('Host', { customer: 'org-c2', hostname: 'purged.c2.example' }, { principal: 'test', id: 'hst-purged' });
  await node.store.purge('hst-purged');
  const bodies = [host('x.c1.example'), host('x.c1.example').replace('org-c1', 'org-c2'), host('bad host name'), '<object type="Host"/>'];
  for (const headers of [{}, { 'if-match': '*' }, { 'if-match': '"abc"' }, { 'if-none-match': '*' }, { 'if-none-match': '*', 'if-match': '"x"' }]) {
    for (const body of bodies) {
      const answers = await Promise.all(['hst-none', 'hst-gone', 'per-c2', 'hst-purged'].map((id) => call(node, 'PUT', `/objects/Host/${id}`, { ...as('radmin'), body, headers })));
      const what = `${JSON.stringify(headers)}, body ${bodies.indexOf(body)}`;
      t.same(new Set(answers.map((a) => `${a.status} ${a.text.replace(/hst-none|hst-gone|per-c2|hst-purged/, 'ID')}`)).size, 1, `${what}: free, unreadable, deleted, other-type and purged ids alike (${answers[0]!.status})`);
      t.notOk(answers.some((a) => a.status < 300), `${what}: nothing made`);
    }
  }
  const chosen = await call(node, 'PUT', '/objects/Host/hst-new', { ...as('radmin'), body: host('new.c1.example'), headers: { 'if-none-match': '*' } });
  t.equal(chosen.status, 403, 'a role that does not see everything does not choose ids');
  t.match(chosen.text, /create the Host with POST \/objects\/Host/);
  t.equal((await call(node, 'POST', '/objects/Host', { ...as('radmin'), body: host('new.c1.example') })).status, 201, 'it creates with POST');
  t.equal((await call(node, 'PUT', '/objects/Host/hst-none', { body: host('x.c1.example') })).status, 428, 'the admin, who sees everything, is still told what is missing');

  // creates of one id racing: one is made, the others failed their If-None-Match: *
  const race = await Promise.all(Array.from({ length: 6 }, (_, i) => call(node, 'PUT', '/objects/Host/hst-race', { body: host(`r${i}.c1.example`), headers: { 'if-none-match': '*' } })));
  t.same(race.map((r) => r.status).sort(), [201, 412, 412, 412, 412, 412], `one 201, the rest 412 (${race.map((r) => r.status).join(', ')})`);

  // GET evaluates If-Match; its 304 keeps the 200's Cache-Control; DELETE evaluates If-None-Match
  const got = await call(node, 'GET', '/objects/Host/hst-c1');
  t.equal((await call(node, 'GET', '/objects/Host/hst-c1', { headers: { 'if-match': '"stale"' } })).status, 412, 'GET with a stale If-Match');
  // (RFC 9110 13.1.1: a read's If-Match is a list, compared strongly)
  t.equal((await call(node, 'GET', '/objects/Host/hst-c1', { headers: { 'if-match': `"stale", "${etagOf(got)}"` } })).status, 200, 'GET with a list of tags, one the current');
  t.equal((await call(node, 'HEAD', '/objects/Host/hst-c1', { headers: { 'if-match': `"stale", "${etagOf(got)}"` } })).status, 200, 'HEAD too');
  t.equal((await call(node, 'GET', '/objects/Host/hst-c1', { headers: { 'if-match': `W/"${etagOf(got)}"` } })).status, 412, 'a weak tag never matches strongly');
  t.equal((await call(node, 'GET', '/objects/Host/hst-c1', { headers: { 'if-match': '"a", "b"' } })).status, 412, 'a list with none current');
  const notModified = await call(node, 'GET', '/objects/Host/hst-c1', { headers: { 'if-none-match': `"${etagOf(got)}"` } });
  t.equal(notModified.status, 304);
  t.equal(notModified.headers.get('cache-control'), got.headers.get('cache-control'), 'the 304 carries the Cache-Control of the 200');
  const keep = await call(node, 'DELETE', '/objects/Host/hst-c1', { headers: { 'if-match': '*', 'if-none-match': '*' } });
  t.equal(keep.status, 412, 'DELETE with If-None-Match: * of an existing object fails its precondition');
  t.equal((await call(node, 'GET', '/objects/Host/hst-c1')).status, 200, 'and deletes nothing');
  const me = await call(node, 'GET', '/me', as('contact1'));
  const putMe = await call(node, 'PUT', '/me', { ...as('contact1'), body: me.text.replace(/<\?xml[^>]*>\n?<objects>\n?|<\/objects>\n?/g, '').split('</object>')[0] + '</object>', headers: { 'if-match': '*', 'if-none-match': `"${etagOf(me)}"` } });
  t.equal(putMe.status, 412, 'PUT /me evaluates If-None-Match too');

  // a list filter keeps what the index found for a value written in another Unicode form
  await node.store.create('Organisation', { name: 'Cafe\u0301 Noir', kind: 'vendor' }, { principal: 'test', id: 'org-nfd' });
  const listed = await call(node, 'GET', `/objects/Organisation?name=${encodeURIComponent('CAF\u00c9 noir')}`);
  t.same(idsIn(listed.text), ['org-nfd'], 'a decomposed é is found by a composed one, and kept');

  // HEAD /export: the headers of the export, no body
  const head = await call(node, 'HEAD', '/export');
  t.equal(head.status, 200);
  t.equal(head.text, '');
  t.match(head.headers.get('content-type') ?? '', /xml/);

  // a position past this node's feed is another node's, or from before a restore
  const ahead = await call(node, 'GET', `/changes?since=${at(node, node.store.lastSeq + 5)}&timeout=0`);
  t.equal(ahead.status, 410, ahead.text);
  t.match(ahead.text, /past this node's changes feed, which is at [\w-]+/);
});

t.test("a login that is one person's uid and another's mail signs in whichever of them the password is", async (t) => {
  const node = await startXmlNode(t);
  await seed(node);
  // a uid may hold "@": per-x's uid is contact2's mail
  await node.store.create('Person', { cn: 'X', sn: 'X', uid: 'contact2@example.com', organisation: 'org-c1', roles: ['customer-contact'], password: 'x-password-1' }, { principal: 'test', id: 'per-x' });
  const asMail = await call(node, 'GET', '/me', { auth: basic('contact2@example.com', PERSON_PW) });
  t.equal(asMail.status, 200, 'contact2 by mail, with its password: the uid match does not lock it out');
  t.match(asMail.text, /id="per-c2"/);
  const asUid = await call(node, 'GET', '/me', { auth: basic('contact2@example.com', 'x-password-1') });
  t.match(asUid.text, /id="per-x"/, 'and per-x by uid, with its own');
  t.equal((await call(node, 'GET', '/me', { auth: basic('contact2@example.com', 'neither') })).status, 401);
});

t.test('an import object too large for one change is rejected, in a dry run as in the import itself', async (t) => {
  // (the CRM schema's fields are too short to reach the limit: here telephone numbers have the default 4096 characters)
  const schema = join(tempDir(t), 'crm.yaml');
  writeFileSync(schema, readFileSync(DEFAULT_SCHEMA, 'utf8').replaceAll('telephoneNumber: { type: string, multi: true, maxLength: 64,', 'telephoneNumber: { type: string, multi: true,'));
  const node = await startXmlNode(t, { maxBody: 16 * 1024 * 1024, schema });
  await seed(node);
  const phones = Array.from({ length: 1000 }, (_, i) => `<field name="telephoneNumber">${i}${'é'.repeat(3000)}</field>`).join('');
  const doc = `<objects><object type="Person" id="per-huge"><field name="cn">Huge</field><field name="sn">H</field>${phones}</object></objects>`;
  for (const query of ['?dry-run=1', '']) {
    const r = await call(node, 'POST', `/import${query}`, { body: doc });
    t.equal(r.status, 200, r.text.slice(0, 300));
    t.match(r.text, /rejected="1"/, `${query || 'the import'}: rejected`);
    t.match(r.text, /more than one change may carry/);
  }
  t.equal(await node.store.get('per-huge'), undefined, 'and nothing was made');
});

t.test('an SSE changes stream ends once its staff member may no longer read it', async (t) => {
  const node = await startXmlNode(t);
  await seed(node);
  const ac = new AbortController();
  t.teardown(() => ac.abort());
  const res = await fetch(`${node.url}/changes?since=${at(node, node.store.lastSeq)}`, { headers: { authorization: person('staff1'), accept: 'text/event-stream' }, signal: ac.signal });
  t.equal(res.status, 200);
  const reader = res.body!.getReader();
  let text = '';
  const readUntil = async (done: () => boolean): Promise<boolean> => {
    for (;;) {
      if (done()) return true;
      const next = await Promise.race([reader.read(), sleep(5000).then(() => 'late' as const)]);
      if (next === 'late') return false;
      if (next.done) return done();
      text += Buffer.from(next.value).toString();
    }
  };
  await node.store.create('Organisation', { name: 'Seen', kind: 'vendor' }, { principal: 'test', id: 'org-seen' });
  t.ok(await readUntil(() => text.includes('org-seen')), 'a change reaches the stream');
  await node.store.update('per-staff', { roles: ['customer-contact'] }, { principal: 'test' });
  await node.store.create('Organisation', { name: 'Unseen', kind: 'vendor' }, { principal: 'test', id: 'org-unseen' });
  let ended = false;
  t.ok(await readUntil(() => ended || text.includes('org-unseen')).then(async () => {
    const r = await Promise.race([reader.read(), sleep(3000).then(() => 'open' as const)]);
    ended = r !== 'open' && r.done;
    return ended;
  }), 'the stream ends when the role is gone');
  t.notMatch(text, /org-unseen/, 'and the change after it is not sent');
});

t.test('a long poll of the changes feed answers nothing it waited for to a staff member demoted meanwhile', async (t) => {
  const node = await startXmlNode(t);
  await seed(node);
  const since = node.store.lastSeq;
  // (the poll waits on a feed subscription: once it has one, it has signed in and is waiting)
  let waiting = false;
  const subscribe = node.store.subscribe.bind(node.store);
  node.store.subscribe = (listener) => {
    waiting = true;
    return subscribe(listener);
  };
  const polling = call(node, 'GET', `/changes?since=${at(node, since)}&timeout=10`, { auth: person('staff1') });
  t.ok(await until(() => waiting, 5000), 'the poll waits');
  // demoted, and then a change: the poll wakes for it
  await node.store.update('per-staff', { roles: ['customer-contact'] }, { principal: 'test' });
  const r = await polling;
  t.equal(r.status, 403, r.text);
  t.match(r.text, /no longer is; sign in again/);
  t.notMatch(r.text, /per-staff/, 'nothing of the change is told');
});

t.test('third review: a dry run knows the types of earlier copies and references; error bodies stay XML; no extra path parts; PUT /me names an unknown field', async (t) => {
  const node = await startXmlNode(t);
  await seed(node);
  // one id first a Product, then a Release: the import refuses the second copy, and the dry run now says so too
  const twoTypes =
    '<objects>\n<object type="Product" id="zz-2"><field name="name">Z</field></object>\n' +
    '<object type="Release" id="zz-2"><field name="product">zz-2</field><field name="version">1</field></object>\n</objects>';
  const dry = await call(node, 'POST', '/import?dry-run=1', { body: twoTypes });
  t.match(dry.text, /<result line="3" type="Release" id="zz-2" status="rejected">zz-2 is a Product here, not a Release<\/result>/, dry.text);
  // a reference to an object earlier in the document of the wrong type: refused, as the import refuses it
  const wrongRef =
    '<objects>\n<object type="Product" id="prd-early"><field name="name">Early</field></object>\n' +
    '<object type="Person" id="per-late"><field name="cn">L</field><field name="sn">L</field><field name="organisation">prd-early</field></object>\n</objects>';
  const dryRef = await call(node, 'POST', '/import?dry-run=1', { body: wrongRef });
  t.match(dryRef.text, /id="per-late" status="rejected" field="organisation">.*must refer to an Organisation, but prd-early is a Product/, dryRef.text);
  const real = await call(node, 'POST', '/import', { body: wrongRef });
  t.match(real.text, /id="per-late" status="rejected" field="organisation">.*must refer to an Organisation, but prd-early is a Product/, 'in the same words as the import');
  // characters XML does not allow, quoted back from the request, are replaced in the error body
  for (const path of ['/objects/Organisation/a%01b', '/objects/Organisation?x%01=1', '/objects/Org%EF%BF%BEanisation']) {
    const r = await call(node, 'GET', path);
    t.ok(r.status >= 400 && r.status < 500, `${path}: ${r.status}`);
    xmllint(t, r.text, `the error for ${path}`);
  }
  for (const path of ['/export/whatever', '/changes/x', '/import/y']) {
    const r = await call(node, path === '/import/y' ? 'POST' : 'GET', path, path === '/import/y' ? { body: '<objects/>' } : {});
    t.equal(r.status, 404, `${path} is nothing`);
  }
  const mine = await call(node, 'GET', '/objects/Person/per-c1', { auth: person('contact1') });
  const colour = mine.text.replace('</object>', '  <field name="colour">blue</field>\n</object>');
  const put = await call(node, 'PUT', '/me', { auth: person('contact1'), body: colour, headers: { 'if-match': `"${etagOf(mine)}"` } });
  t.equal(put.status, 422, 'a field the type lacks is the document\'s mistake');
  t.match(put.text, /<error code="[a-z-]+" field="colour">field "colour" is not a field of Person<\/error>/, put.text);
});

t.test('history tells a reader who does not see everything who made a version only when they may read that person', async (t) => {
  const node = await startXmlNode(t);
  await seed(node);
  const s = node.store;
  // staff (whom a reseller admin may not read) edit a contact the reseller reaches, then the reseller admin does, then the admin
  await s.update('per-c1', { title: 'By staff' }, { principal: 'Person:per-staff via xml' });
  await s.update('per-c1', { title: 'By the reseller admin' }, { principal: 'Person:per-radmin via ldap' });
  await s.update('per-c1', { title: 'By the admin' }, { principal: 'admin' });
  await s.update('per-c1', { title: 'By a colleague' }, { principal: 'Person:per-c1b via xml' });
  t.equal((await call(node, 'GET', '/objects/Person/per-staff', { auth: person('radmin') })).status, 404, 'the reseller admin may not read the staff member');
  const radmin = await call(node, 'GET', '/objects/Person/per-c1/history', { auth: person('radmin') });
  t.equal(radmin.status, 200, radmin.text);
  xmllint(t, radmin.text, 'the history');
  t.notMatch(radmin.text, /per-staff/, 'the staff member is not named');
  t.match(radmin.text, /principal="someone else via xml"[^>]*>\s*<field name="title">[^]*?<new>By staff</, 'but said to be someone else, through the gateway they used');
  t.match(radmin.text, /principal="Person:per-radmin via ldap"/, 'the reader is named as themselves');
  t.match(radmin.text, /principal="admin"/, 'and the admin as the admin');
  t.match(radmin.text, /principal="Person:per-c1b via xml"/, 'a person the reader may read is named');
  const staff = await call(node, 'GET', '/objects/Person/per-c1/history', { auth: person('staff1') });
  t.match(staff.text, /principal="Person:per-staff via xml"/, 'staff, who see everything, see every name');
});

t.test('objects stored without feed entries (a clone, a repair) tell the caches reading /changes to start again: 410, an SSE reset, the position header', async (t) => {
  const a = await startXmlNode(t);
  const b = await startXmlNode(t);
  await seed(a);
  await b.store.create('Organisation', { name: 'Local', kind: 'vendor' }, { principal: 'test', id: 'org-local' });

  // positions: a bare seq is refused, another node's is gone, now and 0 are where they say
  const bare = await call(b, 'GET', `/changes?since=${b.store.lastSeq}&timeout=0`);
  t.equal(bare.status, 410, 'a bare seq (a cache of an older release) starts again');
  t.match(bare.text, /is a bare feed seq, from before positions named their feed and epoch; drop what you hold from this node/);
  t.equal(bare.headers.get('meridian-changes-position'), at(b, b.store.lastSeq));
  const garbage = await call(b, 'GET', '/changes?since=x-1-2&timeout=0');
  t.equal(garbage.status, 400);
  t.match(garbage.text, /since must be a position this feed gave out/);
  const foreign = await call(b, 'GET', `/changes?since=${at(a, 1)}&timeout=0`);
  t.equal(foreign.status, 410);
  t.match(foreign.text, /is another node's/);
  t.equal(foreign.headers.get('meridian-changes-position'), at(b, b.store.lastSeq), 'a 410 says where to go on from');
  const now = await call(b, 'GET', '/changes?since=now&timeout=0');
  t.equal(now.status, 200);
  t.match(now.text, new RegExp(`<changes since="${at(b, b.store.lastSeq)}" last="${at(b, b.store.lastSeq)}">`));
  t.match((await call(b, 'GET', '/changes?since=0&timeout=0')).text, /id="org-local"/);
  const exported = await call(b, 'GET', '/export');
  t.equal(exported.headers.get('meridian-changes-position'), at(b, b.store.lastSeq), 'an export says where its reader goes on reading the feed');

  const before = at(b, b.store.lastSeq);
  // a cache reading the stream, and one waiting in a long poll
  const ac = new AbortController();
  t.teardown(() => ac.abort());
  const res = await fetch(`${b.url}/changes?since=${before}`, { headers: { authorization: ADMIN, accept: 'text/event-stream' }, signal: ac.signal });
  t.equal(res.headers.get('meridian-changes-position'), before);
  const reader = res.body!.getReader();
  let text = '';
  // (the poll waits on onStates too: once it listens, it has checked its position and is waiting)
  const listen = b.store.onStates.bind(b.store);
  let listening!: () => void;
  const waiting = new Promise<void>((resolve) => (listening = resolve));
  b.store.onStates = (fn) => {
    const off = listen(fn);
    listening();
    return off;
  };
  const poll = call(b, 'GET', `/changes?since=${before}&timeout=20`);
  await waiting;
  b.store.onStates = listen;
  const started = Date.now();

  // what a clone or an anti-entropy repair stores: a's states, without feed entries on b
  const snap = a.store.stateSnapshot();
  try {
    for await (const frame of snap.batches(100)) await b.store.cloneStates(frame);
  } finally {
    await snap.close();
  }
  t.equal((await b.store.get('org-c1'))?.fields['name'], 'Customer One', 'the states are stored');
  t.equal(at(b, b.store.lastSeq).split('-')[2], before.split('-')[2], 'with no feed entry');

  const waited = await poll;
  t.equal(waited.status, 410, 'the long poll waiting is answered at once');
  t.ok(Date.now() - started < 10_000);
  t.match(waited.text, /<error code="gone">objects were stored here without feed entries \(a clone, or a repair from a peer\) after position [\w-]+, so the feed cannot name them; drop what you hold from this node/);
  const head = at(b, b.store.lastSeq);
  t.equal(waited.headers.get('meridian-changes-position'), head);
  t.equal((await call(b, 'GET', `/changes?since=${before}&timeout=0`)).status, 410, 'the old position is gone for good');
  t.equal((await call(b, 'GET', '/changes?since=0&timeout=0')).status, 410, 'as is the start of the feed, which does not name the cloned objects');
  const onward = await call(b, 'GET', `/changes?since=${head}&timeout=0`);
  t.equal(onward.status, 200, 'the position given out reads on');

  const deadline = Date.now() + 10_000;
  // (one read at a time: a read that lost the race is still the next one)
  let reading = reader.read();
  // (the stream is aborted at the end: the read then pending fails, for nobody to hear)
  reading.catch(() => undefined);
  const readWhile = async (more: () => boolean, until: number): Promise<void> => {
    while (more() && Date.now() < until) {
      const next = await Promise.race([reading, sleep(1000).then(() => 'late' as const)]);
      if (next === 'late') continue;
      if (next.done) break;
      text += Buffer.from(next.value).toString();
      reading = reader.read();
      reading.catch(() => undefined);
    }
  };
  await readWhile(() => !/event: reset/.test(text), deadline);
  t.match(text, new RegExp(`id: ${head}\nevent: reset\ndata: <reset reason="states"/>`), 'the stream sends a reset whose id is the head');
  xmllint(t, /data: (<reset [^\n]*)/.exec(text)?.[1] ?? '', 'a reset event\'s data');
  await b.store.create('Organisation', { name: 'After', kind: 'vendor' }, { principal: 'test', id: 'org-after' });
  await readWhile(() => !/org-after/.test(text), deadline + 5000);
  t.match(text, new RegExp(`id: ${at(b, b.store.lastSeq)}\nevent: change\ndata: <change seq="${b.store.lastSeq}" id="org-after"`), 'and goes on after it');
});

t.test('an SSE stream the feed was trimmed past while it read gets a reset saying so, then reads on from the head', async (t) => {
  const node = await startXmlNode(t, { feedRetention: 0 });
  await seed(node);
  const ac = new AbortController();
  t.teardown(() => ac.abort());
  const res = await fetch(`${node.url}/changes?since=now`, { headers: { authorization: ADMIN, accept: 'text/event-stream' }, signal: ac.signal });
  const reader = res.body!.getReader();
  let text = '';
  const readUntil = async (re: RegExp): Promise<void> => {
    const deadline = Date.now() + 10_000;
    while (!re.test(text) && Date.now() < deadline) {
      const next = await Promise.race([reader.read(), sleep(deadline - Date.now()).then(() => 'late' as const)]);
      if (next === 'late' || next.done) break;
      text += Buffer.from(next.value).toString();
    }
  };
  await readUntil(/: meridian changes feed\nid: [^\n]+\n\n/);
  // the stream's next read of the feed waits until the feed was trimmed past where the stream is
  const read = node.store.readFeed.bind(node.store);
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  let held = false;
  node.store.readFeed = async (after, limit) => {
    if (!held) {
      held = true;
      await gate;
    }
    return read(after, limit);
  };
  t.teardown(() => release());
  for (let i = 0; i < 3; i++) await node.store.create('Organisation', { name: `Trimmed ${i}`, kind: 'vendor' }, { principal: 'test', id: `org-trimmed-${i}` });
  t.ok(await until(() => held), 'the stream began to read the new changes');
  // more than the store keeps of the feed in memory (4,096 entries), so the read goes to the trimmed disk
  for (let i = 0; i < 4160; i += 64) {
    await Promise.all(Array.from({ length: 64 }, (_, j) => node.store.create('Organisation', { name: `Later ${i + j}`, kind: 'vendor' }, { principal: 'test' })));
  }
  await node.store.trimFeed(1);
  release();
  await readUntil(/event: reset[^]*\n\n/);
  const head = at(node, node.store.lastSeq);
  t.match(text, new RegExp(`id: ${head}\nevent: reset\ndata: <reset reason="trimmed"/>\n\n`), 'a reset whose id is the head');
  t.notMatch(text, /event: change/, 'and no change of a range the trim cut into');
  await node.store.create('Organisation', { name: 'After the trim', kind: 'vendor' }, { principal: 'test', id: 'org-after-trim' });
  await readUntil(/org-after-trim/);
  t.match(text, new RegExp(`id: ${at(node, node.store.lastSeq)}\nevent: change\ndata: <change seq="${node.store.lastSeq}" id="org-after-trim"`), 'then it reads on');
});

t.test('an SSE stream opened with since=now gives its start as an id at once: dropped before any change, it resumes there', async (t) => {
  const node = await startXmlNode(t);
  await seed(node);
  const open = async (headers: Record<string, string>, until: RegExp): Promise<{ text: string; position: string | null }> => {
    const ac = new AbortController();
    const res = await fetch(`${node.url}/changes?since=now`, { headers: { authorization: ADMIN, accept: 'text/event-stream', ...headers }, signal: ac.signal });
    const reader = res.body!.getReader();
    let text = '';
    while (!until.test(text)) {
      const next = await Promise.race([reader.read(), sleep(5000).then(() => 'late' as const)]);
      if (next === 'late' || next.done) break;
      text += Buffer.from(next.value).toString();
    }
    ac.abort();
    await reader.closed.catch(() => undefined);
    return { text, position: res.headers.get('meridian-changes-position') };
  };
  const first = await open({}, /\n\n/);
  const id = /^: meridian changes feed\nid: (\S+)\n\n$/.exec(first.text)?.[1];
  t.equal(id, first.position, 'the first block is an id-only block naming the start (what an EventSource sends back as Last-Event-ID)');
  t.equal(id, at(node, node.store.lastSeq));
  // changed while the stream is down: the reconnect (same URL, the id it saw) brings it
  await node.store.create('Organisation', { name: 'While away', kind: 'vendor' }, { principal: 'test', id: 'org-while-away' });
  const again = await open({ 'last-event-id': id! }, /org-while-away/);
  t.match(again.text, /event: change\ndata: <change [^\n]*id="org-while-away"/, 'the change made while it was down');
});

t.test('an SSE stream asked for a position the feed cannot read on from starts with a reset, not a 410 (which ends an EventSource for good)', async (t) => {
  const node = await startXmlNode(t, { feedRetention: 0 });
  await seed(node);
  const old = at(node, 1);
  await node.store.trimFeed(1);
  const sse = async (lastEventId: string): Promise<{ status: number; text: string }> => {
    const ac = new AbortController();
    const res = await fetch(`${node.url}/changes`, { headers: { authorization: ADMIN, accept: 'text/event-stream', 'last-event-id': lastEventId }, signal: ac.signal });
    const reader = res.body!.getReader();
    let text = '';
    while (!/event: reset[^]*\n\n/.test(text)) {
      const next = await Promise.race([reader.read(), sleep(5000).then(() => 'late' as const)]);
      if (next === 'late' || next.done) break;
      text += Buffer.from(next.value).toString();
    }
    ac.abort();
    await reader.closed.catch(() => undefined);
    return { status: res.status, text };
  };
  const head = at(node, node.store.lastSeq);
  for (const [position, reason] of [[old, 'trimmed'], [String(node.store.lastSeq), 'position'], ['00000000-0-1', 'position']] as const) {
    const r = await sse(position);
    t.equal(r.status, 200, `${position}: a stream`);
    t.match(r.text, new RegExp(`^: meridian changes feed\n\nid: ${head}\nevent: reset\ndata: <reset reason="${reason}"/>\n\n`), `${position}: which starts with a reset to the head (${reason})`);
  }
  const poll = await call(node, 'GET', `/changes?since=${old}&timeout=0`);
  t.equal(poll.status, 410, 'a long poll of the same position is 410');
  t.match(poll.text, /changes up to \d+ are no longer kept here; drop what you hold from this node/);
});
