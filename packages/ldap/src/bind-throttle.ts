/**
 * Slows down guessing: after a few failed binds for one name, every further
 * bind for it waits, twice as long per failure up to a cap, before its
 * password is even checked. A success clears the name; quiet names are
 * forgotten after a while. The wait is a timer, so other clients are not
 * held up.
 */
export class BindThrottle {
  private readonly failures = new Map<string, { count: number; last: number }>();
  /** binds for a name still being checked: each counts as a failure until it is known, so parallel guesses queue up too */
  private readonly checking = new Map<string, number>();

  constructor(
    private readonly opts: { free: number; baseMs: number; maxMs: number; forgetMs: number } = { free: 3, baseMs: 250, maxMs: 8000, forgetMs: 15 * 60_000 },
    private readonly now: () => number = () => performance.now(),
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
