import type { Store } from '@meridian/store';

/**
 * Why a write to an object of `type` is refused when the type is built in:
 * replica credentials change only through their own commands, which keep
 * their rules (an undelete, or an old serial written back, would revive a
 * revoked credential). Undefined for the office's own types.
 */
export function builtInRefusal(store: Store, type: string | undefined): string | undefined {
  if (type === undefined || !store.schema.types.get(type)?.system) return undefined;
  return `${type} objects are built in; change them with "meridian replica add" and "meridian replica revoke"`;
}
