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
