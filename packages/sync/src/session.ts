import { bucketOf, recordedObjectId, vectorEntry, VersionVector, type ClonedState, type FeedClaim, type FeedEntry, type HeldState, type RemoteChange, type SnapshotEnd } from '@meridian/store';
import { proof, proofMatches } from './auth.js';
import { DIGEST_BITS, FEEDS_BYTES, MAX_FEEDS, PROTOCOL_VERSION, type AuthFrame, type ChangesFrame, type Frame, type HelloFrame, type NeedFrame, type Role, type StateItem, type StatesFrame, type WireChange, type WriteFrame, type WroteFrame } from './frames.js';

/**
 * One replication session over one connection, as a pure state machine: it
 * takes frames, feed reads, apply results and clock ticks, and returns
 * actions for its driver to run (send a frame, read the feed, apply changes,
 * load a checkpoint, close). It never touches a socket, a clock or the disk,
 * so the WebSocket transport and the deterministic simulator drive the same
 * code.
 *
 * Both directions run at once on one session: each side streams its own
 * feed from the position the other side asked for (its checkpoint), skipping
 * what the other side's version vector already covers, and applies what the
 * other side streams, acknowledging each frame once it is on disk. At most
 * `window` frames (and WINDOW_BYTES) are unacknowledged, so a peer that
 * stops reading holds back the sender instead of growing its memory.
 */
export type Action =
  | { type: 'send'; frame: Frame }
  | { type: 'read'; after: number; limit: number }
  | { type: 'apply'; changes: RemoteChange[]; last: number }
  | { type: 'snapshot'; digest: boolean }
  /** the next batch of the state snapshot: all of it (a clone), or what one anti-entropy page asks for */
  | { type: 'read-states'; page: NeedFrame | undefined }
  | { type: 'compare-digest'; theirs: Uint8Array[] }
  /** receiver side: what this node holds in the differing buckets after `after`, for the next `need` page */
  | { type: 'read-held'; buckets: number[]; after: string | undefined }
  /** the idempotency records of these keys came in a states frame and are stored with the run's last: until then the store waits for them */
  | { type: 'expect-keys'; keys: string[]; run: number }
  /** `clone`: the states of a clone (the subscriber was empty), not of an anti-entropy run; with `done`, the held keys' records too */
  | { type: 'clone'; objects: ClonedState[]; done: SnapshotEnd | undefined; clone: boolean; run: number }
  /** (the feed tags taken and forgotten so far are put on disk first, with the checkpoints a forget drops: see Store.saveFeeds) */
  | { type: 'load-checkpoint'; peer: string }
  /** feed tags were taken (the peer's, or nodes' it knows): wait until they are on disk (see Store.saveFeeds) */
  | { type: 'save-feeds' }
  | { type: 'open'; peer: string; role: Role }
  /** master: run a write a replica forwarded, then hand the answer to writeDone() */
  | { type: 'forward'; write: WriteFrame }
  /** replica: the master answered a forwarded write */
  | { type: 'answered'; answer: WroteFrame }
  | { type: 'close'; reason: string; refused: boolean };

export type SessionState = 'hello' | 'auth' | 'open' | 'closed';

/** What a session reads of its node's store. */
export interface SessionStore {
  readonly nodeId: string;
  readonly lastSeq: number;
  versionVector(): Record<string, number>;
  feedBase(): Record<string, number>;
  firstSeq(): number;
  /** a clone began here and its last frame has not been stored: the node asks to be cloned again */
  cloneUnfinished(): boolean;
  /** this node's feed tag, drawn with its data dir */
  readonly feedTag: string;
  /** every feed tag known, by node id (this node's own not among them) */
  knownFeeds(): Record<string, string>;
  /** takes the tags the peer forgot, checks those it showed, and with `take` takes those first seen (see Store.claimFeeds) */
  claimFeeds(feeds: Record<string, string>, take: boolean, forgotten?: Record<string, string[]>): FeedClaim;
  /** the feed tags forgotten, by node id */
  forgottenFeeds(): Record<string, string[]>;
  /** grows each time feed tags are forgotten (see Store.feedsEpoch) */
  readonly feedsEpoch: number;
}

/**
 * The options a session takes from its node's store: its id, vector, feed
 * head, bounds, and whether it holds nothing yet (then it asks to be
 * cloned), for the transport and for tests that wire sessions themselves.
 */
export function storeSessionOptions(store: SessionStore): Pick<SessionOptions, 'nodeId' | 'vector' | 'head' | 'empty' | 'feedBase' | 'firstSeq' | 'feedTag' | 'claimFeeds' | 'knownFeeds' | 'forgottenFeeds' | 'feedsEpoch'> {
  return {
    nodeId: store.nodeId,
    feedTag: store.feedTag,
    claimFeeds: (feeds, take, forgotten) => store.claimFeeds(feeds, take, forgotten),
    knownFeeds: () => store.knownFeeds(),
    forgottenFeeds: () => store.forgottenFeeds(),
    feedsEpoch: () => store.feedsEpoch,
    vector: () => store.versionVector(),
    head: store.lastSeq,
    // (a clone cut short counts as none: its purge markers alone make feed entries and vector entries)
    empty: () => store.cloneUnfinished() || (store.lastSeq === 0 && Object.keys(store.versionVector()).length === 0),
    feedBase: () => store.feedBase(),
    firstSeq: () => store.firstSeq(),
  };
}

export interface SessionOptions {
  nodeId: string;
  cluster: string;
  /** a master's cluster secret, or a replica's own credential key */
  secret: string;
  /**
   * Whether this side opened the connection. The dialer proves first; the
   * acceptor proves only once the dialer's proof checks out, so a node never
   * hands a proof to someone who has not shown the secret.
   */
  dialed: boolean;
  role: Role;
  /** a replica's credential id, `name:serial`, sent in its hello */
  credential?: string;
  /**
   * A master's check of a replica's credential id: the key to prove, or why
   * the replica is refused. Without it this node takes no replicas.
   */
  replicaKey?: (credential: string | undefined) => { key: string } | { refused: string };
  /** forwarded writes a replica may have unanswered at once */
  maxWrites?: number;
  /** offer compressed frames in the hello (the driver's FrameCodec does the compressing) */
  compress?: boolean;
  /** 16+ random bytes for this session's challenge */
  nonce: Uint8Array;
  /** this node's version vector, when subscribing */
  vector: () => Record<string, number>;
  /** the local feed head at start */
  head: number;
  /** whether this node holds nothing yet (then it asks to be cloned) */
  empty?: () => boolean;
  /** changes this node holds without feed entries (it was cloned) */
  feedBase?: () => Record<string, number>;
  /** the oldest feed seq still retained */
  firstSeq?: () => number;
  /** this node's feed tag, sent in the hello */
  feedTag?: string;
  /**
   * takes the tags the peer forgot, and checks the feed tags it showed
   * against those known (this node's own included), with `take` taking the
   * ones first seen at once; a refusal (the first that differs, a word
   * refused) or `busy` is returned, and nothing taken (see Store.claimFeeds)
   */
  claimFeeds?: (feeds: Record<string, string>, take: boolean, forgotten?: Record<string, string[]>) => FeedClaim;
  /** the feed tags forgotten, by node id, sent in the auth */
  forgottenFeeds?: () => Record<string, string[]>;
  /** grows each time feed tags are forgotten (see Store.feedsEpoch) */
  feedsEpoch?: () => number;
  /** every feed tag known, sent in the auth */
  knownFeeds?: () => Record<string, string>;
  /** changes per batch */
  batch?: number;
  /** unacknowledged frames allowed in flight (also bounded by WINDOW_BYTES); at most the protocol's 32, which a peer enforces */
  window?: number;
  /** ms to complete the handshake */
  authTimeout?: number;
  /**
   * ms a state snapshot stays open for a peer that asks for nothing more
   * (no `need` page, no acknowledgement) before the session is closed and
   * the snapshot released: an open snapshot keeps LevelDB from dropping
   * what it covers, so a stuck peer would grow this node's disk
   */
  snapshotIdle?: number;
}

export interface SessionStats {
  /** their feed head as last reported */
  remoteHead: number;
  /** their feed seq applied here (readable; on disk once acknowledged, which follows in order) */
  applied: number;
  /** our feed seq they acknowledged */
  acked: number;
  /** our feed seq sent */
  sent: number;
  /** HLC of the oldest change received and not yet applied, or of the last applied while behind */
  behindSince: number | undefined;
}

export class SyncSession {
  state: SessionState = 'hello';
  peer: string | undefined;
  peerRole: Role | undefined;
  /** the credential id a replica peer presented */
  peerCredential: string | undefined;
  readonly stats: SessionStats = { remoteHead: 0, applied: 0, acked: 0, sent: 0, behindSince: undefined };

  private peerNonce: Uint8Array | undefined;
  /** the feed tag in the peer's hello */
  private peerFeed: string | undefined;
  /** the feed tags the peer showed (its hello's and its auth's), until its sub takes them */
  private shownFeeds: Record<string, string> | undefined;
  /**
   * The store's feedsEpoch up to which the peer was told of forgotten tags
   * (this node's proof's, or after this session's own claim): a session
   * that opened before tags were forgotten since applies nothing more (the
   * executor checks), since its peer was not told.
   */
  feedsEpochAtAuth: number | undefined;
  /** the store's feedsEpoch when this node's proof (with the tags it had forgotten) was made */
  private proofEpoch: number | undefined;
  /** the key both sides prove: the cluster secret, or the replica's credential key */
  private key = '';
  private writes = 0;
  /** receiver side: we subscribed to the peer's feed */
  private subscribed = false;
  private startedAt = 0;
  private head: number;
  /** sender side: our feed position streamed so far; undefined until they subscribe */
  private cursor: number | undefined;
  /** what the peer holds: its vector at subscription, plus what this session sent it */
  private peerHas = new VersionVector();
  /** the vector the peer subscribed with: no session is live before this node holds all of it */
  private peerHadAtSub: Record<string, number> | undefined;
  private reading = false;
  /** estimated bytes of each unacknowledged frame, oldest first (one entry per frame in flight), and their sum */
  private readonly inFlightSizes: number[] = [];
  private inFlightBytes = 0;
  private skippedSinceFrame = 0;
  /** head and last of the last changes frame sent */
  private toldHead = 0;
  private toldLast = 0;
  /** sender side: streaming object states to a cloning peer (all of them, or one anti-entropy page) */
  private cloning = false;
  private page: NeedFrame | undefined;
  /** sender side: where the last anti-entropy page answered ended, and the buckets of the first */
  private pageAfter: string | undefined;
  private pageBuckets: number[] | undefined;
  /** sender side: a state snapshot is being taken, or its digest (or the last page's answer) awaits the peer's next `need` */
  private preparing: 'snapshot' | 'need' | undefined;
  /** receiver side: we asked for states (clone or anti-entropy) and the last has not come */
  private expectStates = false;
  /** this node's entry for the peer's own changes when it sent its proof (see ownProof) */
  private peerOwnAtProof: number | undefined;
  /** receiver side: the parts so far of a state cut into parts (see statesFrames) */
  private partial: { id: string; diff: boolean; parts: Uint8Array[]; bytes: number } | undefined;
  /** sender side: states frames read and not yet sent, for want of room in the window */
  private readonly queuedStates: StatesFrame[] = [];
  /**
   * receiver side: the idempotency records of this run of states not yet
   * handed to the driver to store, with the object each names. Each is
   * stored once the run has passed its object (see passedAt), or with the
   * run's last frame.
   */
  private readonly heldKeys: { q: string; r: Uint8Array; id: string | undefined }[] = [];
  /** whether heldKeys is in id order (records arrive in key order, before the objects: sorted once, when the objects start) */
  private heldSorted = true;
  /** receiver side, anti-entropy: held records of objects outside the buckets the run repairs, stored with the next frame applied */
  private readonly readyKeys: { q: string; r: Uint8Array }[] = [];
  /**
   * receiver side: per states frame, the id up to which (in key order) the
   * run had sent, or skipped as held here, every object of its buckets once
   * that frame came. A record of a write to such an object may be stored
   * with that frame: the sender read both from one snapshot, in which the
   * object's state held the write.
   */
  private readonly passedAt = new WeakMap<StatesFrame, string>();
  /** receiver side: the highest object id the run has passed so far (reset for each run, in digestCompared) */
  private passedThrough: string | undefined;
  /** receiver side, anti-entropy: the buckets the run repairs; a record of an object outside them is here already (undefined: a clone, every bucket) */
  private runBuckets: ReadonlySet<number> | undefined;
  /** runs of states (clones, anti-entropy) whose last frame was handed to the driver */
  private runsDone = 0;
  /** receiver side: this session subscribed with `clone` */
  private asClone = false;
  /** a session carries one anti-entropy run at most */
  private digestReceived = false;
  /** receiver side, during anti-entropy: the differing buckets, where the last `need` page ended, whether its answer is still coming, and whether it was the last page */
  private needBuckets: number[] | undefined;
  private needAfter: string | undefined;
  private pageOpen = false;
  private lastNeedSent = false;
  /** receiver side: batches waiting to be applied, oldest first */
  private readonly pendingApply: (ChangesFrame | StatesFrame)[] = [];
  private applying = false;
  /** changes frames taken together into the apply under way (each is acknowledged on its own) */
  private applyingFrames = 0;
  /** applies done in memory whose batch is not on disk yet, oldest first: the `last` of each of their frames */
  private readonly unsynced: number[][] = [];
  private readonly batch: number;
  private readonly window: number;
  private readonly authTimeout: number;
  private readonly snapshotIdle: number;
  /** the first tick since the peer last moved a held state snapshot on (with `need` or `ack`) */
  private snapshotIdleSince: number | undefined;

  constructor(private readonly opts: SessionOptions) {
    this.head = opts.head;
    this.batch = opts.batch ?? 500;
    this.window = Math.min(opts.window ?? PROTOCOL_WINDOW, PROTOCOL_WINDOW);
    this.authTimeout = opts.authTimeout ?? 10_000;
    this.snapshotIdle = opts.snapshotIdle ?? 600_000;
  }

  start(now: number): Action[] {
    this.startedAt = now;
    const hello: HelloFrame = { t: 'hello', v: PROTOCOL_VERSION, cluster: this.opts.cluster, node: this.opts.nodeId, role: this.opts.role, nonce: this.opts.nonce };
    if (this.opts.credential !== undefined) hello.cred = this.opts.credential;
    if (this.opts.compress) hello.z = true;
    if (this.opts.feedTag !== undefined) hello.feed = this.opts.feedTag;
    return [{ type: 'send', frame: hello }];
  }

  tick(now: number): Action[] {
    if (this.state !== 'open' && this.state !== 'closed' && now - this.startedAt > this.authTimeout) {
      return this.fail('the handshake did not complete in time', false);
    }
    // A snapshot is held for the peer while states stream to it or while its next `need` page is awaited;
    // not while the driver takes it or reads the next batch from it, which is this node's own work.
    const held = this.state === 'open' && ((this.cloning && !this.reading) || this.preparing === 'need');
    if (!held) {
      this.snapshotIdleSince = undefined;
      return [];
    }
    this.snapshotIdleSince ??= now;
    if (now - this.snapshotIdleSince > this.snapshotIdle) {
      // (worded for both ends: the peer reads it as `peer closed the session: ...`)
      return this.fail(`no state asked for or acknowledged by the subscriber for ${Math.round(this.snapshotIdle / 1000)} s; the sender released its state snapshot`, false);
    }
    return [];
  }

  receive(frame: Frame): Action[] {
    if (this.state === 'closed') return [];
    if (frame.t === 'error') {
      const wasOpen = this.state === 'open';
      this.state = 'closed';
      // an error before the handshake completed is the peer refusing us (a bad proof is seen only by the acceptor)
      return [{ type: 'close', reason: `peer closed the session: ${frame.reason}`, refused: !wasOpen }];
    }
    switch (this.state) {
      case 'hello':
        if (frame.t !== 'hello') return this.fail(`expected hello, got ${frame.t} before authentication`, true);
        return this.onHello(frame);
      case 'auth':
        if (frame.t !== 'auth') return this.fail(`expected auth, got ${frame.t} before authentication`, true);
        return this.onAuth(frame.proof, frame.feeds, frame.forgotten);
      case 'open':
        return this.onOpenFrame(frame);
      default:
        return [];
    }
  }

  private onHello(h: Extract<Frame, { t: 'hello' }>): Action[] {
    if (h.v !== PROTOCOL_VERSION) return this.fail(`unsupported protocol version ${h.v}; this node speaks ${PROTOCOL_VERSION}`, true);
    if (h.cluster !== this.opts.cluster) return this.fail(`cluster id "${h.cluster}" is not this cluster ("${this.opts.cluster}")`, true);
    if (h.node === this.opts.nodeId) return this.fail(`the peer has this node's own id "${h.node}"`, true);
    if (this.opts.role === 'replica') {
      if (h.role !== 'master') return this.fail(`${h.node} is a ${h.role}; a replica replicates only from masters`, true);
      this.key = this.opts.secret;
    } else if (h.role === 'replica') {
      const found = this.opts.replicaKey?.(h.cred) ?? { refused: 'this node takes no replicas (it has no cluster secret to check their credentials with)' };
      if ('refused' in found) return this.fail(found.refused, true);
      this.key = found.key;
    } else {
      this.key = this.opts.secret;
    }
    this.peer = h.node;
    this.peerRole = h.role;
    this.peerCredential = h.cred;
    this.peerNonce = h.nonce;
    this.peerFeed = h.feed;
    this.state = 'auth';
    return this.opts.dialed ? [this.ownProof()] : [];
  }

  private ownProof(): Action {
    // what this node held of the peer's own changes before the peer could subscribe: the peer's `sub` comes after
    // this proof, so its vector holds at least as many of its own (see rolledBack); a later count may have
    // grown by a change of the peer's relayed here meanwhile
    this.peerOwnAtProof = vectorEntry(this.opts.vector(), this.peer!);
    this.proofEpoch = this.opts.feedsEpoch?.();
    const p = proof(this.key, this.opts.cluster, this.opts.dialed ? 'dialer' : 'acceptor', this.opts.nodeId, this.peer!, this.opts.nonce, this.peerNonce!);
    const frame: AuthFrame = { t: 'auth', proof: p };
    // (as many as fit: a cluster has a few dozen node ids, restored incarnations included, not thousands; and only
    // to a peer that showed a tag of its own: an older build refuses a frame over 4,096 bytes before authentication)
    // (the forgotten first: a peer not told would refuse the nodes that took the new dir's tag, and a node whose
    // changes it holds, everywhere)
    let bytes = 0;
    let tags = 0;
    const fits = (node: string, n: number): boolean => {
      const cost = node.length + 4 + n * 8;
      if (bytes + cost > FEEDS_BYTES || tags + n > MAX_FEEDS) return false;
      bytes += cost;
      tags += n;
      return true;
    };
    const forgotten: [string, string[]][] = [];
    for (const [node, gone] of this.peerFeed === undefined ? [] : Object.entries(this.opts.forgottenFeeds?.() ?? {})) {
      if (!fits(node, gone.length)) break;
      forgotten.push([node, gone]);
    }
    if (forgotten.length) frame.forgotten = Object.fromEntries(forgotten);
    const feeds: [string, string][] = [];
    for (const [node, tag] of this.peerFeed === undefined ? [] : Object.entries(this.opts.knownFeeds?.() ?? {})) {
      if (!fits(node, 1)) break;
      feeds.push([node, tag]);
    }
    if (feeds.length) frame.feeds = Object.fromEntries(feeds);
    return { type: 'send', frame };
  }

  private onAuth(got: Uint8Array, theirFeeds: Record<string, string> = {}, forgotten: Record<string, string[]> = {}): Action[] {
    const expected = proof(this.key, this.opts.cluster, this.opts.dialed ? 'acceptor' : 'dialer', this.peer!, this.opts.nodeId, this.peerNonce!, this.opts.nonce);
    if (!proofMatches(expected, got)) {
      const what = this.peerRole === 'replica' ? 'its replica credential' : this.opts.role === 'replica' ? 'the key of this replica\'s credential' : 'this cluster\'s secret';
      return this.fail(`authentication failed: the peer does not hold ${what}`, true);
    }
    this.state = 'open';
    const open: Action[] = [{ type: 'open', peer: this.peer!, role: this.peerRole! }];
    // the acceptor proves itself now that the dialer has
    if (!this.opts.dialed) open.unshift(this.ownProof());
    // A master never subscribes to a replica: replicas are receive-only.
    if (this.peerRole === 'replica') return open;
    const gone = this.opts.forgottenFeeds?.() ?? {};
    // (the old dir itself, back after all: it would refuse the word in this node's auth too, but not before this side opened)
    if (this.peerFeed !== undefined && forgottenIn(gone, this.peer!, this.peerFeed)) {
      return this.fail(`${this.peer} runs on a data dir whose feed (${this.peerFeed}) was forgotten here with "meridian forget-feed"; start it on an empty --dir under a new --node-id (it clones)`, true);
    }
    // Checked now, taken once the peer's sub passed its checks too (see 'sub'). A replica gets no sub from its
    // master: it takes them now, and they are on disk before its checkpoint is read.
    this.shownFeeds = this.peerFeed === undefined ? theirFeeds : { ...theirFeeds, [this.peer!]: this.peerFeed };
    const replica = this.opts.role === 'replica';
    // A replica cannot tell its master a word (no master takes a replica's): one still showing a tag forgotten
    // here was not told, and may hold that dir's changes, which would be taken here for the new dir's.
    const untold = replica ? Object.entries(this.shownFeeds).find(([node, tag]) => forgottenIn(gone, node, tag)) : undefined;
    if (untold) return this.fail(`${this.peer} still knows ${untold[0]} by a data dir forgotten here (feed ${untold[1]}), and a replica cannot tell it so; this replica follows another master until a peer tells ${this.peer}`, true);
    // (the tags the peer forgot are forgotten here at once: they are on disk, and a master's sessions open
    // again to pass them on, this one included, before this one subscribes and a change of the new dir could come)
    const before = this.opts.feedsEpoch?.();
    const claim = this.opts.claimFeeds?.(this.shownFeeds, replica, forgotten) ?? { taken: 0 };
    if ('busy' in claim) {
      // (an acceptor proves itself first, so that the dialer, open, takes the close for what it is: not a refusal)
      return [...(this.opts.dialed ? [] : [open[0]!]), ...this.fail('this node is applying what peers sent; the feed tags the peer forgot are taken at the next session', false)];
    }
    if ('node' in claim) return this.fail(this.feedsRefusal(claim), true);
    // The peer was told what this node had forgotten when it made its proof (a dialer's, sent at the hello); a word
    // this claim took is the peer's own. A word taken in between, on another session, makes this one stale.
    this.feedsEpochAtAuth = this.proofEpoch === before ? this.opts.feedsEpoch?.() : this.proofEpoch;
    if (replica) this.shownFeeds = undefined;
    return [...open, { type: 'load-checkpoint', peer: this.peer! }];
  }

  /**
   * Why the session is refused over a feed tag: a checkpoint and a vector
   * entry count in one feed of a node's. A data dir made again under an old
   * node id (a lost disk, a config that pins --node-id) starts a feed and a
   * count of its own changes from 1 again: followed from an old checkpoint
   * its first entries would be skipped, and its new changes would be taken
   * for the old ones of the same numbers, on every node. So each node's feed
   * tag, once known, must be the same in every peer's eyes: the peer's own
   * (its hello), and those it knows of others (its auth), this node's
   * included. (Checked once authenticated: a tag no one proved is not taken.
   * A peer of a build without tags shows none, and is not checked.)
   */
  private feedsRefusal({ node, known, shown, holds, forgot }: Extract<FeedClaim, { node: string }>): string {
    const me = this.opts.nodeId;
    const peer = this.peer!;
    if (forgot && node === me) return `${peer} was told to forget this data dir's feed (${known}) with "meridian forget-feed ${me}", though ${me} still runs on it; start ${me} on an empty --dir under a new --node-id (it clones)`;
    if (forgot) {
      return `${peer} was told to forget ${node}'s data dir (feed ${known}) with "meridian forget-feed", but this node holds ${holds} change${holds === 1 ? '' : 's'} that dir made, which a new dir under ${node}'s id would pass its own off as; start ${node} under a new --node-id, and this node stays apart from those told until they are made again`;
    }
    const restart = (id: string): string => `start ${id} on an empty --dir under a new --node-id (it clones), restore a backup of it with "meridian restore", or, if no node holds a change its old dir made, run "meridian forget-feed ${id}" on a node that refuses it (its peers are told)`;
    if (node === me) return `${peer} knows ${me} by another data dir (feed ${shown}) than this one (feed ${known}): this dir was made again under ${me}'s old node id, and would pass its new changes off as the old dir's; ${restart(me)}`;
    if (node === peer) return `${peer}'s data dir is not the one this node replicated with (its feed is ${shown}, was ${known}): a dir made again under an old node id would pass its new changes off as that node's old ones; ${restart(peer)}`;
    return `${peer} knows ${node} by another data dir (feed ${shown}) than this node does (feed ${known}): a dir was made again under ${node}'s old node id, and one of the two took its changes as the old dir's; ${restart(node)}, then compare both with "meridian verify"`;
  }

  /** The peer subscribed, and passed the checks: send it a snapshot, or our feed from its position. */
  private subscribedBy(f: Extract<Frame, { t: 'sub' }>): Action[] {
    this.peerHas = new VersionVector(Object.entries(f.vector));
    this.peerHadAtSub = f.vector;
    if (f.clone) {
      this.preparing = 'snapshot';
      return [{ type: 'snapshot', digest: false }];
    }
    // Our feed cannot bring this peer up to date when its position is
    // older than what we retain, or when it lacks changes we hold without
    // feed entries (we were cloned): compare digests and send states.
    const base = this.opts.feedBase?.() ?? {};
    const lacksBase = Object.entries(base).some(([o, n]) => vectorEntry(f.vector, o) < n);
    const tooOld = f.since + 1 < (this.opts.firstSeq?.() ?? 1);
    if (lacksBase || tooOld) {
      this.preparing = 'snapshot';
      return [{ type: 'snapshot', digest: true }];
    }
    this.cursor = Math.min(f.since, this.head);
    this.stats.sent = this.stats.acked = this.cursor;
    return this.pump();
  }

  /**
   * Whether the peer this session serves our feed to may lack changes the
   * feed base `base` says we hold without feed entries, so that it must
   * subscribe again to be checked against it: its vector, as this session
   * tracks it, stops below the base. A snapshot being served counts with
   * `snapshots` (its states were read before the base grew); a session the
   * peer has not subscribed on yet does not (its `sub` is checked then).
   */
  lacksBase(base: Record<string, number>, snapshots: boolean): boolean {
    if (this.state !== 'open') return false;
    if (this.cursor === undefined) return snapshots && (this.cloning || this.preparing !== undefined);
    return Object.entries(base).some(([o, n]) => this.peerHas.get(o) < n);
  }

  /** The checkpoint for this peer is loaded: ask for everything after it. */
  checkpointLoaded(seq: number): Action[] {
    if (this.state !== 'open') return [];
    this.stats.applied = seq;
    const clone = seq === 0 && (this.opts.empty?.() ?? false);
    this.expectStates = clone;
    this.asClone = clone;
    this.subscribed = true;
    return [{ type: 'send', frame: { t: 'sub', since: seq, vector: this.opts.vector(), ...(clone ? { clone: true } : {}) } }];
  }

  private onOpenFrame(f: Frame): Action[] {
    if (this.peerRole === 'replica' && (f.t === 'changes' || f.t === 'states' || f.t === 'digest')) {
      return this.fail(`replicas are receive-only: ${this.peer} sent a ${f.t} frame`, true);
    }
    if (!this.subscribed && (f.t === 'changes' || f.t === 'states' || f.t === 'digest')) return this.fail(`${f.t} frame before this side subscribed`, true);
    // (frames wait in pendingApply until applied: a peer that did not wait for acknowledgements grew it, and the heap, without end)
    if ((f.t === 'changes' || f.t === 'states') && this.pendingApply.length >= PROTOCOL_WINDOW) {
      return this.fail(`the peer sent more than ${PROTOCOL_WINDOW} frames without waiting for their acknowledgements (the protocol's window)`, true);
    }
    switch (f.t) {
      case 'write':
        if (this.opts.role !== 'master' || this.peerRole !== 'replica') return this.fail('only a replica forwards writes, and only to a master', true);
        if (++this.writes > (this.opts.maxWrites ?? 1024)) return this.fail(`more than ${this.opts.maxWrites ?? 1024} forwarded writes unanswered at once`, true);
        return [{ type: 'forward', write: f }];
      case 'wrote':
        if (this.opts.role !== 'replica') return this.fail('wrote frame sent to a master', true);
        return [{ type: 'answered', answer: f }];
      case 'sub': {
        if (this.opts.role === 'replica') return this.fail('a replica serves no feed; subscribe to a master', true);
        if (this.cursor !== undefined || this.cloning || this.preparing) return this.fail('subscribed twice on one session', true);
        const rolledBack = this.rolledBack(f.vector, f.since);
        if (rolledBack) return this.fail(rolledBack, true);
        // The tags the peer showed are taken only now, once its data dir passed the checks of its vector: a dir
        // made again that made fewer changes than were held of it is refused above, and its tag, taken, would
        // have been passed on to every node that knew none, which would then refuse the nodes that knew the old.
        const claim = this.shownFeeds && this.opts.claimFeeds?.(this.shownFeeds, true);
        if (claim && 'node' in claim) return this.fail(this.feedsRefusal(claim), true);
        return [...(claim && 'taken' in claim && claim.taken > 0 ? [{ type: 'save-feeds' } as const] : []), ...this.subscribedBy(f)];
      }
      case 'need':
        this.snapshotIdleSince = undefined;
        if (this.preparing !== 'need') return this.fail(this.cloning ? 'need before the last page was answered' : 'need without a digest', true);
        if (f.after !== this.pageAfter) return this.fail(`need page starts after ${f.after ?? 'the start'}, where no page ended`, true);
        if (f.upTo !== undefined && f.after !== undefined && f.upTo <= f.after) return this.fail(`need page ends at ${f.upTo}, not after where it starts`, true);
        // the purge markers of the differing buckets went with the first page: every page names the same buckets
        if (this.pageBuckets !== undefined && (f.buckets.length !== this.pageBuckets.length || f.buckets.some((b, i) => b !== this.pageBuckets![i]))) {
          return this.fail('need page names other buckets than the first page', true);
        }
        this.pageBuckets = f.buckets;
        this.preparing = undefined;
        this.cloning = true;
        this.page = f;
        return this.pump();
      case 'digest':
        // set on receipt: the comparison runs in the driver, and a second digest may come before it ends
        // (a clone's session carries no anti-entropy run besides: its records would count as passed by the clone's)
        if (this.asClone) return this.fail('a digest in a session that asked for a clone', true);
        if (this.digestReceived || this.expectStates) return this.fail('a second digest in one session', true);
        this.digestReceived = true;
        return [{ type: 'compare-digest', theirs: f.buckets }];
      case 'states': {
        if (!this.expectStates) return this.fail('states frame that was not asked for', true);
        if (f.page) {
          if (!this.pageOpen) return this.fail('states page end that was not asked for', true);
          this.pageOpen = false;
        }
        if (f.done) {
          if (this.needBuckets && !this.lastNeedSent) return this.fail('the last states frame came before the last need page', true);
          this.expectStates = false;
          this.needBuckets = undefined;
          this.lastNeedSent = false;
        }
        if (f.done && f.head !== undefined) this.stats.remoteHead = Math.max(this.stats.remoteHead, f.head);
        const unjoined = this.joinParts(f);
        if (unjoined) return this.fail(unjoined, true);
        // Idempotency records are held until the run has passed their objects (passedRecords), or its last frame.
        // Past MAX_HELD_KEYS held at once they are dropped, not the run: a resend of such a write is made again, as before records travelled.
        // Meanwhile the driver has the store wait for them (expect-keys): a resend of such a write may come
        // after the state holding its change is in, and before its record is.
        const expected: string[] = [];
        if (f.keys) {
          for (const k of f.keys) {
            if (this.heldKeys.length + this.readyKeys.length >= MAX_HELD_KEYS) break;
            const id = recordedObjectId(k.r);
            // (the receiver holds such an object's state already: the bucket is worked out once, here)
            if (id !== undefined && this.runBuckets !== undefined && !this.runBuckets.has(bucketOf(id, DIGEST_BITS))) this.readyKeys.push(k);
            else {
              this.heldKeys.push({ ...k, id });
              this.heldSorted = false;
            }
            expected.push(k.q);
          }
          delete f.keys;
        }
        // how far the run has come: this frame's last whole object (purge markers, sent first, run
        // on their own), and the end of the page it ends (the sender skipped what is held here)
        // (ids are ASCII: string order is their keys' byte order)
        for (let n = f.objects.length - 1; n >= 0; n--) {
          const o = f.objects[n]!;
          if ('p' in o && o.p) continue;
          if (this.passedThrough === undefined || o.i > this.passedThrough) this.passedThrough = o.i;
          break;
        }
        if (f.page && this.needAfter !== undefined && (this.passedThrough === undefined || this.needAfter > this.passedThrough)) this.passedThrough = this.needAfter;
        if (this.passedThrough !== undefined) this.passedAt.set(f, this.passedThrough);
        this.pendingApply.push(f);
        // the next page is asked for at once: its answer may come while this one is applied
        const more: Action[] = f.page ? [{ type: 'read-held', buckets: this.needBuckets!, after: this.needAfter }] : [];
        return [...(expected.length ? [{ type: 'expect-keys', keys: expected, run: this.runsDone } as const] : []), ...more, ...this.nextApply()];
      }
      case 'changes': {
        // states frames before the final one may still be queued here: what matters is that the last has arrived
        if (this.expectStates) return this.fail('changes before the state snapshot ended', true);
        this.stats.remoteHead = Math.max(this.stats.remoteHead, f.head, f.last);
        if (f.last <= this.lastQueued()) return this.fail(`changes frame goes back to ${f.last}`, true);
        if (f.changes.length && this.stats.behindSince === undefined) this.stats.behindSince = f.changes[0]!.h;
        this.pendingApply.push(f);
        return this.nextApply();
      }
      case 'ack':
        this.snapshotIdleSince = undefined;
        if ((this.cursor === undefined && !this.cloning && this.preparing !== 'need') || f.seq > this.stats.sent || this.inFlight === 0) return this.fail(`ack of ${f.seq}, which was never sent`, true);
        this.inFlightBytes -= this.inFlightSizes.shift()!;
        this.stats.acked = f.seq;
        return this.pump();
      case 'head':
        this.stats.remoteHead = Math.max(this.stats.remoteHead, f.head);
        return [];
      default:
        return this.fail(`unexpected ${f.t} frame on an open session`, true);
    }
  }

  /**
   * Puts together a state cut into parts: the parts are taken out of their
   * frames (which are still applied, empty, and acknowledged as any other)
   * and the whole goes in the frame of the last part. Returns why the
   * frame is refused, if it is.
   */
  private joinParts(f: StatesFrame): string | undefined {
    const objects = f.objects;
    const p = this.partial;
    if (p) {
      const first = objects[0];
      if (!first || first.i !== p.id || ('u' in first) !== p.diff || ('p' in first && first.p)) return `a states frame did not continue object ${p.id}, which the last one began in parts`;
      const bytes = 'u' in first ? first.u : first.r;
      p.bytes += bytes.length;
      if (p.bytes > MAX_STATE_BYTES) return `object ${p.id} came in parts of more than ${MAX_STATE_BYTES / 1024 / 1024} MiB in all, more than this node takes`;
      p.parts.push(bytes);
      if (first.m) {
        objects.shift(); // (a part is the last of its frame: the frame is now empty)
        return undefined;
      }
      const whole = Buffer.concat(p.parts);
      objects[0] = 'u' in first ? { i: p.id, u: whole, h: first.h } : { i: p.id, r: whole };
      this.partial = undefined;
    }
    const last = objects.at(-1);
    if (last?.m) {
      const bytes = 'u' in last ? last.u : last.r;
      this.partial = { id: last.i, diff: 'u' in last, parts: [bytes], bytes: bytes.length };
      objects.pop();
    }
    return undefined;
  }

  private lastQueued(): number {
    const last = this.pendingApply[this.pendingApply.length - 1];
    if (!last) return this.stats.applied;
    return last.t === 'changes' ? last.last : (last.head ?? 0);
  }

  private nextApply(): Action[] {
    if (this.applying || this.pendingApply.length === 0) return [];
    const f = this.pendingApply[0]!;
    // The last states frame moves the vector, which must never claim what is
    // not on disk: it waits until every frame before it is acknowledged.
    if (f.t === 'states' && f.done && this.unsynced.length > 0) return [];
    this.applying = true;
    if (f.t === 'states') {
      const done = f.done ? { head: f.head!, vector: f.vector!, ...(f.ahead ? { ahead: f.ahead } : {}) } : undefined;
      const keyed = (f.done ? [...this.readyKeys.splice(0), ...this.heldKeys.splice(0)] : this.passedRecords(f)).map((k): ClonedState => ({ key: k.q, record: k.r }));
      // (numbered: an expect-keys of this run that the driver reaches after its last frame is dropped)
      const run = f.done ? this.runsDone++ : this.runsDone;
      return [{ type: 'clone', objects: [...f.objects.map(fromStateItem), ...keyed], done, clone: this.asClone, run }];
    }
    // Changes frames that queued up while the last apply ran are applied together: one
    // read of the objects they touch, one apply. (Merging began when each apply waited for
    // its own fsync; since applies are staged the group commit shares fsyncs anyway, and
    // what the merge still saves has not been measured.)
    let n = 1;
    let count = f.changes.length;
    for (; n < this.pendingApply.length; n++) {
      const g = this.pendingApply[n]!;
      if (g.t !== 'changes' || count + g.changes.length > MAX_MERGED_CHANGES) break;
      count += g.changes.length;
    }
    this.applyingFrames = n;
    const frames = this.pendingApply.slice(0, n) as ChangesFrame[];
    return [{ type: 'apply', changes: frames.flatMap((g) => g.changes.map(fromWire)), last: frames[n - 1]!.last }];
  }

  /**
   * The held records whose writes the states up to frame `f` hold, taken
   * out of heldKeys: of an object the run had passed by then, or outside
   * the buckets an anti-entropy run repairs. Stored with `f`'s states (the
   * store waits for them to be on disk), not with the run's last frame, so
   * that a run cut short after the states it brought leaves their records
   * too: a resend of such a write, later or after a restart, is answered
   * from the record, not made a second time.
   */
  private passedRecords(f: StatesFrame): { q: string; r: Uint8Array }[] {
    const ready: { q: string; r: Uint8Array }[] = this.readyKeys.splice(0);
    const through = this.passedAt.get(f);
    if (through === undefined || this.heldKeys.length === 0) return ready;
    if (!this.heldSorted) {
      // (a record naming no valid id sorts last: it is never passed, and goes with the last frame, which refuses it)
      this.heldKeys.sort((a, b) => (a.id === b.id ? 0 : a.id === undefined ? 1 : b.id === undefined ? -1 : a.id < b.id ? -1 : 1));
      this.heldSorted = true;
    }
    let n = 0;
    while (n < this.heldKeys.length && this.heldKeys[n]!.id !== undefined && this.heldKeys[n]!.id! <= through) n++;
    for (const k of this.heldKeys.splice(0, n)) ready.push(k);
    return ready;
  }

  /** Master: a forwarded write is done (or refused); answer the replica. */
  writeDone(answer: WroteFrame): Action[] {
    if (this.state !== 'open') return [];
    this.writes--;
    return [{ type: 'send', frame: answer }];
  }

  /**
   * The states frame being applied (not the last of its stream) is held
   * here, not yet on disk: the next frame may be applied meanwhile, and
   * durable() acknowledges this one once it is on disk.
   */
  statesStaged(): Action[] {
    if (this.state !== 'open' || !this.applying || this.pendingApply[0]?.t !== 'states') return [];
    this.pendingApply.shift();
    this.applying = false;
    this.unsynced.push([0]);
    return this.nextApply();
  }

  /** The oldest pending batch (with those taken with it) is on disk here: acknowledge each. */
  applied(): Action[] {
    if (this.state !== 'open' || !this.applying) return [];
    if (this.pendingApply[0]!.t === 'states') {
      const f = this.pendingApply.shift() as StatesFrame;
      this.applying = false;
      if (f.done) this.stats.applied = f.head!;
      return [{ type: 'send', frame: { t: 'ack', seq: f.done ? f.head! : 0 } }, ...this.nextApply()];
    }
    const next = this.appliedInMemory();
    return [...this.durable(), ...next];
  }

  /**
   * The changes of the apply under way are applied here (readable), not yet
   * on disk: the next frames may be applied meanwhile; durable() acknowledges
   * these once their batch is on disk.
   */
  appliedInMemory(): Action[] {
    if (this.state !== 'open' || !this.applying || this.pendingApply[0]?.t !== 'changes') return [];
    const frames = this.pendingApply.splice(0, this.applyingFrames) as ChangesFrame[];
    this.applying = false;
    this.unsynced.push(frames.map((g) => g.last));
    const last = frames[frames.length - 1]!;
    this.stats.applied = last.last;
    const next = this.pendingApply[0];
    const nextOldest = next?.t === 'changes' ? next.changes[0]?.h : undefined;
    this.stats.behindSince = nextOldest ?? (last.last < this.stats.remoteHead ? last.changes.at(-1)?.h ?? this.stats.behindSince : undefined);
    return this.nextApply();
  }

  /** The oldest apply not yet on disk is: acknowledge its frames, one ack each (the sender counts its window in frames). */
  durable(): Action[] {
    const lasts = this.unsynced.shift();
    if (this.state !== 'open' || !lasts) return [];
    // (the last states frame may have been waiting for this one)
    return [...lasts.map((seq): Action => ({ type: 'send', frame: { t: 'ack', seq } })), ...this.nextApply()];
  }

  private get inFlight(): number {
    return this.inFlightSizes.length;
  }

  private sent(bytes: number): void {
    this.inFlightSizes.push(bytes);
    this.inFlightBytes += bytes;
  }

  /** The local feed grew: stream the new changes if the window allows. */
  feedAdvanced(head: number): Action[] {
    if (head <= this.head) return [];
    this.head = head;
    return this.pump();
  }

  private pump(): Action[] {
    if (this.state !== 'open') return [];
    // states frames read already go first, as the window allows; nothing is read while any waits
    const sends: Action[] = [];
    while (this.queuedStates.length && this.inFlight < this.window && this.inFlightBytes < WINDOW_BYTES) {
      const f = this.queuedStates.shift()!;
      this.sent(f.objects.reduce((n, o) => n + ('u' in o ? o.u.length : o.r.length) + 64, 0) + (f.keys ?? []).reduce((n, k) => n + k.q.length + k.r.length + 16, 0));
      sends.push({ type: 'send', frame: f });
    }
    if (this.queuedStates.length) return sends;
    return sends.length ? [...sends, ...this.readMore()] : this.readMore();
  }

  private readMore(): Action[] {
    if (this.reading || this.inFlight >= this.window || this.inFlightBytes >= WINDOW_BYTES) return [];
    if (this.cloning) {
      this.reading = true;
      return [{ type: 'read-states', page: this.page }];
    }
    if (this.cursor === undefined) return [];
    if (this.cursor >= this.head) return [];
    this.reading = true;
    return [{ type: 'read', after: this.cursor, limit: this.batch }];
  }

  /**
   * Entries read from the local feed after the cursor. Those the peer holds
   * already (its own, or covered by its vector) are left out, but the
   * position still moves past them.
   */
  feedRead(entries: FeedEntry[]): Action[] {
    if (this.state !== 'open' || !this.reading) return [];
    this.reading = false;
    if (entries.length === 0) return [];
    if (entries[0]!.seq !== this.cursor! + 1) {
      // the feed was trimmed past our position: the peer needs anti-entropy
      return this.fail(`the feed was trimmed past position ${this.cursor}; reconnect to catch up by anti-entropy`, false);
    }
    const changes: WireChange[] = [];
    // A frame must stay well under the peer's 16 MiB message limit: a batch
    // over it would be refused and resent forever.
    let bytes = 0;
    let last = this.cursor!;
    for (const e of entries) {
      if (changes.length > 0 && bytes + e.update.length > FRAME_BUDGET) break;
      last = e.seq;
      if (e.origin === this.peer || this.peerHas.has(e.origin, e.originSeq)) continue;
      this.peerHas.add(e.origin, e.originSeq);
      bytes += e.update.length + 64;
      changes.push(toWire(e));
    }
    this.cursor = last;
    this.stats.sent = last;
    // Entries the peer holds already (above all its own, echoed back) need no
    // frame; one goes now and then only so that its checkpoint moves on.
    this.skippedSinceFrame += entries.length;
    // (a peer told of a head beyond the last frame needs one that reaches it, to see itself live)
    const owed = last >= this.head && this.toldHead > this.toldLast;
    if (changes.length === 0 && this.skippedSinceFrame < SKIP_FRAME_EVERY && !owed) return this.pump();
    this.skippedSinceFrame = 0;
    this.sent(bytes);
    this.toldHead = this.head;
    this.toldLast = last;
    return [{ type: 'send', frame: { t: 'changes', changes, last, head: this.head } }, ...this.pump()];
  }

  /**
   * The next batch of the state snapshot, or the end of it (`end` with the
   * snapshot's feed head and vector): then streaming continues from the
   * feed at that head.
   */
  statesRead(objects: ClonedState[], end?: SnapshotEnd): Action[] {
    if (this.state !== 'open' || !this.cloning || !this.reading) return [];
    this.reading = false;
    // (the record of a keyed write whose change the peer holds already would tell it nothing, and a replica,
    // which forwards writes rather than making them, reads none)
    const frames = statesFrames(objects.filter((o) => !('key' in o) || (this.peerRole !== 'replica' && (o.origin === undefined || !this.peerHas.has(o.origin, o.originSeq ?? 0)))));
    const frame = frames[frames.length - 1]!;
    frame.done = end !== undefined;
    if (end && this.page?.upTo !== undefined) {
      // one anti-entropy page answered: the peer sends the next
      frame.done = false;
      frame.page = true;
      this.pageAfter = this.page.upTo;
      this.page = undefined;
      this.cloning = false;
      this.preparing = 'need';
    } else if (end) {
      this.page = undefined;
      frame.head = end.head;
      frame.vector = end.vector;
      if (end.ahead?.length) frame.ahead = end.ahead;
      this.cloning = false;
      this.cursor = end.head;
      this.stats.sent = end.head;
      for (const [o, n] of Object.entries(end.vector)) this.peerHas.raise(o, n);
      for (const [o, n] of end.ahead ?? []) this.peerHas.add(o, n);
    }
    // Each frame counts in the window (it is acknowledged on its own): those of one read that do not fit
    // (a record of 256 MiB is 64 of them) wait for acknowledgements, as reads do.
    for (const f of frames) this.queuedStates.push(f);
    return this.pump();
  }

  /** The driver took the state snapshot (and, for anti-entropy, its digest). */
  snapshotReady(digest?: Uint8Array[]): Action[] {
    if (this.state !== 'open' || this.preparing !== 'snapshot') return [];
    if (digest) {
      this.preparing = 'need';
      return [{ type: 'send', frame: { t: 'digest', buckets: digest } }];
    }
    this.preparing = undefined;
    this.cloning = true;
    this.page = undefined;
    return this.pump();
  }

  /** Receiver side: the buckets whose digest differs from the peer's. */
  digestCompared(differing: number[]): Action[] {
    if (this.state !== 'open') return [];
    this.expectStates = true;
    this.needBuckets = differing;
    this.runBuckets = new Set(differing);
    this.passedThrough = undefined;
    this.needAfter = undefined;
    if (differing.length === 0) return this.heldRead([], true);
    return [{ type: 'read-held', buckets: differing, after: undefined }];
  }

  /**
   * Receiver side: one page of what this node holds in the differing
   * buckets (`end`: the last). The peer answers it with diffs against these
   * state vectors, and with whole records of what is not listed.
   */
  heldRead(held: HeldState[], end: boolean): Action[] {
    if (this.state !== 'open' || !this.needBuckets) return [];
    const frame: NeedFrame = { t: 'need', buckets: this.needBuckets, have: held.map((h) => ({ i: h.id, s: h.sv, v: h.version })) };
    if (this.needAfter !== undefined) frame.after = this.needAfter;
    const last = held.at(-1);
    if (end || !last) this.lastNeedSent = true;
    else {
      frame.upTo = this.needAfter = last.id;
      this.pageOpen = true;
    }
    return [{ type: 'send', frame }];
  }

  /** A failure seen by the driver (socket error, bad frame): close with a reason. */
  fail(reason: string, refused: boolean): Action[] {
    if (this.state === 'closed') return [];
    this.state = 'closed';
    return [
      { type: 'send', frame: { t: 'error', reason } },
      { type: 'close', reason, refused },
    ];
  }

  /**
   * Our feed position the peer holds everything up to: what it acknowledged,
   * or, with nothing in flight, how far the cursor has passed (entries the
   * peer already holds are passed without a frame, so no ack covers them).
   */
  get peerHolds(): number {
    return this.inFlight > 0 ? this.stats.acked : Math.max(this.stats.acked, this.stats.sent);
  }

  /** Whether this side has sent everything (and had it acknowledged) and applied everything it was sent. */
  get live(): boolean {
    return (
      this.state === 'open' &&
      // and only once this side has subscribed (a master never subscribes to a replica): between the open and
      // the sub, while its checkpoint is read, nothing is expected yet, and a new replica looked caught up
      // though its clone had not begun
      (this.subscribed || this.peerRole === 'replica') &&
      // nobody subscribes to a replica: it has nothing to send
      (this.cursor !== undefined ? this.cursor >= this.head && this.inFlight === 0 : this.opts.role === 'replica') &&
      this.stats.applied >= this.stats.remoteHead &&
      !this.applying &&
      this.unsynced.length === 0 &&
      // a clone's states carry the peer's head only in the last frame: between two of them
      // nothing is being applied and the head is still 0, which looked caught up (and /readyz
      // answered 200 while a clone of 3,000 objects was under way)
      !this.expectStates &&
      // nor is a node caught up that lacks what the peer held when it subscribed: its sub can
      // come before its first changes frame, and the head is still 0 then too (/readyz answered
      // 200 at a new node's first poll, 3,000 changes behind)
      this.holdsWhatPeerHad()
    );
  }

  /**
   * Why a session must not go on when either side holds fewer of its own
   * changes than the other holds of them: that side's data dir is older
   * than what it wrote (a file-level copy put back, a disk that lost
   * acknowledged writes). Peers never send a node its own changes back, and
   * skip the origin seqs it would issue again, so everything it wrote from
   * then on would stay on it alone. An emptied data dir started under its
   * old id is refused too: its feed starts again at 1, below the positions
   * its peers keep in the old one, and they would skip its first entries.
   */
  private rolledBack(theirs: Record<string, number>, since: number): string | undefined {
    const me = this.opts.nodeId;
    const peer = this.peer!;
    const mine = this.opts.vector();
    // a position in this node's feed past its head: the peer had it from a feed this one no longer has
    // (an emptied dir under its old id whose changes were all relayed ones, or a copy put back)
    if (since > this.head) {
      return `${peer} holds a position ${since} in the feed of ${me}, whose feed ends at ${this.head}: ${me}'s data dir is older than what it sent (a copy put back, an emptied dir under its old id), and ${peer} would skip its first entries; ${START_AGAIN}`;
    }
    const ofMe = vectorEntry(theirs, me);
    if (ofMe > vectorEntry(mine, me)) {
      return `${peer} holds changes of ${me} up to ${ofMe}, and ${me} itself only up to ${vectorEntry(mine, me)}: ${me}'s data dir is older than the changes it made (a copy put back, or a disk that lost writes), and what it writes now would reach no peer; ${START_AGAIN}`;
    }
    const ofPeer = this.peerOwnAtProof ?? vectorEntry(mine, peer);
    if (vectorEntry(theirs, peer) < ofPeer) {
      return `${peer} holds its own changes only up to ${vectorEntry(theirs, peer)}, and ${me} holds them up to ${ofPeer}: ${peer}'s data dir is older than the changes it made (a copy put back, or a disk that lost writes), and what it writes now would reach no peer; ${START_AGAIN}`;
    }
    return undefined;
  }

  private holdsWhatPeerHad(): boolean {
    const had = this.peerHadAtSub;
    // (a replica's vector may hold what another master gave it, which this one gets only from its peers)
    if (had === undefined || this.peerRole === 'replica') return true;
    const mine = this.opts.vector();
    // (this node's own changes are never sent back to it: a peer holding more of them than it does says nothing here)
    for (const [o, n] of Object.entries(had)) if (o !== this.opts.nodeId && vectorEntry(mine, o) < n) return false;
    return true;
  }
}

/** What a node whose data dir is older than what it wrote or sent does (see rolledBack). */
const START_AGAIN = 'start it on an empty --dir under a new --node-id, which clones, or restore a backup, which takes one';

const FRAME_BUDGET = 4 * 1024 * 1024;
/** An object's record or diff larger than this goes in parts of this size, a frame each (see statesFrames). */
const PART_BYTES = 4 * 1024 * 1024;
/** The largest record or diff a receiver puts together from parts: past it the session fails, naming the object. */
const MAX_STATE_BYTES = 256 * 1024 * 1024;
/** The most idempotency records a receiver holds for one run of states (a day of keyed writes at 10 a second is 864,000). */
const MAX_HELD_KEYS = 2_000_000;
/**
 * Unacknowledged bytes (estimated as the frames are built) a sender allows
 * besides its frame count: what 4 full frames held when the window was 4.
 * Live push sends many small frames, and 4 of them stalled it behind every
 * slow fsync at the peer.
 */
const WINDOW_BYTES = 4 * FRAME_BUDGET;
/** Unacknowledged frames a sender may have in flight (docs/protocol.md, "Window"); a receiver holding more ends the session. */
const PROTOCOL_WINDOW = 32;
/** changes applied (and so held in memory) at once when frames queue up; the group commit still closes its batches at 256 operations */
const MAX_MERGED_CHANGES = 10_000;
const SKIP_FRAME_EVERY = 1000;

function toWire(e: FeedEntry): WireChange {
  const w: WireChange = { o: e.origin, n: e.originSeq, i: e.id, y: e.type, k: e.kind, u: e.update, h: e.hlc, p: e.principal, c: e.fields };
  if (e.idempotencyKey !== undefined) w.q = e.idempotencyKey;
  return w;
}

/**
 * One batch of states as frames: several when they hold more than
 * FRAME_BUDGET bytes, and an item over PART_BYTES (an object whose values
 * merged writes made large, or whose conflicts keep several) cut into
 * parts, one frame each, every part but the last marked `m`. Always at
 * least one frame, which may be empty (the last of a stream carries `done`).
 */
function statesFrames(objects: ClonedState[]): StatesFrame[] {
  const frames: StatesFrame[] = [];
  const keys: { q: string; r: Uint8Array }[] = [];
  let items: StateItem[] = [];
  let bytes = 0;
  const flush = (): void => {
    if (items.length) frames.push({ t: 'states', objects: items, done: false });
    items = [];
    bytes = 0;
  };
  for (const o of objects) {
    if ('key' in o) {
      keys.push({ q: o.key, r: o.record });
      continue;
    }
    const item = toStateItem(o);
    const size = 'u' in item ? item.u.length : item.r.length;
    if (size > PART_BYTES) {
      flush();
      for (let at = 0; at < size; at += PART_BYTES) {
        const more = at + PART_BYTES < size;
        const part: StateItem = 'u' in item ? { i: item.i, u: item.u.subarray(at, at + PART_BYTES), h: item.h } : { i: item.i, r: item.r.subarray(at, at + PART_BYTES) };
        if (more) part.m = true;
        frames.push({ t: 'states', objects: [part], done: false });
      }
      continue;
    }
    if (items.length && bytes + size > FRAME_BUDGET) flush();
    items.push(item);
    bytes += size + 64;
  }
  flush();
  if (frames.length === 0) frames.push({ t: 'states', objects: [], done: false });
  // (a snapshot reads its keys in batches of their own: in practice they are a frame's only content)
  if (keys.length) frames[frames.length - 1]!.keys = keys;
  return frames;
}

function toStateItem(o: Exclude<ClonedState, { key: string }>): StateItem {
  if ('diff' in o) return { i: o.id, u: o.diff, h: o.hlc };
  return o.purged ? { i: o.id, r: o.record, p: true } : { i: o.id, r: o.record };
}

function fromStateItem(o: StateItem): ClonedState {
  if ('u' in o) return { id: o.i, diff: o.u, hlc: o.h };
  return o.p ? { id: o.i, record: o.r, purged: true } : { id: o.i, record: o.r };
}

function fromWire(c: WireChange): RemoteChange {
  const r: RemoteChange = { origin: c.o, originSeq: c.n, id: c.i, type: c.y, kind: c.k, update: c.u, hlc: c.h, principal: c.p, fields: c.c };
  if (c.q !== undefined) r.idempotencyKey = c.q;
  return r;
}

/**
 * Whether `tag` is among the feed tags of `node` forgotten here. Own keys
 * only: a node may be named "constructor" or "toString", and `gone[node]`
 * then read a function off the prototype, whose `includes` threw on every
 * handshake, so such a node never replicated.
 */
function forgottenIn(gone: Record<string, string[]>, node: string, tag: string): boolean {
  return Object.hasOwn(gone, node) && gone[node]!.includes(tag);
}
