import { Worker } from 'node:worker_threads';
import { XmlError, type ObjectInput } from './format.js';
import { parseHere, type ParsedPieces, type PieceGroup } from './parse-pieces.js';

/** A group of pieces crosses to the worker as one string (see PieceGroup). */
export interface ParseRequest extends PieceGroup {
  id: number;
}

export type ParseReply =
  | { id: number; parsed: [number, ObjectInput][]; bad: { status: number; message: string; field: string | undefined } | undefined; failed?: undefined }
  | { id: number; failed: string };

/**
 * Parses an import's pieces on a worker thread, so that parsing (about
 * 43 us an object, most of an import's event-loop time after the writes)
 * runs on the other core while the event loop writes the objects parsed
 * before. Results come back in the order asked. One worker serves every
 * import of a gateway; it starts with the first large import and keeps
 * the process alive only while it owes answers. Should it fail, its pieces and every later
 * group are parsed on the event loop instead, as small imports always are,
 * and `onLost` is told why, once.
 */
export class PieceParser {
  /** undefined: not started yet; null: lost or closed, never started again */
  private worker: Worker | null | undefined;
  private nextId = 0;
  private readonly waiting = new Map<number, { group: PieceGroup; resolve: (r: ParsedPieces) => void; reject: (e: Error) => void }>();

  constructor(private readonly onLost: (reason: string) => void = () => undefined) {}

  parse(group: PieceGroup): Promise<ParsedPieces> {
    if (this.worker === undefined) this.worker = this.start();
    const worker = this.worker;
    if (!worker) return parseHere(group);
    const id = this.nextId++;
    // while it owes answers the worker keeps the process alive; idle, it never does
    if (this.waiting.size === 0) worker.ref();
    return new Promise((resolve, reject) => {
      this.waiting.set(id, { group, resolve, reject });
      worker.postMessage({ id, ...group } satisfies ParseRequest);
    });
  }

  async close(): Promise<void> {
    const w = this.worker;
    this.worker = null;
    if (w) await w.terminate();
    this.fallBack();
  }

  private start(): Worker | null {
    let w: Worker;
    try {
      w = new Worker(new URL('./parse-worker.js', import.meta.url));
    } catch (e) {
      this.onLost(`the import parser thread could not start (${e instanceof Error ? e.message : String(e)}); imports are parsed on the event loop`);
      return null;
    }
    w.unref();
    w.on('message', (r: ParseReply) => {
      const job = this.waiting.get(r.id);
      if (!job) return;
      this.waiting.delete(r.id);
      if (this.waiting.size === 0) w.unref();
      if (r.failed !== undefined) job.reject(new Error(`the XML parser failed: ${r.failed}`));
      else job.resolve({ parsed: r.parsed, bad: r.bad && new XmlError(r.bad.status, r.bad.message, r.bad.field) });
    });
    const lost = (why: string): void => {
      if (this.worker !== w) return;
      this.worker = null;
      this.onLost(`the import parser thread ${why}; imports are parsed on the event loop from now on`);
      this.fallBack();
    };
    w.on('error', (e: Error) => lost(`failed: ${e.message}`));
    w.on('exit', (code: number) => lost(`exited with code ${code}`));
    // an answer that cannot be read would leave its import waiting for ever
    w.on('messageerror', () => {
      void w.terminate();
      lost('sent an answer that could not be read');
    });
    return w;
  }

  /** What the worker had not answered yet is parsed here. */
  private fallBack(): void {
    const jobs = [...this.waiting.values()];
    this.waiting.clear();
    for (const job of jobs) parseHere(job.group).then(job.resolve, job.reject);
  }
}
