import { request } from 'node:http';
import t, { type Test } from 'tap';
import { pino } from 'pino';
import { MeridianNode, resolveConfig } from '@meridian/node';
import { tempDir } from './helpers/tmp.js';

const AUTH = `Basic ${Buffer.from('admin:pw').toString('base64')}`;

async function startInProcess(t: Test): Promise<MeridianNode> {
  const config = resolveConfig({ flags: { dir: tempDir(t), httpPort: 0, adminPassword: 'pw', maxBody: 4096 } });
  const node = await MeridianNode.start(config, pino({ level: 'silent' }));
  t.teardown(() => node.stop());
  return node;
}

/** A WebSocket upgrade request for `path`, as a client sends it. */
const webSocketUpgrade = (path: string): string =>
  `GET ${path} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n`;

interface Reply {
  status: number;
  body: { error?: { code: string; message: string; field?: string } } & Record<string, unknown>;
  headers: Record<string, string | string[] | undefined>;
}

function call(node: MeridianNode, method: string, path: string, body?: string | Buffer, headers: Record<string, string> = {}): Promise<Reply> {
  return new Promise((resolve, reject) => {
    // (the path as it is: a URL string would have its dot segments dropped before it is sent)
    const { hostname, port } = new URL(node.url);
    const req = request({ hostname, port, path, method, headers: { authorization: AUTH, ...headers } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString();
        resolve({ status: res.statusCode!, body: text ? JSON.parse(text) : {}, headers: res.headers });
      });
    });
    req.on('error', reject);
    if (body !== undefined) req.write(body);
    req.end();
  });
}

const json = { 'content-type': 'application/json' };

t.test('bad input on the admin API gets a clear 4xx and stores nothing', async (t) => {
  const node = await startInProcess(t);
  const person = (await node.store.create('Person', { cn: 'Ada', sn: 'Lovelace' })).id;
  const seq = node.store.lastSeq;
  const cases: [string, string, string | Buffer | undefined, Record<string, string>, number, RegExp][] = [
    ['PATCH', `/api/objects/${person}`, '{"type":"Organisation","fields":{"title":"Boss"}}', json, 409, /is a Person, not a Organisation; an object's type never changes/],
    ['PATCH', `/api/objects/${person}`, '{"type":42,"fields":{"title":"Boss"}}', json, 400, /"type" must name a type/],
    ['GET', `/api/conflicts?after=${Buffer.from('a').toString('base64url')}`, undefined, {}, 400, /cursor was not given by a list of conflicts/],
    ['GET', `/api/conflicts?after=${Buffer.from('hst-0').toString('base64url')}`, undefined, {}, 400, /cursor was not given by a list of conflicts/],
    ['GET', `/api/conflicts?after=${'A'.repeat(12001)}`, undefined, {}, 400, /cursor is not one this node handed out/],
    ['POST', '/api/objects', '{"type": "Person", ', json, 400, /^the body is not valid JSON/],
    ['POST', '/api/objects', 'x'.repeat(5000), json, 413, /^request body is larger than the limit of 4096 bytes$/],
    ['POST', '/api/objects', '{"type":"Person","fields":{"cn":"a","sn":"b"}}', { 'content-type': 'text/plain' }, 415, /send the body as application\/json/],
    ['POST', '/api/objects', '[1,2]', json, 400, /must be a JSON object/],
    ['POST', '/api/objects', '{"type":"Person","fields":{"cn":"a","sn":"b"},"extra":1}', json, 400, /unknown property "extra"/],
    ['POST', '/api/objects', '{"type":5,"fields":{}}', json, 400, /"type" must name a type/],
    ['POST', '/api/objects', '{"type":"Person","fields":"cn=a"}', json, 400, /"fields" must be a JSON object/],
    ['POST', '/api/objects', '{"type":"Person","fields":{"cn":{"x":1},"sn":"b"}}', json, 400, /field "cn" must be a string, number, boolean, list of those, or null/],
    ['POST', '/api/objects', '{"type":"Person","fields":{"cn":"a"}}', json, 422, /field "sn" is required/],
    ['POST', '/api/objects', '{"type":"Spaceship","fields":{}}', json, 422, /unknown type "Spaceship"/],
    ['POST', '/api/objects', '{"type":"Person","id":"bad id","fields":{"cn":"a","sn":"b"}}', json, 422, /may hold only letters/],
    ['POST', '/api/objects', '{"type":"License","fields":{"seats":"lots"}}', json, 422, /"seats" must be an integer/],
    ['PATCH', '/api/objects/per-none', '{"fields":{"cn":"x"}}', json, 404, /^no object per-none$/],
    ['PUT', '/api/objects/x/y', '{}', json, 404, /no such API resource/],
    ['DELETE', '/api/objects', undefined, {}, 405, /DELETE is not allowed here; use GET, POST/],
    ['GET', '/api/objects', undefined, {}, 400, /say which type to list/],
    ['GET', '/api/objects?type=Person&limit=0', undefined, {}, 400, /limit must be a whole number/],
    ['GET', '/api/objects?type=Person&after=%%%', undefined, {}, 400, /cursor is not one this node handed out/],
    ['GET', '/api/objects?type=Person&cn=a&sn=b', undefined, {}, 400, /filter by one field at a time/],
    ['GET', '/api/objects/%E0%A4%A', undefined, {}, 400, /not valid percent-encoding/],
    ['GET', '/api/feed?after=-1', undefined, {}, 400, /after must be a feed position/],
    ['GET', '/nowhere', undefined, {}, 404, /nothing at \/nowhere/],
    ['GET', '//a:99999/', undefined, {}, 404, /^nothing at \/\/a:99999\/;/],
    ['OPTIONS', '*', undefined, {}, 400, /^the request target is not a valid path/],
    // a path is a path: read against a base, //x/metrics was host x and path /metrics, past a proxy that passes /metrics to Prometheus only
    ['GET', '//x/metrics', undefined, {}, 404, /^nothing at \/\/x\/metrics;/],
    ['GET', '/a/%2e%2e/metrics', undefined, {}, 400, /^the request path "\/a\/%2e%2e\/metrics" is not in normal form/],
    ['GET', '/x/../status', undefined, {}, 400, /is not in normal form/],
    ['POST', '/api/objects', Buffer.from('{"type":"Organisation","fields":{"name":"M\xfcller","kind":"vendor"}}', 'latin1'), { 'content-type': 'application/json; charset=iso-8859-1' }, 415, /^send the body as UTF-8, not iso-8859-1$/],
    ['POST', '/api/objects', Buffer.from('{"type":"Organisation","fields":{"name":"M\xfcller","kind":"vendor"}}', 'latin1'), json, 400, /^the body is not valid UTF-8$/],
    ['GET', '/api/objects?type=Person&limit=0x10', undefined, {}, 400, /limit must be a whole number/],
    ['GET', '/api/objects?type=Person&limit=1e2', undefined, {}, 400, /limit must be a whole number/],
    ['GET', '/api/objects?type=Person&limit=', undefined, {}, 400, /limit must be a whole number/],
    ['GET', '/api/feed?after=0x10', undefined, {}, 400, /after must be a feed position/],
    ['POST', '/healthz', '{}', json, 405, /^POST is not allowed here; use GET, HEAD$/],
    ['DELETE', '/metrics', undefined, {}, 405, /^DELETE is not allowed here; use GET, HEAD$/],
    ['POST', '/readyz', '{}', json, 405, /^POST is not allowed here; use GET, HEAD$/],
    ['POST', '/api/objects', '{"type":"Organisation","id":"replica.laptop-17","fields":{"name":"X","kind":"vendor"}}', json, 422, /ids beginning with "replica\." are kept for replica credentials/],
  ];
  for (const [method, path, body, headers, status, message] of cases) {
    const r = await call(node, method, path, body, headers);
    t.equal(r.status, status, `${method} ${path} -> ${status}`);
    t.match(r.body.error?.message ?? '', message, `${method} ${path}: ${r.body.error?.message}`);
  }
  const v = await call(node, 'POST', '/api/objects', '{"type":"License","fields":{"seats":"lots"}}', json);
  t.equal(v.body.error?.field, 'seats', 'validation errors name the field');
  t.equal(node.store.lastSeq, seq, 'nothing was stored');
  // the charset by its parameter's name, a quoted value read whole (the same parser as the XML gateway's)
  const quoted = await call(node, 'POST', '/api/objects', '{"type":"Organisation","fields":{"name":"Quoted","kind":"vendor"}}', { 'content-type': 'application/json; profile="a;charset=latin1"' });
  t.equal(quoted.status, 201, `"charset=" inside a quoted parameter: ${quoted.body.error?.message}`);
  const unauth = await call(node, 'GET', '/status', undefined, { authorization: '' });
  t.equal(unauth.status, 401);
  t.match(unauth.headers['www-authenticate'], /^Basic realm="meridian"/);
  t.equal((await call(node, 'GET', '/healthz', undefined, { authorization: '' })).status, 200, 'liveness needs no password');
  // the key of a unique value's conflict between objects with ids near 128 characters: three ids, a value, the writes
  const longKey = `k${'p'.repeat(128)}\u0000uid\u0000${'q'.repeat(128)}\u0000${'r'.repeat(128)}\u0000${'v'.repeat(200)}`;
  const long = await call(node, 'GET', `/api/conflicts?after=${Buffer.from(longKey).toString('base64url')}`);
  t.equal(long.status, 200, 'a cursor of a long conflict key, as the node hands out, is taken back');
});

t.test('ETags and If-Match guard against lost updates', async (t) => {
  const node = await startInProcess(t);
  const created = await call(node, 'POST', '/api/objects', JSON.stringify({ type: 'Organisation', fields: { name: 'Acme', kind: 'customer' } }), json);
  t.equal(created.status, 201);
  const id = created.body['id'] as string;
  t.equal(created.headers['location'], `/api/objects/${id}`);
  const etag = created.headers['etag'] as string;
  const ok = await call(node, 'PATCH', `/api/objects/${id}`, '{"fields":{"l":"Cape Town"}}', { ...json, 'if-match': etag });
  t.equal(ok.status, 200);
  const stale = await call(node, 'PATCH', `/api/objects/${id}`, '{"fields":{"l":"Durban"}}', { ...json, 'if-match': etag });
  t.equal(stale.status, 412);
  t.match(stale.body.error?.message, /has changed since version .*; fetch it again and retry/);
  const replaced = await call(node, 'PUT', `/api/objects/${id}`, '{"fields":{"name":"Acme Ltd","kind":"customer"}}', json);
  t.same(replaced.body['fields'], { name: 'Acme Ltd', kind: 'customer' }, 'PUT replaces the whole object');
});

t.test('random bodies never crash the node, never store, always 4xx', async (t) => {
  const node = await startInProcess(t);
  const seq = node.store.lastSeq;
  let seed = 7;
  const rnd = (): number => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff);
  const pieces = ['{', '}', '[', ']', '"type"', '"fields"', '"Person"', ':', ',', '"cn"', 'null', '1e999', '"\\u0000"', 'true', '"x"', '"id"', '"../x"'];
  for (let i = 0; i < 300; i++) {
    const body = rnd() < 0.5 ? Buffer.from(Array.from({ length: Math.floor(rnd() * 64) }, () => Math.floor(rnd() * 256))) : Array.from({ length: Math.floor(rnd() * 12) }, () => pieces[Math.floor(rnd() * pieces.length)]).join('');
    const r = await call(node, rnd() < 0.5 ? 'POST' : 'PATCH', rnd() < 0.5 ? '/api/objects' : '/api/objects/per-x', body, json);
    if (r.status < 400 || r.status >= 500) t.fail(`body ${JSON.stringify(body.toString())} got ${r.status}`);
  }
  t.equal(node.store.lastSeq, seq, 'nothing stored');
  t.equal((await call(node, 'GET', '/healthz')).status, 200, 'still serving');
});

t.test('well-formed bodies with one bad field are refused naming it, and the good ones among them are stored', async (t) => {
  const node = await startInProcess(t);
  const post = (body: unknown): Promise<Reply> => call(node, 'POST', '/api/objects', JSON.stringify(body), json);
  const created = async (body: unknown): Promise<string> => {
    const r = await post(body);
    if (r.status !== 201) throw new Error(`setup create got ${r.status}: ${r.body.error?.message}`);
    return r.body['id'] as string;
  };
  const customer = await created({ type: 'Organisation', fields: { name: 'Cust', kind: 'customer' } });
  const reseller = await created({ type: 'Organisation', fields: { name: 'Res', kind: 'reseller' } });
  const product = await created({ type: 'Product', fields: { name: 'Widget' } });
  const release = await created({ type: 'Release', fields: { product, version: '1.0' } });
  const taken = await created({ type: 'Person', fields: { cn: 'Taken', sn: 'T', mail: ['taken@example.com'], uid: 'taken' } });
  let seed = Number(process.env['ADMIN_FUZZ_SEED'] ?? 11);
  const rnd = (): number => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff);
  const pick = <T,>(xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)]!;
  let serial = 0;
  // valid bodies of three types, each with values no earlier body took
  const bases: (() => { type: string; fields: Record<string, unknown> })[] = [
    () => ({ type: 'Person', fields: { cn: `P ${++serial}`, sn: 'S', mail: [`p${serial}@example.com`], uid: `p${serial}`, c: 'ZA', organisation: customer, roles: ['customer-contact'] } }),
    () => ({ type: 'Organisation', fields: { name: `O ${++serial}`, kind: 'customer', reseller, c: 'DE', telephoneNumber: ['+27 021'] } }),
    () => ({ type: 'License', fields: { customer, release, validFrom: '2026-01-01', seats: 5, modules: ['a'] } }),
  ];
  // [what is wrong, the field the refusal must name (or undefined where the body is refused before a field), its status, applies to]
  type Mutation = [string, string | undefined, number, (o: { type: string; fields: Record<string, unknown> }) => boolean];
  const f = (o: { fields: Record<string, unknown> }): Record<string, unknown> => o.fields;
  const mutations: Mutation[] = [
    ['a list for a single value', 'cn', 422, (o) => o.type === 'Person' && ((f(o)['cn'] = ['a', 'b']), true)],
    ['a required field null', 'sn', 422, (o) => o.type === 'Person' && ((f(o)['sn'] = null), true)],
    ['a required field missing', 'name', 422, (o) => o.type === 'Organisation' && delete f(o)['name']],
    ['an unknown field', 'nickname', 422, (o) => ((f(o)['nickname'] = 'x'), true)],
    ['a value outside the enum', 'kind', 422, (o) => o.type === 'Organisation' && ((f(o)['kind'] = 'partner'), true)],
    ['a role outside the enum', 'roles', 422, (o) => o.type === 'Person' && ((f(o)['roles'] = ['customer-contact', 'boss']), true)],
    ['an integer that is text', 'seats', 422, (o) => o.type === 'License' && ((f(o)['seats'] = 'lots'), true)],
    ['an integer below its minimum', 'seats', 422, (o) => o.type === 'License' && ((f(o)['seats'] = 0), true)],
    ['an integer above its maximum', 'seats', 422, (o) => o.type === 'License' && ((f(o)['seats'] = 1_000_001), true)],
    ['a fraction for an integer', 'seats', 422, (o) => o.type === 'License' && ((f(o)['seats'] = 1.5), true)],
    ['a date that is no date', 'validFrom', 422, (o) => o.type === 'License' && ((f(o)['validFrom'] = pick(['2026-13-45', 'yesterday', '2026-02-30'])), true)],
    ['a value against its pattern', 'c', 422, (o) => o.type !== 'License' && ((f(o)['c'] = 'ZAF'), true)],
    ['a mail without @', 'mail', 422, (o) => o.type === 'Person' && ((f(o)['mail'] = ['no-at.example.com']), true)],
    ['a uid with a space', 'uid', 422, (o) => o.type === 'Person' && ((f(o)['uid'] = 'a b'), true)],
    ['a value past its length', 'cn', 422, (o) => o.type === 'Person' && ((f(o)['cn'] = 'x'.repeat(257)), true)],
    ['a reference to nothing', 'organisation', 422, (o) => o.type === 'Person' && ((f(o)['organisation'] = 'org-doesnotexist'), true)],
    ['a reference to the wrong type', 'release', 422, (o) => o.type === 'License' && ((f(o)['release'] = customer), true)],
    ['a reference its where refuses', 'reseller', 422, (o) => o.type === 'Organisation' && ((f(o)['reseller'] = customer), true)],
    ['a mail another person holds', 'mail', 422, (o) => o.type === 'Person' && ((f(o)['mail'] = ['Taken@Example.com']), true)],
    ['a uid another person holds', 'uid', 422, (o) => o.type === 'Person' && ((f(o)['uid'] = 'TAKEN'), true)],
    ['a NUL in a value', 'title', 422, (o) => o.type === 'Person' && ((f(o)['title'] = 'a\u0000b'), true)],
    // (refused by the API before the schema sees them: the message names the field, the error no field)
    ['an object as a value', undefined, 400, (o) => o.type === 'Person' && ((f(o)['title'] = { x: 1 }), true)],
    ['a list in a list', undefined, 400, (o) => o.type !== 'License' && ((f(o)['telephoneNumber'] = [['+1']]), true)],
  ];
  // (each body is a new object: a control stored earlier must not make a later body a no-op)
  let controls = 0;
  const before = node.store.lastSeq;
  const seen = new Set<string>();
  for (let i = 0; i < 400; i++) {
    const body = pick(bases)();
    if (rnd() < 0.1) {
      const r = await post(body);
      t.equal(r.status, 201, `a valid ${body.type} is stored (${r.body.error?.message ?? ''})`);
      controls++;
      continue;
    }
    const candidates = mutations.filter(([, , , applies]) => applies(structuredClone(body)));
    const [what, field, status, apply] = pick(candidates);
    apply(body);
    seen.add(what);
    const r = await post(body);
    if (r.status !== status || (field !== undefined && r.body.error?.field !== field)) {
      t.fail(`${what} in a ${body.type}: ${r.status} ${JSON.stringify(r.body.error)}; expected ${status} naming ${field}`);
    }
    if (r.body.error?.message === undefined || /\n|^\s*at /m.test(r.body.error.message)) t.fail(`${what}: no one-sentence message: ${JSON.stringify(r.body)}`);
  }
  t.equal(seen.size, mutations.length, 'every kind of bad field was tried');
  t.ok(controls > 10, `${controls} valid bodies were sent among the bad ones`);
  t.equal(node.store.lastSeq - before, controls, 'exactly the valid bodies were stored, nothing of the refused ones');
  t.equal(node.store.objectCounts()['Person']! + node.store.objectCounts()['Organisation']! + (node.store.objectCounts()['License'] ?? 0), 3 + controls, 'the counts agree');
});

t.test("a conflict over a password lists who wrote what, not the hashes", async (t) => {
  const { Store, loadSchemaFile } = await import('@meridian/store');
  const { DEFAULT_SCHEMA } = await import('@meridian/node');
  const node = await startInProcess(t);
  const dir = tempDir(t);
  const other = await Store.open({ dir, schema: loadSchemaFile(DEFAULT_SCHEMA), nodeId: 'other' });
  t.teardown(() => other.close());
  const ship = async (from: { readFeed: Store['readFeed'] }, to: Store, since: number): Promise<void> => {
    const entries = await from.readFeed(since, 1000);
    await to.applyRemote(entries.map(({ seq: _seq, ...c }) => c));
  };
  const p = await node.store.create('Person', { cn: 'Ada', sn: 'Lovelace', uid: 'ada' });
  await ship(node.store, other, 0);
  const mark = node.store.lastSeq;
  const otherMark = other.lastSeq;
  // the same two fields set on both nodes at once: two conflicts, one over a password
  await node.store.update(p.id, { password: 'first-secret-1', title: 'Countess' });
  await other.update(p.id, { password: 'second-secret-2', title: 'Analyst' });
  await ship(other, node.store, otherMark);
  t.ok(mark > 0);
  const r = await call(node, 'GET', '/api/conflicts');
  t.equal(r.status, 200);
  const items = r.body['items'] as { field: string; values: { value: unknown; secret?: boolean; node: string }[] }[];
  const pw = items.find((c) => c.field === 'password');
  const title = items.find((c) => c.field === 'title');
  t.ok(pw && title, `both conflicts listed: ${items.map((c) => c.field).join(', ')}`);
  t.same(pw!.values.map((v) => [v.value, v.secret]), [[null, true], [null, true]], 'a password conflict shows no value');
  t.same(pw!.values.map((v) => v.node).sort(), [node.store.nodeId, 'other'].sort(), 'but who wrote it');
  t.same(title!.values.map((v) => v.value).sort(), ['Analyst', 'Countess'], 'other fields show their values');
  t.notMatch(JSON.stringify(r.body), /scrypt|\$s/, 'no hash anywhere in the answer');
});

t.test('a request offering an upgrade other than WebSocket (h2c) is answered in HTTP/1.1, not 404', async (t) => {
  const { connect } = await import('node:net');
  const node = await startInProcess(t);
  const { hostname, port } = new URL(node.url);
  const raw = (text: string): Promise<string> =>
    new Promise((resolve, reject) => {
      const s = connect(Number(port), hostname, () => s.write(text));
      const chunks: Buffer[] = [];
      s.on('data', (c: Buffer) => chunks.push(c));
      s.on('end', () => resolve(Buffer.concat(chunks).toString()));
      // (a node that closes on a request it did not read all of may reset the connection after its answer)
      s.on('error', (e) => (chunks.length ? resolve(Buffer.concat(chunks).toString()) : reject(e)));
      s.setTimeout(5000, () => reject(new Error('no answer in 5 s')));
    });
  const h2c = 'Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n';
  const health = await raw(`GET /healthz HTTP/1.1\r\nHost: x\r\n${h2c}\r\n`);
  t.match(health, /^HTTP\/1\.1 200 OK\r\n/, 'answered as HTTP/1.1 (curl --http2 and Java send this on http://)');
  t.match(health, /\r\nconnection: close\r\n/i, 'and the connection closed after it');
  t.match(health, /"ok":true/);
  const status = await raw(`GET /status HTTP/1.1\r\nHost: x\r\nAuthorization: ${AUTH}\r\n${h2c}\r\n`);
  t.match(status, /^HTTP\/1\.1 200 OK\r\n[\s\S]*"nodeId"/, 'a signed-in request too');
  const posted = await raw(`POST /api/objects HTTP/1.1\r\nHost: x\r\nAuthorization: ${AUTH}\r\nContent-Type: application/json\r\nContent-Length: 2\r\n${h2c}\r\n{}`);
  t.match(posted, /^HTTP\/1\.1 400 /, 'one with a body, which cannot be read once the parser is gone: 400');
  t.match(posted, /send it again without an Upgrade header/);
  const huge = await raw(`GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ${'y'.repeat(17_000)}\r\n\r\n`);
  t.match(huge, /^HTTP\/1\.1 431 /, 'headers over the limit: 431, not 400');
  const garbage = await raw('NOT HTTP AT ALL\r\n\r\n');
  t.match(garbage, /^HTTP\/1\.1 400 /, 'a malformed request: 400');
  const ws = await raw(webSocketUpgrade('/healthz'));
  t.match(ws, /^HTTP\/1\.1 404 Not Found\r\n[\s\S]*no WebSocket endpoint at \/healthz/, 'a WebSocket upgrade elsewhere than /sync is still 404');
});

t.test('a WebSocket upgrade refused with 404 survives a client that resets the connection, and does not hold the node\'s stop', async (t) => {
  const { connect } = await import('node:net');
  const node = await startInProcess(t);
  const { hostname, port } = new URL(node.url);
  const upgrade = webSocketUpgrade('/nope');
  // the request, then a reset at once: the node's 404 meets a connection already gone
  for (let i = 0; i < 30; i++) {
    const s = connect(Number(port), hostname);
    s.on('error', () => undefined);
    await new Promise<void>((r) => s.once('connect', () => r()));
    s.write(upgrade, () => s.resetAndDestroy());
    await new Promise<void>((r) => s.once('close', () => r()));
  }
  t.equal((await call(node, 'GET', '/healthz')).status, 200, 'the node still serves');
  // a client that reads the 404 and keeps its side open: the node closes the connection, and stops without waiting for it
  const kept = connect(Number(port), hostname);
  kept.on('error', () => undefined);
  let got = '';
  kept.on('data', (c: Buffer) => (got += c.toString()));
  kept.allowHalfOpen = true;
  const ended = new Promise<void>((r) => kept.once('end', () => r()));
  kept.write(upgrade);
  await ended;
  t.match(got, /^HTTP\/1\.1 404 Not Found\r\n[\s\S]*no WebSocket endpoint at \/nope/);
  const started = Date.now();
  await node.stop();
  t.ok(Date.now() - started < 4000, `stopped in ${Date.now() - started} ms`);
  kept.destroy();
});

t.test('a stream answered without its upgrade does not hold the node\'s stop past the 5 s every connection gets', async (t) => {
  const { connect } = await import('node:net');
  const node = await startInProcess(t);
  const { hostname, port } = new URL(node.url);
  const s = connect(Number(port), hostname);
  t.teardown(() => s.destroy());
  let got = '';
  s.on('data', (c: Buffer) => (got += c.toString()));
  s.on('error', () => undefined);
  s.write(`GET /changes?since=0 HTTP/1.1\r\nHost: x\r\nAuthorization: ${AUTH}\r\nAccept: text/event-stream\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n`);
  const deadline = Date.now() + 5000;
  while (!/text\/event-stream/.test(got) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  t.match(got, /^HTTP\/1\.1 200 OK\r\n[\s\S]*text\/event-stream/, 'an SSE stream, served in HTTP/1.1');
  const cut = new Promise<void>((r) => s.once('close', () => r()));
  const started = Date.now();
  const stopped = await Promise.race([node.stop().then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), 9000))]);
  const took = Date.now() - started;
  t.ok(stopped && took < 7000, `stop ended at the 5 s cut-off (in ${took} ms), not when the stream did`);
  await cut;
  t.pass('the stream\'s connection was closed');
});

t.test('a body whose client left before it was read, though it had all come, is refused, not awaited for good', async (t) => {
  const { createServer } = await import('node:http');
  const { connect } = await import('node:net');
  const { readBody } = await import('../packages/node/dist/http-util.js');
  const outcome = new Promise<string>((resolve) => {
    const server = createServer((req) => {
      // the handler is busy (signing in) until the client has gone away and the request has said so (its 'close'
      // has been emitted: a fixed wait could end, on a loaded machine, in the same turn as the client's destroy)
      req.once('close', () =>
        setImmediate(() => {
          readBody(req, 1000).then(
            () => resolve('read'),
            (e: Error) => resolve(`refused: ${e.message}`),
          );
        }),
      );
    });
    server.listen(0, '127.0.0.1', () => {
      const s = connect((server.address() as { port: number }).port, '127.0.0.1', () => {
        s.write('POST /x HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}');
        setTimeout(() => s.destroy(), 50);
      });
    });
    t.teardown(() => server.close());
  });
  const r = await Promise.race([outcome, new Promise<string>((r) => setTimeout(() => r('still waiting after 3 s'), 3000))]);
  t.equal(r, 'refused: the client closed the connection before its body was read');
});

t.test('GET /api/check: a second check asked while one runs shares its answer, and a check reads one moment', async (t) => {
  const node = await startInProcess(t);
  for (let i = 0; i < 200; i++) await node.store.create('Organisation', { name: `C${i}`, kind: 'vendor' });
  const ask = (): Promise<Reply> => call(node, 'GET', '/api/check');
  // (a check reads the store through one snapshot: count them. The first check's reads wait 1 s, so that the
  // second request surely comes while it runs: 200 objects alone were checked before it came, now and then, and
  // a loaded machine can hold a request back for a few hundred ms)
  let snapshots = 0;
  const snapshotReader = node.store.snapshotReader.bind(node.store);
  node.store.snapshotReader = () => {
    const r = snapshotReader();
    if (snapshots++ > 0) return r;
    const held = new Promise((resolve) => setTimeout(resolve, 1000));
    return {
      async *raw(prefix: string) {
        await held;
        yield* r.raw(prefix);
      },
      meta: <T,>(name: string) => r.meta<T>(name),
      close: () => r.close(),
    };
  };
  const [a, b] = await Promise.all([ask(), ask()]);
  t.equal(a.status, 200);
  t.equal(b.status, 200, 'not refused while the first runs');
  t.same(a.body, b.body);
  t.equal(snapshots, 1, 'one check ran for both');
  await ask();
  t.equal(snapshots, 2, 'and the next runs again');
  t.match(a.body, { nodeId: node.store.nodeId, objects: 200, problems: [] });
});
