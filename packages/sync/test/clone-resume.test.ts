/**
 * A clone cut short (the link dropped, the node restarted) is asked for
 * again as a clone: the purge markers its first frame brings are applied as
 * changes, with feed and vector entries, so the store alone no longer looks
 * empty after them.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { Store, type ClonedState } from '@meridian/store';
import { storeSessionOptions } from '../dist/index.js';
import { thingSchema } from './thing-schema.js';

t.test('a node whose clone stopped after the purge markers still asks to be cloned, across a restart, until the last frame is stored', async (t) => {
  const dirA = mkdtempSync(join(tmpdir(), 'meridian-clone-a-'));
  const dirB = mkdtempSync(join(tmpdir(), 'meridian-clone-b-'));
  const a = await Store.open({ dir: dirA, schema: thingSchema, nodeId: 'a' });
  let b = await Store.open({ dir: dirB, schema: thingSchema, nodeId: 'b' });
  t.teardown(async () => {
    await a.close();
    await b.close();
    rmSync(dirA, { recursive: true, force: true });
    rmSync(dirB, { recursive: true, force: true });
  });
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
  await b.close();
  b = await Store.open({ dir: dirB, schema: thingSchema, nodeId: 'b' });
  t.equal(storeSessionOptions(b).empty!(), true, 'and after a restart');

  // the clone asked for again: every frame, the marker's again too
  for (const f of frames.slice(0, -1)) await (await b.cloneStatesStaged(f, { clone: true })).durable;
  await b.cloneStates(frames[frames.length - 1]!, { peer: 'a', head, vector }, { clone: true });
  t.equal(storeSessionOptions(b).empty!(), false, 'the last frame stored ends it');
  t.same(b.versionVector(), a.versionVector());
  t.equal((await b.list('Thing', { limit: 100 })).items.length, 29);
  await b.close();
  b = await Store.open({ dir: dirB, schema: thingSchema, nodeId: 'b' });
  t.equal(storeSessionOptions(b).empty!(), false, 'for good');
});

t.test('states of an anti-entropy run (no clone) never mark a clone under way', async (t) => {
  const dirA = mkdtempSync(join(tmpdir(), 'meridian-clone-a-'));
  const dirB = mkdtempSync(join(tmpdir(), 'meridian-clone-b-'));
  const a = await Store.open({ dir: dirA, schema: thingSchema, nodeId: 'a' });
  const b = await Store.open({ dir: dirB, schema: thingSchema, nodeId: 'b' });
  t.teardown(async () => {
    await a.close();
    await b.close();
    rmSync(dirA, { recursive: true, force: true });
    rmSync(dirB, { recursive: true, force: true });
  });
  await b.create('Thing', { a: 'mine' });
  const made = await a.create('Thing', { a: 'theirs' });
  await a.purge(made.id);
  const snap = a.stateSnapshot();
  for await (const f of snap.batches(10)) await (await b.cloneStatesStaged(f)).durable;
  await snap.close();
  t.equal(b.cloneUnfinished(), false);
  t.equal(storeSessionOptions(b).empty!(), false, 'a node holding writes of its own is not empty');
});
