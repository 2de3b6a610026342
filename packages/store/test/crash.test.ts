import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import t, { type Test } from 'tap';
import { checkIndexes, Store } from '../dist/index.js';
import { schema, tempDir } from './fixtures.js';

const WRITER = fileURLToPath(new URL('./fixtures/crash-writer.mjs', import.meta.url));
const ROUNDS = Number(process.env['CRASH_ROUNDS'] ?? 4);
const STALL_MS = 60_000;

interface Acked {
  created: Map<string, number>;
  /** highest acknowledged sn counter per object */
  updated: Map<string, number>;
}

/** Runs the writer until it has acknowledged `until` writes, then SIGKILLs it. */
function writeThenKill(t: Test, dir: string, until: number): Promise<Acked> {
  return new Promise((resolve, reject) => {
    const proc = spawn(process.execPath, [WRITER, dir], { stdio: ['ignore', 'pipe', 'pipe'] });
    // the writer never stops by itself: killed here whatever happens to the test, and if it stalls
    const kill = (): void => {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
    };
    t.teardown(kill);
    const stalled = setTimeout(() => {
      reject(new Error(`the writer acknowledged ${count} of ${until} writes in ${STALL_MS / 1000} s`));
      kill();
    }, STALL_MS);
    const acked: Acked = { created: new Map(), updated: new Map() };
    let buf = '';
    let count = 0;
    let err = '';
    proc.stderr.on('data', (d: Buffer) => (err += d.toString()));
    proc.stdout.on('data', (d: Buffer) => {
      buf += d.toString();
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl).split(' ');
        buf = buf.slice(nl + 1);
        if (line[0] === 'C') acked.created.set(line[1]!, Number(line[2]));
        if (line[0] === 'U') acked.updated.set(line[1]!, Math.max(acked.updated.get(line[1]!) ?? 0, Number(line[2])));
        if ((line[0] === 'C' || line[0] === 'U') && ++count === until) proc.kill('SIGKILL');
      }
    });
    proc.on('exit', (code, signal) => {
      clearTimeout(stalled);
      if (signal === 'SIGKILL') resolve(acked);
      else reject(new Error(`writer exited with ${code}: ${err}`));
    });
  });
}

t.test('every acknowledged write survives SIGKILL, with indexes consistent', async (t) => {
  for (let round = 1; round <= ROUNDS; round++) {
    const dir = tempDir(t);
    const until = 300 + Math.floor(Math.random() * 2000);
    const acked = await writeThenKill(t, dir, until);
    const store = await Store.open({ dir, schema });
    let missing = 0;
    let stale = 0;
    for (const [id] of acked.created) if (!(await store.get(id))) missing++;
    for (const [id, n] of acked.updated) {
      const o = await store.get(id);
      // a later write may have reached the disk without its ack being printed
      if (!o || Number(String(o.fields['sn']).slice(1)) < n) stale++;
    }
    t.equal(missing, 0, `round ${round}: all ${acked.created.size} acknowledged creates present (killed after ${until} acks)`);
    t.equal(stale, 0, `round ${round}: all ${acked.updated.size} acknowledged updates present`);
    t.same(await checkIndexes(store), [], `round ${round}: indexes consistent`);
    t.ok(store.lastSeq >= until, `round ${round}: the feed holds at least the acknowledged writes`);
    // the store is writable after recovery
    await store.create('Person', { cn: 'after', sn: 'crash' });
    await store.close();
  }
});
