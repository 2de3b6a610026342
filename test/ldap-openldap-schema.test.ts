/**
 * An LDIF export of the directory (ldapsearch as the admin) loads into
 * OpenLDAP with its schema checks on, given Meridian's schema files: in
 * slapd.conf form (docs/formats/meridian.schema) and in cn=config form
 * (docs/formats/meridian.ldif). slapadd and slaptest come with Debian's
 * slapd package, which .ci/run installs. A slapd started on loopback with
 * the same schema files publishes the subschema Meridian's cn=Subschema is
 * compared with.
 */
import t from 'tap';
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { ADMIN_PW, startXmlNode } from './helpers/xml-node.js';
import { freePort } from './helpers/free-port.js';
import { ldapTool, parseLdif } from './helpers/ldap-utils.js';
import { tempDir } from './helpers/tmp.js';

const BASE = 'dc=example,dc=com';
const SLAPADD = '/usr/sbin/slapadd';
const SLAPTEST = '/usr/sbin/slaptest';
const SLAPD = '/usr/sbin/slapd';
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

t.test("cn=Subschema's definitions are OpenLDAP's: a slapd with the same schema files publishes the same ones", async (t) => {
  const { ATTRIBUTE_TYPES, definitionOid, LDAP_SYNTAXES, MATCHING_RULES, OBJECT_CLASSES } = await import('../packages/ldap/dist/schema-definitions.js');
  if (!t.ok(existsSync(SLAPD), `${SLAPD} is installed (apt-get install slapd; .ci/run does)`)) return;
  // (made here, not with tempDir: it goes only once slapd, which writes in it, has stopped)
  const dir = mkdtempSync(join(tmpdir(), 'meridian-slapd-'));
  mkdirSync(join(dir, 'db'));
  writeFileSync(join(dir, 'slapd.conf'), slapdConf(dir, [...STANDARD, join(DOCS, 'meridian.schema')]));
  const port = await freePort();
  // (-d 0: in the foreground, so that this pid is slapd's own, stopped at the end)
  const slapd = spawn(SLAPD, ['-d', '0', '-h', `ldap://127.0.0.1:${port}/`, '-f', join(dir, 'slapd.conf')], { stdio: ['ignore', 'ignore', 'pipe'] });
  let slapdErr = '';
  slapd.stderr.on('data', (b: Buffer) => void (slapdErr += b.toString()));
  // ('close' comes after 'exit', and after 'error' when it could not be started at all)
  const closed = new Promise<void>((res) => slapd.once('close', () => res()));
  slapd.once('error', (e) => void (slapdErr += `could not start: ${e.message}`));
  t.teardown(async () => {
    if (slapd.exitCode === null && slapd.signalCode === null && slapd.pid !== undefined) {
      slapd.kill('SIGTERM');
      const killer = setTimeout(() => slapd.kill('SIGKILL'), 5000);
      await closed;
      clearTimeout(killer);
    }
    rmSync(dir, { recursive: true, force: true });
  });
  const read = () => ldapTool('ldapsearch', ['-x', '-LLL', '-o', 'ldif-wrap=no', '-H', `ldap://127.0.0.1:${port}`, '-b', 'cn=Subschema', '-s', 'base', '(objectClass=subschema)', '+']);
  let r = await read();
  for (let i = 0; i < 100 && r.code !== 0 && slapd.exitCode === null && slapd.pid !== undefined; i++) {
    await new Promise((res) => setTimeout(res, 100));
    r = await read();
  }
  t.equal(r.code, 0, `slapd answered: ${r.stderr}${slapdErr}`);
  const theirs = parseLdif(r.stdout)[0]!.attrs;
  const byOid = (defs: string[] | undefined): Map<string, string> => new Map((defs ?? []).map((d) => [definitionOid(d)!, d]));
  // Meridian leaves out OpenLDAP's descriptions of standard definitions (its own keep theirs)
  const undescribed = (d: string): string => (d.includes('2.25.289686606370189635707810394489243767983') ? d : d.replace(/ DESC '(?:[^'\\]|\\.)*'/, ''));
  for (const [attr, ours, describedByUs] of [
    ['attributeTypes', ATTRIBUTE_TYPES, false],
    ['objectClasses', OBJECT_CLASSES, false],
    ['matchingRules', MATCHING_RULES, false],
    ['ldapSyntaxes', LDAP_SYNTAXES, true],
  ] as const) {
    const slapds = byOid(theirs[attr]);
    const differ: string[] = [];
    const unknown: string[] = [];
    for (const d of ours) {
      const oid = definitionOid(d)!;
      const their = slapds.get(oid);
      if (their === undefined) unknown.push(oid);
      else if ((describedByUs ? their : undescribed(their)) !== d) differ.push(`ours ${d}\nslapd ${their}`);
    }
    t.same(differ, [], `${attr}: each as slapd has it`);
    // slapd keeps some standard ones to itself: the types of the subschema rules it does not support
    // (RFC 4512), and syntaxes of values it never shows (descriptions, assertions)
    if (attr === 'attributeTypes') t.same(unknown.sort(), ['2.5.18.6', '2.5.21.1', '2.5.21.10', '2.5.21.2', '2.5.21.7'], `${attr}: slapd publishes all but those of the rules it does not support`);
    else if (attr === 'ldapSyntaxes') {
      const hidden = ['1.3.6.1.1.15.1', ...[3, 16, 17, 21, 23, 25, 30, 31, 35, 37, 51, 54, 58].map((n) => `1.3.6.1.4.1.1466.115.121.1.${n}`)];
      t.same(unknown.sort(), hidden.sort(), `${attr}: slapd publishes all but those of values it never shows (descriptions, assertions)`);
    }
    else t.same(unknown, [], `${attr}: slapd publishes every one`);
  }
});
