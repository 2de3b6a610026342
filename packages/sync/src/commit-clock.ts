/**
 * When this node's feed reached each position, to within a second: so that
 * status can say for how long a peer has lacked a change of ours (the lag
 * operators alert on while a peer is cut off, when its own head is unknown).
 *
 * One mark per second in which the feed grew, kept for as long as the
 * process runs: any peer may come back holding any position. Past
 * `maxMarks` the older half is thinned to every other mark, so recent
 * answers keep their one-second resolution while old ones grow coarser
 * (and only ever older, never younger, than the truth).
 */
export class CommitClock {
  /** the first feed position committed in each mark's second */
  private seqs: number[] = [];
  private times: number[] = [];

  constructor(
    /** this process's start: changes from before it are at least this old */
    private readonly started: number,
    private readonly maxMarks = 1 << 18,
  ) {}

  /** The feed grew to include `firstSeq` at `now`. */
  note(firstSeq: number, now: number): boolean {
    const last = this.times.length - 1;
    if (last >= 0 && now - this.times[last]! < 1000) return false;
    this.seqs.push(firstSeq);
    this.times.push(now);
    if (this.seqs.length > this.maxMarks) this.thin();
    return true;
  }

  /**
   * Since when a peer that holds our feed up to `held`, of `head`, has
   * lacked a change: the time the change at `held + 1` was committed, or
   * this process's start if that was before it. Undefined when it lacks none.
   */
  missingSince(held: number, head: number): number | undefined {
    if (held >= head) return undefined;
    const want = held + 1;
    let lo = 0;
    let hi = this.seqs.length - 1;
    let found = -1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      if (this.seqs[mid]! <= want) {
        found = mid;
        lo = mid + 1;
      } else hi = mid - 1;
    }
    return found < 0 ? this.started : this.times[found]!;
  }

  get marks(): number {
    return this.seqs.length;
  }

  /** Keeps every other mark of the older half; each kept mark takes over the next one's positions with its own, older time. */
  private thin(): void {
    const half = this.seqs.length >> 1;
    const keep = (_: number, i: number): boolean => i >= half || i % 2 === 0;
    this.seqs = this.seqs.filter(keep);
    this.times = this.times.filter(keep);
  }
}
