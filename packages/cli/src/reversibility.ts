import { Readable, Transform } from 'node:stream';
import type { ReadableStream as WebReadableStream } from 'node:stream/web';
import type { Command } from 'commander';
import { checkRestoreTarget, decodeBackup, isMeridianError, parseVersionName, restoreBackup } from '@meridian/store';
import { CliError, type AdminClient } from './client.js';
import type { ObjectView } from './format.js';
import { bar, bytes, Progress } from './progress.js';
import { objectPath, openInput, out, saidOfFile, writeAside, type ClientFlags } from './output.js';


interface VersionView {
  version: string;
  seq: number;
  time: string;
  origin: string;
  principal: string;
  kind: string;
  deleted: boolean;
  changes: { field: string; old?: unknown; new?: unknown; secret?: boolean }[];
}

interface HistoryView {
  id: string;
  complete: boolean;
  limited: boolean;
  firstSeq: number;
  versions: VersionView[];
}


function shown(v: unknown): string {
  return v === null || v === undefined ? '(none)' : JSON.stringify(v);
}

function formatHistory(h: HistoryView): string {
  const lines: string[] = [];
  for (const v of h.versions) {
    lines.push(`${v.version}  ${v.time}  ${v.principal}  ${v.kind}${v.deleted && v.kind !== 'delete' ? ' (deleted)' : ''}`);
    for (const c of v.changes) lines.push(c.secret ? `    ${c.field}: changed (not shown)` : `    ${c.field}: ${shown(c.old)} -> ${shown(c.new)}`);
  }
  if (h.versions.length === 0) lines.push(`no versions of ${h.id} in this node's retained feed`);
  if (h.limited) lines.push(`(only the newest ${h.versions.length} versions of ${h.id} are shown)`);
  else if (!h.complete) {
    lines.push(
      `(older changes of ${h.id} are past this node's feed retention, or came with a clone: the feed here starts at position ${h.firstSeq}, so the first version shown is not the object's first)`,
    );
  }
  return lines.join('\n');
}

/**
 * backup, restore, history, revert, undelete and purge: getting data back,
 * whole or one object at a time, and erasing it for good.
 */
export function addReversibilityCommands(program: Command, withClient: (cmd: Command) => Command, client: (flags: ClientFlags) => AdminClient): void {
  withClient(program.command('backup').description("take an online, consistent snapshot of a node's whole store into a file"))
    .requiredOption('--out <file>', 'the backup file to write')
    .action(async (flags: ClientFlags & { out: string }) => {
      // a file named --out is always a complete backup, and never one written before (a pipe or a device is written to)
      const aside = writeAside(flags.out, 'a backup', { overwrite: false });
      const file = aside.stream;
      const progress = new Progress(flags.json === true);
      let res: Response;
      try {
        res = await client(flags).raw('GET', progress.enabled ? '/api/backup?count=1' : '/api/backup');
      } catch (e) {
        aside.discard();
        throw e;
      }
      const total = Number(res.headers.get('x-meridian-records') ?? 0);
      let size = 0;
      let records = 0;
      // saved as it comes, and read as it is saved: the reading checks the frames and the end record
      // (the node checks nothing on the way out: a cut stream shows as no end record) and counts the records
      const save = new Transform({
        transform(chunk: Buffer, _enc, done) {
          size += chunk.length;
          file.write(chunk, (err) => done(err ?? null, chunk));
        },
      });
      const body = Readable.fromWeb(res.body as WebReadableStream<Uint8Array>);
      try {
        body.on('error', (e) => save.destroy(e));
        file.on('error', (e) => save.destroy(e));
        for await (const item of decodeBackup(body.pipe(save))) {
          if (!Array.isArray(item)) continue;
          records += item.length;
          progress.update(() => `backing up: ${total ? `${bar(Math.min(1, records / total))} ` : ''}${records} records, ${bytes(size)}`);
        }
        await aside.finish(true);
      } catch (e) {
        // the node's stream too, or its connection would hold the process open
        body.destroy();
        aside.discard();
        throw new CliError(`the backup did not complete (${(e as Error).message.replace(/; take the backup again$/, '')}); nothing was saved to ${flags.out}, run it again`);
      } finally {
        progress.done();
      }
      saidOfFile(flags.out, flags.json ? JSON.stringify({ file: flags.out, bytes: size }) : `backed up ${bytes(size)} to ${flags.out}`);
    });

  program
    .command('restore')
    .description('make a new data directory from a backup: a new incarnation of the node, which catches up with its peers when started')
    .requiredOption('--in <file>', 'the backup file')
    .requiredOption('--dir <dir>', 'the new data directory (must not exist or be empty)')
    .option('--node-id <id>', "the restored node's id (default: <original id>.<incarnation>-<12 hex digits>)")
    .option('--json', 'print JSON on stdout instead of text')
    .action(async (flags: { in: string; dir: string; nodeId?: string; json?: boolean }) => {
      // usage errors, told before the backup is opened: a directory in use, an id that is no id
      try {
        checkRestoreTarget(flags.dir, flags.nodeId);
      } catch (e) {
        if (isMeridianError(e)) throw new CliError(e.message, 2);
        throw e;
      }
      const { stream: source, size } = openInput(flags.in);
      const progress = new Progress(flags.json === true);
      // (bytesRead, not a 'data' listener: that would start the flow before the restore reads)
      let r: Awaited<ReturnType<typeof restoreBackup>>;
      try {
        r = await restoreBackup(flags.dir, source, {
          nodeId: flags.nodeId,
          onProgress: (records) => progress.update(() => `restoring: ${bar(source.bytesRead / Math.max(1, size))} ${records} records`),
        });
      } finally {
        progress.done();
        source.destroy();
      }
      if (flags.json) {
        out(JSON.stringify({ dir: flags.dir, nodeId: r.nodeId, incarnation: r.incarnation, from: r.header.node, taken: r.header.taken, records: r.records, claimsDropped: r.claimsDropped }));
        return;
      }
      out(`restored ${r.records} records of node ${r.header.node} (snapshot taken ${r.header.taken}) into ${flags.dir}`);
      if (r.claimsDropped > 0) out(`left out ${r.claimsDropped} unique-index entries that named no live object of their type (their values are free again)`);
      out(`it starts as node ${r.nodeId} (incarnation ${r.incarnation}): meridian serve --dir ${flags.dir} ... with the same peers; it catches up with them on its own`);
      out('if your config pins --node-id, change it to the new id: the old id stays with the changes the original made');
    });

  withClient(program.command('history').description("show an object's versions from the node's retained feed: time, principal, fields changed").argument('<id>', 'object id')).action(
    async (id: string, flags: ClientFlags) => {
      const { body } = await client(flags).request<HistoryView>('GET', objectPath(id, '/history'), undefined, {}, ['versions']);
      out(flags.json ? JSON.stringify(body) : formatHistory(body));
    },
  );

  withClient(program.command('revert').description("write an object's fields as they were at a version, as a new change that replicates").argument('<id>', 'object id'))
    .requiredOption('--to <version>', 'the version, as history names it (origin#seq)')
    .action(async (id: string, flags: ClientFlags & { to: string }) => {
      if (!parseVersionName(flags.to)) throw new CliError(`--to must name a version as "meridian history ${id}" shows it, such as office-a#42`, 2);
      const { body } = await client(flags).request<ObjectView>('POST', objectPath(id, '/revert'), { to: flags.to });
      out(flags.json ? JSON.stringify(body) : `reverted ${body.type} ${body.id} to ${flags.to}; now at version ${body.version}`);
    });

  withClient(program.command('undelete').description('bring back a deleted object with the fields it had').argument('<id>', 'object id')).action(async (id: string, flags: ClientFlags) => {
    const { body } = await client(flags).request<ObjectView>('POST', objectPath(id, '/undelete'));
    out(flags.json ? JSON.stringify(body) : `undeleted ${body.type} ${body.id}`);
  });

  withClient(program.command('purge').description('erase an object physically on every node (for data-protection requests); cannot be undone').argument('<id>', 'object id'))
    .option('--yes', 'confirm: the object, its history and its field values go for good')
    .action(async (id: string, flags: ClientFlags & { yes?: boolean }) => {
      if (!flags.yes) throw new CliError(`purge erases ${id} and its whole history on every node and cannot be undone; run it again with --yes`, 2);
      const { body } = await client(flags).request<{ id: string; type: string | null; redactedFeedEntries: number }>('POST', objectPath(id, '/purge'));
      out(flags.json ? JSON.stringify(body) : `purged ${body.type ? `${body.type} ` : ''}${body.id} (${body.redactedFeedEntries} feed entries redacted); the purge replicates to every node`);
    });
}
