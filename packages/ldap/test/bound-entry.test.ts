// A bound person's session follows its entry: every operation but a bind
// first looks at the entry once the store has changed, and checks the
// password given at bind again when the entry changed.
import t, { type Test } from 'tap';
import { AccessScope, verifyPassword, type Principal, type Store, type Writer } from '@meridian/store';
import ldap from 'ldapjs';
import { LdapGateway } from '../dist/gateway.js';
import { crmStore, quiet, schema } from './fixtures.js';
import { ldapTool } from '../../../test/helpers/ldap-utils.js';

const BASE = 'dc=example,dc=com';
const dnOf = (id: string): string => `meridianId=${id},ou=people,${BASE}`;

/** A failure of the writer's with the code the node's classify gives it (as a replica's forwarding fails). */
class CodedFailure extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

async function gateway(t: Test, store: Store, opts: { writes?: { user: string | undefined }[]; checking?: () => Promise<void>; answered?: () => Promise<void>; fail?: CodedFailure; errorsLogged?: unknown[] } = {}): Promise<number> {
  const writer = {
    update: async (id: string, fields: Record<string, unknown>, o: { credential?: { user: string } }) => {
      opts.writes?.push({ user: o.credential?.user });
      if (opts.fail) throw opts.fail;
      const done = await store.update(id, fields);
      // (the write is made and readable; its answer comes when the test says, as a replica's may come late)
      await opts.answered?.();
      return done;
    },
  } as unknown as Writer;
  const g = new LdapGateway({
    ...quiet,
    log: { ...quiet.log, error: (o: unknown) => void opts.errorsLogged?.push(o) },
    classify: (e: unknown) => (e instanceof CodedFailure ? { code: e.code, message: e.message } : quiet.classify(e)),
    store,
    writer,
    baseDn: BASE,
    authenticate: async () => undefined,
    authenticatePerson: async (person, user, password): Promise<Principal | undefined> => {
      await opts.checking?.();
      const hash = person.fields['password'];
      if (typeof hash !== 'string' || !(await verifyPassword(password, hash))) return undefined;
      return { kind: 'person', name: user, id: person.id, type: person.type, roles: ['staff'], organisation: 'org-1' };
    },
    scope: async (p) => AccessScope.of(p, schema.access, schema.types, { lookup: async () => [] }),
  });
  t.teardown(() => g.close());
  return g.listen(0, '127.0.0.1');
}

function client(t: Test, port: number) {
  const c = ldap.createClient({ url: `ldap://127.0.0.1:${port}` });
  t.teardown(() => c.destroy());
  c.on('error', () => undefined);
  return {
    bind: (dn: string, pw: string): Promise<number> => new Promise((resolve) => c.bind(dn, pw, (e) => resolve(e ? (e as { code?: number }).code ?? -1 : 0))),
    /** the result code of a base search of one entry */
    look: (dn: string): Promise<number> =>
      new Promise((resolve) => {
        c.search(dn, { scope: 'base', attributes: ['1.1'] }, (e, res) => {
          if (e) return resolve((e as { code?: number }).code ?? -1);
          res.on('error', (err: { code?: number }) => resolve(err.code ?? -1));
          res.on('end', (r) => resolve(r?.status ?? -1));
        });
      }),
    setPassword: (dn: string, password: string): Promise<number> =>
      new Promise((resolve) => {
        const change = new ldap.Change({ operation: 'replace', modification: new ldap.Attribute({ type: 'userPassword', values: [password] }) });
        c.modify(dn, change, (e) => resolve(e ? (e as { code?: number }).code ?? -1 : 0));
      }),
    setTitle: (dn: string, title: string): Promise<number> =>
      new Promise((resolve) => {
        const change = new ldap.Change({ operation: 'replace', modification: new ldap.Attribute({ type: 'title', values: [title] }) });
        c.modify(dn, change, (e) => resolve(e ? (e as { code?: number }).code ?? -1 : 0));
      }),
    /** the diagnostic message of a modify that succeeds (ldapmodify shows it only for a failure) */
    setTitleSaying: (dn: string, title: string): Promise<string | undefined> =>
      new Promise((resolve) => {
        const change = new ldap.Change({ operation: 'replace', modification: new ldap.Attribute({ type: 'title', values: [title] }) });
        c.modify(dn, change, (e: unknown, res?: { diagnosticMessage?: string }) => resolve(e ? undefined : res?.diagnosticMessage));
      }),
  };
}

async function withPerson(t: Test): Promise<Store> {
  const store = await crmStore(t);
  await store.create('Organisation', { name: 'Org', kind: 'vendor' }, { id: 'org-1' });
  await store.create('Person', { cn: 'Alice', sn: 'A', uid: 'alice', organisation: 'org-1', roles: ['staff'], password: 'first-pw' }, { id: 'per-alice' });
  return store;
}

t.test('a renamed login: the session stays bound and writes go on under the new name', async (t) => {
  const store = await withPerson(t);
  const writes: { user: string | undefined }[] = [];
  const c = client(t, await gateway(t, store, { writes }));
  t.equal(await c.bind('uid=alice', 'first-pw'), 0);
  t.equal(await c.setTitle(dnOf('per-alice'), 'one'), 0);
  await store.update('per-alice', { uid: 'alicia' });
  t.equal(await c.look(dnOf('per-alice')), 0, 'still bound after the rename');
  t.equal(await c.setTitle(dnOf('per-alice'), 'two'), 0);
  t.same(writes.map((w) => w.user), ['alice', 'alicia'], 'a replica would forward the second write under the name the entry has now');
});

t.test('a password reset while the bind checks the old password is seen by the next operation', async (t) => {
  const store = await withPerson(t);
  let reset: (() => Promise<void>) | undefined = async () => {
    reset = undefined;
    // the admin resets the password after the bind read the entry, before it took the store's position
    await store.update('per-alice', { password: 'reset-pw' });
  };
  const c = client(t, await gateway(t, store, { checking: async () => reset?.() }));
  t.equal(await c.bind('uid=alice', 'first-pw'), 0, 'the bind checked the entry it read, with the old password');
  t.equal(await c.look(dnOf('per-alice')), 49, 'the next operation finds the reset and asks to bind again');
  t.equal(await c.bind('uid=alice', 'reset-pw'), 0, 'the new password binds');
});

t.test("an operation that comes while the session's own password change is written keeps the session, and the change is answered success", async (t) => {
  const store = await withPerson(t);
  let release!: () => void;
  let holding = false;
  const port = await gateway(t, store, {
    answered: () => {
      holding = true;
      return new Promise<void>((r) => (release = r));
    },
  });
  const c = client(t, port);
  t.equal(await c.bind('uid=alice', 'first-pw'), 0);
  const changed = c.setPassword(dnOf('per-alice'), 'second-pw');
  while (!holding) await new Promise((r) => setTimeout(r, 5));
  t.equal(await c.look(dnOf('per-alice')), 0, 'a search meanwhile finds the entry changed and accepts the new password');
  release();
  t.equal(await changed, 0, 'the change is answered success, not a failure inside the server');
  t.equal(await c.look(dnOf('per-alice')), 0, 'and the session goes on under the new password');
});

t.test("a replica's forwarded write that the master made but that is not back yet, or that the master refused for a reason this node has no code for, is answered with the sentence, not as a failure inside the server", async (t) => {
  const store = await withPerson(t);
  const cases: [CodedFailure, number][] = [
    // (made: answered as done, with the sentence; a 52 would have the client make it again)
    [new CodedFailure('not-yet-visible', 'the master committed the write to per-alice, but the change has not come back to this replica within 30 s; it will appear here once the replica catches up'), 0],
    [new CodedFailure('master-error', 'the master could not make the write: the moon is in the wrong phase'), 80],
  ];
  for (const [fail, code] of cases) {
    const errorsLogged: unknown[] = [];
    const port = await gateway(t, store, { fail, errorsLogged });
    // (ldapmodify, not ldapjs: ldapjs's client drops the diagnostic message of a failure; a success's it keeps, see setTitleSaying)
    const r = await ldapTool('ldapmodify', ['-x', '-H', `ldap://127.0.0.1:${port}`, '-D', 'uid=alice', '-w', 'first-pw'], { input: `dn: ${dnOf('per-alice')}\nchangetype: modify\nreplace: title\ntitle: x\n` });
    t.equal(r.code, code, `${fail.code}: result ${code}`);
    if (code === 0) {
      const c = client(t, port);
      t.equal(await c.bind(dnOf('per-alice'), 'first-pw'), 0);
      t.equal(await c.setTitleSaying(dnOf('per-alice'), 'y'), fail.message, 'with the sentence');
    } else {
      t.match(r.stderr, `additional info: ${fail.message}`, 'with the sentence');
    }
    t.same(errorsLogged, [], 'and nothing logged as a failure of this server');
  }
});
