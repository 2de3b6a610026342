/**
 * The LDAP gateway against Debian's ldap-utils, the clients people use: the
 * Thunderbird filter on mixed-case data, paged results, limits, binds,
 * WhoAmI, password modify, modify, compare, refused writes, access rules,
 * LDAPS, and requests that must not take the node down.
 */
import t, { type Test } from 'tap';
import { createHash, randomBytes } from 'node:crypto';
import { connect, type Socket } from 'node:net';
import type { MeridianNode } from '@meridian/node';
import { ADMIN_PW, PERSON_PW, seed, startXmlNode } from './helpers/xml-node.js';
import { freePort } from './helpers/free-port.js';
import { ldapTool, parseLdif } from './helpers/ldap-utils.js';
import { abandonRequest, bindRequest, whoamiRequest } from './helpers/ldap-ber.js';
import { makeCerts } from './helpers/certs.js';
import { tempDir } from './helpers/tmp.js';
import { sleep } from './helpers/wait.js';
import { integer, octets, tlv } from '../packages/ldap/dist/ber.js';
import { berTree, type BerNode } from '../packages/ldap/dist/validate.js';
import { MessageFramer } from '../packages/ldap/dist/framing.js';

const BASE = 'dc=example,dc=com';
const ADMIN_DN = `cn=admin,${BASE}`;
const dnOf = (id: string): string => `meridianId=${id},ou=people,${BASE}`;

interface Directory {
  node: MeridianNode;
  url: string;
  port: number;
}

async function directory(t: Test, flags: Record<string, string | number> = {}, tuning: { bindDelayMs?: number } = {}): Promise<Directory> {
  const port = await freePort();
  const node = await startXmlNode(t, { ldapPort: port, ...flags }, tuning);
  await seed(node);
  return { node, url: `ldap://127.0.0.1:${port}`, port };
}

const search = (d: Directory, bind: [string, string] | null, args: string[]) =>
  ldapTool('ldapsearch', ['-x', '-LLL', '-H', d.url, ...(bind ? ['-D', bind[0], '-w', bind[1]] : []), ...args]);
const asAdmin: [string, string] = [ADMIN_DN, ADMIN_PW];

t.test('the Thunderbird filter on mixed-case data, answered with givenName and telephoneNumber', async (t) => {
  const d = await directory(t);
  const s = d.node.store;
  await s.create('Person', { cn: 'JoAnna McJOHNSON', givenName: 'JoAnna', sn: 'McJOHNSON', organisation: 'org-c1', telephoneNumber: ['+27 021 555 0199', '+27 82 000 0001'] }, { id: 'per-joanna' });
  await s.create('Person', { cn: 'Peter Smith', givenName: 'Peter', sn: 'Smith', mail: ['BJORN@Example.com'], organisation: 'org-c1' }, { id: 'per-mailjo' });
  await s.create('Person', { cn: 'Jonas Black', sn: 'Black', organisation: 'org-c2' }, { id: 'per-jonas' });
  await s.create('Person', { cn: 'Nobody Here', givenName: 'Nobody', sn: 'Here', organisation: 'org-c2' }, { id: 'per-nobody' });
  const r = await search(d, asAdmin, ['-b', BASE, '(|(cn=*jo*)(mail=*jo*)(givenName=*jo*)(sn=*jo*))', 'givenName', 'TELEPHONENUMBER']);
  t.equal(r.code, 0, r.stderr);
  const entries = parseLdif(r.stdout);
  t.same(entries.map((e) => e.dn).sort(), [dnOf('per-joanna'), dnOf('per-jonas'), dnOf('per-mailjo')].sort(), 'matches in cn, mail and givenName, whatever their case, and nothing else');
  const jo = entries.find((e) => e.dn === dnOf('per-joanna'))!;
  t.same(jo.attrs, { givenName: ['JoAnna'], telephoneNumber: ['+27 021 555 0199', '+27 82 000 0001'] }, 'the attributes asked for in capitals come back, multi-valued ones whole');
  // the same filter in another case, and the value folded the way telephone numbers match
  const again = await search(d, asAdmin, ['-b', BASE, '(|(CN=*JO*)(Mail=*jO*)(GIVENNAME=*Jo*)(sn=*jo*))', '1.1']);
  t.equal(parseLdif(again.stdout).length, 3);
  await s.create('Person', { cn: 'Björn Müller', givenName: 'Björn', sn: 'Müller', organisation: 'org-c2' }, { id: 'per-muller' });
  for (const f of ['(sn=MÜLLER)', '(cn=*üll*)', '(|(cn=*bJö*)(mail=*bJö*)(givenName=*bJö*)(sn=*bJö*))']) {
    const r8 = await search(d, asAdmin, ['-b', BASE, f, 'cn']);
    t.same(parseLdif(r8.stdout).map((e) => e.attrs['cn']?.[0]), ['Björn Müller'], `${f}: non-ASCII letters match, case-insensitively`);
  }
  const phone = await search(d, asAdmin, ['-b', BASE, '(telephoneNumber=+27-021-5550199)', 'cn']);
  t.same(parseLdif(phone.stdout).map((e) => e.dn), [dnOf('per-joanna')], 'telephone numbers match without spaces and hyphens');
});

t.test('the whole filter language, scopes, and requested attributes', async (t) => {
  const d = await directory(t);
  const dns = async (filter: string, extra: string[] = ['-b', BASE]): Promise<string[]> => {
    const r = await search(d, asAdmin, [...extra, filter, '1.1']);
    t.equal(r.code, 0, `${filter}: ${r.stderr}`);
    return parseLdif(r.stdout).map((e) => e.dn).sort();
  };
  t.same(await dns('(&(objectClass=inetOrgPerson)(employeeType=customer-contact))'), [dnOf('per-c1'), dnOf('per-c2')].sort(), 'and, equality on a multi-valued attribute');
  t.same(await dns('(&(objectClass=inetOrgPerson)(!(employeeType=*)))'), [], 'not and presence');
  // an attribute type nobody defined is Undefined, which no not turns true (RFC 4511 4.5.1.7; OpenLDAP does the same)
  t.same(await dns('(!(fooBar=x))', ['-b', BASE, '-s', 'sub']), [], 'not of an unknown attribute type matches nothing');
  t.same(await dns('(!(fooBar=*))', ['-b', BASE, '-s', 'sub']), [], 'nor does not of its presence');
  t.same(await dns('(|(fooBar=x)(uid=contact1))'), [dnOf('per-c1')], 'an or still matches by its other terms');
  // names of Object.prototype's members are undefined types like any other (a lookup table once answered them with its own methods)
  for (const name of ['constructor', 'toString', 'hasOwnProperty', 'valueOf']) {
    t.same(await dns(`(!(${name}=x))`, ['-b', BASE, '-s', 'sub']), [], `not of ${name} matches nothing`);
    t.same(await dns(`(|(${name}=*)(uid=contact1))`), [dnOf('per-c1')], `an or with ${name} matches by its other terms`);
  }
  t.equal((await dns('(&(objectClass=inetOrgPerson)(!(jpegPhoto=*)))')).length, 5, 'a standard type no entry holds is false, so its not is true');
  t.same(await dns('(&(uid=contact*)(!(uid=*2)))'), [dnOf('per-c1')], 'initial and final substrings');
  t.same(await dns('(uid~=CONTACT1)'), [dnOf('per-c1')], 'approx matches like equality');
  t.same(await dns('(&(objectClass=inetOrgPerson)(uid>=r)(uid<=t))'), [dnOf('per-radmin'), dnOf('per-staff')].sort(), 'greater and less');
  t.same(await dns('(o=customer one)'), [`meridianId=org-c1,ou=organisations,${BASE}`, dnOf('per-c1'), dnOf('per-c1b')].sort(), "a person's o is its organisation's name");
  // a person's entry shows its organisation's name: renaming the organisation changes it (cached entries are dropped)
  await d.node.store.update('org-c1', { name: 'Customer Uno' });
  t.same(await dns('(o=customer uno)'), [`meridianId=org-c1,ou=organisations,${BASE}`, dnOf('per-c1'), dnOf('per-c1b')].sort(), 'after a rename, at once');
  t.same(await dns('(o=customer one)'), [], 'and the old name is gone');
  t.same(await dns('(objectClass=*)', ['-b', `ou=people,${BASE}`, '-s', 'one']), ['per-c1', 'per-c1b', 'per-c2', 'per-radmin', 'per-staff'].map(dnOf).sort(), 'one level');
  t.same(await dns('(objectClass=*)', ['-b', dnOf('per-c1'), '-s', 'base']), [dnOf('per-c1')], 'base');
  t.equal((await dns('(objectClass=*)', ['-b', BASE, '-s', 'sub'])).length, 1 + 2 + 4 + 5, 'subtree: the base, two containers, four organisations and five persons');
  // the subordinate subtree (ldapsearch -s children, as slapd answers it): everything under the base but the base
  const children = await dns('(objectClass=*)', ['-b', BASE, '-s', 'children']);
  t.equal(children.length, 2 + 4 + 5, 'children: the two containers, four organisations and five persons');
  t.notOk(children.includes(BASE), 'not the base itself');
  t.same(await dns('(objectClass=*)', ['-b', `ou=people,${BASE}`, '-s', 'children']), ['per-c1', 'per-c1b', 'per-c2', 'per-radmin', 'per-staff'].map(dnOf).sort(), "under a container: its objects, as one level");
  t.same(await dns('(objectClass=*)', ['-b', dnOf('per-c1'), '-s', 'children']), [], "under an object's entry, a leaf: nothing");
  t.equal((await dns('(&)', ['-b', BASE, '-s', 'sub'])).length, 1 + 2 + 4 + 5, 'the absolute true filter (&) matches every entry (RFC 4526, advertised in the root DSE)');
  t.same(await dns('(|)', ['-b', BASE, '-s', 'sub']), [], 'and the absolute false (|) none');
  t.same(await dns('(&(uid=contact1)(&))'), [dnOf('per-c1')], 'inside another filter too');
  const missing = await search(d, asAdmin, ['-b', `meridianId=per-nope,ou=people,${BASE}`, '-s', 'base', '(objectClass=*)']);
  t.equal(missing.code, 32, 'no such object');
  t.match(missing.stdout + missing.stderr, /Matched DN: ou=people,dc=example,dc=com/);

  const all = await search(d, asAdmin, ['-b', dnOf('per-c1'), '-s', 'base', '(objectClass=*)', '*', '+']);
  const e = parseLdif(all.stdout)[0]!;
  for (const a of ['cn', 'sn', 'mail', 'telephoneNumber', 'o', 'uid', 'objectClass', 'meridianEntitlement', 'entryUUID', 'createTimestamp', 'modifyTimestamp', 'entryDN']) t.ok(e.attrs[a], `${a} is returned`);
  t.notOk(e.attrs['userPassword'], 'userPassword is never returned');
  t.same(e.attrs['meridianEntitlement'], ['Office'], "the person's entitlements: its organisation's licensed products");
  t.match(e.attrs['createTimestamp']![0]!, /^\d{14}Z$/);
  const plain = parseLdif((await search(d, asAdmin, ['-b', dnOf('per-c1'), '-s', 'base', '(objectClass=*)'])).stdout)[0]!;
  t.notOk(plain.attrs['entryUUID'], 'operational attributes only with + or by name');
  const named = parseLdif((await search(d, asAdmin, ['-b', dnOf('per-c1'), '-s', 'base', '(objectClass=*)', 'ENTRYUUID', 'userPassword'])).stdout)[0]!;
  t.same(Object.keys(named.attrs), ['entryUUID'], 'an operational attribute by name, in any case; userPassword not even when asked');
});

t.test('attribute options and the name supertype, as slapd reads them; a critical paged control on anything but a search is refused', async (t) => {
  const d = await directory(t);
  const dns = async (filter: string): Promise<string[]> => {
    const r = await search(d, asAdmin, ['-b', BASE, filter, '1.1']);
    t.equal(r.code, 0, `${filter}: ${r.stderr}`);
    return parseLdif(r.stdout).map((e) => e.dn).sort();
  };
  // the directory holds no tagged values: cn;lang-en is an attribute no entry has, not cn
  t.same(await dns('(cn=person contact1)'), [dnOf('per-c1')], 'the plain type matches');
  const tagged = tlv(0x30, [integer(2), tlv(0x63, [octets(BASE), integer(2, 0x0a), integer(0, 0x0a), integer(0), integer(0), Buffer.from([0x01, 0x01, 0x00]), tlv(0xa3, [octets('cn;lang-en'), octets('Person contact1')]), tlv(0x30, [octets('1.1')])])]);
  const entriesOf = (request: Buffer): Promise<number> =>
    exchange(d.port, bindRequest(1, ADMIN_DN, ADMIN_PW), [request], (all) => (all.some((m) => m.children![1]!.tag === 0x65) ? all.filter((m) => m.children![1]!.tag === 0x64).length : undefined));
  t.equal(await entriesOf(tagged), 0, '(cn;lang-en=...) matches no entry, though cn holds the value (ldapsearch cannot send it: raw BER)');
  t.same(await dns('(name=person contact1)'), [dnOf('per-c1')], 'name asserts cn');
  t.same(await dns('(name=contact1)'), [dnOf('per-c1')], 'and sn');
  t.same(await dns('(name=customer one)'), [`meridianId=org-c1,ou=organisations,${BASE}`, dnOf('per-c1'), dnOf('per-c1b')].sort(), 'and o');
  const named = parseLdif((await search(d, asAdmin, ['-b', dnOf('per-c1'), '-s', 'base', '(objectClass=*)', 'name'])).stdout)[0]!;
  t.same(Object.keys(named.attrs).sort(), ['cn', 'o', 'sn'], 'asking for name returns its subtypes the entry holds');
  const withOptions = parseLdif((await search(d, asAdmin, ['-b', dnOf('per-c1'), '-s', 'base', '(objectClass=*)', 'cn;lang-en', 'mail'])).stdout)[0]!;
  t.same(Object.keys(withOptions.attrs), ['mail'], 'asking for cn;lang-en returns no cn');
  const compare = (assertion: string) => ldapTool('ldapcompare', ['-x', '-H', d.url, '-D', ADMIN_DN, '-w', ADMIN_PW, dnOf('per-c1'), assertion]);
  t.equal((await compare('name:contact1')).code, 6, 'a compare of name is true when a subtype holds the value');
  t.equal((await compare('name:nobody')).code, 5, 'and false when none does');
  t.equal((await compare('cn;lang-en:Person contact1')).code, 16, 'a compare of cn;lang-en: noSuchAttribute');
  const modify = await ldapTool('ldapmodify', ['-x', '-H', d.url, '-D', ADMIN_DN, '-w', ADMIN_PW], { input: `dn: ${dnOf('per-c1')}\nchangetype: modify\nreplace: title;lang-en\ntitle;lang-en: Tagged\n` });
  t.equal(modify.code, 53, 'a modify of title;lang-en is refused');
  t.match(modify.stderr, /options such as ;lang-en are not supported/);
  t.notOk((await d.node.store.get('per-c1'))?.fields['title'], 'and title is not written');
  // the paged results control is acted on for searches only
  const paged = (critical: boolean): Buffer => tlv(0xa0, [tlv(0x30, [octets('1.2.840.113556.1.4.319'), Buffer.from([0x01, 0x01, critical ? 0xff : 0x00]), octets(tlv(0x30, [integer(10), octets('')]))])]);
  const compareWith = (critical: boolean): Buffer => tlv(0x30, [integer(2), tlv(0x6e, [octets(dnOf('per-c1')), tlv(0x30, [octets('sn'), octets('contact1')])]), paged(critical)]);
  const whoamiWith = (critical: boolean): Buffer => tlv(0x30, [integer(2), tlv(0x77, [octets('1.3.6.1.4.1.4203.1.11.3', 0x80)]), paged(critical)]);
  const bind = bindRequest(1, ADMIN_DN, ADMIN_PW);
  t.equal(await boundAnswer(d.port, bind, compareWith(true)), 12, 'a compare with a critical paged control: unavailableCriticalExtension');
  t.equal(await boundAnswer(d.port, bind, compareWith(false)), 6, 'not critical, it is ignored: compareTrue');
  t.equal(await boundAnswer(d.port, bind, whoamiWith(true)), 12, 'a WhoAmI with a critical paged control: unavailableCriticalExtension');
  t.equal(await boundAnswer(d.port, bind, whoamiWith(false)), 0, 'not critical, it is ignored');
  const pagedSearch = await search(d, asAdmin, ['-E', '!pr=2/noprompt', '-b', BASE, '(objectClass=inetOrgPerson)', '1.1']);
  t.equal(pagedSearch.code, 0, `a search with a critical paged control is answered: ${pagedSearch.stderr}`);
  t.equal(parseLdif(pagedSearch.stdout).length, 5, 'in pages, every entry');
  const unknownWithOptions = await ldapTool('ldapmodify', ['-x', '-H', d.url, '-D', ADMIN_DN, '-w', ADMIN_PW], { input: `dn: ${dnOf('per-c1')}\nchangetype: modify\nreplace: fooBar;lang-en\nfooBar;lang-en: x\n` });
  t.equal(unknownWithOptions.code, 17, 'an unknown type with options is an unknown type first, as slapd answers: undefinedAttributeType');
});

t.test('what slapd clients rely on: the root DSE under +, a size limit over pages, the DN one bound as, an id in any case', async (t) => {
  const d = await directory(t);
  const rootPlus = parseLdif((await search(d, null, ['-b', '', '-s', 'base', '(objectClass=*)', '+'])).stdout)[0]!;
  for (const a of ['namingContexts', 'supportedControl', 'supportedExtension', 'supportedLDAPVersion']) t.ok(rootPlus.attrs[a], `the root DSE's ${a} under +, as slapd gives it`);

  // the client's size limit holds for a paged search's pages together; a page as large as it is no paging at all
  const people = ['-b', `ou=people,${BASE}`, '-s', 'one', '(objectClass=*)', '1.1'];
  const bigPage = await search(d, asAdmin, ['-z', '3', '-E', 'pr=10/noprompt', ...people]);
  t.equal(bigPage.code, 4, 'a page of 10 with a size limit of 3: sizeLimitExceeded');
  t.equal(parseLdif(bigPage.stdout).length, 3, 'after 3 entries');
  const smallPages = await search(d, asAdmin, ['-z', '4', '-E', 'pr=3/noprompt', ...people]);
  t.equal(smallPages.code, 4, 'pages of 3 with a size limit of 4: sizeLimitExceeded');
  t.equal(parseLdif(smallPages.stdout).length, 4, 'after 4 entries over two pages (there are 5)');
  const unlimited = await search(d, asAdmin, ['-E', 'pr=3/noprompt', ...people]);
  t.equal(parseLdif(unlimited.stdout).length, 5, 'with no size limit, every page');

  // bind as uid=...,ou=people,..., then read, compare and modify that same DN (the PHP way)
  const loginDn = `uid=contact1,ou=people,${BASE}`;
  const asLogin: [string, string] = [loginDn, PERSON_PW];
  const read = await search(d, asLogin, ['-b', loginDn, '-s', 'base', '(objectClass=*)', 'cn']);
  t.equal(read.code, 0, read.stderr);
  t.same(parseLdif(read.stdout).map((e) => e.dn), [dnOf('per-c1')], 'the login DN reads the person\'s entry');
  const compared = await ldapTool('ldapcompare', ['-x', '-H', d.url, '-D', loginDn, '-w', PERSON_PW, loginDn, 'sn:contact1']);
  t.equal(compared.code, 6, 'and compares it');
  const modified = await ldapTool('ldapmodify', ['-x', '-H', d.url, '-D', loginDn, '-w', PERSON_PW], { input: `dn: ${loginDn}\nchangetype: modify\nreplace: telephoneNumber\ntelephoneNumber: +27 21 555 0199\n` });
  t.equal(modified.code, 0, `and modifies it: ${modified.stderr}`);
  t.same((await d.node.store.get('per-c1'))?.fields['telephoneNumber'], ['+27 21 555 0199']);
  const elsewhere = await ldapTool('ldapwhoami', ['-x', '-H', d.url, '-D', `uid=contact1,ou=bogus,cn=x,${BASE}`, '-w', PERSON_PW]);
  t.equal(elsewhere.code, 49, 'uid=... under another parent names no one');
  // a login DN of someone one may not read, and of no one, are answered alike: nothing tells which names exist
  for (const [who, dn] of [['someone unseen', `uid=contact2,ou=people,${BASE}`], ['no one', `uid=nobody,ou=people,${BASE}`]]) {
    const r = await search(d, asLogin, ['-b', dn!, '-s', 'base', '(objectClass=*)', '1.1']);
    t.equal(r.code, 32, `search of ${who}'s login DN: noSuchObject`);
    t.match(r.stdout + r.stderr, new RegExp(`Matched DN: ou=people,${BASE}`), 'matched the persons\' container');
    const m = await ldapTool('ldapmodify', ['-x', '-H', d.url, '-D', loginDn, '-w', PERSON_PW], { input: `dn: ${dn}\nchangetype: modify\nreplace: title\ntitle: x\n` });
    t.equal(m.code, 32, `modify of ${who}'s login DN: noSuchObject`);
  }

  const upper = await search(d, asAdmin, ['-b', `meridianId=PER-C1,ou=people,${BASE}`, '-s', 'base', '(objectClass=*)', '1.1']);
  t.same(parseLdif(upper.stdout).map((e) => e.dn), [dnOf('per-c1')], 'an entry DN with its id in capitals names the entry, as a filter on meridianId matches it');
});

t.test('a paged search cookie tells nothing of entries the caller cannot read: it is sealed, and where it resumes does not depend on them', async (t) => {
  const { CursorSeal } = await import('@meridian/xml');
  const d = await directory(t);
  const s = d.node.store;
  const seal = new CursorSeal(Buffer.from((await s.getMeta<string>('xmlCursorKey'))!, 'base64'));
  // slots in creation order: per-c1 (readable by the reseller admin), per-hidden (a direct customer's), per-late (readable)
  await s.create('Person', { cn: 'Hidden', sn: 'Hidden', mail: ['secret@other.example'], organisation: 'org-c2' }, { id: 'per-hidden' });
  await s.create('Person', { cn: 'Late', sn: 'Late', organisation: 'org-c1' }, { id: 'per-late' });
  const radmin: [string, string] = ['uid=radmin', PERSON_PW];
  const firstCookie = async (mail: string): Promise<string> => {
    const r = await search(d, radmin, ['-E', 'pr=1/noprompt', '-b', BASE, `(|(mail=${mail})(meridianId=per-c1)(meridianId=per-late))`, '1.1']);
    t.equal(r.code, 0, r.stderr);
    t.same(parseLdif(r.stdout).map((e) => e.dn), [dnOf('per-c1'), dnOf('per-late')], `only what it may read (${mail})`);
    // (ldapsearch folds a long comment line as LDIF folds: unfolded first)
    const cookie = /pagedresults: cookie=(\S+)/.exec(r.stdout.replace(/\n /g, ''))?.[1];
    t.ok(cookie, 'a first page with a cookie');
    const sealed = Buffer.from(cookie ?? '', 'base64').toString('latin1');
    t.notMatch(sealed, /^[\w-]{12}:\d+:/, 'the cookie is sealed: no index position in the clear');
    // fingerprint:step:slot:total; the fingerprint differs with the filter, the position must not
    return (seal.open(sealed) ?? '').split(':').slice(1).join(':');
  };
  const hidden = await firstCookie('secret@other.example');
  t.match(hidden, /^\d+:-?\d+:\d+$/, 'the node opens it');
  t.equal(hidden, await firstCookie('nobody@other.example'), 'the next page starts at the same place whether or not an unreadable entry matched in between');
});

t.test('paged results and size limits', async (t) => {
  const d = await directory(t, { ldapSizeLimit: 20 });
  const s = d.node.store;
  for (let i = 0; i < 45; i++) await s.create('Person', { cn: `Paged ${i}`, sn: 'Paged', organisation: 'org-c2' }, { id: `per-paged-${String(i).padStart(2, '0')}` });
  const paged = await search(d, asAdmin, ['-E', 'pr=10/noprompt', '-b', BASE, '(sn=paged)', 'cn']);
  t.equal(paged.code, 0, paged.stderr);
  const got = parseLdif(paged.stdout).map((e) => e.dn);
  t.equal(got.length, 45, 'every entry, in pages');
  t.equal(new Set(got).size, 45, 'no entry twice');
  t.equal((paged.stdout.match(/pagedresults: cookie=/g) ?? []).length, 5, 'in five pages of at most ten');
  const limited = await search(d, asAdmin, ['-z', '7', '-b', BASE, '(sn=paged)', 'cn']);
  t.equal(limited.code, 4, 'sizeLimitExceeded');
  t.equal(parseLdif(limited.stdout).length, 7);
  const exact = await search(d, asAdmin, ['-z', '45', '-b', BASE, '(sn=paged)', 'cn']);
  t.equal(exact.code, 0, 'a limit equal to the matches is not exceeded');
  const staff: [string, string] = ['uid=staff1', PERSON_PW];
  const capped = await search(d, staff, ['-b', BASE, '(sn=paged)', 'cn']);
  t.equal(capped.code, 4, "the server's size limit holds for everyone but the admin");
  t.equal(parseLdif(capped.stdout).length, 20);
  const pagedPastCap = await search(d, staff, ['-E', 'pr=10/noprompt', '-b', BASE, '(sn=paged)', 'cn']);
  t.equal(parseLdif(pagedPastCap.stdout).length, 45, 'paged results reach past it page by page');
  // pages that cross from the base entry to the containers to one type and the next
  const whole = await search(d, asAdmin, ['-b', BASE, '(objectClass=*)', '1.1']);
  const inPages = await search(d, asAdmin, ['-E', 'pr=3/noprompt', '-b', BASE, '(objectClass=*)', '1.1']);
  t.equal(inPages.code, 0, inPages.stderr);
  const all = parseLdif(whole.stdout).map((e) => e.dn);
  t.ok(all.includes(BASE) && all.some((dn) => dn.startsWith('ou=')) && all.some((dn) => dn.includes('ou=organisations')), 'the whole tree: base, containers and more than one type');
  t.same(parseLdif(inPages.stdout).map((e) => e.dn), all, 'the pages together are the unpaged answer, in order, each entry once');
  // title is not indexed: each entry is read to be matched, several at a time, and pages and limits cut across those reads
  const unindexed = '(|(title=nobody)(sn=paged))';
  const wholeRead = parseLdif((await search(d, asAdmin, ['-b', BASE, unindexed, '1.1'])).stdout).map((e) => e.dn);
  t.equal(wholeRead.length, 45);
  const readInPages = await search(d, asAdmin, ['-E', 'pr=7/noprompt', '-b', BASE, unindexed, '1.1']);
  t.equal(readInPages.code, 0, readInPages.stderr);
  t.same(parseLdif(readInPages.stdout).map((e) => e.dn), wholeRead, 'pages of entries read to be matched: the unpaged answer, in order, each entry once');
  const readLimited = await search(d, asAdmin, ['-z', '17', '-b', BASE, unindexed, '1.1']);
  t.equal(readLimited.code, 4, 'sizeLimitExceeded');
  t.same(parseLdif(readLimited.stdout).map((e) => e.dn), wholeRead.slice(0, 17));
});

t.test('binds: by DN, uid and mail; the admin; empty, wrong and unauthenticated passwords; WhoAmI', async (t) => {
  const d = await directory(t);
  const who = (dn: string, pw: string) => ldapTool('ldapwhoami', ['-x', '-H', d.url, '-D', dn, '-w', pw]);
  for (const name of [dnOf('per-c1'), 'uid=contact1', `uid=CONTACT1,ou=people,${BASE}`, 'mail=contact1@example.com']) {
    const r = await who(name, PERSON_PW);
    t.equal(r.code, 0, `${name}: ${r.stderr}`);
    t.equal(r.stdout.trim(), `dn:${dnOf('per-c1')}`, `${name} binds as the person's entry`);
  }
  t.equal((await who(ADMIN_DN, ADMIN_PW)).stdout.trim(), `dn:${ADMIN_DN}`);
  const wrong = await who('uid=contact1', 'not-it');
  t.equal(wrong.code, 49, 'invalidCredentials');
  t.match(wrong.stderr, /wrong name or password/);
  t.equal((await who('uid=nobody-here', PERSON_PW)).code, 49, 'an unknown name is the same answer');
  const empty = await who('uid=contact1', '');
  t.equal(empty.code, 53, 'a name with an empty password is an unauthenticated bind, refused');
  t.match(empty.stderr, /empty password/);
  const anon = await ldapTool('ldapwhoami', ['-x', '-H', d.url]);
  t.equal(anon.stdout.trim(), 'anonymous');
});

t.test('a second review of modify and password modify: what slapd answers, and nothing told of entries one may not read', async (t) => {
  const d = await directory(t);
  const modify = (who: [string, string], ldif: string) => ldapTool('ldapmodify', ['-x', '-H', d.url, '-D', who[0], '-w', who[1]], { input: ldif });
  const passwd = (who: [string, string], args: string[]) => ldapTool('ldappasswd', ['-x', '-H', d.url, '-D', who[0], '-w', who[1], ...args]);
  const contact: [string, string] = ['uid=contact1', PERSON_PW];
  // password modify of another name: one answer whether it names a person or no one
  const answers: string[] = [];
  for (const who of ['uid=contact2', 'mail=nobody@nowhere.example', dnOf('per-none'), 'cn=not-an-entry']) {
    const r = await passwd(contact, ['-s', 'x-new-pw', who]);
    answers.push(r.stdout + r.stderr);
  }
  t.same(answers.map((a) => /Result: .*\((\d+)\)/.exec(a)?.[1]), ['50', '50', '50', '50'], `insufficientAccessRights for each (${answers[1]})`);
  t.same(new Set(answers).size, 1, 'in the same words');
  // one value twice in a request, and an add without values
  const twice = await modify(asAdmin, `dn: ${dnOf('per-c1')}\nchangetype: modify\nadd: mail\nmail: twice@example.com\nmail: TWICE@example.com\n`);
  t.equal(twice.code, 20, 'a value given twice in one add: attributeOrValueExists');
  t.match(twice.stderr, /given more than once/);
  // several changes of one single-valued attribute in one modify: each sees what the one before left (one value, not a list)
  const replaced = await modify(asAdmin, `dn: ${dnOf('per-c1')}\nchangetype: modify\nreplace: title\ntitle: CTO\n-\ndelete: title\ntitle: CTO\n-\n`);
  t.equal(replaced.code, 0, `replace then delete of that value: made (${replaced.stderr.trim()})`);
  t.equal((await d.node.store.get('per-c1'))?.fields['title'], undefined, 'and the title is gone, as slapd leaves it');
  const addTwo = await modify(asAdmin, `dn: ${dnOf('per-c1')}\nchangetype: modify\nreplace: title\ntitle: CTO\n-\nadd: title\ntitle: CEO\n-\n`);
  t.equal(addTwo.code, 19, `replace then add of a second value: constraintViolation, not other (${addTwo.stderr.trim()})`);
  t.match(addTwo.stderr, /title holds one value on a Person/);
  // many values: refused by their count before any work, however many; a thousand distinct ones are checked in linear time
  const values = (n: number, attr: string): string => Array.from({ length: n }, (_, i) => `${attr}: ${attr}${i}@example.com\n`).join('');
  const started = performance.now();
  const many = await modify(contact, `dn: ${dnOf('per-c1')}\nchangetype: modify\nreplace: mail\n${values(20_000, 'mail')}`);
  t.equal(many.code, 19, `20,000 values: constraintViolation (${many.stderr.trim()})`);
  t.match(many.stderr, /more than 1000 values in one change/);
  const thousand = await modify(asAdmin, `dn: ${dnOf('per-c1')}\nchangetype: modify\nadd: telephoneNumber\n${values(990, 'telephoneNumber')}`);
  t.equal(thousand.code, 0, `990 values more: added (${thousand.stderr.trim()})`);
  const back = await modify(asAdmin, `dn: ${dnOf('per-c1')}\nchangetype: modify\ndelete: telephoneNumber\n${values(990, 'telephoneNumber')}`);
  t.equal(back.code, 0, `and deleted by value (${back.stderr.trim()})`);
  const adds = Array.from({ length: 3 }, (_, n) => `add: telephoneNumber\n${values(600, `t${n}x`).replace(/^t\d?x?\S*?: /gm, 'telephoneNumber: ')}`).join('-\n');
  const split = await modify(asAdmin, `dn: ${dnOf('per-c1')}\nchangetype: modify\n${adds}`);
  t.equal(split.code, 19, `three adds of 600 values in one modify: counted together (${split.stderr.trim()})`);
  t.match(split.stderr, /telephoneNumber: more than 1000 values$/m, 'by the gateway, before the values are compared, not by the store after');
  t.ok(performance.now() - started < 10_000, `in ${Math.round(performance.now() - started)} ms (a check per pair took 19 s for 16,000)`);
  // (ldapmodify sends no change without values: the request as BER, after a bind)
  const addNothing = tlv(0x30, [integer(2), tlv(0x66, [octets(dnOf('per-c1')), tlv(0x30, [tlv(0x30, [integer(0, 0x0a), tlv(0x30, [octets('userPassword'), tlv(0x31, [])])])])])]);
  t.equal(await boundAnswer(d.port, bindRequest(1, ADMIN_DN, ADMIN_PW), addNothing), 2, 'an add without values is a protocol error, not a delete of the password');
  t.equal((await ldapTool('ldapwhoami', ['-x', '-H', d.url, '-D', 'uid=contact1', '-w', PERSON_PW])).code, 0, 'whose password still works');
  // a password's absence is told only to one who may change it
  await d.node.store.update('per-c1b', { password: null });
  const radmin: [string, string] = ['uid=radmin', PERSON_PW];
  const [none, some] = await Promise.all(['per-c1b', 'per-c1'].map((id) => modify(radmin, `dn: ${dnOf(id)}\nchangetype: modify\ndelete: userPassword\n`)));
  t.same([none.code, some.code], [50, 50], 'a reseller admin deleting a contact\'s password: refused alike, set or not');
  const [noneTwo, someTwo] = await Promise.all(['per-c1b', 'per-c1'].map((id) => modify(radmin, `dn: ${dnOf(id)}\nchangetype: modify\ndelete: userPassword\nuserPassword: a\nuserPassword: b\n`)));
  t.same([noneTwo.code, someTwo.code], [50, 50], 'and by two values too');
  // an anonymous bind, which ldapjs answers itself, with a critical control it does not support
  const criticalBind = tlv(0x30, [integer(7), tlv(0x60, [integer(3), octets(''), octets('', 0x80)]), tlv(0xa0, [tlv(0x30, [octets('1.2.3.4.5'), Buffer.from([0x01, 0x01, 0xff])])])]);
  t.equal(await firstAnswer(d.port, criticalBind), 12, 'an anonymous bind with an unknown critical control: unavailableCriticalExtension');
  t.equal((await modify(asAdmin, `dn: ${dnOf('per-c1b')}\nchangetype: modify\ndelete: userPassword\n`)).code, 16, 'the admin is told it is not set');
  // increment (RFC 4525) is answered, not a dropped connection
  const increment = await modify(asAdmin, `dn: ${dnOf('per-c1')}\nchangetype: modify\nincrement: title\ntitle: 1\n`);
  t.equal(increment.code, 2, `increment: protocolError (${increment.stderr.trim()})`);
  t.match(increment.stderr, /not supported here/);
});

/**
 * The bind-throttle tests time binds on a loaded machine (tap runs two files
 * at once on two cores, at times beside a third busy process). Their binds
 * are raw BER from this process (timedBind), so no ldapwhoami start is in a
 * time, and the throttle's first wait is THROTTLE_MS, long beside what an
 * unthrottled bind costs (a lookup and one scrypt check: tens of ms idle,
 * a few hundred seen under load):
 * - a throttled bind is held by a timer for at least its wait, however
 *   loaded the machine; it is bounded below by the wait less EARLY_MS (the
 *   timer counts in whole ms of the loop's clock), and above only where a
 *   longer wait is the fault looked for, halfway to that wait;
 * - a bind that must not be slowed is bounded above by half the first wait
 *   (UNSLOWED_MS): hundreds of ms of room for a slow scrypt, and still half
 *   a wait short of the shortest throttled bind.
 * The waits double per failure, so each test asks for as few failures as
 * what it proves needs: at 1.5 s a wait, the old walk of eight failures
 * and a success would take a minute and a half.
 */
const THROTTLE_MS = 1500;
const EARLY_MS = 5;
const UNSLOWED_MS = THROTTLE_MS / 2;

t.test('repeated failed binds for one name are slowed down; others are not', async (t) => {
  const B = THROTTLE_MS;
  const d = await directory(t, {}, { bindDelayMs: B });
  // (the longest bind here waits 4 B; given up on at 6 B)
  const bind = (name: string, pw: string): Promise<{ code: number; ms: number }> => timedBind(d.port, name, pw, 6 * B);
  const free: { code: number; ms: number }[] = [];
  for (let i = 0; i < 3; i++) free.push(await bind('uid=contact2', 'guess'));
  t.ok(free.every((r) => r.code === 49 && r.ms < UNSLOWED_MS), `the first three failures are not slowed (${free.map((r) => `${r.code} in ${r.ms} ms`).join(', ')}; each under ${UNSLOWED_MS})`);
  // the count is the person's, under any name that reaches them: the fourth failure, by entry DN, waits
  // the first wait, B, as the next uid= guess would (counted per name it would be one of three free, unslowed)
  const fourth = await bind(dnOf('per-c2'), 'guess');
  t.ok(fourth.code === 49 && fourth.ms >= B - EARLY_MS, `the fourth failure, by the same person's entry DN, waited ${B} ms (${fourth.code} in ${fourth.ms} ms)`);
  // once slowed, a name gets one bind at a time from one address: guesses sent at once do not share a wait;
  // by mail= now, the fifth failure, whose wait has doubled to 2 B
  const parallel = await Promise.all(Array.from({ length: 3 }, () => bind('mail=contact2@example.com', 'guess')));
  const checked = parallel.filter((r) => r.code === 49);
  const busy = parallel.filter((r) => r.code === 51);
  t.equal(checked.length, 1, `one guess is checked (${parallel.map((r) => `${r.code} in ${r.ms} ms`).join(', ')})`);
  t.ok(checked[0]!.ms >= 2 * B - EARLY_MS, `after its wait, doubled to ${2 * B} ms`);
  t.equal(busy.length, 2, 'the others are answered busy');
  // (a busy answer is given before any wait or check: under UNSLOWED_MS, not after the checked one's 2 B)
  t.ok(busy.every((r) => r.ms < UNSLOWED_MS), 'without waiting for it');
  const other = await bind('uid=contact1', PERSON_PW);
  t.ok(other.code === 0 && other.ms < UNSLOWED_MS, `another name binds at once (${other.code} in ${other.ms} ms), while this one's next wait is ${4 * B} ms`);
  const right = await bind('uid=contact2', PERSON_PW);
  t.ok(right.code === 0 && right.ms >= 4 * B - EARLY_MS, `the right password still works, after the wait a sixth guess would have, ${4 * B} ms (${right.code} in ${right.ms} ms)`);
  const after = await bind('uid=contact2', 'guess');
  t.ok(after.code === 49 && after.ms < UNSLOWED_MS, `and a success clears the count: the next guess is not slowed (${after.code} in ${after.ms} ms)`);
});

t.test('a bind whose client leaves during its wait is dropped: no check, no failure counted', async (t) => {
  const B = THROTTLE_MS;
  const d = await directory(t, {}, { bindDelayMs: B });
  const bind = (pw: string): Promise<{ code: number; ms: number }> => timedBind(d.port, 'uid=contact1', pw, 6 * B);
  for (let i = 0; i < 4; i++) await bind('guess'); // three free, then B: a bind now waits 2 B, and 4 B after one more failure
  for (let i = 0; i < 3; i++) {
    const sock = connect(d.port, '127.0.0.1');
    sock.on('error', () => {});
    await new Promise((r) => sock.once('connect', r));
    sock.write(bindRequest(1, 'uid=contact1', 'guess'));
    // B/4 into its wait of 2 B: long enough for the gateway to have read the bind and begun the wait
    // (a stalled loop could otherwise see the bind and the close in one turn), and 7/4 B before it ends
    await sleep(B / 4);
    // it is waiting, not yet read or long since checked: a second bind for the name from this address,
    // slowed, is answered busy at once (and starts nothing)
    t.equal(await firstAnswer(d.port, bindRequest(1, 'uid=contact1', 'guess')), 51, `dropped bind ${i + 1} was in its wait when its client left`);
    sock.destroy();
    // (its close reaches the gateway, which ends the bind, before the next connection)
    await new Promise((r) => sock.once('close', r));
    await sleep(B / 4);
  }
  // counted, the first dropped bind would have made the next wait 4 B, all three 16 B: bounded at 3 B, a
  // whole B above the 2 B it waits
  const next = await bind('guess');
  t.equal(next.code, 49);
  t.ok(next.ms >= 2 * B - EARLY_MS && next.ms < 3 * B, `the next guess waits as the fifth failure, ${2 * B} ms, not the sixth or later, ${4 * B} ms or more (${next.ms} ms)`);
});

t.test('{SSHA} hashes imported from OpenLDAP are accepted and upgraded at the next successful bind', async (t) => {
  const d = await directory(t);
  const salt = randomBytes(8);
  const ssha = `{SSHA}${Buffer.concat([createHash('sha1').update('openldap-pw').update(salt).digest(), salt]).toString('base64')}`;
  await d.node.store.create('Person', { cn: 'Imported', sn: 'Imported', uid: 'imported', password: ssha, organisation: 'org-c2' }, { id: 'per-imported' });
  t.equal((await d.node.store.get('per-imported'))!.fields['password'], ssha, 'kept as given: it is a hash, not a password');
  const wrong = await ldapTool('ldapwhoami', ['-x', '-H', d.url, '-D', 'uid=imported', '-w', 'nope']);
  t.equal(wrong.code, 49);
  const r = await ldapTool('ldapwhoami', ['-x', '-H', d.url, '-D', 'uid=imported', '-w', 'openldap-pw']);
  t.equal(r.code, 0, r.stderr);
  let stored = '';
  for (let i = 0; i < 50 && !stored.startsWith('$scrypt$'); i++) {
    await sleep(100);
    stored = String((await d.node.store.get('per-imported'))!.fields['password']);
  }
  t.match(stored, /^\$scrypt\$/, 'the hash is now scrypt');
  t.equal((await ldapTool('ldapwhoami', ['-x', '-H', d.url, '-D', 'uid=imported', '-w', 'openldap-pw'])).code, 0, 'and the password still works');
  // a person changing their password in the session whose bind starts the upgrade: the change goes over the upgraded entry
  const ssha2 = `{SSHA}${Buffer.concat([createHash('sha1').update('openldap-pw').update(salt).digest(), salt]).toString('base64')}`;
  await d.node.store.create('Person', { cn: 'Imported Two', sn: 'Imported', uid: 'imported2', password: ssha2, organisation: 'org-c2' }, { id: 'per-imported2' });
  const changed = await ldapTool('ldappasswd', ['-x', '-H', d.url, '-D', 'uid=imported2', '-w', 'openldap-pw', '-s', 'after-the-upgrade']);
  t.equal(changed.code, 0, `ldappasswd right after the bind that upgrades the hash: ${changed.stdout}${changed.stderr}`);
  t.equal((await ldapTool('ldapwhoami', ['-x', '-H', d.url, '-D', 'uid=imported2', '-w', 'after-the-upgrade'])).code, 0, 'and the new password works');
});

t.test('anonymous clients: root DSE only by default, everything under the read policy', async (t) => {
  const d = await directory(t);
  const dse = await search(d, null, ['-b', '', '-s', 'base', '(objectClass=*)', '+', '*']);
  t.equal(dse.code, 0, dse.stderr);
  const root = parseLdif(dse.stdout)[0]!;
  t.same(root.attrs['namingContexts'], [BASE]);
  t.same(root.attrs['supportedLDAPVersion'], ['3']);
  t.ok(root.attrs['supportedControl']!.includes('1.2.840.113556.1.4.319'), 'paged results');
  t.same(root.attrs['supportedExtension']!.sort(), ['1.3.6.1.4.1.4203.1.11.1', '1.3.6.1.4.1.4203.1.11.3']);
  const refused = await search(d, null, ['-b', BASE, '(objectClass=*)']);
  t.equal(refused.code, 50, 'insufficientAccessRights');
  t.match(refused.stderr, /bind/);
  const open = await directory(t, { ldapAnonymous: 'read' });
  const r = await search(open, null, ['-b', BASE, '(objectClass=inetOrgPerson)', '1.1']);
  t.equal(parseLdif(r.stdout).length, 5);
});

t.test('bound users see what the XML gateway would show them', async (t) => {
  const d = await directory(t);
  const visible = async (user: string): Promise<string[]> => {
    const r = await search(d, [`uid=${user}`, PERSON_PW], ['-b', BASE, '(|(objectClass=inetOrgPerson)(objectClass=organization))', '1.1']);
    t.equal(r.code, 0, r.stderr);
    return parseLdif(r.stdout).map((e) => e.dn.split(',')[0]!.split('=')[1]!).filter((id) => id !== 'example').sort();
  };
  t.same(await visible('staff1'), ['org-c1', 'org-c2', 'org-r', 'org-vendor', 'per-c1', 'per-c1b', 'per-c2', 'per-radmin', 'per-staff'], 'staff: everything');
  t.same(await visible('radmin'), ['org-c1', 'per-c1', 'per-c1b', 'per-radmin'], "a reseller admin: its customers and their contacts, and itself");
  t.same(await visible('contact1'), ['org-c1', 'per-c1'], 'a customer contact: its organisation and itself');
  const hidden = await search(d, ['uid=contact1', PERSON_PW], ['-b', dnOf('per-c2'), '-s', 'base', '(objectClass=*)']);
  t.equal(hidden.code, 32, 'another customer is not there at all');
});

t.test('modify, compare and password modify go through the write path; add, delete and modrdn are refused', async (t) => {
  const d = await directory(t);
  const modify = (who: [string, string], ldif: string) => ldapTool('ldapmodify', ['-x', '-H', d.url, '-D', who[0], '-w', who[1]], { input: ldif });
  const me: [string, string] = ['uid=contact1', PERSON_PW];
  const ok = await modify(me, `dn: ${dnOf('per-c1')}\nchangetype: modify\nreplace: telephoneNumber\ntelephoneNumber: +27 021 555 0111\ntelephoneNumber: 0049 30 1234\n-\nadd: mobile\nmobile: +27 82 555 0000\n-\n`);
  t.equal(ok.code, 0, ok.stderr);
  const after = (await d.node.store.get('per-c1'))!;
  t.same(after.fields['telephoneNumber'], ['+27 021 555 0111', '0049 30 1234'], 'stored exactly as given');
  t.equal(after.fields['mobile'], '+27 82 555 0000');
  const feed = await d.node.store.readFeed(after.seq - 1, 1);
  t.equal(feed[0]!.principal, 'Person:per-c1 via ldap', 'recorded as made by the person, through LDAP');
  const roles = await modify(me, `dn: ${dnOf('per-c1')}\nchangetype: modify\nreplace: employeeType\nemployeeType: staff\n`);
  t.equal(roles.code, 50, 'a person cannot give themselves a role');
  const other = await modify(me, `dn: ${dnOf('per-c1b')}\nchangetype: modify\nreplace: title\ntitle: Boss\n`);
  t.equal(other.code, 32, "nor touch a colleague's entry they cannot see");
  const bad = await modify([ADMIN_DN, ADMIN_PW], `dn: ${dnOf('per-c1')}\nchangetype: modify\nreplace: c\nc: South Africa\n`);
  t.equal(bad.code, 19, 'a schema rule: constraintViolation');
  t.match(bad.stderr, /value "South Africa" does not match \^\[A-Z\]\{2\}\$/, 'naming the rule broken');
  const unknown = await modify([ADMIN_DN, ADMIN_PW], `dn: ${dnOf('per-c1')}\nchangetype: modify\nreplace: shoeSize\nshoeSize: 9\n`);
  t.equal(unknown.code, 17, 'undefinedAttributeType');
  // what slapd answers for types it knows that an entry's classes do not allow, that name the RDN, or that it keeps itself
  const notHeld = await modify([ADMIN_DN, ADMIN_PW], `dn: ${dnOf('per-c1')}\nchangetype: modify\nreplace: jpegPhoto\njpegPhoto: x\n`);
  t.equal(notHeld.code, 65, 'a standard type the Person mapping does not hold: objectClassViolation');
  const rdn = await modify([ADMIN_DN, ADMIN_PW], `dn: ${dnOf('per-c1')}\nchangetype: modify\nreplace: meridianId\nmeridianId: per-x\n`);
  t.equal(rdn.code, 67, 'the RDN attribute: notAllowedOnRDN');
  const kept = await modify([ADMIN_DN, ADMIN_PW], `dn: ${dnOf('per-c1')}\nchangetype: modify\nreplace: modifyTimestamp\nmodifyTimestamp: 20260101000000Z\n`);
  t.equal(kept.code, 19, 'an attribute the directory keeps: constraintViolation (no user modification)');
  t.match(kept.stderr, /kept by the directory/);
  const absent = await modify([ADMIN_DN, ADMIN_PW], `dn: ${dnOf('per-c1')}\nchangetype: modify\ndelete: title\n`);
  t.equal(absent.code, 16, 'deleting an attribute the entry does not hold: noSuchAttribute, as slapd answers');
  const guessed = await modify([ADMIN_DN, ADMIN_PW], `dn: ${dnOf('per-c1b')}\nchangetype: modify\ndelete: userPassword\nuserPassword: not-the-password\n`);
  t.equal(guessed.code, 16, 'deleting userPassword by a value it does not hold: noSuchAttribute');
  t.equal((await ldapTool('ldapwhoami', ['-x', '-H', d.url, '-D', 'uid=colleague1', '-w', PERSON_PW])).code, 0, 'and the password still works');
  // one who may not change the password learns nothing of it: refused before any value is compared
  const radmin: [string, string] = ['uid=radmin', PERSON_PW];
  const guess = await modify(radmin, `dn: ${dnOf('per-c1b')}\nchangetype: modify\ndelete: userPassword\nuserPassword: not-the-password\n`);
  const right = await modify(radmin, `dn: ${dnOf('per-c1b')}\nchangetype: modify\ndelete: userPassword\nuserPassword: ${PERSON_PW}\n`);
  t.same([guess.code, right.code], [50, 50], 'a reseller admin deleting a contact\'s password by value: the same refusal, right guess or wrong');
  const known = await modify([ADMIN_DN, ADMIN_PW], `dn: ${dnOf('per-c1b')}\nchangetype: modify\ndelete: userPassword\nuserPassword: ${PERSON_PW}\n`);
  t.equal(known.code, 0, `deleting it by its value removes it: ${known.stderr}`);
  t.equal((await ldapTool('ldapwhoami', ['-x', '-H', d.url, '-D', 'uid=colleague1', '-w', PERSON_PW])).code, 49, 'after which it no longer works');

  const cmp = (dn: string, assertion: string) => ldapTool('ldapcompare', ['-x', '-H', d.url, '-D', me[0], '-w', me[1], dn, assertion]);
  t.equal((await cmp(dnOf('per-c1'), 'telephoneNumber:0049301234')).code, 6, 'compareTrue');
  t.equal((await cmp(dnOf('per-c1'), 'sn:someone-else')).code, 5, 'compareFalse');
  t.equal((await cmp(dnOf('per-c1'), `userPassword:${PERSON_PW}`)).code, 50, 'passwords are not compared');
  // as slapd: a type nobody defined is 17, one the entry does not hold 16, on a missing entry as on a present one
  t.equal((await cmp(dnOf('per-c1'), 'noSuchType:x')).code, 17, 'undefinedAttributeType');
  t.equal((await cmp(dnOf('no-such-person'), 'noSuchType:x')).code, 17, 'undefinedAttributeType whether the entry exists or not');
  t.equal((await cmp(dnOf('per-c1'), 'roomNumber:1')).code, 16, 'noSuchAttribute for a defined type the entry lacks');
  t.equal((await cmp(dnOf('per-c1'), 'constructor:x')).code, 17, "undefinedAttributeType for a name of Object.prototype's too");

  const passwd = (who: [string, string], args: string[]) => ldapTool('ldappasswd', ['-x', '-H', d.url, '-D', who[0], '-w', who[1], ...args]);
  // ldappasswd exits 1 on any failure and prints the result code
  const wrongOld = await passwd(me, ['-a', 'wrong-old', '-s', 'new-pw-1']);
  t.match(wrongOld.stdout + wrongOld.stderr, /Server is unwilling to perform \(53\)/, 'a wrong old password is refused, as slapd refuses it');
  t.match(wrongOld.stdout + wrongOld.stderr, /the old password is wrong/);
  const anonymous = await ldapTool('ldappasswd', ['-x', '-H', d.url, '-s', 'new-pw-1', dnOf('per-c1')]);
  t.match(anonymous.stdout + anonymous.stderr, /Strong\(er\) authentication required \(8\)/, 'an anonymous client is told to bind, as slapd tells it');
  const adminOwn = await passwd([ADMIN_DN, ADMIN_PW], ['-s', 'new-pw-1']);
  t.match(adminOwn.stdout + adminOwn.stderr, /No such object \(32\)/, "the admin's own: no such entry, as for slapd's rootdn");
  t.match(adminOwn.stdout + adminOwn.stderr, /the admin has no entry here; name the person/);
  t.equal((await passwd(me, ['-a', PERSON_PW, '-s', 'new-pw-1'])).code, 0, 'a person changes their own password with the old one');
  t.equal((await ldapTool('ldapwhoami', ['-x', '-H', d.url, '-D', 'uid=contact1', '-w', 'new-pw-1'])).code, 0, 'the new one works');
  t.equal((await ldapTool('ldapwhoami', ['-x', '-H', d.url, '-D', 'uid=contact1', '-w', PERSON_PW])).code, 49, 'the old one does not');
  const notMine = await passwd(['uid=contact1', 'new-pw-1'], ['-s', 'x', dnOf('per-c2')]);
  t.match(notMine.stdout + notMine.stderr, /Insufficient access \(50\)/, "not someone else's");
  const gen = await passwd([ADMIN_DN, ADMIN_PW], [dnOf('per-c2')]);
  t.equal(gen.code, 0, gen.stderr);
  const generated = /New password: (\S+)/.exec(gen.stdout)?.[1];
  t.ok(generated, 'the admin may set anyone\'s, and without -s the server generates one');
  t.equal((await ldapTool('ldapwhoami', ['-x', '-H', d.url, '-D', 'uid=contact2', '-w', generated!])).code, 0, 'which works');
  const emptyNew = await passwd([ADMIN_DN, ADMIN_PW], ['-s', '', dnOf('per-c2')]);
  t.not(emptyNew.code, 0, 'an empty new password is refused');
  t.match(emptyNew.stdout + emptyNew.stderr, /must not be empty/);
  t.equal((await ldapTool('ldapwhoami', ['-x', '-H', d.url, '-D', 'uid=contact2', '-w', generated!])).code, 0, 'and the password before it still works');
  // staff set anyone's too, as a modify of userPassword lets them
  const byStaff = await passwd(['uid=staff1', PERSON_PW], ['-s', 'set-by-staff-1', dnOf('per-c2')]);
  t.equal(byStaff.code, 0, byStaff.stdout + byStaff.stderr);
  t.equal((await ldapTool('ldapwhoami', ['-x', '-H', d.url, '-D', 'uid=contact2', '-w', 'set-by-staff-1'])).code, 0, 'staff set it');
  const noOne = await passwd(['uid=staff1', PERSON_PW], ['-s', 'x', dnOf('per-none')]);
  t.match(noOne.stdout + noOne.stderr, /No such object \(32\)/, 'and are told when a name is no one, as the admin is');
  // the person's DN is resolved as every operation's is: an id in another case, a login DN
  t.equal((await passwd(['uid=staff1', PERSON_PW], ['-s', 'set-by-staff-2', dnOf('per-c2').replace('per-c2', 'PER-C2')])).code, 0, 'an entry DN with its id in capitals names the person');
  t.equal((await passwd(['uid=staff1', PERSON_PW], ['-s', 'set-by-staff-3', `uid=contact2,ou=people,${BASE}`])).code, 0, 'and so does a login DN');
  t.equal((await ldapTool('ldapwhoami', ['-x', '-H', d.url, '-D', 'uid=contact2', '-w', 'set-by-staff-3'])).code, 0, 'the last one set works');
  // a modify of a DN that is no entry here is noSuchObject, as slapd answers it, whatever its form
  const nowhere = await ldapTool('ldapmodify', ['-x', '-H', d.url, '-D', ADMIN_DN, '-w', ADMIN_PW], { input: `dn: meridianId=x,ou=nowhere,${BASE}\nchangetype: modify\nreplace: title\ntitle: T\n` });
  t.equal(nowhere.code, 32, `a modify under a container there is not: noSuchObject (${nowhere.stderr.trim()})`);

  const add = await ldapTool('ldapadd', ['-x', '-H', d.url, '-D', ADMIN_DN, '-w', ADMIN_PW], { input: `dn: uid=new,ou=people,${BASE}\nobjectClass: inetOrgPerson\ncn: New\nsn: New\n` });
  t.equal(add.code, 53, 'add: unwillingToPerform');
  t.match(add.stderr, /XML gateway/, 'saying where objects are managed');
  t.equal((await ldapTool('ldapdelete', ['-x', '-H', d.url, '-D', ADMIN_DN, '-w', ADMIN_PW, dnOf('per-c1')])).code, 53, 'delete too');
  t.equal((await ldapTool('ldapmodrdn', ['-x', '-H', d.url, '-D', ADMIN_DN, '-w', ADMIN_PW, dnOf('per-c1'), 'meridianId=per-x'])).code, 53, 'and modrdn');
  const critical = await search(d, asAdmin, ['-e', '!1.2.3.4.5', '-b', BASE, '(uid=contact1)']);
  t.equal(critical.code, 12, 'an unknown critical control: unavailableCriticalExtension');
  // controls ldapjs would decode by type and throw on (a password policy request has no value):
  // ignored when not critical (RFC 4511 4.1.11), as slapd does; SSSD sends one with every bind
  const ppolicy = await ldapTool('ldapwhoami', ['-x', '-H', d.url, '-D', ADMIN_DN, '-w', ADMIN_PW, '-e', 'ppolicy']);
  t.equal(ppolicy.code, 0, `a bind with a password policy request control is answered: ${ppolicy.stderr}`);
  t.match(ppolicy.stdout, /cn=admin/);
  const ppolicyModify = await ldapTool('ldapmodify', ['-x', '-H', d.url, '-D', ADMIN_DN, '-w', ADMIN_PW, '-e', 'ppolicy'], { input: `dn: ${dnOf('per-c1')}\nchangetype: modify\nreplace: title\ntitle: With a control\n` });
  t.equal(ppolicyModify.code, 0, `and so is a modify: ${ppolicyModify.stderr}`);
  const criticalModify = await ldapTool('ldapmodify', ['-x', '-H', d.url, '-D', ADMIN_DN, '-w', ADMIN_PW, '-e', '!1.2.3.4.5'], { input: `dn: ${dnOf('per-c1')}\nchangetype: modify\nreplace: title\ntitle: Critical\n` });
  t.equal(criticalModify.code, 12, 'an unknown critical control on a modify is still unavailableCriticalExtension');

  const metrics = await (await fetch(`${d.node.url}/metrics`)).text();
  t.match(metrics, /meridian_ldap_requests_total\{op="modify",result="0"\} [1-9]/);
  t.match(metrics, /meridian_ldap_requests_total\{op="bind",result="49"\} [1-9]/);
  t.match(metrics, /meridian_ldap_request_duration_seconds_count\{op="passwd"\} [1-9]/);
});

t.test('LDAPS with a configured certificate and key', async (t) => {
  const certs = makeCerts(tempDir(t));
  const port = await freePort();
  const node = await startXmlNode(t, { ldapsPort: port, tlsCert: certs.cert, tlsKey: certs.key });
  await seed(node);
  const url = `ldaps://127.0.0.1:${port}`;
  const r = await ldapTool('ldapwhoami', ['-x', '-H', url, '-D', 'uid=contact1', '-w', PERSON_PW], { env: { LDAPTLS_CACERT: certs.ca, LDAPTLS_REQCERT: 'demand' } });
  t.equal(r.code, 0, r.stderr);
  t.equal(r.stdout.trim(), `dn:${dnOf('per-c1')}`);
  const untrusted = await ldapTool('ldapwhoami', ['-x', '-H', url, '-D', 'uid=contact1', '-w', PERSON_PW], { env: { LDAPTLS_CACERT: '/dev/null', LDAPTLS_REQCERT: 'demand' } });
  t.not(untrusted.code, 0, 'a client that does not trust the CA refuses the server');
});

/** Sends raw bytes on a fresh connection; what came back, and whether the server closed it (not our timeout, 1.5 s). */
function raw(port: number, bytes: Buffer): Promise<{ answer: Buffer; closedByServer: boolean }> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let timedOut = false;
    const s = connect(port, '127.0.0.1', () => s.write(bytes));
    s.on('data', (c) => chunks.push(c));
    s.on('error', () => {});
    const timer = setTimeout(() => {
      timedOut = true;
      s.destroy();
    }, 1500);
    s.on('close', () => {
      clearTimeout(timer);
      resolve({ answer: Buffer.concat(chunks), closedByServer: !timedOut });
    });
  });
}

t.test('malformed BER, oversized requests and deep filters get an error or a closed connection; the node lives', async (t) => {
  const d = await directory(t);
  const cases: [string, Buffer][] = [
    ['not BER at all', Buffer.from('GET / HTTP/1.1\r\n\r\n')],
    ['a sequence of garbage', Buffer.from([0x30, 0x05, 0xff, 0xff, 0xff, 0xff, 0xff])],
    ['a length of four gigabytes', Buffer.from([0x30, 0x84, 0xff, 0xff, 0xff, 0xff, 0x02])],
    ['an indefinite length', Buffer.from([0x30, 0x80, 0x02, 0x01, 0x01, 0x00, 0x00])],
    ['a truncated bind', Buffer.from([0x30, 0x0c, 0x02, 0x01, 0x01, 0x60, 0x07, 0x02, 0x01, 0x03, 0x04, 0x00, 0x80, 0x05])],
    ['a thousand tiny messages in one write', Buffer.concat(Array.from({ length: 1000 }, (_, i) => Buffer.from([0x30, 0x05, 0x02, 0x01, i & 0x7f, 0x42, 0x00])))],
    ['an unknown operation', Buffer.from([0x30, 0x06, 0x02, 0x01, 0x01, 0x7f, 0x01, 0x00])],
    ['two megabytes of request', Buffer.concat([Buffer.from([0x30, 0x83, 0x20, 0x00, 0x00]), Buffer.alloc(0x200000, 0x41)])],
  ];
  // a search whose filter nests a thousand levels of (!...)
  const depth = 1000;
  let filter = octets('cn', 0x87); // (cn=*)
  for (let i = 0; i < depth; i++) filter = tlv(0xa2, filter);
  // SearchRequest: base "", scope sub, never deref, no size or time limit, not types only, the filter, no attributes
  const search0 = tlv(0x63, [octets(''), integer(2, 0x0a), integer(0, 0x0a), integer(0), integer(0), Buffer.from([0x01, 0x01, 0x00]), filter, tlv(0x30, [])]);
  cases.push(['a filter nested a thousand deep', tlv(0x30, [integer(7), search0])]);
  for (const [name, bytes] of cases) {
    // each is no request a server can answer: the connection is closed by the server, not left waiting
    // (the four gigabytes for good) until this client's 1.5 s give up
    const { closedByServer } = await raw(d.port, bytes);
    t.ok(closedByServer, `${name}: the server closed the connection`);
    const alive = await search(d, asAdmin, ['-b', BASE, '(uid=contact1)', '1.1']);
    t.equal(alive.code, 0, `after ${name} the directory still answers`);
  }
  const wide = `(|${Array.from({ length: 2000 }, (_, i) => `(cn=x${i})`).join('')})`;
  const tooWide = await search(d, asAdmin, ['-b', BASE, wide, '1.1']);
  t.equal(tooWide.code, 53, 'a filter of 2,000 terms is refused');
  t.match(tooWide.stderr, /terms/);
});

/**
 * A raw exchange on a fresh connection: `bind` first, if given, and the
 * requests in one write once it is answered (RFC 4511 lets no request follow
 * a bind before its response), else the requests at once; `done` is asked
 * after each whole read whether the answers so far make the result.
 */
function exchange<T>(port: number, bind: Buffer | undefined, requests: Buffer[], done: (all: BerNode[], got: Buffer) => T | undefined, limitMs = 5000): Promise<T> {
  return new Promise((resolve, reject) => {
    let got = Buffer.alloc(0);
    let sent = bind === undefined;
    const s = connect(port, '127.0.0.1', () => s.write(bind ?? Buffer.concat(requests)));
    const timer = setTimeout(() => {
      s.destroy();
      reject(new Error(`not all answers came in ${limitMs} ms: ${got.length} bytes read`));
    }, limitMs);
    s.on('error', () => {});
    s.on('data', (c: Buffer) => {
      got = Buffer.concat([got, c]);
      const all = berTree(got);
      if (!all) return; // a message still arriving
      if (!sent && all.some((m) => m.children![1]!.tag === 0x61)) {
        sent = true;
        s.write(Buffer.concat(requests));
      }
      const result = sent ? done(all, got) : undefined;
      if (result === undefined) return;
      clearTimeout(timer);
      s.destroy();
      resolve(result);
    });
  });
}

/** The result code of an LDAP message's result (its operation's first element). */
const resultCode = (got: Buffer, m: BerNode): number => got[m.children![1]!.children![0]!.start]!;

/** The result code of the first answer to `request` (given up after `limitMs`). */
function firstAnswer(port: number, request: Buffer, limitMs?: number): Promise<number> {
  return exchange(port, undefined, [request], (all, got) => resultCode(got, all[0]!), limitMs);
}

/**
 * A simple bind on a fresh connection, timed in this process from before its
 * connect to its answer: no client program's start or exit is in the time,
 * only the connection, the gateway's work (any throttle wait, one scrypt
 * check) and this process's own scheduling.
 */
async function timedBind(port: number, name: string, password: string, limitMs: number): Promise<{ code: number; ms: number }> {
  const started = performance.now();
  const code = await firstAnswer(port, bindRequest(1, name, password), limitMs);
  return { code, ms: Math.round(performance.now() - started) };
}

/** The result code of `request`, sent once `bind` is answered. */
function boundAnswer(port: number, bind: Buffer, request: Buffer): Promise<number> {
  return exchange(port, bind, [request], (all, got) => (all.length < 2 ? undefined : resultCode(got, all[all.length - 1]!)));
}

/**
 * Binds, sends the requests, and reads the result code and message of every
 * SearchResultDone, in the order of their message IDs.
 */
function searchResults(port: number, bind: Buffer, requests: Buffer[], count: number): Promise<{ codes: number[]; messages: string[] }> {
  return exchange(port, bind, requests, (all, got) => {
    // answers come as each search finishes: put them in the order of their message IDs
    const answers = all
      .filter((m) => m.children![1]!.tag === 0x65)
      .map((m) => ({ id: got.readUIntBE(m.children![0]!.start, m.children![0]!.end - m.children![0]!.start), op: m.children![1]! }))
      .sort((x, y) => x.id - y.id);
    if (answers.length < count) return undefined;
    return {
      codes: answers.map(({ op }) => got[op.children![0]!.start]!),
      messages: answers.map(({ op }) => got.toString('utf8', op.children![2]!.start, op.children![2]!.end)),
    };
  });
}

t.test('search requests decoded by the gateway: a bad scope, negative limits, a bad paged value and a bad base DN are answered', async (t) => {
  const d = await directory(t);
  const present = octets('objectClass', 0x87);
  const req = (id: number, opts: { base?: string; scope?: number; size?: Buffer; controls?: Buffer[] } = {}): Buffer =>
    tlv(0x30, [
      integer(id),
      tlv(0x63, [octets(opts.base ?? BASE), integer(opts.scope ?? 0, 0x0a), integer(0, 0x0a), opts.size ?? integer(0), integer(0), Buffer.from([0x01, 0x01, 0x00]), present, tlv(0x30, [])]),
      ...(opts.controls ? [tlv(0xa0, opts.controls)] : []),
    ]);
  const bind = bindRequest(1, ADMIN_DN, ADMIN_PW);
  const paged = (value: Buffer): Buffer => tlv(0x30, [octets('1.2.840.113556.1.4.319'), Buffer.from([0x01, 0x01, 0xff]), octets(value)]);
  const r = await searchResults(
    d.port,
    bind,
    [
      req(2),
      req(3, { scope: 7 }),
      req(4, { size: Buffer.from([0x02, 0x01, 0xff]) }), // -1 (ber.ts encodes only what servers send: no negatives)
      req(5, { controls: [paged(Buffer.from('not a sequence'))] }),
      req(6, { base: 'not a dn' }),
      req(7, { controls: [paged(tlv(0x30, [integer(1), octets('')]))] }),
      req(8, { controls: [paged(tlv(0x30, [Buffer.from([0x02, 0x01, 0xff]), octets('')]))] }),
    ],
    7,
  );
  t.same(r.codes, [0, 2, 2, 2, 34, 0, 2], 'success, protocolError three times, invalidDNSyntax, a paged search, and a page size of -1 refused');
  t.match(r.messages[1], /scope 7 is not base/);
  t.match(r.messages[2], /negative/);
  t.match(r.messages[3], /paged results control/);
  t.match(r.messages[4], /not a valid DN/);
  t.match(r.messages[6], /paged results control/);
  // a message ID outside 0 .. 2^31 - 1 is not LDAP: the connection is closed, nothing answered
  const negativeId = tlv(0x30, [Buffer.from([0x02, 0x01, 0xff]), tlv(0x63, [octets(BASE), integer(0, 0x0a), integer(0, 0x0a), integer(0), integer(0), Buffer.from([0x01, 0x01, 0x00]), octets('objectClass', 0x87), tlv(0x30, [])])]);
  const refused = await raw(d.port, negativeId);
  t.same(refused, { answer: Buffer.alloc(0), closedByServer: true }, 'a negative message ID closes the connection, unanswered');
});

/** Searches of the node with this result code so far, from /metrics. */
async function searchesEnded(d: Directory, code: number): Promise<number> {
  const m = new RegExp(`meridian_ldap_requests_total\\{op="search",result="${code}"\\} (\\d+)`).exec(await (await fetch(`${d.node.url}/metrics`)).text());
  return m ? Number(m[1]) : 0;
}

/** What a raw client of `bigAnswer` has received so far. */
interface Received {
  entries: number;
  /** the search's result code, once it came */
  result: number | undefined;
  /** the operation tags of everything else */
  others: number[];
}

/**
 * 1,200 persons of about 16 KB each, whose cn starts with `prefix`: their
 * answer (19 MB) overflows the loopback's socket buffers several times over.
 * Then a raw connection binds as the admin, searches for them as message 2,
 * and stops reading once the first entry arrives: `paused` acts then, and
 * resumes reading when it likes. Resolves when `enough` says so.
 */
async function bigAnswer(
  t: Test,
  d: Directory,
  prefix: string,
  paused: (s: Socket, resume: () => void) => Promise<void>,
  enough: (r: Received) => boolean,
): Promise<Received> {
  const long = (c: string): string => c.repeat(4000);
  for (let i = 0; i < 1200; i += 50) {
    await Promise.all(
      Array.from({ length: 50 }, (_, k) => d.node.store.create('Person', { cn: `${prefix}${i + k}`, sn: prefix, street: long('r'), l: long('l'), st: long('s'), description: long('d'), organisation: 'org-c1' })),
    );
  }
  const bind = bindRequest(1, ADMIN_DN, ADMIN_PW);
  const substring = tlv(0xa4, [octets('cn'), tlv(0x30, [octets(prefix, 0x80)])]);
  const search = tlv(0x30, [integer(2), tlv(0x63, [octets(BASE), integer(2, 0x0a), integer(0, 0x0a), integer(0), integer(0), Buffer.from([0x01, 0x01, 0x00]), substring, tlv(0x30, [])])]);
  const got: Received = { entries: 0, result: undefined, others: [] };
  const s = connect(d.port, '127.0.0.1', () => s.write(bind));
  t.teardown(() => s.destroy());
  await new Promise<void>((resolve, reject) => {
    let stopped = false;
    let searched = false;
    const framer = new MessageFramer(
      1 << 20,
      (m) => {
        const op = berTree(m)![0]!.children![1]!;
        // (the first bind's answer; a later bind is the test's own)
        if (op.tag === 0x61 && !searched) {
          searched = true;
          s.write(search);
        }
        else if (op.tag === 0x64) got.entries++;
        else if (op.tag === 0x65) got.result = m[op.children![0]!.start];
        else got.others.push(op.tag);
        if (enough(got)) resolve();
      },
      (e) => reject(new Error(e)),
    );
    s.on('data', (c: Buffer) => {
      framer.push(c);
      if (got.entries > 0 && !stopped) {
        stopped = true;
        s.pause();
        paused(s, () => s.resume()).catch(reject);
      }
    });
    s.on('error', reject);
  });
  return got;
}

t.test('a client that stops reading holds its search: what the server buffers for it stays bounded, and the answer completes when it reads again', async (t) => {
  const d = await directory(t);
  const before = await searchesEnded(d, 0);
  let heldAtPause = -1;
  const got = await bigAnswer(
    t,
    d,
    'big',
    async (_s, resume) => {
      await sleep(2000);
      heldAtPause = (await searchesEnded(d, 0)) - before;
      resume();
    },
    (r) => r.result !== undefined,
  );
  t.equal(heldAtPause, 0, 'two seconds after the client stopped reading, the search had not finished: the server waits rather than buffering 19 MB');
  t.equal(got.result, 0, 'once the client reads again the search completes');
  t.equal(got.entries, 1200, 'with every entry');
  t.equal((await searchesEnded(d, 0)) - before, 1);
});

t.test('an and of long ors of broad substrings does not hold the event loop: past a budget they are checked per candidate', async (t) => {
  const d = await directory(t);
  for (let i = 0; i < 30_000; i += 500) {
    await Promise.all(Array.from({ length: 500 }, (_, k) => d.node.store.create('Person', { cn: `Wide ${i + k}`, sn: 'Wide', mail: [`wide${i + k}@example.com`], organisation: 'org-c1' })));
  }
  const broad = tlv(0xa4, [octets('mail'), tlv(0x30, [octets('ex', 0x81)])]);
  const or = tlv(0xa1, Array.from({ length: 125 }, () => broad));
  const filter = tlv(0xa0, [or, or, tlv(0xa3, [octets('cn'), octets('nobody at all')])]);
  const search = tlv(0x30, [integer(2), tlv(0x63, [octets(BASE), integer(2, 0x0a), integer(0, 0x0a), integer(0), integer(0), Buffer.from([0x01, 0x01, 0x00]), filter, tlv(0x30, [octets('1.1')])])]);
  await searchResults(d.port, bindRequest(1, ADMIN_DN, ADMIN_PW), [search], 1);
  // (the gateway runs in this process: the longest gap between ticks of a 5 ms timer is how long its event loop was held)
  let held = 0;
  let tick = performance.now();
  const probe = setInterval(() => {
    const now = performance.now();
    held = Math.max(held, now - tick);
    tick = now;
  }, 5);
  const started = performance.now();
  const r = await searchResults(d.port, bindRequest(1, ADMIN_DN, ADMIN_PW), [search], 1);
  const ms = performance.now() - started;
  await sleep(20);
  clearInterval(probe);
  t.same(r.codes, [0], 'answered, with no entry');
  // (before the budget: about 900 ms here, in one stretch of the event loop)
  t.ok(held < 300, `the event loop was held at most ${Math.round(held)} ms (search ${Math.round(ms)} ms)`);
});

t.test('a filter whose values grow past four characters a byte once folded is refused: a megabyte of U+FDFA folded to 12 MB per search', async (t) => {
  const d = await directory(t);
  const search = (value: string): Buffer =>
    tlv(0x30, [integer(2), tlv(0x63, [octets(BASE), integer(2, 0x0a), integer(0, 0x0a), integer(0), integer(0), Buffer.from([0x01, 0x01, 0x00]), tlv(0xa3, [octets('cn'), octets(value)]), tlv(0x30, [octets('1.1')])])]);
  const expanding = await searchResults(d.port, bindRequest(1, ADMIN_DN, ADMIN_PW), [search('\ufdfa'.repeat(50_000))], 1);
  t.same(expanding.codes, [53], 'unwillingToPerform');
  t.match(expanding.messages[0], /the filter's values grow past \d+ characters once folded \(NFKC, case, DN escapes\); send shorter values/);
  const plain = await searchResults(d.port, bindRequest(1, ADMIN_DN, ADMIN_PW), [search('a'.repeat(200_000)), search('\ufb01'.repeat(3_000))], 2);
  t.same(plain.codes, [0, 0], 'a long value that folds to itself, and a ligature folded to two letters, are searched (and match nothing)');
  // a DN-valued attribute's value has each byte past ASCII escaped as three characters: 300 DNs in Japanese are searched
  const dn = `cn=${'\u7530\u4e2d\u592a\u90ce'.repeat(10)},ou=\u55b6\u696d\u90e8,${BASE}`;
  const or = tlv(0xa1, Array.from({ length: 300 }, (_, i) => tlv(0xa3, [octets('entryDN'), octets(`${dn}${i}`)])));
  const dns = tlv(0x30, [integer(2), tlv(0x63, [octets(BASE), integer(2, 0x0a), integer(0, 0x0a), integer(0), integer(0), Buffer.from([0x01, 0x01, 0x00]), or, tlv(0x30, [octets('1.1')])])]);
  t.same((await searchResults(d.port, bindRequest(1, ADMIN_DN, ADMIN_PW), [dns], 1)).codes, [0], 'DNs with letters past ASCII: searched');
});

t.test('searches held for a client that does not read hold at most 4 MiB of requests per connection: the rest stay unread in its socket', async (t) => {
  const d = await directory(t);
  const long = (c: string): string => c.repeat(4000);
  for (let i = 0; i < 1200; i += 50) {
    await Promise.all(Array.from({ length: 50 }, (_, k) => d.node.store.create('Person', { cn: `held${i + k}`, sn: 'held', street: long('r'), l: long('l'), st: long('s'), description: long('d'), organisation: 'org-c1' })));
  }
  const compares = async (): Promise<number> => Number(/meridian_ldap_requests_total\{op="compare",result="\d+"\} (\d+)/.exec(await (await fetch(`${d.node.url}/metrics`)).text())?.[1] ?? 0);
  // eight searches of 19 MB of answers each, each request 700 KB (a term that excludes nothing), then a compare
  const padding = tlv(0xa2, [tlv(0xa3, [octets('description'), octets('x'.repeat(700_000))])]);
  const search = (id: number): Buffer =>
    tlv(0x30, [integer(id), tlv(0x63, [octets(BASE), integer(2, 0x0a), integer(0, 0x0a), integer(0), integer(0), Buffer.from([0x01, 0x01, 0x00]), tlv(0xa0, [tlv(0xa4, [octets('cn'), tlv(0x30, [octets('held', 0x80)])]), padding]), tlv(0x30, [])])]);
  const compare = tlv(0x30, [integer(20), tlv(0x6e, [octets(dnOf('per-c1')), tlv(0x30, [octets('sn'), octets('contact1')])])]);
  const s = connect(d.port, '127.0.0.1', () => s.write(bindRequest(1, ADMIN_DN, ADMIN_PW)));
  t.teardown(() => s.destroy());
  s.on('error', () => undefined);
  await new Promise<void>((resolve) => s.once('data', () => resolve()));
  // the bind is answered; from here on nothing is read
  s.pause();
  for (let id = 2; id < 10; id++) s.write(search(id));
  s.write(compare);
  await sleep(3000);
  t.equal(await compares(), 0, 'the compare after them was not read while the searches held 4 MiB');
  s.destroy();
});

for (const rebind of [false, true]) {
  t.test(`an abandoned search stops where it is and is not answered; the connection goes on${rebind ? ' (abandoned after a bind)' : ''}`, async (t) => {
    const d = await directory(t);
    const anonymous = bindRequest(5, '', '');
    const abandon = abandonRequest(3, 2);
    const whoami = whoamiRequest(4);
    let abandonedWhilePaused = -1;
    const got = await bigAnswer(
      t,
      d,
      'gone',
      async (s, resume) => {
        // a bind starts a new identity on the connection, but the search it left running can still be abandoned
        if (rebind) s.write(anonymous);
        s.write(abandon);
        s.write(whoami);
        // (up to 10 s: a loaded machine may take more than a second to read the abandon)
        for (const end = Date.now() + 10_000; (abandonedWhilePaused = await searchesEnded(d, 118)) < 1 && Date.now() < end; ) await sleep(100);
        resume();
      },
      (r) => r.others.includes(0x78),
    );
    // anything still to come for the search would follow the WhoAmI answer at once
    await sleep(300);
    t.equal(abandonedWhilePaused, 1, 'the search ended while the client was not reading: the abandon did not wait for the client to drain it');
    t.equal(got.result, undefined, 'the abandoned search gets no result');
    if (rebind) t.ok(got.others.includes(0x61), 'the bind sent while the search ran was answered');
    t.ok(got.entries < 1200, `it stopped where it was (${got.entries} of 1200 entries sent)`);
  });
}

t.test('an anonymous bind after a successful one leaves the connection anonymous', async (t) => {
  const d = await directory(t);
  const search = (id: number): Buffer =>
    tlv(0x30, [integer(id), tlv(0x63, [octets(BASE), integer(2, 0x0a), integer(0, 0x0a), integer(0), integer(0), Buffer.from([0x01, 0x01, 0x00]), octets('objectClass', 0x87), tlv(0x30, [octets('1.1')])])]);
  const asAdminStill = await searchResults(d.port, bindRequest(1, ADMIN_DN, ADMIN_PW), [search(2)], 1);
  t.same(asAdminStill.codes, [0], 'bound as the admin, the search is answered');
  const after = await searchResults(d.port, bindRequest(1, ADMIN_DN, ADMIN_PW), [bindRequest(2, '', ''), search(3)], 1);
  t.same(after.codes, [50], 'after an anonymous bind (which ldapjs answers itself) the admin is gone: insufficientAccessRights');
  t.match(after.messages[0], /anonymous clients may read only the root DSE and cn=Subschema/);
});

t.test('an open connection loses what its entry lost: a role removed, a password reset, a password set by a role', async (t) => {
  const d = await directory(t);
  const ldap = (await import('ldapjs')).default;
  const client = ldap.createClient({ url: d.url });
  t.teardown(() => client.destroy());
  client.on('error', () => undefined);
  const bind = (dn: string, pw: string): Promise<void> => new Promise((resolve, reject) => client.bind(dn, pw, (e) => (e ? reject(e) : resolve())));
  /** The result code of a base search of one entry (0 when found). */
  const look = (dn: string): Promise<number> =>
    new Promise((resolve) => {
      client.search(dn, { scope: 'base', attributes: ['1.1'] }, (e, res) => {
        if (e) return resolve((e as { code?: number }).code ?? -1);
        res.on('error', (err: { code?: number }) => resolve(err.code ?? -1));
        res.on('end', (r) => resolve(r?.status ?? -1));
      });
    });
  const setPassword = (dn: string, value: string): Promise<number> =>
    new Promise((resolve) => {
      const change = new ldap.Change({ operation: 'replace', modification: new ldap.Attribute({ type: 'userPassword', values: [value] }) });
      client.modify(dn, change, (e) => resolve(e ? (e as { code?: number }).code ?? -1 : 0));
    });

  await bind('uid=radmin', PERSON_PW);
  t.equal(await look(dnOf('per-c1')), 0, 'the reseller admin reads its customer\'s contact');
  t.equal(await setPassword(dnOf('per-c1'), 'taken-over-1'), 50, "but may not set that person's password (only the admin may)");
  t.equal(await setPassword(dnOf('per-radmin'), 'my-own-new-pw'), 0, 'its own, yes');
  t.equal(await look(dnOf('per-c1')), 0, 'and stays bound after changing it');

  await d.node.store.update('per-radmin', { roles: null });
  t.equal(await look(dnOf('per-c1')), 32, 'its role removed, the open connection no longer sees the customer');
  await d.node.store.update('per-radmin', { password: 'reset-by-the-admin' });
  t.equal(await look(dnOf('per-radmin')), 49, 'its password reset, the open connection is told to bind again');
  t.equal(await look(dnOf('per-radmin')), 50, 'and is anonymous from then on');
});

t.test('a garbled password modify value, a WhoAmI with a value and an LDAPv2 bind are protocol errors, as slapd answers them; no password changes', async (t) => {
  const d = await directory(t);
  const bind = bindRequest(1, 'uid=contact1', PERSON_PW);
  const exop = (oid: string, value?: Buffer): Buffer => tlv(0x30, [integer(2), tlv(0x77, [octets(oid, 0x80), ...(value ? [octets(value, 0x81)] : [])])]);
  const PASSWD = '1.3.6.1.4.1.4203.1.11.1';
  const cases: [string, Buffer][] = [
    ['an empty value', exop(PASSWD, Buffer.alloc(0))],
    ['a bare string', exop(PASSWD, Buffer.from([0x04, 0x01, 0x61]))],
    ['an unknown field [3]', exop(PASSWD, tlv(0x30, [octets('x', 0x83)]))],
    ['newPasswd before oldPasswd', exop(PASSWD, tlv(0x30, [octets('newpw', 0x82), octets('wrongold', 0x81)]))],
    ['a constructed field', exop(PASSWD, tlv(0x30, [tlv(0xa2, [octets('x')])]))],
    ['a WhoAmI with a value', exop('1.3.6.1.4.1.4203.1.11.3', Buffer.from('x'))],
  ];
  for (const [what, request] of cases) t.equal(await boundAnswer(d.port, bind, request), 2, `${what}: protocolError`);
  t.equal((await ldapTool('ldapwhoami', ['-x', '-H', d.url, '-D', 'uid=contact1', '-w', PERSON_PW])).code, 0, 'the password is unchanged');
  // a well-formed request in order still works: the old password checked, the new one set
  const good = exop(PASSWD, tlv(0x30, [octets(PERSON_PW, 0x81), octets('a-new-pw-42', 0x82)]));
  t.equal(await boundAnswer(d.port, bind, good), 0, 'oldPasswd then newPasswd: changed');
  t.equal((await ldapTool('ldapwhoami', ['-x', '-H', d.url, '-D', 'uid=contact1', '-w', 'a-new-pw-42'])).code, 0, 'to the new one');
  for (const version of [2, 127]) {
    const old = tlv(0x30, [integer(1), tlv(0x60, [integer(version), octets('uid=contact1'), octets('a-new-pw-42', 0x80)])]);
    t.equal(await firstAnswer(d.port, old), 2, `an LDAPv${version} bind: protocolError`);
  }
});

t.test('passwords and values that are not UTF-8 are refused, not decoded to U+FFFD: a Latin-1 password matched any byte in its place', async (t) => {
  const d = await directory(t);
  const latin1 = (s: string): Buffer => Buffer.from(s, 'latin1');
  const asAdminBer = bindRequest(1, ADMIN_DN, ADMIN_PW);
  const passwordModify = (dn: string, newPassword: Buffer): Buffer =>
    tlv(0x30, [integer(2), tlv(0x77, [octets('1.3.6.1.4.1.4203.1.11.1', 0x80), octets(tlv(0x30, [octets(dn, 0x80), octets(newPassword, 0x82)]), 0x81)])]);
  t.equal(await boundAnswer(d.port, asAdminBer, passwordModify(dnOf('per-c1'), latin1('p\u00e4ss-word-1'))), 53, 'a new password in Latin-1: unwillingToPerform');
  t.equal(await firstAnswer(d.port, bindRequest(1, 'uid=contact1', PERSON_PW)), 0, 'and the password is as it was');
  // a password with a letter beyond ASCII, set as text; its Latin-1 bytes, and another byte in the letter's place, are no one's
  await d.node.store.update('per-c1', { password: 'p\u00e4ss-word-1' });
  const bindWith = (password: Buffer): Promise<number> => firstAnswer(d.port, tlv(0x30, [integer(1), tlv(0x60, [integer(3), octets('uid=contact1'), octets(password, 0x80)])]));
  t.equal(await bindWith(Buffer.from('p\u00e4ss-word-1')), 0, 'in UTF-8 it binds');
  t.equal(await bindWith(latin1('p\u00e4ss-word-1')), 49, 'in Latin-1: invalidCredentials');
  t.equal(await bindWith(latin1('p\u00fcss-word-1')), 49, 'another byte there: invalidCredentials');
  // what a password set in Latin-1 was stored as before: any byte that is no UTF-8 in its place matched it
  await d.node.store.update('per-c1', { password: 'p\ufffdss-word-2' });
  t.equal(await bindWith(latin1('p\u00fcss-word-2')), 49, 'a stored U+FFFD is matched by no byte that is not UTF-8');
  t.equal(await bindWith(latin1('p\u00e4ss-word-2')), 49, 'nor by another');
  // an attribute value and a compare value
  const title = (value: Buffer): Buffer => tlv(0x30, [integer(2), tlv(0x66, [octets(dnOf('per-c1')), tlv(0x30, [tlv(0x30, [integer(2, 0x0a), tlv(0x30, [octets('title'), tlv(0x31, [octets(value)])])])])])]);
  t.equal(await boundAnswer(d.port, asAdminBer, title(latin1('M\u00fcller'))), 21, 'a modify with a Latin-1 value: invalidAttributeSyntax');
  t.equal((await d.node.store.get('per-c1'))?.fields['title'], undefined, 'nothing stored');
  t.equal(await boundAnswer(d.port, asAdminBer, title(Buffer.from('M\u00fcller'))), 0, 'in UTF-8 it is stored');
  const compare = (value: Buffer): Buffer => tlv(0x30, [integer(2), tlv(0x6e, [octets(dnOf('per-c1')), tlv(0x30, [octets('title'), octets(value)])])]);
  t.equal(await boundAnswer(d.port, asAdminBer, compare(latin1('M\u00e4ller'))), 21, 'a compare with a Latin-1 value: invalidAttributeSyntax, not compareTrue');
  t.equal(await boundAnswer(d.port, asAdminBer, compare(Buffer.from('M\u00fcller'))), 6, 'in UTF-8: compareTrue');
});
