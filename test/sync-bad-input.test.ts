/**
 * Bad input on the replication endpoint of a real node: raw WebSocket
 * connections to /sync that send what no master would. Each must be closed
 * by the node with a reason (told to the peer in an error frame where there
 * is one, and logged), must leave the node serving, and must store nothing.
 */
import { randomBytes } from 'node:crypto';
import { deflateRawSync } from 'node:zlib';
import { request } from 'node:http';
import t, { type Test } from 'tap';
import { pino } from 'pino';
import WebSocket from 'ws';
import { MeridianNode, resolveConfig } from '@meridian/node';
import { decodeFrame, encodeFrame, proof, PROTOCOL_VERSION, SyncSession, type Action, type Frame } from '@meridian/sync';
import type { RemoteChange } from '@meridian/store';
import { logSink } from './helpers/node-process.js';
import { tempDir } from './helpers/tmp.js';
import { sleep, until } from './helpers/wait.js';

const SECRET = 'test-cluster-secret-1';

interface LogLine {
  level: number;
  msg: string;
  reason?: string;
  err?: string;
  peer?: string;
}

async function startNode(t: Test, flags: Record<string, string | number> = { clusterSecret: SECRET }): Promise<{ node: MeridianNode; logs: LogLine[] }> {
  const logs: LogLine[] = [];
  const config = resolveConfig({ flags: { dir: tempDir(t), httpPort: 0, adminPassword: 'pw', ...flags } });
  const node = await MeridianNode.start(config, pino({ level: 'debug' }, logSink(logs)));
  t.teardown(() => node.stop());
  return { node, logs };
}

const syncUrl = (node: MeridianNode, path = '/sync'): string => `${node.url.replace(/^http/, 'ws')}${path}`;

function healthz(node: MeridianNode): Promise<number> {
  return new Promise((resolve, reject) => {
    request(`${node.url}/healthz`, (res) => {
      res.resume();
      resolve(res.statusCode!);
    })
      .on('error', reject)
      .end();
  });
}

interface Outcome {
  code: number;
  reason: string;
  /** binary frames from the node, decoded */
  frames: Frame[];
  /** the node's hello, if it sent one */
  hello: Extract<Frame, { t: 'hello' }> | undefined;
}

/**
 * Opens a raw connection to /sync, runs `script` once it is open, and
 * resolves with how the node closed it. `script` gets a way to wait for the
 * node's next frame of a kind.
 */
function probe(url: string, script: (ws: WebSocket, next: (t: Frame['t']) => Promise<Frame>) => void | Promise<void>, limitMs = 5000): Promise<Outcome> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { maxPayload: 64 * 1024 * 1024 });
    const frames: Frame[] = [];
    const waiters: { t: Frame['t']; resolve: (f: Frame) => void }[] = [];
    const timer = setTimeout(() => {
      ws.terminate();
      reject(new Error(`the node did not close the connection within ${limitMs} ms; frames: ${JSON.stringify(frames.map((f) => f.t))}`));
    }, limitMs);
    ws.on('message', (data: Buffer, isBinary) => {
      if (!isBinary) {
        reject(new Error(`the node sent a text message: ${data.toString()}`));
        return;
      }
      const f = decodeFrame(data);
      frames.push(f);
      const i = waiters.findIndex((w) => w.t === f.t);
      if (i >= 0) waiters.splice(i, 1)[0]!.resolve(f);
    });
    const next = (type: Frame['t']): Promise<Frame> => {
      const seen = frames.find((f) => f.t === type);
      return seen ? Promise.resolve(seen) : new Promise((r) => waiters.push({ t: type, resolve: r }));
    };
    ws.on('open', () => {
      Promise.resolve(script(ws, next)).catch(reject);
    });
    ws.on('error', () => undefined); // the close event reports
    ws.on('close', (code, reason) => {
      clearTimeout(timer);
      resolve({ code, reason: reason.toString(), frames, hello: frames.find((f): f is Extract<Frame, { t: 'hello' }> => f.t === 'hello') });
    });
  });
}

/** Resolves with the HTTP status and body a WebSocket upgrade is refused with. */
function refusedUpgrade(url: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url);
    ws.on('open', () => {
      ws.terminate();
      reject(new Error(`the upgrade to ${url} was accepted`));
    });
    ws.on('unexpected-response', (_req, res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode!, body: Buffer.concat(chunks).toString() }));
      res.on('error', reject);
    });
    ws.on('error', (e) => reject(e));
  });
}

const hello = (over: Record<string, unknown> = {}): Uint8Array =>
  encodeFrame({ t: 'hello', v: PROTOCOL_VERSION, cluster: 'meridian', node: 'intruder', role: 'master', nonce: randomBytes(16), ...over } as Frame);

/** A change in wire form, shaped like a real one. */
const wireChange = (n: number) => ({ o: 'intruder', n, i: `per-intruder${n}`, y: 'Person', k: 'create' as const, u: randomBytes(40), h: Date.now() * 1000, p: 'admin', c: ['cn', 'sn'] });

interface Case {
  name: string;
  script: (ws: WebSocket, next: (t: Frame['t']) => Promise<Frame>) => void | Promise<void>;
  /** the close reason, the error frame's reason and the logged reason */
  reason: RegExp;
}

const cases: Case[] = [
  {
    name: 'garbage bytes',
    script: (ws) => ws.send(Buffer.concat([Buffer.from([0xd9, 0xff, 0xee]), randomBytes(200)])),
    reason: /^malformed frame: not msgpack/,
  },
  {
    name: 'garbage behind the compressed-frame byte',
    script: (ws) => ws.send(Buffer.concat([Buffer.from([0xc1, 0xff, 0xee]), randomBytes(200)])),
    reason: /^malformed frame: a compressed frame does not inflate/,
  },
  {
    // (17 KB sent: refused as it inflates past what a frame before authentication may be, not once 16 MiB are inflated)
    name: 'a compressed frame of 17 MiB before authentication',
    script: (ws) => ws.send(Buffer.concat([Buffer.from([0xc1]), deflateRawSync(Buffer.alloc(17 * 1024 * 1024))])),
    reason: /^malformed frame: a compressed frame inflates past 65536 bytes$/,
  },
  {
    name: 'a large frame before authentication',
    script: (ws) => ws.send(encodeFrame({ t: 'changes', changes: Array.from({ length: 1000 }, (_, i) => wireChange(i + 1)), last: 1000, head: 1000 })),
    reason: /^a frame of \d+ bytes before authentication; hello and auth take at most 65536$/,
  },
  {
    name: 'a truncated valid msgpack frame',
    script: (ws) => {
      const full = hello();
      ws.send(full.subarray(0, full.length - 5));
    },
    reason: /^malformed frame: not msgpack \(Unexpected end of MessagePack data\)/,
  },
  {
    name: 'a text message',
    script: (ws) => ws.send(JSON.stringify({ t: 'hello', v: 1, cluster: 'meridian', node: 'intruder', role: 'master' })),
    reason: /^text frames are not part of the protocol$/,
  },
  {
    name: 'a changes frame before authentication',
    script: (ws) => ws.send(encodeFrame({ t: 'changes', changes: [wireChange(1), wireChange(2)], last: 2, head: 2 })),
    reason: /^expected hello, got changes before authentication$/,
  },
  {
    name: 'a changes frame after hello, before auth',
    script: (ws) => {
      ws.send(hello());
      ws.send(encodeFrame({ t: 'changes', changes: [wireChange(1)], last: 1, head: 1 }));
    },
    reason: /^expected auth, got changes before authentication$/,
  },
  {
    name: 'a well-formed hello with wrong field types',
    script: (ws) => ws.send(encodeFrame({ t: 'hello', v: '1', cluster: 7, node: ['intruder'], role: 'master', nonce: 'not bytes' } as unknown as Frame)),
    reason: /^malformed frame: hello without a protocol version$/,
  },
  {
    name: 'a hello whose nonce is too short',
    script: (ws) => ws.send(hello({ nonce: randomBytes(8) })),
    reason: /^malformed frame: hello nonce must be at least 16 bytes$/,
  },
  {
    name: 'a correct hello from another cluster',
    script: (ws) => ws.send(hello({ cluster: 'other-cluster' })),
    reason: /^cluster id "other-cluster" is not this cluster \("meridian"\)$/,
  },
  {
    name: 'a hello of another protocol version',
    script: (ws) => ws.send(hello({ v: PROTOCOL_VERSION + 1 })),
    reason: new RegExp(`^unsupported protocol version ${PROTOCOL_VERSION + 1}; this node speaks ${PROTOCOL_VERSION}$`),
  },
  {
    name: 'a hello from a replica without a credential',
    script: (ws) => ws.send(hello({ role: 'replica' })),
    reason: /^a replica must present its credential \(from "meridian replica add" on a master\)$/,
  },
  {
    name: 'a hello from a replica with a credential never issued',
    script: (ws) => ws.send(hello({ role: 'replica', cred: 'laptop-9:0123456789abcdef' })),
    reason: /^replica credential "laptop-9" is unknown, re-issued or revoked here; use the newest from "meridian replica add laptop-9"$/,
  },
  {
    name: 'a hello with a malformed credential',
    script: (ws) => ws.send(hello({ role: 'replica', cred: 'laptop-9' })),
    reason: /^malformed frame: hello credential must be name:serial$/,
  },
  {
    name: 'a correct hello then a wrong auth proof',
    script: (ws) => {
      ws.send(hello());
      ws.send(encodeFrame({ t: 'auth', proof: randomBytes(32) }));
    },
    reason: /^authentication failed: the peer does not hold this cluster's secret$/,
  },
  {
    // what a stranger relaying another node's proof would send: made with the secret, but by an acceptor
    name: "a hello then an accepting node's proof, where the dialer's is due",
    script: async (ws, next) => {
      const theirs = (await next('hello')) as Extract<Frame, { t: 'hello' }>;
      const mine = randomBytes(16);
      ws.send(hello({ nonce: mine }));
      ws.send(encodeFrame({ t: 'auth', proof: proof(SECRET, 'meridian', 'acceptor', 'intruder', theirs.node, mine, theirs.nonce) }));
    },
    reason: /^authentication failed: the peer does not hold this cluster's secret$/,
  },
  {
    name: "a hello with the node's own id",
    script: async (ws, next) => {
      const theirs = (await next('hello')) as Extract<Frame, { t: 'hello' }>;
      ws.send(hello({ node: theirs.node }));
    },
    reason: /^the peer has this node's own id "/,
  },
];

t.test('bad input on /sync is refused with a reason, and the node keeps serving and stores nothing', async (t) => {
  const { node, logs } = await startNode(t);
  const seq = node.store.lastSeq;
  const objects = (): number => Object.values(node.store.objectCounts()).reduce((a, b) => a + b, 0);
  const count = objects();
  const refusedFor = new Set<string>();
  for (const c of cases) {
    await t.test(c.name, async (t) => {
      const logged = logs.length;
      const out = await probe(syncUrl(node), c.script);
      t.equal(out.code, 1008, `closed with 1008 (policy violation): ${out.code} ${out.reason}`);
      t.match(out.reason, c.reason, 'the close reason says why');
      t.ok(out.hello, 'the node introduced itself first');
      t.equal(out.hello?.cluster, 'meridian');
      t.equal(out.hello?.node, node.store.nodeId);
      const errors = out.frames.filter((f): f is Extract<Frame, { t: 'error' }> => f.t === 'error');
      t.equal(errors.length, 1, 'one error frame before the close');
      t.match(errors[0]?.reason, c.reason, `the error frame says why: ${errors[0]?.reason}`);
      t.equal(out.frames.at(-1)?.t, 'error', 'nothing after the error frame');
      // (no case proves the secret: the node, the acceptor, owes none of them a proof of its own)
      t.notOk(out.frames.some((f) => f.t === 'auth' || f.t === 'sub' || f.t === 'changes' || f.t === 'head'), 'the node neither proved itself, subscribed nor streamed');
      const refusal = logs.slice(logged).find((l) => l.msg === 'replication peer refused');
      t.ok(refusal, 'the refusal is logged');
      t.match(refusal?.reason, c.reason, 'with the reason');
      // once per address and reason: a reason this address was already refused for is logged at debug
      const first = !refusedFor.has(String(refusal?.reason));
      refusedFor.add(String(refusal?.reason));
      t.equal(refusal?.level, first ? 40 : 20, first ? 'as a warning' : 'again, at debug level');
      t.equal(await healthz(node), 200, 'the node keeps serving');
      t.equal(node.store.lastSeq, seq, 'the feed did not move');
      t.equal(objects(), count, 'no object was created');
      t.same(node.replicator?.status(), [], 'no peer session is left behind');
    });
  }
});

t.test('a frame over the size limit is refused at the transport', async (t) => {
  // The node's config has no max-frame setting; the Replicator's default limit is 16 MiB.
  const { node, logs } = await startNode(t);
  const seq = node.store.lastSeq;
  const big = Buffer.alloc(17 * 1024 * 1024, 0x90); // 17 MiB of msgpack empty arrays
  const out = await probe(syncUrl(node), (ws) => ws.send(big), 15_000);
  t.equal(out.code, 1009, `closed with 1009 (message too big): ${out.code} ${out.reason}`);
  t.same(
    out.frames.map((f) => f.t),
    ['hello'],
    'no error frame: ws closes before the frame reaches the protocol',
  );
  t.equal(await healthz(node), 200, 'the node keeps serving');
  t.equal(node.store.lastSeq, seq, 'nothing was stored');
  t.same(node.replicator?.status(), []);
  t.ok(await until(() => logs.some((l) => l.msg === 'replication link closed' && /Max payload size exceeded/.test(String(l.reason))), 2000), 'the close is logged with its reason');
});

t.test('a hello with a long non-ASCII cluster id is refused and stores nothing', async (t) => {
  const { node, logs } = await startNode(t);
  const seq = node.store.lastSeq;
  const out = await probe(syncUrl(node), (ws) => ws.send(hello({ cluster: 'é'.repeat(100) })));
  t.equal(out.code, 1008, 'closed with a policy violation, the reason cut to 123 bytes');
  const err = out.frames.find((f): f is Extract<Frame, { t: 'error' }> => f.t === 'error');
  t.match(err?.reason, /^malformed frame: hello needs cluster and node ids of letters/, 'the error frame says why');
  t.ok(logs.some((l) => l.msg === 'replication peer refused' && /^malformed frame: hello needs cluster/.test(l.reason ?? '')), 'the refusal is logged');
  t.equal(await healthz(node), 200);
  t.equal(node.store.lastSeq, seq);
});

t.test('a WebSocket upgrade on another path is refused', async (t) => {
  const { node } = await startNode(t);
  for (const path of ['/nope', '/sync/extra', '/api/objects', '/']) {
    const r = await refusedUpgrade(syncUrl(node, path));
    t.equal(r.status, 404, `${path}: 404`);
    t.equal(r.body, `no WebSocket endpoint at ${path}`, `${path}: ${r.body}`);
  }
  // a query string does not hide /sync
  const out = await probe(syncUrl(node, '/sync?x=1'), (ws) => ws.send('hi'));
  t.equal(out.code, 1008);
  t.equal(await healthz(node), 200);
});

t.test('a node without a cluster secret refuses /sync with a clear message', async (t) => {
  const { node } = await startNode(t, {});
  t.equal(node.replicator, undefined, 'replication is off');
  const r = await refusedUpgrade(syncUrl(node));
  t.equal(r.status, 404);
  t.equal(r.body, 'replication is not configured on this node (no cluster secret)');
  t.equal(await healthz(node), 200);
});

t.test('after all that, a peer holding the secret still gets in', async (t) => {
  // the control for the cases above: the same endpoint, driven by a real SyncSession with the right secret
  const { node, logs } = await startNode(t);
  await node.store.create('Person', { cn: 'Ada', sn: 'Lovelace' });
  for (const c of cases.slice(0, 3)) await probe(syncUrl(node), c.script);
  const session = new SyncSession({ nodeId: 'friend', cluster: 'meridian', secret: SECRET, role: 'master', dialed: true, nonce: randomBytes(16), vector: () => ({}), head: 0 });
  const run = await drive(node, session, { stop: (d) => d.applied.length > 0 });
  t.ok(run.stopped, 'changes came from the node before it closed the session');
  t.equal(session.state, 'open');
  t.equal(session.peer, node.store.nodeId);
  const changes = run.applied;
  t.same(changes.map((c) => [c.origin, c.type, c.kind]), [[node.store.nodeId, 'Person', 'create']], "the node streamed its feed to an authenticated peer");
  t.ok(logs.some((l) => l.msg === 'replication session open' && l.peer === 'friend'), 'the session is logged');
  await new Promise<void>((resolve) => {
    run.ws.once('close', () => resolve());
    run.ws.close(1000, 'done');
  });
});

/** Issues a replica credential through the node's admin API. */
async function issue(node: MeridianNode, name: string): Promise<string> {
  const res = await fetch(`${node.url}/api/replicas`, {
    method: 'POST',
    headers: { authorization: `Basic ${Buffer.from('admin:pw').toString('base64')}`, 'content-type': 'application/json' },
    body: JSON.stringify({ name }),
  });
  const body = (await res.json()) as { credential: string };
  return body.credential;
}

interface Driven {
  ws: WebSocket;
  code: number;
  reason: string;
  frames: Frame[];
  applied: RemoteChange[];
  opened: boolean;
  /** `stop` said so before the node closed the session (which is then still open) */
  stopped: boolean;
}

/**
 * Drives a real SyncSession against the node's /sync: `after` runs once the
 * session is open; resolves when the node closes the session, or when
 * `stop` says so (within 5 s, or it rejects).
 */
function drive(node: MeridianNode, session: SyncSession, opts: { after?: (ws: WebSocket) => void; stop?: (d: Driven) => boolean }): Promise<Driven> {
  const ws = new WebSocket(syncUrl(node));
  const d: Driven = { ws, code: 0, reason: '', frames: [], applied: [], opened: false, stopped: false };
  const run = (actions: Action[]): void => {
    const queue = [...actions];
    while (queue.length) {
      const a = queue.shift()!;
      if (a.type === 'send') ws.send(encodeFrame(a.frame));
      else if (a.type === 'load-checkpoint') queue.push(...session.checkpointLoaded(0));
      else if (a.type === 'read') queue.push(...session.feedRead([]));
      else if (a.type === 'apply') {
        d.applied.push(...a.changes);
        queue.push(...session.applied());
      } else if (a.type === 'open') {
        d.opened = true;
        setTimeout(() => opts.after?.(ws), 50);
      }
    }
  };
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      ws.terminate();
      reject(new Error(`the session neither ended nor got what it waited for within 5 s; frames: ${JSON.stringify(d.frames.map((f) => f.t))}`));
    }, 5000);
    ws.on('open', () => run(session.start(Date.now())));
    ws.on('message', (data: Buffer) => {
      const f = decodeFrame(data);
      d.frames.push(f);
      run(session.receive(f));
      if (opts.stop?.(d)) {
        clearTimeout(timer);
        d.stopped = true;
        ws.removeAllListeners('close');
        resolve(d);
      }
    });
    ws.on('error', () => undefined);
    ws.on('close', (code, reason) => {
      clearTimeout(timer);
      Object.assign(d, { code, reason: reason.toString() });
      resolve(d);
    });
  });
}

/** A real SyncSession as a replica with the given credential (or claiming another role with it). */
function asReplica(node: MeridianNode, opts: { credential: string; role?: 'master' | 'replica'; nodeId?: string; after?: (ws: WebSocket) => void }): Promise<Driven> {
  const [name, serial, key] = opts.credential.split(':') as [string, string, string];
  const session = new SyncSession({ nodeId: opts.nodeId ?? `replica-${name}`, cluster: 'meridian', secret: key, credential: `${name}:${serial}`, role: opts.role ?? 'replica', dialed: true, nonce: randomBytes(16), vector: () => ({}), head: 0 });
  return drive(node, session, { after: opts.after });
}

t.test('replicas are receive-only, and their credential is no cluster secret', async (t) => {
  const { node, logs } = await startNode(t);
  await node.store.create('Person', { cn: 'Ada', sn: 'Lovelace' });
  const credential = await issue(node, 'laptop-1');
  t.match(credential, /^laptop-1:[0-9a-f]{16}:[A-Za-z0-9_-]{43}$/, 'a credential is name:serial:key');
  const seq = node.store.lastSeq;

  const pushed = await asReplica(node, {
    credential,
    after: (ws) => ws.send(encodeFrame({ t: 'changes', changes: [wireChange(1)], last: 1, head: 1 })),
  });
  t.ok(pushed.opened, 'the replica authenticated with its credential');
  t.ok(pushed.frames.some((f) => f.t === 'changes'), 'and received the feed');
  t.notOk(pushed.frames.some((f) => f.t === 'sub'), 'the master never subscribes to a replica');
  t.equal(pushed.code, 1008);
  t.equal(pushed.reason, 'replicas are receive-only: replica-laptop-1 sent a changes frame');
  t.equal(node.store.lastSeq, seq, 'the pushed entry was not stored');
  t.equal(await node.store.get('per-intruder1'), undefined);
  t.ok(logs.some((l) => l.msg === 'replication peer refused' && l.reason === 'replicas are receive-only: replica-laptop-1 sent a changes frame'), 'the refusal is logged');

  const states = await asReplica(node, { credential, after: (ws) => ws.send(encodeFrame({ t: 'states', objects: [], done: true, head: 1, vector: {} })) });
  t.equal(states.reason, 'replicas are receive-only: replica-laptop-1 sent a states frame');

  const asMaster = await asReplica(node, { credential, role: 'master' });
  t.notOk(asMaster.opened, 'claiming the master role with a replica key fails');
  t.equal(asMaster.reason, "authentication failed: the peer does not hold this cluster's secret");

  const forged = credential.replace(/:[^:]+$/, `:${'A'.repeat(43)}`);
  const wrongKey = await asReplica(node, { credential: forged });
  t.notOk(wrongKey.opened);
  t.equal(wrongKey.reason, 'authentication failed: the peer does not hold its replica credential');

  const reissued = await issue(node, 'laptop-1');
  t.not(reissued, credential, 're-issuing draws a new serial');
  const old = await asReplica(node, { credential });
  t.equal(old.reason, 'replica credential "laptop-1" is unknown, re-issued or revoked here; use the newest from "meridian replica add laptop-1"');
  t.equal(node.store.lastSeq, seq + 1, 'only the re-issue itself was written');
});

t.test("a replica may not take a master's node id", async (t) => {
  // sessions are told apart by node id: a replica posing as master b would pass for b's session, and
  // b's own be closed as its duplicate, cutting the two masters apart
  const { node: a } = await startNode(t, { clusterSecret: SECRET, nodeId: 'm-a' });
  const { node: b } = await startNode(t, { clusterSecret: SECRET, nodeId: 'm-b', peers: `${syncUrl(a)}` });
  const fromB = await b.store.create('Person', { cn: 'From', sn: 'B' });
  t.ok(await until(async () => (await a.store.get(fromB.id)) !== undefined, 5000), 'b replicates to a');
  const credential = await issue(a, 'laptop-6');
  const posing = await asReplica(a, { credential, nodeId: 'm-b' });
  t.notOk(posing.frames.some((f) => f.t === 'states' || f.t === 'changes'), 'it received no data');
  t.equal(posing.reason, 'a replica may not take the node id "m-b", which is a master\'s; give it an id of its own (--node-id)');
  const fromA = await a.store.create('Person', { cn: 'From', sn: 'A' });
  t.ok(await until(async () => (await b.store.get(fromA.id)) !== undefined, 5000), 'and the masters still replicate');
  t.ok((await asReplica(a, { credential, nodeId: 'laptop-6', after: (ws) => ws.close() })).opened, 'under an id of its own it gets in');
});

t.test('a master that comes after a replica took its id keeps its session; two credentials cannot share an id', async (t) => {
  const { node: a } = await startNode(t, { clusterSecret: SECRET, nodeId: 'm-a' });
  const first = await issue(a, 'laptop-7');
  const second = await issue(a, 'laptop-8');
  // a replica under the id of a master a has not met yet: admitted, until the master comes
  let held: WebSocket | undefined;
  const posing = asReplica(a, { credential: first, nodeId: 'm-c', after: (ws) => void (held = ws) });
  t.ok(await until(() => held !== undefined, 3000), 'admitted while no master holds the id');
  await sleep(300);
  t.equal(held!.readyState, WebSocket.OPEN, 'and still connected before the master comes');
  const { node: c } = await startNode(t, { clusterSecret: SECRET, nodeId: 'm-c', peers: `${syncUrl(a)}` });
  const out = await posing;
  t.equal(out.reason, 'a replica may not take the node id "m-c", which is a master\'s; give it an id of its own (--node-id)', "the replica's session goes");
  const fromC = await c.store.create('Person', { cn: 'From', sn: 'C' });
  t.ok(await until(async () => (await a.store.get(fromC.id)) !== undefined, 5000), "the master's stays and carries its changes");

  let open: WebSocket | undefined;
  const own = asReplica(a, { credential: first, nodeId: 'lap-x', after: (ws) => void (open = ws) });
  t.ok(await until(() => open !== undefined, 3000));
  const other = await asReplica(a, { credential: second, nodeId: 'lap-x' });
  t.equal(other.reason, 'replica node id "lap-x" is in use by the session of another credential; give each replica an id of its own', "another credential's replica may not take it");
  open!.close();
  await own;
});

t.test('revoking a replica credential closes its open session', async (t) => {
  const { node, logs } = await startNode(t);
  const credential = await issue(node, 'laptop-2');
  let revoked: Promise<Response> | undefined;
  const ended = asReplica(node, {
    credential,
    after: () => {
      revoked = fetch(`${node.url}/api/replicas/laptop-2`, { method: 'DELETE', headers: { authorization: `Basic ${Buffer.from('admin:pw').toString('base64')}` } });
    },
  });
  const out = await ended;
  // the session closes at the first of the revocation's two writes; the next hello comes after both
  t.equal((await revoked)?.status, 200);
  t.ok(out.opened);
  // revoking overwrites the serial, then deletes: the open session closes at the first
  const reason = 'replica credential "laptop-2" is unknown, re-issued or revoked here; use the newest from "meridian replica add laptop-2"';
  t.equal(out.reason, reason);
  t.ok(logs.some((l) => l.msg === 'replication peer refused' && l.reason === reason));
  const again = await asReplica(node, { credential });
  t.notOk(again.opened, 'and it is refused from then on');
  t.equal(again.reason, 'replica credential "laptop-2" is unknown, re-issued or revoked here; use the newest from "meridian replica add laptop-2"');
});

t.test('a replica that acknowledges frames it never read is closed once 64 MiB wait for it, not buffered without end', async (t) => {
  const { node, logs } = await startNode(t);
  // 70 releases of about 2 MB that do not compress: about 140 MB of feed, a frame or so each, well past 64 MiB and
  // what the loopback socket's buffers hold
  const product = await node.store.create('Product', { name: 'Big' });
  for (let i = 0; i < 70; i++) {
    await node.store.create('Release', { product: product.id, version: `1.${i}`, components: Array.from({ length: 500 }, () => randomBytes(3000).toString('base64url')) });
  }
  const [name, serial, key] = (await issue(node, 'laptop-5')).split(':') as [string, string, string];
  const session = new SyncSession({ nodeId: 'replica-laptop-5', cluster: 'meridian', secret: key, credential: `${name}:${serial}`, role: 'replica', dialed: true, nonce: randomBytes(16), vector: () => ({}), head: 0 });
  const ws = new WebSocket(syncUrl(node));
  t.teardown(() => ws.terminate());
  let opened = false;
  const run = (actions: Action[]): void => {
    for (const a of actions) {
      if (a.type === 'send') ws.send(encodeFrame(a.frame));
      else if (a.type === 'load-checkpoint') run(session.checkpointLoaded(0));
      else if (a.type === 'open') opened = true;
    }
  };
  ws.on('open', () => run(session.start(Date.now())));
  ws.on('message', (data: Buffer) => {
    if (!opened) run(session.receive(decodeFrame(data)));
  });
  ws.on('error', () => undefined);
  t.ok(await until(() => opened), 'the replica is in, and has subscribed');
  // from here it reads nothing: the window holds what the master sends to what it may have in flight
  ws.pause();
  await sleep(1500);
  const cut = (): LogLine | undefined => logs.find((l) => l.msg === 'peer is not reading; closing the link');
  t.notOk(cut(), 'a peer that reads nothing and acknowledges nothing is only not sent more');
  // acknowledgements of frames it never read (0 passes for any frame in flight), fewer than the frames the master has
  // sent, which its bytes out tell (a frame holds at most 4 MiB of changes, two of these releases), so that one always
  // is in flight: an ack of nothing in flight ends the session another way, and acks at a fixed pace ran ahead of a
  // master slowed by a loaded machine
  const sentOut = (): number => node.replicator!.status().find((p) => p.node === 'replica-laptop-5')?.bytesOut ?? 0;
  let acks = 0;
  const forged = setInterval(() => {
    if (acks + 1 >= Math.floor(sentOut() / (4 * 1024 * 1024 + 1024))) return;
    acks++;
    ws.send(encodeFrame({ t: 'ack', seq: 0 }));
  }, 100);
  t.teardown(() => clearInterval(forged));
  t.ok(await until(() => cut() !== undefined, 20_000), 'with them, the master closes the link once 64 MiB wait unread');
  t.match(cut()!.reason, /^the peer left \d+ MiB unread, past the 64 MiB a link may hold$/);
  t.equal(await healthz(node), 200, 'and keeps serving');
});

t.test('replica credentials are changed only through their own commands', async (t) => {
  const { node } = await startNode(t);
  await issue(node, 'laptop-3');
  const auth = { authorization: `Basic ${Buffer.from('admin:pw').toString('base64')}`, 'content-type': 'application/json' };
  const put = await fetch(`${node.url}/api/objects/replica.laptop-3`, { method: 'PATCH', headers: auth, body: JSON.stringify({ fields: { serial: '0123456789abcdef' } }) });
  t.equal(put.status, 409);
  t.match(((await put.json()) as { error: { message: string } }).error.message, /^MeridianReplica objects are built in; change them with "meridian replica add" and "meridian replica revoke"$/);
  const post = await fetch(`${node.url}/api/objects`, { method: 'POST', headers: auth, body: JSON.stringify({ type: 'MeridianReplica', fields: { name: 'x', serial: '0123456789abcdef' } }) });
  t.equal(post.status, 409);
  const del = await fetch(`${node.url}/api/objects/replica.laptop-3`, { method: 'DELETE', headers: auth });
  t.equal(del.status, 409);
  t.notOk('MeridianReplica' in node.status().objectsByType, 'status counts the office\'s data only');

  // nor through a replica's forwarded writes, even the admin's: a revoked credential stays revoked
  const credential = await issue(node, 'laptop-4');
  const serial = credential.split(':')[1]!;
  const revoke = await fetch(`${node.url}/api/replicas/laptop-4`, { method: 'DELETE', headers: auth });
  t.equal(revoke.status, 200);
  const forwarder = await issue(node, 'laptop-5');
  const [name, fserial, key] = forwarder.split(':') as [string, string, string];
  const session = new SyncSession({ nodeId: `replica-${name}`, cluster: 'meridian', secret: key, credential: `${name}:${fserial}`, role: 'replica', dialed: true, nonce: randomBytes(16), vector: () => ({}), head: 0 });
  const writes = [
    { t: 'write', key: 'w1', op: 'undelete', id: 'replica.laptop-4', user: 'admin', password: 'pw' },
    { t: 'write', key: 'w2', op: 'update', id: 'replica.laptop-4', fields: { serial }, user: 'admin', password: 'pw' },
    { t: 'write', key: 'w3', op: 'create', id: 'replica.laptop-9', type: 'MeridianReplica', fields: { name: 'laptop-9', serial: '0123456789abcdef' }, user: 'admin', password: 'pw' },
  ] as Frame[];
  const out = await drive(node, session, { after: (ws) => { for (const w of writes) ws.send(encodeFrame(w)); }, stop: (d) => d.frames.filter((f) => f.t === 'wrote').length === writes.length });
  const answers = out.frames.filter((f): f is Extract<Frame, { t: 'wrote' }> => f.t === 'wrote').sort((a, b) => a.key.localeCompare(b.key));
  t.same(answers.map((a) => [a.key, a.ok, a.ok ? '' : a.code]), [['w1', false, 'forbidden'], ['w2', false, 'forbidden'], ['w3', false, 'forbidden']], 'every forwarded write to a built-in type is refused');
  t.match(answers[0], { message: /^MeridianReplica objects are built in/ });
  const again = await asReplica(node, { credential });
  t.notOk(again.opened, 'the revoked credential is still refused');
});

t.test('a peer whose sessions fail right after opening is redialed ever more slowly, not every 125-250 ms', async (t) => {
  // a fake master that completes the handshake, then sends bytes no frame decodes from
  const { WebSocketServer } = await import('ws');
  const wss = new WebSocketServer({ port: 0, host: '127.0.0.1', path: '/sync' });
  t.teardown(() => new Promise<void>((r) => wss.close(() => r())));
  await new Promise<void>((r) => wss.once('listening', () => r()));
  const port = (wss.address() as { port: number }).port;
  let opened = 0;
  wss.on('connection', (ws) => {
    const session = new SyncSession({ nodeId: 'broken', cluster: 'meridian', secret: SECRET, role: 'master', dialed: false, nonce: randomBytes(16), vector: () => ({}), head: 0 });
    const run = (actions: Action[]): void => {
      for (const a of actions) {
        if (a.type === 'send') ws.send(encodeFrame(a.frame));
        else if (a.type === 'open') {
          opened++;
          ws.send(Buffer.from([0xc1, 0xc1, 0xc1]));
        }
      }
    };
    ws.on('message', (data: Buffer) => {
      try {
        run(session.receive(decodeFrame(data)));
      } catch {
        ws.terminate();
      }
    });
    ws.on('error', () => undefined);
    run(session.start(Date.now()));
  });
  const { logs } = await startNode(t, { clusterSecret: SECRET, peers: `ws://127.0.0.1:${port}/sync` });
  t.ok(await until(() => opened >= 1, 5000), 'the node reaches the fake master and opens a session');
  await sleep(4000);
  // redialed at once every time, 4 s hold about 15 sessions; backing off (125-250, 250-500, 500-1000, 1000-2000 ms) 4 or 5
  t.ok(opened >= 3 && opened <= 7, `${opened} sessions opened in about 4 s: redialed, but not at once`);
  // (each redial's delay is logged: they grow)
  const delays = logs.filter((l) => l.msg === 'replication link down; backing off').map((l) => Number(l['retryInMs']));
  t.ok(delays.length >= 2 && delays.at(-1)! > delays[0]!, `the delays grow: ${delays.join(', ')} ms`);
  t.ok(logs.some((l) => /malformed frame/.test(l.reason ?? '')), 'each ended on the malformed frame');
});
