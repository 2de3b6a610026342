import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';

/**
 * The node's HTTP idle timeout. A connection that has neither sent nor
 * taken a byte for `ms` is closed when the node is waiting on its client:
 * a request body that stopped arriving, or an answer the client stopped
 * reading (the socket holds bytes it could not hand to the kernel). One on
 * which the node itself is at work (a digest of a large store, a long
 * poll, a write waiting for its master) is checked again after another
 * `ms`. Between requests, keepAliveTimeout applies as before.
 */
export function closeStalled(server: Server, ms: number): void {
  server.timeout = ms;
  const current = new WeakMap<Socket, { req: IncomingMessage; res: ServerResponse }>();
  server.prependListener('request', (req: IncomingMessage, res: ServerResponse) => {
    const socket = req.socket;
    current.set(socket, { req, res });
    res.once('close', () => {
      if (current.get(socket)?.res === res) current.delete(socket);
    });
    res.once('finish', () => {
      if (!req.complete) lingerClose(socket);
    });
  });
  // (with a listener here Node no longer destroys a socket that timed out: this does, when it should)
  server.on('timeout', (socket: Socket) => judge(socket, current.get(socket), ms));
}

/** The same for a request answered outside the server (see node.ts, answerWithoutUpgrade): its socket is the node's to watch. */
export function closeStalledAside(socket: Socket, req: IncomingMessage, res: ServerResponse, ms: number): void {
  socket.setTimeout(ms);
  socket.on('timeout', () => judge(socket, { req, res }, ms));
}

/** How long a connection answered before its body arrived goes on being read, and dropped, before it is closed. */
const LINGER_MS = 2000;

/**
 * Closes a connection answered before its request's body was read (a 401,
 * a 413, a 415): Node would otherwise read the rest of the body, however
 * large or slow, to keep the connection. The answer goes out first, then
 * this side's end; what the client still sends is read and dropped for a
 * moment, since a close with unread bytes resets the connection, and a
 * client whose kernel sees the reset before it has read the answer loses it.
 */
function lingerClose(socket: Socket): void {
  if (socket.destroyed) return;
  socket.end();
  setTimeout(() => socket.destroy(), LINGER_MS).unref();
}

function judge(socket: Socket, at: { req: IncomingMessage; res: ServerResponse } | undefined, ms: number): void {
  if (!at || waitsOnClient(at.req, at.res, socket)) socket.destroy();
  else socket.setTimeout(ms);
}

function waitsOnClient(req: IncomingMessage, res: ServerResponse, socket: Socket): boolean {
  return !req.complete || res.writableNeedDrain || socket.writableLength > 0;
}
