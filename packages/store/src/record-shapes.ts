import { decode, encode } from './codec.js';
import { isHlc } from './hlc.js';
import { isMap, isValidId } from './ids.js';
import { isSchemaName } from './schema.js';
import type { IdempotentWrite } from './store.js';
import { isSeq, isVector } from './version-vector.js';

const scalar = (v: unknown): boolean => typeof v === 'string' || typeof v === 'boolean' || (typeof v === 'number' && Number.isFinite(v));

/** Whether a decoded value is a map of field values as a record holds them: scalars, or arrays of scalars. */
export function isFieldMap(v: unknown): boolean {
  return isMap(v) && Object.values(v).every((x) => scalar(x) || (Array.isArray(x) && x.every(scalar)));
}

/**
 * Whether a decoded value has the shape of an object record (`o<id>`, see
 * ObjectRecord in codec.ts) as reads, digests and later writes use it; not
 * whether it holds a state (yobject.ts holdsState). A peer's clone brings
 * them, and a backup restores them.
 */
export function isObjectRecordShape(v: unknown): boolean {
  if (!isMap(v) || typeof v['t'] !== 'string' || !isFieldMap(v['f']) || !isHlc(v['h']) || typeof v['v'] !== 'string' || v['v'].length > 64) return false;
  return (v['d'] === undefined || typeof v['d'] === 'boolean') && (v['s'] === undefined || isSeq(v['s'])) && (v['c'] === undefined || isHlc(v['c'])) && (v['x'] === undefined || v['x'] === 1);
}

/**
 * Whether a decoded value is an idempotency record (`i<key>`). `origin` is
 * always set by this build; records stored before it was kept lack it,
 * which a backup may hold, a peer's clone never.
 */
export function isIdempotentWrite(v: unknown, originRequired: boolean): boolean {
  return (
    isMap(v) && typeof v['id'] === 'string' && isValidId(v['id']) && (v['origin'] === undefined ? !originRequired : typeof v['origin'] === 'string' && isValidId(v['origin'])) &&
    isSeq(v['originSeq']) && v['originSeq'] >= 1 && isHlc(v['hlc']) && (v['need'] === undefined || isVector(v['need']))
  );
}

/**
 * Whether a decoded value is a purge marker (`p<id>`, see PurgeMarker in
 * store.ts), as strictly as the purge change it stands for is checked on
 * the wire: a peer's clone brings them, and a backup restores them.
 */
export function isPurgeMarker(d: unknown): boolean {
  if (!isMap(d)) return false;
  const m = d;
  return (
    isHlc(m['h']) && typeof m['p'] === 'string' && m['p'].length <= 256 && typeof m['o'] === 'string' && isValidId(m['o']) &&
    Number.isSafeInteger(m['n']) && (m['n'] as number) >= 1 && isSchemaName(m['t']) && (m['r'] === undefined || m['r'] === 1)
  );
}

/**
 * An idempotency record (its bytes) with its origin said: records stored
 * before it was kept were all made by `node`, the node whose store held
 * them. Left without, a clone's peer or a restored node (under its new id,
 * whose seqs start again from 1) took it for one of its own changes.
 */
export function withOrigin(bytes: Uint8Array, node: string): { write: IdempotentWrite & { origin: string }; bytes: Uint8Array } {
  const w = decode<IdempotentWrite>(bytes);
  return w.origin === undefined ? { write: { ...w, origin: node }, bytes: encode({ ...w, origin: node }) } : { write: { ...w, origin: w.origin }, bytes };
}
