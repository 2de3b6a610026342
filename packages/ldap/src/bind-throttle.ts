/**
 * Slows down guessing: after a few failed binds for one name, every further
 * bind for it waits, twice as long per failure up to a cap, before its
 * password is even checked. A success clears the name; quiet names are
 * forgotten after a while. The wait is a timer, so other clients are not
 * held up.
 */
/** Binds for one name that may wait their turn at once; more are answered busy. */
const MAX_QUEUED = 16;

export class BindThrottle {
  private readonly failures = new Map<string, { count: number; last: number }>();
  /** binds for a name still being checked: each counts as a failure until it is known, so parallel guesses queue up too */
  private readonly checking = new Map<string, number>();
  /** names whose binds take turns: the last turn's end, and how many turns are waiting or running */
  private readonly queued = new Map<string, { tail: Promise<void>; waiting: number }>();

  constructor(
    private readonly opts: { free: number; baseMs: number; maxMs: number; forgetMs: number } = { free: 3, baseMs: 250, maxMs: 8000, forgetMs: 15 * 60_000 },
    private readonly now: () => number = Date.now,
  ) {}

  /** How long a bind for this name waits before its check. */
  delay(name: string): number {
    let count = this.checking.get(name) ?? 0;
    const f = this.failures.get(name);
    if (f && this.now() - f.last > this.opts.forgetMs) this.failures.delete(name);
    else if (f) count += f.count;
    const over = count - this.opts.free;
    return over < 0 ? 0 : Math.min(this.opts.maxMs, this.opts.baseMs * 2 ** over);
  }

  /**
   * A bind's turn to check its password. A name with no failures past its
   * free ones checks at once, in parallel. Past them, binds for the name take
   * turns: each waits for the one before it to finish, then for the delay
   * that its failures by then call for, so guesses sent in parallel are as
   * slow as guesses sent one by one. More than MAX_QUEUED waiting: 'busy'.
   * `done` ends the turn (call it before failed() or succeeded()).
   */
  enter(name: string, sleep: (ms: number) => Promise<void>): { ready: Promise<void>; done: () => void } | 'busy' {
    const queued = this.queued.get(name);
    if (!queued && this.delay(name) === 0) return { ready: Promise.resolve(), done: this.begin(name) };
    if (queued && queued.waiting >= MAX_QUEUED) return 'busy';
    const before = queued?.tail ?? Promise.resolve();
    let finish!: () => void;
    const mine = new Promise<void>((resolve) => (finish = resolve));
    const q = queued ?? { tail: mine, waiting: 0 };
    q.tail = mine;
    q.waiting++;
    this.queued.set(name, q);
    let end: (() => void) | undefined;
    const ready = before.then(async () => {
      end = this.begin(name);
      const wait = this.delayAfterFailures(name);
      if (wait > 0) await sleep(wait);
    });
    const done = (): void => {
      end?.();
      if (--q.waiting === 0 && this.queued.get(name) === q) this.queued.delete(name);
      finish();
    };
    return { ready, done };
  }

  /** The wait the failures recorded for the name call for, not counting binds under way. */
  private delayAfterFailures(name: string): number {
    const f = this.failures.get(name);
    const over = (f?.count ?? 0) - this.opts.free;
    return over < 0 ? 0 : Math.min(this.opts.maxMs, this.opts.baseMs * 2 ** over);
  }

  /** A bind for this name starts its check; the function returned ends it (before failed() or succeeded()). */
  begin(name: string): () => void {
    this.checking.set(name, (this.checking.get(name) ?? 0) + 1);
    let open = true;
    return () => {
      if (!open) return;
      open = false;
      const n = this.checking.get(name)! - 1;
      if (n === 0) this.checking.delete(name);
      else this.checking.set(name, n);
    };
  }

  failed(name: string): void {
    const f = this.failures.get(name);
    if (f) {
      f.count++;
      f.last = this.now();
      return;
    }
    if (this.failures.size >= 100_000) this.sweep();
    this.failures.set(name, { count: 1, last: this.now() });
  }

  succeeded(name: string): void {
    this.failures.delete(name);
  }

  private sweep(): void {
    const cutoff = this.now() - this.opts.forgetMs;
    for (const [k, f] of this.failures) if (f.last < cutoff) this.failures.delete(k);
    // still full: an attack on very many names; keep the newest half
    if (this.failures.size >= 100_000) {
      const keep = [...this.failures.entries()].sort((a, b) => b[1].last - a[1].last).slice(0, 50_000);
      this.failures.clear();
      for (const [k, f] of keep) this.failures.set(k, f);
    }
  }
}
