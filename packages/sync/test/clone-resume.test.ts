/**
 * A clone cut short (the link dropped, the node restarted) is asked for
 * again as a clone: the purge markers its first frame brings are applied as
 * changes, with feed and vector entries, so the store alone no longer looks
 * empty after them.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { Store, type ClonedState } from '@meridian/store';
import { storeSessionOptions } from '../dist/index.js';
import { thingSchema } from './thing-schema.js';

/** A store on a fresh temp dir, closed and removed when `t` ends; `reopen` closes it and opens its dir again (a restart). */
async function opened(t: Test, nodeId: string): Promise<{ store: Store; reopen(): Promise<Store> }> {
  const dir = mkdtempSync(join(tmpdir(), `meridian-clone-${nodeId}-`));
  const held = { store: await Store.open({ dir, schema: thingSchema, nodeId }) };
  t.teardown(async () => {
    await held.store.close();
    rmSync(dir, { recursive: true, force: true });
  });
  return {
    get store() {
      return held.store;
    },
    async reopen() {
      await held.store.close();
      held.store = await Store.open({ dir, schema: thingSchema, nodeId });
      return held.store;
    },
  };
}

t.test('a node whose clone stopped after the purge markers still asks to be cloned, across a restart, until the last frame is stored', async (t) => {
  const a = (await opened(t, 'a')).store;
  const nodeB = await opened(t, 'b');
  let b = nodeB.store;
  const ids: string[] = [];
  for (let i = 0; i < 30; i++) ids.push((await a.create('Thing', { a: `a-${i}` })).id);
  await a.purge(ids[0]!);
  const snap = a.stateSnapshot();
  const frames: ClonedState[][] = [];
  for await (const f of snap.batches(10)) frames.push(f);
  const { head, vector } = snap;
  await snap.close();
  t.ok(frames[0]!.every((s) => 'purged' in s && s.purged), 'the first frame holds the purge marker');

  t.equal(storeSessionOptions(b).empty!(), true, 'empty before the clone');
  const { durable } = await b.cloneStatesStaged(frames[0]!, { clone: true });
  await durable;
  t.ok(b.lastSeq > 0, 'the marker was applied as a change, with a feed entry');
  t.equal(storeSessionOptions(b).empty!(), true, 'still empty to replication: the clone is not finished');
  b = await nodeB.reopen();
  t.equal(storeSessionOptions(b).empty!(), true, 'and after a restart');

  // the clone asked for again: every frame, the marker's again too
  for (const f of frames.slice(0, -1)) await (await b.cloneStatesStaged(f, { clone: true })).durable;
  await b.cloneStates(frames[frames.length - 1]!, { peer: 'a', head, vector }, { clone: true });
  t.equal(storeSessionOptions(b).empty!(), false, 'the last frame stored ends it');
  t.same(b.versionVector(), a.versionVector());
  t.equal((await b.list('Thing', { limit: 100 })).items.length, 29);
  b = await nodeB.reopen();
  t.equal(storeSessionOptions(b).empty!(), false, 'for good');
});

t.test('states of an anti-entropy run (no clone) never mark a clone under way', async (t) => {
  const [a, b] = [(await opened(t, 'a')).store, (await opened(t, 'b')).store];
  await b.create('Thing', { a: 'mine' });
  const made = await a.create('Thing', { a: 'theirs' });
  await a.purge(made.id);
  const snap = a.stateSnapshot();
  for await (const f of snap.batches(10)) await (await b.cloneStatesStaged(f)).durable;
  await snap.close();
  t.equal(b.cloneUnfinished(), false);
  t.equal(storeSessionOptions(b).empty!(), false, 'a node holding writes of its own is not empty');
});

t.test('a session that subscribed as a clone has its states stored as a clone, through the driver, and one repaired by anti-entropy does not', async (t) => {
  const { replicate } = await import('./wired-sessions.js');
  const [a, b, c] = [(await opened(t, 'a')).store, (await opened(t, 'b')).store, (await opened(t, 'c')).store];
  for (let i = 0; i < 20; i++) await a.create('Thing', { a: `a-${i}` });
  await a.purge((await a.create('Thing', { a: 'doomed' })).id);
  const seen = (store: Store): boolean[] => {
    const flags: boolean[] = [];
    const staged = store.cloneStatesStaged.bind(store);
    const last = store.cloneStates.bind(store);
    store.cloneStatesStaged = (items, opts) => (flags.push(opts?.clone === true), staged(items, opts));
    store.cloneStates = (items, done, opts) => (flags.push(opts?.clone === true), last(items, done, opts));
    return flags;
  };
  const cloned = seen(b);
  const run = await replicate(a, b, 4, { yEmpty: true });
  t.equal(run.x.closed ?? run.y.closed, undefined);
  t.ok(cloned.length > 1 && cloned.every((f) => f), `every states frame stored as a clone's (${cloned.length})`);
  t.equal(b.cloneUnfinished(), false, 'and the clone ended');

  // c holds a write of its own and gets a's objects by anti-entropy: no clone marked
  await c.create('Thing', { a: 'mine' });
  await a.trimFeed(1);
  const repaired = seen(c);
  const ae = await replicate(a, c, 4);
  t.equal(ae.x.closed ?? ae.y.closed, undefined);
  t.ok(repaired.length > 0 && repaired.every((f) => !f), `anti-entropy states stored as such (${repaired.length})`);
  t.equal(c.cloneUnfinished(), false);
});
