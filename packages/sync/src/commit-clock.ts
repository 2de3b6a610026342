/**
 * When this node's feed reached each position, to within a second: so that
 * status can say for how long a peer has lacked a change of ours (the lag
 * operators alert on while a peer is cut off, when its own head is unknown).
 *
 * One mark per second in which the feed grew. A mark is dropped once every
 * known peer holds all the positions it covers; while a peer stays away the
 * marks are halved whenever they pass `maxMarks`, which coarsens the answer
 * (it can only grow older) but bounds the memory.
 */
export class CommitClock {
  /** the first feed position committed in each mark's second */
  private seqs: number[] = [];
  private times: number[] = [];

  constructor(
    /** this process's start: changes from before it are at least this old */
    private readonly started: number,
    private readonly maxMarks = 1 << 20,
  ) {}

  /** The feed grew to include `firstSeq` at `now`. */
  note(firstSeq: number, now: number): boolean {
    const last = this.times.length - 1;
    if (last >= 0 && now - this.times[last]! < 1000) return false;
    this.seqs.push(firstSeq);
    this.times.push(now);
    if (this.seqs.length > this.maxMarks) this.halve();
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

  /** Every peer holds the feed up to `held`: marks wholly below it are no longer asked for. */
  forget(held: number): void {
    let drop = 0;
    while (drop + 1 < this.seqs.length && this.seqs[drop + 1]! <= held + 1) drop++;
    if (drop === 0) return;
    this.seqs.splice(0, drop);
    this.times.splice(0, drop);
  }

  get marks(): number {
    return this.seqs.length;
  }

  /** Keeps every other mark; each kept mark takes over the next one's positions with its own, older time. */
  private halve(): void {
    this.seqs = this.seqs.filter((_, i) => i % 2 === 0);
    this.times = this.times.filter((_, i) => i % 2 === 0);
  }
}
