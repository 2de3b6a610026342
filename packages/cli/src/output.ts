import { statSync } from 'node:fs';
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
  try {
    return statSync(file).size;
  } catch (e) {
    throw new CliError(`cannot read ${file}: ${(e as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (e as Error).message}`);
  }
}
