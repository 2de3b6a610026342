import t from 'tap';
import { isMeridianError } from '../dist/index.js';
import { openStore, ship, tempDir } from './fixtures.js';

async function refusal(p: Promise<unknown>): Promise<{ code: string; message: string }> {
  try {
    await p;
  } catch (e) {
    if (isMeridianError(e)) return { code: e.code, message: e.message };
    throw e;
  }
  throw new Error('not refused');
}

const T1 = '0123abcd';
const T2 = '4567ef01';

t.test("forgetting a node's feed: refused for this node, a node not known, and one whose changes are held; else on disk with its checkpoint gone", async (t) => {
  const dir = tempDir(t);
  let b = await openStore(t, { dir, nodeId: 'b' });
  t.same(b.claimFeeds({ x: T1, w: T2 }, true), { taken: 2 });
  await b.applyRemote([], { checkpoint: { peer: 'x', seq: 7 } });
  t.equal(await b.checkpoint('x'), 7);
  t.match(await refusal(b.forgetFeed('b')), { code: 'bad-request', message: 'b is this node; forget its feed on the nodes that refuse it' });
  t.match(await refusal(b.forgetFeed('y')), { code: 'not-found', message: /^this node knows no feed of y; / });
  const w = await openStore(t, { nodeId: 'w' });
  await w.create('Org', { name: 'Made by w', kind: 'vendor' });
  await ship(w, b);
  t.same(await refusal(b.forgetFeed('w')), { code: 'conflict', message: 'this node holds 1 change made by w in its feed 4567ef01, which a new dir under that id would pass its own off as; start w under a new --node-id instead' });

  let told = 0;
  b.onFeedsForgotten(() => told++);
  t.equal(await b.forgetFeed('x'), T1);
  t.equal(told, 1, 'listeners are told once it is on disk');
  t.same([b.knownFeeds(), b.forgottenFeeds(), await b.checkpoint('x')], [{ w: T2 }, { x: [T1] }, 0]);
  t.match(await refusal(b.forgetFeed('x')), { code: 'not-found', message: 'the feed of x was forgotten here already (0123abcd), and no new one taken since' });
  await b.close();
  b = await openStore(t, { dir, nodeId: 'b' });
  t.same([b.knownFeeds(), b.forgottenFeeds(), await b.checkpoint('x')], [{ w: T2 }, { x: [T1] }, 0], 'and so after a restart');
});

t.test('a forgotten tag shown again is neither taken nor refused, before or after a new one is; a new one is taken, even once changes of the new dir came', async (t) => {
  const b = await openStore(t, { nodeId: 'b' });
  b.claimFeeds({ x: T1 }, true);
  await b.forgetFeed('x');
  t.same(b.claimFeeds({ x: T1 }, true), { taken: 0 }, 'the old tag, shown by a peer not told yet');
  t.same(b.knownFeeds(), {});
  // (a change that reaches a node told is the new dir's: a node holding one of the old dir's refuses the word)
  const x = await openStore(t, { nodeId: 'x' });
  await x.create('Org', { name: 'Made by the new x', kind: 'vendor' });
  await ship(x, b);
  t.same(b.claimFeeds({ x: T2 }, true), { taken: 1 }, "the new dir's");
  t.same(b.claimFeeds({ x: T1 }, true), { taken: 0 }, 'nor the old one once the new one is known (the peer is told in the same handshake)');
  t.same(b.claimFeeds({ x: '89abcdef' }, true), { node: 'x', known: T2, shown: '89abcdef' }, 'where a tag not forgotten is refused');
});

t.test("a peer's word that it forgot a tag is taken at once, unless this node runs on that dir or holds a change of it", async (t) => {
  const c = await openStore(t, { nodeId: 'c' });
  c.claimFeeds({ x: T1 }, true);
  await c.applyRemote([], { checkpoint: { peer: 'x', seq: 3 } });
  let told = 0;
  c.onFeedsForgotten(() => told++);
  // checked without `take` (at the auth), the word is taken all the same, and the new tag checks against it
  t.same(c.claimFeeds({ x: T2 }, false, { x: [T1], y: [T2] }), { taken: 1 }, 'the new tag passes (taken at the sub)');
  t.same([c.knownFeeds(), c.forgottenFeeds()], [{}, { x: [T1], y: [T2] }], "the known tag is forgotten, and a tag of a node not known is kept to pass on");
  t.equal(told, 0, 'not told before it is on disk');
  await c.saveFeeds();
  t.equal(told, 1);
  t.equal(await c.checkpoint('x'), 0, "c's position in the old feed is gone");
  t.same(c.claimFeeds({}, false, { x: [T1] }), { taken: 0 });
  await c.saveFeeds();
  t.equal(told, 1, 'a word known already tells no one again');

  t.same(c.claimFeeds({}, false, { c: [c.feedTag] }), { node: 'c', known: c.feedTag, shown: c.feedTag, forgot: true }, "this node's own dir's tag");
  t.same(c.claimFeeds({}, false, { c: [T1] }), { taken: 0 }, 'an old dir of its own id is none of its business');

  const d = await openStore(t, { nodeId: 'd' });
  const x = await openStore(t, { nodeId: 'x' });
  d.claimFeeds({ x: T1 }, true);
  await x.create('Org', { name: 'Made by the old x', kind: 'vendor' });
  await ship(x, d);
  t.same(d.claimFeeds({ x: T2 }, false, { x: [T1] }), { node: 'x', known: T1, shown: T1, forgot: true, holds: 1 }, 'd holds a change of the dir forgotten');
  t.same([d.knownFeeds(), d.forgottenFeeds()], [{ x: T1 }, {}], 'and takes nothing');
});

t.test("the word is refused by a node holding changes of the node though it never learned its tag, and waits for a pause in what peers send; an old tag of this node's own id is kept to pass on", async (t) => {
  const x = await openStore(t, { nodeId: 'x' });
  await x.create('Org', { name: 'Made by the old x', kind: 'vendor' });
  const entries = (await x.readFeed(0)).map(({ seq: _s, ...c }) => c);
  // d got x's change before it could learn x's tag
  const d = await openStore(t, { nodeId: 'd' });
  await d.applyRemote(entries);
  t.same(d.claimFeeds({}, false, { x: [T1] }), { node: 'x', known: T1, shown: T1, forgot: true, holds: 1 });
  t.same(d.forgottenFeeds(), {});
  // e is applying what a peer sent as the word comes: taken at the next session, once no apply runs
  const e = await openStore(t, { nodeId: 'e' });
  const applying = e.applyRemoteStaged(entries);
  t.same(e.claimFeeds({}, false, { x: [T1] }), { busy: true }, 'not while a change is being applied');
  t.same(e.forgottenFeeds(), {});
  await (await applying).durable;
  t.same(e.claimFeeds({}, false, { x: [T1] }), { node: 'x', known: T1, shown: T1, forgot: true, holds: 1 }, 'then refused: the change was the old dir\'s');
  // states being applied count as much as changes
  const g = await openStore(t, { nodeId: 'g' });
  const staging = g.cloneStatesStaged([]);
  t.same(g.claimFeeds({}, false, { x: [T1] }), { busy: true }, 'nor while states are being staged');
  await staging;
  // (looked at every turn of the loop until the run's end is applied: its vector moves last, after awaits)
  let ended = false;
  const ending = g.cloneStates([], { peer: 'y', head: 0, vector: { z: 1 } }).then(() => (ended = true));
  const answers = new Set<string>();
  for (let i = 0; !ended; i++) {
    answers.add(JSON.stringify(g.claimFeeds({}, false, { [`n${i}`]: [T1] })));
    await new Promise((r) => setImmediate(r));
  }
  await ending;
  t.same([...answers], ['{"busy":true}'], "nor while a run's end is being applied, to its last step");
  // an operator's forget waits for a pause: here the change being applied is the node's own, and refuses it
  g.claimFeeds({ x: T1 }, true);
  const arriving = g.applyRemoteStaged(entries);
  t.same(await refusal(g.forgetFeed('x')), { code: 'conflict', message: `this node holds 1 change made by x in its feed ${T1}, which a new dir under that id would pass its own off as; start x under a new --node-id instead` });
  await (await arriving).durable;
  // f knows no tag of x and holds none: its checkpoint in x's feed may be the forgotten dir's, and goes
  const f = await openStore(t, { nodeId: 'f' });
  await f.applyRemote([], { checkpoint: { peer: 'x', seq: 4 } });
  const before = f.feedsEpoch;
  t.same(f.claimFeeds({}, false, { x: [T1], f: ['0000ffff'] }), { taken: 0 });
  t.ok(f.feedsEpoch > before, 'sessions opened before apply no more');
  await f.saveFeeds();
  t.equal(await f.checkpoint('x'), 0);
  t.same(f.forgottenFeeds(), { x: [T1], f: ['0000ffff'] }, "an old dir of f's own id is kept, to be passed on");
  t.same(f.claimFeeds({ f: '0000ffff' }, true), { taken: 0 }, 'and a peer that still shows it is not refused: it is told');
  t.same(f.claimFeeds({ f: '1111ffff' }, true), { node: 'f', known: f.feedTag, shown: '1111ffff' }, 'where another tag of its id is');
});
