import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { Level } from 'level';
import { decode, encode, type ObjectRecord } from './codec.js';
import { lockedByProcess, MeridianError, openFailure } from './errors.js';
import { isValidId, MAX_ID_LENGTH } from './ids.js';
import { HIGH, keys, SEP } from './keys.js';
import { FORMAT_KEY, formatProblem, unreadableFormat } from './migrate.js';
import { withOrigin } from './record-shapes.js';
import { restoredRecordProblem } from './restore-check.js';
import { isSeq, isVector } from './version-vector.js';

/**
 * A backup file is a sequence of frames, each a 4-byte big-endian length
 * and that many bytes of msgpack: one header, record frames holding raw
 * LevelDB keys and values in key order, and one trailer with the record
 * count and a SHA-256 over every frame before it, so a truncated or
 * altered file is refused rather than restored in part. docs/formats/backup.md
 * describes it.
 */
export const BACKUP_FORMAT = 'meridian-backup';
/**
 * 2 since records may leave out their state (ObjectRecord.y): a Meridian
 * that reads only version 1 would restore them and then fail on them.
 * Both are read here; a version 1 backup's records all hold their state.
 */
export const BACKUP_VERSION = 2;
const READABLE_VERSIONS: readonly unknown[] = [1, 2];

export interface BackupHeader {
  format: typeof BACKUP_FORMAT;
  version: number;
  /** the node the backup was taken from, and its incarnation */
  node: string;
  incarnation: number;
  /** ISO time the snapshot was taken */
  taken: string;
  /** the feed position and version vector the snapshot holds at least */
  head: number;
  vector: Record<string, number>;
  /**
   * The data dir's storage format (migrate.ts STORAGE_FORMAT), so that a
   * Meridian that cannot read it refuses the backup before restoring any of
   * it. Absent in backups from before 2026-11-24, whose format record is
   * checked when the restore reaches it.
   */
  storage?: number;
}

interface RecordFrame {
  k: string[];
  v: Uint8Array[];
}

interface Trailer {
  end: true;
  records: number;
  sha256: string;
}

function frame(value: unknown): Buffer {
  const body = encode(value);
  const len = Buffer.alloc(4);
  len.writeUInt32BE(body.length);
  return Buffer.concat([len, body]);
}

/** Encodes a backup from a header and batches of raw records (read from one LevelDB snapshot). */
export async function* encodeBackup(header: BackupHeader, batches: AsyncIterable<[string, Uint8Array][]>): AsyncGenerator<Buffer> {
  const hash = createHash('sha256');
  const emit = (value: unknown): Buffer => {
    const f = frame(value);
    hash.update(f);
    return f;
  };
  yield emit(header);
  let records = 0;
  for await (const batch of batches) {
    records += batch.length;
    yield emit({ k: batch.map(([k]) => k), v: batch.map(([, v]) => v) } satisfies RecordFrame);
  }
  yield frame({ end: true, records, sha256: hash.digest('hex') } satisfies Trailer);
}

/** Largest frame a backup may hold: record frames are written at about 1 MiB. */
const MAX_FRAME = 256 * 1024 * 1024;

/**
 * Reads a backup: the header first, then batches of records, checking the
 * framing as it goes and the trailer at the end (the caller must not treat
 * what it wrote as a restore until the generator has finished).
 */
export async function* decodeBackup(input: AsyncIterable<Uint8Array>): AsyncGenerator<BackupHeader | [string, Buffer][]> {
  const hash = createHash('sha256');
  let buf = Buffer.alloc(0);
  let header: BackupHeader | undefined;
  let records = 0;
  let ended = false;
  for await (const chunk of input) {
    buf = buf.length ? Buffer.concat([buf, chunk]) : Buffer.from(chunk);
    for (;;) {
      if (buf.length < 4) break;
      const len = buf.readUInt32BE(0);
      if (len > MAX_FRAME) throw notUsable(`a frame claims ${len} bytes`);
      if (buf.length < 4 + len) break;
      const whole = buf.subarray(0, 4 + len);
      let value: unknown;
      try {
        value = decode(whole.subarray(4));
      } catch {
        throw notUsable('a frame is not msgpack');
      }
      buf = buf.subarray(4 + len);
      if (ended) throw notUsable('data follows the end record');
      if (header === undefined) {
        header = checkHeader(value);
        hash.update(whole);
        yield header;
        continue;
      }
      if (typeof value !== 'object' || value === null) throw notUsable('a record frame is malformed');
      const v = value as Partial<Trailer & RecordFrame>;
      if (v.end === true) {
        if (v.records !== records) throw notUsable(`the end record counts ${String(v.records)} records, the file holds ${records}`);
        if (v.sha256 !== hash.digest('hex')) throw notUsable('its checksum does not match: the file was altered or damaged');
        ended = true;
        continue;
      }
      if (!Array.isArray(v.k) || !Array.isArray(v.v) || v.k.length !== v.v.length) throw notUsable('a record frame is malformed');
      const batch: [string, Buffer][] = [];
      for (let i = 0; i < v.k.length; i++) {
        const k = v.k[i];
        const val = v.v[i];
        if (typeof k !== 'string' || k.length === 0 || !(val instanceof Uint8Array)) throw notUsable('a record is malformed');
        batch.push([k, Buffer.from(val.buffer, val.byteOffset, val.byteLength)]);
      }
      hash.update(whole);
      records += batch.length;
      yield batch;
    }
  }
  if (header === undefined) throw notUsable('it is empty or holds no header');
  if (!ended || buf.length) throw notUsable('it ends before its end record (an interrupted backup?); take the backup again');
}

function checkHeader(value: unknown): BackupHeader {
  const h = value as Partial<BackupHeader> | null;
  if (typeof h !== 'object' || h === null || h.format !== BACKUP_FORMAT) throw notUsable('it does not start with a Meridian backup header');
  if (!READABLE_VERSIONS.includes(h.version)) throw notUsable(`it is format version ${String(h.version)}; this Meridian reads versions ${READABLE_VERSIONS.join(' and ')}`);
  if (typeof h.node !== 'string' || !isValidId(h.node)) throw notUsable('its header names no valid node');
  if (!isSeq(h.head) || !isSeq(h.incarnation) || typeof h.taken !== 'string') throw notUsable('its header is malformed');
  if (!isVector(h.vector)) throw notUsable("its header's version vector is malformed");
  const unreadable = h.storage === undefined ? undefined : formatProblem(h.storage, 'the backup');
  if (unreadable) throw new MeridianError('bad-request', `${unreadable}; restore it with a Meridian that reads it`);
  return h as BackupHeader;
}

const NODE_ID = keys.meta('nodeId');
/** present while a restore is under way: Store.open refuses the directory */
export const RESTORING = keys.meta('restoring');

export interface RestoreResult {
  header: BackupHeader;
  records: number;
  /** the restored node's id: a new incarnation of the one backed up */
  nodeId: string;
  incarnation: number;
  /** unique-index entries that named no live object of their type, left out (see dropUnownedClaims) */
  claimsDropped: number;
}

/**
 * Writes a backup into a new data dir as a new incarnation of the node it
 * came from: a node id of its own (`<node>.<incarnation>-<12 hex>` unless given), so
 * the (origin, seq) pairs it makes from here can never be mistaken for the
 * ones the original made after the backup, and peers treat it as a new
 * peer to catch up with. The Yjs clientIDs used before stay recorded, and
 * the store draws a fresh one at every start, so none is reused.
 */
export async function restoreBackup(
  dir: string,
  input: AsyncIterable<Uint8Array>,
  opts: { nodeId?: string | undefined; onProgress?: (records: number, header: BackupHeader) => void } = {},
): Promise<RestoreResult> {
  checkRestoreTarget(dir, opts.nodeId);
  // on failure an empty directory the user gave (a mount point, say) stays; those made here go,
  // its parents too (mkdirSync names the first it made)
  let made: string | undefined;
  try {
    made = mkdirSync(dir, { recursive: true });
  } catch (e) {
    throw new MeridianError('bad-request', `cannot make ${dir}: ${(e as Error).message.replace(/^\w+: /, '')}; choose a directory this user may create`);
  }
  const db = new Level<string, Buffer>(dir, { keyEncoding: 'utf8', valueEncoding: 'buffer' });
  let header: BackupHeader | undefined;
  let records = 0;
  let opened = false;
  try {
    // (inside: a directory LevelDB cannot open, full disk or no permission, is cleaned up as any failure is)
    await db.open();
    opened = true;
    // until the end, a store refuses to open here (a killed restore must not start as anything),
    // and the original's node id is never written: the new one is, once the stream is whole
    await db.put(RESTORING, encode(new Date().toISOString()), { sync: true });
    for await (const item of decodeBackup(input)) {
      if (!Array.isArray(item)) {
        header = item;
        if (opts.nodeId !== undefined) checkNewNodeId(opts.nodeId, header.node, new Set(Object.keys(header.vector)));
        continue;
      }
      // a newer build's data would be restored whole, and then refused by every start
      // (a header naming the format was checked already; older headers do not)
      const marker = header?.storage === undefined ? item.find(([key]) => key === FORMAT_KEY) : undefined;
      const unreadable = marker && unreadableFormat(marker[1], 'the backup');
      if (unreadable) throw new MeridianError('bad-request', `${unreadable}; restore it with a Meridian that reads it`);
      for (const [key, value] of item) {
        const problem = restoredRecordProblem(key, value);
        if (problem !== undefined) throw notUsable(problem);
      }
      // synced, each: LevelDB fsyncs only its current log at a sync write, not one it switched away
      // from, so the synced end marker below could be on disk while earlier records were not
      await db.batch(
        item.filter(([key]) => key !== NODE_ID).map(([key, value]) => ({ type: 'put' as const, key, value: key.startsWith(keys.idempotencyPrefix) ? withOrigin(value, header!.node).bytes : value })),
        { sync: true },
      );
      records += item.length;
      opts.onProgress?.(records, header!);
    }
    const h = header!;
    const claimsDropped = await dropUnownedClaims(db);
    // (both checked as they were written, by restoredRecordProblem)
    const incarnation = (readMeta<number>(await db.get(keys.meta('incarnation'))) ?? 0) + 1;
    const root = readMeta<string>(await db.get(keys.meta('nodeRoot'))) ?? h.node;
    // the suffix: the same backup restored twice must not make two nodes of one id (a whole cluster restored
    // from one backup is several restores of it; with 16 bits, as before, two of ten shared one once in about 1,500)
    const suffix = `.${incarnation}-${randomBytes(6).toString('hex')}`;
    // (cut to fit: an original id near the length limit must still give a restorable one)
    const nodeId = opts.nodeId ?? `${root.slice(0, MAX_ID_LENGTH - suffix.length)}${suffix}`;
    checkNewNodeId(nodeId, h.node, await idsKnown(db, [h.node, root]));
    await db.batch(
      [
        { type: 'put', key: NODE_ID, value: encode(nodeId) },
        { type: 'del', key: RESTORING },
        { type: 'put', key: keys.meta('nodeRoot'), value: encode(root) },
        { type: 'put', key: keys.meta('incarnation'), value: encode(incarnation) },
        { type: 'put', key: keys.meta('restoredFrom'), value: encode({ node: h.node, taken: h.taken, head: h.head }) },
      ],
      { sync: true },
    );
    await db.close();
    return { header: h, records, nodeId, incarnation, claimsDropped };
  } catch (e) {
    await db.close().catch(() => undefined);
    // Another process took the directory between the check and the open (a serve restarting in a loop, a
    // second restore): its files are not ours to delete. Else nothing half-restored is left to be started
    // by mistake: the directory was empty or absent.
    if (!opened && lockedByProcess(e)) throw openFailure(dir, e);
    if (made !== undefined) rmSync(made, { recursive: true, force: true });
    else for (const name of readdirSync(dir)) rmSync(join(dir, name), { recursive: true, force: true });
    throw restoreFailure(dir, e);
  }
}

/** A failure of the restore's own (the backup's problems are MeridianErrors already) as one sentence. */
function restoreFailure(dir: string, e: unknown): unknown {
  if (e instanceof MeridianError) return e;
  const err = e as { code?: unknown; cause?: { message?: string }; message?: string };
  const why = err.cause?.message ?? err.message ?? String(e);
  if (typeof err.code === 'string' && err.code.startsWith('LEVEL_')) {
    return new MeridianError('bad-request', `cannot write the restore into ${dir} (${why}); nothing of it was kept: check the disk's free space and the path, or choose another --dir, and restore again`);
  }
  return new MeridianError('bad-request', `the restore stopped (${why}); nothing of it was kept in ${dir}: restore again`);
}

/**
 * What a restore can refuse before it reads anything: a directory that is
 * not empty (or not a directory), and a given node id that is no id. A bad
 * one must not cost a whole restore; the CLI asks first, as usage errors.
 */
export function checkRestoreTarget(dir: string, nodeId: string | undefined): void {
  if (existsSync(dir)) {
    if (!statSync(dir).isDirectory()) throw new MeridianError('exists', `${dir} is a file, not a directory; restore into a new directory`);
    if (readdirSync(dir).length > 0) throw new MeridianError('exists', `${dir} is not empty; restore into a new directory`);
  }
  if (nodeId !== undefined) checkNewNodeId(nodeId);
}

/**
 * Refuses an id the restored node cannot take: not an id, the original's
 * own, or one the backup shows some node has had. The restored node numbers
 * its changes on from what its vector holds for its id, so under another
 * node's id it would make (origin, seq) pairs that node made already, and
 * every peer would keep whichever copy came first.
 */
function checkNewNodeId(nodeId: string, original?: string, known: ReadonlySet<string> = new Set()): void {
  if (nodeId.length > MAX_ID_LENGTH) throw new MeridianError('bad-request', `node id "${nodeId.slice(0, 20)}..." is ${nodeId.length} characters long; at most ${MAX_ID_LENGTH}`);
  if (!isValidId(nodeId)) throw new MeridianError('bad-request', `node id "${nodeId}" may hold only letters, digits, ".", "_" and "-" (at most 128)`);
  if (nodeId === original) throw new MeridianError('bad-request', `a restored node needs an id of its own, not "${original}" again: its new changes must not be taken for the original's`);
  if (known.has(nodeId)) throw new MeridianError('bad-request', `node id "${nodeId}" is one the backup shows a node has had (it holds changes made by it, or replicated with it); give the restored node an id no node has had, or leave --node-id out`);
}

/** The node ids a restored store knows of: its lineage, the origins of its changes, its peers, and the nodes of the Yjs writers it saw. */
async function idsKnown(db: Level<string, Buffer>, lineage: string[]): Promise<Set<string>> {
  const ids = new Set(lineage);
  for (const prefix of [keys.vectorPrefix, keys.checkpointPrefix]) {
    for await (const k of db.keys({ gte: prefix, lt: prefix + HIGH })) ids.add(k.slice(prefix.length));
  }
  for (const node of Object.values(readMeta<Record<string, string>>(await db.get(keys.meta('clientNodes'))) ?? {})) ids.add(node);
  // (and those whose feed tags it learned, or forgot: its peers would refuse the restored node under one, as a dir made again)
  for (const name of ['peerFeeds', 'forgottenFeeds']) for (const node of Object.keys(readMeta<Record<string, unknown>>(await db.get(keys.meta(name))) ?? {})) ids.add(node);
  const from = readMeta<{ node: string }>(await db.get(keys.meta('restoredFrom')));
  if (from) ids.add(from.node);
  return ids;
}

/**
 * Deletes the unique-index entries whose owner is not a live object of
 * their type, and says how many: each would refuse its value to every
 * create for good, as taken by an object no one can see or delete. A
 * node of a build before caa5847 could hold such entries (one id created
 * as two types on two masters); a hand-made backup may hold any. (Type and
 * field index entries naming no object are skipped by every read.) A
 * holder waiting for the value (an open clash record) gets it at the
 * store's first open, as when its holder lets go.
 */
async function dropUnownedClaims(db: Level<string, Buffer>): Promise<number> {
  const it = db.iterator({ gte: keys.uniquePrefix, lt: keys.uniquePrefix + HIGH });
  let dropped = 0;
  try {
    for (;;) {
      const claims = await it.nextv(1000);
      if (claims.length === 0) return dropped;
      const records = await db.getMany(claims.map(([, v]) => keys.object(v.toString('utf8'))));
      const ops = claims.flatMap(([k], i) => {
        const rec = records[i] === undefined ? undefined : decode<ObjectRecord>(records[i]!);
        return rec === undefined || rec.d || rec.t !== k.slice(1, k.indexOf(SEP)) ? [{ type: 'del' as const, key: k }] : [];
      });
      if (ops.length) await db.batch(ops, { sync: true });
      dropped += ops.length;
    }
  } finally {
    await it.close();
  }
}

/** The refusal of a backup that cannot be restored, and why. */
function notUsable(why: string): MeridianError {
  return new MeridianError('bad-request', `this is not a usable Meridian backup: ${why}`);
}

function readMeta<T>(v: Buffer | undefined): T | undefined {
  return v === undefined ? undefined : decode<T>(v);
}
