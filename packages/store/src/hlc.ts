/**
 * Hybrid logical clock packed into one safe integer: wall milliseconds times
 * 1000 plus a logical counter. Ordering HLCs is ordering numbers. When more
 * than 999 events share a millisecond the wall part is advanced by one, which
 * keeps the value monotonic at the cost of running a millisecond ahead.
 */
export type Hlc = number;

const SPREAD = 1000;

export function hlcWall(h: Hlc): number {
  return Math.floor(h / SPREAD);
}

export function hlcToIso(h: Hlc): string {
  return new Date(hlcWall(h)).toISOString();
}

/** How far ahead of this node's wall clock a peer's timestamp may move it. */
export const MAX_AHEAD_MS = 24 * 60 * 60 * 1000;

/** A value an HLC can hold: a safe integer, not negative. */
export function isHlc(h: unknown): h is Hlc {
  return Number.isSafeInteger(h) && (h as number) >= 0;
}

export class HybridClock {
  private last: Hlc;
  private readonly now: () => number;

  constructor(last: Hlc = 0, now: () => number = Date.now) {
    this.last = last;
    this.now = now;
  }

  /** A timestamp greater than every one issued or observed before. */
  tick(): Hlc {
    const wall = this.now() * SPREAD;
    this.last = wall > this.last ? wall : this.last + 1;
    return this.last;
  }

  /**
   * Fold in a timestamp seen on a remote change, so later ticks order after
   * it; at most a day ahead of this node's wall clock. A peer whose clock
   * (or a bug, or a forged record) stamped a change in the far future would
   * otherwise carry every later tick of this node there, for good (the
   * clock is stored), up to where ticks are no safe integers and every peer
   * refuses this node's changes. Past that bound causality is ordered by
   * the Yjs state, as always, only no longer by the HLC too.
   */
  observe(remote: Hlc): void {
    const bound = (this.now() + MAX_AHEAD_MS) * SPREAD;
    const folded = remote > bound ? bound : remote;
    if (folded > this.last) this.last = folded;
  }

  get current(): Hlc {
    return this.last;
  }

  /** Now, as an HLC, without issuing it: for a stamp that orders nothing (a record's age), so that `current` stays the last event's. */
  wallNow(): Hlc {
    return Math.max(this.now() * SPREAD, this.last);
  }
}
