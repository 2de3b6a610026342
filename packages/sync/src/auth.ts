import { createHmac, timingSafeEqual } from 'node:crypto';

/**
 * Challenge-response with the cluster secret: each side proves it knows the
 * secret by a MAC over both nonces and both node ids, in an order fixed by
 * who proves to whom, so a proof can be neither replayed on another
 * connection nor reflected back. The secret itself never crosses the wire.
 */
export function proof(secret: string, cluster: string, from: string, to: string, fromNonce: Uint8Array, toNonce: Uint8Array): Uint8Array {
  const mac = createHmac('sha256', secret);
  mac.update(`meridian-sync/1\0${cluster}\0${from}\0${to}\0`);
  mac.update(fromNonce);
  mac.update(toNonce);
  return mac.digest();
}

export function proofMatches(expected: Uint8Array, got: Uint8Array): boolean {
  return expected.length === got.length && timingSafeEqual(expected, got);
}
