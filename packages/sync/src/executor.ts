import type { ApplyResult, ClonedState, FeedEntry, HeldState, RemoteChange, SnapshotPage, StateSnapshot, StoreDigest } from '@meridian/store';
import { DIGEST_BITS, type Frame, type NeedFrame, type Role, type WriteFrame, type WroteFrame } from './frames.js';
import type { Action, SessionStore, SyncSession } from './session.js';

/** What replication needs of the store: what a session reads (SessionStore), its feed, its states and the apply path. */
export interface FeedStore extends SessionStore {
  readFeed(after: number, limit: number): Promise<FeedEntry[]>;
  /**
   * Applied (readable) when it resolves; `durable` settles once the batch is
   * on disk, and the `durable`s of successive calls settle in call order (the
   * store's group commit writes batches in commit order). The session relies
   * on it: each ack vouches for every frame before it.
   */
  applyRemoteStaged(changes: RemoteChange[], opts: { checkpoint?: { peer: string; seq: number } }): Promise<{ result: ApplyResult; durable: Promise<void> }>;
  checkpoint(peer: string): Promise<number>;
  subscribe(listener: (entries: FeedEntry[]) => void): () => void;
  onFeedBaseRaised(fn: () => void): () => void;
  onFeedsForgotten(fn: () => void): () => void;
  saveFeeds(): Promise<void>;
  stateSnapshot(): StateSnapshot;
  digest(bits?: number): Promise<StoreDigest>;
  /** what this node holds in some digest buckets, a page at a time: the subscriber's side of anti-entropy */
  heldStates(opts: { buckets: ReadonlySet<number>; bits: number; after?: string | undefined; limit: number }): Promise<{ held: HeldState[]; end: boolean }>;
  /** Stores the states and, with `done`, moves the vector once they and every state staged before them are on disk. */
  cloneStates(items: ClonedState[], done?: { peer: string; head: number; vector: Record<string, number> }, opts?: { clone?: boolean; run?: object }): Promise<void>;
  /**
   * Holds the states (readers see them once on disk) when it resolves; `durable` settles once
   * they and every state staged before them are on disk, and the records given with them
   * (rejected if a frame before it in its `run` was not stored), so successive
   * calls' `durable`s settle in call order, as applyRemoteStaged's do.
   */
  cloneStatesStaged(items: ClonedState[], opts?: { clone?: boolean; run?: object }): Promise<{ durable: Promise<void> }>;
  /** A run brings these keys' idempotency records: writes resent under them wait until the returned function is called. */
  expectIdempotency(keys: readonly string[]): () => void;
}

/** One session's side of the I/O: how a driver sends, admits and closes. */
export interface SessionIo {
  store: FeedStore;
  session: SyncSession;
  /** sends a frame; false when the connection is gone */
  send(frame: Frame): boolean;
  /** the session authenticated; false to drop it (a duplicate) */
  opened(peer: string, role: Role): boolean;
  /** awaited once a session opened, before anything of the peer's is asked for (see ReplicatorOptions.joined) */
  joined?(): Promise<void>;
  closed(reason: string, refused: boolean): void;
  /**
   * Runs actions that come due later, outside runActions: the acks of frames
   * whose batch reached the disk. A session applies its next frame while the
   * last one's fsync is under way; only the acks wait for it.
   */
  later(actions: Action[]): void;
  digestCompared?(differing: number): void;
  /** a clone or anti-entropy finished and this node's feed base grew, or it brought changes held ahead */
  statesApplied?(): void;
  /** master: run a write forwarded by a replica; answer with session.writeDone() when done */
  forward?(write: WriteFrame): void;
  /** replica: the master answered a forwarded write */
  answered?(answer: WroteFrame): void;
  /** objects per states frame */
  stateBatch?: number;
  /** held objects per anti-entropy `need` page */
  needBatch?: number;
  /** the state snapshot being streamed to the peer, if any */
  snapshot?: StateSnapshot | undefined;
  reader?: AsyncGenerator<ClonedState[]> | undefined;
  /** ends the store's wait for the idempotency records the running clone or anti-entropy run brings */
  expected?: (() => void)[] | undefined;
  /** the session's last run (clone, anti-entropy) whose last frame was taken up */
  lastRun?: number | undefined;
}

const FORGOTTEN_SINCE = 'feed tags were forgotten since this session opened, and its peer was not told; opening again';

/** The session opened before feed tags were forgotten here: what it brings may be a forgotten dir's (see Store.feedsEpoch). */
function stale(io: SessionIo): boolean {
  const at = io.session.feedsEpochAtAuth;
  return at !== undefined && at !== io.store.feedsEpoch;
}

/**
 * Runs a session's actions in order against the store, feeding each result
 * back into the session. The WebSocket driver and the deterministic
 * simulator both run sessions through this one function; they differ only in
 * how frames travel and when things happen.
 */
export async function runActions(io: SessionIo, actions: Action[]): Promise<void> {
  const { store, session } = io;
  const queue = [...actions];
  while (queue.length) {
    const a = queue.shift()!;
    switch (a.type) {
      case 'send':
        if (!io.send(a.frame)) {
          // the connection is gone, but why the session ended (a refusal of the peer's proof, say)
          // is still the reason to report, not the bare close that follows
          const close = queue.find((x) => x.type === 'close');
          if (close?.type === 'close') io.closed(close.reason, close.refused);
          return;
        }
        break;
      case 'read':
        queue.push(...session.feedRead(await store.readFeed(a.after, a.limit)));
        break;
      case 'apply': {
        if (stale(io)) return io.later(session.fail(FORGOTTEN_SINCE, false));
        const { durable } = await store.applyRemoteStaged(a.changes, { checkpoint: { peer: session.peer!, seq: a.last } });
        durable.then(
          () => io.later(session.durable()),
          (e: unknown) => io.later(session.fail(`could not store the peer's changes: ${e instanceof Error ? e.message : String(e)}`, false)),
        );
        queue.push(...session.appliedInMemory());
        break;
      }
      case 'save-feeds':
        await store.saveFeeds();
        break;
      case 'load-checkpoint':
        await store.saveFeeds();
        queue.push(...session.checkpointLoaded(await store.checkpoint(a.peer)));
        break;
      case 'snapshot': {
        io.snapshot = store.stateSnapshot();
        const digest = a.digest ? (await io.snapshot.digest(DIGEST_BITS)).buckets.map((b) => Buffer.from(b.hash, 'hex')) : undefined;
        queue.push(...session.snapshotReady(digest));
        break;
      }
      case 'compare-digest': {
        const mine = (await store.digest(DIGEST_BITS)).buckets.map((b) => b.hash);
        const differing = a.theirs.map((h, i) => (Buffer.from(h).toString('hex') === mine[i] ? -1 : i)).filter((i) => i >= 0);
        io.digestCompared?.(differing.length);
        queue.push(...session.digestCompared(differing));
        break;
      }
      case 'read-held': {
        const { held, end } = await store.heldStates({ buckets: new Set(a.buckets), bits: DIGEST_BITS, after: a.after, limit: io.needBatch ?? NEED_PAGE });
        queue.push(...session.heldRead(held, end));
        break;
      }
      case 'read-states': {
        const snap = io.snapshot;
        if (!snap) throw new Error('states requested without a snapshot');
        io.reader ??= snap.batches(io.stateBatch ?? 500, a.page && snapshotPage(a.page));
        const next = await io.reader.next();
        if (next.done) {
          // the snapshot answers every page of one anti-entropy run: it goes after the last
          const last = a.page?.upTo === undefined;
          io.reader = undefined;
          if (last) io.snapshot = undefined;
          queue.push(...session.statesRead([], snap));
          if (last) await snap.close();
        } else {
          queue.push(...session.statesRead(next.value));
        }
        break;
      }
      case 'clone': {
        if (stale(io)) return io.later(session.fail(FORGOTTEN_SINCE, false));
        if (!a.done) {
          // (the session io is the run's token: a session carries one run at most)
          const { durable } = await store.cloneStatesStaged(a.objects, { clone: a.clone, run: io });
          durable.then(
            () => io.later(session.durable()),
            (e: unknown) => io.later(session.fail(`could not store the peer's object states: ${e instanceof Error ? e.message : String(e)}`, false)),
          );
          queue.push(...session.statesStaged());
          break;
        }
        // the last frame waits for every state before it to be on disk, then moves the vector
        const base = JSON.stringify(store.feedBase());
        // The run's waits are this batch's now (a session that ends meanwhile leaves them to it):
        // they end once the records are on disk, or are held as a run cut short's if it fails.
        const held = io.expected?.splice(0) ?? [];
        io.lastRun = a.run;
        try {
          await store.cloneStates(a.objects, { peer: session.peer!, ...a.done }, { clone: a.clone, run: io });
        } catch (e) {
          holdCutShort(held);
          throw e;
        }
        for (const end of held) end();
        queue.push(...session.applied());
        // (so does one that brought changes held ahead: a snapshot being served, read before, names them nowhere)
        if (JSON.stringify(store.feedBase()) !== base || (a.done.ahead?.length ?? 0) > 0) io.statesApplied?.();
        break;
      }
      case 'expect-keys':
        // (reached after its run's last frame was taken up: its records are stored with it, no wait needed)
        if (a.run <= (io.lastRun ?? -1)) break;
        (io.expected ??= []).push(store.expectIdempotency(a.keys));
        break;
      case 'open':
        if (!io.opened(a.peer, a.role)) return;
        await io.joined?.();
        break;
      case 'forward':
        // not awaited: forwarded writes share group commits, and the session goes on meanwhile
        if (!io.forward) throw new Error('a forwarded write reached a driver that cannot run writes');
        io.forward(a.write);
        break;
      case 'answered':
        io.answered?.(a.answer);
        break;
      case 'close':
        io.closed(a.reason, a.refused);
        return;
    }
  }
}

/**
 * Held objects per `need` page: about 60 bytes each with a few writers per
 * object, so a page stays near 1 MiB (heldStates also stops at about that).
 */
const NEED_PAGE = 10_000;

function snapshotPage(f: NeedFrame): SnapshotPage {
  return {
    buckets: new Set(f.buckets),
    bits: DIGEST_BITS,
    after: f.after,
    upTo: f.upTo,
    have: new Map(f.have.map((h) => [h.i, { id: h.i, sv: h.s, version: h.v }])),
  };
}

/** Lets go of what a session that ended held: the snapshot it streamed, and the store's wait for the records its run brought. */
export function releaseSession(io: SessionIo): void {
  void io.reader?.return(undefined);
  void io.snapshot?.close();
  io.reader = io.snapshot = undefined;
  // (a run whose last frame is being stored has handed its waits to that batch: see 'clone')
  holdCutShort(io.expected?.splice(0) ?? []);
}

/**
 * A run cut short may have brought the states its records belong to: a
 * reconnect's run may bring the records again, and until then a resend
 * under one of the keys is answered 'busy' rather than made a second time.
 * Store.close ends the waits sooner.
 */
function holdCutShort(held: (() => void)[]): void {
  if (held.length) setTimeout(() => held.forEach((end) => end()), CUT_SHORT_WAIT_MS).unref();
}

/** How long the keys of a run cut short are still waited for: a reconnect and the start of a new run. */
const CUT_SHORT_WAIT_MS = 30_000;
