import t from 'tap';
import { AccessScope } from '@meridian/store';
import { LdapGateway } from '../dist/gateway.js';
import { ldapTool, parseLdif } from '../../../test/helpers/ldap-utils.js';
import { crmStore, noWriter, quiet, schema } from './fixtures.js';

t.test('a search past its time limit ends with timeLimitExceeded and what it found so far; the admin has none', async (t) => {
  const store = await crmStore(t, 'meridian-ldap-time-');
  await store.create('Organisation', { name: 'Org', kind: 'customer' }, { id: 'org-1' });
  for (let i = 0; i < 600; i++) await store.create('Person', { cn: `Person ${i}`, sn: `P${i}`, organisation: 'org-1' });
  // each reading of the clock after the search's first is five seconds on
  let reads = 0;
  const gateway = new LdapGateway({
    ...quiet,
    store,
    writer: noWriter,
    baseDn: 'dc=example,dc=com',
    authenticate: async (user) => (user === 'admin' ? { kind: 'admin', name: 'admin' } : undefined),
    authenticatePerson: async () => undefined,
    scope: (p) => AccessScope.of(p, schema.access, schema.types, { lookup: async () => [] }),
    anonymous: 'read',
    sizeLimit: 100_000,
    timeLimit: 1,
    now: () => Date.now() + (reads++ > 0 ? 5000 : 0),
  });
  t.teardown(() => gateway.close());
  const port = await gateway.listen(0, '127.0.0.1');
  const url = `ldap://127.0.0.1:${port}`;

  reads = 0;
  const slow = await ldapTool('ldapsearch', ['-x', '-LLL', '-H', url, '-b', 'ou=people,dc=example,dc=com', '(sn=P*)', 'cn']);
  t.equal(slow.code, 3, 'timeLimitExceeded');
  t.match(slow.stderr, /the search ran past its time limit of 1 s; narrow the filter/);
  const got = parseLdif(slow.stdout).length;
  t.ok(got >= 1 && got < 600, `what it found before the limit (${got} of 600)`);

  reads = 0;
  const admin = await ldapTool('ldapsearch', ['-x', '-LLL', '-H', url, '-D', 'cn=admin,dc=example,dc=com', '-w', 'any', '-b', 'ou=people,dc=example,dc=com', '(sn=P*)', '1.1']);
  t.equal(admin.code, 0, admin.stderr);
  t.equal(parseLdif(admin.stdout).length, 600, 'the admin is not held to the limit');
});
