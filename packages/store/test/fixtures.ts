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

/**
 * Holds the store's batches back on their way to disk: the nth batch written from now on (0 first)
 * waits `delayMs(n)` ms first (0: none); `landed` hears of each once written.
 */
export function delayBatches(store: Store, delayMs: (n: number) => number, landed?: (n: number) => void): void {
  const db = (store as unknown as { db: { batch(...args: unknown[]): { write(o?: unknown): Promise<void> } } }).db;
  const batch = db.batch.bind(db);
  let next = 0;
  db.batch = (...args: unknown[]) => {
    const chained = batch(...args);
    const write = chained.write.bind(chained);
    const n = next++;
    chained.write = async (opts?: unknown) => {
      const ms = delayMs(n);
      if (ms > 0) await new Promise((r) => setTimeout(r, ms));
      await write(opts);
      landed?.(n);
    };
    return chained;
  };
}
