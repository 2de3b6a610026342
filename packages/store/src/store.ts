import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import { Level } from 'level';
import * as Y from 'yjs';
import { decode, encode, withSeq, type ChangeKind, type FeedRecord, type FieldValue, type ObjectRecord } from './codec.js';
import { MeridianError, openFailure, ValidationError } from './errors.js';
import { GroupCommit, type BatchOp } from './group-commit.js';
import { HybridClock, hlcToIso, hlcWall, isHlc } from './hlc.js';
import { isFeedTag, isFeedTagList, newId, isValidId, validNodeEntries } from './ids.js';
import { EMPTY_INDEX, indexSet, type IndexSet } from './indexes.js';
import { conflictKey, fieldConflict, isUniqueConflict, uniqueClash, uniqueHolderOf, uniqueKeyOf, type ConflictRecord } from './conflicts.js';
import { HIGH, keys, idFromIndexKey, parseSeqPart, SEP, uniqueKeyParts } from './keys.js';
import { FORMAT_KEY, migrateVersions, STORAGE_FORMAT, unreadableFormat } from './migrate.js';
import { KeyFilter } from './key-filter.js';
import { isIdempotentWrite, isObjectRecordShape, isPurgeMarker, withOrigin } from './record-shapes.js';
import { DEFAULT_COST, hashPassword, isPasswordHash, verifyPassword, type ScryptCost } from './password.js';
import { PinnedCache, type Slot } from './pinned-cache.js';
import { RecencyList } from './recency-list.js';
import { ReadBatcher } from './read-batcher.js';
import { bucketOf, digestRecords, type PositionedDigest, type StoreDigest } from './digest.js';
import { clientSpace, drawClientId, firstClient, spaceOfClient } from './client-ids.js';
import { isSeqList, vectorEntry, VersionVector } from './version-vector.js';
import { BACKUP_FORMAT, BACKUP_VERSION, RESTORING, type BackupHeader } from './backup.js';
import { historyRecord, toVersion, type HistoryRecord, type ObjectHistory, type ObjectVersion } from './history.js';
import {
  checkFieldValues,
  checkNewObjectId,
  checkReference,
  checkRequired,
  foldLookup,
  foldValue,
  TEXT_FOLDING,
  publicFields,
  uniqueTaken,
  validationFailure,
  type FieldDef,
  type Schema,
  type TypeDef,
} from './schema.js';
import { applyLocal, docFromState, dropClosedValues, fieldsTouched, holdsKeptValues, parseItemId, docVersion, encodeCreate, encodeState, holdsItemsOf, holdsState, isCreateState, newDoc, readFields, readMeta, recordState, recordStateVector, sameValue, singleClientVersion, VERSION_FORMULA } from './yobject.js';

export interface StoreOptions {
  dir: string;
  schema: Schema;
  /** this node's id; recorded on first open and checked on every later one */
  nodeId?: string;
  /** memory budget of the object cache, in bytes (estimated) */
  cacheBytes?: number;
  /** scrypt cost for password fields */
  passwordCost?: ScryptCost;
  now?: () => number;
  /**
   * Told when an open rebuilds indexes from the stored objects, before it
   * reads them (a large store takes a while): the fields whose index is
   * rebuilt (`Type.field`) and the types whose type index and count are.
   */
  onReindex?: (what: { fields: string[]; types: string[] }) => void;
  /**
   * Told while such a rebuild writes, after each REINDEX_PROGRESS objects
   * read (of every type: the rebuild reads them all): how many so far, and
   * about how many the store holds (its live objects as counted before the
   * rebuild; deleted ones are read too, and a type counted again may have
   * been counted short).
   */
  onReindexProgress?: (progress: { read: number; about: number }) => void;
  /** how long idempotent() waits for a record a replication run is bringing before answering 'busy' (ms; 5,000) */
  idempotencyWaitMs?: number;
  /**
   * Told when a remote change or merged state changes an object's type: two
   * masters created its id as two types, and every node keeps the one Yjs
   * keeps. No conflict records it, and the object keeps the other type's
   * fields until a write removes them, so an operator is best told.
   */
  onTypeChange?: (change: { id: string; was: string; is: string }) => void;
}

export interface StoredObject {
  id: string;
  type: string;
  fields: Record<string, FieldValue>;
  deleted: boolean;
  /** equal on every node holding the same merged state */
  version: string;
  hlc: number;
  /** ISO time of the last change */
  modified: string;
  /** ISO time of the create, the same on every node */
  created: string;
  /** local feed seq of the last change */
  seq: number;
}

export interface FeedEntry {
  /** idempotency key of the write that made the change, if any */
  idempotencyKey?: string | undefined;
  seq: number;
  origin: string;
  originSeq: number;
  id: string;
  type: string;
  kind: ChangeKind;
  update: Uint8Array;
  hlc: number;
  principal: string;
  fields: string[];
}

export interface WriteOptions {
  /** who makes the change; recorded in the feed */
  principal?: string;
  /** refuse the write unless the object is still at this version */
  ifVersion?: string;
  /**
   * Recorded with the change, in the same batch: idempotent() then finds
   * the change by this key, so a retried write is answered, not repeated.
   */
  idempotencyKey?: string;
}

/** What a write recorded under its idempotency key. */
export interface IdempotentWrite {
  id: string;
  /** the node that made the change (absent: this node, in records from before it was kept) */
  origin?: string;
  /** the change's origin seq at this node */
  originSeq: number;
  hlc: number;
  /**
   * Set when the write changed nothing: the version vector it was judged
   * against, which a reader must hold to see what the write saw (origin and
   * originSeq then name one entry of it, for builds that read only those).
   */
  need?: Record<string, number>;
}

export interface Page<T> {
  items: T[];
  /** pass as `after` to get the next page; undefined on the last page */
  next: string | undefined;
}

export interface PageOptions {
  limit?: number;
  after?: string;
}

/**
 * Where a state snapshot stands: the feed seq its records cover, the
 * vector, and the changes the records hold past a gap in their origin's
 * entry whose feed entries are gone here (trimmed, or never held: cloned
 * ahead themselves), which the receiver holds ahead as well.
 */
export interface SnapshotEnd {
  head: number;
  vector: Record<string, number>;
  ahead?: [origin: string, originSeq: number][];
}

/**
 * A consistent view of every stored object, for sending to a peer that
 * needs states rather than the feed (cloning, anti-entropy). `head` and
 * `vector` describe at least what the records hold.
 */
export interface StateSnapshot extends SnapshotEnd {
  digest(bits?: number): Promise<StoreDigest>;
  /** every stored record, or what one anti-entropy page asks for: the purge markers first, then (on the first page) the idempotency records, then the objects */
  batches(batch?: number, page?: SnapshotPage): AsyncGenerator<ClonedState[]>;
  close(): Promise<void>;
}

/**
 * One page of an anti-entropy answer: the objects (and, on the first page,
 * the purge markers) in the buckets that differ, with ids in (after, upTo].
 * An object the peer holds (`have`) goes as a Yjs diff against its state
 * vector, or not at all when its version is the peer's and that state
 * vector covers all its items; one it lacks goes as its whole record.
 */
export interface SnapshotPage {
  buckets: ReadonlySet<number>;
  /** bucket width: a bucket is the top `bits` of sha1(id) */
  bits: number;
  after?: string | undefined;
  /** the last id of the page; undefined: to the end */
  upTo?: string | undefined;
  have: ReadonlyMap<string, HeldState>;
}

/** What a node holds of one object, for a peer to send it only what it lacks. */
export interface HeldState {
  id: string;
  /** Yjs state vector of the stored state */
  sv: Uint8Array;
  /** the object's version (see yobject.ts docVersion) */
  version: string;
}

/**
 * One stored record streamed to a cloning or repairing peer: an object's
 * record, or with `purged` the marker of an object purged here, without
 * which a late change from a third node could bring the object back.
 */
export type ClonedState =
  | { id: string; record: Uint8Array; purged?: boolean }
  /** anti-entropy: a Yjs update holding what the receiver's state lacks, and the record's HLC */
  | { id: string; diff: Uint8Array; hlc: number }
  /**
   * The idempotency record of a keyed write (scoped key, IdempotentWrite
   * bytes with its origin filled in, and that origin and origin seq, for
   * the sender to leave out those of changes the receiver holds already):
   * a node that gets the change inside an object's state then answers a
   * resent write from it, as one that got the change from the feed does.
   */
  | { key: string; record: Uint8Array; origin?: string; originSeq?: number };

/** The `p<id>` record: the purge's feed entry, less what it erased. */
export interface PurgeMarker {
  /** hlc, principal, origin node, origin seq and type of the purge */
  h: number;
  p: string;
  o: string;
  n: number;
  t: string;
  /** set while the marker names a redacted change, not the purge itself, which has not arrived yet */
  r?: 1;
}

/** See Store.snapshotReader. */
export interface SnapshotReader {
  raw(prefix: string): AsyncGenerator<[string, Buffer]>;
  meta<T>(name: string): Promise<T | undefined>;
  close(): Promise<void>;
}

/** See Store.feedlessFrame. */
interface FeedlessFrame {
  /** called before each batch of the frame that stores objects without feed entries is committed */
  op(): void;
  /** once every batch of the frame has settled */
  settle(): void;
}

/** A change as it travels between nodes: a feed entry without the local seq. */
export type RemoteChange = Omit<FeedEntry, 'seq'>;

/**
 * What Store.claimFeeds found: how many tags it took, or the first that
 * differs from the one known, or (`forgot`) a tag the peer forgot that this
 * node runs on, or holds `holds` changes of, or (`busy`) tags the peer
 * forgot while what a peer sent is being applied (see Store.remote).
 */
export type FeedClaim = { taken: number } | { busy: true } | { node: string; known: string; shown: string; forgot?: true; holds?: number };

export interface ApplyResult {
  applied: number;
  skipped: number;
  conflicts: number;
}

type Intent =
  | { kind: 'create'; id: string; type: string; fields: Record<string, unknown>; fresh: boolean }
  | { kind: 'update'; id: string; fields: Record<string, unknown> }
  | { kind: 'replace'; id: string; fields: Record<string, unknown> }
  | { kind: 'delete'; id: string }
  | { kind: 'undelete'; id: string };

interface CachedObject {
  /** latest committed state, possibly not yet on disk; what writers build on */
  current: ObjectRecord | null;
  /**
   * What readers see: the latest state on disk, or a newer one made by
   * remote changes alone (each on disk at its origin already; see persist).
   */
  durable: ObjectRecord | null;
  doc: Y.Doc | undefined;
  /** settles when `current` is on disk */
  pending: Promise<void> | undefined;
  /** set while a remote change is being applied; local writes wait for it */
  busy?: Promise<void> | undefined;
  /** set while the object is being purged: a write that would refer to it is refused */
  purging?: boolean;
}

/** unique-index owner as writers see it (pending changes included) */
interface CachedClaim {
  owner: string | null;
}

const RETRY = Symbol('retry');
/** the in-memory feed tail: enough for peers a few seconds behind */
const RECENT_ENTRIES = 4096;
const RECENT_BYTES = 8 * 1024 * 1024;
/** the most objects one page of a list, lookup or scan holds */
export const MAX_PAGE = 10_000;
/**
 * The largest Yjs update one change may carry: what a replication frame
 * takes (sync's frames.ts). A change past it would be made here and then
 * refused by every peer, and replication from this node stop at it.
 */
export const MAX_CHANGE_BYTES = 4 * 1024 * 1024;
/** room in MAX_CHANGE_BYTES for the update's own encoding around the values (ids, lengths, field names) */
const CHANGE_OVERHEAD = 64 * 1024;
/** operations per batch when indexes are rebuilt at open (reindexChangedFields) */
const REINDEX_BATCH = 10_000;
/** objects read between two reports of an index rebuild's progress (onReindexProgress) */
const REINDEX_PROGRESS = 10_000;
/** changes held ahead without a feed entry that a snapshot names (SnapshotEnd.ahead): what one states frame carries */
export const MAX_AHEAD_SENT = 10_000;
const DEFAULT_PAGE = 100;

export class Store {
  readonly nodeId: string;
  readonly clientId: number;
  /** how many times this node's data was restored from a backup (see backup.ts) */
  readonly incarnation: number;
  /**
   * Names this node's changes feed: a hash of the node id and of a random
   * drawn when its data dir was made, so that a position of another node's
   * feed, or of a dir emptied and started again under the same id, is
   * told from one of this feed.
   */
  readonly feedTag: string;
  /** objects whose stored version this open rewrote to the current formula (see migrate.ts) */
  readonly versionsMigrated: number;
  readonly schema: Schema;
  readonly dir: string;

  private readonly db: Level<string, Buffer>;
  private readonly clock: HybridClock;
  private readonly objects: PinnedCache<CachedObject>;
  private readonly claims: PinnedCache<CachedClaim>;
  private readonly commits: GroupCommit;
  private readonly reads: ReadBatcher;
  private readonly vector: VersionVector;
  private readonly counts: Map<string, number>;
  private readonly passwordCost: ScryptCost;
  private readonly listeners = new Set<(entries: FeedEntry[]) => void>();
  private notifyQueue: FeedEntry[] = [];
  /**
   * The latest durable feed entries, oldest first from `recentStart`, so that
   * streaming the feed tail to peers (live push) needs no disk read.
   */
  private recent: FeedEntry[] = [];
  private recentStart = 0;
  private recentBytes = 0;
  private readonly dirtyVector = new Set<string>();
  /**
   * The feed position of each change held ahead of a gap in its origin's
   * vector entry (origin -> origin seq -> local seq), until the durable
   * vector covers it. A snapshot for a clone or anti-entropy holds such a
   * change in its records but not in its vector: it starts the peer's
   * cursor before the first of them, so that the peer gets their feed
   * entries too (see stateSnapshot).
   */
  private readonly aheadAt = new Map<string, Map<number, number>>();
  /**
   * The same changes as on disk (keys.ahead, one key each, written in the
   * change's batch), so a restart does not forget them; a key goes in the
   * batch that moves the origin's entry past it. `at`: the entry when they
   * were last looked through, which they are again only once it moves.
   * `seqs`: origin seq -> local seq, 0 for one with no feed entry here.
   */
  private readonly aheadOnDisk = new Map<string, { seqs: Map<number, number>; at: number }>();
  /** objects whose Y.Doc is kept, oldest first */
  private readonly docHolders = new RecencyList<Slot<CachedObject>>();
  private readonly maxDocs = 1024;
  /** which node each Yjs clientID belongs to, for conflict reports */
  private readonly clientNodes: Map<number, string>;
  private clientNodesDirty = false;
  /** the clientIDs this node drew itself (since draws record who drew them) */
  private readonly ownClients: Set<number>;
  /** unsettled conflicts by object id, then conflict key */
  private readonly openConflicts: Map<string, Map<string, ConflictRecord>>;
  /**
   * The holders of a unique value that lack its index entry, by unique-index
   * key: the objects with an open record of the value held twice. Every one
   * of them carries the value (persist settles a record whose object lets go
   * of it), so when the entry's holder lets go, one of them takes the entry.
   */
  private readonly uniqueWaiters = new Map<string, Set<string>>();
  private seq: number;
  private durableSeq: number;
  /** the version vector of what is on disk (the `vector` field runs ahead by pending changes) */
  private readonly durableVector: VersionVector;
  /** the version vector of what readers see (see persist) */
  private readonly visibleVector: VersionVector;
  private readonly visibleListeners = new Set<() => void>();
  private readonly stateListeners = new Set<(ids: string[]) => void>();
  /** the presence reads of states frames under way, each told of its ids' slots evicted meanwhile (see stageStates) */
  private readonly presenceReads = new Set<{ ids: ReadonlySet<string>; evicted: Set<string> }>();
  /** states stored without feed entries so far (changeMark) */
  private statesGeneration = 0;
  /** the last statesEpoch number handed to a states frame (see feedlessFrame), and those whose frames have not settled */
  private feedlessNext: number;
  private readonly feedlessPending = new Set<number>();
  /** a number was taken since the last batch trailer (see batchTrailer) */
  private feedlessDirty = false;
  /** changes this node holds but whose feed entries it never had (it was cloned): see feedBase() */
  private base: Record<string, number>;
  /** the feed tag of each node known: shown by it, or by a peer that knew it (see claimFeeds) */
  private readonly peerFeeds: Map<string, string>;
  /** the feed tags forgotten, by node id: by an operator (forgetFeed), or as a peer's auth told (claimFeeds) */
  private readonly forgotten: Map<string, string[]>;
  private readonly forgetListeners = new Set<() => void>();
  private feedsEpochNow = 0;
  /** remote changes and states being applied now (see remote) */
  private remoteWrites = 0;
  private readonly remoteQuiet = new Set<() => void>();
  private feedsSaving: Promise<void> = Promise.resolve();
  /** told once a batch that raised the feed base past changes held ahead without feed entries is on disk */
  private readonly baseListeners = new Set<() => void>();
  /** feed entries up to this seq were trimmed */
  private trimmedTo: number;
  /** the end of the trim queued to disk, ahead of trimmedTo until its batch lands */
  private trimmingTo: number;
  /** a clone began and has not ended (mcloning): see cloneUnfinished */
  private cloning: boolean;
  /**
   * Idempotency keys whose records a replication run brings (stored as the run passes their objects, or with its last batch; see expectIdempotency):
   * per key the run's end, or a Set of ends only when two runs bring it (a Set each would cost 300 MB
   * at a run's cap of 2,000,000 keys).
   */
  private readonly arrivingKeys = new Map<string, Promise<void> | Set<Promise<void>>>();
  /** ends every wait of expectIdempotency, at close */
  private readonly arrivingEnds = new Set<() => void>();
  /** the trim running or last run: the next waits for it (see trimFeed) */
  private trimRun: Promise<number> = Promise.resolve(0);
  /** ids purged here: no change to them is applied again, nor a create with them made */
  private readonly purgedIds: Set<string>;
  /** purged objects whose values compactAway has not yet pushed out of LevelDB's files, with the feed seqs it covers */
  private readonly compactOwed: Map<string, number[]>;
  /** purged ids whose marker names a redacted change, the purge itself not yet here (PurgeMarker.r) */
  private readonly provisional: Set<string>;
  /**
   * Every unique-index key on disk, and some no longer there: a key it does
   * not hold is free without a read (see readClaim). Undefined until the
   * first build after open ends; `filling` is the one being built, which
   * batches add to as well. A full filter keeps answering (it still holds
   * every key, with more false positives) until its successor is built.
   */
  private uniqueFilter: KeyFilter | undefined;
  private filling: KeyFilter | undefined;
  private closed = false;
  /** settles when every state staged so far by cloneStatesStaged is on disk (or failed) */
  private stagedStates: Promise<void> = Promise.resolve();
  /** per run of states (the token cloneStatesStaged is given): whether every frame staged so far is on disk */
  private readonly runsStaged = new WeakMap<object, Promise<boolean>>();
  /** settles when records a run brought are next stored before the run's end (recordsStored) */
  private nextRecordsStored: Promise<void>;
  private wakeRecordWaiters!: () => void;

  private constructor(init: {
    db: Level<string, Buffer>;
    opts: StoreOptions;
    nodeId: string;
    clientId: number;
    hlc: number;
    seq: number;
    vector: Map<string, number>;
    ahead: [origin: string, originSeq: number, seq: number][];
    counts: Map<string, number>;
    untyped: Set<string>;
    clientNodes: Map<number, string>;
    ownClients: Set<number>;
    openConflicts: Map<string, Map<string, ConflictRecord>>;
    feedBase: Record<string, number>;
    trimmedTo: number;
    purged: Set<string>;
    compactOwed: Record<string, number[]>;
    provisional: Set<string>;
    incarnation: number;
    versionsMigrated: number;
    cloning: boolean;
    feedTag: string;
    statesEpoch: number;
    peerFeeds: Record<string, string>;
    forgottenFeeds: Record<string, string[]>;
  }) {
    this.cloning = init.cloning;
    this.feedTag = init.feedTag;
    this.peerFeeds = new Map(Object.entries(init.peerFeeds));
    this.forgotten = new Map(Object.entries(init.forgottenFeeds));
    this.feedlessNext = init.statesEpoch;
    this.purgedIds = init.purged;
    this.compactOwed = new Map(Object.entries(init.compactOwed));
    this.provisional = init.provisional;
    this.incarnation = init.incarnation;
    this.versionsMigrated = init.versionsMigrated;
    this.clientNodes = init.clientNodes;
    this.ownClients = init.ownClients;
    this.durableVector = new VersionVector(init.vector);
    this.visibleVector = new VersionVector(init.vector);
    this.base = init.feedBase;
    this.trimmedTo = init.trimmedTo;
    this.trimmingTo = init.trimmedTo;
    this.openConflicts = init.openConflicts;
    for (const open of init.openConflicts.values()) for (const rec of open.values()) if (isUniqueConflict(rec)) this.waitFor(rec);
    this.db = init.db;
    this.dir = init.opts.dir;
    this.schema = init.opts.schema;
    this.nodeId = init.nodeId;
    this.clientId = init.clientId;
    this.clock = new HybridClock(init.hlc, init.opts.now);
    this.seq = init.seq;
    this.durableSeq = init.seq;
    this.vector = new VersionVector(init.vector);
    for (const [origin, n, seq] of init.ahead) {
      for (const v of [this.vector, this.durableVector, this.visibleVector]) v.add(origin, n);
      // (one the entry covers already, left by a crash between batches, is dropped by the next batch of its origin)
      this.noteAhead(origin, n, seq);
      if (this.vector.get(origin) >= n) {
        let disk = this.aheadOnDisk.get(origin);
        if (!disk) this.aheadOnDisk.set(origin, (disk = { seqs: new Map(), at: -1 }));
        disk.seqs.set(n, seq);
        // (that batch raises the base on disk too, as batchTrailer does; until then it is raised here)
        if (seq === 0) this.base[origin] = Math.max(vectorEntry(this.base, origin), n);
      }
    }
    this.counts = init.counts;
    this.untyped = init.untyped;
    this.passwordCost = init.opts.passwordCost ?? DEFAULT_COST;
    this.onReindex = init.opts.onReindex;
    this.onReindexProgress = init.opts.onReindexProgress;
    this.onTypeChange = init.opts.onTypeChange;
    this.idempotencyWaitMs = init.opts.idempotencyWaitMs ?? 5_000;
    this.nextRecordsStored = new Promise<void>((r) => (this.wakeRecordWaiters = r));
    const budget = init.opts.cacheBytes ?? 64 * 1024 * 1024;
    // an evicted slot lets go of its doc, which only a slot still cached can use
    this.objects = new PinnedCache<CachedObject>(budget, objectCost, (slot) => {
      this.dropDoc(slot);
      for (const w of this.presenceReads) if (w.ids.has(slot.key)) w.evicted.add(slot.key);
    });
    this.claims = new PinnedCache<CachedClaim>(Math.max(1024 * 1024, budget / 8), (k) => 64 + k.length * 2);
    this.reads = new ReadBatcher((ks) => this.db.getMany(ks));
    this.commits = new GroupCommit(
      (ops) => {
        // A chained batch costs a quarter of an array batch per operation
        // (measured: 1.6 vs 6.6 us), which decided group-commit throughput.
        const batch = this.db.batch();
        for (const op of ops) {
          if (op.type === 'put') {
            batch.put(op.key, op.value as Buffer);
            // every unique-index key reaches the disk through here (restores write before the store opens)
            if (op.key.charCodeAt(0) === UNIQUE_PREFIX) this.filterAdd(op.key);
          } else batch.del(op.key);
        }
        return batch.write({ sync: true });
      },
      (after) => this.batchTrailer(after),
    );
    void this.buildFilter(this.filterCapacityFor(this.uniqueValuesHeld()));
  }

  static async open(opts: StoreOptions): Promise<Store> {
    try {
      mkdirSync(opts.dir, { recursive: true });
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      const why = code === 'EEXIST' || code === 'ENOTDIR' ? 'a file is in the way of that directory' : code === 'EACCES' ? 'permission denied' : (e as Error).message;
      throw new MeridianError('bad-request', `cannot make the data dir ${opts.dir}: ${why}; choose another --dir`);
    }
    // A larger memtable than LevelDB's 4 MB default halves compactions under bulk writes.
    const db = new Level<string, Buffer>(opts.dir, { keyEncoding: 'utf8', valueEncoding: 'buffer', writeBufferSize: 32 * 1024 * 1024, cacheSize: 32 * 1024 * 1024 });
    try {
      await db.open();
    } catch (e) {
      throw openFailure(opts.dir, e);
    }
    try {
      const getMeta = async <T>(name: string): Promise<T | undefined> => {
        const v = await db.get(keys.meta(name));
        return v === undefined ? undefined : decode<T>(v);
      };
      if ((await db.get(RESTORING)) !== undefined) {
        throw new MeridianError('bad-request', `${opts.dir} holds a restore that did not finish; delete it and run "meridian restore" again`);
      }
      // before any record is written here: a newer build's records must not be read, or rewritten, by this one
      const format = await db.get(FORMAT_KEY);
      const unreadable = unreadableFormat(format, `data dir ${opts.dir}`);
      if (unreadable) throw new MeridianError('bad-request', `${unreadable}; run a Meridian that reads it, or restore a backup taken before the upgrade into a new dir`);
      let nodeId = await getMeta<string>('nodeId');
      if (nodeId === undefined) {
        nodeId = opts.nodeId ?? newId('node');
        if (!isValidId(nodeId)) {
          throw new MeridianError('bad-request', `node id "${nodeId}" may hold only letters, digits, ".", "_" and "-" (at most 128)`);
        }
        // a new data dir holds no versions of an older formula: nothing for migrateVersions to scan
        await db.batch(
          [
            { type: 'put', key: keys.meta('nodeId'), value: encode(nodeId) },
            { type: 'put', key: keys.meta('versionFormula'), value: encode(VERSION_FORMULA) },
          ],
          { sync: true },
        );
      } else if (opts.nodeId !== undefined && opts.nodeId !== nodeId) {
        throw new MeridianError(
          'bad-request',
          `data dir ${opts.dir} belongs to node "${nodeId}", not "${opts.nodeId}"; use that node id or another --dir`,
        );
      }
      // A fresh Yjs clientID for every process start, in this node's space
      // (client-ids.ts) and never one used before here or seen from a peer,
      // so a restarted or restored node cannot reuse (client, clock) pairs.
      // `node` names who drew it (a restored incarnation keeps its original's),
      // absent from entries written before clientIDs had spaces.
      const clients = (await getMeta<{ id: number; at: string; node?: string }[]>('clients')) ?? [];
      const knownClients = (await getMeta<Record<string, string>>('clientNodes')) ?? {};
      const used = new Set([...clients.map((c) => c.id), ...Object.keys(knownClients).map(Number)]);
      const clientId = drawClientId(nodeId, used);
      clients.push({ id: clientId, at: new Date().toISOString(), node: nodeId });
      // (a dir made before feed ids were drawn gets one now: positions it gave out before were bare seqs, which are refused anyway)
      let feedId = await getMeta<string>('feedId');
      const drawn = feedId === undefined;
      feedId ??= randomBytes(8).toString('hex');
      // A new epoch (see statesEpoch), in this batch, so that a crash cannot keep its cause without it: such a dir
      // may hold cloned or repaired objects that no feed entry names (its feed base says so); and a migration of
      // versions, which begins after this batch, rewrites every version a cache holds.
      const feedBase = (await getMeta<Record<string, number>>('feedBase')) ?? {};
      const formula = await getMeta<number>('versionFormula');
      const stored = await getMeta<number>('statesEpoch');
      let statesEpoch = stored ?? 0;
      if (drawn && Object.keys(feedBase).length > 0) statesEpoch++;
      if (formula === undefined || formula < VERSION_FORMULA) statesEpoch++;
      // (a new data dir, or an unmarked one from before the marker, which holds format 1 or 2, both read here: from now on it holds what this build writes)
      const marked = encode(STORAGE_FORMAT);
      await db.batch(
        [
          { type: 'put', key: keys.meta('clients'), value: encode(clients) },
          ...(format?.equals(marked) ? [] : [{ type: 'put' as const, key: FORMAT_KEY, value: marked }]),
          ...(drawn ? [{ type: 'put' as const, key: keys.meta('feedId'), value: encode(feedId) }] : []),
          ...(statesEpoch !== stored ? [{ type: 'put' as const, key: keys.meta('statesEpoch'), value: encode(statesEpoch) }] : []),
        ],
        { sync: true },
      );
      const feedTag = createHash('sha256').update(nodeId).update('\0').update(feedId).digest('hex').slice(0, 8);

      const { vector, ahead, seq } = await readPosition(db);
      const counts = new Map(Object.entries((await getMeta<Record<string, number>>('counts')) ?? {}));
      const untyped = new Set((await getMeta<string[]>('untyped')) ?? []);
      const hlc = (await getMeta<number>('hlc')) ?? 0;
      const clientNodes = new Map<number, string>(
        Object.entries(knownClients).map(([c, n]) => [Number(c), n]),
      );
      for (const c of clients) clientNodes.set(c.id, c.node ?? nodeId);
      const ownClients = new Set(clients.filter((c) => c.node === nodeId).map((c) => c.id));
      const openConflicts = new Map<string, Map<string, ConflictRecord>>();
      for await (const [k, v] of db.iterator({ gte: 'k', lt: `k${HIGH}` })) {
        const rec = decode<ConflictRecord>(v);
        if (rec.settled !== undefined) continue;
        let m = openConflicts.get(rec.objectId);
        if (!m) openConflicts.set(rec.objectId, (m = new Map()));
        m.set(k, rec);
      }
      const purged = new Set<string>();
      const provisional = new Set<string>();
      for await (const [k, v] of db.iterator({ gte: keys.purgedPrefix, lt: keys.purgedPrefix + HIGH })) {
        purged.add(k.slice(1));
        if (decode<PurgeMarker>(v).r) provisional.add(k.slice(1));
      }
      const trimmedTo = (await getMeta<number>('trimmedTo')) ?? 0;
      const versionsMigrated = await migrateVersions(db, formula);
      const store = new Store({ db, opts, nodeId, clientId, hlc, seq: Math.max(seq, trimmedTo), vector, ahead, counts, untyped, clientNodes, ownClients, openConflicts, feedBase, trimmedTo, purged, provisional, incarnation: (await getMeta<number>('incarnation')) ?? 0, versionsMigrated, cloning: (await getMeta<number>('cloning')) === 1, feedTag, statesEpoch, peerFeeds: validNodeEntries(await getMeta<unknown>('peerFeeds'), isFeedTag), forgottenFeeds: validNodeEntries(await getMeta<unknown>('forgottenFeeds'), isFeedTagList), compactOwed: validNodeEntries(await getMeta<unknown>('compactOwed'), isSeqList) });
      try {
        await store.reindexChangedFields();
        await store.repairUniqueClashes();
        store.resumeCompactions();
      } catch (e) {
        await store.close().catch(() => undefined);
        throw e;
      }
      return store;
    } catch (e) {
      await db.close().catch(() => undefined);
      throw e;
    }
  }

  // ---- writes ----------------------------------------------------------

  // not async: returning write()'s promise from an async function cost every create one more promise and two microtask turns
  create(type: string, fields: Record<string, unknown>, opts: WriteOptions & { id?: string } = {}): Promise<StoredObject> {
    let id: string;
    try {
      const def = this.typeDef(type);
      id = opts.id ?? newId(def.idPrefix);
      checkNewObjectId(type, id);
    } catch (e) {
      return Promise.reject(e);
    }
    return this.write({ kind: 'create', id, type, fields, fresh: opts.id === undefined }, opts);
  }

  /** Sets the given fields; a null value removes that field. */
  update(id: string, fields: Record<string, unknown>, opts: WriteOptions = {}): Promise<StoredObject> {
    return this.write({ kind: 'update', id, fields }, opts);
  }

  /** Makes the object hold exactly these fields (password fields are kept unless given). */
  replace(id: string, fields: Record<string, unknown>, opts: WriteOptions = {}): Promise<StoredObject> {
    return this.write({ kind: 'replace', id, fields }, opts);
  }

  /** Tombstones the object: it keeps its id and history, and leaves every index. */
  delete(id: string, opts: WriteOptions = {}): Promise<StoredObject> {
    return this.write({ kind: 'delete', id }, opts);
  }

  undelete(id: string, opts: WriteOptions = {}): Promise<StoredObject> {
    return this.write({ kind: 'undelete', id }, opts);
  }

  private async write(intent: Intent, opts: WriteOptions): Promise<StoredObject> {
    this.assertOpen();
    let checked: Record<string, FieldValue | null> | undefined;
    const fresh = intent.kind === 'create' && intent.fresh;
    for (;;) {
      // A freshly drawn 60-bit id names nothing stored: pin an empty entry without a read.
      const slot = fresh ? this.objects.pinNew(intent.id, absentValue()) : await this.pinObject(intent.id);
      while (slot.value.busy) await slot.value.busy;
      const held: Slot<CachedClaim>[] = [];
      const refs: Slot<CachedObject>[] = [];
      let committed: Promise<StoredObject> | undefined;
      try {
        const cur = slot.value.current;
        const def = this.typeFor(intent, cur);
        // Before any password is hashed. The record checked is the one committed: commit() sends a
        // write whose record changed meanwhile round this loop again, and so here.
        checkIfVersion(def, intent.id, cur, opts);
        if ('fields' in intent && checked === undefined) {
          const shownId = intent.kind === 'create' ? undefined : intent.id;
          const values = checkFieldValues(def, shownId, intent.fields);
          checked = needsHashing(def, values) ? await this.hashPasswords(def, values) : values;
        }
        const plan = this.plan(intent, def, cur, checked ?? {});
        if (plan === null) {
          // nothing changes: answer with the state once it is on disk (If-Match was checked above:
          // else a stale one was answered 200 when the write changed nothing)
          await slot.value.pending;
          // A keyed write that changed nothing is recorded too: sent again after someone else's change, it
          // would otherwise be made then. (Its record stays on this node: see stateSnapshot.)
          if (opts.idempotencyKey !== undefined) await this.recordUnchanged(intent.id, opts.idempotencyKey);
          return toStored(intent.id, cur!);
        }
        this.pinClaims(plan.claimKeys, held);
        const referred = this.pinObjects(plan.refIds, refs);
        if (referred) await referred;
        const result = this.commit(intent, opts, slot, def, plan, held, refs);
        if (result !== RETRY) committed = result;
      } finally {
        for (const r of refs) this.objects.release(r);
        if (!committed) {
          for (const c of held) this.claims.release(c);
          this.objects.release(slot);
        }
      }
      if (committed) return committed;
    }
  }

  private typeFor(intent: Intent, cur: ObjectRecord | null): TypeDef {
    if (intent.kind === 'create') {
      if (!cur && this.purgedIds.has(intent.id)) {
        throw new MeridianError('exists', `${intent.id} was purged; a purged object's id is never used again, so choose another`);
      }
      if (cur) {
        throw new MeridianError(
          'exists',
          cur.d
            ? `${cur.t} ${intent.id} exists as a deleted object; undelete it or choose another id`
            : `${cur.t} ${intent.id} already exists; update it or choose another id`,
        );
      }
      return this.schema.types.get(intent.type)!;
    }
    if (!cur) throw new MeridianError('not-found', this.purgedIds.has(intent.id) ? `${intent.id} was purged` : `no object ${intent.id}`);
    if (cur.d && intent.kind !== 'undelete') throw new MeridianError('not-found', `${cur.t} ${intent.id} was deleted`);
    if (!cur.d && intent.kind === 'undelete') throw new MeridianError('exists', `${cur.t} ${intent.id} is not deleted`);
    const def = this.schema.types.get(cur.t);
    if (!def) throw new MeridianError('validation', `${cur.t} ${intent.id} has a type the schema no longer defines`);
    return def;
  }

  /**
   * Types of objects stored while the schema lacked them (sent by a master
   * already on a newer schema), which have no type index entries or count:
   * kept in meta `untyped`, written in the batch that stores such an object,
   * and rebuilt when a schema with the type is opened (reindexChangedFields).
   */
  private readonly untyped: Set<string>;

  /** Notes, with `ops` the batch that stores it, an object of a type the schema lacks. */
  private noteUntyped(type: string, ops: BatchOp[]): void {
    if (this.untyped.has(type)) return;
    this.untyped.add(type);
    ops.push({ type: 'put', key: keys.meta('untyped'), value: encode([...this.untyped]) });
  }

  private readonly onReindex: StoreOptions['onReindex'];
  private readonly onReindexProgress: StoreOptions['onReindexProgress'];
  private readonly onTypeChange: StoreOptions['onTypeChange'];
  private readonly idempotencyWaitMs: number;

  /** a hash at this store's cost that no password matches, made once, for decoyPasswordCheck */
  private decoyHash: Promise<string> | undefined;

  /**
   * Spends on a password what checking it against a stored hash would, and
   * matches nothing: a sign-in for a name that is no one (or one with no
   * password) then takes as long as a wrong password for someone, so its
   * timing does not tell which names exist.
   */
  async decoyPasswordCheck(password: string): Promise<void> {
    // (kept only once made: a hash refused as busy, kept, made every later decoy busy at once, which told
    // names that are no one from people, and kept those with {SSHA} hashes from signing in)
    let decoy = this.decoyHash;
    if (!decoy) {
      decoy = this.decoyHash = hashPassword(randomBytes(16).toString('base64'), this.passwordCost);
      const made = decoy;
      made.catch(() => {
        if (this.decoyHash === made) this.decoyHash = undefined;
      });
    }
    await verifyPassword(password.length > 0 ? password : ' ', await decoy);
  }

  private async hashPasswords(def: TypeDef, values: Record<string, FieldValue | null>): Promise<Record<string, FieldValue | null>> {
    for (const f of def.fields.values()) {
      const v = values[f.name];
      if (f.kind !== 'password' || typeof v !== 'string' || isPasswordHash(v)) continue;
      values[f.name] = await hashPassword(v, this.passwordCost);
    }
    return values;
  }

  /** What the write would make of the object, and which index entries and referenced objects it must hold. */
  private plan(intent: Intent, def: TypeDef, cur: ObjectRecord | null, values: Record<string, FieldValue | null>): Plan | null {
    let fields: Record<string, FieldValue>;
    let deleted = false;
    let touched: string[];
    switch (intent.kind) {
      case 'create':
      case 'update':
      case 'replace': {
        let base = values;
        if (intent.kind !== 'create') {
          base = {};
          if (intent.kind === 'update') Object.assign(base, cur!.f);
          if (intent.kind === 'replace') {
            // A field the schema does not define is kept, unless the write names it to remove it: it may
            // be one a newer schema on other masters added, which writers here cannot even name, during
            // a rolling upgrade. (Removed, the delete would replicate to the masters that define it.)
            for (const [k, v] of Object.entries(cur!.f)) if (!def.fields.has(k)) base[k] = v;
            for (const f of def.fields.values()) if (f.kind === 'password' && cur!.f[f.name] !== undefined) base[f.name] = cur!.f[f.name]!;
          }
          Object.assign(base, values);
        }
        fields = {};
        for (const k of Object.keys(base)) {
          const v = base[k];
          if (v !== null && v !== undefined) fields[k] = v;
        }
        touched = Object.keys(values);
        if (intent.kind === 'replace') touched = [...new Set([...def.fields.keys(), ...touched])];
        checkRequired(def, intent.kind === 'create' ? undefined : intent.id, fields);
        checkChangeSize(def, intent.kind === 'create' ? undefined : intent.id, cur?.f, fields, touched);
        break;
      }
      case 'delete':
        fields = cur!.f;
        deleted = true;
        touched = [];
        break;
      case 'undelete':
        fields = cur!.f;
        // the values are as they were, but the schema may have changed since the delete:
        // what is brought back must pass it, as any write must (a field it no longer defines
        // stays, as on a live object, until a write removes it: refused, nothing could remove it)
        checkFieldValues(def, intent.id, Object.fromEntries(Object.entries(publicFields(def, fields)).filter(([k]) => def.fields.has(k))));
        checkRequired(def, intent.id, fields);
        touched = Object.keys(fields);
        break;
    }
    if (cur && !deleted && intent.kind !== 'undelete' && sameFields(cur.f, fields)) return null;
    const before = cur ? indexSet(def, intent.id, cur.f, cur.d) : EMPTY_INDEX;
    const after = indexSet(def, intent.id, fields, deleted);
    const claimKeys = new Set<string>();
    for (const k of before.unique) if (!after.unique.has(k)) claimKeys.add(k);
    for (const k of after.unique) if (!before.unique.has(k)) claimKeys.add(k);
    const refIds = new Set<string>();
    if (!deleted) {
      // A reference is checked when written: a value the object holds already, restated by an update or
      // a replace (a PUT of what a GET gave), is not written again, so an object it names that was
      // deleted since (on another master, at the same time) does not refuse the write. An undelete
      // checks every one: what it brings back must pass the schema as it is.
      const held = (name: string): ReadonlySet<string> => {
        const v = intent.kind === 'undelete' ? undefined : cur?.f[name];
        return new Set(v === undefined ? [] : (Array.isArray(v) ? v : [v]).map(String));
      };
      for (const name of touched) {
        const f = def.fields.get(name);
        const v = fields[name];
        if (f?.kind !== 'ref' || v === undefined) continue;
        const had = held(name);
        for (const one of Array.isArray(v) ? v : [v]) if (!had.has(String(one))) refIds.add(String(one));
      }
    }
    return { from: cur, fields, deleted, touched, before, after, claimKeys: sortedList(claimKeys), refIds: sortedList(refIds) };
  }

  /**
   * The synchronous heart of a write: re-checks against the latest in-memory
   * state, applies the change to the Y.Doc and queues one atomic batch. No
   * await between the checks and the queueing, so no other write interleaves.
   */
  private commit(
    intent: Intent,
    opts: WriteOptions,
    slot: Slot<CachedObject>,
    def: TypeDef,
    plan: Plan,
    claims: Slot<CachedClaim>[],
    refs: Slot<CachedObject>[],
  ): Promise<StoredObject> | typeof RETRY {
    this.assertOpen();
    const id = intent.id;
    const cur = slot.value.current;
    const shown = intent.kind === 'create' ? undefined : id;
    // The object may have changed while we waited for a referenced object to
    // load (or a password to hash): the plan was made from one record, so plan
    // again from the new one. Busy: lock() holds it (a remote apply, merge or purge).
    if (cur !== plan.from || slot.value.busy) return RETRY;
    for (const key of plan.after.unique) {
      if (plan.before.unique.has(key)) continue;
      const owner = claims.find((c) => c.key === key)!.value.owner;
      if (owner !== null && owner !== id) {
        const [, field, value] = uniqueKeyParts(key);
        throw uniqueTaken(def, shown, field, value, owner);
      }
    }
    for (const r of refs) {
      const target = r.value.current;
      // (every written field naming it: one object pinned once may be the right target for one field and the wrong type for another)
      for (const field of referringFields(def, plan.fields, plan.touched, r.key)) {
        checkReference(def, shown, field, r.key, target ? { type: target.t, deleted: target.d, fields: target.f } : undefined);
        if (r.value.purging) throw validationFailure(def, shown, field.name, 'reference', `refers to ${r.key}, which is being purged`);
      }
    }

    // -- from here on nothing throws for a bad request: the change is made --
    let update: Uint8Array | undefined;
    let changed: string[];
    let version: string;
    let state: Uint8Array;
    let fields: Record<string, FieldValue>;
    let conflictOps: BatchOp[] = [];
    const hlc = this.clock.tick();
    let createdAt = cur?.c;
    if (cur === null) {
      // A new object needs no Y.Doc: its first update is its whole state.
      createdAt = hlc;
      // a create touches exactly the fields it sets, in this order
      const created = encodeCreate(this.clientId, plan.fields, def.name, hlc);
      update = state = created.update;
      version = singleClientVersion(this.clientId, created.clock);
      changed = Object.keys(plan.fields);
      fields = plan.fields;
    } else {
      const doc = slot.value.doc ?? docFromState(id, recordState(cur), this.clientId);
      this.holdDoc(slot, doc);
      const setFields: Record<string, FieldValue | null> = {};
      for (const name of plan.touched) setFields[name] = plan.fields[name] ?? null;
      const change = applyLocal(doc, setFields, { type: def.name, deleted: plan.deleted });
      update = change.update;
      changed = change.changed;
      fields = readFields(doc);
      version = docVersion(doc);
      state = encodeState(doc);
      // a local write leaves one head (it marks every other it sees), so it can only settle
      if (this.hasWriteConflict(id)) conflictOps = this.reconcileConflicts(id, def.name, doc, changed, hlc).ops;
    }
    const seq = ++this.seq;
    const originSeq = this.vector.get(this.nodeId) + 1;
    this.vector.add(this.nodeId, originSeq);
    const kind: ChangeKind = intent.kind === 'replace' ? 'update' : intent.kind;
    const record: ObjectRecord = { t: def.name, f: fields, d: plan.deleted, h: hlc, s: seq, v: version };
    if (createdAt !== undefined) record.c = createdAt;
    // an object as its create made it is stored without its state, which the create's fields rebuild (ObjectRecord.y)
    if (cur === null) record.w = this.clientId;
    else record.y = state;
    if (this.hasWriteConflict(id)) record.x = 1;
    const feed: FeedRecord = {
      o: this.nodeId,
      n: originSeq,
      i: id,
      t: def.name,
      u: update ?? new Uint8Array(0),
      h: hlc,
      p: opts.principal ?? 'system',
      c: changed,
      k: kind,
    };
    const ops = conflictOps;
    const hist = historyRecord(def, { origin: this.nodeId, originSeq, hlc, principal: feed.p, kind }, cur?.f, fields, plan.deleted);
    ops.push({ type: 'put', key: keys.history(id, seq), value: encode(hist) });
    if (opts.idempotencyKey !== undefined) {
      const done: IdempotentWrite = { id, origin: this.nodeId, originSeq, hlc };
      ops.push({ type: 'put', key: keys.idempotency(opts.idempotencyKey), value: encode(done) });
      // the key travels with the change, so a master a write is sent to again after a failover knows it
      feed.q = opts.idempotencyKey;
    }
    return this.persist(slot, def, cur, record, feed, plan.before, plan.after, claims, ops).then(() => toStored(id, record));
  }

  /**
   * Queues one change for the next batch: object record, feed entry, index
   * differences and unique-index claims, plus any extra records; updates the
   * cache at once and acknowledges once the batch is on disk.
   */
  private persist(
    slot: Slot<CachedObject>,
    def: TypeDef | undefined,
    cur: ObjectRecord | null,
    record: ObjectRecord,
    feed: FeedRecord | undefined,
    before: IndexSet,
    after: IndexSet,
    claims: Slot<CachedClaim>[],
    extra: BatchOp[],
    remote = false,
  ): Promise<void> {
    const id = slot.key;
    const seq = record.s;
    const ops: BatchOp[] = [{ type: 'put', key: keys.object(id), value: encode(record) }];
    for (const op of extra) ops.push(op);
    if (!def) this.noteUntyped(record.t, ops);
    // a merged clone state has no feed entry of its own (see cloneStates)
    if (feed) ops.push({ type: 'put', key: keys.feed(seq), value: encode(feed) });
    for (const k of before.plain) if (!after.plain.has(k)) ops.push({ type: 'del', key: k });
    for (const k of after.plain) if (!before.plain.has(k)) ops.push({ type: 'put', key: k, value: EMPTY });
    // a holder that lets go of a value (renamed, deleted) no longer holds it twice, by whatever path the change came
    // (a merge's record.h is the peer's: records are stamped with the local clock, as its conflicts are)
    const settleAt = feed ? record.h : this.clock.current;
    for (const [key, rec] of this.openConflicts.get(id) ?? []) {
      if (isUniqueConflict(rec) && !after.unique.has(uniqueKeyOf(rec))) ops.push(this.settleConflict(id, key, rec, settleAt));
    }
    for (const c of claims) {
      if (after.unique.has(c.key)) {
        // A remote change may carry a value another object holds here: the
        // first holder keeps the index entry, and the clash is a conflict
        // (uniqueClashes), whose holder takes the entry when the first lets go.
        if (c.value.owner !== null && c.value.owner !== id) continue;
        c.value.owner = id;
        ops.push({ type: 'put', key: c.key, value: Buffer.from(id) });
      } else if (c.value.owner === id) {
        for (const op of this.releaseClaim(c, id, settleAt)) ops.push(op);
      }
    }
    // (by each record's own type: concurrent creates of one id as two types end as one of them everywhere)
    if (cur && cur.t !== record.t) this.onTypeChange?.({ id, was: cur.t, is: record.t });
    // (counts move only when the object goes live, goes, or changes type: most writes touch none)
    const was = cur && !cur.d ? cur.t : undefined;
    const is = record.d ? undefined : record.t;
    if (was !== is) {
      if (was !== undefined && this.schema.types.has(was)) this.counts.set(was, (this.counts.get(was) ?? 0) - 1);
      if (def && is !== undefined) this.counts.set(def.name, (this.counts.get(def.name) ?? 0) + 1);
    }
    if (feed) {
      this.dirtyVector.add(feed.o);
      this.noteAhead(feed.o, feed.n, seq, ops);
    }

    // A remote change is on disk at its origin before it is sent, so readers
    // may see it before our fsync: lost in a crash here, it is received
    // again. Not so when it lands on a local change still on its way to the
    // disk; then it shows with that one. Reads by id see it at once (what
    // push latency measures); reads through an index read the disk, so a
    // replica answers a write it forwarded only once the change is on disk
    // here too (covers with onDisk).)
    const showNow = remote && feed !== undefined && cur === slot.value.durable;
    slot.value.current = record;
    if (showNow) {
      slot.value.durable = record;
      this.visibleVector.add(feed.o, feed.n);
      for (const fn of this.visibleListeners) fn();
    }
    this.objects.resize(slot);
    const entry: FeedEntry | undefined = feed && feedEntry(seq, feed);
    const durable = this.commits.add(ops, () => {
      if (slot.value.current === record) {
        slot.value.durable = record;
        slot.value.pending = undefined;
      } else if ((slot.value.durable?.s ?? 0) < record.s) slot.value.durable = record;
      if (feed) {
        this.durableSeq = seq;
        if (this.durableVector.add(feed.o, feed.n)) this.pruneAhead(feed.o);
        if (!showNow) {
          this.visibleVector.add(feed.o, feed.n);
          for (const fn of this.visibleListeners) fn();
        }
      }
      this.objects.release(slot);
      for (const c of claims) this.claims.release(c);
      if (entry) {
        this.remember(entry);
        this.notify(entry);
      }
    });
    slot.value.pending = durable;
    return durable;
  }

  // ---- replication ------------------------------------------------------

  /**
   * Applies changes received from a peer, in order, each as it was made at
   * its origin (origin node, origin seq, HLC and principal kept). Changes the
   * version vector already covers are skipped, so changes relayed through
   * several nodes apply once. Remote changes are not validated: the origin
   * master validated them, and refusing one here would make nodes diverge.
   * With `checkpoint`, the peer's feed position is stored in the same batch
   * as the last change, so the checkpoint never runs ahead of the data.
   */
  async applyRemote(changes: RemoteChange[], opts: { checkpoint?: { peer: string; seq: number } } = {}): Promise<ApplyResult> {
    const { result, durable } = await this.applyRemoteStaged(changes, opts);
    await durable;
    return result;
  }

  /**
   * As applyRemote, but resolves once the changes are applied here (and
   * readable), with `durable` settling when their batch is on disk: a
   * replication session applies its next frame meanwhile, so that a slow
   * fsync delays acknowledgements, not what readers see.
   */
  async applyRemoteStaged(changes: RemoteChange[], opts: { checkpoint?: { peer: string; seq: number } } = {}): Promise<{ result: ApplyResult; durable: Promise<void> }> {
    this.assertOpen();
    const result: ApplyResult = { applied: 0, skipped: 0, conflicts: 0 };
    let last: Promise<void> | undefined;
    // Load every object the batch touches with one read before applying in
    // order; one read per change made catch-up a matter of round trips.
    const ids = [...new Set(changes.filter((c) => !this.vector.has(c.origin, c.originSeq)).map((c) => c.id))];
    await this.remote(async () => {
      await Promise.all(ids.map((id) => this.objects.get(id, this.loadObject)));
      ({ last } = await this.applyInOrder(changes, opts, result));
    });
    return { result, durable: last ?? Promise.resolve() };
  }

  private async applyInOrder(changes: RemoteChange[], opts: { checkpoint?: { peer: string; seq: number } }, result: ApplyResult): Promise<{ last: Promise<void> | undefined }> {
    let last: Promise<void> | undefined;
    for (let i = 0; i < changes.length; i++) {
      const c = changes[i]!;
      const extra: BatchOp[] = i === changes.length - 1 && opts.checkpoint ? [checkpointOp(opts.checkpoint)] : [];
      if (this.vector.has(c.origin, c.originSeq)) {
        result.skipped++;
        if (extra.length) last = this.commits.add(extra);
        continue;
      }
      const r = c.kind === 'purge' || c.kind === 'redacted' || this.purgedIds.has(c.id) ? await this.applyPurge(c, extra) : await this.applyOne(c, extra);
      if (r.skipped) result.skipped++;
      else result.applied++;
      result.conflicts += r.conflicts;
      // a change skipped with nothing to write (it raced in over another session) has nothing
      // to wait for, and must not stand for the changes before it, which may still be on their way
      if (!r.skipped || extra.length) last = r.durable;
    }
    if (changes.length === 0 && opts.checkpoint) last = this.commits.add([checkpointOp(opts.checkpoint)]);
    return { last };
  }

  private async applyOne(c: RemoteChange, extra: BatchOp[]): Promise<{ durable: Promise<void>; conflicts: number; skipped?: boolean }> {
    const { slot, unlock } = await this.lock(c.id);
    // purged while this change waited for the object
    if (this.purgedIds.has(c.id)) {
      unlock();
      this.objects.release(slot);
      return this.applyPurge(c, extra);
    }
    const claims: Slot<CachedClaim>[] = [];
    let handedOver = false;
    try {
      // The same change may arrive over two sessions at once: the first to get here applies it.
      if (this.vector.has(c.origin, c.originSeq)) {
        return { durable: extra.length ? this.commits.add(extra) : Promise.resolve(), conflicts: 0, skipped: true };
      }
      // The update's writer is the origin's process: one of this node's own
      // clientIDs there means another node wrote with it. (This node's own
      // changes are exempt: peers never stream a node its own changes, but an
      // implementation that relayed them back would be sending what it made.)
      const foreign = c.origin !== this.nodeId;
      const writer = firstClient(c.update);
      if (foreign && writer !== undefined && this.ownClients.has(writer)) this.refuseClient(`change ${c.origin}:${c.originSeq} to ${c.id}`, writer);
      const cur = slot.value.current;
      const doc = slot.value.doc ?? (cur ? docFromState(c.id, recordState(cur), this.clientId) : newDoc(c.id, this.clientId));
      this.holdDoc(slot, doc);
      const touched = new Set<string>();
      let own: number | undefined;
      // Only the writer is attributed to the origin, not every client that
      // grew in the transaction: items of another origin's change that waited
      // for this one (Yjs's pending structs) are integrated along with it.
      const onAfter = (tr: Y.Transaction): void => {
        if (foreign) own = this.ownClientGrown(tr);
        fieldsTouched(tr, doc, touched);
      };
      doc.on('afterTransaction', onAfter);
      try {
        Y.applyUpdate(doc, c.update, 'remote');
      } finally {
        doc.off('afterTransaction', onAfter);
        // Yjs draws a random clientID when a remote update carries ours; keep ours.
        doc.clientID = this.clientId;
      }
      // this process's items not first in the update (checked above) or released from an earlier one
      if (own !== undefined) this.refuseClient(`change ${c.origin}:${c.originSeq} to ${c.id}`, own);
      // attributed once the change is known to apply: a refused one names no writer
      if (writer !== undefined && !this.clientNodes.has(writer)) {
        this.clientNodes.set(writer, c.origin);
        this.clientNodesDirty = true;
      }
      // (nothing to walk in a field that holds no kept value: see holdsKeptValues)
      dropClosedValues(doc, touched);
      const meta = readMeta(doc);
      const type = meta.type ?? c.type;
      const def = this.schema.types.get(type);
      const fields = readFields(doc);
      const beforeIdx = this.indexedAs(c.id, cur);
      const afterIdx = def ? indexSet(def, c.id, fields, meta.deleted) : EMPTY_INDEX;
      const claimKeys = new Set<string>();
      for (const k of beforeIdx.unique) if (!afterIdx.unique.has(k)) claimKeys.add(k);
      for (const k of afterIdx.unique) if (!beforeIdx.unique.has(k)) claimKeys.add(k);
      this.pinClaims(claimKeys, claims);

      // -- synchronous from here: no other change interleaves --
      this.clock.observe(c.hlc);
      const hlc = c.hlc;
      const seq = ++this.seq;
      this.vector.add(c.origin, c.originSeq);
      const record: ObjectRecord = { t: type, f: fields, d: meta.deleted, h: Math.max(hlc, cur?.h ?? 0), s: seq, v: docVersion(doc) };
      if (meta.created !== undefined) record.c = meta.created;
      // A create received as its origin made it is stored as the origin stores it, without its state:
      // a new doc that took only this update holds exactly it, so the update's own bytes are compared.
      if (!cur && c.kind === 'create' && writer !== undefined && record.c !== undefined && isCreateState(c.update, writer, fields, type, record.c)) record.w = writer;
      else record.y = encodeState(doc);
      const feed: FeedRecord = { o: c.origin, n: c.originSeq, i: c.id, t: type, u: c.update, h: hlc, p: c.principal, c: c.fields, k: c.kind };
      if (c.idempotencyKey !== undefined) {
        feed.q = c.idempotencyKey;
        const done: IdempotentWrite = { id: c.id, origin: c.origin, originSeq: c.originSeq, hlc: c.hlc };
        extra = [...extra, { type: 'put', key: keys.idempotency(c.idempotencyKey), value: encode(done) }];
      }
      const { ops: conflictOps, made } = this.reconcileConflicts(c.id, type, doc, touched, hlc);
      if (this.hasWriteConflict(c.id)) record.x = 1;
      const clashes = this.uniqueClashes(c.id, type, c.origin, beforeIdx, afterIdx, claims);
      for (const op of clashes.ops) conflictOps.push(op);
      // what the change did here, which after concurrent changes may be less than it did at its origin
      const hist = historyRecord(def, { origin: c.origin, originSeq: c.originSeq, hlc, principal: c.principal, kind: c.kind }, cur?.f, fields, meta.deleted);
      conflictOps.push({ type: 'put', key: keys.history(c.id, seq), value: encode(hist) });
      const durable = this.persist(slot, def, cur, record, feed, beforeIdx, afterIdx, claims, [...extra, ...conflictOps], true);
      handedOver = true;
      return { durable, conflicts: made + clashes.fields.size };
    } finally {
      unlock();
      if (!handedOver) {
        // a peer's update that failed midway may have left part of itself in the doc, which the state of `current` lacks
        this.dropDoc(slot);
        for (const cl of claims) this.claims.release(cl);
        this.objects.release(slot);
      }
    }
  }

  /**
   * Removes an object physically, on this node and (through the feed) on
   * every other: its record, index entries, conflicts and history, and the
   * field values in its feed entries, which stay in the feed redacted (same
   * seq and origin, no update) so that peers still learn that those changes
   * are done. What remains is the purge entry and a marker that keeps the
   * id from being used again. Refused while live objects refer to it.
   */
  async purge(id: string, opts: { principal?: string } = {}): Promise<{ erased: number }> {
    this.assertOpen();
    if (this.purgedIds.has(id)) throw new MeridianError('not-found', `${id} was purged already`);
    if (!isValidId(id)) throw new MeridianError('not-found', `no object ${id}`);
    return this.exclusive(id, true, async (slot) => {
      const cur = slot.value.current;
      if (!cur) throw new MeridianError('not-found', this.purgedIds.has(id) ? `${id} was purged already` : `no object ${id}`);
      // from here no new write may refer to it; writes that did already are on disk before the index is read
      slot.value.purging = true;
      try {
        // (an empty batch is written after every one queued before it)
        await this.commits.add([]);
        return await this.purgeUnreferenced(slot, cur, opts.principal ?? 'system');
      } finally {
        slot.value.purging = false;
      }
    });
  }

  private async purgeUnreferenced(slot: Slot<CachedObject>, cur: ObjectRecord, principal: string): Promise<{ erased: number }> {
    const id = slot.key;
    const referrers = await this.referrers(id, cur.t);
    if (referrers.length) {
      throw new MeridianError('exists', `${cur.t} ${id} is referred to by ${referrers.join(', ')}; point those elsewhere or delete them before purging it`);
    }
    const { erased, durable } = await this.erase(slot, cur, () => {
      const originSeq = this.vector.get(this.nodeId) + 1;
      this.vector.add(this.nodeId, originSeq);
      return redacted({ o: this.nodeId, n: originSeq, i: id, t: cur.t, h: this.clock.tick(), p: principal }, 'purge');
    }, []);
    await durable;
    return { erased };
  }

  /** A purge received from a peer, or any change to an object purged here: recorded redacted, never applied. */
  private async applyPurge(c: RemoteChange, extra: BatchOp[]): Promise<{ durable: Promise<void>; conflicts: number; skipped?: boolean }> {
    // an id purged already has nothing on disk left to erase, so nothing earlier to wait for either
    return this.exclusive(c.id, !this.purgedIds.has(c.id), async (slot) => {
      if (this.vector.has(c.origin, c.originSeq)) return { durable: extra.length ? this.commits.add(extra) : Promise.resolve(), conflicts: 0, skipped: true };
      // not awaited: like any applied change, it is on disk at its origin, and catch-up goes on while this one's batch fills
      const { durable } = await this.erase(slot, slot.value.current, () => {
        this.clock.observe(c.hlc);
        this.vector.add(c.origin, c.originSeq);
        return redacted({ o: c.origin, n: c.originSeq, i: c.id, t: c.type, h: c.hlc, p: c.principal }, c.kind === 'purge' ? 'purge' : 'redacted');
      }, extra);
      return { durable, conflicts: 0 };
    });
  }

  /** Runs `fn` with the object's slot held against every other write and apply (and, with `settled`, after the last one is on disk). */
  private async exclusive<T>(id: string, settled: boolean, fn: (slot: Slot<CachedObject>) => Promise<T>): Promise<T> {
    const { slot, unlock } = await this.lock(id);
    try {
      if (settled) await slot.value.pending;
      return await fn(slot);
    } finally {
      unlock();
      this.objects.release(slot);
    }
  }

  /**
   * Pins the object and holds it against every other remote apply, merge
   * and purge; local writes wait for it too, and re-check it before they
   * commit. `unlock` takes effect once, whoever holds the object next. The
   * pin is the caller's to release or to hand to persist.
   */
  private async lock(id: string): Promise<{ slot: Slot<CachedObject>; unlock: () => void }> {
    const slot = await this.pinObject(id);
    while (slot.value.busy) await slot.value.busy;
    let done!: () => void;
    const busy = new Promise<void>((r) => (done = r));
    slot.value.busy = busy;
    let held = true;
    const unlock = (): void => {
      if (!held) return;
      held = false;
      if (slot.value.busy === busy) slot.value.busy = undefined;
      done();
    };
    return { slot, unlock };
  }

  /** Live objects whose references name `id` (refs are always indexed), as "Type id (field)". */
  private async referrers(id: string, type: string): Promise<string[]> {
    const out: string[] = [];
    for (const def of this.schema.types.values()) {
      for (const f of def.fields.values()) {
        if (f.kind !== 'ref' || f.to !== type) continue;
        if (f.unique) {
          // a unique reference is indexed only by its claim, which names its one holder
          const holder = await this.db.get(keys.unique(def.name, f.name, foldValue(f, id)));
          if (holder !== undefined) out.push(`${def.name} ${holder.toString('utf8')} (${f.name})`);
          continue;
        }
        const prefix = keys.fieldPrefix(def.name, f.name, id);
        for (const k of await this.db.keys({ gte: prefix, lt: prefix + HIGH, limit: 5 }).all()) out.push(`${def.name} ${idFromIndexKey(k)} (${f.name})`);
      }
    }
    return out;
  }

  /**
   * The erasure itself, in one batch with the purge's own feed entry (made
   * by `entry` once nothing awaits any more, so feed order holds), or with
   * only a peer's purge marker when the change it names is in this node's
   * feed already. Returns how many of the object's feed entries were
   * redacted, and the batch's promise; the files are compacted once it is
   * on disk.
   */
  private async erase(slot: Slot<CachedObject>, cur: ObjectRecord | null, entry: (() => FeedRecord) | { marker: PurgeMarker; feedless: FeedlessFrame }, extra: BatchOp[]): Promise<{ erased: number; durable: Promise<void> }> {
    const id = slot.key;
    const def = cur ? this.schema.types.get(cur.t) : undefined;
    const ops: BatchOp[] = [...extra];
    const hp = keys.historyPrefix(id);
    const seqs: number[] = [];
    for await (const k of this.db.keys({ gte: hp, lt: hp + HIGH })) {
      ops.push({ type: 'del', key: k });
      seqs.push(parseSeqPart(k.slice(hp.length)));
    }
    const old = await this.db.getMany(seqs.map((n) => keys.feed(n)));
    const cp = keys.conflictPrefix(id);
    for await (const k of this.db.keys({ gte: cp, lt: cp + HIGH })) ops.push({ type: 'del', key: k });
    // and the records of unique values held twice, under other objects, that name this one (settled ones
    // too): they hold its id and the value (a purge is rare; the conflicts are few)
    const named = `unique:${id}`;
    const naming: string[] = [];
    // (by the holder's place in the key, k<object>\0<field>\0unique:<holder>\0unique:<object>\0<value>: the value
    // itself may read "unique:<id>", and a record of it is no record of this object)
    for await (const k of this.db.keys({ gte: 'k', lt: `k${HIGH}` })) {
      const parts = k.split(SEP);
      if (!k.startsWith(cp) && parts.length === 5 && parts[2] === named) naming.push(k);
    }
    for (const k of naming) ops.push({ type: 'del', key: k });

    // -- synchronous from here: the purge's feed seq follows every change queued before it --
    for (const [i, buf] of old.entries()) {
      // an entry a trim has queued for deletion meanwhile must stay deleted, not come back redacted below the trim
      if (buf !== undefined && seqs[i]! > this.trimmingTo) ops.push({ type: 'put', key: keys.feed(seqs[i]!), value: encode(redacted(decode<FeedRecord>(buf))) });
    }
    // Pinned past the decoding above, where a damaged feed record throws, so
    // that throw leaves no pin behind; and before `entry`, which moves the
    // version vector and the clock, so that a failed claim read (pinClaims
    // reads synchronously) cannot leave the vector naming a purge never written.
    const idx = this.indexedAs(id, cur);
    const claims: Slot<CachedClaim>[] = [];
    this.pinClaims(idx.unique, claims);
    const feed = typeof entry === 'function' ? entry() : undefined;
    const byMarker = feed ? undefined : (entry as { marker: PurgeMarker; feedless: FeedlessFrame });
    const marker = feed ? markerOf(feed) : byMarker!.marker;
    const seq = feed ? ++this.seq : this.seq;
    if (cur) {
      ops.push({ type: 'del', key: keys.object(id) });
      // owed until compactAway has run, in the purge's own batch: a crash before then must not leave the values in the files for good
      this.compactOwed.set(id, seqs.length ? [Math.min(...seqs), Math.max(...seqs)] : []);
      ops.push(this.compactOwedOp());
    }
    for (const k of idx.plain) ops.push({ type: 'del', key: k });
    const hlc = feed?.h ?? this.clock.tick();
    for (const c of claims) if (c.value.owner === id) for (const op of this.releaseClaim(c, id, hlc, true)) ops.push(op);
    // (an open one left that no pass of the entry closed above, as the key's waiter too)
    for (const k of naming) {
      const objectId = k.slice(1, k.indexOf(SEP));
      const rec = this.openConflicts.get(objectId)?.get(k);
      if (rec) this.closeOpen(objectId, k, rec);
    }
    // the first marker stays, unless it names a redacted change and this is the purge itself
    if (!this.purgedIds.has(id) || (!marker.r && this.provisional.has(id))) {
      ops.push({ type: 'put', key: keys.purged(id), value: encode(marker) });
      if (marker.r) this.provisional.add(id);
      else this.provisional.delete(id);
    }
    if (feed) {
      ops.push({ type: 'put', key: keys.feed(seq), value: encode(feed) });
      this.dirtyVector.add(feed.o);
      this.noteAhead(feed.o, feed.n, seq, ops);
    }
    if (cur && def && !cur.d) this.counts.set(def.name, (this.counts.get(def.name) ?? 0) - 1);
    this.purgedIds.add(id);
    const open = this.openConflicts.get(id);
    this.openConflicts.delete(id);
    // (the read above found the records on disk then: one written meanwhile, as a holder of a unique value
    // this object waits for let it go and the record was written anew naming the next, is only here)
    for (const k of open?.keys() ?? []) ops.push({ type: 'del', key: k });
    for (const rec of open?.values() ?? []) if (isUniqueConflict(rec)) this.dropWaiter(uniqueKeyOf(rec), id);
    slot.value.current = null;
    this.dropDoc(slot);
    this.objects.resize(slot);
    const fe = feed && feedEntry(seq, feed);
    slot.pins++; // released when on disk, as persist does
    if (byMarker && cur) byMarker.feedless.op();
    const durable: Promise<void> = this.commits.add(ops, () => {
      slot.value.durable = null;
      if (slot.value.pending === durable) slot.value.pending = undefined;
      if (fe) {
        this.durableSeq = seq;
        if (this.durableVector.add(fe.origin, fe.originSeq)) this.pruneAhead(fe.origin);
        this.visibleVector.add(fe.origin, fe.originSeq);
        for (const fn of this.visibleListeners) fn();
      }
      for (let i = this.recentStart; i < this.recent.length; i++) {
        const e = this.recent[i]!;
        if (e.id !== id || e.kind === 'purge' || e.kind === 'redacted') continue;
        this.recentBytes -= e.update.length;
        this.recent[i] = feedEntry(e.seq, redacted({ o: e.origin, n: e.originSeq, i: e.id, t: e.type, h: e.hlc, p: e.principal }));
      }
      this.objects.release(slot);
      for (const c of claims) this.claims.release(c);
      if (fe) {
        this.remember(fe);
        this.notify(fe);
      } else if (cur) {
        // erased by a marker, without a feed entry: caches of this object must hear of it too
        this.statesStored([id]);
      }
    });
    slot.value.pending = durable;
    if (cur) void durable.then(() => this.compactAway([[id, seqs]]), () => undefined);
    return { erased: seqs.length, durable };
  }

  private compactOwedOp(): BatchOp {
    return { type: 'put', key: keys.meta('compactOwed'), value: encode(Object.fromEntries(this.compactOwed)) };
  }

  /**
   * Runs the compactions purges still owe (a crash or a close cut them short), in the background, at
   * open, all in one pass: a crash after a bulk purge leaves many, and the index ranges are compacted once.
   */
  private resumeCompactions(): void {
    if (this.compactOwed.size) void this.compactAway([...this.compactOwed]);
  }

  /**
   * LevelDB keeps deleted values in its files until a compaction rewrites
   * them, and a manual compaction of a range rewrites a file only when a
   * level above holds data in that range: the memtable flush that the first
   * compaction makes may put the purged values straight into the bottom
   * level, beyond the reach of the compaction. So: compact once (flushing
   * the memtable), write a deletion marker into each range (every marker
   * names a key that does not exist), and compact again, which now has to
   * merge the marker with the files below and rewrites them without the
   * purged values. In the background: on a large store this takes a while,
   * and the data is unreadable already. (An open backup or clone snapshot
   * keeps the old values in the files until it closes; the next compaction
   * LevelDB runs then drops them.)
   */
  private async compactAway(owed: readonly (readonly [id: string, seqs: number[]])[]): Promise<void> {
    // the type, field and unique indexes (t, u, x) once, whatever the number of objects
    const ranges: [string, string][] = [['t', 'x' + HIGH]];
    for (const [id, seqs] of owed) {
      ranges.push([keys.object(id), keys.object(id) + SEP], [keys.historyPrefix(id), keys.historyPrefix(id) + HIGH], [keys.conflictPrefix(id), keys.conflictPrefix(id) + HIGH]);
      if (seqs.length) ranges.push([keys.feed(Math.min(...seqs)), keys.feed(Math.max(...seqs)) + SEP]);
    }
    // (level's types leave out classic-level's compactRange, which is what runs under Node)
    const db = this.db as unknown as { compactRange(start: string, end: string): Promise<void> };
    try {
      for (const [a, b] of ranges) if (!this.closed) await db.compactRange(a, b);
      // markers: keys inside each range that no record uses (a record key never ends in SEP)
      if (!this.closed) await this.db.batch(ranges.map(([a]) => ({ type: 'del' as const, key: `${a}${SEP}${SEP}` })));
      for (const [a, b] of ranges) if (!this.closed) await db.compactRange(a, b);
      if (this.closed) return;
      let done = false;
      for (const [id] of owed) done = this.compactOwed.delete(id) || done;
      if (done) await this.commits.add([this.compactOwedOp()]);
    } catch {
      // a store closing under a compaction: it is still owed (compactOwed), and runs again at the next open
    }
  }

  /**
   * Keeps the Y.Doc of recently written objects. A live Y.Doc costs about
   * 8 KB of heap; holding one per cached object made garbage collection the
   * largest cost of bulk writes, so only the most recently written few keep
   * theirs and the rest rebuild it from `current` (`recordState`) (possibly not yet on
   * disk) when written again.
   */
  private holdDoc(slot: Slot<CachedObject>, doc: Y.Doc): void {
    slot.value.doc = doc;
    this.docHolders.touch(slot);
    // Any held doc may go, a change of it still on its way to disk included:
    // every change sets `current` to a record of its doc's whole state before it
    // returns, so the doc rebuilt from it is the same. (Skipping those with a
    // change pending kept a catch-up's thousands of staged docs, and walked
    // them all on every eviction.) Nothing else refers to a dropped doc, so
    // it is not destroy()ed: that only emits events no one listens to.
    while (this.docHolders.size > this.maxDocs) this.dropDoc(this.docHolders.oldest()!);
  }

  /**
   * The node that wrote with `client`, for a conflict record: the origin of
   * the first change this node received from it, or else the one origin
   * known here whose clientID space it is in. A clone brings writes inside
   * states, never as changes, so without the space a cloned node would
   * leave writers unnamed that every other node names.
   */
  private nodeOfClient(client: number): string | undefined {
    const known = this.clientNodes.get(client);
    if (known !== undefined) return known;
    const space = spaceOfClient(client);
    if (space === 0) return undefined;
    // (only for a conflict's value whose writer no change named: rare enough to work out each time)
    const origins = this.vector.origins();
    origins.add(this.nodeId);
    const owners = [...origins].filter((o) => clientSpace(o) === space);
    return owners.length === 1 ? owners[0] : undefined;
  }

  /**
   * This process's clientID, if it gained items in a remote transaction:
   * drawn fresh at this start and written only here, durably before any
   * peer has a change of it, so such items were written by another. (An
   * earlier clientID of this node is not checked here: after a disk rolled
   * back under the same node id, a peer's state may rightly bring back
   * items of it that this node lost.)
   */
  private ownClientGrown(tr: Y.Transaction): number | undefined {
    const clock = tr.afterState.get(this.clientId);
    return clock !== undefined && clock > (tr.beforeState.get(this.clientId) ?? 0) ? this.clientId : undefined;
  }

  /**
   * Refuses a peer's change or state that adds items of a clientID this
   * node drew: applied, its items would pass for this node's and this
   * node's for its wherever both wrote one object, with versions and
   * digests still equal.
   */
  private refuseClient(what: string, client: number): never {
    throw new MeridianError(
      'bad-request',
      `${what} carries Yjs client id ${client}, which ${this.nodeId} drew itself; every link that brings it stops there until one of the two nodes is rebuilt (docs/operations.md, "A Yjs client id used twice")`,
    );
  }

  /** Forgets the object's doc; the next change rebuilds it from `current` (`recordState`). */
  private dropDoc(slot: Slot<CachedObject>): void {
    if (!slot.value.doc) return;
    slot.value.doc = undefined;
    this.docHolders.delete(slot);
    // a held doc counts in the slot's cost; without it the slot weighs less
    if (this.objects.holds(slot)) this.objects.resize(slot);
  }

  /**
   * Brings the recorded conflicts of these fields in line with the doc's
   * heads (conflicts.ts): a record whose set of writes is no longer the
   * field's is marked settled, and a new set gets a record. `made` counts
   * the new records.
   */
  private reconcileConflicts(objectId: string, type: string, doc: Y.Doc, fields: Iterable<string>, hlc: number): { ops: BatchOp[]; made: number } {
    // nothing recorded to settle, and no field with a second head (only a kept value makes one): most applies
    if (!this.openConflicts.has(objectId) && !holdsKeptValues(doc)) return { ops: [], made: 0 };
    const ops: BatchOp[] = [];
    let made = 0;
    for (const field of fields) {
      const found = fieldConflict(doc, field);
      const key = found && conflictKey(objectId, field, found.values.map((v) => v.item));
      const held = key === undefined ? undefined : this.openConflicts.get(objectId)?.get(key);
      for (const [k, rec] of this.openConflicts.get(objectId) ?? []) {
        if (rec.field === field && !isUniqueConflict(rec) && k !== key) ops.push(this.settleConflict(objectId, k, rec, hlc));
      }
      if (!found || !key) continue;
      // (the key names the writes; how they show may change: a value dropped by a state from before protocol 7)
      if (held && held.winner === found.winner && held.values.every((v, i) => sameValue(v.value, found.values[i]!.value))) continue;
      if (!held) made++;
      ops.push(this.openConflict(key, { objectId, type, field, values: found.values, winner: found.winner, detected: held?.detected ?? this.clock.tick(), settled: undefined }));
    }
    return { ops, made };
  }

  private openConflict(key: string, rec: ConflictRecord): BatchOp {
    let open = this.openConflicts.get(rec.objectId);
    if (!open) this.openConflicts.set(rec.objectId, (open = new Map()));
    open.set(key, rec);
    if (isUniqueConflict(rec)) this.waitFor(rec);
    return { type: 'put', key, value: encode(rec) };
  }

  private waitFor(rec: ConflictRecord): void {
    const k = uniqueKeyOf(rec);
    let ids = this.uniqueWaiters.get(k);
    if (!ids) this.uniqueWaiters.set(k, (ids = new Set()));
    ids.add(rec.objectId);
  }

  /** Forgets `objectId` as a waiter for `key` once it holds no open record of it. */
  private stopWaiting(objectId: string, key: string): void {
    if (!this.clashRecorded(objectId, key)) this.dropWaiter(key, objectId);
  }

  private dropWaiter(key: string, objectId: string): void {
    const ids = this.uniqueWaiters.get(key);
    ids?.delete(objectId);
    if (ids?.size === 0) this.uniqueWaiters.delete(key);
  }

  private settleConflict(objectId: string, key: string, rec: ConflictRecord, hlc: number): BatchOp {
    rec.settled = hlc;
    this.closeOpen(objectId, key, rec);
    return { type: 'put', key, value: encode(rec) };
  }

  /** Takes a record off the open ones: it is settled, or made again. */
  private closeOpen(objectId: string, key: string, rec: ConflictRecord): void {
    const open = this.openConflicts.get(objectId)!;
    open.delete(key);
    if (open.size === 0) this.openConflicts.delete(objectId);
    if (isUniqueConflict(rec)) this.stopWaiting(objectId, uniqueKeyOf(rec));
  }

  /** Opens a record that `id` holds `value` (folded) of unique field `field` too, whose entry `holder` has. */
  private clashOp(id: string, type: string, field: string, value: string, holder: string, node: string | undefined, detected = this.clock.tick()): BatchOp {
    const clash = uniqueClash(id, type, field, value, holder, node, detected);
    return this.openConflict(clash.key, clash.rec);
  }

  /**
   * An open record of a unique clash made again, of `value` and naming
   * `holder`: the old one, which named what the store no longer holds
   * (another folding of the value, another holder), is deleted, not kept
   * settled beside it.
   */
  private remakeClash(objectId: string, key: string, rec: ConflictRecord, value: string, holder: string): BatchOp[] {
    this.closeOpen(objectId, key, rec);
    return [{ type: 'del', key }, this.clashOp(objectId, rec.type, rec.field, value, holder, rec.values[1]?.node, rec.detected)];
  }

  /**
   * Takes the index entry of `claim` from `id`, which no longer carries the
   * value, and passes it on (passEntry). (Left with the entry gone, another
   * holder would be found by no lookup here, while a node where it held the
   * entry first finds it.)
   */
  private releaseClaim(claim: Slot<CachedClaim>, id: string, hlc: number, purged = false): BatchOp[] {
    const { next, ops } = this.passEntry(claim.key, id, hlc, purged);
    claim.value.owner = next ?? null;
    return ops;
  }

  /**
   * Gives the index entry of unique key `key` to the least id among the
   * value's waiting holders (uniqueWaiters) other than `from`, or takes it
   * out of the index when none is left. The new holder's records of the
   * clash are settled; any further holder's are settled and made anew
   * naming the new holder, which lookups find now.
   */
  private passEntry(key: string, from: string | undefined, hlc: number, purged = false): { next: string | undefined; ops: BatchOp[] } {
    const waiters = this.uniqueWaiters.get(key);
    let next: string | undefined;
    for (const w of waiters ?? []) if (w !== from && (next === undefined || w < next)) next = w;
    if (next === undefined) return { next, ops: [{ type: 'del', key }] };
    const ops: BatchOp[] = [{ type: 'put', key, value: Buffer.from(next) }];
    for (const w of waiters!) {
      const open = this.openConflicts.get(w)!;
      // (collected first: a record made anew would be met again by the loop)
      const recs = [...open].filter(([, rec]) => isUniqueConflict(rec) && uniqueKeyOf(rec) === key);
      for (const [k, rec] of recs) {
        rec.settled = hlc;
        open.delete(k);
        // (a record naming a purged holder goes with it: kept settled, it kept the purged id and its value)
        if (purged && rec.values.some((v) => v.item === `unique:${from}`)) ops.push({ type: 'del', key: k });
        else ops.push({ type: 'put', key: k, value: encode(rec) });
        if (w === next) continue;
        const clash = uniqueClash(w, rec.type, rec.field, String(rec.values[0]!.value), next, rec.values[1]!.node, hlc);
        open.set(clash.key, clash.rec);
        ops.push({ type: 'put', key: clash.key, value: encode(clash.rec) });
      }
      if (open.size === 0) this.openConflicts.delete(w);
    }
    this.dropWaiter(key, next);
    return { next, ops };
  }

  /**
   * Brings the field and unique indexes in line with the schema where a
   * field became indexed or unique, or stopped being so, since the data dir
   * was last opened. Each change writes index entries as the schema says at
   * the time, so those of such a field would otherwise be missing (lookups
   * leave objects out, a second object takes a value made unique) or stale
   * (a value blocked by a former holder). A field made unique whose value
   * two live objects hold is refused, naming them, before anything is
   * written. Clash records of a field no longer unique are settled by
   * repairUniqueClashes, which runs next.
   *
   * The entries are written in batches of REINDEX_BATCH operations, so a
   * large store is not held in one batch in memory. `mindexPending` lists
   * the fields being rebuilt, from before the first batch until the last:
   * an open after a crash mid-way, whatever its schema, rebuilds those too
   * (and lists them again, with its own, until it is done), each field's
   * entries of both kinds deleted first.
   */
  private async reindexChangedFields(): Promise<void> {
    const now = indexLayout(this.schema);
    const stored = await this.db.get(keys.meta('indexLayout'));
    let before = stored === undefined ? undefined : decode<Record<string, string>>(stored);
    const storedPending = await this.db.get(keys.meta('indexPending'));
    const pending = storedPending === undefined ? [] : decode<string[]>(storedPending);
    const layoutOp: BatchOp = { type: 'put', key: keys.meta('indexLayout'), value: encode(now) };
    // No layout: a new data dir, or one from a build before the layout was kept, whose indexes follow
    // whatever schema it ran with, and which stored objects of a type the schema lacked with no type
    // entry and no count. Such a dir has every index rebuilt once, as after a rebuild cut short (each
    // field taken as what it is now, so a value a unique field holds twice through replication stays
    // a recorded clash).
    let unknownLayout = false;
    if (before === undefined) {
      const empty = (await this.db.keys({ gte: keys.objectPrefix, lt: keys.objectPrefix + HIGH, limit: 1 }).all()).length === 0;
      if (empty) return void (await this.commits.add([layoutOp]));
      before = { ...now };
      unknownLayout = true;
    }
    const was = before;
    const names = new Set([...Object.keys(was), ...Object.keys(now)].filter((k) => was[k] !== now[k]));
    if (unknownLayout) for (const k of Object.keys(now)) names.add(k);
    for (const k of pending) names.add(k);
    // a count of a type the schema no longer has, left by a build that kept counts of such types
    for (const t of this.counts.keys()) if (!this.schema.types.has(t)) names.add(`${t}${SEP}`);
    if (names.size === 0) return;
    // A type new to the schema has objects only if some arrived while it was unknown (`untyped`);
    // a layout from before types were in it may hold any type's objects without their index, once.
    const upgrading = !Object.values(before).includes('type');
    const changed = [...names]
      .map((k) => {
        const [type, field] = k.split(SEP) as [string, string];
        return { type, field, was: before[k], is: now[k] };
      })
      .filter((c) => !(c.field === '' && c.is === 'type' && c.was === undefined && !upgrading && !this.untyped.has(c.type) && !pending.includes(`${c.type}${SEP}`)));
    // the entries a write would make (indexSet), of the fields rebuilt only, and of the type index
    const adding = new Map<string, { gte: string; lt: string }[]>();
    for (const c of changed) {
      if (c.is === undefined) continue;
      let ranges = adding.get(c.type);
      if (!ranges) adding.set(c.type, (ranges = []));
      ranges.push(rebuiltRange(c));
    }
    const ofAdded = (key: string, ranges: { gte: string; lt: string }[]): boolean => ranges.some((r) => key >= r.gte && key < r.lt);
    if (adding.size > 0) {
      const rebuilt = changed.filter((c) => c.is !== undefined);
      this.onReindex?.({ fields: rebuilt.filter((c) => c.field !== '').map((c) => `${c.type}.${c.field}`), types: rebuilt.filter((c) => c.field === '').map((c) => c.type) });
    }
    const { db, schema } = this;
    /** each stored object's entries of the fields rebuilt, in id order */
    /** (`scanned`: told after each REINDEX_PROGRESS objects read, of every type: what the rebuild's time goes by) */
    async function* entries(scanned?: (n: number) => void): AsyncGenerator<{ id: string; type: string; plain: string[]; unique: string[] }> {
      if (adding.size === 0) return;
      let n = 0;
      for await (const [k, v] of db.iterator({ gte: keys.objectPrefix, lt: keys.objectPrefix + HIGH })) {
        if (++n % REINDEX_PROGRESS === 0) scanned?.(n);
        const rec = decode<ObjectRecord>(v);
        const ranges = adding.get(rec.t);
        const def = ranges && schema.types.get(rec.t);
        if (!ranges || !def) continue;
        const id = k.slice(keys.objectPrefix.length);
        const idx = indexSet(def, id, rec.f, rec.d);
        yield { id, type: rec.t, plain: [...idx.plain].filter((key) => ofAdded(key, ranges)), unique: [...idx.unique].filter((key) => ofAdded(key, ranges)) };
      }
    }
    // First a pass that only reads: who holds each value held twice. A field made unique whose
    // value two live objects hold refuses the open before anything is written. A field that was
    // unique already (rebuilt after an interrupted rebuild) may hold a value twice, replicated
    // from apart: the holder is the one without an open clash record of it, as the write path left it.
    // (unique before, whatever its folding: a data dir from before 'unique-ref' says 'unique' of a reference field,
    // whose values held twice through replication are recorded clashes, not a reason to refuse the open)
    const wasUnique = new Set(changed.filter((c) => uniqueLayout(c.was) && uniqueLayout(c.is)).map((c) => `${c.type}${SEP}${c.field}`));
    const holders = new Map<string, string>();
    let refolded: BatchOp[] = [];
    if (changed.some((c) => uniqueLayout(c.is))) {
      const first = new Map<string, string>();
      const twice = new Map<string, string[]>();
      for await (const { id, unique } of entries()) {
        for (const key of unique) {
          const held = first.get(key);
          if (held === undefined) {
            first.set(key, id);
            continue;
          }
          const [type, field, value] = uniqueKeyParts(key);
          if (!wasUnique.has(`${type}${SEP}${field}`)) {
            throw new MeridianError('bad-request', `the schema makes ${type}.${field} unique, but ${held} and ${id} both hold "${value}"; start with the schema as it was and change one of them, or leave the field not unique`);
          }
          const ids = twice.get(key);
          if (ids) ids.push(id);
          else twice.set(key, [held, id]);
        }
      }
      // (once the open cannot be refused: the records of values held twice name them as the folding
      // they were made under left them)
      refolded = this.refoldClashes(wasUnique);
      // Of the objects holding a value twice, those with no open record of the clash may hold the entry.
      // Of several (values that fold alike only now), the one the entry names already keeps it, so that
      // a look-alike does not take a mail its holder signs in with; then the one records name; then the least id.
      for (const [key, ids] of twice) {
        const free = ids.filter((id) => !this.clashRecorded(id, key));
        const owner = (await this.db.get(key))?.toString('utf8');
        const named = ids.map((id) => this.clashRecordOf(id, key)).map((r) => r && uniqueHolderOf(r[1])).find((h) => h !== undefined && free.includes(h));
        holders.set(key, owner !== undefined && free.includes(owner) ? owner : (named ?? free[0] ?? ids[0]!));
      }
    }
    await this.commits.add([...refolded, { type: 'put', key: keys.meta('indexPending'), value: encode([...names]) }]);
    let ops: BatchOp[] = [];
    const flushIfFull = async (): Promise<void> => {
      if (ops.length < REINDEX_BATCH) return;
      await this.commits.add(ops);
      ops = [];
    };
    for (const c of changed) {
      const ranges = c.field === '' ? [rebuiltRange({ ...c, is: 'type' })] : (['u', 'x'] as const).map((kind) => keys.indexRange(kind, c.type, c.field));
      for (const range of ranges) {
        for await (const key of this.db.keys(range)) {
          ops.push({ type: 'del', key });
          await flushIfFull();
        }
      }
    }
    // (the deletes reach the disk before the puts, so a key both deleted and put ends up put)
    if (ops.length) await this.commits.add(ops);
    ops = [];
    // the types whose index is rebuilt are counted again, from their live objects
    const counted = changed.filter((c) => c.field === '').map((c) => c.type);
    let about = 0;
    for (const n of this.counts.values()) about += n;
    for (const type of counted) this.counts.delete(type);
    const progress = this.onReindexProgress && ((read: number): void => this.onReindexProgress!({ read, about }));
    // in id order: the least id holds a value made unique
    for await (const { id, type, plain, unique } of entries(progress)) {
      for (const key of plain) {
        ops.push({ type: 'put', key, value: EMPTY });
        if (key.startsWith('t')) this.counts.set(type, (this.counts.get(type) ?? 0) + 1);
      }
      for (const key of unique) {
        const holder = holders.get(key) ?? id;
        if (holder === id) {
          ops.push({ type: 'put', key, value: Buffer.from(id) });
          continue;
        }
        // Every other holder has a record naming the holder, as replication leaves a clash: one held twice
        // only as the rebuild folds (a dir of a build that folded otherwise) has none yet, and one made when
        // another object held the entry names that one.
        const recorded = this.clashRecordOf(id, key);
        const [, field, value] = uniqueKeyParts(key);
        if (!recorded) ops.push(this.clashOp(id, type, field, value, holder, undefined));
        else if (uniqueHolderOf(recorded[1]) !== holder) ops.push(...this.remakeClash(id, recorded[0], recorded[1], value, holder));
      }
      await flushIfFull();
    }
    if (counted.length) ops.push({ type: 'put', key: keys.meta('counts'), value: encode(Object.fromEntries(this.counts)) });
    // The types rebuilt for the schema now have their index and count; those that left it have
    // neither, and are rebuilt if they come back.
    let untypedChanged = false;
    for (const c of changed) {
      if (c.field !== '') continue;
      if (c.is === 'type') untypedChanged = this.untyped.delete(c.type) || untypedChanged;
      else if (!this.untyped.has(c.type)) {
        this.untyped.add(c.type);
        untypedChanged = true;
      }
    }
    if (untypedChanged) ops.push({ type: 'put', key: keys.meta('untyped'), value: encode([...this.untyped]) });
    ops.push(layoutOp, { type: 'del', key: keys.meta('indexPending') });
    await this.commits.add(ops);
  }

  /**
   * Records of unique values held twice, of the fields `fields` names, made
   * again under the value as it folds now, where that differs from what
   * they name: the rebuild finds who holds what by them (clashRecorded),
   * and each would otherwise wait for an entry no object holds. Changes
   * the records in memory; returns what puts them on disk.
   */
  private refoldClashes(fields: ReadonlySet<string>): BatchOp[] {
    const ops: BatchOp[] = [];
    for (const [objectId, open] of [...this.openConflicts]) {
      for (const [k, rec] of [...open]) {
        const f = this.schema.types.get(rec.type)?.fields.get(rec.field);
        if (!f || !isUniqueConflict(rec) || !fields.has(`${rec.type}${SEP}${rec.field}`)) continue;
        const was = String(rec.values[0]!.value);
        const now = foldValue(f, was);
        if (now === was) continue;
        ops.push(...this.remakeClash(objectId, k, rec, now, uniqueHolderOf(rec)));
      }
    }
    return ops;
  }

  /** Whether the object has an open record of a clash over this unique key (it is not the entry's holder). */
  private clashRecorded(objectId: string, key: string): boolean {
    return this.clashRecordOf(objectId, key) !== undefined;
  }

  /** The object's open record of a clash over this unique key, with its key, if it has one. */
  private clashRecordOf(objectId: string, key: string): [string, ConflictRecord] | undefined {
    for (const [k, rec] of this.openConflicts.get(objectId) ?? []) if (isUniqueConflict(rec) && uniqueKeyOf(rec) === key) return [k, rec];
    return undefined;
  }

  /**
   * Brings the open records of unique values held twice in line with the
   * objects, at open, before a release relies on them to pass an entry on.
   * Builds before the hand-off left records open on objects since deleted
   * or merged away from the value, and entries deleted while a recorded
   * holder still had the value; a schema change may make a field not
   * unique. Reads only the objects of open unique records, which are few.
   */
  private async repairUniqueClashes(): Promise<void> {
    if (this.uniqueWaiters.size === 0) return;
    const hlc = this.clock.current;
    const held = new Map<string, Set<string>>();
    const holds = async (id: string, key: string): Promise<boolean> => {
      let set = held.get(id);
      if (!set) {
        const buf = await this.db.get(keys.object(id));
        const rec = buf === undefined ? undefined : decode<ObjectRecord>(buf);
        const def = rec && this.schema.types.get(rec.t);
        held.set(id, (set = rec && def ? indexSet(def, id, rec.f, rec.d).unique : new Set<string>()));
      }
      return set.has(key);
    };
    const ops: BatchOp[] = [];
    for (const [key, ids] of [...this.uniqueWaiters]) {
      const owner = (await this.db.get(key))?.toString('utf8');
      for (const id of [...ids]) {
        if (id !== owner && (await holds(id, key))) continue;
        for (const [k, rec] of [...this.openConflicts.get(id)!]) if (isUniqueConflict(rec) && uniqueKeyOf(rec) === key) ops.push(this.settleConflict(id, k, rec, hlc));
      }
      if (this.uniqueWaiters.has(key) && (owner === undefined || !(await holds(owner, key)))) ops.push(...this.passEntry(key, undefined, hlc).ops);
    }
    if (ops.length) await this.commits.add(ops);
  }

  /**
   * The index entries a stored record has, by its own type: a remote change
   * or merged state may change the type (two masters created one id as two
   * types, and Yjs kept one), and the old type's entries must go.
   */
  private indexedAs(id: string, cur: ObjectRecord | null): IndexSet {
    const def = cur ? this.schema.types.get(cur.t) : undefined;
    return cur && def ? indexSet(def, id, cur.f, cur.d) : EMPTY_INDEX;
  }

  /**
   * Records of the unique values `id` takes up that another object holds
   * here already (the claim names it): the first holder keeps the index
   * entry and the newcomer's record says so. Returns the fields clashing.
   */
  private uniqueClashes(id: string, type: string, node: string | undefined, before: IndexSet, after: IndexSet, claims: readonly Slot<CachedClaim>[]): { ops: BatchOp[]; fields: Set<string> } {
    const ops: BatchOp[] = [];
    const fields = new Set<string>();
    for (const k of after.unique) {
      if (before.unique.has(k)) continue;
      const owner = claims.find((s) => s.key === k)?.value.owner;
      if (!owner || owner === id) continue;
      const [, field, value] = uniqueKeyParts(k);
      ops.push(this.clashOp(id, type, field, value, owner, node));
      fields.add(field);
    }
    return { ops, fields };
  }

  /** Whether the object has a conflict of concurrent writes open, which its record then says (ObjectRecord.x). */
  private hasWriteConflict(objectId: string): boolean {
    for (const rec of this.openConflicts.get(objectId)?.values() ?? []) if (!isUniqueConflict(rec)) return true;
    return false;
  }

  /** Recorded conflicts in object order; `open` leaves out settled ones. */
  async conflicts(opts: { open?: boolean; limit?: number; after?: string } = {}): Promise<Page<ConflictRecord & { key: string }>> {
    this.assertOpen();
    const limit = clampLimit(opts.limit);
    // the cursor is a raw key bound: one outside the conflicts' key space would read other records as conflicts
    if (opts.after !== undefined && !opts.after.startsWith('k')) {
      throw new MeridianError('bad-request', 'that cursor was not given by a list of conflicts; list them again without it');
    }
    const items: (ConflictRecord & { key: string })[] = [];
    let next: string | undefined;
    for await (const [k, v] of this.db.iterator({ gt: opts.after ?? 'k', lt: `k${HIGH}` })) {
      const rec = decode<ConflictRecord>(v);
      if (opts.open && rec.settled !== undefined) continue;
      // Writers are named when shown, as they are known now: a conflict found in a merged state (a
      // clone's, or anti-entropy's) may predate any change of its writer here, and the vector that names its space.
      if (!isUniqueConflict(rec)) for (const val of rec.values) val.node ??= this.nodeOfClient(parseItemId(val.item)?.client ?? 0);
      if (items.length === limit) {
        next = items[items.length - 1]!.key;
        break;
      }
      items.push({ ...rec, key: k });
    }
    return { items, next };
  }

  openConflictCount(): number {
    let n = 0;
    for (const m of this.openConflicts.values()) n += m.size;
    return n;
  }

  /**
   * Every feed tag known, by node id: each shown by the node when this one
   * first met it, or told by a peer that knew it. A checkpoint and a vector
   * entry for a node count in that feed; replication refuses a node, or a
   * peer that knows it, under another one (its data dir was made again).
   */
  knownFeeds(): Record<string, string> {
    return Object.fromEntries(this.peerFeeds);
  }

  /**
   * Checks the feed tags a peer showed (its own, and those it knows) against
   * what this node knows, its own tag included. With `take`, those first
   * seen are taken at once, in memory, so that a session checking meanwhile
   * sees them, and are queued into the batch being filled (saveFeeds waits
   * for it). On the first that differs,
   * or a word refused, or `busy`, it takes nothing and returns it.
   *
   * The tags the peer forgot (`forgotten`, see forgetFeed) are forgotten
   * here too, whatever `take`, unless this node runs on such a dir or holds
   * a change of one: then it is refused (`forgot`), so that no change of a
   * dir forgotten reaches a node told, where the new dir's would be taken
   * for it. A tag forgotten here is neither taken again nor refused when
   * shown: the peer that shows it is told in the same handshake, and takes
   * the word or refuses it.
   */
  claimFeeds(feeds: Record<string, string>, take: boolean, forgotten: Record<string, string[]> = {}): FeedClaim {
    const newlyForgotten = new Map<string, string[]>();
    const forgottenOf = (node: string): string[] => [...(this.forgotten.get(node) ?? []), ...(newlyForgotten.get(node) ?? [])];
    for (const [node, tags] of Object.entries(forgotten)) {
      for (const tag of tags) {
        if (node === this.nodeId && tag === this.feedTag) return { node, known: tag, shown: tag, forgot: true };
        if (forgottenOf(node).includes(tag)) continue;
        // The changes held of a node whose tag is the one forgotten, or of one whose tag this node never learned
        // (they came before it could: an older build, or a session older than the peer's meeting with the node),
        // may be that dir's. Those of a node known by another tag are that other dir's. (An old tag of this
        // node's own id is kept to pass on: the nodes that met only this dir are told too.)
        const known = node === this.nodeId ? this.feedTag : this.peerFeeds.get(node);
        if (known === undefined || known === tag) {
          const holds = this.holdsOf(node);
          if (holds > 0) return { node, known: tag, shown: tag, forgot: true, holds };
        }
        newlyForgotten.set(node, [...(newlyForgotten.get(node) ?? []), tag]);
      }
    }
    if (newlyForgotten.size > 0 && this.remoteWrites > 0) return { busy: true };
    const fresh: [string, string][] = [];
    for (const [node, shown] of Object.entries(feeds)) {
      if (forgottenOf(node).includes(shown)) continue;
      let known = node === this.nodeId ? this.feedTag : this.peerFeeds.get(node);
      if (known !== undefined && newlyForgotten.get(node)?.includes(known)) known = undefined;
      if (known === undefined) fresh.push([node, shown]);
      else if (known !== shown) return { node, known, shown };
    }
    const drops: string[] = [];
    for (const [node, tags] of newlyForgotten) if (this.retire(node, tags)) drops.push(node);
    if (take) for (const [node, shown] of fresh) this.peerFeeds.set(node, shown);
    if (newlyForgotten.size > 0 || (take && fresh.length > 0)) void this.writeFeeds(drops, newlyForgotten.size > 0);
    return { taken: fresh.length };
  }

  /**
   * Moves tags of `node` to the forgotten, in memory. Returns whether its
   * checkpoint must go (see writeFeeds): unless another dir of it is known
   * (a new dir's feed starts from 1, and a checkpoint with no tag known may
   * be in a forgotten dir's feed). Sessions opened before apply no more
   * (see feedsEpoch).
   */
  private retire(node: string, tags: string[]): boolean {
    const known = this.peerFeeds.get(node);
    this.forgotten.set(node, [...(this.forgotten.get(node) ?? []), ...tags]);
    this.feedsEpochNow++;
    if (known !== undefined && !tags.includes(known)) return false;
    this.peerFeeds.delete(node);
    return node !== this.nodeId;
  }

  /**
   * Queues the tags known and forgotten, with the deletes of the
   * checkpoints `drops`, into the batch being filled; with `forgot`, the
   * forget listeners are told once it is on disk. (The batch after a failed
   * one fails too: the store takes no write after that.) Returns the write.
   */
  private writeFeeds(drops: string[], forgot: boolean): Promise<void> {
    const ops: BatchOp[] = [{ type: 'put', key: keys.meta('peerFeeds'), value: encode(Object.fromEntries(this.peerFeeds)) }];
    if (this.forgotten.size > 0) ops.push({ type: 'put', key: keys.meta('forgottenFeeds'), value: encode(Object.fromEntries(this.forgotten)) });
    for (const node of drops) ops.push({ type: 'del', key: keys.checkpoint(node) });
    // (caught by the group commit, as every write is: its awaiters, through saveFeeds, see a failure)
    this.feedsSaving = this.commits.add(ops, forgot ? () => tellAll(this.forgetListeners) : undefined);
    return this.feedsSaving;
  }

  /**
   * Grows each time feed tags are forgotten, in memory at once. A session
   * whose tags passed at its auth under an older one has a peer that was
   * not told, and may bring a change of a dir forgotten, or a position in
   * its feed: it must open again before it applies anything (see the sync
   * executor).
   */
  get feedsEpoch(): number {
    return this.feedsEpochNow;
  }

  /** The feed tags forgotten here, by node id (see forgetFeed). */
  forgottenFeeds(): Record<string, string[]> {
    return Object.fromEntries([...this.forgotten].map(([node, tags]) => [node, [...tags]]));
  }

  /**
   * Calls `fn` once a batch that forgot feed tags (forgetFeed, or a peer's
   * word in claimFeeds) is on disk: sessions opened before must open again
   * to pass the word on before the new dir's changes could follow. Returns
   * the unsubscribe.
   */
  onFeedsForgotten(fn: () => void): () => void {
    this.forgetListeners.add(fn);
    return () => this.forgetListeners.delete(fn);
  }

  /** How many changes made by `node` this node holds. */
  private holdsOf(node: string): number {
    return this.vector.held(node);
  }

  /**
   * Runs an apply of what a peer sent (changes, states, a run's end),
   * counted from its call, before any await, until its vector entries and
   * checkpoint are in a batch. Feed tags are forgotten only when none runs
   * (claimFeeds, forgetFeed): one begun before could bring a forgotten
   * dir's change after holdsOf looked, or its checkpoint after the forget's
   * delete; one begun after is a session's that passed the feedsEpoch check.
   */
  private async remote<T>(fn: () => Promise<T>): Promise<T> {
    this.remoteWrites++;
    try {
      return await fn();
    } finally {
      if (--this.remoteWrites === 0) for (const wake of this.remoteQuiet) wake();
    }
  }

  /**
   * Forgets the feed tag known for `node`, so that the node may come back
   * on a data dir made again under its old id (one lost in its first clone,
   * say): the operator's word that the old dir's changes are nowhere. The
   * tag is kept as forgotten, this node's position in that feed goes, and
   * every peer is told at its next session (see claimFeeds). Refused while
   * this node holds a change the node made: the new dir would number its own
   * from 1 again, and they would be taken for those. Returns the tag
   * forgotten, once on disk.
   */
  async forgetFeed(node: string): Promise<string> {
    this.assertOpen();
    if (node === this.nodeId) throw new MeridianError('bad-request', `${node} is this node; forget its feed on the nodes that refuse it`);
    const known = this.peerFeeds.get(node);
    if (known === undefined) {
      const gone = this.forgotten.get(node);
      throw new MeridianError('not-found', gone ? `the feed of ${node} was forgotten here already (${gone.join(', ')}), and no new one taken since` : `this node knows no feed of ${node}; check the node id against "meridian peers"`);
    }
    // (the count looked at, and the tag forgotten, in one synchronous stretch: an apply begun between a wake and
    // the retire would land after holdsOf looked, and its checkpoint after the delete)
    const deadline = Date.now() + FORGET_WAIT_MS;
    while (this.remoteWrites > 0) await this.remotePause(deadline);
    // (looked at again: a session may have taken a tag, or brought a change, meanwhile)
    const now = this.peerFeeds.get(node);
    if (now !== known) throw new MeridianError('conflict', `${node}'s feed changed from ${known} to ${now ?? 'none'} while this waited for replication to pause; run forget-feed again if that one should go too`);
    const holds = this.holdsOf(node);
    if (holds > 0) {
      throw new MeridianError('conflict', `this node holds ${holds} change${holds === 1 ? '' : 's'} made by ${node} in its feed ${known}, which a new dir under that id would pass its own off as; start ${node} under a new --node-id instead`);
    }
    // (its checkpoint goes: no other dir of it is known, and it is not this node)
    this.retire(node, [known]);
    await this.writeFeeds([node], true);
    return known;
  }

  /** Settles at the next moment no apply of what a peer sent runs (see remote), or at `deadline`; fails 'busy' past it. */
  private async remotePause(deadline: number): Promise<void> {
    const left = deadline - Date.now();
    if (left <= 0) throw new MeridianError('busy', `replication applied what peers sent without a pause for ${FORGET_WAIT_MS / 1000} s; try again`);
    let wake!: () => void;
    const quiet = new Promise<void>((r) => (wake = r));
    const timer = setTimeout(wake, left);
    this.remoteQuiet.add(wake);
    try {
      await quiet;
    } finally {
      clearTimeout(timer);
      this.remoteQuiet.delete(wake);
    }
  }

  /** Settles once every feed tag taken or forgotten so far is on disk (see writeFeeds). */
  saveFeeds(): Promise<void> {
    this.assertOpen();
    return this.feedsSaving;
  }

  /** The last feed seq of `peer` this node has applied (0 if none). */
  async checkpoint(peer: string): Promise<number> {
    this.assertOpen();
    const v = await this.db.get(keys.checkpoint(peer));
    return v === undefined ? 0 : decode<number>(v);
  }

  /**
   * The changes this node holds without their feed entries: empty, unless
   * it was cloned, in which case it is the vector of the state it was cloned
   * from. A peer whose vector does not cover it cannot be served from the
   * feed alone.
   */
  feedBase(): Record<string, number> {
    return { ...this.base };
  }

  /**
   * Calls `fn` once a batch that raised the feed base over changes held
   * ahead without feed entries (see batchTrailer) is on disk: peers
   * following this feed may lack them, and must subscribe again to be
   * compared with the base. (The end of a states run raises the base as
   * well; its caller knows.) Returns the unsubscribe.
   */
  onFeedBaseRaised(fn: () => void): () => void {
    this.baseListeners.add(fn);
    return () => this.baseListeners.delete(fn);
  }

  /**
   * A consistent read of every object's stored record, for cloning another
   * node. `head` and `vector` describe at least what the records hold (a
   * batch landing while the snapshot is taken may add a little more, which
   * the feed from `head` then re-delivers and Yjs merges as a no-op).
   */
  stateSnapshot(): StateSnapshot {
    this.assertOpen();
    let head = this.durableSeq;
    const vector = this.durableVector.toObject();
    // A change held ahead of a gap is in the records but not in the vector: the peer's cursor
    // starts before its feed entry, which then reaches the peer's vector (and feed) as well.
    // One the feed no longer holds (trimmed, or cloned here ahead, seq 0) is named in `ahead`
    // instead: a cursor before the feed's start would send the peer to anti-entropy at every session.
    const ahead: [string, number][] = [];
    for (const [origin, held] of this.aheadAt) {
      for (const [n, seq] of held) {
        if (n <= vectorEntry(vector, origin)) continue;
        if (seq > this.trimmingTo) head = Math.min(head, seq - 1);
        // (as many as a frame carries; more would take a gap this long in the feed's retention)
        else if (ahead.length < MAX_AHEAD_SENT) ahead.push([origin, n]);
      }
    }
    const snapshot = this.db.snapshot();
    // LevelDB's iterator fills 16 KiB by default: 25 records a read, which
    // made cloning a matter of round trips; read in 1 MiB chunks.
    const range = { gte: keys.objectPrefix, lt: keys.objectPrefix + HIGH, snapshot, highWaterMarkBytes: 1024 * 1024 };
    const markers = { gte: keys.purgedPrefix, lt: keys.purgedPrefix + HIGH, snapshot, highWaterMarkBytes: 1024 * 1024 };
    const db = this.db;
    const nodeId = this.nodeId;
    let closed = false;
    return {
      head,
      vector,
      ahead,
      digest: (bits = 8) => digestRecords(db.iterator(range), bits, undefined, undefined, () => db.iterator(markers)),
      async *batches(batch = 500, page?: SnapshotPage) {
        async function* idempotencyRecords(batch: number): AsyncGenerator<ClonedState[]> {
          const it = db.iterator({ gte: keys.idempotencyPrefix, lt: keys.idempotencyPrefix + HIGH, snapshot, highWaterMarkBytes: range.highWaterMarkBytes });
          try {
            for (;;) {
              const entries = await it.nextv(batch);
              if (entries.length === 0) break;
              const records = entries.flatMap(([k, v]): ClonedState[] => {
                const { write: w, bytes } = withOrigin(v, nodeId);
                // A write that changed nothing stays here: it named no change of its own for a peer to wait
                // for, and its vector could outgrow what the wire takes of a record.
                if (w.need !== undefined) return [];
                return [{ key: k.slice(1), record: bytes, origin: w.origin, originSeq: w.originSeq }];
              });
              if (records.length) yield records;
            }
          } finally {
            await it.close();
          }
        }
        // No bucket differs: no object to send, but the records still go (the receiver holds every
        // state, so it stores them at once), else a run cut short after its states were stored
        // would leave them unsent for good.
        if (page?.buckets.size === 0) {
          if (page.after === undefined) yield* idempotencyRecords(batch);
          return;
        }
        const inPage = (k: string): boolean => !page || page.buckets.has(bucketOf(k.slice(1), page.bits));
        // (a range option present but undefined is a bound all the same in abstract-level: leave it out)
        const objects = {
          ...(page?.after === undefined ? { gte: range.gte } : { gt: keys.object(page.after) }),
          ...(page?.upTo === undefined ? { lt: range.lt } : { lte: keys.object(page.upTo) }),
          snapshot,
          highWaterMarkBytes: range.highWaterMarkBytes,
        };
        // Markers first (on an anti-entropy run's first page): the receiver then refuses the purged
        // objects a third node may still send it.
        const scans = page?.after === undefined ? ([[markers, true], [objects, false]] as const) : ([[objects, false]] as const);
        for (const [opts, purged] of scans) {
          // The idempotency records next, once a run (a clone, or an anti-entropy run's first page),
          // before the objects: the receiver stores each once the run has passed its object, and meanwhile
          // has a resend under one of their keys wait for that, which it can do only once it knows the key,
          // so before the state holding the key's change is in.
          if (!purged && page?.after === undefined) yield* idempotencyRecords(batch);
          const it = db.iterator(opts);
          try {
            for (;;) {
              const entries = await it.nextv(batch);
              if (entries.length === 0) break;
              const out: ClonedState[] = [];
              for (const [k, v] of entries) {
                if (!inPage(k)) continue;
                const id = k.slice(1);
                const held = purged ? undefined : page?.have.get(id);
                if (purged) out.push({ id, record: v, purged });
                else if (!held) out.push({ id, record: v });
                else {
                  const rec = decode<ObjectRecord>(v);
                  // The version covers integrated items only: items Yjs keeps pending (their
                  // dependencies not yet here) are looked for in the structs themselves.
                  // A record without its state is one writer's items from clock 0, none pending and none
                  // deleted: the same version means the peer holds them all, with no rebuild to tell.
                  if (rec.v === held.version && rec.y === undefined) continue;
                  const state = recordState(rec);
                  if (rec.v !== held.version || !holdsItemsOf(held.sv, state)) {
                    out.push({ id, diff: Y.diffUpdate(state, held.sv), hlc: rec.h });
                  }
                }
              }
              if (out.length) yield out;
            }
          } finally {
            await it.close();
          }
        }
      },
      close: async () => {
        if (closed) return;
        closed = true;
        await snapshot.close();
      },
    };
  }

  /**
   * The objects this node holds in the given digest buckets, in id order
   * after `after`, with their state vectors and versions: one page of what
   * a peer compares against when anti-entropy repairs this node. At most
   * `limit` objects and about HELD_PAGE_BYTES; `end` once the last object is in.
   */
  async heldStates(opts: { buckets: ReadonlySet<number>; bits: number; after?: string | undefined; limit: number }): Promise<{ held: HeldState[]; end: boolean }> {
    this.assertOpen();
    const held: HeldState[] = [];
    let bytes = 0;
    const it = this.db.iterator({ ...(opts.after === undefined ? { gte: keys.objectPrefix } : { gt: keys.object(opts.after) }), lt: keys.objectPrefix + HIGH, highWaterMarkBytes: 1024 * 1024 });
    try {
      for (;;) {
        const entries = await it.nextv(1000);
        if (entries.length === 0) return { held, end: true };
        for (const [k, v] of entries) {
          const id = k.slice(1);
          if (!opts.buckets.has(bucketOf(id, opts.bits))) continue;
          if (held.length >= opts.limit || bytes >= HELD_PAGE_BYTES) return { held, end: false };
          const rec = decode<ObjectRecord>(v);
          const sv = recordStateVector(rec);
          held.push({ id, sv, version: rec.v });
          bytes += id.length + sv.length + rec.v.length + 16;
        }
      }
    } finally {
      await it.close();
    }
  }

  /**
   * Every record of this node's LevelDB as of one snapshot read, in key
   * order, for `meridian backup`: writes go on meanwhile, and since each
   * change is one atomic batch the snapshot holds whole changes only, with
   * indexes, feed and vector that agree.
   */
  backupSnapshot(): { header: BackupHeader; batches: AsyncGenerator<[string, Uint8Array][]>; count(): Promise<number>; close(): Promise<void> } {
    this.assertOpen();
    // (it held only what the clone had brought so far, and said so nowhere: restored alone, as after losing
    // every node, it served part of the data as the whole)
    if (this.cloning) throw new MeridianError('conflict', 'this node is still cloning from its peers, so a backup now would hold only part of the data; back it up once the clone has ended, or back up a peer');
    const snapshot = this.db.snapshot();
    const header: BackupHeader = {
      format: BACKUP_FORMAT,
      version: BACKUP_VERSION,
      node: this.nodeId,
      incarnation: this.incarnation,
      taken: new Date().toISOString(),
      head: this.durableSeq,
      vector: this.durableVector.toObject(),
      // (Store.open refused a dir of any other)
      storage: STORAGE_FORMAT,
    };
    const db = this.db;
    let closed = false;
    async function* batches(): AsyncGenerator<[string, Uint8Array][]> {
      const it = db.iterator({ snapshot, highWaterMarkBytes: 1024 * 1024 });
      try {
        for (;;) {
          const entries = await it.nextv(1000);
          if (entries.length === 0) return;
          yield entries;
        }
      } finally {
        await it.close();
      }
    }
    return {
      header,
      batches: batches(),
      // keys only, for a progress bar: LevelDB's size estimates leave out its memtable, most of a young store
      count: async () => {
        let n = 0;
        const it = db.keys({ snapshot });
        try {
          for (let ks = await it.nextv(10_000); ks.length; ks = await it.nextv(10_000)) n += ks.length;
        } finally {
          await it.close();
        }
        return n;
      },
      close: async () => {
        if (closed) return;
        closed = true;
        await snapshot.close();
      },
    };
  }

  /**
   * This node's object digest in 2^bits buckets (see digest.ts), with the
   * changes it covers. Objects, purge markers and position come from one
   * snapshot: read live, a purge landing between the object scan and the
   * marker scan was counted twice, a digest of no state the node ever held.
   */
  digest(bits = 4, onProgress?: (objects: number) => void): Promise<PositionedDigest> {
    this.assertOpen();
    const snapshot = this.db.snapshot();
    return this.positioned(snapshot, () =>
      digestRecords(this.db.iterator({ gte: keys.objectPrefix, lt: keys.objectPrefix + HIGH, snapshot }), bits, onProgress, undefined, () =>
        this.db.iterator({ gte: keys.purgedPrefix, lt: keys.purgedPrefix + HIGH, snapshot }),
      ),
    );
  }

  /**
   * A digest of the live objects' visible content (id, type and every field
   * but passwords), independent of their Yjs history: what an XML export
   * carries, so an export imported into an empty node has the same one.
   */
  contentDigest(bits = 4): Promise<PositionedDigest> {
    this.assertOpen();
    const snapshot = this.db.snapshot();
    return this.positioned(snapshot, () =>
      digestRecords(this.db.iterator({ gte: keys.objectPrefix, lt: keys.objectPrefix + HIGH, snapshot }), bits, undefined, (id, rec) => {
        if (rec.d) return undefined;
        const fields = publicFields(this.schema.types.get(rec.t), rec.f);
        const canonical = JSON.stringify(Object.keys(fields).sort().map((f) => [f, fields[f]]));
        return createHash('sha1').update(id).update('\0').update(rec.t).update('\0').update(canonical).digest();
      }),
    );
  }

  private async positioned(snapshot: ReturnType<Level<string, Buffer>['snapshot']>, read: () => Promise<StoreDigest>): Promise<PositionedDigest> {
    try {
      const digest = await read();
      const { vector, ahead, seq } = await readPosition(this.db, snapshot);
      const trimmedTo = await this.db.get(keys.meta('trimmedTo'), { snapshot });
      return {
        ...digest,
        at: {
          head: Math.max(seq, trimmedTo === undefined ? 0 : decode<number>(trimmedTo)),
          vector: Object.fromEntries([...vector].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))),
          // (a key the vector already covers is one whose removal has not landed: it adds nothing)
          ahead: ahead
            .filter(([origin, originSeq]) => originSeq > (vector.get(origin) ?? 0))
            .map(([origin, originSeq]): [string, number] => [origin, originSeq])
            .sort(([a, x], [b, y]) => (a < b ? -1 : a > b ? 1 : x - y)),
        },
      };
    } finally {
      await snapshot.close();
    }
  }


  /**
   * Stores object records streamed from a peer as they are, with no Yjs
   * work: the fast path for a node that starts empty. With `done`, the
   * peer's vector becomes this node's vector and feed base, and the peer's
   * checkpoint is set to the snapshot's feed position, in the same batch,
   * with the idempotency records given, once these states and every state
   * staged before them are on disk, and only if every frame of its `run`
   * (cloneStatesStaged) was stored.
   */
  cloneStates(states: ClonedState[], done?: SnapshotEnd & { peer: string }, opts?: { clone?: boolean; run?: object }): Promise<void> {
    return this.remote(() => this.cloneStatesNow(states, done, opts));
  }

  private async cloneStatesNow(states: ClonedState[], done?: SnapshotEnd & { peer: string }, opts?: { clone?: boolean; run?: object }): Promise<void> {
    // A peer cannot hold more of this node's changes than it made: claimed, this node would number its next ones
    // past a gap, or take them as held (the session's sub refuses a data dir rolled back; this is the last word).
    const ofMe = Math.max(done ? vectorEntry(done.vector, this.nodeId) : 0, ...(done?.ahead ?? []).filter(([o]) => o === this.nodeId).map(([, n]) => n));
    if (ofMe > this.vector.get(this.nodeId)) {
      throw new MeridianError('bad-request', `${done!.peer}'s snapshot holds changes of ${this.nodeId} up to ${ofMe}, and ${this.nodeId} itself only up to ${this.vector.get(this.nodeId)}: this data dir is older than the changes it made (a copy put back, or a disk that lost writes); start it on an empty --dir under a new --node-id, or restore a backup`);
    }
    // The run's idempotency records not stored yet go in the last batch, with the vector (see cloneStatesStaged).
    const keyed = done ? states.flatMap((s) => ('key' in s ? [checkedKeyRecord(s.key, s.record)] : [])) : [];
    const { durable } = await this.cloneStatesStagedNow(keyed.length ? states.filter((s) => !('key' in s)) : states, opts);
    await durable;
    // (the vector below must not claim a run some frame of which was not stored, records or not)
    if (done && opts?.run && !(await this.runsStaged.get(opts.run))) {
      throw new MeridianError('busy', RUN_NOT_STORED);
    }
    if (done) {
      // only now: the vector must never claim what is not on disk
      const doneOps: BatchOp[] = await this.absentRecords(keyed);
      // The durable and visible vectors move once the batch below is on disk, as persist moves them: a
      // snapshot served meanwhile (a peer's clone, a backup) took its vector from the durable one, raised
      // over this run, and its records from the disk, without the run's idempotency records still in that
      // batch; a peer cloned from it never got them (its vector said it had those changes), and made a
      // resent keyed write again.
      const raised: [string, number][] = [];
      const added: [string, number][] = [];
      for (const [origin, n] of Object.entries(done.vector)) {
        this.vector.raise(origin, n);
        raised.push([origin, n]);
        this.dirtyVector.add(origin);
        this.base[origin] = Math.max(vectorEntry(this.base, origin), n);
      }
      // Changes the records hold past a gap, whose feed entries the peer no longer had: held ahead here too,
      // with no feed entry of their own (seq 0), so that a snapshot taken here passes them on the same way.
      for (const [origin, n] of done.ahead ?? []) {
        if (this.vector.has(origin, n)) continue;
        // (Not in the feed base yet, though no feed entry here carries it: a sub's vector is contiguous, so every
        // peer that holds it ahead too would look as if it lacked it, and be repaired at every session while the
        // gap lasts. The batch that fills the gap raises the base over it: see batchTrailer.)
        this.noteAhead(origin, n, 0, doneOps);
        this.vector.add(origin, n);
        added.push([origin, n]);
        this.dirtyVector.add(origin);
      }
      doneOps.push({ type: 'put', key: keys.meta('feedBase'), value: encode(this.base) });
      doneOps.push(checkpointOp({ peer: done.peer, seq: done.head }));
      // (only a clone's own end: another peer's clone may still be under way, or an anti-entropy run end meanwhile)
      const finished = this.cloning && opts?.clone === true;
      if (finished) doneOps.push({ type: 'del', key: keys.meta('cloning') });
      await this.commits.add(doneOps, () => {
        for (const [origin, n] of raised) {
          this.durableVector.raise(origin, n);
          this.pruneAhead(origin);
          this.visibleVector.raise(origin, n);
        }
        for (const [origin, n] of added) {
          if (this.durableVector.add(origin, n)) this.pruneAhead(origin);
          this.visibleVector.add(origin, n);
        }
        for (const fn of this.visibleListeners) fn();
      });
      if (finished) this.cloning = false;
      if (keyed.length) this.recordsStored();
    }
  }

  /**
   * A clone began here and its last frame has not been stored: the node
   * still counts as empty and asks to be cloned again. (The purge markers a
   * clone sends first are applied as changes, with feed and vector entries,
   * so after them alone the store no longer looks empty.)
   */
  cloneUnfinished(): boolean {
    return this.cloning;
  }

  /**
   * As cloneStates without `done`, but resolves once the states are held
   * here (readers see them once on disk), with `durable` settling when they and every state
   * staged before them are on disk, and then the idempotency records given
   * with them (rejected, and none stored, if a frame before this one in its
   * `run` was not stored): a cloning session decodes its next frame while
   * this one is synced. Waiting for each frame's fsync left the receiver
   * idle for a quarter of a clone (profiled).
   */
  cloneStatesStaged(states: ClonedState[], opts?: { clone?: boolean; run?: object }): Promise<{ durable: Promise<void> }> {
    return this.remote(() => this.cloneStatesStagedNow(states, opts));
  }

  private async cloneStatesStagedNow(states: ClonedState[], opts?: { clone?: boolean; run?: object }): Promise<{ durable: Promise<void> }> {
    this.assertOpen();
    // Idempotency records whose writes the states staged so far hold (the session tells which: those of
    // objects its run has passed) are stored once those states are on disk, never before: a record read
    // before the change it names is here would answer a resend with an object this node lacks.
    const keyed = states.flatMap((s) => ('key' in s ? [checkedKeyRecord(s.key, s.record)] : []));
    if (opts?.clone && !this.cloning) {
      this.cloning = true;
      // queued before the states: on disk no later than the first of them (a failed batch fails every later one)
      void this.commits.add([{ type: 'put', key: keys.meta('cloning'), value: encode(1) }]).catch(() => undefined);
    }
    // (the run's chain link is taken now, before any await: a frame refused while staging leaves the run failed)
    const before = (opts?.run && this.runsStaged.get(opts.run)) || Promise.resolve(true);
    let own: { durable: Promise<void> };
    try {
      own = await this.stageStates(keyed.length ? states.filter((s) => !('key' in s)) : states);
    } catch (e) {
      if (opts?.run) this.runsStaged.set(opts.run, Promise.resolve(false));
      throw e;
    }
    own.durable.catch(() => undefined); // (taken up below, once the frames before it have settled)
    // Settles, fulfilled or not, only after every earlier frame has: a frame
    // that fails at once (a refused merge) must not let later frames report
    // their batches on disk before earlier ones are.
    const states$ = this.stagedStates.then(() => own.durable);
    // Records also need every earlier frame of their run stored (`run`, a token per run): the states they
    // rely on may be those. Missing one, they are not stored and the frame fails, as its run then must.
    const durable = states$.then(async () => {
      if (keyed.length === 0) return;
      if (!(await before)) throw new MeridianError('busy', RUN_NOT_STORED);
      const puts = await this.absentRecords(keyed);
      if (puts.length === 0) return;
      await this.commits.add(puts);
      this.recordsStored();
    });
    this.stagedStates = durable.catch(() => undefined);
    if (opts?.run) {
      this.runsStaged.set(
        opts.run,
        durable.then(() => before, () => false),
      );
    }
    return { durable };
  }

  /** Wakes the resends waiting for records (idempotent()): some a run brought are stored before it ends. */
  private recordsStored(): void {
    const wake = this.wakeRecordWaiters;
    this.nextRecordsStored = new Promise<void>((r) => (this.wakeRecordWaiters = r));
    wake();
  }

  /** Puts of the idempotency records not held here: a key recorded here already (its write made or applied here) keeps its record. */
  private async absentRecords(keyed: { key: string; record: Uint8Array }[]): Promise<BatchOp[]> {
    if (keyed.length === 0) return [];
    const held = await this.db.getMany(keyed.map((k) => keys.idempotency(k.key)));
    return keyed.flatMap((k, n) => (held[n] === undefined ? [{ type: 'put' as const, key: keys.idempotency(k.key), value: k.record }] : []));
  }

  /** The states of cloneStatesStaged held and committed; `durable` settles when they are on disk. */
  private async stageStates(states: ClonedState[]): Promise<{ durable: Promise<void> }> {
    const items: { id: string; record: Uint8Array }[] = [];
    const merges: Promise<void>[] = [];
    const diffs: { id: string; diff: Uint8Array; hlc: number }[] = [];
    const markers: { id: string; marker: PurgeMarker }[] = [];
    for (const s of states) {
      if ('key' in s) throw new Error('idempotency records reach stageStates only through cloneStatesStaged');
      if ('diff' in s) {
        if (!isValidId(s.id)) throw new MeridianError('bad-request', `object id "${s.id.slice(0, 40)}" of a peer's diff is not valid`);
        diffs.push(s);
      } else if (!s.purged) items.push(s);
      // every marker is checked before the first is applied: a frame refused is refused whole
      else markers.push({ id: s.id, marker: checkedMarker(s.id, s.record) });
    }
    // every record is checked too before a marker is applied
    const decoded = items.map(({ id, record }) => {
      if (!isValidId(id)) throw new MeridianError('bad-request', `cloned object id "${id.slice(0, 40)}" is not valid`);
      const rec = decode<ObjectRecord>(record);
      // (a `v` that is no string would make every later digest of this store throw)
      if (!isObjectRecordShape(rec) || !holdsState(rec)) {
        throw new MeridianError('bad-request', `cloned object ${id} is not an object record`);
      }
      const def = this.schema.types.get(rec.t);
      return { id, record, rec, def, idx: def ? indexSet(def, id, rec.f, rec.d) : EMPTY_INDEX };
    });
    const feedless = this.feedlessFrame();
    try {
      return await this.stageChecked(decoded, diffs, markers, merges, feedless);
    } catch (e) {
      // (the parts begun may still reach the disk: the frame's number counts once they have)
      void Promise.allSettled(merges).then(feedless.settle);
      throw e;
    }
  }

  /** stageStates, once every part of the frame is checked: `merges` collects the parts begun. */
  private async stageChecked(
    decoded: { id: string; record: Uint8Array; rec: ObjectRecord; def: TypeDef | undefined; idx: IndexSet }[],
    diffs: { id: string; diff: Uint8Array; hlc: number }[],
    markers: { id: string; marker: PurgeMarker }[],
    merges: Promise<void>[],
    feedless: FeedlessFrame,
  ): Promise<{ durable: Promise<void> }> {
    // each marked id is purged here (in memory at once, so no object below takes it) before any object is stored;
    // their batches share fsyncs with the objects'
    for (const { id, marker } of markers) {
      const applied = (await this.applyPurgeMarker(id, marker, feedless)).durable;
      applied.catch(() => undefined); // (taken up with the frame's other parts below; an object's failure must not leave it unhandled)
      merges.push(applied);
    }
    const ops: BatchOp[] = [];
    const cloned: [Slot<CachedObject>, ObjectRecord][] = [];
    // An object stored while the read below ran (a write, another frame of a clone from two peers at once)
    // and on disk since may be neither in `present` nor, once its slot was evicted, in the cache: stored as
    // sent, this record would replace it without a merge, its change lost under a vector that claims it.
    // Such an object's slot was evicted during the read: those ids are read again.
    const watch = { ids: new Set(decoded.map((d) => d.id)), evicted: new Set<string>() };
    this.presenceReads.add(watch);
    let present: (Buffer | undefined)[];
    try {
      present = await this.db.getMany(decoded.map((d) => keys.object(d.id)));
    } finally {
      this.presenceReads.delete(watch);
    }
    // From here to the commit below nothing awaits, so no write can create
    // one of these objects in between; a load already under way resolves to
    // the cache entry set here.
    // Unique values held already (on disk, or by a write or an earlier frame
    // still on its way there) keep their holder, as with a remote change.
    // The claims stay pinned until this batch is on disk, so that the next
    // frame, staged meanwhile, cannot read a claim evicted before it was
    // written. Everything that can throw (a claim read from disk) is done
    // first, so that a failure leaves nothing pinned or claimed.
    const claims: Slot<CachedClaim>[] = [];
    const plan: ({ merge: true; state: Uint8Array } | { merge: false; bytes: Uint8Array; claims: Slot<CachedClaim>[] } | undefined)[] = [];
    try {
      for (const [n, { id, record, rec, idx }] of decoded.entries()) {
        // a peer that has not yet heard of a purge may still send the object
        if (this.purgedIds.has(id)) plan.push(undefined);
        // held here already (written meanwhile, or cloned from two peers at once), or with a conflict open,
        // whose record is made from the state: merged
        else if (this.objects.peek(id) || present[n] !== undefined || rec.x !== undefined || (watch.evicted.has(id) && this.db.getSync(keys.object(id)) !== undefined)) plan.push({ merge: true, state: recordState(rec) });
        else {
          const mine: Slot<CachedClaim>[] = [];
          for (const k of idx.unique) {
            const claim = this.claims.acquireSync(k, this.readClaim);
            claims.push(claim);
            mine.push(claim);
          }
          rec.s = this.durableSeq;
          plan.push({ merge: false, bytes: withSeq(record, rec.s) ?? encode(rec), claims: mine });
        }
      }
    } catch (e) {
      for (const c of claims) this.claims.release(c);
      throw e;
    }
    for (const [n, { id, rec, def, idx }] of decoded.entries()) {
      this.clock.observe(rec.h);
      const p = plan[n];
      if (!p) continue;
      if (p.merge) {
        merges.push(this.mergeState(id, p.state, rec.h, feedless));
        continue;
      }
      ops.push({ type: 'put', key: keys.object(id), value: p.bytes });
      if (!def) this.noteUntyped(rec.t, ops);
      for (const k of idx.plain) ops.push({ type: 'put', key: k, value: EMPTY });
      // a value another object holds here already (a write of this node's, or another cloned object's)
      for (const op of this.uniqueClashes(id, rec.t, undefined, EMPTY_INDEX, idx, p.claims).ops) ops.push(op);
      for (const claim of p.claims) {
        if (claim.value.owner !== null) continue;
        claim.value.owner = id;
        ops.push({ type: 'put', key: claim.key, value: Buffer.from(id) });
      }
      if (def && !rec.d) this.counts.set(def.name, (this.counts.get(def.name) ?? 0) + 1);
      const slot = this.objects.set(id, { current: rec, durable: null, doc: undefined, pending: undefined });
      slot.pins++;
      cloned.push([slot, rec]);
    }
    // (after the records above: a diff may follow a whole record of the same object in one frame)
    for (const d of diffs) {
      this.clock.observe(d.hlc);
      merges.push(this.mergeState(d.id, d.diff, d.hlc, feedless, true));
    }
    if (cloned.length) feedless.op();
    const written: Promise<void> = this.commits.add(ops, () => {
      for (const [slot, rec] of cloned) {
        slot.value.durable ??= rec; // not `current`: a later write may have moved it on, not yet on disk
        if (slot.value.pending === written) slot.value.pending = undefined;
        this.objects.release(slot);
      }
      for (const c of claims) this.claims.release(c);
    });
    // a write that changes nothing answers once the record it found is on disk (see write())
    for (const [slot] of cloned) slot.value.pending ??= written;
    // (listeners such as the LDAP index re-read each id, and find the skipped ones absent)
    const ids = [...decoded.map((d) => d.id), ...diffs.map((d) => d.id)];
    // Every part settles before the listeners hear of the frame and before it fails: a refused
    // diff must not keep them from the records this frame did store.
    const durable = Promise.allSettled([written, ...merges]).then((parts) => {
      feedless.settle();
      this.statesStored(ids);
      const failed = parts.find((p): p is PromiseRejectedResult => p.status === 'rejected');
      if (failed) throw failed.reason;
    });
    return { durable };
  }

  /**
   * A peer's purge marker, applied as the purge change it records: the
   * object is erased here if held, and the purge goes into this node's feed
   * (redacted, as always) so that its own peers learn of it too.
   */
  private async applyPurgeMarker(id: string, m: PurgeMarker, feedless: FeedlessFrame): Promise<{ durable: Promise<void> }> {
    if (this.purgedIds.has(id)) {
      // erased here already; the purge itself may name who purged it where a redacted change did so far
      if (m.r || !this.provisional.has(id)) return { durable: Promise.resolve() };
      this.provisional.delete(id);
      return { durable: this.commits.add([{ type: 'put', key: keys.purged(id), value: encode(m) }]) };
    }
    // The change it names is applied here already (a redacted one, applied before the object was purged):
    // erase with no feed entry, which would repeat that change's.
    if (this.vector.has(m.o, m.n)) return this.exclusive(id, true, (slot) => this.erase(slot, slot.value.current, { marker: m, feedless }, []));
    return this.applyPurge({ origin: m.o, originSeq: m.n, id, type: m.t, kind: m.r ? 'redacted' : 'purge', update: EMPTY, hlc: m.h, principal: m.p, fields: [] }, []);
  }

  /**
   * Merges a whole object state from a clone, or with `isDiff` an
   * anti-entropy diff against the state held here, into the object held
   * here, without a feed entry.
   */
  private async mergeState(id: string, state: Uint8Array, hlc: number, feedless: FeedlessFrame, isDiff = false): Promise<void> {
    const { slot, unlock } = await this.lock(id);
    const purged = this.purgedIds.has(id);
    if (purged || (isDiff && !slot.value.current)) {
      unlock();
      this.objects.release(slot);
      if (purged) return;
      // a diff holds only what this node's state lacked; without that state it would make a broken object
      throw new MeridianError('bad-request', `a peer sent a diff of ${id}, which this node does not hold`);
    }
    const claims: Slot<CachedClaim>[] = [];
    let handedOver = false;
    let unchanged = false;
    try {
      const cur = slot.value.current;
      const doc = slot.value.doc ?? (cur ? docFromState(id, recordState(cur), this.clientId) : newDoc(id, this.clientId));
      this.holdDoc(slot, doc);
      let own: number | undefined;
      const touched = new Set<string>();
      const onAfter = (tr: Y.Transaction): void => {
        own = this.ownClientGrown(tr);
        fieldsTouched(tr, doc, touched);
      };
      doc.on('afterTransaction', onAfter);
      try {
        Y.applyUpdate(doc, state, 'remote');
      } finally {
        doc.off('afterTransaction', onAfter);
        doc.clientID = this.clientId;
      }
      // (the doc is dropped below: it holds the other's items now)
      if (own !== undefined) this.refuseClient(`a peer's state of ${id}`, own);
      dropClosedValues(doc, touched);
      const version = docVersion(doc);
      // Nothing new (a peer behind this node sends its delete set; a second clone what is here):
      // the record stays as it is, a record without its state too, and the doc stays held. Pending
      // items would not show in the version, so a doc holding any is written.
      if (cur && version === cur.v && doc.store.pendingStructs === null && doc.store.pendingDs === null) {
        unchanged = true;
        // (the record may be a change still on its way to disk: the frame's own batch, queued after
        // that change's in the group commit, settles after it, as the run's end must)
        return;
      }
      const meta = readMeta(doc);
      const type = meta.type ?? cur?.t ?? '';
      const def = this.schema.types.get(type);
      const fields = readFields(doc);
      const before = this.indexedAs(id, cur);
      const after = def ? indexSet(def, id, fields, meta.deleted) : EMPTY_INDEX;
      const keysToClaim = new Set<string>();
      for (const k of before.unique) if (!after.unique.has(k)) keysToClaim.add(k);
      for (const k of after.unique) if (!before.unique.has(k)) keysToClaim.add(k);
      this.pinClaims(keysToClaim, claims);
      const record: ObjectRecord = { t: type, f: fields, d: meta.deleted, h: Math.max(cur?.h ?? 0, hlc), s: cur?.s ?? this.durableSeq, v: version, y: encodeState(doc) };
      if (meta.created !== undefined) record.c = meta.created;
      // (a local HLC, as for a change: the merge's own is the peer's last change to the object)
      const { ops: conflictOps } = this.reconcileConflicts(id, type, doc, touched, this.clock.tick());
      for (const op of this.uniqueClashes(id, type, undefined, before, after, claims).ops) conflictOps.push(op);
      if (this.hasWriteConflict(id)) record.x = 1;
      feedless.op();
      const durable = this.persist(slot, def, cur, record, undefined, before, after, claims, conflictOps);
      handedOver = true;
      // (readers and writers may go on while this merge reaches the disk)
      unlock();
      await durable;
    } finally {
      unlock();
      if (!handedOver) {
        // as in applyOne: a state that failed midway may have left part of itself in the doc
        if (!unchanged) this.dropDoc(slot);
        for (const c of claims) this.claims.release(c);
        this.objects.release(slot);
      }
    }
  }

  /** The oldest feed seq still retained: entries below it were trimmed. */
  firstSeq(): number {
    return this.trimmedTo + 1;
  }

  /**
   * Deletes feed entries so that at most `keep` remain. Peers whose
   * checkpoint falls below the retained feed then catch up by anti-entropy.
   * Returns how many entries were deleted. A call made while another runs
   * starts once that one has ended.
   */
  // (async: a store that failed a batch refuses with a rejection, which the node's timer logs, not a throw out of it)
  async trimFeed(keep: number): Promise<number> {
    this.assertOpen();
    // One trim at a time: two that overlapped both deleted the same range from the same start, and the one
    // behind set trimmingTo and trimmedTo back below entries already gone (a purge then rewrote one of them).
    const run = this.trimRun.then(() => this.trimFeedOnce(keep));
    this.trimRun = run.catch(() => 0);
    return run;
  }

  private async trimFeedOnce(keep: number): Promise<number> {
    this.assertOpen();
    const upTo = this.durableSeq - Math.max(1, keep);
    if (upTo <= this.trimmedTo) return 0;
    let deleted = 0;
    for (let from = this.trimmedTo + 1; from <= upTo; from += 10_000) {
      const to = Math.min(upTo, from + 9_999);
      const ops: BatchOp[] = [];
      // each entry's history record goes with it: history shows what the retained feed holds
      for await (const [k, v] of this.db.iterator({ gte: keys.feed(from), lte: keys.feed(to) })) {
        const seq = parseSeqPart(k.slice(1));
        ops.push({ type: 'del', key: k }, { type: 'del', key: keys.history(decode<FeedRecord>(v).i, seq) });
        deleted++;
      }
      ops.push({ type: 'put', key: keys.meta('trimmedTo'), value: encode(to) });
      this.trimmingTo = to;
      // (if this batch fails, the store refuses everything after it: no erase reads trimmingTo again)
      await this.commits.add(ops);
      this.trimmedTo = to;
    }
    return deleted;
  }

  /** Notes a change applied at local `seq` ahead of a gap in its origin's vector entry (with `ops`, the batch that stores it). */
  private noteAhead(origin: string, n: number, seq: number, ops?: BatchOp[]): void {
    if (this.vector.get(origin) >= n) return;
    let held = this.aheadAt.get(origin);
    if (!held) this.aheadAt.set(origin, (held = new Map()));
    held.set(n, seq);
    let disk = this.aheadOnDisk.get(origin);
    if (!disk) this.aheadOnDisk.set(origin, (disk = { seqs: new Map(), at: this.vector.get(origin) }));
    disk.seqs.set(n, seq);
    ops?.push({ type: 'put', key: keys.ahead(origin, n), value: encode(seq) });
  }

  /** Forgets the changes held ahead that the durable vector now covers (after its entry for `origin` moved). */
  private pruneAhead(origin: string): void {
    const held = this.aheadAt.get(origin);
    if (!held) return;
    const covered = this.durableVector.get(origin);
    for (const n of held.keys()) if (n <= covered) held.delete(n);
    if (held.size === 0) this.aheadAt.delete(origin);
  }

  /** Records written once per batch with their latest value (`after`: run once the batch is on disk). */
  private batchTrailer(after: (() => void)[]): BatchOp[] {
    const ops: BatchOp[] = [
      { type: 'put', key: keys.meta('hlc'), value: encode(this.clock.current) },
      { type: 'put', key: keys.meta('counts'), value: encode(Object.fromEntries(this.counts)) },
    ];
    if (this.feedlessDirty) {
      this.feedlessDirty = false;
      ops.push({ type: 'put', key: keys.meta('statesEpoch'), value: encode(this.feedlessNext) });
    }
    // (the base is put when a key of a change held ahead without a feed entry goes, raised at open or now)
    let baseDirty = false;
    let baseRaised = false;
    for (const origin of this.dirtyVector) {
      const upTo = this.vector.get(origin);
      ops.push({ type: 'put', key: keys.vector(origin), value: encode(upTo) });
      // (looked through only when the entry moved: while a gap lasts, it does not)
      const disk = this.aheadOnDisk.get(origin);
      if (disk && disk.at !== upTo) {
        disk.at = upTo;
        for (const [n, seq] of disk.seqs) {
          if (n > upTo) continue;
          disk.seqs.delete(n);
          ops.push({ type: 'del', key: keys.ahead(origin, n) });
          // A change held ahead with no feed entry here (a clone's or anti-entropy run's `ahead`), now inside
          // the vector: a peer whose vector stops below it would never get it from this feed. The base says
          // so, and sends such a peer to anti-entropy at its next sub; the peers streaming from this feed now
          // are told to subscribe again (onFeedBaseRaised). (Raised only now: while the gap lasts, a peer
          // holding the change ahead too sends a vector below it, and would be repaired at every session.)
          if (seq !== 0) continue;
          baseDirty = true;
          if (n > vectorEntry(this.base, origin)) {
            this.base[origin] = n;
            baseRaised = true;
          }
        }
        if (disk.seqs.size === 0) this.aheadOnDisk.delete(origin);
      }
    }
    if (baseDirty) ops.push({ type: 'put', key: keys.meta('feedBase'), value: encode(this.base) });
    if (baseRaised) {
      after.push(() => tellAll(this.baseListeners));
    }
    this.dirtyVector.clear();
    if (this.clientNodesDirty) {
      ops.push({ type: 'put', key: keys.meta('clientNodes'), value: encode(Object.fromEntries(this.clientNodes)) });
      this.clientNodesDirty = false;
    }
    return ops;
  }

  private readonly loadObject = async (id: string): Promise<CachedObject> => {
    const buf = await this.reads.get(keys.object(id));
    const rec = buf === undefined ? null : decode<ObjectRecord>(buf);
    return { current: rec, durable: rec, doc: undefined, pending: undefined };
  };

  // A new value's claim is almost always absent: the unique-key filter says
  // so without a read, and otherwise (while it is built, or on a false
  // positive) it is read synchronously, which LevelDB answers from its
  // memtable and bloom filters in microseconds, while the thread-pool round
  // trip of an async read added about 30 us to every one-writer create
  // (0.455 -> 0.400 ms p50 in store-writes).
  private readonly readClaim = (key: string): CachedClaim => {
    if (this.uniqueFilter && !this.uniqueFilter.mayHold(key)) return { owner: null };
    const buf = this.db.getSync(key);
    return { owner: buf === undefined ? null : buf.toString('utf8') };
  };

  /**
   * Pins the claims of `keys` into `into`, at once: claims are only ever
   * read synchronously (readClaim), so none is ever being loaded. Acquiring
   * each through a promise made up a tenth of what a create allocated
   * (heap-profiled).
   */
  private pinClaims(keys: Iterable<string>, into: Slot<CachedClaim>[]): void {
    for (const key of keys) into.push(this.claims.acquireSync(key, this.readClaim));
  }

  /**
   * The object's slot, pinned: at once when cached (an import reads each
   * group's objects ahead, applyRemoteStaged a frame's), else once loaded.
   */
  private pinObject(id: string): Slot<CachedObject> | Promise<Slot<CachedObject>> {
    return this.objects.pinCached(id) ?? this.objects.acquire(id, this.loadObject);
  }

  /**
   * Pins the objects of `ids` into `into`: cached ones at once, the others
   * once loaded. The promise, if any, settles only when every load has, so
   * the caller's cleanup releases all that was pinned even when one fails.
   */
  private pinObjects(ids: Iterable<string>, into: Slot<CachedObject>[]): Promise<void> | undefined {
    let waits: Promise<void>[] | undefined;
    for (const id of ids) {
      const slot = this.pinObject(id);
      if (slot instanceof Promise) (waits ??= []).push(slot.then((s) => void into.push(s)));
      else into.push(slot);
    }
    return waits && allSettled(waits);
  }

  // ---- reads ------------------------------------------------------------

  /** The object as last stored durably, tombstones included; undefined if it never existed. */
  async get(id: string): Promise<StoredObject | undefined> {
    this.assertOpen();
    if (!isValidId(id)) return undefined;
    const slot = await this.objects.get(id, this.loadObject);
    const rec = slot.value.durable;
    return rec ? toStored(id, rec) : undefined;
  }

  /**
   * get() for a reader that keeps what it builds from the object (the LDAP
   * gateway's entries): from the cache when there, else read from disk and
   * not cached. Caching it too kept every object twice and pushed out the
   * objects writes use; reads issued together share one getMany.
   */
  async getUncached(id: string): Promise<StoredObject | undefined> {
    this.assertOpen();
    if (!isValidId(id)) return undefined;
    const slot = this.objects.peek(id);
    const rec = slot ? slot.value.durable : (await this.loadObject(id)).durable;
    return rec ? toStored(id, rec) : undefined;
  }

  /** The object's whole Yjs state as stored durably (tombstones included). */
  async objectState(id: string): Promise<Uint8Array | undefined> {
    this.assertOpen();
    if (!isValidId(id)) return undefined;
    const slot = await this.objects.get(id, this.loadObject);
    const rec = slot.value.durable;
    return rec ? recordState(rec) : undefined;
  }

  /** Live objects of a type in id order. */
  async list(type: string, page: PageOptions = {}): Promise<Page<StoredObject>> {
    this.assertOpen();
    this.typeDef(type);
    const prefix = keys.typePrefix(type);
    return this.idPage(prefix, page);
  }

  /**
   * Live objects of a type whose field holds the value (case-insensitive for
   * strings), from the field's index.
   */
  async lookup(type: string, field: string, value: string, page: PageOptions = {}): Promise<Page<StoredObject>> {
    this.assertOpen();
    const def = this.typeDef(type);
    const f = def.fields.get(field);
    if (!f) throw new ValidationError({ type, field, rule: 'unknown-field', message: `"${field}" is not a field of ${type}` });
    if (!f.unique && !f.indexed) {
      throw new ValidationError({ type, field, rule: 'not-indexed', message: `${type} field "${field}" is not indexed; list by one of ${indexedFields(def).join(', ')}` });
    }
    const folded = foldLookup(f, value);
    if (folded === undefined) return { items: [], next: undefined };
    if (f.unique) {
      const owner = await this.db.get(keys.unique(type, field, folded));
      const obj = owner === undefined ? undefined : await this.get(owner.toString('utf8'));
      return { items: obj && !obj.deleted ? [obj] : [], next: undefined };
    }
    return this.idPage(keys.fieldPrefix(type, field, folded), page);
  }

  private async idPage(prefix: string, page: PageOptions): Promise<Page<StoredObject>> {
    const limit = clampLimit(page.limit);
    const ks = await this.db
      .keys({ gt: page.after !== undefined ? prefix + page.after : prefix, lt: prefix + HIGH, limit: limit + 1 })
      .all();
    const more = ks.length > limit;
    const ids = ks.slice(0, limit).map(idFromIndexKey);
    // Read past the object cache: a page is read once (an export reads every object), and going
    // through the cache (a slot and an eviction per object) was most of the time an export of
    // 62,682 objects spent waiting for its pages. The reads of one page share a getMany.
    const items = (await Promise.all(ids.map((id) => this.getUncached(id)))).filter((o): o is StoredObject => o !== undefined && !o.deleted);
    return { items, next: more ? ids[ids.length - 1] : undefined };
  }

  /** Every object, tombstones included, in id order, read straight from disk. */
  async scan(page: PageOptions = {}): Promise<Page<StoredObject>> {
    this.assertOpen();
    const limit = clampLimit(page.limit);
    const p = keys.objectPrefix;
    const items: StoredObject[] = [];
    for await (const [k, v] of this.db.iterator({ gt: page.after !== undefined ? p + page.after : p, lt: p + HIGH, limit: limit + 1 })) {
      items.push(toStored(k.slice(1), decode<ObjectRecord>(v)));
    }
    const more = items.length > limit;
    if (more) items.pop();
    return { items, next: more ? items[items.length - 1]!.id : undefined };
  }

  /**
   * The object's versions from the retained feed, oldest first (at most
   * `limit`, the newest ones). A purged object has none; see purgedAt().
   */
  async history(id: string, limit = MAX_PAGE): Promise<ObjectHistory | undefined> {
    const versions = await this.readHistory(id, { limit: clampLimit(limit) });
    if (!versions) return undefined;
    // the object's first change here is its create (or, for a cloned node, was never in this feed)
    const truncated = versions[0]?.kind !== 'create';
    return { id, versions, truncated, firstSeq: this.firstSeq() };
  }

  /**
   * One version of the object, by its name (`origin#originSeq`), from all of
   * its history this node retains: history() shows only the newest
   * MAX_PAGE, and a revert may name an older one.
   */
  async historyVersion(id: string, name: string): Promise<ObjectVersion | undefined> {
    return (await this.readHistory(id, { name }))?.[0];
  }

  /** The newest `limit` history records of an object, or the one named `name`, as versions, oldest first; undefined for no object. */
  private async readHistory(id: string, want: { limit?: number; name?: string }): Promise<ObjectVersion[] | undefined> {
    this.assertOpen();
    if (!isValidId(id)) return undefined;
    const cur = await this.get(id);
    if (!cur) return undefined;
    const prefix = keys.historyPrefix(id);
    const records: [string, HistoryRecord][] = [];
    // One snapshot for both reads: a feed trim or a purge landing between them would take away
    // (or redact) the feed entry a record without fields is read from.
    const snapshot = this.db.snapshot();
    let feed: (Buffer | undefined)[];
    let bare: [string, HistoryRecord][];
    try {
      for await (const [k, v] of this.db.iterator({ gte: prefix, lt: prefix + HIGH, reverse: true, limit: want.limit ?? -1, snapshot })) {
        const r = decode<HistoryRecord>(v);
        if (want.name === undefined) records.push([k, r]);
        else if (`${r.o}#${r.n}` === want.name) {
          records.push([k, r]);
          break;
        }
      }
      records.reverse();
      // a change that found no object keeps its fields in its feed entry's update only (see history.ts)
      bare = records.filter(([, r]) => r.f === undefined);
      feed = bare.length ? await this.db.getMany(bare.map(([k]) => keys.feed(parseSeqPart(k.slice(prefix.length)))), { snapshot }) : [];
    } finally {
      await snapshot.close();
    }
    const def = this.schema.types.get(cur.type);
    const updates = new Map(bare.map(([k], i) => [k, feed[i] && decode<FeedRecord>(feed[i]).u]));
    return records.map(([k, r]) => toVersion(k, r, def, updates.get(k)));
  }

  /**
   * When and by whom the object was purged, if it was. Not `known` while
   * this node has only redacted changes of the object, not the purge itself
   * (then the time and principal are those of a redacted change).
   */
  async purgedAt(id: string): Promise<{ hlc: number; principal: string; origin: string; known: boolean } | undefined> {
    this.assertOpen();
    if (!this.purgedIds.has(id)) return undefined;
    const v = await this.db.get(keys.purged(id));
    if (v === undefined) return undefined;
    const r = decode<PurgeMarker>(v);
    return { hlc: r.h, principal: r.p, origin: r.o, known: !r.r };
  }

  /** Changes feed entries after `after`, in the order this node applied them. */
  async readFeed(after: number, limit = DEFAULT_PAGE): Promise<FeedEntry[]> {
    this.assertOpen();
    const first = this.recent[this.recentStart]?.seq;
    if (first !== undefined && after + 1 >= first && after < this.durableSeq) {
      const from = this.recentStart + (after + 1 - first);
      return this.recent.slice(from, from + clampLimit(limit));
    }
    const out: FeedEntry[] = [];
    // up to the durable head only: a batch LevelDB has written but whose commit has not yet run its
    // callbacks is not on record here yet (an object read then still shows its version before it)
    if (after >= this.durableSeq) return out;
    for await (const [k, v] of this.db.iterator({ gt: keys.feed(after), lte: keys.feed(this.durableSeq), limit: clampLimit(limit) })) {
      out.push(feedEntry(parseSeqPart(k.slice(1)), decode<FeedRecord>(v)));
    }
    return out;
  }

  /** Keeps a durable entry in the in-memory tail of the feed (entries arrive in seq order). */
  private remember(entry: FeedEntry): void {
    this.recent.push(entry);
    this.recentBytes += entry.update.length + 128;
    while (this.recent.length - this.recentStart > RECENT_ENTRIES || this.recentBytes > RECENT_BYTES) {
      const old = this.recent[this.recentStart++]!;
      this.recentBytes -= old.update.length + 128;
    }
    if (this.recentStart > RECENT_ENTRIES) {
      this.recent = this.recent.slice(this.recentStart);
      this.recentStart = 0;
    }
  }

  /**
   * Calls the listener with each group of changes right after it is on disk,
   * in feed order. Returns the function that unsubscribes.
   */
  subscribe(listener: (entries: FeedEntry[]) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  private notify(entry: FeedEntry): void {
    if (this.notifyQueue.push(entry) > 1) return;
    queueMicrotask(() => {
      const batch = this.notifyQueue;
      this.notifyQueue = [];
      // (a listener's failure is its own; the feed goes on)
      tellAll(this.listeners, batch);
    });
  }

  /** The highest feed seq on disk. */
  get lastSeq(): number {
    return this.durableSeq;
  }

  /**
   * How many states frames stored objects without a feed entry: a clone's
   * or an anti-entropy repair's states, an erase by a peer's purge marker
   * (and one more for a migration of versions). A reader of the feed who
   * saw a lower count has missed changes that the feed cannot name (the
   * XML changes feed then tells its caches to start again). It grows once
   * every batch of such a frame is on disk.
   */
  get statesEpoch(): number {
    // (below every frame still on its way: a later frame settled first must not claim an earlier one's objects)
    let settled = this.feedlessNext;
    for (const n of this.feedlessPending) if (n - 1 < settled) settled = n - 1;
    return settled;
  }

  /**
   * One states frame's share of statesEpoch: a number taken when the
   * first of its parts stores an object, and counted once every part has
   * settled (a frame stores in several batches: its new records, each merge,
   * each erase). The trailer of each group commit holding such a batch puts the
   * highest number taken so far on disk (batchTrailer), so that after a
   * restart no number handed out is taken again.
   */
  private feedlessFrame(): FeedlessFrame {
    let n = 0;
    return {
      op: () => {
        if (n === 0) {
          n = ++this.feedlessNext;
          this.feedlessPending.add(n);
        }
        // (the batch's trailer puts it on disk: once per group commit, however many of the frame's batches it holds)
        this.feedlessDirty = true;
      },
      settle: () => {
        // (a store whose batches failed counts nothing more: the number may not be on disk, and a restart would take it again)
        if (this.commits.failed === undefined) this.feedlessPending.delete(n);
      },
    };
  }

  /**
   * A number that grows whenever stored objects may have changed: with the
   * feed, and with states stored without feed entries (a clone, an
   * anti-entropy merge, an erase by a purge marker), which `lastSeq` misses.
   * For caches of what is worked out from objects, such as access scopes.
   */
  get changeMark(): number {
    return this.durableSeq + this.statesGeneration;
  }

  get hlc(): number {
    return this.clock.current;
  }

  /**
   * Whether every change `need` names (origin -> seq, and all before it) is
   * visible to readers here; with `onDisk`, on disk here as well. A change
   * from a peer shows to reads by id before this node's fsync (see persist),
   * but reads through an index (lookup, sign-in by mail, lists) read the
   * disk, and subscribers (the LDAP directory) hear of it once it is there.
   */
  covers(need: Record<string, number>, onDisk = false): boolean {
    const v = onDisk ? this.durableVector : this.visibleVector;
    for (const [origin, n] of Object.entries(need)) if (v.get(origin) < n) return false;
    return true;
  }

  /** The version vector of what readers see (for measuring when a change becomes readable). */
  visibleVersionVector(): Record<string, number> {
    return this.visibleVector.toObject();
  }

  /**
   * Calls `listener` with the ids of objects stored without a feed entry of
   * their own (a clone, an anti-entropy merge, an erase by a purge marker for
   * a change already applied here), which subscribe() never
   * reports; returns the unsubscribe.
   */
  onStates(listener: (ids: string[]) => void): () => void {
    this.stateListeners.add(listener);
    return () => this.stateListeners.delete(listener);
  }

  private statesStored(ids: string[]): void {
    this.statesGeneration++;
    tellAll(this.stateListeners, ids);
  }

  /** Calls `listener` whenever more changes become visible to readers; returns the unsubscribe. */
  onVisible(listener: () => void): () => void {
    this.visibleListeners.add(listener);
    return () => this.visibleListeners.delete(listener);
  }

  /**
   * Reads `probe` until `done` holds of what it returns, again each time
   * more changes become visible (states stored by a clone or merge too),
   * and at most for `ms`; resolves with the last answer. For a caller
   * waiting on another write to show (reads see a local change once it is
   * on disk), without polling.
   */
  async readUntil<T>(probe: () => Promise<T>, done: (value: T) => boolean, ms: number): Promise<T> {
    const until = performance.now() + ms;
    let more = false;
    let wake: (() => void) | undefined;
    const changed = (): void => {
      more = true;
      wake?.();
    };
    // (states stored without a feed entry, a clone's or a merge's, show too)
    const offs = [this.onVisible(changed), this.onStates(changed)];
    try {
      for (;;) {
        more = false;
        const value = await probe();
        const left = until - performance.now();
        if (done(value) || left <= 0) return value;
        // (a change that showed while probe read is not waited for: it is read again at once)
        if (!more) {
          await new Promise<void>((resolve) => {
            const timer = setTimeout(resolve, left);
            wake = () => {
              clearTimeout(timer);
              resolve();
            };
          });
          wake = undefined;
        }
      }
    } finally {
      for (const off of offs) off();
    }
  }

  versionVector(): Record<string, number> {
    return this.vector.toObject();
  }

  /**
   * The idempotency record of a keyed write that changed `id` in nothing
   * (or found it made already), on disk when this resolves: sent again
   * after someone else's change, it is answered from the record. Returns
   * the vector the write was judged against: what a reader needs to see it.
   */
  async recordUnchanged(id: string, key: string): Promise<Record<string, number>> {
    this.assertOpen();
    // (in the batch after every change committed so far: on disk, the record names only what is on disk too)
    const need = this.versionVector();
    // a record of the key is kept: one of a write that made a change, or a copy of this write racing it
    if (this.db.getSync(keys.idempotency(key)) !== undefined) return need;
    const named = Object.entries(need).find(([, n]) => n >= 1);
    // (an object is held, so some change is: a vector without one cannot be)
    if (!named) return need;
    // (the stamp only dates the record for its trim: no event, so the clock, and the last change /status shows, stay)
    const done: IdempotentWrite = { id, origin: named[0], originSeq: named[1], hlc: this.clock.wallNow(), need };
    await this.commits.add([{ type: 'put', key: keys.idempotency(key), value: encode(done) }]);
    return need;
  }

  /** Live objects per type. */
  objectCounts(): Record<string, number> {
    return Object.fromEntries(this.counts);
  }

  /** Objects cached, their estimated bytes, and how many of them keep a live Y.Doc. */
  cacheStats(): { objects: number; bytes: number; docs: number } {
    return { objects: this.objects.size, bytes: this.objects.bytes, docs: this.docHolders.size };
  }

  // ---- node metadata ----------------------------------------------------

  /**
   * The change a write with this idempotency key made here, once it is on
   * disk. A key whose record a replication run is bringing (see
   * expectIdempotency) is waited for, up to `idempotencyWaitMs`: the change it
   * names may be here already, inside an object's state, so "no record" would
   * have the write made twice. Past the wait, or when the run ends without
   * storing it, the answer is 'busy': send the write again shortly.
   */
  async idempotent(key: string): Promise<IdempotentWrite | undefined> {
    this.assertOpen();
    // synchronous: one memtable or block-cache lookup costs less than the thread-pool round trip
    const v = this.db.getSync(keys.idempotency(key));
    if (v !== undefined) return decode<IdempotentWrite>(v);
    if (!this.arrivingKeys.has(key)) return undefined;
    // (two runs, from two peers, may bring the same key: each one's end is a reason to look again)
    const deadline = performance.now() + this.idempotencyWaitMs;
    for (let runs = this.arrivingKeys.get(key); runs; runs = this.arrivingKeys.get(key)) {
      const left = deadline - performance.now();
      if (left <= 0) break;
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([...(runs instanceof Set ? runs : [runs]), this.nextRecordsStored, new Promise<void>((resolve) => (timer = setTimeout(resolve, left)))]);
      clearTimeout(timer);
      this.assertOpen();
      const stored = this.db.getSync(keys.idempotency(key));
      if (stored !== undefined) return decode<IdempotentWrite>(stored);
    }
    throw new MeridianError('busy', 'the first copy of this write was made on another master, and its record is still on its way here; send the write again in a few seconds');
  }

  /**
   * A replication run (a clone, or anti-entropy) carries these idempotency
   * records and stores each once it has passed its object, the rest with
   * its last batch. Until the returned function is called, once the run's
   * last batch is on disk or the run is cut short, idempotent() waits for
   * these keys instead of answering that no write was made under them.
   */
  expectIdempotency(expected: readonly string[]): () => void {
    let resolve!: () => void;
    const ended = new Promise<void>((r) => (resolve = r));
    // (a key recorded here already is found before any wait is looked at: idempotent reads first)
    const waiting = this.closed ? [] : expected;
    for (const k of waiting) {
      const runs = this.arrivingKeys.get(k);
      if (runs === undefined) this.arrivingKeys.set(k, ended);
      else if (runs instanceof Set) runs.add(ended);
      else this.arrivingKeys.set(k, new Set([runs, ended]));
    }
    const end = (): void => {
      if (!this.arrivingEnds.delete(end)) return;
      for (const k of waiting) {
        const runs = this.arrivingKeys.get(k);
        if (runs === ended) this.arrivingKeys.delete(k);
        else if (runs instanceof Set) {
          runs.delete(ended);
          if (runs.size === 0) this.arrivingKeys.delete(k);
        }
      }
      resolve();
    };
    this.arrivingEnds.add(end);
    return end;
  }

  /** Forgets idempotency keys recorded before `before` (ms since the epoch); returns how many. */
  async trimIdempotency(before: number): Promise<number> {
    this.assertOpen();
    const old: string[] = [];
    for await (const [k, v] of this.db.iterator({ gte: keys.idempotencyPrefix, lt: keys.idempotencyPrefix + HIGH })) {
      if (hlcWall(decode<IdempotentWrite>(v).hlc) < before) old.push(k);
    }
    if (old.length) await this.db.batch(old.map((key) => ({ type: 'del' as const, key })));
    return old.length;
  }

  async getMeta<T>(name: string): Promise<T | undefined> {
    this.assertOpen();
    const v = await this.db.get(keys.meta(`x.${name}`));
    return v === undefined ? undefined : decode<T>(v);
  }

  async setMeta(name: string, value: unknown): Promise<void> {
    this.assertOpen();
    await this.db.put(keys.meta(`x.${name}`), encode(value), { sync: true });
  }

  /** Raw key/value pairs of one key space, for consistency checks and tools. */
  async *raw(prefix: string): AsyncGenerator<[string, Buffer]> {
    yield* this.db.iterator({ gte: prefix, lt: prefix + HIGH });
  }

  /**
   * Reads of several key spaces and metadata as of one moment (a LevelDB
   * snapshot), for a check that compares them while writes go on: every
   * batch is whole in it, and the counts it holds are those of its objects.
   * `close` must be called.
   */
  snapshotReader(): SnapshotReader {
    this.assertOpen();
    const db = this.db;
    const snapshot = db.snapshot();
    return {
      async *raw(prefix: string) {
        yield* db.iterator({ gte: prefix, lt: prefix + HIGH, snapshot });
      },
      async meta<T>(name: string) {
        const v = await db.get(keys.meta(name), { snapshot });
        return v === undefined ? undefined : decode<T>(v);
      },
      close: () => snapshot.close(),
    };
  }

  /**
   * About how many unique-index keys the disk holds, from the live objects
   * per type (read at open): one per unique field of each. A multi-valued
   * one (mail) may hold more; the build then grows the filter as it scans.
   */
  private uniqueValuesHeld(): number {
    let n = 0;
    for (const def of this.schema.types.values()) {
      let unique = 0;
      for (const f of def.fields.values()) if (f.unique) unique++;
      n += unique * (this.counts.get(def.name) ?? 0);
    }
    return n;
  }

  /** The first capacity the build's growth rule (x4 while the keys fill more than half) reaches for `keys`. */
  private filterCapacityFor(count: number): number {
    let capacity = FILTER_CAPACITY;
    while (count > capacity / 2 && capacity < MAX_FILTER_CAPACITY) capacity *= 4;
    return capacity;
  }

  private filterAdd(key: string): void {
    this.filling?.add(key);
    const f = this.uniqueFilter;
    if (!f) return;
    f.add(key);
    // full of keys written since it was built, many perhaps deleted or written twice: the scan decides its successor's size
    if (f.full && !this.filling) void this.buildFilter(f.capacity);
  }

  /**
   * Builds the unique-key filter from the disk while writes go on (claims
   * are answered by the full filter, or after open read from LevelDB,
   * meanwhile). Keys written from the moment `filling`
   * is set are added to it by the batch writer; the one batch that may have
   * been handed to LevelDB before is waited for before the snapshot is read,
   * so no key can fall between the two. A filter that more than half fills
   * is dropped for one four times larger, so its size follows the keys on
   * disk, not the number of writes.
   */
  private async buildFilter(capacity: number): Promise<void> {
    const filter = new KeyFilter(capacity);
    this.filling = filter;
    try {
      await this.commits.inFlight();
      if (this.filling !== filter) return;
      const it = this.db.keys({ gte: keys.uniquePrefix, lt: keys.uniquePrefix + HIGH });
      try {
        for (let ks = await it.nextv(10_000); ks.length && this.filling === filter && filter.count <= capacity / 2; ks = await it.nextv(10_000)) {
          for (const k of ks) filter.add(k);
        }
      } finally {
        await it.close();
      }
    } catch {
      // the store closed under the scan (inFlight() swallows a failed batch; the store then refuses writes anyway)
      if (this.filling === filter) this.filling = undefined;
      return;
    }
    if (this.filling !== filter) return;
    this.filling = undefined;
    if (filter.count > capacity / 2) return this.buildFilter(capacity * 4);
    this.uniqueFilter = filter;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    await this.commits.drain();
    await this.shut();
  }

  /**
   * Stops the store as a crash would at this moment: batches not yet handed
   * to LevelDB are lost and their writes fail; the batch LevelDB is writing
   * completes (a crash may or may not have kept it; this keeps it). For
   * fault-injection tests (the replication simulation); a node never calls
   * it. Resolves to the number of batches lost.
   */
  async crash(): Promise<number> {
    if (this.closed) return 0;
    const lost = this.commits.abandon(new MeridianError('closed', 'the store crashed (a simulated crash)'));
    await this.commits.inFlight();
    await this.shut();
    return lost;
  }

  private async shut(): Promise<void> {
    this.filling = undefined;
    this.uniqueFilter = undefined;
    this.closed = true;
    // a resend waiting for a record a run brings is answered now: the store is closed
    for (const end of [...this.arrivingEnds]) end();
    this.listeners.clear();
    this.objects.clear();
    await this.db.close();
  }

  private typeDef(type: string): TypeDef {
    const def = this.schema.types.get(type);
    if (!def) throw new ValidationError({ type, rule: 'unknown-type', message: `unknown type "${type}"; the schema has ${[...this.schema.types.keys()].join(', ')}` });
    return def;
  }

  private assertOpen(): void {
    if (this.closed) throw new MeridianError('closed', 'the store is closed');
    if (this.commits.failed !== undefined) {
      throw new MeridianError('closed', `the store stopped after a disk write failed (${String((this.commits.failed as Error).message ?? this.commits.failed)}); restart the node`);
    }
  }
}

interface Plan {
  /** the record the plan was made from */
  from: ObjectRecord | null;
  fields: Record<string, FieldValue>;
  deleted: boolean;
  touched: string[];
  before: IndexSet;
  after: IndexSet;
  claimKeys: string[];
  refIds: string[];
}

const EMPTY = Buffer.alloc(0);
/** about how much of state vectors a page of heldStates holds */
const HELD_PAGE_BYTES = 1024 * 1024;
const UNIQUE_PREFIX = keys.uniquePrefix.charCodeAt(0);
/**
 * The least unique-key filter's capacity (262,144 keys, 512 KiB); a store
 * with more keys (estimated at open from its object counts, or found by the
 * build's scan) gets one four times larger, and so on. Not larger: a
 * store is opened hundreds of times in the simulation, where 2 MiB per open
 * was 4% of the run; not smaller: at 65,536 a 40,000-Person bench round
 * outgrew its filter and the rebuilds' scans cost 3-4 us a create.
 */
const FILTER_CAPACITY = 1 << 18;
/** KeyFilter's largest (2^30 bits at 16 a key): past it a filter grows no more. */
const MAX_FILTER_CAPACITY = 1 << 26;

function checkpointOp(cp: { peer: string; seq: number }): BatchOp {
  return { type: 'put', key: keys.checkpoint(cp.peer), value: encode(cp.seq) };
}

/** Settles when every promise has; rejects then with the first failure. */
async function allSettled(waits: Promise<void>[]): Promise<void> {
  const failed = (await Promise.allSettled(waits)).find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed) throw failed.reason;
}

const absentValue = (): CachedObject => ({ current: null, durable: null, doc: undefined, pending: undefined });

/** Refuses a change whose new values would make an update past MAX_CHANGE_BYTES (see there). */
export function checkChangeSize(def: TypeDef, id: string | undefined, before: Readonly<Record<string, FieldValue>> | undefined, after: Record<string, FieldValue>, touched: readonly string[]): void {
  // first a bound that costs a few additions per field (this runs in every write): three bytes a character
  let bound = 0;
  for (const name of touched) {
    const v = after[name];
    if (v === undefined) continue;
    if (!Array.isArray(v)) bound += (typeof v === 'string' ? v.length : 24) * 3 + 16;
    else for (const one of v) bound += (typeof one === 'string' ? one.length : 24) * 3 + 16;
  }
  if (bound <= MAX_CHANGE_BYTES - CHANGE_OVERHEAD) return;
  let bytes = 0;
  for (const name of touched) {
    const v = after[name];
    if (v === undefined || (before && JSON.stringify(before[name]) === JSON.stringify(v))) continue;
    bytes += Buffer.byteLength(name);
    for (const one of Array.isArray(v) ? v : [v]) bytes += Buffer.byteLength(String(one)) + 16;
  }
  if (bytes <= MAX_CHANGE_BYTES - CHANGE_OVERHEAD) return;
  const subject = id ? `${def.name} ${id}` : `new ${def.name}`;
  throw new ValidationError({ objectId: id, type: def.name, rule: 'size', message: `${subject}: this change writes ${bytes} bytes of values, more than one change may carry (${MAX_CHANGE_BYTES - CHANGE_OVERHEAD}); write the values in several changes, or shorten them` });
}

function needsHashing(def: TypeDef, values: Record<string, FieldValue | null>): boolean {
  for (const f of def.fields.values()) {
    const v = values[f.name];
    if (f.kind === 'password' && typeof v === 'string' && !isPasswordHash(v)) return true;
  }
  return false;
}

/** How long a forget waits for a pause in what peers send (see Store.remotePause). */
const FORGET_WAIT_MS = 10_000;

/** Calls each listener; one's failure is its own (what it is told of has happened all the same). */
function tellAll<A extends unknown[]>(listeners: Set<(...args: A) => void>, ...args: A): void {
  for (const fn of listeners) {
    try {
      fn(...args);
    } catch {
      // (its own)
    }
  }
}

function toStored(id: string, r: ObjectRecord): StoredObject {
  return {
    id,
    type: r.t,
    fields: r.f,
    deleted: r.d,
    version: r.v,
    hlc: r.h,
    // formatted only when read: most writes' results are never shown
    get modified(): string {
      return hlcToIso(r.h);
    },
    // objects made before the create time was kept report their first change seen here
    get created(): string {
      return hlcToIso(r.c ?? r.h);
    },
    seq: r.s,
  };
}

function feedEntry(seq: number, r: FeedRecord): FeedEntry {
  const e: FeedEntry = { seq, origin: r.o, originSeq: r.n, id: r.i, type: r.t, kind: r.k, update: r.u, hlc: r.h, principal: r.p, fields: r.c };
  if (r.q !== undefined) e.idempotencyKey = r.q;
  return e;
}

/**
 * A feed record without content, a change with nothing of what it wrote:
 * of kind `purge` for the purge itself, `redacted` for any other change of
 * a purged object.
 */
function redacted(r: Pick<FeedRecord, 'o' | 'n' | 'i' | 't' | 'h' | 'p'>, kind: 'purge' | 'redacted' = 'redacted'): FeedRecord {
  return { o: r.o, n: r.n, i: r.i, t: r.t, u: EMPTY, h: r.h, p: r.p, c: [], k: kind };
}

/** A peer's idempotency record, checked before it is stored: a node answers resent writes from it. */
function checkedKeyRecord(key: string, record: Uint8Array): { key: string; record: Uint8Array } {
  if (typeof key !== 'string' || key.length === 0 || key.length > 2048 || !isIdempotentWrite(decode<unknown>(record), true)) {
    throw new MeridianError('bad-request', `the idempotency record of key "${String(key).slice(0, 40)}" is not one`);
  }
  return { key, record };
}

/** Why a run of states ends where a frame of it was not stored: the session ends, and the next one runs it again. */
const RUN_NOT_STORED = 'an earlier frame of this run of states was not stored; the session ends, and the run starts over at the next connection';

/**
 * The object a peer's idempotency record names, if it is a record: what a
 * run of states must have passed before the record is stored
 * (SyncSession's held records).
 */
export function recordedObjectId(record: Uint8Array): string | undefined {
  let w: Partial<IdempotentWrite> | null;
  try {
    w = decode<Partial<IdempotentWrite> | null>(record);
  } catch {
    return undefined;
  }
  return typeof w === 'object' && w !== null && typeof w.id === 'string' && isValidId(w.id) ? w.id : undefined;
}

/** A peer's purge marker, checked as strictly as the purge change it stands for would be on the wire. */
function checkedMarker(id: string, record: Uint8Array): PurgeMarker {
  if (!isValidId(id)) throw new MeridianError('bad-request', `purged object id "${id.slice(0, 40)}" is not valid`);
  const d = decode<unknown>(record);
  if (!isPurgeMarker(d)) throw new MeridianError('bad-request', `the purge marker of ${id} is not a purge record`);
  return d as PurgeMarker;
}

function markerOf(f: FeedRecord): PurgeMarker {
  return f.k === 'purge' ? { h: f.h, p: f.p, o: f.o, n: f.n, t: f.t } : { h: f.h, p: f.p, o: f.o, n: f.n, t: f.t, r: 1 };
}

function objectCost(key: string, v: CachedObject): number {
  const cur = v.current;
  // a record without its state: about what its create's update takes (a Person's ten fields, some 420 bytes), without writing it
  const state = !cur ? 0 : cur.y !== undefined ? cur.y.length : 40 * Object.keys(cur.f).length + 32;
  // A live Y.Doc costs roughly ten times its encoded state.
  return 200 + key.length * 2 + state * (v.doc ? 12 : 3);
}

/**
 * A set's members in sorted order. Array sort allocates its merge state
 * (about 500 bytes) on every call, and a write sorts two sets that hold
 * one or two keys.
 */
function sortedList(set: Set<string>): string[] {
  const list = [...set];
  if (list.length === 2) {
    if (list[0]! > list[1]!) list.reverse();
  } else if (list.length > 2) list.sort();
  return list;
}

/** The ref field of `def` whose value in `fields` names `target`. */
function referringFields(def: TypeDef, fields: Record<string, FieldValue>, touched: Iterable<string>, target: string): FieldDef[] {
  const found: FieldDef[] = [];
  for (const name of touched) {
    const f = def.fields.get(name);
    if (f?.kind !== 'ref') continue;
    const v = fields[f.name];
    if (v === target || (Array.isArray(v) && v.includes(target))) found.push(f);
  }
  if (found.length === 0) throw new Error(`no field of ${def.name} refers to ${target}`);
  return found;
}

function sameFields(a: Record<string, FieldValue>, b: Record<string, FieldValue>): boolean {
  const ka = Object.keys(a);
  if (ka.length !== Object.keys(b).length) return false;
  return ka.every((k) => sameValue(a[k], b[k]));
}

function clampLimit(limit: number | undefined): number {
  if (limit === undefined) return DEFAULT_PAGE;
  return Math.max(1, Math.min(MAX_PAGE, Math.floor(limit)));
}

function indexedFields(def: TypeDef): string[] {
  return [...def.fields.values()].filter((f) => f.indexed || f.unique).map((f) => f.name);
}


/** Throws when a write made against a version (If-Match) finds the object at another. */
function checkIfVersion(def: TypeDef, id: string, cur: ObjectRecord | null | undefined, opts: WriteOptions): void {
  if (opts.ifVersion !== undefined && cur && cur.v !== opts.ifVersion) {
    throw new MeridianError('precondition', `${def.name} ${id} has changed since version ${opts.ifVersion}; fetch it again and retry`);
  }
}

/** The keys a rebuild of one layout entry writes: a field's index entries, or a type's index. */
function rebuiltRange(c: { type: string; field: string; is: string | undefined }): { gte: string; lt: string } {
  if (c.is === 'type') return { gte: keys.typePrefix(c.type), lt: `t${c.type}\u0001` };
  return keys.indexRange(uniqueLayout(c.is) ? 'u' : 'x', c.type, c.field);
}

/** Whether a layout value is a unique index's (its entries under `u`), folded however. */
function uniqueLayout(value: string | undefined): boolean {
  return value === 'unique-ref' || value?.split('/')[0] === 'unique';
}

/**
 * Per `type NUL field`, how the schema indexes the field: `unique/nfkc-cf`,
 * `unique-ref`, `ref` or `indexed/nfkc-cf` (fields it does not index are
 * absent; builds that folded in NFC wrote `unique` and `indexed`); and per `type NUL`,
 * `type`: the type index and count, which a node keeps only of types its
 * schema has. An object of a type the schema lacked when it arrived (sent
 * by a master already on a newer schema) is stored without them, and
 * listed and counted once a schema with the type is opened.
 */
function indexLayout(schema: Schema): Record<string, string> {
  const out: Record<string, string> = {};
  for (const def of schema.types.values()) {
    out[`${def.name}${SEP}`] = 'type';
    // (a reference folds its values otherwise than a string field: a change of kind changes the keys,
    // of a unique field too, whose entries a string's folding left under a ref's layout undetected)
    // (and how a value not a reference is folded: entries folded otherwise are rebuilt)
    for (const f of def.fields.values()) if (f.unique || f.indexed) out[`${def.name}${SEP}${f.name}`] = f.kind === 'ref' ? (f.unique ? 'unique-ref' : 'ref') : `${f.unique ? 'unique' : 'indexed'}/${TEXT_FOLDING}`;
  }
  return out;
}

/**
 * What changes a data dir holds, as its records say: the durable vector, the
 * changes held ahead of a gap in it (origin, origin seq, local seq), and the
 * last feed seq (the feed's own number, not yet raised to a trimmed-away
 * start). Read from `snapshot` when given, so it describes exactly the
 * object records read from the same one.
 */
async function readPosition(db: Level<string, Buffer>, snapshot?: ReturnType<Level<string, Buffer>['snapshot']>): Promise<{ vector: Map<string, number>; ahead: [origin: string, originSeq: number, seq: number][]; seq: number }> {
  const vector = new Map<string, number>();
  for await (const [k, v] of db.iterator({ gte: keys.vectorPrefix, lt: keys.vectorPrefix + HIGH, snapshot })) {
    vector.set(k.slice(1), decode<number>(v));
  }
  const ahead: [origin: string, originSeq: number, seq: number][] = [];
  for await (const [k, v] of db.iterator({ gte: keys.aheadPrefix, lt: keys.aheadPrefix + HIGH, snapshot })) {
    const at = k.lastIndexOf(SEP);
    // (only keys of this shape: an unreleased earlier form, one list per origin under a<origin>, is ignored)
    if (at > 1) ahead.push([k.slice(1, at), parseSeqPart(k.slice(at + 1)), decode<number>(v)]);
  }
  const last = await db.keys({ gte: keys.feedPrefix, lt: keys.feedPrefix + HIGH, reverse: true, limit: 1, snapshot }).all();
  return { vector, ahead, seq: last.length ? parseSeqPart(last[0]!.slice(1)) : 0 };
}
