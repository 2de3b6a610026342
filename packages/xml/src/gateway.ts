import type { IncomingMessage, ServerResponse } from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  AccessScope,
  asSeenBy,
  authorizeWrite,
  foldLookup,
  foldText,
  foldValue,
  isMeridianError,
  readerKnowing,
  principalName,
  type Accessible,
  type FieldValue,
  type ObjectHistory,
  type ObjectVersion,
  type Page,
  type Principal,
  type Store,
  type StoredObject,
  type TypeDef,
  type Writer,
  type WriteRequest,
} from '@meridian/store';
import { objectXml, parseDocument, XML_DECLARATION, XmlError, writeFields, escapeAttr, escapeText, xmlSafe, type ObjectInput } from './format.js';
import { CACHE_CONTROL, ifMatch, ifMatchHolds, noneMatch, requireXml, sendXml, utf8, write, XML_TYPE } from './http.js';
import { exportOrder, runImport } from './import-export.js';
import { PieceParser } from './piece-parser.js';
import { fieldsBefore, historyXml, readableHistory } from './history-xml.js';
import { changesFeed, changesPosition, POSITION_HEADER } from './changes.js';
import type { CursorSeal } from './cursor.js';

export interface HttpAnswer {
  status: number;
  code: string;
  message: string;
  headers?: Record<string, string>;
  field?: string | undefined;
}

export interface XmlGatewayOptions {
  /** reads */
  store: Store;
  /** writes: the store on a master, the master on a replica */
  writer: Writer;
  /** the admin or a person, by the HTTP Basic Authorization header */
  signIn(authorization: string | undefined): Promise<{ principal: Principal; credential: { user: string; password: string } } | undefined>;
  /** the principal's view for one request */
  scope(p: Principal): Promise<AccessScope>;
  /** largest body of a single-object request, bytes */
  maxBody: number;
  /** the node's body reader: at most `limit` bytes, refused past it (its error goes through mapError) */
  readBody(req: IncomingMessage, limit: number): Promise<Buffer>;
  /** how the node answers an error from the store or the writer */
  mapError(e: unknown): HttpAnswer;
  /** told once, with the reason, if the import parser's thread is lost */
  onParserLost?(reason: string): void;
  /** seals list cursors with the node's key, kept by the node so cursors outlive a restart (cursor.ts); the node shares it with the LDAP gateway's paged results cookies */
  cursorSeal: CursorSeal;
}

interface Request {
  req: IncomingMessage;
  res: ServerResponse;
  url: URL;
  principal: Principal;
  credential: { user: string; password: string };
  scope: AccessScope;
}

const PATHS = /^\/(objects|me|export|import|changes)(\/|$)/;
/** The paths that are one segment, with what to say of one with more */
const SINGLE_SEGMENT: Readonly<Record<string, string>> = { me: 'your own entry is at /me', export: 'the export is at /export', import: 'imports go to /import', changes: 'the changes feed is at /changes' };
/** memory for remembered object XML */
const RENDERED_BYTES = 32 * 1024 * 1024;

/** what a write under If-Match: * gives back when the object changed before it: read, judge and write again */
const RETRY = Symbol('retry');
/** ids of objects changed by merged states that an export keeps while it runs (see export) */
const MERGED_KEPT = 100_000;
/** The author of a history version a reader may not know of (see principalsShown). */
const SOMEONE_ELSE = 'someone else';

/**
 * The XML-over-HTTP gateway: objects by type and id with ETags, lists,
 * the signed-in person's own data (/me), streaming export and import, and
 * the changes feed for external caches. Every request is authenticated
 * (HTTP Basic) and every object passes the schema's access rules; what a
 * principal may not read is answered as if it did not exist.
 */
export class XmlGateway {
  /**
   * The hot path of a website or cache reading objects: each request would
   * otherwise work out the principal's scope and serialise the object again.
   * A scope is remembered until the store changes, and an object's XML until
   * its version changes (credentials are remembered by Principals).
   */
  private readonly scopes = new Map<string, { seq: number; scope: AccessScope }>();
  private readonly rendered = new Map<string, { version: string; body: Buffer }>();
  private renderedBytes = 0;

  /** parses large imports off the event loop; started by the first one */
  private parser: PieceParser | undefined;

  private readonly cursors: CursorSeal;

  constructor(private readonly opts: XmlGatewayOptions) {
    this.cursors = opts.cursorSeal;
  }

  /** Stops the import parser's thread, if one started. */
  async close(): Promise<void> {
    await this.parser?.close();
    this.parser = undefined;
  }

  /** Whether a path is this gateway's. */
  handles(path: string): boolean {
    return PATHS.test(path);
  }

  async handle(req: IncomingMessage, res: ServerResponse, url: URL): Promise<void> {
    let seesEverything = false;
    try {
      const r = await this.authenticate(req, res, url);
      seesEverything = r.scope.everything;
      const parts = url.pathname.split('/').filter(Boolean).map(decode);
      const method = req.method ?? 'GET';
      const single = Object.hasOwn(SINGLE_SEGMENT, parts[0] ?? '') ? SINGLE_SEGMENT[parts[0]!] : undefined;
      if (single !== undefined && parts.length !== 1) throw new XmlError(404, `nothing at ${url.pathname}; ${single}`);
      switch (parts[0]) {
        case 'objects':
          if (parts.length === 2) {
            if (method === 'GET' || method === 'HEAD') return await this.list(r, parts[1]!);
            if (method === 'POST') return await this.create(r, parts[1]!);
            throw notAllowed(method, 'GET, HEAD, POST');
          }
          if (parts.length === 3) {
            const [, type, id] = parts as [string, string, string];
            if (method === 'GET' || method === 'HEAD') return await this.get(r, type, id);
            if (method === 'PUT') return await this.put(r, type, id);
            if (method === 'DELETE') return await this.remove(r, type, id);
            throw notAllowed(method, 'GET, HEAD, PUT, DELETE');
          }
          if (parts.length === 4 && parts[3] === 'history') {
            if (method !== 'GET' && method !== 'HEAD') throw notAllowed(method, 'GET, HEAD');
            return await this.history(r, parts[1]!, parts[2]!);
          }
          throw new XmlError(404, `nothing at ${url.pathname}; objects are at /objects/{type}/{id}`);
        case 'me':
          if (method === 'GET' || method === 'HEAD') return await this.me(r);
          if (method === 'PUT') return await this.putMe(r);
          throw notAllowed(method, 'GET, HEAD, PUT');
        case 'export':
          if (method !== 'GET' && method !== 'HEAD') throw notAllowed(method, 'GET, HEAD');
          return await this.export(r);
        case 'import':
          if (method !== 'POST') throw notAllowed(method, 'POST');
          return await this.import(r);
        case 'changes':
          if (method !== 'GET') throw notAllowed(method, 'GET');
          this.requireEverything(r, 'the changes feed');
          return await changesFeed(this.opts.store, req, res, url, async () => {
            // the sign-in is cached while the person is unchanged, so this costs a look-up per batch
            const again = await this.opts.signIn(req.headers.authorization);
            return again !== undefined && (await this.scopeOf(again.principal)).everything;
          });
        default:
          throw new XmlError(404, `nothing at ${url.pathname}`);
      }
    } catch (e) {
      this.fail(res, asSeenBy(e, seesEverything));
    }
  }

  private fail(res: ServerResponse, e: unknown): void {
    // (a stream whose client went away, or was cut by the idle timeout: nobody to answer, nothing to log)
    if (res.destroyed && res.headersSent) return;
    const a: HttpAnswer = e instanceof XmlError ? { status: e.status, code: codeOf(e.status), message: e.message, field: e.field, headers: e.headers } : this.opts.mapError(e);
    if (res.headersSent) {
      res.destroy();
      return;
    }
    // (a message may quote what the client sent, characters XML does not allow included)
    const field = a.field ? ` field="${escapeAttr(xmlSafe(a.field))}"` : '';
    sendXml(res, a.status, `${XML_DECLARATION}<error code="${escapeAttr(a.code)}"${field}>${escapeText(xmlSafe(a.message))}</error>\n`, a.headers ?? {});
  }

  private async authenticate(req: IncomingMessage, res: ServerResponse, url: URL): Promise<Request> {
    const signedIn = await this.opts.signIn(req.headers.authorization);
    if (!signedIn) {
      res.setHeader('www-authenticate', 'Basic realm="meridian", charset="UTF-8"');
      throw new XmlError(401, req.headers.authorization ? 'wrong user name or password' : 'sign in with HTTP Basic authentication: your uid or mail and your password');
    }
    const { principal, credential } = signedIn;
    return { req, res, url, principal, credential, scope: await this.scopeOf(principal) };
  }

  /** A principal's scope, worked out again whenever the store has changed (states a merge stored too). */
  private async scopeOf(p: Principal): Promise<AccessScope> {
    const key = p.kind === 'admin' ? 'admin' : `${p.id}\0${p.roles.join(',')}\0${p.organisation ?? ''}`;
    const seq = this.opts.store.changeMark;
    const known = this.scopes.get(key);
    if (known && known.seq === seq) return known.scope;
    const scope = await this.opts.scope(p);
    if (this.scopes.size >= 10_000) this.scopes.clear();
    this.scopes.set(key, { seq, scope });
    return scope;
  }

  private requireEverything(r: Request, what: string): void {
    if (!r.scope.everything) throw new XmlError(403, `${what} is for the admin and staff; sign in as one of them`);
  }

  private typeDef(type: string): TypeDef {
    const def = this.opts.store.schema.types.get(type);
    if (!def || def.system) throw new XmlError(404, `no type ${type}; the schema has ${this.publicTypes().join(', ')}`);
    return def;
  }

  private publicTypes(): string[] {
    return [...this.opts.store.schema.types.values()].filter((t) => !t.system).map((t) => t.name);
  }

  /** The object, if this principal may see it; otherwise not found. */
  private async visible(r: Request, type: string, id: string): Promise<StoredObject> {
    this.typeDef(type);
    const o = await this.opts.store.get(id);
    if (!o || o.deleted || o.type !== type || !r.scope.canRead(o)) throw new XmlError(404, `no ${type} ${id}`);
    return o;
  }

  /**
   * A write's answer: its object, or no body where the caller may not read
   * it now (201 with its Location, or 204). That is an object an earlier
   * write under the same Idempotency-Key made, since deleted or moved out
   * of the caller's reach, whose fields now may be another tenant's; or
   * the write of a role that may write a type it may not read. Neither is
   * refused: the write was made, and a refusal would be sent again as a
   * new write.
   */
  private sendWritten(r: Request, status: 200 | 201, o: StoredObject, headers: Record<string, string> = {}): void {
    if (!o.deleted && r.scope.canRead(o)) return this.send(r, status, o, headers);
    r.res.writeHead(status === 201 ? 201 : 204, headers);
    r.res.end();
  }

  private send(r: Request, status: number, o: StoredObject, headers: Record<string, string> = {}): void {
    let cached = this.rendered.get(o.id);
    if (cached?.version !== o.version) {
      const body = Buffer.from(XML_DECLARATION + objectXml(o, this.opts.store.schema.types.get(o.type)));
      if (cached) this.renderedBytes -= cached.body.length;
      if (this.renderedBytes > RENDERED_BYTES) {
        this.rendered.clear();
        this.renderedBytes = 0;
      }
      cached = { version: o.version, body };
      this.rendered.set(o.id, cached);
      this.renderedBytes += body.length;
    }
    sendXml(r.res, status, cached.body, { etag: `"${o.version}"`, ...headers }, r.req.method === 'HEAD');
  }

  private writeOpts(r: Request, extra: { ifVersion?: string | undefined } = {}): WriteRequest {
    const key = r.req.headers['idempotency-key'];
    if (key !== undefined && (typeof key !== 'string' || !/^[\x21-\x7e]{1,128}$/.test(key))) {
      throw new XmlError(400, 'Idempotency-Key must be 1 to 128 printable ASCII characters without spaces');
    }
    return { principal: principalName(r.principal), via: 'xml', credential: r.credential, idempotencyKey: key, ifVersion: extra.ifVersion };
  }

  private async body(r: Request): Promise<ObjectInput> {
    requireXml(r.req);
    const text = utf8(await this.opts.readBody(r.req, this.opts.maxBody));
    const objects = parseDocument(text, 'object');
    return objects[0]!;
  }

  // ---- objects ---------------------------------------------------------

  private async get(r: Request, type: string, id: string): Promise<void> {
    const o = await this.visible(r, type, id);
    // (RFC 9110 13.2.2: If-Match first, then If-None-Match)
    if (ifMatchHolds(r.req, o.version) === false) throw new XmlError(412, `${type} ${id} is at version "${o.version}", not one If-Match names`);
    if (noneMatch(r.req, o.version)) {
      // (a 304 carries the headers the 200 would have, RFC 9110 15.4.5)
      r.res.writeHead(304, { etag: `"${o.version}"`, 'cache-control': CACHE_CONTROL });
      r.res.end();
      return;
    }
    this.send(r, 200, o);
  }

  /** The object's versions from this node's retained feed; deleted objects' only for the admin and staff. */
  private async history(r: Request, type: string, id: string): Promise<void> {
    this.typeDef(type);
    const o = await this.opts.store.get(id);
    if (!o || o.type !== type || !r.scope.canRead(o) || (o.deleted && !r.scope.everything)) throw new XmlError(404, `no ${type} ${id}`);
    const h = await this.opts.store.history(id);
    // (purged since the read above)
    if (!h) throw new XmlError(404, `no ${type} ${id}`);
    const shown = r.scope.everything ? h : await this.principalsShown(r, readableHistory(h, await this.readableAt(r.scope, o, h)));
    sendXml(r.res, 200, XML_DECLARATION + historyXml(shown, o.type), { 'cache-control': 'no-store' }, r.req.method === 'HEAD');
  }

  /**
   * Who made each version, as someone who does not see everything may know
   * it: the admin, themselves, or a person they may read; anyone else is
   * `someone else`. A staff member's id, which such a reader gets 404 for,
   * was shown to every reseller admin whose customer that staff member edited.
   */
  private async principalsShown<H extends ObjectHistory>(r: Request, h: H): Promise<H> {
    const me = principalName(r.principal);
    const known = new Map<string, boolean>();
    const versions = [];
    for (const v of h.versions) {
      const [who = '', via] = v.principal.split(' via ');
      let may = known.get(who);
      if (may === undefined) {
        const id = /^[A-Za-z][A-Za-z0-9_]*:(.+)$/.exec(who)?.[1];
        const o = id === undefined ? undefined : await this.opts.store.get(id);
        may = who === 'admin' || who === me || (o !== undefined && !o.deleted && r.scope.canRead(o));
        known.set(who, may);
      }
      versions.push(may ? v : { ...v, principal: via === undefined ? SOMEONE_ELSE : `${SOMEONE_ELSE} via ${via}` });
    }
    return { ...h, versions };
  }

  /**
   * Whether the scope could read the object with some fields at a feed
   * position: its organisation's reach is judged from that organisation as
   * it was then (its own history), not as it is now.
   */
  private async readableAt(scope: AccessScope, o: StoredObject, h: ObjectHistory): Promise<(fields: Record<string, FieldValue>, at: number) => boolean> {
    // Another organisation's history is read only when a rule reaches this type by a field of the
    // organisation (a reseller's customers): an organisation's own versions hold those fields, and
    // a rule of one's own organisation, or one's own entry, needs none.
    const timelines = new Map<string, ObjectVersion[] | Record<string, FieldValue>>();
    if (!scope.isSelf(o) && scope.orgOf(o) !== o.id && scope.readsThroughOrganisation(o.type)) {
      const orgIds = new Set<string>();
      for (const v of h.versions) {
        for (const fields of [v.fields, fieldsBefore(v)]) {
          const id = scope.orgOf({ id: o.id, type: o.type, fields });
          if (id !== undefined) orgIds.add(id);
        }
      }
      await Promise.all(
        [...orgIds].map(async (id) => {
          const past = await this.opts.store.history(id);
          // (with no version kept, the organisation was all along as it is)
          const now = past && past.versions.length === 0 ? (await this.opts.store.get(id))?.fields : undefined;
          if (past?.versions.length) timelines.set(id, past.versions);
          else if (now) timelines.set(id, now);
        }),
      );
    }
    const orgAt = (id: string, at: number): Accessible | undefined => {
      const t = timelines.get(id);
      if (!t) return undefined;
      if (!Array.isArray(t)) return { id, type: '', fields: t };
      // the last version at or before `at` (versions are in feed order); before the oldest kept, as that one found it
      let lo = 0;
      let hi = t.length;
      while (lo < hi) {
        const mid = (lo + hi) >> 1;
        if (t[mid]!.seq <= at) lo = mid + 1;
        else hi = mid;
      }
      return { id, type: '', fields: lo > 0 ? t[lo - 1]!.fields : fieldsBefore(t[0]!) };
    };
    return (fields, at) => {
      const x = { id: o.id, type: o.type, fields };
      const id = scope.orgOf(x);
      return scope.couldRead(x, id === o.id ? x : id === undefined ? undefined : orgAt(id, at));
    };
  }

  private async put(r: Request, type: string, id: string): Promise<void> {
    const def = this.typeDef(type);
    const input = await this.body(r);
    if (input.type !== type) throw new XmlError(409, `the body is a ${input.type} but the URL names a ${type}; an object's type never changes`);
    if (input.id !== undefined && input.id !== id) throw new XmlError(409, `the body is object ${input.id} but the URL names ${id}`);
    const fields = writeFields(def, input);
    const match = ifMatch(r.req);
    const creating = r.req.headers['if-none-match']?.trim() === '*';
    for (let attempt = 1; ; attempt++) {
      const current = await this.opts.store.get(id);
      const exists = current !== undefined && !current.deleted && current.type === type && r.scope.canRead(current);
      if (!exists && !r.scope.everything) {
        // Whoever does not see everything learns nothing of an id it cannot read: one answer whether
        // an object it may not see holds it, a deleted one, one of another type, or none. So it does
        // not choose ids either: a create of an id that turned out taken (or purged) would be refused
        // where the same create of a free id would be made, or refused for its body.
        if (creating) throw new XmlError(403, `choosing an object's id is for the admin and staff; create the ${type} with POST /objects/${type}, which gives it one`);
        throw new XmlError(404, `no ${type} ${id}`);
      } else if (current && !current.deleted && !exists) throw new XmlError(404, `no ${type} ${id}`);
      if (!exists) {
        // (RFC 9110: If-Match fails on a resource that has no current representation)
        if (match !== undefined) throw new XmlError(412, `${type} ${id} does not exist, so it cannot match If-Match; to create it send If-None-Match: * instead`);
        if (!creating) throw new XmlError(428, `${type} ${id} does not exist; to create it with PUT send If-None-Match: *`);
        await authorizeWrite(r.scope, (x) => this.opts.store.get(x), 'create', id, type, fields, { lagging: this.opts.writer.forwards });
        let o: StoredObject;
        try {
          o = await this.opts.writer.create(type, fields, { ...this.writeOpts(r), id });
        } catch (e) {
          // another create of this id won the race since the read: the precondition failed (RFC 9110 13.1.2),
          // which the next round says once that object shows (reads see it once on disk, or on a replica once here)
          const lostRace = attempt === 1 && !current && isMeridianError(e) && e.code === 'exists' && (await this.opts.store.purgedAt(id)) === undefined;
          if (lostRace && (await this.shown(id))) continue;
          throw e;
        }
        this.sendWritten(r, 201, o, { location: objectPath(o) });
        return;
      }
      // a create that lost the race to another is a failed precondition, whatever else was sent
      if (noneMatch(r.req, current!.version)) throw new XmlError(412, `${type} ${id} exists; If-None-Match: * only creates`);
      if (match === undefined) throw new XmlError(428, `${type} ${id} exists; send If-Match with its ETag ("${current!.version}" now) to change it`);
      if (match !== '*' && match !== current!.version) throw new XmlError(412, `${type} ${id} changed since you read it (now "${current!.version}"); GET it again and retry`);
      await authorizeWrite(r.scope, readerKnowing(current!, (x) => this.opts.store.get(x)), 'replace', id, type, fields, { lagging: this.opts.writer.forwards });
      // written only over the version just authorised: with If-Match: * a change in between is read and judged again
      const o = await this.retryStar(match, attempt, () => this.opts.writer.replace(id, fields, this.writeOpts(r, { ifVersion: current!.version })));
      if (o === RETRY) continue;
      this.sendWritten(r, 200, o);
      return;
    }
  }

  /** The object at `id` once the store shows it, waiting up to 2 s: another create's, on its way to the disk. */
  private shown(id: string): Promise<StoredObject | undefined> {
    return this.opts.store.readUntil(() => this.opts.store.get(id), (o) => o !== undefined, 2000);
  }

  /** A write made under If-Match: *, which a change between the read and the write sends round again (a few times). */
  private async retryStar<T>(match: string, attempt: number, write: () => Promise<T>): Promise<T | typeof RETRY> {
    try {
      return await write();
    } catch (e) {
      if (!(match === '*' && attempt < 3 && isMeridianError(e) && e.code === 'precondition')) throw e;
      // (a moment first: on a replica the master refused a version this node has not yet heard is old)
      await sleep(50 * attempt);
      return RETRY;
    }
  }

  private async create(r: Request, type: string): Promise<void> {
    const def = this.typeDef(type);
    const input = await this.body(r);
    if (input.type !== type) throw new XmlError(409, `the body is a ${input.type} but the URL names ${type}`);
    if (input.id !== undefined) throw new XmlError(400, `POST creates an object with a new id; to choose the id, PUT /objects/${type}/${input.id} with If-None-Match: *`);
    const fields = writeFields(def, input);
    await authorizeWrite(r.scope, (x) => this.opts.store.get(x), 'create', 'new', type, fields, { lagging: this.opts.writer.forwards });
    const o = await this.opts.writer.create(type, fields, this.writeOpts(r));
    this.sendWritten(r, 201, o, { location: objectPath(o) });
  }

  private async remove(r: Request, type: string, id: string): Promise<void> {
    const match = ifMatch(r.req);
    for (let attempt = 1; ; attempt++) {
      const o = await this.visible(r, type, id);
      if (noneMatch(r.req, o.version)) throw new XmlError(412, `${type} ${id} exists at the version If-None-Match names, so it is not deleted`);
      if (match === undefined) throw new XmlError(428, `send If-Match with the ETag of ${type} ${id} ("${o.version}" now) to delete it`);
      if (match !== '*' && match !== o.version) throw new XmlError(412, `${type} ${id} changed since you read it (now "${o.version}"); GET it again and retry`);
      await authorizeWrite(r.scope, readerKnowing(o, (x) => this.opts.store.get(x)), 'delete', id, type, undefined);
      const done = await this.retryStar(match, attempt, () => this.opts.writer.delete(id, this.writeOpts(r, { ifVersion: o.version })));
      if (done === RETRY) continue;
      r.res.writeHead(204);
      r.res.end();
      return;
    }
  }

  // ---- lists -----------------------------------------------------------

  private async list(r: Request, type: string): Promise<void> {
    const def = this.typeDef(type);
    const q = r.url.searchParams;
    const limitText = q.get('limit');
    const limit = limitText === null ? 100 : Number(limitText);
    if (!Number.isInteger(limit) || limit < 1 || limit > 1000) throw new XmlError(400, 'limit must be a whole number from 1 to 1000');
    const cursor = q.get('cursor');
    let after: string | undefined;
    if (cursor !== null && cursor !== '') {
      after = /^[A-Za-z0-9_-]{1,400}$/.test(cursor) ? this.cursors.open(cursor) : undefined;
      if (after === undefined) throw new XmlError(400, 'the cursor is not one this node handed out; start again without it');
    }
    const text = foldText(q.get('q') ?? '');
    const filters: [string, string][] = [];
    for (const [k, v] of q.entries()) {
      if (k === 'limit' || k === 'cursor' || k === 'q') continue;
      const f = def.fields.get(k);
      if (!f || f.kind === 'password') throw new XmlError(400, `${k} is not a field of ${type}; filter by field=value, or use q= to search`);
      filters.push([k, v]);
    }
    // the first filter on an indexed field picks the index; the rest are checked on each object
    const indexed = filters.find(([k]) => def.fields.get(k)!.indexed || def.fields.get(k)!.unique);
    if (filters.length > 0 && !indexed) {
      throw new XmlError(400, `filter by at least one indexed field of ${type} (${[...def.fields.values()].filter((f) => f.indexed || f.unique).map((f) => f.name).join(', ')}); use q= to search the rest`);
    }
    // folded once, as a lookup folds (NFKC, case folded; a reference as it is; 05 as the integer 5), so what the
    // index found is kept; a value no write could store matches nothing
    const wanted = filters.map(([k, v]) => ({ k, f: def.fields.get(k)!, want: foldLookup(def.fields.get(k)!, v) }));
    const matches = (o: StoredObject): boolean => {
      if (!r.scope.canRead(o)) return false;
      for (const { k, f, want } of wanted) {
        const have = o.fields[k];
        const values = have === undefined ? [] : Array.isArray(have) ? have : [have];
        if (want === undefined || !values.some((x) => foldValue(f, x) === want)) return false;
      }
      if (text !== '') {
        const hit = Object.entries(o.fields).some(([k, v]) => def.fields.get(k)?.kind !== 'password' && (Array.isArray(v) ? v : [v]).some((x) => foldText(String(x)).includes(text)));
        if (!hit) return false;
      }
      return true;
    };
    const items: StoredObject[] = [];
    let next: string | undefined;
    // Searching reads pages until the limit is met or 10000 objects were looked at; the cursor then resumes there.
    // A full page has a next one only if one more object matches, looked for as the page's were: that more
    // objects follow in the store could be objects the principal may not read, and would tell it so.
    let scanned = 0;
    scan: for (;;) {
      const page = indexed
        ? await this.opts.store.lookup(type, indexed[0], indexed[1], { limit: 500, after })
        : await this.opts.store.list(type, { limit: 500, after });
      for (const o of page.items) {
        scanned++;
        if (!matches(o)) continue;
        if (items.length === limit) {
          next = items[limit - 1]!.id;
          break scan;
        }
        items.push(o);
      }
      if (!page.next) break;
      after = page.next;
      if (scanned >= 10_000) {
        next = after;
        break;
      }
    }
    const nextAttr = next === undefined ? '' : ` next="${this.cursors.seal(next)}"`;
    let body = `${XML_DECLARATION}<objects${nextAttr}>\n`;
    for (const o of items) body += objectXml(o, def, '  ');
    body += '</objects>\n';
    sendXml(r.res, 200, body, {}, r.req.method === 'HEAD');
  }

  // ---- the signed-in person ------------------------------------------------

  private async myself(r: Request): Promise<StoredObject> {
    if (r.principal.kind !== 'person') throw new XmlError(404, 'the admin is not a person; /me is the signed-in person\'s own data');
    const me = await this.opts.store.get(r.principal.id);
    if (!me || me.deleted) throw new XmlError(404, 'your entry no longer exists');
    return me;
  }

  private async me(r: Request): Promise<void> {
    const me = await this.myself(r);
    const store = this.opts.store;
    const rules = store.schema.access!;
    const out: StoredObject[] = [me];
    const seen = new Set([me.id]);
    const orgId = me.fields[rules.organisationField];
    if (typeof orgId === 'string') {
      const org = await store.get(orgId);
      if (org && !org.deleted && r.scope.canRead(org)) {
        out.push(org);
        seen.add(org.id);
      }
      // what belongs to the organisation (licenses, for a customer), as far as the person may read it
      for (const def of store.schema.types.values()) {
        if (def.system || def.name === rules.principalType || def.name === rules.organisationType) continue;
        for (const f of def.fields.values()) {
          if (f.kind !== 'ref' || f.to !== rules.organisationType) continue;
          let after: string | undefined;
          do {
            const page = await store.lookup(def.name, f.name, orgId, { limit: 1000, after });
            for (const o of page.items) {
              if (seen.has(o.id) || !r.scope.canRead(o)) continue;
              seen.add(o.id);
              out.push(o);
            }
            after = page.next;
          } while (after);
        }
      }
    }
    let body = `${XML_DECLARATION}<objects>\n`;
    for (const o of out) body += objectXml(o, store.schema.types.get(o.type), '  ');
    body += '</objects>\n';
    sendXml(r.res, 200, body, { etag: `"${me.version}"` }, r.req.method === 'HEAD');
  }

  private async putMe(r: Request): Promise<void> {
    const first = await this.myself(r);
    const def = this.typeDef(first.type);
    const input = await this.body(r);
    if (input.type !== first.type || (input.id !== undefined && input.id !== first.id)) throw new XmlError(409, `PUT /me takes your own entry, <object type="${first.type}" id="${first.id}">`);
    const match = ifMatch(r.req);
    // fields you may not edit are kept as they are (they may be left out); the editable ones are replaced
    const given = writeFields(def, input);
    const self = r.scope.selfFields;
    for (let attempt = 1; ; attempt++) {
      const me = attempt === 1 ? first : await this.myself(r);
      if (noneMatch(r.req, me.version)) throw new XmlError(412, 'your entry exists at the version If-None-Match names; PUT /me changes it only under If-Match');
      if (match === undefined) throw new XmlError(428, `send If-Match with the ETag of your entry ("${me.version}" now)`);
      if (match !== '*' && match !== me.version) throw new XmlError(412, `your entry changed since you read it (now "${me.version}"); GET /me again and retry`);
      const update: Record<string, unknown> = {};
      for (const [k, v] of Object.entries(given)) {
        // (a field the type lacks is the document's mistake, as on any PUT, not a field you may not change)
        if (!def.fields.has(k)) throw new XmlError(422, `field "${k}" is not a field of ${def.name}`, k);
        if (self.has(k)) update[k] = v;
        else if (JSON.stringify(normal(v)) !== JSON.stringify(normal(me.fields[k]))) {
          throw new XmlError(403, `you may not change "${k}" of your own entry; you may change ${[...self].join(', ')}`, k);
        }
      }
      for (const k of self) {
        if (!(k in given) && me.fields[k] !== undefined && def.fields.get(k)?.kind !== 'password') update[k] = null;
      }
      await authorizeWrite(r.scope, readerKnowing(me, (x) => this.opts.store.get(x)), 'update', me.id, me.type, update);
      const o = await this.retryStar(match, attempt, () => this.opts.writer.update(me.id, update, this.writeOpts(r, { ifVersion: me.version })));
      if (o === RETRY) continue;
      this.sendWritten(r, 200, o);
      return;
    }
  }

  // ---- bulk ------------------------------------------------------------------

  private async export(r: Request): Promise<void> {
    this.requireEverything(r, 'export');
    const only = r.url.searchParams.get('type');
    const types = only ? [this.typeDef(only)] : exportOrder(this.opts.store.schema);
    // where a cache loading this export goes on reading the changes feed: taken before the first read, so
    // whatever changes while the export runs comes again from the feed (or as a reset, for a merged state)
    r.res.writeHead(200, { 'content-type': XML_TYPE, 'cache-control': CACHE_CONTROL, [POSITION_HEADER]: changesPosition(this.opts.store) });
    // (HEAD: the headers a GET would get, without reading the store)
    if (r.req.method === 'HEAD') return void r.res.end();
    await write(r.res, `${XML_DECLARATION}<objects>\n`);
    const store = this.opts.store;
    // Changes made while the export runs land in it or not, object by object; but an object
    // that loses its reference to its own type between the passes would be in neither, so the
    // second pass also takes those changed since the start (one that was in the first then comes
    // twice, and an import applies the later copy over the earlier): by a change, whose feed seq
    // is later, or by a merged state, which keeps its record's seq and is told to onStates.
    const since = store.lastSeq;
    // (bounded: past MERGED_KEPT ids, a long repair running alongside, the second pass takes every object)
    const merged = new Set<string>();
    const stopListening = store.onStates((ids) => {
      for (const id of ids) if (merged.size <= MERGED_KEPT) merged.add(id);
    });
    try {
      await this.exportTypes(r, types, since, merged);
    } finally {
      stopListening();
    }
    r.res.end('</objects>\n');
  }

  private async exportTypes(r: Request, types: TypeDef[], since: number, merged: ReadonlySet<string>): Promise<void> {
    const store = this.opts.store;
    for (const def of types) {
      // objects referring to their own type (a customer to its reseller) after those they refer to
      const selfRefs = [...def.fields.values()].filter((f) => f.kind === 'ref' && f.to === def.name).map((f) => f.name);
      for (const pass of selfRefs.length ? [0, 1] : [0]) {
        // the next page is read while this one is written out: the store's reads and the
        // serialisation then overlap instead of taking turns (one page ahead, so memory stays bounded)
        let reading: Promise<Page<StoredObject>> | undefined = store.list(def.name, { limit: 1000 });
        while (reading) {
          const page: Page<StoredObject> = await reading;
          reading = page.next !== undefined ? store.list(def.name, { limit: 1000, after: page.next }) : undefined;
          // if the client goes away first, nobody awaits the read ahead: its failure is nobody's to report
          reading?.catch(() => undefined);
          let chunk = '';
          for (const o of page.items) {
            const refersToOwnType = selfRefs.some((f) => o.fields[f] !== undefined);
            const unchanged = o.seq <= since && merged.size <= MERGED_KEPT && !merged.has(o.id);
            if (selfRefs.length && (pass === 0 ? refersToOwnType : !refersToOwnType && unchanged)) continue;
            chunk += objectXml(o, def, '  ');
          }
          if (chunk) await write(r.res, chunk);
        }
      }
    }
  }

  private async import(r: Request): Promise<void> {
    this.requireEverything(r, 'import');
    requireXml(r.req);
    const dryRun = ['1', 'true'].includes(r.url.searchParams.get('dry-run') ?? '');
    // one Idempotency-Key cannot stand for every object of a document: imports do not use it
    const writeOptions = { ...this.writeOpts(r), via: 'import' as const, idempotencyKey: undefined };
    const report = await runImport({
      store: this.opts.store,
      writer: this.opts.writer,
      body: r.req,
      dryRun,
      maxObject: this.opts.maxBody,
      writeOptions,
      mapError: (e) => (e instanceof XmlError ? { status: e.status, code: codeOf(e.status), message: e.message, field: e.field } : this.opts.mapError(e)),
      parser: (this.parser ??= new PieceParser(this.opts.onParserLost)),
    });
    sendXml(r.res, report.status, report.body);
  }
}

function normal(v: unknown): unknown {
  if (v === null || v === undefined) return null;
  return Array.isArray(v) ? v.map(String) : String(v);
}

function objectPath(o: StoredObject): string {
  return `/objects/${encodeURIComponent(o.type)}/${encodeURIComponent(o.id)}`;
}

function notAllowed(method: string, allowed: string): XmlError {
  return new XmlError(405, `${method} is not allowed here; use ${allowed}`, undefined, { allow: allowed });
}

function decode(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    throw new XmlError(400, `the path segment "${s}" is not valid percent-encoding`);
  }
}

const CODES: Record<number, string> = {
  400: 'bad-request',
  401: 'unauthorized',
  403: 'forbidden',
  404: 'not-found',
  405: 'method-not-allowed',
  409: 'conflict',
  412: 'precondition-failed',
  410: 'gone',
  413: 'too-large',
  415: 'unsupported-media-type',
  422: 'validation',
  428: 'precondition-required',
};

function codeOf(status: number): string {
  return CODES[status] ?? 'error';
}
