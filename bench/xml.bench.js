// The XML gateway, side by side with a bare Node http server, in one run.
// Every server is a process of its own (bin/meridian serve, or
// bench/bare-server.js); the load comes from this process (autocannon).
//
//   1. GET /objects/Person/{id}: 64 keep-alive connections, requests/s
//      against Meridian (HTTP Basic as the admin, access check, object from
//      the cache, XML written) and against the bare server answering a body
//      of the same size. Target: Meridian at least 50% of the bare server.
//   2. export: GET /export of a node holding the sample dataset, streamed
//      and counted by the client. Target: 50,000 objects/s.
//   3. import: POST /import of that export into an empty node, answered
//      once every object is durable. Target: 20,000 objects/s.
import { fileURLToPath } from 'node:url';
import autocannon from 'autocannon';
import { fmt, printTable, Processes, tempDirs } from './lib.js';

export const name = 'xml';

const BARE = fileURLToPath(new URL('./bare-server.js', import.meta.url));
const PW = 'bench-admin-password';
const AUTH = `Basic ${Buffer.from(`admin:${PW}`).toString('base64')}`;

export async function run({ quick, log }) {
  const seconds = quick ? 2 : 10;
  const sampleSize = quick ? 2_000 : 40_000; // persons; about 1.6 objects each
  const procs = new Processes();
  const { fresh, removeAll } = tempDirs();
  const serve = (args) => procs.serve(['--http-port', '0', '--admin-password', PW, ...args]);
  try {
    log(`loading the sample dataset (${sampleSize} persons) ...`);
    const a = await serve(['--dir', fresh('xml-a'), '--sample', '--sample-size', String(sampleSize)]);
    const list = await (await fetch(`${a.url}/objects/Person?limit=1`, { headers: { authorization: AUTH } })).text();
    const id = /id="([^"]+)"/.exec(list)[1];
    const one = await fetch(`${a.url}/objects/Person/${id}`, { headers: { authorization: AUTH } });
    const size = (await one.arrayBuffer()).byteLength;
    const bare = (await procs.fork(BARE, [String(size)])).ready;

    // 1. GET, alternating the two servers twice so that drift hits both
    const rps = { meridian: [], bare: [] };
    for (let round = 0; round < 2; round++) {
      rps.meridian.push(await load(`${a.url}/objects/Person/${id}`, seconds));
      rps.bare.push(await load(`http://127.0.0.1:${bare.port}/`, seconds));
    }
    const m = Math.max(...rps.meridian.map((r) => r.rps));
    const b = Math.max(...rps.bare.map((r) => r.rps));
    const errors = rps.meridian.reduce((n, r) => n + r.errors, 0);
    printTable(
      [
        [`GET, ${size}-byte body, 64 connections`, 'req/s', 'p50 ms', 'p99 ms'],
        ['meridian GET /objects/Person/{id}', fmt(m), ...best(rps.meridian)],
        ['bare node http server', fmt(b), ...best(rps.bare)],
        ['ratio meridian / bare', fmt(m / b, 2), '', ''],
      ],
      log,
    );

    // 2. export
    const t0 = performance.now();
    const res = await fetch(`${a.url}/export`, { headers: { authorization: AUTH } });
    const chunks = [];
    let objects = 0;
    let tail = '';
    for await (const c of res.body) {
      const s = tail + Buffer.from(c).toString('utf8');
      for (let i = s.indexOf('<object '); i >= 0; i = s.indexOf('<object ', i + 8)) objects++;
      tail = s.slice(-7); // shorter than '<object ', so one split across chunks is counted once
      chunks.push(c);
    }
    const exportSec = (performance.now() - t0) / 1000;
    const doc = Buffer.concat(chunks);

    // 3. import into an empty node
    const c = await serve(['--dir', fresh('xml-c')]);
    const t1 = performance.now();
    const imp = await fetch(`${c.url}/import`, { method: 'POST', headers: { authorization: AUTH, 'content-type': 'application/xml' }, body: doc });
    const report = await imp.text();
    const importSec = (performance.now() - t1) / 1000;
    const created = Number(/created="(\d+)"/.exec(report)?.[1] ?? 0);
    if (created !== objects) throw new Error(`import created ${created} of ${objects} objects: ${report.slice(0, 500)}`);
    printTable(
      [
        ['bulk', 'objects', 'MB', 'seconds', 'objects/s'],
        ['export (GET /export)', fmt(objects), fmt(doc.length / 1e6, 1), fmt(exportSec, 2), fmt(objects / exportSec)],
        ['import (POST /import, durable)', fmt(created), fmt(doc.length / 1e6, 1), fmt(importSec, 2), fmt(created / importSec)],
      ],
      log,
    );
    return {
      metrics: { bodyBytes: size, meridianRps: m, bareRps: b, getErrors: errors, objects, exportSeconds: exportSec, importSeconds: importSec, exportPerSec: objects / exportSec, importPerSec: created / importSec },
      checks: [
        { name: 'GET /objects/{type}/{id} req/s vs bare http', measured: m / b, target: 0.5, pass: m / b >= 0.5 && errors === 0, shown: `${fmt((100 * m) / b)}% (${fmt(m)} vs ${fmt(b)} req/s; target >= 50%)` },
        { name: `export objects/s (${fmt(objects)})`, measured: objects / exportSec, target: 50_000, pass: objects / exportSec >= 50_000, shown: fmt(objects / exportSec) },
        { name: `import objects/s, durable (${fmt(created)})`, measured: created / importSec, target: 20_000, pass: created / importSec >= 20_000, shown: fmt(created / importSec) },
      ],
    };
  } finally {
    await procs.killAll();
    removeAll();
  }
}

function best(runs) {
  const r = runs.reduce((x, y) => (y.rps > x.rps ? y : x));
  return [fmt(r.p50, 2), fmt(r.p99, 2)];
}

async function load(url, seconds) {
  const r = await autocannon({ url, connections: 64, duration: seconds, headers: { authorization: AUTH }, pipelining: 1 });
  return { rps: r.requests.average, p50: r.latency.p50, p99: r.latency.p99, errors: r.errors + r.non2xx };
}
