import { isHlc } from './hlc.js';
import { isValidId } from './ids.js';
import { isSchemaName } from './schema.js';

/**
 * Whether a decoded value is a purge marker (`p<id>`, see PurgeMarker in
 * store.ts), as strictly as the purge change it stands for is checked on
 * the wire: a peer's clone brings them, and a backup restores them.
 */
export function isPurgeMarker(d: unknown): boolean {
  if (typeof d !== 'object' || d === null) return false;
  const m = d as Record<string, unknown>;
  return (
    isHlc(m['h']) && typeof m['p'] === 'string' && m['p'].length <= 256 && typeof m['o'] === 'string' && isValidId(m['o']) &&
    Number.isSafeInteger(m['n']) && (m['n'] as number) >= 1 && isSchemaName(m['t']) && (m['r'] === undefined || m['r'] === 1)
  );
}
