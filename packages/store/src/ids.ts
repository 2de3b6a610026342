import { randomBytes } from 'node:crypto';

/** The longest id an object or a node may have. */
export const MAX_ID_LENGTH = 128;

/**
 * Object ids are stable forever and end up in LDAP RDNs, URLs and XML
 * attributes, so they are restricted to characters that need no escaping in
 * any of them.
 */
const ID_RE = new RegExp(`^[A-Za-z0-9][A-Za-z0-9._-]{0,${MAX_ID_LENGTH - 1}}$`);

export function isValidId(id: string): boolean {
  return ID_RE.test(id);
}

/** A data dir's feed tag (Store.feedTag): 8 hex digits. */
export function isFeedTag(v: unknown): v is string {
  return typeof v === 'string' && /^[0-9a-f]{8}$/.test(v);
}

/** Whether a decoded value is a map (not an array or bytes). */
export const isMap = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v) && !(v instanceof Uint8Array);

/** A map keyed by node ids whose values pass `ok`. */
export function isNodeMap<V>(v: unknown, ok: (x: unknown) => x is V): v is Record<string, V> {
  return isMap(v) && Object.entries(v).every(([node, x]) => isValidId(node) && ok(x));
}

/** A list of feed tags, as a data dir keeps those forgotten of one node. */
export const isFeedTagList = (v: unknown): v is string[] => Array.isArray(v) && v.every(isFeedTag);

/** A map of node ids to feed tags, as a data dir keeps those it knows and a replication auth carries them. */
export function isFeedTags(v: unknown): v is Record<string, string> {
  return isNodeMap(v, isFeedTag);
}

/** Feed tags forgotten, by node id (see Store.forgetFeed). */
export function isForgottenFeeds(v: unknown): v is Record<string, string[]> {
  return isNodeMap(v, isFeedTagList);
}

/** The entries of a stored map keyed by node ids whose values pass `ok`: the rest are what a restore would refuse. */
export function validNodeEntries<V>(v: unknown, ok: (x: unknown) => x is V): Record<string, V> {
  if (!isMap(v)) return {};
  return Object.fromEntries(Object.entries(v).filter((e): e is [string, V] => isValidId(e[0]) && ok(e[1])));
}

/** Why `id` is no node id, in a sentence (cut at 40 characters), or undefined if it is one. */
export function nodeIdProblem(id: string): string | undefined {
  return isValidId(id) ? undefined : `"${id.length > 40 ? `${id.slice(0, 40)}...` : id}" is not a node id: 1 to 128 letters, digits, ".", "_" and "-", starting with a letter or digit`;
}

const ALPHABET = '0123456789abcdefghjkmnpqrstvwxyz'; // Crockford base32, lower case

// randomBytes per id showed up in profiles of bulk writes; draw in blocks.
const POOL_IDS = 512;
let pool = Buffer.alloc(0);
let offset = 0;

/** A new id: the type's prefix and 60 random bits, so ids of independent nodes never collide. */
export function newId(prefix: string): string {
  if (offset >= pool.length) {
    pool = randomBytes(POOL_IDS * 12);
    offset = 0;
  }
  let out = `${prefix}-`;
  for (let i = 0; i < 12; i++) out += ALPHABET[pool[offset++]! & 31];
  return out;
}

/**
 * An id of the type's prefix and 60 bits of `digest`: the same digest gives
 * the same id, as a create retried under one idempotency key must.
 */
export function idFromDigest(prefix: string, digest: Uint8Array): string {
  if (digest.length < 12) throw new Error('idFromDigest needs a digest of 12 bytes or more');
  let out = `${prefix}-`;
  for (let i = 0; i < 12; i++) out += ALPHABET[digest[i]! & 31];
  return out;
}
