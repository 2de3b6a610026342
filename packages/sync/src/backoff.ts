/**
 * Reconnect delay after `attempt` consecutive failures: exponential from
 * `base`, capped, with "equal jitter" (half fixed, half random) so that
 * nodes cut off together do not all redial at the same instant.
 */
export function backoffDelay(attempt: number, random: number, base = 250, cap = 30_000): number {
  const exp = Math.min(cap, base * 2 ** Math.min(attempt, 20));
  return Math.round(exp / 2 + (exp / 2) * random);
}
