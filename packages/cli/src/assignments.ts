import { CliError } from './client.js';

/**
 * Turns `field=value` words into a fields object: a repeated field becomes a
 * list, `field=` becomes null (remove the field). Values stay strings; the
 * node converts them according to the schema.
 */
export function parseAssignments(words: string[]): Record<string, string | string[] | null> {
  // (no prototype: a field named constructor or toString found the prototype's function as its earlier value)
  const out: Record<string, string | string[] | null> = Object.create(null) as Record<string, string | string[] | null>;
  for (const w of words) {
    const i = w.indexOf('=');
    if (i <= 0) throw new CliError(`expected field=value, got "${w}"`, 2);
    const k = w.slice(0, i);
    const v = w.slice(i + 1);
    if (v === '') {
      out[k] = null;
      continue;
    }
    const prev = out[k];
    out[k] = prev === undefined || prev === null ? v : Array.isArray(prev) ? [...prev, v] : [prev, v];
  }
  return out;
}
