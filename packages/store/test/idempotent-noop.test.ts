import t from 'tap';
import { openStore } from './fixtures.js';

t.test('a keyed write that changes nothing is recorded with the vector it was judged against, and moves neither the feed nor the clock', async (t) => {
  const a = await openStore(t, { nodeId: 'a' });
  const org = await a.create('Org', { name: 'Acme', kind: 'vendor' });
  const [seq, hlc] = [a.lastSeq, a.hlc];
  const same = await a.update(org.id, { name: 'Acme' }, { idempotencyKey: 'k1' });
  t.equal(same.version, org.version, 'nothing changed');
  t.equal(a.lastSeq, seq, 'no feed entry');
  t.equal(a.hlc, hlc, 'and no tick: the last change /status shows stays');
  const rec = await a.idempotent('k1');
  t.match(rec, { id: org.id, origin: 'a', originSeq: 1, need: { a: 1 } });
  t.ok(rec!.hlc >= hlc, 'dated now, for its trim');
  const records = async (): Promise<number> => {
    let n = 0;
    for await (const _ of a.raw('i')) n++;
    return n;
  };
  t.equal(await records(), 1);
  await a.update(org.id, { name: 'Acme' });
  t.equal(await records(), 1, 'an unkeyed write that changes nothing records nothing');
  // a record of the key kept: a later no-op under the same key leaves it as it is
  await a.update(org.id, { name: 'Acme Two' }, { idempotencyKey: 'k2' });
  const made = await a.idempotent('k2');
  await a.update(org.id, { name: 'Acme Two' }, { idempotencyKey: 'k2' });
  t.same(await a.idempotent('k2'), made, 'a record of a write that made a change is not replaced by a no-op under its key');
  // a snapshot leaves it out: it names no change of its own for a peer to wait for
  const snap = a.stateSnapshot();
  const keyed = [];
  for await (const f of snap.batches(100)) for (const s of f) if ('key' in s) keyed.push(s.key);
  await snap.close();
  t.same(keyed, ['k2'], "the no-op's record stays here; the change's goes");
});
