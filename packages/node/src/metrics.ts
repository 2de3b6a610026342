import type { ServerResponse } from 'node:http';
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { Store } from '@meridian/store';
import type { PeerStatus, ReplicaMode } from '@meridian/sync';

/** Request latencies, in seconds: half a millisecond to a few seconds. */
const LATENCY_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5];

/** The HTTP surfaces whose requests are counted apart. */
export type Surface = 'admin' | 'xml' | 'status' | 'health';

export interface MetricsSources {
  store: Store;
  peers: () => PeerStatus[];
  /** replica mode, on a replica */
  replica: () => ReplicaMode | undefined;
}

/**
 * The node's Prometheus metrics (docs/operations.md lists them with the
 * thresholds to alert on). Each node has its own registry, so several
 * nodes in one process (tests, benchmarks) do not share counters. Values
 * that describe the present (feed position, lag, sessions, mode) are read
 * when scraped; writes and requests are counted as they happen.
 */
export class Metrics {
  readonly registry = new Registry();
  private readonly requests: Counter<'surface' | 'method' | 'status'>;
  private readonly latency: Histogram<'surface'>;
  private readonly ldapRequests: Counter<'op' | 'result'>;
  private readonly ldapLatency: Histogram<'op'>;
  private readonly unsubscribe: () => void;
  /** the peers' status for the scrape under way: eight gauges read it, worked out once (see text()) */
  private peers: PeerStatus[] = [];
  private readonly src: MetricsSources;

  constructor(src: MetricsSources) {
    this.src = src;
    const r = this.registry;
    const peers = (): PeerStatus[] => this.peers;
    const writes = new Counter({ name: 'meridian_writes_total', help: 'Changes committed by this node (made here), by kind.', labelNames: ['kind'], registers: [r] });
    const applied = new Counter({ name: 'meridian_applied_total', help: 'Changes made elsewhere and applied here, by origin node.', labelNames: ['origin'], registers: [r] });
    this.unsubscribe = src.store.subscribe((entries) => {
      for (const e of entries) {
        if (e.origin === src.store.nodeId) writes.inc({ kind: e.kind });
        else applied.inc({ origin: e.origin });
      }
    });
    new Gauge({
      name: 'meridian_feed_position',
      help: 'The highest seq of this node\'s changes feed on disk.',
      registers: [r],
      collect() {
        this.set(src.store.lastSeq);
      },
    });
    new Gauge({
      name: 'meridian_objects',
      help: 'Live objects, by type.',
      labelNames: ['type'],
      registers: [r],
      collect() {
        for (const [type, n] of Object.entries(src.store.objectCounts())) this.set({ type }, n);
      },
    });
    new Gauge({
      name: 'meridian_conflicts_open',
      help: 'Concurrent writes that overwrote each other and are not settled yet.',
      registers: [r],
      collect() {
        this.set(src.store.openConflictCount());
      },
    });
    const peerGauge = (name: string, help: string, value: (p: PeerStatus) => number): void => {
      new Gauge({
        name,
        help,
        labelNames: ['peer'],
        registers: [r],
        collect() {
          this.reset();
          for (const p of peers()) this.set({ peer: p.node ?? p.url ?? 'unknown' }, value(p));
        },
      });
    };
    peerGauge('meridian_peer_lag_entries', "A peer's changes not yet applied here.", (p) => p.lagEntries);
    peerGauge('meridian_peer_lag_seconds', "Age of the oldest change of a peer's not yet applied here.", (p) => p.lagSeconds);
    peerGauge('meridian_peer_behind_entries', 'Changes of this node a peer has not acknowledged (grows while it is cut off).', (p) => p.peerBehind);
    peerGauge('meridian_peer_behind_seconds', 'For how long a peer has lacked a change of this node (grows while it is cut off and this node takes writes).', (p) => p.peerBehindSeconds);
    peerGauge('meridian_peer_bytes_in', 'Bytes received from a peer (replication frames).', (p) => p.bytesIn);
    peerGauge('meridian_peer_bytes_out', 'Bytes sent to a peer (replication frames).', (p) => p.bytesOut);
    peerGauge('meridian_peer_up', '1 while a session with the peer is open (live or catching up).', (p) => (p.state === 'live' || p.state === 'catching-up' ? 1 : 0));
    new Gauge({
      name: 'meridian_sessions',
      help: 'Open replication sessions.',
      registers: [r],
      collect() {
        this.set(peers().filter((p) => p.state === 'live' || p.state === 'catching-up').length);
      },
    });
    new Gauge({
      name: 'meridian_read_only',
      help: '1 while this replica cannot reach a master and refuses writes (always 0 on a master).',
      registers: [r],
      collect() {
        this.set(src.replica()?.mode === 'read-only' ? 1 : 0);
      },
    });
    this.ldapRequests = new Counter({
      name: 'meridian_ldap_requests_total',
      help: 'LDAP operations answered, by operation (bind, search, compare, modify, passwd, whoami, add, delete, modrdn) and result code.',
      labelNames: ['op', 'result'],
      registers: [r],
    });
    this.ldapLatency = new Histogram({
      name: 'meridian_ldap_request_duration_seconds',
      help: 'Time to answer an LDAP operation, by operation.',
      labelNames: ['op'],
      buckets: LATENCY_BUCKETS,
      registers: [r],
    });
    this.requests = new Counter({ name: 'meridian_http_requests_total', help: 'HTTP requests, by surface, method and status.', labelNames: ['surface', 'method', 'status'], registers: [r] });
    this.latency = new Histogram({
      name: 'meridian_http_request_duration_seconds',
      help: 'Time to answer an HTTP request, by surface.',
      labelNames: ['surface'],
      buckets: LATENCY_BUCKETS,
      registers: [r],
    });
  }

  /**
   * Counts a request and its time once its answer is finished. The labelled
   * children are looked up once per label set and kept: prom-client's
   * per-call label hashing cost the GET path a measurable share of its
   * throughput (see docs/benchmarks.md, XML gateway).
   */
  observe(surface: Surface, method: string, res: ServerResponse, started: bigint): void {
    res.once('finish', () => {
      this.count(`${surface} ${method} ${res.statusCode}`, () => this.requests.labels(surface, method, String(res.statusCode)));
      this.time(surface, () => this.latency.labels(surface), Number(process.hrtime.bigint() - started) / 1e9);
    });
  }

  /** Counts an LDAP operation and its time (result codes as numbers, RFC 4511). */
  observeLdap(op: string, code: number, seconds: number): void {
    this.count(`ldap ${op} ${code}`, () => this.ldapRequests.labels(op, String(code)));
    this.time(`ldap ${op}`, () => this.ldapLatency.labels(op), seconds);
  }

  private count(key: string, child: () => { inc(): void }): void {
    let c = this.counters.get(key);
    if (!c) this.counters.set(key, (c = child()));
    c.inc();
  }

  private time(key: string, child: () => { observe(v: number): void }, seconds: number): void {
    let h = this.timers.get(key);
    if (!h) this.timers.set(key, (h = child()));
    h.observe(seconds);
  }

  private readonly counters = new Map<string, { inc(): void }>();
  private readonly timers = new Map<string, { observe(v: number): void }>();

  async text(): Promise<string> {
    this.peers = this.src.peers();
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  close(): void {
    this.unsubscribe();
  }
}
