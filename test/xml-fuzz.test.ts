/**
 * Fuzzing the XML gateway's parsers over HTTP: random bytes, mutations of
 * valid documents, and the classic attacks (billion laughs, external and
 * parameter entities, deep nesting). Every answer must be a 4xx with an
 * error sentence, or a 2xx for a mutation that is still a valid document
 * (random bytes and junk must always be refused); the node must keep
 * serving; the store must take no change that no answer reported; and it
 * must hold only whole objects that pass the schema, with indexes that
 * agree.
 *
 * FUZZ_SEED=n replays a run; FUZZ_DOCS=n changes how many documents.
 */
import t from 'tap';
import { checkFieldValues, checkIndexes, checkRequired } from '@meridian/store';
import { prng } from './helpers/prng.js';
import { basic, call, PERSON_PW, seed, startXmlNode } from './helpers/xml-node.js';

const SEED = Number(process.env['FUZZ_SEED'] ?? 4242);
const DOCS = Number(process.env['FUZZ_DOCS'] ?? 10_000);

const VALID = [
  '<?xml version="1.0" encoding="UTF-8"?>\n<object type="Organisation" id="org-fuzz">\n  <field name="name">Fuzz &amp; Co</field>\n  <field name="kind">customer</field>\n  <field name="postalCode">0049</field>\n  <field name="telephoneNumber">+27 021</field>\n  <field name="telephoneNumber">+27 022</field>\n</object>\n',
  '<object type="Organisation"><field name="name">B</field><field name="kind">vendor</field><field name="description"><![CDATA[<not markup>]]></field></object>',
  '<object type="Person" id="per-c1"><field name="cn">C</field><field name="sn">S</field><field name="organisation">org-c1</field><field name="uid">contact1</field><field name="roles">customer-contact</field><field name="mail">contact1@example.com</field></object>',
  '<?xml version="1.0"?><objects><object type="Organisation" id="org-fuzz-imp"><field name="name">I</field><field name="kind">customer</field></object><!-- c --><object type="Host"><field name="customer">org-c1</field><field name="hostname">h1</field></object></objects>',
];

const ATTACKS = [
  // billion laughs
  `<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">${Array.from({ length: 8 }, (_, i) => `<!ENTITY lol${i + 3} "${`&lol${i + 2};`.repeat(10)}">`).join('')}]><object type="Organisation"><field name="name">&lol9;</field><field name="kind">vendor</field></object>`,
  // external entity
  '<?xml version="1.0"?><!DOCTYPE foo [<!ENTITY xxe SYSTEM "file:///etc/passwd">]><object type="Organisation"><field name="name">&xxe;</field><field name="kind">vendor</field></object>',
  // parameter entity fetching a remote DTD
  '<?xml version="1.0"?><!DOCTYPE foo [<!ENTITY % dtd SYSTEM "http://127.0.0.1:1/evil.dtd"> %dtd;]><object type="Organisation"><field name="name">Attack</field><field name="kind">vendor</field></object>',
  // a DOCTYPE in lower case, and one after a comment
  '<!doctype object><object type="Organisation"><field name="name">Attack</field><field name="kind">vendor</field></object>',
  '<!-- hi --><!DOCTYPE object><object type="Organisation"><field name="name">Attack</field><field name="kind">vendor</field></object>',
  // an undeclared entity, and a character reference to NUL
  '<object type="Organisation"><field name="name">&lol;</field><field name="kind">vendor</field></object>',
  '<object type="Organisation"><field name="name">a&#0;b</field><field name="kind">vendor</field></object>',
  // deep nesting
  `<object type="Organisation">${'<field name="name">'.repeat(5000)}x${'</field>'.repeat(5000)}</object>`,
  // a huge attribute and many fields
  `<object type="Organisation" id="${'a'.repeat(100_000)}"><field name="kind">vendor</field></object>`,
  `<object type="Organisation">${'<field name="telephoneNumber">1</field>'.repeat(3000)}<field name="name">n</field><field name="kind">vendor</field></object>`,
  // processing instructions, namespaces, XInclude
  '<?xml-stylesheet href="x"?><object type="Organisation" xmlns:xi="http://www.w3.org/2001/XInclude"><xi:include href="file:///etc/passwd"/><field name="name">Attack</field><field name="kind">vendor</field></object>',
  // a CDATA section that never ends, an unterminated comment
  '<object type="Organisation"><field name="name"><![CDATA[abc</field></object>',
  '<object type="Organisation"><!-- <field name="name">x</field></object>',
];

const TARGETS: { method: string; path: string; headers: Record<string, string>; auth?: string }[] = [
  { method: 'PUT', path: '/objects/Organisation/org-fuzz', headers: { 'if-match': '*' } },
  { method: 'POST', path: '/objects/Organisation', headers: {} },
  { method: 'PUT', path: '/me', headers: { 'if-match': '*' }, auth: basic('contact1', PERSON_PW) },
  { method: 'POST', path: '/import', headers: {} },
];

t.test(`fuzz: ${DOCS} random, mutated and hostile XML documents (seed ${SEED})`, async (t) => {
  const node = await startXmlNode(t, { maxBody: 256 * 1024 });
  await seed(node);
  await node.store.create('Organisation', { name: 'Fuzz', kind: 'customer' }, { id: 'org-fuzz' });
  const rnd = prng(SEED);
  const int = (n: number): number => Math.floor(rnd() * n);
  const JUNK = ['<', '>', '&', '"', "'", '</object>', '<field>', '<!DOCTYPE x>', '&amp;', '&#x1F600;', ']]>', '<![CDATA[', '\u0000', '\uFFFF', 'é', '\n', ' name="x"', '<object type="Organisation">', '/>', '=', '<?', '?>'];
  const mutate = (src: string): string => {
    let s = src;
    for (let m = 1 + int(4); m > 0; m--) {
      const at = int(s.length + 1);
      switch (int(6)) {
        case 0:
          s = s.slice(0, at) + JUNK[int(JUNK.length)]! + s.slice(at);
          break;
        case 1:
          s = s.slice(0, at) + s.slice(at + 1 + int(8));
          break;
        case 2:
          s = s.slice(0, at);
          break;
        case 3: {
          const from = int(s.length);
          s = s.slice(0, at) + s.slice(from, from + int(40)) + s.slice(at);
          break;
        }
        case 4:
          s = s.slice(0, at) + String.fromCharCode(int(0x3000)) + s.slice(at + 1);
          break;
        default:
          s = s.replace(/"[^"]*"/, `"${JUNK[int(JUNK.length)]}"`);
      }
    }
    return s;
  };
  /** A document, and whether it is noise (random bytes or junk tokens) that must be refused. */
  const doc = (): { body: string | Uint8Array; noise: boolean } => {
    const kind = int(10);
    if (kind === 0) return { body: Uint8Array.from({ length: int(300) }, () => int(256)), noise: true };
    if (kind === 1) return { body: Array.from({ length: int(200) }, () => JUNK[int(JUNK.length)]).join(''), noise: true };
    return { body: mutate(VALID[int(VALID.length)]!), noise: false };
  };
  // An import goes to other objects than the PUTs' (org-fuzz, and per-c1 behind /me): a PUT
  // changed the store exactly when its answer carries an ETag not seen before, and an import
  // changing a PUT's object would give the next no-op PUT a new ETag for nothing it stored.
  const forImport = (body: string | Uint8Array): string | Uint8Array =>
    typeof body === 'string' ? body.replace(/"org-fuzz"/g, '"org-fuzz-imp0"').replace(/"per-c1"/g, '"per-c2"').replace(/>contact1</g, '>contact2<').replace(/contact1@/g, 'contact2@') : body;
  // Every change the store takes must be one an answer reported: a 2xx create, a 2xx PUT whose
  // ETag is new (one that changes nothing answers the ETag it had, and stores nothing), an
  // import's created and updated, or the objects a stopped import says it applied.
  const seen = new Map<string, Set<string>>();
  for (const target of TARGETS.filter((x) => x.method === 'PUT')) {
    const res = await fetch(`${node.url}${target.path}`, { headers: { authorization: target.auth ?? basic('admin', 'xml-admin-pw') } });
    await res.arrayBuffer();
    seen.set(target.path, new Set([res.headers.get('etag') ?? '']));
  }
  const seqBefore = node.store.lastSeq;
  let reportedWrites = 0;
  const countWrites = (path: string, method: string, res: Response, text: string): void => {
    // an import stopped by a malformed object keeps (and reports) what it applied before it
    if (path === '/import' && res.status >= 400) reportedWrites += Number(/the (\d+) objects before it were applied/.exec(text)?.[1] ?? 0);
    if (res.status < 200 || res.status >= 300) return;
    if (path === '/import') reportedWrites += Number(/ created="(\d+)"/.exec(text)?.[1] ?? 0) + Number(/ updated="(\d+)"/.exec(text)?.[1] ?? 0);
    else if (method !== 'PUT') reportedWrites++;
    else {
      const etag = res.headers.get('etag');
      if (etag === null || !seen.get(path)!.has(etag)) reportedWrites++;
      if (etag !== null) seen.get(path)!.add(etag);
    }
  };

  const statuses = new Map<number, number>();
  const problems: string[] = [];
  let next = 0;
  const worker = async (): Promise<void> => {
    for (let i = next++; i < DOCS; i = next++) {
      const { body, noise } = doc();
      const target = TARGETS[int(TARGETS.length)]!;
      const res = await fetch(`${node.url}${target.path}`, {
        method: target.method,
        headers: { authorization: target.auth ?? basic('admin', 'xml-admin-pw'), 'content-type': 'application/xml', ...target.headers },
        body: target.path === '/import' ? forImport(body) : body,
      });
      const text = await res.text();
      statuses.set(res.status, (statuses.get(res.status) ?? 0) + 1);
      countWrites(target.path, target.method, res, text);
      // (noise can still parse as a document an import then rejects object by object, storing nothing)
      const refused = (res.status >= 400 && res.status < 500) || (target.path === '/import' && res.status === 200 && / created="0" updated="0"/.test(text));
      if (noise && !refused) problems.push(`#${i} noise at ${target.method} ${target.path} was not refused: ${res.status} ${text.slice(0, 200)}`);
      if (res.status >= 500) problems.push(`#${i} ${target.method} ${target.path}: ${res.status} ${text.slice(0, 200)}`);
      else if (res.status >= 400 && !/<error code="[a-z-]+"( field="\w+")?>[^<]{10,}<\/error>/.test(text)) problems.push(`#${i}: ${res.status} without an error sentence: ${text.slice(0, 200)}`);
    }
  };
  // every attack at every target (for /import wrapped in <objects>): refused, the DTD ones before parsing
  for (const [i, attack] of ATTACKS.entries()) {
    for (const target of TARGETS) {
      const body = target.path === '/import' ? attack.replace(/<object[ >]/, (m) => `<objects>${m}`) + '</objects>' : attack;
      const res = await fetch(`${node.url}${target.path}`, {
        method: target.method,
        headers: { authorization: target.auth ?? basic('admin', 'xml-admin-pw'), 'content-type': 'application/xml', ...target.headers },
        body,
      });
      const text = await res.text();
      countWrites(target.path, target.method, res, text);
      // (an import reports a rejected object in a 200 report, having stored nothing)
      const refused = (res.status >= 400 && res.status < 500) || (target.path === '/import' && res.status === 200 && /created="0" updated="0" unchanged="0" rejected="1"/.test(text));
      if (!refused) problems.push(`attack #${i} at ${target.method} ${target.path}: ${res.status} ${text.slice(0, 200)}`);
      if (/<!DOCTYPE/i.test(attack) && !/DOCTYPE and entity declarations are not accepted/.test(text)) problems.push(`attack #${i} at ${target.path} was not refused as a DTD: ${text.slice(0, 200)}`);
    }
  }
  await Promise.all(Array.from({ length: 8 }, worker));
  t.same(problems.slice(0, 10), [], `every answer is a 4xx with a sentence, or a 2xx; replay with FUZZ_SEED=${SEED}`);
  const fourxx = [...statuses].filter(([s]) => s >= 400 && s < 500).reduce((a, [, n]) => a + n, 0);
  t.ok(fourxx > DOCS * 0.7, `most were refused: ${JSON.stringify(Object.fromEntries(statuses))}`);
  t.equal((await call(node, 'GET', '/objects/Organisation/org-c1')).status, 200, 'the node still serves');
  const stored = node.store.lastSeq - seqBefore;
  t.equal(stored, reportedWrites, `every change stored was reported, and every write reported was stored (${stored} changes, ${reportedWrites} reported writes)`);
  t.ok(reportedWrites > 0, 'and some mutations were still valid writes');

  // only whole, valid objects were stored
  t.same(await checkIndexes(node.store), [], 'indexes agree with the objects');
  let after: string | undefined;
  let checked = 0;
  for (const type of ['Organisation', 'Person', 'Host']) {
    const def = node.store.schema.types.get(type)!;
    do {
      const page = await node.store.list(type, { limit: 1000, after });
      for (const o of page.items) {
        try {
          const { password: _pw, ...rest } = o.fields;
          void _pw;
          const values = checkFieldValues(def, o.id, rest);
          checkRequired(def, o.id, Object.fromEntries(Object.entries(values).filter(([, v]) => v !== null)) as never);
          checked++;
        } catch (e) {
          t.fail(`${o.id} is stored but invalid: ${(e as Error).message}`);
        }
      }
      after = page.next;
    } while (after);
  }
  t.ok(checked > 10, `${checked} stored objects pass the schema`);
});
