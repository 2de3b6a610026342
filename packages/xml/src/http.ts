import type { IncomingMessage, ServerResponse } from 'node:http';
import { XmlError } from './format.js';

export const XML_TYPE = 'application/xml; charset=utf-8';

/**
 * The charset parameter of a request's Content-Type, lower case, if it has one: by the parameter's
 * name, a quoted value read whole (a match anywhere in the header found it in another parameter's
 * value, as did a split at each ";" in profile="a;charset=latin1").
 */
export function charsetOf(req: IncomingMessage): string | undefined {
  let charset: string | undefined;
  for (const m of (req.headers['content-type'] ?? '').matchAll(/;\s*([^=;\s]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;]*)/g)) {
    if (m[1]!.toLowerCase() === 'charset') charset = m[2]!.trim().replace(/"/g, '').toLowerCase();
  }
  return charset;
}

/** Refuses a body that is not XML (415) before reading it. */
export function requireXml(req: IncomingMessage): void {
  const type = (req.headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase();
  if (type !== 'application/xml' && type !== 'text/xml') {
    throw new XmlError(415, `send the body as application/xml, not ${type || 'no content type'}`);
  }
  const charset = charsetOf(req);
  if (charset !== undefined && charset !== 'utf-8' && charset !== 'utf8') throw new XmlError(415, `send the body as UTF-8, not ${charset}`);
}

/** A body as UTF-8 text; bad UTF-8 is the client's error. */
export function utf8(body: Buffer): string {
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(body);
  } catch {
    throw new XmlError(400, 'the body is not valid UTF-8');
  }
}

/** What every answer's caches are told unless it says otherwise: keep it, but ask again (with its ETag) before using it. */
export const CACHE_CONTROL = 'no-cache';

export function sendXml(res: ServerResponse, status: number, body: string | Buffer, headers: Record<string, string> = {}, head = false): void {
  res.writeHead(status, { 'content-type': XML_TYPE, 'content-length': typeof body === 'string' ? Buffer.byteLength(body) : body.length, 'cache-control': CACHE_CONTROL, ...headers });
  res.end(head ? undefined : body);
}

/**
 * Calls `fn` when the client goes away: on the response's close (not the
 * request's, which comes once the request has been read, Node 16 on, while
 * its client may still wait), or, if it closed before this was called
 * (while the request was signed in), when no 'close' is to come, in a
 * microtask (so the caller has what this returns first). Returns what stops
 * listening.
 */
export function onClosed(res: ServerResponse, fn: () => void): () => void {
  res.once('close', fn);
  if (res.destroyed) queueMicrotask(fn);
  return () => res.off('close', fn);
}

/** Writes and waits for the socket to take more when it is full (streams). */
export function write(res: ServerResponse, chunk: string): Promise<void> | undefined {
  if (res.write(chunk)) return undefined;
  // closed already: no 'close' is to come, and no 'drain'
  if (res.destroyed) return Promise.reject(new Error('the client went away'));
  return new Promise((resolve, reject) => {
    const done = (): void => {
      res.off('drain', done);
      res.off('close', closed);
      resolve();
    };
    const closed = (): void => {
      res.off('drain', done);
      reject(new Error('the client went away'));
    };
    res.once('drain', done);
    res.once('close', closed);
  });
}

/** The version an If-Match names; `*` is "any". */
export function ifMatch(req: IncomingMessage): string | '*' | undefined {
  const h = req.headers['if-match'];
  if (h === undefined) return undefined;
  if (h.trim() === '*') return '*';
  const m = /^\s*"([^"]*)"\s*$/.exec(h);
  if (!m) throw new XmlError(400, 'If-Match must be one quoted version, as sent in ETag (weak tags are not accepted for writes)');
  return m[1];
}

/**
 * Whether a read's If-Match holds for this version, undefined with none. A
 * read may name several tags (RFC 9110 13.1.1), each compared strongly, so
 * a weak tag never holds; writes take one strong tag only (ifMatch).
 */
export function ifMatchHolds(req: IncomingMessage, version: string): boolean | undefined {
  const h = req.headers['if-match'];
  if (h === undefined) return undefined;
  if (h.trim() === '*') return true;
  return h.split(',').some((t) => t.trim() === `"${version}"`);
}

/** Whether If-None-Match matches this version (or is `*`). */
export function noneMatch(req: IncomingMessage, version: string | undefined): boolean {
  const h = req.headers['if-none-match'];
  if (h === undefined) return false;
  if (h.trim() === '*') return version !== undefined;
  return version !== undefined && h.split(',').some((t) => t.trim().replace(/^W\//, '') === `"${version}"`);
}

/** The user and password of an HTTP Basic Authorization header value, if it is one. */
export function parseBasic(h: string | undefined): { user: string; password: string } | undefined {
  if (!h || !/^basic /i.test(h)) return undefined;
  const decoded = Buffer.from(h.slice(6).trim(), 'base64').toString('utf8');
  const i = decoded.indexOf(':');
  if (i < 0) return undefined;
  return { user: decoded.slice(0, i), password: decoded.slice(i + 1) };
}

export function basicCredentials(req: IncomingMessage): { user: string; password: string } | undefined {
  return parseBasic(req.headers.authorization);
}
