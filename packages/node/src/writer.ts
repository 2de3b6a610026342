import type { FieldValue, Store, StoredObject, WriteOptions } from '@meridian/store';

/** The credential a write is made with, as the user gave it. */
export interface Credential {
  user: string;
  password: string;
}

export interface WriteRequest extends WriteOptions {
  /** forwarded to the master on a replica, which checks it itself */
  credential?: Credential | undefined;
}

/**
 * Every gateway writes through this, never through the store, so that the
 * same code runs on a master (the store commits) and on a replica (the
 * master commits, and the answer waits until the change is back here).
 */
export interface Writer {
  create(type: string, fields: Record<string, unknown>, opts: WriteRequest & { id?: string | undefined }): Promise<StoredObject>;
  update(id: string, fields: Record<string, unknown>, opts: WriteRequest): Promise<StoredObject>;
  replace(id: string, fields: Record<string, unknown>, opts: WriteRequest): Promise<StoredObject>;
  delete(id: string, opts: WriteRequest): Promise<StoredObject>;
  undelete(id: string, opts: WriteRequest): Promise<StoredObject>;
}

const strip = ({ principal, ifVersion, idempotencyKey }: WriteRequest): WriteOptions => ({ principal, ifVersion, idempotencyKey });

/** A master's writer: the local store. */
export function storeWriter(store: Store): Writer {
  return {
    create: (type, fields, opts) => store.create(type, fields, { ...strip(opts), id: opts.id }),
    update: (id, fields, opts) => store.update(id, fields, strip(opts)),
    replace: (id, fields, opts) => store.replace(id, fields, strip(opts)),
    delete: (id, opts) => store.delete(id, strip(opts)),
    undelete: (id, opts) => store.undelete(id, strip(opts)),
  };
}

export type { FieldValue };
