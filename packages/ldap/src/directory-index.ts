import type { Store, StoredObject } from '@meridian/store';
import { attrKey, fold, type AttrSource, type Filter } from './filter.js';
import { ENTITLEMENT_ATTR, ENTRY_OPERATIONAL, ID_ATTR, type DirectoryLayout, type MappedType } from './layout.js';

const ID_KEY = ID_ATTR.toLowerCase();

/** Sorted, duplicate-free lists of slot numbers. */
type Slots = number[];

/** The slots that may match: the union, over its items, of the intersection of each item's lists. */
type Plan = Slots[][];

/** The position of the first slot at or above `slot`. */
function lowerBound(list: Slots, slot: number): number {
  let lo = 0;
  let hi = list.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (list[mid]! < slot) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

function insertSorted(list: Slots, slot: number): void {
  if (list.length === 0 || list[list.length - 1]! < slot) {
    list.push(slot);
    return;
  }
  const at = lowerBound(list, slot);
  if (list[at] !== slot) list.splice(at, 0, slot);
}

function removeSorted(list: Slots, slot: number): void {
  const at = lowerBound(list, slot);
  if (list[at] === slot) list.splice(at, 1);
}

function intersect(a: Slots, b: Slots): Slots {
  const out: Slots = [];
  let i = 0;
  let j = 0;
  while (i < a.length && j < b.length) {
    const x = a[i]!;
    const y = b[j]!;
    if (x === y) {
      out.push(x);
      i++;
      j++;
    } else if (x < y) i++;
    else j++;
  }
  return out;
}

function union(lists: Slots[]): Slots {
  if (lists.length === 0) return [];
  if (lists.length === 1) return lists[0]!;
  const all: number[] = [];
  for (const l of lists) for (const x of l) all.push(x);
  all.sort((a, b) => a - b);
  const out: Slots = [];
  for (const x of all) if (out.length === 0 || out[out.length - 1] !== x) out.push(x);
  return out;
}

/**
 * The smallest slot at or above `from` held by every list (leapfrogging
 * with binary searches): a search that stops at its size limit pays for
 * the slots it reaches, not for whole intersections of long lists.
 */
function firstCommon(lists: readonly Slots[], from: number): number {
  let v = from;
  for (let agree = 0, k = 0; agree < lists.length; k = (k + 1) % lists.length) {
    const l = lists[k]!;
    const i = lowerBound(l, v);
    if (i >= l.length) return Infinity;
    if (l[i] === v) agree++;
    else {
      v = l[i]!;
      agree = 1;
    }
  }
  return v;
}

/**
 * Most slots one search's plan reads to work `or`s inside an `and` out in
 * full (materialize), which runs at once, before the first candidate and
 * out of reach of the time limit. Past it, such an `or` narrows nothing and
 * is checked per candidate, as a `not` is: two `or`s of 125 substrings
 * matching 100,000 entries each held the event loop 3 s per search.
 */
const MATERIALIZE_BUDGET = 200_000;

/** Every slot of a plan, worked out in full (for an `and` of plans). */
function materialize(plan: Plan): Slots {
  return union(plan.map((lists) => lists.slice(1).reduce(intersect, lists[0]!)));
}

/** Pairs of characters: every substring of two or more characters contains at least one. */
function bigrams(value: string): Set<string> {
  const out = new Set<string>();
  for (let i = 0; i + 2 <= value.length; i++) out.add(value.slice(i, i + 2));
  return out;
}

/** One attribute's in-memory index: folded values per slot, equality and two-character postings. */
class AttrIndex {
  readonly values: (readonly string[] | undefined)[] = [];
  private readonly eq = new Map<string, Slots>();
  private readonly grams = new Map<string, Slots>();

  constructor(readonly key: string) {}

  set(slot: number, folded: readonly string[] | undefined): void {
    const old = this.values[slot];
    if (old) {
      for (const v of old) this.unpost(this.eq, v, slot);
      for (const g of bigrams(old.join('\u0000'))) this.unpost(this.grams, g, slot);
    }
    this.values[slot] = folded;
    if (!folded) return;
    for (const v of folded) this.post(this.eq, v, slot);
    // values are joined with a character no folded value holds, so no pair spans two values
    for (const g of bigrams(folded.join('\u0000'))) if (!g.includes('\u0000')) this.post(this.grams, g, slot);
  }

  private post(map: Map<string, Slots>, key: string, slot: number): void {
    const list = map.get(key);
    if (list) insertSorted(list, slot);
    else map.set(key, [slot]);
  }

  private unpost(map: Map<string, Slots>, key: string, slot: number): void {
    const list = map.get(key);
    if (!list) return;
    removeSorted(list, slot);
    if (list.length === 0) map.delete(key);
  }

  equal(v: string): Slots {
    return this.eq.get(v) ?? [];
  }

  /**
   * The lists whose intersection holds the slots that may hold the
   * substring: the postings of every pair of its longest literal part,
   * shortest first (the caller checks each slot). Undefined when no part
   * is two characters long: then every slot may.
   */
  substring(f: { initial: string | undefined; any: readonly string[]; final: string | undefined }): Slots[] | undefined {
    const parts = [f.initial, ...f.any, f.final].filter((p): p is string => p !== undefined);
    const longest = parts.reduce((a, b) => (b.length > a.length ? b : a), '');
    if (longest.length < 2) return undefined;
    return [...bigrams(longest)].map((g) => this.grams.get(g) ?? []).sort((a, b) => a.length - b.length);
  }
}

/**
 * The directory's search index, in memory: slot numbers for the entries of
 * every mapped type, and for the attributes of indexed schema fields their
 * folded values, equality postings and two-character postings, so that a
 * Thunderbird substring search over cn, mail, givenName and sn is answered
 * from postings, not by reading every entry. It is built from the store at
 * start and kept current from the changes feed.
 */
export class DirectoryIndex {
  private readonly ids: string[] = [];
  private readonly typeOf: (MappedType | undefined)[] = [];
  private readonly slotOf = new Map<string, number>();
  /**
   * By the id in lower case, every slot ever given one: meridianId matches
   * case-insensitively like every other attribute, and ids that differ
   * only in case (which the store allows) are separate objects.
   */
  private readonly slotsOfFolded = new Map<string, Slots>();
  /** attribute key -> index; only for the types in `indexedBy` */
  private readonly attrs = new Map<string, AttrIndex>();
  /** type name -> attribute keys indexed for it -> the field */
  private readonly indexedBy = new Map<string, Map<string, string>>();
  private readonly typeSlots = new Map<string, Slots>();
  private pending: Promise<void> = Promise.resolve();
  private readonly stop: (() => void)[] = [];
  readonly ready: Promise<void>;
  /** whether the first build is done (ready has settled) */
  built = false;

  constructor(
    private readonly layout: DirectoryLayout,
    private readonly store: Store,
    /** told of every refreshed object, so caches of built entries can forget it */
    private readonly onChange: (types: ReadonlySet<string>, ids: string[]) => void = () => {},
    /** told when building or refreshing the index failed (the store closing under it, a failing disk) */
    private readonly onError: (e: unknown) => void = () => {},
  ) {
    for (const t of layout.types.values()) {
      const keys = new Map<string, string>();
      for (const [field, { name, field: def }] of t.fields) {
        if ((def.indexed || def.unique) && def.kind !== 'ref' && def.kind !== 'password') {
          const key = attrKey(name);
          keys.set(key, field);
          if (!this.attrs.has(key)) this.attrs.set(key, new AttrIndex(key));
        }
      }
      this.indexedBy.set(t.def.name, keys);
      this.typeSlots.set(t.def.name, []);
    }
    // subscribe before the scan, so no change falls between them
    this.stop.push(store.subscribe((entries) => this.refresh(entries.map((e) => ({ id: e.id, type: e.type })))));
    this.stop.push(store.onStates((ids) => this.refresh(ids.map((id) => ({ id, type: undefined })))));
    this.ready = this.build().finally(() => void (this.built = true));
    // searches await it and answer with the failure; nothing else may leave it unhandled
    this.ready.catch((e: unknown) => this.report(e));
  }

  close(): void {
    this.closed = true;
    for (const s of this.stop) s();
  }

  private closed = false;

  /** A read that fails once the index is closed is the store closing under it (a node that failed to start, or stops): no news. */
  private report(e: unknown): void {
    if (!this.closed) this.onError(e);
  }

  private async build(): Promise<void> {
    for (const t of this.layout.types.values()) {
      let after: string | undefined;
      do {
        const page = await this.store.list(t.def.name, { limit: 1000, after });
        for (const o of page.items) this.put(o);
        after = page.next;
      } while (after);
    }
  }

  /** Waits for the changes already reported to be in the index: a search after a write sees it. */
  settled(): Promise<void> {
    return this.pending;
  }

  private refresh(changes: { id: string; type: string | undefined }[]): void {
    const types = new Set<string>();
    const ids: string[] = [];
    for (const c of changes) {
      if (c.type !== undefined) types.add(c.type);
      ids.push(c.id);
    }
    this.onChange(types, ids);
    const wanted = changes.filter((c) => c.type === undefined || this.layout.types.has(c.type));
    if (wanted.length === 0) return;
    const run = async (): Promise<void> => {
      await this.ready;
      const objects = await Promise.all(wanted.map((c) => this.store.get(c.id)));
      // (no object: it was purged, and leaves as a deleted one does)
      for (const [i, o] of objects.entries()) if (o) this.put(o);
      else this.drop(wanted[i]!.id);
      // a clone reports ids only: tell about their types now they are known
      if (changes.some((c) => c.type === undefined)) this.onChange(new Set(objects.flatMap((o) => (o ? [o.type] : []))), []);
    };
    // a failed refresh is reported, and the next one runs anyway: the chain never stays rejected
    this.pending = this.pending.then(run).catch((e: unknown) => this.report(e));
  }

  private drop(id: string): void {
    const slot = this.slotOf.get(id);
    const was = slot === undefined ? undefined : this.typeOf[slot];
    if (slot === undefined || !was) return;
    removeSorted(this.typeSlots.get(was.def.name)!, slot);
    this.typeOf[slot] = undefined;
    for (const idx of this.attrs.values()) idx.set(slot, undefined);
  }

  private put(o: StoredObject): void {
    const t = this.layout.mappedType(o.type);
    let slot = this.slotOf.get(o.id);
    if (!t) return;
    const live = !o.deleted;
    if (slot === undefined) {
      if (!live) return;
      slot = this.ids.length;
      this.ids.push(o.id);
      this.slotOf.set(o.id, slot);
      const folded = this.slotsOfFolded.get(o.id.toLowerCase());
      if (folded) folded.push(slot);
      else this.slotsOfFolded.set(o.id.toLowerCase(), [slot]);
    }
    const was = this.typeOf[slot];
    if (was && (was !== t || !live)) removeSorted(this.typeSlots.get(was.def.name)!, slot);
    this.typeOf[slot] = live ? t : undefined;
    if (live) insertSorted(this.typeSlots.get(t.def.name)!, slot);
    const mine = this.indexedBy.get(t.def.name)!;
    for (const [key, idx] of this.attrs) {
      const field = live ? mine.get(key) : undefined;
      const v = field !== undefined ? o.fields[field] : undefined;
      const list = v === undefined ? undefined : (Array.isArray(v) ? v : [v]).map((x) => fold(key, String(x)));
      idx.set(slot, list && list.length > 0 ? list : undefined);
    }
  }

  idOf(slot: number): string {
    return this.ids[slot]!;
  }

  /**
   * The id of the live object of type `t` that an entry DN naming `id`
   * means: `id` itself if it is one, else the one whose id is `id` in
   * another case (meridianId matches case-insensitively), if there is only
   * one such; of several, none (the DN must then give the id's own case).
   */
  idInAnyCase(t: MappedType, id: string): string | undefined {
    const exact = this.slotOf.get(id);
    if (exact !== undefined && this.typeOf[exact] === t) return id;
    const live = (this.slotsOfFolded.get(id.toLowerCase()) ?? []).filter((slot) => this.typeOf[slot] === t);
    return live.length === 1 ? this.ids[live[0]!] : undefined;
  }

  /**
   * The slots of a type that may match, in slot order, after `after`: from
   * the postings when the filter allows, else every live slot of the type.
   * Lazy: a search that stops at its size limit reads only a prefix of the
   * postings (merging whole lists of a two-letter fragment for every search
   * was most of a Thunderbird search's time at 100,000 persons).
   */
  *candidates(f: Filter, t: MappedType, after = -1): Generator<number> {
    const plan = this.plan(f, t, { left: MATERIALIZE_BUDGET }) ?? [[this.typeSlots.get(t.def.name)!]];
    // The lists are live: a change between two steps (the search waits for
    // its client) inserts or removes slots. So each item's next slot is
    // remembered by value, never by position, and looked up again from the
    // last slot yielded once that one is used; a slot removed meanwhile is
    // yielded at most once more, and the caller's check drops it.
    const next = plan.map(() => -Infinity);
    let last = after;
    for (;;) {
      let min = Infinity;
      for (let k = 0; k < plan.length; k++) {
        if (next[k]! <= last) next[k] = firstCommon(plan[k]!, last + 1);
        if (next[k]! < min) min = next[k]!;
      }
      if (min === Infinity) return;
      last = min;
      // postings may hold other types' slots, and slots deleted since
      if (this.typeOf[min] === t) yield min;
    }
  }

  /** The postings that hold every slot that may match (see Plan); undefined: any slot may. */
  private plan(f: Filter, t: MappedType, budget: { left: number }): Plan | undefined {
    switch (f.k) {
      case 'and': {
        // an intersection of the children's plans: one item, each child's as a list (or the child's own item, when it has one)
        const lists: Slots[] = [];
        for (const x of f.f) {
          const p = this.plan(x, t, budget);
          if (p === undefined) continue;
          if (p.length === 0) return [];
          if (p.length === 1) lists.push(...p[0]!);
          else {
            // (a superset is a plan still: the child past the budget is left to the check of each candidate)
            const work = p.reduce((n, item) => n + item.reduce((m, l) => m + l.length, 0), 0);
            if (work > budget.left) continue;
            budget.left -= work;
            lists.push(materialize(p));
          }
        }
        return lists.length ? [lists] : undefined;
      }
      case 'or': {
        const items: Plan = [];
        for (const x of f.f) {
          const p = this.plan(x, t, budget);
          if (p === undefined) return undefined;
          items.push(...p);
        }
        return items;
      }
      case 'not':
        return undefined;
      case 'undefined':
        return [];
      default: {
        if (f.a === 'objectclass') {
          if (f.k !== 'eq') return undefined;
          return t.objectClasses.some((c) => c.toLowerCase() === f.v) ? undefined : [];
        }
        if (f.a === ID_KEY && f.k === 'eq') {
          const slots = this.slotsOfFolded.get(f.v);
          return slots === undefined ? [] : [[slots]];
        }
        const field = this.indexedBy.get(t.def.name)!.get(f.a);
        if (field === undefined) {
          // an attribute this type never has cannot match (operational ones are checked per entry)
          return !this.mayHave(t, f.a) ? [] : undefined;
        }
        const idx = this.attrs.get(f.a)!;
        if (f.k === 'eq' || f.k === 'approx') return [[idx.equal(f.v)]];
        if (f.k === 'sub') {
          const lists = idx.substring(f);
          return lists && [lists];
        }
        return undefined;
      }
    }
  }

  private mayHave(t: MappedType, key: string): boolean {
    return t.attributes.has(key) || OTHER_ATTRS.has(key);
  }

  /** Whether the index holds every attribute a filter reads for this type, so it can be checked without building entries. */
  answers(attrs: ReadonlySet<string>, t: MappedType): boolean {
    const mine = this.indexedBy.get(t.def.name)!;
    for (const a of attrs) if (!mine.has(a) && a !== 'objectclass' && a !== ID_KEY && this.mayHave(t, a)) return false;
    return true;
  }

  /** The folded values the index holds for a slot, for checking a filter that answers() covers. */
  source(slot: number, t: MappedType): AttrSource {
    const mine = this.indexedBy.get(t.def.name)!;
    const id = this.ids[slot]!;
    return {
      values: (a) => {
        if (a === 'objectclass') return t.objectClasses.map((c) => c.toLowerCase());
        if (a === ID_KEY) return [id.toLowerCase()];
        return mine.has(a) ? this.attrs.get(a)!.values[slot] : undefined;
      },
    };
  }
}

/** Attributes every object entry has or may have besides its type's mapped ones. */
const OTHER_ATTRS: ReadonlySet<string> = new Set([...ENTRY_OPERATIONAL, ...['objectClass', ID_ATTR, ENTITLEMENT_ATTR].map((a) => a.toLowerCase())]);
