/**
 * Two real stores, each with a SyncSession, wired back to back in memory
 * (every frame encoded and decoded as on the wire) and driven by
 * runActions as the transport drives them.
 */
import type { Store } from '@meridian/store';
import { decodeFrame, encodeFrame, releaseSession, runActions, storeSessionOptions, SyncSession, type Frame, type SessionIo } from '../dist/index.js';

export interface End {
  io: SessionIo;
  queue: Promise<void>;
  sent: Frame[];
  closed: string | undefined;
}

/** Connects two stores with a session each (`x` dials) and runs them until both are live. */
export async function replicate(
  x: Store,
  y: Store,
  needBatch: number,
  /** `cut`: once it answers true for a frame delivered, the connection drops (each end released, as the driver does) and replicate returns */
  opts: { yEmpty?: boolean; delivered?: (frame: Frame, to: Store) => void; cut?: (frame: Frame, to: Store) => boolean } = {},
): Promise<{ x: End; y: End }> {
  const ends: End[] = [];
  let cut = false;
  const make = (store: Store, dialed: boolean): End => {
    const e: End = { queue: Promise.resolve(), sent: [], closed: undefined, io: undefined as unknown as SessionIo };
    const run = (actions: ReturnType<SyncSession['receive']>): void => {
      if (cut) return;
      e.queue = e.queue.then(() => runActions(e.io, actions));
    };
    e.io = {
      store,
      needBatch,
      stateBatch: 7,
      session: new SyncSession({
        ...storeSessionOptions(store),
        // (by default the subscriber holds its clone: anti-entropy, never a second clone)
        empty: () => store === y && opts.yEmpty === true,
        cluster: 'ae',
        secret: 'ae-secret',
        role: 'master',
        dialed,
        nonce: Uint8Array.from({ length: 16 }, () => Math.floor(Math.random() * 256)),
      }),
      send: (frame) => {
        if (cut) return false;
        e.sent.push(frame);
        const bytes = encodeFrame(frame);
        const other = ends.find((o) => o !== e)!;
        setImmediate(() => {
          other.queue = other.queue.then(async () => {
            if (cut) return;
            await runActions(other.io, other.io.session.receive(decodeFrame(bytes)));
            opts.delivered?.(frame, other.io.store);
            // the connection drops: nothing more is sent or acknowledged, and once each end's
            // queued work is done its session is released, as the driver's `ended` does
            if (opts.cut?.(frame, other.io.store)) cut = true;
          });
        });
        return true;
      },
      opened: () => true,
      closed: (reason) => void (e.closed = reason),
      later: run,
    };
    ends.push(e);
    return e;
  };
  const ex = make(x, true);
  const ey = make(y, false);
  void runActions(ex.io, ex.io.session.start(0));
  void runActions(ey.io, ey.io.session.start(0));
  for (let i = 0; i < 2000 && !cut && !(ex.io.session.live && ey.io.session.live); i++) {
    if (ex.closed ?? ey.closed) throw new Error(`session closed: ${ex.closed ?? ey.closed}`);
    await new Promise((r) => setTimeout(r, 5));
  }
  if (cut) {
    // (queues settle in turns: one may have queued onto the other before the drop)
    for (let settled = 0; settled < 3; settled++) await Promise.all([ex.queue, ey.queue]);
    for (const end of ends) releaseSession(end.io);
    return { x: ex, y: ey };
  }
  await Promise.all([ex.queue, ey.queue]);
  return { x: ex, y: ey };
}

