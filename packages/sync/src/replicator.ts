import { randomBytes } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import WebSocket, { WebSocketServer } from 'ws';
import { sameWrite } from '@meridian/store';
import { backoffDelay } from './backoff.js';
import { FrameError, type Role, type WriteFrame, type WroteFrame } from './frames.js';
import { FrameCodec } from './frame-codec.js';
import { storeSessionOptions, SyncSession, type Action } from './session.js';
import { CommitClock } from './commit-clock.js';
import { releaseSession, runActions, type FeedStore, type SessionIo } from './executor.js';

/** The reason a dialer shows when its session was closed because the peer's own session carries the link. */
export const DUPLICATE_SESSION = 'duplicate session';

/** the close reason of an older session with a peer that was not heard from, replaced by its newer one */
const STALE_SESSION = 'replaced by a newer session of this peer';
/** The largest frame taken before the session is open: a hello is a few hundred bytes, an auth's feed tags at most FEEDS_BYTES. */
const MAX_UNAUTHENTICATED_FRAME = 64 * 1024;
/**
 * Bytes queued to a peer that has not read them, past which its link is
 * closed. The window keeps an honest peer's share to about 16 MiB of
 * frames plus a part frame; acknowledgements sent without reading (an ack
 * of 0 passes for any states frame) or write answers never read would
 * otherwise grow this node's memory without bound.
 */
export const MAX_UNREAD_BYTES = 64 * 1024 * 1024;
/** Why a second session in one direction is closed while the first is still heard from. */
const SAME_DIRECTION_SESSION = 'a session dialed this way is open still; try again shortly';

export interface ReplicatorLog {
  debug(obj: object, msg: string): void;
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
}

export interface ReplicatorOptions {
  store: FeedStore;
  cluster: string;
  /**
   * master: dial every peer and replicate both ways.
   * replica: hold one session with one of `peers` (its masters, tried in
   * order), receive its feed and forward writes to it.
   */
  role?: Role;
  /** a master's cluster secret, or a replica's credential key */
  secret: string;
  /** a replica's credential id, `name:serial` */
  credential?: string;
  /** master: the key of a replica credential id, or why it is refused */
  replicaKey?: (credential: string | undefined) => { key: string } | { refused: string };
  /** master: runs a write forwarded by a replica (`via` is the replica's node id) */
  /**
   * `via`: the replica's node id; `holder`: its credential's name, the same across its sessions and node ids;
   * `open`: whether the session it came by is still open (once it is not, the replica sends the write again
   * wherever it goes next, and no answer reaches it through this one)
   */
  onWrite?: (write: WriteFrame, via: string, holder: string, open: () => boolean) => Promise<WroteFrame>;
  /** replica: called when it gains or loses its master */
  onMode?: (mode: ReplicaMode) => void;
  /**
   * Awaited when a session with a node of this cluster opens (authenticated,
   * the same cluster id), before anything of the peer's is asked for: the
   * node ties its data dir to the cluster there.
   */
  joined?: () => Promise<void>;
  /** ws:// or wss:// URLs of the peer masters to dial */
  peers: string[];
  log: ReplicatorLog;
  /** ws ping interval, ms */
  heartbeat?: number;
  /** a link with no pong for this long is dead, ms */
  timeout?: number;
  /** largest frame accepted, bytes */
  maxFrame?: number;
  backoffBase?: number;
  backoffCap?: number;
  /** TLS options for dialing wss:// peers (a CA to trust) */
  tls?: { ca?: string | Buffer };
}

export type PeerState = 'connecting' | 'catching-up' | 'live' | 'backing-off' | 'refused' | 'standby';

/** Whether a replica can take writes: it can while it holds a session with a master. */
export interface ReplicaMode {
  mode: 'read-write' | 'read-only';
  /** the master the replica is connected to, or lost last */
  master: { node: string | null; url: string } | null;
  /** when the replica entered this mode */
  since: number;
  /** why it is read-only */
  reason: string | null;
}

/** A forwarded write that could not be confirmed; `code` says how it ended. */
export class ForwardError extends Error {
  constructor(
    readonly code: 'read-only' | 'unconfirmed' | 'busy',
    message: string,
  ) {
    super(message);
  }
}

export interface PeerStatus {
  /** the peer's node id, once known */
  node: string | null;
  /** the URL dialed, for configured peers; null for peers that dialed us */
  url: string | null;
  /** the peer's role, once known */
  role: Role | null;
  direction: 'outbound' | 'inbound';
  state: PeerState;
  /** why the last session ended or was refused */
  reason: string | null;
  /** their changes not yet applied here */
  lagEntries: number;
  /** age of the oldest change of theirs not yet applied here */
  lagSeconds: number;
  lastContact: string | null;
  bytesIn: number;
  bytesOut: number;
  /** our feed position they have acknowledged */
  acked: number;
  /** our changes they have not acknowledged yet (grows while they are cut off and we take writes) */
  peerBehind: number;
  /** for how long they have lacked a change of ours, in seconds (0 when they lack none) */
  peerBehindSeconds: number;
  /** this session knows how far behind it is: the peer told its feed head, or the session has been live */
  synced: boolean;
}

interface Link extends SessionIo {
  ws: WebSocket;
  direction: 'outbound' | 'inbound';
  url: string | null;
  queue: Promise<void>;
  bytesIn: number;
  bytesOut: number;
  /** wall clock of the last frame or pong, for status */
  lastContact: number;
  /** monotonic clock of the last frame or pong, for the dead-link timeout */
  heardAt: number;
  timer: NodeJS.Timeout | undefined;
  watchdog: NodeJS.Timeout | undefined;
  everLive: boolean;
  /** monotonic */
  openedAt: number;
  /** replica: this link was the session with its master when the socket closed */
  wasMaster: boolean;
}

interface PendingWrite {
  frame: WriteFrame;
  resolve: (answer: WroteFrame) => void;
  reject: (e: Error) => void;
  timer: NodeJS.Timeout;
  /** the master it was last sent to */
  sentTo: string | null;
  /** the Idempotency-Key the client sent, or the one drawn for it: what a client sends again (the wire key is derived from it) */
  clientKey: string;
}

interface Dialer {
  url: string;
  /** the backoff step: failed dials since a session last went live or lasted, a session that ended soon after opening counting as one */
  attempt: number;
  /** the link is down and that is logged; cleared when the peer is reached */
  downLogged: boolean;
  link: Link | undefined;
  state: PeerState;
  reason: string | null;
  node: string | null;
  timer: NodeJS.Timeout | undefined;
  /** counters of the last ended link, so status does not reset to zero on a blip */
  acked: number;
  bytesIn: number;
  bytesOut: number;
  lastContact: number;
}

/**
 * The WebSocket driver of the sync core: dials the configured peers with
 * jittered exponential backoff, accepts peers on `/sync`, runs each
 * session's actions in order, pings to detect dead links, and keeps one
 * session per peer (when two nodes dial each other, the session dialed by
 * the node with the smaller id survives).
 */
export class Replicator {
  private readonly wss: WebSocketServer;
  private readonly links = new Set<Link>();
  private readonly dialers: Dialer[];
  private readonly unsubscribe: () => void;
  private readonly unbase: () => void;
  private readonly unforget: () => void;
  private closed = false;
  private readonly heartbeat: number;
  private readonly timeout: number;
  private readonly role: Role;
  /** replica: the dialer in use, and the failed dials since a master last answered */
  private current = 0;
  private failedInRound = 0;
  /** replica: sessions in a row that ended within BRIEF_SESSION_MS of opening */
  private briefSessions = 0;
  /** replica: turning to another master was logged since the last session opened */
  private searchLogged = false;
  private readonly clock = new CommitClock(monotonic());
  private mode: ReplicaMode;
  private readonly pending = new Map<string, PendingWrite>();

  constructor(private readonly opts: ReplicatorOptions) {
    this.heartbeat = opts.heartbeat ?? 2000;
    this.timeout = opts.timeout ?? 10_000;
    this.role = opts.role ?? 'master';
    this.mode = {
      mode: 'read-only',
      master: null,
      since: Date.now(),
      reason: opts.peers.length ? `no master reached yet (trying ${opts.peers.join(', ')})` : 'no masters are configured',
    };
    this.wss = new WebSocketServer({ noServer: true, maxPayload: opts.maxFrame ?? 16 * 1024 * 1024, perMessageDeflate: false });
    this.dialers = opts.peers.map((url) => ({ url, attempt: 0, downLogged: false, link: undefined, state: 'connecting', reason: null, node: null, timer: undefined, acked: 0, bytesIn: 0, bytesOut: 0, lastContact: 0 }));
    this.unsubscribe = opts.store.subscribe((entries) => {
      const head = opts.store.lastSeq;
      // (a replica's peers take nothing from it: nobody can be behind it)
      if (this.role === 'master' && entries.length) this.clock.note(entries[0]!.seq, monotonic());
      for (const link of this.links) this.run(link, link.session.feedAdvanced(head));
    });
    // (a change held ahead without a feed entry came inside the vector: a snapshot being served names it, in its
    // vector or its ahead list, whichever side of the raise it was read on)
    this.unbase = opts.store.onFeedBaseRaised(() => this.resubscribe({ snapshots: false }));
    // (a replica passes the word to no one: its master takes none from it)
    this.unforget = this.role === 'master' ? opts.store.onFeedsForgotten(() => this.reopenAll('feed tags were forgotten; opening again to pass the word on')) : () => undefined;
    if (this.role === 'replica') {
      for (const d of this.dialers.slice(1)) d.state = 'standby';
      if (this.dialers[0]) this.dial(this.dialers[0]);
    } else for (const d of this.dialers) this.dial(d);
  }

  /** Replica: whether writes can be forwarded now, and if not, why. */
  replicaMode(): ReplicaMode {
    return { ...this.mode, master: this.mode.master && { ...this.mode.master } };
  }

  private setMode(next: ReplicaMode): void {
    const changed = next.mode !== this.mode.mode || next.master?.node !== this.mode.master?.node;
    this.mode = next;
    if (changed) this.opts.onMode?.(this.replicaMode());
  }

  /** The open session with a master, on a replica. */
  private masterLink(): Link | undefined {
    // (the socket's state too: a closed link's queued work may still be running, its session open)
    for (const l of this.links) if (l.session.state === 'open' && l.session.peerRole === 'master' && l.ws.readyState === WebSocket.OPEN) return l;
    return undefined;
  }

  /**
   * Replica: sends a write to the master and resolves with its answer. A
   * write whose session ends before the answer is sent again, with the same
   * key, to whichever master the replica reaches next; the master answers a
   * repeated key without writing twice. After `deadline` ms without an
   * answer it fails with an unconfirmed error.
   */
  forward(write: Omit<WriteFrame, 't'>, deadline: number, clientKey = write.key): Promise<WroteFrame> {
    if (this.role !== 'replica') return Promise.reject(new Error('only a replica forwards writes'));
    // The same key again while the first is unanswered shares its outcome (also while read-only), if it is
    // the same write. Another write is sent once the first is answered, for the master to judge which the key
    // names (the first may be the one refused): given the first's answer, it showed the first's object.
    const existing = this.pending.get(write.key);
    if (existing) {
      if (sameWrite(existing.frame, write)) return new Promise((resolve, reject) => chain(existing, resolve, reject));
      return new Promise<void>((settled) => chain(existing, () => settled(), () => settled())).then(() => this.forward(write, deadline, clientKey));
    }
    const link = this.masterLink();
    if (!link) return Promise.reject(new ForwardError('read-only', this.readOnlySentence()));
    if (this.pending.size >= MAX_PENDING) {
      return Promise.reject(new ForwardError('busy', `this replica already has ${MAX_PENDING} writes waiting for master ${link.session.peer}; retry shortly`));
    }
    return new Promise((resolve, reject) => {
      const p: PendingWrite = {
        frame: { t: 'write', ...write },
        resolve,
        reject,
        sentTo: null,
        clientKey,
        timer: setTimeout(() => {
          this.pending.delete(write.key);
          const where = p.sentTo ? `master ${p.sentTo}` : 'any master';
          // p.reject, not reject: a second request with the same key has chained itself onto it
          p.reject(
            new ForwardError(
              'unconfirmed',
              `no answer from ${where} within ${Math.round(deadline / 1000)} s, so this write is unconfirmed; send it again with the same Idempotency-Key (${clientKey}) to apply it at most once`,
            ),
          );
        }, deadline),
      };
      this.pending.set(write.key, p);
      this.sendPending(link, p);
    });
  }

  /**
   * Sent at once, not through the link's queue, where it would wait behind
   * a whole catch-up; encoding and sending are one synchronous step, so the
   * frame codec's history stays in order.
   */
  private sendPending(link: Link, p: PendingWrite): void {
    p.sentTo = link.session.peer ?? null;
    link.send(p.frame);
  }

  /** The sentence every refused write on a read-only replica carries. */
  readOnlySentence(): string {
    const m = this.mode;
    const since = new Date(m.since).toISOString();
    const master = m.master ? `master ${m.master.node ?? m.master.url}${m.master.node ? ` (${m.master.url})` : ''}` : 'any master';
    return m.master
      ? `this replica is read-only since ${since}: it lost ${master} (${m.reason ?? 'connection closed'}); writes resume when a master is reachable`
      : `this replica is read-only since ${since}: it has not reached ${master} (${m.reason ?? 'unreachable'}); writes resume when a master is reachable`;
  }

  /** Master: closes the sessions of replicas whose credential is no longer valid (revoked or re-issued), saying why. */
  closeReplicas(refusal: (credential: string | undefined) => string | undefined): void {
    for (const l of this.links) {
      if (l.session.peerRole !== 'replica') continue;
      const why = refusal(l.session.peerCredential);
      // at once, not behind the link's queued work (a whole-store digest, say): the replica would stay
      // writable meanwhile, its writes dropped by the closed session until its clients' waits ran out
      if (why !== undefined) this.runNow(l, l.session.fail(why, true));
    }
  }

  /** For the HTTP server's `upgrade` event on `/sync`. */
  handleUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    if (this.closed) {
      socket.destroy();
      return;
    }
    this.wss.handleUpgrade(req, socket, head, (ws) => this.hearBytes(this.attach(ws, 'inbound', null, req.socket.remoteAddress), socket));
  }

  private dial(d: Dialer): void {
    if (this.closed) return;
    d.state = d.state === 'refused' ? 'refused' : 'connecting';
    const ws = new WebSocket(d.url, { maxPayload: this.opts.maxFrame ?? 16 * 1024 * 1024, handshakeTimeout: this.timeout, ca: this.opts.tls?.ca, perMessageDeflate: false });
    // (the link's URL is what logs and the replica's mode show: never the user or password it may hold)
    const link = (d.link = this.attach(ws, 'outbound', shownUrl(d.url)));
    // (listened to once ws has taken the socket over: a listener added in 'upgrade' stalled the handshake)
    ws.once('upgrade', (res: IncomingMessage) => ws.once('open', () => this.hearBytes(link, res.socket)));
    ws.on('error', (e) => {
      d.reason = e.message;
    });
  }

  private attach(ws: WebSocket, direction: 'outbound' | 'inbound', url: string | null, from?: string): Link {
    const store = this.opts.store;
    const codec = new FrameCodec(this.opts.maxFrame ?? 16 * 1024 * 1024);
    const session = new SyncSession({
      ...storeSessionOptions(store),
      cluster: this.opts.cluster,
      secret: this.opts.secret,
      dialed: direction === 'outbound',
      role: this.role,
      credential: this.opts.credential,
      replicaKey: this.opts.replicaKey,
      compress: true,
      nonce: randomBytes(16),
    });
    const link: Link = {
      ws,
      store,
      session,
      direction,
      url,
      queue: Promise.resolve(),
      bytesIn: 0,
      bytesOut: 0,
      lastContact: 0,
      heardAt: monotonic(),
      timer: undefined,
      watchdog: undefined,
      everLive: false,
      openedAt: 0,
      wasMaster: false,
      send: (frame) => {
        if (ws.readyState !== WebSocket.OPEN) return false;
        const bytes = codec.encode(frame);
        link.bytesOut += bytes.length;
        if (frame.t === 'sub') {
          this.opts.log.info({ peer: session.peer, since: frame.since, clone: frame.clone === true }, frame.clone ? 'cloning from peer: this node is empty' : 'resuming from peer\'s feed at the checkpoint');
        }
        ws.send(bytes);
        // (a master's only: a replica's own growth is its forwarded writes, capped in number, sent at once on reconnect)
        if (this.role === 'master' && ws.bufferedAmount > MAX_UNREAD_BYTES) {
          const reason = `the peer left ${Math.round(ws.bufferedAmount / 1048576)} MiB unread, past the ${MAX_UNREAD_BYTES / 1048576} MiB a link may hold`;
          this.opts.log.warn({ peer: session.peer, url, from, reason }, 'peer is not reading; closing the link');
          this.lastReason.set(link, reason);
          ws.terminate();
        }
        return true;
      },
      ...(this.opts.joined ? { joined: this.opts.joined } : {}),
      opened: (peer, role) => {
        if (!this.admit(link, peer)) return false;
        this.opts.log.info({ peer, role, direction, url }, 'replication session open');
        link.openedAt = monotonic();
        if (this.role === 'replica') {
          // a round's wait starts from its first step again (the master that opened may be lost before its session
          // lasts or goes live, and the waits of the rounds before would otherwise go on from where they were)
          this.failedInRound = 0;
          for (const d of this.dialers) d.attempt = 0;
          this.searchLogged = false;
          this.setMode({ mode: 'read-write', master: { node: peer, url: url ?? '' }, since: Date.now(), reason: null });
          this.opts.log.info({ master: peer, url }, 'replica writable: connected to a master');
          // writes whose answer was lost go again, with their keys
          if (this.pending.size) this.opts.log.info({ master: peer, writes: this.pending.size }, 'replica: sending unanswered writes again');
          for (const p of this.pending.values()) this.sendPending(link, p);
        }
        return true;
      },
      forward: (write) => {
        const via = session.peer!;
        const onWrite = this.opts.onWrite;
        const answer = onWrite
          ? onWrite(write, via, credentialName(link) ?? via, () => isLive(link)).catch((e: unknown): WroteFrame => ({ t: 'wrote', key: write.key, ok: false, code: 'internal', message: (e as Error).message }))
          : Promise.resolve<WroteFrame>({ t: 'wrote', key: write.key, ok: false, code: 'read-only', message: 'this node takes no forwarded writes' });
        // (sent at once, not behind the feed work queued on the link: a replica resubscribing with a digest
        // queued a whole-store snapshot there, and a write made meanwhile could time out unconfirmed)
        void answer.then((a) => this.runNow(link, session.writeDone(a)));
      },
      answered: (answer) => {
        const p = this.pending.get(answer.key);
        if (!p) return; // answered twice (sent again after a reconnect) or given up on
        this.pending.delete(answer.key);
        clearTimeout(p.timer);
        p.resolve(answer);
      },
      closed: (reason, refused) => {
        this.lastReason.set(link, reason);
        // A refusal is a state: logged once, not at each retry. A peer we dial is refused again
        // for the same reason at each retry; an inbound one, once per address and reason (a new
        // address trying shows, as probing should).
        const d = this.dialers.find((x) => x.link === link);
        const again = d ? d.state === 'refused' && d.reason === reason : refused && !this.firstRefusal(`${from ?? 'unknown'} ${reason}`);
        if (refused) this.logState(again, 'warn', { peer: session.peer, url, from, reason }, 'replication peer refused');
        else this.opts.log.info({ peer: session.peer, url, reason }, 'replication session closed');
        this.refused.set(link, refused);
        // read-only now, not once the close handshake with a master that may not answer is done
        if (this.role === 'replica') this.lostMaster(link, reason);
        ws.close(1008, closeReason(reason));
      },
      // acks (or the close of a disk failure) go at once, not behind the frames queued on this link:
      // sends are synchronous, so the frame codec's history stays in order
      later: (actions) => this.runNow(link, actions),
      digestCompared: (differing) => this.opts.log.info({ peer: session.peer, differing }, 'anti-entropy: digests compared'),
      // (this link's peer sent the states: it holds what they raised the base to; a snapshot being served
      // to another was read before those states were stored)
      statesApplied: () => this.resubscribe({ except: link, snapshots: true }),
    };
    this.links.add(link);
    const begin = (): void => {
      link.heardAt = monotonic();
      this.run(link, session.start(monotonic()));
      link.timer = setInterval(() => this.beat(link), this.heartbeat);
      this.watch(link);
    };
    if (ws.readyState === WebSocket.OPEN) begin();
    else ws.once('open', begin);
    // (a pong or a message is heard as the socket's bytes arrive: see hearBytes)
    ws.on('message', (data: Buffer, isBinary: boolean) => {
      link.bytesIn += data.length;
      if (!isBinary) {
        this.run(link, session.fail('text frames are not part of the protocol', true));
        return;
      }
      // (before authentication only hello and auth come: a peer that has proved nothing does not get
      // 16 MiB inflated and decoded for it, on as many sockets as it opens)
      if (session.state !== 'open' && data.length > MAX_UNAUTHENTICATED_FRAME) {
        this.run(link, session.fail(`a frame of ${data.length} bytes before authentication; hello and auth take at most ${MAX_UNAUTHENTICATED_FRAME}`, true));
        return;
      }
      let actions: Action[];
      try {
        // (inflated no larger than it may be sent plain)
        actions = session.receive(codec.decode(data, session.state === 'open' ? undefined : Math.min(MAX_UNAUTHENTICATED_FRAME, this.opts.maxFrame ?? MAX_UNAUTHENTICATED_FRAME)));
      } catch (e) {
        actions = session.fail(e instanceof FrameError ? `malformed frame: ${e.message}` : `cannot handle frame: ${(e as Error).message}`, true);
      }
      this.run(link, actions);
    });
    // after queued actions, so a close reason they record is the one reported
    // A peer that closed this link as the duplicate of another says so in the close reason: the
    // acceptor opens first and may close a dialer's link before the dialer has opened and could see
    // the duplicate itself.
    ws.on('close', (_code, why) => {
      // (the link's queued work may outlast the dead-link timeout: a watchdog or a heartbeat's tick firing
      // then would put a reason of its own over the close's, the watchdog's for a heartbeat never missed)
      clearTimeout(link.watchdog);
      clearInterval(link.timer);
      const reason = session.state === 'closed' ? undefined : why.toString() === DUPLICATE_SESSION ? DUPLICATE_SESSION : 'connection closed';
      // a replica is read-only from the moment its master's connection closes, not once the
      // link's queued work (a large apply, a digest) is done: writes would go to a dead link
      if (this.role === 'replica') this.lostMaster(link, this.lastReason.get(link) ?? reason ?? 'closed');
      void link.queue.finally(() => this.ended(link, reason));
    });
    // 'close' follows and reports; keep what ws says (an oversized frame, a TLS failure)
    ws.on('error', (e) => {
      if (!this.lastReason.has(link)) this.lastReason.set(link, e.message);
    });
    return link;
  }

  /**
   * Counts any bytes from the peer as hearing from it, not only whole
   * frames and pongs: a pong queues behind the frame being sent, and a
   * 4 MiB frame on a 2 Mbit/s link takes 16 s, so a healthy slow link was
   * declared dead mid-frame, and catch-up sent the same frame again after
   * every redial, for good.
   */
  private hearBytes(link: Link, socket: Duplex): void {
    socket.on('data', () => {
      link.heardAt = monotonic();
      link.lastContact = Date.now();
    });
  }

  private beat(link: Link): void {
    if (link.ws.readyState === WebSocket.OPEN) link.ws.ping();
    this.run(link, link.session.tick(monotonic()));
  }

  /**
   * Declares the link dead `timeout` ms after the peer was last heard from
   * (any bytes: see hearBytes), rather than at the next heartbeat after
   * that, so detection takes no longer than the configured timeout (and one
   * turn of the event loop).
   */
  private watch(link: Link, lookedAgain = false): void {
    const left = link.heardAt + this.timeout - monotonic();
    if (left > 0) {
      link.watchdog = setTimeout(() => this.watch(link), left + 5);
      return;
    }
    if (!lookedAgain) {
      // A timer late because this process stalled (a long collection, a big synchronous apply; in tests,
      // another node in the same process) runs before the event loop reads the sockets: what the peer sent
      // meanwhile is still unread. One turn later it has been read, and a peer that kept talking is heard.
      link.watchdog = setTimeout(() => this.watch(link, true), 0);
      return;
    }
    this.opts.log.warn({ peer: link.session.peer, url: link.url }, 'no heartbeat from peer; closing the link');
    this.lastReason.set(link, `no heartbeat for ${Math.round(this.timeout / 1000)} s`);
    link.ws.terminate();
  }

  private readonly lastReason = new WeakMap<Link, string>();

  /** Runs actions in order; each link's actions never overlap. */
  private run(link: Link, actions: Action[]): void {
    if (actions.length === 0) {
      this.checkLive(link);
      return;
    }
    // A forwarded write and its answer are independent of the feed stream:
    // they must not wait behind an apply's fsync in the link's queue.
    if (actions.every((a) => a.type === 'forward' || a.type === 'answered')) {
      this.runNow(link, actions);
      return;
    }
    link.queue = link.queue.then(async () => {
      await runActions(link, actions);
      this.checkLive(link);
    }).catch((e: unknown) => this.stepFailed(link, e));
  }

  /** Runs actions at once, outside the link's queue (their sends are synchronous, so frames stay in order). */
  private runNow(link: Link, actions: Action[]): void {
    runActions(link, actions).then(
      () => this.checkLive(link),
      (e: unknown) => this.stepFailed(link, e),
    );
  }

  private stepFailed(link: Link, e: unknown): void {
    this.opts.log.warn({ peer: link.session.peer, err: (e as Error).message }, 'replication step failed; closing the link');
    this.lastReason.set(link, (e as Error).message);
    link.ws.terminate();
  }

  /** Logs, once per session, the moment both directions first have nothing outstanding. */
  private checkLive(link: Link): void {
    if (link.everLive || !link.session.live) return;
    link.everLive = true;
    this.opts.log.info({ peer: link.session.peer, applied: link.session.stats.applied, acked: link.session.stats.acked }, 'replication caught up');
  }

  private readonly refused = new WeakMap<Link, boolean>();

  /** A state change, at `level` when new and at debug (marked `repeat`) when it only repeats, as each retry of a peer that stays away does. */
  private logState(repeat: boolean, level: 'info' | 'warn', fields: object, msg: string): void {
    if (repeat) this.opts.log.debug({ ...fields, repeat: true }, msg);
    else this.opts.log[level](fields, msg);
  }
  /** inbound refusals logged, by address and reason, with when; the oldest forgotten past REFUSALS_REMEMBERED */
  private readonly refusalsLogged = new Map<string, number>();

  /** Whether to log this refusal as new: not logged for this address and reason within the last hour. */
  private firstRefusal(key: string): boolean {
    const now = monotonic();
    const at = this.refusalsLogged.get(key);
    if (at !== undefined && now - at < REFUSAL_LOGGED_FOR_MS) return false;
    this.refusalsLogged.delete(key);
    this.refusalsLogged.set(key, now);
    if (this.refusalsLogged.size > REFUSALS_REMEMBERED) this.refusalsLogged.delete(this.refusalsLogged.keys().next().value!);
    return true;
  }

  /** One session per peer: of two, keep the one dialed by the smaller node id. */
  private admit(link: Link, peer: string): boolean {
    const me = this.opts.store.nodeId;
    // the dialer learns whom its URL reaches even if this session loses the
    // duplicate rule, so status can show the surviving session under its URL
    const d = this.dialers.find((x) => x.link === link);
    if (d) {
      d.node = peer;
      d.reason = null;
      d.downLogged = false;
    }
    // A replica chooses its own node id, and sessions are told apart by node id: one posing as a
    // master would pass for that master's session (and the real one be closed as its duplicate).
    // Masters are known by the changes they made, or by a session open now.
    const role = link.session.peerRole;
    const posing = (l: Link): void => this.runNow(l, l.session.fail(`a replica may not take the node id "${peer}", which is a master's; give it an id of its own (--node-id)`, true));
    // (a master session open under this id now is caught by the loop below)
    if (this.role === 'master' && role === 'replica' && Object.hasOwn(this.opts.store.versionVector(), peer)) {
      posing(link);
      return false;
    }
    // One credential is one replica: a holder of one (a laptop stolen before it is revoked) must not open
    // sessions without end under new node ids, each taking a snapshot or a thousand forwarded writes. Two,
    // so that a replica restarted under a new id is not refused while its old session times out.
    if (this.role === 'master' && role === 'replica') {
      const name = credentialName(link);
      const others = [...this.links].filter((l) => l !== link && l.session.peer !== peer && l.session.peerRole === 'replica' && isLive(l) && credentialName(l) === name);
      if (others.length >= MAX_SESSIONS_PER_CREDENTIAL) {
        this.runNow(link, link.session.fail(`credential "${name}" has sessions open already as ${others.map((l) => l.session.peer).join(' and ')}; give each replica a credential of its own`, true));
        return false;
      }
    }
    for (const other of this.links) {
      // (a link whose socket is closing is on its way out, its queued work still ending: it does not compete)
      if (other === link || other.session.peer !== peer || !isLive(other)) continue;
      // a master and a replica under one id: the master's session stays, the replica's goes
      if (role !== other.session.peerRole) {
        const replica = role === 'replica' ? link : other;
        posing(replica);
        if (replica === link) return false;
        continue;
      }
      if (role === 'replica' && credentialName(other) !== credentialName(link)) {
        this.runNow(link, link.session.fail(`replica node id "${peer}" is in use by the session of another credential; give each replica an id of its own`, true));
        return false;
      }
      const keepOutbound = me < peer;
      const keep = (l: Link): boolean => (l.direction === 'outbound') === keepOutbound;
      // Two in one direction: the peer dialed again, which it does only after giving up on the first,
      // so one not heard from for two heartbeats is a dead connection this side has not noticed yet (a
      // laptop that slept): it goes, not the new one, which would be refused until it timed out.
      const stale = other.direction === link.direction && monotonic() - other.heardAt > 2 * this.heartbeat;
      const loser = stale || (keep(link) && !keep(other)) ? other : link;
      // A stale one is closed as an ordinary close, not as a duplicate: each side judges staleness by
      // what it has heard, and should the peer have kept it and closed the new one instead, its
      // dialer is then woken at once rather than parked for the backoff cap with no session left.
      // So is a new one in the same direction while the old one is still heard from: the peer dialed
      // again because its end of the old one died (a reset only it received), and it must try again
      // shortly, once the old one goes quiet here, not park for the cap, which nothing here would end.
      const reason = stale ? STALE_SESSION : other.direction === link.direction ? SAME_DIRECTION_SESSION : DUPLICATE_SESSION;
      this.lastReason.set(loser, reason);
      this.opts.log.info(
        { peer, closed: loser.direction },
        stale ? 'older session with this peer closed: replaced by its newer one' : reason === SAME_DIRECTION_SESSION ? 'second session dialed this way closed; the first is still heard from' : 'duplicate session with this peer closed; one session carries both directions',
      );
      loser.ws.close(1000, reason);
      if (loser === link) return false;
    }
    return true;
  }

  private ended(link: Link, fallback: string | undefined): void {
    if (!this.links.delete(link)) return;
    // (its heartbeat and watchdog were cleared at the socket's close, this one's only caller)
    releaseSession(link);
    const reason = this.lastReason.get(link) ?? fallback ?? 'closed';
    // (nor for a second session dialed one way: the first carries the peer, whom a dialer here would only duplicate)
    if (reason !== DUPLICATE_SESSION && reason !== SAME_DIRECTION_SESSION) this.wake(link.session.peer);
    // what the peer held when the session ended, for status while it is away, whichever side
    // dialed (when the peer's dial carried the session, ours was closed as a duplicate)
    const peer = link.session.peer;
    if (peer !== undefined && link.session.peerRole === 'master') {
      for (const x of this.dialers) if (x.node === peer) x.acked = Math.max(x.acked, link.session.peerHolds);
    }
    const d = this.dialers.find((x) => x.link === link);
    if (!d) {
      // (a refusal was logged as such)
      if (reason !== DUPLICATE_SESSION && !this.refused.get(link)) this.opts.log.info({ peer: link.session.peer ?? null, direction: 'inbound', reason }, 'replication link closed');
      return;
    }
    d.link = undefined;
    d.bytesIn += link.bytesIn;
    d.bytesOut += link.bytesOut;
    d.lastContact = Math.max(d.lastContact, link.lastContact);
    if (reason === DUPLICATE_SESSION) {
      d.state = 'backing-off';
      d.reason = DUPLICATE_SESSION;
    } else {
      d.state = this.refused.get(link) ? 'refused' : 'backing-off';
      d.reason = d.reason && reason === 'connection closed' ? d.reason : reason;
    }
    if (this.closed) return;
    // The backoff starts again once the peer is reached for good: a session that went live or
    // lasted, or a duplicate (the peer's own session carries on). One that ended soon after
    // opening, never live (a frame refused every time, a disk that refuses every apply), counts
    // as a failed attempt, or the dialer would redial it every 125-250 ms for ever.
    if (reason === DUPLICATE_SESSION || (link.openedAt > 0 && (link.everLive || monotonic() - link.openedAt >= BRIEF_SESSION_MS))) d.attempt = 0;
    if (this.role === 'replica') {
      this.replicaLinkEnded(d, link, reason);
      return;
    }
    // not reached since the link went down: this outage is logged already
    const repeat = d.downLogged;
    // The peer's own dial carries the session: look again only now and then;
    // if that session ends, the dialer is woken at once (see wake()).
    const delay =
      reason === DUPLICATE_SESSION
        ? this.opts.backoffCap ?? 30_000
        : backoffDelay(d.attempt++, Math.random(), this.opts.backoffBase ?? 250, this.opts.backoffCap ?? 30_000);
    if (reason !== DUPLICATE_SESSION) {
      // once per outage: the retries of a peer that stays away are the same state (status shows the latest reason)
      this.logState(repeat, 'info', { url: shownUrl(d.url), peer: d.node, reason: d.reason, retryInMs: delay }, 'replication link down; backing off');
      d.downLogged = true;
    }
    d.timer = setTimeout(() => this.dial(d), delay);
  }

  /** Replica: the socket of `link` closed; if it carried the session with the master, writes stop now. */
  private lostMaster(link: Link, reason: string): void {
    // (told once: when this side ends the session, and again when its socket closes)
    if (link.wasMaster) return;
    const peer = link.session.peer;
    if (peer === undefined || link.session.peerRole !== 'master' || this.mode.mode !== 'read-write' || this.mode.master?.node !== peer) return;
    link.wasMaster = true;
    const url = link.url ?? '';
    this.setMode({ mode: 'read-only', master: { node: peer!, url }, since: Date.now(), reason });
    this.opts.log.warn({ master: peer, url, reason }, 'replica read-only: lost its master');
  }

  /**
   * Replica: the session with its master (or an attempt at one) ended. The
   * replica is read-only until it reaches a master again; it tries the next
   * master on its list at once, and backs off only after a whole round of
   * them failed.
   */
  private replicaLinkEnded(d: Dialer, link: Link, reason: string): void {
    const wasOpen = link.wasMaster;
    if (wasOpen) {
      // read-only since the socket closed (lostMaster); the reason may be known better now
      if (this.mode.mode === 'read-only' && this.mode.master?.node === link.session.peer) this.mode = { ...this.mode, reason };
    } else if (this.mode.mode === 'read-only') {
      this.mode = { ...this.mode, reason: this.mode.master ? this.mode.reason : `${d.url}: ${d.reason ?? reason}` };
    }
    const n = this.dialers.length;
    if (!wasOpen) this.failedInRound++;
    // a session that ends right after opening (a disk that refuses every apply, a frame refused
    // every time) would otherwise be redialed at once forever
    const brief = wasOpen && monotonic() - link.openedAt < BRIEF_SESSION_MS;
    this.briefSessions = brief ? this.briefSessions + 1 : wasOpen ? 0 : this.briefSessions;
    this.current = (this.dialers.indexOf(d) + 1) % n;
    const next = this.dialers[this.current]!;
    for (const other of this.dialers) if (other !== next && other.state !== 'refused') other.state = 'standby';
    // a master lost just now may be the one restarting: the next one is tried at once
    const delay =
      brief && this.briefSessions > 1
        ? backoffDelay(this.briefSessions - 2, Math.random(), this.opts.backoffBase ?? 250, this.opts.backoffCap ?? 5000)
        : wasOpen || this.failedInRound < n
          ? 0
          : backoffDelay(d.attempt++, Math.random(), this.opts.backoffBase ?? 250, this.opts.backoffCap ?? 5000);
    if (this.failedInRound >= n) this.failedInRound = 0;
    next.state = next.state === 'refused' ? 'refused' : 'backing-off';
    // logged the first time the replica turns to another master after losing one, not at every retry
    if (next !== d) {
      this.logState(this.searchLogged, 'info', { from: d.url, to: next.url, retryInMs: delay }, 'replica: trying the next master');
      this.searchLogged = true;
    }
    next.timer = setTimeout(() => this.dial(next), delay);
  }

  /** A session with `peer` ended: a dialer parked behind it as a duplicate dials now. */
  private wake(peer: string | undefined): void {
    if (this.closed || peer === undefined) return;
    for (const d of this.dialers) {
      if (d.node === peer && !d.link && d.reason === DUPLICATE_SESSION) {
        clearTimeout(d.timer);
        d.reason = null;
        d.timer = setTimeout(() => this.dial(d), backoffDelay(0, Math.random(), this.opts.backoffBase ?? 250, this.opts.backoffCap ?? 30_000));
      }
    }
  }

  private behindSeconds(held: number, now = monotonic()): number {
    const since = this.clock.missingSince(held, this.opts.store.lastSeq);
    return since === undefined ? 0 : Math.max(0, (now - since) / 1000);
  }

  /** Per-peer state for /status. */
  status(): PeerStatus[] {
    const out: PeerStatus[] = [];
    const now = Date.now();
    const seen = new Set<string>();
    const linkStatus = (l: Link, url: string | null): PeerStatus => {
      const s = l.session.stats;
      const lagEntries = Math.max(0, s.remoteHead - s.applied);
      return {
        node: l.session.peer ?? null,
        url,
        role: l.session.peerRole ?? null,
        direction: l.direction,
        state: l.session.state !== 'open' ? 'connecting' : l.session.live ? 'live' : 'catching-up',
        reason: null,
        lagEntries,
        lagSeconds: lagEntries > 0 && s.behindSince !== undefined ? Math.max(0, (now - Math.floor(s.behindSince / 1000)) / 1000) : 0,
        lastContact: l.lastContact ? new Date(l.lastContact).toISOString() : null,
        bytesIn: l.bytesIn,
        bytesOut: l.bytesOut,
        acked: s.acked,
        // (masters take nothing from a replica)
        peerBehind: this.role === 'replica' ? 0 : Math.max(0, this.opts.store.lastSeq - l.session.peerHolds),
        peerBehindSeconds: this.role === 'replica' ? 0 : this.behindSeconds(l.session.peerHolds),
        synced: l.everLive || s.remoteHead > 0,
      };
    };
    for (const d of this.dialers) {
      const live = [...this.links].find((l) => l.session.state === 'open' && l.ws.readyState === WebSocket.OPEN && l.session.peer !== undefined && l.session.peer === d.node);
      if (live) {
        const st = linkStatus(live, shownUrl(d.url));
        st.bytesIn += d.bytesIn;
        st.bytesOut += d.bytesOut;
        out.push(st);
        seen.add(live.session.peer!);
        continue;
      }
      out.push({
        node: d.node,
        url: shownUrl(d.url),
        role: 'master',
        direction: 'outbound',
        state: d.link ? 'connecting' : d.state,
        reason: d.reason,
        lagEntries: 0,
        lagSeconds: 0,
        lastContact: d.lastContact ? new Date(d.lastContact).toISOString() : null,
        bytesIn: d.bytesIn,
        bytesOut: d.bytesOut,
        acked: d.acked,
        // (a peer never reached has acknowledged nothing we know of)
        peerBehind: d.node && this.role === 'master' ? Math.max(0, this.opts.store.lastSeq - d.acked) : 0,
        peerBehindSeconds: d.node && this.role === 'master' ? this.behindSeconds(d.acked) : 0,
        synced: false,
      });
      if (d.node) seen.add(d.node);
    }
    for (const l of this.links) {
      if (l.direction !== 'inbound' || l.session.state !== 'open' || l.ws.readyState !== WebSocket.OPEN || seen.has(l.session.peer!)) continue;
      out.push(linkStatus(l, null));
    }
    return out;
  }

  /**
   * Our feed now lacks changes we hold (the feed base grew): peers streaming
   * from us that may lack them must subscribe again, so that they are caught
   * up by anti-entropy instead of meeting a gap. Sessions whose peer holds
   * the base already are left alone (see SyncSession.lacksBase).
   */
  private resubscribe(opts: { except?: Link; snapshots: boolean }): void {
    const base = this.opts.store.feedBase();
    for (const other of this.links) {
      if (other === opts.except || !other.session.lacksBase(base, opts.snapshots)) continue;
      this.lastReason.set(other, 'feed base changed; resubscribing');
      other.ws.close(1000, 'feed base changed; resubscribing');
    }
  }

  /** Closes every session, to be opened again (by whichever side dials it). */
  private reopenAll(reason: string): void {
    for (const link of this.links) {
      this.lastReason.set(link, reason);
      link.ws.close(1000, reason);
    }
  }

  /** Whether a session with `node` is open now. */
  connectedTo(node: string): boolean {
    for (const l of this.links) if (isLive(l) && l.session.peer === node) return true;
    return false;
  }

  async close(): Promise<void> {
    this.closed = true;
    this.unsubscribe();
    this.unbase();
    this.unforget();
    for (const d of this.dialers) clearTimeout(d.timer);
    for (const l of this.links) {
      clearInterval(l.timer);
      clearTimeout(l.watchdog);
      l.ws.terminate();
    }
    for (const p of this.pending.values()) {
      clearTimeout(p.timer);
      p.reject(new ForwardError('unconfirmed', `this node is shutting down before master ${p.sentTo ?? '(none)'} answered; the write is unconfirmed: send it again with the same Idempotency-Key (${p.clientKey})`));
    }
    this.pending.clear();
    await Promise.all([...this.links].map((l) => l.queue.catch(() => undefined)));
    // (ended() skips links no longer listed, and the socket's close may come after this)
    for (const l of this.links) releaseSession(l);
    this.links.clear();
    this.wss.close();
  }
}

const BRIEF_SESSION_MS = 5000;

/** A link whose session is open and whose socket is not closing (one closing is on its way out, its queued work still ending). */
function isLive(l: Link): boolean {
  return l.session.state === 'open' && l.ws.readyState === WebSocket.OPEN;
}

/**
 * A peer URL as status and metrics show it: without a user or password it
 * may hold (ws sends them as Basic auth, to a proxy in front of /sync), as
 * /metrics asks for none.
 */
function shownUrl(url: string): string {
  const u = new URL(url);
  if (!u.username && !u.password) return url;
  u.username = '';
  u.password = '';
  return u.toString();
}

/** The name of the credential a replica's session presented (`name:serial`). */
function credentialName(l: Link): string | undefined {
  return l.session.peerCredential?.split(':')[0];
}

/** Open replica sessions one credential may hold on a master at once, under different node ids. */
const MAX_SESSIONS_PER_CREDENTIAL = 2;

/**
 * Durations and timeouts (dead links, handshakes, held snapshots, how long a
 * peer has lacked a change) run on the monotonic clock: a wall clock set back
 * by NTP or a resumed VM would otherwise postpone dead-link detection by as
 * much as it moved. Wall time is kept only for what status shows as a date.
 */
function monotonic(): number {
  return performance.now();
}

/** Forwarded writes a replica holds unanswered at once; its masters take 1024 per session. */
const MAX_PENDING = 512;

/** Inbound refusals (address and reason) remembered so that each is logged once (an hour) rather than per attempt. */
const REFUSALS_REMEMBERED = 1000;
const REFUSAL_LOGGED_FOR_MS = 60 * 60 * 1000;

/** A WebSocket close reason is at most 123 bytes of UTF-8. */
function closeReason(reason: string): string {
  let r = reason;
  while (Buffer.byteLength(r) > 123) r = r.slice(0, -1);
  return r;
}

/** A second forward of a key still pending shares the first one's outcome. */
function chain(p: PendingWrite, resolve: (a: WroteFrame) => void, reject: (e: Error) => void): void {
  const { resolve: r0, reject: j0 } = p;
  p.resolve = (a) => {
    r0(a);
    resolve(a);
  };
  p.reject = (e) => {
    j0(e);
    reject(e);
  };
}
