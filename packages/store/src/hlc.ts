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

  /** Fold in a timestamp seen on a remote change, so later ticks order after it. */
  observe(remote: Hlc): void {
    if (remote > this.last) this.last = remote;
  }

  get current(): Hlc {
    return this.last;
  }
}
