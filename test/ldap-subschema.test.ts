/**
 * The subschema subentry (RFC 4512 4.2), which directory browsers and LDAP
 * libraries read to learn the attribute types and classes: cn=Subschema,
 * named by the root DSE and every entry; its definitions consistent among
 * themselves and covering what the directory serves. (That they agree with
 * OpenLDAP's is checked against a running slapd in ldap-openldap-schema.)
 */
import t, { type Test } from 'tap';
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { parseSchema } from '@meridian/store';
import { ADMIN_PW, seed, startXmlNode } from './helpers/xml-node.js';
import { freePort } from './helpers/free-port.js';
import { ldapTool, parseLdif } from './helpers/ldap-utils.js';
import { ATTRIBUTE_TYPES, definitionNames, LDAP_SYNTAXES, MATCHING_RULES, OBJECT_CLASSES } from '../packages/ldap/dist/schema-definitions.js';
import { DirectoryLayout } from '../packages/ldap/dist/layout.js';
import { attrKey } from '../packages/ldap/dist/filter.js';
import { integer, octets, tlv } from '../packages/ldap/dist/ber.js';
import { connect } from 'node:net';

const BASE = 'dc=example,dc=com';
const ADMIN_DN = `cn=admin,${BASE}`;

async function directory(t: Test): Promise<{ url: string; port: number }> {
  const port = await freePort();
  const node = await startXmlNode(t, { ldapPort: port });
  await seed(node);
  return { url: `ldap://127.0.0.1:${port}`, port };
}

/** Sends one raw request on a new connection and reads the result code of its answer (the first enumeration). */
function resultCode(port: number, request: Buffer): Promise<number> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1', () => socket.write(request));
    let got = Buffer.alloc(0);
    socket.on('data', (b: Buffer) => {
      got = Buffer.concat([got, b]);
      const at = got.indexOf(Buffer.from([0x0a, 0x01]));
      if (at >= 0 && got.length > at + 2) {
        resolve(got[at + 2]!);
        socket.destroy();
      }
    });
    socket.on('error', reject);
    socket.setTimeout(10_000, () => reject(new Error('no answer')));
  });
}

const oidOf = (d: string): string => /^\( ([0-9.]+) /.exec(d)![1]!;
/** The names a definition's keyword lists: `MAY ( a $ b )` or `MAY a`. */
function listed(d: string, keyword: string): string[] {
  const m = new RegExp(` ${keyword} (?:\\( ([^)]*) \\)|(\\S+))`).exec(d);
  if (!m) return [];
  return (m[1] ?? m[2]!).split('$').map((x) => x.trim().replace(/\{\d+\}$/, ''));
}

t.test('the definitions name only what they define: every supertype, class attribute, matching rule and syntax', async (t) => {
  const types = new Map<string, string>();
  for (const d of ATTRIBUTE_TYPES) for (const n of definitionNames(d)) types.set(n.toLowerCase(), d);
  const classes = new Map(OBJECT_CLASSES.map((d) => [definitionNames(d)[0]!.toLowerCase(), d]));
  const rules = new Set(MATCHING_RULES.flatMap(definitionNames));
  const syntaxes = new Set(LDAP_SYNTAXES.map(oidOf));
  for (const all of [ATTRIBUTE_TYPES, OBJECT_CLASSES, MATCHING_RULES, LDAP_SYNTAXES]) {
    t.equal(new Set(all.map(oidOf)).size, all.length, 'each OID once');
    t.ok(all.every((d) => /^\( [0-9.]+ .*\)$/.test(d)), 'each a parenthesised description');
  }
  t.equal(types.size, ATTRIBUTE_TYPES.flatMap(definitionNames).length, 'each attribute type name once');
  const problems: string[] = [];
  for (const d of ATTRIBUTE_TYPES) {
    const name = definitionNames(d)[0]!;
    for (const sup of listed(d, 'SUP')) if (!types.has(sup.toLowerCase())) problems.push(`${name}: SUP ${sup}`);
    for (const kw of ['EQUALITY', 'ORDERING', 'SUBSTR']) for (const r of listed(d, kw)) if (!rules.has(r)) problems.push(`${name}: ${kw} ${r}`);
    for (const s of listed(d, 'SYNTAX')) if (!syntaxes.has(s)) problems.push(`${name}: SYNTAX ${s}`);
    // a type with neither a syntax nor a supertype to take one from is no type
    if (listed(d, 'SYNTAX').length === 0 && listed(d, 'SUP').length === 0) problems.push(`${name}: no SYNTAX or SUP`);
  }
  for (const d of OBJECT_CLASSES) {
    const name = definitionNames(d)[0]!;
    for (const kw of ['MUST', 'MAY']) for (const a of listed(d, kw)) if (!types.has(a.toLowerCase())) problems.push(`${name}: ${kw} ${a}`);
    for (const sup of listed(d, 'SUP')) if (!classes.has(sup.toLowerCase())) problems.push(`${name}: SUP ${sup}`);
  }
  for (const d of MATCHING_RULES) for (const s of listed(d, 'SYNTAX')) if (!syntaxes.has(s)) problems.push(`${definitionNames(d)[0]}: SYNTAX ${s}`);
  t.same(problems, [], 'nothing named is missing');

  // what the directory serves is defined: the CRM schema's attributes and classes, the base, containers and root DSE
  const crm = parseSchema(readFileSync(resolve(import.meta.dirname, '../packages/node/schema/crm.yaml'), 'utf8'), 'crm.yaml');
  const layout = new DirectoryLayout(crm, BASE);
  for (const mapped of layout.types.values()) {
    for (const { name } of mapped.attributes.values()) t.ok(types.has(name.toLowerCase()), `${mapped.def.name}'s ${name} is defined`);
    for (const c of mapped.objectClasses) t.ok(classes.has(c.toLowerCase()), `${mapped.def.name}'s class ${c} is defined`);
  }
  for (const c of [...layout.baseEntry().objectClasses, 'organizationalUnit', 'extensibleObject', 'subentry', 'subschema']) t.ok(classes.has(c.toLowerCase()), `${c} is defined`);
  for (const a of ['meridianId', 'meridianEntitlement', 'entryUUID', 'entryDN', 'hasSubordinates', 'structuralObjectClass', 'namingContexts', 'supportedFeatures', 'vendorName', 'subschemaSubentry', 'attributeTypes', 'objectClasses', 'matchingRules', 'ldapSyntaxes']) {
    t.ok(types.has(a.toLowerCase()), `${a} is defined`);
  }
  // every name it lists, aliases too, is one filters and compares know, as the type it names
  const unknown = ATTRIBUTE_TYPES.flatMap((d) => definitionNames(d).filter((n) => !layout.attributeTypes.has(attrKey(n)) || attrKey(n) !== attrKey(definitionNames(d)[0]!)));
  t.same(unknown, [], 'every listed name resolves to its type');
});

t.test("Meridian's own definitions are the ones its schema files give OpenLDAP", async (t) => {
  const text = readFileSync(resolve(import.meta.dirname, '../docs/formats/meridian.schema'), 'utf8').replace(/^#.*$/gm, '');
  // slapd.conf form: `attributetype ( ... )` over several lines, one space between parts once joined
  const inFile = [...text.matchAll(/^(attributetype|objectclass) (\([^]*?\))\s*$/gm)].map((m) => [m[1], m[2]!.replace(/\s+/g, ' ')] as const);
  t.equal(inFile.length, 3);
  for (const [kind, def] of inFile) {
    const ours = (kind === 'attributetype' ? ATTRIBUTE_TYPES : OBJECT_CLASSES).find((d) => oidOf(d) === oidOf(def));
    t.equal(ours, def, `${definitionNames(def)[0]} as in meridian.schema`);
  }
  const ldif = readFileSync(resolve(import.meta.dirname, '../docs/formats/meridian.ldif'), 'utf8').replace(/\n /g, ' ');
  for (const [, def] of inFile) t.ok(ldif.replace(/\s+/g, ' ').includes(def.replace(/^\( /, '').replace(/ \)$/, '')), `and in meridian.ldif: ${definitionNames(def)[0]}`);
});

t.test('cn=Subschema: anyone reads it with a base search, its definitions under + or by name, and it is named by every entry', async (t) => {
  const d = await directory(t);
  const search = (bind: boolean, args: string[]) => ldapTool('ldapsearch', ['-x', '-LLL', '-o', 'ldif-wrap=no', '-H', d.url, ...(bind ? ['-D', ADMIN_DN, '-w', ADMIN_PW] : []), ...args]);

  const root = parseLdif((await search(false, ['-b', '', '-s', 'base', '(objectClass=*)', 'subschemaSubentry'])).stdout)[0]!;
  t.same(root.attrs['subschemaSubentry'], ['cn=Subschema'], 'the root DSE names it');

  const all = await search(false, ['-b', 'cn=Subschema', '-s', 'base', '(objectClass=subschema)', '+']);
  t.equal(all.code, 0, all.stderr);
  const sub = parseLdif(all.stdout)[0]!;
  t.equal(sub.dn, 'cn=Subschema');
  t.same(sub.attrs['attributeTypes'], ATTRIBUTE_TYPES, 'every attribute type, to an anonymous client');
  t.same(sub.attrs['objectClasses'], OBJECT_CLASSES);
  t.same(sub.attrs['matchingRules'], MATCHING_RULES);
  t.same(sub.attrs['ldapSyntaxes'], LDAP_SYNTAXES);
  t.same([sub.attrs['structuralObjectClass'], sub.attrs['subschemaSubentry'], sub.attrs['objectClass']], [['subentry'], ['cn=Subschema'], undefined], 'its operational attributes; no user ones under + alone');

  const user = parseLdif((await search(false, ['-b', 'cn=subschema', '-s', 'base'])).stdout)[0]!;
  t.same(user.attrs, { objectClass: ['top', 'subentry', 'subschema', 'extensibleObject'], cn: ['Subschema'] }, 'no attributes asked for: the user ones only (a DN in any case)');
  const named = parseLdif((await search(false, ['-b', 'commonName=Subschema', '-s', 'base', '(objectClass=*)', 'objectClasses'])).stdout)[0]!;
  t.same(Object.keys(named.attrs), ['objectClasses'], 'one asked for by name (cn spelt commonName)');
  t.equal(parseLdif((await search(false, ['-b', 'cn=Subschema', '-s', 'base', '(objectClass=person)'])).stdout).length, 0, 'a filter it does not match: no entry');
  const below = await search(false, ['-b', 'cn=Subschema', '-s', 'one', '(objectClass=*)']);
  t.equal(below.code, 32, 'nothing below it: noSuchObject, as slapd answers');
  t.match(below.stderr, /read it with a base-scope search/);

  const entries = parseLdif((await search(true, ['-b', BASE, '-s', 'sub', '(objectClass=*)', '1.1'])).stdout).length;
  const naming = parseLdif((await search(true, ['-b', BASE, '-s', 'sub', '(subschemaSubentry=cn=Subschema)', 'subschemaSubentry'])).stdout);
  t.equal(naming.length, entries, `every entry under the base names it (${entries}), and a filter finds it`);
  t.ok(naming.every((e) => e.attrs['subschemaSubentry']?.[0] === 'cn=Subschema'), 'by name');
  t.equal(parseLdif((await search(true, ['-b', BASE, '-s', 'base', '(objectClass=*)', '*'])).stdout)[0]!.attrs['subschemaSubentry'], undefined, 'an operational attribute: not under *');

  const one = parseLdif((await search(true, ['-b', `ou=people,${BASE}`, '-s', 'one', '(subschemaSubentry=cn=Subschema)', '1.1'])).stdout).length;
  t.equal(one, parseLdif((await search(true, ['-b', `ou=people,${BASE}`, '-s', 'one', '(objectClass=*)', '1.1'])).stdout).length, 'in one scope too');
  t.ok(one > 0);
  // DN-valued attributes match as DNs (distinguishedNameMatch): spaces and case do not count
  t.equal(parseLdif((await search(true, ['-b', BASE, '-s', 'base', '(subschemaSubentry=CN = subschema)', '1.1'])).stdout).length, 1, 'subschemaSubentry, however the DN is written');
  const byDn = parseLdif((await search(true, ['-b', BASE, '-s', 'sub', '(entryDN=meridianId=PER-C1, ou=people, DC=example, dc=com)', '1.1'])).stdout);
  t.same(byDn.map((e) => e.dn), [`meridianId=per-c1,ou=people,${BASE}`], 'entryDN too');
  t.equal(parseLdif((await search(false, ['-b', '', '-s', 'base', '(namingContexts=dc = example, dc = com)', '1.1'])).stdout).length, 1, 'and namingContexts, on the root DSE');
  // an alias it lists works as the type: domainComponent is dc
  t.equal(parseLdif((await search(true, ['-b', BASE, '-s', 'base', '(domainComponent=example)', '1.1'])).stdout).length, 1, 'a filter on an alias cn=Subschema lists');
  // definitions match by OID or name (objectIdentifierFirstComponentMatch), as in slapd
  const byOid = parseLdif((await search(false, ['-b', 'cn=Subschema', '-s', 'base', '(&(attributeTypes=2.5.4.3)(objectClasses=inetOrgPerson))', '1.1'])).stdout);
  t.equal(byOid.length, 1, 'a filter of a definition by OID and by name');
  t.equal(parseLdif((await search(false, ['-b', 'cn=Subschema', '-s', 'base', '(attributeTypes=9.9.9)', '1.1'])).stdout).length, 0, 'one it does not hold: no entry');

  const compare = (bind: boolean, dn: string, assertion: string) => ldapTool('ldapcompare', ['-x', '-H', d.url, ...(bind ? ['-D', ADMIN_DN, '-w', ADMIN_PW] : []), dn, assertion]);
  t.equal((await compare(false, 'cn=Subschema', 'attributeTypes:2.5.4.3')).code, 6, 'a compare of a definition by OID');
  t.equal((await compare(false, 'cn=Subschema', 'attributeTypes:commonName')).code, 6, 'or by a name');
  t.equal((await compare(false, 'cn=Subschema', 'objectClasses:2.5.4.3')).code, 5, 'of another kind: false');
  t.equal((await compare(true, BASE, 'domainComponent:example')).code, 6, 'a compare of an alias');
  t.equal((await compare(false, 'cn=Subschema', 'objectClass:subschema')).code, 6, 'compared by anyone: compareTrue');
  t.equal((await compare(false, 'cn=Subschema', 'cn:Other')).code, 5, 'compareFalse');
  t.equal((await compare(false, '', 'vendorName:Meridian')).code, 6, 'the root DSE is compared too (it was invalidDNSyntax: ldapjs cannot parse the empty DN)');
  t.equal((await compare(false, '', 'supportedLDAPVersion:2')).code, 5);
  t.equal((await compare(false, BASE, 'dc:example')).code, 50, 'other entries still need a bind');
  // a root DSE compare (answered without ldapjs) with an unknown critical control: refused as every operation is
  const criticalCompare = tlv(0x30, [integer(1), tlv(0x6e, [octets(''), tlv(0x30, [octets('vendorName'), octets('Meridian')])]), tlv(0xa0, [tlv(0x30, [octets('1.2.3.4'), Buffer.from([0x01, 0x01, 0xff])])])]);
  t.equal(await resultCode(d.port, criticalCompare), 12, 'unavailableCriticalExtension');
  const modify = (dn: string) => ldapTool('ldapmodify', ['-x', '-H', d.url, '-D', ADMIN_DN, '-w', ADMIN_PW], { input: `dn: ${dn}\nchangetype: modify\nadd: attributeTypes\nattributeTypes: ( 1.2.3.4 NAME 'x' SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 )\n` });
  const refused = await modify('cn=Subschema');
  t.equal(refused.code, 53, 'its definitions are not modified: unwillingToPerform, as slapd answers');
  t.match(refused.stderr, /the subschema subentry cannot be modified over LDAP/);
  const rootModify = await modify('');
  t.equal(rootModify.code, 53, 'nor is the root DSE');
  t.match(rootModify.stderr, /the root DSE is not one/);
});

t.test('a base DN of cn=Subschema is refused: it would hide the subschema subentry', async (t) => {
  const crm = parseSchema(readFileSync(resolve(import.meta.dirname, '../packages/node/schema/crm.yaml'), 'utf8'), 'crm.yaml');
  t.throws(() => new DirectoryLayout(crm, 'CN=subschema'), { message: 'the base DN "CN=subschema" is the subschema subentry\'s; choose another, such as dc=example,dc=com' });
});

t.test('an attribute type named by an alias or by its OID is that type in filters, selections and compares, as in slapd', async (t) => {
  const d = await directory(t);
  const search = (filter: string, ...attrs: string[]) =>
    ldapTool('ldapsearch', ['-x', '-LLL', '-o', 'ldif-wrap=no', '-H', d.url, '-D', ADMIN_DN, '-w', ADMIN_PW, '-b', BASE, filter, ...attrs]).then((r) => parseLdif(r.stdout));
  const canonical = await search('(cn=Person contact1)', 'cn', 'sn');
  t.equal(canonical.length, 1, 'the canonical name finds the entry');
  const dn = canonical[0]!.dn;
  for (const filter of ['(commonName=Person contact1)', '(2.5.4.3=Person contact1)', '(&(surname=contact1)(2.5.4.4=contact1)(objectClass=inetOrgPerson))', '(CN=person CONTACT1)']) {
    const found = await search(filter, 'cn');
    t.same(found.map((e) => e.dn), [dn], `${filter} finds the same entry`);
  }
  const selected = await search('(cn=Person contact1)', '2.5.4.4', 'commonName');
  t.same([selected[0]?.attrs['sn'], selected[0]?.attrs['cn']], [['contact1'], ['Person contact1']], 'a selection by OID or alias returns the type');
  for (const type of ['2.5.4.4', 'surname']) {
    const r = await ldapTool('ldapcompare', ['-x', '-H', d.url, '-D', ADMIN_DN, '-w', ADMIN_PW, dn, `${type}:contact1`]);
    t.equal(r.code, 6, `compare of ${type}: compareTrue (${r.stdout.trim()} ${r.stderr.trim()})`);
  }
  // a compare of an entry there is not: noSuchObject with the matched DN, as a search of that base answers
  const missing = await ldapTool('ldapcompare', ['-x', '-H', d.url, '-D', ADMIN_DN, '-w', ADMIN_PW, `meridianId=per-none,ou=people,${BASE}`, 'cn:x']);
  t.equal(missing.code, 32);
  t.match(`${missing.stdout}${missing.stderr}`, new RegExp(`Matched DN: ou=people,${BASE}`), 'with the container as the matched DN');
});
