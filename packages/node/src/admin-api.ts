import type { IncomingMessage, ServerResponse } from 'node:http';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { checkStore, encodeBackup, type CheckReport, hlcToIso, isMeridianError, nodeIdProblem, MAX_PAGE, parseVersionName, publicFields, type Store, type StoredObject } from '@meridian/store';
import { builtInRefusal } from './built-in-types.js';
import { HttpError, methodNotAllowed, readJson, sendJson } from './http-util.js';
import type { Credential, Writer } from './writer.js';

/**
 * The JSON admin API the CLI speaks: objects by id, lists by type and
 * indexed field, and the changes feed. Documented in docs/operations.md.
 */
export interface AdminContext {
  /** reads */
  store: Store;
  /** writes: the store on a master, the master through the sync session on a replica */
  writer: Writer;
  maxBody: number;
  principal: string;
  /** the caller's own credential, which a replica forwards with its writes */
  credential: Credential;
  /** purges are made on masters only (a replica forwards nothing but writes) */
  role: 'master' | 'replica';
  /** whether a node is connected now */
  connected: (node: string) => boolean;
}

export interface ObjectJson {
  id: string;
  type: string;
  version: string;
  modified: string;
  deleted: boolean;
  fields: Record<string, unknown>;
}

export function objectJson(store: Store, o: StoredObject): ObjectJson {
  return {
    id: o.id,
    type: o.type,
    version: o.version,
    modified: o.modified,
    deleted: o.deleted,
    fields: publicFields(store.schema.types.get(o.type), o.fields),
  };
}

/** The check running on each store now (GET /api/check). */
const checks = new WeakMap<Store, Promise<CheckReport>>();

export async function handleAdmin(ctx: AdminContext, req: IncomingMessage, res: ServerResponse, url: URL): Promise<void> {
  const parts = url.pathname.split('/').filter(Boolean).map(decodeSegment); // ['api', ...]
  const method = req.method ?? 'GET';
  if (parts[1] === 'objects' && parts.length === 2) {
    if (method === 'GET' || method === 'HEAD') return list(ctx, res, url);
    if (method === 'POST') return create(ctx, req, res);
    throw methodNotAllowed(method, 'GET, POST');
  }
  if (parts[1] === 'objects' && parts.length === 3) {
    const id = parts[2]!;
    switch (method) {
      case 'GET':
      case 'HEAD':
        return getOne(ctx, res, id, url.searchParams.get('deleted') === '1');
      case 'PATCH':
      case 'PUT':
        return change(ctx, req, res, id, method);
      case 'DELETE':
        return remove(ctx, req, res, id);
      default:
        throw methodNotAllowed(method, 'GET, PATCH, PUT, DELETE');
    }
  }
  if (parts[1] === 'objects' && parts.length === 4) {
    const id = parts[2]!;
    const action = parts[3]!;
    const allowed = action === 'history' ? 'GET' : 'POST';
    if (!['history', 'revert', 'undelete', 'purge'].includes(action)) throw new HttpError(404, `no such API resource ${url.pathname}; objects have history, revert, undelete and purge`, 'not-found');
    if (method !== allowed && !(allowed === 'GET' && method === 'HEAD')) throw methodNotAllowed(method, allowed);
    if (action === 'history') return history(ctx, res, id, url);
    const cur = await ctx.store.get(id);
    refuseSystemType(ctx, cur?.type);
    if (action === 'revert') return revert(ctx, req, res, id, cur);
    if (action === 'undelete') {
      const o = await ctx.writer.undelete(id, writeOptions(ctx, req));
      sendJson(res, 200, objectJson(ctx.store, o), { etag: etag(o) });
      return;
    }
    return purge(ctx, res, id, cur);
  }
  if (parts[1] === 'backup' && parts.length === 2) {
    if (method !== 'GET') throw methodNotAllowed(method, 'GET');
    return backup(ctx, res, url);
  }
  if (parts[1] === 'digest' && parts.length === 2) {
    if (method !== 'GET') throw methodNotAllowed(method, 'GET');
    // ?content=1: the digest of what an XML export carries (see Store.contentDigest)
    const { at, ...d } = url.searchParams.get('content') === '1' ? await ctx.store.contentDigest() : await ctx.store.digest();
    // the position is read with the digest, so a verify can tell replication still under way from divergence
    sendJson(res, 200, { nodeId: ctx.store.nodeId, lastSeq: at.head, ...d, vector: at.vector, ahead: at.ahead });
    return;
  }
  if (parts[1] === 'check' && parts.length === 2) {
    if (method !== 'GET') throw methodNotAllowed(method, 'GET');
    // (each reads the whole store and holds a snapshot: a client that gave up and asked again shares the one running)
    let running = checks.get(ctx.store);
    if (!running) {
      const store = ctx.store;
      running = checkStore(store).finally(() => checks.delete(store));
      checks.set(store, running);
    }
    sendJson(res, 200, { nodeId: ctx.store.nodeId, ...(await running) });
    return;
  }
  if (parts[1] === 'conflicts' && parts.length === 2) {
    if (method !== 'GET') throw methodNotAllowed(method, 'GET');
    return conflicts(ctx, res, url);
  }
  if (parts[1] === 'feeds' && parts.length === 2) {
    if (method !== 'GET' && method !== 'HEAD') throw methodNotAllowed(method, 'GET');
    sendJson(res, 200, { nodeId: ctx.store.nodeId, feed: ctx.store.feedTag, known: ctx.store.knownFeeds(), forgotten: ctx.store.forgottenFeeds() });
    return;
  }
  if (parts[1] === 'feeds' && parts.length === 4 && parts[3] === 'forget') {
    if (method !== 'POST') throw methodNotAllowed(method, 'POST');
    const node = parts[2]!;
    const problem = nodeIdProblem(node);
    if (problem) throw new HttpError(400, problem);
    if (ctx.role === 'replica') throw new HttpError(409, 'this node is a replica, and masters take no forgotten feed tags from replicas; run forget-feed on a master', 'conflict');
    if (ctx.connected(node)) throw new HttpError(409, `${node} is connected to this node now, on the data dir whose feed this would forget; forget a dir's feed only once the dir is gone`, 'conflict');
    sendJson(res, 200, { node, forgotten: await ctx.store.forgetFeed(node) });
    return;
  }
  if (parts[1] === 'feed' && parts.length === 2) {
    if (method !== 'GET') throw methodNotAllowed(method, 'GET');
    return feed(ctx, res, url);
  }
  throw new HttpError(404, `no such API resource ${url.pathname}`, 'not-found');
}

function decodeSegment(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    throw new HttpError(400, `the path segment "${s}" is not valid percent-encoding`);
  }
}

/** `Idempotency-Key`: a write sent again with the same key is answered, not applied twice. */
function idempotencyKey(req: IncomingMessage): string | undefined {
  const h = req.headers['idempotency-key'];
  if (h === undefined) return undefined;
  if (typeof h !== 'string' || !/^[\x21-\x7e]{1,128}$/.test(h)) throw new HttpError(400, 'Idempotency-Key must be 1 to 128 printable ASCII characters without spaces');
  return h;
}

function writeOptions(ctx: AdminContext, req: IncomingMessage): { principal: string; credential: Credential; idempotencyKey: string | undefined; ifVersion: string | undefined } {
  return { principal: ctx.principal, credential: ctx.credential, idempotencyKey: idempotencyKey(req), ifVersion: ifMatch(req) };
}

function etag(o: StoredObject): string {
  return `"${o.version}"`;
}

/** The version named by If-Match, if any; `*` means "any existing version". */
function ifMatch(req: IncomingMessage): string | undefined {
  const h = req.headers['if-match'];
  if (h === undefined || h.trim() === '*') return undefined;
  const m = /^\s*(?:W\/)?"([^"]*)"\s*$/.exec(h);
  if (!m) throw new HttpError(400, 'If-Match must be one quoted version, as sent in ETag');
  return m[1];
}

async function getOne(ctx: AdminContext, res: ServerResponse, id: string, withDeleted: boolean): Promise<void> {
  const o = await ctx.store.get(id);
  if (!o) throw new HttpError(404, `no object ${id}`, 'not-found');
  if (o.deleted && !withDeleted) throw new HttpError(404, `${o.type} ${id} was deleted at ${o.modified}`, 'deleted');
  sendJson(res, 200, objectJson(ctx.store, o), { etag: etag(o) });
}

/** `?limit=`: 100 when absent, else a whole number from 1 to MAX_PAGE. */
function pageLimit(q: URLSearchParams, fallback = 100): number {
  const text = q.get('limit');
  // (digits only: Number() takes "", " 5", "1e2" and "0x10" too)
  const limit = text === null ? fallback : /^\d+$/.test(text) ? Number(text) : NaN;
  if (!Number.isInteger(limit) || limit < 1 || limit > MAX_PAGE) throw new HttpError(400, `limit must be a whole number from 1 to ${MAX_PAGE}`);
  return limit;
}

/**
 * A cursor is a key in base64url. A conflict's key holds its object's id,
 * field and writes, and a unique value's also that value and its holders'
 * ids: 1,000 characters came short of one with ids near their 128. Within
 * what Node takes as a request's head (16 KiB).
 */
const CURSOR_RE = /^[A-Za-z0-9_-]{1,12000}$/;

function decodeCursor(s: string | null): string | undefined {
  if (s === null || s === '') return undefined;
  if (!CURSOR_RE.test(s)) throw new HttpError(400, 'the cursor is not one this node handed out; start again without "after"');
  return Buffer.from(s, 'base64url').toString('utf8');
}

function encodeCursor(s: string | undefined): string | undefined {
  return s === undefined ? undefined : Buffer.from(s, 'utf8').toString('base64url');
}

async function list(ctx: AdminContext, res: ServerResponse, url: URL): Promise<void> {
  const q = url.searchParams;
  const type = q.get('type');
  if (!type) throw new HttpError(400, 'say which type to list with ?type=, for example ?type=Person');
  const limit = pageLimit(q);
  const after = decodeCursor(q.get('after'));
  const filters = [...q.entries()].filter(([k]) => !['type', 'limit', 'after'].includes(k));
  if (filters.length > 1) throw new HttpError(400, 'filter by one field at a time, for example ?type=Person&mail=anna@example.com');
  const page =
    filters.length === 1
      ? await ctx.store.lookup(type, filters[0]![0], filters[0]![1], { limit, after })
      : await ctx.store.list(type, { limit, after });
  sendJson(res, 200, { items: page.items.map((o) => objectJson(ctx.store, o)), next: encodeCursor(page.next) ?? null });
}

type Body = Record<string, unknown>;

function objectBody(body: unknown, allowed: string[]): Body {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) {
    throw new HttpError(400, `the body must be a JSON object with ${allowed.map((k) => `"${k}"`).join(', ')}`);
  }
  for (const k of Object.keys(body)) {
    if (!allowed.includes(k)) throw new HttpError(400, `unknown property "${k}" in the body; expected ${allowed.join(', ')}`);
  }
  return body as Body;
}

function fieldsOf(body: Body): Record<string, unknown> {
  const f = body['fields'];
  if (typeof f !== 'object' || f === null || Array.isArray(f)) {
    throw new HttpError(400, '"fields" must be a JSON object of field names to values');
  }
  for (const [k, v] of Object.entries(f)) {
    const ok = (x: unknown): boolean => typeof x === 'string' || typeof x === 'number' || typeof x === 'boolean';
    if (v !== null && !ok(v) && !(Array.isArray(v) && v.every(ok))) {
      throw new HttpError(400, `field "${k}" must be a string, number, boolean, list of those, or null`);
    }
  }
  return f as Record<string, unknown>;
}

async function create(ctx: AdminContext, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const body = objectBody(await readJson(req, ctx.maxBody), ['type', 'id', 'fields']);
  const type = typeIn(body, true)!;
  if (body['id'] !== undefined && typeof body['id'] !== 'string') throw new HttpError(400, '"id" must be a string');
  refuseSystemType(ctx, type);
  const o = await ctx.writer.create(type, fieldsOf(body), { ...writeOptions(ctx, req), id: body['id'] as string | undefined });
  sendJson(res, 201, objectJson(ctx.store, o), { etag: etag(o), location: `/api/objects/${encodeURIComponent(o.id)}` });
}

/** The body's `type`: a string, or undefined where it may be left out; anything else is a 400. */
function typeIn(body: Record<string, unknown>, required: boolean): string | undefined {
  const t = body['type'];
  if (typeof t === 'string' || (t === undefined && !required)) return t;
  throw new HttpError(400, '"type" must name a type of the schema');
}

function refuseSystemType(ctx: AdminContext, type: string | undefined): void {
  const why = builtInRefusal(ctx.store, type);
  if (why) throw new HttpError(409, why, 'built-in');
}

async function change(ctx: AdminContext, req: IncomingMessage, res: ServerResponse, id: string, method: string): Promise<void> {
  const cur = await ctx.store.get(id);
  refuseSystemType(ctx, cur?.type);
  const body = objectBody(await readJson(req, ctx.maxBody), ['fields', 'type']);
  const fields = fieldsOf(body);
  const opts = writeOptions(ctx, req);
  // (PATCH as PUT: a body that names another type is a mistake, whichever method carries it)
  const type = typeIn(body, false);
  if (cur && type !== undefined && type !== cur.type) {
    throw new HttpError(409, `${id} is a ${cur.type}, not a ${type}; an object's type never changes`, 'type-mismatch');
  }
  const o = method === 'PUT' ? await ctx.writer.replace(id, fields, opts) : await ctx.writer.update(id, fields, opts);
  sendJson(res, 200, objectJson(ctx.store, o), { etag: etag(o) });
}

async function remove(ctx: AdminContext, req: IncomingMessage, res: ServerResponse, id: string): Promise<void> {
  refuseSystemType(ctx, (await ctx.store.get(id))?.type);
  const o = await ctx.writer.delete(id, writeOptions(ctx, req));
  sendJson(res, 200, objectJson(ctx.store, o), { etag: etag(o) });
}

async function feed(ctx: AdminContext, res: ServerResponse, url: URL): Promise<void> {
  const afterText = url.searchParams.get('after') ?? '0';
  const after = /^\d+$/.test(afterText) ? Number(afterText) : NaN;
  const limit = pageLimit(url.searchParams);
  if (!Number.isSafeInteger(after) || after < 0) throw new HttpError(400, 'after must be a feed position (a whole number, 0 for the start)');
  const entries = await ctx.store.readFeed(after, limit);
  sendJson(res, 200, {
    entries: entries.map((e) => ({
      seq: e.seq,
      origin: e.origin,
      originSeq: e.originSeq,
      id: e.id,
      type: e.type,
      kind: e.kind,
      time: hlcToIso(e.hlc),
      principal: e.principal,
      fields: e.fields,
      bytes: e.update.length,
    })),
    lastSeq: ctx.store.lastSeq,
  });
}

async function conflicts(ctx: AdminContext, res: ServerResponse, url: URL): Promise<void> {
  const open = url.searchParams.get('all') !== '1';
  const limit = pageLimit(url.searchParams);
  const page = await ctx.store.conflicts({ open, limit, after: decodeCursor(url.searchParams.get('after')) });
  sendJson(res, 200, {
    items: page.items.map((c) => ({
      objectId: c.objectId,
      type: c.type,
      field: c.field,
      // a password's values are its hashes, which no surface returns (history shows such a change as secret too)
      values: ctx.store.schema.types.get(c.type)?.fields.get(c.field)?.kind === 'password' ? c.values.map((v) => ({ item: v.item, node: v.node, value: null, secret: true })) : c.values,
      winner: c.winner,
      detected: hlcToIso(c.detected),
      settled: c.settled === undefined ? null : hlcToIso(c.settled),
    })),
    next: encodeCursor(page.next) ?? null,
  });
}

async function history(ctx: AdminContext, res: ServerResponse, id: string, url: URL): Promise<void> {
  const limit = pageLimit(url.searchParams, 10000);
  const h = await ctx.store.history(id, limit);
  if (!h) {
    const purged = await ctx.store.purgedAt(id);
    if (purged?.known) throw new HttpError(404, `${id} was purged at ${hlcToIso(purged.hlc)} by ${purged.principal}; it has no history any more`, 'purged');
    if (purged) throw new HttpError(404, `${id} was purged on another node (this node has its redacted changes, not yet the purge itself); it has no history any more`, 'purged');
    throw new HttpError(404, `no object ${id}`, 'not-found');
  }
  sendJson(res, 200, {
    id: h.id,
    // whether the versions shown go back to the create: not when the feed was trimmed past it, nor when ?limit cut them
    complete: !h.truncated,
    limited: h.versions.length >= limit && h.truncated,
    firstSeq: h.firstSeq,
    versions: h.versions.map((v) => ({
      version: v.version,
      seq: v.seq,
      time: hlcToIso(v.hlc),
      origin: v.origin,
      principal: v.principal,
      kind: v.kind,
      deleted: v.deleted,
      changes: v.changes.map((c) => (c.secret ? { field: c.field, secret: true } : { field: c.field, old: c.old ?? null, new: c.new ?? null })),
    })),
  });
}

/**
 * Puts back the object's fields as they were right after the named change,
 * as one new write (validated like any other, so it is refused if those
 * values would now break the schema) made against the current version.
 * Password fields keep their current value: a revert never brings back an
 * old password.
 */
async function revert(ctx: AdminContext, req: IncomingMessage, res: ServerResponse, id: string, cur: StoredObject | undefined): Promise<void> {
  const body = objectBody(await readJson(req, ctx.maxBody), ['to']);
  const to = body['to'];
  if (typeof to !== 'string' || !parseVersionName(to)) throw new HttpError(400, '"to" must name a version as history shows it, such as "office-a#42"');
  if (!cur) throw new HttpError(404, `no object ${id}`, 'not-found');
  // (any version retained, not only the newest history() shows)
  const v = await ctx.store.historyVersion(id, to);
  if (!v) {
    throw new HttpError(
      404,
      `${cur.type} ${id} has no version ${to} in this node's retained feed${ctx.store.firstSeq() > 1 ? ` (it holds changes from feed position ${ctx.store.firstSeq()})` : ''}; "meridian history ${id}" lists the versions there are`,
      'not-found',
    );
  }
  if (cur.deleted) throw new HttpError(409, `${cur.type} ${id} is deleted; undelete it first, then revert it`, 'deleted');
  if (v.deleted) throw new HttpError(409, `version ${to} of ${cur.type} ${id} is its deletion; to delete it again, delete it`, 'deleted');
  // against the version the client names with If-Match, else the one read here
  const opts = writeOptions(ctx, req);
  const o = await ctx.writer.replace(id, v.fields, { ...opts, ifVersion: opts.ifVersion ?? cur.version }).catch((e: unknown) => {
    throw prefixed(e, `cannot revert ${cur.type} ${id} to ${to}: `);
  });
  sendJson(res, 200, objectJson(ctx.store, o), { etag: etag(o) });
}

async function purge(ctx: AdminContext, res: ServerResponse, id: string, cur: StoredObject | undefined): Promise<void> {
  if (ctx.role !== 'master') throw new HttpError(409, 'purges are made on a master only; send this request to a master', 'not-master');
  const r = await ctx.store.purge(id, { principal: ctx.principal });
  sendJson(res, 200, { id, type: cur?.type ?? null, purged: true, redactedFeedEntries: r.erased, lastSeq: ctx.store.lastSeq });
}

/** A consistent snapshot of the node's whole LevelDB, streamed in the backup format (docs/formats/backup.md). */
async function backup(ctx: AdminContext, res: ServerResponse, url: URL): Promise<void> {
  const snap = ctx.store.backupSnapshot();
  try {
    res.writeHead(200, {
      'content-type': 'application/vnd.meridian.backup',
      'content-disposition': `attachment; filename="${snap.header.node}-${snap.header.taken.replace(/[:.]/g, '-')}.mbak"`,
      // counting reads every key once more before the first byte goes out: only for a client that shows progress
      ...(url.searchParams.get('count') === '1' ? { 'x-meridian-records': String(await snap.count()) } : {}),
    });
    await pipeline(Readable.from(encodeBackup(snap.header, snap.batches)), res);
  } finally {
    await snap.close();
  }
}

function prefixed(e: unknown, prefix: string): unknown {
  if (e instanceof Error && (isMeridianError(e) || e instanceof HttpError)) e.message = prefix + e.message;
  return e;
}
