/**
 * A one-line progress display on stderr, redrawn in place at most ten times
 * a second, shown only on a terminal: piped output and --json stay quiet.
 */
export class Progress {
  private last = -Infinity;
  private shown = false;
  /** whether anything is drawn: a terminal, and not --json */
  readonly enabled: boolean;

  constructor(quiet: boolean) {
    this.enabled = !quiet && process.stderr.isTTY === true;
  }

  /** `milestone`: drawn even within 100 ms of the last (a step the user should see, such as one of few nodes answering) */
  update(text: () => string, milestone = false): void {
    if (!this.enabled) return;
    const now = performance.now();
    if (!milestone && now - this.last < 100) return;
    this.last = now;
    this.shown = true;
    process.stderr.write(`\r\x1b[2K${text()}`);
  }

  done(): void {
    if (this.shown) process.stderr.write('\r\x1b[2K');
  }
}

/** A 30-character bar and percentage of a fraction done. */
export function bar(fraction: number): string {
  const n = Math.round(fraction * 30);
  return `[${'#'.repeat(n)}${'.'.repeat(30 - n)}] ${Math.floor(fraction * 100)}%`;
}

export function bytes(n: number): string {
  if (n < 1024) return `${n} B`;
  if (n < 1024 ** 2) return `${(n / 1024).toFixed(1)} KiB`;
  if (n < 1024 ** 3) return `${(n / 1024 ** 2).toFixed(1)} MiB`;
  return `${(n / 1024 ** 3).toFixed(2)} GiB`;
}
