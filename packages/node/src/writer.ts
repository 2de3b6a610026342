import type { Store, Writer, WriteOptions, WriteRequest } from '@meridian/store';

export type { Credential, Writer, WriteRequest } from '@meridian/store';

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
