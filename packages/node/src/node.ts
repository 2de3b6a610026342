import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer, ServerResponse, type IncomingMessage, type Server } from 'node:http';
import { createServer as createTlsServer } from 'node:https';
import { createSecureContext } from 'node:tls';
import type { AddressInfo, Socket } from 'node:net';
import { destination, pino, type Logger } from 'pino';
import { hlcToIso, isMeridianError, loadSchemaFile, MeridianError, Store } from '@meridian/store';
import { DUPLICATE_SESSION, parseReplicaCredential, Replicator, type PeerStatus } from '@meridian/sync';
import { AdminAuth } from './admin-auth.js';
import { ClusterBinding } from './cluster-binding.js';
import { handleAdmin } from './admin-api.js';
import { SettingError, type NodeConfig } from './config.js';
import { basicCredentials, HttpError, methodNotAllowed, readBody, sendError, sendJson, toHttpError } from './http-util.js';
import { generateSample } from './sample-data.js';
import { ForwardedWrites, ForwardingWriter } from './forwarding.js';
import { closeStalled, closeStalledAside, setAside } from './idle-timeout.js';
import { ReplicaRegistry } from './replica-registry.js';
import { Principals } from './principals.js';
import { handleReplicas } from './replicas-api.js';
import { storeWriter, type Writer } from './writer.js';
import { CursorSeal, XmlGateway } from '@meridian/xml';
import { LdapGateway } from '@meridian/ldap';
import { Metrics, type Surface } from './metrics.js';

export const VERSION = '0.1.0';

/** How long a master remembers the idempotency key of a forwarded write. */
const IDEMPOTENCY_MS = 24 * 3600 * 1000;
/** how long a stopping replica waits for its writes in flight (a master answers in milliseconds; SIGTERM's sender waits about 10 s) */
const WRITES_GRACE_MS = 5000;

export interface StatusJson {
  nodeId: string;
  role: 'master' | 'replica';
  mode: 'read-write' | 'read-only';
  /** why the node is read-only, and since when (null while read-write) */
  modeReason: string | null;
  modeSince: string;
  /** replica: the master it writes through, or lost last */
  master: { node: string | null; url: string } | null;
  version: string;
  startedAt: string;
  uptimeSeconds: number;
  objects: number;
  objectsByType: Record<string, number>;
  feed: { firstSeq: number; lastSeq: number; lastChange: string | null };
  versionVector: Record<string, number>;
  peers: PeerStatus[];
  conflicts: { open: number };
  schema: { name: string; digest: string };
  cache: { objects: number; bytes: number };
}

/**
 * One Meridian node: the store and the HTTP server in front of it (health,
 * status and the admin API; replication and gateways attach here later).
 */
export class MeridianNode {
  private readonly startedAt = new Date();
  /** monotonic, for uptime: a wall clock set back must not make it jump */
  private readonly startedMono = performance.now();
  private stopping: Promise<void> | undefined;
  /** sockets of requests answered without their upgrade: the server's connection list no longer holds them */
  private readonly answeredAside = new Set<Socket>();
  private trimTimer: NodeJS.Timeout | undefined;

  private constructor(
    readonly config: NodeConfig,
    readonly store: Store,
    readonly log: Logger,
    private readonly auth: AdminAuth,
    private readonly server: Server,
    readonly replicator: Replicator | undefined,
    private readonly writer: Writer,
    private readonly registry: ReplicaRegistry | undefined,
    private readonly xml: XmlGateway,
    private readonly metrics: Metrics,
    private readonly ldap: LdapGateway | undefined,
    /** where the LDAP directory is served, ldap:// and ldaps:// */
    readonly ldapUrls: readonly string[],
  ) {}

  /** how long stop() lets a replica's writes in flight finish (see stop) */
  private writesGraceMs = WRITES_GRACE_MS;

  /**
   * Opens the store, loads the sample data if asked, and listens. `tuning`:
   * what tests shorten (not settings: a node in service has no reason to
   * change them).
   */
  static async start(config: NodeConfig, log: Logger = pino({ level: 'info' }, destination(2)), tuning: { writesGraceMs?: number; bindDelayMs?: number } = {}): Promise<MeridianNode> {
    const schema = schemaOf(config);
    let reindexLogged = performance.now();
    const store = await Store.open({
      dir: config.dir,
      schema,
      nodeId: config.nodeId,
      cacheBytes: config.cacheBytes,
      // (a rebuild reads every object before the node serves: say so, or a large store looks hung)
      onReindex: (what) => log.info(what, 'rebuilding indexes from the stored objects before serving (the schema changed, or this build indexes more); this reads every object once'),
      // at most a line every 5 s: about 50,000 objects
      onReindexProgress: ({ read, about }) => {
        const now = performance.now();
        if (now - reindexLogged < 5000) return;
        reindexLogged = now;
        log.info({ read, about }, `rebuilding indexes: ${read} objects read of about ${about}`);
      },
      onTypeChange: ({ id, was, is }) =>
        log.warn({ id, was, is }, `object ${id} is a ${is} now, no longer a ${was}: two masters created its id as two types; its ${was} fields stay until removed (docs/operations.md, "A conflict")`),
    });
    if (store.versionsMigrated > 0) log.info({ objects: store.versionsMigrated }, 'object versions rewritten to this build\'s formula; ETags of those objects changed once');
    let replicator: Replicator | undefined;
    let registry: ReplicaRegistry | undefined;
    let ldapGateway: LdapGateway | undefined;
    const ldapUrls: string[] = [];
    try {
      const cluster = await ClusterBinding.check(store, config);
      const auth = await AdminAuth.init(store, config.adminPassword);
      const principals = new Principals(store, auth);
      if (config.sample && !(await store.getMeta<boolean>('sampleLoaded'))) {
        const n = await loadSample(store, config.sampleSize);
        await store.setMeta('sampleLoaded', true);
        log.info({ objects: n }, 'loaded the sample dataset');
      }
      // (read once, for HTTPS and LDAPS alike: LDAPS is on only with HTTPS, see config.ts)
      const tls = config.tlsCert ? loadTls(config) : undefined;
      // No limit on a whole request's time (Node's requestTimeout, 300 s by default, would cut an import streamed
      // for longer): a connection that stalls on its client's side for idleTimeout is closed instead (see
      // closeStalled), which also frees what a client that stopped reading a stream (SSE, an export, a backup)
      // holds. Headers still have 60 s.
      const httpOptions = { keepAliveTimeout: 5000, requestTimeout: 0, headersTimeout: 60_000 };
      const server = tls ? createTlsServer({ ...httpOptions, ...tls }) : createServer(httpOptions);
      closeStalled(server, config.idleTimeout);
      const link = {
        store,
        cluster: config.clusterId,
        log,
        heartbeat: config.heartbeat,
        timeout: config.linkTimeout,
        joined: () => cluster.joined(),
        tls: config.tlsCa ? { ca: readPem(config.tlsCa, '--tls-ca') } : undefined,
      };
      let writer: Writer = storeWriter(store);
      if (config.role === 'replica') {
        const cred = parseReplicaCredential(config.replicaCredential!)!;
        const r = new Replicator({
          ...link,
          role: 'replica',
          secret: cred.key,
          credential: `${cred.name}:${cred.serial}`,
          peers: config.masters,
        });
        replicator = r;
        writer = new ForwardingWriter(store, r, config.writeTimeout);
      } else if (config.clusterSecret) {
        const secret = config.clusterSecret;
        const forwarded = new ForwardedWrites(store, principals);
        // (the registry's change hook runs only after the replicator exists: it needs a feed change first)
        const reg = await ReplicaRegistry.open(store, secret, config.clusterId, () =>
          replicator?.closeReplicas((c) => {
            const k = reg.keyFor(c);
            return 'refused' in k ? k.refused : undefined;
          }),
        );
        registry = reg;
        replicator = new Replicator({
          ...link,
          secret,
          peers: config.peers,
          replicaKey: (c) => reg.keyFor(c),
          onWrite: (w, via, holder, open) => forwarded.handle(w, via, holder, open),
        });
      }
      // one node key seals the XML gateway's list cursors and the LDAP gateway's paged results cookies
      const cursorSeal = new CursorSeal(await cursorKey(store));
      const xml = new XmlGateway({
        store,
        writer,
        signIn: (authorization) => principals.fromHeader(authorization),
        scope: (p) => principals.scope(p),
        maxBody: config.maxBody,
        readBody,
        mapError: (e) => {
          const h = toHttpError(e);
          if (h.code === 'internal') log.error({ err: e }, 'XML request failed');
          return { status: h.status, code: h.code, message: h.message, headers: h.headers, field: h.field };
        },
        onParserLost: (reason) => log.warn({}, reason),
        cursorSeal,
      });
      const r = replicator;
      const metrics = new Metrics({ store, peers: () => r?.status() ?? [], replica: () => (config.role === 'replica' ? r?.replicaMode() : undefined) });
      if (config.ldapPort > 0 || config.ldapsPort > 0) {
        ldapGateway = new LdapGateway({
          bindDelayMs: tuning.bindDelayMs,
          cookieSeal: cursorSeal,
          store,
          writer,
          baseDn: config.baseDn,
          authenticate: (user, password) => principals.authenticate(user, password),
          authenticatePerson: (person, user, password) => principals.person(person, user, password),
          scope: (p) => principals.scope(p),
          anonymous: config.ldapAnonymous,
          sizeLimit: config.ldapSizeLimit,
          timeLimit: config.ldapTimeLimit,
          maxRequest: config.maxBody,
          log: log.child({ gateway: 'ldap' }),
          observe: (op, code, seconds) => metrics.observeLdap(op, code, seconds),
          classify: (e) => {
            const h = toHttpError(e);
            return { code: h.code, message: h.message };
          },
        });
        const host = config.host;
        const listen = async (port: number, tls?: { cert: Buffer; key: Buffer }): Promise<string> => {
          try {
            const bound = await ldapGateway!.listen(port, host, tls);
            return `${tls ? 'ldaps' : 'ldap'}://${host.includes(':') ? `[${host}]` : host}:${bound}`;
          } catch (e) {
            throw listenFailure(e, port, host, tls ? '--ldaps-port' : '--ldap-port');
          }
        };
        if (config.ldapPort > 0) ldapUrls.push(await listen(config.ldapPort));
        if (config.ldapsPort > 0 && tls) ldapUrls.push(await listen(config.ldapsPort, tls));
      }
      const node = new MeridianNode(config, store, log, auth, server, replicator, writer, registry, xml, metrics, ldapGateway, ldapUrls);
      if (tuning.writesGraceMs !== undefined) node.writesGraceMs = tuning.writesGraceMs;
      server.on('upgrade', (req, socket, head) => {
        // Node hands every request with an Upgrade header here once anything listens for upgrades. Any upgrade but
        // a WebSocket's (h2c, which curl --http2 and Java's HttpClient offer on http:// URLs) is ignored, as HTTP
        // lets a server do: the request is answered in HTTP/1.1.
        if ((req.headers.upgrade ?? '').toLowerCase() !== 'websocket') {
          answerWithoutUpgrade(req, socket as Socket, (rq, rs) => node.handle(rq, rs), node.answeredAside, config.idleTimeout);
          return;
        }
        const path = (req.url ?? '').split('?')[0];
        if (path === '/sync' && replicator && config.role === 'master') {
          replicator.handleUpgrade(req, socket, head);
          return;
        }
        const why =
          path !== '/sync'
            ? `no WebSocket endpoint at ${path}`
            : config.role === 'replica'
              ? 'this node is a replica; replicas accept no replication sessions (dial a master)'
              : 'replication is not configured on this node (no cluster secret)';
        refuseUpgrade(socket as Socket, why, node.answeredAside);
      });
      // (no 'clientError' listener: Node's own answers 431 to headers over its limit and 408 to a request too slow
      // to arrive, 400 otherwise, and writes nothing into a response already under way on that connection)
      server.on('request', (req, res) => void node.handle(req, res));
      await new Promise<void>((resolve, reject) => {
        const failed = (e: NodeJS.ErrnoException): void => reject(listenFailure(e, config.httpPort, config.host, '--http-port'));
        server.once('error', failed);
        server.listen(config.httpPort, config.host, () => {
          server.off('error', failed);
          resolve();
        });
      });
      // Once listening, an error on the server is a connection it could not take (accept failing with
      // EMFILE when file descriptors run out, ENOBUFS): with no listener it was thrown, and ended the node.
      server.on('error', (e: NodeJS.ErrnoException) => log.warn({ err: e.message, code: e.code }, 'the HTTP server could not take a connection'));
      if (auth.generated) {
        // (the one step after listening that can fail: the server goes with the rest, or it kept serving a closed store)
        await auth.keepGenerated(store).catch((e: unknown) => {
          server.closeAllConnections?.();
          server.close();
          throw e;
        });
        process.stdout.write(`admin password (shown once; only a hash is stored): ${auth.generated}\n`);
      }
      log.info({ nodeId: store.nodeId, url: node.url, dir: config.dir }, 'listening');
      node.scheduleTrim();
      return node;
    } catch (e) {
      // e.g. the port is taken: the replicator already dials its peers
      await ldapGateway?.close();
      await replicator?.close();
      registry?.close();
      await store.close();
      throw e;
    }
  }

  get url(): string {
    const a = this.server.address() as AddressInfo;
    const host = a.family === 'IPv6' ? `[${a.address}]` : a.address;
    return `${this.config.tlsCert ? 'https' : 'http'}://${host}:${a.port}`;
  }

  status(): StatusJson {
    // (built-in types, such as replica credentials, are not the office's data)
    const byType = Object.fromEntries(Object.entries(this.store.objectCounts()).filter(([t]) => !this.store.schema.types.get(t)?.system));
    const lastHlc = this.store.hlc;
    const replica = this.config.role === 'replica' ? this.replicator!.replicaMode() : undefined;
    return {
      nodeId: this.store.nodeId,
      role: this.config.role,
      mode: replica?.mode ?? 'read-write',
      modeReason: replica?.mode === 'read-only' ? this.replicator!.readOnlySentence() : null,
      modeSince: new Date(replica?.since ?? this.startedAt.getTime()).toISOString(),
      master: replica?.master ?? null,
      version: VERSION,
      startedAt: this.startedAt.toISOString(),
      uptimeSeconds: Math.round((performance.now() - this.startedMono) / 1000),
      objects: Object.values(byType).reduce((a, b) => a + b, 0),
      objectsByType: byType,
      feed: { firstSeq: this.store.firstSeq(), lastSeq: this.store.lastSeq, lastChange: this.store.lastSeq > 0 ? hlcToIso(lastHlc) : null },
      versionVector: this.store.versionVector(),
      peers: this.replicator?.status() ?? [],
      conflicts: { open: this.store.openConflictCount() },
      schema: { name: this.store.schema.name, digest: this.store.schema.digest },
      cache: this.store.cacheStats(),
    };
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    // (a request that came on a connection being closed: see closeStalled)
    if (setAside(req)) return;
    const started = performance.now();
    // (a kept-alive connection's next request while the node stops: answered, and the connection closed after it)
    if (this.stopping) res.shouldKeepAlive = false;
    const target = req.url ?? '/';
    const path = rawPath(target);
    try {
      const url = requestUrl(target, path);
      if ((url.pathname === '/healthz' || url.pathname === '/readyz' || url.pathname === '/metrics') && req.method !== 'GET' && req.method !== 'HEAD') {
        throw methodNotAllowed(req.method ?? '', 'GET, HEAD');
      }
      if (url.pathname === '/healthz') {
        sendJson(res, 200, { ok: true, nodeId: this.store.nodeId });
        return;
      }
      if (url.pathname === '/readyz') {
        const r = this.readiness();
        sendJson(res, r.ready ? 200 : 503, r);
        return;
      }
      if (url.pathname === '/metrics') {
        const text = await this.metrics.text();
        res.writeHead(200, { 'content-type': this.metrics.contentType, 'content-length': Buffer.byteLength(text) });
        res.end(text);
        return;
      }
      if (url.pathname === '/status' || url.pathname.startsWith('/api/')) {
        const credential = await this.authenticate(req);
        if (url.pathname === '/status') {
          if (req.method !== 'GET' && req.method !== 'HEAD') throw new HttpError(405, `${req.method} is not allowed here; use GET`, 'method-not-allowed', { allow: 'GET' });
          sendJson(res, 200, this.status());
          return;
        }
        if (url.pathname === '/api/replicas' || url.pathname.startsWith('/api/replicas/')) {
          if (!this.registry) {
            throw new HttpError(
              409,
              this.config.role === 'replica'
                ? 'replica credentials are issued by a master; run this against a master node'
                : 'this master has no --cluster-secret, from which replica credentials are derived; start it with one',
              'no-registry',
            );
          }
          await handleReplicas(this.registry, this.config.maxBody, req, res, url);
          return;
        }
        await handleAdmin({ store: this.store, writer: this.writer, maxBody: this.config.maxBody, principal: credential.user, credential, role: this.config.role, connected: (node) => this.replicator?.connectedTo(node) ?? false }, req, res, url);
        return;
      }
      if (this.xml.handles(url.pathname)) {
        await this.xml.handle(req, res, url);
        return;
      }
      throw new HttpError(404, `nothing at ${url.pathname}; try /objects/{type}/{id}, /status or /api/objects`, 'not-found');
    } catch (e) {
      // (a stream whose client went away, or was cut by the idle timeout: nobody to answer, nothing to log)
      if (res.destroyed && res.headersSent) return;
      const err = toHttpError(e);
      if (err.code === 'internal') this.log.error({ err: e, url: req.url, method: req.method }, 'request failed');
      sendError(res, err);
    } finally {
      // (a target refused as not a path is a request too: its surface is from the raw path)
      this.metrics.answered(surfaceOf(path), req.method ?? 'GET', res, started);
    }
  }

  /**
   * Ready to serve when caught up: no peer is more than --ready-lag changes
   * ahead of this node, and a replica holds a session with a master. A
   * master cut off from every peer stays ready: it keeps taking writes.
   */
  readiness(): { ready: boolean; reason: string | null; lag: { peer: string; entries: number; seconds: number }[] } {
    // (replicas a master serves say nothing about whether the master is caught up)
    const peers = (this.replicator?.status() ?? []).filter((p) => p.role !== 'replica');
    const lag = peers.filter((p) => p.state === 'live' || p.state === 'catching-up').map((p) => ({ peer: p.node ?? p.url ?? '?', entries: p.lagEntries, seconds: p.lagSeconds }));
    // a peer being dialed for the first time, or a session that has not said where the peer is, is unknown lag
    // (after a first failed attempt the dialer has a reason: an unreachable peer no longer holds readiness back).
    // A dialer closed as a duplicate reached its peer: the peer's own session to this node is still being set up,
    // and until it says where the peer is this node may be any distance behind (CI caught /readyz 200 while
    // 3,000 changes behind in that gap).
    const unknown = peers.filter(
      (p) =>
        (p.state === 'connecting' && p.lastContact === null && p.reason === null) ||
        ((p.state === 'live' || p.state === 'catching-up') && !p.synced) ||
        (p.reason === DUPLICATE_SESSION && p.state !== 'live' && p.state !== 'catching-up'),
    );
    if (unknown.length) return { ready: false, reason: `catching up: waiting to hear how far behind ${unknown.map((p) => p.node ?? p.url).join(', ')} this node is`, lag };
    const behind = lag.filter((l) => l.entries > this.config.readyLag);
    if (behind.length) {
      return { ready: false, reason: `catching up: ${behind.map((b) => `${b.entries} changes behind ${b.peer}`).join(', ')} (ready within ${this.config.readyLag})`, lag };
    }
    if (this.config.role === 'replica' && this.replicator!.replicaMode().mode === 'read-only') {
      return { ready: false, reason: this.replicator!.readOnlySentence(), lag };
    }
    return { ready: true, reason: null, lag };
  }

  private async authenticate(req: IncomingMessage): Promise<{ user: string; password: string }> {
    const cred = basicCredentials(req);
    if (cred && (await this.auth.check(cred.user, cred.password))) return cred;
    throw new HttpError(
      401,
      cred ? 'wrong user or password' : 'this needs the admin password: HTTP Basic auth as user "admin"',
      'unauthorized',
      { 'www-authenticate': 'Basic realm="meridian", charset="UTF-8"' },
    );
  }

  /** Keeps the changes feed at --feed-retention entries, checked every minute. */
  private scheduleTrim(): void {
    const keep = this.config.feedRetention;
    const trim = (): void => {
      // a replica sends a lost write again within its write timeout: a day is ample
      void this.store.trimIdempotency(Date.now() - IDEMPOTENCY_MS).catch((e: unknown) => this.log.warn({ err: (e as Error).message }, 'idempotency key trim failed'));
      if (keep <= 0) return;
      this.store.trimFeed(keep).then(
        (n) => n > 0 && this.log.info({ deleted: n, firstSeq: this.store.firstSeq() }, 'trimmed the changes feed'),
        (e: unknown) => this.log.warn({ err: (e as Error).message }, 'feed trim failed'),
      );
    };
    trim();
    this.trimTimer = setInterval(trim, 60_000);
    this.trimTimer.unref();
  }

  /** Stops accepting requests, lets in-flight writes reach the disk, closes the store. */
  stop(): Promise<void> {
    this.stopping ??= (async () => {
      clearInterval(this.trimTimer);
      const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
      this.server.closeIdleConnections();
      this.ldap?.stopAccepting();
      const forwarding = this.writer instanceof ForwardingWriter ? this.writer : undefined;
      // (within the 10 s a SIGTERM's sender, docker's for one, waits before SIGKILL)
      const force = setTimeout(
        () => {
          this.server.closeAllConnections();
          // (closeAllConnections does not see them, and server.close waits for them: an SSE stream would hold stop for good)
          for (const s of this.answeredAside) s.destroy();
        },
        forwarding ? this.writesGraceMs + 2000 : 5000,
      );
      // A replica's writes in flight wait for their master's answer and for the change to come back: its link
      // stays up while they do, for a while. Those still waiting for the answer then are answered 504 by the
      // closes below, naming the Idempotency-Key to send them again with; those whose change has not come back,
      // 504 saying the master made them.
      await forwarding?.settle(this.writesGraceMs);
      // (the answers given meanwhile left their connections kept alive, and idle now)
      this.server.closeIdleConnections();
      await this.ldap?.close();
      // (before the link closes: its close waits for the applies under way, and such a write waits for one)
      forwarding?.close();
      await this.replicator?.close();
      this.registry?.close();
      this.metrics.close();
      await closed;
      clearTimeout(force);
      await this.xml.close();
      await this.store.close();
      this.log.info({ nodeId: this.store.nodeId }, 'stopped');
    })();
    return this.stopping;
  }
}

function surfaceOf(path: string): Surface {
  if (path === '/healthz' || path === '/readyz' || path === '/metrics') return 'health';
  if (path === '/status') return 'status';
  if (path.startsWith('/api/')) return 'admin';
  return 'xml';
}

/**
 * What keeps a port from being listened on, in a sentence naming the
 * setting to change; other errors as they are.
 */
function listenFailure(e: unknown, port: number, host: string, flag: string): unknown {
  switch ((e as NodeJS.ErrnoException).code) {
    case 'EADDRINUSE':
      return new HttpError(503, `port ${port} on ${host} is already in use; choose another ${flag}`);
    case 'EACCES':
      return new HttpError(503, `port ${port} on ${host} needs privileges this process lacks; choose a port above 1023 for ${flag}`);
    case 'EADDRNOTAVAIL':
      return new HttpError(503, `--host ${host} is not an address of this machine; give one of its addresses, 0.0.0.0 for all, or 127.0.0.1`);
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
      return new HttpError(503, `--host ${host} does not resolve to an address${(e as NodeJS.ErrnoException).code === 'EAI_AGAIN' ? ' (the name service did not answer)' : ''}; give an address of this machine, 0.0.0.0 for all, or 127.0.0.1`);
    default:
      return e;
  }
}

/** The certificate and key of --tls-cert and --tls-key, checked to be a PEM certificate and its private key. */
function loadTls(config: NodeConfig): { cert: Buffer; key: Buffer } {
  const cert = readPem(config.tlsCert!, '--tls-cert');
  const key = readPem(config.tlsKey!, '--tls-key');
  try {
    createSecureContext({ cert, key });
  } catch (e) {
    throw new SettingError(`--tls-cert ${config.tlsCert} and --tls-key ${config.tlsKey} are not a PEM certificate and its private key (${(e as Error).message})`);
  }
  return { cert, key };
}

/** The schema file, or a SettingError saying why it cannot be used. */
function schemaOf(config: NodeConfig): ReturnType<typeof loadSchemaFile> {
  try {
    return loadSchemaFile(config.schema);
  } catch (e) {
    if (e instanceof MeridianError && e.code === 'bad-request') throw new SettingError(e.message);
    throw e;
  }
}

function readPem(path: string, flag: string): Buffer {
  try {
    return readFileSync(path);
  } catch (e) {
    throw new SettingError(`cannot read ${flag} file ${path}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
}

async function loadSample(store: Store, size: number): Promise<number> {
  const objects = generateSample({ size, password: 'meridian' });
  // Concurrent writes keep group commit busy, but an object may only be
  // written once everything it refers to is: write level by level.
  const level = new Map<string, number>();
  for (const o of objects) {
    let l = 0;
    for (const v of Object.values(o.fields)) {
      for (const one of Array.isArray(v) ? v : [v]) {
        const dep = typeof one === 'string' ? level.get(one) : undefined;
        if (dep !== undefined) l = Math.max(l, dep + 1);
      }
    }
    level.set(o.id, l);
  }
  const levels = [...new Set(level.values())].sort((a, b) => a - b);
  for (const l of levels) {
    const batch = objects.filter((o) => level.get(o.id) === l);
    for (let i = 0; i < batch.length; i += 256) {
      // (one that exists is of a load cut short, by Ctrl-C or a crash: its ids are fixed, and each create of them
      // was refused at every later start, so the node never started on that dir)
      await Promise.all(
        batch.slice(i, i + 256).map((o) =>
          store.create(o.type, o.fields, { id: o.id, principal: 'sample-loader' }).catch((e: unknown) => {
            if (!isMeridianError(e) || e.code !== 'exists') throw e;
          }),
        ),
      );
    }
  }
  return objects.length;
}

/**
 * Prepares a data dir without serving it: records the node id and the admin
 * password hash. Returns the generated password when none was given.
 */
export async function initDataDir(config: NodeConfig): Promise<{ nodeId: string; generatedPassword: string | undefined }> {
  const store = await Store.open({ dir: config.dir, schema: schemaOf(config), nodeId: config.nodeId });
  try {
    const auth = await AdminAuth.init(store, config.adminPassword);
    await auth.keepGenerated(store);
    return { nodeId: store.nodeId, generatedPassword: auth.generated };
  } finally {
    await store.close();
  }
}

/** A request target's path as sent, before parsing: of an absolute-form target, the part after the authority. */
function rawPath(target: string): string {
  return (target.startsWith('/') ? target : target.replace(/^https?:\/\/[^/?#]*/i, '') || '/').split('?')[0]!;
}

/**
 * The request target as a URL (`path`: its rawPath). Only a path (or a whole http URL) is one:
 * read relative to a base, `//x/metrics` was host x and path /metrics, and
 * URL parsing drops dot segments (`/a/%2e%2e/metrics` is /metrics), so a
 * proxy that passes on only some paths was passed by. A path that parsing
 * would change is refused. One that is not a path at all is the client's
 * error, not an internal one.
 */
function requestUrl(raw: string, path: string): URL {
  let url: URL | undefined;
  try {
    url = raw.startsWith('/') ? new URL(`http://node${raw}`) : /^https?:\/\//i.test(raw) ? new URL(raw) : undefined;
  } catch {
    url = undefined;
  }
  if (!url) throw new HttpError(400, 'the request target is not a valid path; send a path such as /objects/Person/per-1', 'bad-request');
  if (path !== url.pathname) throw new HttpError(400, `the request path ${JSON.stringify(path.slice(0, 100))} is not in normal form (no "." or ".." segments, special characters percent-encoded); send the path itself`, 'bad-request');
  return url;
}

/**
 * A socket Node handed to 'upgrade', answered outside the HTTP server: held
 * in `open` until it closes, so that stop() can end it (the server's own
 * closeAllConnections does not see it), and destroyed on an error, as Node
 * took its own error listener off it.
 */
function answeringAside(socket: Socket, open: Set<Socket>): void {
  socket.on('error', () => socket.destroy());
  open.add(socket);
  socket.once('close', () => open.delete(socket));
}

/**
 * Answers a WebSocket upgrade this node does not serve with 404 and closes
 * the connection. Node takes its error listener off a socket it hands to
 * 'upgrade': a client that reset the connection made the write's ECONNRESET
 * an uncaught error, which ended the process. And `end` alone half-closes:
 * a client that kept its side open held the node's stop for good.
 */
function refuseUpgrade(socket: Socket, why: string, open: Set<Socket>): void {
  answeringAside(socket, open);
  socket.end(`HTTP/1.1 404 Not Found\r\nconnection: close\r\ncontent-type: text/plain\r\ncontent-length: ${Buffer.byteLength(why)}\r\n\r\n${why}`, () => socket.destroy());
}

/**
 * Answers, in HTTP/1.1, a request Node took for an upgrade, on the socket
 * it handed over, then closes the connection (the parser is detached: a
 * next request on it could not be read). Its body cannot be read either, so
 * one that has a body is answered 400.
 */
function answerWithoutUpgrade(req: IncomingMessage, socket: Socket, handle: (req: IncomingMessage, res: ServerResponse) => Promise<void>, open: Set<Socket>, idleTimeout: number): void {
  answeringAside(socket, open);
  const res = new ServerResponse(req);
  res.shouldKeepAlive = false;
  res.assignSocket(socket);
  // (Node took its own timeout handler off the socket it handed over)
  closeStalledAside(socket, req, res, idleTimeout);
  res.once('finish', () => {
    res.detachSocket(socket);
    socket.end();
  });
  const chunked = req.headers['transfer-encoding'] !== undefined;
  const length = Number(req.headers['content-length'] ?? 0);
  if (chunked || length > 0) {
    sendError(res, new HttpError(400, 'this node does not switch protocols for a request with a body; send it again without an Upgrade header', 'bad-request'));
    return;
  }
  if (!req.readableEnded) req.push(null);
  void handle(req, res);
}

/** The node's key for sealing XML list cursors, made at its first start. */
async function cursorKey(store: Store): Promise<Buffer> {
  const kept = await store.getMeta<string>('xmlCursorKey');
  if (kept !== undefined) return Buffer.from(kept, 'base64');
  const key = randomBytes(32);
  await store.setMeta('xmlCursorKey', key.toString('base64'));
  return key;
}
