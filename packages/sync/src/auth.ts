import { createHmac, timingSafeEqual } from 'node:crypto';

/**
 * Challenge-response with the cluster secret: each side proves it knows the
 * secret by a MAC over both nonces and both node ids, in an order fixed by
 * who proves to whom, so a proof can be neither replayed on another
 * connection nor reflected back. The secret itself never crosses the wire.
 */
export function proof(secret: string, cluster: string, from: string, to: string, fromNonce: Uint8Array, toNonce: Uint8Array): Uint8Array {
  const mac = createHmac('sha256', secret);
  // Every part is length-prefixed: with plain separators, ids containing
  // the separator let one connection's proof be replayed as another's.
  for (const part of [Buffer.from('meridian-sync/1'), Buffer.from(cluster), Buffer.from(from), Buffer.from(to), fromNonce, toNonce]) {
    const len = Buffer.alloc(4);
    len.writeUInt32BE(part.length);
    mac.update(len);
    mac.update(part);
  }
  return mac.digest();
}

export function proofMatches(expected: Uint8Array, got: Uint8Array): boolean {
  return expected.length === got.length && timingSafeEqual(expected, got);
}
