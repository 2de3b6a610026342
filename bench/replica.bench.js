// Replicas: a master and a replica, each a `bin/meridian serve` process of
// its own, as deployed. In one run:
//
//   1. write latency: creates one at a time over the admin API (HTTP, JSON),
//      alternating between the master directly and the replica (which
//      forwards to the master and answers once the change is back and
//      readable there). p50 and p99 of each; the target is the ratio of
//      the p50s, at most 2.
//   2. time to read-only: the master dies and the replica's /status is
//      polled every 2 ms until it says read-only. Twenty trials each of
//      SIGKILL (the kernel closes the socket) and SIGSTOP (a silent master:
//      only the heartbeat timeout finds it), against the configured
//      --link-timeout; max must not exceed timeout + 1 s. The master is
//      restarted (SIGCONT for SIGSTOP) between trials.
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { fmt, freePort, percentile, printTable, Processes, tempDirs, until } from './lib.js';

export const name = 'replica';

const BIN = fileURLToPath(new URL('../bin/meridian', import.meta.url));
const PW = 'bench-admin-password';
const SECRET = 'bench-cluster-secret-0123';
const AUTH = `Basic ${Buffer.from(`admin:${PW}`).toString('base64')}`;
const HEARTBEAT = 500;
const LINK_TIMEOUT = 3000;

export async function run({ quick, log }) {
  const writes = quick ? 50 : 1000; // per target, alternating
  const trials = quick ? 2 : 20;
  const procs = new Processes();
  const { fresh, removeAll } = tempDirs();
  const serve = (args) => procs.serve(['--admin-password', PW, ...args]);
  try {
    const port = await freePort();
    const mdir = fresh('replica-master');
    const masterArgs = ['--dir', mdir, '--node-id', 'm1', '--http-port', String(port), '--cluster-secret', SECRET, '--heartbeat', String(HEARTBEAT), '--link-timeout', String(LINK_TIMEOUT)];
    let master = await serve(masterArgs);
    const cred = cliOut(['replica', 'add', 'bench-laptop', '--node', master.url, '--password', PW]);
    const replica = await serve(
      ['--dir', fresh('replica-replica'), '--node-id', 'r1', '--role', 'replica', '--masters', `ws://127.0.0.1:${port}/sync`, '--replica-credential', cred, '--heartbeat', String(HEARTBEAT), '--link-timeout', String(LINK_TIMEOUT)],
    );
    await until('the replica to reach its master', async () => (await status(replica.url)).mode === 'read-write', 60_000, 20);

    // 1. write latency, alternating so that drift hits both alike
    const lat = { master: [], replica: [] };
    const create = async (url, i) => {
      const t0 = performance.now();
      const res = await fetch(`${url}/api/objects`, {
        method: 'POST',
        headers: { authorization: AUTH, 'content-type': 'application/json' },
        body: JSON.stringify({ type: 'Organisation', fields: { name: `Bench ${i}`, kind: 'customer', l: 'Lisbon' } }),
      });
      await res.arrayBuffer();
      if (res.status !== 201) throw new Error(`write ${i} on ${url} answered ${res.status}`);
      return performance.now() - t0;
    };
    for (let i = 0; i < 50; i++) await create(i % 2 ? master.url : replica.url, -i); // warm-up
    for (let i = 0; i < writes; i++) {
      lat.master.push(await create(master.url, 2 * i));
      lat.replica.push(await create(replica.url, 2 * i + 1));
    }
    const p = (xs, q) => percentile(xs, q);
    const ratio = p(lat.replica, 50) / p(lat.master, 50);
    printTable(
      [
        ['write (create, admin API)', 'p50 ms', 'p99 ms'],
        ['on the master', fmt(p(lat.master, 50), 2), fmt(p(lat.master, 99), 2)],
        ['through the replica (read-your-writes)', fmt(p(lat.replica, 50), 2), fmt(p(lat.replica, 99), 2)],
        ['ratio replica / master', fmt(ratio, 2), fmt(p(lat.replica, 99) / p(lat.master, 99), 2)],
      ],
      log,
    );

    // 2. time from master death to read-only
    const detect = { SIGKILL: [], SIGSTOP: [] };
    for (const signal of ['SIGKILL', 'SIGSTOP']) {
      for (let i = 0; i < trials; i++) {
        await until('the replica to be writable', async () => (await status(replica.url)).mode === 'read-write', 30_000, 20);
        const t0 = performance.now();
        process.kill(master.pid, signal);
        await until('the replica to turn read-only', async () => (await status(replica.url)).mode === 'read-only', LINK_TIMEOUT + 10_000, 2);
        detect[signal].push(performance.now() - t0);
        if (signal === 'SIGSTOP') {
          process.kill(master.pid, 'SIGCONT');
        } else {
          await master.exited;
          master = await serve(masterArgs);
        }
      }
    }
    const row = (s) => [s, fmt(p(detect[s], 50), 0), fmt(Math.max(...detect[s]), 0), fmt(LINK_TIMEOUT, 0)];
    printTable([['master death', 'p50 ms', 'max ms', 'timeout ms'], row('SIGKILL'), row('SIGSTOP')], log);
    const worst = Math.max(...detect.SIGKILL, ...detect.SIGSTOP);
    return {
      metrics: {
        writes,
        trials,
        heartbeatMs: HEARTBEAT,
        linkTimeoutMs: LINK_TIMEOUT,
        masterWriteP50Ms: p(lat.master, 50),
        masterWriteP99Ms: p(lat.master, 99),
        replicaWriteP50Ms: p(lat.replica, 50),
        replicaWriteP99Ms: p(lat.replica, 99),
        readOnlySigkillP50Ms: p(detect.SIGKILL, 50),
        readOnlySigkillMaxMs: Math.max(...detect.SIGKILL),
        readOnlySigstopP50Ms: p(detect.SIGSTOP, 50),
        readOnlySigstopMaxMs: Math.max(...detect.SIGSTOP),
      },
      checks: [
        { name: 'replica write p50 / master write p50', measured: ratio, target: 2, pass: ratio <= 2, shown: `${fmt(ratio, 2)}x (target <= 2x)` },
        {
          name: 'master death to read-only, max over SIGKILL and SIGSTOP trials',
          measured: worst,
          target: LINK_TIMEOUT + 1000,
          pass: worst <= LINK_TIMEOUT + 1000,
          shown: `${fmt(worst, 0)} ms (target <= ${fmt(LINK_TIMEOUT + 1000, 0)} ms: timeout + 1 s)`,
        },
      ],
    };
  } finally {
    await procs.killAll();
    removeAll();
  }
}

function cliOut(args) {
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', env: { ...process.env, NODE_OPTIONS: '' } });
  if (r.status !== 0) throw new Error(`meridian ${args.join(' ')} failed: ${r.stderr}`);
  return r.stdout.trim();
}

async function status(url) {
  try {
    const res = await fetch(`${url}/status`, { headers: { authorization: AUTH } });
    return await res.json();
  } catch {
    return { mode: 'unreachable' };
  }
}
