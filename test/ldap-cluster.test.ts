/**
 * The LDAP gateway across nodes, as separate processes through bin/meridian:
 * a password changed with ldappasswd on one master binds on the other; an
 * ldapmodify on one master shows through the CLI of the other; a replica
 * answers searches and binds itself, sends modifies through its master, and
 * answers unwillingToPerform with the reason while read-only.
 */
import t from 'tap';
import { cli, startNode } from './helpers/node-process.js';
import { freePort } from './helpers/free-port.js';
import { tempDir } from './helpers/tmp.js';
import { until } from './helpers/wait.js';
import { ldapTool, parseLdif } from './helpers/ldap-utils.js';

const PW = 'ldap-cluster-admin-pw';
const SECRET = 'ldap-cluster-test-secret';
const LINK = ['--heartbeat', '200', '--link-timeout', '1500'];
const BASE = 'dc=example,dc=com';
const AUTH = `Basic ${Buffer.from(`admin:${PW}`).toString('base64')}`;
const DN = `meridianId=per-ldapuser,ou=people,${BASE}`;

const whoami = (port: number, dn: string, pw: string) => ldapTool('ldapwhoami', ['-x', '-H', `ldap://127.0.0.1:${port}`, '-D', dn, '-w', pw]);

t.test('two masters and a replica serve one directory', async (t) => {
  const [h1, h2, l1, l2, lr] = await Promise.all([freePort(), freePort(), freePort(), freePort(), freePort()]);
  const master = (name: string, http: number, ldap: number, peer: number, extra: string[] = []) =>
    startNode(t, ['--dir', tempDir(t), '--node-id', name, '--http-port', String(http), '--ldap-port', String(ldap), '--admin-password', PW, '--cluster-secret', SECRET, '--peers', `ws://127.0.0.1:${peer}/sync`, ...LINK, ...extra]);
  const m1 = await master('m1', h1, l1, h2, ['--sample', '--sample-size', '30']);
  const m2 = await master('m2', h2, l2, h1);
  const created = await fetch(`${m1.url}/api/objects`, {
    method: 'POST',
    headers: { authorization: AUTH, 'content-type': 'application/json' },
    body: JSON.stringify({ type: 'Person', id: 'per-ldapuser', fields: { cn: 'Lena Directory', sn: 'Directory', uid: 'lena', mail: ['lena@example.com'], organisation: 'org-vendor', roles: ['staff'], password: 'first-pw', telephoneNumber: ['+27 021 555 0100'] } }),
  });
  t.equal(created.status, 201, await created.text());
  t.ok(await until(async () => (await whoami(l2, DN, 'first-pw')).code === 0, 15_000), 'the person binds on the other master once replicated');

  const passwd = await ldapTool('ldappasswd', ['-x', '-H', `ldap://127.0.0.1:${l1}`, '-D', 'uid=lena', '-w', 'first-pw', '-a', 'first-pw', '-s', 'second-pw']);
  t.equal(passwd.code, 0, passwd.stdout + passwd.stderr);
  t.ok(await until(async () => (await whoami(l2, 'uid=lena', 'second-pw')).code === 0, 10_000), 'ldappasswd on m1: the new password binds on m2');
  t.equal((await whoami(l2, 'uid=lena', 'first-pw')).code, 49, 'and the old one no longer does');

  const modify = await ldapTool('ldapmodify', ['-x', '-H', `ldap://127.0.0.1:${l1}`, '-D', 'uid=lena', '-w', 'second-pw'], {
    input: `dn: ${DN}\nchangetype: modify\nreplace: telephoneNumber\ntelephoneNumber: +27 021 555 0042\n`,
  });
  t.equal(modify.code, 0, modify.stderr);
  t.ok(
    await until(() => cli(['get', 'per-ldapuser', '--node', m2.url, '--password', PW]).stdout.includes('+27 021 555 0042'), 10_000),
    "ldapmodify of one's own telephoneNumber on m1 shows through the CLI on m2",
  );

  // a replica of m1
  const add = cli(['replica', 'add', 'laptop', '--node', m1.url, '--password', PW]);
  t.equal(add.code, 0, add.stderr);
  const replica = await startNode(t, ['--dir', tempDir(t), '--node-id', 'r1', '--role', 'replica', '--masters', `ws://127.0.0.1:${h1}/sync,ws://127.0.0.1:${h2}/sync`, '--replica-credential', add.stdout.trim(), '--admin-password', PW, '--ldap-port', String(lr), ...LINK]);
  const search = (args: string[]) => ldapTool('ldapsearch', ['-x', '-LLL', '-H', `ldap://127.0.0.1:${lr}`, '-D', 'uid=lena', '-w', 'second-pw', '-b', BASE, ...args]);
  t.ok(await until(async () => parseLdif((await search(['(uid=lena)', 'telephoneNumber'])).stdout)[0]?.attrs['telephoneNumber']?.[0] === '+27 021 555 0042', 15_000), 'the replica answers binds and searches from its own copy');
  const viaReplica = await ldapTool('ldapmodify', ['-x', '-H', `ldap://127.0.0.1:${lr}`, '-D', 'uid=lena', '-w', 'second-pw'], {
    input: `dn: ${DN}\nchangetype: modify\nreplace: title\ntitle: Directory Keeper\n`,
  });
  t.equal(viaReplica.code, 0, viaReplica.stderr);
  const read = parseLdif((await search(['(uid=lena)', 'title'])).stdout)[0];
  t.same(read?.attrs['title'], ['Directory Keeper'], 'a modify on the replica goes through the master and is readable on the replica at once');
  t.ok(await until(() => cli(['get', 'per-ldapuser', '--node', m1.url, '--password', PW]).stdout.includes('Directory Keeper'), 10_000), 'and is on the master');
  const pwViaReplica = await ldapTool('ldappasswd', ['-x', '-H', `ldap://127.0.0.1:${lr}`, '-D', 'uid=lena', '-w', 'second-pw', '-s', 'third-pw']);
  t.equal(pwViaReplica.code, 0, pwViaReplica.stdout + pwViaReplica.stderr);
  t.ok(await until(async () => (await whoami(l2, 'uid=lena', 'third-pw')).code === 0, 10_000), 'a password changed on the replica binds on the other master');

  await m1.kill9();
  await m2.kill9();
  t.ok(await until(async () => ((await (await fetch(`${replica.url}/status`, { headers: { authorization: AUTH } })).json()) as { mode: string }).mode === 'read-only', 10_000), 'the replica is read-only without its masters');
  const refused = await ldapTool('ldapmodify', ['-x', '-H', `ldap://127.0.0.1:${lr}`, '-D', 'uid=lena', '-w', 'third-pw'], {
    input: `dn: ${DN}\nchangetype: modify\nreplace: title\ntitle: Offline\n`,
  });
  t.equal(refused.code, 53, 'unwillingToPerform');
  t.match(refused.stderr, /read-only/, 'with the reason');
  t.equal((await whoami(lr, 'uid=lena', 'third-pw')).code, 0, 'binds still work');
  t.equal(parseLdif((await ldapTool('ldapsearch', ['-x', '-LLL', '-H', `ldap://127.0.0.1:${lr}`, '-D', 'uid=lena', '-w', 'third-pw', '-b', BASE, '(uid=lena)', 'title'])).stdout)[0]?.attrs['title']?.[0], 'Directory Keeper', 'and searches');
});
