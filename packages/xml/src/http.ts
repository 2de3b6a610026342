import type { IncomingMessage, ServerResponse } from 'node:http';
import { XmlError } from './format.js';

export const XML_TYPE = 'application/xml; charset=utf-8';

/** Refuses a body that is not XML (415) before reading it. */
export function requireXml(req: IncomingMessage): void {
  const type = (req.headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase();
  if (type !== 'application/xml' && type !== 'text/xml') {
    throw new XmlError(415, `send the body as application/xml, not ${type || 'no content type'}`);
  }
  const charset = /charset=([^;]+)/i.exec(req.headers['content-type'] ?? '')?.[1]?.trim().replace(/"/g, '').toLowerCase();
  if (charset !== undefined && charset !== 'utf-8' && charset !== 'utf8') throw new XmlError(415, `send the body as UTF-8, not ${charset}`);
}

/** Reads a whole body of at most `limit` bytes as UTF-8 (413 past it, 400 for bad UTF-8). */
export function readText(req: IncomingMessage, limit: number): Promise<string> {
  const declared = Number(req.headers['content-length'] ?? NaN);
  if (declared > limit) {
    req.resume();
    return Promise.reject(new XmlError(413, `the body is larger than the limit of ${limit} bytes`));
  }
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > limit) {
        req.removeAllListeners('data');
        req.resume();
        reject(new XmlError(413, `the body is larger than the limit of ${limit} bytes`));
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => {
      try {
        resolve(new TextDecoder('utf-8', { fatal: true }).decode(Buffer.concat(chunks)));
      } catch {
        reject(new XmlError(400, 'the body is not valid UTF-8'));
      }
    });
    req.on('error', reject);
  });
}

export function sendXml(res: ServerResponse, status: number, body: string | Buffer, headers: Record<string, string> = {}, head = false): void {
  res.writeHead(status, { 'content-type': XML_TYPE, 'content-length': typeof body === 'string' ? Buffer.byteLength(body) : body.length, 'cache-control': 'no-cache', ...headers });
  res.end(head ? undefined : body);
}

/** Writes and waits for the socket to take more when it is full (streams). */
export function write(res: ServerResponse, chunk: string): Promise<void> | undefined {
  if (res.write(chunk)) return undefined;
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

/** Whether If-None-Match matches this version (or is `*`). */
export function noneMatch(req: IncomingMessage, version: string | undefined): boolean {
  const h = req.headers['if-none-match'];
  if (h === undefined) return false;
  if (h.trim() === '*') return version !== undefined;
  return version !== undefined && h.split(',').some((t) => t.trim().replace(/^W\//, '') === `"${version}"`);
}
