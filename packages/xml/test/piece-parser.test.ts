import t from 'tap';
import type { Worker } from 'node:worker_threads';
import { XmlError } from '../dist/format.js';
import { groupOf, parseGroup, type Piece } from '../dist/parse-pieces.js';
import { PieceParser } from '../dist/piece-parser.js';

const object = (i: number): string =>
  `<object type="Person" id="per-${i}"><field name="cn">N\u00e9 ${i} &amp; \u0142</field><field name="mail">a${i}@x.com</field><field name="mail">b${i}@x.com</field><field name="postalCode">0049</field></object>`;
const pieces = (from: number, n: number, line = from * 2 + 2): Piece[] => Array.from({ length: n }, (_, i) => ({ text: object(from + i), line: line + i * 2 }));
const group = (from: number, n: number) => groupOf(pieces(from, n));

t.test('groups parsed on the worker thread come back as the event loop would have parsed them, in the order asked', async (t) => {
  const parser = new PieceParser();
  t.teardown(() => parser.close());
  const bad = { text: '<object type="Person" id="per-x"><field name="cn">x</fieldx></object>', line: 40 };
  const groups = [group(0, 32), group(32, 1), group(33, 17), groupOf([...pieces(50, 5), bad, ...pieces(56, 3)]), group(60, 0)];
  const answers = await Promise.all(groups.map((g) => parser.parse(g)));
  for (const [i, g] of groups.entries()) {
    const here = parseGroup(g);
    t.same(answers[i]!.parsed, here.parsed, `group ${i}: the same objects with the same lines`);
    t.equal(answers[i]!.bad?.message, here.bad?.message, `group ${i}: the same error`);
  }
  t.equal(answers[0]!.parsed.length, 32);
  t.same(answers[0]!.parsed[0], [2, { type: 'Person', id: 'per-0', version: undefined, fields: { cn: 'N\u00e9 0 & \u0142', mail: ['a0@x.com', 'b0@x.com'], postalCode: '0049' } }], 'values untouched, entities resolved');
  t.ok(answers[3]!.bad instanceof XmlError, 'a malformed object comes back as an XmlError');
  t.equal(answers[3]!.bad!.status, 400);
  t.match(answers[3]!.bad!.message, /^malformed XML at line 40, column \d+/, 'with its own line');
  t.equal(answers[3]!.parsed.length, 5, 'and exactly the objects before it');
  t.ok((parser as unknown as { worker: Worker | undefined }).worker, 'a worker thread did the parsing');
});

t.test('when the worker thread is lost, what it had not answered and every later group are parsed on the event loop', async (t) => {
  const told: string[] = [];
  const parser = new PieceParser((reason) => told.push(reason));
  t.teardown(() => parser.close());
  await parser.parse(group(0, 2));
  const worker = (parser as unknown as { worker: Worker }).worker;
  // the worker never hears of these: only the fall-back can answer them
  worker.postMessage = () => undefined;
  const asked = Array.from({ length: 20 }, (_, i) => parser.parse(group(i * 10, 10)));
  await worker.terminate();
  const answers = await Promise.all(asked);
  t.same(answers.map((a) => a.parsed.length), Array(20).fill(10), 'every group asked before the loss is answered');
  t.same(answers[7]!.parsed, parseGroup(group(70, 10)).parsed);
  t.same((await parser.parse(group(500, 3))).parsed, parseGroup(group(500, 3)).parsed, 'and later groups too');
  t.equal((parser as unknown as { worker: Worker | null }).worker, null, 'no new worker is started');
  t.match(told, [/^the import parser thread exited with code \d+; imports are parsed on the event loop from now on$/], 'the loss is reported once, with why');
});

t.test('closing ends the worker thread; a closed parser still parses, on the event loop', async (t) => {
  const told: string[] = [];
  const parser = new PieceParser((reason) => told.push(reason));
  await parser.parse(group(0, 1));
  const worker = (parser as unknown as { worker: Worker }).worker;
  t.ok(worker.threadId > 0, 'the worker runs');
  await parser.close();
  t.equal(worker.threadId, -1, 'close() ended it');
  t.same((await parser.parse(group(5, 2))).parsed, parseGroup(group(5, 2)).parsed);
  t.equal((parser as unknown as { worker: Worker | null }).worker, null, 'and started no other');
  t.same(told, [], 'a close is no loss to report');
});

t.test('a field named as a member of Object.prototype is a field like any other, and the worker thread survives it', async (t) => {
  const lost: string[] = [];
  const parser = new PieceParser((why) => lost.push(why));
  t.teardown(() => parser.close());
  const odd = { text: '<object type="Person" id="per-odd"><field name="constructor">x</field><field name="toString">y</field><field name="toString">z</field></object>', line: 7 };
  const answer = await parser.parse(groupOf([...pieces(0, 3), odd, ...pieces(3, 2)]));
  const got = answer.parsed.find(([, input]) => input.id === 'per-odd');
  t.same(got?.[1].fields, { constructor: 'x', toString: ['y', 'z'] }, 'read as given, not with a function read off the prototype');
  t.same(lost, [], 'the thread was not lost (the reply it could not clone used to end it)');
  t.ok((parser as unknown as { worker: Worker | null | undefined }).worker, 'and is still the one parsing');
});
