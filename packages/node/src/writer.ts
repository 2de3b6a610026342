import { checkReplay, recordedPrincipal, sameWrite, type Store, type StoredObject, type Writer, type WriteOptions, type WriteRequest, type WriteTarget } from '@meridian/store';

export type { Credential, Writer, WriteRequest } from '@meridian/store';

/**
 * A master's writer: the local store. A write with an idempotency key is
 * looked up first: one already made under the key (by this user) is
 * answered with the object as it is now, not made again, if the key was
 * made for the same write (checkReplay). Keys are scoped by user and kept
 * apart from forwarded writes' keys (fwd/...).
 */
export function storeWriter(store: Store): Writer {
  // the record exists once the change is on disk: a copy arriving before that joins the first
  const running = new Map<string, { target: WriteTarget; done: Promise<StoredObject> }>();
  const once = async (opts: WriteRequest, target: WriteTarget, write: (o: WriteOptions) => Promise<StoredObject>): Promise<StoredObject> => {
    const key = opts.idempotencyKey === undefined ? undefined : `api/${opts.principal ?? 'system'}/${opts.idempotencyKey}`;
    const principal = recordedPrincipal(opts.principal, opts.via);
    if (key === undefined) return write({ principal, ifVersion: opts.ifVersion });
    for (let first = running.get(key); first; first = running.get(key)) {
      if (sameWrite(first.target, target)) return first.done;
      await first.done.catch(() => undefined);
    }
    const done = (async () => {
      const prior = await store.idempotent(key);
      const o = prior && (await store.get(prior.id));
      if (o) return (checkReplay(o, target), o);
      return write({ principal, ifVersion: opts.ifVersion, idempotencyKey: key });
    })().finally(() => running.delete(key));
    running.set(key, { target, done });
    return done;
  };
  return {
    create: (type, fields, opts) => once(opts, { op: 'create', type, id: opts.id }, (o) => store.create(type, fields, { ...o, id: opts.id })),
    update: (id, fields, opts) => once(opts, { op: 'update', id }, (o) => store.update(id, fields, o)),
    replace: (id, fields, opts) => once(opts, { op: 'replace', id }, (o) => store.replace(id, fields, o)),
    delete: (id, opts) => once(opts, { op: 'delete', id }, (o) => store.delete(id, o)),
    undelete: (id, opts) => once(opts, { op: 'undelete', id }, (o) => store.undelete(id, o)),
  };
}
