import { LinkedList } from './linked-list.js';

/**
 * Items in the order they were last touched, oldest first, for dropping the
 * oldest past a bound: a LinkedList of nodes, found by a Map that is only
 * looked up, never iterated. (A Set iterated from its oldest entry on every
 * eviction walked V8's holes for deleted entries: 8 % of a catch-up's CPU,
 * profiled.)
 */
interface Node<T> {
  readonly item: T;
  prev: Node<T> | undefined;
  next: Node<T> | undefined;
}

export class RecencyList<T> {
  private readonly nodes = new Map<T, Node<T>>();
  private readonly order = new LinkedList<Node<T>>();

  get size(): number {
    return this.nodes.size;
  }

  /** Adds the item as the newest, or makes it the newest if present. */
  touch(item: T): void {
    const node = this.nodes.get(item);
    if (node) return this.order.moveToNewest(node);
    const added: Node<T> = { item, prev: undefined, next: undefined };
    this.nodes.set(item, added);
    this.order.append(added);
  }

  /** Whether the item was present. */
  delete(item: T): boolean {
    const node = this.nodes.get(item);
    if (!node) return false;
    this.order.unlink(node);
    this.nodes.delete(item);
    return true;
  }

  oldest(): T | undefined {
    return this.order.oldest?.item;
  }
}
