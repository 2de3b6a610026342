import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';

/** Connections being closed after an answer begun before a large body was read (see lingerClose). */
const lingering = new WeakSet<Socket>();

/**
 * Whether this request came on such a connection, so that closeStalled sets
 * it aside: the node's handler leaves it unanswered. (A listener cannot stop
 * the server's other 'request' listeners: the handler asks.)
 */
export function setAside(req: IncomingMessage): boolean {
  return lingering.has(req.socket);
}

/**
 * The node's HTTP idle timeout. A connection that has neither sent nor
 * taken a byte for `ms` is closed when the node is waiting on its client:
 * a request body that stopped arriving, or an answer the client stopped
 * reading (the socket holds bytes it could not hand to the kernel). One on
 * which the node itself is at work (a digest of a large store, a long
 * poll, a write waiting for its master) is checked again after another
 * `ms`. Between requests, keepAliveTimeout applies as before. It also
 * closes a connection answered before a large body was read (lingerClose).
 */
export function closeStalled(server: Server, ms: number): void {
  server.timeout = ms;
  // (each socket's latest answer, whose request is res.req: one finished stands for none)
  const current = new WeakMap<Socket, ServerResponse>();
  server.prependListener('request', (req: IncomingMessage, res: ServerResponse) => {
    const socket = req.socket;
    // A request that follows, on a connection being closed, one answered before its body arrived: the client
    // sent it before it saw this side's end. It is not run (its answer could not be sent), and the linger closes
    // the connection as it would have (a reset now could take the answer before it from a client yet to read it).
    if (lingering.has(socket)) return;
    current.set(socket, res);
    // A body of more than a few packets, not read to its end when the answer begins: the answer says the
    // connection closes, and the node closes it after a linger, rather than read the rest to keep it.
    // (A small rest Node reads and drops, and the connection is kept, as before.)
    const declared = Number(req.headers['content-length'] ?? 0);
    if (!(declared > LINGER_ABOVE_BYTES || req.headers['transfer-encoding'] !== undefined)) return;
    let closing = false;
    const writeHead = res.writeHead;
    res.writeHead = function (this: ServerResponse, ...args: unknown[]) {
      if (!req.complete && !closing) {
        closing = true;
        res.shouldKeepAlive = false;
        // Node ends a connection whose answer closes it with destroySoon(): gone as soon as the answer is
        // out, with the client's bytes unread, which resets the connection. lingerClose ends it instead.
        socket.destroySoon = () => socket.end();
      }
      return (writeHead as (...a: unknown[]) => ServerResponse).apply(this, args);
    } as typeof res.writeHead;
    res.once('finish', () => {
      if (!closing) return;
      lingering.add(socket);
      lingerClose(socket, req);
    });
  });
  // (with a listener here Node no longer destroys a socket that timed out: this does, when it should)
  server.on('timeout', (socket: Socket) => {
    const res = current.get(socket);
    judge(socket, res && { req: res.req, res }, ms);
  });
}

/** The same for a request answered outside the server (see node.ts, answerWithoutUpgrade): its socket is the node's to watch. */
export function closeStalledAside(socket: Socket, req: IncomingMessage, res: ServerResponse, ms: number): void {
  socket.setTimeout(ms);
  socket.on('timeout', () => judge(socket, { req, res }, ms));
}

/** Bytes of a request body left unread past which its connection is closed rather than read to the end (a few packets: Node reads smaller rests, and keeps the connection). */
const LINGER_ABOVE_BYTES = 64 * 1024;

/** As Apache lingers: a connection being closed is read, and what comes dropped, while bytes come at most this far apart, and this long in all. */
const LINGER_GAP_MS = 2000;
const LINGER_MAX_MS = 30_000;

/**
 * Closes a connection answered before its request's body was read (a 401,
 * a 413, a 415, an import refused midway): Node would otherwise read the
 * rest of the body, however large or slow, to keep the connection. The
 * answer goes out first, then this side's end; what the client still sends
 * is read and dropped while it keeps coming, for a while, since a close
 * with unread bytes resets the connection, and a client whose kernel sees
 * the reset before it has read the answer loses it (one that sends its
 * whole body before it reads the answer would never see it).
 */
function lingerClose(socket: Socket, req: IncomingMessage): void {
  if (socket.destroyed) return;
  // (a handler that began reading the body and stopped holds it paused: let the rest flow, to nobody)
  req.removeAllListeners('readable');
  req.removeAllListeners('data');
  process.nextTick(() => req.resume());
  socket.end();
  const done = (): void => {
    clearTimeout(gap);
    clearTimeout(cap);
    socket.off('data', more);
    socket.destroy();
  };
  let gap = setTimeout(done, LINGER_GAP_MS);
  const cap = setTimeout(done, LINGER_MAX_MS);
  const more = (): void => {
    clearTimeout(gap);
    gap = setTimeout(done, LINGER_GAP_MS);
  };
  socket.on('data', more);
  socket.once('end', done);
  socket.once('close', done);
}

function judge(socket: Socket, at: { req: IncomingMessage; res: ServerResponse } | undefined, ms: number): void {
  if (!at || at.res.writableFinished || waitsOnClient(at.req, at.res, socket)) socket.destroy();
  else socket.setTimeout(ms);
}

function waitsOnClient(req: IncomingMessage, res: ServerResponse, socket: Socket): boolean {
  // (a body the handler stopped reading, bytes of it held unread, is the node's stall, not the client's)
  return (!req.complete && req.readableLength === 0) || res.writableNeedDrain || socket.writableLength > 0;
}
