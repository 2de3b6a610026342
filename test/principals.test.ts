/**
 * Sign-in by HTTP Authorization header: what is remembered between requests.
 */
import t from 'tap';
import { Store } from '@meridian/store';
import { crmSchema, TEST_COST } from './helpers/schema.js';
import { tempDir } from './helpers/tmp.js';

t.test('a login is remembered under its header\'s one spelling only: other spellings of it sign in, and are not kept', async (t) => {
  const { AdminAuth } = await import('../packages/node/dist/admin-auth.js');
  const { Principals } = await import('../packages/node/dist/principals.js');
  const store = await Store.open({ dir: tempDir(t), schema: crmSchema, passwordCost: TEST_COST });
  t.teardown(() => store.close());
  const org = await store.create('Organisation', { name: 'Acme', kind: 'customer' });
  await store.create('Person', { cn: 'Ada', sn: 'L', uid: 'ada', organisation: org.id, roles: ['customer-contact'], password: 'ada-password-1' });
  const principals = new Principals(store, await AdminAuth.init(store, 'admin-pw'));
  const kept = (principals as unknown as { signedIn: Map<string, unknown> }).signedIn;
  const b64 = Buffer.from('ada:ada-password-1').toString('base64');
  t.match(await principals.fromHeader(`Basic ${b64}`), { principal: { kind: 'person', name: 'ada' } });
  t.equal(kept.size, 1, 'the header as it is always spelled is kept');
  // base64 read past whitespace, and the scheme in another case: the same login, spelled a thousand ways
  let signedIn = 0;
  for (let i = 0; i < 1000; i++) {
    const spaced = `${b64.slice(0, 4)}${' '.repeat(i + 1)}${b64.slice(4)}`;
    if (await principals.fromHeader(`${i % 2 ? 'basic' : 'Basic'} ${spaced}`)) signedIn++;
  }
  t.equal(signedIn, 1000, 'every spelling signs in');
  t.equal(kept.size, 1, 'and none of them is kept');
});
