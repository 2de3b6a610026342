import type { IncomingMessage, ServerResponse } from 'node:http';
import { isMeridianError, type ErrorCode } from '@meridian/store';

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

const STATUS: Record<ErrorCode, number> = {
  validation: 422,
  'not-found': 404,
  exists: 409,
  precondition: 412,
  'bad-request': 400,
  closed: 503,
  locked: 503,
  forbidden: 403,
};

export function toHttpError(e: unknown): HttpError {
  if (e instanceof HttpError) return e;
  if (isMeridianError(e)) {
    const field = (e as { field?: string }).field;
    return new HttpError(STATUS[e.code], e.message, e.code, {}, field);
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
    req.on('error', reject);
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
  const body = await readBody(req, limit);
  try {
    return JSON.parse(body.toString('utf8'));
  } catch (e) {
    throw new HttpError(400, `the body is not valid JSON (${(e as Error).message})`, 'bad-json');
  }
}

// one parser of Basic credentials for every surface
export { basicCredentials } from '@meridian/xml';
