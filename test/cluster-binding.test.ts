// A data dir stays in the cluster it first replicated in: started under another
// --cluster-id (a forgotten flag is the default's), it would merge its objects into
// that cluster's for good.
import t from 'tap';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { MeridianNode, resolveConfig, type ConfigInput } from '@meridian/node';
import { encodeBackup, restoreBackup, Store } from '@meridian/store';
import { crmSchema } from './helpers/schema.js';
import { freePort } from './helpers/free-port.js';
import { tempDir } from './helpers/tmp.js';
import { until } from './helpers/wait.js';

const SECRET = 'a-cluster-secret-of-16+';
const quiet = pino({ level: 'silent' }, new Writable({ write: (_c, _e, done) => done() }));
const start = (flags: ConfigInput): Promise<MeridianNode> =>
  MeridianNode.start(resolveConfig({ flags: { httpPort: 0, adminPassword: 'pw', ...flags } }), quiet);

t.test('a data dir is refused in another cluster once it replicated in one, and its backup with it; a start that replicated with nobody binds nothing', async (t) => {
  const dir = tempDir(t);
  // started under the default id by mistake, with no peer to accept it: nothing is recorded
  await (await start({ dir, clusterSecret: SECRET })).stop();
  await (await start({ dir })).stop();
  const port = await freePort();
  const east = await start({ dir, clusterSecret: SECRET, clusterId: 'east', httpPort: port, heartbeat: 200, linkTimeout: 1000 });
  await east.store.create('Organisation', { name: 'Acme', kind: 'customer' });
  const peer = await start({ dir: tempDir(t), clusterSecret: SECRET, clusterId: 'east', peers: [`ws://127.0.0.1:${port}/sync`], heartbeat: 200, linkTimeout: 1000 });
  t.ok(await until(() => east.status().peers.some((p) => p.state === 'live')), 'a session with a node of cluster east opened');
  await peer.stop();
  await east.stop();

  await t.rejects(start({ dir, clusterSecret: SECRET }), {
    message: `data dir ${dir} holds the data of cluster "east", not "meridian"; start it with --cluster-id east, or give this node an empty --dir to clone cluster "meridian" into`,
  }, 'the default cluster id, a flag left out, is refused');
  await t.rejects(start({ dir, clusterSecret: SECRET, clusterId: 'west' }), { message: /holds the data of cluster "east", not "west"/ });
  // (the refusal let go of the dir: the next start opens it)
  await (await start({ dir, clusterSecret: SECRET, clusterId: 'east' })).stop();
  // a start that joins no cluster (no secret: to read the dir, say) merges into none, and is let through
  await (await start({ dir })).stop();

  const store = await Store.open({ dir, schema: crmSchema });
  const snap = store.backupSnapshot();
  const restored = join(tempDir(t), 'restored');
  await restoreBackup(restored, encodeBackup(snap.header, snap.batches));
  await store.close();
  await t.rejects(start({ dir: restored, clusterSecret: SECRET, clusterId: 'west' }), { message: /holds the data of cluster "east", not "west"/ }, 'a restored backup keeps its cluster');
});
