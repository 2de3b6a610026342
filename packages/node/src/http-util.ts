import type { IncomingMessage, ServerResponse } from 'node:http';
import { isMeridianError, type ErrorCode } from '@meridian/store';
import { charsetOf } from '@meridian/xml';

/** An error meant for the HTTP client: a status and one sentence. */
export class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly code: string = 'bad-request',
    readonly headers: Record<string, string> = {},
    readonly field?: string,
  ) {
    super(message);
  }
}

/** 405 for a method the path does not take, with the Allow header listing those it does. */
export function methodNotAllowed(method: string, allowed: string): HttpError {
  return new HttpError(405, `${method} is not allowed here; use ${allowed}`, 'method-not-allowed', { allow: allowed });
}

const STATUS: Record<ErrorCode, number> = {
  validation: 422,
  'not-found': 404,
  exists: 409,
  precondition: 412,
  'bad-request': 400,
  closed: 503,
  locked: 503,
  busy: 503,
  forbidden: 403,
  conflict: 409,
};

export function toHttpError(e: unknown): HttpError {
  if (e instanceof HttpError) return e;
  if (isMeridianError(e)) {
    const field = (e as { field?: string }).field;
    return new HttpError(STATUS[e.code], e.message, e.code, e.code === 'busy' ? { 'retry-after': '1' } : {}, field);
  }
  return new HttpError(500, 'internal error; the node log has the details', 'internal');
}

export function sendJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    'content-type': 'application/json; charset=utf-8',
    'content-length': Buffer.byteLength(text),
    'cache-control': 'no-store',
    ...headers,
  });
  res.end(text);
}

export function sendError(res: ServerResponse, e: HttpError): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const error: Record<string, string> = { code: e.code, message: e.message };
  if (e.field) error['field'] = e.field;
  sendJson(res, e.status, { error }, e.headers);
}

/**
 * Reads a request body up to `limit` bytes. A declared length over the limit
 * is refused before reading; a body that grows past it is cut off.
 */
export function readBody(req: IncomingMessage, limit: number): Promise<Buffer> {
  const declared = Number(req.headers['content-length'] ?? NaN);
  if (declared > limit) return Promise.reject(tooLarge(limit));
  return new Promise((resolve, reject) => {
    // A client gone before this was called (while the request was signed in) emits no 'error' or 'end'
    // any more: without these the promise, and the handler awaiting it, would wait for good.
    // (complete is no help: a body that came with the headers is dropped when its client leaves before it is read)
    if (req.destroyed && !req.readableEnded) {
      reject(new HttpError(400, 'the client closed the connection before its body was read', 'bad-request'));
      return;
    }
    req.once('close', () => {
      if (!req.readableEnded) reject(new HttpError(400, 'the client closed the connection before its body was read', 'bad-request'));
    });
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > limit) {
        req.removeAllListeners('data');
        req.resume();
        reject(tooLarge(limit));
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => resolve(Buffer.concat(chunks)));
    // (the client's doing, not the node's: no 500, no error in the log)
    req.on('error', () => reject(new HttpError(400, 'the client closed the connection before its body was read', 'bad-request')));
  });
}

function tooLarge(limit: number): HttpError {
  return new HttpError(413, `request body is larger than the limit of ${limit} bytes`, 'too-large');
}

export async function readJson(req: IncomingMessage, limit: number): Promise<unknown> {
  const type = (req.headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase();
  if (type !== 'application/json') {
    throw new HttpError(415, `send the body as application/json, not ${type || 'no content type'}`, 'unsupported-media-type');
  }
  const charset = charsetOf(req);
  if (charset !== undefined && charset !== 'utf-8' && charset !== 'utf8') throw new HttpError(415, `send the body as UTF-8, not ${charset}`, 'unsupported-media-type');
  const body = await readBody(req, limit);
  let text: string;
  try {
    // (toString would store U+FFFD for every bad byte, and replicate it)
    text = new TextDecoder('utf-8', { fatal: true }).decode(body);
  } catch {
    throw new HttpError(400, 'the body is not valid UTF-8', 'bad-json');
  }
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new HttpError(400, `the body is not valid JSON (${(e as Error).message})`, 'bad-json');
  }
}

// one parser of Basic credentials for every surface
export { basicCredentials } from '@meridian/xml';
