/**
 * A master's cap on the forwarded writes of one replica credential that run
 * at once, across its sessions.
 */
import t from 'tap';
import { Store } from '@meridian/store';
import { crmSchema, TEST_COST } from './helpers/schema.js';
import { tempDir } from './helpers/tmp.js';

t.test('writes of one credential past the cap are answered busy at once; another credential\'s run; the count goes down as they end', async (t) => {
  const { AdminAuth } = await import('../packages/node/dist/admin-auth.js');
  const { Principals } = await import('../packages/node/dist/principals.js');
  const { ForwardedWrites } = await import('../packages/node/dist/forwarding.js');
  const store = await Store.open({ dir: tempDir(t), schema: crmSchema, passwordCost: TEST_COST });
  t.teardown(() => store.close());
  const org = await store.create('Organisation', { name: 'Acme', kind: 'vendor' });
  const principals = new Principals(store, await AdminAuth.init(store, 'admin-pw'));
  // (signed in once: later checks are remembered, so the writes below reach their count in the order sent)
  t.ok(await principals.authenticate('admin', 'admin-pw'));
  const writes = new ForwardedWrites(store, principals, 2);
  t.equal(new ForwardedWrites(store, principals)['maxRunning'], 2048, 'two sessions\' worth by default');
  // the store holds every update until the test lets them go
  let release!: () => void;
  const held = new Promise<void>((r) => (release = r));
  t.teardown(() => release());
  const update = store.update.bind(store);
  let updates = 0;
  store.update = async (...args) => {
    updates++;
    await held;
    return update(...args);
  };
  const write = (key: string, name: string) => ({ t: 'write' as const, key, op: 'update' as const, id: org.id, fields: { name }, user: 'admin', password: 'admin-pw' });
  const a = writes.handle(write('k1', 'One'), 'laptop-1', 'laptop');
  const b = writes.handle(write('k2', 'Two'), 'laptop-2', 'laptop');
  const again = writes.handle(write('k1', 'One'), 'laptop-1', 'laptop');
  const third = await writes.handle(write('k3', 'Three'), 'laptop-3', 'laptop');
  t.match(third, { ok: false, code: 'busy', message: /is running 2 writes of this replica's credential already; send the write again shortly$/ }, 'a third, under another node id of the same credential: busy');
  const other = writes.handle(write('k4', 'Four'), 'desk-1', 'desk');
  release();
  t.match(await a, { ok: true });
  t.match(await b, { ok: true });
  t.match(await again, { ok: true }, 'a copy of a running write shares it, and counts no more');
  t.match(await other, { ok: true }, "another credential's write ran meanwhile");
  t.match(await writes.handle(write('k5', 'Five'), 'laptop-1', 'laptop'), { ok: true }, 'once they end, the credential writes again');
  t.equal(updates, 4, 'the copy of k1 ran no update of its own (k1, k2, k4, k5)');
});
