import t from 'tap';
import { Level } from 'level';
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { cli, cliAsync, startNode } from './helpers/node-process.js';
import { tempDir } from './helpers/tmp.js';

const PW = 'test-admin-pw';

t.test('the CLI end to end against a node started through bin/meridian', async (t) => {
  const dir = tempDir(t);
  const node = await startNode(t, ['--dir', dir, '--admin-password', PW, '--node-id', 'eu-1']);
  const env = { MERIDIAN_NODE: node.url, MERIDIAN_PASSWORD: PW };

  const status = cli(['status', '--json'], env);
  t.equal(status.code, 0, status.stderr);
  const s = JSON.parse(status.stdout);
  t.match(s, { nodeId: 'eu-1', role: 'master', mode: 'read-write', objects: 0, peers: [] });
  t.match(cli(['status'], env).stdout, /node\s+eu-1 \(master\)\nmode\s+read-write since /);

  const org = cli(['put', 'Organisation', 'org-acme', 'name=Acme Ltd', 'kind=customer', 'postalCode=0049'], env);
  t.equal(org.code, 0, org.stderr);
  t.equal(org.stdout.trim(), 'org-acme', 'put prints the id');
  const created = cli(['put', 'Person', 'cn=Anna Smith', 'sn=Smith', 'mail=Anna@Example.com', 'mail=anna.smith@example.com', 'organisation=org-acme', 'telephoneNumber=+27 021 555'], env);
  t.equal(created.code, 0, created.stderr);
  const id = created.stdout.trim();
  t.match(id, /^per-[0-9a-z]{12}$/);

  const got = JSON.parse(cli(['get', id, '--json'], env).stdout);
  t.same(got.fields, { cn: 'Anna Smith', sn: 'Smith', mail: ['Anna@Example.com', 'anna.smith@example.com'], organisation: 'org-acme', telephoneNumber: ['+27 021 555'] });
  t.match(cli(['get', 'org-acme'], env).stdout, /postalCode\s+0049/, 'values stay strings exactly as given');

  // a page of a filtered list: the hint to the next page keeps the filter and the page size
  for (const [oid, kind] of [['org-c2', 'customer'], ['org-v1', 'vendor'], ['org-c3', 'customer'], ['org-v2', 'vendor']]) {
    t.equal(cli(['put', 'Organisation', oid!, `name=${oid}`, `kind=${kind}`], env).code, 0);
  }
  const page1 = cli(['list', 'Organisation', 'kind=customer', '--limit', '2'], env);
  t.equal(page1.code, 0, page1.stderr);
  const hint = /^more: meridian (.*)\n$/.exec(page1.stderr)?.[1];
  t.match(hint, /^list Organisation kind=customer --limit 2 --after \S+$/, page1.stderr);
  const page2 = cli([...hint!.split(' '), '--json'], env);
  const named = cli(['list', 'Organisation', 'kind=customer', '--limit', '2', '--node', node.url], env);
  t.match(named.stderr, new RegExp(`^more: meridian list Organisation kind=customer --limit 2 --node ${node.url.replace(/\./g, '\\.')} --after \\S+\\n$`), 'a node given on the command line is given again');
  t.equal(page2.code, 0, page2.stderr);
  t.same(
    (JSON.parse(page2.stdout) as { items: { id: string }[] }).items.map((o) => o.id),
    ['org-c3'],
    'the next page holds the customers left, not every Organisation after the cursor',
  );

  const upd = cli(['put', 'Person', id, 'title=CIO', 'telephoneNumber='], env);
  t.equal(upd.code, 0, upd.stderr);
  const after = JSON.parse(cli(['get', id, '--json'], env).stdout);
  t.equal(after.fields.title, 'CIO');
  t.notOk('telephoneNumber' in after.fields, '"field=" removes the field');

  const list = JSON.parse(cli(['list', 'Person', 'mail=ANNA@example.com', '--json'], env).stdout);
  t.same(list.items.map((o: { id: string }) => o.id), [id], 'lookup by mail is case-insensitive');
  t.match(cli(['list', 'Person'], env).stdout, new RegExp(`${id}\\s+Anna Smith`));

  const bad = cli(['put', 'Person', 'cn=X', 'mail=anna@EXAMPLE.com', 'sn=Y'], env);
  t.equal(bad.code, 1);
  t.equal(bad.stderr, `meridian: new Person: field "mail" value "anna@example.com" is already used by Person ${id}\n`);
  t.equal(bad.stdout, '');

  const del = cli(['delete', id], env);
  t.equal(del.code, 0, del.stderr);
  const gone = cli(['get', id], env);
  t.equal(gone.code, 1);
  t.match(gone.stderr, new RegExp(`^meridian: Person ${id} was deleted at .*Z\\n$`));
  t.equal(JSON.parse(cli(['get', id, '--deleted', '--json'], env).stdout).deleted, true);

  // usage errors exit 2, operation failures exit 1, never a stack trace
  t.equal(cli(['frobnicate'], env).code, 2);
  const unknownFlag = cli(['status', '--frobnicate'], env);
  t.equal(unknownFlag.code, 2);
  t.equal(unknownFlag.stderr, `meridian: unknown option '--frobnicate' (run "meridian --help" for usage)\n`, 'a usage error is one line, prefixed as every error');
  const mistyped = cli(['status', '--passwrod=s3cret-pw'], env);
  t.equal(mistyped.code, 2);
  t.equal(mistyped.stderr, `meridian: unknown option '--passwrod=...' (run "meridian --help" for usage)\n`, "a mistyped option's value is not quoted back: it may be a password");
  t.equal(cli(['status', "--passwrod=ab'cd"], env).stderr, `meridian: unknown option '--passwrod=...' (run "meridian --help" for usage)\n`, 'nor the part after a quote in it');
  t.equal(cli(['status', '-qs3cret'], env).stderr, `meridian: unknown option '-q...' (run "meridian --help" for usage)\n`, 'nor a value run into a short option');
  const inUrl = cli(['status', '--node', 'http://admin:s3cret-pw@127.0.0.1:9/'], env);
  t.equal(inUrl.code, 2, 'a user and password in --node is a usage error');
  t.equal(inUrl.stderr, 'meridian: --node must not hold a user or password (http://127.0.0.1:9 with user@ before the host); pass --user and --password or MERIDIAN_PASSWORD\n');
  const quoted = cli(['Foo. Bar'], env);
  t.equal(quoted.stderr, `meridian: unknown command 'Foo. Bar' (run "meridian --help" for usage)\n`, 'what was typed is quoted back as typed');
  const revoke = cli(['replica', 'revoke', '..'], env);
  t.same([revoke.code, revoke.stderr], [2, 'meridian: a replica name is 1-100 letters, digits, ".", "_" or "-", starting with a letter or digit, such as laptop-17\n'], 'a replica name no credential can have');
  const add = cli(['replica', 'add', 'bad name'], { ...env, MERIDIAN_NODE: 'http://127.0.0.1:9' });
  t.same([add.code, add.stderr], [2, revoke.stderr], 'to add too, said before any node is asked');
  // a URL refused as no URL, or as another scheme, is quoted back without what stands before its "@"
  for (const [args, said] of [
    [['status', '--node', 'http://admin:S3cretPw@host:99999'], 'meridian: --node must be a URL such as http://127.0.0.1:8080, got "http://...@host:99999"\n'],
    [['status', '--node', 'ftp://admin:S3cretPw@host'], 'meridian: --node must be an http:// or https:// URL, got "ftp://...@host"\n'],
    [['verify', '--nodes', 'http://a:1,ftp://admin:S3cretPw@h'], 'meridian: --nodes takes http:// or https:// URLs separated by commas, such as http://10.0.0.1:8080,http://10.0.0.2:8080; "ftp://...@h" is not one\n'],
    [['status', '--node', 'admin:S3cretPw@host:8080'], 'meridian: --node must be an http:// or https:// URL, got "...@host:8080"\n'],
    [['status', '--node', 'http://admin:pa/ss@host:8080'], 'meridian: --node must be a URL such as http://127.0.0.1:8080, got "http://...@host:8080"\n'],
    [['status', '--node', 'http://admin:pa#ss@host'], 'meridian: --node must be a URL such as http://127.0.0.1:8080, got "http://...@host"\n'],
  ] as const) {
    const r = cli([...args], env);
    t.same([r.code, r.stderr], [2, said], `${args.join(' ')}: no password in the sentence`);
  }
  const extra = cli(['status', 'extra'], env);
  t.same([extra.code, extra.stderr], [2, `meridian: too many arguments for 'status'; expected 0 arguments but got 1 (run "meridian --help" for usage)\n`], "one sentence, though commander's was two");
  t.equal(cli(['put', 'Person', 'x', 'notanassignment'], env).code, 2);
  for (const limit of ['abc', '0', '-5', '1.5', '10001']) {
    const r = cli(['list', 'Person', '--limit', limit], { ...env, MERIDIAN_NODE: 'http://127.0.0.1:9' });
    t.equal(r.code, 2, `--limit ${limit} is a usage error`);
    t.equal(r.stderr, `meridian: --limit must be a whole number from 1 to 10000, got "${limit}"\n`, 'said before any node is asked');
  }
  const unauth = cli(['status'], { MERIDIAN_NODE: node.url, MERIDIAN_PASSWORD: 'wrong' });
  t.equal(unauth.code, 1);
  t.equal(unauth.stderr, 'meridian: wrong user or password\n');
  const noPw = cli(['status', '--node', node.url], { MERIDIAN_PASSWORD: undefined });
  t.match(noPw.stderr, /pass --password or set MERIDIAN_PASSWORD/);
  const down = cli(['status', '--node', 'http://127.0.0.1:9'], env);
  t.equal(down.code, 1);
  t.match(down.stderr, /^meridian: cannot reach the node at http:\/\/127\.0\.0\.1:9 .*; is "meridian serve" running there\?\n$/);
  for (const r of [bad, gone, unauth, down]) t.notMatch(r.stderr, /\n\s+at /, 'no stack trace');
  t.match(cli(['--help']).stdout, /init[\s\S]*serve[\s\S]*status[\s\S]*get[\s\S]*put[\s\S]*list[\s\S]*delete/);

  // a second node on the same data dir refuses with a clear sentence
  const second = cli(['serve', '--dir', dir, '--http-port', '0']);
  t.equal(second.code, 1);
  t.equal(second.stderr.trim(), `meridian: data dir ${dir} is in use by another Meridian process; stop it or choose another --dir`);
  // a setting that cannot be used is a usage error: 2, as a wrong flag is
  for (const [args, message] of [[['--http-port', 'abc'], /^meridian: --http-port: httpPort must be a whole number, got "abc"$/], [['--role', 'foo'], /^meridian: --role: role must be master or replica/]] as const) {
    const r = cli(['serve', '--dir', tempDir(t), ...args]);
    t.equal(r.code, 2, `serve ${args.join(' ')} exits 2`);
    t.match(r.stderr.trim(), message);
  }

  t.equal(await node.stop(), 0, 'SIGTERM shuts down cleanly');
  t.match(node.output(), /"msg":"stopped"/);

  // a data dir a newer Meridian wrote: refused in one sentence, as the store says it (packages/store/test/restart.test.ts)
  const db = new Level<string, Buffer>(dir, { keyEncoding: 'utf8', valueEncoding: 'buffer' });
  await db.put('mformat', Buffer.from([0x03])); // MessagePack for 3
  await db.close();
  const newer = cli(['serve', '--dir', dir, '--http-port', '0']);
  t.equal(newer.code, 1);
  t.equal(newer.stderr.trim(), `meridian: data dir ${dir} holds storage format 3, written by a newer Meridian, and this one reads formats up to 2; run a Meridian that reads it, or restore a backup taken before the upgrade into a new dir`);
});

t.test('without an admin password the first start generates one, prints it once, and stores only a hash', async (t) => {
  const dir = tempDir(t);
  const first = await startNode(t, ['--dir', dir], { MERIDIAN_ADMIN_PASSWORD: '' });
  const m = /admin password \(shown once; only a hash is stored\): (\S+)/.exec(first.output());
  t.ok(m, 'printed');
  const pw = m![1]!;
  t.equal(cli(['status'], { MERIDIAN_NODE: first.url, MERIDIAN_PASSWORD: pw }).code, 0);
  await first.stop();
  const { readdirSync, readFileSync } = await import('node:fs');
  for (const f of readdirSync(dir)) t.notOk(readFileSync(`${dir}/${f}`).includes(Buffer.from(pw)), `${f} does not hold the password`);
  const second = await startNode(t, ['--dir', dir], { MERIDIAN_ADMIN_PASSWORD: '' });
  t.notMatch(second.output(), /admin password/, 'not printed again');
  t.equal(cli(['status'], { MERIDIAN_NODE: second.url, MERIDIAN_PASSWORD: pw }).code, 0, 'and it still works');
  await second.stop();
});

t.test('a first start that fails (its port taken) keeps no password it did not show: the next start generates and shows one', async (t) => {
  const { createServer } = await import('node:net');
  const taken = createServer();
  await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', () => resolve()));
  t.teardown(() => taken.close());
  const port = (taken.address() as { port: number }).port;
  const dir = tempDir(t);
  const failed = cli(['serve', '--dir', dir, '--http-port', String(port)], { MERIDIAN_ADMIN_PASSWORD: '' });
  t.equal(failed.code, 1, failed.stderr);
  t.match(failed.stderr, /is already in use/);
  t.notMatch(failed.stdout, /admin password/, 'no password shown by the start that failed');
  const next = await startNode(t, ['--dir', dir], { MERIDIAN_ADMIN_PASSWORD: '' });
  const m = /admin password \(shown once; only a hash is stored\): (\S+)/.exec(next.output());
  t.ok(m, 'the next start shows one');
  t.equal(cli(['status'], { MERIDIAN_NODE: next.url, MERIDIAN_PASSWORD: m?.[1] ?? '' }).code, 0, 'which works');
  await next.stop();
});

t.test('init prepares a data dir that serve then uses', async (t) => {
  const dir = tempDir(t);
  const r = cli(['init', '--dir', dir, '--node-id', 'za-1']);
  t.equal(r.code, 0, r.stderr);
  t.match(r.stdout, /initialised node za-1\nadmin password \(shown once; only a hash is stored\): \S+\n/);
  const node = await startNode(t, ['--dir', dir], { MERIDIAN_ADMIN_PASSWORD: '' });
  t.match(node.output(), /meridian node za-1 listening/);
  await node.stop();
  // a node id the store would refuse is a usage error, said before a data dir is made for it
  const bad = join(tempDir(t), 'never-made');
  for (const id of ['a b', 'x'.repeat(129)]) {
    const refused = cli(['init', '--dir', bad, '--node-id', id]);
    t.equal(refused.code, 2, `--node-id ${id.slice(0, 10)}: exit 2`);
    t.equal(refused.stderr, 'meridian: --node-id may hold only letters, digits, ".", "_" and "-" (at most 128)\n');
    t.notOk(existsSync(bad), 'and no data dir is left behind');
  }
  // a data dir that a file is in the way of gets a sentence, not the system's error
  const file = join(tempDir(t), 'a-file');
  writeFileSync(file, 'x');
  const inTheWay = cli(['init', '--dir', join(file, 'sub')]);
  t.equal(inTheWay.code, 1);
  t.match(inTheWay.stderr, /^meridian: cannot make the data dir \S+sub: a file is in the way of that directory; choose another --dir\n$/);
});

t.test('serve says in a sentence what keeps it from starting: a certificate that is no PEM, an address not of this machine', async (t) => {
  const junk = join(tempDir(t), 'junk.pem');
  writeFileSync(junk, 'not a certificate\n');
  const tls = cli(['serve', '--dir', tempDir(t), '--http-port', '0', '--admin-password', PW, '--tls-cert', junk, '--tls-key', junk]);
  t.equal(tls.code, 2, 'a setting serve cannot use: a usage error, as operations.md says');
  t.match(tls.stderr, /^meridian: --tls-cert \S+junk\.pem and --tls-key \S+junk\.pem are not a PEM certificate and its private key \([^)]*\)\n$/);
  const missing = cli(['serve', '--dir', tempDir(t), '--http-port', '0', '--admin-password', PW, '--tls-cert', `${junk}.none`, '--tls-key', junk]);
  t.same([missing.code, missing.stderr.replace(/\S+junk/, 'junk')], [2, 'meridian: cannot read --tls-cert file junk.pem.none: ENOENT\n'], 'a file that is not there too');
  const schema = join(tempDir(t), 'schema.yaml');
  writeFileSync(schema, 'name: x\n');
  for (const args of [['serve', '--http-port', '0'], ['init']]) {
    const bad = cli([...args, '--dir', tempDir(t), '--admin-password', PW, '--schema', schema]);
    t.equal(bad.code, 2, `${args[0]} with a schema it cannot use: exit 2`);
    t.match(bad.stderr, /^meridian: schema .*types/, bad.stderr);
  }
  writeFileSync(schema, 'types:\n  A: b: c\n');
  const yaml = cli(['serve', '--http-port', '0', '--dir', tempDir(t), '--admin-password', PW, '--schema', schema]);
  t.equal(yaml.code, 2);
  t.match(yaml.stderr, /is not valid YAML \([^)]*[^:]\)\n$/, `a YAML error's sentence does not end on a colon: ${yaml.stderr}`);
  // (TEST-NET-1, RFC 5737: an address no machine of ours has)
  const host = cli(['serve', '--dir', tempDir(t), '--http-port', '0', '--admin-password', PW, '--host', '192.0.2.1']);
  t.equal(host.code, 1);
  t.equal(host.stderr, 'meridian: --host 192.0.2.1 is not an address of this machine; give one of its addresses, 0.0.0.0 for all, or 127.0.0.1\n');
});

t.test('--sample loads the generated CRM dataset on the first start only', async (t) => {
  const dir = tempDir(t);
  const env = { MERIDIAN_PASSWORD: PW };
  const first = await startNode(t, ['--dir', dir, '--admin-password', PW, '--sample', '--sample-size', '60']);
  const s1 = JSON.parse(cli(['status', '--json', '--node', first.url], env).stdout);
  t.ok(s1.objectsByType.Person >= 60 && s1.objectsByType.Organisation > 5 && s1.objectsByType.License > 0, `loaded ${JSON.stringify(s1.objectsByType)}`);
  t.match(cli(['get', 'org-vendor', '--node', first.url], env).stdout, /kind\s+vendor/);
  await first.stop();
  const second = await startNode(t, ['--dir', dir, '--admin-password', PW, '--sample', '--sample-size', '60']);
  const s2 = JSON.parse(cli(['status', '--json', '--node', second.url], env).stdout);
  t.same(s2.objectsByType, s1.objectsByType, 'not loaded again');
  await second.stop();
});

t.test('a reader that goes away ends the CLI quietly, not with a stack trace', async (t) => {
  const { spawn } = await import('node:child_process');
  const { nodeCommand } = await import('./helpers/node-process.js');
  const node = await startNode(t, ['--dir', tempDir(t), '--admin-password', PW]);
  const [cmd, argv] = nodeCommand(['lag', '--watch']);
  // head takes the first line and exits; the next refresh a second later writes into a closed pipe
  const script = `${[cmd, ...argv].map((a) => `'${a}'`).join(' ')} | head -1 >/dev/null; echo "exit $\{PIPESTATUS[0]}" >&2`;
  // its own process group: a CLI that went on watching is killed with the shell, not left behind
  const shell = spawn('bash', ['-c', script], { detached: true, env: { ...process.env, MERIDIAN_NODE: node.url, MERIDIAN_PASSWORD: PW }, stdio: ['ignore', 'ignore', 'pipe'] });
  const killGroup = (): void => {
    try {
      process.kill(-shell.pid!, 'SIGKILL');
    } catch {
      // the group has exited
    }
  };
  t.teardown(killGroup);
  let stderr = '';
  shell.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const ended = await new Promise<boolean>((resolve) => {
    const timer = setTimeout(() => resolve(false), 20_000);
    shell.on('exit', () => {
      clearTimeout(timer);
      resolve(true);
    });
  });
  t.ok(ended, 'the CLI ended within 20 s of its reader going away');
  t.equal(stderr.trim(), 'exit 0', `nothing on stderr but the exit status: ${stderr}`);
});

t.test('a reader that goes away early keeps the exit code the command set: a failing import piped into head still fails', async (t) => {
  const { spawnSync } = await import('node:child_process');
  const { nodeCommand } = await import('./helpers/node-process.js');
  const node = await startNode(t, ['--dir', tempDir(t), '--admin-password', PW]);
  // 1,500 objects of no type: each rejected, the JSON report (over 100 KB) more than a pipe holds
  const doc = join(tempDir(t), 'rejected.xml');
  writeFileSync(doc, `<objects>${'<object type="NoSuchType"><field name="x">y</field></object>\n'.repeat(1500)}</objects>`);
  const [cmd, argv] = nodeCommand(['import', '--json', doc]);
  const script = `set -o pipefail; ${[cmd, ...argv].map((a) => `'${a}'`).join(' ')} | head -c 100 >/dev/null`;
  const r = spawnSync('bash', ['-c', script], { encoding: 'utf8', env: { ...process.env, MERIDIAN_NODE: node.url, MERIDIAN_PASSWORD: PW } });
  t.equal(r.status, 1, `exit 1, as without the pipe (${r.stderr.trim()})`);
});

t.test('a server that answers every request with {} is told to be no Meridian node, in one sentence, by every view', async (t) => {
  const { createServer } = await import('node:http');
  const fakes = await Promise.all(
    [0, 1].map(
      () =>
        new Promise<{ url: string; close: () => void }>((resolve) => {
          const server = createServer((_req, res) => res.writeHead(200, { 'content-type': 'application/json' }).end('{}'));
          server.listen(0, '127.0.0.1', () => resolve({ url: `http://127.0.0.1:${(server.address() as { port: number }).port}`, close: () => server.close() }));
        }),
    ),
  );
  t.teardown(() => fakes.forEach((f) => f.close()));
  const env = { MERIDIAN_NODE: fakes[0]!.url, MERIDIAN_PASSWORD: PW };
  for (const args of [['status'], ['peers'], ['conflicts'], ['log'], ['check'], ['replica', 'list'], ['history', 'per-x'], ['list', 'Person'], ['verify', '--nodes', `${fakes[0]!.url},${fakes[1]!.url}`]]) {
    const r = await cliAsync(args, env);
    t.equal(r.code, 1, args.join(' '));
    t.match(r.stderr, /^meridian: (\S+: )?the node at http:\/\/127\.0\.0\.1:\d+ answered GET \S+ without the list "\w+" a Meridian node sends; is it a Meridian node\?\n$/, `${args.join(' ')}: ${r.stderr.trim()}`);
  }
});

t.test('a build with a package missing is one sentence from bin/meridian, not the loader\'s stack trace', async (t) => {
  const { spawnSync } = await import('node:child_process');
  const { copyFileSync, mkdirSync } = await import('node:fs');
  // bin/meridian in a tree of its own whose built CLI imports a package that was never built
  const root = tempDir(t);
  mkdirSync(join(root, 'bin'));
  mkdirSync(join(root, 'packages', 'cli', 'dist'), { recursive: true });
  copyFileSync(join(import.meta.dirname, '..', 'bin', 'meridian'), join(root, 'bin', 'meridian'));
  writeFileSync(join(root, 'packages', 'cli', 'dist', 'bin.js'), "import '../../store/dist/index.js';\n");
  const r = spawnSync(process.execPath, [join(root, 'bin', 'meridian'), 'status'], { encoding: 'utf8' });
  t.equal(r.status, 1);
  t.match(r.stderr, /^meridian: the build is incomplete \(\S+store\/dist\/index\.js is missing\); run "npm install && npm run build" in the repository first\n$/);
  t.notMatch(r.stderr, /\n\s+at /, 'no stack trace');
  writeFileSync(join(root, 'packages', 'cli', 'dist', 'bin.js'), "throw new Error('a bug at load');\n");
  const bug = spawnSync(process.execPath, [join(root, 'bin', 'meridian'), 'status'], { encoding: 'utf8' });
  t.match(bug.stderr, /a bug at load/, 'any other error at load still shows in full');
});

t.test('verify refuses, in one sentence, to compare digests of different widths (a node of another version, or no Meridian)', async (t) => {
  const { compareDigests } = await import('../packages/cli/dist/replication-views.js');
  const bucket = (hash: string) => ({ count: 1, hash });
  const a = { url: 'http://a', nodeId: 'a', objects: 2, buckets: [bucket('x'), bucket('y')] };
  const b = { url: 'http://b', nodeId: 'b', objects: 2, buckets: [bucket('x')] };
  t.throws(() => compareDigests([a, b]), { exitCode: 1, message: 'http://b answered a digest of 1 id ranges where http://a answered 2; verify nodes that run the same Meridian version' });
  t.throws(() => compareDigests([b, a]), { message: /^http:\/\/a answered a digest of 2 id ranges where http:\/\/b answered 1/ }, 'more ranges than the first node: refused too, not compared on the first ones only');
  t.throws(() => compareDigests([a, { ...b, buckets: 'nope' as unknown as [] }]), { message: /answered a digest of no id ranges/ });
  t.same(compareDigests([a, { ...a, url: 'http://c', nodeId: 'c' }]).identical, true, 'equal widths compare');
});

t.test('verify tells changes not yet replicated from divergence, counting what each node lacks exactly', async (t) => {
  const { compareDigests, formatVerify } = await import('../packages/cli/dist/replication-views.js');
  const digest = (nodeId: string, hash: string, vector?: Record<string, number>, ahead?: [string, number][]) => ({ url: `http://${nodeId}`, nodeId, lastSeq: 0, objects: 1, buckets: [{ count: 1, hash }], ...(vector ? { vector, ahead: ahead ?? [] } : {}) });
  t.same(compareDigests([digest('a', 'x', { a: 5 }), digest('b', 'x', { a: 2 })]).lacking, undefined, 'identical buckets: nothing to explain');
  // b holds a:1-2 and a:4 (ahead of its gap at 3); c holds a:1-5 and a:9; so b lacks 3, 5 and 9, c lacks nothing of a
  const r = compareDigests([digest('b', 'x', { a: 2, c: 1 }, [['a', 4]]), digest('c', 'y', { a: 5, c: 1 }, [['a', 9]])]);
  t.same(r.lacking, [{ nodeId: 'b', origin: 'a', missing: 3, holds: 2, newest: 9 }]);
  t.match(formatVerify(r), /^NOT CONVERGED in 1 of 1 id ranges/m);
  t.match(formatVerify(r), /^b lacks 3 changes from a \(it holds a up to 2, another node up to 9\)$/m);
  // held ahead at or below a node's own vector entry, twice, or of an origin only held ahead: counted exactly
  t.same(compareDigests([digest('b', 'x', { a: 3 }, [['a', 2], ['a', 5], ['a', 5], ['e', 4]]), digest('c', 'y', { a: 6 })]).lacking, [
    { nodeId: 'b', origin: 'a', missing: 2, holds: 3, newest: 6 },
    { nodeId: 'c', origin: 'e', missing: 1, holds: 0, newest: 4 },
  ]);
  // an origin one node has never heard of counts from 0
  t.same(compareDigests([digest('b', 'x', {}), digest('c', 'y', { d: 2 })]).lacking, [{ nodeId: 'b', origin: 'd', missing: 2, holds: 0, newest: 2 }]);
  const diverged = compareDigests([digest('b', 'x', { a: 5 }, [['a', 7]]), digest('c', 'y', { a: 5 }, [['a', 7]])]);
  t.same(diverged.lacking, [], 'the same changes held');
  t.match(formatVerify(diverged), /^DIVERGED in 1 of 1 id ranges[^]*\nevery node holds the same changes, so these ranges should be equal: see "A diverged node found by verify" in docs\/operations.md$/m);
  const older = compareDigests([digest('b', 'x', { a: 5 }), digest('c', 'y')]);
  t.same(older.lacking, undefined, 'a node that does not say which changes it holds (an older build): no judgement');
  t.match(formatVerify(older), /^DIFFER in 1 of 1 id ranges[^]*id range 0: b 1, c 1\na node did not say which changes it holds/m, 'not called divergence either');
  t.same(compareDigests([digest('b', 'x', { a: -1 }), digest('c', 'y', { a: 1 })]).lacking, undefined, 'nor one whose position is malformed');
  // a node named after a property every object has: its entry read off the prototype made the count NaN
  t.same(compareDigests([digest('b', 'x', {}), digest('constructor', 'y', { constructor: 3 })]).lacking, [{ nodeId: 'b', origin: 'constructor', missing: 3, holds: 0, newest: 3 }], 'a node lacking all the changes of a node named constructor');
});

t.test('a node that accepts and never answers: the CLI gives up after --timeout with one sentence, not after five minutes', async (t) => {
  const { createServer } = await import('node:http');
  // a frozen node (kill -STOP): the connection opens, nothing comes back
  const server = createServer(() => undefined);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  t.teardown(() => {
    server.closeAllConnections();
    server.close();
  });
  const url = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
  const started = Date.now();
  const status = await cliAsync(['status', '--node', url, '--timeout', '1'], { MERIDIAN_PASSWORD: 'x' });
  t.equal(status.code, 1);
  t.equal(status.stderr, `meridian: the node at ${url} did not answer within 1 s; if it is only busy, wait longer with --timeout SECONDS\n`);
  const put = await cliAsync(['put', 'Organisation', 'name=X', 'kind=vendor', '--node', url], { MERIDIAN_PASSWORD: 'x', MERIDIAN_TIMEOUT: '0.5' });
  t.equal(put.stderr, `meridian: the node at ${url} did not answer within 0.5 s, and the change may or may not have been made; if it is only busy, wait longer with --timeout SECONDS\n`, 'from the environment too, and a write says it may have been made');
  t.ok(Date.now() - started < 15_000, `both within ${Date.now() - started} ms`);
  for (const bad of ['0', 'abc', '-1', '1e9', '301']) {
    const r = await cliAsync(['status', '--node', url, '--timeout', bad], {});
    t.equal(r.code, 2, `--timeout ${bad}: a usage error`);
    t.match(r.stderr, /^meridian: --timeout must be a number of seconds above 0 and at most 300, got /);
  }
});

t.test('an id no object can have is a usage error, said before any node is asked', async (t) => {
  // (no node at this address: a request would fail otherwise, with exit 1)
  const env = { MERIDIAN_NODE: 'http://127.0.0.1:9', MERIDIAN_PASSWORD: 'x' };
  for (const args of [['get', '..'], ['put', 'Organisation', '.', 'name=X'], ['delete', '.x'], ['history', '.'], ['undelete', 'a/b'], ['purge', '..', '--yes'], ['revert', '..', '--to', 'a#1']]) {
    const r = cli(args, env);
    t.equal(r.code, 2, `${args.join(' ')}: exit 2`);
    t.match(r.stderr, /^meridian: "[^"]*" is not an object id: ids are letters, digits, "\.", "_" and "-", beginning with a letter or digit \(at most 128\)\n$/, r.stderr);
  }
});

t.test('check: a node whose indexes agree with its objects passes; one with an index entry lost is named, exit 1', async (t) => {
  const dir = tempDir(t);
  const args = ['--dir', dir, '--admin-password', PW, '--node-id', 'eu-1'];
  let node = await startNode(t, args);
  const env = () => ({ MERIDIAN_NODE: node.url, MERIDIAN_PASSWORD: PW });
  t.equal(cli(['put', 'Organisation', 'org-acme', 'name=Acme Ltd', 'kind=customer'], env()).code, 0);
  t.equal(cli(['put', 'Person', 'per-anna', 'cn=Anna', 'sn=Smith', 'mail=anna@example.com', 'uid=anna', 'organisation=org-acme'], env()).code, 0);
  const ok = cli(['check'], env());
  t.equal(ok.code, 0, ok.stderr);
  t.equal(ok.stdout, 'eu-1: 2 objects checked; its indexes, unique values and counts agree with them\n');
  t.equal(ok.stderr, '', 'no progress when piped');
  t.same(JSON.parse(cli(['check', '--json'], env()).stdout), { nodeId: 'eu-1', objects: 2, problems: [] });

  // an index entry lost while the node was down (as a damaged disk would)
  await node.stop();
  const db = new Level<string, Buffer>(dir, { keyEncoding: 'utf8', valueEncoding: 'buffer' });
  const lost: string[] = [];
  for await (const k of db.keys({ gte: 'x', lt: 'y' })) if (k.includes('org-acme') && k.startsWith('xPerson')) lost.push(k);
  t.equal(lost.length, 1, 'the index entry of the person\'s organisation');
  await db.del(lost[0]!);
  await db.close();
  node = await startNode(t, args);
  const bad = cli(['check'], env());
  t.equal(bad.code, 1);
  t.match(bad.stdout, /^eu-1: 2 objects checked; 1 problem:\nmissing index entry "xPerson\|organisation\|org-acme\|per-anna"\nlists, lookups and searches on this node may answer wrongly: rebuild it from a clone/);
  t.match(JSON.parse(cli(['check', '--json'], env()).stdout), { nodeId: 'eu-1', objects: 2, problems: [/^missing index entry/] });
});

t.test('field=value words: repeated fields, removal, "=" in a value, and field names every object has as properties', async (t) => {
  const { parseAssignments } = await import('../packages/cli/dist/assignments.js');
  t.same({ ...parseAssignments(['cn=a=b', 'mail=x', 'mail=y', 'title=']) }, { cn: 'a=b', mail: ['x', 'y'], title: null });
  t.same({ ...parseAssignments(['constructor=x', 'toString=y', 'toString=z', 'valueOf=']) }, { constructor: 'x', toString: ['y', 'z'], valueOf: null }, 'not the prototype\'s functions as earlier values');
});
