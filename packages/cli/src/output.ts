import { closeSync, fstatSync, openSync, statSync } from 'node:fs';
import { CliError } from './client.js';

/** The flags every command that talks to a node takes. */
export interface ClientFlags {
  node: string;
  user: string;
  password?: string;
  json?: boolean;
}

/** One result on stdout, newline-terminated. */
export function out(text: string): void {
  process.stdout.write(text.endsWith('\n') ? text : `${text}\n`);
}

/** The size of a file the command is to read, or an error saying why it cannot be read. */
export function sizeOfInput(file: string): number {
  // opened here, not only stat'ed: a directory or an unreadable file failed only once the request
  // was under way, and was reported as the node being unreachable
  let fd: number | undefined;
  try {
    if (statSync(file).isDirectory()) throw new CliError(`cannot read ${file}: it is a directory; give the file to import`);
    fd = openSync(file, 'r');
    return fstatSync(fd).size;
  } catch (e) {
    if (e instanceof CliError) throw e;
    const code = (e as NodeJS.ErrnoException).code;
    throw new CliError(`cannot read ${file}: ${code === 'ENOENT' ? 'no such file' : code === 'EACCES' ? 'permission denied' : (e as Error).message}`);
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}
