import { KEY_USED_ELSEWHERE, MeridianError, recordedPrincipal, type Store, type StoredObject, type Writer, type WriteOptions, type WriteRequest } from '@meridian/store';

export type { Credential, Writer, WriteRequest } from '@meridian/store';

/** What a write sent again must name to be answered by the write its key made first: a create its type (and id, if it chose one), any other write its object's id. */
export interface ReplayTarget {
  type?: string | undefined;
  id?: string | undefined;
}

/**
 * Refuses a key its user first used for another write. Answered with that
 * write's object, a create of a Host could show a Person it made a day
 * before, which may since have left what the user may read.
 */
export function checkReplay(made: { type: string; id: string }, target: ReplayTarget): void {
  if ((target.type !== undefined && made.type !== target.type) || (target.id !== undefined && made.id !== target.id)) {
    throw new MeridianError('bad-request', KEY_USED_ELSEWHERE);
  }
}

/**
 * A master's writer: the local store. A write with an idempotency key is
 * looked up first: one already made under the key (by this user) is
 * answered with the object as it is now, not made again, if the key was
 * made for the same write (checkReplay). Keys are scoped by user and kept
 * apart from forwarded writes' keys (fwd/...).
 */
export function storeWriter(store: Store): Writer {
  // the record exists once the change is on disk: a copy arriving before that joins the first
  const running = new Map<string, Promise<StoredObject>>();
  const once = async (opts: WriteRequest, target: ReplayTarget, write: (o: WriteOptions) => Promise<StoredObject>): Promise<StoredObject> => {
    const key = opts.idempotencyKey === undefined ? undefined : `api/${opts.principal ?? 'system'}/${opts.idempotencyKey}`;
    const principal = recordedPrincipal(opts.principal, opts.via);
    if (key === undefined) return write({ principal, ifVersion: opts.ifVersion });
    const inFlight = running.get(key);
    const replayed = (o: StoredObject): StoredObject => (checkReplay(o, target), o);
    if (inFlight) return inFlight.then(replayed);
    const p = (async () => {
      const prior = await store.idempotent(key);
      const o = prior && (await store.get(prior.id));
      if (o) return o;
      return write({ principal, ifVersion: opts.ifVersion, idempotencyKey: key });
    })().finally(() => running.delete(key));
    running.set(key, p);
    return p.then(replayed);
  };
  return {
    create: (type, fields, opts) => once(opts, { type, id: opts.id }, (o) => store.create(type, fields, { ...o, id: opts.id })),
    update: (id, fields, opts) => once(opts, { id }, (o) => store.update(id, fields, o)),
    replace: (id, fields, opts) => once(opts, { id }, (o) => store.replace(id, fields, o)),
    delete: (id, opts) => once(opts, { id }, (o) => store.delete(id, o)),
    undelete: (id, opts) => once(opts, { id }, (o) => store.undelete(id, o)),
  };
}
