import type { Socket } from 'node:net';
import { tlv } from './ber.js';
import { checkRequest, type CheckedRequest } from './validate.js';

/**
 * Cuts a connection's bytes into whole LDAP messages before ldapjs's parser
 * sees them. ldapjs 3.0.7 concatenates every partial chunk (quadratic on a
 * large message, with no bound), parses several messages of one chunk by
 * recursion (a burst of small ones overflows the stack, outside any
 * try/catch, killing the process), and throws from some parse paths. Here a
 * message longer than the limit closes the connection as soon as its length
 * is read, and each message is handed over on its own, inside a try, once
 * its shape is checked (see validate.ts).
 */
export class MessageFramer {
  private chunks: Buffer[] = [];
  private buffered = 0;
  private stopped = false;
  /** hands over nothing until released: the connection has enough in hand */
  private held = false;

  constructor(
    private readonly maxMessage: number,
    private readonly onMessage: (message: Buffer) => void,
    private readonly onError: (problem: string) => void,
  ) {}

  /** Hands over nothing more, from what is buffered or pushed later (the connection is being closed). */
  stop(): void {
    this.stopped = true;
    this.chunks = [];
    this.buffered = 0;
  }

  /** Hands over no more messages, even ones already buffered, until release(). */
  hold(): void {
    this.held = true;
  }

  /** Hands over what is buffered, and what comes next, again. */
  release(): void {
    if (!this.held) return;
    this.held = false;
    this.deliver();
  }

  push(data: Buffer): void {
    if (this.stopped) return;
    this.chunks.push(data);
    this.buffered += data.length;
    this.deliver();
  }

  private deliver(): void {
    for (;;) {
      if (this.stopped || this.held || this.buffered < 2) return;
      const head = this.peek(Math.min(this.buffered, 6));
      if (head[0] !== 0x30) return this.onError('a message did not start with an LDAP message sequence');
      const first = head[1]!;
      let length: number;
      let headLength: number;
      if (first < 0x80) {
        length = first;
        headLength = 2;
      } else {
        const n = first & 0x7f;
        if (n === 0 || n > 4) return this.onError('a message length was indefinite or longer than four bytes');
        if (head.length < 2 + n) return;
        length = 0;
        for (let i = 0; i < n; i++) length = length * 256 + head[2 + i]!;
        headLength = 2 + n;
      }
      if (length > this.maxMessage) return this.onError(`a request of ${length} bytes is over the limit of ${this.maxMessage} bytes`);
      const total = headLength + length;
      if (this.buffered < total) return;
      const all = this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks, this.buffered);
      const message = all.subarray(0, total);
      const rest = all.subarray(total);
      this.chunks = rest.length > 0 ? [rest] : [];
      this.buffered = rest.length;
      this.onMessage(message);
    }
  }

  private peek(n: number): Buffer {
    const first = this.chunks[0]!;
    if (first.length >= n) return first.subarray(0, n);
    // the head spans chunks: merge them once, so that the next push finds it whole
    // (merging at every push while the first chunk stayed short was quadratic)
    const merged = Buffer.concat(this.chunks, this.buffered);
    this.chunks = [merged];
    return merged.subarray(0, n);
  }
}

/** Stops and resumes reading a connection's requests. */
export interface ReadGate {
  /** reads nothing more (the socket pauses) and hands over no buffered request */
  hold(): void;
  release(): void;
}

/**
 * Puts a framer between a socket and ldapjs's per-connection parser. Each
 * well-formed request is offered to `onRequest` first, which answers true
 * (the request is taken care of), false (ldapjs gets it), or the bytes
 * ldapjs gets instead.
 */
export function frameConnection(
  socket: Socket & { parser: { write(b: Buffer): unknown } },
  maxMessage: number,
  onError: (problem: string) => void,
  onRequest: (message: Buffer, checked: CheckedRequest) => boolean | Buffer,
): ReadGate {
  // ldapjs's own listener feeds every chunk to its parser; ours replaces it
  socket.removeAllListeners('data');
  const fail = (problem: string): void => {
    framer.stop();
    onError(problem);
    socket.destroy();
  };
  const framer = new MessageFramer(
    maxMessage,
    (message) => {
      const checked = checkRequest(message);
      if (typeof checked === 'string') return fail(checked);
      try {
        const handOn = onRequest(message, checked);
        if (handOn !== true) socket.parser.write(handOn === false ? message : handOn);
      } catch (e) {
        fail(`a message could not be parsed (${(e as Error).message})`);
      }
    },
    fail,
  );
  socket.on('data', (data: Buffer) => {
    if (!socket.destroyed) framer.push(data);
  });
  return {
    hold: () => {
      framer.hold();
      socket.pause();
    },
    release: () => {
      socket.resume();
      framer.release();
    },
  };
}

/**
 * The request without its controls: ldapjs decodes the controls it knows by
 * type and throws on some that clients send (a password policy request has
 * no value, a sort control on a bind), and closed the connection unanswered.
 */
export function withoutControls(message: Buffer, checked: CheckedRequest): Buffer {
  const head = message[1]! < 0x80 ? 2 : 2 + (message[1]! & 0x7f);
  return tlv(0x30, message.subarray(head, checked.op.end));
}
