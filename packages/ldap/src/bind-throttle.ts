/** binds for one name from one address at a time before it has failed enough to be slowed (one after) */
const MAX_PARALLEL = 8;

/**
 * Slows down guessing: after a few failed binds for one name, every further
 * bind for it waits, twice as long per failure up to a cap, before its
 * password is even checked. A success clears the name; quiet names are
 * forgotten after a while. The wait is a timer, so other clients are not
 * held up.
 *
 * Binds still being checked count as failures, so guesses sent at once
 * wait longer and longer; and one client address gets at most
 * MAX_PARALLEL binds for a name at a time, and only one once the name has
 * failed enough to be slowed. Without that, parallel guesses all waited out
 * the same capped delay: 240 sent at once came back in 14 s. A client
 * elsewhere (the person themselves) is not refused, only slowed.
 */
export class BindThrottle {
  private readonly failures = new Map<string, { count: number; last: number }>();
  /** binds for a name still being checked */
  private readonly checking = new Map<string, number>();
  /** the same, per name and client address */
  private readonly checkingFrom = new Map<string, number>();

  private readonly opts: { free: number; baseMs: number; maxMs: number; forgetMs: number };

  /** (each option left out, or undefined, takes its default; `baseMs` alone given: the cap stays 32 times it) */
  constructor(
    opts: Partial<{ free: number; baseMs: number; maxMs: number; forgetMs: number }> = {},
    private readonly now: () => number = () => performance.now(),
  ) {
    const baseMs = opts.baseMs ?? 250;
    this.opts = { free: opts.free ?? 3, baseMs, maxMs: opts.maxMs ?? baseMs * 32, forgetMs: opts.forgetMs ?? 15 * 60_000 };
  }

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
   * A bind for this name from this address starts: how long it waits before
   * its check, and the function that ends it (before failed() or
   * succeeded()). Undefined, and nothing started, when this address has
   * as many binds for the name under way as it may (see the class).
   */
  start(name: string, address: string): { wait: number; done: () => void } | undefined {
    const wait = this.delay(name);
    const from = `${name}\0${address}`;
    // (after delay(), which forgets a quiet name's failures)
    const slowed = (this.failures.get(name)?.count ?? 0) >= this.opts.free;
    if ((this.checkingFrom.get(from) ?? 0) >= (slowed ? 1 : MAX_PARALLEL)) return undefined;
    count(this.checking, name, 1);
    count(this.checkingFrom, from, 1);
    let open = true;
    const done = (): void => {
      if (!open) return;
      open = false;
      count(this.checking, name, -1);
      count(this.checkingFrom, from, -1);
    };
    return { wait, done };
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

/** Adds `by` to a count kept only while it is above zero. */
function count(m: Map<string, number>, key: string, by: number): void {
  const n = (m.get(key) ?? 0) + by;
  if (n > 0) m.set(key, n);
  else m.delete(key);
}
