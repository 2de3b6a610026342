#!/usr/bin/env node
// Runs the benchmarks in bench/*.bench.js and summarises them against their targets.
//
//   node bench/run.js [--quick] [--only NAME[,NAME]] [--phase P[,P]] [--profile] [file.bench.js ...]
//
// --quick    a smoke run with a few hundred operations: checks that every
//            benchmark works; its figures say little
// --only     run only the named benchmarks (name = file name without .bench.js)
// --phase    run only these phases of the benchmarks, each of which must
//            list them in its PHASES export (replication: sync, push)
// --profile  CPU-profile the phase a benchmark chooses (see its file) and
//            print its top self-time functions; .cpuprofile goes to bench/out/
//
// Each benchmark module exports `name` and `run({ quick, profile, outDir, log, phases? })`
// returning `{ metrics, checks: [{ name, measured, target, pass, shown }] }`.
// Results go to bench/out/latest.json. The exit code is 1 if a benchmark
// throws, or if a target is missed in a full (not --quick) run.
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { cpus, loadavg, totalmem } from 'node:os';
import { basename, dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { fmt, NODE_FLAGS, printTable } from './lib.js';

// Benchmarks that run a store or a node in this process (store-writes, the
// writer of replication) must run it as bin/meridian runs a node: with its
// flags. Without them, start again with them.
if (!NODE_FLAGS.every((f) => process.execArgv.includes(f))) {
  const { spawn } = await import('node:child_process');
  const child = spawn(process.execPath, [...process.execArgv, ...NODE_FLAGS, fileURLToPath(import.meta.url), ...process.argv.slice(2)], { stdio: 'inherit' });
  // a signal sent to this pid alone (kill, a CI timeout) must reach the run, which cleans up its
  // nodes; lib.js's handlers (exit at once) are for the run itself, not for this wrapper
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) process.removeAllListeners(sig).on(sig, () => child.kill(sig));
  const code = await new Promise((resolve) => child.once('exit', (c, sig) => resolve(c ?? (sig ? 130 : 1))));
  process.exit(code);
}

// as bin/meridian does for a node: the thread pool is shared by LevelDB, fsync and zlib
process.env.UV_THREADPOOL_SIZE ??= '16';

const benchDir = dirname(fileURLToPath(import.meta.url));
const outDir = join(benchDir, 'out');

const { values: opts, positionals } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    only: { type: 'string', multiple: true, default: [] },
    phase: { type: 'string', multiple: true, default: [] },
    profile: { type: 'boolean', default: false },
    help: { type: 'boolean', short: 'h', default: false },
  },
  allowPositionals: true,
});
if (opts.help) {
  // the comment at the top of this file is the usage text
  const lines = readFileSync(fileURLToPath(import.meta.url), 'utf8').split('\n').slice(1);
  const usage = lines.slice(0, lines.findIndex((l) => !l.startsWith('//')));
  console.log(usage.map((l) => l.replace(/^\/\/ ?/, '')).join('\n'));
  process.exit(0);
}

const nameOf = (file) => basename(file).replace(/\.bench\.js$/, '');
const only = new Set(opts.only.flatMap((s) => s.split(',')).filter(Boolean));
let files = positionals.length
  ? positionals.map((f) => resolve(f))
  : readdirSync(benchDir).filter((f) => f.endsWith('.bench.js')).sort().map((f) => join(benchDir, f));
if (only.size) files = files.filter((f) => only.has(nameOf(f)));
if (!files.length) {
  console.error(`no benchmarks to run${only.size ? ` (--only ${[...only].join(',')})` : ''}; have: ${readdirSync(benchDir).filter((f) => f.endsWith('.bench.js')).join(', ')}`);
  process.exit(1);
}

const phases = new Set(opts.phase.flatMap((s) => s.split(',')).filter(Boolean));
const modules = [];
for (const file of files) {
  const mod = await import(pathToFileURL(file).href);
  const unknown = [...phases].filter((p) => !(mod.PHASES ?? []).includes(p));
  if (unknown.length) {
    console.error(mod.PHASES ? `${nameOf(file)} has no phase ${unknown.join(', ')}; its phases are ${mod.PHASES.join(', ')}` : `${nameOf(file)} has no phases; leave it out with --only`);
    process.exit(1);
  }
  modules.push([file, mod]);
}

mkdirSync(outDir, { recursive: true });
const machine = {
  cpu: cpus()[0]?.model ?? 'unknown',
  cores: cpus().length,
  memoryGiB: Math.round(totalmem() / 2 ** 30),
  node: `${process.version} ${NODE_FLAGS.join(' ')}`,
  platform: `${process.platform}-${process.arch}`,
  // other work on the machine skews every figure; this shows whether there was any
  loadAverage1m: loadavg()[0],
};
const source = gitState();
console.log(`${machine.cpu}, ${machine.cores} cores, ${machine.memoryGiB} GiB, node ${machine.node}, load ${fmt(machine.loadAverage1m, 2)}; code ${source.commit}${source.dirty.length ? ` + uncommitted changes in ${source.dirty.join(', ')}` : ''}${phases.size ? `; phases ${[...phases].join(', ')} only` : ''}${opts.quick ? ' -- QUICK smoke run, figures are not meaningful' : ''}`);

const results = [];
for (const [file, mod] of modules) {
  const name = mod.name ?? nameOf(file);
  console.log(`\n=== ${name} ${'='.repeat(Math.max(0, 60 - name.length))}`);
  const t0 = performance.now();
  try {
    const r = await mod.run({ quick: opts.quick, profile: opts.profile, outDir, log: (...a) => console.log(...a), ...(phases.size ? { phases } : {}) });
    results.push({ name, file: basename(file), seconds: (performance.now() - t0) / 1000, ...r });
  } catch (e) {
    console.error(e);
    results.push({ name, file: basename(file), seconds: (performance.now() - t0) / 1000, error: String(e?.stack ?? e), checks: [] });
  }
  console.log(`(${fmt(results.at(-1).seconds, 1)} s)`);
}

console.log(`\n=== summary ${'='.repeat(53)}`);
const rows = [['benchmark', 'check', 'measured', 'target', 'result']];
for (const r of results) {
  if (r.error) rows.push([r.name, 'ran', 'threw', '', 'ERROR']);
  for (const c of r.checks) rows.push([r.name, c.name, c.shown ?? fmt(c.measured, 2), c.target, c.pass ? 'PASS' : 'FAIL']);
}
printTable(rows);
if (opts.quick) console.log('(quick run: PASS/FAIL shown for completeness only)');

const file = join(outDir, 'latest.json');
writeFileSync(file, JSON.stringify({ date: new Date().toISOString(), quick: opts.quick, ...(phases.size ? { phases: [...phases] } : {}), machine, source, results }, null, 2) + '\n');
console.log(`results: ${file}`);

const errored = results.some((r) => r.error);
const missed = results.some((r) => r.checks.some((c) => !c.pass));
if (errored || (missed && !opts.quick)) process.exitCode = 1;

/** The commit measured, and which files under packages/ differ from it: the figures belong to that code. */
function gitState() {
  const git = (...args) => execFileSync('git', args, { cwd: benchDir, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
  try {
    // porcelain lines are "XY path"; the leading status column may be a space
    const dirty = git('status', '--porcelain', '--', '../packages', '.').split('\n').filter(Boolean).map((l) => l.slice(3));
    return { commit: git('rev-parse', '--short', 'HEAD').trim(), dirty };
  } catch {
    return { commit: 'unknown', dirty: [] };
  }
}
