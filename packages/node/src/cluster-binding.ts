import { MeridianError, type Store } from '@meridian/store';
import type { NodeConfig } from './config.js';

/**
 * Ties a data dir to the cluster it first replicated in, and refuses to
 * start it in another. Started under another `--cluster-id` (one left out,
 * so the default), a node would merge its objects into that cluster's for
 * good: a change once replicated cannot be taken back. The cluster is
 * recorded when the first replication session opens (its peer proved the
 * secret under the same cluster id), before anything of the peer's is
 * taken: a start under a wrong id that no peer accepted binds nothing, and
 * a node that joins no cluster stays free to seed one.
 */
export class ClusterBinding {
  private recording: Promise<void> | undefined;

  private constructor(
    private readonly store: Store,
    private readonly clusterId: string,
    bound: boolean,
  ) {
    if (bound) this.recording = Promise.resolve();
  }

  /**
   * Refuses a data dir bound to another cluster than `config`'s, unless the
   * node joins no cluster (a master without a secret, such as one started
   * to read a dir with no peers): it merges into none.
   */
  static async check(store: Store, config: NodeConfig): Promise<ClusterBinding> {
    const bound = await store.getMeta<unknown>('clusterId');
    if (bound !== undefined && typeof bound !== 'string') throw new MeridianError('bad-request', `data dir ${config.dir} names its cluster in a record this build cannot read; restore a backup into an empty --dir`);
    const joins = config.role === 'replica' || config.clusterSecret !== undefined;
    if (joins && bound !== undefined && bound !== config.clusterId) {
      throw new MeridianError(
        'bad-request',
        `data dir ${config.dir} holds the data of cluster "${bound}", not "${config.clusterId}"; start it with --cluster-id ${bound}, or give this node an empty --dir to clone cluster "${config.clusterId}" into`,
      );
    }
    return new ClusterBinding(store, config.clusterId, bound !== undefined);
  }

  /** Records the cluster, durably, the first time a session with one of its nodes opens. */
  joined(): Promise<void> {
    // (a write that failed, a full disk say, is tried again by the next session, not held against every one)
    this.recording ??= this.store.setMeta('clusterId', this.clusterId).catch((e: unknown) => {
      this.recording = undefined;
      throw e;
    });
    return this.recording;
  }
}
