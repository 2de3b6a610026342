import { Writable } from 'node:stream';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type { Test } from 'tap';
import { until } from './wait.js';

export const BIN = fileURLToPath(new URL('../../bin/meridian', import.meta.url));

/**
 * tap wraps child_process and puts its loaders into NODE_OPTIONS of every
 * child, which makes each CLI run take a second. The children here are the
 * real binary, so start them through env(1) with NODE_OPTIONS removed;
 * env execs node, so the pid stays the node's.
 */
export function nodeCommand(args: string[], nodeFlags: string[] = []): [string, string[]] {
  return ['/usr/bin/env', ['-u', 'NODE_OPTIONS', process.execPath, ...nodeFlags, BIN, ...args]];
}

export interface RunningNode {
  proc: ChildProcess;
  url: string;
  pid: number;
  output: () => string;
  /** SIGTERM and wait for exit; resolves to the exit code */
  stop: () => Promise<number | null>;
  kill9: () => Promise<void>;
}

/**
 * Starts `meridian serve` on a free port (--http-port 0) and waits for its
 * "listening on" line. The process is killed by pid when the test ends.
 */
export async function startNode(t: Test, args: string[], env: NodeJS.ProcessEnv = {}, nodeFlags: string[] = []): Promise<RunningNode> {
  const [cmd, argv] = nodeCommand(['serve', '--http-port', '0', ...args], nodeFlags);
  const proc = spawn(cmd, argv, {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  proc.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  proc.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  // 'close', not 'exit': only then has everything the process wrote to its pipes been read
  const exited = new Promise<number | null>((resolve) => proc.once('close', (code) => resolve(code)));
  t.teardown(async () => {
    if (proc.exitCode === null && proc.signalCode === null) {
      process.kill(proc.pid!, 'SIGKILL');
      await exited;
    }
  });
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`node did not start in 20 s:\n${out}`)), 20_000);
    const onData = (): void => {
      const m = /listening on (https?:\/\/\S+)/.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]!);
      }
    };
    proc.stdout!.on('data', onData);
    proc.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`node exited with ${code} before listening:\n${out}`));
    });
  });
  return {
    proc,
    url,
    pid: proc.pid!,
    output: () => out,
    stop: async () => {
      process.kill(proc.pid!, 'SIGTERM');
      return exited;
    },
    kill9: async () => {
      process.kill(proc.pid!, 'SIGKILL');
      await exited;
    },
  };
}

/** A line of a node's log (pino's JSON lines): `time` is ms since the epoch by the node's own clock. */
export interface LogLine {
  msg?: string;
  time?: number;
  [field: string]: unknown;
}

/** A stream for a node's logger (pino) that parses each JSON line it writes into `lines`. */
export function logSink<T = LogLine>(lines: T[]): Writable {
  return new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const line of chunk.toString().split('\n')) if (line) lines.push(JSON.parse(line) as T);
      done();
    },
  });
}

/** The JSON lines of a node's output, parsed; lines that are not JSON (or cut short) are left out. */
export function logLines(output: string): LogLine[] {
  const lines: LogLine[] = [];
  for (const line of output.split('\n')) {
    try {
      const parsed: unknown = JSON.parse(line);
      if (parsed !== null && typeof parsed === 'object') lines.push(parsed as LogLine);
    } catch {
      // not a log line
    }
  }
  return lines;
}

/**
 * Waits up to `ms` for a line of the node's log that `match` accepts,
 * looking only at what it wrote from offset `from` of its output on (the
 * output's length before the event); resolves to the first such line, or
 * undefined. A test that times an event by the line's `time` measures it
 * with the node's own clock, not across polls that a loaded machine slows.
 */
export async function loggedLine(node: RunningNode, match: (line: LogLine) => boolean, ms = 10_000, from = 0): Promise<LogLine | undefined> {
  let found: LogLine | undefined;
  await until(() => (found = logLines(node.output().slice(from)).find(match)) !== undefined, ms);
  return found;
}

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs the real CLI through bin/meridian. */
export function cli(args: string[], env: NodeJS.ProcessEnv = {}): CliResult {
  const [cmd, argv] = nodeCommand(args);
  const r = spawnSync(cmd, argv, { env: { ...process.env, ...env }, encoding: 'utf8', timeout: 30_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

/**
 * Runs the CLI without blocking this process: tests that host fault proxies
 * in-process must keep their event loop free, or the proxies stop carrying
 * heartbeats while a synchronous child runs.
 */
export function cliAsync(args: string[], env: NodeJS.ProcessEnv = {}, opts: { interruptAfter?: number; interruptOn?: RegExp; whenPrinted?: [RegExp, () => void] } = {}): Promise<CliResult> {
  const [cmd, argv] = nodeCommand(args);
  return new Promise((resolve) => {
    const p = spawn(cmd, argv, { env: { ...process.env, ...env } });
    let stdout = '';
    let stderr = '';
    let interrupted = false;
    let told = false;
    p.stdout.on('data', (d: Buffer) => {
      stdout += d.toString();
      // (what the test does once the command has printed something: a change made after a follow began, say)
      if (!told && opts.whenPrinted?.[0].test(stdout)) {
        told = true;
        opts.whenPrinted[1]();
      }
      // (or a second after what the test waits for is out, once: a fixed wait is short on a loaded machine, and
      // the second lets a line printed twice show)
      if (!interrupted && opts.interruptOn?.test(stdout)) {
        interrupted = true;
        setTimeout(() => p.kill('SIGINT'), 1000);
      }
    });
    p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    // commands that run until interrupted (--watch, --follow): Ctrl-C after a while
    const timer = opts.interruptAfter === undefined ? undefined : setTimeout(() => p.kill('SIGINT'), opts.interruptAfter);
    p.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

/**
 * Runs the CLI on a terminal: script(1) gives it one, and its output
 * (stdout and stderr, as a terminal shows them) comes back as `out`.
 * `interruptAfter` (ms) sends Ctrl-C's signal to commands that run until
 * interrupted.
 */
export function cliOnTty(args: string[], env: NodeJS.ProcessEnv = {}, opts: { interruptAfter?: number } = {}): Promise<{ code: number | null; out: string }> {
  const [cmd, argv] = nodeCommand(args);
  const timeout = opts.interruptAfter === undefined ? [] : ['timeout', '-s', 'INT', String(opts.interruptAfter / 1000)];
  const line = [...timeout, cmd, ...argv].map((w) => `'${w.replace(/'/g, "'\\''")}'`).join(' ');
  return new Promise((resolve) => {
    const p = spawn('script', ['-qec', line, '/dev/null'], { env: { ...process.env, ...env } });
    let out = '';
    p.stdout.on('data', (d: Buffer) => (out += d.toString()));
    p.on('close', (code) => resolve({ code, out }));
  });
}
