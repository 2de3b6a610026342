import { Command, CommanderError, Option } from 'commander';
import { isMeridianError, MAX_PAGE, nodeIdProblem } from '@meridian/store';
import { checkReplicaName, initDataDir, MeridianNode, resolveConfig, SettingError, VERSION, type ConfigInput } from '@meridian/node';
import { AdminClient, CliError, DEFAULT_TIMEOUT_SECONDS, timeoutOption, unescapeXml, withoutCredentials } from './client.js';
import { formatList, formatObject, formatStatus, type ObjectView, type StatusView } from './format.js';
import { compareDigests, formatCheck, formatConflicts, formatFeedEntry, formatLag, formatPeers, formatVerify, table, type CheckView, type FeedView, type ConflictView, type DigestView, type VerifyResult } from './replication-views.js';
import { parseAssignments } from './assignments.js';
import { bar, bytes, Progress } from './progress.js';
import { addReversibilityCommands } from './reversibility.js';
import { objectPath, openInput, out, saidOfFile, writeAside, type ClientFlags } from './output.js';
import { Readable, Transform, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { ReadableStream as WebReadableStream } from 'node:stream/web';



function clientOptions(cmd: Command): Command {
  return cmd
    .addOption(new Option('--node <url>', 'the node to talk to').default('http://127.0.0.1:8080').env('MERIDIAN_NODE'))
    .addOption(new Option('--user <name>', 'admin API user').default('admin').env('MERIDIAN_USER'))
    .addOption(new Option('--password <password>', 'admin API password').env('MERIDIAN_PASSWORD'))
    .addOption(new Option('--timeout <seconds>', `seconds to wait for the node's answer (export and backup: for it to begin; import: none) (default: ${DEFAULT_TIMEOUT_SECONDS})`).env('MERIDIAN_TIMEOUT'))
    .option('--json', 'print JSON on stdout instead of text');
}

/** /status as nodes before open conflicts and peerBehind answer it. */
type OlderStatus = Omit<StatusView, 'conflicts' | 'peers'> & {
  conflicts?: StatusView['conflicts'];
  peers: (Omit<StatusView['peers'][number], 'peerBehind' | 'peerBehindSeconds'> & Partial<Pick<StatusView['peers'][number], 'peerBehind' | 'peerBehindSeconds'>>)[];
};

/**
 * A node's /status with what older nodes leave out filled in (open
 * conflicts, how far behind each peer is), so that every view can print it.
 */
async function fetchStatus(c: AdminClient): Promise<StatusView> {
  const { body } = await c.request<OlderStatus>('GET', '/status', undefined, {}, ['peers']);
  return {
    ...body,
    conflicts: body.conflicts ?? { open: 0 },
    peers: body.peers.map((p) => ({ ...p, peerBehind: p.peerBehind ?? 0, peerBehindSeconds: p.peerBehindSeconds ?? 0 })),
  };
}

/** `waitMs`: the wait when --timeout is not given, for a command whose node works longer than most before it answers */
function client(flags: ClientFlags, waitMs?: number): AdminClient {
  const timeoutMs = flags.timeout === undefined && waitMs !== undefined ? waitMs : timeoutOption(flags.timeout);
  return new AdminClient({ node: flags.node, user: flags.user, password: flags.password, timeoutMs });
}

function nodeOptions(cmd: Command): Command {
  return cmd
    .option('--config <file>', 'YAML config file (flags override it, environment overrides it too)')
    .option('--dir <dir>', 'data directory (default ./data)')
    .option('--node-id <id>', 'this node\'s id, fixed at the first start')
    .option('--schema <file>', 'schema file (default: the bundled CRM schema)')
    .option('--admin-password <password>', 'admin password (env MERIDIAN_ADMIN_PASSWORD); generated and printed once if never set');
}

/**
 * commander's error as one sentence: "error: " dropped, lines joined, and a
 * second sentence ("too many arguments for 'status'. Expected 0 arguments
 * but got 1.") joined to the first.
 */
function oneSentence(text: string): string {
  // (an unknown option's value is not quoted back: `--passwrod=s3cret` or `-ps3cret` would print the password;
  // up to the line's last quote, which a value holding one would otherwise cut short)
  const joined = text
    .replace(/^error: /, '')
    .replace(/^(unknown option ')(--[^=']+=|-[A-Za-z0-9])(?!').*'/m, "$1$2...'")
    .replace(/\s*\n\s*/g, ' ')
    .trim();
  // (outside quotes only: what the user typed, quoted back, stays as typed)
  return joined
    .split("'")
    .map((part, i) => (i % 2 === 1 ? part : part.replace(/\.\s+([A-Z])/g, (_, c: string) => `; ${c.toLowerCase()}`)))
    .join("'")
    .replace(/\.$/, '');
}

/** A setting found unusable only when used (a schema or TLS file) is a usage error too: exit 2. */
function usageError(e: unknown): never {
  if (e instanceof SettingError) throw new CliError(e.message, 2);
  throw e;
}

function configFrom(flags: Record<string, unknown>): ReturnType<typeof resolveConfig> {
  // commander's camel-cased option names are the config keys; resolveConfig reads only the keys it knows
  try {
    return resolveConfig({ flags: flags as ConfigInput, env: process.env, file: flags['config'] as string | undefined });
  } catch (e) {
    // a setting that cannot be used (a port that is no number, an unknown role) is a usage error: exit 2
    if (isMeridianError(e) && e.code === 'bad-request') throw new CliError(e.message, 2);
    throw e;
  }
}

export function buildProgram(): Command {
  const program = new Command('meridian')
    .description('Meridian: a multi-master replicated object store')
    .version(VERSION)
    // one line, as every other error: commander's "error: ..." and its help hint were two, unprefixed
    // (configured before the commands, which copy it)
    .configureOutput({ outputError: (text, write) => write(`meridian: ${oneSentence(text)} (run "meridian --help" for usage)\n`) })
    .exitOverride();

  nodeOptions(program.command('init').description('prepare a data directory: node id and admin password'))
    .action(async (flags: Record<string, unknown>) => {
      const r = await initDataDir(configFrom(flags)).catch(usageError);
      out(`initialised node ${r.nodeId}`);
      if (r.generatedPassword) out(`admin password (shown once; only a hash is stored): ${r.generatedPassword}`);
    });

  nodeOptions(program.command('serve').description('run a node'))
    .option('--host <address>', 'address to listen on (default 127.0.0.1)')
    .option('--http-port <port>', 'HTTP port for the admin API, status and health (default 8080; 0 picks a free one)')
    .option('--max-body <bytes>', 'largest request body accepted (default 1 MiB)')
    .option('--cache-bytes <bytes>', 'object cache budget (default 64 MiB)')
    .option('--sample', 'load the sample CRM dataset on the first start')
    .option('--sample-size <persons>', 'about how many persons the sample dataset has (default 1000, at most 1000000)')
    .option('--peers <urls>', 'comma-separated ws:// URLs of peer masters (their /sync endpoint)')
    .option('--cluster-secret <secret>', 'shared secret masters authenticate each other with (env MERIDIAN_CLUSTER_SECRET)')
    .option('--cluster-id <id>', 'cluster name; nodes of another cluster are refused (default meridian)')
    .option('--heartbeat <ms>', 'ping interval on replication links (default 2000)')
    .option('--link-timeout <ms>', 'a replication link with no heartbeat for this long is dead (default 10000)')
    .option('--tls-cert <file>', 'PEM certificate: serve HTTPS, and wss:// on /sync')
    .option('--tls-key <file>', 'PEM private key for --tls-cert')
    .option('--tls-ca <file>', 'PEM CA certificate trusted when dialing wss:// peers')
    .option('--feed-retention <entries>', 'changes feed entries to keep (default 0: all); peers further behind catch up by anti-entropy')
    .option('--role <role>', 'master (default) or replica: a replica reads locally and writes through a master')
    .option('--masters <urls>', 'replica: comma-separated ws:// URLs of its masters, tried in order')
    .option('--replica-credential <credential>', 'replica: name:serial:key from "meridian replica add" (env MERIDIAN_REPLICA_CREDENTIAL)')
    .option('--write-timeout <ms>', 'replica: how long a forwarded write waits for its master (default 30000)')
    .option('--ready-lag <entries>', '/readyz: ready while no peer is more than this many changes ahead (default 100)')
    .option('--idle-timeout <ms>', 'close an HTTP connection that neither sends nor takes a byte for this long (default 300000)')
    .option('--ldap-port <port>', 'serve the LDAP directory on this port (default 0: no LDAP)')
    .option('--ldaps-port <port>', 'serve LDAPS on this port with --tls-cert and --tls-key (default 0: no LDAPS)')
    .option('--base-dn <dn>', 'the LDAP directory\'s base DN (default dc=example,dc=com)')
    .option('--ldap-anonymous <policy>', 'anonymous LDAP clients: none (default: only the root DSE and cn=Subschema) or read (everything)')
    .option('--ldap-size-limit <entries>', 'most entries one LDAP search returns, but to the admin (default 500)')
    .option('--ldap-time-limit <seconds>', 'most seconds one LDAP search runs, but for the admin (default 60)')
    .action(async (flags: Record<string, unknown>) => {
      const node = await MeridianNode.start(configFrom(flags)).catch(usageError);
      out(`meridian node ${node.store.nodeId} listening on ${node.url}`);
      for (const url of node.ldapUrls) out(`LDAP directory ${node.config.baseDn} on ${url}`);
      let stopping = false;
      const stop = (signal: string): void => {
        if (stopping) process.exit(1);
        stopping = true;
        node.log.info({ signal }, 'shutting down');
        node.stop().then(
          () => process.exit(0),
          (e: unknown) => {
            process.stderr.write(`meridian: shutdown failed: ${(e as Error).message}\n`);
            process.exit(1);
          },
        );
      };
      process.on('SIGTERM', () => stop('SIGTERM'));
      process.on('SIGINT', () => stop('SIGINT'));
      await new Promise(() => undefined);
    });

  clientOptions(program.command('status').description('show a node\'s status')).action(async (flags: ClientFlags) => {
    const body = await fetchStatus(client(flags));
    out(flags.json ? JSON.stringify(body) : formatStatus(body));
  });

  clientOptions(program.command('get').description('show one object').argument('<id>', 'object id'))
    .option('--deleted', 'show the object even if it was deleted')
    .action(async (id: string, flags: ClientFlags & { deleted?: boolean }) => {
      const { body } = await client(flags).request<ObjectView>('GET', objectPath(id, flags.deleted ? '?deleted=1' : ''));
      out(flags.json ? JSON.stringify(body) : formatObject(body));
    });

  clientOptions(
    program
      .command('put')
      .description('create or update an object; prints its id (repeat a field for several values; "field=" removes it)')
      .argument('<type>', 'object type, such as Person')
      .argument('[id-and-fields...]', 'an optional id, then field=value pairs'),
  ).action(async (type: string, rest: string[], flags: ClientFlags) => {
    const id = rest.length > 0 && !rest[0]!.includes('=') ? rest[0] : undefined;
    const fields = parseAssignments(id === undefined ? rest : rest.slice(1));
    const c = client(flags);
    let result: ObjectView;
    if (id === undefined) {
      result = (await c.request<ObjectView>('POST', '/api/objects', { type, fields: dropNulls(fields) })).body;
    } else {
      const existing = await c.request<ObjectView>('GET', objectPath(id, '?deleted=1')).catch((e: unknown) => {
        if (e instanceof CliError && /^no object /.test(e.message)) return undefined;
        throw e;
      });
      if (existing && existing.body.type !== type) {
        throw new CliError(`${id} is a ${existing.body.type}, not a ${type}; an object's type never changes`);
      }
      result = existing
        ? (await c.request<ObjectView>('PATCH', objectPath(id), { fields })).body
        : (await c.request<ObjectView>('POST', '/api/objects', { type, id, fields: dropNulls(fields) })).body;
    }
    out(flags.json ? JSON.stringify(result) : result.id);
  });

  clientOptions(
    program
      .command('list')
      .description('list objects of a type, optionally those whose indexed field has a value')
      .argument('<type>', 'object type')
      .argument('[filter]', 'field=value on an indexed field (case-insensitive)'),
  )
    .option('--limit <n>', 'objects per page', '100')
    .option('--after <cursor>', 'continue after this cursor')
    .option('--all', 'follow the cursor to the end')
    .action(async (type: string, filter: string | undefined, flags: ClientFlags & { limit: string; after?: string; all?: boolean }, cmd: Command) => {
      // checked here, as log's --since is: a bad value is a usage error (exit 2), not the node's refusal
      const limit = Number(flags.limit);
      if (!/^\d+$/.test(flags.limit) || limit < 1 || limit > MAX_PAGE) throw new CliError(`--limit must be a whole number from 1 to ${MAX_PAGE}, got "${flags.limit}"`, 2);
      const q = new URLSearchParams({ type, limit: String(limit) });
      if (filter !== undefined) {
        const f = parseAssignments([filter]);
        const [k, v] = Object.entries(f)[0]!;
        if (v === null || Array.isArray(v)) throw new CliError(`the filter must be one field=value, got "${filter}"`, 2);
        q.set(k, v);
      }
      if (flags.after) q.set('after', flags.after);
      const c = client(flags);
      const items: ObjectView[] = [];
      let next: string | null = null;
      do {
        if (next) q.set('after', next);
        const { body } = await c.request<{ items: ObjectView[]; next: string | null }>('GET', `/api/objects?${q}`, undefined, {}, ['items']);
        items.push(...body.items);
        next = body.next;
      } while (flags.all && next);
      if (flags.json) out(JSON.stringify({ items, next }));
      else {
        out(formatList(items));
        // the cursor holds only the last id shown: the hint repeats the filter and page size, without which it lists other objects
        if (next) {
          // (a node named on the command line is named again; one from MERIDIAN_NODE is there for the next command too)
          const node = cmd.getOptionValueSource('node') === 'cli' ? ['--node', flags.node] : [];
          const words = [type, ...(filter === undefined ? [] : [filter]), ...(flags.limit === '100' ? [] : ['--limit', flags.limit]), ...node, '--after', next];
          process.stderr.write(`more: meridian list ${words.map(shellWord).join(' ')}\n`);
        }
      }
    });

  clientOptions(program.command('delete').description('delete an object (it leaves a replicated tombstone)').argument('<id>', 'object id')).action(
    async (id: string, flags: ClientFlags) => {
      const { body } = await client(flags).request<ObjectView>('DELETE', objectPath(id));
      out(flags.json ? JSON.stringify(body) : `deleted ${body.type} ${body.id}`);
    },
  );

  clientOptions(program.command('peers').description('show replication peers: state, lag, last contact')).action(async (flags: ClientFlags) => {
    const body = await fetchStatus(client(flags));
    out(flags.json ? JSON.stringify(body.peers) : formatPeers(body.peers));
  });

  clientOptions(program.command('lag').description("show how far behind each peer this node is, and each peer behind it (entries and seconds)"))
    .option('--watch', 'refresh every second (in place on a terminal) until interrupted')
    .action(async (flags: ClientFlags & { watch?: boolean }) => {
      const c = client(flags);
      const show = async (): Promise<string> => {
        const body = await fetchStatus(c);
        if (flags.json) return JSON.stringify({ time: new Date().toISOString(), nodeId: body.nodeId, mode: body.mode, peers: body.peers.map((p) => ({ node: p.node, url: p.url, state: p.state, lagEntries: p.lagEntries, lagSeconds: p.lagSeconds, peerBehind: p.peerBehind, peerBehindSeconds: p.peerBehindSeconds, lastContact: p.lastContact })) });
        return formatLag(body.nodeId, body.mode, body.peers);
      };
      if (!flags.watch) {
        out(await show());
        return;
      }
      const tty = process.stdout.isTTY === true && !flags.json;
      let lines = 0;
      for (;;) {
        const text = await show();
        // in place: move up over the last table and clear to the end of the screen
        if (tty && lines) process.stdout.write(`\x1b[${lines}A\x1b[J`);
        out(text);
        lines = text.split('\n').length;
        await new Promise((r) => setTimeout(r, 1000));
      }
    });

  clientOptions(program.command('log').description('show the changes feed: time, origin node, principal, object, fields changed'))
    .option('--since <seq>', 'start after this feed position (default: the last 20 changes)')
    .option('--follow', 'keep printing changes as they come, until interrupted')
    .action(async (flags: ClientFlags & { since?: string; follow?: boolean }) => {
      const c = client(flags);
      let after: number;
      if (flags.since !== undefined) {
        after = Number(flags.since);
        // (Number() takes "", " 5", "1e3" and "0x10" too)
        if (!/^\d+$/.test(flags.since) || !Number.isSafeInteger(after)) throw new CliError('--since must be a feed position: a whole number, 0 for the start', 2);
      } else {
        const { body } = await c.request<{ lastSeq: number }>('GET', '/api/feed?after=0&limit=1');
        after = Math.max(0, body.lastSeq - 20);
      }
      for (;;) {
        const { body } = await c.request<{ entries: FeedView[]; lastSeq: number }>('GET', `/api/feed?after=${after}&limit=1000`, undefined, {}, ['entries']);
        for (const e of body.entries) out(flags.json ? JSON.stringify(e) : formatFeedEntry(e));
        if (body.entries.length) after = body.entries[body.entries.length - 1]!.seq;
        if (body.entries.length === 1000) continue;
        if (!flags.follow) return;
        await new Promise((r) => setTimeout(r, 500));
      }
    });

  clientOptions(program.command('conflicts').description('list concurrent writes that overwrote each other'))
    .option('--all', 'include settled conflicts')
    .action(async (flags: ClientFlags & { all?: boolean }) => {
      const items: ConflictView[] = [];
      const c = client(flags);
      let next: string | null = null;
      do {
        const q = new URLSearchParams({ limit: '1000' });
        if (flags.all) q.set('all', '1');
        if (next) q.set('after', next);
        const { body } = await c.request<{ items: ConflictView[]; next: string | null }>('GET', `/api/conflicts?${q}`, undefined, {}, ['items']);
        items.push(...body.items);
        next = body.next;
      } while (next);
      out(flags.json ? JSON.stringify(items) : formatConflicts(items, flags.all === true));
    });

  clientOptions(program.command('export').description('stream every object (or one type) as XML to a file or stdout'))
    .option('--type <type>', 'only objects of this type')
    .option('--out <file>', 'write to this file instead of stdout')
    .action(async (flags: ClientFlags & { type?: string; out?: string }) => {
      if (flags.json && !flags.out) throw new CliError('--json prints a summary of an export to a file; give --out FILE, or leave --json out to get the XML on stdout', 2);
      // (opened before the node is asked: a file that cannot be written is not a cut export)
      const aside = flags.out ? writeAside(flags.out, 'an export') : undefined;
      let res: Response;
      try {
        res = await client(flags).raw('GET', `/export${flags.type ? `?type=${encodeURIComponent(flags.type)}` : ''}`);
      } catch (e) {
        aside?.discard();
        throw e;
      }
      const progress = new Progress(flags.json === true || !flags.out);
      // (not stdout itself: a pipeline that fails destroys its streams, and stdout destroyed with the
      // error was reported as a crash with a stack trace, not as the export cut short)
      const sink = aside ? aside.stream : toStdout();
      let n = 0;
      let size = 0;
      // every object starts with "<object "; the last 7 bytes of a chunk are looked at again with the next, for a tag split between them
      let tail = Buffer.alloc(0);
      const counted = new Transform({
        transform(chunk: Buffer, _enc, done) {
          size += chunk.length;
          const text = Buffer.concat([tail, chunk]);
          for (let i = text.indexOf('<object '); i >= 0; i = text.indexOf('<object ', i + 8)) n++;
          tail = text.subarray(Math.max(0, text.length - 7));
          progress.update(() => `exporting: ${n} objects, ${bytes(size)}`);
          done(null, chunk);
        },
      });
      try {
        await pipeline(Readable.fromWeb(res.body as WebReadableStream<Uint8Array>), counted, sink);
        await aside?.finish();
      } catch (e) {
        aside?.discard();
        throw new CliError(`the export stopped part-way (${(e as Error).message})${flags.out ? `; ${flags.out} was not written` : ''}; run it again`);
      } finally {
        progress.done();
      }
      if (flags.out) saidOfFile(flags.out, flags.json ? JSON.stringify({ objects: n, bytes: size, file: flags.out }) : `exported ${n} objects (${bytes(size)}) to ${flags.out}`);
    });

  clientOptions(program.command('import').description('apply an XML document of objects through the write path; exit 1 if any was rejected').argument('<file>', 'the XML document ("-" for stdin)'))
    .option('--dry-run', 'check every object and report, writing nothing')
    .action(async (file: string, flags: ClientFlags & { dryRun?: boolean }) => {
      const progress = new Progress(flags.json === true);
      const input = file === '-' ? undefined : openInput(file);
      const total = input?.size;
      let sent = 0;
      const source = input ? input.stream : process.stdin;
      // counted on its way to the request (a 'data' listener would start the flow before fetch reads)
      const counted = source.pipe(
        new Transform({
          transform(chunk: Buffer, _enc, done) {
            sent += chunk.length;
            progress.update(() => `importing: ${bytes(sent)}${total ? ` of ${bytes(total)} (${Math.floor((100 * sent) / total)}%)` : ''}`);
            done(null, chunk);
          },
        }),
      );
      source.on('error', (e: Error) => counted.destroy(e));
      let report: string;
      try {
        const res = await client(flags).raw('POST', `/import${flags.dryRun ? '?dry-run=1' : ''}`, counted, { 'content-type': 'application/xml' });
        report = await res.text().catch(() => {
          throw new CliError(`the node at ${flags.node} closed the connection before its import report was complete; the objects may or may not have been applied (an object with an id imported again is not made twice)`);
        });
      } finally {
        // (an error is printed on a line of its own, not after the progress drawn so far)
        progress.done();
      }
      const head = /<import ([^>]*)>/.exec(report)?.[1];
      // (a proxy's or another server's 200 page is no report: its counts would all read 0 and look like success)
      if (head === undefined) throw new CliError(`the node at ${flags.node} answered the import with something that is not an import report; is it a Meridian node? The objects may or may not have been applied`);
      const attr = (k: string): number => Number(new RegExp(`${k}="(\\d+)"`).exec(head)?.[1] ?? 0);
      const summary = { dryRun: flags.dryRun === true, objects: attr('objects'), created: attr('created'), updated: attr('updated'), unchanged: attr('unchanged'), rejected: attr('rejected') };
      const rejected = [...report.matchAll(/<result line="(\d+)" type="([^"]*)"(?: id="([^"]*)")? status="rejected"(?: field="[^"]*")?>([^<]*)<\/result>/g)].map((m) => ({ line: Number(m[1]), type: m[2]!, id: m[3] ?? null, message: unescapeXml(m[4]!) }));
      if (flags.json) out(JSON.stringify({ ...summary, rejections: rejected }));
      else {
        out(`${summary.dryRun ? 'dry run: would have ' : ''}created ${summary.created}, updated ${summary.updated}, unchanged ${summary.unchanged}, rejected ${summary.rejected} of ${summary.objects} objects`);
        for (const r of rejected) process.stderr.write(`line ${r.line}: ${r.type}${r.id ? ` ${r.id}` : ''}: ${r.message}\n`);
      }
      if (summary.rejected > 0) process.exitCode = 1;
    });

  const replica = program.command('replica').description('issue, list and revoke replica credentials (on a master)');
  clientOptions(replica.command('add').description('issue a credential for a replica (re-issuing invalidates the old one); prints it once').argument('<name>', 'replica name, such as laptop-17')).action(
    async (name: string, flags: ClientFlags) => {
      usableReplicaName(name);
      const { body } = await client(flags).request<{ name: string; credential: string }>('POST', '/api/replicas', { name });
      if (flags.json) out(JSON.stringify(body));
      else {
        out(body.credential);
        // (not the credential itself: stderr is often logged, and a flag shows in ps)
        process.stderr.write('start the replica with --role replica --masters <master ws:// URLs> and the credential above in MERIDIAN_REPLICA_CREDENTIAL\n');
      }
    },
  );
  clientOptions(replica.command('list').description('list the replica credentials issued')).action(async (flags: ClientFlags) => {
    const { body } = await client(flags).request<{ items: { name: string; serial: string; issued: string; issuedBy: string | null }[] }>('GET', '/api/replicas', undefined, {}, ['items']);
    if (flags.json) out(JSON.stringify(body.items));
    else out(body.items.length === 0 ? 'no replica credentials issued' : table(['name', 'serial', 'issued'], body.items.map((r) => [r.name, r.serial, r.issued])));
  });
  clientOptions(replica.command('revoke').description('revoke a replica credential: its sessions close and it is refused from then on').argument('<name>', 'replica name')).action(
    async (name: string, flags: ClientFlags) => {
      // (a name no credential can have went to another resource: revoke .. was DELETE /api/)
      usableReplicaName(name);
      const { body } = await client(flags).request<{ name: string }>('DELETE', `/api/replicas/${name}`);
      out(flags.json ? JSON.stringify(body) : `revoked replica credential ${body.name}`);
    },
  );

  clientOptions(
    program
      .command('forget-feed')
      .description("let a node whose data dir was made again under its old id (lost in its first clone, say) replicate again: forget its old dir's feed here; refused while this node holds a change that dir made")
      .argument('<node-id>', 'the node id the old and the new dir share'),
  ).action(async (node: string, flags: ClientFlags) => {
    const problem = nodeIdProblem(node);
    if (problem) throw new CliError(problem, 2);
    const { body } = await client(flags).request<{ node: string; forgotten: string }>('POST', `/api/feeds/${node}/forget`);
    if (flags.json) out(JSON.stringify(body));
    else {
      out(`forgot ${body.node}'s feed ${body.forgotten}`);
      process.stderr.write(`its peers are told as their sessions open again, and each takes ${body.node}'s new dir once told\n`);
    }
  });

  clientOptions(program.command('check').description("check that the node's indexes, unique values and counts agree with its objects; exit 1 if not"))
    .action(async (flags: ClientFlags) => {
      // the node reads its whole store before it answers: show that it is at work
      const progress = new Progress(flags.json === true);
      const started = Date.now();
      const tick = setInterval(() => progress.update(() => `checking ${flags.node}: ${Math.round((Date.now() - started) / 1000)} s`), 1000);
      let report: CheckView;
      try {
        // (the node reads every object before it answers: on a large store that takes longer than most answers)
        report = (await client(flags, 300_000).request<CheckView>('GET', '/api/check', undefined, {}, ['problems'])).body;
      } finally {
        clearInterval(tick);
        progress.done();
      }
      out(flags.json ? JSON.stringify(report) : formatCheck(report));
      if (report.problems.length > 0) process.exitCode = 1;
    });

  clientOptions(program.command('verify').description('compare the data of several nodes; exit 1 if they differ'))
    .option('--nodes <urls>', 'comma-separated node URLs to compare (default: --node and the peers it dials)')
    .option('--wait <seconds>', 'while the nodes differ, digest them again (after 1, 2, 4 and 8 s, then every 10 s) for up to this long', '0')
    .action(async (flags: ClientFlags & { nodes?: string; wait: string }) => {
      const wait = Number(flags.wait);
      if (!(Number.isFinite(wait) && wait >= 0)) throw new CliError(`--wait takes a number of seconds, not "${flags.wait}"`, 2);
      let urls: string[];
      if (flags.nodes !== undefined) {
        urls = flags.nodes.split(',').map((u) => u.trim()).filter(Boolean);
        const named = new Map<string, string>();
        for (const u of urls) {
          let key: string;
          try {
            const url = new URL(u);
            if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new Error('not http');
            // (requests go to absolute paths: a path after the origin names the same node)
            key = url.origin;
          } catch {
            throw new CliError(`--nodes takes http:// or https:// URLs separated by commas, such as http://10.0.0.1:8080,http://10.0.0.2:8080; "${withoutCredentials(u)}" is not one`, 2);
          }
          // (a node compared with itself says nothing)
          if (named.has(key)) throw new CliError(`--nodes names ${withoutCredentials(u)} twice; name each node once`, 2);
          named.set(key, u);
        }
        if (urls.length < 2) throw new CliError('--nodes needs at least two node URLs to compare', 2);
      } else {
        // the node's own view of its cluster: the peers it dials, at the HTTP address their /sync is on
        const status = await fetchStatus(client(flags));
        const peers = status.peers.flatMap((p) => (p.url === null ? [] : [httpOfPeer(p.url)]));
        if (peers.length === 0) throw new CliError(`${flags.node} dials no peers to compare it with; name the nodes with --nodes URL,URL`);
        urls = [flags.node, ...new Set(peers)];
      }
      const started = Date.now();
      const deadline = started + wait * 1000;
      // each node digests its whole store: on a large one that takes a while, so show who has answered
      const progress = new Progress(flags.json === true);
      let result: VerifyResult;
      let round = 1;
      try {
        // Any difference may go by waiting: changes still in flight, and also an anti-entropy run
        // or clone still merging, or a purge marker on its way, which move no vector entry. Every
        // round digests every whole store, so the pauses grow.
        for (let pause = 1000; ; round++, pause = Math.min(pause * 2, 10_000)) {
          result = compareDigests(await digestAll(flags, urls, progress, round));
          const left = deadline - Date.now();
          if (result.identical || left <= 0) break;
          await new Promise((r) => setTimeout(r, Math.min(pause, left)));
        }
      } finally {
        progress.done();
      }
      result.rounds = round;
      if (wait > 0 && !result.identical) result.waited = Math.round((Date.now() - started) / 1000);
      out(flags.json ? JSON.stringify(result) : formatVerify(result));
      if (!result.identical) process.exitCode = 1;
    });

  /** Every node's digest, asked at once. */
  async function digestAll(flags: ClientFlags, urls: string[], progress: Progress, round: number): Promise<(DigestView & { url: string })[]> {
    let answered = 0;
    const line = (): string => `verifying${round > 1 ? ` (round ${round})` : ''}: ${bar(answered / urls.length)} ${answered}/${urls.length} nodes digested`;
    progress.update(line, true);
    const digests = await Promise.all(
      urls.map(async (u) => {
        let body: DigestView;
        try {
          body = (await client({ ...flags, node: u }).request<DigestView>('GET', '/api/digest', undefined, {}, ['buckets'])).body;
        } catch (e) {
          // (every node is asked with the same credentials: say which one refused or failed)
          if (e instanceof CliError && !e.message.includes(originOf(u))) throw new CliError(`${u}: ${e.message}`, e.exitCode);
          throw e;
        }
        answered++;
        progress.update(line, true);
        return { url: u, ...body };
      }),
    );
    // (one node under two addresses, localhost and 127.0.0.1 say, compared with itself, says nothing; checked once)
    const seen = new Map<string, string>();
    for (const d of round === 1 ? digests : []) {
      const other = seen.get(d.nodeId);
      if (other !== undefined) {
        throw new CliError(`${other} and ${d.url} are the same node (${d.nodeId}); name each node once`, 2);
      }
      seen.set(d.nodeId, d.url);
    }
    return digests;
  }

  addReversibilityCommands(program, clientOptions, client);

  return program;
}

/** The HTTP URL of the node whose sync URL (ws://host:port/sync) a peer was dialed at. */
function httpOfPeer(url: string): string {
  const u = new URL(url);
  u.protocol = u.protocol === 'wss:' ? 'https:' : 'http:';
  return `${u.protocol}//${u.host}`;
}

function dropNulls(fields: Record<string, unknown>): Record<string, unknown> {
  return Object.fromEntries(Object.entries(fields).filter(([, v]) => v !== null));
}

/** Runs the CLI; resolves to the exit code. */
export async function run(argv: string[]): Promise<number> {
  const program = buildProgram();
  program.configureOutput({ writeErr: (s) => process.stderr.write(s) });
  try {
    await program.parseAsync(argv);
    // a command that finished but failed in part (verify found a difference, import a rejection) set it
    return typeof process.exitCode === 'number' ? process.exitCode : 0;
  } catch (e) {
    if (e instanceof CommanderError) {
      // help and version end here too, with exit code 0
      return e.exitCode === 0 ? 0 : 2;
    }
    if (e instanceof CliError) {
      process.stderr.write(`meridian: ${e.message}\n`);
      return e.exitCode;
    }
    if (isMeridianError(e) || (e instanceof Error && 'status' in e)) {
      process.stderr.write(`meridian: ${(e as Error).message}\n`);
      return 1;
    }
    process.stderr.write(`meridian: unexpected error: ${(e as Error)?.message ?? String(e)}\n`);
    return 1;
  }
}

/** A word of a command line to copy into a shell: quoted when it holds anything but safe characters. */
function shellWord(w: string): string {
  return /^[\w@%+=:,./-]+$/.test(w) ? w : `'${w.replace(/'/g, `'\\''`)}'`;
}

/** A stream onto stdout, with its backpressure, that a failed pipeline can destroy without destroying stdout. */
function toStdout(): Writable {
  return new Writable({
    write(chunk: Buffer, _enc, done) {
      if (process.stdout.write(chunk)) done();
      else process.stdout.once('drain', () => done());
    },
  });
}

/** A URL's origin as the client names it in its errors; the text itself when it is no URL. */
function originOf(url: string): string {
  try {
    return new URL(url).origin;
  } catch {
    return url;
  }
}

/** A replica name no credential can have is a usage error (exit 2), said before any node is asked. */
function usableReplicaName(name: string): void {
  try {
    checkReplicaName(name);
  } catch (e) {
    if (isMeridianError(e)) throw new CliError(e.message, 2);
    throw e;
  }
}
