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
import { tempDir } from './helpers/tmp.js';

const SECRET = 'a-cluster-secret-of-16+';
const quiet = pino({ level: 'silent' }, new Writable({ write: (_c, _e, done) => done() }));
const start = (flags: ConfigInput): Promise<MeridianNode> =>
  MeridianNode.start(resolveConfig({ flags: { httpPort: 0, adminPassword: 'pw', ...flags } }), quiet);

t.test('a data dir is refused in another cluster, and its backup with it; a standalone start leaves it unbound', async (t) => {
  const dir = tempDir(t);
  // standalone first: nothing recorded, so any cluster may take it
  await (await start({ dir })).stop();
  const east = await start({ dir, clusterSecret: SECRET, clusterId: 'east' });
  await east.store.create('Organisation', { name: 'Acme', kind: 'customer' });
  await east.stop();

  await t.rejects(start({ dir, clusterSecret: SECRET }), {
    message: `data dir ${dir} holds the data of cluster "east", not "meridian"; start it with --cluster-id east, or give this node an empty --dir to clone cluster "meridian" into`,
  }, 'the default cluster id, a flag left out, is refused');
  await t.rejects(start({ dir, clusterSecret: SECRET, clusterId: 'west' }), { message: /holds the data of cluster "east", not "west"/ });
  // (the refusal let go of the dir: the next start opens it)
  await (await start({ dir, clusterSecret: SECRET, clusterId: 'east' })).stop();
  await (await start({ dir })).stop(); // joining no cluster, it merges into none

  const store = await Store.open({ dir, schema: crmSchema });
  const snap = store.backupSnapshot();
  const restored = join(tempDir(t), 'restored');
  await restoreBackup(restored, encodeBackup(snap.header, snap.batches));
  await store.close();
  await t.rejects(start({ dir: restored, clusterSecret: SECRET, clusterId: 'west' }), { message: /holds the data of cluster "east", not "west"/ }, 'a restored backup keeps its cluster');

  // a dir that joined no cluster yet takes the first it is started in
  const fresh = tempDir(t);
  await (await start({ dir: fresh, clusterSecret: SECRET, clusterId: 'west' })).stop();
  await t.rejects(start({ dir: fresh, clusterSecret: SECRET, clusterId: 'east' }), { message: /holds the data of cluster "west"/ });
});
