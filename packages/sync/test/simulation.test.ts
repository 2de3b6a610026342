/**
 * Deterministic simulation of the replication core: 3 to 5 masters, each a
 * real Store on its own LevelDB, connected pairwise by simulated links that
 * drive the same SyncSession the WebSocket transport drives. A seed decides
 * everything: network delays (and so the interleaving of all links), writes,
 * dropped connections, partitions, and crash-restarts (a crashed node loses
 * every session and its memory, and comes back with only what it had made
 * durable). The transport is a reliable ordered stream per connection, as a
 * WebSocket is, so a lost message is a lost connection; duplicates and
 * reordering happen the way they do in practice: across connections, and
 * through third nodes relaying the same changes.
 *
 * Invariant: once faults heal and writes stop, all nodes hold identical
 * objects and record the same open conflicts of concurrent writes, every
 * acknowledged write is part of every node's state, and each node's indexes
 * agree with its objects (a unique value held twice included: each node
 * records it from its own side).
 *
 * SIM_SEEDS=n runs n seeds (default 200); SIM_SEED=s replays one.
 */
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import * as Y from 'yjs';
import { checkIndexes, isUniqueConflict, Store } from '@meridian/store';
import { decodeFrame, encodeFrame, releaseSession, runActions, storeSessionOptions, SyncSession, type Action, type FeedStore, type Frame, type SessionIo } from '../dist/index.js';
import { thingSchema } from './thing-schema.js';
import { prng } from '../../../test/helpers/prng.js';

const SECRET = 'sim-secret';
const CLUSTER = 'sim';
// tmpfs where there is one: the simulation needs LevelDB, not fsync
const BASE = existsSync('/dev/shm') ? '/dev/shm' : tmpdir();


interface SimNode {
  id: string;
  dir: string;
  store: Store | undefined;
  up: boolean;
  /** the store raised its feed base over a change held ahead (onFeedBaseRaised): its sessions end at the next advance */
  baseRaised?: boolean;
}

interface Conn {
  key: string;
  ends: [SimSide, SimSide];
  open: boolean;
}

interface SimSide extends SessionIo {
  node: SimNode;
  /** time the last frame towards this side is delivered: keeps each direction FIFO */
  lastDelivery: number;
}

interface Acked {
  node: string;
  seq: number;
  what: string;
  id: string;
  client: number;
  clock: number;
}

class Simulation {
  readonly nodes: SimNode[];
  private readonly rnd: () => number;
  private now = 0;
  private seq = 0;
  private readonly events: { at: number; n: number; run: () => Promise<void> }[] = [];
  private readonly conns = new Map<string, Conn>();
  readonly partitioned = new Set<string>();
  private readonly redialAt = new Map<string, number>();
  readonly acked: Acked[] = [];
  /** batches crashes dropped before they reached LevelDB */
  lostBatches = 0;
  /** changes a receiver already held when they came (duplicates: relayed by a third node, or resent after a reconnect) */
  skippedChanges = 0;
  aeRuns = 0;
  /** feed base raises over changes held ahead, each ending the node's sessions */
  baseRaises = 0;
  readonly ids: string[] = [];
  /** objects purged somewhere: gone on every node once settled, late changes and clones notwithstanding */
  readonly purged = new Set<string>();
  faults = process.env["SIM_FAULTS"] !== "0";
  log: string[] = [];

  constructor(
    readonly seed: number,
    private readonly root: string,
  ) {
    this.rnd = prng(seed);
    const n = 3 + Math.floor(this.rnd() * 3);
    this.nodes = Array.from({ length: n }, (_, i) => ({ id: `n${i}`, dir: join(root, `n${i}`), store: undefined, up: false }));
  }

  private at(delay: number, run: () => Promise<void>): void {
    this.push({ at: this.now + delay, n: this.seq++, run });
  }

  /** Inserts in (time, sequence) order; events are mostly appended near the end. */
  private push(e: { at: number; n: number; run: () => Promise<void> }): void {
    let i = this.events.length;
    while (i > 0 && (this.events[i - 1]!.at > e.at || (this.events[i - 1]!.at === e.at && this.events[i - 1]!.n > e.n))) i--;
    this.events.splice(i, 0, e);
  }

  /** All nodes but the last start now; the last joins empty later and is cloned. */
  async start(): Promise<void> {
    for (const node of this.nodes.slice(0, -1)) {
      node.store = await Store.open({ dir: node.dir, schema: thingSchema, nodeId: node.id });
      node.store.onFeedBaseRaised(() => (node.baseRaised = true));
      node.up = true;
    }
    const late = this.nodes[this.nodes.length - 1]!;
    this.at(100 + Math.floor(this.rnd() * 300), async () => {
      if (late.up) return;
      late.store = await Store.open({ dir: late.dir, schema: thingSchema, nodeId: late.id });
      late.store.onFeedBaseRaised(() => (late.baseRaised = true));
      late.up = true;
      this.log.push(`${this.now}: ${late.id} joins`);
    });
  }

  /**
   * The store as replication sees it, but a batch of remote changes is
   * reported on disk at a simulated time (1 to 3 after it was applied, once
   * it really is): sessions apply further frames meanwhile, as they do over
   * WebSockets, and the acks come in simulated time rather than whenever the
   * disk answered (the heal loop no longer sleeps in real time for them).
   * Reports keep the order of the batches, as a store's group commit does
   * (FeedStore.applyRemoteStaged).
   */
  private feedStore(store: Store): FeedStore {
    let lastReported: Promise<unknown> = Promise.resolve();
    return {
      get feedsEpoch() {
        return store.feedsEpoch;
      },
      get nodeId() {
        return store.nodeId;
      },
      get lastSeq() {
        return store.lastSeq;
      },
      versionVector: () => store.versionVector(),
      readFeed: (after, limit) => store.readFeed(after, limit),
      applyRemoteStaged: async (changes, opts) => {
        const { result, durable } = await store.applyRemoteStaged(changes, opts);
        this.skippedChanges += result.skipped;
        durable.catch(() => undefined); // a crash fails it before `due` looks (it is reported below all the same)
        const due = new Promise<void>((resolve, reject) => this.at(1 + Math.floor(this.rnd() * 3), () => durable.then(resolve, reject)));
        due.catch(() => undefined); // it may fail before the reports ahead of it are in
        const reported = lastReported.then(() => due);
        lastReported = reported.catch(() => undefined);
        return { result, durable: reported };
      },
      checkpoint: (peer) => store.checkpoint(peer),
      saveFeeds: () => store.saveFeeds(),
      subscribe: (listener) => store.subscribe(listener),
      onFeedBaseRaised: (fn) => store.onFeedBaseRaised(fn),
      onFeedsForgotten: (fn) => store.onFeedsForgotten(fn),
      feedBase: () => store.feedBase(),
      firstSeq: () => store.firstSeq(),
      stateSnapshot: () => store.stateSnapshot(),
      digest: (bits) => store.digest(bits),
      heldStates: (opts) => store.heldStates(opts),
      cloneStates: (items, done, opts) => store.cloneStates(items, done, opts),
      expectIdempotency: (keys) => store.expectIdempotency(keys),
      // reported on disk after a random delay too, in call order with the changes' batches
      cloneStatesStaged: async (items, opts) => {
        const { durable } = await store.cloneStatesStaged(items, opts);
        durable.catch(() => undefined);
        const due = new Promise<void>((resolve, reject) => this.at(1 + Math.floor(this.rnd() * 3), () => durable.then(resolve, reject)));
        due.catch(() => undefined); // it may fail before the reports ahead of it are in
        const reported = lastReported.then(() => due);
        lastReported = reported.catch(() => undefined);
        return { durable: reported };
      },
    };
  }

  private pairKey(a: SimNode, b: SimNode): string {
    return a.id < b.id ? `${a.id}|${b.id}` : `${b.id}|${a.id}`;
  }

  /** Opens a connection between every pair of up, unpartitioned nodes that lacks one and may redial. */
  private dial(): void {
    for (let i = 0; i < this.nodes.length; i++) {
      for (let j = i + 1; j < this.nodes.length; j++) {
        const [a, b] = [this.nodes[i]!, this.nodes[j]!];
        const key = this.pairKey(a, b);
        if (!a.up || !b.up || this.partitioned.has(key) || this.conns.has(key)) continue;
        if ((this.redialAt.get(key) ?? 0) > this.now) continue;
        const conn: Conn = { key, ends: [] as unknown as [SimSide, SimSide], open: true };
        const side = (node: SimNode): SimSide => ({
          node,
          store: this.feedStore(node.store!),
          lastDelivery: this.now,
          stateBatch: 1 + Math.floor(this.rnd() * 10),
          // small pages, so that anti-entropy runs take several
          needBatch: 1 + Math.floor(this.rnd() * 5),
          send: (frame) => this.deliver(conn, side0(node), frame),
          opened: () => true,
          closed: (reason) => this.drop(conn, reason),
          // acks of batches that reached the disk, as the WebSocket driver sends them: the session
          // applies its next frames meanwhile (see feedStore for when the disk answers)
          // Its feed grew then too: the node's other sessions are told, as the store's subscription tells them.
          later: (actions) =>
            this.at(1, async () => {
              await this.run(conn, side0(node), actions);
              if (node.up) this.advance(node);
            }),
          digestCompared: () => void this.aeRuns++,
          statesApplied: () => {
            for (const c of [...this.conns.values()]) {
              if (c !== conn && c.ends.some((e) => e.node === node && e.session.lacksBase(node.store!.feedBase(), true))) this.drop(c, 'feed base changed; resubscribing');
            }
          },
          session: new SyncSession({
            ...storeSessionOptions(node.store!),
            cluster: CLUSTER,
            secret: SECRET,
            role: 'master',
            dialed: node === a, // the node listed first dials
            nonce: Uint8Array.from({ length: 16 }, () => Math.floor(this.rnd() * 256)),
            batch: 1 + Math.floor(this.rnd() * 20),
            window: 1 + Math.floor(this.rnd() * 3),
          }),
        });
        const side0 = (node: SimNode): SimSide => conn.ends.find((e) => e.node === node)!;
        conn.ends = [side(a), side(b)];
        this.conns.set(key, conn);
        for (const end of conn.ends) this.at(0, () => this.run(conn, end, end.session.start(this.now)));
      }
    }
  }

  private other(conn: Conn, side: SimSide): SimSide {
    return conn.ends[0] === side ? conn.ends[1] : conn.ends[0];
  }

  private drop(conn: Conn, why: string): void {
    if (!conn.open) return;
    conn.open = false;
    this.conns.delete(conn.key);
    for (const end of conn.ends) releaseSession(end);
    this.redialAt.set(conn.key, this.now + 5 + Math.floor(this.rnd() * 50));
    this.log.push(`${this.now}: drop ${conn.key}: ${why}`);
  }

  /** Puts a frame on the wire towards the other side: FIFO per direction, random delay. */
  private deliver(conn: Conn, from: SimSide, frame: Frame): boolean {
    if (!conn.open) return false;
    const to = this.other(conn, from);
    const bytes = encodeFrame(frame);
    const when = Math.max(to.lastDelivery, this.now + 1 + Math.floor(this.rnd() * 20));
    to.lastDelivery = when;
    this.push({
      at: when,
      n: this.seq++,
      run: async () => {
        if (conn.open) await this.run(conn, to, to.session.receive(decodeFrame(bytes)));
      },
    });
    return true;
  }

  /** Runs a session's actions through the same executor the WebSocket driver uses. */
  private async run(conn: Conn, side: SimSide, actions: Action[]): Promise<void> {
    if (conn.open) await runActions(side, actions);
    if (actions.some((a) => a.type === 'apply' || a.type === 'clone')) this.advance(side.node);
  }

  /** Tells every session of a node that its feed grew. */
  private advance(node: SimNode): void {
    // (as the replicator does on onFeedBaseRaised; looked at here, at a point of the simulation's own)
    if (node.baseRaised) {
      node.baseRaised = false;
      this.baseRaises++;
      for (const c of [...this.conns.values()]) {
        if (c.ends.some((e) => e.node === node && e.session.lacksBase(node.store!.feedBase(), false))) this.drop(c, 'feed base changed; resubscribing');
      }
    }
    for (const conn of this.conns.values()) {
      for (const end of conn.ends) {
        if (end.node === node && conn.open) {
          const actions = end.session.feedAdvanced(node.store!.lastSeq);
          if (actions.length) this.at(0, () => this.run(conn, end, actions));
        }
      }
    }
  }

  private async write(): Promise<void> {
    const up = this.nodes.filter((n) => n.up);
    if (!up.length) return;
    const node = up[Math.floor(this.rnd() * up.length)]!;
    const store = node.store!;
    const r = this.rnd();
    const value = `${node.id}-${this.seq}`;
    let id: string;
    if (r < 0.3 || this.ids.length === 0) {
      id = (await store.create('Thing', { a: value, c: Math.floor(this.rnd() * 100) })).id;
      this.ids.push(id);
    } else {
      id = this.ids[Math.floor(this.rnd() * this.ids.length)]!;
      const here = await store.get(id);
      if (!here) return; // not replicated here yet
      const f = this.rnd();
      const c = Math.floor(this.rnd() * 100);
      try {
        if (f < 0.02) {
          await store.purge(id);
          this.purged.add(id);
          this.log.push(`${this.now}: ${node.id} purges ${id}`);
          this.advance(node);
          return;
        }
        if (here.deleted) await store.undelete(id);
        else if (f < 0.08) await store.delete(id);
        else if (f < 0.5) await store.update(id, { a: value });
        else if (f < 0.8) await store.update(id, { b: value, tags: [value, 'x'] });
        // a few unique values, taken and let go on every node: clashes replicate in, and their index entries move
        else if (f < 0.9) await store.update(id, { u: c % 3 ? `K${c % 5}` : null });
        else await store.update(id, { c, b: null });
      } catch (e) {
        // get() shows what is on disk; a remote delete, undelete or purge applied since, and not yet
        // on disk, refuses the write as a client would be refused: nothing was acknowledged.
        // A unique value held here already is refused too.
        const code = (e as { code?: string }).code;
        if (code === 'not-found' || code === 'exists' || (code === 'validation' && (e as { rule?: string }).rule === 'unique')) return;
        throw e;
      }
    }
    // the write is acknowledged: remember the Yjs clock it reached
    const entry = store.lastSeq > 0 ? (await store.readFeed(store.lastSeq - 1, 1))[0] : undefined;
    if (!entry || entry.id !== id || entry.origin !== node.id) return; // the write changed nothing
    for (const s of Y.decodeUpdate(entry.update).structs) this.acked.push({ node: node.id, seq: entry.seq, what: entry.kind + ' ' + entry.fields.join(','), id, client: s.id.client, clock: s.id.clock + s.length });
    this.advance(node);
  }

  private async fault(): Promise<void> {
    const r = this.rnd();
    const conns = [...this.conns.values()];
    if (r < 0.15) {
      const node = this.nodes[Math.floor(this.rnd() * this.nodes.length)]!;
      if (node.up) await node.store!.trimFeed(Math.floor(this.rnd() * 20));
      return;
    }
    if (r < 0.4 && conns.length) {
      this.drop(conns[Math.floor(this.rnd() * conns.length)]!, 'connection lost');
    } else if (r < 0.7) {
      const a = this.nodes[Math.floor(this.rnd() * this.nodes.length)]!;
      const b = this.nodes[Math.floor(this.rnd() * this.nodes.length)]!;
      if (a === b) return;
      const key = this.pairKey(a, b);
      this.partitioned.add(key);
      const c = this.conns.get(key);
      if (c) this.drop(c, 'partition');
      this.at(50 + Math.floor(this.rnd() * 300), async () => void this.partitioned.delete(key));
    } else {
      const node = this.nodes[Math.floor(this.rnd() * this.nodes.length)]!;
      if (!node.up) return;
      node.up = false;
      for (const c of [...this.conns.values()]) if (c.ends.some((e) => e.node === node)) this.drop(c, `${node.id} crashed`);
      // batches not yet handed to LevelDB are lost, as in a power cut
      this.lostBatches += await node.store!.crash();
      node.store = undefined;
      this.log.push(`${this.now}: crash ${node.id}`);
      this.at(20 + Math.floor(this.rnd() * 200), async () => {
        if (node.up) return;
        node.store = await Store.open({ dir: node.dir, schema: thingSchema, nodeId: node.id });
        node.store.onFeedBaseRaised(() => (node.baseRaised = true));
        node.up = true;
        this.log.push(`${this.now}: restart ${node.id}`);
      });
    }
  }

  /** Runs events until `until` (simulated ms), with writes and faults while `busy`. */
  async runFor(until: number, busy: boolean): Promise<void> {
    let nextWrite = this.now;
    let nextFault = this.now + 30;
    for (let steps = 0; steps < 200_000; steps++) {
      this.dial();
      if (busy && nextWrite <= this.now) {
        this.at(0, () => this.write());
        nextWrite = this.now + 1 + Math.floor(this.rnd() * 8);
      }
      if (busy && this.faults && nextFault <= this.now) {
        this.at(0, () => this.fault());
        nextFault = this.now + 20 + Math.floor(this.rnd() * 80);
      }
      const next = this.events.shift();
      const wake = Math.min(busy ? nextWrite : Infinity, busy && this.faults ? nextFault : Infinity, ...this.redialAt.values());
      if (!next || next.at > wake) {
        if (next) this.events.unshift(next);
        if (wake === Infinity || wake > until) return;
        this.now = Math.max(this.now, wake);
        for (const [k, v] of this.redialAt) if (v <= this.now) this.redialAt.delete(k);
        continue;
      }
      if (next.at > until) {
        this.events.unshift(next);
        return;
      }
      this.now = Math.max(this.now, next.at);
      await next.run();
    }
    throw new Error('simulation did not settle within 200000 steps');
  }

  settled(): boolean {
    if (this.nodes.some((n) => !n.up) || this.events.length) return false;
    const pairs = (this.nodes.length * (this.nodes.length - 1)) / 2;
    return this.conns.size === pairs && [...this.conns.values()].every((c) => c.ends.every((e) => e.session.live));
  }

  async digest(node: SimNode): Promise<string> {
    const parts: string[] = [];
    let after: string | undefined;
    do {
      const page = await node.store!.scan({ after, limit: 1000 });
      for (const o of page.items) parts.push(`${o.id} ${o.version} ${o.deleted} ${JSON.stringify(Object.entries(o.fields).sort())}`);
      after = page.next;
    } while (after);
    // conflicts are derived from the states, so converged nodes record the same open ones
    let next: string | undefined;
    do {
      const page = await node.store!.conflicts({ open: true, after: next, limit: 1000 });
      // (a unique value held twice is recorded from each node's side: which object held it first there)
      for (const c of page.items) if (!isUniqueConflict(c)) parts.push(`conflict ${c.objectId} ${c.field} winner ${c.winner} ${JSON.stringify(c.values)}`);
      next = page.next;
    } while (next);
    return parts.join('\n');
  }

  async close(): Promise<void> {
    for (const n of this.nodes) await n.store?.close();
  }
}

let aeTotal = 0;
let baseRaiseTotal = 0;
let conflictTotal = 0;
let wideTotal = 0;
let purgeTotal = 0;
let lostTotal = 0;
let skippedTotal = 0;
let clashOpen = 0;
let clashSettled = 0;

async function simulate(seed: number): Promise<string | undefined> {
  const root = mkdtempSync(join(BASE, 'meridian-sim-'));
  const sim = new Simulation(seed, root);
  try {
    await sim.start();
    await sim.runFor(600, true);
    // heal: pending restarts and partition ends are still queued and run next
    sim.faults = false;
    for (let round = 0; round < 400 && !sim.settled(); round++) await sim.runFor(Number.MAX_SAFE_INTEGER, false);
    if (!sim.settled()) return `did not settle\n${sim.log.slice(-20).join('\n')}`;
    const digests = await Promise.all(sim.nodes.map((n) => sim.digest(n)));
    for (let i = 1; i < digests.length; i++) {
      if (digests[i] !== digests[0]) {
        const [x, y] = [digests[0]!.split('\n'), digests[i]!.split('\n')];
        const k = x.findIndex((line, j) => line !== y[j]);
        const yIds = new Set(y.map((l) => l.split(' ')[0]));
        const oid = (x.find((l) => !yIds.has(l.split(' ')[0])) ?? x[k] ?? y[k] ?? '').split(' ')[0]!;
        const feeds = await Promise.all(sim.nodes.map(async (m) => `${m.id} feed for ${oid}: ` + (await m.store!.readFeed(0, 10000)).filter((e) => e.id === oid).map((e) => `${e.seq}:${e.origin}/${e.originSeq}:${e.kind}`).join(' ')));
        const svs = await Promise.all(sim.nodes.map(async (m) => { const st = await m.store!.objectState(oid); return `${m.id}:${JSON.stringify([...(st ? Y.decodeStateVector(Y.encodeStateVectorFromUpdate(st)) : new Map())])} base=${JSON.stringify(m.store!.feedBase())} vec=${JSON.stringify(m.store!.versionVector())}`; }));
        return `${sim.nodes[i]!.id} differs from ${sim.nodes[0]!.id}: ${x.length} vs ${y.length} objects; first difference:\n  ${x[k]}\n  ${y[k]}\n${svs.join('\n')}\n${feeds.join('\n')}\n${sim.log.join('\n')}`;
      }
    }
    for (const n of sim.nodes) {
      const indexes = await checkIndexes(n.store!);
      if (indexes.length) return `${n.id}'s indexes disagree with its objects:\n  ${indexes.join('\n  ')}\n${sim.log.join('\n')}`;
      for (const c of (await n.store!.conflicts({ limit: 1000 })).items) if (isUniqueConflict(c)) (c.settled === undefined ? clashOpen++ : clashSettled++);
      for (const id of sim.purged) {
        if ((await n.store!.objectState(id)) !== undefined) return `${n.id} still holds ${id}, purged elsewhere\n${sim.log.join('\n')}`;
        // and knows the purge itself, not only changes redacted by it
        if (!(await n.store!.purgedAt(id))?.known) return `${n.id} does not know the purge of ${id}: ${JSON.stringify(await n.store!.purgedAt(id))}\n${sim.log.join('\n')}`;
      }
      for (const a of sim.acked) {
        if (sim.purged.has(a.id)) continue;
        const state = await n.store!.objectState(a.id);
        const sv = state ? Y.decodeStateVector(Y.encodeStateVectorFromUpdate(state)) : new Map<number, number>();
        if ((sv.get(a.client) ?? 0) < a.clock) {
          const svs = await Promise.all(sim.nodes.map(async (m) => { const st = await m.store!.objectState(a.id); return `${m.id}:${JSON.stringify([...(st ? Y.decodeStateVector(Y.encodeStateVectorFromUpdate(st)) : new Map())])}`; }));
          return `${n.id} lost an acknowledged write to ${a.id} (${a.client}:${a.clock}, ${a.what} on ${a.node} seq ${a.seq}); state vectors ${svs.join(' ')}\n${sim.log.join('\n')}`;
        }
      }
    }
    if (sim.acked.length === 0) return 'no write was acknowledged';
    for (const line of digests[0]!.split('\n')) {
      if (!line.startsWith('conflict ')) continue;
      conflictTotal++;
      if ((JSON.parse(line.slice(line.indexOf('['))) as unknown[]).length > 2) wideTotal++;
    }
    purgeTotal += sim.purged.size;
    aeTotal += sim.aeRuns;
    baseRaiseTotal += sim.baseRaises;
    lostTotal += sim.lostBatches;
    skippedTotal += sim.skippedChanges;
    return undefined;
  } finally {
    await sim.close();
    rmSync(root, { recursive: true, force: true });
  }
}

t.test('masters converge under drops, partitions and crashes, losing no acknowledged write', async (t) => {
  const only = process.env['SIM_SEED'];
  const seeds = only ? [Number(only)] : Array.from({ length: Number(process.env['SIM_SEEDS'] ?? 200) }, (_, i) => i + 1);
  const failures: string[] = [];
  for (const seed of seeds) {
    const problem = await simulate(seed);
    if (problem) failures.push(`seed ${seed}: ${problem}\n  replay: SIM_SEED=${seed} npx tap packages/sync/test/simulation.test.ts`);
  }
  t.same(failures, [], `${seeds.length} seeds`);
  if (!only) t.ok(aeTotal > 0, `anti-entropy ran ${aeTotal} times across the seeds`);
  t.comment(`feed base raised over a change held ahead ${baseRaiseTotal} times`);
  if (!only) t.ok(purgeTotal > 0, `${purgeTotal} objects purged across the seeds`);
  if (!only) t.ok(clashOpen > 0 && clashSettled > 0, `unique values held twice: ${clashOpen} records open at the end, ${clashSettled} settled, across the nodes of every seed`);
  // (issue 3 asks for duplicates: they must have happened, and been skipped, for the invariant to say anything of them)
  if (!only) t.ok(skippedTotal > 0, `${skippedTotal} changes arrived at a node that held them already, and were skipped`);
  if (!only) t.ok(wideTotal > 0, `${conflictTotal} conflicts open at the end across the seeds, ${wideTotal} of three writes or more, each the same on every node`);
  // How many depends on the disk's timing (5-8 a run of 200 seeds, measured), so it is reported, not asserted:
  // a run with none would fail CI for nothing about 1 time in 600.
  if (!only) t.comment(`crashes lost ${lostTotal} batches that had not reached the disk`);
});
