import { createHash } from 'node:crypto';
import type { FieldValue, Store, StoredObject } from '@meridian/store';
import { attrKey, fold, type AttrSource } from './filter.js';
import { ENTITLEMENT_ATTR, ID_ATTR, type DirectoryLayout, type MappedType } from './layout.js';
import { SUBSCHEMA_DN } from './subschema.js';

export interface EntryAttribute {
  /** as shown to clients */
  readonly name: string;
  readonly values: readonly string[];
  /** returned only when asked for by name or with `+` */
  readonly operational: boolean;
}

export interface Entry {
  readonly dn: string;
  readonly attrs: ReadonlyMap<string, EntryAttribute>;
}

/** GeneralizedTime (RFC 4517) of an ISO time, to the second, as OpenLDAP writes it. */
export function generalizedTime(iso: string): string {
  return iso.replace(/[-:T]/g, '').replace(/\.\d+Z$/, 'Z');
}

/** A stable UUID per object id, so entryUUID is the same on every node without being stored. */
export function entryUuid(id: string): string {
  const h = createHash('sha1').update(`meridian:${id}`).digest('hex');
  const variant = ((parseInt(h[16]!, 16) & 0x3) | 0x8).toString(16);
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-5${h.slice(13, 16)}-${variant}${h.slice(17, 20)}-${h.slice(20, 32)}`;
}

function text(v: FieldValue): string[] {
  const one = (x: string | number | boolean): string => (typeof x === 'boolean' ? (x ? 'TRUE' : 'FALSE') : String(x));
  return Array.isArray(v) ? v.map(one) : [one(v)];
}

class AttrsBuilder {
  readonly map = new Map<string, EntryAttribute>();
  add(name: string, values: readonly string[], operational = false, key = attrKey(name)): void {
    const clean = values.includes('') ? values.filter((v) => v !== '') : values;
    if (clean.length > 0) this.map.set(key, { name, values: clean, operational });
  }
}

/** Folded values of an entry, worked out once per attribute when a filter reads them. */
export function entrySource(e: Entry): AttrSource {
  const folded = new Map<string, readonly string[]>();
  return {
    values(attr) {
      let v = folded.get(attr);
      if (v === undefined) {
        const a = e.attrs.get(attr);
        if (!a) return undefined;
        v = a.values.map((x) => fold(attr, x));
        folded.set(attr, v);
      }
      return v;
    },
  };
}

/**
 * Builds entries from objects: the schema's field-to-attribute mapping, a
 * reference shown as the referenced object's value of the same attribute
 * (a person's `o` is its organisation's name), entitlements, and the
 * operational attributes. Built entries are remembered until the store says
 * the object, or anything an entry shows of another object, changed.
 */
interface Cached {
  readonly entry: Entry;
  readonly object: StoredObject;
  /** hit since it was built or last given a second chance */
  used: boolean;
  /** its place in the clock */
  slot: number;
}

export class EntryBuilder {
  /** built entries by object id, with the object each was built from */
  private readonly cache = new Map<string, Cached>();
  /**
   * The same entries in a clock: a fixed ring the eviction hand sweeps. A
   * Map used as a queue instead (evict its first key, re-insert a used one)
   * is quadratic in V8: a deleted key stays a hole the next iteration walks
   * past from the start, and that walk was 9% of an equality search's CPU
   * once the cache was full.
   */
  private readonly ring: (Cached | undefined)[] = [];
  private hand = 0;
  /** the base and container entries: fixed by the layout, so built once */
  private fixed: Entry | undefined;
  private readonly containers = new Map<MappedType, Entry>();
  private readonly entitlements = new Map<string, Promise<string[]>>();
  /** what references show, by attribute and referenced id */
  private readonly shownValues = new Map<string, readonly string[]>();

  constructor(
    private readonly layout: DirectoryLayout,
    private readonly store: Store,
    /** how many built entries are kept */
    private readonly capacity = 50_000,
  ) {}

  /** change reports so far (the store's, and midnight's): an entry built across one that concerns it is not cached */
  private reports = 0;
  /** the report that last forgot every entry */
  private clearedAt = 0;
  /** ids whose entries are being built now: how many builds of each, and the report that last changed it (0: none since) */
  private readonly building = new Map<string, { builds: number; changedAt: number }>();

  /** Forgets what a change to these objects makes stale. */
  changed(types: ReadonlySet<string>, ids: Iterable<string>): void {
    this.reports++;
    if ([...types].some((t) => this.shown.has(t))) return this.clear();
    for (const id of ids) {
      this.forget(id);
      const b = this.building.get(id);
      if (b) b.changedAt = this.reports;
    }
  }

  private forget(id: string): void {
    const c = this.cache.get(id);
    if (!c) return;
    this.cache.delete(id);
    this.ring[c.slot] = undefined;
  }

  private clear(): void {
    this.cache.clear();
    this.ring.length = 0;
    this.hand = 0;
    this.entitlements.clear();
    this.shownValues.clear();
    this.clearedAt = this.reports;
  }

  /**
   * Types whose objects show in other objects' entries: what mapped
   * references point to (a person's o is its organisation's name), and
   * licenses, releases and products (entitlements).
   */
  private get shown(): ReadonlySet<string> {
    if (!this.shownTypes) {
      const out = new Set<string>(this.hasLicenses() ? ['License', 'Release', 'Product'] : []);
      for (const t of this.layout.types.values()) for (const { field } of t.fields.values()) if (field.kind === 'ref' && field.to) out.add(field.to);
      this.shownTypes = out;
    }
    return this.shownTypes;
  }

  private shownTypes: ReadonlySet<string> | undefined;
  /** when the day the cached entries were built on ends (ms) */
  private dayEnds = 0;
  /** that day (UTC), as license dates are written */
  private today = '';

  /** Forgets entries built before today (UTC): entitlements are today's, as license dates are compared. */
  private expire(): void {
    const now = Date.now();
    if (now < this.dayEnds) return;
    this.reports++;
    this.clear();
    this.dayEnds = (Math.floor(now / 86_400_000) + 1) * 86_400_000;
    this.today = new Date(now).toISOString().slice(0, 10);
  }

  /**
   * The entry of a live object of the type, and the object it was built
   * from. A cached entry answers without reading the store (the read was a
   * fifth of an equality search's CPU): it stays cached until a change to
   * it, or to anything it shows, is reported, and the store reports a change
   * before it acknowledges the write. An entry whose build a report of such
   * a change overtook (the store read, then the referenced objects, are
   * awaited) is returned but not cached: it may show the object as it was.
   */
  async entry(t: MappedType, id: string): Promise<{ entry: Entry; object: StoredObject } | undefined> {
    this.expire();
    const known = this.cache.get(id);
    if (known) {
      known.used = true;
      return known;
    }
    const since = this.reports;
    let b = this.building.get(id);
    if (!b) this.building.set(id, (b = { builds: 0, changedAt: 0 }));
    b.builds++;
    try {
      const object = await this.store.getUncached(id);
      if (!object || object.deleted || object.type !== t.def.name) return undefined;
      const built: Cached = { entry: await this.build(t, object), object, used: false, slot: -1 };
      if (this.clearedAt <= since && b.changedAt <= since) this.remember(built);
      return built;
    } finally {
      // (so the map holds only the builds in flight)
      if (--b.builds === 0) this.building.delete(id);
    }
  }

  private async build(t: MappedType, o: StoredObject): Promise<Entry> {
    const org = this.organisationOf(t, o);
    // read alongside the referenced objects, not after them
    const entitled = org !== undefined && this.hasLicenses() ? this.entitlementsOf(org) : undefined;
    const a = new AttrsBuilder();
    a.add('objectClass', t.objectClasses);
    a.add(ID_ATTR, [o.id]);
    for (const [field, { name, key, field: def }] of t.fields) {
      const v = o.fields[field];
      if (v === undefined || def.kind === 'password') continue;
      if (def.kind === 'ref') {
        a.add(name, await this.refValues(name, v), false, key);
        continue;
      }
      if (!a.map.has(key)) a.add(name, text(v), false, key);
    }
    if (entitled) a.add(ENTITLEMENT_ATTR, await entitled);
    const dn = this.layout.dnOf(t, o.id);
    a.add('entryUUID', [entryUuid(o.id)], true);
    a.add('entryDN', [dn], true);
    a.add('createTimestamp', [generalizedTime(o.created)], true);
    a.add('modifyTimestamp', [generalizedTime(o.modified)], true);
    a.add('structuralObjectClass', [t.structuralClass], true);
    a.add('hasSubordinates', ['FALSE'], true);
    a.add('subschemaSubentry', [SUBSCHEMA_DN], true);
    return { dn, attrs: a.map };
  }

  /**
   * Second chance: the hand passes over an entry used since it last came
   * round, unmarking it, and takes the first one that was not (or a slot a
   * change emptied). A hit only sets a flag; moving every hit to the end of
   * a list was 13% of a substring search's CPU.
   */
  private remember(c: Cached): void {
    this.forget(c.object.id);
    if (this.ring.length < this.capacity) {
      c.slot = this.ring.push(c) - 1;
    } else {
      for (;;) {
        const old = this.ring[this.hand];
        if (!old) break;
        if (!old.used) {
          this.cache.delete(old.object.id);
          break;
        }
        old.used = false;
        this.hand = (this.hand + 1) % this.ring.length;
      }
      c.slot = this.hand;
      this.ring[this.hand] = c;
      this.hand = (this.hand + 1) % this.ring.length;
    }
    this.cache.set(c.object.id, c);
  }

  base(): Entry {
    this.fixed ??= this.buildBase();
    return this.fixed;
  }

  container(t: MappedType): Entry {
    let e = this.containers.get(t);
    if (!e) {
      e = this.buildContainer(t);
      this.containers.set(t, e);
    }
    return e;
  }

  private buildBase(): Entry {
    const b = this.layout.baseEntry();
    const a = new AttrsBuilder();
    a.add('objectClass', b.objectClasses);
    for (const [k, v] of Object.entries(b.attrs)) a.add(k, v);
    a.add('entryDN', [this.layout.base], true);
    a.add('structuralObjectClass', [b.objectClasses[b.objectClasses.length - 1]!], true);
    a.add('hasSubordinates', ['TRUE'], true);
    a.add('subschemaSubentry', [SUBSCHEMA_DN], true);
    return { dn: this.layout.base, attrs: a.map };
  }

  private buildContainer(t: MappedType): Entry {
    const a = new AttrsBuilder();
    const dn = this.layout.containerDn(t);
    a.add('objectClass', ['top', 'organizationalUnit']);
    a.add('ou', [t.container]);
    a.add('description', [`${t.def.name} objects of Meridian${t.def.description ? `: ${t.def.description}` : ''}`]);
    a.add('entryDN', [dn], true);
    a.add('structuralObjectClass', ['organizationalUnit'], true);
    a.add('hasSubordinates', ['TRUE'], true);
    a.add('subschemaSubentry', [SUBSCHEMA_DN], true);
    return { dn, attrs: a.map };
  }

  /**
   * Referenced objects as the attribute shows them. Remembered like the
   * entries (a change to a referenced type forgets both): a person's entry
   * that missed the cache read its organisation from the store as well.
   */
  private async refValues(attr: string, v: FieldValue): Promise<string[]> {
    const out: string[] = [];
    for (const id of text(v)) {
      const key = `${attr}\0${id}`;
      let shown = this.shownValues.get(key);
      if (!shown) {
        const since = this.reports;
        shown = await this.showRef(attr, id);
        if (this.clearedAt <= since) {
          if (this.shownValues.size >= this.capacity) this.shownValues.clear();
          this.shownValues.set(key, shown);
        }
      }
      out.push(...shown);
    }
    return out;
  }

  /** A referenced object as the attribute shows it: its own value of that attribute, else its id; nothing once it is gone. */
  private async showRef(attr: string, id: string): Promise<readonly string[]> {
    const target = await this.store.get(id);
    if (!target || target.deleted) return [];
    const tt = this.layout.mappedType(target.type);
    const field = tt?.attributes.get(attrKey(attr));
    const shown = field && field.field.kind !== 'ref' ? target.fields[field.field.name] : undefined;
    return shown !== undefined ? text(shown) : [id];
  }

  /** The organisation whose licenses an entry shows: itself, or what a person belongs to. */
  private organisationOf(t: MappedType, o: StoredObject): string | undefined {
    const access = this.layout.schema.access;
    if (!access) return undefined;
    if (t.def.name === access.organisationType) return o.id;
    if (t.def.name !== access.principalType) return undefined;
    const org = o.fields[access.organisationField];
    return typeof org === 'string' ? org : undefined;
  }

  /** whether the schema has licenses of releases of products to show as entitlements (it never changes under a builder) */
  private hasLicenses(): boolean {
    if (this.licensed === undefined) {
      const types = this.layout.schema.types;
      this.licensed = types.get('License')?.fields.get('customer')?.kind === 'ref' && types.has('Release') && types.has('Product');
    }
    return this.licensed;
  }

  private licensed: boolean | undefined;

  /** The names of the products an organisation holds a license for today. */
  private entitlementsOf(org: string): Promise<string[]> {
    // expire() forgets them when the day ends: a license that starts or ends today shows from today
    let p = this.entitlements.get(org);
    if (!p) {
      if (this.entitlements.size >= this.capacity) this.entitlements.clear();
      p = this.computeEntitlements(org, this.today);
      this.entitlements.set(org, p);
      p.catch(() => this.entitlements.get(org) === p && this.entitlements.delete(org));
    }
    return p;
  }

  private async computeEntitlements(org: string, today: string): Promise<string[]> {
    const products = new Set<string>();
    let after: string | undefined;
    do {
      const page = await this.store.lookup('License', 'customer', org, { limit: 500, after });
      for (const lic of page.items) {
        const from = lic.fields['validFrom'];
        const until = lic.fields['validUntil'];
        if (typeof from === 'string' && from > today) continue;
        if (typeof until === 'string' && until < today) continue;
        const release = typeof lic.fields['release'] === 'string' ? await this.store.get(lic.fields['release']) : undefined;
        const product = release && !release.deleted && typeof release.fields['product'] === 'string' ? await this.store.get(release.fields['product']) : undefined;
        const name = product && !product.deleted ? product.fields['name'] : undefined;
        if (typeof name === 'string') products.add(name);
      }
      after = page.next;
    } while (after);
    return [...products].sort();
  }
}
