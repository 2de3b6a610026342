/**
 * Group commit: changes queue up while one `sync: true` batch is being
 * written, then go to disk together in the next batch. One fsync
 * acknowledges every write in it, and batches reach the disk in the order
 * their changes were committed in memory.
 *
 * A batch is closed at `maxOps` operations and the next one opened behind
 * it. With one unbounded batch, every writer ended up waiting on the same
 * fsync and the CPU idled for a quarter of the time (measured with 64
 * writers); smaller batches keep some writers busy while others wait.
 */
/** Operations per batch: the store's (bench/store-writes.bench.js replays its records in batches of this size). */
export const DEFAULT_MAX_OPS = 256;

export type BatchOp = { type: 'put'; key: string; value: Uint8Array } | { type: 'del'; key: string };

export interface BatchWriter {
  (ops: BatchOp[]): Promise<void>;
}

interface Group {
  ops: BatchOp[];
  /** run in commit order once the batch is on disk, before any writer resumes */
  after: (() => void)[];
  closed: boolean;
  done: Promise<void>;
  resolve: () => void;
  reject: (e: unknown) => void;
}

export class GroupCommit {
  private readonly queue: Group[] = [];
  /** the group whose batch is being written now */
  private writing: Group | undefined;
  private failure: unknown;

  /**
   * `finish` runs once per batch, when it is closed, and adds the records
   * that only need their latest value on disk (clock, vector, counts). It
   * runs before any later change is committed, so what it writes describes
   * exactly the changes in this batch and those before it. What it pushes
   * on `after` runs once the batch is on disk, as add's `after` does.
   */
  constructor(
    private readonly write: BatchWriter,
    private readonly finish: (after: (() => void)[]) => BatchOp[],
    private readonly maxOps = DEFAULT_MAX_OPS,
  ) {}

  /** Adds ops to the open batch; the promise settles when that batch is on disk. */
  add(ops: BatchOp[], after?: () => void): Promise<void> {
    if (this.failure !== undefined) {
      // caught here as each group's promise is (newGroup): a caller that keeps only its last write's promise
      // (applyRemoteStaged) must not leave the others as unhandled rejections
      const refused = Promise.reject(this.failure);
      refused.catch(() => undefined);
      return refused;
    }
    let g = this.queue[this.queue.length - 1];
    if (!g || g.closed) this.queue.push((g = newGroup()));
    for (const op of ops) g.ops.push(op);
    if (after) g.after.push(after);
    if (g.ops.length >= this.maxOps) this.close(g);
    if (!this.writing) queueMicrotask(() => this.flush());
    return g.done;
  }

  /** Settles when everything added so far is on disk. */
  async drain(): Promise<void> {
    while (this.queue.length || this.writing) {
      const g = this.queue[this.queue.length - 1];
      if (g) await g.done.catch(() => undefined);
      else await new Promise((r) => setImmediate(r));
    }
  }

  /**
   * Settles once the batch being written now, if any, has reached the disk
   * (or failed): batches after it have not yet been handed to the writer.
   */
  inFlight(): Promise<void> {
    return this.writing ? this.writing.done.catch(() => undefined) : Promise.resolve();
  }

  /**
   * Drops every batch not yet handed to the writer, failing its writes with
   * `e`, and refuses every later one: what a crash does to them. The batch
   * being written, if any, still completes. Returns how many were dropped.
   */
  abandon(e: unknown): number {
    this.failure ??= e;
    const lost = this.queue.splice(0);
    for (const g of lost) g.reject(e);
    return lost.length;
  }

  get failed(): unknown {
    return this.failure;
  }

  private close(g: Group): void {
    for (const op of this.finish(g.after)) g.ops.push(op);
    g.closed = true;
  }

  private flush(): void {
    if (this.writing || this.queue.length === 0) return;
    const g = this.queue.shift()!;
    if (!g.closed) this.close(g);
    // set before the writer runs: what it calls (the unique-key filter's rebuild) may ask inFlight()
    this.writing = g;
    let written: Promise<void>;
    try {
      written = this.write(g.ops);
    } catch (e) {
      written = Promise.reject(e);
    }
    written.then(
      () => {
        this.writing = undefined;
        for (const fn of g.after) fn();
        g.resolve();
        if (this.queue.length) this.flush();
      },
      (e: unknown) => {
        // The in-memory state is now ahead of the disk: refuse everything after.
        this.failure = e;
        this.writing = undefined;
        g.reject(e);
        for (const next of this.queue.splice(0)) next.reject(e);
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
  return { ops: [], after: [], closed: false, done, resolve, reject };
}
