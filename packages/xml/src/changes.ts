import type { IncomingMessage, ServerResponse } from 'node:http';
import { hlcToIso, type FeedEntry, type Store } from '@meridian/store';
import { escapeAttr, XML_DECLARATION, XmlError } from './format.js';
import { onClosed, sendXml, write } from './http.js';

const PAGE = 1000;

/** an SSE comment this often keeps proxies from closing an idle stream */
const SSE_KEEPALIVE_MS = 15_000;

/** The header that tells where this node's changes feed is now: on every /changes answer, a 410 included, and on /export. */
export const POSITION_HEADER = 'meridian-changes-position';

/**
 * Where a reader of this node's changes feed is: `<feed>-<epoch>-<seq>`,
 * the feed's tag (Store.feedTag), how many states frames had stored objects
 * without feed entries (Store.statesEpoch), and the last feed seq read.
 * A bare seq could not tell a clone's or a repair's states, which the feed
 * never names, nor a position of another node's feed.
 */
export function changesPosition(store: Store, epoch = store.statesEpoch, seq = store.lastSeq): string {
  return `${store.feedTag}-${epoch}-${seq}`;
}

const POSITION = /^([0-9a-f]{8})-(\d{1,15})-(\d{1,15})$/;

/** Why a position can no longer be read on from: the reason an SSE reset event gives. */
type ResetReason = 'states' | 'trimmed' | 'position';

/** A position the reader must give up: it drops what it holds from this node, and goes on from the feed's head. */
class StartAgain {
  constructor(
    readonly reason: ResetReason,
    readonly why: string,
  ) {}
}

/** The 410 a long poll gets for it, which says where to go on from. */
function gone(store: Store, s: StartAgain): XmlError {
  const now = changesPosition(store);
  return new XmlError(410, `${s.why}; drop what you hold from this node (or reload it: GET /export) and continue from ${now}`, undefined, { [POSITION_HEADER]: now });
}

const merged = (position: string): StartAgain => new StartAgain('states', `objects were stored here without feed entries (a clone, or a repair from a peer) after position ${position}, so the feed cannot name them`);
const trimmed = (upTo: number): StartAgain => new StartAgain('trimmed', `changes up to ${upTo} are no longer kept here`);

/**
 * The position a request names, checked against the feed as it is now.
 * `now` is the feed's head (a cache that holds nothing yet); `0` its start,
 * which describes every object only while nothing was trimmed and nothing
 * stored without a feed entry.
 */
function startingPoint(store: Store, text: string, name: string): { epoch: number; seq: number } | StartAgain {
  const epoch = store.statesEpoch;
  if (text === 'now') return { epoch, seq: store.lastSeq };
  if (text === '0') {
    if (epoch > 0) return new StartAgain('states', 'objects were stored here without feed entries (a clone, or a repair from a peer), so the feed from its start does not name them all');
    if (store.firstSeq() > 1) return trimmed(store.firstSeq() - 1);
    return { epoch, seq: 0 };
  }
  // (what a cache of an older release holds: its place cannot be told, but it can start again)
  if (/^\d{1,15}$/.test(text)) return new StartAgain('position', `position ${text} is a bare feed seq, from before positions named their feed and epoch`);
  const m = POSITION.exec(text);
  if (!m) throw new XmlError(400, `${name} must be a position this feed gave out (an answer's last, or an event's id), now for changes from here on, or 0 for the start`);
  const [, tag, epochText, seqText] = m;
  const at = { epoch: Number(epochText), seq: Number(seqText) };
  if (tag !== store.feedTag) return new StartAgain('position', `position ${text} is another node's, or from before this node's data dir was made again`);
  // positions are this node's own: one past its feed is from a copy of the data dir put back, and waiting for it would skip every change until then
  if (at.epoch > epoch || at.seq > store.lastSeq) return new StartAgain('position', `position ${text} is past this node's changes feed, which is at ${changesPosition(store)}`);
  if (at.epoch < epoch) return merged(text);
  if (at.seq < store.firstSeq() - 1) return trimmed(store.firstSeq() - 1);
  return at;
}

/** ms a long poll waits at most (its `timeout` may ask for less) */
const POLL_MAX_MS = 30_000;

/**
 * `GET /changes?since=POSITION`: which objects changed after a position of
 * this node's changes feed, for external caches to invalidate. As a long
 * poll it answers at once when there are changes, or waits up to `timeout`
 * seconds for the next; with `Accept: text/event-stream` it streams them as
 * Server-Sent Events, resuming after Last-Event-ID. Each change names the
 * object's id, type and its version now (the ETag a cache should hold).
 * A position the feed can no longer read on from (see changesPosition) is
 * answered 410 to a long poll, and with a reset event to a stream: an
 * EventSource treats any answer but 200 as the end, for good.
 */
export async function changesFeed(store: Store, req: IncomingMessage, res: ServerResponse, url: URL, allowed: () => Promise<boolean> = async () => true): Promise<void> {
  const sse = (req.headers.accept ?? '').includes('text/event-stream');
  // a reconnecting EventSource repeats its URL: Last-Event-ID, when sent, is where it really is
  const lastEvent = sse ? req.headers['last-event-id'] : undefined;
  const fromEvent = typeof lastEvent === 'string' && lastEvent !== '';
  const sinceText = (fromEvent ? lastEvent : undefined) ?? url.searchParams.get('since') ?? '0';
  const start = startingPoint(store, sinceText, fromEvent ? 'Last-Event-ID' : 'since');
  if (start instanceof StartAgain) {
    if (sse) return stream(store, res, store.statesEpoch, store.lastSeq, allowed, start.reason);
    throw gone(store, start);
  }
  const { epoch, seq: since } = start;
  if (sse) return stream(store, res, epoch, since, allowed);
  const timeoutText = url.searchParams.get('timeout');
  const timeout = timeoutText === null ? POLL_MAX_MS : Number(timeoutText) * 1000;
  if (!Number.isFinite(timeout) || timeout < 0 || timeout > POLL_MAX_MS) throw new XmlError(400, `timeout must be 0 to ${POLL_MAX_MS / 1000} seconds`);
  let entries = await store.readFeed(since, PAGE);
  if (entries.length === 0 && timeout > 0) {
    await new Promise<void>((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        unsubscribe();
        stopListening();
        resolve();
      };
      const unsubscribeFeed = store.subscribe(done);
      // (objects stored without feed entries end the wait too: the answer is then a 410)
      const stopStates = store.onStates(() => {
        if (store.statesEpoch !== epoch) done();
      });
      const timer = setTimeout(done, timeout);
      const stopListening = onClosed(res, done);
      const unsubscribe = (): void => {
        unsubscribeFeed();
        stopStates();
      };
      // a change made durable while the feed was read above came before the subscription
      if (store.lastSeq > since || store.statesEpoch !== epoch) done();
    });
    if (res.destroyed) return;
    // up to the wait's end: a sign-in reset or demoted meanwhile gets nothing it waited for
    if (!(await allowed())) throw new XmlError(403, 'the changes feed is for the admin and staff, which this sign-in no longer is; sign in again');
    if (store.statesEpoch !== epoch) throw gone(store, merged(changesPosition(store, epoch, since)));
    entries = await store.readFeed(since, PAGE);
  }
  // A trim may have deleted entries after the checks above: it deletes from the start and the feed's seqs follow
  // one another, so the first entry read tells (the entries after a deleted range would have been answered as if
  // they came next). Objects stored without feed entries meanwhile need no check here: the position this answer
  // gives out names the epoch it was checked under, so the next request is told to start again.
  if (entries.length && entries[0]!.seq !== since + 1) throw gone(store, trimmed(entries[0]!.seq - 1));
  const last = entries.length ? entries[entries.length - 1]!.seq : since;
  const from = changesPosition(store, epoch, since);
  const to = changesPosition(store, epoch, last);
  let body = `${XML_DECLARATION}<changes since="${from}" last="${to}">\n`;
  // fetched together, so the store's read batcher can group the reads
  for (const line of await Promise.all(entries.map((e) => changeXml(store, e)))) body += `  ${line}\n`;
  body += '</changes>\n';
  sendXml(res, 200, body, { [POSITION_HEADER]: to });
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
 * (checked before each batch and after each keep-alive comment: a password changed or a
 * role removed), so that its reconnect is answered 401 or 403 rather than
 * the stream going on for someone no longer allowed. When the feed can no
 * longer say what changed after the stream's position (trimmed past it, a
 * client too slow to read; or objects stored without feed entries) it sends
 * a `reset` event, whose id is the feed's head: the client drops what it
 * holds and reads on.
 */
async function stream(store: Store, res: ServerResponse, startEpoch: number, since: number, allowed: () => Promise<boolean>, resetFirst?: ResetReason): Promise<void> {
  // (X-Accel-Buffering: nginx, the usual proxy in front, would otherwise hold events back until its buffer fills)
  const start = changesPosition(store, startEpoch, since);
  res.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache', connection: 'keep-alive', 'x-accel-buffering': 'no', [POSITION_HEADER]: start });
  // The start as an id at once: an id-only block sets an EventSource's last event id without an event.
  // Without it, a stream opened with since=now that dropped before its first change reconnected with
  // the same URL and no Last-Event-ID, at the head of then, and what changed in between never came.
  // (a stream that starts with a reset has the reset's id for that)
  res.write(resetFirst ? ': meridian changes feed\n\n' : `: meridian changes feed\nid: ${start}\n\n`);
  let epoch = startEpoch;
  let cursor = since;
  // (both taken at once: a client that drops everything holds nothing older than the head)
  const reset = (why: ResetReason): string => {
    epoch = store.statesEpoch;
    cursor = store.lastSeq;
    return `id: ${changesPosition(store, epoch, cursor)}\nevent: reset\ndata: <reset reason="${why}"/>\n\n`;
  };
  // (a position given up: the client is told before anything else, and reads on from the head)
  if (resetFirst) res.write(reset(resetFirst));
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
          if (!(await allowed())) {
            stop('end');
            break;
          }
          if (closed) break;
          if (store.statesEpoch !== epoch || cursor < store.firstSeq() - 1) {
            await write(res, reset(store.statesEpoch !== epoch ? 'states' : 'trimmed'));
            continue;
          }
          const entries = await store.readFeed(cursor, PAGE);
          if (closed) break;
          // (trimmed past between the check and the read: as trimmed before it)
          if (entries.length && entries[0]!.seq !== cursor + 1) {
            await write(res, reset('trimmed'));
            continue;
          }
          if (entries.length === 0) break;
          const lines = await Promise.all(entries.map((e) => changeXml(store, e)));
          const out = entries.map((e, i) => `id: ${changesPosition(store, epoch, e.seq)}\nevent: change\ndata: ${lines[i]}\n\n`).join('');
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
  const unsubscribeFeed = store.subscribe(() => void pump());
  const stopStates = store.onStates(() => {
    if (store.statesEpoch !== epoch) void pump();
  });
  const unsubscribe = (): void => {
    unsubscribeFeed();
    stopStates();
  };
  // (the pump checks the sign-in and the trims: a stream nothing is written to hears of them too)
  const keepalive = setInterval(() => {
    if (closed) return;
    res.write(': keep-alive\n\n');
    void pump();
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
