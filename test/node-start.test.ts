/**
 * A node's start and its HTTP server's life: a sample load cut short, and
 * errors the server meets once it listens.
 */
import t from 'tap';
import { generateSample } from '@meridian/node';
import { Store } from '@meridian/store';
import type { Server } from 'node:http';
import { crmSchema } from './helpers/schema.js';
import type { LogLine } from './helpers/node-process.js';
import { tempDir } from './helpers/tmp.js';
import { ADMIN, startXmlNode } from './helpers/xml-node.js';

t.test('a sample load cut short (Ctrl-C, a crash) is finished at the next start, not refused for the objects it made', async (t) => {
  const dir = tempDir(t);
  const sample = generateSample({ size: 20, password: 'meridian' });
  // what a load stopped part-way leaves: the first objects, and no sampleLoaded mark
  const store = await Store.open({ dir, schema: crmSchema });
  const first = sample.filter((o) => o.type === 'Organisation' && !o.fields['reseller']).slice(0, 3);
  for (const o of first) await store.create(o.type, o.fields, { id: o.id, principal: 'sample-loader' });
  await store.close();
  const node = await startXmlNode(t, { dir, sample: true, sampleSize: 20 });
  const counts = node.store.objectCounts();
  t.equal(Object.values(counts).reduce((a, b) => a + b, 0), sample.length, `every sample object is there (${JSON.stringify(counts)})`);
});

t.test('an error the HTTP server meets once listening (accept failing with EMFILE) is logged, and the node goes on serving', async (t) => {
  const warnings: LogLine[] = [];
  const node = await startXmlNode(t, {}, {}, warnings);
  const server = (node as unknown as { server: Server }).server;
  // (the first was swallowed by the listen's leftover once-listener; the second, with none, ended the process)
  for (let i = 0; i < 2; i++) server.emit('error', Object.assign(new Error('accept EMFILE'), { code: 'EMFILE' }));
  t.equal(warnings.filter((w) => w.msg === 'the HTTP server could not take a connection').length, 2);
  const res = await fetch(`${node.url}/status`, { headers: { authorization: ADMIN } });
  t.equal(res.status, 200, 'and answers');
});
