import { createServer } from 'node:net';
import type { AddressInfo } from 'node:net';

/**
 * A port free right now, for the rare test that must know a node's port
 * before starting it (two nodes that dial each other). Others use port 0.
 */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as AddressInfo;
      srv.close(() => resolve(port));
    });
  });
}
