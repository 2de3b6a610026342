/**
 * Items in the order they were last touched, oldest first, for dropping the
 * oldest past a bound. A doubly linked list with a Map from item to node:
 * the Map is only looked up, never iterated. (A Set iterated from its oldest
 * entry on every eviction walked the holes V8 leaves for deleted entries
 * until it rehashes: 8 % of a catch-up's CPU, profiled.)
 */
interface Node<T> {
  readonly item: T;
  older: Node<T> | undefined;
  newer: Node<T> | undefined;
}

export class RecencyList<T> {
  private readonly nodes = new Map<T, Node<T>>();
  private oldestNode: Node<T> | undefined;
  private newestNode: Node<T> | undefined;

  get size(): number {
    return this.nodes.size;
  }

  /** Adds the item as the newest, or makes it the newest if present. */
  touch(item: T): void {
    let node = this.nodes.get(item);
    if (node === this.newestNode && node !== undefined) return;
    if (node) this.unlink(node);
    else this.nodes.set(item, (node = { item, older: undefined, newer: undefined }));
    node.older = this.newestNode;
    node.newer = undefined;
    if (this.newestNode) this.newestNode.newer = node;
    else this.oldestNode = node;
    this.newestNode = node;
  }

  /** Whether the item was present. */
  delete(item: T): boolean {
    const node = this.nodes.get(item);
    if (!node) return false;
    this.unlink(node);
    this.nodes.delete(item);
    return true;
  }

  oldest(): T | undefined {
    return this.oldestNode?.item;
  }

  private unlink(node: Node<T>): void {
    if (node.older) node.older.newer = node.newer;
    else this.oldestNode = node.newer;
    if (node.newer) node.newer.older = node.older;
    else this.newestNode = node.older;
    node.older = node.newer = undefined;
  }
}
