/** What a LinkedList needs of its items: the links live in the item itself. */
export interface Linked<N> {
  /** towards older items */
  prev: N | undefined;
  /** towards newer items */
  next: N | undefined;
}

/**
 * A doubly linked list through its items, oldest first: appending, unlinking
 * and moving an item to the newest end cost O(1) and no lookup. The recency
 * order of PinnedCache and RecencyList: iterating a Map or Set from its
 * oldest entry after deletions walks the holes V8 leaves for deleted
 * entries until it rehashes (up to 18 us per eviction at 60k entries).
 */
export class LinkedList<N extends Linked<N>> {
  private first: N | undefined;
  private last: N | undefined;

  get oldest(): N | undefined {
    return this.first;
  }

  get newest(): N | undefined {
    return this.last;
  }

  /** Adds an item that is in no list as the newest. */
  append(n: N): void {
    n.prev = this.last;
    n.next = undefined;
    if (this.last) this.last.next = n;
    else this.first = n;
    this.last = n;
  }

  unlink(n: N): void {
    if (n.prev) n.prev.next = n.next;
    else this.first = n.next;
    if (n.next) n.next.prev = n.prev;
    else this.last = n.prev;
    n.prev = n.next = undefined;
  }

  /** Makes an item of this list the newest. */
  moveToNewest(n: N): void {
    if (n === this.last) return;
    this.unlink(n);
    this.append(n);
  }

  clear(): void {
    this.first = this.last = undefined;
  }
}
