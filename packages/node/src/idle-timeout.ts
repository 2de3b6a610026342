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
  });
  // (with a listener here Node no longer destroys a socket that timed out: this does, when it should)
  server.on('timeout', (socket: Socket) => judge(socket, current.get(socket), ms));
}

/** The same for a request answered outside the server (see node.ts, answerWithoutUpgrade): its socket is the node's to watch. */
export function closeStalledAside(socket: Socket, req: IncomingMessage, res: ServerResponse, ms: number): void {
  socket.setTimeout(ms);
  socket.on('timeout', () => judge(socket, { req, res }, ms));
}

function judge(socket: Socket, at: { req: IncomingMessage; res: ServerResponse } | undefined, ms: number): void {
  if (!at || waitsOnClient(at.req, at.res, socket)) socket.destroy();
  else socket.setTimeout(ms);
}

function waitsOnClient(req: IncomingMessage, res: ServerResponse, socket: Socket): boolean {
  return !req.complete || res.writableNeedDrain || socket.writableLength > 0;
}
