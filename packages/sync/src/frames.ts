import { Packr } from 'msgpackr';
import { isFeedTag, isFeedTags, isForgottenFeeds, isMap, isSeq, isValidId, isVector, MAX_AHEAD_SENT, MAX_CHANGE_BYTES } from '@meridian/store';

/**
 * Every frame of the replication protocol, in one place. A frame is one
 * msgpack map in one WebSocket binary message; `t` names its kind.
 * docs/protocol.md describes the exchange.
 */
export const PROTOCOL_VERSION = 8;

export type Role = 'master' | 'replica';

/** First frame each side sends. */
export interface HelloFrame {
  t: 'hello';
  /** protocol version */
  v: number;
  cluster: string;
  node: string;
  role: Role;
  /** 16 random bytes the peer must answer for */
  nonce: Uint8Array;
  /** a replica's credential id (`name:serial`): masters prove the key it names instead of the cluster secret */
  cred?: string;
  /** the sender accepts compressed frames (see frame-codec.ts) */
  z?: boolean;
  /**
   * the sender's feed tag (8 hex digits): drawn with its data dir, so a dir
   * made again under an old node id shows another one (see session.ts)
   */
  feed?: string;
}

/** Proof of the cluster secret: HMAC over both nonces and both node ids. */
export interface AuthFrame {
  t: 'auth';
  proof: Uint8Array;
  /**
   * the feed tags the sender knows of other nodes (node id -> tag, see
   * HelloFrame.feed): learned from each node met, and from each peer's
   * auth, so that a node that never met a data dir made again under an old
   * id still tells it apart
   */
  feeds?: Record<string, string>;
  /**
   * the feed tags the sender forgot (node id -> tags, oldest first): an
   * operator's word that those dirs' changes are nowhere, so that their
   * nodes may come back on new dirs; passed on to every node, each of which
   * refuses the word while it holds such a change (see Store.claimFeeds)
   */
  forgotten?: Record<string, string[]>;
}

/** At most this many feed tags in an auth frame (forgotten ones included)... */
export const MAX_FEEDS = 4096;
/** ...and about this many bytes of them: an auth comes before authentication, when frames are kept small (see replicator.ts). */
export const FEEDS_BYTES = 48 * 1024;

/** "Send me your changes after `since`; my vector is this." */
export interface SubscribeFrame {
  t: 'sub';
  since: number;
  vector: Record<string, number>;
  /** the subscriber is empty: send object states first, then the feed */
  clone?: boolean;
}

/**
 * Object states for a cloning subscriber (stored records), or for one being
 * repaired by anti-entropy (records, and Yjs diffs of objects it holds). The
 * last frame has `done` with the snapshot's position.
 */
export interface StatesFrame {
  t: 'states';
  objects: StateItem[];
  done: boolean;
  /** with done: the sender's feed seq the snapshot covers, and its vector */
  head?: number;
  vector?: Record<string, number>;
  /**
   * with done: changes the records hold past a gap in their origin's vector
   * entry whose feed entries the sender does not have (trimmed, or held
   * ahead from a snapshot itself), as
   * [origin, origin seq]: the subscriber holds them ahead as well
   */
  ahead?: [string, number][];
  /** anti-entropy: the answer to the last `need` page is complete; send the next page */
  page?: true;
  /** idempotency records of keyed writes whose changes the subscriber lacked: scoped key and record */
  keys?: { q: string; r: Uint8Array }[];
}

export type StateItem =
  /** id and stored record; with `p`, the record is the purge marker of an object purged at the sender */
  | { i: string; r: Uint8Array; p?: true; m?: true }
  /** id, a Yjs update holding what the subscriber's state vector lacks, and the record's HLC */
  | { i: string; u: Uint8Array; h: number; m?: true };
/* `m`: these bytes are a part of the item's, continued by the first item of the next states frame (same id and kind); see statesFrames */

/** One change as it travels: a feed entry without the sender's local seq. */
export interface WireChange {
  /** origin node */
  o: string;
  /** origin seq */
  n: number;
  /** object id, type */
  i: string;
  y: string;
  /** kind */
  k: 'create' | 'update' | 'delete' | 'undelete' | 'purge' | 'redacted';
  /** Yjs update */
  u: Uint8Array;
  /** HLC */
  h: number;
  /** principal */
  p: string;
  /** fields changed */
  c: string[];
  /** the idempotency key of the write that made the change, if it had one */
  q?: string;
}

/**
 * Anti-entropy, sender to subscriber: the digest of the sender's objects in
 * 256 buckets (20 bytes each), when the subscriber's position is older than
 * the sender's retained feed or its vector lacks the sender's feed base.
 */
export interface DigestFrame {
  t: 'digest';
  buckets: Uint8Array[];
}

/**
 * Anti-entropy answer, one page at a time: the buckets whose digest differs
 * here, and what the subscriber holds of their objects with ids in
 * (after, upTo] (upTo absent: to the end), each with its Yjs state vector
 * and version. The sender answers each page with `states` frames, the last
 * of which has `page` (or `done`, after the last page).
 */
export interface NeedFrame {
  t: 'need';
  buckets: number[];
  have: { i: string; s: Uint8Array; v: string }[];
  after?: string;
  upTo?: string;
}

/** Changes from the sender's feed; `last` is the sender seq they reach (skipped ones included). */
export interface ChangesFrame {
  t: 'changes';
  changes: WireChange[];
  last: number;
  /** the sender's feed head when it sent this, for lag */
  head: number;
}

/** The receiver has durably applied everything up to `seq` of the sender's feed. */
export interface AckFrame {
  t: 'ack';
  seq: number;
}

/** The sender's feed head; accepted for lag reporting (this version does not send it). */
export interface HeadFrame {
  t: 'head';
  head: number;
}

/** A field value as a forwarded write carries it: what the admin API accepts. */
export type WireValue = string | number | boolean | null | (string | number | boolean)[];

/**
 * A write made on a replica, forwarded to its master (replica to master
 * only). `key` makes it idempotent: the master answers a repeated key with
 * the first answer instead of writing again. `user` and `password` are the
 * end user's own credential, which the master checks itself.
 */
export interface WriteFrame {
  t: 'write';
  key: string;
  op: 'create' | 'update' | 'replace' | 'delete' | 'undelete';
  id: string;
  /** create only */
  type?: string;
  fields?: Record<string, WireValue>;
  ifVersion?: string;
  user: string;
  password: string;
  /** the surface the write came through (xml, ldap, import), recorded with the principal */
  via?: string;
}

/**
 * The master's answer to a forwarded write. On success, `need` is what the
 * replica must have applied before the write is visible there (read your
 * writes): origin node -> origin seq.
 */
export type WroteFrame =
  | { t: 'wrote'; key: string; ok: true; id: string; need: Record<string, number> }
  | { t: 'wrote'; key: string; ok: false; code: string; message: string; field?: string };

/** Why the sender is closing the session; sent once, then the socket closes. */
export interface ErrorFrame {
  t: 'error';
  reason: string;
}

export type Frame = HelloFrame | AuthFrame | SubscribeFrame | StatesFrame | DigestFrame | NeedFrame | ChangesFrame | AckFrame | HeadFrame | WriteFrame | WroteFrame | ErrorFrame;

/** anti-entropy digests: buckets by the first byte of sha1(id) */
export const DIGEST_BITS = 8;
export const DIGEST_BUCKETS = 2 ** DIGEST_BITS;

export class FrameError extends Error {}

// int64 as number: other implementations may encode HLCs (> 2^32) as uint64.
const packr = new Packr({ useRecords: false, moreTypes: false, mapsAsObjects: true, int64AsType: 'number' });

export function encodeFrame(f: Frame): Uint8Array {
  return packr.pack(f);
}

/** node and cluster ids: the characters object ids may use */
const isId = (v: unknown): v is string => typeof v === 'string' && isValidId(v);
const isBytes = (v: unknown, max: number): v is Uint8Array => v instanceof Uint8Array && v.length <= max;
const KINDS = new Set(['create', 'update', 'delete', 'undelete', 'purge', 'redacted']);
const WRITE_OPS = new Set(['create', 'update', 'replace', 'delete', 'undelete']);
const NAME_RE = /^[A-Za-z][A-Za-z0-9_]{0,63}$/;
const CRED_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}:[0-9a-f]{16}$/;
/** idempotency keys: what a client may send in Idempotency-Key */
const isKey = (v: unknown): v is string => typeof v === 'string' && /^[\x21-\x7e]{1,128}$/.test(v);
const isScalar = (v: unknown): boolean => typeof v === 'string' || typeof v === 'boolean' || (typeof v === 'number' && Number.isFinite(v));

function check(cond: boolean, what: string): asserts cond {
  if (!cond) throw new FrameError(what);
}

function checkVector(v: unknown): Record<string, number> {
  check(isMap(v), 'vector must be a map');
  const entries = Object.entries(v);
  check(entries.length <= 10_000, 'vector too large');
  check(isVector(v), 'vector entries must be node id -> seq');
  return v as Record<string, number>;
}

function checkChange(c: unknown): WireChange {
  check(isMap(c), 'a change must be a map');
  check(isId(c['o']) && isSeq(c['n']) && c['n'] > 0, 'change origin is malformed');
  check(isId(c['i']) && typeof c['y'] === 'string' && NAME_RE.test(c['y']), 'change object id or type is malformed');
  check(typeof c['k'] === 'string' && KINDS.has(c['k']), 'change kind is unknown');
  check(isBytes(c['u'], MAX_CHANGE_BYTES), 'change update must be bytes');
  check(isSeq(c['h']), 'change HLC is malformed');
  check(typeof c['p'] === 'string' && c['p'].length <= 256, 'change principal is malformed');
  check(Array.isArray(c['c']) && c['c'].length <= 1000 && c['c'].every((f) => typeof f === 'string' && NAME_RE.test(f)), 'change field list is malformed');
  check(c['q'] === undefined || (typeof c['q'] === 'string' && c['q'].length > 0 && c['q'].length <= 1024), 'change idempotency key is malformed');
  return c as unknown as WireChange;
}

const VIA_RE = /^[a-z]{1,16}$/;

/**
 * Throws a FrameError naming what a master's decodeFrame would refuse in
 * this write: a replica checks what it forwards, because a malformed write
 * fails the whole session at the master, and the replica sends it again
 * with every other pending write at each reconnect.
 */
export function checkWriteFrame(f: Omit<WriteFrame, 't'>): void {
  checkWrite(f as unknown as Record<string, unknown>);
}

/** Most characters of a refused write's message on the wire (see the `wrote` frame's check). */
export const MAX_REFUSAL = 2000;

function checkWrite(f: Record<string, unknown>): WriteFrame {
  check(isKey(f['key']), 'write needs a key of 1-128 printable ASCII characters');
  check(typeof f['op'] === 'string' && WRITE_OPS.has(f['op']), 'write op is unknown');
  check(isId(f['id']), 'write needs a valid object id');
  check(f['op'] !== 'create' || (typeof f['type'] === 'string' && NAME_RE.test(f['type'])), 'a forwarded create needs a type');
  const fields = f['fields'];
  if (f['op'] === 'create' || f['op'] === 'update' || f['op'] === 'replace') {
    check(isMap(fields) && Object.keys(fields).length <= 1000, 'write needs a map of at most 1000 fields');
    for (const [k, v] of Object.entries(fields)) {
      check(NAME_RE.test(k), 'write field names are letters, digits and _');
      check(v === null || isScalar(v) || (Array.isArray(v) && v.length <= 10_000 && v.every(isScalar)), `write field ${k} must be a scalar, a list of scalars or null`);
    }
  } else check(fields === undefined, `a forwarded ${String(f['op'])} carries no fields`);
  check(f['ifVersion'] === undefined || (typeof f['ifVersion'] === 'string' && f['ifVersion'].length <= 128), 'write ifVersion is malformed');
  check(f['via'] === undefined || (typeof f['via'] === 'string' && VIA_RE.test(f['via'])), 'write via is malformed');
  check(typeof f['user'] === 'string' && f['user'].length <= 256 && typeof f['password'] === 'string' && f['password'].length <= 1024, 'write needs the user and password it is made as');
  return f as unknown as WriteFrame;
}

/**
 * Decodes and checks one frame. Anything not exactly a frame of this
 * protocol throws a FrameError naming what is wrong; the caller closes the
 * connection with that reason and stores nothing.
 */
export function decodeFrame(data: Uint8Array): Frame {
  let f: unknown;
  try {
    f = packr.unpack(data);
  } catch (e) {
    throw new FrameError(`not msgpack (${(e as Error).message})`);
  }
  check(isMap(f), 'a frame must be a msgpack map');
  switch (f['t']) {
    case 'hello':
      check(isSeq(f['v']), 'hello without a protocol version');
      check(isId(f['cluster']) && isId(f['node']), 'hello needs cluster and node ids of letters, digits, ".", "_" and "-"');
      check(f['role'] === 'master' || f['role'] === 'replica', 'hello role must be master or replica');
      check(isBytes(f['nonce'], 64) && f['nonce'].length >= 16, 'hello nonce must be at least 16 bytes');
      check(f['cred'] === undefined || (typeof f['cred'] === 'string' && CRED_RE.test(f['cred'])), 'hello credential must be name:serial');
      check(f['z'] === undefined || typeof f['z'] === 'boolean', 'hello z must be a boolean');
      check(f['feed'] === undefined || isFeedTag(f['feed']), 'hello feed must be 8 hex digits');
      return f as unknown as HelloFrame;
    case 'auth': {
      check(isBytes(f['proof'], 64), 'auth proof must be bytes');
      const feeds = f['feeds'];
      check(
        feeds === undefined || (isFeedTags(feeds) && Object.keys(feeds).length <= MAX_FEEDS),
        `auth feeds must map at most ${MAX_FEEDS} node ids to feed tags of 8 hex digits`,
      );
      const forgotten = f['forgotten'];
      check(
        forgotten === undefined || (isForgottenFeeds(forgotten) && Object.values(forgotten).reduce((n, tags) => n + tags.length, Object.keys(feeds ?? {}).length) <= MAX_FEEDS),
        `auth forgotten must map node ids to lists of feed tags of 8 hex digits, at most ${MAX_FEEDS} tags with the feeds`,
      );
      return f as unknown as AuthFrame;
    }
    case 'sub':
      check(isSeq(f['since']), 'sub needs a feed position');
      checkVector(f['vector']);
      check(f['clone'] === undefined || typeof f['clone'] === 'boolean', 'sub clone must be a boolean');
      return f as unknown as SubscribeFrame;
    case 'states':
      check(Array.isArray(f['objects']) && f['objects'].length <= 10_000, 'states must carry a list of at most 10000 objects');
      // (each object once: the receiver plans a frame's states together, and two of one id would both be stored)
      const ids = new Set<unknown>();
      for (const o of f['objects'] as unknown[]) {
        check(isMap(o) && isId(o['i']), 'a state must be an object id and record bytes');
        check(!ids.has(o['i']), `states name object ${String(o['i'])} twice in one frame`);
        ids.add(o['i']);
        // (a part is continued by the next frame's first item: only the last of a frame can be one, never the stream's last)
        check(o['m'] === undefined || (o['m'] === true && o['p'] === undefined && o === (f['objects'] as unknown[]).at(-1) && !f['done'] && !f['page']), 'a state cut into parts must be the last of a frame that ends neither the stream nor a page, and no purge marker');
        // (an own key, as the session tells the two kinds apart: msgpack can carry a key whose value is undefined)
        if ('u' in o) {
          check(isBytes(o['u'], 16 * 1024 * 1024) && isSeq(o['h']) && o['r'] === undefined && o['p'] === undefined, 'a state diff must be update bytes and an HLC');
          continue;
        }
        check(isBytes(o['r'], 16 * 1024 * 1024), 'a state must be an object id and record bytes');
        check(o['p'] === undefined || o['p'] === true, 'a state\'s purge flag must be true or absent');
      }
      check(
        f['keys'] === undefined || (Array.isArray(f['keys']) && f['keys'].length <= 10_000 && f['keys'].every((k: unknown) => isMap(k) && typeof k['q'] === 'string' && k['q'].length > 0 && k['q'].length <= 2048 && isBytes(k['r'], 1024))),
        'states keys must be a list of at most 10000 keys and their records',
      );
      check(typeof f['done'] === 'boolean', 'states need done');
      check(f['page'] === undefined || (f['page'] === true && !f['done']), 'a states page end must be true, and not on the last frame');
      if (f['done']) {
        check(isSeq(f['head']), 'the last states frame needs the snapshot head');
        checkVector(f['vector']);
        check(
          f['ahead'] === undefined || (Array.isArray(f['ahead']) && f['ahead'].length <= MAX_AHEAD_SENT && f['ahead'].every((a: unknown) => Array.isArray(a) && a.length === 2 && isId(a[0]) && isSeq(a[1]) && a[1] >= 1)),
          `states ahead must be a list of at most ${MAX_AHEAD_SENT} [origin, seq] pairs`,
        );
      }
      return f as unknown as StatesFrame;
    case 'digest':
      check(Array.isArray(f['buckets']) && f['buckets'].length === DIGEST_BUCKETS && f['buckets'].every((b) => isBytes(b, 20) && b.length === 20), 'digest needs 256 buckets of 20 bytes');
      return f as unknown as DigestFrame;
    case 'need':
      check(Array.isArray(f['buckets']) && f['buckets'].length <= DIGEST_BUCKETS && f['buckets'].every((b) => Number.isInteger(b) && b >= 0 && b < DIGEST_BUCKETS), 'need must list bucket numbers 0-255');
      check(Array.isArray(f['have']) && f['have'].length <= 100_000, 'need must list at most 100000 held objects');
      for (const o of f['have'] as unknown[]) {
        check(isMap(o) && isId(o['i']) && isBytes(o['s'], 1024 * 1024) && typeof o['v'] === 'string' && o['v'].length <= 64, 'a held object must be an id, a state vector and a version');
      }
      check((f['after'] === undefined || isId(f['after'])) && (f['upTo'] === undefined || isId(f['upTo'])), 'need page bounds must be object ids');
      return f as unknown as NeedFrame;
    case 'changes':
      check(Array.isArray(f['changes']) && f['changes'].length <= 10_000, 'changes must be a list of at most 10000');
      (f['changes'] as unknown[]).forEach(checkChange);
      check(isSeq(f['last']) && isSeq(f['head']), 'changes need last and head positions');
      return f as unknown as ChangesFrame;
    case 'ack':
      check(isSeq(f['seq']), 'ack needs a seq');
      return f as unknown as AckFrame;
    case 'head':
      check(isSeq(f['head']), 'head needs a seq');
      return f as unknown as HeadFrame;
    case 'write':
      return checkWrite(f);
    case 'wrote':
      check(isKey(f['key']), 'wrote needs the write key');
      if (f['ok'] === true) {
        check(isId(f['id']), 'wrote needs the object id');
        checkVector(f['need']);
      } else {
        check(f['ok'] === false && typeof f['code'] === 'string' && f['code'].length <= 64 && typeof f['message'] === 'string' && f['message'].length <= MAX_REFUSAL, 'a failed write needs a code and a message');
        check(f['field'] === undefined || (typeof f['field'] === 'string' && NAME_RE.test(f['field'])), 'wrote field is malformed');
      }
      return f as unknown as WroteFrame;
    case 'error':
      check(typeof f['reason'] === 'string', 'error needs a reason');
      return { t: 'error', reason: (f['reason'] as string).slice(0, 500) };
    default:
      throw new FrameError(`unknown frame type ${typeof f['t'] === 'string' ? JSON.stringify(f['t'].slice(0, 32)) : typeof f['t']}`);
  }
}
