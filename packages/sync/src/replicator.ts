import { randomBytes } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import WebSocket, { WebSocketServer } from 'ws';
import { backoffDelay } from './backoff.js';
import { decodeFrame, encodeFrame, FrameError } from './frames.js';
import { SyncSession, type Action } from './session.js';
import { releaseSnapshot, runActions, type FeedStore, type SessionIo } from './executor.js';

export interface ReplicatorLog {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
}

export interface ReplicatorOptions {
  store: FeedStore;
  cluster: string;
  secret: string;
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

export type PeerState = 'connecting' | 'catching-up' | 'live' | 'backing-off' | 'refused';

export interface PeerStatus {
  /** the peer's node id, once known */
  node: string | null;
  /** the URL dialed, for configured peers; null for peers that dialed us */
  url: string | null;
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
}

interface Link extends SessionIo {
  ws: WebSocket;
  direction: 'outbound' | 'inbound';
  url: string | null;
  queue: Promise<void>;
  bytesIn: number;
  bytesOut: number;
  lastContact: number;
  lastPong: number;
  timer: NodeJS.Timeout | undefined;
}

interface Dialer {
  url: string;
  attempt: number;
  link: Link | undefined;
  state: PeerState;
  reason: string | null;
  node: string | null;
  timer: NodeJS.Timeout | undefined;
  /** counters of the last ended link, so status does not reset to zero on a blip */
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
  private closed = false;
  private readonly heartbeat: number;
  private readonly timeout: number;

  constructor(private readonly opts: ReplicatorOptions) {
    this.heartbeat = opts.heartbeat ?? 2000;
    this.timeout = opts.timeout ?? 10_000;
    this.wss = new WebSocketServer({ noServer: true, maxPayload: opts.maxFrame ?? 16 * 1024 * 1024, perMessageDeflate: DEFLATE });
    this.dialers = opts.peers.map((url) => ({ url, attempt: 0, link: undefined, state: 'connecting', reason: null, node: null, timer: undefined, bytesIn: 0, bytesOut: 0, lastContact: 0 }));
    this.unsubscribe = opts.store.subscribe(() => {
      const head = opts.store.lastSeq;
      for (const link of this.links) this.run(link, link.session.feedAdvanced(head));
    });
    for (const d of this.dialers) this.dial(d);
  }

  /** For the HTTP server's `upgrade` event on `/sync`. */
  handleUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    if (this.closed) {
      socket.destroy();
      return;
    }
    this.wss.handleUpgrade(req, socket, head, (ws) => this.attach(ws, 'inbound', null));
  }

  private dial(d: Dialer): void {
    if (this.closed) return;
    d.state = d.state === 'refused' ? 'refused' : 'connecting';
    const ws = new WebSocket(d.url, { maxPayload: this.opts.maxFrame ?? 16 * 1024 * 1024, handshakeTimeout: this.timeout, ca: this.opts.tls?.ca, perMessageDeflate: DEFLATE });
    d.link = this.attach(ws, 'outbound', d.url);
    ws.on('error', (e) => {
      d.reason = e.message;
    });
  }

  private attach(ws: WebSocket, direction: 'outbound' | 'inbound', url: string | null): Link {
    const store = this.opts.store;
    const session = new SyncSession({
      nodeId: store.nodeId,
      cluster: this.opts.cluster,
      secret: this.opts.secret,
      role: 'master',
      nonce: randomBytes(16),
      vector: () => store.versionVector(),
      head: store.lastSeq,
      empty: () => store.lastSeq === 0 && Object.keys(store.versionVector()).length === 0,
      feedBase: () => store.feedBase(),
      firstSeq: () => store.firstSeq(),
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
      lastPong: Date.now(),
      timer: undefined,
      send: (frame) => {
        if (ws.readyState !== WebSocket.OPEN) return false;
        const bytes = encodeFrame(frame);
        link.bytesOut += bytes.length;
        ws.send(bytes);
        return true;
      },
      opened: (peer) => {
        if (!this.admit(link, peer)) return false;
        this.opts.log.info({ peer, direction, url }, 'replication session open');
        return true;
      },
      closed: (reason, refused) => {
        this.lastReason.set(link, reason);
        if (refused) this.opts.log.warn({ peer: session.peer, url, reason }, 'replication peer refused');
        else this.opts.log.info({ peer: session.peer, url, reason }, 'replication session closed');
        this.refused.set(link, refused);
        ws.close(1008, closeReason(reason));
      },
      digestCompared: (differing) => this.opts.log.info({ peer: session.peer, differing }, 'anti-entropy: digests compared'),
      // Our feed now lacks changes we hold (the feed base grew): peers
      // streaming from us must subscribe again, so that those lacking them
      // are caught up by anti-entropy instead of meeting a gap.
      statesApplied: () => {
        for (const other of this.links) {
          if (other === link || other.session.state !== 'open') continue;
          this.lastReason.set(other, 'feed base changed; resubscribing');
          other.ws.close(1000, 'feed base changed; resubscribing');
        }
      },
    };
    this.links.add(link);
    const begin = (): void => {
      link.lastPong = Date.now();
      this.run(link, session.start(Date.now()));
      link.timer = setInterval(() => this.beat(link), this.heartbeat);
    };
    if (ws.readyState === WebSocket.OPEN) begin();
    else ws.once('open', begin);
    ws.on('pong', () => {
      link.lastPong = Date.now();
      link.lastContact = link.lastPong;
    });
    ws.on('message', (data: Buffer, isBinary: boolean) => {
      link.bytesIn += data.length;
      link.lastContact = Date.now();
      if (!isBinary) {
        this.run(link, session.fail('text frames are not part of the protocol', true));
        return;
      }
      let actions: Action[];
      try {
        actions = session.receive(decodeFrame(data));
      } catch (e) {
        actions = session.fail(e instanceof FrameError ? `malformed frame: ${e.message}` : `cannot handle frame: ${(e as Error).message}`, true);
      }
      this.run(link, actions);
    });
    // after queued actions, so a close reason they record is the one reported
    ws.on('close', () => void link.queue.finally(() => this.ended(link, session.state === 'closed' ? undefined : 'connection closed')));
    // 'close' follows and reports; keep what ws says (an oversized frame, a TLS failure)
    ws.on('error', (e) => {
      if (!this.lastReason.has(link)) this.lastReason.set(link, e.message);
    });
    return link;
  }

  private beat(link: Link): void {
    if (Date.now() - link.lastPong > this.timeout) {
      this.opts.log.warn({ peer: link.session.peer, url: link.url }, 'no heartbeat from peer; closing the link');
      this.lastReason.set(link, `no heartbeat for ${Math.round(this.timeout / 1000)} s`);
      link.ws.terminate();
      return;
    }
    if (link.ws.readyState === WebSocket.OPEN) link.ws.ping();
    this.run(link, link.session.tick(Date.now()));
  }

  private readonly lastReason = new WeakMap<Link, string>();

  /** Runs actions in order; each link's actions never overlap. */
  private run(link: Link, actions: Action[]): void {
    if (actions.length === 0) return;
    link.queue = link.queue.then(() => runActions(link, actions)).catch((e: unknown) => {
      this.opts.log.warn({ peer: link.session.peer, err: (e as Error).message }, 'replication step failed; closing the link');
      this.lastReason.set(link, (e as Error).message);
      link.ws.terminate();
    });
  }

  private readonly refused = new WeakMap<Link, boolean>();

  /** One session per peer: of two, keep the one dialed by the smaller node id. */
  private admit(link: Link, peer: string): boolean {
    const me = this.opts.store.nodeId;
    // the dialer learns whom its URL reaches even if this session loses the
    // duplicate rule, so status can show the surviving session under its URL
    const d = this.dialers.find((x) => x.link === link);
    if (d) {
      d.node = peer;
      d.reason = null;
    }
    for (const other of this.links) {
      if (other === link || other.session.peer !== peer || other.session.state !== 'open') continue;
      const keepOutbound = me < peer;
      const keep = (l: Link): boolean => (l.direction === 'outbound') === keepOutbound;
      const loser = keep(link) && !keep(other) ? other : link;
      this.lastReason.set(loser, 'duplicate session');
      this.opts.log.info({ peer, closed: loser.direction }, 'duplicate session with this peer closed; one session carries both directions');
      loser.ws.close(1000, 'duplicate session');
      if (loser === link) return false;
    }
    if (d) d.attempt = 0;
    return true;
  }

  private ended(link: Link, fallback: string | undefined): void {
    if (!this.links.delete(link)) return;
    clearInterval(link.timer);
    releaseSnapshot(link);
    const reason = this.lastReason.get(link) ?? fallback ?? 'closed';
    if (reason !== 'duplicate session') this.wake(link.session.peer);
    const d = this.dialers.find((x) => x.link === link);
    if (!d) {
      if (reason !== 'duplicate session') this.opts.log.info({ peer: link.session.peer ?? null, direction: 'inbound', reason }, 'replication link closed');
      return;
    }
    d.link = undefined;
    d.bytesIn += link.bytesIn;
    d.bytesOut += link.bytesOut;
    d.lastContact = Math.max(d.lastContact, link.lastContact);
    if (reason === 'duplicate session') {
      d.state = 'backing-off';
      d.reason = 'duplicate session';
    } else {
      d.state = this.refused.get(link) ? 'refused' : 'backing-off';
      d.reason = d.reason && reason === 'connection closed' ? d.reason : reason;
    }
    if (this.closed) return;
    // The peer's own dial carries the session: look again only now and then;
    // if that session ends, the dialer is woken at once (see wake()).
    const delay =
      reason === 'duplicate session'
        ? this.opts.backoffCap ?? 30_000
        : backoffDelay(d.attempt++, Math.random(), this.opts.backoffBase ?? 250, this.opts.backoffCap ?? 30_000);
    if (reason !== 'duplicate session') {
      this.opts.log.info({ url: d.url, peer: d.node, reason: d.reason, retryInMs: delay }, 'replication link down; backing off');
    }
    d.timer = setTimeout(() => this.dial(d), delay);
  }

  /** A session with `peer` ended: a dialer parked behind it as a duplicate dials now. */
  private wake(peer: string | undefined): void {
    if (this.closed || peer === undefined) return;
    for (const d of this.dialers) {
      if (d.node === peer && !d.link && d.reason === 'duplicate session') {
        clearTimeout(d.timer);
        d.reason = null;
        d.timer = setTimeout(() => this.dial(d), backoffDelay(0, Math.random(), this.opts.backoffBase ?? 250, this.opts.backoffCap ?? 30_000));
      }
    }
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
        direction: l.direction,
        state: l.session.state !== 'open' ? 'connecting' : l.session.live ? 'live' : 'catching-up',
        reason: null,
        lagEntries,
        lagSeconds: lagEntries > 0 && s.behindSince !== undefined ? Math.max(0, (now - Math.floor(s.behindSince / 1000)) / 1000) : 0,
        lastContact: l.lastContact ? new Date(l.lastContact).toISOString() : null,
        bytesIn: l.bytesIn,
        bytesOut: l.bytesOut,
        acked: s.acked,
      };
    };
    for (const d of this.dialers) {
      const live = [...this.links].find((l) => l.session.state === 'open' && l.session.peer !== undefined && l.session.peer === d.node);
      if (live) {
        const st = linkStatus(live, d.url);
        st.bytesIn += d.bytesIn;
        st.bytesOut += d.bytesOut;
        out.push(st);
        seen.add(live.session.peer!);
        continue;
      }
      out.push({
        node: d.node,
        url: d.url,
        direction: 'outbound',
        state: d.link ? 'connecting' : d.state,
        reason: d.reason,
        lagEntries: 0,
        lagSeconds: 0,
        lastContact: d.lastContact ? new Date(d.lastContact).toISOString() : null,
        bytesIn: d.bytesIn,
        bytesOut: d.bytesOut,
        acked: 0,
      });
      if (d.node) seen.add(d.node);
    }
    for (const l of this.links) {
      if (l.direction !== 'inbound' || l.session.state !== 'open' || seen.has(l.session.peer!)) continue;
      out.push(linkStatus(l, null));
    }
    return out;
  }

  async close(): Promise<void> {
    this.closed = true;
    this.unsubscribe();
    for (const d of this.dialers) clearTimeout(d.timer);
    for (const l of this.links) {
      clearInterval(l.timer);
      l.ws.terminate();
    }
    await Promise.all([...this.links].map((l) => l.queue.catch(() => undefined)));
    this.links.clear();
    this.wss.close();
  }
}

/**
 * permessage-deflate with the sliding window kept between messages: the
 * origin ids, types, keys and principals repeated in every change compress
 * to a few bytes each. Small messages too (ws compresses only from 1 KiB by
 * default), since most frames under live traffic carry one or two changes.
 */
const DEFLATE = { threshold: 64, serverMaxWindowBits: 15, clientMaxWindowBits: 15 } as const;

/** A WebSocket close reason is at most 123 bytes of UTF-8. */
function closeReason(reason: string): string {
  let r = reason;
  while (Buffer.byteLength(r) > 123) r = r.slice(0, -1);
  return r;
}
