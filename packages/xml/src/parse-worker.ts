// The worker thread of PieceParser: parses groups of pieces, in the order sent.
import { parentPort } from 'node:worker_threads';
import { parseGroup } from './parse-pieces.js';
import type { ParseReply, ParseRequest } from './piece-parser.js';

const port = parentPort;
if (!port) throw new Error('parse-worker.js runs as a worker thread of PieceParser');
port.on('message', (m: ParseRequest) => {
  let reply: ParseReply;
  try {
    const { parsed, bad } = parseGroup(m);
    reply = { id: m.id, parsed, bad: bad && { status: bad.status, message: bad.message, field: bad.field } };
  } catch (e) {
    reply = { id: m.id, failed: e instanceof Error ? e.message : String(e) };
  }
  try {
    port.postMessage(reply);
  } catch (e) {
    // (a reply that cannot be cloned must not end the thread: the group is parsed again on the main thread)
    port.postMessage({ id: m.id, failed: e instanceof Error ? e.message : String(e) } satisfies ParseReply);
  }
});
