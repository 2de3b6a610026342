import { existsSync, readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import t from 'tap';
import { cli, cliAsync, cliOnTty, startNode } from './helpers/node-process.js';
import { tempDir } from './helpers/tmp.js';

const PW = 'test-admin-pw';

t.test('meridian export and import through bin/meridian: same content, a report, exit 1 on a rejection', async (t) => {
  const a = await startNode(t, ['--dir', tempDir(t), '--admin-password', PW, '--sample', '--sample-size', '40']);
  const b = await startNode(t, ['--dir', tempDir(t), '--admin-password', PW]);
  const env = { MERIDIAN_PASSWORD: PW };
  const file = join(tempDir(t), 'export.xml');
  const exported = cli(['export', '--node', a.url, '--out', file, '--json'], env);
  t.equal(exported.code, 0, exported.stderr);
  const e = JSON.parse(exported.stdout) as { objects: number; bytes: number };
  t.ok(e.objects > 40, `${e.objects} objects exported`);
  t.equal(readFileSync(file).length, e.bytes);
  t.equal(exported.stderr, '', 'no progress when not on a terminal');
  const piped = cli(['export', '--node', a.url, '--type', 'Organisation'], env);
  t.match(piped.stdout, /^<\?xml version="1.0" encoding="UTF-8"\?>\n<objects>\n  <object type="Organisation" /, 'to stdout when no --out');

  const dry = cli(['import', file, '--node', b.url, '--dry-run', '--json'], env);
  t.equal(dry.code, 0, dry.stderr);
  t.same(JSON.parse(dry.stdout), { dryRun: true, objects: e.objects, created: e.objects, updated: 0, unchanged: 0, rejected: 0, rejections: [] });
  const imported = cli(['import', file, '--node', b.url], env);
  t.equal(imported.code, 0, imported.stderr);
  t.equal(imported.stdout.trim(), `created ${e.objects}, updated 0, unchanged 0, rejected 0 of ${e.objects} objects`);
  const content = async (url: string): Promise<string> => {
    const res = await fetch(`${url}/api/digest?content=1`, { headers: { authorization: `Basic ${Buffer.from(`admin:${PW}`).toString('base64')}` } });
    return JSON.stringify(((await res.json()) as { buckets: unknown }).buckets);
  };
  t.equal(await content(b.url), await content(a.url), 'the importing node holds the same content');

  const bad = join(tempDir(t), 'bad.xml');
  await import('node:fs').then((fs) => fs.writeFileSync(bad, '<objects>\n<object type="Organisation" id="org-x"><field name="name">X</field><field name="kind">martian</field></object>\n</objects>\n'));
  const rejected = cli(['import', bad, '--node', b.url], env);
  t.equal(rejected.code, 1, 'a rejected object makes the import exit 1');
  t.equal(rejected.stderr.trim(), 'line 2: Organisation org-x: new Organisation: field "kind" must be one of vendor, reseller, customer, got "martian"');
  const missing = cli(['import', '/nonexistent.xml', '--node', b.url], env);
  t.equal(missing.code, 1);
  t.equal(missing.stderr.trim(), 'meridian: cannot read /nonexistent.xml: no such file');
  const folder = tempDir(t);
  const directory = cli(['import', folder, '--node', b.url], env);
  t.equal(directory.code, 1);
  t.equal(directory.stderr.trim(), `meridian: cannot read ${folder}: it is a directory; give the file to read`, 'a directory is named as such, not as the node being unreachable');

  // verify's exit code reaches the shell (it used to be overwritten with 0)
  const differ = cli(['verify', '--nodes', `${a.url},${b.url}`], env);
  t.equal(differ.code, 1, 'verify exits 1 when the nodes differ (b holds no passwords and other versions)');
});

t.test('an export cut short leaves no file and says so in one sentence; a failure after progress starts on a line of its own', async (t) => {
  // a node that starts an export and then drops the connection
  let asked = 0;
  const server = createServer((_req, res) => {
    asked++;
    res.writeHead(200, { 'content-type': 'application/xml; charset=utf-8' });
    res.write('<?xml version="1.0" encoding="UTF-8"?>\n<objects>\n  <object type="Organisation" id="org-1">');
    setTimeout(() => res.socket?.destroy(), 50);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  t.teardown(() => new Promise<void>((r) => server.close(() => r())));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const file = join(tempDir(t), 'cut.xml');
  const cut = await cliAsync(['export', '--node', url, '--out', file], { MERIDIAN_PASSWORD: PW });
  t.equal(cut.code, 1);
  t.match(cut.stderr, /^meridian: the export stopped part-way \([^)]+\); \S*cut\.xml was not written; run it again\n$/);
  t.notOk(existsSync(file), 'no FILE that would look like an export');
  t.notOk(existsSync(`${file}.partial`), 'and nothing left aside');
  const toStdout = await cliAsync(['export', '--node', url], { MERIDIAN_PASSWORD: PW });
  t.equal(toStdout.code, 1);
  t.match(toStdout.stderr, /^meridian: the export stopped part-way \([^)]+\); run it again\n$/, 'to stdout too, one sentence (it was a stack trace)');
  t.match(toStdout.stdout, /<object type="Organisation" id="org-1">$/, 'after what had come');
  const askedBefore = asked;
  const nowhere = await cliAsync(['export', '--node', url, '--out', join(tempDir(t), 'no', 'such', 'dir.xml')], { MERIDIAN_PASSWORD: PW });
  t.equal(nowhere.code, 1);
  t.match(nowhere.stderr, /^meridian: cannot write \S+dir\.xml: its directory does not exist\n$/, 'a missing directory is named, not taken for a cut export');
  t.equal(asked, askedBefore, 'and the node was not asked');
  const onTty = await cliOnTty(['export', '--node', url, '--out', join(tempDir(t), 'tty.xml')], { MERIDIAN_PASSWORD: PW });
  t.equal(onTty.code, 1);
  t.match(onTty.out, /exporting: /, 'progress was drawn on the terminal');
  t.match(onTty.out, /\x1b\[2Kmeridian: the export stopped part-way/, 'and cleared before the error');
  const json = await cliAsync(['export', '--json', '--node', url], { MERIDIAN_PASSWORD: PW });
  t.equal(json.code, 2, '--json without --out is a usage error, not XML on stdout');
  t.match(json.stderr, /^meridian: --json prints a summary of an export to a file; give --out FILE/);

  // verify asks every node with the same credential: the one that refuses it is named
  const refusing = createServer((_req, res) => {
    res.writeHead(401, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ error: { code: 'unauthorized', message: 'wrong user or password' } }));
  });
  await new Promise<void>((r) => refusing.listen(0, '127.0.0.1', () => r()));
  t.teardown(() => new Promise<void>((r) => refusing.close(() => r())));
  const refusingUrl = `http://127.0.0.1:${(refusing.address() as AddressInfo).port}`;
  const named = await cliAsync(['verify', '--nodes', `${refusingUrl},${refusingUrl.replace('127.0.0.1', 'localhost')}`], { MERIDIAN_PASSWORD: PW });
  t.equal(named.code, 1);
  t.match(named.stderr, new RegExp(`^meridian: ${refusingUrl}: wrong user or password`), named.stderr);
  // one node named twice, and a word that is no URL: usage errors naming --nodes, before any node is asked
  const twice = await cliAsync(['verify', '--nodes', `${refusingUrl},${refusingUrl}/x`], { MERIDIAN_PASSWORD: PW });
  t.same([twice.code, twice.stderr], [2, `meridian: --nodes names ${refusingUrl}/x twice; name each node once\n`], 'the same origin, whatever path follows');
  const garbage = await cliAsync(['verify', '--nodes', `${refusingUrl},garbage`], { MERIDIAN_PASSWORD: PW });
  t.same([garbage.code, garbage.stderr], [2, 'meridian: --nodes takes http:// or https:// URLs separated by commas, such as http://10.0.0.1:8080,http://10.0.0.2:8080; "garbage" is not one\n']);

  // verify draws its progress before any node answers; the error that follows gets a line of its own
  const tty = await cliOnTty(['verify', '--nodes', `${url},http://127.0.0.1:9`], { MERIDIAN_PASSWORD: PW });
  t.equal(tty.code, 1);
  t.notMatch(tty.out, /digestedmeridian/, 'not glued to the progress line');
  t.match(tty.out, /\x1b\[2Kmeridian: /, 'the progress line is cleared first');
});

t.test('answers that are not what the command asked for: a foreign 200 to an import, a JSON answer cut short, an export into a directory', async (t) => {
  let asked = 0;
  const server = createServer((req, res) => {
    asked++;
    req.resume();
    if (req.url?.startsWith('/import')) {
      // a proxy's or a single-page app's fallback page
      res.writeHead(200, { 'content-type': 'text/html' });
      res.end('<!doctype html><html><body>Welcome</body></html>');
      return;
    }
    // a JSON answer whose connection drops half-way
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': '1000' });
    res.write('{"id": "org-1", "ty');
    setTimeout(() => res.socket?.destroy(), 20);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  t.teardown(() => new Promise<void>((r) => server.close(() => r())));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const env = { MERIDIAN_PASSWORD: PW };
  const file = join(tempDir(t), 'in.xml');
  (await import('node:fs')).writeFileSync(file, '<objects>\n<object type="Organisation"><field name="name">X</field><field name="kind">vendor</field></object>\n</objects>\n');
  const imported = await cliAsync(['import', file, '--node', url], env);
  t.equal(imported.code, 1, 'not counted as an import of nothing, with exit 0');
  t.equal(imported.stderr, `meridian: the node at ${url} answered the import with something that is not an import report; is it a Meridian node? The objects may or may not have been applied\n`);
  t.equal(imported.stdout, '');

  const put = await cliAsync(['put', 'Organisation', 'name=X', 'kind=vendor', '--node', url], env);
  t.equal(put.code, 1);
  t.equal(put.stderr, `meridian: the node at ${url} closed the connection before its answer was complete; the change may or may not have been made\n`, 'one sentence, not "unexpected error: terminated"');
  const get = await cliAsync(['get', 'org-1', '--node', url], env);
  t.equal(get.stderr, `meridian: the node at ${url} closed the connection before its answer was complete\n`, 'a read says nothing of changes');

  const before = asked;
  const folder = tempDir(t);
  const into = await cliAsync(['export', '--node', url, '--out', folder], env);
  t.equal(into.code, 2, 'a usage error');
  t.equal(into.stderr, `meridian: ${folder} is a directory; give the name of the file to write\n`);
  t.equal(asked, before, 'said before the node is asked (it used to download everything, then fail the rename)');
  t.notOk(existsSync(`${folder}.partial`), 'and nothing is left beside it');
});

t.test('export --out through a symbolic link writes the linked file; into a FIFO, writes to its reader; neither is replaced', async (t) => {
  const { lstatSync, symlinkSync } = await import('node:fs');
  const { spawn, spawnSync } = await import('node:child_process');
  const a = await startNode(t, ['--dir', tempDir(t), '--admin-password', PW, '--sample', '--sample-size', '20']);
  const env = { MERIDIAN_PASSWORD: PW };
  const dir = tempDir(t);
  const real = join(dir, 'real.xml');
  const link = join(dir, 'link.xml');
  symlinkSync('real.xml', link);
  const viaLink = await cliAsync(['export', '--node', a.url, '--out', link], env);
  t.equal(viaLink.code, 0, viaLink.stderr);
  t.ok(lstatSync(link).isSymbolicLink(), 'the link is still a link');
  t.match(readFileSync(real, 'utf8'), /^<\?xml version="1.0" encoding="UTF-8"\?>\n<objects>\n[\s\S]*<\/objects>\n$/, 'the file it names holds the export');
  t.notOk(existsSync(`${real}.partial`) || existsSync(`${link}.partial`), 'nothing is left beside them');

  const fifo = join(dir, 'fifo');
  t.equal(spawnSync('mkfifo', [fifo]).status, 0, 'mkfifo');
  const reader = spawn('cat', [fifo], { stdio: ['ignore', 'pipe', 'ignore'] });
  t.teardown(() => {
    if (reader.exitCode === null && reader.signalCode === null) reader.kill('SIGKILL');
  });
  let read = '';
  reader.stdout.on('data', (d: Buffer) => (read += d.toString()));
  const readerDone = new Promise<void>((resolve) => reader.on('exit', () => resolve()));
  const intoFifo = await cliAsync(['export', '--node', a.url, '--out', fifo], env);
  t.equal(intoFifo.code, 0, intoFifo.stderr);
  await readerDone;
  t.match(read, /^<\?xml version="1.0" encoding="UTF-8"\?>\n<objects>\n[\s\S]*<\/objects>\n$/, 'the reader got the whole export');
  t.ok(lstatSync(fifo).isFIFO(), 'and the FIFO is still one');

  // /dev/stdout, with stdout appended to a file: the file gets the export after what it held, and is not replaced
  const file = join(dir, 'appended.xml');
  const shell = spawnSync('bash', ['-c', `echo previous > '${file}'; '${process.execPath}' '${join(import.meta.dirname, '..', 'bin', 'meridian')}' export --node ${a.url} --out /dev/stdout >> '${file}'`], { env: { ...process.env, ...env }, encoding: 'utf8' });
  t.equal(shell.status, 0, shell.stderr);
  t.match(readFileSync(file, 'utf8'), /^previous\n<\?xml version="1.0" encoding="UTF-8"\?>\n<objects>\n[\s\S]*<\/objects>\n/, 'after what the file held');
  symlinkSync('loop-b', join(dir, 'loop-a'));
  symlinkSync('loop-a', join(dir, 'loop-b'));
  const loop = await cliAsync(['export', '--node', a.url, '--out', join(dir, 'loop-a')], env);
  t.same([loop.code, loop.stderr.replace(dir, 'DIR')], [2, 'meridian: cannot write DIR/loop-a: its symbolic links go round in a loop\n']);
});
