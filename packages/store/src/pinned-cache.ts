import { LinkedList, type Linked } from './linked-list.js';

/**
 * A read-through LRU cache whose entries can be pinned.
 *
 * The write path mutates cached entries before their batch reaches the disk,
 * so an entry with a pending change must never be evicted (a reload would
 * read the older durable value). Writers pin what they touch until their batch
 * is durable; eviction only ever drops unpinned entries. Loads of one key are
 * shared, so a second reader can never insert an older copy over a newer one.
 *
 * Recency is a LinkedList through the slots, so touching and evicting are O(1).
 */
export interface Slot<V> extends Linked<Slot<V>> {
  readonly key: string;
  value: V;
  pins: number;
  cost: number;
}

export class PinnedCache<V> {
  private readonly entries = new Map<string, Slot<V>>();
  private readonly loading = new Map<string, Promise<Slot<V>>>();
  private readonly order = new LinkedList<Slot<V>>();
  private used = 0;

  /**
   * `onEvict` hears of each slot as it leaves the cache, so that whoever
   * keeps slots elsewhere can let go of them; it must not change the cache.
   */
  constructor(
    private readonly budget: number,
    private readonly costOf: (key: string, value: V) => number,
    private readonly onEvict?: (slot: Slot<V>) => void,
  ) {}

  get size(): number {
    return this.entries.size;
  }

  get bytes(): number {
    return this.used;
  }

  /** The cached slot, if any, marked as recently used. */
  peek(key: string): Slot<V> | undefined {
    const slot = this.entries.get(key);
    if (slot) this.order.moveToNewest(slot);
    return slot;
  }

  /** The slot for key, loading it if needed; not pinned. */
  async get(key: string, load: (key: string) => Promise<V>): Promise<Slot<V>> {
    const hit = this.peek(key);
    if (hit) return hit;
    const pending = this.loading.get(key);
    if (pending) return pending;
    const mine: Promise<Slot<V>> = load(key).then(
      (value) => {
        const current = this.loading.get(key) === mine;
        if (current) this.loading.delete(key);
        const slot = this.entries.get(key);
        if (slot) return slot;
        // A value set while this read ran is newer than it; if that slot has been evicted
        // since (once on disk), the read is stale: read again. Putting it back made an
        // object a clone had just stored look absent, and a create could take its id.
        return current ? this.insert(key, value) : this.get(key, load);
      },
      (err: unknown) => {
        if (this.loading.get(key) === mine) this.loading.delete(key);
        throw err;
      },
    );
    this.loading.set(key, mine);
    return mine;
  }

  /**
   * Sets a key's value directly (for data written without a load). A load of
   * the key already under way resolves to this slot, or, if it is evicted
   * first, to a fresh read; never to its older read.
   */
  set(key: string, value: V): Slot<V> {
    this.loading.delete(key);
    const slot = this.entries.get(key);
    if (!slot) return this.insert(key, value);
    slot.value = value;
    this.resize(slot);
    return slot;
  }

  /**
   * Pins a slot for a key the caller knows is new (no load can be under way
   * for it), without a promise round trip; an existing slot is pinned as is.
   */
  pinNew(key: string, value: V): Slot<V> {
    this.loading.delete(key);
    const slot = this.entries.get(key) ?? this.insert(key, value);
    slot.pins++;
    return slot;
  }

  /**
   * The slot for key, pinned, without a promise: read by `read` when not
   * cached. For a cache only ever read this way: a load under way would mean
   * two reads of one key racing, so it throws.
   */
  acquireSync(key: string, read: (key: string) => V): Slot<V> {
    let slot = this.peek(key);
    if (!slot) {
      if (this.loading.has(key)) throw new Error(`acquireSync(${JSON.stringify(key)}) while an asynchronous load of it is under way`);
      slot = this.insert(key, read(key));
    }
    slot.pins++;
    return slot;
  }

  /** The slot for key, pinned, if it is cached. */
  pinCached(key: string): Slot<V> | undefined {
    const slot = this.peek(key);
    if (slot) slot.pins++;
    return slot;
  }

  /** The slot for key, pinned: it stays cached until release(). */
  async acquire(key: string, load: (key: string) => Promise<V>): Promise<Slot<V>> {
    for (;;) {
      const slot = await this.get(key, load);
      // Another task may have evicted it while we were waiting to resume.
      if (this.entries.get(key) === slot) {
        slot.pins++;
        return slot;
      }
    }
  }

  release(slot: Slot<V>): void {
    slot.pins--;
    if (slot.pins === 0 && this.used > this.budget) this.evict();
  }

  /** Whether this very slot is still cached (not evicted, and not replaced since). */
  holds(slot: Slot<V>): boolean {
    return this.entries.get(slot.key) === slot;
  }

  /** Recompute a slot's cost after its value changed. */
  resize(slot: Slot<V>): void {
    const cost = this.costOf(slot.key, slot.value);
    this.used += cost - slot.cost;
    slot.cost = cost;
    if (this.used > this.budget) this.evict();
  }

  clear(): void {
    this.entries.clear();
    this.order.clear();
    this.used = 0;
  }

  private insert(key: string, value: V): Slot<V> {
    const slot: Slot<V> = { key, value, pins: 0, cost: this.costOf(key, value), prev: undefined, next: undefined };
    this.entries.set(key, slot);
    this.order.append(slot);
    this.used += slot.cost;
    if (this.used > this.budget) this.evict(slot);
    return slot;
  }

  /** Drops unpinned entries, oldest first, down to 90% of the budget. */
  private evict(keep?: Slot<V>): void {
    const target = this.budget * 0.9;
    let slot = this.order.oldest;
    while (slot && this.used > target) {
      const next = slot.next;
      if (slot.pins === 0 && slot !== keep) {
        this.order.unlink(slot);
        this.entries.delete(slot.key);
        this.used -= slot.cost;
        this.onEvict?.(slot);
      }
      slot = next;
    }
  }
}
