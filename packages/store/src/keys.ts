/**
 * The key spaces of one node's LevelDB. Keys are UTF-8 strings whose byte order
 * is the order we scan in: a one-letter space prefix, then parts separated by
 * NUL. Validation forbids NUL in ids and values, so a part can never contain
 * the separator, and fixed-width hex keeps sequence numbers in numeric order.
 */
export const SEP = '\u0000';
/**
 * Upper bound for a prefix scan: sorts after every key that starts with the
 * prefix and goes on with a character below U+10000 (ids, hex seqs, type
 * names). Keys compare as UTF-8 bytes, so a field value starting with an
 * emoji sorts after it: ranges over values use `indexRange`.
 */
export const HIGH = '\uffff';

const SEQ_WIDTH = 14; // 56 bits: every safe integer fits

export function seqPart(seq: number): string {
  return seq.toString(16).padStart(SEQ_WIDTH, '0');
}

export function parseSeqPart(s: string): number {
  return parseInt(s, 16);
}

export const keys = {
  /** object state: o<id> -> ObjectRecord */
  object: (id: string): string => `o${id}`,
  objectPrefix: 'o',
  /** changes feed: f<seq> -> FeedEntry */
  feed: (seq: number): string => `f${seqPart(seq)}`,
  feedPrefix: 'f',
  /** version vector: v<origin node> -> highest origin seq applied */
  vector: (origin: string): string => `v${origin}`,
  vectorPrefix: 'v',
  /** a change held ahead of a gap in its origin's vector entry: a<origin>\0<origin seq> -> its local seq */
  ahead: (origin: string, originSeq: number): string => `a${origin}${SEP}${seqPart(originSeq)}`,
  aheadPrefix: 'a',
  /** replication checkpoint: c<peer> -> that peer's feed seq applied here */
  checkpoint: (peer: string): string => `c${peer}`,
  checkpointPrefix: 'c',
  /** idempotency key of a write made here: i<key> -> { i: object id, n: origin seq, h: HLC } */
  idempotency: (key: string): string => `i${key}`,
  idempotencyPrefix: 'i',
  /** node metadata: m<name> -> value */
  meta: (name: string): string => `m${name}`,
  /** type index: t<type>\0<id> -> '' */
  type: (type: string, id: string): string => `t${type}${SEP}${id}`,
  typePrefix: (type: string): string => `t${type}${SEP}`,
  /** field index: x<type>\0<field>\0<value>\0<id> -> '' */
  field: (type: string, field: string, value: string, id: string): string =>
    `x${type}${SEP}${field}${SEP}${value}${SEP}${id}`,
  fieldPrefix: (type: string, field: string, value: string): string => `x${type}${SEP}${field}${SEP}${value}${SEP}`,
  /** history: h<id>\0<seq> -> HistoryRecord of the change at that feed seq (see history.ts) */
  history: (id: string, seq: number): string => `h${id}${SEP}${seqPart(seq)}`,
  historyPrefix: (id: string): string => `h${id}${SEP}`,
  /** purged object: p<id> -> PurgeMarker; the id is never used again */
  purged: (id: string): string => `p${id}`,
  purgedPrefix: 'p',
  /** conflicts of one object: k<id>\0... (see conflicts.ts) */
  conflictPrefix: (id: string): string => `k${id}${SEP}`,
  /** unique index: u<type>\0<field>\0<value> -> owner id */
  unique: (type: string, field: string, value: string): string => `u${type}${SEP}${field}${SEP}${value}`,
  uniquePrefix: 'u',
  /** every field-index (`x`) or unique-index (`u`) key of one field, whatever its values begin with */
  indexRange: (space: 'x' | 'u', type: string, field: string): { gte: string; lt: string } => ({ gte: `${space}${type}${SEP}${field}${SEP}`, lt: `${space}${type}${SEP}${field}\u0001` }),
} as const;

/** The type, field and folded value a unique-index key (`u`) is of. */
export function uniqueKeyParts(key: string): [type: string, field: string, value: string] {
  return key.slice(1).split(SEP) as [string, string, string];
}

/** The id at the end of an index key (type or field index). */
export function idFromIndexKey(key: string): string {
  return key.slice(key.lastIndexOf(SEP) + 1);
}
