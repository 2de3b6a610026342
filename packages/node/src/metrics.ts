import type { ServerResponse } from 'node:http';
import { Gauge, Registry } from 'prom-client';
import type { Store } from '@meridian/store';
import type { PeerStatus, ReplicaMode } from '@meridian/sync';
import { PlainCounter, PlainHistogram } from './plain-metrics.js';

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
  private readonly registry = new Registry();
  // (counted per change or request in plain numbers, which the registry writes when scraped: see plain-metrics.ts)
  private readonly writes = new PlainCounter('meridian_writes_total', 'Changes committed by this node (made here), by kind.', ['kind'], this.registry);
  private readonly applied = new PlainCounter('meridian_applied_total', 'Changes made elsewhere and applied here, by origin node.', ['origin'], this.registry);
  private readonly requests = new PlainCounter('meridian_http_requests_total', 'HTTP requests, by surface, method and status.', ['surface', 'method', 'status'], this.registry);
  private readonly latency = new PlainHistogram('meridian_http_request_duration_seconds', 'Time to answer an HTTP request, by surface.', ['surface'], LATENCY_BUCKETS, this.registry);
  private readonly ldapRequests = new PlainCounter(
    'meridian_ldap_requests_total',
    'LDAP operations answered, by operation (bind, search, compare, modify, passwd, whoami, add, delete, modrdn) and result code.',
    ['op', 'result'],
    this.registry,
  );
  private readonly ldapLatency = new PlainHistogram('meridian_ldap_request_duration_seconds', 'Time to answer an LDAP operation, by operation.', ['op'], LATENCY_BUCKETS, this.registry);
  private readonly unsubscribe: () => void;
  /** the peers' status for the scrape under way: eight gauges read it, worked out once (see text()) */
  private peers: PeerStatus[] = [];
  private readonly src: MetricsSources;

  constructor(src: MetricsSources) {
    this.src = src;
    const r = this.registry;
    const peers = (): PeerStatus[] => this.peers;
    this.unsubscribe = src.store.subscribe((entries) => {
      for (const e of entries) {
        if (e.origin === src.store.nodeId) this.writes.child(e.kind, () => [e.kind]).n++;
        else this.applied.child(e.origin, () => [e.origin]).n++;
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
  }

  /**
   * Counts a request and its time (`started`: performance.now() when it
   * came): at once if its answer has been handed over whole, as most have
   * when their handler returns, or else once it is finished. (A 'finish'
   * listener on every answer cost the cached GET path more than the
   * counting itself.)
   */
  answered(surface: Surface, method: string, res: ServerResponse, started: number): void {
    if (res.writableEnded) this.request(surface, method, res.statusCode, started);
    else res.once('finish', () => this.request(surface, method, res.statusCode, started));
  }

  private request(surface: Surface, method: string, status: number, started: number): void {
    this.requests.child(`${surface} ${method} ${status}`, () => [surface, method, String(status)]).n++;
    this.latency.observe(this.latency.child(surface, () => [surface]), (performance.now() - started) / 1000);
  }

  /** Counts an LDAP operation and its time (result codes as numbers, RFC 4511). */
  observeLdap(op: string, code: number, seconds: number): void {
    this.ldapRequests.child(`${op} ${code}`, () => [op, String(code)]).n++;
    this.ldapLatency.observe(this.ldapLatency.child(op, () => [op]), seconds);
  }

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
