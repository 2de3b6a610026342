import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Test } from 'tap';
import { parseSchema, Store, type StoreOptions } from '../dist/index.js';

import { SCHEMA_TEXT } from './fixtures/schema-text.mjs';

/** A schema exercising every field kind and rule. */
export { SCHEMA_TEXT };

export const schema = parseSchema(SCHEMA_TEXT, 'test schema');

export function tempDir(t: Test): string {
  const dir = mkdtempSync(join(tmpdir(), 'meridian-store-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

export async function openStore(t: Test, opts: Partial<StoreOptions> = {}): Promise<Store> {
  const store = await Store.open({ dir: opts.dir ?? tempDir(t), schema, passwordCost: { N: 1024, r: 8, p: 1 }, ...opts });
  t.teardown(() => store.close());
  return store;
}

/** Ships every feed entry of `from` after `since` to `to`, with `from`'s checkpoint, as replication does; returns `from`'s head. */
export async function ship(from: Store, to: Store, since = 0): Promise<number> {
  const entries = await from.readFeed(since, 10_000);
  await to.applyRemote(entries.map(({ seq: _seq, ...c }) => c), { checkpoint: { peer: from.nodeId, seq: from.lastSeq } });
  return from.lastSeq;
}
