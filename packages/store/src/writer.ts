import { MeridianError } from './errors.js';
import type { StoredObject, WriteOptions } from './store.js';

/** The credential a write is made with, as the user gave it. */
export interface Credential {
  user: string;
  password: string;
}

export interface WriteRequest extends WriteOptions {
  /** forwarded to the master on a replica, which checks it itself */
  credential?: Credential | undefined;
  /** the surface the write came through (xml, ldap, import): recorded as "<principal> via <surface>" */
  via?: 'xml' | 'ldap' | 'import' | undefined;
}

/**
 * The write path as the gateways see it. Every gateway writes through this,
 * never through the store, so that the same code runs on a master (the
 * store commits) and on a replica (the master commits, and the answer
 * waits until the change is back and readable there).
 */
/** The principal a feed entry records for a write made through `via`. */
export function recordedPrincipal(principal: string | undefined, via: string | undefined): string | undefined {
  return via === undefined || principal === undefined ? principal : `${principal} via ${via}`;
}

export interface Writer {
  /** true where writes are made by another node (a replica's master), whose store this one's may lag */
  readonly forwards?: boolean;
  create(type: string, fields: Record<string, unknown>, opts: WriteRequest & { id?: string | undefined }): Promise<StoredObject>;
  update(id: string, fields: Record<string, unknown>, opts: WriteRequest): Promise<StoredObject>;
  replace(id: string, fields: Record<string, unknown>, opts: WriteRequest): Promise<StoredObject>;
  delete(id: string, opts: WriteRequest): Promise<StoredObject>;
  undelete(id: string, opts: WriteRequest): Promise<StoredObject>;
}

/** What a write is: its kind, the type a create makes, and the id it names (a create's if it chose one). */
export interface WriteTarget {
  op: 'create' | 'update' | 'replace' | 'delete' | 'undelete';
  type?: string | undefined;
  id?: string | undefined;
}

/**
 * Whether two writes under one Idempotency-Key are the same write, so that
 * the second may share the first's answer while it runs. Another write
 * waits for the first, then goes on as itself (its key's record then
 * answers it, or refuses it: checkReplay).
 */
export function sameWrite(a: WriteTarget, b: WriteTarget): boolean {
  return a.op === b.op && a.type === b.type && a.id === b.id;
}

/**
 * Refuses a write whose key its user first used for another write: the
 * object the key made must be the one `w` names. Answered with that
 * object, a create of a Host could show a Person made a day before, which
 * may since have left what the user may read.
 */
export function checkReplay(made: { type: string; id: string }, w: WriteTarget): void {
  const same = w.op === 'create' ? made.type === w.type && (w.id === undefined || made.id === w.id) : made.id === w.id;
  if (!same) throw new MeridianError('bad-request', 'this Idempotency-Key was used for another write; send a new key with a new request');
}
