import t from 'tap';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { AccessScope, parseSchema, Store, type Writer } from '@meridian/store';
import { LdapGateway } from '../dist/gateway.js';
import { ldapTool, parseLdif } from '../../../test/helpers/ldap-utils.js';

const refused = (): never => {
  throw new Error('this test writes nothing');
};

t.test('a search past its time limit ends with timeLimitExceeded and what it found so far; the admin has none', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'meridian-ldap-time-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const schema = parseSchema(readFileSync(fileURLToPath(new URL('../../node/schema/crm.yaml', import.meta.url)), 'utf8'));
  const store = await Store.open({ dir, schema });
  t.teardown(() => store.close());
  await store.create('Organisation', { name: 'Org', kind: 'customer' }, { id: 'org-1' });
  for (let i = 0; i < 600; i++) await store.create('Person', { cn: `Person ${i}`, sn: `P${i}`, organisation: 'org-1' });
  // each reading of the clock after the search's first is five seconds on
  let reads = 0;
  const writer = { create: refused, update: refused, replace: refused, delete: refused, undelete: refused } as unknown as Writer;
  const gateway = new LdapGateway({
    store,
    writer,
    baseDn: 'dc=example,dc=com',
    authenticate: async (user) => (user === 'admin' ? { kind: 'admin', name: 'admin' } : undefined),
    authenticatePerson: async () => undefined,
    scope: (p) => AccessScope.of(p, schema.access, schema.types, { lookup: async () => [] }),
    anonymous: 'read',
    sizeLimit: 100_000,
    timeLimit: 1,
    log: { info: () => undefined, warn: () => undefined, error: () => undefined, debug: () => undefined },
    classify: (e) => ({ code: 'internal', message: String(e) }),
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
