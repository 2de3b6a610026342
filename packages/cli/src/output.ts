import { closeSync, createReadStream, createWriteStream, existsSync, fstatSync, fsyncSync, lstatSync, openSync, readlinkSync, renameSync, rmSync, statSync, type ReadStream, type WriteStream } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { isValidId } from '@meridian/store';
import { CliError } from './client.js';

/** The flags every command that talks to a node takes. */
export interface ClientFlags {
  node: string;
  user: string;
  password?: string;
  json?: boolean;
  /** seconds, as given */
  timeout?: string;
}

/**
 * The admin API path of an object, once its id is one an object can have:
 * `..` or `.` went to another resource (`get ..` read /api/, `history .`
 * the history of an object named "history").
 */
export function objectPath(id: string, rest = ''): string {
  if (!isValidId(id)) throw new CliError(`"${id.length > 40 ? `${id.slice(0, 40)}...` : id}" is not an object id: ids are letters, digits, ".", "_" and "-", beginning with a letter or digit (at most 128)`, 2);
  return `/api/objects/${id}${rest}`;
}

/** One result on stdout, newline-terminated. */
export function out(text: string): void {
  process.stdout.write(text.endsWith('\n') ? text : `${text}\n`);
}

/**
 * What a command says once it has written its file: on stdout, unless that
 * file is stdout itself (`--out /dev/stdout`, piped or redirected), where
 * the line would land in the file (after a backup's end record, or over
 * its header through the other descriptor), which then never restored.
 */
export function saidOfFile(file: string, text: string): void {
  if (sameFileAsStdout(file)) process.stderr.write(`${text}\n`);
  else out(text);
}

function sameFileAsStdout(file: string): boolean {
  try {
    const a = fstatSync(1);
    const b = statSync(file);
    return a.dev === b.dev && a.ino === b.ino;
  } catch {
    return false;
  }
}

/**
 * A file the command is to read, opened once (a stream on that descriptor)
 * with its size, or an error saying why it cannot be read: found only once
 * the request was under way, a directory or an unreadable file was reported
 * as the node being unreachable.
 */
export function openInput(file: string): { stream: ReadStream; size: number } {
  let fd: number | undefined;
  try {
    fd = openSync(file, 'r');
    const st = fstatSync(fd);
    if (st.isDirectory()) throw new CliError(`cannot read ${file}: it is a directory; give the file to read`);
    const stream = createReadStream(file, { fd });
    fd = undefined; // the stream's now
    return { stream, size: st.size };
  } catch (e) {
    if (e instanceof CliError) throw e;
    throw new CliError(`cannot read ${file}: ${fileProblem(e, 'no such file')}`);
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}

/**
 * A file written aside, as FILE.partial, and named FILE only once whole and
 * on disk (the file fsynced, renamed, then its directory fsynced): a run cut
 * short, or a crash soon after, leaves no FILE that looks complete. The
 * partial file is created by this run (refused if one is there), so only
 * this run removes it.
 */
export interface AsideFile {
  readonly stream: WriteStream;
  readonly partial: string;
  /** once the stream has ended: FILE, replacing one there unless `keep` */
  finish(keep?: boolean): Promise<void>;
  discard(): void;
}

export function writeAside(named: string, what: string, opts: { overwrite?: boolean } = {}): AsideFile {
  // (found only by the rename at the end otherwise, after the whole download)
  let st: ReturnType<typeof statSync>;
  try {
    st = statSync(named, { throwIfNoEntry: false });
  } catch (e) {
    throw new CliError(`cannot write ${named}: ${(e as NodeJS.ErrnoException).code === 'ELOOP' ? 'its symbolic links go round in a loop' : fileProblem(e, 'its directory does not exist')}`, 2);
  }
  if (st?.isDirectory()) throw new CliError(`${named} is a directory; give the name of the file to write`, 2);
  // A pipe, a device or a socket is written to as it is: renamed over, a FIFO's reader got nothing
  // and /dev/full became a file. A symbolic link's file is written aside in its own directory.
  if (st && !st.isFile()) return writeThrough(named);
  // a file that is there already, reached by no open descriptor's link (/dev/stdout redirected to a file is one)
  if (opts.overwrite === false && st && !viaDescriptor(named)) throw new CliError(`${named} exists already; choose a new file (${what} never overwrites one)`, 2);
  const out = linkedFile(named);
  // (/dev/stdout redirected to a file links to it through /proc/self/fd: an open descriptor's file, written to, not renamed over)
  if (out === undefined) return writeThrough(named);
  const partial = `${out}.partial`;
  let fd: number;
  try {
    fd = openSync(partial, 'wx');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'EEXIST') throw new CliError(`${partial} is left from ${what} that did not finish (or one still running); delete it, or choose another file`, 2);
    throw new CliError(`cannot write ${out}: ${fileProblem(e, 'its directory does not exist')}`);
  }
  const stream = createWriteStream(partial, { fd });
  return {
    stream,
    partial,
    async finish(keep = false) {
      if (!stream.closed) await new Promise<void>((resolve, reject) => stream.once('close', resolve).once('error', reject).end());
      if (keep && existsSync(out)) throw new Error(`${out} was created by something else meanwhile`);
      syncPath(partial);
      renameSync(partial, out);
      syncPath(dirname(resolve(out)));
    },
    discard() {
      stream.destroy();
      rmSync(partial, { force: true });
    },
  };
}

/** Whether `path` names an open descriptor's file (/dev/stdout, /dev/fd/N, /proc/self/fd/N), through its links or itself. */
function viaDescriptor(path: string): boolean {
  return linkChain(path).some((at) => /^\/dev\/(std(in|out|err)|fd\/\d+)$/.test(resolve(at)) || /^\/proc\/(self|\d+)\/fd\/\d+$/.test(resolve(at)));
}

/** What `path` names once symbolic links are followed, whether or not that file exists yet; undefined through /dev or /proc. */
function linkedFile(path: string): string | undefined {
  const chain = linkChain(path);
  return chain.some((at) => /^\/(dev|proc)\//.test(resolve(at))) ? undefined : chain.at(-1);
}

/** `path` as given, then each path its symbolic links lead to in turn, the last no link (a loop is the caller's stat's ELOOP first). */
function linkChain(path: string): string[] {
  const chain = [path];
  for (let at = path; lstatSync(at, { throwIfNoEntry: false })?.isSymbolicLink(); ) {
    at = resolve(dirname(at), readlinkSync(at));
    chain.push(at);
  }
  return chain;
}

/** A pipe, device or socket, written to directly: it has no "whole" to wait for. */
function writeThrough(out: string): AsideFile {
  let fd: number;
  try {
    // (appending: /dev/stdout opened anew on a file the shell opened with >> must not truncate it)
    fd = openSync(out, 'a');
  } catch (e) {
    throw new CliError(`cannot write ${out}: ${fileProblem(e, 'it does not exist')}`);
  }
  const stream = createWriteStream(out, { fd });
  return {
    stream,
    partial: out,
    async finish() {
      if (!stream.closed) await new Promise<void>((done, fail) => stream.once('close', done).once('error', fail).end());
    },
    discard() {
      stream.destroy();
    },
  };
}

/** fsync of a file, or of a directory (its entries: a rename into it). */
function syncPath(path: string): void {
  const fd = openSync(path, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

function fileProblem(e: unknown, missing: string): string {
  const code = (e as NodeJS.ErrnoException).code;
  return code === 'ENOENT' ? missing : code === 'EACCES' ? 'permission denied' : code === 'EISDIR' ? 'it is a directory' : (e as Error).message;
}
