// Small helpers shared by the *.bench.js files. Plain ESM, no build step.
import { fork, spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { fileURLToPath } from 'node:url';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Session } from 'node:inspector/promises';

const live = new Set();
/** every child process started through Processes and not yet exited */
const children = new Set();
// An interrupted run (Ctrl-C, a closed pipe) skips the benchmarks' finally
// blocks: kill their processes and remove their temp dirs on the way out anyway.
process.on('exit', () => {
  for (const child of children) child.kill('SIGKILL');
  live.forEach(rmTemp);
});
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) process.on(sig, () => process.exit(130));

/** A fresh directory under the OS temp dir; remove it with rmTemp. */
export function tempDir(label) {
  const dir = mkdtempSync(join(tmpdir(), `meridian-bench-${label}-`));
  live.add(dir);
  return dir;
}

export function rmTemp(dir) {
  rmSync(dir, { recursive: true, force: true });
  live.delete(dir);
}

/** Temp dirs made for one benchmark, all removed by removeAll(). */
export function tempDirs() {
  const dirs = [];
  return {
    fresh(label) {
      const d = tempDir(label);
      dirs.push(d);
      return d;
    },
    removeAll() {
      for (const d of dirs.splice(0)) rmTemp(d);
    },
  };
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Polls cond every `everyMs` until it holds; throws after timeoutMs naming `what`. */
export async function until(what, cond, timeoutMs = 120_000, everyMs = 5) {
  const end = performance.now() + timeoutMs;
  while (!(await cond())) {
    if (performance.now() > end) throw new Error(`timed out after ${timeoutMs / 1000} s waiting for ${what}`);
    await sleep(everyMs);
  }
}

/** A loopback port free right now, for a node that must keep its port across restarts. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

const BIN = fileURLToPath(new URL('../bin/meridian', import.meta.url));
/** node's own flags from bin/meridian's first line: a benchmark runs a node as `bin/meridian serve` would */
export const NODE_FLAGS = (() => {
  const line = readFileSync(BIN, 'utf8').split('\n')[0];
  const m = /^#!\/usr\/bin\/env -S node (.*)$/.exec(line);
  // a changed first line must not quietly drop the flags from every benchmark
  if (!m) throw new Error(`bench/lib.js reads node's flags from bin/meridian's first line, "#!/usr/bin/env -S node FLAGS"; it is now "${line}"`);
  return m[1].split(' ').filter(Boolean);
})();

/**
 * Child processes of one benchmark: `meridian serve` nodes and helper
 * scripts, each killed by pid (stopped ones too) by killAll().
 */
export class Processes {
  #all = new Set();

  #track(child) {
    children.add(child);
    child.once('exit', () => children.delete(child));
    const p = { pid: child.pid, exited: new Promise((r) => child.once('exit', r)) };
    this.#all.add(p);
    p.exited.then(() => this.#all.delete(p));
    return p;
  }

  /**
   * Starts `bin/meridian serve ...args`; resolves to { pid, url, exited } once it listens.
   * execArgv are node's own flags for that process (e.g. --inspect=127.0.0.1:PORT for profiledRemote).
   */
  async serve(args, { execArgv = [] } = {}) {
    const child = spawn(process.execPath, [...NODE_FLAGS, ...execArgv, BIN, 'serve', ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, NODE_OPTIONS: '' } });
    const p = this.#track(child);
    let err = '';
    child.stderr.on('data', (d) => {
      if (err.length < 20_000) err += d;
    });
    p.url = await new Promise((resolve, reject) => {
      let text = '';
      child.stdout.on('data', (d) => {
        text += d;
        const m = /listening on (http\S+)/.exec(text);
        if (m) resolve(m[1]);
      });
      child.once('exit', (code) => reject(new Error(`meridian serve exited (${code}) before listening:\n${err}`)));
    });
    child.stdout.resume();
    return p;
  }

  /**
   * Forks a helper script with an IPC channel; resolves to { pid, exited, ready, child }
   * with its first message. execArgv are node's flags for it beyond a node's own.
   */
  async fork(script, args, { execArgv = [] } = {}) {
    // node's flags as a node has them, not the runner's own (an --inspect port would clash)
    const child = fork(script, args, { stdio: ['ignore', 'inherit', 'inherit', 'ipc'], execArgv: [...NODE_FLAGS, ...execArgv] });
    const p = this.#track(child);
    p.child = child;
    p.ready = await new Promise((resolve, reject) => {
      child.once('message', resolve);
      child.once('exit', (code) => reject(new Error(`${script} exited (${code}) before it was ready`)));
    });
    return p;
  }

  /**
   * Starts another program (a foreign server such as slapd, or a one-shot
   * tool such as slapadd), which must stay in the foreground so that its pid
   * is the one killAll() kills. Resolves to { pid, exited, output } once
   * started; exited resolves to the exit code, output() is the first 20 kB
   * of its stdout and stderr.
   */
  async spawn(command, args, options = {}) {
    const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'], ...options });
    if (child.pid === undefined) {
      // spawn failed (ENOENT, EACCES): no process to track
      throw await new Promise((resolve) => child.once('error', resolve));
    }
    const p = this.#track(child);
    let text = '';
    const keep = (d) => {
      if (text.length < 20_000) text += d;
    };
    child.stdout.on('data', keep);
    child.stderr.on('data', keep);
    p.output = () => text;
    return p;
  }

  async killAll() {
    for (const p of this.#all) {
      try {
        process.kill(p.pid, 'SIGCONT'); // a benchmark may have stopped it
        process.kill(p.pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
    await Promise.all([...this.#all].map((p) => p.exited));
  }
}

/** Sum of the sizes of all files below dir (apparent size, like `du -b`). */
export function dirBytes(dir) {
  let total = 0;
  for (const e of readdirSync(dir, { withFileTypes: true, recursive: true })) {
    if (e.isFile()) total += statSync(join(e.parentPath ?? e.path, e.name)).size;
  }
  return total;
}

/**
 * Runs `fn(i)` for i in [0, n) from `writers` concurrent async loops sharing
 * one counter, the way many independent clients would hit a server.
 * Returns the elapsed seconds.
 */
export async function concurrent(n, writers, fn) {
  let next = 0;
  const loop = async () => {
    while (next < n) await fn(next++);
  };
  const t0 = performance.now();
  await Promise.all(Array.from({ length: Math.min(writers, n) }, loop));
  return (performance.now() - t0) / 1000;
}

/** Awaits fn(i) one at a time; returns each call's latency in milliseconds. */
export async function sequentialLatencies(n, fn) {
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    await fn(i);
    out[i] = performance.now() - t0;
  }
  return out;
}

/** Nearest-rank percentile of a list of numbers (p in 0..100). */
export function percentile(values, p) {
  const sorted = Float64Array.from(values).sort();
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length - 1, Math.max(0, rank - 1))];
}

export function fmt(n, digits = 0) {
  if (!Number.isFinite(n)) return String(n);
  return n.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

/** Prints rows (arrays of cells) as an aligned table; the first row is the header. */
export function printTable(rows, log = console.log) {
  const widths = rows[0].map((_, c) => Math.max(...rows.map((r) => String(r[c]).length)));
  const line = (r) => r.map((cell, c) => (c === 0 ? String(cell).padEnd(widths[c]) : String(cell).padStart(widths[c]))).join('  ');
  log(line(rows[0]));
  log(widths.map((w) => '-'.repeat(w)).join('  '));
  for (const r of rows.slice(1)) log(line(r));
}

/**
 * CPU-profiles one phase through the inspector (rather than --cpu-prof, which
 * would mix in setup, the other database and the other phases), writes the
 * .cpuprofile and returns the functions with the most self time.
 */
export async function profiled(file, fn) {
  const session = new Session();
  session.connect();
  await session.post('Profiler.enable');
  // 100 us instead of the default 1 ms: a run lasts only a few seconds
  await session.post('Profiler.setSamplingInterval', { interval: 100 });
  await session.post('Profiler.start');
  let result;
  try {
    result = await fn();
  } finally {
    const { profile } = await session.post('Profiler.stop');
    session.disconnect();
    writeFileSync(file, JSON.stringify(profile));
    result = { result, top: topSelfTime(profile) };
  }
  return result;
}

/**
 * profiled() for another process, one started with
 * --inspect=127.0.0.1:PORT (Processes.serve's execArgv): profiles it through
 * the inspector protocol while fn runs, so that only that phase is in the
 * profile, not the process's start or its other phases.
 */
export async function profiledRemote(inspectorPort, file, fn) {
  const { default: WebSocket } = await import('ws');
  const [target] = await (await fetch(`http://127.0.0.1:${inspectorPort}/json/list`)).json();
  const ws = new WebSocket(target.webSocketDebuggerUrl);
  await new Promise((resolve, reject) => {
    ws.once('open', resolve);
    ws.once('error', reject);
  });
  let seq = 0;
  const waiting = new Map();
  ws.on('message', (data) => {
    const m = JSON.parse(data.toString());
    const w = m.id !== undefined && waiting.get(m.id);
    if (!w) return;
    waiting.delete(m.id);
    if (m.error) w.reject(new Error(`inspector: ${m.error.message}`));
    else w.resolve(m.result);
  });
  // a profiled process that dies closes the socket: what it owed fails, so the run goes on to clean up
  ws.on('close', () => {
    for (const w of waiting.values()) w.reject(new Error('inspector: the profiled process went away'));
    waiting.clear();
  });
  const post = (method, params = {}) =>
    new Promise((resolve, reject) => {
      if (ws.readyState !== WebSocket.OPEN) return reject(new Error('inspector: the profiled process went away'));
      const id = ++seq;
      waiting.set(id, { resolve, reject });
      ws.send(JSON.stringify({ id, method, params }));
    });
  await post('Profiler.enable');
  await post('Profiler.setSamplingInterval', { interval: 100 });
  await post('Profiler.start');
  let result;
  try {
    result = await fn();
  } finally {
    const { profile } = await post('Profiler.stop');
    ws.close();
    writeFileSync(file, JSON.stringify(profile));
    result = { result, top: topSelfTime(profile) };
  }
  return result;
}

/** Self time per function (summed over its nodes), largest first. */
export function topSelfTime(profile, limit = 15) {
  const dt = new Map();
  // timeDeltas[i] is the time before samples[i]; charge it to that sample's node
  profile.samples.forEach((id, i) => dt.set(id, (dt.get(id) ?? 0) + (profile.timeDeltas[i] ?? 0)));
  // Samples taken inside our own Profiler.stop call are the profiler's cost, not the store's.
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const skip = new Set();
  const mark = (n) => {
    skip.add(n.id);
    for (const c of n.children ?? []) mark(byId.get(c));
  };
  for (const n of profile.nodes) if (n.callFrame.url === 'node:inspector') mark(n);
  const parent = new Map();
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n);
  const label = ({ functionName, url, lineNumber }) => {
    const where = url.replace(/^file:\/\//, '').replace(/^.*\/node_modules\//, '~/').replace(/^.*\/packages\//, 'packages/');
    return `${functionName || '(anonymous)'}${url ? ` ${where}:${lineNumber + 1}` : ''}`;
  };
  let total = 0;
  const byFn = new Map();
  for (const node of profile.nodes) {
    if (skip.has(node.id)) continue;
    const { functionName, url } = node.callFrame;
    // Native code has no url; name it by its JS caller (e.g. a LevelDB binding call).
    const native = !url && !/^\(/.test(functionName) && parent.has(node.id);
    const key = native ? `${label(node.callFrame)} [native, from ${label(parent.get(node.id).callFrame)}]` : label(node.callFrame);
    const us = dt.get(node.id) ?? 0;
    byFn.set(key, (byFn.get(key) ?? 0) + us);
    total += us;
  }
  return [...byFn.entries()]
    .sort((a, b) => b[1] - a[1])
    .slice(0, limit)
    .map(([fn, us]) => ({ fn, ms: us / 1000, pct: (100 * us) / (total || 1) }));
}

/** Bytes through each replication link's TCP socket (WebSocket framing included), by peer node id. */
export function socketBytes(node) {
  // `links` is private to Replicator; read here, for measurement only
  const out = {};
  for (const l of node.replicator?.links ?? []) {
    const s = l.ws?._socket;
    if (l.session?.peer && s) out[l.session.peer] = { written: s.bytesWritten, read: s.bytesRead };
  }
  return out;
}
