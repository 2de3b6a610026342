import { createHash, randomBytes } from 'node:crypto';
import type { Socket } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import ldap, { type LdapConnection, type LdapRequest, type Server } from 'ldapjs';
import { asSeenBy, authorizeWrite, isMeridianError, MAX_VALUES, verifyPassword, type AccessScope, needsUpgrade, principalName, readerKnowing, type Principal, type Store, type StoredObject, type Writer } from '@meridian/store';
import { entryBody, octets, Op, pagedValue, result, ResultCode, searchEntryHead, tlv } from './ber.js';
import { BindThrottle } from './bind-throttle.js';
import { EntryBuilder, entrySource, type Entry } from './entries.js';
import { attrKey, evaluate, filterAttributes, fold, FilterTooComplex, hasOptions, typesNamed, type FilterOptions } from './filter.js';
import { frameConnection, withoutControls, type ReadGate } from './framing.js';
import type { CheckedRequest } from './validate.js';
import { DirectoryIndex } from './directory-index.js';
import { DirectoryLayout, ENTITLEMENT_ATTR, ENTRY_OPERATIONAL, ID_ATTR, InvalidDn, isDn, shortened, type Location, type MappedType } from './layout.js';
import { SUBSCHEMA_DN, SUBSCHEMA_ENTRY, SUBSCHEMA_SOURCE } from './subschema.js';
import {
  ABANDON_REQUEST,
  controlsOf,
  decodeAbandon,
  decodeCompare,
  decodePaged,
  decodeSearch,
  ADD_REQUEST,
  DELETE_REQUEST,
  EXTENDED_REQUEST,
  extendedName,
  bindVersion,
  extendedValueProblem,
  notUtf8,
  PASSWORD_MODIFY,
  WHOAMI,
  isAnonymousBind,
  isSaslBind,
  messageIdOf,
  BIND_REQUEST,
  COMPARE_REQUEST,
  MODIFY_DN_REQUEST,
  MODIFY_REQUEST,
  PAGED_CONTROL as PAGED,
  requestDns,
  SEARCH_REQUEST,
  UNBIND_REQUEST,
  unknownModifyOperation,
  type CompareRequest,
  type SearchRequest,
} from './search-request.js';

const monotonic = (): number => performance.now();

/** most bytes of answers held for one connection before its search waits for the client to read */
const MAX_BUFFERED = 256 * 1024;
/**
 * Operations one connection may have running before its requests are read
 * no further (slapd's conn_max_pending is 100): with MAX_BUFFERED, what a
 * client that sends without reading can make the server hold.
 */
const MAX_IN_FLIGHT = 100;
/**
 * Bytes of search requests one connection may have running before its
 * requests are read no further. A search keeps its decoded filter until it
 * is answered, which a client that does not read can put off for good:
 * 100 searches of a megabyte each, their values expanded by folding (see
 * filter.ts), ran a node out of heap from a few anonymous connections.
 */
const MAX_HELD_BYTES = 4 * 1024 * 1024;
/** candidates whose entries a search reads at once, when the index has already matched them */
const READ_AHEAD = 64;
/** ... and when the entries must be read to be matched */
const READ_AHEAD_UNFILTERED = 16;
/** the controls a client may mark critical, by the operations we act on them for */
const SUPPORTED_CONTROLS: Readonly<Record<string, readonly number[]>> = { [PAGED]: [SEARCH_REQUEST] };
/** the extended operations answered here; ldapjs would answer any other itself */
const EXTENDED_OPERATIONS = [WHOAMI, PASSWORD_MODIFY];

export interface LdapLog {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
  error(obj: object, msg: string): void;
  debug(obj: object, msg: string): void;
}

export interface LdapGatewayOptions {
  /** the first wait of a name's failed binds, doubling up to 32 times it (250 ms: tests shorten it) */
  bindDelayMs?: number;
  store: Store;
  /** the write path: commits on a master, forwards to the master on a replica */
  writer: Writer;
  baseDn: string;
  /** checks a login name (a person's uid or mail, or "admin") and password */
  authenticate(user: string, password: string): Promise<Principal | undefined>;
  /** checks a person's password, the person already found (signed in under the login name `user`) */
  authenticatePerson(person: StoredObject, user: string, password: string): Promise<Principal | undefined>;
  scope(p: Principal): Promise<AccessScope>;
  /** what an anonymous client may do: nothing but read the root DSE and cn=Subschema (default), or read everything */
  anonymous?: 'none' | 'read';
  /** most entries one search returns to anyone but the admin (clients may ask for fewer) */
  sizeLimit?: number;
  /** most seconds one search runs */
  timeLimit?: number;
  /** largest request accepted, in bytes; a longer one closes the connection */
  maxRequest?: number;
  log: LdapLog;
  /** told of every request answered: operation, result code, seconds */
  observe?(op: string, code: number, seconds: number): void;
  /** classifies a write path error: a code (MeridianError codes, "read-only", "busy", ...) and its sentence */
  classify(e: unknown): { code: string; message: string };
  /** the clock, in ms, search time limits are kept by (tests move it on); monotonic by default, so a wall clock set back cannot stretch a limit */
  now?: () => number;
  /**
   * Seals paged results cookies (the node passes the XML gateway's cursor
   * seal): a cookie names where its search stopped in the index, whose
   * positions count entries of every tenant, so in the clear it would tell
   * a caller how many others there are. Without it, cookies are plain.
   */
  cookieSeal?: { seal(text: string): string; open(sealed: string): string | undefined };
}

/** A DN as the operations take it: a login DN has become its person's entry, or none. */
type Resolved = Exclude<Location, { kind: 'login' }>;

class LdapFailure extends Error {
  constructor(
    readonly code: number,
    message: string,
    readonly matchedDN = '',
  ) {
    super(message);
  }
}

/** What run() reads of a request, decoded by ldapjs or by search-request.ts. */
interface Request {
  readonly messageId: number;
  readonly protocolOp: number;
  readonly connection: Socket;
  readonly controls: readonly { readonly type: string; readonly criticality: boolean }[];
}

/**
 * A search an abandon request may stop: a flag, and what wakes the search
 * while it waits for the client to read. Not an AbortController: making one
 * per search was 2% of an equality search's CPU.
 */
interface Running {
  abandoned: boolean;
  wake: (() => void) | undefined;
}

interface Session {
  principal: Principal | undefined;
  dn: string;
  /** the password given at bind: a replica forwards writes with it, and the master checks it again */
  credential: { user: string; password: string } | undefined;
  scope: { seq: number; scope: AccessScope } | undefined;
  /** a bound person's entry version when last checked, and the store's feed position then */
  entry: { version: string; seq: number } | undefined;
  /**
   * A password a recheck of the entry accepts besides the session's own,
   * around the session's own password change: while the change is being
   * written, the new one (`adopt`: a session found so holds it from then
   * on); once the master made it and it has not come back to this replica,
   * the one it replaced (the session keeps the new one).
   */
  alsoAccepted?: { password: string; adopt: boolean } | undefined;
}

/** The requested attributes of a search, worked out once. */
interface Selection {
  allUser: boolean;
  allOperational: boolean;
  named: Set<string>;
  typesOnly: boolean;
  /** equal for selections that pick the same attributes */
  key: string;
}

/** attributes the directory makes, which slapd marks NO-USER-MODIFICATION (and the entitlements, worked out from licenses) */
const DIRECTORY_KEPT: ReadonlySet<string> = new Set([...ENTRY_OPERATIONAL, ...['creatorsName', 'modifiersName', 'subschemaSubentry', ENTITLEMENT_ATTR].map((a) => a.toLowerCase())]);

const MANAGED_ELSEWHERE =
  'entries are managed in Meridian, not over LDAP: create and delete objects through the XML gateway or "meridian put" and "meridian delete"; entries never move, their RDN is the object id';

/**
 * The LDAP gateway: a directory of persons and organisations read from the
 * object store, on ldapjs for the wire protocol. ldapjs's own matching,
 * attribute selection and error handling are not used (see DESIGN.md):
 * search requests are decoded here, and their filters evaluated here,
 * case-insensitively, from an in-memory index; entries are encoded here;
 * and every parser error is caught.
 */
export class LdapGateway {
  private readonly layout: DirectoryLayout;
  private readonly entries: EntryBuilder;
  private readonly index: DirectoryIndex;
  /** each connection's identity; a bind replaces it, so operations begun before keep theirs */
  private readonly sessions = new WeakMap<Socket, Session>();
  /** each connection's running searches, by message ID (an abandon request stops one), whatever identity began them */
  private readonly searches = new WeakMap<Socket, Map<number, Running>>();
  /** connections corked by write() until the next check phase */
  private readonly corked = new WeakSet<Socket>();
  /** per connection: operations running, the bytes of the searches among them, and the gate its requests are read through */
  private readonly inFlight = new WeakMap<Socket, { ops: number; bytes: number; held: boolean }>();
  private readonly gates = new WeakMap<Socket, ReadGate>();
  private readonly drains = new WeakMap<Socket, Promise<void>>();
  /** each cached entry's last encoding, with the selection it was made for */
  private readonly encoded = new WeakMap<Entry, { key: string; body: Buffer }>();
  private readonly servers: Server[] = [];
  /** the servers' closing, once stopAccepting began it */
  private closing: Promise<void> | undefined;
  private readonly sockets = new Set<Socket>();
  private readonly throttle: BindThrottle;
  private readonly sizeLimit: number;
  private readonly timeLimit: number;
  private readonly filterOptions: FilterOptions;

  constructor(private readonly opts: LdapGatewayOptions) {
    this.layout = new DirectoryLayout(opts.store.schema, opts.baseDn);
    this.entries = new EntryBuilder(this.layout, opts.store);
    this.index = new DirectoryIndex(
      this.layout,
      opts.store,
      (types, ids) => this.entries.changed(types, ids),
      (e) => opts.log.error({ err: e instanceof Error ? e.message : String(e) }, 'the LDAP directory index could not read the store; searches may miss recent changes'),
    );
    this.throttle = new BindThrottle({ baseMs: opts.bindDelayMs });
    this.sizeLimit = opts.sizeLimit ?? 500;
    this.timeLimit = opts.timeLimit ?? 60;
    this.filterOptions = { depth: 32, nodes: 512, known: (key) => this.layout.attributeTypes.has(key) };
  }

  /** Listens on a port: plain LDAP, or LDAPS with a certificate and key. */
  async listen(port: number, host: string, tls?: { cert: Buffer; key: Buffer }): Promise<number> {
    const quiet = { trace: () => {}, debug: () => {}, info: () => {}, warn: () => {}, error: () => {}, fatal: () => {}, child: () => quiet };
    let server!: Server;
    server = ldap.createServer({
      log: quiet,
      ...(tls ? { certificate: tls.cert, key: tls.key } : {}),
      connectionRouter: (socket) => this.accept(server, socket),
    });
    // ldapjs emits parser errors on the server; with no listener they would kill the process
    server.on('error', (e: Error) => this.opts.log.debug({ err: e.message }, 'LDAP request refused'));
    server.maxConnections = 10_000;
    const handler = (name: string, fn: (req: LdapRequest, s: Session) => Promise<Answer>) => (req: LdapRequest) => {
      void this.run(name, req, fn);
    };
    server.bind('', handler('bind', (req, s) => this.bind(req, s)));
    // searches never reach ldapjs (see search-request.ts)
    server.compare('', handler('compare', (req, s) => this.compare(req, s)));
    server.modify('', handler('modify', (req, s) => this.modify(req, s)));
    // (add, delete and modify DN never reach ldapjs: the framer refuses them)
    server.exop(WHOAMI, handler('whoami', (req, s) => this.whoami(req, s)));
    server.exop(PASSWORD_MODIFY, handler('passwd', (req, s) => this.passwordModify(req, s)));
    await new Promise<void>((resolve, reject) => {
      server.server.once('error', reject);
      server.listen(port, host, () => {
        server.server.off('error', reject);
        resolve();
      });
    });
    this.servers.push(server);
    const a = server.address();
    return typeof a === 'object' && a ? a.port : port;
  }

  /** Takes no more connections; those open go on until close(). */
  stopAccepting(): void {
    this.closing ??= Promise.all(this.servers.map((s) => new Promise<void>((r) => s.close(() => r())))).then(() => undefined);
  }

  async close(): Promise<void> {
    this.index.close();
    this.stopAccepting();
    for (const s of this.sockets) s.destroy();
    await this.closing;
  }

  private accept(server: Server, socket: Socket): void {
    this.sockets.add(socket);
    socket.once('close', () => this.sockets.delete(socket));
    socket.on('error', () => socket.destroy());
    // an idle client is dropped after ten minutes, as slapd's idletimeout would
    socket.setTimeout(10 * 60_000);
    // an answer is written as entries then a result: with Nagle the result
    // waited for the client's delayed ACK, about 40 ms per search
    socket.setNoDelay(true);
    server.newConnection(socket);
    const gate = frameConnection(
      socket as LdapConnection,
      this.opts.maxRequest ?? 1024 * 1024,
      (problem) => this.opts.log.info({ client: `${socket.remoteAddress}:${socket.remotePort}`, problem }, 'LDAP connection closed'),
      (message, checked) => {
        // Thunderbird abandons the search for what was typed before each new letter
        if (checked.op.tag === ABANDON_REQUEST) {
          const running = this.searches.get(socket)?.get(decodeAbandon(message, checked));
          if (running) {
            running.abandoned = true;
            running.wake?.();
          }
          return true;
        }
        // every bind starts anonymous (RFC 4513 section 5.1); ldapjs answers an anonymous
        // bind itself, without the bind handler, which would leave the last identity in place.
        // Operations still running keep the session they began with, so none of them can leave
        // its scope or identity on the new one; the searches stay abandonable (this.searches).
        if (checked.op.tag === BIND_REQUEST) this.sessions.delete(socket);
        // Controls are read here, for every operation, those ldapjs answers itself too (an anonymous
        // bind): one marked critical that is not supported is refused, any other ignored (RFC 4511
        // 4.1.11). ldapjs gets the request without them: it decodes those it knows by type, and threw
        // on some (a password policy request, which has no value), closing the connection unanswered.
        // (the paged results control on a compare or WhoAmI is not acted on: critical there, it is refused, as slapd does)
        const controls = controlsOf(message, checked.controls);
        const unsupported = controls.find((c) => c.criticality && !(Object.hasOwn(SUPPORTED_CONTROLS, c.type) && SUPPORTED_CONTROLS[c.type]!.includes(checked.op.tag)));
        if (unsupported && checked.op.tag !== UNBIND_REQUEST) {
          return this.refuse(socket, message, checked, ResultCode.unavailableCriticalExtension, `the critical control ${unsupported.type} is not supported here`);
        }
        if (checked.op.tag === SEARCH_REQUEST) {
          // (the search rechecks the bound entry itself, once an abandon can find it)
          void this.run('search', decodeSearch(message, checked, controls, socket, this.filterOptions), (req, s) => this.abandonable(req, s), false, message.length);
          return true;
        }
        // What ldapjs would answer itself, without our handlers, is answered here instead: through
        // run(), like every other answer, so that it counts in the connection's operations and waits
        // for a client that does not read. A stream of anonymous binds never read made 53 MiB of answers.
        // (slapd's answer to an LDAPv2 bind, which it takes only when configured to)
        const version = checked.op.tag === BIND_REQUEST ? bindVersion(message, checked) : 3;
        if (version !== 3) return this.refuse(socket, message, checked, ResultCode.protocolError, `LDAP version ${version} is not supported here; bind with LDAPv3 (ldapsearch -P 3)`);
        if (checked.op.tag === BIND_REQUEST && isAnonymousBind(checked)) return this.refuse(socket, message, checked, ResultCode.success, '');
        if (checked.op.tag === EXTENDED_REQUEST) {
          const name = extendedName(message, checked);
          if (!EXTENDED_OPERATIONS.includes(name)) {
            return this.refuse(socket, message, checked, ResultCode.protocolError, `the extended operation ${shortened(name)} is not supported here; WhoAmI and password modify are`);
          }
          const problem = extendedValueProblem(message, checked);
          if (problem) return this.refuse(socket, message, checked, ResultCode.protocolError, problem);
        }
        const garbled = notUtf8(message, checked);
        if (garbled) return this.refuse(socket, message, checked, garbled.code, garbled.text);
        for (const dn of requestDns(message, checked)) {
          // the empty DN is the root DSE's, which ldapjs cannot parse: it may be compared, and is not modified (slapd's answer)
          if (dn === '' && checked.op.tag === COMPARE_REQUEST) {
            void this.run('compare', decodeCompare(message, checked, socket), (req, s) => this.compare(req, s));
            return true;
          }
          if (dn === '' && checked.op.tag === MODIFY_REQUEST) return this.refuse(socket, message, checked, ResultCode.unwillingToPerform, 'only object entries can be modified; the root DSE is not one');
          if (!isDn(dn)) return this.refuse(socket, message, checked, ResultCode.invalidDNSyntax, `"${shortened(dn)}" is not a valid DN`);
        }
        // (refused whole here: ldapjs would parse a large add for nothing)
        if (checked.op.tag === ADD_REQUEST || checked.op.tag === DELETE_REQUEST || checked.op.tag === MODIFY_DN_REQUEST) {
          return this.refuse(socket, message, checked, ResultCode.unwillingToPerform, MANAGED_ELSEWHERE);
        }
        // ldapjs cannot parse a SASL bind and closed the connection without an answer
        if (checked.op.tag === BIND_REQUEST && isSaslBind(checked)) {
          return this.refuse(socket, message, checked, ResultCode.authMethodNotSupported, 'SASL binds are not supported here; bind with a name and password (a simple bind: ldapsearch -x)');
        }
        if (checked.op.tag === MODIFY_REQUEST) {
          const op = unknownModifyOperation(message, checked);
          if (op !== undefined) return this.refuse(socket, message, checked, ResultCode.protocolError, `modify operation ${op} is not supported here; use add (0), delete (1) or replace (2)`);
        }
        return checked.controls ? withoutControls(message, checked) : false;
      },
    );
    this.gates.set(socket, gate);
  }

  /**
   * Answers a request the framer takes before ldapjs sees it, through
   * run(), so that the answer counts in the connection's in-flight
   * operations and waits for a client that does not read, as every other
   * answer does (a stream of small refused requests must not fill the
   * server's memory with answers). Returns true: the request is dealt with.
   */
  private refuse(socket: Socket, message: Buffer, checked: CheckedRequest, code: number, text: string): true {
    const req: Request = { messageId: messageIdOf(message, checked), protocolOp: checked.op.tag, connection: socket, controls: [] };
    void this.run(OP_NAMES[checked.op.tag] ?? 'extended', req, async () => answer(req.messageId, RESPONSE_OP[req.protocolOp] ?? Op.extended, code, text), false);
    return true;
  }

  /**
   * When the connection has more than MAX_BUFFERED bytes of answers unread:
   * what write() gathered goes out (or no drain would come), and the wait
   * until the client has read them; else undefined.
   */
  private overBuffered(conn: Socket): Promise<void> | undefined {
    if (conn.destroyed || conn.writableLength <= MAX_BUFFERED) return undefined;
    this.flush(conn);
    return this.drained(conn);
  }

  /** Resolves once the connection's unread answers have gone out (drain) or it closed: one wait, shared by its operations. */
  private drained(conn: Socket): Promise<void> {
    let wait = this.drains.get(conn);
    if (!wait) {
      wait = new Promise<void>((resolve) => {
        const done = (): void => {
          conn.off('drain', done);
          conn.off('close', done);
          this.drains.delete(conn);
          resolve();
        };
        conn.on('drain', done);
        conn.on('close', done);
      });
      this.drains.set(conn, wait);
    }
    return wait;
  }

  private session(conn: Socket): Session {
    let s = this.sessions.get(conn);
    if (!s) {
      s = { principal: undefined, dn: '', credential: undefined, scope: undefined, entry: undefined };
      this.sessions.set(conn, s);
    }
    return s;
  }

  /** Runs one operation, answers it, and never lets its failure reach ldapjs (or the process). */
  private async run<R extends Request>(op: string, req: R, fn: (req: R, s: Session) => Promise<Answer>, recheck = true, bytes = 0): Promise<void> {
    const started = process.hrtime.bigint();
    const conn = req.connection;
    // Looked up once, before any await: an operation keeps the identity it came under,
    // however a bind that arrives while it runs changes the connection's.
    const s = this.session(conn);
    // A connection's requests are read only while it has fewer than MAX_IN_FLIGHT operations
    // running, and an operation whose answer finds MAX_BUFFERED bytes unread runs until the client
    // reads them: a client that pipelines requests without reading the answers (each small search
    // answered by a larger entry) holds its requests in its socket, not the server's memory, and
    // one that reads slowly still gets its abandons read while fewer are running. (The count is
    // raised before the framer hands on the next request: ldapjs calls its handlers at once.)
    let load = this.inFlight.get(conn);
    if (!load) this.inFlight.set(conn, (load = { ops: 0, bytes: 0, held: false }));
    load.ops++;
    load.bytes += bytes;
    this.gate(conn, load);
    let reply: Answer;
    try {
      // Every operation first checks that the bound entry still holds. (A bind's session is a new,
      // anonymous one already: the framer dropped the old one when the request came in.)
      const rechecked = recheck ? this.recheck(s) : undefined;
      if (rechecked) await rechecked;
      reply = await fn(req, s);
    } catch (e) {
      // (read after the awaits: the operation may have worked out the scope)
      const f = this.failure(asSeenBy(e, s.principal?.kind === 'admin' || s.scope?.scope.everything === true));
      reply = answer(req.messageId, RESPONSE_OP[req.protocolOp] ?? Op.extended, f.code, f.message, { matchedDN: f.matchedDN });
    }
    if (!conn.destroyed && reply !== NO_ANSWER) this.write(conn, reply.bytes);
    this.opts.observe?.(op, reply.code, Number(process.hrtime.bigint() - started) / 1e9);
    await this.overBuffered(conn);
    load.ops--;
    load.bytes -= bytes;
    this.gate(conn, load);
  }

  /** Holds a connection's requests unread while it has MAX_IN_FLIGHT operations or MAX_HELD_BYTES of searches running, and reads on below both. */
  private gate(conn: Socket, load: { ops: number; bytes: number; held: boolean }): void {
    const full = load.ops >= MAX_IN_FLIGHT || load.bytes >= MAX_HELD_BYTES;
    if (full === load.held) return;
    load.held = full;
    if (full) this.gates.get(conn)?.hold();
    else this.gates.get(conn)?.release();
  }

  /**
   * Writes to a connection, gathering what is written until the event
   * loop's next check phase into one `writev`: a search's entries and its
   * result mostly leave together (a write each was a third of the CPU of a
   * substring search), and nothing waits longer than one turn of the loop,
   * whatever else the connection is doing.
   */
  private write(conn: Socket, bytes: Buffer): void {
    if (!this.corked.has(conn)) {
      conn.cork();
      this.corked.add(conn);
      setImmediate(() => this.flush(conn));
    }
    conn.write(bytes);
  }

  /** Sends what write() gathered on the connection now. */
  private flush(conn: Socket): void {
    if (this.corked.delete(conn)) conn.uncork();
  }

  private failure(e: unknown): LdapFailure {
    if (e instanceof LdapFailure) return e;
    if (e instanceof InvalidDn) return new LdapFailure(ResultCode.invalidDNSyntax, e.message);
    if (e instanceof FilterTooComplex) return new LdapFailure(ResultCode.unwillingToPerform, e.message);
    const { code, message } = this.opts.classify(e);
    switch (code) {
      case 'validation':
      case 'bad-request':
        return new LdapFailure(ResultCode.constraintViolation, message);
      case 'not-found':
        return new LdapFailure(ResultCode.noSuchObject, message);
      case 'forbidden':
      case 'unauthorized':
        return new LdapFailure(ResultCode.insufficientAccessRights, message);
      case 'read-only':
        return new LdapFailure(ResultCode.unwillingToPerform, message);
      case 'busy':
        return new LdapFailure(ResultCode.busy, message);
      // (a write the master made but this replica does not hold yet is answered as made: see made())
      case 'precondition':
      case 'unconfirmed':
        return new LdapFailure(ResultCode.unavailable, message);
      case 'master-error':
        // the master refused for a reason this node has no code for (or failed inside): its sentence, not a
        // failure of this server's, but logged, as the master's own failure may be logged nowhere else
        this.opts.log.warn({ err: message }, 'the master refused a forwarded LDAP write');
        return new LdapFailure(ResultCode.other, message);
      default:
        this.opts.log.error({ err: e instanceof Error ? e.stack : String(e) }, 'LDAP request failed');
        return new LdapFailure(ResultCode.other, 'the request failed inside the server; its log has the details');
    }
  }

  // ---- bind ---------------------------------------------------------------

  private async bind(req: LdapRequest, s: Session): Promise<Answer> {
    // (s is anonymous until this succeeds: the framer dropped the session when the bind came)
    const id = req.messageId;
    const name = String(req.name ?? '');
    const password = req.credentials ?? '';
    if (password === '') {
      return answer(id, Op.bind, ResultCode.unwillingToPerform, 'a bind with a name and an empty password is unauthenticated and refused; give the password');
    }
    // throttled per account, not per spelling of its name: an entry DN, uid=, mail= and
    // escaped forms of one person count together; names that are no one count as written
    // the store's change mark before the entry is read: a change after it (a reset while the password is
    // checked) is then seen by the next operation's recheck, not taken as already looked at
    const seq = this.opts.store.changeMark;
    const target = await this.bindTarget(name);
    // (a name that is no one is kept as its hash: a client may send a megabyte of name per bind)
    const key = target === undefined ? `?${createHash('sha256').update(name.toLowerCase().replace(/\s+/g, '')).digest('base64')}` : target === 'admin' ? 'admin' : target.id;
    const conn = req.connection;
    const started = this.throttle.start(key, conn.remoteAddress ?? '');
    if (!started) return answer(id, Op.bind, ResultCode.busy, 'a bind for this name from your address is being checked already; wait for its answer, then try again');
    let who: Awaited<ReturnType<LdapGateway['checkBind']>>;
    try {
      if (started.wait > 0) {
        // a client that leaves while its bind waits takes the bind with it: no check, no failure counted
        if (conn.destroyed) return NO_ANSWER;
        const left = new AbortController();
        const leave = (): void => left.abort();
        conn.once('close', leave);
        try {
          await sleep(started.wait, undefined, { signal: left.signal });
        } catch {
          return NO_ANSWER;
        } finally {
          conn.off('close', leave);
        }
      }
      // (a name that is no one takes as long to refuse as a wrong password: its timing tells nothing)
      who = target ? await this.checkBind(target, password) : void (await this.opts.store.decoyPasswordCheck(password));
    } finally {
      started.done();
    }
    if (!who) {
      this.throttle.failed(key);
      this.opts.log.info({ bind: shortened(name) }, 'LDAP bind refused: wrong name or password');
      return answer(id, Op.bind, ResultCode.invalidCredentials, 'wrong name or password');
    }
    this.throttle.succeeded(key);
    Object.assign(s, { principal: who.principal, dn: who.dn, credential: { user: who.login, password }, scope: undefined, entry: target === 'admin' ? undefined : { version: target!.version, seq } });
    if (who.upgrade && target !== 'admin') this.upgrade(who.principal, who.login, password, target!.version);
    return answer(id, Op.bind, ResultCode.success, '');
  }

  /** Whom a bind name names: the admin, or a live person by entry DN, uid=/mail= DN or login; undefined for no one. */
  private async bindTarget(name: string): Promise<'admin' | StoredObject | undefined> {
    let resolved: { loc: Resolved; person?: StoredObject | undefined };
    try {
      resolved = await this.entryOfLogin(this.layout.locate(name));
    } catch {
      return undefined;
    }
    if (resolved.loc.kind === 'admin') return 'admin';
    // (a login name was looked up already: not read again)
    const person = resolved.person ?? (await this.personAt(resolved.loc));
    return person && !person.deleted ? person : undefined;
  }

  /** Whether the password is the bind target's: its principal, entry DN and login name if so. */
  private async checkBind(target: 'admin' | StoredObject, password: string): Promise<{ principal: Principal; dn: string; login: string; upgrade: boolean } | undefined> {
    if (target === 'admin') {
      const p = await this.opts.authenticate('admin', password);
      return p ? { principal: p, dn: this.layout.adminDn, login: 'admin', upgrade: false } : undefined;
    }
    const access = this.opts.store.schema.access;
    const person = target;
    if (!access) return undefined;
    // the person's own login name: what a master checks again for a write forwarded by a replica
    const login = access.login.map((f) => person.fields[f]).map((v) => (Array.isArray(v) ? v[0] : v)).find((v): v is string => typeof v === 'string');
    if (login === undefined) {
      // (no quicker than a wrong password: the answer must not tell that the entry exists)
      await this.opts.store.decoyPasswordCheck(password);
      return undefined;
    }
    const p = await this.opts.authenticatePerson(person, login, password);
    if (!p) return undefined;
    const hash = person.fields[access.passwordField];
    const t = this.layout.mappedType(person.type)!;
    return { principal: p, dn: this.layout.dnOf(t, person.id), login, upgrade: typeof hash === 'string' && needsUpgrade(hash) };
  }

  /**
   * An entry DN with its id as stored; a login DN (uid=...,ou=people,...) as the entry of the person it names,
   * so that a client may read, compare and modify the DN it bound as (the
   * PHP way: build the DN, bind, then read it); any other location as it is.
   * Whether the caller may read that entry is checked as for its own DN.
   * Every operation that names an entry resolves it here; for a login DN
   * the person found comes along, so that a bind does not read it again.
   */
  private async entryOfLogin(loc: Location): Promise<{ loc: Resolved; person?: StoredObject | undefined }> {
    // (an entry DN's id in another case names the same entry: meridianId matches as its filters do)
    if (loc.kind === 'entry') {
      let id = this.index.idInAnyCase(loc.type, loc.id);
      if (id === undefined && !this.index.built) {
        // Only while the index is first built (just after start): afterwards a miss is answered at once,
        // so an id that names no one costs no more than one that does. (One that could not be built
        // answers for no id: the DN is then taken as written.)
        await this.index.ready.catch(() => undefined);
        id = this.index.idInAnyCase(loc.type, loc.id);
      }
      return { loc: id === undefined || id === loc.id ? loc : { ...loc, id } };
    }
    if (loc.kind !== 'login') return { loc };
    const person = await this.personAt(loc);
    const t = person && !person.deleted ? this.layout.mappedType(person.type) : undefined;
    if (t) return { loc: { kind: 'entry', type: t, id: person!.id }, person };
    // (matched as for a person one may not read: the answer must not tell whether the name is someone's)
    const persons = this.layout.principal;
    return { loc: { kind: 'none', matched: persons ? this.layout.containerDn(persons) : this.layout.base } };
  }

  /** The person an entry DN or a login DN (uid=..., mail=...) names, if any. */
  private async personAt(loc: Location): Promise<StoredObject | undefined> {
    const access = this.opts.store.schema.access;
    if (!access) return undefined;
    if (loc.kind === 'entry') return loc.type.def.name === access.principalType ? this.opts.store.get(loc.id) : undefined;
    if (loc.kind === 'login') return (await this.opts.store.lookup(access.principalType, this.layout.loginAttrs.get(loc.attr)!, loc.value)).items[0];
    return undefined;
  }

  /**
   * Replaces an imported {SSHA} hash with scrypt once the password is
   * known (tried again at the next bind if it fails), over the entry
   * version whose hash the bind checked: a change of the password since
   * (the person's own, on this very connection, or an admin's reset) must
   * not be overwritten by the old password, hashed anew.
   */
  private upgrade(p: Principal, login: string, password: string, version: string): void {
    if (p.kind !== 'person') return;
    const field = this.opts.store.schema.access!.passwordField;
    // (one the master made and the replica does not hold yet is made: see made())
    this.made(() => this.opts.writer.update(p.id, { [field]: password }, { principal: principalName(p), via: 'ldap', credential: { user: login, password }, ifVersion: version })).then(
      () => this.opts.log.info({ person: p.id }, 'upgraded an imported {SSHA} password hash to scrypt'),
      (e: unknown) => {
        if (isMeridianError(e) && e.code === 'precondition') return this.opts.log.info({ person: p.id }, 'left an {SSHA} password hash as it is: the entry changed since the bind checked it');
        this.opts.log.warn({ person: p.id, err: this.opts.classify(e).message }, 'could not upgrade an {SSHA} password hash; trying again at the next bind');
      },
    );
  }

  // ---- search -------------------------------------------------------------

  /**
   * A bound person stays bound only as long as the entry still says so:
   * once it changed (deleted, password reset, roles changed) the password
   * given at bind is checked against it again, and the session is unbound
   * if it fails, so a reset password or a removed role takes effect on open
   * connections too, as it does on the XML gateway. Checked only when the
   * store has changed since the last look.
   */
  private recheck(s: Session): Promise<void> | undefined {
    // (not async: most operations find nothing changed, and should not wait a turn for that)
    if (s.principal?.kind !== 'person' || !s.entry || s.entry.seq === this.opts.store.changeMark) return undefined;
    return this.recheckEntry(s, s.principal.id, s.entry);
  }

  private async recheckEntry(s: Session, id: string, bound: NonNullable<Session['entry']>): Promise<void> {
    const seq = this.opts.store.changeMark;
    const entry = await this.opts.store.get(id);
    if (entry && !entry.deleted && entry.version === bound.version) {
      bound.seq = seq;
      return;
    }
    const live = entry && !entry.deleted ? entry : undefined;
    let password = s.credential?.password;
    let who = live && password !== undefined ? await this.checkBind(live, password) : undefined;
    const also = s.alsoAccepted;
    // (the session's own password change: still being written, the entry has the new one; made and not
    // back here yet, the one it replaced)
    if (!who && live && also && (also.adopt || password !== undefined)) {
      who = await this.checkBind(live, also.password);
      if (who && also.adopt) password = also.password;
    } else if (who && also && !also.adopt) s.alsoAccepted = undefined;
    if (!who || password === undefined) {
      Object.assign(s, { principal: undefined, dn: '', credential: undefined, scope: undefined, entry: undefined, alsoAccepted: undefined });
      throw new LdapFailure(ResultCode.invalidCredentials, 'your entry was deleted or its password changed since you bound; bind again');
    }
    // the login may have been renamed: a replica forwards writes under the name the entry has now
    Object.assign(s, { principal: who.principal, dn: who.dn, credential: { user: who.login, password }, scope: undefined, entry: { version: live!.version, seq } });
  }

  /** What the session may read: everything (anonymous under the read policy), or its principal's scope. */
  private async scopeOf(s: Session): Promise<AccessScope | 'everything'> {
    if (!s.principal) {
      if (this.opts.anonymous === 'read') return 'everything';
      throw new LdapFailure(ResultCode.insufficientAccessRights, 'anonymous clients may read only the root DSE and cn=Subschema here; bind with your DN or uid and password (ldapsearch -x -D ... -W)');
    }
    return this.principalScope(s, s.principal);
  }

  /** The principal's scope, worked out again whenever the store has changed. */
  private async principalScope(s: Session, p: Principal): Promise<AccessScope> {
    const seq = this.opts.store.changeMark;
    if (s.scope && s.scope.seq === seq) return s.scope.scope;
    const scope = await this.opts.scope(p);
    s.scope = { seq, scope };
    return scope;
  }

  /** A search that an abandon request stops where it is; it is then not answered (RFC 4511 section 4.11). */
  private async abandonable(req: SearchRequest, s: Session): Promise<Answer> {
    let running = this.searches.get(req.connection);
    if (!running) this.searches.set(req.connection, (running = new Map()));
    const id = req.messageId;
    const search: Running = { abandoned: false, wake: undefined };
    // a client that reuses the ID of a running search cannot abandon the first one any more
    running.set(id, search);
    try {
      // An abandon may come at any await (the bound entry's recheck, the scope, the index, a batch of
      // reads), not only while entries are sent: whatever the search would end with, an abandoned
      // one ends unanswered.
      const rechecked = this.recheck(s);
      if (rechecked) await rechecked;
      const answer = await this.search(req, search, s);
      return search.abandoned ? NO_ANSWER : answer;
    } catch (e) {
      if (search.abandoned) return NO_ANSWER;
      throw e;
    } finally {
      if (running.get(id) === search) running.delete(id);
    }
  }

  private async search(req: SearchRequest, running: Running, s: Session): Promise<Answer> {
    const now = this.opts.now ?? monotonic;
    const started = now();
    const id = req.messageId;
    const conn = req.connection;
    const base = req.baseObject;
    // children (3): the subordinate subtree, everything under the base but the base itself (slapd, ldapsearch -s children)
    const scopeName = (['base', 'one', 'sub', 'children'] as const)[req.scope];
    if (!scopeName) throw new LdapFailure(ResultCode.protocolError, `the search scope ${req.scope} is not base (0), one (1), sub (2) or children (3)`);
    const withBase = scopeName === 'base' || scopeName === 'sub';
    const withChildren = scopeName !== 'base';
    const withDeeper = scopeName === 'sub' || scopeName === 'children';
    if (req.sizeLimit < 0 || req.timeLimit < 0) throw new LdapFailure(ResultCode.protocolError, 'a search size or time limit is negative; give 0 for none');
    const filter = req.filter;
    if (filter instanceof FilterTooComplex) throw filter;
    const selection = select(req.attributes, req.typesOnly);
    const { loc } = await this.entryOfLogin(this.layout.locate(base));
    if (loc.kind === 'root') {
      if (scopeName !== 'base') throw new LdapFailure(ResultCode.noSuchObject, `there is no entry above the naming context; search under ${this.layout.base}`);
      const root = this.rootDse();
      // the root DSE's attributes are operational in slapd, which `+` returns; here `*` returns them too
      // (built anew for every search: its encoding is not kept, so the selection needs no key of its own)
      const rootSelection = selection.allOperational ? { ...selection, allUser: true } : selection;
      if (evaluate(filter, entrySource(root)) === true) this.writeEntry(conn, id, root, rootSelection);
      return answer(id, Op.searchDone, ResultCode.success, '');
    }
    if (loc.kind === 'subschema') {
      // (read by anyone, as the root DSE is; its definitions are operational, returned for + or by name)
      if (scopeName !== 'base') throw new LdapFailure(ResultCode.noSuchObject, `there is no entry below ${SUBSCHEMA_DN}; read it with a base-scope search`);
      if (evaluate(filter, SUBSCHEMA_SOURCE) === true) this.writeEntry(conn, id, SUBSCHEMA_ENTRY, selection);
      return answer(id, Op.searchDone, ResultCode.success, '');
    }
    const scope = await this.scopeOf(s);
    if (loc.kind === 'none' || loc.kind === 'admin') {
      throw new LdapFailure(ResultCode.noSuchObject, `there is no entry ${base}`, loc.kind === 'none' ? loc.matched : this.layout.base);
    }
    await this.index.ready;
    await this.index.settled();
    const unlimited = s.principal?.kind === 'admin';
    const pagedControl = req.controls.find((c) => c.type === PAGED);
    const decodedPaged = pagedControl && decodePaged(pagedControl.value);
    if (pagedControl && !decodedPaged) throw new LdapFailure(ResultCode.protocolError, "the paged results control's value is not a page size and a cookie (RFC 2696)");
    // A page at least as large as the client's size limit: the control is ignored, and the search is
    // answered in one go up to that limit (RFC 2696 section 3; slapd does so). It was answered in
    // pages with no limit at all: a client asking for 3 entries, 10 a page, got the whole directory.
    const paged = decodedPaged && !(req.sizeLimit > 0 && decodedPaged.size >= req.sizeLimit) ? decodedPaged : undefined;
    const timeLimit = Math.min(req.timeLimit || Infinity, unlimited ? Infinity : this.timeLimit) * 1000;
    const pageSize = paged ? Math.min(paged.size || 0, unlimited ? Infinity : this.sizeLimit) : Infinity;
    // ties a paged results cookie to its search; only paged searches pay for it
    const fingerprint = paged ? createHash('sha1').update(`${base}\0${scopeName}\0${JSON.stringify(filter)}\0${s.dn}`).digest('base64url').slice(0, 12) : '';
    // where the last page ended, and how many entries the pages before sent in all
    let resume = { step: 0, slot: -1, total: 0 };
    if (paged && paged.cookie.length > 0) {
      const text = this.opts.cookieSeal ? this.opts.cookieSeal.open(paged.cookie.toString('latin1')) : paged.cookie.toString('latin1');
      const m = text === undefined ? null : /^([\w-]{12}):(\d+):(-?\d+):(\d+)$/.exec(text);
      if (!m || m[1] !== fingerprint) throw new LdapFailure(ResultCode.unwillingToPerform, 'the paged results cookie belongs to another search; start again without a cookie');
      resume = { step: Number(m[2]), slot: Number(m[3]), total: Number(m[4]) };
    }
    // a paged search's pages are each up to the server's limit; the client's limit holds for all its pages together
    const clientLimit = req.sizeLimit || Infinity;
    const sizeLimit = paged ? clientLimit - resume.total : Math.min(clientLimit, unlimited ? Infinity : this.sizeLimit);
    const sizeLimitShown = paged ? clientLimit : sizeLimit;
    if (paged && paged.size === 0) {
      // size 0 abandons a paged search (RFC 2696)
      return answer(id, Op.searchDone, ResultCode.success, '', { controls: [{ oid: PAGED, value: pagedValue(0, Buffer.alloc(0)) }] });
    }

    // what the scope covers: fixed entries, then whole types, then one object
    const steps: ({ kind: 'entry'; entry: Entry } | { kind: 'type'; type: MappedType })[] = [];
    if (loc.kind === 'base') {
      if (withBase) steps.push({ kind: 'entry', entry: this.entries.base() });
      if (withChildren) for (const t of this.layout.types.values()) steps.push({ kind: 'entry', entry: this.entries.container(t) });
      if (withDeeper) for (const t of this.layout.types.values()) steps.push({ kind: 'type', type: t });
    } else if (loc.kind === 'container') {
      if (withBase) steps.push({ kind: 'entry', entry: this.entries.container(loc.type) });
      if (withChildren) steps.push({ kind: 'type', type: loc.type });
    } else {
      const entry = await this.readableEntry(loc.type, loc.id, scope);
      if (!entry) throw new LdapFailure(ResultCode.noSuchObject, `there is no entry ${base}`, this.layout.containerDn(loc.type));
      // (an object's entry is a leaf)
      if (withBase) steps.push({ kind: 'entry', entry });
    }

    let sent = 0;
    let checked = 0;
    const reads = filterAttributes(filter);
    const deadline = started + timeLimit;
    /** where the next page resumes (after slot `slot` of step `step`) and how many entries all pages have sent, sealed */
    const cookie = (step: number, slot: number): string => {
      const text = `${fingerprint}:${step}:${slot}:${resume.total + sent}`;
      return this.opts.cookieSeal ? this.opts.cookieSeal.seal(text) : text;
    };
    const done = (code: number, message: string, next = ''): Answer =>
      answer(id, Op.searchDone, code, message, paged ? { controls: [{ oid: PAGED, value: pagedValue(0, Buffer.from(next, 'latin1')) }] } : {});
    /** sends one entry; anything but 'go' stops the search (size limit, client gone, time limit) */
    const send = async (entry: Entry): Promise<'go' | 'size' | 'gone' | 'time' | 'abandoned'> => {
      if (running.abandoned) return 'abandoned';
      if (sent >= sizeLimit) return 'size';
      if (conn.destroyed) return 'gone';
      sent++;
      this.writeEntry(conn, id, entry, selection);
      // a slow reader holds the search, not the server's memory, and only until the time limit.
      // Not at the socket's high-water mark (16 KiB): a 100-entry answer passed it every time, and
      // waiting for its drain was a tenth of a Thunderbird search's CPU
      const drained = this.overBuffered(conn);
      if (drained) {
        const stop = new AbortController();
        const waits = [drained, new Promise<void>((r) => (running.wake = r))];
        if (Number.isFinite(deadline)) waits.push(sleep(Math.max(0, deadline - now()), undefined, { signal: stop.signal }).catch(() => undefined));
        await Promise.race(waits);
        // (the timer that lost is cleared; the shared drain wait ends with the drain or the close)
        stop.abort();
        running.wake = undefined;
      }
      if (conn.destroyed) return 'gone';
      if (running.abandoned) return 'abandoned';
      return now() > deadline ? 'time' : 'go';
    };
    const stopped = (r: 'size' | 'gone' | 'time' | 'abandoned'): Answer => {
      switch (r) {
        case 'abandoned':
          return NO_ANSWER;
        case 'size':
          return done(ResultCode.sizeLimitExceeded, `more than ${sizeLimitShown} entries match; narrow the filter${paged ? '' : ' or use paged results'}`);
        case 'time':
          return done(ResultCode.timeLimitExceeded, `the search ran past its time limit of ${timeLimit / 1000} s; narrow the filter`);
        case 'gone':
          return done(ResultCode.other, 'client gone');
      }
    };
    for (let step = resume.step; step < steps.length; step++) {
      const st = steps[step]!;
      if (st.kind === 'entry') {
        if (evaluate(filter, entrySource(st.entry)) !== true) continue;
        if (sent >= pageSize) return done(ResultCode.success, '', cookie(step, -1));
        const r = await send(st.entry);
        if (r !== 'go') return stopped(r);
        continue;
      }
      const t = st.type;
      const inMemory = this.index.answers(reads, t);
      let previous = step === resume.step ? resume.slot : -1;
      // The next page resumes after the last entry this one sent: a cookie naming a candidate the
      // caller cannot read (or one the filter turned down) would tell whether such an entry lies
      // there, and so let a caller test filters against entries it may not see.
      let lastSent = previous;
      const candidates = this.index.candidates(filter, t, previous);
      for (;;) {
        // The next candidates are read together: one at a time, a search of cache misses
        // waited for a thread-pool round trip per entry, and its p99 doubled. When the index
        // answers the filter, no more are read than the search can still send (and one to
        // tell a size limit from the end); otherwise up to a few, as any may fail the filter.
        const room = Math.max(1, Math.min(sizeLimit, pageSize) - sent + 1);
        const want = Math.min(inMemory ? READ_AHEAD : READ_AHEAD_UNFILTERED, room);
        const batch: number[] = [];
        while (batch.length < want) {
          const next = candidates.next();
          if (next.done) break;
          const slot = next.value;
          batch.push(slot);
          previous = slot;
          if (++checked % 512 === 0) {
            if (now() > deadline) return stopped('time');
            // long scans let other clients in
            await new Promise<void>((r) => setImmediate(r));
            if (running.abandoned) return stopped('abandoned');
          }
          if (inMemory && evaluate(filter, this.index.source(slot, t)) !== true) batch.pop();
        }
        if (batch.length === 0) break;
        const entries = await Promise.all(batch.map((slot) => this.readableEntry(t, this.index.idOf(slot), scope)));
        for (const [i, entry] of entries.entries()) {
          if (!entry) continue;
          if (!inMemory && evaluate(filter, entrySource(entry)) !== true) continue;
          if (sent >= pageSize) return done(ResultCode.success, '', cookie(step, lastSent));
          const r = await send(entry);
          if (r !== 'go') return stopped(r);
          lastSent = batch[i]!;
        }
      }
    }
    return done(ResultCode.success, '');
  }

  /**
   * The object's entry if it is live, of the type, and the scope may read
   * it (the cached entry when there is one).
   */
  private async readableEntry(t: MappedType, id: string, scope: AccessScope | 'everything'): Promise<Entry | undefined> {
    const e = await this.entries.entry(t, id);
    return e && this.mayRead(t, e.object, scope) ? e.entry : undefined;
  }

  /** The object if it is live, of the type, and the scope may read it. */
  private async readable(t: MappedType, id: string, scope: AccessScope | 'everything'): Promise<StoredObject | undefined> {
    const o = await this.opts.store.get(id);
    return o && this.mayRead(t, o, scope) ? o : undefined;
  }

  private mayRead(t: MappedType, o: StoredObject, scope: AccessScope | 'everything'): boolean {
    return !o.deleted && o.type === t.def.name && (scope === 'everything' || scope.canRead(o));
  }

  private rootDse(): Entry {
    const attrs = new Map<string, { name: string; values: string[]; operational: boolean }>();
    const add = (name: string, values: string[]): void => void attrs.set(attrKey(name), { name, values, operational: false });
    add('objectClass', ['top', 'extensibleObject']);
    add('namingContexts', [this.layout.base]);
    add('supportedLDAPVersion', ['3']);
    add('supportedControl', [PAGED]);
    add('supportedExtension', EXTENDED_OPERATIONS);
    add('supportedFeatures', ['1.3.6.1.4.1.4203.1.5.1', '1.3.6.1.4.1.4203.1.5.3']);
    add('vendorName', ['Meridian']);
    add('subschemaSubentry', [SUBSCHEMA_DN]);
    return { dn: '', attrs };
  }

  /** The entry a DN names if anyone may read it (the root DSE, the subschema subentry); undefined for any other or no DN. */
  private openEntry(dn: string): Entry | undefined {
    let loc: Location;
    try {
      loc = this.layout.locate(dn);
    } catch (e) {
      if (e instanceof InvalidDn) return undefined;
      throw e;
    }
    return loc.kind === 'root' ? this.rootDse() : loc.kind === 'subschema' ? SUBSCHEMA_ENTRY : undefined;
  }

  /** Writes an entry as a SearchResultEntry with the selected attributes. */
  private writeEntry(conn: Socket, messageId: number, entry: Entry, sel: Selection): void {
    // an entry is immutable and cached, and one client asks for the same attributes every time
    const known = this.encoded.get(entry);
    let body = known?.key === sel.key ? known.body : undefined;
    if (!body) {
      const attrs: { name: string; values: readonly string[] }[] = [];
      for (const [key, a] of entry.attrs) {
        const wanted = a.operational ? sel.allOperational || sel.named.has(key) : sel.allUser || sel.named.has(key);
        if (wanted) attrs.push({ name: a.name, values: sel.typesOnly ? [] : a.values });
      }
      body = entryBody(entry.dn, attrs);
      this.encoded.set(entry, { key: sel.key, body });
    }
    this.write(conn, searchEntryHead(messageId, body));
    this.write(conn, body);
  }

  // ---- compare ------------------------------------------------------------

  private async compare(req: CompareRequest, s: Session): Promise<Answer> {
    const dn = String(req.entry ?? '');
    // the root DSE and the subschema subentry: anyone may compare what anyone may search
    const open = this.openEntry(dn);
    const scope = open ? 'everything' : await this.scopeOf(s);
    const loc = open ? undefined : (await this.entryOfLogin(this.layout.locate(dn))).loc;
    const key = attrKey(req.attribute ?? '');
    if (key === 'userpassword') throw new LdapFailure(ResultCode.insufficientAccessRights, 'passwords cannot be compared; check one with a bind');
    // (before the entry is looked for, as slapd does: the answer tells nothing of whether it exists)
    if (!this.layout.attributeTypes.has(key)) throw new LdapFailure(ResultCode.undefinedAttributeType, `${req.attribute ?? ''} is not an attribute type of this directory`);
    let entry: Entry | undefined = open;
    if (loc?.kind === 'entry') {
      entry = await this.readableEntry(loc.type, loc.id, scope);
    } else if (loc?.kind === 'base') entry = this.entries.base();
    else if (loc?.kind === 'container') entry = this.entries.container(loc.type);
    if (!entry) {
      // with the matched DN a search of the same base answers (slapd's compare gives it too)
      const matched = loc?.kind === 'none' ? loc.matched : loc?.kind === 'entry' ? this.layout.containerDn(loc.type) : loc?.kind === 'admin' ? this.layout.base : undefined;
      throw new LdapFailure(ResultCode.noSuchObject, `there is no entry ${dn}`, matched);
    }
    // (tagged values, which a description with options names, are none: `name` compares its subtypes)
    const source = entry === SUBSCHEMA_ENTRY ? SUBSCHEMA_SOURCE : entrySource(entry);
    const held = typesNamed(req.attribute ?? '').flatMap((t) => {
      const values = source.values(t);
      return values ? [{ t, values }] : [];
    });
    if (held.length === 0) throw new LdapFailure(ResultCode.noSuchAttribute, `${dn} has no ${req.attribute}`);
    // (the types held fold alike: one, or name's subtypes, none of them a telephone number)
    const value = fold(held[0]!.t, String(req.value ?? ''));
    const match = held.some((h) => h.values.includes(value));
    return answer(req.messageId, Op.compare, match ? ResultCode.compareTrue : ResultCode.compareFalse, '');
  }

  // ---- modify -------------------------------------------------------------

  /**
   * Why an attribute no field of the entry's type maps cannot be modified,
   * with slapd's result code: the RDN's attribute is notAllowedOnRDN (67),
   * one the directory keeps (timestamps, entryUUID) constraintViolation (19,
   * slapd's "no user modification"), another type the directory knows
   * objectClassViolation (65: the entry's classes do not hold it here), and
   * a type it does not know undefinedAttributeType (17).
   */
  private notModifiable(key: string, description: string, t: MappedType): LdapFailure {
    const name = shortened(description);
    if (key === attrKey(ID_ATTR)) return new LdapFailure(ResultCode.notAllowedOnRDN, `${name} is the entry's RDN, the object id, which never changes`);
    if (DIRECTORY_KEPT.has(key)) return new LdapFailure(ResultCode.constraintViolation, `${name} is kept by the directory; no one modifies it`);
    if (this.layout.attributeTypes.has(key)) return new LdapFailure(ResultCode.objectClassViolation, `${name} cannot be changed over LDAP: it is not one of the attributes of a ${t.def.name}`);
    return new LdapFailure(ResultCode.undefinedAttributeType, `${name} is not an attribute type of this directory`);
  }

  private async modify(req: LdapRequest, s: Session): Promise<Answer> {
    if (!s.principal) throw new LdapFailure(ResultCode.insufficientAccessRights, 'bind first: anonymous clients cannot modify entries');
    const dn = String(req.object ?? '');
    const { loc } = await this.entryOfLogin(this.layout.locate(dn));
    // (a login DN that names no one among them: answered as one naming someone the caller may not read)
    if (loc.kind === 'none') throw new LdapFailure(ResultCode.noSuchObject, `there is no entry ${dn}`, loc.matched);
    if (loc.kind === 'subschema') throw new LdapFailure(ResultCode.unwillingToPerform, "the subschema subentry cannot be modified over LDAP: the directory's schema comes from the node's schema file");
    if (loc.kind !== 'entry') throw new LdapFailure(ResultCode.unwillingToPerform, `only object entries can be modified; ${dn} is not one`);
    const t = loc.type;
    const scope = await this.principalScope(s, s.principal);
    const o = await this.readable(t, loc.id, scope);
    if (!o) throw new LdapFailure(ResultCode.noSuchObject, `there is no entry ${dn}`, this.layout.containerDn(t));
    const update: Record<string, unknown> = {};
    // (as an earlier change of this request left it: a single-valued field's one value is kept bare, not in a list)
    const current = (field: string): string[] => {
      const v = field in update ? update[field] : o.fields[field];
      return v === undefined || v === null ? [] : (Array.isArray(v) ? v : [v]).map(String);
    };
    /** a `delete: userPassword` by value: the value the password must be */
    let passwordGiven: { attr: string; values: string[]; stored: string } | undefined;
    /** a `delete: userPassword` of an entry that has none */
    let passwordAbsent: string | undefined;
    for (const change of req.changes ?? []) {
      const mod = change.modification;
      const key = attrKey(mod.type);
      const target = t.attributes.get(key);
      // (an unknown type is that first, as slapd answers it, whatever its options)
      if (target && hasOptions(mod.type)) {
        throw new LdapFailure(ResultCode.unwillingToPerform, `${shortened(mod.type)}: attribute options such as ;lang-en are not supported here; change the attribute without them`);
      }
      if (!target) throw this.notModifiable(key, mod.type, t);
      if (target.field.kind === 'ref') {
        throw new LdapFailure(ResultCode.unwillingToPerform, `${mod.type} shows another object (${target.field.to}); change the reference through the XML gateway`);
      }
      const f = target.field;
      const values = (mod.values ?? []).map(String);
      // (RFC 4511 4.6: an add needs values; one value twice in a request is refused, as slapd does)
      if (change.operation === 'add' && values.length === 0) throw new LdapFailure(ResultCode.protocolError, `an add of ${mod.type} needs at least one value`);
      // (counted before any work, and each value folded once: a check per pair of 16,000 values held the node 19 s)
      if (values.length > MAX_VALUES) throw new LdapFailure(ResultCode.constraintViolation, `${mod.type}: more than ${MAX_VALUES} values in one change`);
      const folded = values.map((v) => fold(key, v));
      const twice = f.kind === 'password' ? -1 : firstRepeat(folded);
      if (twice >= 0) throw new LdapFailure(ResultCode.attributeOrValueExists, `${mod.type}: value #${twice} is given more than once`);
      let next: string[];
      switch (change.operation) {
        case 'replace':
          next = values;
          break;
        case 'add': {
          const have = current(f.name);
          // (counted with what the entry and earlier changes of this request hold: many adds of a
          // thousand values each rebuilt ever larger sets)
          if (f.kind !== 'password' && have.length + values.length > MAX_VALUES) throw new LdapFailure(ResultCode.constraintViolation, `${mod.type}: more than ${MAX_VALUES} values`);
          const held = new Set(have.map((h) => fold(key, h)));
          const dup = values.find((_, i) => held.has(folded[i]!));
          if (dup !== undefined && f.kind !== 'password') throw new LdapFailure(ResultCode.attributeOrValueExists, `${mod.type} already holds "${dup}"`);
          next = f.kind === 'password' ? values : [...have, ...values];
          break;
        }
        case 'delete': {
          const have = current(f.name);
          // (RFC 4511 4.6: deleting what the entry does not hold is noSuchAttribute, as slapd answers;
          // for the password only once the write is allowed, or it told whether one is set)
          if (have.length === 0 && f.kind === 'password') passwordAbsent = mod.type;
          else if (have.length === 0) throw new LdapFailure(ResultCode.noSuchAttribute, `${mod.type} is not set on this entry`);
          if (values.length === 0 || have.length === 0) next = [];
          else if (f.kind === 'password') {
            // compared only once the write is allowed (below): before, it told anyone who may read
            // the entry whether a guess was its password, unthrottled
            passwordGiven = { attr: mod.type, values, stored: have[0]! };
            next = [];
          } else {
            const held = new Set(have.map((h) => fold(key, h)));
            const missing = values.find((_, i) => !held.has(folded[i]!));
            if (missing !== undefined) throw new LdapFailure(ResultCode.noSuchAttribute, `${mod.type} does not hold "${missing}"`);
            const gone = new Set(folded);
            next = have.filter((h) => !gone.has(fold(key, h)));
          }
          break;
        }
        default:
          throw new LdapFailure(ResultCode.protocolError, `unknown modify operation ${String(change.operation)}`);
      }
      if (!f.multi && next.length > 1) throw new LdapFailure(ResultCode.constraintViolation, `${mod.type} holds one value on a ${t.def.name}`);
      update[f.name] = next.length === 0 ? null : f.multi ? next : next[0];
    }
    if (Object.keys(update).length === 0) return answer(req.messageId, Op.modify, ResultCode.success, '');
    const pw = this.opts.store.schema.access?.passwordField;
    await authorizeWrite(scope, readerKnowing(o, (x) => this.opts.store.get(x)), 'update', o.id, t.def.name, update);
    if (passwordAbsent !== undefined) throw new LdapFailure(ResultCode.noSuchAttribute, `${passwordAbsent} is not set on this entry`);
    if (passwordGiven) {
      const { attr, values, stored } = passwordGiven;
      if (values.length > 1) throw new LdapFailure(ResultCode.noSuchAttribute, `${attr} holds one value`);
      // the value is the password (or its stored hash): deleting a password one does not know removes nothing
      // (a check refused as busy is said so, not taken for a wrong value)
      if (values[0] !== stored && !(await verifyPassword(values[0]!, stored))) throw new LdapFailure(ResultCode.noSuchAttribute, `${attr} does not hold the value given`);
    }
    const [principal, credential] = [s.principal, s.credential];
    const own = principal.kind === 'person' && principal.id === o.id && pw !== undefined && typeof update[pw] === 'string' ? (update[pw] as string) : undefined;
    const late = await this.ownPasswordChange(s, own, () => this.opts.writer.update(o.id, update, { principal: principalName(principal), via: 'ldap', credential, ifVersion: o.version }));
    return answer(req.messageId, Op.modify, ResultCode.success, late);
  }

  /**
   * Runs a write, and resolves to '' once it is made, or to the sentence
   * saying so when its master made it but the change has not come back to
   * this replica in time. That is a success, not 52 unavailable: LDAP
   * has no idempotency key, so a client that tries a 52 again makes the
   * change twice (a value added twice is refused, a generated password is
   * lost), and a session whose own password it was must hold the new one.
   */
  private async made(write: () => Promise<unknown>): Promise<string> {
    try {
      await write();
      return '';
    } catch (e) {
      const { code, message } = this.opts.classify(e);
      if (code !== 'not-yet-visible') throw e;
      return message;
    }
  }

  /**
   * Makes a write that may change the session's own password (`password`:
   * the new one, or undefined when it does not). While it is written, an
   * operation of the same session whose recheck finds the entry changed
   * accepts the new password too; once written, the session holds it, if
   * it is still this person's. (A recheck that came first and dropped the
   * session leaves it anonymous: the change is made, the client binds
   * again.) Resolves as made() does: to the sentence saying the change is
   * not back here yet, if it is not.
   */
  private async ownPasswordChange(s: Session, password: string | undefined, write: () => Promise<unknown>): Promise<string> {
    if (password === undefined) return this.made(write);
    const who = s.principal?.kind === 'person' ? s.principal.id : undefined;
    const changing = { password, adopt: true };
    s.alsoAccepted = changing;
    try {
      const late = await this.made(write);
      // (a recheck meanwhile may have put a new principal object of the same person in place)
      if (who !== undefined && s.principal?.kind === 'person' && s.principal.id === who && s.credential) {
        s.alsoAccepted = late !== '' ? { password: s.credential.password, adopt: false } : undefined;
        s.credential = { user: s.credential.user, password };
      }
      return late;
    } finally {
      if (s.alsoAccepted === changing) s.alsoAccepted = undefined;
    }
  }

  // ---- extended operations --------------------------------------------------

  private async whoami(req: LdapRequest, s: Session): Promise<Answer> {
    // an empty authzId is anonymous (RFC 4532)
    return answer(req.messageId, Op.extended, ResultCode.success, '', { extra: [octets(s.principal ? `dn:${s.dn}` : '', 0x8b)] });
  }

  /**
   * RFC 3062: a person changes their own password (with the old one, or
   * bound with it); the admin and roles that see everything (staff)
   * anyone's, as a modify of userPassword lets them.
   */
  private async passwordModify(req: LdapRequest, s: Session): Promise<Answer> {
    // (as bound when the operation began: a recheck by another of the session's operations may drop it meanwhile)
    const principal = s.principal;
    // (the codes of this operation are slapd's: 8 for an anonymous client, 53 for a wrong old password, 32 for the admin's own)
    if (!principal) throw new LdapFailure(ResultCode.strongerAuthRequired, 'only bound clients may change passwords; bind with your DN or uid and password first');
    const value = (req.requestValue ?? {}) as { userIdentity?: string; oldPassword?: string; newPassword?: string };
    const access = this.opts.store.schema.access;
    if (!access) throw new LdapFailure(ResultCode.unwillingToPerform, 'this schema has no persons with passwords');
    const scope = await this.principalScope(s, principal);
    const resets = principal.kind === 'admin' || scope.everything;
    // anyone else learns only "not yours" of a name that is not their own, whether it names someone or no one
    const notYours = (): LdapFailure => new LdapFailure(ResultCode.insufficientAccessRights, 'you may change only your own password');
    let target: StoredObject | undefined;
    if (value.userIdentity) {
      // (resolved as every operation's DN is: a login DN, an id in another case)
      const { loc, person } = await this.entryOfLogin(this.layout.locate(value.userIdentity));
      if (loc.kind !== 'entry') throw resets ? new LdapFailure(ResultCode.noSuchObject, `${value.userIdentity} is not a person's entry`) : notYours();
      target = person ?? (await this.personAt(loc));
    } else if (principal.kind === 'person') {
      target = await this.opts.store.get(principal.id);
    } else {
      throw new LdapFailure(ResultCode.noSuchObject, 'the admin has no entry here; name the person whose password to change (ldappasswd ... DN)');
    }
    const self = principal.kind === 'person' && target?.id === principal.id;
    if (!resets && !self) throw notYours();
    if (!target || target.deleted || target.type !== access.principalType) throw new LdapFailure(ResultCode.noSuchObject, `there is no person ${value.userIdentity ?? ''}`);
    const credential = s.credential;
    if (self && value.oldPassword !== undefined && value.oldPassword !== credential?.password) {
      const p = credential && (await this.opts.authenticatePerson(target, credential.user, value.oldPassword));
      if (!p) throw new LdapFailure(ResultCode.unwillingToPerform, 'the old password is wrong');
    }
    const generated = value.newPassword ? undefined : randomBytes(12).toString('base64url');
    const password = value.newPassword ?? generated!;
    const update = { [access.passwordField]: password };
    // (the schema's rules for the write, as a modify of the attribute meets them: the same on a master as through a replica)
    await authorizeWrite(scope, readerKnowing(target, (x) => this.opts.store.get(x)), 'update', target.id, target.type, update);
    // A change of one's own password is made over the entry the session's password was last proven
    // against, and only while the session is still this person's: an admin's reset meanwhile wins.
    // An entry changed otherwise (the {SSHA} upgrade the bind started, an edit) is proven against
    // again, and the change made over that.
    let late = '';
    for (let attempt = 1; ; attempt++) {
      const proven = self ? s.entry?.version : undefined;
      if (self && (s.principal?.kind !== 'person' || s.principal.id !== target.id || !s.entry)) throw new LdapFailure(ResultCode.invalidCredentials, 'your entry changed since you bound; bind again');
      try {
        late = await this.ownPasswordChange(s, self ? password : undefined, () => this.opts.writer.update(target.id, update, { principal: principalName(principal), via: 'ldap', credential, ifVersion: proven }));
        break;
      } catch (e) {
        if (!(self && attempt < 3 && isMeridianError(e) && e.code === 'precondition' && s.entry)) throw e;
        // the other change shows once on disk (reads see durable states): then prove the session's
        // password against it, which drops the session, and says so, if it is no longer the entry's
        await this.opts.store.readUntil(() => this.opts.store.get(target.id), (o) => o?.version !== proven, 1000);
        await this.recheckEntry(s, target.id, s.entry);
      }
    }
    // a generated password goes back in the response: SEQUENCE { genPasswd [0] }
    const extra = generated ? [tlv(0x8b, tlv(0x30, octets(generated, 0x80)))] : [];
    return answer(req.messageId, Op.extended, ResultCode.success, late, { extra });
  }
}

function select(attributes: readonly string[], typesOnly: boolean): Selection {
  const named = new Set<string>();
  // none listed means all user attributes; "1.1" lists none by name
  let allUser = attributes.length === 0;
  let allOperational = false;
  for (const a of attributes) {
    if (a === '*') allUser = true;
    else if (a === '+') allOperational = true;
    // (a description with options names tagged values, which no entry holds; `name` picks its subtypes)
    else if (a !== '1.1') for (const t of typesNamed(a)) named.add(t);
  }
  return { allUser, allOperational, named, typesOnly, key: `${+allUser}${+allOperational}${+typesOnly}${[...named].sort().join(',')}` };
}

/** Each request operation's name in the metrics (as run() is told it). */
const OP_NAMES: Readonly<Record<number, string>> = { 0x60: 'bind', 0x63: 'search', 0x66: 'modify', 0x68: 'add', 0x4a: 'delete', 0x6c: 'modrdn', 0x6e: 'compare' };

/** The response to each request operation (anything else is an extended operation). */
const RESPONSE_OP: Readonly<Record<number, number>> = { 0x60: Op.bind, 0x63: Op.searchDone, 0x66: Op.modify, 0x68: Op.add, 0x4a: Op.del, 0x6c: Op.modDn, 0x6e: Op.compare };

/** An encoded response with its result code, which the metrics count. */
interface Answer {
  code: number;
  bytes: Buffer;
}

/** what an abandoned operation returns: nothing is sent */
const NO_ANSWER: Answer = { code: ResultCode.canceled, bytes: Buffer.alloc(0) };

function answer(messageId: number, op: number, code: number, message: string, opts: Parameters<typeof result>[4] = {}): Answer {
  return { code, bytes: result(messageId, op, code, message, opts) };
}

/** The index of the first value equal to an earlier one, or -1. */
function firstRepeat(values: readonly string[]): number {
  const seen = new Set<string>();
  for (const [i, v] of values.entries()) {
    if (seen.has(v)) return i;
    seen.add(v);
  }
  return -1;
}
