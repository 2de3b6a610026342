/**
 * The node's HTTP idle timeout: a connection that neither sends nor takes a
 * byte for --idle-timeout is closed, whatever it is doing; one that keeps
 * moving is never cut, however long its request takes.
 */
import { readFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import t, { type Test } from 'tap';
import { resolveConfig } from '@meridian/node';
import { sleep, until } from './helpers/wait.js';
import { ADMIN, call, seed, startXmlNode } from './helpers/xml-node.js';

const IDLE = 1000;

/** Resolves with the ms until the server closed `socket` (or 'open' after `wait` ms). */
function closedWithin(socket: Socket, wait: number): Promise<number | 'open'> {
  const started = Date.now();
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve('open'), wait);
    socket.once('close', () => {
      clearTimeout(timer);
      resolve(Date.now() - started);
    });
  });
}

function rawRequest(port: number, head: string): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = connect(port, '127.0.0.1', () => {
      s.write(head);
      resolve(s);
    });
    s.on('error', reject);
    s.on('data', () => undefined);
  });
}

/** A raw client connection, its answer text so far, and when it closed (ms since the epoch). */
async function rawClient(t: Test, port: number, allowHalfOpen = false): Promise<{ s: Socket; answer: () => string; closed: Promise<number> }> {
  const s = connect({ port, host: '127.0.0.1', allowHalfOpen });
  t.teardown(() => s.destroy());
  await new Promise<void>((resolve) => s.once('connect', resolve));
  s.on('error', () => undefined); // (the node may reset a client that goes on sending: tests check what it got)
  let text = '';
  s.on('data', (d: Buffer) => (text += d.toString()));
  return { s, answer: () => text, closed: new Promise<number>((resolve) => s.once('close', () => resolve(Date.now()))) };
}

t.test('a request body that stops arriving is cut after the idle timeout; no limit on a whole request', async (t) => {
  const node = await startXmlNode(t, { idleTimeout: IDLE });
  // (Node's own limit on a whole request, 300 s by default, is off: a long import is cut by nothing but a stall)
  t.equal((node as unknown as { server: { requestTimeout: number } }).server.requestTimeout, 0);
  const port = Number(new URL(node.url).port);
  const s = await rawRequest(port, `POST /import HTTP/1.1\r\nHost: x\r\nAuthorization: ${ADMIN}\r\nContent-Type: application/xml\r\nContent-Length: 100000\r\n\r\n<objects>`);
  t.teardown(() => s.destroy());
  const closed = await closedWithin(s, IDLE * 4);
  t.not(closed, 'open', 'the stalled connection is closed');
  t.ok(typeof closed === 'number' && closed >= IDLE - 200, `not before the idle timeout (${String(closed)} ms)`);
  t.equal((await call(node, 'GET', '/objects/Organisation')).status, 200, 'the node goes on serving');
});

t.test('a request that keeps moving, or that the node is at work on, outlives the idle timeout: a slow import, an idle SSE stream, a long poll', async (t) => {
  const node = await startXmlNode(t, { idleTimeout: IDLE });
  await seed(node);
  const port = Number(new URL(node.url).port);

  // an import sent in pieces over three idle timeouts, each piece well inside one
  const objects = Array.from({ length: 12 }, (_, i) => `<object type="Organisation" id="org-slow${i}"><field name="name">Slow ${i}</field><field name="kind">vendor</field></object>`);
  const body = `<objects>${objects.join('')}</objects>`;
  const pieces = body.match(/[\s\S]{1,120}/g)!;
  const s = await rawRequest(port, `POST /import HTTP/1.1\r\nHost: x\r\nAuthorization: ${ADMIN}\r\nContent-Type: application/xml\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n`);
  t.teardown(() => s.destroy());
  let answer = '';
  s.on('data', (d: Buffer) => (answer += d.toString()));
  const started = Date.now();
  const step = Math.ceil((IDLE * 3) / pieces.length);
  for (const p of pieces) {
    await sleep(Math.min(step, IDLE / 3));
    s.write(p);
  }
  await Promise.race([new Promise((resolve) => s.once('close', resolve)), sleep(10_000)]);
  t.ok(Date.now() - started >= IDLE * 2, `the import took ${Date.now() - started} ms`);
  t.match(answer, /^HTTP\/1\.1 200 /, 'answered, not cut');
  t.match(answer, /created="12"/);

  // an SSE stream with nothing to send gets comments often enough to stay open
  const ac = new AbortController();
  t.teardown(() => ac.abort());
  const res = await fetch(`${node.url}/changes?since=now`, { headers: { authorization: ADMIN, accept: 'text/event-stream' }, signal: ac.signal });
  const reader = res.body!.getReader();
  let text = '';
  const until = Date.now() + IDLE * 3;
  let ended = false;
  // (one read at a time: a read that lost the race is still the next one)
  let reading = reader.read();
  // (the stream is aborted at the end: the read then pending fails, for nobody to hear)
  reading.catch(() => undefined);
  while (Date.now() < until && !ended) {
    const next = await Promise.race([reading, sleep(200).then(() => 'waiting' as const)]);
    if (next === 'waiting') continue;
    if (next.done) ended = true;
    else {
      text += Buffer.from(next.value).toString();
      reading = reader.read();
      reading.catch(() => undefined);
    }
  }
  t.notOk(ended, 'the idle stream stays open past three idle timeouts: the node is at work on it, not waiting on its client');
  t.match(text, /^: meridian changes feed\nid: \S+\n\n$/, 'with nothing sent but its opening comment and its start position');
  await node.store.create('Organisation', { name: 'Late', kind: 'vendor' }, { principal: 'test', id: 'org-late' });
  while (!text.includes('org-late')) {
    const next = await Promise.race([reading, sleep(5000).then(() => 'late' as const)]);
    if (next === 'late' || next.done) break;
    text += Buffer.from(next.value).toString();
    reading = reader.read();
    reading.catch(() => undefined);
  }
  t.match(text, /id="org-late"/, 'and still delivers');

  // a long poll longer than the idle timeout: the node is at work, not waiting on its client
  const polled = Date.now();
  const poll = await call(node, 'GET', '/changes?since=now&timeout=2');
  t.equal(poll.status, 200, 'a long poll of twice the idle timeout is answered, not cut');
  t.ok(Date.now() - polled >= 1900, `after its wait (${Date.now() - polled} ms)`);
});

t.test('a client that stops reading an export whose output backs up is cut after the idle timeout', async (t) => {
  const node = await startXmlNode(t, { idleTimeout: IDLE });
  const port = Number(new URL(node.url).port);
  // XML of at least 16 MB, more where the socket buffers may grow larger (both ends' most, up to 25 MB of XML):
  // the buffers grow with the traffic, and on loopback 16 MB has been more than they took
  const most = (file: string): number => Number(readFileSync(file, 'utf8').trim().split(/\s+/)[2] ?? 0);
  const buffers = most('/proc/sys/net/ipv4/tcp_rmem') + most('/proc/sys/net/ipv4/tcp_wmem');
  const count = Math.min(12_000, Math.max(8000, Math.ceil(buffers / 2100)));
  const description = 'd'.repeat(2000);
  for (let i = 0; i < count; i += 500) await Promise.all(Array.from({ length: Math.min(500, count - i) }, (_, j) => node.store.create('Organisation', { name: `O${i + j}`, kind: 'vendor', description }, { principal: 'test' })));
  const s = await new Promise<Socket>((resolve, reject) => {
    const c = connect(port, '127.0.0.1', () => resolve(c));
    c.on('error', reject);
  });
  t.teardown(() => s.destroy());
  s.pause(); // reads nothing
  s.write(`GET /export HTTP/1.1\r\nHost: x\r\nAuthorization: ${ADMIN}\r\n\r\n`);
  // (the node writes the export until the buffers are full, then idles IDLE: up to 4 s for the writing, which a
  // loaded machine slows; nothing on this side can tell when the node cut a paused socket)
  await sleep(IDLE * 5);
  // (a paused socket hears of its end only once it reads what came before: read it all now)
  let tail = '';
  s.on('data', (d: Buffer) => (tail = (tail + d.toString('latin1')).slice(-64)));
  // (within less than the 5 s a finished answer's keep-alive connection stays open)
  const closed = closedWithin(s, 4000);
  s.resume();
  t.not(await closed, 'open', "the stalled export's connection was closed by the node");
  t.notMatch(tail, /<\/objects>/, 'before the export ended');
  t.equal((await call(node, 'GET', '/objects/Organisation?limit=1')).status, 200, 'the node goes on serving');
});

t.test('--idle-timeout is at least 1 s', async (t) => {
  t.throws(() => resolveConfig({ flags: { idleTimeout: '0' } }), { message: '--idle-timeout: idleTimeout must be at least 1000, got 0' });
  t.equal(resolveConfig({ flags: {} }).idleTimeout, 300_000, 'five minutes by default');
});

t.test('a request answered before its body arrived (401, 413) has its connection closed after the answer, which the client gets whole: the node does not read the rest', async (t) => {
  const node = await startXmlNode(t);
  const port = Number(new URL(node.url).port);
  for (const [what, auth, path, length, status] of [
    ['a wrong password', 'Basic d3Jvbmc6d3Jvbmc=', '/import', 50_000_000, 401],
    ['a body declared over the limit', ADMIN, '/objects/Organisation', 50_000_000, 413],
  ] as const) {
    const { s, answer: text, closed } = await rawClient(t, port);
    s.write(`POST ${path} HTTP/1.1\r\nHost: x\r\nAuthorization: ${auth}\r\nContent-Type: application/xml\r\nContent-Length: ${length}\r\n\r\n`);
    // the client goes on sending its body, as fast as the node takes it
    const chunk = Buffer.alloc(64 * 1024, 0x20);
    let sent = 0;
    let open = true;
    void closed.then(() => (open = false));
    const started = Date.now();
    while (open && sent < length && Date.now() - started < 10_000) {
      if (!s.write(chunk)) await Promise.race([new Promise((r) => s.once('drain', r)), closed, sleep(200)]);
      sent += chunk.length;
    }
    await Promise.race([closed, sleep(5000)]);
    t.notOk(open, `${what}: the node closed the connection (${Date.now() - started} ms)`);
    t.ok(sent < length / 2, `${what}: after ${Math.round(sent / 1e6)} MB of the ${length / 1e6} MB body`);
    t.match(text(), new RegExp(`^HTTP/1\\.1 ${status} [^]*</error>\\n$`), `${what}: the answer arrived whole`);
    t.match(text(), /\r\nconnection: close\r\n/i, `${what}: and said the connection closes`);
  }
  t.equal((await call(node, 'GET', '/objects/Organisation?limit=1')).status, 200, 'the node goes on serving');
});

t.test('after such an answer, a request the client sends on the same connection is not run; an import refused midway gets its answer whole too', async (t) => {
  const node = await startXmlNode(t);
  const port = Number(new URL(node.url).port);
  // a 401 before the body; then the body, and behind it a whole request with the right password, in one write
  // (allowHalfOpen: the client keeps sending after the node's end, as a client that has not seen it yet does)
  const { s: a, answer: aText, closed: aClosed } = await rawClient(t, port, true);
  const declared = 100_000;
  a.write(`POST /objects/Organisation HTTP/1.1\r\nHost: x\r\nAuthorization: Basic d3Jvbmc6d3Jvbmc=\r\nContent-Type: application/xml\r\nContent-Length: ${declared}\r\n\r\n`);
  await until(() => aText().includes('</error>'), 5000);
  const body = '<object type="Organisation"><field name="name">Pipelined</field><field name="kind">vendor</field></object>';
  const pipelined = `POST /objects/Organisation HTTP/1.1\r\nHost: x\r\nAuthorization: ${ADMIN}\r\nContent-Type: application/xml\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`;
  a.write(Buffer.concat([Buffer.alloc(declared, 0x20), Buffer.from(pipelined)]));
  await Promise.race([aClosed, sleep(5000)]);
  await sleep(300);
  t.ok(a.bytesWritten > declared, 'the pipelined request was sent');
  t.match(aText(), /^HTTP\/1\.1 401 [^]*\r\nconnection: close\r\n/i);
  t.notMatch(aText().slice(aText().indexOf('</error>')), /HTTP\/1\.1/, 'no second answer');
  t.equal((await node.store.list('Organisation')).items.filter((o) => o.fields['name'] === 'Pipelined').length, 0, 'the request behind it was not run');

  // an import that reads its body, finds it malformed early, and answers 400 while the client goes on sending
  const b = await rawClient(t, port);
  const length = 50_000_000;
  b.s.write(`POST /import HTTP/1.1\r\nHost: x\r\nAuthorization: ${ADMIN}\r\nContent-Type: application/xml\r\nContent-Length: ${length}\r\n\r\n<objects><object type="Organisation"><field name="name">A</field><field name="kind">vendor</field></object><oops`);
  const chunk = Buffer.alloc(64 * 1024, 0x20);
  let sent = 0;
  let isOpen = true;
  void b.closed.then(() => (isOpen = false));
  const started = Date.now();
  while (isOpen && sent < length && Date.now() - started < 15_000) {
    if (!b.s.write(chunk)) await Promise.race([new Promise((r) => b.s.once('drain', r)), b.closed, sleep(200)]);
    sent += chunk.length;
  }
  await Promise.race([b.closed, sleep(5000)]);
  t.notOk(isOpen, `the import's connection was closed (${Date.now() - started} ms, ${Math.round(sent / 1e6)} MB sent)`);
  t.match(b.answer(), /^HTTP\/1\.1 400 [^]*<\/error>\n$/, 'and its answer arrived whole');
});

t.test('a client that keeps its side open after such an answer, and stops sending, is closed by the node after a short linger', async (t) => {
  const node = await startXmlNode(t);
  const port = Number(new URL(node.url).port);
  // (allowHalfOpen: this client does not end its side when the node ends its own)
  const { s, answer: text, closed } = await rawClient(t, port, true);
  s.write(`POST /objects/Organisation HTTP/1.1\r\nHost: x\r\nAuthorization: Basic d3Jvbmc6d3Jvbmc=\r\nContent-Type: application/xml\r\nContent-Length: 5000000\r\n\r\n`);
  await until(() => text().includes('</error>'), 5000);
  let at = 0;
  void closed.then((when) => (at = when));
  // a second more of the body, then nothing, the connection left open
  const until1s = Date.now() + 1000;
  while (Date.now() < until1s) {
    s.write(Buffer.alloc(16 * 1024, 0x20));
    await sleep(50);
  }
  // within the linger's gap (2 s) a byte more is still read: the node neither closed at its answer nor once
  // the body paused (a write to a closed connection draws a reset, which closes this side)
  await sleep(1000);
  for (let i = 0; i < 3; i++) {
    s.write(' ');
    await sleep(200);
  }
  t.equal(at, 0, 'the node still read the body a second after it paused');
  // (a half-open client hears of the node's close only when it sends again: the node resets the connection then)
  // (the first write draws the reset, the next one fails on it)
  await sleep(3500);
  for (let i = 0; i < 15 && at === 0; i++) {
    s.write(' ');
    await sleep(200);
  }
  t.ok(at > 0, 'the node had closed the connection within the linger after the client stopped sending');
  t.match(text(), /^HTTP\/1\.1 401 [^]*<\/error>\n$/, 'its answer arrived whole');
});
