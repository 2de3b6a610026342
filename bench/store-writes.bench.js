// The store's write path, side by side with PouchDB 9 (LevelDB adapter) and a
// bare LevelDB `put({ sync: true })`, in the same process on the same objects.
//
//   a. throughput: 64 concurrent writers creating Person objects; for
//      reference, bare LevelDB writing the very records each create wrote,
//      group-committed as the store does (the storage layout's own ceiling),
//      in larger batches, and joined under one key per object (what the
//      number of keys costs)
//   b. latency: one writer awaiting each durable write, p50 / p99
//   c. bytes on disk per object, as written and after a LevelDB compaction
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { Level } from 'level';
import PouchDB from 'pouchdb';
import { Store, loadSchemaFile } from '@meridian/store';
// the store's own group commit, not exported by the package: the replay must batch exactly as the store does
import { DEFAULT_MAX_OPS, GroupCommit } from '../packages/store/dist/group-commit.js';
import { DEFAULT_SCHEMA, generateSample } from '@meridian/node';
import { concurrent, dirBytes, fmt, percentile, printTable, profiled, rmTemp, sequentialLatencies, tempDirs } from './lib.js';

export const name = 'store-writes';

const WRITERS = 64;

export async function run({ quick, profile, outDir, log }) {
  const n = quick ? 1_000 : 40_000;
  const warm = quick ? 100 : 2_000;
  const latN = quick ? 200 : 2_000;
  const latWarm = quick ? 20 : 100;
  const rounds = quick ? 1 : 3;

  const schema = loadSchemaFile(DEFAULT_SCHEMA);
  // One sample for everything: its Persons have unique mail and uid, and
  // refer to its Organisations, which every Meridian store must hold first
  // (the ref is checked) and which PouchDB gets too, so both hold the same data.
  const sample = generateSample({ size: n, seed: 7 });
  const persons = sample.filter((o) => o.type === 'Person');
  const orgs = sample.filter((o) => o.type === 'Organisation');
  if (persons.length < n) throw new Error(`sample has ${persons.length} persons, need ${n}`);
  const avgFields = persons.reduce((s, p) => s + Object.keys(p.fields).length, 0) / persons.length;
  const avgJson = persons.reduce((s, p) => s + JSON.stringify(p.fields).length, 0) / persons.length;
  log(`${fmt(n)} Person objects (${fmt(avgFields, 1)} fields, ${fmt(avgJson)} bytes of JSON on average) + ${fmt(orgs.length)} Organisations they refer to`);

  const { fresh, removeAll } = tempDirs();
  try {
    // ---- a. throughput -------------------------------------------------
    // Warm-up in throwaway databases so the JIT has seen both write paths.
    {
      const m = await meridianWithOrgs(fresh('warm-m'), schema, orgs, persons.slice(0, warm));
      await concurrent(warm, WRITERS, (i) => m.create('Person', { ...persons[i].fields }));
      await m.close();
      const p = await pouchWithOrgs(join(fresh('warm-p'), 'db'), orgs);
      await concurrent(warm, WRITERS, (i) => p.put(pouchDoc(persons[i])));
      log(`PouchDB ${PouchDB.version}, adapter ${p.adapter} (${(await p.info()).backend_adapter}); native bindings loaded: ${nativeBindings().join(', ')}`);
      await p.close();
    }

    // Alternating rounds, each into fresh databases, reporting the median:
    // on a 2-core VM one run of either side varies by tens of percent (LevelDB
    // compaction threads share the cores with the JS thread).
    const mRuns = [];
    const pRuns = [];
    const lRuns = [];
    let top;
    for (let r = 0; r < rounds; r++) {
      const last = r === rounds - 1;
      const mDir = fresh('meridian');
      const store = await meridianWithOrgs(mDir, schema, orgs, persons);
      let batches = 0;
      store.subscribe(() => batches++); // one call per group commit, i.e. per fsync
      const writeAll = () => concurrent(n, WRITERS, (i) => store.create('Person', { ...persons[i].fields }));
      let secs;
      if (profile && last) {
        ({ result: secs, top } = await profiled(join(outDir, `${name}-throughput.cpuprofile`), writeAll));
      } else {
        secs = await writeAll();
      }
      const objects = Object.values(store.objectCounts()).reduce((a, b) => a + b, 0);
      await store.close();
      mRuns.push({ rate: n / secs, secs, batches, dir: mDir, objects });

      // The same records through bare LevelDB: in the store's batches, and in
      // batches large enough to hold every writer's create at once.
      const groups = await recordsPerObject(mDir, 'Person');
      if (groups.length !== n) throw new Error(`found the records of ${groups.length} Persons in the store, not ${n}`);
      // The same bytes under one key per object (its records' values joined
      // under its object key), as many objects per fsync as the store's
      // batches hold: what the number of keys costs, apart from their bytes.
      // (joined just before that replay, outside its timing, and dropped after it)
      const joinAll = () => groups.map((g) => [{ type: 'put', key: g.find((op) => op.key[0] === 'o').key, value: Buffer.concat(g.map((op) => op.value)) }]);
      const same = () => groups;
      const keysPerObject = groups.reduce((a, g) => a + g.length, 0) / groups.length;
      const objectsPerStoreBatch = Math.ceil(STORE_BATCH_OPS / keysPerObject);
      const replayed = {};
      // rotating which goes first, so none always follows the store's round onto a busy disk
      const sizes = [['store', STORE_BATCH_OPS, same], ['large', LARGE_BATCH_OPS, same], ['oneKey', objectsPerStoreBatch, joinAll]];
      for (let k = 0; k < r % sizes.length; k++) sizes.push(sizes.shift());
      for (const [label, maxOps, recordsOf] of sizes) {
        const records = recordsOf();
        const replayDir = fresh('level-replay');
        const replay = new Level(replayDir, { keyEncoding: 'utf8', valueEncoding: 'buffer', writeBufferSize: 32 * 1024 * 1024, cacheSize: 32 * 1024 * 1024 });
        await replay.open();
        try {
          const commits = new GroupCommit(
            (ops) => {
              const batch = replay.batch();
              for (const op of ops) batch.put(op.key, op.value);
              return batch.write({ sync: true });
            },
            () => [],
            maxOps,
          );
          replayed[label] = records.length / (await concurrent(records.length, WRITERS, (i) => commits.add(records[i])));
        } finally {
          await replay.close();
          // at once, not at the end: its unwritten pages would otherwise reach the disk during the next rounds' fsyncs
          rmTemp(replayDir);
        }
      }
      lRuns.push({ rate: replayed.store, largeRate: replayed.large, oneKeyRate: replayed.oneKey, objects: groups.length, ops: keysPerObject, objectsPerBatch: objectsPerStoreBatch });

      // PouchDB keeps its LevelDB in the directory named by the database name.
      const pDir = join(fresh('pouch'), 'db');
      const pouch = await pouchWithOrgs(pDir, orgs);
      const pSecs = await concurrent(n, WRITERS, (i) => pouch.put(pouchDoc(persons[i])));
      const pObjects = (await pouch.info()).doc_count;
      await pouch.close();
      pRuns.push({ rate: n / pSecs, secs: pSecs, dir: pDir, objects: pObjects });
      // (c. reads the last round's dirs; those before it go now, for what they hold unwritten would reach
      // the disk during the next round's fsyncs)
      if (!last) {
        rmTemp(mDir);
        rmTemp(dirname(pDir));
      }
    }
    const mRate = median(mRuns.map((x) => x.rate));
    const pRate = median(pRuns.map((x) => x.rate));
    const lRate = median(lRuns.map((x) => x.rate));
    const lLargeRate = median(lRuns.map((x) => x.largeRate));
    const lOneKeyRate = median(lRuns.map((x) => x.oneKeyRate));
    const batches = mRuns.reduce((a, x) => a + x.batches, 0) / rounds;
    const each = (runs, key = 'rate') => runs.map((x) => fmt(x[key])).join(' / ');
    log('');
    log(`a. throughput: ${fmt(n)} creates, ${WRITERS} concurrent writers, median of ${rounds} alternating round(s)`);
    printTable(
      [
        ['', 'ops/s', 'rounds', 'durable'],
        ['meridian store.create', fmt(mRate), each(mRuns), `fsync per batch; ${fmt(n / batches, 1)} writes per batch`],
        ['pouchdb db.put', fmt(pRate), each(pRuns), 'no fsync'],
        ['bare level, same records', fmt(lRate), each(lRuns), `fsync per batch of ${STORE_BATCH_OPS} ops, as the store; ${fmt(lRuns[0].ops, 1)} keys per object`],
        ['same, larger batches', fmt(lLargeRate), each(lRuns, 'largeRate'), `fsync per batch of up to ${LARGE_BATCH_OPS} ops (not the store's)`],
        ['same bytes, one key each', fmt(lOneKeyRate), each(lRuns, 'oneKeyRate'), `each object's values joined under one key; ${lRuns[0].objectsPerBatch} objects per fsync, as the store's batches`],
        ['ratio meridian/pouch', `${fmt(mRate / pRate, 2)}x`, '', ''],
        ['ratio bare level/pouch', `${fmt(lRate / pRate, 2)}x`, '', "upper bound of the store's writes, as it batches them"],
        ['ratio same, larger/pouch', `${fmt(lLargeRate / pRate, 2)}x`, '', 'upper bound with larger batches'],
        ['ratio one key each/pouch', `${fmt(lOneKeyRate / pRate, 2)}x`, '', 'the same records with no per-key cost'],
        ['ratio meridian/bare level', `${fmt(mRate / lRate, 2)}x`, '', 'share of the upper bound reached'],
      ],
      log,
    );
    if (top) {
      log(`  CPU profile of the last meridian round (its figure includes profiler overhead), top self time:`);
      for (const t of top) log(`  ${fmt(t.pct, 1).padStart(5)}%  ${t.fn}`);
      log(`  full profile: ${join(outDir, `${name}-throughput.cpuprofile`)}`);
    }

    // ---- b. latency ---------------------------------------------------
    // The two sides alternate in blocks, so a slow patch of the disk (or a
    // background LevelDB compaction) lands on both rather than on one.
    const latStore = await meridianWithOrgs(fresh('lat-m'), schema, orgs, persons.slice(0, latN + latWarm));
    const bare = new Level(fresh('lat-level'), { keyEncoding: 'utf8', valueEncoding: 'buffer' });
    await bare.open();
    // the object's JSON: what a client hands over, and about what one record of it weighs
    const values = persons.slice(0, latN + latWarm).map((p) => Buffer.from(JSON.stringify(p.fields)));
    const mCreate = (i) => latStore.create('Person', { ...persons[i].fields });
    const bPut = (i) => bare.put(persons[i].id, values[i], { sync: true });
    await sequentialLatencies(latWarm, (i) => mCreate(latN + i));
    await sequentialLatencies(latWarm, (i) => bPut(latN + i));
    const mLat = [];
    const bLat = [];
    const block = 100;
    for (let from = 0; from < latN; from += block) {
      const size = Math.min(block, latN - from);
      mLat.push(...(await sequentialLatencies(size, (i) => mCreate(from + i))));
      bLat.push(...(await sequentialLatencies(size, (i) => bPut(from + i))));
    }
    await latStore.close();
    await bare.close();

    const lat = (xs) => ({ p50: percentile(xs, 50), p99: percentile(xs, 99), mean: xs.reduce((a, b) => a + b, 0) / xs.length });
    const mL = lat(mLat);
    const bL = lat(bLat);
    log('');
    log(`b. latency: ${fmt(latN)} writes, one writer awaiting each (ms)`);
    printTable(
      [
        ['', 'p50', 'p99', 'mean'],
        ['meridian store.create', fmt(mL.p50, 3), fmt(mL.p99, 3), fmt(mL.mean, 3)],
        [`level put sync (${fmt(avgJson)} B)`, fmt(bL.p50, 3), fmt(bL.p99, 3), fmt(bL.mean, 3)],
        ['ratio meridian/level', `${fmt(mL.p50 / bL.p50, 2)}x`, `${fmt(mL.p99 / bL.p99, 2)}x`, ''],
      ],
      log,
    );

    // ---- c. bytes on disk (both closed since a) -------------------------
    // LevelDB keeps recent writes in its log and level-0 files; a full
    // compactRange rewrites everything into its steady state. PouchDB's own
    // db.compact() only prunes old revisions, and every doc here has one, so
    // it would change nothing; we compact LevelDB itself on both sides.
    const { dir: mDir, objects: mObjects } = mRuns.at(-1);
    const { dir: pDir, objects: pObjects } = pRuns.at(-1);
    const mRaw = dirBytes(mDir);
    const pRaw = dirBytes(pDir);
    await compactLevelDir(mDir);
    await compactLevelDir(pDir);
    const mCompact = dirBytes(mDir);
    const pCompact = dirBytes(pDir);
    const perObj = (bytes, count) => bytes / count;
    log('');
    log(`c. bytes on disk per object after the last round of (a): meridian ${fmt(mObjects)} objects, pouchdb ${fmt(pObjects)} docs`);
    printTable(
      [
        ['', 'as written', 'after compactRange'],
        ['meridian', fmt(perObj(mRaw, mObjects)), fmt(perObj(mCompact, mObjects))],
        ['pouchdb', fmt(perObj(pRaw, pObjects)), fmt(perObj(pCompact, pObjects))],
        ['ratio meridian/pouch', `${fmt(mRaw / mObjects / (pRaw / pObjects), 2)}x`, `${fmt(mCompact / mObjects / (pCompact / pObjects), 2)}x`],
      ],
      log,
    );

    return {
      metrics: {
        objects: { persons: n, organisations: orgs.length, avgFields, avgJsonBytes: avgJson },
        throughput: {
          writers: WRITERS,
          rounds,
          meridianWritesPerSec: mRate,
          meridianRounds: mRuns.map(({ rate, secs, batches }) => ({ rate, secs, batches })),
          pouchPutsPerSec: pRate,
          pouchRounds: pRuns.map(({ rate, secs }) => ({ rate, secs })),
          ratio: mRate / pRate,
          levelSameRecordsPerSec: lRate,
          levelSameRecordsLargerBatchesPerSec: lLargeRate,
          levelSameBytesOneKeyPerSec: lOneKeyRate,
          levelBatchOps: { store: STORE_BATCH_OPS, larger: LARGE_BATCH_OPS, oneKeyObjects: lRuns[0].objectsPerBatch },
          levelRounds: lRuns.map(({ rate, largeRate, oneKeyRate, objects, ops }) => ({ rate, largeRate, oneKeyRate, objects, keysPerObject: ops })),
          levelRatio: lRate / pRate,
          levelLargerBatchesRatio: lLargeRate / pRate,
          levelOneKeyRatio: lOneKeyRate / pRate,
          profileTop: top,
        },
        latencyMs: { writes: latN, meridian: mL, levelSyncPut: bL, ratioP50: mL.p50 / bL.p50, ratioP99: mL.p99 / bL.p99 },
        bytesPerObject: {
          compaction: 'classic-level compactRange over the whole key space, both dirs',
          meridian: { objects: mObjects, raw: mRaw / mObjects, compacted: mCompact / mObjects },
          pouch: { objects: pObjects, raw: pRaw / pObjects, compacted: pCompact / pObjects },
          ratioRaw: mRaw / mObjects / (pRaw / pObjects),
          ratioCompacted: mCompact / mObjects / (pCompact / pObjects),
        },
      },
      checks: [
        { name: 'meridian writes/s (64 writers)', measured: mRate, target: '>= 20,000', pass: mRate >= 20_000, shown: fmt(mRate) },
        { name: 'meridian / pouchdb throughput', measured: mRate / pRate, target: '>= 5x', pass: mRate / pRate >= 5, shown: `${fmt(mRate / pRate, 2)}x` },
        { name: 'meridian p50 / level sync put p50', measured: mL.p50 / bL.p50, target: '<= 2x', pass: mL.p50 / bL.p50 <= 2, shown: `${fmt(mL.p50 / bL.p50, 2)}x` },
      ],
    };
  } finally {
    removeAll();
  }
}

/**
 * A fresh store holding the Organisations the given persons refer to (and
 * their resellers), created untimed: a Person's organisation ref must exist.
 */
async function meridianWithOrgs(dir, schema, orgs, persons) {
  const store = await Store.open({ dir, schema });
  const needed = new Set(persons.map((p) => p.fields.organisation));
  for (const o of orgs) if (needed.has(o.id) && o.fields.reseller) needed.add(o.fields.reseller);
  const mine = orgs.filter((o) => needed.has(o.id));
  // resellers before the customers that refer to them
  const first = mine.filter((o) => !o.fields.reseller);
  const then = mine.filter((o) => o.fields.reseller);
  await concurrent(first.length, WRITERS, (i) => store.create('Organisation', first[i].fields, { id: first[i].id }));
  await concurrent(then.length, WRITERS, (i) => store.create('Organisation', then[i].fields, { id: then[i].id }));
  return store;
}

async function pouchWithOrgs(path, orgs) {
  const db = new PouchDB(path);
  await db.bulkDocs(orgs.map(pouchDoc));
  return db;
}

/** The store's group-commit batch size (it uses GroupCommit's default). */
const STORE_BATCH_OPS = DEFAULT_MAX_OPS;
/** Room for every writer's create in one batch (a Person writes 10 keys). */
const LARGE_BATCH_OPS = WRITERS * 16;

/**
 * The records each object of `type` left in a closed store's LevelDB, as
 * put operations: its object record, its feed entries, history, type,
 * field and unique index entries. The batch trailers (clock, vector,
 * counts: a few keys per batch, not per object) are left out.
 */
async function recordsPerObject(dir, type) {
  const db = new Level(dir, { keyEncoding: 'utf8', valueEncoding: 'buffer' });
  await db.open();
  try {
    return await readRecordsPerObject(db, type);
  } finally {
    await db.close();
  }
}

async function readRecordsPerObject(db, type) {
  const SEP = '\u0000';
  const byId = new Map();
  const seqOwner = new Map();
  const add = (id, key, value) => {
    let ops = byId.get(id);
    if (!ops) byId.set(id, (ops = []));
    ops.push({ type: 'put', key, value });
  };
  const feed = [];
  for await (const [key, value] of db.iterator()) {
    switch (key[0]) {
      case 'o':
      case 'h': {
        const id = key[0] === 'o' ? key.slice(1) : key.slice(1, key.lastIndexOf(SEP));
        if (key[0] === 'h') seqOwner.set(key.slice(key.lastIndexOf(SEP) + 1), id);
        add(id, key, value);
        break;
      }
      case 't':
      case 'x':
        add(key.slice(key.lastIndexOf(SEP) + 1), key, value);
        break;
      case 'u':
        add(value.toString('utf8'), key, value);
        break;
      case 'f':
        feed.push([key, value]);
        break;
    }
  }
  for (const [key, value] of feed) {
    const owner = seqOwner.get(key.slice(1));
    if (owner === undefined) throw new Error(`feed entry ${JSON.stringify(key)} has no history record to name its object`);
    add(owner, key, value);
  }
  const typePrefix = `t${type}${SEP}`;
  const groups = [...byId.values()].filter((ops) => ops.some((op) => op.key.startsWith(typePrefix)));
  const feedKey = (ops) => ops.find((op) => op.key[0] === 'f')?.key ?? '';
  for (const ops of groups) {
    const count = (space) => ops.filter((op) => op.key[0] === space).length;
    if (count('o') !== 1 || count('h') !== 1 || count('f') !== 1 || count('t') !== 1) {
      throw new Error(`${ops[0].key} left ${ops.length} records, not one object record, history record, feed entry and type index entry each: not a single create`);
    }
  }
  // in feed order, the order the store wrote them in (ids are random, so id order would be another workload)
  return groups.sort((a, b) => (feedKey(a) < feedKey(b) ? -1 : 1));
}

function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
}

const pouchDoc = (o) => ({ _id: o.id, ...o.fields });

/** Rewrites a closed LevelDB (Meridian's or PouchDB's) into its compacted form. */
async function compactLevelDir(dir) {
  const db = new Level(dir, { keyEncoding: 'buffer', valueEncoding: 'buffer' });
  await db.open();
  // every key sorts between the empty key and a run of 0xff bytes
  await db.compactRange(Buffer.alloc(0), Buffer.alloc(64, 0xff));
  await db.close();
}

/** The native LevelDB bindings actually loaded, to show no install script was needed. */
function nativeBindings() {
  try {
    const maps = readFileSync('/proc/self/maps', 'utf8');
    const libs = new Set(maps.split('\n').map((l) => l.split(/\s+/).pop()).filter((p) => p?.endsWith('.node')));
    return [...libs].map((p) => p.replace(/^.*?node_modules\//, '')).filter((p) => /level/.test(p));
  } catch {
    return ['(bindings unknown: no /proc/self/maps)'];
  }
}
