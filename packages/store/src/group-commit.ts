/**
 * Group commit: changes queue up while one `sync: true` batch is being
 * written, then all of them go to disk in the next batch. One fsync
 * acknowledges every write in it, and batches reach the disk in the order
 * their changes were committed in memory.
 */
export type BatchOp = { type: 'put'; key: string; value: Uint8Array } | { type: 'del'; key: string };

export interface BatchWriter {
  (ops: BatchOp[]): Promise<void>;
}

interface Group {
  ops: BatchOp[];
  /** run in commit order once the batch is on disk, before any writer resumes */
  after: (() => void)[];
  done: Promise<void>;
  resolve: () => void;
  reject: (e: unknown) => void;
}

export class GroupCommit {
  private open: Group | undefined;
  private writing = false;
  private failure: unknown;

  /**
   * `finish` runs once per batch, right before it is written, and adds the
   * records that only need their latest value on disk (clock, vector).
   */
  constructor(
    private readonly write: BatchWriter,
    private readonly finish: () => BatchOp[],
  ) {}

  /** Adds ops to the next batch; the promise settles when that batch is on disk. */
  add(ops: BatchOp[], after?: () => void): Promise<void> {
    if (this.failure !== undefined) return Promise.reject(this.failure);
    const g = this.open ?? (this.open = newGroup());
    for (const op of ops) g.ops.push(op);
    if (after) g.after.push(after);
    if (!this.writing) queueMicrotask(() => this.flush());
    return g.done;
  }

  /** Settles when everything added so far is on disk. */
  async drain(): Promise<void> {
    while (this.open || this.writing) {
      const g = this.open;
      if (g) await g.done.catch(() => undefined);
      else await new Promise((r) => setImmediate(r));
    }
  }

  get failed(): unknown {
    return this.failure;
  }

  private flush(): void {
    if (this.writing || !this.open) return;
    const g = this.open;
    this.open = undefined;
    this.writing = true;
    for (const op of this.finish()) g.ops.push(op);
    this.write(g.ops).then(
      () => {
        this.writing = false;
        for (const fn of g.after) fn();
        g.resolve();
        if (this.open) this.flush();
      },
      (e: unknown) => {
        // The in-memory state is now ahead of the disk: refuse everything after.
        this.failure = e;
        this.writing = false;
        g.reject(e);
        const next = this.open;
        this.open = undefined;
        next?.reject(e);
      },
    );
  }
}

function newGroup(): Group {
  let resolve!: () => void;
  let reject!: (e: unknown) => void;
  const done = new Promise<void>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  // a write whose caller went away must not become an unhandled rejection
  done.catch(() => undefined);
  return { ops: [], after: [], done, resolve, reject };
}
