/**
 * The frame codec: compression primed with the history of one direction of
 * one connection. Two codecs back to back, as the two ends of a link.
 */
import t from 'tap';
import { deflateRawSync } from 'node:zlib';
import { COMPRESSED, FrameCodec, FrameError, PROTOCOL_VERSION, decodeFrame, encodeFrame, type Frame } from '../dist/index.js';
import { prng } from '../../../test/helpers/prng.js';

const LIMIT = 16 * 1024 * 1024;
const hello = (z: boolean): Frame => ({ t: 'hello', v: PROTOCOL_VERSION, cluster: 'c', node: 'n', role: 'master', nonce: new Uint8Array(16), ...(z ? { z: true } : {}) });
const change = (i: number): Frame => ({
  t: 'changes',
  changes: [{ o: 'node-alpha', n: i, i: `org-${String(i * 7919).padStart(12, '0')}`, y: 'Organisation', k: 'update', u: Buffer.from(`update ${i} name Bench ${i}`), h: 1_795_373_846_081_000 + i, p: 'admin', c: ['name'] }],
  last: i,
  head: i,
});

t.test('frames go plain until the peer offers compression, then compressed, and decode to what was sent', async (t) => {
  const a = new FrameCodec(LIMIT);
  const b = new FrameCodec(LIMIT);
  const early = a.encode(change(1));
  t.same(early, encodeFrame(change(1)), 'before the peer\'s hello: plain msgpack');
  t.same(b.decode(early), decodeFrame(encodeFrame(change(1))));
  // b's hello offers compression; a learns it by decoding it
  a.decode(b.encode(hello(true)));
  let plain = 0;
  let sent = 0;
  for (let i = 2; i < 500; i++) {
    const wire = a.encode(change(i));
    plain += encodeFrame(change(i)).length;
    sent += wire.length;
    t.equal(wire[0], COMPRESSED, `frame ${i} is compressed`);
    const got = b.decode(wire);
    if (i % 100 === 0) t.same(got, decodeFrame(encodeFrame(change(i))), `frame ${i} decodes to what was sent`);
  }
  t.ok(sent / plain < 0.3, `compressed to ${((100 * sent) / plain).toFixed(0)}% (${(sent / 498).toFixed(1)} bytes per one-change frame)`);
  // small frames stay plain, and the history stays in step across them
  const ack: Frame = { t: 'ack', seq: 3 };
  const ackWire = a.encode(ack);
  t.same(ackWire, encodeFrame(ack), 'an ack is too small to compress');
  b.decode(ackWire);
  t.same(b.decode(a.encode(change(999))), decodeFrame(encodeFrame(change(999))), 'compression continues after a plain frame');
});

t.test('a peer that did not offer compression gets plain frames', async (t) => {
  const a = new FrameCodec(LIMIT);
  a.decode(encodeFrame(hello(false)));
  for (let i = 1; i < 20; i++) t.same(a.encode(change(i)), encodeFrame(change(i)));
});

t.test('frames larger than the history go through, and the window slides', async (t) => {
  const a = new FrameCodec(LIMIT);
  const b = new FrameCodec(LIMIT);
  a.decode(b.encode(hello(true)));
  const rnd = prng(7);
  for (let i = 0; i < 200; i++) {
    const size = Math.floor(rnd() * 40_000);
    const f: Frame = { t: 'error', reason: 'x'.repeat(Math.min(size, 400)) };
    const big: Frame = { ...change(i + 1), changes: [{ ...(change(i + 1) as Extract<Frame, { t: 'changes' }>).changes[0]!, u: Uint8Array.from({ length: size }, () => Math.floor(rnd() * 4)) }] };
    for (const x of [f, big]) t.same(b.decode(a.encode(x)), decodeFrame(encodeFrame(x)), `round ${i}, ${x.t} of ${size}`);
  }
});

t.test('bad compressed frames are FrameErrors: garbage, a bomb, the wrong history', async (t) => {
  const b = new FrameCodec(1024 * 1024);
  const refusal = (data: Uint8Array): string => {
    try {
      b.decode(data);
      return 'accepted';
    } catch (e) {
      return e instanceof FrameError ? e.message : `not a FrameError: ${String(e)}`;
    }
  };
  t.equal(refusal(Uint8Array.of(COMPRESSED, 0xff, 0xff, 0x00)), 'a compressed frame does not inflate (invalid block type)');
  t.equal(refusal(Uint8Array.of(COMPRESSED)), 'a compressed frame does not inflate (unexpected end of file)', 'a lone marker byte');
  const bomb = Buffer.concat([Buffer.from([COMPRESSED]), deflateRawSync(Buffer.alloc(2 * 1024 * 1024))]);
  t.equal(refusal(bomb), 'a compressed frame inflates past 1048576 bytes');
  // a frame compressed against a history the receiver does not have decodes to garbage or fails, never silently to another frame
  const a = new FrameCodec(LIMIT);
  a.decode(encodeFrame(hello(true)));
  for (let i = 1; i < 50; i++) a.encode(change(i));
  const fresh = new FrameCodec(LIMIT);
  let wrong = 0;
  for (let i = 50; i < 60; i++) {
    try {
      const f = fresh.decode(a.encode(change(i)));
      if (JSON.stringify(f) !== JSON.stringify(decodeFrame(encodeFrame(change(i))))) wrong++;
    } catch (e) {
      t.ok(e instanceof FrameError, 'only FrameErrors');
      wrong++;
    }
  }
  t.equal(wrong, 10, 'every frame out of step is refused or differs');
});

t.test('fuzz: decode never throws anything but a FrameError', async (t) => {
  const rnd = prng(Number(process.env['FUZZ_SEED'] ?? 99));
  const a = new FrameCodec(LIMIT);
  a.decode(encodeFrame(hello(true)));
  const seeds = Array.from({ length: 20 }, (_, i) => a.encode(change(i + 1)));
  let other = 0;
  for (let i = 0; i < 3000; i++) {
    const src = Uint8Array.from(seeds[Math.floor(rnd() * seeds.length)]!);
    for (let m = 0; m < 1 + Math.floor(rnd() * 3); m++) src[1 + Math.floor(rnd() * (src.length - 1))] ^= 1 << Math.floor(rnd() * 8);
    try {
      new FrameCodec(LIMIT).decode(src);
    } catch (e) {
      if (!(e instanceof FrameError)) other++;
    }
  }
  t.equal(other, 0, 'no other error escapes');
});
