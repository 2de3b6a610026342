import { writeFileSync } from 'node:fs';
import t from 'tap';
import { resolveConfig } from '@meridian/node';
import { tempDir } from './helpers/tmp.js';

t.test('flags win over the environment, which wins over the config file', async (t) => {
  const file = `${tempDir(t)}/meridian.yaml`;
  writeFileSync(file, 'dir: /from/file\nhttpPort: 9001\nnodeId: file-node\nhost: 0.0.0.0\n');
  const c = resolveConfig({
    file,
    env: { MERIDIAN_HTTP_PORT: '9002', MERIDIAN_NODE_ID: 'env-node' },
    flags: { nodeId: 'flag-node' },
  });
  t.match(c, { dir: '/from/file', httpPort: 9002, nodeId: 'flag-node', host: '0.0.0.0' });
  t.equal(resolveConfig({}).httpPort, 8080, 'defaults');
});

t.test('bad settings are refused with the source named', async (t) => {
  const file = `${tempDir(t)}/meridian.yaml`;
  writeFileSync(file, 'httpPort: 9001\ncolour: blue\n');
  t.throws(() => resolveConfig({ file }), { message: /config file .*meridian.yaml: unknown setting "colour"/ });
  t.throws(() => resolveConfig({ flags: { httpPort: 'eighty' } }), { message: '--http-port: httpPort must be a whole number, got "eighty"' });
  // 0 is a whole number, but a heartbeat every millisecond, a write timed out at once or every body refused is no setting
  t.throws(() => resolveConfig({ flags: { heartbeat: '0' } }), { message: '--heartbeat: heartbeat must be at least 50, got 0' });
  // a base DN is checked with the rest, before anything starts (it failed once the store was open, exit 1)
  t.throws(() => resolveConfig({ flags: { baseDn: 'example.com', ldapPort: '3389' } }), { message: '--base-dn (MERIDIAN_BASE_DN) must be a base DN: "example.com" is not a DN such as dc=example,dc=com' });
  t.throws(() => resolveConfig({ flags: { ldapPort: '3389' }, env: { MERIDIAN_BASE_DN: 'cn=Subschema' } }), { message: /^--base-dn \(MERIDIAN_BASE_DN\) must be a base DN: "cn=Subschema" is the subschema subentry's/ });
  t.equal(resolveConfig({ flags: { baseDn: 'o=Acme, c=ZA', ldapPort: '3389' } }).baseDn, 'o=Acme, c=ZA');
  t.equal(resolveConfig({ flags: { baseDn: 'example.com' } }).baseDn, 'example.com', 'with LDAP off, as by default, a placeholder is no error');
  t.throws(() => resolveConfig({ env: { MERIDIAN_WRITE_TIMEOUT: '0' } }), { message: 'MERIDIAN_WRITE_TIMEOUT: writeTimeout must be at least 100, got 0' });
  t.throws(() => resolveConfig({ flags: { maxBody: '0' } }), { message: '--max-body: maxBody must be at least 1, got 0' });
  // 0 entries or seconds: every search past its limit at its first entry
  t.throws(() => resolveConfig({ flags: { ldapSizeLimit: '0' } }), { message: '--ldap-size-limit: ldapSizeLimit must be at least 1, got 0' });
  t.throws(() => resolveConfig({ flags: { ldapTimeLimit: '0' } }), { message: '--ldap-time-limit: ldapTimeLimit must be at least 1, got 0' });
  // past what a timer can wait, Node waits 1 ms: a ping every millisecond, every forwarded write timed out at once
  t.throws(() => resolveConfig({ flags: { heartbeat: '2147483648', linkTimeout: '2147483649' } }), { message: '--heartbeat: heartbeat must be at most 2147483647, got 2147483648' });
  t.throws(() => resolveConfig({ env: { MERIDIAN_WRITE_TIMEOUT: '9999999999' } }), { message: 'MERIDIAN_WRITE_TIMEOUT: writeTimeout must be at most 2147483647, got 9999999999' });
  t.throws(() => resolveConfig({ flags: { sampleSize: '1000001' } }), { message: '--sample-size: sampleSize must be at most 1000000, got 1000001' }, 'a sample larger than a heap holds is refused before it is generated');
  t.equal(resolveConfig({ flags: { sampleSize: '1000000' } }).sampleSize, 1_000_000);
  t.equal(resolveConfig({ flags: { ldapTimeLimit: '99999999' } }).ldapTimeLimit, 99999999, 'a time limit past any timer stands for none, as before');
  t.throws(() => resolveConfig({ flags: { ldapPort: '70000' } }), { message: '--ldap-port: ldapPort must be a port number (0-65535), got 70000' });
  t.equal(resolveConfig({ flags: { writeTimeout: '2147483647' } }).writeTimeout, 2147483647, 'the longest a timer waits is taken');
  t.equal(resolveConfig({ flags: { heartbeat: '50', linkTimeout: '200' } }).heartbeat, 50);
  t.throws(() => resolveConfig({ env: { MERIDIAN_HTTP_PORT: '70000' } }), { message: /MERIDIAN_HTTP_PORT: httpPort must be a port number/ });
  t.throws(() => resolveConfig({ file: '/nonexistent/m.yaml' }), { message: /cannot read config file \/nonexistent\/m.yaml/ });
  // YAML that does not parse: the parser's first line, without the colon that led to the source it quoted
  const broken = `${tempDir(t)}/broken.yaml`;
  writeFileSync(broken, 'a: [\n');
  t.throws(() => resolveConfig({ file: broken }), { message: /^cannot read config file \S+broken\.yaml: .* at line 2, column 1$/ });
  // an unquoted number or boolean where text is due: said so, not "must be a non-empty string"
  const numbers = `${tempDir(t)}/numbers.yaml`;
  writeFileSync(numbers, 'adminPassword: 123456\n');
  t.throws(() => resolveConfig({ file: numbers }), { message: /numbers\.yaml: adminPassword must be text, and YAML read 123456 as a number; put the value in quotes$/ });
  writeFileSync(numbers, 'nodeId: true\n');
  t.throws(() => resolveConfig({ file: numbers }), { message: /nodeId must be text, and YAML read true as a boolean; put the value in quotes$/ });
  writeFileSync(numbers, 'clusterSecret: "0123456789012345"\n');
  t.equal(resolveConfig({ file: numbers }).clusterSecret, '0123456789012345', 'quoted, it is the text typed');
});
