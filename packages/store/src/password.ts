import { createHash, randomBytes, scrypt as scryptCb, timingSafeEqual } from 'node:crypto';
import { MeridianError } from './errors.js';

/**
 * Passwords are stored only as salted scrypt hashes in a self-describing
 * format, `$scrypt$N=..,r=..,p=..$salt$hash` (base64), so that the cost can be
 * raised later without breaking stored hashes.
 */
export interface ScryptCost {
  N: number;
  r: number;
  p: number;
}

/** The production setting: about 50 ms per hash on one core of a 2026 server. */
export const DEFAULT_COST: ScryptCost = { N: 16384, r: 8, p: 1 };

const KEYLEN = 32;

/**
 * The most a stored hash may ask of one check: N·r·p at most four times the
 * default's (about 200 ms and 64 MiB). A hash is a value like any other, and
 * a person may write their own: one naming N=2^20, p=2^20 would hold a
 * thread-pool thread for days at every sign-in tried against it, on every
 * node it replicates to. A value past this is no hash (so a write stores it
 * hashed, as a password), and a stored one never verifies.
 */
function costAllowed(c: ScryptCost): boolean {
  const power = Number.isSafeInteger(c.N) && c.N >= 2 && (c.N & (c.N - 1)) === 0;
  // (N·r·p bounds the time, and, p being 1 or more, N·r the memory too)
  return power && c.r >= 1 && c.p >= 1 && c.N * c.r * c.p <= 4 * DEFAULT_COST.N * DEFAULT_COST.r * DEFAULT_COST.p;
}

const SCRYPT_RE = /^\$scrypt\$N=(\d{1,10}),r=(\d{1,10}),p=(\d{1,10})\$([A-Za-z0-9+/=]+)\$([A-Za-z0-9+/=]+)$/;

function scryptParts(value: string): { cost: ScryptCost; salt: string; hash: string } | undefined {
  const m = SCRYPT_RE.exec(value);
  if (!m) return undefined;
  const cost = { N: Number(m[1]), r: Number(m[2]), p: Number(m[3]) };
  return costAllowed(cost) ? { cost, salt: m[4]!, hash: m[5]! } : undefined;
}

/**
 * Hashes computed at once, in this process. Each holds a thread of libuv's
 * pool, which LevelDB's reads, writes and fsyncs share: 300 wrong
 * passwords sent at once held every thread, and a write took 5.6 s.
 */
export const MAX_HASHING = 4;
/** Hashes waiting for one of those, past which one more is refused as busy (a sign-in storm is not queued without end). */
export const MAX_HASH_WAITING = 256;
let hashing = 0;
const hashWaiting: (() => void)[] = [];

/** Hashes running now (for tests of the limit). */
export function hashesRunning(): number {
  return hashing;
}

async function scrypt(password: string, salt: Buffer, cost: ScryptCost): Promise<Buffer> {
  if (hashing < MAX_HASHING) hashing++;
  else if (hashWaiting.length >= MAX_HASH_WAITING) throw new MeridianError('busy', 'too many password checks are waiting on this node; try again in a moment');
  // (a finished hash hands its place to the next waiting, so `hashing` counts what runs)
  else await new Promise<void>((r) => hashWaiting.push(r));
  try {
    return await new Promise<Buffer>((resolve, reject) => {
      scryptCb(password, salt, KEYLEN, { N: cost.N, r: cost.r, p: cost.p, maxmem: 256 * cost.N * cost.r + 1024 * 1024 }, (err, key) =>
        err ? reject(err) : resolve(key),
      );
    });
  } finally {
    const next = hashWaiting.shift();
    if (next) next();
    else hashing--;
  }
}

export async function hashPassword(password: string, cost: ScryptCost = DEFAULT_COST): Promise<string> {
  if (!costAllowed(cost)) throw new Error(`scrypt cost N=${cost.N}, r=${cost.r}, p=${cost.p} is past what a stored hash may ask (see costAllowed)`);
  const salt = randomBytes(16);
  const key = await scrypt(password, salt, cost);
  return `$scrypt$N=${cost.N},r=${cost.r},p=${cost.p}$${salt.toString('base64')}$${key.toString('base64')}`;
}

/** `{SSHA}` as OpenLDAP writes it: base64 of SHA-1(password + salt) followed by the salt. */
const SSHA_RE = /^\{SSHA\}([A-Za-z0-9+/]{4})*([A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/i;

/**
 * Whether a value is a stored hash rather than a clear-text password: our
 * scrypt format, or an `{SSHA}` hash imported from OpenLDAP, which is kept
 * until its owner's next successful bind replaces it (see needsUpgrade).
 */
export function isPasswordHash(value: string): boolean {
  return scryptParts(value) !== undefined || (SSHA_RE.test(value) && Buffer.from(value.slice(6), 'base64').length > 20);
}

/** A stored hash in a weaker, imported format: replace it with scrypt once the password is known. */
export function needsUpgrade(stored: string): boolean {
  return SSHA_RE.test(stored);
}

export async function verifyPassword(password: string, stored: string): Promise<boolean> {
  if (password.length === 0) return false;
  if (SSHA_RE.test(stored)) {
    const raw = Buffer.from(stored.slice(6), 'base64');
    if (raw.length <= 20) return false;
    const digest = createHash('sha1').update(password, 'utf8').update(raw.subarray(20)).digest();
    return timingSafeEqual(digest, raw.subarray(0, 20));
  }
  const parts = scryptParts(stored);
  if (!parts) return false;
  const expected = Buffer.from(parts.hash, 'base64');
  const key = await scrypt(password, Buffer.from(parts.salt, 'base64'), parts.cost);
  return key.length === expected.length && timingSafeEqual(key, expected);
}
