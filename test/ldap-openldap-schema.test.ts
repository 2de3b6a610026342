/**
 * An LDIF export of the directory (ldapsearch as the admin) loads into
 * OpenLDAP with its schema checks on, given Meridian's schema files: in
 * slapd.conf form (docs/formats/meridian.schema) and in cn=config form
 * (docs/formats/meridian.ldif). slapadd and slaptest come with Debian's
 * slapd package, which .ci/run installs; slapd itself is never started.
 */
import t from 'tap';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { ADMIN_PW, startXmlNode } from './helpers/xml-node.js';
import { freePort } from './helpers/free-port.js';
import { ldapTool, parseLdif } from './helpers/ldap-utils.js';
import { tempDir } from './helpers/tmp.js';

const BASE = 'dc=example,dc=com';
const SLAPADD = '/usr/sbin/slapadd';
const SLAPTEST = '/usr/sbin/slaptest';
const DOCS = resolve(import.meta.dirname, '../docs/formats');
const STANDARD = ['core', 'cosine', 'inetorgperson'].map((s) => `/etc/ldap/schema/${s}.schema`);

function slapdConf(dir: string, includes: string[]): string {
  return [
    ...includes.map((s) => `include ${s}`),
    `pidfile ${join(dir, 'slapd.pid')}`,
    'modulepath /usr/lib/ldap',
    'moduleload back_mdb',
    'database mdb',
    `suffix "${BASE}"`,
    `directory ${join(dir, 'db')}`,
    '',
  ].join('\n');
}

t.test('an LDIF export of the sample directory loads into OpenLDAP with schema checks, through meridian.schema and through meridian.ldif', async (t) => {
  t.ok(existsSync(SLAPADD) && existsSync(SLAPTEST), `${SLAPADD} and ${SLAPTEST} are installed (apt-get install slapd; .ci/run does)`);
  const port = await freePort();
  const node = await startXmlNode(t, { ldapPort: port, sample: true, sampleSize: 120 });
  const dump = await ldapTool('ldapsearch', ['-x', '-LLL', '-o', 'ldif-wrap=no', '-H', `ldap://127.0.0.1:${port}`, '-D', `cn=admin,${BASE}`, '-w', ADMIN_PW, '-b', BASE, '-s', 'sub', '-z', '0', '(objectClass=*)']);
  t.equal(dump.code, 0, dump.stderr);
  const entries = parseLdif(dump.stdout);
  t.ok(entries.length > 100, `the export holds the directory (${entries.length} entries)`);
  const attrs = new Set(entries.flatMap((e) => Object.keys(e.attrs)));
  // what the standard classes alone would refuse is in it, so the load below proves the schema files
  for (const a of ['meridianId', 'meridianEntitlement', 'c', 'labeledURI']) t.ok(attrs.has(a), `the export has ${a}`);
  const people = entries.filter((e) => e.attrs['objectClass']?.includes('inetOrgPerson'));
  t.ok(people.length > 0 && people.every((e) => e.attrs['objectClass']?.includes('meridianObject')), 'every person entry has the auxiliary class meridianObject');

  const dir = tempDir(t, 'meridian-slapadd-');
  const ldif = join(dir, 'export.ldif');
  writeFileSync(ldif, dump.stdout);

  // slapd.conf with meridian.schema
  const confDir = join(dir, 'conf');
  mkdirSync(join(confDir, 'db'), { recursive: true });
  writeFileSync(join(confDir, 'slapd.conf'), slapdConf(confDir, [...STANDARD, join(DOCS, 'meridian.schema')]));
  const viaConf = await ldapTool(SLAPADD, ['-f', join(confDir, 'slapd.conf'), '-l', ldif]);
  t.equal(viaConf.code, 0, `slapadd with meridian.schema: ${viaConf.stderr}`);

  // cn=config, to which meridian.ldif is added as an operator would add it
  const cfgDir = join(dir, 'cfg');
  mkdirSync(join(cfgDir, 'slapd.d'), { recursive: true });
  mkdirSync(join(cfgDir, 'db'), { recursive: true });
  writeFileSync(join(cfgDir, 'slapd.conf'), slapdConf(cfgDir, STANDARD));
  // (slaptest opens the database read-only: an empty one first)
  const created = await ldapTool(SLAPADD, ['-f', join(cfgDir, 'slapd.conf'), '-l', '/dev/null']);
  t.equal(created.code, 0, `an empty database: ${created.stderr}`);
  const converted = await ldapTool(SLAPTEST, ['-f', join(cfgDir, 'slapd.conf'), '-F', join(cfgDir, 'slapd.d')]);
  t.equal(converted.code, 0, `slaptest made cn=config: ${converted.stderr}`);
  // (-u: a dry run, which writes nothing, so the load below starts empty)
  const refused = await ldapTool(SLAPADD, ['-u', '-F', join(cfgDir, 'slapd.d'), '-b', BASE, '-l', ldif]);
  t.not(refused.code, 0, 'without the schema the export is refused');
  t.match(refused.stderr, /invalid DN "meridianId=/, 'for its RDNs of meridianId, a type only meridian.schema defines');
  const schema = await ldapTool(SLAPADD, ['-n', '0', '-F', join(cfgDir, 'slapd.d'), '-l', join(DOCS, 'meridian.ldif')]);
  t.equal(schema.code, 0, `meridian.ldif added to cn=config: ${schema.stderr}`);
  const viaConfig = await ldapTool(SLAPADD, ['-F', join(cfgDir, 'slapd.d'), '-b', BASE, '-l', ldif]);
  t.equal(viaConfig.code, 0, `slapadd with meridian.ldif: ${viaConfig.stderr}`);
  await node.stop();
});
