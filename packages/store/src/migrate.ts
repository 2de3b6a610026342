import type { Level } from 'level';
import { decode, encode, type ObjectRecord } from './codec.js';
import { HIGH, keys } from './keys.js';
import { docFromState, docVersion, recordState, VERSION_FORMULA } from './yobject.js';

const CHUNK = 1000;

/**
 * The shape of what this build writes into a data dir, recorded there
 * (`mformat`) so that a build never serves a data dir holding records it
 * cannot read: an older build opening one a newer build has written refuses
 * to start, instead of failing on the first record of a newer shape, or
 * rewriting it. Raise it with any change an older build would misread.
 *
 * 1. Every object record carries its Yjs state (`y`). Never recorded: data
 *    dirs from before the marker hold formats 1 or 2 unmarked.
 * 2. (protocol 6) A record may hold only its writer's clientID (`w`) until
 *    its object's first change; since protocol 7 also `x`, kept values and
 *    the settled map in states, and conflicts of more than two values.
 */
export const STORAGE_FORMAT = 2;

/** Where a data dir (and so a backup of it) records its storage format. */
export const FORMAT_KEY = keys.meta('format');

/**
 * Why a stored format marker (the bytes under FORMAT_KEY) cannot be read by
 * this build, or undefined when it can. `where` names what holds it.
 */
export function unreadableFormat(bytes: Uint8Array | undefined, where: string): string | undefined {
  let format: unknown;
  try {
    format = bytes === undefined ? undefined : decode(bytes);
  } catch {
    format = null; // not MessagePack
  }
  return formatProblem(format, where);
}

/** As unreadableFormat, of a format already decoded (a backup header's `storage`). */
export function formatProblem(format: unknown, where: string): string | undefined {
  if (format === undefined || (Number.isSafeInteger(format) && (format as number) >= 1 && (format as number) <= STORAGE_FORMAT)) return undefined;
  if (Number.isSafeInteger(format) && (format as number) > STORAGE_FORMAT) {
    return `${where} holds storage format ${format}, written by a newer Meridian, and this one reads formats up to ${STORAGE_FORMAT}`;
  }
  return `${where} holds an unknown storage format (${JSON.stringify(format)?.slice(0, 40) ?? String(format)}); this Meridian reads formats 1 to ${STORAGE_FORMAT}`;
}

/**
 * Brings the stored objects' versions up to this build's VERSION_FORMULA,
 * once per data dir, before the store serves anything. Versions are compared
 * across nodes (digests, ETags), so a node must never hold versions of two
 * formulas. Safe to interrupt: the rewrite is idempotent, and the formula
 * is recorded only after every object has been brought up to it.
 * Returns how many objects were rewritten.
 */
export async function migrateVersions(db: Level<string, Buffer>, formula: number | undefined): Promise<number> {
  if (formula !== undefined && formula >= VERSION_FORMULA) return 0;
  let rewritten = 0;
  let ops: { type: 'put'; key: string; value: Buffer }[] = [];
  // the iterator reads a snapshot, so the rewrites below do not show up in it
  for await (const [key, value] of db.iterator({ gte: keys.objectPrefix, lt: keys.objectPrefix + HIGH })) {
    const rec = decode<ObjectRecord>(value);
    const doc = docFromState(key.slice(keys.objectPrefix.length), recordState(rec), 1);
    const version = docVersion(doc);
    doc.destroy();
    if (version === rec.v) continue;
    rec.v = version;
    ops.push({ type: 'put', key, value: encode(rec) });
    if (ops.length === CHUNK) {
      // synced: the formula recorded at the end must not be on disk before rewrites in a log LevelDB switched away from
      await db.batch(ops, { sync: true });
      rewritten += ops.length;
      ops = [];
    }
  }
  rewritten += ops.length;
  ops.push({ type: 'put', key: keys.meta('versionFormula'), value: encode(VERSION_FORMULA) });
  await db.batch(ops, { sync: true });
  return rewritten;
}
