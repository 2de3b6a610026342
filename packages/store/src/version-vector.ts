import { isNodeMap } from './ids.js';

/**
 * A version vector whose entry for an origin means "every change of that
 * origin up to here is applied": it only advances over contiguous
 * sequence numbers. Changes that arrive ahead of a gap (possible when one
 * peer's feed lacks entries it got by cloning while another's has them) are
 * remembered apart until the gap fills, so a receiver never takes a missing
 * change for one it holds, and a subscriber never tells a sender it holds
 * more than it does. (The store keeps the ones ahead on disk apart from
 * the entries, with the feed position of each: see Store.aheadAt.)
 */
/**
 * An origin's entry in a vector held as a plain object (as msgpack and JSON
 * decode one), 0 if absent: only the object's own keys count. A node id may
 * be "constructor" or "toString", and `vector[id] ?? 0` then read a
 * function inherited from Object.prototype.
 */
export function vectorEntry(vector: Readonly<Record<string, number>>, origin: string): number {
  return Object.hasOwn(vector, origin) ? vector[origin]! : 0;
}

/** A feed position or origin seq as it may come from outside (a frame, a backup): a safe integer, 0 or more. */
export function isSeq(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
}

export const isSeqList = (v: unknown): v is number[] => Array.isArray(v) && v.every(isSeq);

/** Whether `v` is a version vector as it may come from outside: a plain map of node ids to seqs. */
export function isVector(v: unknown): v is Record<string, number> {
  return isNodeMap(v, isSeq);
}

export class VersionVector {
  private readonly upTo: Map<string, number>;
  private readonly ahead = new Map<string, Set<number>>();

  constructor(initial: Iterable<[string, number]> = []) {
    this.upTo = new Map(initial);
  }

  get(origin: string): number {
    return this.upTo.get(origin) ?? 0;
  }

  /** How many changes of `origin` are applied here: those up to its entry, and those ahead of it. */
  held(origin: string): number {
    return this.get(origin) + (this.ahead.get(origin)?.size ?? 0);
  }

  /** Whether the change (origin, seq) is applied here. */
  has(origin: string, seq: number): boolean {
    return seq <= this.get(origin) || (this.ahead.get(origin)?.has(seq) ?? false);
  }

  /** Records (origin, seq) as applied; returns whether the contiguous entry moved. */
  add(origin: string, seq: number): boolean {
    let at = this.get(origin);
    if (seq <= at) return false;
    if (seq > at + 1) {
      let set = this.ahead.get(origin);
      if (!set) this.ahead.set(origin, (set = new Set()));
      set.add(seq);
      return false;
    }
    at = seq;
    const set = this.ahead.get(origin);
    while (set?.delete(at + 1)) at++;
    if (set && set.size === 0) this.ahead.delete(origin);
    this.upTo.set(origin, at);
    return true;
  }

  /** Everything of `origin` up to `seq` is applied (a clone brought it). */
  raise(origin: string, seq: number): void {
    if (seq <= this.get(origin)) return;
    const set = this.ahead.get(origin);
    if (set) for (const n of set) if (n <= seq) set.delete(n);
    this.upTo.set(origin, seq - 1);
    this.add(origin, seq);
  }

  /** Every origin this vector has heard of, whether or not its entry has moved yet. */
  origins(): Set<string> {
    return new Set([...this.upTo.keys(), ...this.ahead.keys()]);
  }

  toObject(): Record<string, number> {
    return Object.fromEntries(this.upTo);
  }
}
