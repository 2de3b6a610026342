import { createHash, randomInt } from 'node:crypto';

/**
 * Yjs clientIDs. Two processes that write with one clientID corrupt every
 * object both touch: each takes the other's (client, clock) pairs for its
 * own, skips them as already integrated, and the two replicas diverge with
 * equal state vectors, so equal versions and digests, which `verify`
 * cannot see. A 32-bit random draw per process start, what Yjs does, makes
 * that a birthday problem over every start of every node: about 1 % over a
 * cluster's life at ten thousand starts.
 *
 * So the high 21 bits name the node (a hash of its id) and the low 32 are
 * drawn: clientIDs of different nodes can only meet if two node ids share a
 * space (one pair in two million) and then the same 32 bits are drawn as
 * well. lib0 writes clientIDs as variable-length integers up to 2^53, so
 * Yjs takes them unchanged; a state or update names each client in 8 bytes
 * instead of 5.
 */
const SPACE_BITS = 21;
const LOW = 2 ** 32;

/** The node's space, 1 to 2^21 - 1; 0 stays for the 32-bit clientIDs drawn before spaces. */
export function clientSpace(nodeId: string): number {
  const h = createHash('sha256').update(nodeId).digest().readUIntBE(0, 3) >>> (24 - SPACE_BITS);
  return 1 + (h % (2 ** SPACE_BITS - 1));
}

/** A fresh clientID in the node's space, none of those `used` (this node's own and its peers' it has seen). */
export function drawClientId(nodeId: string, used: ReadonlySet<number>): number {
  const base = clientSpace(nodeId) * LOW;
  let id: number;
  do id = base + randomInt(0, LOW);
  while (used.has(id));
  return id;
}

/** The space a clientID was drawn in; 0 for one drawn before spaces, or by something other than a node. */
export function spaceOfClient(client: number): number {
  return Math.floor(client / LOW);
}

/**
 * The first client whose items a Yjs (v1) update carries, or undefined
 * when it carries none (a deletion only) or is too short to say; Yjs
 * itself rejects a malformed update when it is applied. A local write's
 * update carries exactly one: the writing process's.
 */
export function firstClient(update: Uint8Array): number | undefined {
  let pos = 0;
  const varUint = (): number | undefined => {
    let n = 0;
    let mult = 1;
    while (pos < update.length && mult <= 2 ** 49) {
      const b = update[pos++]!;
      n += (b & 0x7f) * mult;
      if (b < 0x80) return n;
      mult *= 128;
    }
    return undefined;
  };
  const clients = varUint();
  if (!clients) return undefined;
  if (varUint() === undefined) return undefined; // the client's number of structs
  return varUint();
}
