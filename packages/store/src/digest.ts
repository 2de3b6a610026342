import { createHash } from 'node:crypto';
import { decode, type ObjectRecord } from './codec.js';

/**
 * A digest of every object (tombstones included) in buckets by a hash of
 * the id, so two nodes can compare their data in one small message and,
 * when they differ, know where. Each bucket combines per-object hashes of id
 * and version with XOR, which does not depend on the order objects are
 * visited in; the version covers the object's Yjs state vector and delete
 * set, so converged nodes produce equal digests.
 */
export interface StoreDigest {
  objects: number;
  buckets: { count: number; hash: string }[];
}

/**
 * The changes a digest covers, read with it: the vector (origin -> highest
 * origin seq held with none missing below it), the changes held beyond a gap
 * in it, and this node's feed head. Two nodes whose vectors and held-ahead
 * changes are equal hold the same changes, so differing buckets between them
 * mean divergence (or an anti-entropy or clone run still merging); otherwise
 * replication has not finished.
 */
export interface DigestPosition {
  head: number;
  vector: Record<string, number>;
  ahead: [origin: string, originSeq: number][];
}

export interface PositionedDigest extends StoreDigest {
  at: DigestPosition;
}

export const BUCKETS = 16;

/** Bucket of an id among 2^bits (bits <= 8). */
export function bucketOf(id: string, bits = 4): number {
  return createHash('sha1').update(id).digest()[0]! >> (8 - bits);
}

/** What one object contributes: by default its id and version; undefined leaves it out. */
export type RecordHash = (id: string, rec: ObjectRecord) => Buffer | undefined;

const byVersion: RecordHash = (id, rec) => createHash('sha1').update(id).update('\0').update(rec.v).digest();

/**
 * With `purged` (opens an iterator of the purge markers), a node that lacks a purge differs in
 * that id's bucket even when it never held the object, so anti-entropy
 * sends it the marker. What counts is the id and whether the marker names
 * the purge itself or only a redacted change (so a node with the latter
 * gets the former), not who purged it or when, which two concurrent purges
 * of one id record differently.
 */
export async function digestRecords(records: AsyncIterable<[string, Uint8Array]>, bits = 4, onProgress?: (objects: number) => void, hashOf: RecordHash = byVersion, purged?: () => AsyncIterable<[string, Uint8Array]>): Promise<StoreDigest> {
  const acc = Array.from({ length: 2 ** bits }, () => ({ count: 0, hash: Buffer.alloc(20) }));
  const mix = (id: string, h: Buffer): void => {
    const b = acc[bucketOf(id, bits)]!.hash;
    for (let i = 0; i < 20; i++) b[i]! ^= h[i]!;
  };
  let n = 0;
  for await (const [k, v] of records) {
    const id = k.slice(1);
    const h = hashOf(id, decode<ObjectRecord>(v));
    if (h === undefined) continue;
    acc[bucketOf(id, bits)]!.count++;
    mix(id, h);
    if (++n % 10_000 === 0) onProgress?.(n);
  }
  if (purged) {
    // opened only now: opened with the records and left unread when their loop threw, it stayed open
    for await (const [k, v] of purged()) {
      const id = k.slice(1);
      mix(id, createHash('sha1').update(id).update(decode<{ r?: 1 }>(v).r ? '\0redacted' : '\0purged').digest());
    }
  }
  return { objects: n, buckets: acc.map((b) => ({ count: b.count, hash: b.hash.toString('hex') })) };
}
