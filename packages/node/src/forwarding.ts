import { createHash, randomUUID } from 'node:crypto';
import { asSeenBy, authorizeWrite, checkReplay, sameWrite, checkFieldValues, idFromDigest, isMeridianError, sameAsWritten, type AccessScope, type TypeDef, readerKnowing, recordedPrincipal, MeridianError, newId as newIdFor, principalName, ValidationError, type ErrorCode, type IdempotentWrite, type Principal, type Store, type StoredObject } from '@meridian/store';
import { checkWriteFrame, ForwardError, FrameError, MAX_REFUSAL, type Replicator, type WriteFrame, type WroteFrame } from '@meridian/sync';
import { builtInRefusal } from './built-in-types.js';
import type { Principals } from './principals.js';
import { HttpError } from './http-util.js';
import type { Writer, WriteRequest } from './writer.js';

/** Seconds a refused client should wait before trying a read-only replica again. */
export const RETRY_AFTER_SECONDS = 5;

/**
 * Master side: runs the writes replicas forward. The master authenticates
 * the user the write is made as, validates it like any local write, and
 * records its idempotency key in the same batch as the change, so a write
 * sent again after a lost answer (or while the first copy still runs) is
 * answered from the first, never applied twice.
 */
export class ForwardedWrites {
  private readonly running = new Map<string, { target: WriteFrame; done: Promise<WroteFrame>; open: () => boolean }>();
  /** writes running, by the replica credential that sent them */
  private readonly runningBy = new Map<string, number>();

  constructor(
    private readonly store: Store,
    private readonly principals: Principals,
    /**
     * Writes of one replica credential run at once, across its sessions: a session counts its own writes
     * unanswered, but those of a session that ended still run, so a replica reconnecting again and again
     * would have more and more running. Two sessions' worth.
     */
    private readonly maxRunning = 2 * 1024,
  ) {}

  handle(w: WriteFrame, via: string, holder: string, open: () => boolean = () => true): Promise<WroteFrame> {
    const signing = this.signedIn(w, via).catch((e: unknown) => {
      // a resend whose record a peer's run is still bringing: the replica sends it again shortly
      if (isMeridianError(e) && e.code === 'busy') return { t: 'wrote', key: w.key, ok: false, code: 'busy', message: e.message } satisfies WroteFrame;
      throw e;
    });
    return signing.then((signed) => {
      if (signed && 't' in signed) return signed;
      // authenticated first: a wrong password never shares another request's answer
      if (!signed) return this.wrongPassword(w);
      const { principal, resentOnly } = signed;
      const scoped = scopedKey(via, principal, w.key);
      const running = this.running.get(scoped);
      // (another write under the key waits, then is judged by the record the first left: checkReplay)
      // (a copy whose session ended is not made, so one sent again on a new session is not given its answer: it
      // waits for it, then is judged afresh, by the record if the first was made after all)
      if (running) return sameWrite(running.target, w) && running.open() ? running.done : running.done.then(() => this.handle(w, via, holder, open));
      const n = this.runningBy.get(holder) ?? 0;
      if (n >= this.maxRunning) {
        return { t: 'wrote', key: w.key, ok: false, code: 'busy', message: `master ${this.store.nodeId} is running ${n} writes of this replica's credential already; send the write again shortly` };
      }
      this.runningBy.set(holder, n + 1);
      const p = this.run(w, scoped, principal, resentOnly, open).finally(() => {
        if (!resentOnly) this.running.delete(scoped);
        const left = (this.runningBy.get(holder) ?? 1) - 1;
        if (left > 0) this.runningBy.set(holder, left);
        else this.runningBy.delete(holder);
      });
      // (not shared: a retry signed in with the password itself must not be given this one's refusal)
      if (!resentOnly) this.running.set(scoped, { target: w, done: p, open });
      return p;
    });
  }

  /**
   * Who the write is made as. A write of its signer's own entry that
   * changed what signs them in (the password, or the uid or mail they
   * signed in with) and is sent again after its answer was lost (the
   * replica resends the frame it kept) carries the name and password the
   * first copy replaced. If that copy was made (its record is here), the
   * password the frame carries or the one it set, checked against the
   * entry itself whatever name it goes by now, signs the resend in, but
   * only to be answered from the record (`resentOnly`), never to make it.
   * A record still arriving with a peer's run throws 'busy'.
   */
  private async signedIn(w: WriteFrame, via: string): Promise<{ principal: Principal; resentOnly: boolean } | undefined> {
    const principal = await this.principals.authenticate(w.user, w.password);
    if (principal) return { principal, resentOnly: false };
    const rules = this.store.schema.access;
    if (!rules || (w.op !== 'update' && w.op !== 'replace')) return undefined;
    // the cheap checks first: no second password check (nor a second guess) unless the entry's own write
    // under this key was made
    const target = await this.store.get(w.id);
    if (!target || target.type !== rules.principalType) return undefined;
    const recorded = await this.store.idempotent(scopedKey(via, { kind: 'person', name: w.user, id: target.id, type: target.type, roles: [], organisation: undefined }, w.key));
    if (!recorded) return undefined;
    const set = w.fields?.[rules.passwordField];
    for (const password of typeof set === 'string' && set !== w.password ? [w.password, set] : [w.password]) {
      const after = await this.principals.person(target, w.user, password);
      if (after) return { principal: after, resentOnly: true };
    }
    return undefined;
  }

  private wrongPassword(w: WriteFrame): WroteFrame {
    return { t: 'wrote', key: w.key, ok: false, code: 'unauthorized', message: `master ${this.store.nodeId} refused the write: wrong user or password for "${w.user}"` };
  }

  private async run(w: WriteFrame, scoped: string, principal: Principal, resentOnly: boolean, open: () => boolean): Promise<WroteFrame> {
    const me = this.store.nodeId;
    const opts = { principal: recordedPrincipal(principalName(principal), w.via), ifVersion: w.ifVersion, idempotencyKey: scoped };
    let seesEverything = principal.kind === 'admin';
    let scope: AccessScope | undefined;
    try {
      // The record is here if this master made the write, or received it from the master that did.
      // (One still on its way with a peer's run is 'busy', refused below as any store error is.)
      const prior = await this.store.idempotent(scoped);
      if (prior) {
        const made = await this.store.get(prior.id);
        if (made) checkReplay(made, w);
        return { t: 'wrote', key: w.key, ok: true, id: prior.id, need: neededFor(prior, me) };
      }
      if (resentOnly) return this.wrongPassword(w);
      const current = w.op === 'create' ? undefined : await this.store.get(w.id);
      // whoever asks, the admin too, as on the admin API
      const builtIn = builtInRefusal(this.store, current?.type ?? w.type);
      if (builtIn) throw new MeridianError('forbidden', builtIn);
      // the master authorises the user itself: a replica cannot write as anyone it cannot prove to be
      const get = (id: string): Promise<StoredObject | undefined> => this.store.get(id);
      scope = await this.principals.scope(principal);
      seesEverything = scope.everything;
      await authorizeWrite(scope, current ? readerKnowing(current, get) : get, w.op, w.id, w.type, w.fields);
      // Not made once the session it came by has ended: the replica sends it again wherever it goes next,
      // and the copy there is the one made. A master stopped (SIGSTOP, a stalled VM) with the frame unread
      // read it when it ran again, after the replica had moved on, and made it a second time, concurrent
      // with what others wrote since (it could win over a later write of the field).
      if (!open()) return { t: 'wrote', key: w.key, ok: false, code: 'busy', message: `master ${this.store.nodeId} did not make the write: the session it came by ended first; the replica sends it again` };
      switch (w.op) {
        case 'create':
          await this.store.create(w.type!, w.fields!, { ...opts, id: w.id });
          break;
        case 'update':
          await this.store.update(w.id, w.fields!, opts);
          break;
        case 'replace':
          await this.store.replace(w.id, w.fields!, opts);
          break;
        case 'delete':
          await this.store.delete(w.id, opts);
          break;
        case 'undelete':
          await this.store.undelete(w.id, opts);
          break;
      }
    } catch (caught) {
      // A keyed create tried again, through another replica (whose record of the key this master
      // keeps apart) or after the record was trimmed: the object its id names is the one it made.
      // Only an object of that type, which the user may read, holding what this create asks: one
      // made under another's knowledge of the key is refused as any taken id is.
      const def = this.store.schema.types.get(w.type ?? '');
      if (def && scope && isMeridianError(caught) && caught.code === 'exists' && w.op === 'create' && w.id === keyedCreateId(def.idPrefix, w.via, w.key)) {
        const made = await this.store.get(w.id);
        if (made && !made.deleted && made.type === def.name && scope.canRead(made) && holdsAsked(def, made, w.fields ?? {})) {
          // recorded under this key too, as a write that changed nothing is: sent again after someone else's
          // change, which holdsAsked would no longer find, it is answered from the record, not refused
          return { t: 'wrote', key: w.key, ok: true, id: w.id, need: await this.store.recordUnchanged(w.id, scoped) };
        }
      }
      // told as the gateway on the replica would tell it: to the user, not to the replica
      const e = asSeenBy(caught, seesEverything);
      if (!isMeridianError(e)) throw e;
      const field = (e as { field?: string }).field;
      // (a message past what the frame may carry would fail the replica's session, and the write be sent again at each reconnect)
      const message = e.message.length <= MAX_REFUSAL ? e.message : `${e.message.slice(0, MAX_REFUSAL - 3)}...`;
      return { t: 'wrote', key: w.key, ok: false, code: e.code, message, ...(field ? { field } : {}) };
    }
    // A record that began arriving with a peer's run meanwhile is waited for by idempotent(), and if it is
    // still on its way ('busy') the answer is "no record", as here.
    const done = await this.store.idempotent(scoped).catch((e: unknown) => {
      if (isMeridianError(e) && e.code === 'busy') return undefined;
      throw e;
    });
    // no record (a keyed create that found its object, or a record trimmed meanwhile): the replica needs all
    // this master has; a record from the master that made the write (relayed here) names that master's change
    return { t: 'wrote', key: w.key, ok: true, id: w.id, need: done ? neededFor(done, me) : this.store.versionVector() };
  }
}

/** What a replica must hold before it answers a write recorded as `done`: the change it made, or for one that changed nothing all it was judged against. */
function neededFor(done: IdempotentWrite, me: string): Record<string, number> {
  return done.need ?? { [done.origin ?? me]: done.originSeq };
}

/**
 * A forwarded write's key, scoped by replica and by the person signed in,
 * not the login typed (one person's uid may be another's mail), and apart
 * from direct writes' keys (see storeWriter): one's key can neither
 * collide with nor read another's.
 */
function scopedKey(via: string, principal: Principal, key: string): string {
  return `fwd/${via}/${principalName(principal)}/${key}`;
}

/** Whether an object holds the fields a create asked for (passwords aside: stored hashed, never shown). */
function holdsAsked(def: TypeDef, o: StoredObject, asked: Record<string, unknown>): boolean {
  try {
    return sameAsWritten(def, o.fields, checkFieldValues(def, o.id, asked));
  } catch {
    return false;
  }
}

const STORE_CODES = new Set<string>(['validation', 'not-found', 'exists', 'precondition', 'closed', 'locked', 'busy', 'forbidden', 'conflict', 'bad-request']);

/**
 * Replica side: a write goes to the master over the sync session, and its
 * answer is given to the client only once the change is on disk here, so
 * the client reads its own write from this replica at once. The master's
 * refusal reaches the client as the master worded it.
 */
export class ForwardingWriter implements Writer {
  readonly forwards = true;
  /** writes sent and not yet answered to their clients, and who waits for there to be none (settle) */
  private inFlight = 0;
  private readonly drained = new Set<() => void>();
  /** ends each wait for a change to come back, once the replica stops (close) */
  private readonly stops = new Set<() => void>();
  private closed = false;
  constructor(
    private readonly store: Store,
    private readonly replicator: Replicator,
    /** ms to wait for the master's answer and for the change to come back */
    private readonly timeout: number,
  ) {}

  create(type: string, fields: Record<string, unknown>, opts: WriteRequest & { id?: string | undefined }): Promise<StoredObject> {
    // the id is chosen here, so a write sent twice (to two masters in a failover) still names one object:
    // drawn, or, under the client's idempotency key, made from it, so that the client's own retry
    // (after a 504, to whichever master the replica has then) names it too
    // (an unknown type is the master's to refuse, in its words)
    const prefix = this.store.schema.types.get(type)?.idPrefix ?? 'obj';
    const [user, clientKey] = [signedIn(opts), opts.idempotencyKey];
    const id = opts.id ?? (user !== undefined && clientKey !== undefined ? keyedCreateId(prefix, opts.via, writeKey(user, clientKey)) : newIdFor(prefix));
    return this.send({ op: 'create', type, id, fields: wire(fields) }, opts);
  }

  update(id: string, fields: Record<string, unknown>, opts: WriteRequest): Promise<StoredObject> {
    return this.send({ op: 'update', id, fields: wire(fields) }, opts);
  }

  replace(id: string, fields: Record<string, unknown>, opts: WriteRequest): Promise<StoredObject> {
    return this.send({ op: 'replace', id, fields: wire(fields) }, opts);
  }

  delete(id: string, opts: WriteRequest): Promise<StoredObject> {
    return this.send({ op: 'delete', id }, opts);
  }

  undelete(id: string, opts: WriteRequest): Promise<StoredObject> {
    return this.send({ op: 'undelete', id }, opts);
  }

  /**
   * Resolves once no write is in flight, or after `ms`: a stopping replica
   * keeps its link to the master while its writes get their answers and
   * their changes come back.
   */
  settle(ms: number): Promise<void> {
    if (this.inFlight === 0) return Promise.resolve();
    return new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        this.drained.delete(done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.drained.add(done);
    });
  }

  /** Answers every write still waiting for its change to come back: the replica stops, and it will not come. */
  close(): void {
    this.closed = true;
    for (const stop of [...this.stops]) stop();
  }

  private async send(w: Pick<WriteFrame, 'op' | 'id' | 'type' | 'fields'>, opts: WriteRequest): Promise<StoredObject> {
    this.inFlight++;
    try {
      return await this.sendOnce(w, opts);
    } finally {
      if (--this.inFlight === 0) for (const done of [...this.drained]) done();
    }
  }

  private async sendOnce(w: Pick<WriteFrame, 'op' | 'id' | 'type' | 'fields'>, opts: WriteRequest): Promise<StoredObject> {
    if (!opts.credential) throw new HttpError(401, 'a write on a replica needs the credential of the user making it; the master checks it', 'unauthorized');
    const deadline = performance.now() + this.timeout;
    const clientKey = opts.idempotencyKey ?? randomUUID();
    const key = writeKey(signedIn(opts)!, clientKey);
    const frame: Omit<WriteFrame, 't'> = { key, ...w, user: opts.credential.user, password: opts.credential.password };
    if (opts.ifVersion !== undefined) frame.ifVersion = opts.ifVersion;
    if (opts.via !== undefined) frame.via = opts.via;
    try {
      checkWriteFrame(frame);
    } catch (e) {
      if (!(e instanceof FrameError)) throw e;
      throw new MeridianError('bad-request', `this replica cannot send the write to its master: ${e.message}`);
    }
    let answer: WroteFrame;
    try {
      answer = await this.replicator.forward(frame, this.timeout, clientKey);
    } catch (e) {
      if (!(e instanceof ForwardError)) throw e;
      if (e.code === 'read-only') throw new HttpError(503, e.message, 'read-only', { 'retry-after': String(RETRY_AFTER_SECONDS) });
      if (e.code === 'busy') throw new MeridianError('busy', e.message);
      throw new HttpError(504, e.message, 'unconfirmed');
    }
    if (!answer.ok) throw refusal(answer);
    await this.visible(answer.need, deadline, answer.id);
    const o = await this.store.get(answer.id);
    if (!o) throw new HttpError(504, `the master wrote ${answer.id}, but this replica does not hold it yet; read it again shortly`, 'not-yet-visible');
    return o;
  }

  /**
   * Resolves once everything `need` names is on disk here, and so seen by
   * every read: by id, through an index (a lookup, a sign-in by the mail
   * just written, a list) and in the LDAP directory, whose refresh is
   * queued before this resolves (subscribers are told in the order they
   * subscribed). Visible by id alone, a client's next search for the
   * value it just wrote found nothing for one fsync of this replica.
   */
  private visible(need: Record<string, number>, deadline: number, id: string): Promise<void> {
    if (this.store.covers(need, true)) return Promise.resolve();
    const stoppedError = (): HttpError => new HttpError(504, `the master committed the write to ${id}, but this replica stopped before the change came back; read it from the master, or here once the replica runs again`, 'not-yet-visible');
    // (answered by the master while the replica stops: nothing more is applied here)
    if (this.closed) return Promise.reject(stoppedError());
    return new Promise((resolve, reject) => {
      const done = (): void => {
        clearTimeout(timer);
        unsubscribe();
        this.stops.delete(stopped);
      };
      const stopped = (): void => {
        done();
        reject(stoppedError());
      };
      this.stops.add(stopped);
      const check = (): void => {
        if (!this.store.covers(need, true)) return;
        done();
        resolve();
      };
      // (a change from the feed is told to subscribers once on disk; a clone's or repair's states raise the vector and tell onVisible)
      const offs = [this.store.subscribe(check), this.store.onVisible(check)];
      const unsubscribe = (): void => {
        for (const off of offs) off();
      };
      const timer = setTimeout(() => {
        done();
        reject(
          new HttpError(
            504,
            `the master committed the write to ${id}, but the change has not come back to this replica within ${Math.round(this.timeout / 1000)} s; it will appear here once the replica catches up`,
            'not-yet-visible',
          ),
        );
      }, Math.max(0, deadline - performance.now()));
    });
  }
}

function refusal(a: Extract<WroteFrame, { ok: false }>): Error {
  if (a.code === 'validation') return new ValidationError({ field: a.field, rule: 'master', message: a.message });
  if (STORE_CODES.has(a.code)) return new MeridianError(a.code as ErrorCode, a.message);
  if (a.code === 'unauthorized') return new HttpError(401, a.message, 'unauthorized');
  if (a.code === 'read-only') return new HttpError(503, a.message, 'read-only', { 'retry-after': String(RETRY_AFTER_SECONDS) });
  return new HttpError(502, `the master could not make the write: ${a.message}`, 'master-error');
}

/**
 * The id of an object created through a replica under a client's key: the
 * type's prefix and 60 bits of a digest of the gateway and the write's key
 * (itself one per user), so every try of the create names one object, on
 * any master and through any replica (per gateway, as the same key on the
 * admin API and in XML is two writes).
 */
function keyedCreateId(prefix: string, via: string | undefined, key: string): string {
  return idFromDigest(prefix, createHash('sha256').update(`id\0${via ?? ''}\0`).update(key).digest());
}

/**
 * Who a write is by, for its key: the person the gateway signed in (the same
 * whichever login field was typed), else the login given.
 */
function signedIn(opts: WriteRequest): string | undefined {
  return opts.principal ?? opts.credential?.user;
}

/** A write's key on the wire: one per user, so two users' equal keys are two writes, here and on the master. */
function writeKey(user: string, clientKey: string): string {
  return createHash('sha256').update(user).update('\0').update(clientKey).digest('base64url');
}

type WireFields = NonNullable<WriteFrame['fields']>;

/** Field values as the admin API checked them (scalars, lists of scalars, null). */
function wire(fields: Record<string, unknown>): WireFields {
  return fields as WireFields;
}


