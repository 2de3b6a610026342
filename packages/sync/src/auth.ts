import { createHmac, timingSafeEqual } from 'node:crypto';

/** Which end of the connection proves: the one that dialed, or the one that accepted. */
export type ProofSide = 'dialer' | 'acceptor';

/**
 * Challenge-response with the cluster secret: each side proves it knows the
 * secret by a MAC over both nonces, both node ids and its own end of the
 * connection, in an order fixed by who proves to whom, so a proof can be
 * neither replayed on another connection nor reflected back. The end
 * matters because an attacker can dial two nodes and hand each the other's
 * id and nonce: an acceptor's proof then is exactly what the other acceptor
 * checks for, unless it says it was made by an acceptor (and an acceptor
 * proves only to a dialer that has proved first). The secret itself never
 * crosses the wire.
 */
export function proof(secret: string, cluster: string, side: ProofSide, from: string, to: string, fromNonce: Uint8Array, toNonce: Uint8Array): Uint8Array {
  const mac = createHmac('sha256', secret);
  // Every part is length-prefixed: with plain separators, ids containing
  // the separator let one connection's proof be replayed as another's.
  for (const part of [Buffer.from('meridian-sync/2'), Buffer.from(cluster), Buffer.from(side), Buffer.from(from), Buffer.from(to), fromNonce, toNonce]) {
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

/**
 * The key of one replica credential, derived from the cluster secret, so
 * every master can check it without a key store and a replica never holds
 * the secret itself. A new serial (re-issuing the credential) yields a new
 * key; revoking deletes the serial from the masters' registry.
 */
export function replicaKey(secret: string, cluster: string, name: string, serial: string): string {
  const mac = createHmac('sha256', secret);
  for (const part of ['meridian-replica/1', cluster, name, serial]) {
    const len = Buffer.alloc(4);
    len.writeUInt32BE(Buffer.byteLength(part));
    mac.update(len);
    mac.update(part);
  }
  return mac.digest('base64url');
}

/** A replica credential as the operator handles it: `name:serial:key`. */
export interface ReplicaCredential {
  name: string;
  serial: string;
  key: string;
}

const CREDENTIAL_RE = /^([A-Za-z0-9][A-Za-z0-9._-]{0,127}):([0-9a-f]{16}):([A-Za-z0-9_-]{43})$/;

export function parseReplicaCredential(text: string): ReplicaCredential | undefined {
  const m = CREDENTIAL_RE.exec(text.trim());
  return m ? { name: m[1]!, serial: m[2]!, key: m[3]! } : undefined;
}

export function formatReplicaCredential(c: ReplicaCredential): string {
  return `${c.name}:${c.serial}:${c.key}`;
}
