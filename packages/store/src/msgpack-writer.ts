/**
 * A MessagePack writer for the values records hold: plain objects, arrays,
 * strings, numbers, booleans, null, undefined and byte arrays. It writes the
 * bytes msgpackr writes for them with the options codec.ts uses (proved byte
 * for byte in test/msgpack-writer.test.ts), so what is stored does not depend on
 * which of the two wrote it, and msgpackr still reads everything.
 *
 * Why not msgpackr: its encoder handles every type through one large
 * function (structures, bundled strings, extensions, references), and
 * encoding each create's object and feed records with it was 16 % of the
 * store's CPU under 64 concurrent writers (profiled at 7dd73ee).
 *
 * Anything else (a Map, a Date, a class instance) makes `packValue` return
 * undefined, for the caller to hand to msgpackr.
 */

/**
 * Encoded values are cut from shared slabs, as msgpackr cuts them from its
 * own: one allocation serves many records, and a record is copied into the
 * LevelDB batch and dropped soon after. Small, so a value kept longer holds
 * little memory alive.
 */
const SLAB = 16 * 1024;
/** a value starts on a fresh slab when less than this is left */
const MIN_LEFT = 2048;

let slab = Buffer.allocUnsafe(SLAB);
let pos = 0;
let start = 0;
/** set while a value is being written: a getter that encodes meanwhile gets msgpackr, not this writer's half-written slab */
let busy = false;

class Unsupported {}
const UNSUPPORTED = new Unsupported();

/** The MessagePack bytes of `value`, or undefined when it holds a type this writer leaves to msgpackr. */
export function packValue(value: unknown): Buffer | undefined {
  if (busy) return undefined;
  if (slab.length - pos < MIN_LEFT) {
    slab = Buffer.allocUnsafe(SLAB);
    pos = 0;
  }
  start = pos;
  busy = true;
  try {
    any(value);
  } catch (e) {
    pos = start;
    if (e === UNSUPPORTED) return undefined;
    throw e;
  } finally {
    busy = false;
  }
  const out = slab.subarray(start, pos);
  // the next value starts word-aligned, as msgpackr's do, so copying it out is cheap
  pos = (pos + 7) & ~7;
  return out;
}

/** Makes room for `n` more bytes, moving the value written so far to a larger slab if need be. */
function room(n: number): void {
  if (pos + n <= slab.length) return;
  const next = Buffer.allocUnsafe(Math.max(SLAB, (pos - start + n) * 2));
  slab.copy(next, 0, start, pos);
  pos -= start;
  start = 0;
  slab = next;
}

function any(v: unknown): void {
  switch (typeof v) {
    case 'string':
      return str(v);
    case 'number':
      return num(v);
    case 'boolean':
      room(1);
      slab[pos++] = v ? 0xc3 : 0xc2;
      return;
    case 'undefined':
      // msgpackr's undefined: fixext 1 of type 0
      room(3);
      slab[pos++] = 0xd4;
      slab[pos++] = 0;
      slab[pos++] = 0;
      return;
    case 'object': {
      if (v === null) {
        room(1);
        slab[pos++] = 0xc0;
        return;
      }
      const c = v.constructor;
      if (c === Object) return obj(v as Record<string, unknown>);
      if (c === Array) return arr(v as unknown[]);
      if (c === Uint8Array || c === Buffer) return bin(v as Uint8Array);
      throw UNSUPPORTED;
    }
    default:
      throw UNSUPPORTED;
  }
}

/**
 * A length or an unsigned integer past its type's fixed form, in the
 * smallest of 8 bits (where the type has one: `code8` not 0), 16 or 32 bits,
 * big-endian, after the code MessagePack gives that size.
 */
function sized(n: number, code8: number, code16: number, code32: number): void {
  if (n < 0x100 && code8 !== 0) {
    slab[pos++] = code8;
    slab[pos++] = n;
  } else if (n < 0x10000) {
    slab[pos++] = code16;
    slab[pos++] = n >> 8;
    slab[pos++] = n & 0xff;
  } else {
    slab[pos++] = code32;
    slab.writeUInt32BE(n, pos);
    pos += 4;
  }
}

/** msgpackr's choices: the smallest integer form for 32-bit integers, a float64 for any other number. */
function num(v: number): void {
  room(9);
  if (v >>> 0 === v) {
    if (v < 0x80) slab[pos++] = v;
    else sized(v, 0xcc, 0xcd, 0xce);
  } else if (v >> 0 === v) {
    if (v >= -0x20) slab[pos++] = 0x100 + v;
    else if (v >= -0x80) {
      slab[pos++] = 0xd0;
      slab[pos++] = v + 0x100;
    } else if (v >= -0x8000) {
      slab[pos++] = 0xd1;
      slab.writeInt16BE(v, pos);
      pos += 2;
    } else {
      slab[pos++] = 0xd2;
      slab.writeInt32BE(v, pos);
      pos += 4;
    }
  } else {
    slab[pos++] = 0xcb;
    slab.writeDoubleBE(v, pos);
    pos += 8;
  }
}

function str(s: string): void {
  const n = s.length;
  room(5 + n * 3);
  let guess: number;
  let len: number;
  if (n < 0x40) {
    // Short strings (most keys and values) by hand, as msgpackr does: a
    // lone surrogate becomes three bytes here, where Buffer would write
    // U+FFFD, and the bytes must be msgpackr's.
    guess = n < 0x20 ? 1 : 2;
    let p = pos + guess;
    for (let i = 0; i < n; i++) {
      let c = s.charCodeAt(i);
      if (c < 0x80) slab[p++] = c;
      else if (c < 0x800) {
        slab[p++] = (c >> 6) | 0xc0;
        slab[p++] = (c & 0x3f) | 0x80;
      } else if ((c & 0xfc00) === 0xd800 && (s.charCodeAt(i + 1) & 0xfc00) === 0xdc00) {
        c = 0x10000 + ((c & 0x03ff) << 10) + (s.charCodeAt(++i) & 0x03ff);
        slab[p++] = (c >> 18) | 0xf0;
        slab[p++] = ((c >> 12) & 0x3f) | 0x80;
        slab[p++] = ((c >> 6) & 0x3f) | 0x80;
        slab[p++] = (c & 0x3f) | 0x80;
      } else {
        slab[p++] = (c >> 12) | 0xe0;
        slab[p++] = ((c >> 6) & 0x3f) | 0x80;
        slab[p++] = (c & 0x3f) | 0x80;
      }
    }
    len = p - pos - guess;
  } else {
    guess = n < 0x100 ? 2 : n < 0x10000 ? 3 : 5;
    len = slab.write(s, pos + guess);
  }
  // the header the byte length needs; the bytes move if the guess from the character count was off
  const header = len < 0x20 ? 1 : len < 0x100 ? 2 : len < 0x10000 ? 3 : 5;
  if (header !== guess) slab.copyWithin(pos + header, pos + guess, pos + guess + len);
  if (header === 1) slab[pos++] = 0xa0 | len;
  else sized(len, 0xd9, 0xda, 0xdb);
  pos += len;
}

/** Always a map16, as msgpackr writes plain objects without its variableMapSize option. */
function obj(o: Record<string, unknown>): void {
  const names = Object.keys(o);
  const n = names.length;
  if (n > 0xffff) throw UNSUPPORTED;
  room(3);
  sized(n, 0, 0xde, 0xdf);
  for (let i = 0; i < n; i++) {
    const k = names[i]!;
    str(k);
    any(o[k]);
  }
}

function arr(a: unknown[]): void {
  const n = a.length;
  room(5);
  if (n < 0x10) slab[pos++] = 0x90 | n;
  else sized(n, 0, 0xdc, 0xdd);
  for (let i = 0; i < n; i++) any(a[i]);
}

function bin(b: Uint8Array): void {
  const n = b.byteLength;
  room(5 + n);
  sized(n, 0xc4, 0xc5, 0xc6);
  slab.set(b, pos);
  pos += n;
}
