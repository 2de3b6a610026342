import t from 'tap';
import { GroupCommit, type BatchOp } from '../dist/group-commit.js';
import { PinnedCache } from '../dist/pinned-cache.js';

const put = (key: string): BatchOp => ({ type: 'put', key, value: new Uint8Array(0) });

/** A group commit whose writer records each batch and holds it until `release()`. */
function heldWriter(finish: () => BatchOp[], maxOps?: number): { gc: GroupCommit; batches: BatchOp[][]; release: () => void } {
  const batches: BatchOp[][] = [];
  let releaseWrite = (): void => undefined;
  const gc = new GroupCommit(
    (ops) => {
      batches.push(ops);
      return new Promise<void>((r) => (releaseWrite = r));
    },
    finish,
    maxOps,
  );
  return { gc, batches, release: () => releaseWrite() };
}

t.test('concurrent writes share one batch, and none is acknowledged before its batch is written', async (t) => {
  const { gc, batches, release } = heldWriter(() => [put('trailer')]);
  const acked: string[] = [];
  const first = gc.add([put('a')], () => acked.push('after a')).then(() => acked.push('a'));
  await new Promise((r) => setImmediate(r));
  t.equal(batches.length, 1, 'the first write goes out at once');
  const rest = ['b', 'c', 'd'].map((k) => gc.add([put(k)], () => acked.push(`after ${k}`)).then(() => acked.push(k)));
  await new Promise((r) => setImmediate(r));
  t.same(acked, [], 'nothing acknowledged while the batch is being written');
  release();
  await first;
  await new Promise((r) => setImmediate(r));
  t.equal(batches.length, 2, 'the three writes queued behind it share the next batch');
  t.same(batches[1]!.map((o) => o.key), ['b', 'c', 'd', 'trailer']);
  release();
  await Promise.all(rest);
  t.same(acked, ['after a', 'a', 'after b', 'after c', 'after d', 'b', 'c', 'd'], 'after-hooks run in commit order before writers resume');
});

t.test('a failed batch fails its writes and every later one', async (t) => {
  const gc = new GroupCommit(() => Promise.reject(new Error('disk full')), () => []);
  await t.rejects(gc.add([put('a')]), { message: 'disk full' });
  await t.rejects(gc.add([put('b')]), { message: 'disk full' });
  t.ok(gc.failed);
  // a writer that keeps only its last promise (applyRemoteStaged) drops the others: no unhandled rejection
  const unhandled: unknown[] = [];
  const listener = (e: unknown): void => void unhandled.push(e);
  process.on('unhandledRejection', listener);
  t.teardown(() => process.off('unhandledRejection', listener));
  gc.add([put('c')]);
  await new Promise((r) => setTimeout(r, 10));
  t.same(unhandled, [], 'a refused add nobody awaits is not an unhandled rejection');
});

t.test('the cache stays within budget but never evicts a pinned entry', async (t) => {
  const cache = new PinnedCache<string>(100, () => 40);
  const load = async (k: string): Promise<string> => `v${k}`;
  const a = await cache.acquire('a', load);
  await cache.get('b', load);
  await cache.get('c', load);
  t.ok(cache.bytes <= 100 || cache.size === 1, 'within budget');
  t.equal(cache.peek('a')?.value, 'va', 'the pinned entry stayed');
  cache.release(a);
  let loads = 0;
  await Promise.all([1, 2, 3].map(() => cache.get('z', async (k) => (loads++, k))));
  t.equal(loads, 1, 'concurrent loads of one key share one read');
});

t.test('a read that began before a value was set never puts its older value back, even after the set value is evicted', async (t) => {
  const cache = new PinnedCache<string>(100, () => 40);
  const disk = new Map<string, string>();
  const held: ((v: string) => void)[] = [];
  let reads = 0;
  // the first read of x is held back; later reads answer from the "disk" at once
  const load = (k: string): Promise<string> => {
    reads++;
    const now = disk.get(k) ?? 'absent';
    return k === 'x' && reads === 1 ? new Promise<string>((r) => held.push(() => r(now))) : Promise.resolve(now);
  };
  const slow = cache.get('x', load); // reads "absent"
  disk.set('x', 'cloned');
  cache.set('x', 'cloned'); // a clone stores x meanwhile
  for (const k of ['a', 'b', 'c', 'd']) await cache.get(k, load); // and x is evicted once on disk
  t.equal(cache.peek('x'), undefined, 'x was evicted');
  held[0]!('absent');
  t.equal((await slow).value, 'cloned', 'the slow read is taken as stale and read again');
  t.equal((await cache.get('x', load)).value, 'cloned', 'and the cache holds what the disk does');
  t.equal(reads, 6, 'x read twice, the others once each');
});

t.test('acquireSync pins without a promise, and refuses to read past a load under way', async (t) => {
  const cache = new PinnedCache<string>(1000, () => 10);
  let reads = 0;
  const read = (k: string): string => (reads++, `read ${k}`);
  const a = cache.acquireSync('a', read)!;
  t.same([a.value, a.pins, reads], ['read a', 1, 1], 'an absent key is read and pinned at once');
  t.equal(cache.acquireSync('a', read), a, 'a cached key is pinned again without a read');
  t.same([a.pins, reads], [2, 1]);

  let finish!: (v: string) => void;
  const loading = cache.acquire('b', () => new Promise<string>((r) => (finish = r)));
  t.throws(() => cache.acquireSync('b', read), /while an asynchronous load of it is under way/, 'no second read racing a load of the key');
  t.equal(reads, 1, 'and nothing was read');
  t.equal(cache.pinCached('b'), undefined, 'nor is a key being loaded cached yet');
  finish('loaded b');
  const b = await loading;
  t.same([b.value, b.pins, reads], ['loaded b', 1, 1], 'the load wins');
  t.equal(cache.pinCached('b'), b, 'pinCached pins a cached key');
  t.equal(b.pins, 2);
});

t.test('abandoned: batches not yet handed to the writer are lost, the one being written completes', async (t) => {
  const { gc, batches, release } = heldWriter(() => [], 2);
  const writing = gc.add([put('a')]);
  await new Promise((r) => setImmediate(r));
  const queued = [gc.add([put('b'), put('c')]), gc.add([put('d')])];
  t.equal(gc.abandon(new Error('power cut')), 2, 'two batches queued behind the one being written are dropped');
  for (const q of queued) await t.rejects(q, { message: 'power cut' });
  await t.rejects(gc.add([put('e')]), { message: 'power cut' }, 'and nothing more is taken');
  release();
  await writing;
  t.same(batches.map((b) => b.map((o) => o.key)), [['a']], 'only the batch being written reached the writer');
});
