import { createHash } from 'node:crypto';
import { decode, type ObjectRecord } from './codec.js';
import { keys } from './keys.js';
import type { Store } from './store.js';

/**
 * A digest of every object (tombstones included) in 16 buckets by a hash of
 * the id, so two nodes can be compared in one small message and, when they
 * differ, the bucket says where. Each bucket combines per-object hashes of
 * id and version with XOR, which does not depend on the order objects are
 * visited in; the version is a digest of the object's Yjs state vector, so
 * converged nodes produce equal digests.
 */
export interface StoreDigest {
  objects: number;
  buckets: { count: number; hash: string }[];
}

export const BUCKETS = 16;

export function bucketOf(id: string): number {
  return createHash('sha1').update(id).digest()[0]! >> 4;
}

export async function storeDigest(store: Store, onProgress?: (objects: number) => void): Promise<StoreDigest> {
  const acc = Array.from({ length: BUCKETS }, () => ({ count: 0, hash: Buffer.alloc(20) }));
  let n = 0;
  for await (const [k, v] of store.raw(keys.objectPrefix)) {
    const id = k.slice(1);
    const rec = decode<ObjectRecord>(v);
    const h = createHash('sha1').update(id).update('\0').update(rec.v).digest();
    const b = acc[bucketOf(id)]!;
    b.count++;
    for (let i = 0; i < 20; i++) b.hash[i]! ^= h[i]!;
    if (++n % 10_000 === 0) onProgress?.(n);
  }
  return { objects: n, buckets: acc.map((b) => ({ count: b.count, hash: b.hash.toString('hex') })) };
}
