import * as Y from 'yjs';
import { decode } from './codec.js';
import { isHlc } from './hlc.js';
import { isFeedTags, isForgottenFeeds, isMap, isValidId } from './ids.js';
import { SEP } from './keys.js';
import { isFieldMap, isIdempotentWrite, isObjectRecordShape, isPurgeMarker } from './record-shapes.js';
import { holdsState } from './yobject.js';
import { isSeq, isSeqList, isVector } from './version-vector.js';

/**
 * What is wrong with one record of a backup, if anything, as the end of a
 * sentence ("its object record of org-1 holds ..."); undefined if the store
 * can read it. A backup's checksum shows it was not damaged, not that what
 * wrote it was a Meridian: a record restored as it came is read later,
 * where a bad one makes the node refuse to open, every read of the object
 * or page throw, a feed seq turn NaN, or a peer refuse the node's clone at
 * every retry. So every value is decoded here, and checked to be of the
 * shape the store reads, Yjs states and updates included, before a
 * restore writes it. Only what needs the schema is left to the write path.
 */
export function restoredRecordProblem(key: string, value: Uint8Array): string | undefined {
  const space = key[0]!;
  const rest = key.slice(1);
  // (a space no build reads any more, from an older one, is restored as it came: nothing reads it)
  const check = Object.hasOwn(SPACES, space) ? SPACES[space]! : undefined;
  if (check === undefined) return undefined;
  let v: unknown;
  // (index entries hold no value to decode)
  if (space !== 't' && space !== 'x' && space !== 'u') {
    try {
      v = decode(value);
    } catch {
      return `its ${check.name} record "${printable(rest)}" is not msgpack`;
    }
  }
  const problem = check.problem(rest, v, value);
  return problem === undefined ? undefined : `its ${check.name} record "${printable(rest)}" ${problem}`;
}

interface Space {
  /** the kind of record, for the sentence */
  name: string;
  /** what is wrong with the key's rest and its decoded value (the raw one for index entries) */
  problem(rest: string, v: unknown, raw: Uint8Array): string | undefined;
}

const SEQ_PART = /^[0-9a-f]{14}$/;
const KINDS = new Set(['create', 'update', 'delete', 'undelete', 'purge', 'redacted']);

const isNames = (v: unknown): boolean => Array.isArray(v) && v.every((x) => typeof x === 'string');
/** a seq part as keys write it: 14 hex digits, at least 1 */
const isSeqPart = (s: string): boolean => SEQ_PART.test(s) && Number.isSafeInteger(parseInt(s, 16)) && parseInt(s, 16) > 0;

/**
 * Whether Yjs reads the bytes as an object's state: a bad one throws from
 * every later read or merge of the object. (A doc with a guid of its own
 * costs a random uuid each, most of the check's time.)
 */
function readsAsState(update: Uint8Array): boolean {
  const doc = new Y.Doc({ gc: false, guid: 'restore-check' });
  try {
    Y.applyUpdate(doc, update);
    return true;
  } catch {
    return false;
  } finally {
    doc.destroy();
  }
}

/** Whether Yjs decodes the bytes as an update: a peer applies a feed entry's change to its own state. */
function decodesAsUpdate(update: Uint8Array): boolean {
  try {
    Y.decodeUpdate(update);
    return true;
  } catch {
    return false;
  }
}

/** The key's id and 14-hex-digit seq, split at its last separator; undefined if it is not of that shape. */
function idAndSeq(rest: string): string | undefined {
  const at = rest.lastIndexOf(SEP);
  if (at < 1 || !isSeqPart(rest.slice(at + 1))) return undefined;
  const id = rest.slice(0, at);
  return isValidId(id) ? id : undefined;
}

/** `count` parts separated by NUL, the type and field (the first two) not empty: a value may be. */
const parts = (rest: string, count: number): string[] | undefined => {
  const p = rest.split(SEP);
  return p.length === count && p[0]!.length > 0 && p[1]!.length > 0 ? p : undefined;
};

const META: Readonly<Record<string, (v: unknown) => boolean>> = {
  nodeId: (v) => typeof v === 'string',
  nodeRoot: (v) => typeof v === 'string' && isValidId(v),
  incarnation: isSeq,
  restoredFrom: (v) => isMap(v) && typeof v['node'] === 'string',
  format: (v) => isSeq(v),
  versionFormula: isSeq,
  clients: (v) => Array.isArray(v) && v.every((c) => isMap(c) && Number.isSafeInteger(c['id']) && (c['node'] === undefined || typeof c['node'] === 'string')),
  clientNodes: (v) => isMap(v) && Object.values(v).every((n) => typeof n === 'string'),
  // (any whole number: builds before caa5847 could count a type below zero)
  counts: (v) => isMap(v) && Object.values(v).every((n) => Number.isSafeInteger(n)),
  untyped: isNames,
  hlc: isHlc,
  feedBase: isVector,
  trimmedTo: isSeq,
  cloning: (v) => v === 1,
  indexLayout: (v) => isMap(v) && Object.values(v).every((x) => typeof x === 'string'),
  indexPending: isNames,
  feedId: (v) => typeof v === 'string' && /^[0-9a-f]{16}$/.test(v),
  statesEpoch: isSeq,
  peerFeeds: isFeedTags,
  forgottenFeeds: isForgottenFeeds,
  compactOwed: (v) => isMap(v) && Object.entries(v).every(([id, range]) => isValidId(id) && isSeqList(range)),
};

const SPACES: Readonly<Record<string, Space>> = {
  o: {
    name: 'object',
    problem(id, v) {
      if (!isValidId(id)) return 'is not under a valid object id';
      if (!isObjectRecordShape(v)) return 'is not an object record';
      const rec = v as { f: Record<string, unknown>; y?: Uint8Array };
      if (!holdsState(rec)) return 'holds no state, nor what rebuilds one';
      if (rec.y !== undefined && !readsAsState(rec.y)) return 'holds a state that is not a Yjs update';
      return undefined;
    },
  },
  f: {
    name: 'changes feed',
    problem(seq, v) {
      if (!isSeqPart(seq)) return 'is not under a feed seq of 14 hex digits';
      if (!isMap(v) || typeof v['o'] !== 'string' || !isValidId(v['o']) || !isSeq(v['n']) || v['n'] < 1 || typeof v['i'] !== 'string' || !isValidId(v['i'])) return 'is not a feed entry';
      if (typeof v['t'] !== 'string' || !(v['u'] instanceof Uint8Array) || !isHlc(v['h']) || typeof v['p'] !== 'string' || !isNames(v['c']) || !KINDS.has(v['k'] as string)) return 'is not a feed entry';
      if (v['q'] !== undefined && typeof v['q'] !== 'string') return 'is not a feed entry';
      if (v['u'].length > 0 && !decodesAsUpdate(v['u'])) return 'holds a change that is not a Yjs update';
      return undefined;
    },
  },
  h: {
    name: 'history',
    problem(rest, v) {
      if (idAndSeq(rest) === undefined) return 'is not under an object id and feed seq';
      if (!isMap(v) || typeof v['o'] !== 'string' || !isSeq(v['n']) || !isHlc(v['h']) || typeof v['p'] !== 'string' || !KINDS.has(v['k'] as string) || typeof v['d'] !== 'boolean') return 'is not a history record';
      if ((v['f'] !== undefined && !isFieldMap(v['f'])) || (v['b'] !== undefined && !isFieldMap(v['b'])) || (v['c'] !== undefined && !isNames(v['c']))) return 'is not a history record';
      return undefined;
    },
  },
  v: { name: 'version vector', problem: (origin, v) => (!isValidId(origin) ? 'is not under a valid node id' : !isSeq(v) ? 'is not an origin seq' : undefined) },
  c: { name: 'checkpoint', problem: (peer, v) => (!isValidId(peer) ? 'is not under a valid node id' : !isSeq(v) ? 'is not a feed seq' : undefined) },
  a: { name: 'held-ahead change', problem: (rest, v) => (idAndSeq(rest) === undefined ? 'is not under a node id and origin seq' : !isSeq(v) ? 'is not a feed seq' : undefined) },
  i: {
    name: 'idempotency',
    problem(key, v) {
      if (key.length === 0 || key.length > 2048) return 'is not under a key of 1 to 2048 characters';
      return isIdempotentWrite(v, false) ? undefined : 'is not an idempotency record';
    },
  },
  p: {
    name: 'purge marker',
    problem(id, v) {
      if (!isValidId(id)) return 'is not under a valid object id';
      return isPurgeMarker(v) ? undefined : 'is not a purge marker';
    },
  },
  k: {
    name: 'conflict',
    problem(rest, v) {
      const id = rest.slice(0, rest.indexOf(SEP));
      if (!isValidId(id)) return 'is not under a valid object id';
      const values = isMap(v) ? v['values'] : undefined;
      const ok =
        isMap(v) && v['objectId'] === id && typeof v['type'] === 'string' && typeof v['field'] === 'string' && typeof v['winner'] === 'string' && isHlc(v['detected']) &&
        (v['settled'] === undefined || v['settled'] === null || isHlc(v['settled'])) && Array.isArray(values) && values.length >= 2 && values.every((x) => isMap(x) && typeof x['item'] === 'string');
      return ok ? undefined : 'is not a conflict record';
    },
  },
  m: {
    name: 'node metadata',
    problem(name, v) {
      // (x.<name>: the node's own settings, read by the layers above, which check what they read;
      // a name no build reads any more is not read either)
      const check = Object.hasOwn(META, name) ? META[name]! : undefined;
      return check === undefined || check(v) ? undefined : 'is not of the kind it names';
    },
  },
  t: { name: 'type index', problem: (rest, _v, raw) => (parts(rest, 2) === undefined || !isValidId(rest.slice(rest.indexOf(SEP) + 1)) ? 'is not a type and object id' : raw.length > 0 ? 'holds a value' : undefined) },
  x: { name: 'field index', problem: (rest, _v, raw) => (parts(rest, 4) === undefined || !isValidId(rest.slice(rest.lastIndexOf(SEP) + 1)) ? 'is not a type, field, value and object id' : raw.length > 0 ? 'holds a value' : undefined) },
  u: { name: 'unique index', problem: (rest, _v, raw) => (parts(rest, 3) === undefined ? 'is not a type, field and value' : !isValidId(Buffer.from(raw).toString('utf8')) ? 'does not name an object id' : undefined) },
};

/** A key or key part as a sentence may quote it: NULs, which separate its parts, shown as "␀", cut to 80 characters. */
function printable(s: string): string {
  const shown = s.replace(/\0/g, '␀').replace(/[\x00-\x1f\x7f]/g, '?');
  return shown.length > 80 ? `${shown.slice(0, 80)}...` : shown;
}
