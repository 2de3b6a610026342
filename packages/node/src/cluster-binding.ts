import { MeridianError, type Store } from '@meridian/store';
import type { NodeConfig } from './config.js';

/**
 * Ties a data dir to the cluster it first replicated in, and refuses to
 * start it in another. Started under another `--cluster-id` (one left out,
 * so the default), a node would merge its objects into that cluster's for
 * good: a change once replicated cannot be taken back. A node that joins no
 * cluster (a master without a secret) records nothing, so a standalone
 * store can still seed a cluster.
 */
export async function bindCluster(store: Store, config: NodeConfig): Promise<void> {
  if (config.role !== 'replica' && config.clusterSecret === undefined) return;
  const bound = await store.getMeta<unknown>('clusterId');
  if (bound === undefined) return store.setMeta('clusterId', config.clusterId);
  if (typeof bound !== 'string') throw new MeridianError('bad-request', `data dir ${config.dir} names its cluster in a record this build cannot read; restore a backup into an empty --dir`);
  if (bound !== config.clusterId) {
    throw new MeridianError(
      'bad-request',
      `data dir ${config.dir} holds the data of cluster "${bound}", not "${config.clusterId}"; start it with --cluster-id ${bound}, or give this node an empty --dir to clone cluster "${config.clusterId}" into`,
    );
  }
}
