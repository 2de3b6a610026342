/**
 * The dead-link watchdog tells a stall of its own process from a silent
 * peer: a timer late because the event loop was blocked runs before the
 * loop reads what the peer sent meanwhile.
 */
import t, { type Test } from 'tap';
import type { ConfigInput, MeridianNode } from '@meridian/node';
import { freePort } from './helpers/free-port.js';
import type { LogLine } from './helpers/node-process.js';
import { startXmlNode } from './helpers/xml-node.js';
import { sleep, until } from './helpers/wait.js';

async function start(t: Test, flags: ConfigInput): Promise<{ node: MeridianNode; warnings: LogLine[] }> {
  const warnings: LogLine[] = [];
  const node = await startXmlNode(t, { clusterSecret: 'watchdog-test-cluster-secret', heartbeat: 200, linkTimeout: 1000, ...flags }, {}, warnings);
  return { node, warnings };
}

/** Blocks this process's event loop, as a long collection or a big synchronous step would. */
function stall(ms: number): void {
  const end = Date.now() + ms;
  while (Date.now() < end);
}

t.test('a link outlives a stall of its own process longer than the link timeout, when the peer is heard as soon as the loop runs again', async (t) => {
  const port = await freePort();
  const b = await start(t, { nodeId: 'b', httpPort: port });
  const a = await start(t, { nodeId: 'a', peers: [`ws://127.0.0.1:${port}/sync`] });
  const live = (n: MeridianNode): boolean => n.replicator!.status().some((p) => p.state === 'live');
  t.ok(await until(() => live(a.node) && live(b.node), 10_000), 'a and b are live');

  // both nodes share this loop: after the stall each one's heartbeat timer pings the other before its
  // watchdog looks again, and the pings are read in the turn between
  stall(1600);
  await sleep(1000);
  t.same([...a.warnings, ...b.warnings].map((l) => l.msg).filter((m) => /no heartbeat/.test(m ?? '')), [], 'neither declared the link dead');
  t.ok(live(a.node) && live(b.node), 'and both are still live');
});
