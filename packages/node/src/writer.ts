import { recordedPrincipal, type Store, type StoredObject, type Writer, type WriteOptions, type WriteRequest } from '@meridian/store';

export type { Credential, Writer, WriteRequest } from '@meridian/store';

/**
 * A master's writer: the local store. A write with an idempotency key is
 * looked up first: one already made under the key (by this user) is
 * answered with the object as it is now, not made again. Keys are scoped
 * by user and kept apart from forwarded writes' keys (fwd/...).
 */
export function storeWriter(store: Store): Writer {
  // the record exists once the change is on disk: a copy arriving before that joins the first
  const running = new Map<string, Promise<StoredObject>>();
  const once = async (opts: WriteRequest, write: (o: WriteOptions) => Promise<StoredObject>): Promise<StoredObject> => {
    const key = opts.idempotencyKey === undefined ? undefined : `api/${opts.principal ?? 'system'}/${opts.idempotencyKey}`;
    const principal = recordedPrincipal(opts.principal, opts.via);
    if (key === undefined) return write({ principal, ifVersion: opts.ifVersion });
    const inFlight = running.get(key);
    if (inFlight) return inFlight;
    const p = (async () => {
      const prior = await store.idempotent(key);
      const o = prior && (await store.get(prior.id));
      if (o) return o;
      return write({ principal, ifVersion: opts.ifVersion, idempotencyKey: key });
    })().finally(() => running.delete(key));
    running.set(key, p);
    return p;
  };
  return {
    create: (type, fields, opts) => once(opts, (o) => store.create(type, fields, { ...o, id: opts.id })),
    update: (id, fields, opts) => once(opts, (o) => store.update(id, fields, o)),
    replace: (id, fields, opts) => once(opts, (o) => store.replace(id, fields, o)),
    delete: (id, opts) => once(opts, (o) => store.delete(id, o)),
    undelete: (id, opts) => once(opts, (o) => store.undelete(id, o)),
  };
}
