import { fileURLToPath } from 'node:url';
import type { Test } from 'tap';
import { loadSchemaFile, Store, type Writer } from '@meridian/store';
import { tempDir } from '../../../test/helpers/tmp.js';

/** The default CRM schema, read from the node's file (the ldap package does not depend on the node's) */
export const schema = loadSchemaFile(fileURLToPath(new URL('../../node/schema/crm.yaml', import.meta.url)));

/** An empty store of the CRM schema in a temp dir, both gone when the test ends. */
export async function crmStore(t: Test, prefix = 'meridian-ldap-'): Promise<Store> {
  const store = await Store.open({ dir: tempDir(t, prefix), schema, passwordCost: { N: 16, r: 1, p: 1 } });
  t.teardown(() => store.close());
  return store;
}

const refused = (): never => {
  throw new Error('this test writes nothing');
};

/** For gateways under test that must never write. */
export const noWriter = { create: refused, update: refused, replace: refused, delete: refused, undelete: refused } as unknown as Writer;

/** The gateway options every such test passes alike: a silent log, every error internal. */
export const quiet = {
  log: { info: () => undefined, warn: () => undefined, error: () => undefined, debug: () => undefined },
  classify: (e: unknown) => ({ code: 'internal', message: String(e) }),
};
