#!/usr/bin/env node
// npm run demo:cluster: two masters and a replica on this machine, on the
// sample data, each a `meridian serve` process of its own, and the commands
// to try against them. Ctrl-C stops all three and removes their data.
import { spawn, spawnSync } from 'node:child_process';
import { createWriteStream, mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const BIN = fileURLToPath(new URL('../bin/meridian', import.meta.url));
const PASSWORD = 'demo-admin-password';
const SECRET = 'demo-cluster-secret-0123';
const dir = mkdtempSync(join(tmpdir(), 'meridian-demo-'));
const children = new Map();

const freePort = () =>
  new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });

function serve(name, args) {
  // bin/meridian itself, so that its first line gives node the flags a node runs with
  const child = spawn(BIN, ['serve', '--node-id', name, '--dir', join(dir, name), '--admin-password', PASSWORD, '--heartbeat', '500', '--link-timeout', '3000', ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.set(name, child);
  // logs go to a file per node; the terminal stays for the commands
  const log = createWriteStream(join(dir, `${name}.log`));
  child.stdout.pipe(log, { end: false });
  child.stderr.pipe(log, { end: false });
  return new Promise((resolve, reject) => {
    let out = '';
    const listening = (d) => {
      out += d;
      if (!/listening on/.test(out)) return;
      child.stdout.off('data', listening);
      resolve(child);
    };
    child.stdout.on('data', listening);
    child.once('exit', (code) => reject(new Error(`${name} exited with ${code} before listening`)));
  });
}

let stopping = false;
function stopAll() {
  if (stopping) return;
  stopping = true;
  const exited = [...children.values()].map((c) => (c.exitCode !== null || c.signalCode !== null ? Promise.resolve() : new Promise((r) => c.once('exit', r))));
  for (const c of children.values()) c.kill('SIGTERM');
  const force = setTimeout(() => {
    for (const c of children.values()) c.kill('SIGKILL');
  }, 10_000);
  Promise.all(exited).then(() => {
    clearTimeout(force);
    rmSync(dir, { recursive: true, force: true });
    process.exit(0);
  });
}
process.on('SIGINT', stopAll);
process.on('SIGTERM', stopAll);

const [p1, p2, p3] = [await freePort(), await freePort(), await freePort()];
const ws = (p) => `ws://127.0.0.1:${p}/sync`;
await serve('eu-1', ['--http-port', String(p1), '--cluster-secret', SECRET, '--peers', ws(p2), '--sample', '--sample-size', '500']);
await serve('us-1', ['--http-port', String(p2), '--cluster-secret', SECRET, '--peers', ws(p1)]);
const issued = spawnSync(process.execPath, [BIN, 'replica', 'add', 'laptop-1', '--node', `http://127.0.0.1:${p1}`, '--password', PASSWORD], { encoding: 'utf8' });
if (issued.status !== 0) throw new Error(issued.stderr);
await serve('laptop-1', ['--http-port', String(p3), '--role', 'replica', '--masters', `${ws(p1)},${ws(p2)}`, '--replica-credential', issued.stdout.trim()]);

const m = (p) => `--node http://127.0.0.1:${p}`;
console.log(`
Meridian demo cluster (data in ${dir}; Ctrl-C stops everything)
  eu-1      master   http://127.0.0.1:${p1}   pid ${children.get('eu-1').pid}   (sample data)
  us-1      master   http://127.0.0.1:${p2}   pid ${children.get('us-1').pid}
  laptop-1  replica  http://127.0.0.1:${p3}   pid ${children.get('laptop-1').pid}   (masters: eu-1, then us-1)

In another terminal:
  export MERIDIAN_PASSWORD=${PASSWORD}
  alias meridian="${BIN}"
  meridian status ${m(p3)}                 # the replica: read-write through eu-1
  meridian lag --watch ${m(p2)}            # how far us-1 is behind
  meridian put Organisation name=Demo kind=customer ${m(p3)}   # a write through the replica
  meridian log --follow ${m(p2)}           # the change arrives on us-1
  kill -9 ${children.get('eu-1').pid}                          # kill eu-1: the replica fails over to us-1
  meridian status ${m(p3)}                 # master us-1
  kill -STOP ${children.get('us-1').pid}                       # freeze us-1 too: read-only within 3 s
  meridian put Organisation name=Refused kind=customer ${m(p3)}  # refused: read-only, naming the lost master
  kill -CONT ${children.get('us-1').pid}                       # writable again
  curl -s http://127.0.0.1:${p3}/metrics | grep meridian_read_only
  curl -s http://127.0.0.1:${p2}/readyz
  tail -f ${join(dir, 'laptop-1.log')}    # JSON logs: one line per state change (read-only, writable again)
  meridian verify --nodes http://127.0.0.1:${p2},http://127.0.0.1:${p3}
`);
for (const [name, c] of children) c.once('exit', (code, sig) => !stopping && console.log(`${name} exited (${sig ?? code})`));
