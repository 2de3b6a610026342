import { createServer, connect, type Server, type Socket } from 'node:net';
import type { AddressInfo } from 'node:net';
import { Transform, type TransformCallback } from 'node:stream';

/** Passes bytes on at about `rate` bytes a second, in slices every 50 ms: a slow link. */
class Throttle extends Transform {
  constructor(private readonly rate: number) {
    super();
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, done: TransformCallback): void {
    const slice = Math.max(1, Math.floor(this.rate / 20));
    let at = 0;
    const step = (): void => {
      if (this.destroyed) return;
      if (at >= chunk.length) return done();
      this.push(chunk.subarray(at, at + slice));
      at += slice;
      setTimeout(step, 50);
    };
    step();
  }
}

/**
 * A TCP proxy between two nodes that a test can cut (partition) and heal.
 * Its target can change, so a node restarted on a new port stays reachable
 * at the same proxy address. While cut, or before it has a target, it
 * accepts and immediately drops connections, as a broken network would.
 */
export class FaultProxy {
  private readonly server: Server;
  private readonly sockets = new Set<Socket>();
  private target: number | undefined;
  private cut = false;
  private silent = false;
  /** bytes a second, on connections made from now on: from the target to the client, or (`toTarget`) the other way */
  private rate: number | undefined;
  private toTarget = false;
  private readonly pairs = new Set<[Socket, Socket]>();
  /** target-side sockets resetClients left open */
  private readonly kept = new Set<Socket>();
  /** when each connection came (performance.now()), those refused while cut included */
  readonly dials: number[] = [];

  private constructor(server: Server) {
    this.server = server;
  }

  static async start(): Promise<FaultProxy> {
    const server = createServer();
    const proxy = new FaultProxy(server);
    server.on('connection', (client) => proxy.accept(client));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
    return proxy;
  }

  get port(): number {
    return (this.server.address() as AddressInfo).port;
  }

  setTarget(port: number): void {
    this.target = port;
  }

  /** Drops every connection through the proxy and refuses new ones until heal(). */
  partition(): void {
    this.cut = true;
    for (const s of this.sockets) s.destroy();
  }

  heal(): void {
    this.cut = false;
    if (this.silent) for (const [c, u] of this.pairs) this.join(c, u);
    this.silent = false;
  }

  /**
   * Stops carrying bytes without closing anything, like a link whose far end
   * vanished: only heartbeats can tell.
   */
  blackhole(): void {
    this.silent = true;
    for (const [c, u] of this.pairs) {
      c.unpipe(u);
      u.unpipe(c);
      c.pause();
      u.pause();
    }
  }

  /**
   * Stops carrying bytes on the connections open now, without closing them,
   * while new ones go through: an end that vanished and came back on a new
   * connection before the other noticed.
   */
  freeze(): void {
    for (const [c, u] of this.pairs) {
      c.unpipe(u);
      u.unpipe(c);
      c.pause();
      u.pause();
    }
    this.pairs.clear();
  }

  /**
   * Resets the connections open now on the client's side only: the client
   * sees them closed, the target sees them open and silent, as after a
   * reset only one end received.
   */
  resetClients(): void {
    for (const pair of this.pairs) {
      const [c, u] = pair;
      this.kept.add(u);
      c.unpipe(u);
      u.unpipe(c);
      u.pause();
      c.destroy();
    }
    this.pairs.clear();
  }

  /**
   * Carries the target's bytes to clients (or, `toTarget`, the clients'
   * bytes to the target) at about `bytesPerSecond`, on connections made
   * from now on.
   */
  throttle(bytesPerSecond: number, toTarget = false): void {
    this.rate = bytesPerSecond;
    this.toTarget = toTarget;
  }

  private join(client: Socket, upstream: Socket): void {
    const carry = (from: Socket, to: Socket, slowed: boolean): void => {
      if (!slowed || this.rate === undefined) {
        from.pipe(to);
        return;
      }
      const slow = new Throttle(this.rate);
      from.pipe(slow).pipe(to);
      client.on('close', () => slow.destroy());
    };
    carry(client, upstream, this.toTarget);
    carry(upstream, client, !this.toTarget);
  }

  private accept(client: Socket): void {
    this.dials.push(performance.now());
    if (this.cut || this.target === undefined) {
      client.destroy();
      return;
    }
    const upstream = connect(this.target, '127.0.0.1');
    for (const s of [client, upstream]) {
      this.sockets.add(s);
      s.on('close', () => this.sockets.delete(s));
      s.on('error', () => undefined);
    }
    const pair: [Socket, Socket] = [client, upstream];
    this.pairs.add(pair);
    if (!this.silent) this.join(client, upstream);
    client.on('close', () => {
      this.pairs.delete(pair);
      // (kept open by resetClients: the target must not see the close)
      if (!this.kept.has(upstream)) upstream.destroy();
    });
    upstream.on('close', () => client.destroy());
  }

  async close(): Promise<void> {
    this.partition();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}
