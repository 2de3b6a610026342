import { randomBytes, timingSafeEqual } from 'node:crypto';
import { MeridianError, REPLICA_ID_PREFIX, REPLICA_TYPE, type Store, type StoredObject } from '@meridian/store';
import { formatReplicaCredential, replicaKey } from '@meridian/sync';

export interface ReplicaEntry {
  name: string;
  serial: string;
  issuedBy: string | null;
  issued: string;
}

/**
 * A master's view of the replica credentials. The registry is kept as
 * objects of the built-in MeridianReplica type, so it replicates to every
 * master like any data; this class mirrors the live ones in memory, for the
 * synchronous check at each replica's hello, and tells the replicator to
 * close the sessions of credentials that were revoked or re-issued.
 */
export class ReplicaRegistry {
  private readonly serials = new Map<string, string>();
  private readonly unsubscribe: (() => void)[] = [];

  private constructor(
    private readonly store: Store,
    private readonly secret: string,
    private readonly cluster: string,
  ) {}

  static async open(store: Store, secret: string, cluster: string, onChange: () => void): Promise<ReplicaRegistry> {
    const r = new ReplicaRegistry(store, secret, cluster);
    const reread = (ids: string[]): void => {
      if (ids.length === 0) return;
      void Promise.all(ids.map((id) => store.get(id).then((o) => r.track(id, o)))).then(onChange, () => undefined);
    };
    r.unsubscribe.push(store.subscribe((entries) => reread(entries.filter((e) => e.type === REPLICA_TYPE).map((e) => e.id))));
    // credentials that arrive without a feed entry: a master cloned, or brought in line by anti-entropy,
    // must know the replicas issued before it joined, and the revocations it received that way
    r.unsubscribe.push(store.onStates((ids) => reread(ids.filter((id) => id.startsWith(REPLICA_ID_PREFIX)))));
    let after: string | undefined;
    do {
      const page = await store.list(REPLICA_TYPE, { limit: 1000, after });
      for (const o of page.items) r.track(o.id, o);
      after = page.next;
    } while (after);
    return r;
  }

  private track(id: string, o: StoredObject | undefined): void {
    const name = id.slice(REPLICA_ID_PREFIX.length);
    // (an id is one object's whatever its type: another type's object there means no credential of that name)
    if (!o || o.deleted || o.type !== REPLICA_TYPE) this.serials.delete(name);
    else this.serials.set(name, String(o.fields['serial']));
  }

  /** For the sync session: the key to prove for a credential id, or why it is refused. */
  keyFor(credential: string | undefined): { key: string } | { refused: string } {
    if (credential === undefined) return { refused: 'a replica must present its credential (from "meridian replica add" on a master)' };
    const [name, serial] = credential.split(':') as [string, string];
    const current = this.serials.get(name);
    // One sentence whether the name was ever issued or not: a caller with no credential must not learn
    // which names have live ones (serials are compared in constant time too, before any proof)
    const live = current !== undefined && current.length === serial?.length && timingSafeEqual(Buffer.from(current), Buffer.from(serial));
    if (!live) return { refused: `replica credential "${name}" is unknown, re-issued or revoked here; use the newest from "meridian replica add ${name}"` };
    return { key: replicaKey(this.secret, this.cluster, name, serial) };
  }

  /** Issues (or re-issues, invalidating the old) the credential for `name`; returns it in full. */
  async issue(name: string, by: string): Promise<string> {
    // (named by id, so issuing on two masters at once still yields one object)
    const id = `${REPLICA_ID_PREFIX}${name}`;
    const serial = randomBytes(8).toString('hex');
    const existing = await this.store.get(id);
    // (an object of another type under that id, made before such ids were kept for credentials, is left alone)
    if (existing && existing.type !== REPLICA_TYPE) throw new MeridianError('exists', `the id ${id} is held by ${existing.type} ${id}, not a replica credential; give the replica another name`);
    if (!existing) await this.store.create(REPLICA_TYPE, { name, serial, issuedBy: by }, { id, principal: by });
    else {
      if (existing.deleted) await this.store.undelete(id, { principal: by });
      await this.store.update(id, { serial, issuedBy: by }, { principal: by });
    }
    this.serials.set(name, serial);
    return formatReplicaCredential({ name, serial, key: replicaKey(this.secret, this.cluster, name, serial) });
  }

  async revoke(name: string, by: string): Promise<void> {
    const o = await this.store.get(`${REPLICA_ID_PREFIX}${name}`);
    if (!o || o.deleted) throw new MeridianError('not-found', `no replica credential "${name}"; "meridian replica list" shows those issued`);
    // the serial is overwritten first with one never handed out, so an undelete (a later re-issue) cannot bring the old one back
    await this.store.update(o.id, { serial: randomBytes(8).toString('hex') }, { principal: by });
    await this.store.delete(o.id, { principal: by });
    this.serials.delete(name);
  }

  async list(): Promise<ReplicaEntry[]> {
    const out: ReplicaEntry[] = [];
    let after: string | undefined;
    do {
      const page = await this.store.list(REPLICA_TYPE, { limit: 1000, after });
      for (const o of page.items) {
        out.push({ name: String(o.fields['name']), serial: String(o.fields['serial']), issuedBy: o.fields['issuedBy'] === undefined ? null : String(o.fields['issuedBy']), issued: o.modified });
      }
      after = page.next;
    } while (after);
    return out;
  }

  close(): void {
    for (const stop of this.unsubscribe.splice(0)) stop();
  }
}

export function checkReplicaName(name: unknown): string {
  if (typeof name !== 'string' || !/^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$/.test(name)) {
    throw new MeridianError('bad-request', 'a replica name is 1-100 letters, digits, ".", "_" or "-", starting with a letter or digit, such as laptop-17');
  }
  return name;
}
