import type { IncomingMessage, ServerResponse } from 'node:http';
import { hlcToIso, type FeedEntry, type Store } from '@meridian/store';
import { escapeAttr, XML_DECLARATION, XmlError } from './format.js';
import { onClosed, sendXml, write } from './http.js';

const PAGE = 1000;
/** an SSE comment this often keeps proxies from closing an idle stream */
const SSE_KEEPALIVE_MS = 15_000;

/**
 * `GET /changes?since=SEQ`: which objects changed after a position of this
 * node's changes feed, for external caches to invalidate. As a long poll it
 * answers at once when there are changes, or waits up to `timeout` seconds
 * for the next; with `Accept: text/event-stream` it streams them as
 * Server-Sent Events, resuming after Last-Event-ID. Each change names the
 * object's id, type and its version now (the ETag a cache should hold).
 */
export async function changesFeed(store: Store, req: IncomingMessage, res: ServerResponse, url: URL, maxWait: number, allowed: () => Promise<boolean> = async () => true): Promise<void> {
  const sse = (req.headers.accept ?? '').includes('text/event-stream');
  // a reconnecting EventSource repeats its URL: Last-Event-ID, when sent, is where it really is
  const lastEvent = sse ? req.headers['last-event-id'] : undefined;
  const sinceText = (typeof lastEvent === 'string' && lastEvent !== '' ? lastEvent : undefined) ?? url.searchParams.get('since') ?? '0';
  const since = Number(sinceText);
  if (!Number.isSafeInteger(since) || since < 0) throw new XmlError(400, 'since must be a feed position: a whole number, 0 for the start');
  const trimmed = store.firstSeq() - 1;
  if (since < trimmed) {
    throw new XmlError(410, `changes up to ${trimmed} are no longer kept here; reload everything (GET /export) and continue from ${store.lastSeq}`);
  }
  // positions are this node's own: one past its feed is another node's, or from before a restore, and waiting for it would skip every change until then
  if (since > store.lastSeq) {
    throw new XmlError(410, `position ${since} is past this node's changes feed, which ends at ${store.lastSeq}: it is another node's position, or older than a restore of this one; reload everything (GET /export) and continue from ${store.lastSeq}`);
  }
  if (sse) return stream(store, res, since, allowed);
  const timeoutText = url.searchParams.get('timeout');
  const timeout = timeoutText === null ? maxWait : Number(timeoutText) * 1000;
  if (!Number.isFinite(timeout) || timeout < 0 || timeout > maxWait) throw new XmlError(400, `timeout must be 0 to ${maxWait / 1000} seconds`);
  let entries = await store.readFeed(since, PAGE);
  if (entries.length === 0 && timeout > 0) {
    await new Promise<void>((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        unsubscribe();
        stopListening();
        resolve();
      };
      const unsubscribe = store.subscribe(done);
      const timer = setTimeout(done, timeout);
      const stopListening = onClosed(res, done);
      // a change made durable while the feed was read above came before the subscription
      if (store.lastSeq > since) done();
    });
    if (res.destroyed) return;
    // up to the wait's end: a sign-in reset or demoted meanwhile gets nothing it waited for
    if (!(await allowed())) throw new XmlError(403, 'the changes feed is for the admin and staff, which this sign-in no longer is; sign in again');
    entries = await store.readFeed(since, PAGE);
  }
  // A trim may have deleted entries after the check above: the feed's seqs follow one another, so the first
  // entry read tells (the entries after a deleted range would have been answered as if they came next).
  if (entries.length && entries[0]!.seq !== since + 1) {
    throw new XmlError(410, `changes up to ${entries[0]!.seq - 1} are no longer kept here; reload everything (GET /export) and continue from ${store.lastSeq}`);
  }
  const last = entries.length ? entries[entries.length - 1]!.seq : since;
  let body = `${XML_DECLARATION}<changes since="${since}" last="${last}">\n`;
  // fetched together, so the store's read batcher can group the reads
  for (const line of await Promise.all(entries.map((e) => changeXml(store, e)))) body += `  ${line}\n`;
  body += '</changes>\n';
  sendXml(res, 200, body);
}

async function changeXml(store: Store, e: FeedEntry): Promise<string> {
  const o = await store.get(e.id);
  const version = o ? ` version="${escapeAttr(o.version)}"` : '';
  // to a cache, any change of a purged object (redacted, or the purge itself) says the same: drop it
  const kind = e.kind === 'redacted' ? 'purge' : e.kind;
  return `<change seq="${e.seq}" id="${escapeAttr(e.id)}" type="${escapeAttr(e.type)}" kind="${kind}"${version} time="${hlcToIso(e.hlc)}"${o?.deleted ? ' deleted="true"' : ''}/>`;
}

/**
 * The SSE stream. It ends when the client's sign-in stops being allowed
 * (checked before each batch and each keep-alive: a password changed or a
 * role removed), and when the feed is trimmed past its position (a client
 * too slow to read), so that its reconnect is answered 401, 403 or 410
 * rather than the stream going on for someone no longer allowed, or with a
 * gap.
 */
async function stream(store: Store, res: ServerResponse, since: number, allowed: () => Promise<boolean>): Promise<void> {
  res.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache', connection: 'keep-alive' });
  res.write(': meridian changes feed\n\n');
  let cursor = since;
  let busy = false;
  let again = false;
  let closed = false;
  // set by the first of: the client went away, or this side ends the stream; nothing is written after it
  let stop!: (how: 'end' | 'destroy') => void;
  const pump = async (): Promise<void> => {
    if (busy) {
      again = true;
      return;
    }
    busy = true;
    try {
      do {
        again = false;
        for (;;) {
          if (closed) break;
          if (cursor < store.firstSeq() - 1 || !(await allowed())) {
            stop('end');
            break;
          }
          const entries = await store.readFeed(cursor, PAGE);
          if (entries.length === 0 || closed) break;
          // (trimmed past between the check and the read: as trimmed before it)
          if (entries[0]!.seq !== cursor + 1) {
            stop('end');
            break;
          }
          const lines = await Promise.all(entries.map((e) => changeXml(store, e)));
          const out = entries.map((e, i) => `id: ${e.seq}\nevent: change\ndata: ${lines[i]}\n\n`).join('');
          cursor = entries[entries.length - 1]!.seq;
          if (closed) break;
          // (write() also gives up when the client goes away while the socket is full)
          await write(res, out);
        }
      } while (again && !closed);
    } catch {
      stop('destroy');
    } finally {
      busy = false;
    }
  };
  const unsubscribe = store.subscribe(() => void pump());
  const keepalive = setInterval(() => {
    void allowed().then(
      (yes) => {
        if (closed) return;
        if (yes) res.write(': keep-alive\n\n');
        else stop('end');
      },
      () => stop('destroy'),
    );
  }, SSE_KEEPALIVE_MS);
  await new Promise<void>((resolve) => {
    stop = (how) => {
      if (closed) return;
      closed = true;
      clearInterval(keepalive);
      unsubscribe();
      resolve();
      if (how === 'end') res.end();
      else if (!res.destroyed) res.destroy();
    };
    onClosed(res, () => stop('destroy'));
    void pump();
  });
}
