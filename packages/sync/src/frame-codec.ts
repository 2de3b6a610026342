import { constants, deflateRawSync, inflateRawSync } from 'node:zlib';
import { decodeFrame, encodeFrame, FrameError, type Frame } from './frames.js';

/** First byte of a compressed frame: 0xc1 is never used by msgpack, so it cannot start a plain one. */
export const COMPRESSED = 0xc1;
/** Bytes of past frames (per direction) that prime the compressor: the preset dictionary. */
export const HISTORY_BYTES = 8192;
/** Frames shorter than this go as they are: a deflate header would outweigh the saving. */
const MIN_COMPRESS = 48;
/**
 * Frames longer than this go as they are: compression runs on the event loop
 * (a few microseconds for a live frame, measured 0.3 ms for a 64 KB catch-up
 * frame), and one of many megabytes would stall heartbeats.
 */
const MAX_COMPRESS = 1024 * 1024;

/**
 * The last HISTORY_BYTES bytes of the frames that went one way on one
 * connection, in order. Kept in a buffer four times that size, so a frame
 * is appended by one copy and the window slides by one copy now and then.
 */
class History {
  private readonly buf = Buffer.alloc(4 * HISTORY_BYTES);
  private len = 0;

  add(frame: Uint8Array): void {
    if (frame.length >= HISTORY_BYTES) {
      this.buf.set(frame.subarray(frame.length - HISTORY_BYTES), 0);
      this.len = HISTORY_BYTES;
      return;
    }
    if (this.len + frame.length > this.buf.length) {
      this.buf.copyWithin(0, this.len - HISTORY_BYTES, this.len);
      this.len = HISTORY_BYTES;
    }
    this.buf.set(frame, this.len);
    this.len += frame.length;
  }

  dictionary(): Buffer | undefined {
    return this.len === 0 ? undefined : this.buf.subarray(Math.max(0, this.len - HISTORY_BYTES), this.len);
  }
}

/**
 * Frame compression for one connection. A frame is raw DEFLATE (RFC 1951)
 * of its msgpack bytes, primed with the frames sent before it on the same
 * connection in the same direction as a preset dictionary, behind one 0xc1
 * byte. The origin ids, types, field names and principals that every change
 * repeats then cost a few bytes each, as with permessage-deflate's shared
 * window, but synchronously: the zlib thread-pool round trips of
 * permessage-deflate added about 0.3 ms to every frame, and a forwarded
 * write crosses the link four times.
 *
 * Each side offers compression in its hello (`z`) and compresses only once
 * the peer's hello has offered it; both sides add every frame, compressed or
 * not, to the history of its direction.
 */
export class FrameCodec {
  private readonly sent = new History();
  private readonly received = new History();
  /** the peer accepts compressed frames (its hello said so) */
  private peerAccepts = false;

  constructor(
    /** largest frame accepted, uncompressed */
    private readonly maxFrame: number,
  ) {}

  encode(frame: Frame): Uint8Array {
    const plain = encodeFrame(frame);
    let out: Uint8Array = plain;
    if (this.peerAccepts && plain.length >= MIN_COMPRESS && plain.length <= MAX_COMPRESS) {
      const z = deflateRawSync(plain, { level: constants.Z_BEST_SPEED, dictionary: this.sent.dictionary() });
      if (z.length + 1 < plain.length) {
        out = Buffer.allocUnsafe(z.length + 1);
        out[0] = COMPRESSED;
        out.set(z, 1);
      }
    }
    this.sent.add(plain);
    return out;
  }

  /** Decodes one message (`max`: the most it may inflate to); anything malformed throws a FrameError. */
  decode(data: Uint8Array, max = this.maxFrame): Frame {
    let plain = data;
    if (data[0] === COMPRESSED) {
      try {
        plain = inflateRawSync(data.subarray(1), { dictionary: this.received.dictionary(), maxOutputLength: max });
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code;
        throw new FrameError(code === 'ERR_BUFFER_TOO_LARGE' ? `a compressed frame inflates past ${max} bytes` : `a compressed frame does not inflate (${(e as Error).message})`);
      }
    }
    this.received.add(plain);
    const f = decodeFrame(plain);
    if (f.t === 'hello' && f.z === true) this.peerAccepts = true;
    return f;
  }
}
